//! What a lane's browser costs: the Chromium switches that save memory, and which
//! browser a lane's `browser_profile` runs. Kept apart from the switches that decide how
//! the browser looks to a site (`browser.rs`), so that each list has one owner.
//!
//! Measured one switch at a time with `scripts/measure-switches.sh` (four sandbox lanes,
//! one answer each, PSS and USS of each browser's processes; Chromium 148, Debian 12;
//! the table is in BENCHMARKS.md, "A smaller browser"). Kept, because a page cannot tell
//! them apart from an ordinary browser's:
//! - `--no-startup-window`: headless Chromium opens a first tab of its own, which the
//!   lane never uses (it opens its tab over DevTools); with it, that tab's renderer and
//!   its spare are not started. USS 490 → 317 MiB for four lanes, the largest saving.
//! - `--renderer-process-limit=1`: one lane shows one site in one tab; without it
//!   Chromium keeps a spare renderer warm for the next navigation. Sites that must be
//!   isolated still get a process of their own (site isolation is left on). USS 317 →
//!   292 MiB.
//!
//! Measured and left out: the `NetworkServiceInProcess2` feature (the network service
//! in the browser process; chromiumoxide's default `NetworkServiceInProcess` is its old
//! name and does nothing in Chromium 148) saved another 52 MiB USS, but with it a
//! stopped stream was not always seen aborted by the site before the lane's next
//! request ended (the queue tests' stop checks failed 3 times in about 12 runs, none in
//! 16 without it): a site would go on generating an answer nobody reads. Looked at
//! again on a quiet machine (BENCHMARKS.md, "A second look"): the abort is as fast as
//! without it almost always, but one stop in about a hundred reached the site seconds
//! late, and the full browser's floor without it is about 650 MiB for four lanes.
//! `--single-process` (a lane failed to open its page: "oneshot
//! canceled"), `--no-zygote` (more memory: renderers no longer share the zygote's
//! pages), `--in-process-gpu` (one process fewer, more memory), V8's
//! `--optimize-for-size`, `--lite-mode`, `--jitless` and heap limits, small disk caches,
//! `--enable-low-end-device-mode` and switching site isolation off (each within the
//! noise once the above are on, or changing what pages see).

use std::path::{Path, PathBuf};

use chromiumoxide::browser::BrowserConfigBuilder;
use prq_protocol::worker::BrowserProfile;

/// Switches without the leading `--` (chromiumoxide adds it).
const SWITCHES: [(&str, Option<&str>); 2] = [
    ("no-startup-window", None),
    ("renderer-process-limit", Some("1")),
];

/// Where the headless shell is looked for: Debian's binary itself (its
/// `/usr/bin/chromium-headless-shell` is a script that runs the binary as a child
/// instead of becoming it, so the lane would watch and signal the script, and the
/// browser would not be bound to die with the worker), then on PATH: Debian's name,
/// Chrome for Testing's, and the build's own.
const HEADLESS_SHELLS: [&str; 4] = [
    "/usr/lib/chromium/chromium-headless-shell",
    "chromium-headless-shell",
    "chrome-headless-shell",
    "headless_shell",
];

/// The environment variable that names the headless shell for `lean` lanes.
pub const HEADLESS_SHELL_ENV: &str = "PRQ_HEADLESS_SHELL";

/// Adds the memory switches to a lane's browser config (both profiles get them: they
/// save memory in the headless shell too).
pub fn configure(config: BrowserConfigBuilder) -> BrowserConfigBuilder {
    SWITCHES.iter().fold(config, |c, (key, value)| match value {
        Some(value) => c.arg((*key, *value)),
        None => c.arg(*key),
    })
}

/// The browser a lane runs: for `standard`, `configured` (the config's `browser`) as
/// [`crate::browser::find_executable`] resolves it; for `lean`, the headless shell, from
/// [`HEADLESS_SHELL_ENV`] or on PATH.
pub fn executable(profile: BrowserProfile, configured: Option<&Path>) -> Result<PathBuf, String> {
    match profile {
        BrowserProfile::Standard => {
            crate::browser::find_executable(configured).map_err(|e| e.to_string())
        }
        BrowserProfile::Lean => headless_shell(std::env::var_os(HEADLESS_SHELL_ENV)),
    }
}

fn headless_shell(env: Option<std::ffi::OsString>) -> Result<PathBuf, String> {
    if let Some(path) = env.filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return crate::browser::find_executable(Some(&path)).map_err(|e| {
            format!("{e} ({HEADLESS_SHELL_ENV} names the headless shell for browser_profile = \"lean\")")
        });
    }
    HEADLESS_SHELLS
        .iter()
        .find_map(|name| crate::browser::find_executable(Some(Path::new(name))).ok())
        .ok_or_else(|| {
            format!(
                "browser_profile = \"lean\" runs Chromium's headless shell, and none of {} \
                 was found: on Debian `apt install chromium-headless-shell`, or set {HEADLESS_SHELL_ENV}, \
                 or use browser_profile = \"standard\"",
                HEADLESS_SHELLS.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lean_lane_without_a_headless_shell_is_told_how_to_get_one() {
        let e = headless_shell(Some("/nonexistent/headless_shell".into())).unwrap_err();
        assert!(
            e.contains("/nonexistent/headless_shell") && e.contains(HEADLESS_SHELL_ENV),
            "{e}"
        );
    }

    #[test]
    fn the_named_headless_shell_is_used() {
        let found = headless_shell(Some("sh".into())).unwrap();
        assert!(
            found.is_absolute() && found.ends_with("sh"),
            "{}",
            found.display()
        );
    }
}
