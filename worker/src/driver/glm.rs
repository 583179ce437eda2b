//! GLM Chat (chat.z.ai).
//!
//! Known (FIELD-NOTES, and a public analysis of a recorded session, Sept 2025): the
//! answer streams from `POST /api/v2/chat/completions` as Server-Sent Events whose
//! `data` are `{"type": "chat:completion", "data": {...}}`; `data.phase` is `thinking`,
//! `answer`, `tool_call`, `tool_response`, `other` or `done`, the text is in
//! `data.delta_content`, and only `data.done: true` (or the `done` phase) ends the
//! answer: a `usage` frame may come before the last text.
//!
//! Assumed: every selector below (the site is built on Open WebUI, whose ids they
//! follow); that thinking text comes as plain text (older versions wrapped it in
//! `<details>` markup, which would then show in the reasoning); that a failure comes as
//! `data.error` (`code`, `detail` or `message`) or, for a refused request, as one JSON
//! document `{"detail": ...}` instead of a stream.

use serde_json::Value;

use super::format::{failure_from_words, Event, SseBody, StreamParser};
use super::selectors::Defaults;
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = "glm";

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://chat.z.ai/"),
    stream: UrlPattern::post("/api/v2/chat/completions"),
    selectors: Defaults {
        prompt: "textarea#chat-input",
        send: "button#send-message-button",
        stop: Some("button#stop-response-button"),
        thinking_toggle: Some("button#deep-think-toggle"),
        thinking_on: Some("button#deep-think-toggle[aria-pressed=\"true\"]"),
        logged_out: Some("button#sign-in-button, form input[type=\"password\"]"),
    },
    new_chat: NewChat::Reload,
    parser: || Box::<Parser>::default(),
};

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
                out.push(changed("an event of its stream is not JSON"));
                continue;
            };
            let data = &message["data"];
            if let Some(error) =
                error_words(&message["error"]).or_else(|| error_words(&data["error"]))
            {
                out.push(failure_from_words(NAME, &error));
                continue;
            }
            if message["type"] != "chat:completion" {
                continue;
            }
            let phase = data["phase"].as_str();
            if let Some(text) = data["delta_content"].as_str().filter(|t| !t.is_empty()) {
                match phase {
                    Some("thinking") => out.push(Event::Reasoning(text.to_owned())),
                    Some("answer") | None => out.push(Event::Answer(text.to_owned())),
                    // Tool calls and their results are the site's own business.
                    Some(_) => {}
                }
            }
            if data["done"] == true || phase == Some("done") {
                out.push(Event::Done);
            }
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        if let Some(refusal) = self.body.plain_json() {
            let words = error_words(&refusal).unwrap_or_else(|| refusal.to_string());
            out.push(failure_from_words(NAME, &words));
        }
    }
}

/// The words of an error object (`code`, `detail`, `message`), if it is one.
fn error_words(error: &Value) -> Option<String> {
    if let Some(text) = error.as_str() {
        return Some(text.to_owned());
    }
    let words: Vec<String> = ["code", "detail", "message"]
        .iter()
        .filter_map(|key| match &error[*key] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect();
    (!words.is_empty()).then(|| words.join(": "))
}

fn changed(what: &str) -> Event {
    Event::failed(
        prq_protocol::worker::FailureKind::SiteChanged,
        format!("{NAME}: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use prq_protocol::worker::FailureKind;

    use super::*;
    use crate::driver::format::testing::{
        answer, assert_every_split, kind_of, parse_whole, reasoning,
    };

    fn frame(data: &str) -> String {
        format!("data: {{\"type\":\"chat:completion\",\"data\":{data}}}\n\n")
    }

    #[test]
    fn phases_and_the_usage_trap_at_every_split() {
        let body = [
            frame(r#"{"delta_content":"Let me ","phase":"thinking"}"#),
            frame(r#"{"delta_content":"think… ","phase":"thinking"}"#),
            frame(r#"{"delta_content":"Hé","phase":"answer"}"#),
            frame(r#"{"phase":"tool_call","delta_content":"{\"q\":1}"}"#),
            frame(r#"{"usage":{"total_tokens":9},"phase":"other"}"#),
            // The last text comes after the usage frame.
            frame(r#"{"delta_content":"llo 🎉","phase":"answer"}"#),
            frame(r#"{"phase":"done","done":true}"#),
        ]
        .concat();
        let want = [reasoning("Let me think… "), answer("Héllo 🎉"), Event::Done];
        assert_every_split(&SITE, body.as_bytes(), &want);
    }

    #[test]
    fn errors_in_the_stream_and_instead_of_it() {
        let body =
            frame(r#"{"error":{"code":429,"detail":"Too many requests, try later"},"done":true}"#);
        assert_eq!(
            kind_of(&parse_whole(&SITE, &body)[0]),
            FailureKind::RateLimited
        );
        let body = frame(r#"{"error":{"detail":"The content contains sensitive words"}}"#);
        assert_eq!(
            kind_of(&parse_whole(&SITE, &body)[0]),
            FailureKind::ContentFiltered
        );
        let events = parse_whole(
            &SITE,
            r#"{"detail":"Your session has expired, please log in again"}"#,
        );
        assert_eq!(kind_of(&events[0]), FailureKind::NotLoggedIn);
        assert!(matches!(&events[0], Event::Failed(f) if f.message.starts_with("glm says:")));
        assert_eq!(
            kind_of(&parse_whole(&SITE, "data: <html>\n\n")[0]),
            FailureKind::SiteChanged
        );
    }
}
