//! A lane's browser profile outside of a lane, for `prq login`: opening it in a visible
//! browser for a person to log in, and importing a cookie export into it (for servers
//! without a display). The CLI runs these as hidden `prq-worker` subcommands, so that
//! it needs no browser code of its own.
//!
//! Chromium lets one browser at a time use a profile (it holds a `SingletonLock` in it),
//! so both refuse a profile that a running browser has open, saying which.

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use chromiumoxide::cdp::browser_protocol::network::{
    CookieParam, CookieSameSite, SetCookiesParams, TimeSinceEpoch,
};
use chromiumoxide::cdp::browser_protocol::storage::GetCookiesParams;
use serde::Deserialize;

use prq_protocol::worker::BrowserProfile;

use crate::browser::{find_executable, with_deadline, Browser};
use crate::presence::PASSWORD_STORE;

/// Deadline for each browser call while importing.
const CDP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the browser gets to write the cookies out and exit.
const FLUSH_GRACE: Duration = Duration::from_secs(10);
/// A cookie exported without an expiry lives as long as the browser session, which
/// for a lane ends at every restart: it is given this long instead.
const SESSION_COOKIE_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// The pid of a live browser that holds `profile`, if one does. Chromium's lock is a
/// symlink whose target is `<host>-<pid>`.
pub fn in_use(profile: &Path) -> Option<u32> {
    let target = std::fs::read_link(profile.join("SingletonLock")).ok()?;
    let pid: u32 = target.to_str()?.rsplit_once('-')?.1.parse().ok()?;
    // A garbled lock may say 0 or more than a pid can be: signal 0 to those would ask
    // about this process's group, or every process.
    let live = i32::try_from(pid).ok().filter(|&p| p > 0)?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(live), None).is_ok();
    alive.then_some(pid)
}

fn refuse_if_in_use(profile: &Path) -> anyhow::Result<()> {
    if let Some(pid) = in_use(profile) {
        bail!(
            "the profile {} is in use by a running browser (pid {pid}); a profile can be open in one browser at a time: stop prq (`prq stop`) or close that browser first",
            profile.display()
        );
    }
    Ok(())
}

/// Opens `url` in a visible browser on `profile` and waits until the person closes it.
pub fn login_window(
    profile: &Path,
    url: &str,
    browser: Option<&Path>,
) -> anyhow::Result<ExitStatus> {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        bail!("no display (neither DISPLAY nor WAYLAND_DISPLAY is set)");
    }
    refuse_if_in_use(profile)?;
    let path = find_executable(browser)?;
    std::fs::create_dir_all(profile)
        .with_context(|| format!("cannot create {}", profile.display()))?;
    std::process::Command::new(&path)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--{PASSWORD_STORE}"))
        .args([
            "--no-first-run",
            "--no-default-browser-check",
            "--new-window",
        ])
        .arg(url)
        .status()
        .with_context(|| format!("cannot start {}", path.display()))
}

/// One cookie as browser extensions export them (EditThisCookie, Cookie-Editor:
/// `expirationDate`, `hostOnly`, `sameSite` of `no_restriction|lax|strict|unspecified`)
/// or as Playwright's storage state has them (`expires`, -1 for a session cookie).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportedCookie {
    name: String,
    value: String,
    domain: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    expiration_date: Option<f64>,
    #[serde(default)]
    expires: Option<f64>,
    #[serde(default)]
    http_only: bool,
    #[serde(default)]
    secure: bool,
    #[serde(default)]
    same_site: Option<String>,
    #[serde(default)]
    host_only: Option<bool>,
}

/// A cookie export: an array of cookies, or an object with a `cookies` array.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Export {
    Cookies(Vec<ExportedCookie>),
    StorageState { cookies: Vec<ExportedCookie> },
}

pub struct Imported {
    pub cookies: usize,
    /// Session cookies given [`SESSION_COOKIE_LIFETIME`].
    pub sessions_extended: usize,
    pub domains: Vec<String>,
}

