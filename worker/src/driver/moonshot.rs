//! Moonshot's Kimi (www.kimi.ai, also www.kimi.com).
//!
//! Known (FIELD-NOTES, and public reverse-engineering notes of 2025–26 that agree): the
//! answer streams from `POST /apiv2/kimi.gateway.chat.v1.ChatService/Chat` as Connect
//! protocol frames (`application/connect+json`) whose messages are JSON: `op` `set` or
//! `append` with `mask` `block.think(.content)` carry reasoning in `block.think.content`,
//! with `block.text(.content)` the answer in `block.text.content`; `{"done": {}}` and
//! `message.status` `MESSAGE_STATUS_COMPLETED` mark the end, `{"heartbeat": {}}` frames
//! come between; the end-of-stream frame carries `{"error": {"code", "message"}}` when
//! the call failed (a rate limit as `resource_exhausted`, with HTTP 200).
//!
//! Assumed: every selector below but the prompt box (`.chat-input-editor`, a
//! contenteditable element, as a public probe of the page reported); that a content
//! filter shows as a `message.status` naming a block or filter.

use prq_protocol::worker::FailureKind;
use serde_json::Value;

use super::format::connect::FrameReader;
use super::format::{failure_from_words, Event, StreamParser};
use super::selectors::Defaults;
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = "moonshot";

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://www.kimi.ai/"),
    stream: UrlPattern::post("/apiv2/kimi.gateway.chat.v1.ChatService/Chat"),
    selectors: Defaults {
        prompt: ".chat-input-editor",
        // The site marks a disabled button with a class, which this leaves out.
        send: ".send-button-container:not(.disabled):not(.stop)",
        stop: Some(".send-button-container.stop"),
        thinking_toggle: Some(".thinking-toggle"),
        thinking_on: Some(".thinking-toggle.open"),
        logged_out: Some(".login-button"),
    },
    new_chat: NewChat::Reload,
    parser: || Box::<Parser>::default(),
};

#[derive(Default)]
struct Parser {
    frames: FrameReader,
}

impl StreamParser for Parser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        self.frames.push(bytes);
        loop {
            let frame = match self.frames.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => return out.push(changed(&e)),
            };
            if frame.compressed {
                return out.push(changed(
                    "a compressed frame, which this driver does not read",
                ));
            }
            if frame.message.is_empty() {
                continue;
            }
            let message: Value = match serde_json::from_slice(&frame.message) {
                Ok(message) => message,
                Err(e) => return out.push(changed(&format!("a frame is not JSON ({e})"))),
            };
            if frame.end {
                end_of_stream(&message, out);
            } else {
                self.message(&message, out);
            }
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        if self.frames.pending() > 0 {
            out.push(Event::failed(
                FailureKind::SiteError,
                format!("{NAME}: the stream broke off inside a frame"),
            ));
        }
    }
}

impl Parser {
    fn message(&mut self, message: &Value, out: &mut Vec<Event>) {
        let mask = message["mask"].as_str().unwrap_or("");
        let text = |part: &str| {
            let content = message["block"][part]["content"].as_str().unwrap_or("");
            (!content.is_empty()).then(|| content.to_owned())
        };
        if matches!(message["op"].as_str(), Some("set" | "append")) {
            match mask {
                "block.think" | "block.think.content" => {
                    out.extend(text("think").map(Event::Reasoning))
                }
                "block.text" | "block.text.content" => out.extend(text("text").map(Event::Answer)),
                _ => {}
            }
        }
        let status = message["message"]["status"].as_str().unwrap_or("");
        if status == "MESSAGE_STATUS_COMPLETED" || message.get("done").is_some() {
            out.push(Event::Done);
        } else if status.contains("BLOCK") || status.contains("FILTER") {
            out.push(Event::failed(
                FailureKind::ContentFiltered,
                format!("{NAME}: its content filter stopped the answer ({status})"),
            ));
        }
    }
}

