//! The request queue end to end on sandbox lanes in real Chromium: modes, cancel, stop,
//! disconnects, bounds, deadlines. The sandbox's record shows what the site saw.

use std::time::Duration;

use prq_tests::{config, eventually, stream_for, Prq, Streamed};
use serde_json::Value;

fn span(s: &Value) -> (u64, u64) {
    (
        s["started_ms"].as_u64().expect("started_ms"),
        s["ended_ms"].as_u64().expect("ended_ms"),
    )
}

/// Starts a streaming request and returns its response once the headers are in.
async fn open_stream(prq: &Prq, model: &str, prompt: &str) -> (u64, reqwest::Response) {
    let r = prq.chat_request(model, prompt, true).await;
    assert_eq!(r.status(), 200);
    let id = prq_tests::request_id(&r).expect("x-prq-request-id");
    (id, r)
}

fn error_type(s: &Streamed) -> Option<&str> {
    s.error.as_ref().and_then(|e| e["error"]["type"].as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_mode_takes_one_request_at_a_time_across_lanes() {
    let prq = Prq::start(&config(
        "serial",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    ));
    assert_eq!(prq.status()["mode"]["effective"], "serial");
    let slow = "sandbox: tokens=15 delay_ms=30";
    let first = format!("s1 serial\n{slow}");
    let (r1, r2) = tokio::join!(prq.chat("alpha-chat", &first), async {
        prq.first_live("processing").await;
        prq.chat("beta-chat", &format!("s2 serial\n{slow}")).await
    });
    assert_eq!((r1.0, r2.0), (200, 200));
    let streams = prq.sandbox_streams().await;
    let (_, e1) = span(stream_for(&streams, "s1 serial").unwrap());
    let (s2, _) = span(stream_for(&streams, "s2 serial").unwrap());
    assert!(
        s2 >= e1,
        "beta waited for alpha: s1 ended {e1}, s2 started {s2}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn full_mode_spreads_one_prefix_over_every_account() {
    let prq = Prq::start(&config(
        "full",
        &[
            ("sandbox", "pool", "a"),
            ("sandbox", "pool", "b"),
            ("sandbox", "pool", "c"),
        ],
    ));
    let s = prq.status();
    assert_eq!(s["mode"]["effective"], "full");
    assert!(s["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["state"] == "idle"));
    // Long enough (2 s) that all three surely start before the first ends.
    let slow = "sandbox: tokens=40 delay_ms=50";
    let prompts: Vec<String> = (1..=3).map(|i| format!("f{i} full\n{slow}")).collect();
    let results = futures::future::join_all(prompts.iter().map(|p| prq.chat("pool-chat", p))).await;
    assert!(results.iter().all(|r| r.0 == 200));
    let streams = prq.sandbox_streams().await;
    let spans: Vec<_> = (1..=3)
        .map(|i| span(stream_for(&streams, &format!("f{i} full")).unwrap()))
        .collect();
    let latest_start = spans.iter().map(|s| s.0).max().unwrap();
    let earliest_end = spans.iter().map(|s| s.1).min().unwrap();
    assert!(
        latest_start < earliest_end,
        "all three generated at once: {spans:?}"
    );
    let q = prq.get_json("/api/queue").await;
    let mut lanes: Vec<&str> = q["finished"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["lane"].as_str().unwrap())
        .collect();
    lanes.sort();
    assert_eq!(lanes, ["pool#1", "pool#2", "pool#3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_mode_runs_one_lane_per_prefix_and_says_so() {
    let prq = Prq::start(&config(
        "concurrent",
        &[("sandbox", "pool", "a"), ("sandbox", "pool", "b")],
    ));
    let s = prq.status();
    let lanes = s["lanes"].as_array().unwrap();
    assert_eq!(lanes[0]["state"], "idle");
    assert_eq!(lanes[1]["state"], "stopped");
    assert!(
        lanes[1]["note"].as_str().unwrap().contains("full"),
        "{}",
        lanes[1]
    );
    assert!(lanes[1]["browser_pid"].is_null());
    assert_eq!(s["mode"]["effective"], "serial", "one lane runs");
    assert!(s["mode"]["reason"]
        .as_str()
        .unwrap()
        .contains("fewer than two"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_takes_a_pending_request_out_and_its_client_is_told() {
    let prq = Prq::start(&config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    ));
    let (first, busy) = open_stream(
        &prq,
        "alpha-chat",
        "c1 busy\nsandbox: tokens=100 delay_ms=40",
    )
    .await;
    let (waiting, queued) = open_stream(&prq, "alpha-chat", "c2 waiting\nsandbox: tokens=2").await;
    assert_eq!(prq.record(waiting).await["state"], "pending");

    assert_eq!(
        prq.post(&format!("/api/queue/{waiting}/cancel")).await.0,
        200
    );
    let s = Streamed::read(queued).await;
    assert_eq!(error_type(&s), Some("request_cancelled"), "{:?}", s.error);
    assert!(s.done);
    assert_eq!(prq.record(waiting).await["state"], "cancelled");
    // Again, or on a processing request, or on nothing: clear errors.
    let (status, body) = prq.post(&format!("/api/queue/{waiting}/cancel")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(prq.post(&format!("/api/queue/{first}/cancel")).await.0, 409);
    assert_eq!(prq.post("/api/queue/99999/cancel").await.0, 404);
    assert_eq!(prq.post("/api/queue/abc/cancel").await.0, 400);

    let s = Streamed::read(busy).await;
    assert!(s.error.is_none() && s.done);
    let streams = prq.sandbox_streams().await;
    assert!(
        stream_for(&streams, "c2 waiting").is_err(),
        "the site never saw it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_ends_generation_in_the_page_and_the_lane_takes_the_next_request() {
    let prq = Prq::start(&config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    ));
    let (id, running) = open_stream(
        &prq,
        "alpha-chat",
        "st1 running\nsandbox: tokens=50 hang_at=3",
    )
    .await;
    let next = tokio::spawn({
        let api = prq.api.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{api}/v1/chat/completions"))
                .json(&serde_json::json!({"model": "alpha-chat", "messages": [{"role": "user", "content": "st2 next\nsandbox: tokens=3 delay_ms=5"}]}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    prq.until_state(id, "processing").await;
    let (status, body) = prq.post(&format!("/api/queue/{id}/stop")).await;
    assert_eq!((status, &body["ids"][0]), (200, &Value::from(id)));

    let s = Streamed::read(running).await;
    assert!(
        s.answer.starts_with("st1 running"),
        "the client keeps what was streamed: {:?}",
        s.answer
    );
    assert_eq!(error_type(&s), Some("request_stopped"));
    assert!(s.done);
    assert_eq!(prq.record(id).await["state"], "stopped");

    let (status, body) = next.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let streams = prq.sandbox_streams().await;
    assert_eq!(
        stream_for(&streams, "st1 running").unwrap()["outcome"],
        "aborted"
    );
    assert_eq!(
        stream_for(&streams, "st2 next").unwrap()["outcome"],
        "finished"
    );
    assert_eq!(
        prq.post(&format!("/api/queue/{id}/stop")).await.0,
        409,
        "already stopped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_non_streaming_request_gets_the_error() {
    let prq = Prq::start(&config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    ));
    let pending = tokio::spawn({
        let api = prq.api.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{api}/v1/chat/completions"))
                .json(&serde_json::json!({"model": "beta-chat", "messages": [{"role": "user", "content": "ns stopped\nsandbox: hang_at=1"}]}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    let id = prq.first_live("processing").await;
    prq.until_state(id, "processing").await;
    assert_eq!(prq.post(&format!("/api/queue/{id}/stop")).await.0, 200);
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 409);
    assert_eq!(body["error"]["type"], "request_stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_all_and_clear_act_on_every_request_and_say_which() {
    let prq = Prq::start(&config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    ));
    let hang = "sandbox: hang_at=1";
    let (a1, r_a1) = open_stream(&prq, "alpha-chat", &format!("sa1\n{hang}")).await;
    let (b1, r_b1) = open_stream(&prq, "beta-chat", &format!("sb1\n{hang}")).await;
    let (a2, r_a2) = open_stream(&prq, "alpha-chat", &format!("sa2\n{hang}")).await;
    prq.until_state(a1, "processing").await;
    prq.until_state(b1, "processing").await;

    let out = prq.cli(&["queue", "clear", "--json"]);
    let cleared: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cleared["ids"], serde_json::json!([a2]));
    let (status, stopped) = prq.post("/api/queue/stop-all").await;
    assert_eq!(status, 200);
    let mut ids: Vec<u64> = stopped["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![a1, b1]);

    assert_eq!(
        error_type(&Streamed::read(r_a2).await),
        Some("request_cancelled")
    );
    assert_eq!(
        error_type(&Streamed::read(r_a1).await),
        Some("request_stopped")
    );
    assert_eq!(
        error_type(&Streamed::read(r_b1).await),
        Some("request_stopped")
    );
    let streams = prq.sandbox_streams().await;
    for head in ["sa1", "sb1"] {
        assert_eq!(stream_for(&streams, head).unwrap()["outcome"], "aborted");
    }
    let q = prq.cli(&["queue", "--json"]);
    let q: Value = serde_json::from_slice(&q.stdout).unwrap();
    assert_eq!(
        (q["pending"].as_u64(), q["processing"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_cancels_or_stops_its_request() {
    let prq = Prq::start(&config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    ));
    // Streaming and processing: the page stops, the site sees the abort.
    let (running, r1) = open_stream(
        &prq,
        "alpha-chat",
        "gone1 streaming\nsandbox: tokens=40 hang_at=2",
    )
    .await;
    // Streaming and pending behind it: cancelled, never reaches the site.
    let (waiting, r2) = open_stream(&prq, "alpha-chat", "gone2 waiting\nsandbox: tokens=2").await;
    prq.until_state(running, "processing").await;
    drop(r2);
    prq.until_state(waiting, "cancelled").await;
    drop(r1);
    prq.until_state(running, "stopped").await;
    eventually(Duration::from_secs(5), || async {
        let streams = prq.sandbox_streams().await;
        stream_for(&streams, "gone1 streaming").is_ok_and(|s| s["outcome"] == "aborted")
    })
    .await
    .expect("the site saw the abort");

    // Not streaming: the client goes away once the site is generating its answer.
    let plain = tokio::spawn({
        let (http, api) = (prq.http().clone(), prq.api.clone());
        async move {
            http.post(format!("{api}/v1/chat/completions"))
                .json(&serde_json::json!({"model": "beta-chat", "messages": [{"role": "user", "content": "gone3 plain\nsandbox: hang_at=1"}]}))
                .send()
                .await
        }
    });
    eventually(Duration::from_secs(20), || async {
        let streams = prq.sandbox_streams().await;
        stream_for(&streams, "gone3 plain").is_ok_and(|s| s["outcome"] == "streaming")
    })
    .await
    .expect("the site generates the non-streaming request");
    plain.abort();
    assert!(plain.await.unwrap_err().is_cancelled());
    eventually(Duration::from_secs(5), || async {
        let streams = prq.sandbox_streams().await;
        stream_for(&streams, "gone3 plain").is_ok_and(|s| s["outcome"] == "aborted")
    })
    .await
    .expect("the site saw the abort of a non-streaming request");
    let streams = prq.sandbox_streams().await;
    assert!(stream_for(&streams, "gone2 waiting").is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_429_with_retry_after() {
    let cfg = config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    )
    .replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\nmax_pending = 1\n",
    );
    let prq = Prq::start(&cfg);
    let (busy, _r1) = open_stream(&prq, "alpha-chat", "q1\nsandbox: hang_at=1").await;
    prq.until_state(busy, "processing").await;
    let (_waiting, _r2) = open_stream(&prq, "alpha-chat", "q2\nsandbox: tokens=1").await;
    let r = prq.chat_request("alpha-chat", "q3", false).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_full");
}

/// The idle deadline is counted from the last text, so it can fall due before the first
/// token's deadline that was set when the lane took the request: the first text must
/// bring the deadline forward. (It did not: with `idle_s` shorter than `first_token_s`,
/// a stalled stream ran until the first-token deadline, minutes by default.)
#[tokio::test(flavor = "multi_thread")]
async fn a_stall_after_the_first_text_times_out_after_idle_s_not_first_token_s() {
    let cfg = config("concurrent", &[("sandbox", "idle", "a")]).replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\n[deadlines]\nfirst_token_s = 60\nidle_s = 1\n",
    );
    let prq = Prq::start(&cfg);
    let t0 = std::time::Instant::now();
    let stalled = tokio::time::timeout(
        Duration::from_secs(20),
        prq.chat_stream("idle-chat", "stall\nsandbox: hang_at=2 delay_ms=10"),
    )
    .await
    .expect("the idle deadline ended the stalled stream");
    assert_eq!(error_type(&stalled), Some("timed_out"));
    assert!(stalled.error.as_ref().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("idle"));
    assert!(
        stalled.answer.starts_with("stall"),
        "kept what was streamed"
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    prq_tests::eventually(Duration::from_secs(5), || async {
        let streams = prq.sandbox_streams().await;
        stream_for(&streams, "stall").is_ok_and(|s| s["outcome"] == "aborted")
    })
    .await
    .expect("the site saw the stalled stream aborted");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_deadline_stops_its_request_and_ends_it_timed_out() {
    let cfg = config(
        "concurrent",
        &[("sandbox", "ft", "a"), ("sandbox", "idle", "b"), ("sandbox", "total", "c")],
    )
    .replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\n[deadlines]\nqueue_wait_s = 1.5\nfirst_token_s = 1.5\nidle_s = 1.5\ntotal_s = 4\n",
    );
    let prq = Prq::start(&cfg);
    let t0 = std::time::Instant::now();
    let (first_token, s1) = tokio::join!(
        prq.chat("ft-chat", "dl first token\nsandbox: delay_ms=5000 tokens=1"),
        // Idle: two words, then a stall.
        prq.chat_stream("idle-chat", "dl idle\nsandbox: hang_at=2 delay_ms=10"),
    );
    assert_eq!(
        first_token.0, 504,
        "no byte was sent yet: {}",
        first_token.1
    );
    assert_eq!(first_token.1["error"]["type"], "timed_out");
    assert!(first_token.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("first_token"));
    assert_eq!(error_type(&s1), Some("timed_out"));
    assert!(s1.answer.starts_with("dl idle"), "kept what was streamed");
    assert!(s1.error.as_ref().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("idle"));

    // The two requests above end in the queue once their lanes confirm the stop; only
    // then is the first processing request below the total one.
    let queue_idle = || async {
        let q = prq.get_json("/api/queue").await;
        q["requests"].as_array().is_some_and(|r| r.is_empty())
    };
    prq_tests::eventually(Duration::from_secs(20), queue_idle)
        .await
        .expect("the stopped requests ended");

    // Total: a steady stream that runs past the total deadline; a second request waits
    // behind it on the same lane past its queue_wait.
    let (total, waited) = tokio::join!(
        prq.chat_stream("total-chat", "dl total\nsandbox: tokens=400 delay_ms=20"),
        async {
            prq.first_live("processing").await;
            prq.chat("total-chat", "dl queue wait").await
        }
    );
    assert_eq!(error_type(&total), Some("timed_out"));
    assert!(total.error.as_ref().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("total"));
    assert_eq!(waited.0, 504);
    assert!(waited.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("queue_wait"));
    assert!(t0.elapsed() < Duration::from_secs(20));

    let streams = prq.sandbox_streams().await;
    for head in ["dl first token", "dl idle", "dl total"] {
        assert_eq!(
            stream_for(&streams, head).unwrap()["outcome"],
            "aborted",
            "{head}"
        );
    }
    assert!(stream_for(&streams, "dl queue wait").is_err());
    let q = prq.get_json("/api/queue").await;
    let timed_out = q["finished"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "timed_out")
        .count();
    assert_eq!(timed_out, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streaming_client_waiting_in_the_queue_gets_keep_alive_comments() {
    let prq = Prq::start(&format!(
        "keep_alive_s = 1\n{}",
        config(
            "concurrent",
            &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")]
        )
    ));
    // The lane is busy until this client goes away.
    let (_, busy) = open_stream(&prq, "alpha-chat", "k1 busy\nsandbox: hang_at=1").await;
    let (waiting, mut queued) =
        open_stream(&prq, "alpha-chat", "k2 waiting\nsandbox: tokens=2").await;
    // While it waits, the waiting stream carries comments only, one a second: two of
    // them come well before the default 10 s keep-alive would send its first.
    let mut seen = String::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(9);
    while seen.lines().filter(|l| l.starts_with(':')).count() < 2 {
        let chunk = tokio::time::timeout_at(until, queued.chunk())
            .await
            .unwrap_or_else(|_| panic!("two keep-alive comments within 9 s: {seen:?}"));
        let chunk = chunk.expect("read").expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(prq.record(waiting).await["state"], "pending", "{seen}");
    assert!(!seen.contains("k2 waiting"), "{seen:?}");
    // And the stream then carries its answer as usual.
    drop(busy);
    let s = Streamed::read(queued).await;
    assert!(s.error.is_none() && s.done, "{:?}", s.error);
    assert!(s.answer.starts_with("k2 waiting"), "{}", s.answer);
}

/// A request's `stop` strings: the site knows nothing of them, so prq ends the answer
/// before the first one, stops the site's generation, and the request ends `completed`
/// with `finish_reason: "stop"`, streaming or not.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_string_ends_the_answer_before_it_and_stops_the_site() {
    let prq = Prq::start(&config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    ));
    let send = |model: &'static str, prompt: &'static str, stream: bool, stop: Value| {
        let (http, api) = (prq.http().clone(), prq.api.clone());
        async move {
            http.post(format!("{api}/v1/chat/completions"))
                .json(&serde_json::json!({
                    "model": model, "stream": stream, "stop": stop,
                    "messages": [{"role": "user", "content": prompt}],
                }))
                .send()
                .await
                .unwrap()
        }
    };
    // Streaming, the stop string split across the site's words ("dolor" arrives as
    // " dolor", after " ipsum"): the answer ends right before it.
    let prompt = "stopped by a string\nsandbox: tokens=80 delay_ms=40";
    let r = send(
        "alpha-chat",
        prompt,
        true,
        serde_json::json!(["ips", "um dolor"]),
    )
    .await;
    let id = prq_tests::request_id(&r).unwrap();
    let s = Streamed::read(r).await;
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(s.finish_reason.as_deref(), Some("stop"));
    assert!(s.done);
    let full = prq_protocol::script::expected(prompt, false).unwrap().1;
    let cut = &full[..full.find("ips").unwrap()];
    assert_eq!(s.answer, cut);
    eventually(Duration::from_secs(10), || async {
        prq.record(id).await["state"] == "completed"
    })
    .await
    .expect("the request ends completed");
    eventually(Duration::from_secs(5), || async {
        let streams = prq.sandbox_streams().await;
        stream_for(&streams, "stopped by a string").is_ok_and(|s| s["outcome"] == "aborted")
    })
    .await
    .expect("the site's generation was stopped");
    let streams = prq.sandbox_streams().await;
    let sent = stream_for(&streams, "stopped by a string").unwrap()["tokens_sent"]
        .as_u64()
        .unwrap();
    assert!(sent < 80, "the site stopped early: {sent} of 80 words");

    // Not streaming, one stop string.
    let prompt = "whole answer\nsandbox: tokens=80 delay_ms=40";
    let r = send("beta-chat", prompt, false, Value::from(" sit")).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let full = prq_protocol::script::expected(prompt, false).unwrap().1;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        &full[..full.find(" sit").unwrap()]
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    // A stop string the answer never reaches changes nothing, including the text held
    // back while it might have been one ("lorem" starts like "lore!").
    let prompt = "no stop\nsandbox: tokens=5";
    let s = Streamed::read(send("alpha-chat", prompt, true, Value::from("lore!")).await).await;
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(
        s.answer,
        prq_protocol::script::expected(prompt, false).unwrap().1
    );
}
