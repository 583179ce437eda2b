//! The panel's login view of a lane (`remote_login.rs`), end to end with real Chromium
//! against a sandbox lane whose site asks for a login (`login = true`): the lane starts
//! logged out; the view streams its page as JPEG frames; typed input logs it in; the
//! closed view gives the lane back logged in, and the request that waited meanwhile is
//! served. Also: one viewer at a time, the view's token and origin checks, the address
//! bar held to the lane's site, and the view turned off by `[panel] remote_login`.

use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use prq_tests::{config, eventually, Prq};
use serde_json::{json, Value};

/// Long enough for a loaded two-core machine.
const WITHIN: Duration = Duration::from_secs(30);

fn login_lane(mode: &str, extra: &str) -> String {
    let c = config(mode, &[("sandbox", "alpha", "a")]);
    format!("{c}login = true\n{extra}")
}

const VIEW: &str = "/api/lanes/alpha%231/view";

/// An open login view: its SSE stream, read event by event.
struct View {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>,
    buffer: String,
    token: String,
}

impl View {
    async fn open(prq: &Prq) -> View {
        let r = prq
            .http()
            .get(format!("{}{VIEW}?w=640&h=400", prq.api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        let mut view = View {
            body: Box::pin(r.bytes_stream()),
            buffer: String::new(),
            token: String::new(),
        };
        let (name, open) = view.next().await.expect("the open event");
        assert_eq!(name, "open");
        view.token = open["token"].as_str().unwrap().to_owned();
        assert_eq!(view.token.len(), 64, "256 random bits");
        view
    }

    /// The next event: its name and data, or `None` at the stream's end.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(cut) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..cut + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event:") {
                        name = n.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout(WITHIN, self.body.next())
                .await
                .ok()??
                .ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next frame: the JPEG's bytes and the page's URL.
    async fn frame(&mut self) -> (Vec<u8>, String) {
        loop {
            let (name, data) = self.next().await.expect("a frame");
            if name == "frame" {
                let jpeg = base64::engine::general_purpose::STANDARD
                    .decode(data["jpeg"].as_str().unwrap())
                    .unwrap();
                return (jpeg, data["url"].as_str().unwrap().to_owned());
            }
        }
    }

    /// Waits for the event named `want`, skipping frames.
    async fn until(&mut self, want: &str) -> Value {
        loop {
            let (name, data) = self
                .next()
                .await
                .unwrap_or_else(|| panic!("no {want} event"));
            if name == want {
                return data;
            }
        }
    }
}

async fn send(prq: &Prq, token: &str, action: Value) -> (u16, Value) {
    let mut body = action;
    body["token"] = json!(token);
    let r = prq
        .http()
        .post(format!("{}{VIEW}/input", prq.api))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn key(prq: &Prq, token: &str, key: &str, code: u32) {
    for kind in ["down", "up"] {
        let event = json!({ "key": { "kind": kind, "key": key, "code": key, "key_code": code } });
        let (status, body) = send(prq, token, json!({ "do": "input", "event": event })).await;
        assert_eq!(status, 204, "{body}");
    }
}

async fn text(prq: &Prq, token: &str, text: &str) {
    let event = json!({ "text": { "text": text } });
    let (status, body) = send(prq, token, json!({ "do": "input", "event": event })).await;
    assert_eq!(status, 204, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_logs_a_lane_in_through_the_view_and_the_waiting_request_is_served_after() {
    let prq = Prq::start(&login_lane("concurrent", ""));
    let lane = prq.lane("alpha#1");
    assert_eq!(
        lane["logged_in"], false,
        "the sandbox asks for a login: {lane}"
    );
    let (status, refused) = prq
        .chat("alpha-chat", "before the login\nsandbox: tokens=2")
        .await;
    assert_eq!(status, 502, "{refused}");
    assert_eq!(refused["error"]["code"], "not_logged_in");

    let mut view = View::open(&prq).await;
    assert_eq!(prq.lane("alpha#1")["state"], "login");
    let (jpeg, url) = view.frame().await;
    assert_eq!(&jpeg[..2], [0xFF, 0xD8], "a JPEG");
    assert!(url.contains("login=1"), "{url}");

    // A second viewer is refused, naming who holds the view.
    let (status, held) = prq.get(VIEW, None).await;
    assert_eq!(status, 409, "{held}");
    assert_eq!(held["error"]["code"], "view_held");
    assert!(
        held["error"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{held}"
    );

    // A request made now waits for the lane.
    let waiting = tokio::spawn({
        let http = prq.http().clone();
        let api = prq.api.clone();
        async move {
            let r = http
                .post(format!("{api}/v1/chat/completions"))
                .json(&json!({ "model": "alpha-chat", "messages": [{ "role": "user", "content": "after the login\nsandbox: tokens=3" }] }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    eventually(WITHIN, || async {
        prq.get_json("/api/queue").await["pending"] == 1
    })
    .await
    .expect("the request waits");

    // Input without the view's token, or from another site's page, is refused.
    let (status, stale) = send(&prq, "not-the-token", json!({ "do": "reload" })).await;
    assert_eq!(
        (status, &stale["error"]["code"]),
        (409, &json!("view_closed"))
    );
    let cross = prq
        .http()
        .post(format!("{}{VIEW}/input", prq.api))
        .header("Origin", "https://evil.example")
        .json(&json!({ "token": view.token, "do": "input", "event": { "text": { "text": "x" } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    // The address bar opens the lane's site only.
    let (status, _) = send(
        &prq,
        &view.token,
        json!({ "do": "go", "url": "https://evil.example/" }),
    )
    .await;
    assert_eq!(status, 204);
    let refused = view.until("refused").await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not on this lane's site"),
        "{refused}"
    );

    // The user field has the focus: type, Tab, type, Enter.
    text(&prq, &view.token, "someone").await;
    key(&prq, &view.token, "Tab", 9).await;
    text(&prq, &view.token, "secret").await;
    key(&prq, &view.token, "Enter", 13).await;
    let token = view.token.clone();
    // The frames follow the page from the form to the chat page.
    loop {
        let (_, url) = view.frame().await;
        if url.contains("/chat?") {
            break;
        }
    }
    let (status, _) = send(&prq, &token, json!({ "do": "close" })).await;
    assert_eq!(status, 204);
    view.until("closed").await;

    eventually(WITHIN, || async {
        let lane = prq.lane("alpha#1");
        lane["logged_in"] == true && lane["state"] != "login"
    })
    .await
    .expect("the lane is logged in and back");
    let (status, answer) = waiting.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.starts_with("after the login"), "{content}");

    let log = prq.daemon_log();
    assert!(log.contains("login view opened"), "{log}");
    assert!(log.contains("login view closed"), "{log}");
    for secret in ["someone", "secret"] {
        assert!(!log.contains(secret), "typed text in the daemon's log");
        let lane_log =
            std::fs::read_to_string(prq.home().join("logs/alpha#1.log")).unwrap_or_default();
        assert!(!lane_log.contains(secret), "typed text in the lane's log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_view_can_be_turned_off_and_is_for_admins_only() {
    let prq = Prq::start(&login_lane(
        "concurrent",
        "\n[panel]\nremote_login = false\n",
    ));
    let (status, off) = prq.get(VIEW, None).await;
    assert_eq!(status, 403, "{off}");
    assert_eq!(off["error"]["code"], "remote_login_disabled");
    assert!(
        off["error"]["message"]
            .as_str()
            .unwrap()
            .contains("remote_login"),
        "{off}"
    );
    drop(prq);

    let keyed = login_lane("concurrent", "").replacen(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\nadmin_key = \"view-test-key\"\n",
        1,
    );
    let prq = Prq::start(&keyed);
    let (status, body) = prq.get(VIEW, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = send(&prq, "x", json!({ "do": "close" })).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(prq.lane("alpha#1")["state"], "idle", "nothing opened");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_lane_finishes_first_and_a_crash_during_the_view_is_said() {
    let prq = Prq::start(&config("concurrent", &[("sandbox", "alpha", "a")]));
    // `prq login --panel` names the view of the running lane.
    let out = prq.cli(&["login", "alpha", "--panel"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        url.trim(),
        format!("{}/panel/login?lane=alpha%231", prq.api)
    );

    let r = prq
        .chat_request("alpha-chat", "busy\nsandbox: hang_at=2 delay_ms=5", true)
        .await;
    let id = prq_tests::request_id(&r).unwrap();
    prq.until_state(id, "processing").await;
    let (status, busy) = prq.get(VIEW, None).await;
    assert_eq!(status, 409, "{busy}");
    assert_eq!(busy["error"]["code"], "lane_busy");
    let message = busy["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("request {id}")) && message.contains("stop it"),
        "{message}"
    );
    let (status, _) = prq.post(&format!("/api/queue/{id}/stop")).await;
    assert_eq!(status, 200);
    drop(r);
    eventually(WITHIN, || async { prq.lane("alpha#1")["state"] == "idle" })
        .await
        .expect("the lane is idle after the stop");

    let mut view = View::open(&prq).await;
    view.frame().await;
    let browser = prq.lane("alpha#1")["browser_pid"].as_u64().unwrap();
    prq_tests::signal(browser, nix::sys::signal::Signal::SIGKILL);
    let ended = view.until("ended").await;
    let message = ended["message"].as_str().unwrap();
    assert!(message.contains("crashed"), "{message}");
    assert!(message.contains("alpha#1"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_reloads_an_idle_page_and_a_lost_login_is_said() {
    let prq = Prq::start(&login_lane("concurrent", "keep_alive_s = 1\n"));
    let mut view = View::open(&prq).await;
    view.frame().await;
    text(&prq, &view.token, "someone").await;
    key(&prq, &view.token, "Tab", 9).await;
    text(&prq, &view.token, "secret").await;
    key(&prq, &view.token, "Enter", 13).await;
    while !view.frame().await.1.contains("/chat?") {}
    let (status, _) = send(&prq, &view.token.clone(), json!({ "do": "close" })).await;
    assert_eq!(status, 204);
    eventually(WITHIN, || async {
        prq.lane("alpha#1")["logged_in"] == true
    })
    .await
    .expect("logged in");

    // Reloads of an idle page keep it logged in; the site ending its sessions is seen
    // at the next one.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(prq.lane("alpha#1")["logged_in"], true);
    let ended = prq
        .http()
        .delete(format!("{}/login", prq.sandbox_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204);
    eventually(WITHIN, || async {
        prq.lane("alpha#1")["logged_in"] == false
    })
    .await
    .expect("the lost login is seen");
    let log = prq.daemon_log();
    assert!(
        log.contains("logged out (found at a keep-alive reload)"),
        "{log}"
    );
    assert!(log.contains("prq login alpha --panel"), "{log}");
    // A request still finds its way (and is told what the page shows).
    let (status, answer) = prq.chat("alpha-chat", "after\nsandbox: tokens=1").await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (502, &json!("not_logged_in")),
        "{answer}"
    );
}

/// The Playwright release `scripts/install-deps.sh --test` keeps in the test cache.
const PLAYWRIGHT_VERSION: &str = "1.65.1";

/// Where `playwright-core` is: `PRQ_PLAYWRIGHT`, else the test cache.
fn playwright_dir() -> String {
    let dir = std::env::var("PRQ_PLAYWRIGHT").unwrap_or_else(|_| {
        let cache = std::env::var("XDG_CACHE_HOME")
            .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap_or_default()));
        format!("{cache}/prq-test/playwright-core-{PLAYWRIGHT_VERSION}")
    });
    assert!(
        std::path::Path::new(&dir)
            .join("node_modules/playwright-core")
            .is_dir(),
        "playwright-core is not in {dir}: run `bash scripts/install-deps.sh --test`"
    );
    dir
}

/// Is the colour the sandbox login button's blue (#3a66f5), give or take JPEG?
fn is_button_blue(rgb: &Value) -> bool {
    let c: Vec<i64> = rgb
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    (c[0] - 0x3a).abs() < 40 && (c[1] - 0x66).abs() < 40 && (c[2] - 0xf5).abs() < 40
}

#[tokio::test(flavor = "multi_thread")]
async fn playwright_logs_a_lane_in_through_the_panel() {
    let dir = playwright_dir();
    let prq = Prq::start(&login_lane("concurrent", ""));
    assert_eq!(prq.lane("alpha#1")["logged_in"], false);
    let browser = std::env::var("PRQ_BROWSER").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/playwright/login_view.cjs");
    let out = tokio::process::Command::new("node")
        .args([
            script,
            &dir,
            &prq.api,
            "alpha#1",
            &prq.sandbox_url(),
            &browser,
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .expect("the Playwright script ends")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no result: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(seen["ok"], true, "{seen}");
    assert!(
        is_button_blue(&seen["formPixel"]),
        "the login form's button in the frame: {seen}"
    );
    assert!(
        !is_button_blue(&seen["chatPixel"]),
        "the chat page, not the form: {seen}"
    );
    let refused = seen["refused"].as_str().unwrap();
    assert!(refused.contains("held by 127.0.0.1"), "{refused}");
    assert!(
        seen["address"].as_str().unwrap().contains("/chat?"),
        "{seen}"
    );

    eventually(WITHIN, || async {
        let lane = prq.lane("alpha#1");
        lane["logged_in"] == true && lane["state"] == "idle"
    })
    .await
    .expect("the lane is logged in and idle");
    let (status, answer) = prq.chat("alpha-chat", "logged in\nsandbox: tokens=2").await;
    assert_eq!(status, 200, "{answer}");
}
