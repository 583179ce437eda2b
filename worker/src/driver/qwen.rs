//! QwenLM (chat.qwen.ai).
//!
//! Known (FIELD-NOTES): the answer streams from `POST /api/v2/chat/completions` as
//! Server-Sent Events.
//!
//! Assumed, from public clients of the site rather than the live site: each event's
//! `data` is `{"choices": [{"delta": {"content", "phase", "status"}}]}` after a first
//! `{"response.created": {...}}`; `phase` `think` carries reasoning and `answer` (or no
//! phase) the answer, `thinking_summary` repeats the reasoning in short and is skipped;
//! the answer ends with a delta of `status` `finished` in the answer phase, or with
//! `data: [DONE]`; a failure comes as `{"error": {"code", "details"}}` in the stream or
//! as one JSON document (`{"success": false, "data": {"code", "details"}}`, or a bare
//! `{"code"}`) instead of it, with the codes below. Every selector below (the site is
//! built on Open WebUI, whose ids they follow).

use prq_protocol::worker::FailureKind;
use serde_json::Value;

use super::format::{kind_from_words, Event, SseBody, StreamParser};
use super::selectors::Defaults;
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = "qwen";

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://chat.qwen.ai/"),
    stream: UrlPattern::post("/api/v2/chat/completions"),
    selectors: Defaults {
        prompt: "textarea#chat-input",
        send: "button#send-message-button",
        stop: Some("button#stop-message-button"),
        thinking_toggle: Some("button.chat-input-feature-btn.thinking"),
        thinking_on: Some("button.chat-input-feature-btn.thinking.active"),
        logged_out: Some("button#sidebar-login-btn, form input[type=\"password\"]"),
    },
    new_chat: NewChat::Reload,
    parser: || Box::<Parser>::default(),
};

/// Error codes and what they mean (assumed, see the module doc).
const CODES: [(&str, FailureKind); 6] = [
    ("RateLimited", FailureKind::RateLimited),
    // Its risk control, which throttles a busy account.
    ("FAIL_SYS_USER_VALIDATE", FailureKind::RateLimited),
    ("Unauthorized", FailureKind::NotLoggedIn),
    ("TokenExpired", FailureKind::NotLoggedIn),
    ("DataInspectionFailed", FailureKind::ContentFiltered),
    ("inappropriate_content", FailureKind::ContentFiltered),
];

#[derive(Default)]
struct Parser {
    body: SseBody,
}

impl StreamParser for Parser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        self.body.push(bytes);
        while let Some(event) = self.body.next_event() {
            if event.data == "[DONE]" {
                out.push(Event::Done);
                continue;
            }
            let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
                out.push(Event::failed(
                    FailureKind::SiteChanged,
                    format!("{NAME}: an event of its stream is not JSON"),
                ));
                continue;
            };
            if !message["error"].is_null() {
                out.push(refusal(&message["error"]));
                continue;
            }
            let delta = &message["choices"][0]["delta"];
            let phase = delta["phase"].as_str();
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                match phase {
                    Some("think") => out.push(Event::Reasoning(text.to_owned())),
                    Some("answer") | None => out.push(Event::Answer(text.to_owned())),
                    _ => {}
                }
            }
            if delta["status"] == "finished" && matches!(phase, Some("answer") | None) {
                out.push(Event::Done);
            }
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        if let Some(document) = self.body.plain_json() {
            let error = match &document["data"] {
                data if data.is_object() => data,
                _ => &document,
            };
            out.push(refusal(error));
        }
    }
}

/// An error object's failure: by its code when known, else by its words.
fn refusal(error: &Value) -> Event {
    let code = error["code"].as_str().unwrap_or("");
    let details = error["details"]
        .as_str()
        .or(error["message"].as_str())
        .unwrap_or("");
    let kind = CODES
        .iter()
        .find(|(known, _)| *known == code)
        .map(|(_, kind)| *kind)
        .or_else(|| kind_from_words(&format!("{code} {details}")))
        .unwrap_or(FailureKind::SiteError);
    Event::failed(kind, format!("{NAME} says: {details} ({code})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::format::testing::{
        answer, assert_every_split, kind_of, parse_whole, reasoning,
    };

    fn delta(delta: &str) -> String {
        format!("data: {{\"choices\":[{{\"delta\":{delta}}}]}}\n\n")
    }

    #[test]
    fn think_then_answer_then_finished_at_every_split() {
        let body = [
            "data: {\"response.created\":{\"chat_id\":\"c\",\"response_id\":\"r\"}}\n\n".to_owned(),
            delta(r#"{"role":"assistant","content":"Hmm, ","phase":"think","status":"typing"}"#),
            delta(r#"{"content":"é…","phase":"think","status":"typing"}"#),
            delta(r#"{"content":"","phase":"think","status":"finished"}"#),
            delta(r#"{"content":"a summary","phase":"thinking_summary"}"#),
            delta(r#"{"content":"日本","phase":"answer","status":"typing"}"#),
            delta(r#"{"content":" 🎉","phase":"answer","status":"typing"}"#),
            delta(r#"{"content":"","phase":"answer","status":"finished"}"#),
        ]
        .concat();
        let want = [reasoning("Hmm, é…"), answer("日本 🎉"), Event::Done];
        assert_every_split(&SITE, body.as_bytes(), &want);
    }

    #[test]
    fn the_older_done_marker() {
        let body = delta(r#"{"content":"hi"}"#) + "data: [DONE]\n\n";
        assert_eq!(parse_whole(&SITE, &body), vec![answer("hi"), Event::Done]);
    }

    #[test]
    fn errors_by_code_in_the_stream_and_instead_of_it() {
        let body = "data: {\"error\":{\"code\":\"RateLimited\",\"details\":\"You have reached the limit\"}}\n\n";
        assert_eq!(
            kind_of(&parse_whole(&SITE, body)[0]),
            FailureKind::RateLimited
        );
        let body = "data: {\"error\":{\"code\":\"DataInspectionFailed\",\"details\":\"Input data may contain inappropriate content.\"}}\n\n";
        assert_eq!(
            kind_of(&parse_whole(&SITE, body)[0]),
            FailureKind::ContentFiltered
        );
        let body = r#"{"success":false,"request_id":"x","data":{"code":"Unauthorized","details":"You are not authenticated"}}"#;
        assert_eq!(
            kind_of(&parse_whole(&SITE, body)[0]),
            FailureKind::NotLoggedIn
        );
        assert_eq!(
            kind_of(&parse_whole(&SITE, r#"{"code":"FAIL_SYS_USER_VALIDATE"}"#)[0]),
            FailureKind::RateLimited
        );
        assert_eq!(
            kind_of(&parse_whole(&SITE, "data: {oops\n\n")[0]),
            FailureKind::SiteChanged
        );
    }
}
