//! The page's own controls per request, end to end in Chromium against the sandbox
//! site: its model picker (a switch that takes a moment and renders the picker anew),
//! its search switch and temperature field (the answer's header lines say what the page
//! sent: `sandbox: controls`), the `[[search]]`/`[[think]]` macros, and
//! `after_reply = "delete" | "temporary"` against the site's list of chats.

use std::time::Duration;

use prq_tests::Prq;
use serde_json::{json, Value};

const LISTEN: &str = "listen = \"127.0.0.1:0\"\nmode = \"concurrent\"\nstart_timeout_s = 60\n";

/// A sandbox lane `s` (account `a`) with `extra` lines in its table.
fn sandbox_lane(extra: &str) -> Prq {
    Prq::start(&format!(
        "{LISTEN}\n[[lanes]]\nprovider = \"sandbox\"\nprefix = \"s\"\naccount = \"a\"\n{extra}\n"
    ))
}

/// The answer's header lines as the page reported them.
fn header(model: &str, search: bool, temperature: &str) -> String {
    let search = if search { "on" } else { "off" };
    format!("model: {model}\nsearch: {search}\ntemperature: {temperature}\n")
}

/// A chat with one user message and extra request fields: (status, body).
async fn chat_with(prq: &Prq, model: &str, prompt: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let r = prq
        .http()
        .post(format!("{}/v1/chat/completions", prq.api))
        .json(&body)
        .send()
        .await
        .expect("POST /v1/chat/completions");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {body}"))
}

