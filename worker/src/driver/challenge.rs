//! Telling a site's bot check (a captcha, or a "checking your browser" interstitial)
//! from a page that changed: both hide the prompt box, but only one is fixed by a
//! person. prq does not solve captchas; a lane whose page shows one fails its requests
//! with an error that says so, and `prq login` opens a window on the lane's profile
//! where a person can clear it.
//!
//! The markers are the hosts and element ids the check vendors' public embedding
//! guides give for their widgets (Cloudflare Turnstile and its challenge platform,
//! hCaptcha, Google reCAPTCHA, Arkose Labs, DataDome, HUMAN/PerimeterX, AWS WAF), and
//! Cloudflare's interstitial title. They are the widely known ones, not a complete list.

use prq_protocol::worker::{Failure, FailureKind};

use crate::tab::Tab;

/// A page expression (`page/challenge_probe.js`): the name of the bot check the page
/// shows, or null.
const PROBE: &str = include_str!("../page/challenge_probe.js");

/// The bot check the tab's page shows, if any (a page that does not answer shows none).
pub async fn shown(tab: &Tab) -> Option<String> {
    tab.eval::<Option<String>>(PROBE).await.ok().flatten()
}

/// `failure` as it is when the page shows a bot check instead of what was missing: a
/// captcha, which a person clears in the lane's profile (the driver adds how).
pub async fn instead_of(tab: &Tab, site: &str, failure: Failure) -> Failure {
    if failure.kind != FailureKind::SiteChanged {
        return failure;
    }
    match shown(tab).await {
        None => failure,
        Some(check) => super::failure(
            FailureKind::Captcha,
            format!(
                "{site}: the page shows a bot check ({check}) instead of the chat; prq does not solve captchas, a person must pass it"
            ),
        ),
    }
}
