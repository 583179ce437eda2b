//! The OpenAI-compatible API on echo lanes: shapes, errors, routing.

use prq_protocol::script;
use prq_tests::{config, Prq};
use serde_json::{json, Value};

fn echo_lanes() -> Prq {
    Prq::start(&config(
        "concurrent",
        &[("echo", "a", "x"), ("echo", "b", "y")],
    ))
}

async fn post(prq: &Prq, path: &str, body: &str) -> (u16, Value) {
    let r = prq
        .http()
        .post(format!("{}{path}", prq.api))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn error_type(v: &Value) -> &str {
    v["error"]["type"].as_str().unwrap_or("<no error object>")
}

#[tokio::test]
async fn models_lists_exactly_the_routed_ids() {
    let prq = echo_lanes();
    let v: Value = prq.get_json("/v1/models").await;
    let mut ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "a-auto",
            "a-chat",
            "a-reasoner",
            "b-auto",
            "b-chat",
            "b-reasoner"
        ]
    );
    for id in ids {
        let (status, body) = prq.chat(id, "hi\nsandbox: tokens=1 delay_ms=0").await;
        assert_eq!(status, 200, "{id}: {body}");
        // One model, as the SDKs' `models.retrieve` asks for it.
        let one: Value = prq.get_json(&format!("/v1/models/{id}")).await;
        assert_eq!(
            one,
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["id"] == id)
                .unwrap()
                .clone()
        );
    }
    let r = prq
        .http()
        .get(format!("{}/v1/models/gpt-4o", prq.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("a-chat"));
}

#[tokio::test]
async fn every_request_gets_a_unique_id_header_and_object_id() {
    let prq = echo_lanes();
    let r1 = prq
        .chat_request("a-chat", "one\nsandbox: tokens=1 delay_ms=0", false)
        .await;
    let r2 = prq
        .chat_request("a-chat", "two\nsandbox: tokens=1 delay_ms=0", true)
        .await;
    let (id1, id2) = (
        prq_tests::request_id(&r1).unwrap(),
        prq_tests::request_id(&r2).unwrap(),
    );
    assert_ne!(id1, id2);
    let b1: Value = r1.json().await.unwrap();
    assert_eq!(b1["object"], "chat.completion");
    assert!(b1["created"].as_u64().unwrap() > 1_700_000_000);
    assert!(b1["id"].as_str().unwrap().contains(&id1.to_string()));
    let s2 = prq_tests::Streamed::read(r2).await;
    assert!(s2
        .chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert!(s2
        .chunks
        .iter()
        .all(|c| c["id"].as_str().unwrap().contains(&id2.to_string())));
}

#[tokio::test]
async fn usage_comes_when_asked_for_in_stream_options() {
    let prq = echo_lanes();
    let r = prq
        .http()
        .post(format!("{}/v1/chat/completions", prq.api))
        .json(
            &json!({"model": "a-chat", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "count\nsandbox: tokens=3 delay_ms=0"}]}),
        )
        .send()
        .await
        .unwrap();
    let s = prq_tests::Streamed::read(r).await;
    let usage = s
        .chunks
        .iter()
        .find(|c| c.get("usage").is_some())
        .expect("a usage chunk");
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert!(s.done);
}

#[tokio::test]
async fn content_parts_system_prompts_and_completions_work() {
    let prq = echo_lanes();
    let (status, v) = post(
        &prq,
        "/v1/chat/completions",
        &json!({"model": "b-chat", "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "sandbox: tokens=2 delay_ms=0"}]}
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (_, expected) = script::expected("part one\nsandbox: tokens=2 delay_ms=0", false).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], expected.as_str());

    let (status, v) = post(
        &prq,
        "/v1/completions",
        &json!({"model": "a-auto", "prompt": "complete me\nsandbox: tokens=2 delay_ms=0"})
            .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let (_, expected) =
        script::expected("complete me\nsandbox: tokens=2 delay_ms=0", false).unwrap();
    assert_eq!(v["choices"][0]["text"], expected.as_str());
}

#[tokio::test]
async fn bad_requests_get_openai_errors_with_the_right_status() {
    let prq = echo_lanes();
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "/v1/chat/completions",
            "{not json",
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"a-chat"}"#,
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"a-chat","messages":[]}"#,
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"a-chat","messages":"hi"}"#,
            400,
            "invalid_request_error",
        ),
        (
            "/v1/completions",
            r#"{"model":"a-chat"}"#,
            400,
            "invalid_request_error",
        ),
        ("/v1/nothing", "{}", 404, "invalid_request_error"),
    ];
    for (path, body, status, kind) in cases {
        let (got, v) = post(&prq, path, body).await;
        assert_eq!(got, *status, "{path} {body}: {v}");
        assert_eq!(error_type(&v), *kind, "{path} {body}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let (status, v) = post(
        &prq,
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("gpt-4o") && message.contains("a-chat") && message.contains("b-reasoner"),
        "{message}"
    );
    // And the daemon still serves a normal request.
    assert_eq!(
        prq.chat("a-chat", "still fine\nsandbox: tokens=1 delay_ms=0")
            .await
            .0,
        200
    );
}
