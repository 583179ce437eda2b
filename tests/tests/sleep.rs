//! Idle lanes sleep, end to end with real Chromium: a lane idle for `idle_suspend_s`
//! closes its browser and keeps its worker; a request wakes it; a request waiting for
//! its lane to wake can be cancelled, or dropped by its client; a lane that cannot wake
//! fails what waits for it; `prq stop` while a lane wakes leaves nothing running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prq_protocol::script;
use prq_tests::{config, is_alive, wait_until, Prq};
use serde_json::Value;

/// Far beyond what any step takes: past it, something is broken, not slow.
const LIMIT: Duration = Duration::from_secs(60);

/// One sandbox lane that sleeps after a second idle.
fn sleepy_config() -> String {
    config("serial", &[("sandbox", "alpha", "a")]).replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\nidle_suspend_s = 1\n",
    )
}

/// A browser that runs Chromium, unless the file `hold` exists then: with `hold`
/// holding `fail` it exits at once, else it waits (a wake held up for as long as a test
/// needs). Given as PRQ_BROWSER.
fn held_browser(dir: &Path) -> (PathBuf, PathBuf) {
    let hold = dir.join("hold");
    let script = dir.join("browser.sh");
    let chromium = chromium();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -e {hold} ]; then\n  grep -q fail {hold} && exit 1\n  sleep 3600\nfi\nexec {chromium} \"$@\"\n",
            hold = hold.display(),
            chromium = chromium.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, hold)
}

/// The Chromium the lanes would run: PRQ_BROWSER, else the first on PATH.
fn chromium() -> PathBuf {
    if let Some(b) = std::env::var_os("PRQ_BROWSER").filter(|b| !b.is_empty()) {
        return PathBuf::from(b);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|p| p.is_file())
    .expect("a Chromium on PATH")
}

