//! A request's private directory under `PRQ_HOME/uploads`: created 0700 with a random
//! name, each file in a numbered subdirectory of its own so that two files of one name
//! keep it (the site sees the file's name), and removed when dropped. [`sweep`] removes
//! what a daemon that died left behind.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Removed, with everything in it, when dropped.
#[derive(Debug)]
pub struct RequestDir {
    path: PathBuf,
}

impl RequestDir {
    /// A new private directory under `uploads` (created, 0700, if missing).
    pub fn create(uploads: &Path) -> std::io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(uploads)?;
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(std::io::Error::other)?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path = uploads.join(name);
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes file number `n` as `name` (with `extension` added when the name has
    /// none), readable by its owner only; returns its path.
    pub fn write(
        &self,
        n: usize,
        name: &str,
        extension: Option<&str>,
        bytes: &[u8],
    ) -> std::io::Result<PathBuf> {
        let sub = self.path.join(n.to_string());
        fs::DirBuilder::new().mode(0o700).create(&sub)?;
        let name = match extension {
            Some(ext) if Path::new(name).extension().is_none() => format!("{name}.{ext}"),
            _ => name.to_string(),
        };
        let path = sub.join(name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?
            .write_all(bytes)?;
        Ok(path)
    }
}

impl Drop for RequestDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            tracing::warn!(dir = %self.path.display(), "cannot remove a request's files: {e}");
        }
    }
}

/// Removes every request directory under `uploads`: called at daemon start, when no
/// request can be using one. Returns how many were removed.
pub fn sweep(uploads: &Path) -> usize {
    let Ok(entries) = fs::read_dir(uploads) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| fs::remove_dir_all(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_what_a_dead_daemon_left() {
        let home = tempfile::tempdir().unwrap();
        let uploads = home.path().join("uploads");
        let left = RequestDir::create(&uploads).unwrap();
        left.write(0, "a.png", None, b"x").unwrap();
        std::mem::forget(left); // as a killed daemon would
        assert_eq!(sweep(&uploads), 1);
        assert_eq!(fs::read_dir(&uploads).unwrap().count(), 0);
    }
}
