//! How a lane's browser looks to a site: a page served here (the lane's `base_url`) runs
//! FingerprintJS BotD and the checks of issue 12 in a real lane started by `prq start`,
//! in its top frame and in a cross-site frame, and reports back over HTTP; the requests
//! it makes are recorded too, for their headers.
//!
//! BotD (npm `@fingerprintjs/botd` 2.0.0, MIT) is not kept in the repository:
//! `scripts/install-deps.sh --test` installs it into a cache directory, or `PRQ_BOTD`
//! names its `botd.esm.js`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::{get, post};
use axum::Json;
use prq_tests::proxy::TestProxy;
use prq_tests::Prq;
use serde_json::Value;
use tokio::sync::mpsc;

const BOTD_VERSION: &str = "2.0.0";

/// How long a lane's page may take to load, run BotD in both frames and report.
const REPORTS_WITHIN: Duration = Duration::from_secs(60);

/// The sandbox driver's prompt box is on the page, so that the lane is ready at once;
/// the checks run in this frame and in a frame from another site (`localhost` against
/// `127.0.0.1`), which Chromium runs in a process of its own.
const PAGE: &str = r#"<!doctype html>
<html><head><title>presence</title></head><body>
<textarea id="prompt"></textarea>
<script type="module">
import { load } from "/botd.esm.js";
const frame = window === window.top ? "top" : "cross-site";
const report = { frame };
try {
  report.botd = (await load()).detect();
} catch (e) {
  report.botd_error = String(e);
}
report.webdriver = navigator.webdriver;
report.user_agent = navigator.userAgent;
report.brands = navigator.userAgentData ? navigator.userAgentData.brands.map((b) => b.brand) : null;
report.plugins = navigator.plugins.length;
report.languages = navigator.languages.length;
report.chrome = typeof window.chrome === "object" && window.chrome !== null;
report.outer = [window.outerWidth, window.outerHeight];
report.language = navigator.language;
report.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
report.intl_locale = Intl.DateTimeFormat().resolvedOptions().locale;
await fetch("/report", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(report) });
if (frame === "top") {
  const inner = document.createElement("iframe");
  inner.src = location.href.replace("127.0.0.1", "localhost");
  document.body.append(inner);
}
</script></body></html>"#;

/// A page that shows a bot check where the chat should be (an hCaptcha frame, as
/// hCaptcha's embedding guide has it; the frame itself does not load here).
const CAPTCHA_PAGE: &str = r#"<!doctype html>
<html><head><title>One more step</title></head><body>
<iframe src="https://newassets.hcaptcha.com/captcha/v1/frame.html"></iframe>
</body></html>"#;

/// Where BotD's browser build is: `PRQ_BOTD`, else where install-deps puts it.
fn botd_path() -> PathBuf {
    if let Some(path) = std::env::var_os("PRQ_BOTD") {
        return path.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache
        .join(format!("prq-test/botd-{BOTD_VERSION}"))
        .join("node_modules/@fingerprintjs/botd/dist/botd.esm.js")
}

#[derive(Clone)]
struct Site {
    botd: String,
    reports: mpsc::UnboundedSender<Value>,
    headers: mpsc::UnboundedSender<HashMap<String, String>>,
}

/// Serves the page, BotD and the report endpoint; returns the page's URL and what the
/// page reports and sends.
async fn serve() -> (
    String,
    mpsc::UnboundedReceiver<Value>,
    mpsc::UnboundedReceiver<HashMap<String, String>>,
) {
    let path = botd_path();
    let botd = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "BotD is not at {} ({e}): run `bash scripts/install-deps.sh --test`, or set PRQ_BOTD",
            path.display()
        )
    });
    let (reports, reported) = mpsc::unbounded_channel();
    let (headers, sent) = mpsc::unbounded_channel();
    let site = Site {
        botd,
        reports,
        headers,
    };
    let app = axum::Router::new()
        .route(
            "/",
            get(|State(site): State<Site>, headers: HeaderMap| async move {
                let seen = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let _ = site.headers.send(seen);
                // Ask for the full client hints too, as sites that use them do.
                (
                    [(
                        header::HeaderName::from_static("accept-ch"),
                        "Sec-CH-UA-Full-Version-List, Sec-CH-UA-Platform",
                    )],
                    axum::response::Html(PAGE),
                )
            }),
        )
        .route(
            "/captcha",
            get(|| async { axum::response::Html(CAPTCHA_PAGE) }),
        )
        .route(
            "/botd.esm.js",
            get(|State(site): State<Site>| async move {
                ([(header::CONTENT_TYPE, "text/javascript")], site.botd)
            }),
        )
        .route(
            "/report",
            post(
                |State(site): State<Site>, Json(report): Json<Value>| async move {
                    let _ = site.reports.send(report);
                },
            ),
        )
        .with_state(site);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, reported, sent)
}

