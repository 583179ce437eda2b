//! A lane's browser under strain, end to end with real Chromium on the sandbox: a stop
//! that lands in a stream flooding the worker with network events, a browser that
//! freezes (SIGSTOP), and the browser's DevTools endpoint, which no other local user
//! may reach.

use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use prq_tests::{config, is_alive, signal, wait_until, Prq, Streamed};

fn one_lane(extra: &str) -> Prq {
    let cfg = config("serial", &[("sandbox", "alpha", "a")]).replace(
        "start_timeout_s = 60\n",
        &format!("start_timeout_s = 60\n{extra}"),
    );
    Prq::start(&cfg)
}

fn error_type(s: &Streamed) -> Option<&str> {
    s.error.as_ref().and_then(|e| e["error"]["type"].as_str())
}

/// Starts a streaming request and waits until it is processing with some text out.
async fn generating(prq: &Prq, prompt: &str) -> (u64, reqwest::Response) {
    let r = prq.chat_request("alpha-chat", prompt, true).await;
    assert_eq!(r.status(), 200);
    let id = prq_tests::request_id(&r).expect("x-prq-request-id");
    prq.until_state(id, "processing").await;
    (id, r)
}

/// Stops land in fast streams (5000 words, no pause or 1–5 ms between them) and each
/// ends `request_stopped` with the lane idle and the runtime running — the stop is not
/// held up behind the flood of network events the worker is still reading, and the
/// supervisor does not give the lane up before the worker's own deadlines run out.
/// With the default `on_lane_crash = "stop"`, a lane given up would stop the runtime.
#[tokio::test(flavor = "multi_thread")]
async fn stopping_a_fast_stream_ends_it_stopped_and_the_lane_goes_on() {
    let prq = one_lane("");
    for delay in [0, 1, 5] {
        let prompt = format!("fast {delay}\nsandbox: tokens=5000 delay_ms={delay}");
        let (id, r) = generating(&prq, &prompt).await;
        let (status, body) = prq.post(&format!("/api/queue/{id}/stop")).await;
        assert_eq!(status, 200, "stop at delay_ms={delay}: {body}");
        let s = Streamed::read(r).await;
        assert_eq!(
            error_type(&s),
            Some("request_stopped"),
            "delay_ms={delay}: {:?}\n--- daemon log ---\n{}",
            s.error,
            prq.daemon_log()
        );
        assert_eq!(prq.record(id).await["state"], "stopped", "delay_ms={delay}");
        let status = prq.status();
        assert_eq!(status["runtime"]["state"], "running", "delay_ms={delay}");
        assert_eq!(prq.lane("alpha#1")["state"], "idle", "delay_ms={delay}");
    }
    // A client that goes away from a fast stream stops it the same way.
    let (id, r) = generating(&prq, "gone\nsandbox: tokens=5000 delay_ms=0").await;
    drop(r);
    prq.until_state(id, "stopped").await;
    let (status, body) = prq.chat("alpha-chat", "after\nsandbox: tokens=3").await;
    assert_eq!(status, 200, "the lane serves the next request: {body}");
    assert_eq!(prq.status()["runtime"]["state"], "running");
}

/// A browser that freezes (SIGSTOP: it neither dies nor answers) is taken as hung on the
/// worker's heartbeat — its request fails `lane_crashed` naming the hung browser, not
/// after the idle deadline (set here far beyond the read bound) — and the lane's
/// policy applies: with `restart`, the lane comes back and serves the next request.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_browser_is_found_on_the_heartbeat_and_the_lane_restarts() {
    let prq = one_lane("on_lane_crash = \"restart\"\n[deadlines]\nidle_s = 600\n");
    let browser = prq.lane("alpha#1")["browser_pid"]
        .as_u64()
        .expect("browser_pid");
    let (_, r) = generating(&prq, "frozen\nsandbox: tokens=50 hang_at=3").await;
    let _thawed_at_the_end = Frozen(browser);
    signal(browser, Signal::SIGSTOP);
    // Far under the idle deadline: a request that waited for it fails the test here.
    let s = tokio::time::timeout(Duration::from_secs(60), Streamed::read(r))
        .await
        .expect("the request ends long before its idle deadline");
    let error = &s.error.as_ref().expect("an error")["error"];
    assert_eq!(error["type"], "lane_crashed", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("hung"), "{message}");
    // The policy: the lane restarts with a new browser and serves.
    assert!(
        wait_until(Duration::from_secs(60), || {
            let lane = prq.lane("alpha#1");
            lane["state"] == "idle" && lane["browser_pid"].as_u64() != Some(browser)
        }),
        "the lane came back: {}",
        prq.lane("alpha#1")
    );
    assert!(!is_alive(browser as u32), "the frozen browser is gone");
    let (status, body) = prq.chat("alpha-chat", "after\nsandbox: tokens=3").await;
    assert_eq!(status, 200, "{body}");
}

/// Lets a stopped browser go on and ends it, whatever the test did.
struct Frozen(u64);

impl Drop for Frozen {
    fn drop(&mut self) {
        if is_alive(self.0 as u32) {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
            let _ = nix::sys::signal::kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }
}
