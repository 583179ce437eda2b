//! Moonshot's Kimi (www.kimi.ai, also www.kimi.com).
//!
//! Known (public clients and their recorded-stream fixtures, e.g.
//! izaart95-jpg/Kimi-Bridge-Api `tests/think.py` for the request and its frames): the
//! answer streams from `POST /apiv2/kimi.gateway.chat.v1.ChatService/Chat` as Connect
//! protocol frames (`application/connect+json`) whose messages are JSON. The stream
//! first *echoes the user's message* (`op` `set`, `mask` `message`, `message.role`
//! `user`, `message.status` `MESSAGE_STATUS_COMPLETED`, its text in `message.blocks`),
//! then opens the assistant's message the same way with `role` `assistant` and
//! `MESSAGE_STATUS_GENERATING`; `op` `set` or `append` with `mask`
//! `block.think(.content)` carry reasoning in `block.think.content`, with
//! `block.text(.content)` the answer in `block.text.content`; the assistant's
//! `message.status` turning `MESSAGE_STATUS_COMPLETED` (a `message.status` frame with
//! its id) or `{"done": {}}` ends the answer — the user's completed echo does not;
//! `{"heartbeat": {}}` frames come between; the end-of-stream frame carries
//! `{"error": {"code", "message"}}` when the call failed (a rate limit as
//! `resource_exhausted`, with HTTP 200).
//!
//! Assumed: every selector below but the prompt box (`.chat-input-editor`, a
//! contenteditable element, as a public probe of the page reported); that a content
//! filter shows as a `message.status` naming a block or filter; that a `message.status`
//! frame with neither id nor role is the assistant's (older streams sent it so).
//!
//! Uploads: no public evidence of the page's upload control was found, so none is
//! named; set `attach_input` and `attach_done` under `[lanes.selectors]`.

use prq_protocol::worker::FailureKind;
use serde_json::Value;

use super::controls::ControlDefaults;
use super::format::connect::FrameReader;
use super::format::{failure_from_words, Event, StreamParser, Unplaced};
use super::selectors::{AttachDefaults, Defaults};
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = super::Provider::Moonshot.name();

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://www.kimi.ai/"),
    stream: UrlPattern::post("/apiv2/kimi.gateway.chat.v1.ChatService/Chat"),
    selectors: Defaults {
        prompt: &[".chat-input-editor"],
        // The site marks a disabled button with a class, which this leaves out.
        send: &[".send-button-container:not(.disabled):not(.stop)"],
        stop: &[".send-button-container.stop"],
        thinking_toggle: &[".thinking-toggle"],
        thinking_on: &[".thinking-toggle.open"],
        logged_out: &[".login-button"],
        controls: ControlDefaults::NONE,
        // No public evidence of its upload control yet (see the module doc).
        attach: AttachDefaults::UNKNOWN,
    },
    new_chat: NewChat::Reload,
    parser: || Box::<Parser>::default(),
};

#[derive(Default)]
struct Parser {
    frames: FrameReader,
    /// The id of the assistant's message, once the stream has opened it.
    assistant: Option<String>,
    /// The ids of the user's messages the stream echoed.
    users: Vec<String>,
    unplaced: Unplaced,
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
                _ if mask.starts_with("block.") && has_content(&message["block"]) => {
                    self.unplaced.text_in(NAME, "mask", mask)
                }
                _ => {}
            }
        }
        let status = message["message"]["status"].as_str().unwrap_or("");
        if !self.is_assistants(&message["message"]) {
            // The user's own message, echoed: its completion is not the answer's.
        } else if status == "MESSAGE_STATUS_COMPLETED" {
            out.push(Event::Done);
        } else if status.contains("BLOCK") || status.contains("FILTER") {
            out.push(Event::failed(
                FailureKind::ContentFiltered,
                format!("{NAME}: its content filter stopped the answer ({status})"),
            ));
        }
        if message.get("done").is_some() {
            out.push(Event::Done);
        }
    }

    /// Whether a `message` object is the assistant's (and notes whose it is): by its
    /// role, else by an id seen with a role; one with neither is taken for the
    /// assistant's, as older streams sent only its status.
    fn is_assistants(&mut self, message: &Value) -> bool {
        let id = message["id"].as_str().map(str::to_owned);
        match (message["role"].as_str(), id) {
            (Some("assistant"), id) => {
                if id.is_some() {
                    self.assistant = id;
                }
                true
            }
            (Some(_), id) => {
                self.users.extend(id);
                false
            }
            (None, Some(id)) => {
                self.assistant.as_deref() == Some(id.as_str())
                    || (self.assistant.is_none() && !self.users.contains(&id))
            }
            (None, None) => !message.is_null(),
        }
    }
}

