//! How a lane's browser presents itself to the sites it opens: the Chromium switches
//! that make it an ordinary desktop browser rather than an automated one. Every switch
//! the lane's Chromium is started with is chosen here, in [`Presence::configure`], so
//! that other launch choices (memory, the DevTools transport) add to one list.
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
//!   mode, which is the one used (what `--headless` means since Chrome 132:
//!   developer.chrome.com/blog/removing-headless-old-from-chrome).
//! - chromiumoxide emulates an 800×600 viewport on each page, and a headless screen is
//!   800×600: the window and the screen get a common desktop size instead.
//!
//! The lane's own identity and network path (`[[lanes]]` user_agent, locale, timezone,
//! proxy) are switches and environment too, so that they hold for every frame, worker
//! and request; what only DevTools can set (the page's `Intl` locale, client hints that
//! match a user agent of another platform, answers to a proxy's password challenge) is
//! set on the lane's tab before its first navigation ([`Presence::prepare`]). What
//! neither can reach is left alone rather than patched in page scripts (a patched
//! property is itself a tell): see the README's "How lanes present themselves".

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::browser::BrowserConfigBuilder;
use chromiumoxide::cdp::browser_protocol::emulation::{
    SetLocaleOverrideParams, SetUserAgentOverrideParams, UserAgentBrandVersion, UserAgentMetadata,
};
use chromiumoxide::cdp::browser_protocol::fetch::{
    AuthChallengeResponse, AuthChallengeResponseResponse, AuthChallengeSource,
    ContinueRequestParams, ContinueWithAuthParams, EnableParams as FetchEnable, EventAuthRequired,
    EventRequestPaused, RequestPattern,
};
use futures::StreamExt;
use prq_protocol::proxy::Proxy;
use prq_protocol::worker::PresenceSpec;
use tokio::task::JoinHandle;

use crate::browser::{with_deadline, CdpError};
use crate::tab::{PageError, Tab};

