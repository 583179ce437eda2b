//! A lane's browser identity and network path in the config (`[[lanes]]` user_agent,
//! locale, timezone, proxy, headless): their checks, their defaults from the system the
//! daemon runs on, and how `prq status` shows them. The worker applies them
//! (`worker/src/presence.rs`).

use std::ops::Range;
use std::path::Path;

use prq_protocol::control::PresenceStatus;
use prq_protocol::proxy::Proxy;
use prq_protocol::worker::{BrowserRelease, PresenceSpec};

use crate::config::{Lane, LaneConfig};

/// Where Debian's tzdata keeps the IANA zones, one file per name.
const ZONEINFO: &str = "/usr/share/zoneinfo";

/// A lane's presence settings: each checked, and none on a lane without a browser.
/// The error carries the span of the value at fault.
pub fn check(lane: &LaneConfig) -> Result<(), (Range<usize>, String)> {
    let set: Vec<(&str, Range<usize>)> = [
        ("user_agent", lane.user_agent.as_ref().map(|v| v.span())),
        ("locale", lane.locale.as_ref().map(|v| v.span())),
        ("timezone", lane.timezone.as_ref().map(|v| v.span())),
        ("proxy", lane.proxy.as_ref().map(|v| v.span())),
        ("headless", lane.headless.as_ref().map(|v| v.span())),
    ]
    .into_iter()
    .filter_map(|(key, span)| Some((key, span?)))
    .collect();
    if lane.provider.get_ref() == "echo" {
        if let Some((key, span)) = set.into_iter().next() {
            return Err((
                span,
                format!("{key} is for lanes with a browser; echo has none"),
            ));
        }
        return Ok(());
    }
    if let Some(ua) = &lane.user_agent {
        let text = ua.get_ref();
        if text.trim().is_empty() || text.chars().any(|c| c.is_control()) || !text.is_ascii() {
            return Err((
                ua.span(),
                "user_agent must be one line of printable ASCII, as browsers send it".into(),
            ));
        }
    }
    if let Some(locale) = &lane.locale {
        if !valid_locale(locale.get_ref()) {
            return Err((
                locale.span(),
                format!(
                    "locale {:?} is not a language tag; write e.g. \"en-US\" or \"de-DE\"",
                    locale.get_ref()
                ),
            ));
        }
    }
    if let Some(zone) = &lane.timezone {
        if !valid_timezone(zone.get_ref()) {
            return Err((
                zone.span(),
                format!(
                    "timezone {:?} is not an IANA time zone name (e.g. \"Europe/Berlin\", \"America/New_York\", \"UTC\"; see {ZONEINFO})",
                    zone.get_ref()
                ),
            ));
        }
    }
    if let Some(proxy) = &lane.proxy {
        Proxy::parse(proxy.get_ref()).map_err(|e| (proxy.span(), e))?;
    }
    Ok(())
}

/// The lane's settings with the system's defaults filled in.
pub fn resolve(lane: &LaneConfig) -> PresenceSpec {
    let value = |v: &Option<toml::Spanned<String>>| v.as_ref().map(|v| v.get_ref().clone());
    PresenceSpec {
        user_agent: value(&lane.user_agent),
        locale: value(&lane.locale).unwrap_or_else(system_locale),
        timezone: value(&lane.timezone).unwrap_or_else(system_timezone),
        proxy: value(&lane.proxy),
        headless: lane.headless.as_ref().is_none_or(|h| *h.get_ref()),
    }
}

/// What `prq status` shows of a lane's presence (`None` for a lane without a browser),
/// with the user agent its browser reported.
pub fn status(
    lane: &Lane,
    user_agent: Option<&str>,
    release: Option<&BrowserRelease>,
) -> Option<PresenceStatus> {
    if lane.provider == "echo" {
        return None;
    }
    let p = &lane.presence;
    Some(PresenceStatus {
        user_agent: user_agent
            .map(str::to_owned)
            .or_else(|| p.user_agent.clone()),
        locale: p.locale.clone(),
        timezone: p.timezone.clone(),
        proxy: p
            .proxy
            .as_deref()
            .map(|url| Proxy::parse(url).map_or_else(|_| url.to_owned(), |p| p.to_string())),
        headless: p.headless,
        browser_version: release.map(|r| r.version.clone()),
        browser_updated_from: release.and_then(|r| r.updated_from.as_ref().map(|(v, _)| v.clone())),
    })
}