/// A config with one sandbox lane (prefix `look`, on the sandbox unless `base_url`
/// says otherwise) and the lane keys in `extra`.
fn lane_with(base_url: Option<&str>, extra: &str) -> String {
    let base_url = base_url.map_or(String::new(), |url| format!("base_url = \"{url}\"\n"));
    format!(
        "listen = \"127.0.0.1:0\"\nstart_timeout_s = 60\n\n[[lanes]]\nprovider = \"sandbox\"\n\
         prefix = \"look\"\n{base_url}{extra}"
    )
}

const IDENTITY: &str = "locale = \"de-DE\"\ntimezone = \"Asia/Tokyo\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_lane_passes_for_an_ordinary_desktop_browser() {
    let (url, mut reports, mut requests) = serve().await;
    let prq = Prq::start(&lane_with(Some(&url), IDENTITY));
    let shown = &prq.lane("look#1")["presence"];
    assert_eq!(shown["locale"], "de-DE", "{shown}");
    assert_eq!(shown["timezone"], "Asia/Tokyo", "{shown}");
    assert_eq!(shown["headless"], true, "{shown}");
    assert!(shown["proxy"].is_null(), "{shown}");
    let status_ua = shown["user_agent"]
        .as_str()
        .expect("the lane's user agent")
        .to_owned();

    let mut frames = HashMap::new();
    while frames.len() < 2 {
        let report = tokio::time::timeout(REPORTS_WITHIN, reports.recv())
            .await
            .expect("both frames report")
            .expect("the site is up");
        frames.insert(report["frame"].as_str().unwrap_or("?").to_owned(), report);
    }
    for (frame, r) in &frames {
        assert_eq!(r["botd"]["bot"], false, "BotD in the {frame} frame: {r}");
        assert_eq!(r["webdriver"], false, "{frame}: {r}");
        let ua = r["user_agent"].as_str().unwrap_or_default();
        assert!(
            ua.contains("Chrome/") && !ua.to_lowercase().contains("headless"),
            "{frame}: {ua}"
        );
        let brands = r["brands"].as_array().expect("client hints");
        assert!(!brands.is_empty(), "{frame}: {r}");
        assert!(
            brands.iter().all(|b| !b
                .as_str()
                .unwrap_or_default()
                .to_lowercase()
                .contains("headless")),
            "{frame}: {r}"
        );
        assert!(r["plugins"].as_u64() > Some(0), "{frame}: {r}");
        assert!(r["languages"].as_u64() > Some(0), "{frame}: {r}");
        assert_eq!(r["chrome"], true, "{frame}: {r}");
        let outer = &r["outer"];
        assert!(
            outer[0].as_u64() >= Some(1024) && outer[1].as_u64() >= Some(700),
            "a desktop-sized window in the {frame} frame: {r}"
        );
        // The lane's identity, as set in its config and shown by `prq status`.
        assert_eq!(r["user_agent"], status_ua.as_str(), "{frame}: {r}");
        assert_eq!(r["language"], "de-DE", "{frame}: {r}");
        assert_eq!(r["timezone"], "Asia/Tokyo", "{frame}: {r}");
    }
    // The page's own formatting follows the locale (set on the lane's tab; see the
    // README for frames from other sites).
    assert_eq!(frames["top"]["intl_locale"], "de-DE", "{}", frames["top"]);

    // What the browser sends, as a site's server sees it: every load of the page (the
    // top frame's and the cross-site frame's).
    for _ in 0..2 {
        let sent = tokio::time::timeout(REPORTS_WITHIN, requests.recv())
            .await
            .expect("the page was loaded")
            .expect("the site is up");
        let ua = &sent["user-agent"];
        assert!(
            ua.contains("Chrome/") && !ua.to_lowercase().contains("headless"),
            "{sent:?}"
        );
        let hints = sent.get("sec-ch-ua").expect("Sec-CH-UA is sent");
        assert!(
            hints.contains("Chromium") && !hints.to_lowercase().contains("headless"),
            "{sent:?}"
        );
        assert!(sent["accept-language"].starts_with("de-DE,de"), "{sent:?}");
        // The user agent and the client hints name the same major version.
        let major = ua.split("Chrome/").nth(1).and_then(|v| v.split('.').next());
        assert!(
            major.is_some_and(|m| hints.contains(&format!("v=\"{m}\""))),
            "{sent:?}"
        );
    }
    drop(prq);
}

