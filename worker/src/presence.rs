//! How a lane's browser presents itself to the sites it opens: the Chromium switches
//! that make it an ordinary desktop browser rather than an automated one. Every switch
//! the lane's Chromium is started with is chosen here, in [`Presence::args`], so that
//! other launch choices (memory, the DevTools transport) add to one list.
//!
//! What gives an automated Chromium away, and what is done about it (measured with
//! FingerprintJS BotD 2.0.0, `@fingerprintjs/botd`, whose detectors are in its
//! `dist/botd.esm.js`, and checked by `tests/tests/presence.rs`):
//! - `--enable-automation` (one of chromiumoxide's default switches, after Puppeteer's)
//!   makes `navigator.webdriver` true. chromiumoxide's defaults are off
//!   (`disable_default_args`) and the ones the lane needs are listed here instead;
//!   `AutomationControlled` is switched off as well, as it is what sets the flag.
//! - Headless Chromium names itself `HeadlessChrome/<version>` in its user agent (BotD's
//!   `userAgent` and `appVersion` detectors). The lane's user agent replaces it with the
//!   ordinary desktop one of the same version, by switch, so that it holds for every
//!   frame, worker and request the browser makes. Its client hints
//!   (`navigator.userAgentData`, `Sec-CH-UA`) already say `Chromium` in the new headless
//!   mode (`--headless` since Chromium 132), which is the one used.
//! - chromiumoxide emulates an 800×600 viewport on each page, and a headless screen is
//!   800×600: the window and the screen get a common desktop size instead.
//!
//! What a switch cannot reach is left alone rather than patched in page scripts (a
//! patched property is itself a tell): see the README's "How lanes present themselves".

use std::path::Path;
use std::time::Duration;

use chromiumoxide::browser::BrowserConfigBuilder;

/// How long `chromium --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The desktop size of the window and of the screen it is on.
const WINDOW: (u32, u32) = (1920, 1080);

/// Switches every lane's Chromium gets, without the leading `--` (chromiumoxide adds
/// it). Those of chromiumoxide's defaults (Puppeteer's list) that a lane needs are
/// repeated here, since its defaults are off: without the background switches a lane's
/// tab, which is never the focused one, has its timers and renderer throttled.
const SWITCHES: &[&str] = &[
    "disable-gpu",
    "disable-background-networking",
    "disable-background-timer-throttling",
    "disable-backgrounding-occluded-windows",
    "disable-renderer-backgrounding",
    "disable-breakpad",
    "disable-client-side-phishing-detection",
    "disable-component-extensions-with-background-pages",
    "disable-component-update",
    "disable-default-apps",
    "disable-dev-shm-usage",
    "disable-hang-monitor",
    "disable-prompt-on-repost",
    "disable-sync",
    "metrics-recording-only",
    "no-first-run",
    "disable-quic",
    "mute-audio",
    "force-color-profile=srgb",
    // `navigator.webdriver` stays false, as in a browser a person started.
    "disable-blink-features=AutomationControlled",
    PASSWORD_STORE,
];

/// Chromium encrypts a profile's cookies with a key from the password store it finds
/// (a desktop keyring, if any). The headless lane and the visible `prq login` window
/// must use the same store, or the lane cannot read the cookies the login wrote; the
/// basic store is the one both always have.
pub const PASSWORD_STORE: &str = "password-store=basic";

/// What the lane's browser says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The `User-Agent` header and `navigator.userAgent`.
    pub user_agent: String,
}

impl Presence {
    /// The presence of an ordinary desktop Chromium of the version that `browser` is.
    pub async fn ordinary(browser: &Path) -> Result<Self, String> {
        let version = browser_version(browser).await?;
        Ok(Self {
            user_agent: desktop_user_agent(&version),
        })
    }

    /// Applies the switches to a browser config that has chromiumoxide's defaults off.
    pub fn configure(&self, config: BrowserConfigBuilder) -> BrowserConfigBuilder {
        let (width, height) = WINDOW;
        config
            .disable_default_args()
            // The new headless mode is the real browser without a window; chromiumoxide's
            // own headless switches add `hide-scrollbars`, which changes page layout.
            .with_head()
            .arg("headless")
            .args(SWITCHES.iter().copied())
            // A list switch given twice counts once in Chromium; chromiumoxide merges the
            // values of a key given as (key, values), so more features can be added so.
            .arg(("disable-features", &["TranslateUI"][..]))
            .arg(("user-agent", self.user_agent.as_str()))
            .window_size(width, height)
            .arg(format!("screen-info={{{width}x{height}}}"))
            // Pages are as big as the window, as in a desktop browser.
            .viewport(None)
    }
}

/// The version `browser --version` reports (`Chromium 148.0.7778.167 built on Debian`,
/// `Google Chrome 148.0.7778.167`): its first dotted number.
pub async fn browser_version(browser: &Path) -> Result<String, String> {
    let run = tokio::process::Command::new(browser)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(VERSION_TIMEOUT, run).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("`{} --version` failed: {e}", browser.display())),
        Err(_) => {
            return Err(format!(
                "`{} --version` did not answer within {} s",
                browser.display(),
                VERSION_TIMEOUT.as_secs()
            ))
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text).map(str::to_owned).ok_or_else(|| {
        format!(
            "`{} --version` printed no version ({:?}); set the lane's user_agent",
            browser.display(),
            text.trim()
        )
    })
}

fn parse_version(text: &str) -> Option<&str> {
    text.split_whitespace().find(|word| {
        let parts: Vec<&str> = word.split('.').collect();
        parts.len() >= 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The user agent desktop Chromium `version` sends on Linux. Since the user-agent
/// reduction (chromium.org/updates/ua-reduction) it carries only the major version, as
/// `<major>.0.0.0`, and the platform `X11; Linux x86_64`; the headless browser's own
/// string is the same with `HeadlessChrome` for `Chrome`.
pub fn desktop_user_agent(version: &str) -> String {
    let major = version.split('.').next().unwrap_or(version);
    format!(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/{major}.0.0.0 Safari/537.36"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_what_browsers_print() {
        let debian = "Chromium 148.0.7778.167 built on Debian GNU/Linux 12 (bookworm)\n";
        assert_eq!(parse_version(debian), Some("148.0.7778.167"));
        assert_eq!(
            parse_version("Google Chrome 131.0.6778.85 \n"),
            Some("131.0.6778.85")
        );
        assert_eq!(parse_version("Chromium snap"), None);
    }

    #[test]
    fn the_desktop_user_agent_has_the_major_version_only() {
        let ua = desktop_user_agent("148.0.7778.167");
        assert_eq!(
            ua,
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/148.0.0.0 Safari/537.36"
        );
        assert!(!ua.contains("Headless"));
    }
}
