//! Nothing is lost: many requests with random cancels, stops and client disconnects,
//! then every client's outcome is checked against the queue's record of its request,
//! and every admitted request is counted exactly once in the metrics.

use std::sync::Arc;
use std::time::Duration;

use prq_tests::{config, eventually, request_id, Prq, Streamed};
use serde_json::{json, Value};

/// A small deterministic generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    None,
    Cancel(u64),
    Stop(u64),
    Disconnect(u64),
}

#[derive(Debug)]
struct Seen {
    id: u64,
    /// What the client was told: completed, cancelled, stopped, timed_out, failed — or
    /// `gone` when it left before the end.
    outcome: String,
}

fn outcome_of_error(e: &Value) -> String {
    match e["error"]["type"].as_str() {
        Some("request_cancelled") => "cancelled",
        Some("request_stopped") => "stopped",
        Some("timed_out") => "timed_out",
        _ => "failed",
    }
    .to_string()
}

async fn one(prq: Arc<Prq>, model: String, prompt: String, stream: bool, action: Action) -> Seen {
    let response = prq.chat_request(&model, &prompt, stream).await;
    let id = request_id(&response).expect("every admitted request has an ID");
    // Stops and half the disconnects wait for a lane to take the request first, so
    // they reach processing requests, not only pending ones.
    let taken = {
        let prq = prq.clone();
        move || async move {
            let _ = eventually(Duration::from_secs(30), || async {
                let r: Value = prq.get_json(&format!("/api/queue/{id}")).await;
                r["state"] != "pending"
            })
            .await;
        }
    };
    let act = |path: String, after: u64, wait_taken: bool| {
        let prq = prq.clone();
        let taken = taken.clone();
        tokio::spawn(async move {
            if wait_taken {
                taken().await;
            }
            tokio::time::sleep(Duration::from_millis(after)).await;
            // 409 (it had moved on) is an answer too; the record says what happened.
            let _ = prq.http().post(format!("{}{path}", prq.api)).send().await;
        })
    };
    match action {
        Action::Cancel(ms) => drop(act(format!("/api/queue/{id}/cancel"), ms, false)),
        Action::Stop(ms) => drop(act(format!("/api/queue/{id}/stop"), ms % 40, true)),
        Action::Disconnect(ms) => {
            if ms % 2 == 0 {
                taken().await;
            }
            tokio::time::sleep(Duration::from_millis(ms % 40)).await;
            drop(response);
            return Seen {
                id,
                outcome: "gone".into(),
            };
        }
        Action::None => {}
    }
    let outcome = if stream {
        let s = Streamed::read(response).await;
        assert!(s.done, "request {id}: every stream ends with [DONE]");
        match &s.error {
            Some(e) => outcome_of_error(e),
            None if s.finish_reason.as_deref() == Some("stop") => "completed".into(),
            None => panic!("request {id}: a stream ended with neither a finish nor an error"),
        }
    } else {
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON body");
        if status == 200 {
            assert_eq!(body["choices"][0]["finish_reason"], "stop");
            "completed".into()
        } else {
            outcome_of_error(&body)
        }
    };
    Seen { id, outcome }
}

async fn run(prq: Arc<Prq>, models: &[&str], n: usize, max_tokens: u64, seed: u64) {
    let mut rng = Rng(seed);
    let mut tasks = Vec::new();
    for i in 0..n {
        let model = models[rng.below(models.len() as u64) as usize].to_string();
        let tokens = 1 + rng.below(max_tokens);
        let delay = rng.below(6);
        let after = rng.below(150);
        let action = match rng.below(20) {
            0..=10 => Action::None,
            11..=13 => Action::Cancel(after),
            14..=16 => Action::Stop(after),
            _ => Action::Disconnect(after),
        };
        let stream = !matches!(action, Action::None) || rng.below(2) == 0;
        // A stop lands 0–40 ms after a lane takes the request: give those requests time
        // to still be generating then, so the stopped path is surely exercised.
        let (tokens, delay) = match action {
            Action::Stop(_) => (tokens.max(5), delay.max(20)),
            _ => (tokens, delay),
        };
        let prompt = format!("req {i}\nsandbox: tokens={tokens} delay_ms={delay}");
        tasks.push(tokio::spawn(one(
            prq.clone(),
            model,
            prompt,
            stream,
            action,
        )));
        if rng.below(4) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
        }
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.expect("client task"));
    }

    // Every request reaches exactly one terminal state, the one its client was told.
    eventually(Duration::from_secs(30), || async {
        let q: Value = prq.get_json("/api/queue").await;
        q["pending"] == 0 && q["processing"] == 0
    })
    .await
    .expect("the queue drains");
    let mut ids: Vec<u64> = seen.iter().map(|s| s.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "IDs are unique");
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for s in &seen {
        let r: Value = prq
            .http()
            .get(format!("{}/api/queue/{}", prq.api, s.id))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let state = r["state"].as_str().unwrap_or("missing").to_string();
        if s.outcome == "gone" {
            assert!(
                ["cancelled", "stopped", "completed"].contains(&state.as_str()),
                "request {} left by its client ended {state}",
                s.id
            );
        } else {
            assert_eq!(
                state, s.outcome,
                "request {}: the record and the client agree",
                s.id
            );
        }
        *tally.entry(format!("{}→{state}", s.outcome)).or_default() += 1;
    }
    println!("outcomes (client→record): {tally:?}");
    // The mix really exercised every path.
    for state in ["completed", "cancelled", "stopped"] {
        assert!(
            tally.keys().any(|k| k.ends_with(state)),
            "no request ended {state}: {tally:?}"
        );
    }

    let metrics = prq.metrics_text().await;
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("prq_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, n as u64, "each request counted once");
}

#[tokio::test(flavor = "multi_thread")]
async fn hundreds_over_echo_lanes_with_random_cancels_stops_and_disconnects() {
    let cfg = config("concurrent", &[("echo", "e1", "a"), ("echo", "e2", "b")]).replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\nmax_pending = 1000\n",
    );
    let prq = Arc::new(Prq::start(&cfg));
    run(
        prq,
        &["e1-chat", "e2-reasoner"],
        300,
        20,
        0x9e37_79b9_7f4a_7c15,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dozens_over_sandbox_lanes_in_chromium_with_random_cancels_stops_and_disconnects() {
    let prq = Arc::new(Prq::start(&config(
        "concurrent",
        &[("sandbox", "s1", "a"), ("sandbox", "s2", "b")],
    )));
    run(
        prq.clone(),
        &["s1-chat", "s2-chat"],
        36,
        8,
        0x2545_f491_4f6c_dd1d,
    )
    .await;
    // The site agrees: nothing is still streaming.
    let streams = prq.sandbox_streams().await;
    assert!(
        streams.iter().all(|s| s["outcome"] != "streaming"),
        "{:?}",
        json!(streams)
    );
}