/// Reads a cookie export and sets its cookies in `profile`, through a headless browser
/// on it, so that they are stored the way the lane's browser reads them.
pub async fn import_cookies(
    profile: &Path,
    file: &Path,
    browser: Option<&Path>,
) -> anyhow::Result<Imported> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let cookies = parse_export(&text, now())
        .with_context(|| format!("{} is not a cookie export", file.display()))?;
    refuse_if_in_use(profile)?;
    let presence = Default::default();
    let (mut browser, _death) = Browser::launch_on(
        browser,
        profile,
        CDP_TIMEOUT,
        &presence,
        BrowserProfile::Standard,
    )
    .await?;
    let set = async {
        let page = with_deadline(
            CDP_TIMEOUT,
            "Target.createTarget",
            browser.inner().new_page("about:blank"),
        )
        .await?;
        let params = SetCookiesParams::new(cookies.params.clone());
        with_deadline(CDP_TIMEOUT, "Network.setCookies", page.execute(params)).await?;
        let all = with_deadline(
            CDP_TIMEOUT,
            "Storage.getCookies",
            page.execute(GetCookiesParams::default()),
        )
        .await?;
        anyhow::Ok(all.result.cookies.len())
    };
    let stored = set.await;
    let flushed = browser.close_within(FLUSH_GRACE).await;
    let stored = stored?;
    if stored < cookies.params.len() {
        bail!(
            "the browser kept {stored} of the {} cookies (a cookie with a bad domain or an unsupported attribute is dropped)",
            cookies.params.len()
        );
    }
    if !flushed {
        bail!(
            "the browser did not exit within {} s, so the cookies may not have been written to the profile; try again",
            FLUSH_GRACE.as_secs()
        );
    }
    Ok(Imported {
        cookies: cookies.params.len(),
        sessions_extended: cookies.sessions_extended,
        domains: cookies.domains,
    })
}

