//! The virtual display a headed lane's Chromium draws on (`headless = false`): an Xvfb
//! of the worker's own, one per lane, started before the browser and ended after it.
//!
//! Xvfb picks a free display number itself and says which (`-displayfd`), so lanes and
//! other X servers on the machine never collide. It is bound to die with the worker
//! (`PR_SET_PDEATHSIG`, as the browser is, see `browser.rs`), so that a worker killed
//! outright leaves no Xvfb behind. Only holders of the display's cookie may connect: it
//! is written to an authority file in the lane's profile directory (0600), which the
//! server and the browser read.

use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt as _;

/// From starting Xvfb to it saying which display it serves.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long Xvfb gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The name of the authority file in the lane's profile directory.
const AUTHORITY_FILE: &str = "prq-display.xauth";

/// The X authorization protocol whose cookie the file carries.
const COOKIE_PROTOCOL: &[u8] = b"MIT-MAGIC-COOKIE-1";

pub struct VirtualDisplay {
    server: tokio::process::Child,
    /// `:N`
    display: String,
    authority: PathBuf,
}

impl VirtualDisplay {
    /// Starts an Xvfb of `width`×`height` whose authority file lives in `dir`.
    pub async fn start(dir: &Path, width: u32, height: u32) -> Result<Self, String> {
        let cookie = random_cookie()?;
        let authority = dir.join(AUTHORITY_FILE);
        // The server takes the cookie from this file; the display number is not known
        // yet, and the server does not look at it.
        write_authority(&authority, "0", &cookie)?;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot make a pipe: {e}"))?;
        let write_fd = write.as_raw_fd();
        let mut command = tokio::process::Command::new("Xvfb");
        command
            .args(["-displayfd", &write_fd.to_string()])
            .args(["-screen", "0", &format!("{width}x{height}x24")])
            .args(["-nolisten", "tcp", "-noreset"])
            .arg("-auth")
            .arg(&authority)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let worker = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec only async-signal-safe calls are made (prctl,
        // fcntl, getppid), on values copied in before the fork.
        unsafe {
            command.pre_exec(move || {
                let bound = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
                if bound.is_err() || libc::getppid() != worker {
                    return Err(std::io::Error::other("the worker is gone"));
                }
                // The write end is the one descriptor Xvfb must inherit.
                let flags = libc::fcntl(write_fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(write_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let server = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "headless = false needs Xvfb, which is not installed \
                 (on Debian: `apt install xvfb`)"
                .to_string(),
            _ => format!("cannot start Xvfb: {e}"),
        })?;
        drop(write);
        let mut display = Self {
            server,
            display: String::new(),
            authority,
        };
        let number = match tokio::time::timeout(START_TIMEOUT, read_line(read)).await {
            Ok(Ok(number)) if !number.is_empty() => number,
            Ok(Ok(_)) => return Err(display.failed("Xvfb exited without a display").await),
            Ok(Err(e)) => {
                return Err(display
                    .failed(&format!("reading its display failed: {e}"))
                    .await)
            }
            Err(_) => {
                let why = format!("Xvfb named no display within {} s", START_TIMEOUT.as_secs());
                return Err(display.failed(&why).await);
            }
        };
        write_authority(&display.authority, &number, &cookie)?;
        display.display = format!(":{number}");
        let (name, pid) = (display.display.clone(), display.server.id());
        tracing::info!(display = %name, ?pid, "virtual display up");
        Ok(display)
    }

    /// What the browser's environment needs to draw on this display.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DISPLAY", self.display.clone()),
            ("XAUTHORITY", self.authority.display().to_string()),
        ]
    }

    /// Ends the server (SIGTERM, then SIGKILL after a grace) and reaps it.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.server.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(STOP_GRACE, self.server.wait())
            .await
            .is_err()
        {
            let _ = self.server.kill().await;
        }
        let _ = std::fs::remove_file(&self.authority);
    }

    async fn failed(&mut self, why: &str) -> String {
        self.stop().await;
        format!("the virtual display for headless = false did not start: {why}")
    }
}

/// The first line written to the pipe, up to its end.
async fn read_line(read: OwnedFd) -> std::io::Result<String> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
    let mut text = Vec::new();
    let mut byte = [0u8; 1];
    while pipe.read(&mut byte).await? == 1 && byte[0] != b'\n' {
        text.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&text).trim().to_owned())
}

fn random_cookie() -> Result<[u8; 16], String> {
    let mut cookie = [0u8; 16];
    getrandom::fill(&mut cookie)
        .map_err(|e| format!("cannot get random bytes for the display's cookie: {e}"))?;
    Ok(cookie)
}

/// Writes an X authority file (the Xau format: big-endian lengths before each field)
/// with one entry for any host (`FamilyWild`) on display `number`.
fn write_authority(path: &Path, number: &str, cookie: &[u8]) -> Result<(), String> {
    const FAMILY_WILD: u16 = 0xffff;
    let mut entry = FAMILY_WILD.to_be_bytes().to_vec();
    for field in [&b""[..], number.as_bytes(), COOKIE_PROTOCOL, cookie] {
        entry.extend((field.len() as u16).to_be_bytes());
        entry.extend(field);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(&entry))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_entry_is_in_xau_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        write_authority(&path, "12", &[7; 16]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut expected = vec![0xff, 0xff, 0, 0, 0, 2, b'1', b'2', 0, 18];
        expected.extend(COOKIE_PROTOCOL);
        expected.extend([0, 16]);
        expected.extend([7; 16]);
        assert_eq!(bytes, expected);
    }
}