/// Whether any part of a block carries text.
fn has_content(block: &Value) -> bool {
    block.as_object().is_some_and(|parts| {
        parts
            .values()
            .any(|part| part["content"].as_str().is_some_and(|t| !t.is_empty()))
    })
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
        answer, assert_every_split, assert_no_answer_is_site_changed, kind_of, parse_in_chunks,
        parser_of, reasoning,
    };

    fn frames(messages: &[&str], end: &str) -> Vec<u8> {
        let mut body: Vec<u8> = messages
            .iter()
            .flat_map(|m| frame(false, m.as_bytes()))
            .collect();
        body.extend(frame(true, end.as_bytes()));
        body
    }

    /// The user's message echoed first, completed, with its text: none of it is the
    /// answer, and its completion does not end it.
    const ECHO: &str = r#"{"op":"set","mask":"message","eventOffset":2,"message":{"id":"m1","parentId":"","role":"user","status":"MESSAGE_STATUS_COMPLETED","blocks":[{"messageId":"m1","text":{"content":"Say hi"}}]}}"#;
    const OPENED: &str = r#"{"op":"set","mask":"message","eventOffset":3,"message":{"id":"m2","parentId":"m1","role":"assistant","status":"MESSAGE_STATUS_GENERATING","blocks":[]}}"#;

    #[test]
    fn the_echo_then_thinking_then_text_then_done_at_every_split() {
        let body = frames(
            &[
                r#"{"heartbeat":{}}"#,
                r#"{"op":"set","mask":"chat","chat":{"id":"c1"}}"#,
                ECHO,
                OPENED,
                r#"{"op":"set","mask":"block.think","block":{"id":"0","think":{"content":"Hm"}}}"#,
                r#"{"op":"append","mask":"block.think.content","block":{"think":{"content":"m… "}}}"#,
                r#"{"op":"set","mask":"block.text","block":{"id":"1","text":{"content":"日本"}}}"#,
                r#"{"op":"append","mask":"block.text.content","block":{"text":{"content":" 🎉"}}}"#,
                r#"{"op":"set","mask":"message.status","message":{"id":"m2","status":"MESSAGE_STATUS_COMPLETED"}}"#,
                r#"{"eventOffset":9,"done":{}}"#,
            ],
            "{}",
        );
        let want = [reasoning("Hmm… "), answer("日本 🎉"), Event::Done];
        assert_every_split(&SITE, &body, &want);
    }

    #[test]
    fn the_older_form_without_the_echo_still_reads() {
        let body = frames(
            &[
                r#"{"op":"set","mask":"block.text","block":{"id":"1","text":{"content":"Hi"}}}"#,
                r#"{"op":"set","mask":"message.status","message":{"status":"MESSAGE_STATUS_COMPLETED"}}"#,
            ],
            "{}",
        );
        assert_every_split(&SITE, &body, &[answer("Hi"), Event::Done]);
    }

    #[test]
    fn an_echo_and_nothing_more_is_no_answer() {
        // What a parser ending on any completed status would have called an (empty) answer.
        let body = frames(&[ECHO, OPENED, r#"{"eventOffset":9,"done":{}}"#], "{}");
        assert_no_answer_is_site_changed(&SITE, &body);
        let body = frames(&[ECHO], "{}");
        assert_no_answer_is_site_changed(&SITE, &body);
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
                OPENED,
                r#"{"op":"set","mask":"message.status","message":{"id":"m2","status":"MESSAGE_STATUS_BLOCKED"}}"#,
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