#[derive(Debug)]
struct Parsed {
    params: Vec<CookieParam>,
    sessions_extended: usize,
    domains: Vec<String>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The export's cookies as CDP cookie parameters, `now` being the time in seconds.
fn parse_export(text: &str, now: f64) -> anyhow::Result<Parsed> {
    let export: Export = serde_json::from_str(text).context(
        "expected a JSON array of cookies (name, value, domain, path, expirationDate, httpOnly, secure, sameSite)",
    )?;
    let (Export::Cookies(cookies) | Export::StorageState { cookies }) = export;
    if cookies.is_empty() {
        bail!("it holds no cookies");
    }
    let mut parsed = Parsed {
        params: Vec::new(),
        sessions_extended: 0,
        domains: Vec::new(),
    };
    for cookie in cookies {
        let expires = cookie
            .expiration_date
            .or(cookie.expires)
            .filter(|e| *e > 0.0);
        let expires = expires.unwrap_or_else(|| {
            parsed.sessions_extended += 1;
            now + SESSION_COOKIE_LIFETIME.as_secs_f64()
        });
        let path = cookie.path.unwrap_or_else(|| "/".into());
        let host = cookie.domain.trim_start_matches('.').to_owned();
        // A host-only cookie is set by URL, so that it stays host-only; a domain cookie
        // by its (dotted) domain.
        let host_only = cookie.host_only.unwrap_or(!cookie.domain.starts_with('.'));
        let builder = CookieParam::builder()
            .name(cookie.name.clone())
            .value(cookie.value)
            .path(path.clone())
            .secure(cookie.secure)
            .http_only(cookie.http_only)
            .expires(TimeSinceEpoch::new(expires));
        let builder = match same_site(cookie.same_site.as_deref()) {
            Some(same_site) => builder.same_site(same_site),
            None => builder,
        };
        let builder = if host_only {
            let scheme = if cookie.secure { "https" } else { "http" };
            builder.url(format!("{scheme}://{host}{path}"))
        } else {
            builder.domain(format!(".{host}"))
        };
        let param = builder
            .build()
            .map_err(|e| anyhow::anyhow!("cookie {:?}: {e}", cookie.name))?;
        parsed.params.push(param);
        if !parsed.domains.contains(&host) {
            parsed.domains.push(host);
        }
    }
    Ok(parsed)
}

fn same_site(value: Option<&str>) -> Option<CookieSameSite> {
    match value?.to_ascii_lowercase().as_str() {
        "strict" => Some(CookieSameSite::Strict),
        "lax" => Some(CookieSameSite::Lax),
        "none" | "no_restriction" => Some(CookieSameSite::None),
        // `unspecified`: the browser's default.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extension_export_becomes_cookie_params() {
        let text = r#"[
          {"domain": ".deepseek.com", "name": "ds_session", "value": "v1", "path": "/",
           "expirationDate": 1900000000.5, "hostOnly": false, "httpOnly": true,
           "secure": true, "sameSite": "no_restriction", "session": false, "storeId": "0"},
          {"domain": "chat.deepseek.com", "name": "theme", "value": "dark",
           "hostOnly": true, "httpOnly": false, "secure": true, "sameSite": "unspecified",
           "session": true}
        ]"#;
        let parsed = parse_export(text, 1000.0).unwrap();
        assert_eq!(parsed.params.len(), 2);
        assert_eq!(parsed.sessions_extended, 1);
        assert_eq!(parsed.domains, ["deepseek.com", "chat.deepseek.com"]);
        let [domain, host] = &parsed.params[..] else {
            unreachable!()
        };
        assert_eq!(domain.domain.as_deref(), Some(".deepseek.com"));
        assert_eq!(domain.url, None);
        assert_eq!(domain.same_site, Some(CookieSameSite::None));
        assert_eq!(domain.http_only, Some(true));
        assert_eq!(host.url.as_deref(), Some("https://chat.deepseek.com/"));
        assert_eq!(host.domain, None);
        assert_eq!(host.same_site, None);
        let expires = host.expires.as_ref().map(|e| *e.inner()).unwrap();
        assert_eq!(expires, 1000.0 + SESSION_COOKIE_LIFETIME.as_secs_f64());
    }

    #[test]
    fn a_storage_state_export_too() {
        let text = r#"{"cookies": [{"name": "a", "value": "b", "domain": "x.test", "path": "/",
          "expires": -1, "httpOnly": false, "secure": false, "sameSite": "Lax"}], "origins": []}"#;
        let parsed = parse_export(text, 0.0).unwrap();
        assert_eq!(parsed.params[0].url.as_deref(), Some("http://x.test/"));
        assert_eq!(parsed.params[0].same_site, Some(CookieSameSite::Lax));
        assert_eq!(parsed.sessions_extended, 1);
    }

    #[test]
    fn what_is_not_an_export_says_what_one_is() {
        let e = parse_export(r#"{"name": "a"}"#, 0.0).unwrap_err();
        assert!(
            format!("{e:#}").contains("expected a JSON array of cookies"),
            "{e:#}"
        );
        assert!(parse_export("[]", 0.0).is_err());
    }

    #[test]
    fn a_profile_is_in_use_only_while_its_browser_lives() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("SingletonLock");
        std::os::unix::fs::symlink(format!("host-{}", std::process::id()), &lock).unwrap();
        assert_eq!(in_use(dir.path()), Some(std::process::id()));
        std::fs::remove_file(&lock).unwrap();
        // No process has pid 2^22 + 1 (above the kernel's default pid_max ceiling).
        std::os::unix::fs::symlink("host-4194305", &lock).unwrap();
        assert_eq!(in_use(dir.path()), None);
        assert_eq!(in_use(&dir.path().join("nowhere")), None);
    }
}