/// How long connecting to the lane's proxy may take before its start fails.
const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `chromium --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The desktop size of the window and of the screen it is on.
pub const WINDOW: (u32, u32) = (1920, 1080);

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

/// What the lane's browser says it is, and where it connects from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The `User-Agent` header and `navigator.userAgent`.
    pub user_agent: String,
    /// Set by the lane (else the browser's own is used, with its own client hints).
    custom_user_agent: bool,
    pub locale: String,
    pub timezone: String,
    pub proxy: Option<Proxy>,
    pub headless: bool,
}

impl Presence {
    /// The lane's presence: its settings, and the ordinary desktop user agent of the
    /// version `browser` is where the lane names none.
    pub async fn for_lane(spec: &PresenceSpec, browser: &Path) -> Result<Self, String> {
        let user_agent = match &spec.user_agent {
            Some(ua) => ua.clone(),
            None => desktop_user_agent(&browser_version(browser).await?),
        };
        let proxy = spec.proxy.as_deref().map(Proxy::parse).transpose()?;
        Ok(Self {
            user_agent,
            custom_user_agent: spec.user_agent.is_some(),
            locale: spec.locale.clone(),
            timezone: spec.timezone.clone(),
            proxy,
            headless: spec.headless,
        })
    }

    /// Fails, naming the proxy, when it refuses or does not answer a connection: a lane
    /// behind a dead proxy would otherwise fail at its first page load, less clearly.
    pub async fn check_proxy(&self) -> Result<(), String> {
        let Some(proxy) = &self.proxy else {
            return Ok(());
        };
        let connect = tokio::net::TcpStream::connect(proxy.address());
        match tokio::time::timeout(PROXY_CONNECT_TIMEOUT, connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("the proxy {proxy} cannot be reached: {e}")),
            Err(_) => Err(format!(
                "the proxy {proxy} did not accept a connection within {} s",
                PROXY_CONNECT_TIMEOUT.as_secs()
            )),
        }
    }

    /// The environment the browser runs in: its time zone (which every renderer
    /// follows, workers included).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("TZ", self.timezone.clone())]
    }

    /// Applies the switches to a browser config that has chromiumoxide's defaults off.
    pub fn configure(&self, config: BrowserConfigBuilder) -> BrowserConfigBuilder {
        let (width, height) = WINDOW;
        let config = config
            .disable_default_args()
            // The new headless mode is the real browser without a window; chromiumoxide's
            // own headless switches add `hide-scrollbars`, which changes page layout.
            .with_head()
            .args(SWITCHES.iter().copied())
            // A list switch given twice counts once in Chromium; chromiumoxide merges the
            // values of a key given as (key, values), so more features can be added so.
            .arg(("disable-features", &["TranslateUI"][..]))
            .arg(("user-agent", self.user_agent.as_str()))
            .arg(("lang", self.locale.as_str()))
            .arg(("accept-lang", accept_languages(&self.locale).as_str()))
            .window_size(width, height)
            // Pages are as big as the window, as in a desktop browser.
            .viewport(None);
        // A headless screen is 800×600 unless told; a headed browser's is its display's.
        let config = match self.headless {
            true => config
                .arg("headless")
                .arg(format!("screen-info={{{width}x{height}}}")),
            false => config,
        };
        let config = self.env().into_iter().fold(config, |c, (k, v)| c.env(k, v));
        match &self.proxy {
            None => config,
            Some(proxy) => config
                .arg(("proxy-server", proxy.server().as_str()))
                // Chromium sends loopback addresses around a proxy unless told not to;
                // a lane's traffic goes where its owner said, all of it.
                .arg(("proxy-bypass-list", "<-loopback>"))
                // WebRTC would otherwise reach out directly and show the real address.
                .arg(("force-webrtc-ip-handling-policy", "disable_non_proxied_udp")),
        }
    }

    /// Sets on the lane's tab, before its first navigation, what only DevTools can:
    /// the page's `Intl` locale (headless Chromium keeps `en-US` whatever `--lang`
    /// says) and client hints that match a user agent the lane set.
    pub async fn prepare(&self, tab: &Tab) -> Result<(), PageError> {
        tab.call(SetLocaleOverrideParams {
            locale: Some(self.locale.replace('-', "_")),
        })
        .await?;
        if self.custom_user_agent {
            let mut params = SetUserAgentOverrideParams::new(self.user_agent.clone());
            params.accept_language = Some(accept_languages(&self.locale));
            params.platform = navigator_platform(&self.user_agent).map(str::to_owned);
            params.user_agent_metadata = client_hints(&self.user_agent);
            tab.call(params).await?;
        }
        Ok(())
    }

    /// Gives the lane's HTTP proxy its password when it asks (a 407 challenge), for
    /// every request of the browser: returns the task that answers, if the proxy has
    /// a password.
    ///
    /// This is done on the browser's own DevTools session, where it covers every tab,
    /// frame and worker, and where chromiumoxide answers no challenge itself (on a
    /// page's session it answers each one at once, with no password). Fetch hands
    /// challenges over on paused requests only, so every request is paused and let go
    /// at once; only the proxy's challenge gets the password, a site asking for a login
    /// gets the browser's default answer.
    pub async fn answer_proxy(
        &self,
        browser: &Arc<chromiumoxide::Browser>,
        timeout: Duration,
    ) -> Result<Option<JoinHandle<()>>, CdpError> {
        let Some((user, password)) = self.proxy.as_ref().and_then(|p| p.credentials.clone()) else {
            return Ok(None);
        };
        let listen = "an event listener";
        let mut paused = with_deadline(
            timeout,
            listen,
            browser.event_listener::<EventRequestPaused>(),
        )
        .await?;
        let mut challenges = with_deadline(
            timeout,
            listen,
            browser.event_listener::<EventAuthRequired>(),
        )
        .await?;
        let enable = FetchEnable::builder()
            .handle_auth_requests(true)
            .pattern(RequestPattern::builder().url_pattern("*").build())
            .build();
        with_deadline(timeout, "Fetch.enable", browser.execute(enable)).await?;
        let browser = Arc::clone(browser);
        Ok(Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(event) = paused.next() => {
                        let go = ContinueRequestParams::new(event.request_id.clone());
                        let _ = tokio::time::timeout(timeout, browser.execute(go)).await;
                    }
                    Some(event) = challenges.next() => {
                        let from_proxy = event.auth_challenge.source == Some(AuthChallengeSource::Proxy);
                        let answer = match from_proxy {
                            true => AuthChallengeResponse {
                                response: AuthChallengeResponseResponse::ProvideCredentials,
                                username: Some(user.clone()),
                                password: Some(password.clone()),
                            },
                            false => AuthChallengeResponse::new(AuthChallengeResponseResponse::Default),
                        };
                        let go = ContinueWithAuthParams::new(event.request_id.clone(), answer);
                        let _ = tokio::time::timeout(timeout, browser.execute(go)).await;
                    }
                    else => break,
                }
            }
        })))
    }
}

/// `Accept-Language` for a locale: the tag, then its language (`de-DE,de`).
fn accept_languages(locale: &str) -> String {
    match locale.split_once('-') {
        Some((language, _)) => format!("{locale},{language}"),
        None => locale.to_owned(),
    }
}

/// The platform a user agent names: (`navigator.platform`, the client hints' platform).
fn platform_of(ua: &str) -> Option<(&'static str, &'static str)> {
    if ua.contains("Windows") {
        Some(("Win32", "Windows"))
    } else if ua.contains("Android") {
        Some(("Linux armv81", "Android"))
    } else if ua.contains("Macintosh") || ua.contains("Mac OS X") {
        Some(("MacIntel", "macOS"))
    } else if ua.contains("CrOS") {
        Some(("Linux x86_64", "Chrome OS"))
    } else if ua.contains("Linux") {
        Some(("Linux x86_64", "Linux"))
    } else {
        None
    }
}

fn navigator_platform(ua: &str) -> Option<&'static str> {
    platform_of(ua).map(|(navigator, _)| navigator)
}

/// The client hints a Chrome of the user agent's version and platform sends (brands as
/// Chrome lists them: a GREASE brand, Chromium, Google Chrome). A user agent of another
/// browser gets none: Firefox and Safari send no client hints.
fn client_hints(ua: &str) -> Option<UserAgentMetadata> {
    let version = ua.split("Chrome/").nth(1)?.split([' ', ';', ')']).next()?;
    let major = version.split('.').next()?;
    if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (_, platform) = platform_of(ua)?;
    let brands = |v: &str| {
        vec![
            UserAgentBrandVersion::new("Not)A;Brand", "99"),
            UserAgentBrandVersion::new("Chromium", v),
            UserAgentBrandVersion::new("Google Chrome", v),
        ]
    };
    Some(UserAgentMetadata {
        brands: Some(brands(major)),
        full_version_list: Some(brands(version)),
        platform: platform.into(),
        platform_version: String::new(),
        architecture: if platform == "Android" { "" } else { "x86" }.into(),
        model: String::new(),
        mobile: platform == "Android",
        bitness: Some("64".into()),
        wow64: Some(false),
        form_factors: None,
    })
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

    #[test]
    fn a_chrome_user_agent_gets_matching_client_hints_and_others_none() {
        let windows = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                       (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36";
        let hints = client_hints(windows).unwrap();
        assert_eq!(hints.platform, "Windows");
        let brands = hints.brands.unwrap();
        assert!(brands
            .iter()
            .any(|b| b.brand == "Google Chrome" && b.version == "140"));
        assert_eq!(navigator_platform(windows), Some("Win32"));
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
        assert!(client_hints(firefox).is_none());
        assert_eq!(accept_languages("de-DE"), "de-DE,de");
        assert_eq!(accept_languages("fr"), "fr");
    }
}
