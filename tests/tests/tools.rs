//! Tool calling and structured output through a sandbox lane in real Chromium: the
//! declarations go into the prompt, the site's reply is read for calls in prq's format,
//! checked against the schemas, asked for again once when it is wrong, and handed to
//! the client in OpenAI's shapes (`supervisor/src/tools/`).

use prq_tests::{config, Prq, Streamed};
use serde_json::{json, Value};

fn sandbox(extra: &str) -> Prq {
    let c = config("serial", &[("sandbox", "sandbox", "a")]);
    Prq::start(&c.replacen(
        "start_timeout_s = 60\n",
        &format!("start_timeout_s = 60\n{extra}"),
        1,
    ))
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}},
    ])
}

/// POSTs `body` (with `model` set) to the chat endpoint.
async fn post(prq: &Prq, mut body: Value) -> reqwest::Response {
    body["model"] = json!("sandbox-chat");
    prq.http()
        .post(format!("{}/v1/chat/completions", prq.api))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn whole(prq: &Prq, body: Value) -> (u16, Option<String>, Value) {
    let r = post(prq, body).await;
    let status = r.status().as_u16();
    let note = r
        .headers()
        .get("x-prq-tool-error")
        .map(|v| v.to_str().unwrap().to_string());
    (status, note, r.json().await.unwrap())
}

async fn streamed(prq: &Prq, mut body: Value) -> Streamed {
    body["stream"] = json!(true);
    Streamed::read(post(prq, body).await).await
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// The calls of a stream, put together from their deltas: (id, name, arguments).
fn streamed_calls(s: &Streamed) -> Vec<(String, String, String)> {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for chunk in &s.chunks {
        for delta in chunk["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = delta["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                calls.push(Default::default());
            }
            let call = &mut calls[i];
            if let Some(id) = delta["id"].as_str() {
                call.0 = id.to_string();
            }
            if let Some(name) = delta["function"]["name"].as_str() {
                call.1 = name.to_string();
            }
            if let Some(args) = delta["function"]["arguments"].as_str() {
                call.2.push_str(args);
            }
        }
    }
    calls
}

#[tokio::test]
async fn a_tool_call_and_its_result_round_trip_through_a_real_browser() {
    let prq = sandbox("");
    let ask = r#"Weather in Paris?
sandbox: tokens=2 delay_ms=0 call=get_weather:{"city":"Paris"}"#;
    let (status, note, v) = whole(&prq, json!({"messages": user(ask), "tools": tools()})).await;
    assert_eq!((status, note), (200, None), "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], " lorem ipsum\n");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
    let id = call["id"].as_str().unwrap();
    assert!(id.starts_with("call_"), "{id}");
    assert!(
        v["usage"]["prompt_tokens"].as_u64().unwrap() > 50,
        "the declarations count"
    );
    let streams = prq.sandbox_streams().await;
    assert!(
        streams[0]["prompt_head"]
            .as_str()
            .unwrap()
            .starts_with("System: # Tools"),
        "{}",
        streams[0]
    );

    // The second turn: the call and its result go into the prompt; the sandbox answers
    // from the result (echoing it), as a model would.
    let history = json!([
        {"role": "user", "content": ask},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": "22 C and sunny"},
    ]);
    let (status, _, v) = whole(&prq, json!({"messages": history, "tools": tools()})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        answer.starts_with(
            "<tool_response name=\"get_weather\">\n22 C and sunny\n</tool_response> lorem ipsum"
        ),
        "{answer}"
    );

    // Streaming, two calls at once: text first, then each call's ID and name, then its
    // arguments.
    let ask = r#"sandbox: tokens=1 delay_ms=0 call=get_weather:{"city":"Oslo"} call=get_time:{"zone":"CET"}"#;
    let s = streamed(&prq, json!({"messages": user(ask), "tools": tools()})).await;
    assert_eq!(s.error, None);
    assert!(s.done);
    assert_eq!(s.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(s.answer, " lorem\n");
    let calls = streamed_calls(&s);
    assert_eq!(calls.len(), 2, "{:?}", s.chunks);
    assert_eq!(
        (calls[0].1.as_str(), calls[0].2.as_str()),
        ("get_weather", r#"{"city":"Oslo"}"#)
    );
    assert_eq!(
        (calls[1].1.as_str(), calls[1].2.as_str()),
        ("get_time", r#"{"zone":"CET"}"#)
    );
    assert!(calls[0].0.starts_with("call_") && calls[0].0 != calls[1].0);

    // Without parallel calls, only the first counts.
    let (_, _, v) = whole(
        &prq,
        json!({"messages": user(ask), "tools": tools(), "parallel_tool_calls": false}),
    )
    .await;
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // tool_choice none: no declarations are typed, and the answer is plain text.
    let plain = "Just talk\nsandbox: tokens=1 delay_ms=0";
    let (_, _, v) = whole(
        &prq,
        json!({"messages": user(plain), "tools": tools(), "tool_choice": "none"}),
    )
    .await;
    assert_eq!(
        v["choices"][0]["message"]["content"],
        format!("{plain} lorem")
    );
    let streams = prq.sandbox_streams().await;
    assert_eq!(streams.last().unwrap()["prompt_head"], plain);
}

#[tokio::test]
async fn a_wrong_reply_is_asked_for_again_once() {
    let prq = sandbox("");
    // A call that breaks its schema, then (asked again) a valid one.
    let ask = r#"sandbox: delay_ms=0 call_bad=get_weather:{"city":"Rome"}"#;
    let (status, note, v) = whole(&prq, json!({"messages": user(ask), "tools": tools()})).await;
    assert_eq!((status, note), (200, None), "{v}");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["arguments"], r#"{"city":"Rome"}"#);
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(
        prq.sandbox_streams().await.len(),
        2,
        "the reply and its retry"
    );

    let s = streamed(&prq, json!({"messages": user(ask), "tools": tools()})).await;
    assert_eq!(s.finish_reason.as_deref(), Some("tool_calls"));
    let calls = streamed_calls(&s);
    assert_eq!(calls.len(), 1, "only the valid call goes out");
    assert_eq!(calls[0].2, r#"{"city":"Rome"}"#);

    // A required call that does not come, also when asked again: an error with a code.
    let plain = "No tools for me\nsandbox: tokens=1 delay_ms=0";
    let named = json!({"type": "function", "function": {"name": "get_time"}});
    for choice in [json!("required"), named] {
        let before = prq.sandbox_streams().await.len();
        let (status, _, v) = whole(
            &prq,
            json!({"messages": user(plain), "tools": tools(), "tool_choice": choice}),
        )
        .await;
        assert_eq!(status, 502, "{v}");
        assert_eq!(v["error"]["code"], "tool_call_missing");
        assert_eq!(prq.sandbox_streams().await.len(), before + 2);
    }

    // Structured output: JSON that validates passes; JSON that does not is asked for
    // again and then passed on as text with the reason.
    let format = json!({"type": "json_schema", "json_schema": {"name": "point", "strict": true,
        "schema": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"],
            "additionalProperties": false}}});
    let ok = r#"sandbox: delay_ms=0 json={"x":1}"#;
    let (status, note, v) = whole(
        &prq,
        json!({"messages": user(ok), "response_format": format}),
    )
    .await;
    assert_eq!((status, note), (200, None), "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], r#"{"x":1}"#);
    let bad = r#"sandbox: delay_ms=0 json={"x":"one"}"#;
    let before = prq.sandbox_streams().await.len();
    let (status, note, v) = whole(
        &prq,
        json!({"messages": user(bad), "response_format": format}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], r#"{"x":"one"}"#);
    let note = note.expect("the x-prq-tool-error header");
    assert!(note.contains("point") && note.contains("/x"), "{note}");
    assert_eq!(prq.sandbox_streams().await.len(), before + 2);
}

#[tokio::test]
async fn with_no_retries_a_wrong_call_is_text_with_the_reason() {
    let prq = sandbox("tool_retries = 0\n");
    let ask = r#"sandbox: delay_ms=0 call_bad=get_weather:{"city":"Rome"}"#;
    let (status, note, v) = whole(&prq, json!({"messages": user(ask), "tools": tools()})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains(r#"{"city":["Rome"]}"#), "{content}");
    let note = note.expect("the x-prq-tool-error header");
    assert!(
        note.contains("get_weather") && note.contains("/city"),
        "{note}"
    );

    let s = streamed(&prq, json!({"messages": user(ask), "tools": tools()})).await;
    assert_eq!(s.finish_reason.as_deref(), Some("stop"));
    assert!(s.answer.contains("<tool_call>"), "{}", s.answer);
    assert!(streamed_calls(&s).is_empty());
    let last = s.chunks.last().unwrap();
    assert!(
        last["x_prq_tool_error"].as_str().unwrap().contains("/city"),
        "{last}"
    );
    assert_eq!(prq.sandbox_streams().await.len(), 2, "no retries");
}