/// The daemon's locale (`LC_ALL`, `LC_MESSAGES`, `LANG`, as the C library picks it) as
/// a language tag: `de_DE.UTF-8` is `de-DE`; none, or `C`/`POSIX`, is `en-US`.
pub fn system_locale() -> String {
    let var = ["LC_ALL", "LC_MESSAGES", "LANG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    var.and_then(|v| posix_to_tag(&v))
        .unwrap_or_else(|| "en-US".into())
}

fn posix_to_tag(value: &str) -> Option<String> {
    let name = value.split(['.', '@']).next()?;
    let tag = name.replace('_', "-");
    (!matches!(name, "C" | "POSIX") && valid_locale(&tag)).then_some(tag)
}

/// The daemon's time zone: `TZ` when it names a zone, else `/etc/timezone` (Debian),
/// else where `/etc/localtime` links into the zone files; else `UTC`.
pub fn system_timezone() -> String {
    let from_env = std::env::var("TZ")
        .ok()
        .map(|tz| tz.trim_start_matches(':').to_owned());
    let from_file = || {
        std::fs::read_to_string("/etc/timezone")
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let from_link = || {
        let target = std::fs::read_link("/etc/localtime").ok()?;
        let target = target.to_str()?;
        Some(target.split_once("zoneinfo/")?.1.to_owned())
    };
    from_env
        .filter(|z| valid_timezone(z))
        .or_else(|| from_file().filter(|z| valid_timezone(z)))
        .or_else(|| from_link().filter(|z| valid_timezone(z)))
        .unwrap_or_else(|| "UTC".into())
}

/// A BCP 47 tag in the shape browsers take: a 2–3 letter language, then subtags of
/// 2–8 letters or digits (`en`, `en-US`, `zh-Hant-TW`).
fn valid_locale(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let language = parts.next().unwrap_or_default();
    (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// An IANA zone name: `UTC`, or `Area/Location` with a file in the zone database when
/// the system has one (Chromium carries its own copy, so a system without tzdata
/// gets the shape check only).
fn valid_timezone(zone: &str) -> bool {
    let shaped = !zone.is_empty()
        && !zone.starts_with('/')
        && !zone
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c));
    if !shaped {
        return false;
    }
    let db = Path::new(ZONEINFO);
    !db.is_dir() || db.join(zone).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn lane(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("[[lanes]]\nprovider = \"sandbox\"\n{extra}"))
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn settings_are_taken_and_defaults_filled_in() {
        let c = lane(
            "user_agent = \"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/140.0.0.0\"\n\
             locale = \"de-DE\"\ntimezone = \"Europe/Berlin\"\n\
             proxy = \"http://u:pw@127.0.0.1:3128\"\nheadless = false\n",
        )
        .unwrap();
        let p = &c.lanes()[0].presence;
        assert_eq!(p.locale, "de-DE");
        assert_eq!(p.timezone, "Europe/Berlin");
        assert!(!p.headless);
        let shown = status(&c.lanes()[0], None, None).unwrap();
        assert_eq!(shown.proxy.as_deref(), Some("http://u:***@127.0.0.1:3128"));
        assert!(shown.user_agent.unwrap().contains("Windows"));

        let d = &lane("").unwrap().lanes()[0].presence;
        assert!(d.headless && d.proxy.is_none() && d.user_agent.is_none());
        assert!(
            valid_locale(&d.locale) && valid_timezone(&d.timezone),
            "{d:?}"
        );
    }

    #[test]
    fn bad_settings_are_named_with_their_line() {
        for (extra, says) in [
            ("locale = \"german\"", "locale \"german\""),
            ("timezone = \"Mars/Olympus\"", "IANA"),
            ("timezone = \"../etc/passwd\"", "IANA"),
            ("proxy = \"socks5://u:p@h:1080\"", "SOCKS5"),
            ("proxy = \"h:1\"", "not a URL"),
            ("user_agent = \"\"", "user_agent"),
        ] {
            let e = lane(&format!("{extra}\n")).unwrap_err();
            assert!(e.contains(says) && e.contains("line 3"), "{extra}: {e}");
        }
        let e = Config::parse("[[lanes]]\nprovider = \"echo\"\nheadless = false\n").unwrap_err();
        assert!(format!("{e:#}").contains("echo has none"), "{e:#}");
    }

    #[test]
    fn system_locales_become_language_tags() {
        assert_eq!(posix_to_tag("de_DE.UTF-8").as_deref(), Some("de-DE"));
        assert_eq!(posix_to_tag("pt_BR@euro").as_deref(), Some("pt-BR"));
        assert_eq!(posix_to_tag("C.UTF-8"), None);
        assert_eq!(posix_to_tag("POSIX"), None);
    }
}
