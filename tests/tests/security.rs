//! Bad input, access control and logs: hostile requests get clear errors and the daemon
//! goes on; keys and the admin login guard what they should; no secret or prompt text
//! reaches the logs.

use prq_tests::{config, Prq};
use serde_json::{json, Value};

fn limited() -> Prq {
    let cfg = config("concurrent", &[("echo", "a", "x"), ("echo", "b", "y")]).replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\n[limits]\nmax_body_bytes = 65536\nmax_messages = 8\nmax_prompt_chars = 10000\n",
    );
    Prq::start(&cfg)
}

/// Status, JSON body (null when none) and headers of a response.
type Reply = (u16, Value, reqwest::header::HeaderMap);

async fn send(
    prq: &Prq,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Reply {
    let mut req = prq
        .http()
        .request(method.parse().unwrap(), format!("{}{path}", prq.api))
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

#[tokio::test]
async fn hostile_requests_get_clear_errors_and_the_daemon_goes_on() {
    let prq = limited();
    let user = |content: Value| json!({"model": "a-chat", "messages": [{"role": "user", "content": content}]});
    let chat = "/v1/chat/completions";
    let json_ct = Some("application/json");
    let s = |v: Value| v.to_string().into_bytes();
    let big_model = "m".repeat(50_000);
    let many: Vec<Value> = (0..9)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    // (name, method, path, content type, body, expected status)
    type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        ("not JSON", "POST", chat, json_ct, b"{".to_vec(), 400),
        ("a JSON array", "POST", chat, json_ct, b"[]".to_vec(), 400),
        ("JSON null", "POST", chat, json_ct, b"null".to_vec(), 400),
        (
            "model is a number",
            "POST",
            chat,
            json_ct,
            s(json!({"model": 5, "messages": [{"role": "user", "content": "x"}]})),
            400,
        ),
        (
            "messages is a string",
            "POST",
            chat,
            json_ct,
            s(json!({"model": "a-chat", "messages": "hi"})),
            400,
        ),
        (
            "no messages",
            "POST",
            chat,
            json_ct,
            s(json!({"model": "a-chat"})),
            400,
        ),
        (
            "empty messages",
            "POST",
            chat,
            json_ct,
            s(json!({"model": "a-chat", "messages": []})),
            400,
        ),
        (
            "message without role",
            "POST",
            chat,
            json_ct,
            s(json!({"model": "a-chat", "messages": [{"content": "x"}]})),
            400,
        ),
        (
            "unknown role",
            "POST",
            chat,
            json_ct,
            s(json!({"model": "a-chat", "messages": [{"role": "wizard", "content": "x"}]})),
            400,
        ),
        (
            "content is a number",
            "POST",
            chat,
            json_ct,
            s(user(json!(42))),
            400,
        ),
        (
            "image part",
            "POST",
            chat,
            json_ct,
            s(user(
                json!([{"type": "image_url", "image_url": {"url": "x"}}]),
            )),
            400,
        ),
        (
            "text part without text",
            "POST",
            chat,
            json_ct,
            s(user(json!([{"type": "text"}]))),
            400,
        ),
        (
            "no user message",
            "POST",
            chat,
            json_ct,
            s(json!({"model": "a-chat", "messages": [{"role": "system", "content": "x"}]})),
            400,
        ),
        (
            "unknown model",
            "POST",
            chat,
            json_ct,
            s(json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})),
            404,
        ),
        (
            "empty model",
            "POST",
            chat,
            json_ct,
            s(json!({"model": "", "messages": [{"role": "user", "content": "x"}]})),
            400,
        ),
        (
            "huge model name",
            "POST",
            chat,
            json_ct,
            s(json!({"model": big_model, "messages": [{"role": "user", "content": "x"}]})),
            404,
        ),
        (
            "n = 2",
            "POST",
            chat,
            json_ct,
            s(json!({"model": "a-chat", "n": 2, "messages": [{"role": "user", "content": "x"}]})),
            400,
        ),
        (
            "negative max_tokens",
            "POST",
            chat,
            json_ct,
            s(
                json!({"model": "a-chat", "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]}),
            ),
            400,
        ),
        (
            "absurd max_tokens",
            "POST",
            chat,
            json_ct,
            s(
                json!({"model": "a-chat", "max_tokens": 1_000_000_000_000u64, "messages": [{"role": "user", "content": "x"}]}),
            ),
            400,
        ),
        (
            "max_tokens as text",
            "POST",
            chat,
            json_ct,
            s(
                json!({"model": "a-chat", "max_tokens": "lots", "messages": [{"role": "user", "content": "x"}]}),
            ),
            400,
        ),
        (
            "stream as text",
            "POST",
            chat,
            json_ct,
            s(
                json!({"model": "a-chat", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}),
            ),
            400,
        ),
        (
            "invalid UTF-8",
            "POST",
            chat,
            json_ct,
            b"{\"model\":\"a-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"
                .to_vec(),
            400,
        ),
        (
            "wrong content type",
            "POST",
            chat,
            Some("text/plain"),
            s(user(json!("x"))),
            415,
        ),
        (
            "body over the limit",
            "POST",
            chat,
            json_ct,
            s(user(json!("x".repeat(70_000)))),
            413,
        ),
        (
            "too many messages",
            "POST",
            chat,
            json_ct,
            s(json!({"model": "a-chat", "messages": many})),
            400,
        ),
        (
            "prompt over the limit",
            "POST",
            chat,
            json_ct,
            s(user(json!("y".repeat(20_000)))),
            400,
        ),
        (
            "deeply nested JSON",
            "POST",
            chat,
            json_ct,
            nested.into_bytes(),
            400,
        ),
        (
            "two prompts",
            "POST",
            "/v1/completions",
            json_ct,
            s(json!({"model": "a-chat", "prompt": ["a", "b"]})),
            400,
        ),
        (
            "empty prompt",
            "POST",
            "/v1/completions",
            json_ct,
            s(json!({"model": "a-chat", "prompt": ""})),
            400,
        ),
        (
            "negative queue ID",
            "POST",
            "/api/queue/-1/cancel",
            None,
            vec![],
            400,
        ),
        (
            "queue ID past u64",
            "POST",
            "/api/queue/18446744073709551616/stop",
            None,
            vec![],
            400,
        ),
        (
            "NUL in a queue ID",
            "POST",
            "/api/queue/%00/cancel",
            None,
            vec![],
            400,
        ),
        (
            "command in a queue ID",
            "POST",
            "/api/queue/1;rm%20-rf/stop",
            None,
            vec![],
            400,
        ),
        (
            "unknown queue ID",
            "POST",
            "/api/queue/424242/stop",
            None,
            vec![],
            404,
        ),
        ("GET on a POST endpoint", "GET", chat, None, vec![], 405),
        (
            "unknown endpoint",
            "POST",
            "/v1/engines/davinci",
            json_ct,
            vec![],
            404,
        ),
    ];
    assert!(cases.len() >= 30);
    for (name, method, path, ct, body, want) in cases {
        let (status, body, _) = send(&prq, method, path, ct, body).await;
        assert_eq!(status, want, "{name}: {body}");
        if status != 405 {
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                !message.is_empty(),
                "{name}: an OpenAI error object with a message: {body}"
            );
            assert!(body["error"]["type"].is_string(), "{name}: {body}");
            assert!(
                message.len() < 1000,
                "{name}: a short message, not an echo of the input"
            );
        }
    }
    // A model ID with a header break does not reach the response headers.
    let (status, _, headers) = send(
        &prq,
        "POST",
        chat,
        json_ct,
        s(json!({"model": "a-chat\r\nX-Injected: 1", "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert_eq!(status, 404);
    assert!(headers.get("x-injected").is_none());
    // And after all that, a normal request is served.
    let (status, body) = prq
        .chat("a-chat", "still here\nsandbox: tokens=2 delay_ms=0")
        .await;
    assert_eq!(status, 200, "{body}");
}

fn guarded() -> Prq {
    let cfg = config("concurrent", &[("echo", "a", "x"), ("echo", "b", "y")]).replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\nadmin_key = \"admin-secret-1\"\n[[keys]]\nname = \"tavern\"\nkey = \"sk-tavern-2\"\n",
    );
    Prq::start(&cfg)
}

/// Every route the API serves and who may call it. A new route must be added here,
/// with its access level, or this test fails: no route is open by accident.
#[tokio::test]
async fn every_route_has_a_deliberate_access_level_and_keeps_to_it() {
    use prq::api::Access::{self, Admin, Client, Public, Session};
    let expected: Vec<(&str, Access)> = vec![
        ("/healthz", Public),
        ("/readyz", Public),
        ("/v1/models", Client),
        ("/v1/models/{model}", Client),
        ("/v1/chat/completions", Client),
        ("/v1/completions", Client),
        ("/api/queue", Admin),
        ("/api/queue/events", Admin),
        ("/api/queue/stop-all", Admin),
        ("/api/queue/clear", Admin),
        ("/api/queue/{id}", Admin),
        ("/api/queue/{id}/cancel", Admin),
        ("/api/queue/{id}/stop", Admin),
        ("/api/status", Admin),
        ("/api/lanes/{lane}/view", Admin),
        ("/api/lanes/{lane}/view/input", Admin),
        ("/metrics", Admin),
        ("/api/login", Session),
        ("/api/logout", Session),
        ("/", Public),
        ("/panel", Public),
        ("/panel/panel.css", Public),
        ("/panel/panel.js", Public),
        ("/panel/login", Public),
        ("/panel/login.js", Public),
    ];
    let mut served = prq::api::access_table();
    let mut listed = expected.clone();
    served.sort();
    listed.sort();
    assert_eq!(served, listed, "the routes served and their access levels");

    // And each level holds, on the running daemon, for a client with no credentials.
    let prq = guarded();
    for (path, access) in expected {
        let path = path
            .replace("{id}", "1")
            .replace("{model}", "a-chat")
            .replace("{lane}", "a%231");
        let url = format!("{}{path}", prq.api);
        for method in ["GET", "POST"] {
            let r = prq
                .http()
                .request(method.parse().unwrap(), &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let what = format!("{method} {path} ({access:?}): {status} {body}");
            match access {
                // 405 for the method a route does not serve; else answered.
                Public => assert!(status == 405 || status < 400, "{what}"),
                Client => assert_eq!((status, code.as_str()), (401, "invalid_api_key"), "{what}"),
                Admin => assert!(
                    (status, code.as_str()) == (401, "admin_required") || status == 405,
                    "{what}"
                ),
                // Open (a wrong key is told so), but not to another site's page.
                Session if method == "POST" => {
                    assert_ne!(code, "admin_required", "{what}");
                    let cross = prq
                        .http()
                        .post(&url)
                        .header("origin", "https://evil.example")
                        .json(&json!({"key": "admin-secret-1"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(cross.status(), 403, "a cross-site {what}");
                }
                Session => assert_eq!(status, 405, "{what}"),
            }
        }
    }
}

#[tokio::test]
async fn api_keys_guard_v1_and_the_key_name_is_what_the_queue_shows() {
    let prq = guarded();
    let url = format!("{}/v1/chat/completions", prq.api);
    let body = json!({"model": "a-chat", "messages": [{"role": "user", "content": "hi\nsandbox: tokens=1 delay_ms=0"}]});
    let r = prq.http().post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let r = prq
        .http()
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = prq
        .http()
        .post(&url)
        .bearer_auth("sk-tavern-2")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = prq_tests::request_id(&r).unwrap();
    let r = prq
        .http()
        .get(format!("{}/api/queue/{id}", prq.api))
        .bearer_auth("admin-secret-1")
        .send()
        .await
        .unwrap();
    let record: Value = r.json().await.unwrap();
    assert_eq!(record["client"], "tavern");
    assert!(!record.to_string().contains("sk-tavern-2"));
}

#[tokio::test]
async fn the_queue_api_needs_the_admin_login_and_refuses_cross_site_posts() {
    let prq = guarded();
    let queue = format!("{}/api/queue", prq.api);
    assert_eq!(prq.http().get(&queue).send().await.unwrap().status(), 401);
    assert_eq!(
        prq.http()
            .get(format!("{}/metrics", prq.api))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let login = format!("{}/api/login", prq.api);
    let r = prq
        .http()
        .post(&login)
        .json(&json!({"key": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = prq
        .http()
        .post(&login)
        .json(&json!({"key": "admin-secret-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let r = prq
        .http()
        .get(&queue)
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A POST from another site's page is refused even with the session.
    let r = prq
        .http()
        .post(format!("{queue}/clear"))
        .header("cookie", &session)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = prq
        .http()
        .post(format!("{queue}/clear"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Queue actions are POST only.
    assert_eq!(
        prq.http()
            .get(format!("{queue}/clear"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test]
async fn an_address_outside_the_allow_list_is_refused() {
    let cfg = config("concurrent", &[("echo", "a", "x"), ("echo", "b", "y")]).replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\nallow = [\"10.0.0.0/8\"]\n",
    );
    let prq = Prq::start(&cfg);
    let r = prq
        .http()
        .get(format!("{}/v1/models", prq.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("127.0.0.1"));
}

#[test]
fn listening_beyond_loopback_without_a_key_is_refused_with_the_fix() {
    let cfg = config("concurrent", &[("echo", "a", "x")]).replace("127.0.0.1:0", "0.0.0.0:0");
    let prq = Prq::new(&cfg);
    let out = prq.cli(&["start", "--config", prq.config_path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[[keys]]") && err.contains("0.0.0.0"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_prompt_answer_or_key_reaches_the_logs() {
    no_prompt_answer_or_key_reaches_logs_written_as("text").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_prompt_answer_or_key_reaches_the_json_logs() {
    no_prompt_answer_or_key_reaches_logs_written_as("json").await;
}

async fn no_prompt_answer_or_key_reaches_logs_written_as(format: &str) {
    let cfg = config("concurrent", &[("sandbox", "s", "a"), ("echo", "e", "b")]).replace(
        "start_timeout_s = 60\n",
        &format!("start_timeout_s = 60\nadmin_key = \"admin-LOGCHECK-7\"\n[logs]\nformat = \"{format}\"\n[[keys]]\nname = \"client-one\"\nkey = \"sk-LOGCHECK-9\"\n"),
    );
    let prq = Prq::start(&cfg);
    let prompt = "PROMPT-LOGCHECK-3 please\nsandbox: tokens=5 delay_ms=0";
    for model in ["s-reasoner", "e-chat"] {
        let r = prq
            .http()
            .post(format!("{}/v1/chat/completions", prq.api))
            .bearer_auth("sk-LOGCHECK-9")
            .json(&json!({"model": model, "stream": true, "messages": [{"role": "user", "content": prompt}]}))
            .send()
            .await
            .unwrap();
        let s = prq_tests::Streamed::read(r).await;
        assert!(
            s.answer.contains("PROMPT-LOGCHECK-3"),
            "the answer echoes the prompt"
        );
    }
    let r = prq
        .http()
        .post(format!("{}/api/login", prq.api))
        .json(&json!({"key": "admin-LOGCHECK-7"}))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let token = cookie.split('=').nth(1).unwrap().to_string();
    prq.http()
        .get(format!("{}/api/queue", prq.api))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    prq.stop();
    let mut logs = String::new();
    for entry in std::fs::read_dir(prq.home().join("logs")).unwrap() {
        logs.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert!(
        logs.contains("client-one") || logs.contains("admitted"),
        "the logs are not empty"
    );
    for secret in [
        "PROMPT-LOGCHECK",
        "sk-LOGCHECK-9",
        "admin-LOGCHECK-7",
        token.as_str(),
        "lorem ipsum",
    ] {
        assert!(!logs.contains(secret), "{secret:?} is in the logs");
    }
}

#[tokio::test]
async fn one_client_may_not_hold_more_than_its_share_of_the_queue() {
    let cfg = config("concurrent", &[("echo", "a", "x"), ("echo", "b", "y")]).replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\n[limits]\nmax_concurrent_per_client = 2\n[[keys]]\nname = \"greedy\"\nkey = \"sk-greedy\"\n[[keys]]\nname = \"polite\"\nkey = \"sk-polite\"\n",
    );
    let prq = Prq::start(&cfg);
    let url = format!("{}/v1/chat/completions", prq.api);
    let hang = json!({"model": "a-chat", "stream": true, "messages": [{"role": "user", "content": "hold\nsandbox: hang_at=0"}]});
    let held1 = prq
        .http()
        .post(&url)
        .bearer_auth("sk-greedy")
        .json(&hang)
        .send()
        .await
        .unwrap();
    let held2 = prq
        .http()
        .post(&url)
        .bearer_auth("sk-greedy")
        .json(&hang)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (held1.status().as_u16(), held2.status().as_u16()),
        (200, 200)
    );
    let third = prq
        .http()
        .post(&url)
        .bearer_auth("sk-greedy")
        .json(&hang)
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    let v: Value = third.json().await.unwrap();
    assert_eq!(v["error"]["code"], "client_busy");
    // Another key is not held up by it.
    let quick = json!({"model": "b-chat", "messages": [{"role": "user", "content": "hi\nsandbox: tokens=1 delay_ms=0"}]});
    let other = prq
        .http()
        .post(&url)
        .bearer_auth("sk-polite")
        .json(&quick)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    // When one of its requests ends, the client may send again.
    drop(held1);
    prq_tests::eventually(std::time::Duration::from_secs(5), || async {
        prq.http()
            .post(&url)
            .bearer_auth("sk-greedy")
            .json(&quick)
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await
    .unwrap();
}

#[test]
fn a_process_prq_did_not_start_cannot_talk_on_the_lanes_socket() {
    use std::io::{Read, Write};
    let prq = Prq::start(&config(
        "concurrent",
        &[("echo", "a", "x"), ("echo", "b", "y")],
    ));
    let mut sock = std::os::unix::net::UnixStream::connect(prq.home().join("run/lanes.sock"))
        .expect("the socket accepts connections");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    // A well-formed-looking frame: it must not even be read as a hello.
    let _ = sock.write_all(&[0, 0, 0, 4, 2, 0, 1, 0]);
    let mut reply = Vec::new();
    // Closed with nothing written back (a reset, when our bytes were left unread).
    let read = sock.read_to_end(&mut reply);
    let closed = matches!(&read, Ok(0))
        || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(
        closed && reply.is_empty(),
        "dropped without an answer: {read:?} {reply:?}"
    );
    assert!(
        prq_tests::wait_until(std::time::Duration::from_secs(5), || prq
            .daemon_log()
            .contains("did not start as a worker")),
        "{}",
        prq.daemon_log()
    );
    // The daemon goes on.
    assert_eq!(prq.status()["runtime"]["state"], "running");
}
