//! What a lane's browser costs: the Chromium switches that save memory, and which
//! browser a lane's `browser_profile` runs. Kept apart from the switches that decide how
//! the browser looks to a site (`browser.rs`), so that each list has one owner.
//!
//! Measured one switch at a time with `scripts/measure-switches.sh` (four sandbox lanes,
//! one answer each, PSS and USS of each browser's processes; the tables, with the
//! Chromium version beside every figure, are in BENCHMARKS.md, "A smaller browser" and
//! "Chromium 156.0.8078.129"). Kept for every profile, because a page cannot tell them
//! apart from an ordinary browser's:
//! - `--no-startup-window`: headless Chromium opens a first tab of its own, which the
//!   lane never uses (it opens its tab over DevTools); with it, that tab's renderer and
//!   its spare are not started. USS 490 → 317 MiB for four lanes (Chromium 148).
//! - `--renderer-process-limit=1`: one lane shows one site in one tab; without it
//!   Chromium keeps a spare renderer warm for the next navigation. Sites that must be
//!   isolated still get a process of their own (site isolation is left on). USS 317 →
//!   292 MiB (Chromium 148).
//! - The omnibox popup's WebUI off (`WebUIOmniboxPopup`, `WebUIOmniboxAimPopup`,
//!   `WebUIOmniboxFullPopup`): from 156.0.8078.129 Chromium preloads the address bar's
//!   popup (`chrome://omnibox-popup.top-chrome/`, a `browser_ui` target) in a renderer
//!   of its own, started with `--top-chrome-webui`, even headless, where no address bar
//!   is ever shown. Four lanes: PSS 898 → 735 MiB, one process fewer each.
//!
//! `compact` adds, for lanes that must fit in less memory and can take the cost, the
//! network service in the browser process (`NetworkServiceInProcess2`; the old name,
//! `NetworkServiceInProcess`, which chromiumoxide's defaults use, does nothing now).
//! Each process Chromium starts by `exec` carries its own copy of the binary's
//! relocated data, so this saves the most. Its cost: a stopped stream was seen aborted
//! by the site seconds late in about one stop of a hundred (on an HTTP/1.1 stream whose
//! connection Chromium drains before reuse), so a site may go on generating an answer
//! nobody reads for those seconds. Four lanes on 156.0.8078.129 with no other Chromium
//! on the machine: PSS 734 → 672 MiB, USS 356 → 295 MiB.
//!
//! The GPU in the browser process (`--in-process-gpu`) was measured for `compact` and
//! left out: on top of the above it took PSS 597 → 586 MiB but USS 290 → 338 MiB (the
//! GPU process is forked from a zygote and shares its pages; in the browser process the
//! same memory is private), and a fault in the software GPU code would end the lane's
//! browser.
//!
//! Measured and left out of every profile: `--disable-software-rasterizer` and
//! `--use-gl=disabled` (about 11 MiB a lane on 156.0.8078.129, but WebGL is gone:
//! `getContext("webgl")` is null, which no desktop browser shows and bot checks read),
//! `--single-process` (a lane failed to open its page: "oneshot canceled"),
//! `--no-zygote` (more memory: renderers no longer share the zygote's pages), V8's
//! `--optimize-for-size`, `--lite-mode`, `--jitless` and heap limits, small disk caches,
//! `--enable-low-end-device-mode`, switching site isolation off, Skia Graphite, Vulkan
//! and the GPU disk caches off (each within the noise, or changing what pages see).

use std::path::{Path, PathBuf};

use chromiumoxide::browser::BrowserConfigBuilder;
use prq_protocol::worker::BrowserProfile;

/// Switches without the leading `--` (chromiumoxide adds it), for every profile.
const SWITCHES: [(&str, Option<&str>); 2] = [
    ("no-startup-window", None),
    ("renderer-process-limit", Some("1")),
];

/// Features off in every profile. chromiumoxide merges the values of a list switch
/// given more than once, so these join the presence's own `--disable-features`.
const FEATURES_OFF: [&str; 3] = [
    "WebUIOmniboxPopup",
    "WebUIOmniboxAimPopup",
    "WebUIOmniboxFullPopup",
];

/// What `compact` adds: the network service in the browser process.
const COMPACT_FEATURES_ON: [&str; 1] = ["NetworkServiceInProcess2"];

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

/// Adds the memory switches of `profile` to a lane's browser config (every profile gets
/// the common ones: they save memory in the headless shell too).
pub fn configure(config: BrowserConfigBuilder, profile: BrowserProfile) -> BrowserConfigBuilder {
    let config = SWITCHES
        .iter()
        .fold(config, |c, (key, value)| match value {
            Some(value) => c.arg((*key, *value)),
            None => c.arg(*key),
        })
        .arg(("disable-features", &FEATURES_OFF[..]));
    match profile {
        BrowserProfile::Standard | BrowserProfile::Lean => config,
        BrowserProfile::Compact => config.arg(("enable-features", &COMPACT_FEATURES_ON[..])),
    }
}

/// The browser a lane runs: for `standard` and `compact`, `configured` (the config's `browser`) as
/// [`crate::browser::find_executable`] resolves it; for `lean`, the headless shell, from
/// [`HEADLESS_SHELL_ENV`] or on PATH.
pub fn executable(profile: BrowserProfile, configured: Option<&Path>) -> Result<PathBuf, String> {
    match profile {
        BrowserProfile::Standard | BrowserProfile::Compact => {
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
