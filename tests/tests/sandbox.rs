//! End to end on sandbox lanes: the real prq, real workers, real headless Chromium
//! driving the sandbox chat site.

use prq_protocol::script;
use prq_tests::{config, is_alive, stream_for, Prq};
use serde_json::Value;

fn two_sandbox_lanes() -> Prq {
    Prq::start(&config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_exact_streamed_or_not() {
    let prq = two_sandbox_lanes();

    let prompt = "What is prq?\nsandbox: tokens=12 delay_ms=5";
    let (status, body) = prq.chat("alpha-chat", prompt).await;
    assert_eq!(status, 200, "{body}");
    let (_, expected) = script::expected(prompt, false).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], expected.as_str());
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"]
        .get("reasoning_content")
        .is_none());

    let prompt = "Think first.\nsandbox: tokens=9 think_tokens=4 delay_ms=5";
    let s = prq.chat_stream("beta-reasoner", prompt).await;
    let (reasoning, answer) = script::expected(prompt, true).unwrap();
    assert_eq!(s.status, 200);
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(s.reasoning, reasoning);
    assert_eq!(s.answer, answer);
    assert_eq!(s.finish_reason.as_deref(), Some("stop"));
    assert!(s.done, "the stream ends with [DONE]");
    // Reasoning arrives before the answer, in its own field.
    let first_answer = s.chunks.iter().position(|c| {
        c["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    });
    let last_reasoning = s
        .chunks
        .iter()
        .rposition(|c| c["choices"][0]["delta"]["reasoning_content"].is_string());
    assert!(last_reasoning < first_answer);

    // The site saw both, and finished them.
    let streams = prq.sandbox_streams().await;
    for head in ["What is prq?", "Think first."] {
        assert_eq!(stream_for(&streams, head).unwrap()["outcome"], "finished");
    }
}

/// A short answer of non-ASCII text is complete before the worker reads the response's
/// head, and the sandbox names no charset on `text/event-stream` (as some real servers
/// do): the answer is still exactly what the site sent, streamed or not.
#[tokio::test(flavor = "multi_thread")]
async fn a_short_non_ascii_answer_is_byte_exact() {
    let prq = two_sandbox_lanes();
    let prompt = "Ünï 日本 🎉 👩‍👩‍👧‍👦 שָׁלוֹם مرحبا\nsandbox: tokens=3 delay_ms=5";
    let (_, expected) = script::expected(prompt, false).unwrap();
    for round in 0..3 {
        let (status, body) = prq.chat("alpha-chat", prompt).await;
        assert_eq!(status, 200, "{body}");
        let content = &body["choices"][0]["message"]["content"];
        assert_eq!(content, expected.as_str(), "round {round}");
        let s = prq.chat_stream("beta-chat", prompt).await;
        assert!(s.error.is_none(), "{:?}", s.error);
        assert_eq!(s.answer, expected, "round {round}, streamed");
    }
}

/// A 400,000-character prompt of many lines (blank ones, leading spaces and tabs,
/// unicode) reaches the site intact: the sandbox echoes it back.
#[tokio::test(flavor = "multi_thread")]
async fn a_400k_character_prompt_reaches_the_site_intact() {
    let prq = two_sandbox_lanes();
    let turn = "User: 她看着窗外的雨 — “明天再走吧”\n\n  \tAssistant: *nods* 👩‍👩‍👧‍👦 שלום\n";
    let body: String = turn.chars().cycle().take(400_000).collect();
    let prompt = format!("huge\n{body}\nsandbox: tokens=1 delay_ms=0");
    let (_, expected) = script::expected(&prompt, false).unwrap();
    let (status, answer) = prq.chat("alpha-chat", &prompt).await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content == expected, "the echo differs from the prompt");
}

fn span(s: &Value) -> (u64, u64) {
    (
        s["started_ms"].as_u64().expect("started_ms"),
        s["ended_ms"].as_u64().expect("ended_ms"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn lanes_generate_at_once_and_each_lane_in_arrival_order() {
    let prq = two_sandbox_lanes();
    // 2.5 s each: long enough that beta surely starts while alpha generates.
    let slow = "sandbox: tokens=50 delay_ms=50";
    let a1 = format!("a1 first on alpha\n{slow}");
    let a2 = format!("a2 second on alpha\n{slow}");
    let b1 = format!("b1 only on beta\n{slow}");

    let first = prq.chat("alpha-chat", &a1);
    // Arrival order within a lane is the order the requests were admitted: a1 first.
    let later = async {
        prq.first_live("processing").await;
        tokio::join!(prq.chat("alpha-chat", &a2), prq.chat("beta-chat", &b1))
    };
    let (r1, (r2, r3)) = tokio::join!(first, later);
    for (status, body) in [&r1, &r2, &r3] {
        assert_eq!(*status, 200, "{body}");
    }

    let streams = prq.sandbox_streams().await;
    let (a1s, a1e) = span(stream_for(&streams, "a1 first").unwrap());
    let (a2s, _) = span(stream_for(&streams, "a2 second").unwrap());
    let (b1s, b1e) = span(stream_for(&streams, "b1 only").unwrap());
    assert!(
        a1s < b1e && b1s < a1e,
        "alpha and beta overlap: a1 {a1s}..{a1e}, b1 {b1s}..{b1e}"
    );
    assert!(
        a2s >= a1e,
        "a2 starts after a1 ends: a1 ended {a1e}, a2 started {a2s}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_lanes_browsers_and_urls_and_stop_leaves_nothing() {
    let prq = two_sandbox_lanes();
    let s = prq.status();
    assert!(s["pid"].as_u64().is_some());
    assert_eq!(s["runtime"]["state"], "running");
    assert!(s["runtime"]["reason"].is_null());
    assert_eq!(s["mode"]["configured"], "concurrent");
    assert_eq!(s["mode"]["effective"], "concurrent");
    assert!(s["api_url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert!(s["panel_url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert!(s["sandbox_url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert_eq!(s["queue"]["pending"], 0);
    assert_eq!(s["queue"]["processing"], 0);
    let lanes = s["lanes"].as_array().unwrap();
    assert_eq!(lanes.len(), 2);
    let mut pids = Vec::new();
    for (lane, (prefix, account)) in lanes.iter().zip([("alpha", "a"), ("beta", "b")]) {
        assert_eq!(lane["id"], format!("{prefix}#1"));
        assert_eq!(lane["provider"], "sandbox");
        assert_eq!(lane["prefix"], prefix);
        assert_eq!(lane["account"], account);
        assert_eq!(lane["state"], "idle");
        for key in ["worker_pid", "browser_pid"] {
            let pid = lane[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{key} in {lane}")) as u32;
            assert!(is_alive(pid), "{key} {pid} runs");
            pids.push(pid);
        }
    }
    // Each lane's browser uses its own profile under PRQ_HOME.
    for account in ["a", "b"] {
        assert!(prq.home().join("profiles/sandbox").join(account).is_dir());
    }

    let out = prq.stop();
    assert!(out.status.success());
    assert!(
        prq.processes().is_empty(),
        "left behind: {:?}",
        prq.processes()
    );
    for pid in pids {
        assert!(!is_alive(pid), "pid {pid} is gone");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lane_whose_browser_cannot_start_is_named_and_start_fails() {
    let mut cfg = config("concurrent", &[("sandbox", "alpha", "a")]);
    cfg = cfg.replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\nbrowser = \"/nonexistent/chromium\"\n",
    );
    let prq = Prq::new(&cfg);
    let out = prq.cli(&["start", "--config", prq.config_path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("alpha#1"), "{stderr}");
    assert!(stderr.contains("/nonexistent/chromium"), "{stderr}");
    let s = prq.status();
    assert_eq!(s["runtime"]["state"], "stopped");
    assert!(s["runtime"]["reason"].as_str().unwrap().contains("alpha#1"));
}