/// The lane's traffic to its site goes through its proxy, which gets its password when
/// it asks for it; `prq status` shows the proxy without the password.
#[tokio::test(flavor = "multi_thread")]
async fn a_lane_reaches_its_site_through_its_proxy() {
    let credentials = Some(("lane", "s3cret"));
    let proxy = TestProxy::start(credentials).await;
    let prq = Prq::start(&lane_with(
        None,
        &format!("proxy = \"{}\"\n", proxy.url(credentials)),
    ));
    let shown = &prq.lane("look#1")["presence"];
    assert_eq!(
        shown["proxy"],
        format!("http://lane:***@127.0.0.1:{}", proxy.port),
        "{shown}"
    );

    let (status, body) = prq.chat("look-chat", "Through the proxy.").await;
    assert_eq!(status, 200, "{body}");
    let site = prq.sandbox_url();
    let seen = proxy.seen();
    assert!(
        seen.challenged > 0,
        "the proxy asked for its password: {seen:?}"
    );
    // The page, and the request its answer streamed from, both went through it.
    let through: Vec<&String> = seen
        .forwarded
        .iter()
        .filter(|r| r.contains(site.as_str()))
        .collect();
    assert!(
        through.iter().any(|r| r.starts_with("GET ")),
        "the page load: {seen:?}"
    );
    assert!(
        through.iter().any(|r| r.starts_with("POST ")),
        "the answer's request: {seen:?}"
    );
    drop(prq);
}

/// A proxy that refuses connections fails the lane's start at once, and the message
/// names the lane and the proxy.
#[tokio::test(flavor = "multi_thread")]
async fn a_lane_whose_proxy_refuses_fails_to_start_and_says_why() {
    // A port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prq = Prq::new(&lane_with(
        None,
        &format!("proxy = \"http://user:pw@127.0.0.1:{port}\"\n"),
    ));
    let out = prq.cli(&["start", "--config", prq.config_path.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("look#1") && said.contains(&format!("http://user:***@127.0.0.1:{port}")),
        "names the lane and the proxy: {said}"
    );
    assert!(said.contains("refused"), "says what the proxy did: {said}");
    assert!(!said.contains("pw@"), "no password in the message: {said}");
}

