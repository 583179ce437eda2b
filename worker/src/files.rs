//! Files the worker writes for the user under `PRQ_HOME` (captures, `prq doctor`'s
//! outlines and screenshots): in a directory only the user can read, each file new
//! (never overwriting another) and named safely from lane names.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Creates `dir` (0700, with its parents) and a new file `name` in it (0600).
pub fn create_private(dir: &Path, name: &str) -> std::io::Result<(File, PathBuf)> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let path = dir.join(name);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok((file, path))
}

/// `text` with everything but letters, digits, `-`, `_` and `.` made `_`.
pub fn safe_name(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .collect()
}

/// Now, in milliseconds since the Unix epoch (names files in time order).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
