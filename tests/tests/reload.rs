//! `prq reload` and SIGHUP on a live daemon: lanes added, removed and changed while
//! others serve on; a config that does not load changes nothing.

use std::time::Duration;

use nix::sys::signal::Signal;
use prq_protocol::script;
use prq_tests::{config, eventually, is_alive, request_id, signal, with_limits, Prq, Streamed};
use serde_json::Value;

/// Opens a streaming chat and reads it to its end in a task of its own; returns the
/// request's ID and the task.
async fn open_stream(
    prq: &Prq,
    model: &str,
    prompt: &str,
) -> (u64, tokio::task::JoinHandle<Streamed>) {
    let r = prq.chat_request(model, prompt, true).await;
    assert_eq!(r.status(), 200, "{model}");
    let id = request_id(&r).expect("request id");
    (id, tokio::spawn(Streamed::read(r)))
}

fn lanes(status: &Value) -> Vec<Value> {
    status["lanes"].as_array().cloned().unwrap_or_default()
}

fn lane_ids(status: &Value) -> Vec<String> {
    lanes(status)
        .iter()
        .map(|l| l["id"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The line of `prq reload`'s report about one lane.
fn line_of<'a>(report: &'a str, lane: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{lane} ")))
        .unwrap_or_else(|| panic!("no line for {lane} in:\n{report}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_on_b_runs_to_its_last_word_while_a_reload_adds_c_and_removes_d() {
    let prq = Prq::start(&config(
        "concurrent",
        &[("sandbox", "b", "b"), ("sandbox", "d", "d")],
    ));
    let b_pid = prq.lane("b#1")["worker_pid"].clone();
    let d_pid = prq.lane("d#1")["worker_pid"].as_u64().expect("d's worker");

    // ~3 s each: the reload lands in the middle of both.
    let slow = "sandbox: tokens=30 delay_ms=100";
    let b_prompt = format!("b streams on\n{slow}");
    let d_prompt = format!("d drains\n{slow}");
    let (b_id, b_stream) = open_stream(&prq, "b-chat", &b_prompt).await;
    let (d_id, d_stream) = open_stream(&prq, "d-chat", &d_prompt).await;
    prq.until_state(b_id, "processing").await;
    prq.until_state(d_id, "processing").await;
    // A second request for d waits behind the first.
    let waiting = prq.chat_request("d-chat", "d waits", true).await;
    assert_eq!(waiting.status(), 200);
    let waiting_id = request_id(&waiting).expect("request id");
    prq.until_state(waiting_id, "pending").await;
    let waiting = tokio::spawn(Streamed::read(waiting));

    std::fs::write(
        &prq.config_path,
        config(
            "concurrent",
            &[("sandbox", "b", "b"), ("sandbox", "c", "c")],
        ),
    )
    .unwrap();
    let reload = prq.cli(&["reload"]);
    let report = out(&reload);
    assert!(reload.status.success(), "{report}");
    assert!(line_of(&report, "b#1").contains("unchanged"), "{report}");
    assert!(line_of(&report, "c#1").contains("added"), "{report}");
    let d_line = line_of(&report, "d#1");
    assert!(
        d_line.contains("removed") && d_line.contains("after its current request"),
        "{report}"
    );

    // d takes nothing new at once; its request generates on; the one that waited for
    // it is told its lanes were removed, once.
    let (status, body) = prq.chat("d-chat", "too late").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(prq.lane("d#1")["state"], "busy");
    let w = waiting.await.unwrap();
    let error = w.error.clone().expect("the waiting request fails");
    assert_eq!(error["error"]["code"], "lane_removed", "{error}");
    assert!(
        w.answer.is_empty() && w.finish_reason.is_none(),
        "{:?}",
        w.chunks
    );
    assert_eq!(prq.record(waiting_id).await["state"], "failed");

    // Both streams run to their last word.
    for (stream, prompt) in [(b_stream, &b_prompt), (d_stream, &d_prompt)] {
        let s = stream.await.unwrap();
        assert!(s.error.is_none(), "{prompt}: {:?}", s.error);
        assert_eq!(s.answer, script::expected(prompt, false).unwrap().1);
        assert_eq!(s.finish_reason.as_deref(), Some("stop"));
        assert!(s.done);
    }
    let streams = prq.sandbox_streams().await;
    for head in ["b streams on", "d drains"] {
        let s = prq_tests::stream_for(&streams, head).unwrap();
        assert_eq!(s["outcome"], "finished", "{head}");
    }

    // Then d stops (its worker and browser gone), c serves, and b never restarted.
    eventually(Duration::from_secs(60), || async {
        let status = prq.status();
        lane_ids(&status) == ["b#1", "c#1"] && prq.lane("c#1")["state"] == "idle"
    })
    .await
    .unwrap_or_else(|_| panic!("after the reload: {}", prq.status()));
    assert!(!is_alive(d_pid as u32), "d's worker stopped");
    assert_eq!(prq.lane("b#1")["worker_pid"], b_pid, "b was not restarted");
    let prompt = "c now\nsandbox: tokens=2 delay_ms=0";
    let (status, body) = prq.chat("c-chat", prompt).await;
    assert_eq!(status, 200, "{body}");
    let models = prq.get_json("/v1/models").await.to_string();
    assert!(
        models.contains("c-chat") && !models.contains("d-chat"),
        "{models}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_config_changes_nothing_and_sighup_restarts_a_changed_lane_after_its_request() {
    let good = config("concurrent", &[("echo", "e1", "x"), ("echo", "e2", "y")]);
    let prq = Prq::start(&good);
    let before = prq.status();
    let models = prq.get_json("/v1/models").await;

    // Does not parse, does not validate, moves the listener: each refused, naming why.
    let bad = [
        (format!("{good}\nbogus_key = 1\n"), "bogus_key"),
        (
            good.replace(
                "start_timeout_s = 60\n",
                "start_timeout_s = 60\n[deadlines]\nidle_s = -1\n",
            ),
            "line 5: [deadlines] idle_s",
        ),
        (good.replace("127.0.0.1:0", "127.0.0.1:1"), "listen changed"),
    ];
    for (text, why) in bad {
        std::fs::write(&prq.config_path, &text).unwrap();
        let reload = prq.cli(&["reload"]);
        let said = out(&reload);
        assert!(!reload.status.success(), "{said}");
        assert!(
            said.contains(why) && said.contains("nothing changed"),
            "{said}"
        );
        assert_eq!(prq.status(), before, "the daemon is exactly as it was");
        assert_eq!(prq.get_json("/v1/models").await, models);
    }
    let (status, body) = prq.chat("e1-chat", "still here").await;
    assert_eq!(status, 200, "{body}");

    // A changed lane (thinking on) restarts after the request it is generating; SIGHUP
    // reloads as `prq reload` does.
    let e1_pid = prq.lane("e1#1")["worker_pid"].clone();
    let e2_pid = prq.lane("e2#1")["worker_pid"].clone();
    let prompt = "e1 finishes first\nsandbox: tokens=20 delay_ms=100";
    let (id, stream) = open_stream(&prq, "e1-chat", prompt).await;
    prq.until_state(id, "processing").await;
    let changed = good.replacen("account = \"x\"\n", "account = \"x\"\nthinking = true\n", 1);
    std::fs::write(&prq.config_path, changed).unwrap();
    signal(before["pid"].as_u64().unwrap(), Signal::SIGHUP);
    eventually(Duration::from_secs(10), || async {
        prq.lane("e1#1")["note"]
            .as_str()
            .is_some_and(|n| n.contains("restarts after its current request"))
    })
    .await
    .unwrap_or_else(|_| panic!("no restart pending: {}", prq.status()));
    assert_eq!(
        prq.lane("e1#1")["worker_pid"],
        e1_pid,
        "not before its request ends"
    );

    let s = stream.await.unwrap();
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(s.answer, script::expected(prompt, false).unwrap().1);
    eventually(Duration::from_secs(30), || async {
        let lane = prq.lane("e1#1");
        lane["state"] == "idle" && lane["worker_pid"] != e1_pid
    })
    .await
    .unwrap_or_else(|_| panic!("e1 did not restart: {}", prq.status()));
    assert_eq!(prq.lane("e2#1")["worker_pid"], e2_pid, "e2 untouched");
    // The new setting took: e1-auto now thinks.
    let (status, body) = prq
        .chat("e1-auto", "think now\nsandbox: tokens=1 delay_ms=0")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["choices"][0]["message"]["reasoning_content"].is_string(),
        "{body}"
    );
    assert!(prq.daemon_log().contains("SIGHUP: config reloaded"));
}

/// A lane's presence (user agent, locale, time zone) changed by a reload: that lane
/// restarts, and its browser says the new user agent; the other lane serves on. The
/// report says which settings applied and which wait for a restart — and says it
/// again on the next reload, until the restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_presence_change_restarts_that_lane_only_and_the_report_says_how_settings_apply() {
    const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                           (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36";
    let good = config(
        "concurrent",
        &[("sandbox", "p", "p"), ("sandbox", "q", "q")],
    );
    let prq = Prq::start(&good);
    let p_pid = prq.lane("p#1")["worker_pid"].clone();
    let q_pid = prq.lane("q#1")["worker_pid"].clone();
    assert_ne!(prq.lane("p#1")["presence"]["user_agent"], WINDOWS);

    let presence =
        format!("account = \"p\"\nuser_agent = \"{WINDOWS}\"\nlocale = \"de-DE\"\ntimezone = \"Europe/Berlin\"\n");
    let changed = with_limits(
        &good.replacen("account = \"p\"\n", &presence, 1),
        &["max_connections = 64", "client_buffer_bytes = 65536"],
    )
    .replacen(
        "[limits]\n",
        "[deadlines]\nidle_s = 100\n[logs]\nkeep = 3\n[limits]\n",
        1,
    );
    std::fs::write(&prq.config_path, &changed).unwrap();
    let reload = prq.cli(&["reload"]);
    let report = out(&reload);
    assert!(reload.status.success(), "{report}");
    let p_line = line_of(&report, "p#1");
    assert!(
        p_line.contains("restarting") && p_line.contains("user_agent, locale, timezone changed"),
        "{report}"
    );
    assert!(line_of(&report, "q#1").contains("unchanged"), "{report}");
    for (setting, applies) in [
        ("deadlines", "applied"),
        ("limits.client_buffer_bytes", "applied"),
        ("limits.max_connections", "waits for a restart"),
        ("logs.keep", "waits for a restart"),
    ] {
        let line = line_of(&report, setting);
        assert!(line.contains(applies), "{setting}: {report}");
    }
    assert!(
        line_of(&report, "limits.max_connections").contains("`prq stop` and `prq start`"),
        "{report}"
    );

    eventually(Duration::from_secs(60), || async {
        let p = prq.lane("p#1");
        p["state"] == "idle" && p["worker_pid"] != p_pid
    })
    .await
    .unwrap_or_else(|_| panic!("p did not restart: {}", prq.status()));
    let p = prq.lane("p#1");
    assert_eq!(p["presence"]["user_agent"], WINDOWS, "{p}");
    assert_eq!(p["presence"]["locale"], "de-DE", "{p}");
    assert_eq!(p["presence"]["timezone"], "Europe/Berlin", "{p}");
    assert_eq!(prq.lane("q#1")["worker_pid"], q_pid, "q untouched");
    let prompt = "p again\nsandbox: tokens=2 delay_ms=0";
    let (status, body) = prq.chat("p-chat", prompt).await;
    assert_eq!(status, 200, "{body}");

    // The same file again: no lane changes, nothing newly applied, and what waits for
    // a restart still says so.
    let reload = prq.cli(&["reload"]);
    let report = out(&reload);
    assert!(reload.status.success(), "{report}");
    assert!(line_of(&report, "p#1").contains("unchanged"), "{report}");
    assert!(!report.contains("deadlines"), "{report}");
    assert!(
        line_of(&report, "limits.max_connections").contains("waits for a restart"),
        "{report}"
    );
}

/// Sleeping lanes across a reload: a lane asleep is removed (its worker stops); a new
/// `idle_suspend_s` is applied to a running lane without restarting it (it then falls
/// asleep with the same worker), and a request wakes it.
#[tokio::test(flavor = "multi_thread")]
async fn an_asleep_lane_is_removed_and_a_new_sleep_time_applies_without_a_restart() {
    let both = config(
        "concurrent",
        &[("sandbox", "s", "s"), ("sandbox", "w", "w")],
    );
    // s sleeps after a second idle; w never.
    let good = both.replacen(
        "account = \"s\"\n",
        "account = \"s\"\nidle_suspend_s = 1\n",
        1,
    );
    let prq = Prq::start(&good);
    let s_pid = prq.lane("s#1")["worker_pid"].as_u64().expect("s's worker");
    let w_pid = prq.lane("w#1")["worker_pid"].clone();
    eventually(Duration::from_secs(60), || async {
        prq.lane("s#1")["state"] == "asleep"
    })
    .await
    .unwrap_or_else(|_| panic!("s did not sleep: {}", prq.status()));

    // s goes; w sleeps after a second from now on.
    let only_w = config("concurrent", &[("sandbox", "w", "w")]).replacen(
        "account = \"w\"\n",
        "account = \"w\"\nidle_suspend_s = 1\n",
        1,
    );
    std::fs::write(&prq.config_path, only_w).unwrap();
    let reload = prq.cli(&["reload"]);
    let report = out(&reload);
    assert!(reload.status.success(), "{report}");
    assert!(line_of(&report, "s#1").contains("removed"), "{report}");
    let w_line = line_of(&report, "w#1");
    assert!(
        w_line.contains("updated") && w_line.contains("idle_suspend_s applied"),
        "{report}"
    );
    eventually(Duration::from_secs(60), || async {
        lane_ids(&prq.status()) == ["w#1"] && prq.lane("w#1")["state"] == "asleep"
    })
    .await
    .unwrap_or_else(|_| panic!("after the reload: {}", prq.status()));
    assert!(!is_alive(s_pid as u32), "s's worker stopped");
    assert_eq!(prq.lane("w#1")["worker_pid"], w_pid, "w was not restarted");
    let prompt = "wake up\nsandbox: tokens=2 delay_ms=0";
    let (status, body) = prq.chat("w-chat", prompt).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        script::expected(prompt, false).unwrap().1
    );
}

/// A setting every lane's worker takes (`heartbeat_ms`) restarts a prefix's lanes one at
/// a time: the second waits for its turn and serves meanwhile, so the prefix is never
/// without a serving lane; both end up restarted.
#[tokio::test(flavor = "multi_thread")]
async fn a_prefixs_lanes_restart_in_turn_so_the_prefix_keeps_serving() {
    let good = config("full", &[("sandbox", "r", "x"), ("sandbox", "r", "y")]);
    let prq = Prq::start(&good);
    let before = [
        prq.lane("r#1")["worker_pid"].clone(),
        prq.lane("r#2")["worker_pid"].clone(),
    ];

    let changed = good.replacen(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\nheartbeat_ms = 700\n",
        1,
    );
    std::fs::write(&prq.config_path, changed).unwrap();
    let reload = prq.cli(&["reload"]);
    let report = out(&reload);
    assert!(reload.status.success(), "{report}");
    let (first, second) = (line_of(&report, "r#1"), line_of(&report, "r#2"));
    assert!(
        first.contains("heartbeat_ms changed: restarting with them"),
        "{report}"
    );
    assert!(second.contains("restarts in turn"), "{report}");
    assert!(
        line_of(&report, "heartbeat_ms").contains("lanes restart"),
        "{report}"
    );

    // Every look at the lanes finds one serving, until both run new workers.
    let serving = |lane: &Value| lane["state"] == "idle" || lane["state"] == "busy";
    eventually(Duration::from_secs(90), || async {
        let status = prq.status();
        let lanes = lanes(&status);
        let leaving = |l: &Value| {
            l["note"]
                .as_str()
                .is_some_and(|n| n.contains("after its current request"))
        };
        assert!(
            lanes.iter().any(|l| serving(l) && !leaving(l)),
            "no lane of r serves: {status}"
        );
        lanes
            .iter()
            .zip(&before)
            .all(|(l, old)| l["worker_pid"] != *old && serving(l))
    })
    .await
    .unwrap_or_else(|_| panic!("not both restarted: {}", prq.status()));
    let prompt = "after both\nsandbox: tokens=2 delay_ms=0";
    let (status, body) = prq.chat("r-chat", prompt).await;
    assert_eq!(status, 200, "{body}");
}

/// A lane a first reload restarts after its request, and a second reload removes
/// before that request ends, goes for good: the restart is called off.
#[tokio::test(flavor = "multi_thread")]
async fn a_lane_removed_while_its_restart_waits_is_not_restarted() {
    let good = config("concurrent", &[("echo", "e1", "x"), ("echo", "e2", "y")]);
    let prq = Prq::start(&good);
    let e1_pid = prq.lane("e1#1")["worker_pid"]
        .as_u64()
        .expect("e1's worker");
    let prompt = "e1 finishes\nsandbox: tokens=20 delay_ms=100";
    let (id, stream) = open_stream(&prq, "e1-chat", prompt).await;
    prq.until_state(id, "processing").await;

    let thinking = good.replacen("account = \"x\"\n", "account = \"x\"\nthinking = true\n", 1);
    std::fs::write(&prq.config_path, thinking).unwrap();
    let first = prq.cli(&["reload"]);
    assert!(
        line_of(&out(&first), "e1#1").contains("restarting"),
        "{}",
        out(&first)
    );
    std::fs::write(
        &prq.config_path,
        config("concurrent", &[("echo", "e2", "y")]),
    )
    .unwrap();
    let second = prq.cli(&["reload"]);
    assert!(
        line_of(&out(&second), "e1#1").contains("removed"),
        "{}",
        out(&second)
    );

    let s = stream.await.unwrap();
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(s.answer, script::expected(prompt, false).unwrap().1);
    eventually(Duration::from_secs(30), || async {
        lane_ids(&prq.status()) == ["e2#1"] && !is_alive(e1_pid as u32)
    })
    .await
    .unwrap_or_else(|_| panic!("e1 did not go: {}", prq.status()));
    let (status, body) = prq.chat("e1-chat", "gone").await;
    assert_eq!(status, 404, "{body}");
}
