//! Which browser release a lane runs, and whether it changed under the lane's profile.
//!
//! Hosts upgrade Chromium underneath prq (`apt upgrade` every week, security releases
//! every few days). A new major version may change what a site sees or how a page
//! behaves, and a profile written by a newer browser is not always readable by an older
//! one. So each profile keeps a note of the release that last ran on it
//! ([`NOTE_FILE`]); a lane whose browser's major version differs from the note's still
//! starts, says so once in its log, and keeps the change in the note for `prq doctor`.
//! The headless shell writes no `Last Version` file of its own, so the note is ours.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use prq_protocol::worker::BrowserRelease;
use serde::{Deserialize, Serialize};

/// The note, in the lane's profile directory.
pub const NOTE_FILE: &str = "prq-browser-release.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Note {
    version: String,
    /// The version before the last change of major version, and when it changed.
    #[serde(default)]
    updated_from: Option<(String, u64)>,
}

/// The version in a `Browser.getVersion` product (`Chrome/156.0.8078.129`,
/// `HeadlessChrome/156.0.8078.129`).
pub fn version_of_product(product: &str) -> &str {
    product.rsplit_once('/').map_or(product, |(_, v)| v)
}

fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

/// Records that `version` runs on `profile` and returns the release as `prq status`
/// and `prq doctor` show it. A change of major version since the profile's last run is
/// logged here, once: the note then holds the new version.
pub fn note(profile: &Path, version: &str) -> BrowserRelease {
    let path = profile.join(NOTE_FILE);
    let previous: Option<Note> = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let note = match previous {
        Some(before) if major(&before.version) != major(version) => {
            tracing::warn!(
                from = %before.version,
                to = %version,
                "the browser's major version changed since this profile last ran; if the \
                 site misbehaves, `prq doctor` checks the page"
            );
            Note {
                version: version.to_owned(),
                updated_from: Some((before.version, now)),
            }
        }
        Some(before) => Note {
            version: version.to_owned(),
            updated_from: before.updated_from,
        },
        None => Note {
            version: version.to_owned(),
            updated_from: None,
        },
    };
    // A note that cannot be written costs only the next start's comparison.
    if let Err(e) = serde_json::to_vec(&note)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&path, bytes))
    {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
    BrowserRelease {
        version: note.version,
        updated_from: note.updated_from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_product() {
        assert_eq!(
            version_of_product("Chrome/156.0.8078.129"),
            "156.0.8078.129"
        );
        assert_eq!(
            version_of_product("HeadlessChrome/156.0.8078.129"),
            "156.0.8078.129"
        );
    }

    #[test]
    fn a_new_major_version_is_noted_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(note(dir.path(), "155.0.1.2").updated_from, None);
        // A security release of the same major version is no change.
        assert_eq!(note(dir.path(), "155.0.1.9").updated_from, None);
        let updated = note(dir.path(), "156.0.8078.129");
        let (from, at) = updated.updated_from.clone().expect("a change");
        assert_eq!(from, "155.0.1.9");
        assert!(at > 0);
        // The next start on the same release keeps what changed, for `prq doctor`.
        assert_eq!(
            note(dir.path(), "156.0.8078.130").updated_from,
            Some((from, at))
        );
    }

    #[test]
    fn an_unreadable_note_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NOTE_FILE), b"not json").unwrap();
        let release = note(dir.path(), "156.0.1.1");
        assert_eq!(release.version, "156.0.1.1");
        assert_eq!(release.updated_from, None);
    }
}
