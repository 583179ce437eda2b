//! QwenLM (chat.qwen.ai).
//!
//! Known (public clients of the site: XxxXTeam/Qwen2API_Go
//! `internal/openai/handler.go` and its tests `internal/openai/chat_parse_test.go`,
//! `handler_stream_test.go`; guygubaby/qwen2api-rs; Rfym21/Qwen2API): the answer
//! streams from `POST /api/v2/chat/completions` as Server-Sent Events; each event's
//! `data` is `{"choices": [{"delta": {"content", "phase", "status", "extra"}}]}` after a
//! first `{"response.created": {...}}`. The web UI asks for `thinking_format`
//! `"summary"`: reasoning then comes in phase `thinking_summary` with an empty
//! `content` and the text in `extra.summary_thought.content`, a list that each event
//! resends whole as it grows (headlines in `extra.summary_title.content`, left out
//! here); phase `think` with the text in `content` is the API-shaped form, read the same
//! way. Phase `answer` (or none) is the answer; `data: [DONE]` ends the stream.
//!
//! The prompt box is `#chat-input`, a textarea or a rich editor: Open WebUI's
//! `src/lib/components/chat/MessageInput.svelte` renders it as `RichTextInput` (a TipTap
//! editor) with `id="chat-input"` unless the user turned rich text off
//! (`$settings?.richTextInput ?? true`), and as a `<textarea id="chat-input">` when they
//! did; on submit, the rich form's text has each `\n\n` replaced by `\n` there.
//!
//! Assumed: that a delta of `status` `finished` in the answer phase ends the answer; that
//! a failure comes as `{"error": {"code", "details"}}` in the stream or as one JSON
//! document (`{"success": false, "data": {"code", "details"}}`, or a bare `{"code"}`)
//! instead of it, with the codes below. Every selector below but the prompt box's (the
//! site is built on Open WebUI, whose ids they follow).
//!
//! Uploads (partly known): Open WebUI's `src/lib/components/chat/MessageInput.svelte`
//! keeps a hidden `<input type="file" multiple>` and shows each chosen file as a
//! `FileItem` with a spinner while its status is `uploading`; what marks a file uploaded
//! on this site's page is not public, and Open WebUI refuses a send while a file
//! uploads, so no upload control is named: to try it, set `attach_input =
//! 'input[type="file"][multiple]'` and an `attach_done` that `prq doctor` shows.

use prq_protocol::worker::FailureKind;
use serde_json::Value;

use super::controls::ControlDefaults;
use super::format::{kind_from_words, Event, Growing, SseBody, StreamParser, Unplaced};
use super::selectors::{AttachDefaults, Defaults};
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = super::Provider::Qwen.name();

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://chat.qwen.ai/"),
    stream: UrlPattern::post("/api/v2/chat/completions"),
    selectors: Defaults {
        prompt: &["#chat-input"],
        send: &["button#send-message-button"],
        stop: &["button#stop-message-button"],
        thinking_toggle: &["button.chat-input-feature-btn.thinking"],
        thinking_on: &["button.chat-input-feature-btn.thinking.active"],
        logged_out: &["button#sidebar-login-btn, form input[type=\"password\"]"],
        controls: ControlDefaults::NONE,
        // No public evidence of its upload control yet (see the module doc).
        attach: AttachDefaults::UNKNOWN,
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
    /// Reasoning came as phase `think`: a summary of it would repeat it.
    thought: bool,
    /// The summary's thoughts so far (resent whole each time).
    summary: Growing,
    unplaced: Unplaced,
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
            let text = delta["content"].as_str().filter(|t| !t.is_empty());
            match (phase, text) {
                (Some("think"), Some(text)) => {
                    self.thought = true;
                    out.push(Event::Reasoning(text.to_owned()));
                }
                (Some("thinking_summary"), _) if !self.thought => {
                    let thoughts = summary_thoughts(&delta["extra"]);
                    let summary = thoughts.as_deref().or(text).unwrap_or("");
                    out.extend(self.summary.next(summary).map(Event::Reasoning));
                }
                (Some("answer") | None, Some(text)) => out.push(Event::Answer(text.to_owned())),
                (Some("think" | "thinking_summary" | "answer") | None, None) => {}
                (Some(phase), _) => {
                    if text.is_some() {
                        self.unplaced.text_in(NAME, "phase", phase);
                    }
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

/// The summary's thoughts, one per line: `extra.summary_thought.content`, a list.
fn summary_thoughts(extra: &Value) -> Option<String> {
    let list = extra["summary_thought"]["content"].as_array()?;
    let lines: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    Some(lines.join("\n"))
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
        answer, assert_every_split, assert_no_answer_is_site_changed, kind_of, parse_whole,
        reasoning,
    };

    fn delta(delta: &str) -> String {
        format!("data: {{\"choices\":[{{\"delta\":{delta}}}]}}\n\n")
    }

    /// The web UI's form: a summary resent whole as it grows, then the answer.
    fn summary(titles: &[&str], thoughts: &[&str]) -> String {
        delta(
            &serde_json::json!({"role": "assistant", "content": "", "phase": "thinking_summary",
                "extra": {"summary_title": {"content": titles}, "summary_thought": {"content": thoughts}}})
            .to_string(),
        )
    }

    #[test]
    fn a_growing_summary_then_the_answer_at_every_split() {
        let body = [
            "data: {\"response.created\":{\"chat_id\":\"c\",\"response_id\":\"r\"}}\n\n".to_owned(),
            summary(&["Greeting"], &["I see a greeting."]),
            summary(&["Greeting"], &["I see a greeting.", "I'll answer in 日本"]),
            summary(
                &["Greeting", "Answering"],
                &["I see a greeting.", "I'll answer in 日本語 🎉"],
            ),
            summary(
                &["Greeting", "Answering"],
                &["I see a greeting.", "I'll answer in 日本語 🎉"],
            ),
            delta(r#"{"content":"你好","phase":"answer","status":"typing"}"#),
            delta(r#"{"content":"","phase":"answer","status":"finished"}"#),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let want = [
            reasoning("I see a greeting.\nI'll answer in 日本語 🎉"),
            answer("你好"),
            Event::Done,
        ];
        assert_every_split(&SITE, body.as_bytes(), &want);
    }

    #[test]
    fn a_summary_alone_is_no_answer() {
        let body = summary(&["Greeting"], &["I see a greeting."]) + "data: [DONE]\n\n";
        assert_no_answer_is_site_changed(&SITE, body.as_bytes());
    }

    #[test]
    fn think_then_answer_then_finished_at_every_split() {
        let body = [
            "data: {\"response.created\":{\"chat_id\":\"c\",\"response_id\":\"r\"}}\n\n".to_owned(),
            delta(r#"{"role":"assistant","content":"Hmm, ","phase":"think","status":"typing"}"#),
            delta(r#"{"content":"é…","phase":"think","status":"typing"}"#),
            delta(r#"{"content":"","phase":"think","status":"finished"}"#),
            summary(&["Title"], &["a summary"]),
            delta(r#"{"content":"not the answer","phase":"web_search"}"#),
            delta(r#"{"content":"日本","phase":"answer","status":"typing"}"#),
            delta(r#"{"content":" 🎉","phase":"answer","status":"typing"}"#),
            delta(r#"{"content":"","phase":"answer","status":"finished"}"#),
        ]
        .concat();
        // The summary after a `think` phase repeats it, and is left out.
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