/// The end-of-stream frame: the call's error, or a plain end.
fn end_of_stream(message: &Value, out: &mut Vec<Event>) {
    let error = &message["error"];
    if error.is_null() {
        return out.push(Event::Done);
    }
    let code = error["code"].as_str().unwrap_or("unknown");
    let text = error["message"].as_str().unwrap_or("");
    let words = format!("{text} ({code})");
    out.push(match code {
        "unauthenticated" | "permission_denied" => Event::failed(
            FailureKind::NotLoggedIn,
            format!("{NAME} refused the request: {words}"),
        ),
        "resource_exhausted" => {
            Event::failed(FailureKind::RateLimited, format!("{NAME} says: {words}"))
        }
        _ => failure_from_words(NAME, &words),
    });
}

fn changed(what: &str) -> Event {
    Event::failed(FailureKind::SiteChanged, format!("{NAME}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::format::connect::frame;
    use crate::driver::format::testing::{
        answer, assert_every_split, kind_of, parse_in_chunks, parser_of, reasoning,
    };

    fn frames(messages: &[&str], end: &str) -> Vec<u8> {
        let mut body: Vec<u8> = messages
            .iter()
            .flat_map(|m| frame(false, m.as_bytes()))
            .collect();
        body.extend(frame(true, end.as_bytes()));
        body
    }

    #[test]
    fn thinking_then_text_then_done_at_every_split() {
        let body = frames(
            &[
                r#"{"heartbeat":{}}"#,
                r#"{"op":"set","mask":"chat","chat":{"id":"c1"}}"#,
                r#"{"op":"set","mask":"block.think","block":{"id":"0","think":{"content":"Hm"}}}"#,
                r#"{"op":"append","mask":"block.think.content","block":{"think":{"content":"m… "}}}"#,
                r#"{"op":"set","mask":"block.text","block":{"id":"1","text":{"content":"日本"}}}"#,
                r#"{"op":"append","mask":"block.text.content","block":{"text":{"content":" 🎉"}}}"#,
                r#"{"op":"set","mask":"message.status","message":{"status":"MESSAGE_STATUS_COMPLETED"}}"#,
            ],
            "{}",
        );
        let want = [
            reasoning("Hmm… "),
            answer("日本 🎉"),
            Event::Done,
            Event::Done,
        ];
        assert_every_split(SITE.parser, &body, &want);
    }

    #[test]
    fn errors_of_the_end_frame() {
        let parse =
            |end: &str| parse_in_chunks(&mut *parser_of(&SITE), &frames(&[], end), [usize::MAX]);
        let busy =
            r#"{"error":{"code":"resource_exhausted","message":"Too many people are chatting"}}"#;
        assert_eq!(kind_of(&parse(busy)[0]), FailureKind::RateLimited);
        let login = r#"{"error":{"code":"unauthenticated","message":"auth failed"}}"#;
        assert_eq!(kind_of(&parse(login)[0]), FailureKind::NotLoggedIn);
        let other = r#"{"error":{"code":"internal","message":"oops"}}"#;
        assert_eq!(kind_of(&parse(other)[0]), FailureKind::SiteError);
    }

    #[test]
    fn a_filter_status_and_a_broken_frame() {
        let body = frames(
            &[
                r#"{"op":"set","mask":"message.status","message":{"status":"MESSAGE_STATUS_BLOCKED"}}"#,
            ],
            "{}",
        );
        let events = parse_in_chunks(&mut *parser_of(&SITE), &body, [body.len()]);
        assert_eq!(kind_of(&events[0]), FailureKind::ContentFiltered);
        let events = parse_in_chunks(&mut *parser_of(&SITE), &frame(false, b"<html>"), [100]);
        assert_eq!(kind_of(&events[0]), FailureKind::SiteChanged);
        let cut = &frame(false, b"{}")[..4];
        let events = parse_in_chunks(&mut *parser_of(&SITE), cut, [100]);
        assert_eq!(kind_of(&events[0]), FailureKind::SiteError);
    }
}
