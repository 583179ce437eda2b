//! `PRQ_HOME`: where everything prq writes lives, and the lock that keeps one daemon
//! per home.
//!
//! ```text
//! $PRQ_HOME/
//!   prq.pid            the daemon's pid, flock-ed while it runs
//!   run/               0700: control.sock and lanes.sock, mode 0600
//!   logs/daemon.log    the daemon's log; logs/<lane>.log, one per worker
//!   profiles/<provider>/<account>/   each lane's browser profile
//!   captures/          raw site streams of lanes with `capture = true`
//!   uploads/<random>/  each request's attachments, while it runs (emptied at start)
//! ```
//!
//! All of these directories are 0700, and the home too when prq creates it.
//!
//! The pid file is locked with `flock`, which the kernel drops when the holder dies: a
//! pid file left by a killed daemon is told from a live one by trying the lock, never by
//! trusting the pid in it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

/// Held by the running daemon; dropping it releases the home.
pub struct HomeLock {
    _lock: Flock<File>,
    pid_file: PathBuf,
}

impl Drop for HomeLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.pid_file);
    }
}

impl Home {
    /// `PRQ_HOME`, else `$XDG_STATE_HOME/prq`, else `~/.local/state/prq`.
    pub fn from_env() -> anyhow::Result<Self> {
        let root = match std::env::var_os("PRQ_HOME").filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
                Some(p) => PathBuf::from(p).join("prq"),
                None => {
                    let home = std::env::var_os("HOME")
                        .context("neither PRQ_HOME nor HOME is set; set PRQ_HOME to a directory for prq's state")?;
                    PathBuf::from(home).join(".local/state/prq")
                }
            },
        };
        Ok(Self::at(root))
    }

    pub fn at(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        // Sockets are addressed by path; make it absolute so children can use it too.
        let root = std::path::absolute(&root).unwrap_or(root);
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("prq.pid")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn control_socket(&self) -> PathBuf {
        self.run_dir().join("control.sock")
    }
    pub fn lanes_socket(&self) -> PathBuf {
        self.run_dir().join("lanes.sock")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.logs_dir().join("daemon.log")
    }
    pub fn lane_log(&self, lane_id: &str) -> PathBuf {
        self.logs_dir()
            .join(format!("{}.log", lane_id.replace('#', "-")))
    }
    pub fn profile_dir(&self, provider: &str, account: &str) -> PathBuf {
        self.root.join("profiles").join(provider).join(account)
    }
    /// `prq doctor`'s page outlines and screenshots (the worker creates it 0700).
    pub fn diagnostics_dir(&self) -> PathBuf {
        self.root.join("diagnostics")
    }
    /// Site streams kept by lanes with `capture = true` (the worker creates it 0700).
    pub fn captures_dir(&self) -> PathBuf {
        self.root.join("captures")
    }

    /// Each request's attachments, in a directory of its own (`attachments::RequestDir`).
    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// Creates the layout. What prq creates is its user's alone (0700, whatever the
    /// umask): the home itself when it is new, and always the directories of logs
    /// (prompt sizes, lane errors), browser profiles (logged-in cookies), captures
    /// (answers) and sockets.
    pub fn create(&self) -> anyhow::Result<()> {
        let private = |dir: PathBuf| -> anyhow::Result<()> {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private", dir.display()))
        };
        if !self.root.exists() {
            private(self.root.clone())?;
        }
        for dir in [
            self.logs_dir(),
            self.root.join("profiles"),
            self.captures_dir(),
            self.run_dir(),
            self.uploads_dir(),
        ] {
            private(dir)?;
        }
        Ok(())
    }

    /// Takes the home for this process, or says which daemon has it.
    pub fn lock(&self) -> anyhow::Result<HomeLock> {
        let path = self.pid_file();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                bail!(
                    "another prq daemon (pid {}) is running on {}",
                    pid.trim(),
                    self.root.display()
                );
            }
        };
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(HomeLock {
            _lock: file,
            pid_file: path,
        })
    }

    /// The pid in the pid file, if a daemon holds the lock on it.
    pub fn running_daemon_pid(&self) -> Option<u32> {
        let file = File::open(self.pid_file()).ok()?;
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_unlocked_again_on_drop) => None,
            Err((mut file, _)) => {
                let mut pid = String::new();
                file.read_to_string(&mut pid).ok()?;
                pid.trim().parse().ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_home_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.create().unwrap();
        let lock = home.lock().unwrap();
        assert_eq!(home.running_daemon_pid(), Some(std::process::id()));
        let second = home.lock().map(|_| ()).unwrap_err().to_string();
        assert!(second.contains("another prq daemon"), "{second}");
        drop(lock);
        assert_eq!(home.running_daemon_pid(), None);
        assert!(!home.pid_file().exists());
        home.lock().unwrap();
    }

    #[test]
    fn a_stale_pid_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.create().unwrap();
        fs::write(home.pid_file(), "999999\n").unwrap();
        assert_eq!(home.running_daemon_pid(), None);
        home.lock().unwrap();
    }

    #[test]
    fn the_home_it_creates_and_its_directories_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("new/prq"));
        home.create().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for d in [
            home.root().to_path_buf(),
            home.run_dir(),
            home.logs_dir(),
            home.root().join("profiles"),
            home.captures_dir(),
        ] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        // A home that exists keeps its mode; prq's directories in it are made private.
        let existing = Home::at(dir.path());
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(existing.logs_dir()).unwrap();
        fs::set_permissions(existing.logs_dir(), fs::Permissions::from_mode(0o755)).unwrap();
        existing.create().unwrap();
        assert_eq!(mode(dir.path()), 0o755);
        assert_eq!(mode(&existing.logs_dir()), 0o700);
    }
}
