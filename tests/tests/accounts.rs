//! Accounts that rotate on rate limits, end to end: the sandbox site rate-limits one
//! account (`limit_account=NAME limit_s=N`, HTTP 429 with `Retry-After`) in real
//! Chromium, and prq cools that account's lane and serves from the others.

use std::time::Duration;

use prq_protocol::script;
use prq_tests::{config, eventually, request_id, Prq};
use serde_json::Value;

/// A non-streaming chat: (status, body, the lane that served it, `Retry-After`).
async fn chat_on(
    prq: &Prq,
    model: &str,
    prompt: &str,
) -> (u16, Value, Option<String>, Option<u64>) {
    let r = prq.chat_request(model, prompt, false).await;
    let status = r.status().as_u16();
    let id = request_id(&r);
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body: Value = r.json().await.expect("JSON body");
    let lane = match id {
        Some(id) => prq.record(id).await["lane"].as_str().map(str::to_owned),
        None => None,
    };
    (status, body, lane, retry_after)
}

fn answer(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_account_cools_while_the_other_account_answers() {
    let prq = Prq::start(&config(
        "full",
        &[("sandbox", "sb", "a"), ("sandbox", "sb", "b")],
    ));
    // A prefix's request goes to the lane idle longest: once a request was served by
    // sb#2 (account b), the next one goes to sb#1 (account a).
    let mut last = None;
    for i in 0..3 {
        let (status, body, lane, _) = chat_on(
            &prq,
            "sb-chat",
            &format!("warm {i}\nsandbox: tokens=1 delay_ms=0"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        last = lane;
        if last.as_deref() == Some("sb#2") {
            break;
        }
    }
    assert_eq!(last.as_deref(), Some("sb#2"), "sb#2 never served a request");

    let prompt = "limited\nsandbox: tokens=3 delay_ms=0 limit_account=a limit_s=10";
    let (status, body, lane, _) = chat_on(&prq, "sb-chat", prompt).await;
    assert_eq!(status, 200, "the client gets its answer: {body}");
    assert_eq!(answer(&body), script::expected(prompt, false).unwrap().1);
    assert_eq!(lane.as_deref(), Some("sb#2"), "from the other account");

    // The site refused account a, then served account b.
    let streams = prq.sandbox_streams().await;
    let seen: Vec<_> = streams
        .iter()
        .filter(|s| {
            s["prompt_head"]
                .as_str()
                .unwrap_or("")
                .starts_with("limited")
        })
        .map(|s| {
            (
                s["account"].as_str().unwrap_or("-"),
                s["outcome"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(seen, [("a", "limited"), ("b", "finished")]);

    // Lane sb#1 cools for the site's time, and says so in status and /metrics.
    let cooling = prq.lane("sb#1");
    assert_eq!(cooling["state"], "cooling", "{cooling}");
    let left = cooling["cooling_left_ms"]
        .as_u64()
        .expect("cooling_left_ms");
    assert!(left > 0 && left <= 10_000, "{left}");
    let text = prq.metrics_text().await;
    assert!(
        text.contains("prq_lane_state{lane=\"sb#1\",prefix=\"sb\",state=\"cooling\"} 1")
            && text.contains("prq_lane_cooling_seconds{lane=\"sb#1\",prefix=\"sb\"}"),
        "{text}"
    );
    let human = prq.cli(&["status"]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("rate limited by its site"),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );

    // The following requests go to the other lane while sb#1 cools.
    for i in 0..2 {
        let (status, body, lane, _) = chat_on(
            &prq,
            "sb-chat",
            &format!("next {i}\nsandbox: tokens=1 delay_ms=0"),
        )
        .await;
        assert_eq!((status, lane.as_deref()), (200, Some("sb#2")), "{body}");
    }
    assert_eq!(prq.lane("sb#1")["state"], "cooling");

    // When the time is up, sb#1 is idle by itself and serves again: two requests at
    // once take both lanes.
    eventually(Duration::from_secs(25), || async {
        prq.lane("sb#1")["state"] == "idle"
    })
    .await
    .expect("sb#1 idle again after its cooling");
    assert!(prq.lane("sb#1")["cooling_left_ms"].is_null());
    let slow = "sandbox: tokens=20 delay_ms=50";
    let (p1, p2) = (format!("again 1\n{slow}"), format!("again 2\n{slow}"));
    let (one, two) = tokio::join!(chat_on(&prq, "sb-chat", &p1), chat_on(&prq, "sb-chat", &p2),);
    let mut lanes = vec![one.2, two.2];
    lanes.sort();
    assert_eq!((one.0, two.0), (200, 200));
    assert_eq!(lanes, [Some("sb#1".to_string()), Some("sb#2".to_string())]);
    assert!(prq.daemon_log().contains("cooled down"));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_waiting_for_cooldown_a_request_fails_at_once_with_the_time_left() {
    let mut c = config("serial", &[("sandbox", "solo", "a")]);
    c.push_str("\n[accounts]\nwait_for_cooldown = false\n");
    let prq = Prq::start(&c);

    let (status, body, _, retry_after) = chat_on(
        &prq,
        "solo-chat",
        "first\nsandbox: tokens=1 delay_ms=0 limit_account=a limit_s=30",
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let first = retry_after.expect("Retry-After");
    assert!((1..=30).contains(&first), "{first}");

    // The lane cools: the next request is refused before it is queued, saying when.
    let (status, body, lane, retry_after) =
        chat_on(&prq, "solo-chat", "second\nsandbox: tokens=1 delay_ms=0").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(lane, None, "never admitted");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("wait_for_cooldown"), "{message}");
    let second = retry_after.expect("Retry-After");
    assert!((1..=first).contains(&second), "{second} after {first}");
    assert_eq!(prq.lane("solo#1")["state"], "cooling");
}