/// Starts prq on `cfg` with `browser` as PRQ_BROWSER.
fn start_with_browser(cfg: &str, browser: &Path) -> Prq {
    let prq = Prq::new(cfg);
    let out = prq.cli_with_env(
        &["start", "--config", prq.config_path.to_str().unwrap()],
        &[("PRQ_BROWSER", browser.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "prq start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    prq.with_api()
}

fn until_lane(prq: &Prq, state: &str) -> Value {
    let mut lane = Value::Null;
    let reached = wait_until(LIMIT, || {
        lane = prq.lane("alpha#1");
        lane["state"] == state
    });
    assert!(reached, "alpha#1 never got {state}: {lane}");
    lane
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_lane_sleeps_without_its_browser_and_a_request_wakes_it() {
    let prq = Prq::start(&sleepy_config());
    let awake = until_lane(&prq, "idle");
    let worker = awake["worker_pid"].as_u64().unwrap() as u32;
    let browser = awake["browser_pid"].as_u64().unwrap() as u32;

    let asleep = until_lane(&prq, "asleep");
    assert!(asleep["browser_pid"].is_null(), "{asleep}");
    assert!(!is_alive(browser), "the browser {browser} is gone");
    assert_eq!(asleep["worker_pid"], worker, "the worker stays");
    assert!(is_alive(worker));
    // Nothing of the browser is left: the worker is its group's only process.
    assert_eq!(prq::procinfo::group_members(worker), vec![worker]);
    assert!(
        prq.home().join("profiles/sandbox/a").is_dir(),
        "the profile stays"
    );
    let metrics = prq.metrics_text().await;
    assert!(
        metrics.contains(r#"prq_lane_state{lane="alpha#1",prefix="alpha",state="asleep"} 1"#),
        "{metrics}"
    );
    let out = prq.cli(&["status"]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("asleep"), "{status}");
    // Asleep longer than the heartbeat deadline (3 s): a lane without a browser is not
    // taken for a hung or frozen one (waiting is the only proof of an absence).
    tokio::time::sleep(Duration::from_millis(3_000 + 1_000)).await;
    let still = prq.lane("alpha#1");
    assert_eq!(still["state"], "asleep", "{still}");
    assert_eq!(still["worker_pid"], worker, "{still}");
    assert_eq!(prq.status()["runtime"]["state"], "running");
    // A request would wake it: the host stays ready for a balancer.
    let (code, ready) = prq.get("/readyz", None).await;
    assert_eq!(code, 200, "a sleeping lane can serve: {ready}");

    let prompt = "Wake up.\nsandbox: tokens=6 delay_ms=5";
    let s = prq.chat_stream("alpha-chat", prompt).await;
    let (_, expected) = script::expected(prompt, false).unwrap();
    assert_eq!(s.status, 200);
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(s.answer, expected);
    let woken = prq.lane("alpha#1");
    let new_browser = woken["browser_pid"].as_u64().expect("a browser again") as u32;
    assert_ne!(new_browser, browser);
    assert!(is_alive(new_browser));
    assert_eq!(woken["worker_pid"], worker, "the same worker");
    // And it sleeps again.
    until_lane(&prq, "asleep");
    assert!(!is_alive(new_browser));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_waiting_for_its_lane_to_wake_can_be_cancelled_and_stop_ends_the_wake() {
    let dir = tempfile::tempdir().unwrap();
    let (browser, hold) = held_browser(dir.path());
    let prq = start_with_browser(&sleepy_config(), &browser);
    until_lane(&prq, "asleep");
    std::fs::write(&hold, "wait").unwrap();

    // Cancelled through the queue API while the lane wakes.
    let waiting = tokio::spawn({
        let api = prq.api.clone();
        async move {
            let http = reqwest::Client::new();
            http.post(format!("{api}/v1/chat/completions"))
                .json(&serde_json::json!({
                    "model": "alpha-chat",
                    "stream": true,
                    "messages": [{"role": "user", "content": "Held.\nsandbox: tokens=3"}],
                }))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    let id = prq.first_live("pending").await;
    until_lane(&prq, "starting");
    // Waking, the lane shows starting, and the host stays ready.
    let (code, ready) = prq.get("/readyz", None).await;
    assert_eq!(code, 200, "a waking lane will serve: {ready}");
    let (status, body) = prq.post(&format!("/api/queue/{id}/cancel")).await;
    assert_eq!(status, 200, "{body}");
    let text = waiting.await.unwrap();
    assert!(text.contains("cancelled"), "the client is told: {text}");
    assert_eq!(prq.record(id).await["state"], "cancelled");

    // A client that goes away while its lane wakes cancels its request.
    let gone = prq
        .chat_request("alpha-chat", "Gone.\nsandbox: tokens=3", true)
        .await;
    let id = prq.first_live("pending").await;
    drop(gone);
    prq.until_state(id, "cancelled").await;

    // Stopping prq while the lane wakes leaves nothing running.
    assert_eq!(prq.lane("alpha#1")["state"], "starting");
    let out = prq.stop();
    assert!(out.status.success());
    assert!(prq.processes().is_empty(), "left: {:?}", prq.processes());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lane_that_cannot_wake_fails_the_request_waiting_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (browser, hold) = held_browser(dir.path());
    let prq = start_with_browser(&sleepy_config(), &browser);
    until_lane(&prq, "asleep");
    std::fs::write(&hold, "fail").unwrap();

    let s = prq
        .chat_stream("alpha-chat", "Never.\nsandbox: tokens=3")
        .await;
    let error = s.error.map(|e| e.to_string()).unwrap_or_default();
    assert!(s.answer.is_empty());
    let said = format!("{} {error}", s.status);
    assert!(said.contains("failed to wake"), "{said}");
    // on_lane_crash = "stop" (the default): the runtime stops, naming the lane.
    let status = prq.status();
    assert_eq!(status["runtime"]["state"], "stopped");
    let reason = status["runtime"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("alpha#1") && reason.contains("failed to wake"),
        "{reason}"
    );
    assert_eq!(prq.lane("alpha#1")["state"], "crashed");
}
