//! Readiness and drain on one host: `/readyz` follows the runtime and tells details only
//! to admins, `prq drain` takes the host out without failing what it admitted, `prq
//! start` brings it back (or calls a drain off), and SIGTERM drains before the daemon
//! exits. Echo lanes: no browser needed. (Several hosts behind HAProxy: `haproxy.rs`.)

use std::time::Duration;

use nix::sys::signal::Signal;
use prq_tests::{config, eventually, signal, wait_until, Prq, Streamed};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// How soon something an event causes must be seen, with room for a loaded machine.
const NOTICED: Duration = Duration::from_secs(5);

/// One echo lane (serial: a second request waits behind the first) and `extra` keys.
fn one_lane(extra: &str) -> String {
    config("serial", &[("echo", "a", "acct-one")]).replace(
        "start_timeout_s = 60\n",
        &format!("start_timeout_s = 60\n{extra}"),
    )
}

async fn readyz(prq: &Prq) -> (u16, Value) {
    prq.get("/readyz", None).await
}

/// Sends a streaming chat request and returns once it was admitted (the stream's 200
/// comes at admission); the task reads the stream to its end.
async fn admitted_stream(prq: &Prq, prompt: &str) -> JoinHandle<Streamed> {
    let r = prq.chat_request("a-chat", prompt, true).await;
    assert_eq!(r.status(), 200, "{prompt:?} is admitted");
    tokio::spawn(Streamed::read(r))
}

