//! Crash isolation with real faults: a killed browser, a crashed tab, a killed or hung
//! worker, a worker that dies in its handshake, a killed daemon. Each ends with no
//! process of the lost lane left behind.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use prq_protocol::script;
use prq_tests::{config, is_alive, signal, stream_for, wait_until, Prq, Streamed};
use serde_json::Value;

/// A heartbeat deadline no test waits for: a death noticed before it was noticed by
/// the events (a process exit, a closed socket), not by missed heartbeats.
const EVENTS_ONLY: &str = "heartbeat_timeout_ms = 60000\n";

/// How soon an event-driven detection must be seen by a test: far under the
/// `EVENTS_ONLY` deadline, with room for a loaded CI machine.
const NOTICED: Duration = Duration::from_secs(5);

fn two_lanes(extra: &str) -> Prq {
    let cfg = config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    )
    .replace(
        "start_timeout_s = 60\n",
        &format!("start_timeout_s = 60\n{extra}"),
    );
    Prq::start(&cfg)
}

fn pids(lane: &Value) -> (u64, u64) {
    (
        lane["worker_pid"].as_u64().expect("worker_pid"),
        lane["browser_pid"].as_u64().expect("browser_pid"),
    )
}

fn error_of(s: &Streamed) -> (String, String) {
    let e = &s.error.as_ref().expect("an error")["error"];
    (
        e["type"].as_str().unwrap_or_default().to_string(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

async fn wait_stopped(prq: &Prq, limit: Duration) -> Duration {
    let t0 = Instant::now();
    assert!(
        wait_until(limit, || prq.status()["runtime"]["state"] == "stopped"),
        "the runtime stops"
    );
    t0.elapsed()
}

/// Every process of the lane (its worker's process group) is gone.
fn lane_is_gone(worker: u64, browser: u64) -> bool {
    let gone = wait_until(Duration::from_secs(5), || {
        !is_alive(worker as u32)
            && !is_alive(browser as u32)
            && prq::procinfo::group_members(worker as u32).is_empty()
    });
    if !gone {
        eprintln!(
            "left of lane {worker}: worker alive {}, browser alive {}, group {:?}",
            is_alive(worker as u32),
            is_alive(browser as u32),
            prq::procinfo::group_members(worker as u32)
        );
    }
    gone
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_browser_stops_the_runtime_while_other_lanes_finish() {
    // A heartbeat deadline far off: what notices the death must be the events.
    let prq = two_lanes(EVENTS_ONLY);
    let (alpha_worker, alpha_browser) = pids(&prq.lane("alpha#1"));
    let (beta_worker, beta_browser) = pids(&prq.lane("beta#1"));
    let long = "beta keeps going\nsandbox: tokens=60 delay_ms=40";
    let beta = tokio::spawn({
        let api = prq.api.clone();
        let long = long.to_string();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{api}/v1/chat/completions"))
                .json(&serde_json::json!({"model": "beta-chat", "stream": true, "messages": [{"role": "user", "content": long}]}))
                .send()
                .await
                .unwrap();
            Streamed::read(r).await
        }
    });
    let r = prq
        .chat_request("alpha-chat", "alpha dies\nsandbox: hang_at=1", true)
        .await;
    let alpha_id = prq_tests::request_id(&r).unwrap();
    let queued = prq.chat_request("alpha-chat", "alpha waits", true).await;
    prq.until_state(alpha_id, "processing").await;

    signal(alpha_browser, Signal::SIGKILL);
    let killed_at = Instant::now();
    let s = Streamed::read(r).await;
    let detected = killed_at.elapsed();
    let (kind, message) = error_of(&s);
    assert_eq!(kind, "lane_crashed", "{message}");
    assert!(message.contains("alpha#1"), "{message}");
    // Event-driven, so far sooner than the heartbeat deadline (prq_bench measures
    // the latency itself: tens of milliseconds; here, on a loaded machine, seconds).
    assert!(detected < NOTICED, "the client heard within {detected:?}");
    assert!(s.answer.starts_with("alpha dies"), "kept what was streamed");

    let (kind, message) = error_of(&Streamed::read(queued).await);
    assert_eq!(kind, "runtime_stopped");
    assert!(message.contains("prq start"), "{message}");
    let (status, body) = prq.chat("alpha-chat", "after").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["type"], "runtime_stopped");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("prq start"));

    let st = prq.status();
    assert_eq!(st["runtime"]["state"], "stopped");
    assert!(st["runtime"]["reason"]
        .as_str()
        .unwrap()
        .contains("alpha#1"));
    assert_eq!(prq.lane("alpha#1")["state"], "crashed");
    assert!(
        lane_is_gone(alpha_worker, alpha_browser),
        "nothing of alpha is left"
    );

    // Beta finished its answer, completely.
    let b = beta.await.unwrap();
    assert!(b.error.is_none(), "{:?}", b.error);
    assert_eq!(b.answer, script::expected(long, false).unwrap().1);
    // Then the whole runtime is down and the same daemon starts it again.
    assert!(lane_is_gone(beta_worker, beta_browser));
    let api = prq.api.clone();
    prq.restart_runtime();
    let st = prq.status();
    assert_eq!(st["runtime"]["state"], "running");
    assert_eq!(st["api_url"], api.as_str(), "the HTTP listener stayed up");
    assert_ne!(pids(&prq.lane("alpha#1")).1, alpha_browser);
    assert_eq!(
        prq.chat("alpha-chat", "alive again\nsandbox: tokens=2")
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tab_crash_fails_only_its_request_and_the_lane_recovers() {
    let prq = two_lanes("");
    let (status, body) = prq.chat("alpha-chat", "crash me\nsandbox: crash").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "tab_crashed");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("alpha#1"));
    assert_eq!(prq.status()["runtime"]["state"], "running");
    let (status, body) = prq
        .chat("alpha-chat", "after the crash\nsandbox: tokens=3")
        .await;
    assert_eq!(status, 200, "{body}");
    let streams = prq.sandbox_streams().await;
    assert_eq!(
        stream_for(&streams, "after the crash").unwrap()["outcome"],
        "finished"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_is_noticed_at_once_and_takes_its_browser_along() {
    let prq = two_lanes(EVENTS_ONLY);
    let (worker, browser) = pids(&prq.lane("beta#1"));
    signal(worker, Signal::SIGKILL);
    let took = wait_stopped(&prq, Duration::from_secs(20)).await;
    assert!(took < NOTICED, "noticed in {took:?}");
    assert!(prq.status()["runtime"]["reason"]
        .as_str()
        .unwrap()
        .contains("beta#1"));
    assert!(lane_is_gone(worker, browser));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_worker_is_killed_after_its_heartbeat_deadline() {
    let prq = two_lanes("heartbeat_ms = 200\nheartbeat_timeout_ms = 1000\n");
    let (worker, browser) = pids(&prq.lane("alpha#1"));
    signal(worker, Signal::SIGSTOP);
    let took = wait_stopped(&prq, Duration::from_secs(20)).await;
    // Not before the deadline (less the one heartbeat that may have been due), and
    // not long after it.
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(1_000) + NOTICED,
        "noticed in {took:?}"
    );
    let reason = prq.status()["runtime"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("alpha#1") && reason.contains("heartbeat"),
        "{reason}"
    );
    assert!(lane_is_gone(worker, browser));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_dies_in_its_handshake_fails_the_start_clearly() {
    let prq = Prq::new(&config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    ));
    // A stand-in worker that connects, sends half a frame, and dies.
    let fake = prq.home().join("dying-worker.py");
    std::fs::write(
        &fake,
        "import socket, sys\nsock = sys.argv[sys.argv.index('--socket') + 1]\ns = socket.socket(socket.AF_UNIX)\ns.connect(sock)\ns.send(b'\\x00\\x00\\x00\\x10\\x01')\nsys.exit(7)\n",
    )
    .unwrap();
    let wrapper = prq.home().join("dying-worker");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec python3 {} \"$@\"\n", fake.display()),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&wrapper).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = prq.cli_with_env(
        &["start", "--config", prq.config_path.to_str().unwrap()],
        &[("PRQ_WORKER", wrapper.to_str().unwrap())],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed to start") && err.contains("code 7"),
        "{err}"
    );
    // The daemon goes on: it answers status, and its log names the broken handshake.
    assert_eq!(prq.status()["runtime"]["state"], "stopped");
    // The log line may land just after the start's answer.
    assert!(
        wait_until(Duration::from_secs(5), || prq
            .daemon_log()
            .contains("handshake")),
        "{}",
        prq.daemon_log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_daemon_takes_its_workers_and_browsers_along() {
    let prq = two_lanes("");
    let st = prq.status();
    let daemon = st["pid"].as_u64().unwrap();
    let lanes: Vec<(u64, u64)> = st["lanes"].as_array().unwrap().iter().map(pids).collect();
    signal(daemon, Signal::SIGKILL);
    for (worker, browser) in lanes {
        assert!(
            lane_is_gone(worker, browser),
            "worker {worker} and browser {browser} exit by themselves"
        );
    }
    assert!(prq.processes().is_empty(), "{:?}", prq.processes());
    prq.restart_runtime();
    assert_eq!(prq.status()["runtime"]["state"], "running");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_restart_policy_only_the_lost_lane_restarts_and_an_unstreamed_request_is_retried()
{
    let prq = two_lanes("on_lane_crash = \"restart\"\n");
    let (worker, browser) = pids(&prq.lane("alpha#1"));
    let beta_before = pids(&prq.lane("beta#1"));
    // The echo comes after 2 s: when the browser dies, nothing has been streamed yet.
    let prompt = "retry me\nsandbox: delay_ms=2000 tokens=2";
    let pending = tokio::spawn({
        let api = prq.api.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{api}/v1/chat/completions"))
                .json(&serde_json::json!({"model": "alpha-chat", "messages": [{"role": "user", "content": prompt}]}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    let id = prq.first_live("processing").await;
    signal(browser, Signal::SIGKILL);
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 200, "answered by the restarted lane: {body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        script::expected(prompt, false).unwrap().1.as_str()
    );
    assert_eq!(prq.record(id).await["state"], "completed");
    let st = prq.status();
    assert_eq!(st["runtime"]["state"], "running");
    assert_ne!(pids(&prq.lane("alpha#1")).1, browser, "a new browser");
    assert_eq!(pids(&prq.lane("beta#1")), beta_before, "beta untouched");
    assert!(lane_is_gone(worker, browser));
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_restart_limit_the_runtime_stops() {
    let prq = two_lanes("on_lane_crash = \"restart\"\nrestart_limit = 2\nrestart_window_s = 60\n");
    for round in 0..3 {
        let mut browser = 0;
        assert!(
            wait_until(Duration::from_secs(30), || {
                let lane = prq.lane("alpha#1");
                browser = lane["browser_pid"].as_u64().unwrap_or(0);
                lane["state"] == "idle" && browser != 0
            }),
            "alpha is back for round {round}"
        );
        signal(browser, Signal::SIGKILL);
        if round < 2 {
            assert!(wait_until(Duration::from_secs(5), || prq.lane("alpha#1")
                ["browser_pid"]
                .as_u64()
                != Some(browser)));
        }
    }
    wait_stopped(&prq, Duration::from_secs(5)).await;
    let reason = prq.status()["runtime"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("alpha#1") && reason.contains("more than 2 times"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prq_stop_lets_processing_requests_finish_within_the_grace_then_stops_them() {
    let prq = two_lanes("shutdown_grace_s = 2\n");
    let short = "finishes in time\nsandbox: tokens=10 delay_ms=50";
    let endless = "never ends\nsandbox: hang_at=1";
    let r1 = prq.chat_request("alpha-chat", short, true).await;
    let r2 = prq.chat_request("beta-chat", endless, true).await;
    let id2 = prq_tests::request_id(&r2).unwrap();
    prq.until_state(id2, "processing").await;
    let stopping = std::thread::spawn({
        let home = prq.home().to_path_buf();
        move || {
            let t0 = Instant::now();
            let out = std::process::Command::new(prq_tests::prq_bin())
                .arg("stop")
                .env("PRQ_HOME", home)
                .output()
                .unwrap();
            (out.status.success(), t0.elapsed())
        }
    });
    let (s1, s2) = tokio::join!(Streamed::read(r1), Streamed::read(r2));
    assert!(
        s1.error.is_none(),
        "finished within the grace: {:?}",
        s1.error
    );
    assert_eq!(s1.answer, script::expected(short, false).unwrap().1);
    assert_eq!(
        error_of(&s2).0,
        "request_stopped",
        "stopped once the grace ran out"
    );
    let (ok, took) = stopping.join().unwrap();
    assert!(ok);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(prq.processes().is_empty(), "{:?}", prq.processes());
}