/// The chats the sandbox keeps for `account`.
async fn chats(prq: &Prq, account: &str) -> Vec<Value> {
    let url = format!("{}/api/chats?account={account}", prq.sandbox_url());
    let v: Value = prq
        .http()
        .get(url)
        .send()
        .await
        .expect("GET /api/chats")
        .json()
        .await
        .expect("chats JSON");
    v["chats"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_combination_of_model_search_and_thinking_is_set_in_the_page() {
    let prq = sandbox_lane("[lanes.models]\nvision = \"Vision\"");
    let models: Vec<String> = prq.get_json("/v1/models").await["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    for id in [
        "s-swift",
        "s-deep-search",
        "s-vision",
        "s-vision-search",
        "s-chat-search",
    ] {
        assert!(models.iter().any(|m| m == id), "{id} in {models:?}");
    }

    // The page starts on Swift; a request without a site model leaves the picker as it is.
    let mut picked = "Swift";
    for (suffix, model) in [
        ("", None),
        ("-deep", Some("Deep")),
        ("-vision", Some("Vision")),
        ("-swift", Some("Swift")),
    ] {
        for search in [false, true] {
            for think in [false, true] {
                // Thinking from the ID where it can say it, else from a macro; search
                // from the ID's suffix or a macro, by turns.
                let (body, think_macro) = match (suffix, think) {
                    ("", false) => ("chat".to_string(), ""),
                    ("", true) => ("reasoner".to_string(), ""),
                    (s, false) => (s[1..].to_string(), "[[nothink]] "),
                    (s, true) => (s[1..].to_string(), "[[think]] "),
                };
                let (id_search, search_macro) = match (search, think) {
                    (true, false) => ("-search", ""),
                    (true, true) => ("", "\n[[search]]"),
                    (false, _) => ("", "[[nosearch]]"),
                };
                let id = format!("s-{body}{id_search}");
                let asked = "Which controls?\nsandbox: controls tokens=1 delay_ms=0";
                let prompt = format!("{think_macro}{asked}{search_macro}");
                let (status, reply) = chat_with(&prq, &id, &prompt, json!({})).await;
                assert_eq!(status, 200, "{id} {prompt:?}: {reply}");
                picked = model.unwrap_or(picked);
                let want = format!("{}{asked} lorem", header(picked, search, "1"));
                assert_eq!(content(&reply), want, "{id} {prompt:?}");
                let reasoning = reply["choices"][0]["message"]["reasoning_content"].as_str();
                assert_eq!(reasoning.is_some(), think, "{id} {prompt:?}: {reply}");
            }
        }
    }
    // A Google-search tool, as clients written for Gemini send it, turns search on too.
    let asked = "Grounded?\nsandbox: controls tokens=1 delay_ms=0";
    let tools = json!({"tools": [{"googleSearch": {}}]});
    let (status, reply) = chat_with(&prq, "s-chat", asked, tools).await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        content(&reply).starts_with(&header("Swift", true, "1")),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_the_page_does_not_offer_fails_naming_the_ones_it_does() {
    let prq = sandbox_lane("[lanes.models]\nghost = \"Ghost\"");
    let prompt = "hi\nsandbox: controls tokens=1 delay_ms=0";
    let (status, body) = prq.chat("s-ghost", prompt).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "model_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for offered in [
        "\"Swift\"",
        "\"Deep\"",
        "\"Vision\"",
        "\"Ghost\"",
        "[lanes.models]",
    ] {
        assert!(message.contains(offered), "{offered} in {message}");
    }
    // The picker was left closed, and the lane serves the next request.
    let (status, body) = prq.chat("s-deep", prompt).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content(&body).starts_with(&header("Deep", false, "1")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_are_set_for_a_request_and_the_sites_default_restored_after() {
    let prq = sandbox_lane("");
    let asked = "Warm?\nsandbox: controls tokens=1 delay_ms=0";
    let (status, body) = chat_with(
        &prq,
        "s-chat",
        asked,
        json!({"temperature": 0.3, "top_p": 0.5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content(&body).starts_with(&header("Swift", false, "0.3")),
        "{body}"
    );
    let (status, body) = chat_with(&prq, "s-chat", asked, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content(&body).starts_with(&header("Swift", false, "1")),
        "restored: {body}"
    );
    let (_, body) = chat_with(&prq, "s-chat", asked, json!({"temperature": 1.7})).await;
    assert!(
        content(&body).starts_with(&header("Swift", false, "1.7")),
        "{body}"
    );
    // top_p has no field on this page: accepted, ignored, said once in the lane's log.
    let (status, _) = chat_with(&prq, "s-chat", asked, json!({"top_p": 0.2})).await;
    assert_eq!(status, 200);
    let log = std::fs::read_to_string(prq.home().join("logs/s-1.log")).unwrap_or_default();
    assert_eq!(log.matches("asked for top_p").count(), 1, "{log}");
}

/// Sends a streamed request that answers slowly, stops it once it streams, and waits
/// for its end.
async fn stopped_request(prq: &Prq, model: &str, n: usize) {
    let prompt = format!("stop me {n}\nsandbox: tokens=500 delay_ms=30");
    let response = prq.chat_request(model, &prompt, true);
    let read = async {
        let r = response.await;
        prq_tests::Streamed::read(r).await
    };
    let stop = async {
        let id = prq.first_live("processing").await;
        prq.until_state(id, "processing").await;
        let (status, body) = prq.post(&format!("/api/queue/{id}/stop")).await;
        assert_eq!(status, 200, "{body}");
    };
    let (streamed, ()) = tokio::join!(read, stop);
    assert_eq!(streamed.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_leaves_no_chats_after_20_requests_stopped_ones_too_and_touches_no_other() {
    let prq = Prq::start(&format!(
        "{LISTEN}
[[lanes]]
provider = \"sandbox\"
prefix = \"d\"
account = \"a\"
after_reply = \"delete\"

[[lanes]]
provider = \"sandbox\"
prefix = \"k\"
account = \"b\"

[[lanes]]
provider = \"sandbox\"
prefix = \"t\"
account = \"c\"
after_reply = \"temporary\"
"
    ));
    // A chat of another account (a lane that keeps its chats) is not prq's to delete here.
    let (status, _) = prq
        .chat("k-chat", "kept\nsandbox: tokens=1 delay_ms=0")
        .await;
    assert_eq!(status, 200);
    for n in 0..20 {
        if n % 4 == 3 {
            stopped_request(&prq, "d-chat", n).await;
        } else {
            let prompt = format!("request {n}\nsandbox: tokens=3 delay_ms=0");
            let (status, body) = prq.chat("d-chat", &prompt).await;
            assert_eq!(status, 200, "{body}");
        }
    }
    assert_eq!(chats(&prq, "a").await, Vec::<Value>::new());
    assert_eq!(chats(&prq, "b").await.len(), 1);
    let lane = prq.lane("d#1");
    assert_eq!(lane["chats"], json!({"deleted": 20, "failed": 0}), "{lane}");
    assert_eq!(lane["after_reply"], "delete");

    // A temporary chat is never kept.
    for n in 0..2 {
        let (status, body) = prq
            .chat("t-chat", &format!("temp {n}\nsandbox: tokens=1 delay_ms=0"))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(chats(&prq, "c").await, Vec::<Value>::new());

    let out = prq.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("after_reply = delete: 20 chat(s) deleted, 0 delete(s) failed"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_the_site_refuses_is_counted_and_logged_not_the_clients_error() {
    let prq = sandbox_lane("after_reply = \"delete\"");
    let prompt = "keep me\nsandbox: delete_fails tokens=2 delay_ms=0";
    let (status, body) = prq.chat("s-chat", prompt).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        content(&body),
        "keep me\nsandbox: delete_fails tokens=2 delay_ms=0 lorem ipsum"
    );
    assert_eq!(chats(&prq, "a").await.len(), 1);
    let (status, _) = prq
        .chat("s-chat", "gone\nsandbox: tokens=1 delay_ms=0")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        chats(&prq, "a").await.len(),
        1,
        "only the refused one stays"
    );
    let lane = prq.lane("s#1");
    assert_eq!(lane["chats"], json!({"deleted": 1, "failed": 1}), "{lane}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = std::fs::read_to_string(prq.home().join("logs/s-1.log")).unwrap_or_default();
    assert!(log.contains("was not deleted"), "{log}");
}