/// The stream ended as a completed answer.
fn completed(s: &Streamed) -> bool {
    s.error.is_none() && s.done && s.finish_reason.as_deref() == Some("stop")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_follows_the_runtime_and_tells_details_only_to_admins() {
    let prq = Prq::start(
        &config(
            "concurrent",
            &[("echo", "a", "acct-one"), ("echo", "b", "acct-two")],
        )
        .replace(
            "start_timeout_s = 60\n",
            "start_timeout_s = 60\nadmin_key = \"adm-readyz-1\"\n",
        ),
    );
    let (code, body) = readyz(&prq).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (&body["ready"], &body["state"], &body["reason"]),
        (&json!(true), &json!("running"), &json!("ready"))
    );
    assert!(
        body.get("detail").is_none(),
        "no details without admin access: {body}"
    );

    let (code, admin) = prq.get("/readyz", Some("adm-readyz-1")).await;
    assert_eq!(code, 200);
    let lanes = admin["detail"]["lanes"]
        .as_array()
        .expect("lanes for an admin");
    assert!(
        lanes.contains(&json!({"id": "a#1", "state": "idle"})),
        "{admin}"
    );
    assert_eq!(admin["detail"]["queue"]["pending"], 0);

    // A lost lane stops the runtime (on_lane_crash = "stop"): not ready, still alive.
    let worker = prq.lane("a#1")["worker_pid"].as_u64().expect("worker pid");
    signal(worker, Signal::SIGKILL);
    eventually(NOTICED, || async { readyz(&prq).await.0 == 503 })
        .await
        .expect("not ready once the runtime stopped");
    let (_, body) = readyz(&prq).await;
    assert_eq!(
        (&body["state"], &body["reason"]),
        (&json!("stopped"), &json!("stopped"))
    );
    let text = body.to_string();
    assert!(
        !text.contains("a#1") && !text.contains("acct-") && body.get("detail").is_none(),
        "no lane, account or queue detail without admin access: {text}"
    );
    let (code, admin) = prq.get("/readyz", Some("adm-readyz-1")).await;
    assert_eq!(code, 503);
    assert!(
        admin["detail"]["runtime_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("a#1"),
        "an admin reads why: {admin}"
    );
    assert_eq!(
        prq.get("/healthz", None).await.0,
        200,
        "liveness is not readiness"
    );

    prq.restart_runtime();
    assert_eq!(readyz(&prq).await.0, 200, "ready again after `prq start`");
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_takes_the_host_out_without_failing_what_it_admitted() {
    let prq = Prq::start(&one_lane("drain_s = 3\nshutdown_grace_s = 60\n"));
    // About 6 s of answer: still generating when the drain starts refusing.
    let long = admitted_stream(&prq, "long one\nsandbox: tokens=60 delay_ms=100").await;
    prq.first_live("processing").await;
    let queued = admitted_stream(&prq, "queued one\nsandbox: tokens=3 delay_ms=0").await;

    let out = prq.cli(&["drain"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("draining"), "{}", stdout(&out));
    // Not ready at once: the balancer stops sending ...
    let (code, body) = readyz(&prq).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        (&body["state"], &body["reason"]),
        (&json!("draining"), &json!("draining"))
    );
    assert_eq!(prq.get("/healthz", None).await.0, 200);
    // ... while what it sent until it noticed (drain_s) is still taken,
    let during = admitted_stream(&prq, "sent during drain_s\nsandbox: tokens=3 delay_ms=0").await;
    // and after that, refused before admission — which a balancer may retry elsewhere.
    eventually(Duration::from_secs(20), || async {
        prq.status()["runtime"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("refusing"))
    })
    .await
    .expect("refuses new requests after drain_s");
    let (code, body) = prq.chat("a-chat", "too late").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "draining");

    let out = prq.cli(&["drain", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("nothing in flight"),
        "{}",
        stdout(&out)
    );
    for (name, task) in [("long", long), ("queued", queued), ("during", during)] {
        let s = task.await.unwrap();
        assert!(completed(&s), "{name} completed: {s:?}");
    }
    let status = prq.status();
    assert_eq!(status["runtime"]["state"], "stopped");
    assert!(status["runtime"]["reason"]
        .as_str()
        .unwrap()
        .contains("drained by `prq drain`"));
    assert_eq!(readyz(&prq).await.1["reason"], "stopped");
    assert_eq!(
        prq.get("/healthz", None).await.0,
        200,
        "the daemon stays up"
    );

    prq.restart_runtime();
    assert_eq!(readyz(&prq).await.0, 200, "ready again after `prq start`");
    let (code, body) = prq
        .chat("a-chat", "back\nsandbox: tokens=1 delay_ms=0")
        .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_stops_what_outlasts_the_grace() {
    let prq = Prq::start(&one_lane("drain_s = 1\nshutdown_grace_s = 1\n"));
    let hung = admitted_stream(&prq, "never ends\nsandbox: hang_at=2").await;
    prq.first_live("processing").await;
    let out = prq.cli(&["drain", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = hung.await.unwrap();
    assert_eq!(
        s.error.as_ref().map(|e| e["error"]["code"].clone()),
        Some(json!("request_stopped")),
        "{s:?}"
    );
    assert!(
        s.answer.starts_with("never ends"),
        "keeps what was streamed"
    );
    let reason = prq.status()["runtime"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("was stopped"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prq_start_calls_a_drain_off() {
    let prq = Prq::start(&one_lane("drain_s = 1\n"));
    assert!(prq.cli(&["drain"]).status.success());
    assert_eq!(readyz(&prq).await.0, 503);
    let out = prq.cli(&["start", "--config", prq.config_path.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("the drain is called off"),
        "prq start says so: {said}"
    );
    assert_eq!(readyz(&prq).await.0, 200, "ready at once");
    // Past the drain_s of the called-off drain: it must not come back to refuse.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(readyz(&prq).await.0, 200);
    let (code, body) = prq
        .chat("a-chat", "still here\nsandbox: tokens=1 delay_ms=0")
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(prq.status()["runtime"]["state"], "running");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_before_the_daemon_exits() {
    let prq = Prq::new(&one_lane("drain_s = 1\nshutdown_grace_s = 60\n"));
    let mut child = prq.start_foreground();
    let prq = prq.with_api();
    let long = admitted_stream(&prq, "outlives SIGTERM\nsandbox: tokens=30 delay_ms=100").await;
    prq.first_live("processing").await;

    signal(u64::from(child.id()), Signal::SIGTERM);
    eventually(NOTICED, || async { readyz(&prq).await.0 == 503 })
        .await
        .expect("not ready as soon as SIGTERM arrives");
    let s = long.await.unwrap();
    assert!(completed(&s), "the request in flight finished: {s:?}");
    let exited = wait_until(Duration::from_secs(30), || {
        child.try_wait().ok().flatten().is_some()
    });
    assert!(exited, "the daemon exits after its drain");
    assert!(child.wait().unwrap().success());
    assert!(prq.processes().is_empty(), "{:?}", prq.processes());
}