/// `headless = false`: each lane's Chromium is headed, on a virtual display of its own
/// that prq starts with the lane and ends with it; the page still passes BotD, the lane
/// still answers, and `prq status` says the lanes are headed.
#[tokio::test(flavor = "multi_thread")]
async fn headed_lanes_run_on_displays_of_their_own_that_stop_with_them() {
    let (url, mut reports, _requests) = serve().await;
    let config = format!(
        "{}headless = false\n\n[[lanes]]\nprovider = \"sandbox\"\nprefix = \"chat\"\n\
         account = \"b\"\nheadless = false\n",
        lane_with(Some(&url), "")
    );
    let prq = Prq::start(&config);
    for id in ["look#1", "chat#1"] {
        assert_eq!(prq.lane(id)["presence"]["headless"], false, "{id}");
    }
    let table = String::from_utf8_lossy(&prq.cli(&["status"]).stdout).to_string();
    assert_eq!(
        table.matches("headed (virtual display)").count(),
        2,
        "{table}"
    );

    // One Xvfb per lane, and each browser draws on its own.
    let servers: Vec<(u32, String)> = prq_tests::processes_mentioning(prq.home())
        .into_iter()
        .filter(|(_, cmdline)| cmdline.starts_with("Xvfb"))
        .collect();
    assert_eq!(servers.len(), 2, "{servers:?}");
    let mut displays = Vec::new();
    for id in ["look#1", "chat#1"] {
        let pid = prq.lane(id)["browser_pid"].as_u64().expect("browser pid");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        let environ = String::from_utf8_lossy(&environ).to_string();
        let display = environ
            .split('\0')
            .find_map(|v| v.strip_prefix("DISPLAY="))
            .unwrap_or_else(|| panic!("{id}'s browser has no DISPLAY"))
            .to_owned();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("--headless"),
            "{id} is headed"
        );
        displays.push(display);
    }
    assert_ne!(displays[0], displays[1], "a display per lane");

    let report = tokio::time::timeout(REPORTS_WITHIN, reports.recv())
        .await
        .expect("the page reports")
        .expect("the site is up");
    assert_eq!(report["botd"]["bot"], false, "{report}");
    assert!(report["outer"][0].as_u64() > Some(0), "{report}");
    let (status, body) = prq.chat("chat-chat", "A headed answer.").await;
    assert_eq!(status, 200, "{body}");

    let out = prq.stop();
    assert!(out.status.success());
    for (pid, cmdline) in &servers {
        assert!(
            prq_tests::wait_until(Duration::from_secs(5), || !prq_tests::is_alive(*pid)),
            "an Xvfb outlived prq stop: {cmdline}"
        );
    }
}

/// A page that shows a captcha instead of the chat: the lane says it is not logged in,
/// and a request fails as `captcha_required` with an error that names the lane and the
/// check, says prq does not solve captchas, and says how a person clears it.
#[tokio::test(flavor = "multi_thread")]
async fn a_captcha_instead_of_the_chat_is_a_clear_error_naming_the_lane() {
    let (url, _reports, _requests) = serve().await;
    // The lane looks for the prompt box for cdp_timeout_ms (10 s) before it looks for
    // a bot check, at start and at the request.
    let prq = Prq::start(&lane_with(Some(&format!("{url}captcha")), ""));
    assert_eq!(prq.lane("look#1")["logged_in"], false);
    let (status, body) = prq.chat("look-chat", "Hello?").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "captcha_required", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    for says in [
        "look#1",
        "bot check (hCaptcha)",
        "does not solve captchas",
        "prq login look",
    ] {
        assert!(message.contains(says), "{says:?} in {message}");
    }
}

/// A lane's own `user_agent` (here Chrome on Windows) is what the page and the site's
/// server see, with client hints that match it.
#[tokio::test(flavor = "multi_thread")]
async fn a_lanes_own_user_agent_comes_with_matching_client_hints() {
    const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                           (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36";
    let (url, mut reports, mut requests) = serve().await;
    let prq = Prq::start(&lane_with(
        Some(&url),
        &format!("user_agent = \"{WINDOWS}\"\n"),
    ));
    assert_eq!(prq.lane("look#1")["presence"]["user_agent"], WINDOWS);
    let top = loop {
        let report = tokio::time::timeout(REPORTS_WITHIN, reports.recv())
            .await
            .expect("the page reports")
            .expect("the site is up");
        if report["frame"] == "top" {
            break report;
        }
    };
    assert_eq!(top["user_agent"], WINDOWS, "{top}");
    assert_eq!(top["botd"]["bot"], false, "{top}");
    let brands = top["brands"].to_string();
    assert!(brands.contains("Google Chrome"), "{top}");
    let sent = tokio::time::timeout(REPORTS_WITHIN, requests.recv())
        .await
        .expect("the page was loaded")
        .expect("the site is up");
    assert_eq!(sent["user-agent"], WINDOWS, "{sent:?}");
    assert!(
        sent["sec-ch-ua"].contains("\"Google Chrome\";v=\"140\""),
        "{sent:?}"
    );
    assert_eq!(sent["sec-ch-ua-platform"], "\"Windows\"", "{sent:?}");
}
