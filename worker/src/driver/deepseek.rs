//! DeepSeek (chat.deepseek.com).
//!
//! Known (FIELD-NOTES, and a recorded stream of Nov 2025): the answer streams from
//! `POST /api/v0/chat/completion` as Server-Sent Events whose `data` are patch
//! operations `{"p": path, "o": op, "v": value}` on one document: the first event sets
//! the whole document (`{"v": {"response": {...}}}`), `APPEND` adds text to a fragment's
//! `content`, `BATCH` applies a list of operations under its path, and an event that
//! leaves out `p` and `o` repeats the last ones (most text arrives as bare
//! `{"v": "..."}`). The answer is `response.fragments`, typed `THINK` (reasoning) and
//! `RESPONSE`; `response.status` ends `FINISHED` or `CONTENT_FILTER`; named events
//! (`ready`, `update_session`, `finish`, `title`, `close`) frame the stream.
//!
//! Assumed (not seen on the live site): every selector below; that a refused request
//! (expired login, rate limit) is answered with one JSON document `{"code", "msg"}`
//! instead of a stream, with codes 40002/40003 for a login that is no longer valid;
//! and that a `hint` event of type `error` carries a site-side failure.

use prq_protocol::worker::FailureKind;
use serde_json::Value;

use super::format::json_patch::{self, slash_path, Op};
use super::format::{failure_from_words, kind_from_words, Event, SseBody, StreamParser};
use super::selectors::Defaults;
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = "deepseek";

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://chat.deepseek.com/"),
    stream: UrlPattern::post("/api/v0/chat/completion"),
    selectors: Defaults {
        prompt: "textarea#chat-input",
        send: "div[role=\"button\"].ds-send-button",
        stop: Some("div[role=\"button\"].ds-stop-button"),
        thinking_toggle: Some("div[role=\"button\"].ds-deepthink"),
        thinking_on: Some("div[role=\"button\"].ds-deepthink.ds-toggle-button--selected"),
        logged_out: Some("a[href*=\"sign_in\"], input[type=\"password\"]"),
    },
    new_chat: NewChat::Reload,
    parser: || Box::<Parser>::default(),
};

/// The login codes of a refusal document (assumed, see the module doc).
const LOGIN_CODES: [i64; 2] = [40002, 40003];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchOp {
    Patch(Op),
    Batch,
}

#[derive(Default)]
struct Parser {
    body: SseBody,
    doc: Value,
    /// What an event without `p` / `o` repeats.
    last_path: Vec<String>,
    last_op: Option<PatchOp>,
    /// How much of each fragment's text has been handed out.
    sent: Vec<usize>,
    ended: bool,
}

impl StreamParser for Parser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        self.body.push(bytes);
        while let Some(event) = self.body.next_event() {
            if self.ended {
                continue;
            }
            match event.event.as_deref() {
                None | Some("message") => match self.patch(&event.data) {
                    Ok(()) => self.emit(out),
                    Err(e) => self.end_with(
                        out,
                        Event::failed(
                            FailureKind::SiteChanged,
                            format!("{NAME}: a patch of its stream does not apply ({e})"),
                        ),
                    ),
                },
                Some("hint") => self.hint(&event.data, out),
                // The answer's own status says how it ended; this is the fallback.
                Some("finish") => self.end_with(out, Event::Done),
                Some(other) => tracing::trace!(event = other, "ignored"),
            }
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        let Some(refusal) = self.body.plain_json() else {
            return;
        };
        let code = refusal["code"].as_i64().unwrap_or(0);
        let msg = refusal["msg"].as_str().unwrap_or("");
        let kind = match code {
            c if LOGIN_CODES.contains(&c) => FailureKind::NotLoggedIn,
            _ => kind_from_words(msg).unwrap_or(FailureKind::SiteError),
        };
        out.push(Event::failed(
            kind,
            format!("{NAME} refused the request: {msg} (code {code})"),
        ));
    }
}

impl Parser {
    fn patch(&mut self, data: &str) -> Result<(), String> {
        let mut patch: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
        let (path, op) = match patch["p"].as_str() {
            Some(p) => (
                slash_path(p),
                op_of(&patch["o"])?.unwrap_or(PatchOp::Patch(Op::Replace)),
            ),
            None => (
                self.last_path.clone(),
                match op_of(&patch["o"])? {
                    Some(op) => op,
                    None => self.last_op.unwrap_or(PatchOp::Patch(Op::Replace)),
                },
            ),
        };
        let value = patch["v"].take();
        apply(&mut self.doc, op, &path, value)?;
        self.last_path = path;
        self.last_op = Some(op);
        Ok(())
    }

    /// Hands out the fragments' new text, and the end once the status says so.
    fn emit(&mut self, out: &mut Vec<Event>) {
        let response = &self.doc["response"];
        let fragments = response["fragments"].as_array().map_or(&[][..], |f| &f[..]);
        self.sent.resize(fragments.len().max(self.sent.len()), 0);
        for (fragment, sent) in fragments.iter().zip(self.sent.iter_mut()) {
            let content = fragment["content"].as_str().unwrap_or("");
            let Some(new) = content.get(*sent..).filter(|new| !new.is_empty()) else {
                continue;
            };
            *sent = content.len();
            match fragment["type"].as_str() {
                Some("THINK") => out.push(Event::Reasoning(new.to_owned())),
                Some("RESPONSE") => out.push(Event::Answer(new.to_owned())),
                // Search results and the like are not text of the answer.
                _ => {}
            }
        }
        match response["status"].as_str() {
            Some("FINISHED") => self.end_with(out, Event::Done),
            Some("CONTENT_FILTER") => self.end_with(
                out,
                Event::failed(
                    FailureKind::ContentFiltered,
                    format!(
                        "{NAME}: its content filter withdrew the answer (status CONTENT_FILTER)"
                    ),
                ),
            ),
            _ => {}
        }
    }

    fn hint(&mut self, data: &str, out: &mut Vec<Event>) {
        let hint: Value = serde_json::from_str(data).unwrap_or_default();
        if hint["type"] != "error" {
            return;
        }
        let content = hint["content"].as_str().unwrap_or(data);
        let event = match hint["finish_reason"].as_str() {
            Some(reason) if reason.contains("rate_limit") => {
                Event::failed(FailureKind::RateLimited, format!("{NAME} says: {content}"))
            }
            _ => failure_from_words(NAME, content),
        };
        self.end_with(out, event);
    }

    fn end_with(&mut self, out: &mut Vec<Event>, event: Event) {
        if !self.ended {
            self.ended = true;
            out.push(event);
        }
    }
}

fn op_of(o: &Value) -> Result<Option<PatchOp>, String> {
    match o.as_str() {
        None => Ok(None),
        Some("SET") => Ok(Some(PatchOp::Patch(Op::Replace))),
        Some("APPEND") => Ok(Some(PatchOp::Patch(Op::Append))),
        Some("BATCH") => Ok(Some(PatchOp::Batch)),
        Some(other) => Err(format!("unknown operation {other:?}")),
    }
}

fn apply(doc: &mut Value, op: PatchOp, path: &[String], value: Value) -> Result<(), String> {
    match op {
        PatchOp::Patch(op) => json_patch::apply(doc, op, path, value),
        PatchOp::Batch => {
            let Value::Array(patches) = value else {
                return Err("a BATCH without a list".into());
            };
            for mut patch in patches {
                let mut sub = path.to_vec();
                sub.extend(slash_path(patch["p"].as_str().unwrap_or("")));
                let op = op_of(&patch["o"])?.unwrap_or(PatchOp::Patch(Op::Replace));
                apply(doc, op, &sub, patch["v"].take())?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::format::testing::{
        answer, assert_every_split, kind_of, parse_whole, reasoning,
    };

    /// The recorded stream's shape (Nov 2025), its text shortened.
    const RECORDED: &str = r#"event: ready
data: {"request_message_id":1,"response_message_id":2}

event: update_session
data: {"updated_at":1763793566.476625}

data: {"v": {"response": {"message_id": 2, "parent_id": 1, "model": "", "role": "ASSISTANT", "thinking_enabled": false, "status": "WIP", "fragments": []}}}

data: {"v": [{"v": false, "p": "has_pending_fragment"}, {"v": [{"id": 1, "type": "RESPONSE", "content": "你好", "references": [], "stage_id": 1}], "p": "fragments", "o": "APPEND"}], "p": "response", "o": "BATCH"}

data: {"v": "！", "p": "response/fragments/0/content", "o": "APPEND"}

data: {"v": "😊"}

data: {"v": " DeepSeek"}

data: {"v": [{"v": "FINISHED", "p": "status"}, {"v": 115, "p": "accumulated_token_usage"}], "p": "response", "o": "BATCH"}

event: finish
data: {}

event: close
data: {"click_behavior":"none","auto_resume":false}

"#;

    #[test]
    fn a_recorded_answer_at_every_split() {
        let want = [answer("你好！😊 DeepSeek"), Event::Done];
        assert_every_split(&SITE, RECORDED.as_bytes(), &want);
    }

    #[test]
    fn thinking_fragments_come_apart_from_the_answer() {
        let body = r#"data: {"v": {"response": {"thinking_enabled": true, "status": "WIP", "fragments": []}}}

data: {"v": [{"id": 1, "type": "THINK", "content": "Hmm", "elapsed_secs": null}], "p": "response/fragments", "o": "APPEND"}

data: {"v": "… é", "p": "response/fragments/-1/content", "o": "APPEND"}

data: {"v": 1.5, "p": "response/fragments/-1/elapsed_secs", "o": "SET"}

data: {"v": [{"id": 2, "type": "RESPONSE", "content": "Ans"}], "p": "response/fragments", "o": "APPEND"}

data: {"v": "wer", "p": "response/fragments/-1/content", "o": "APPEND"}

data: {"v": " 🎉"}

data: {"v": "FINISHED", "p": "response/status"}

"#;
        let want = [reasoning("Hmm… é"), answer("Answer 🎉"), Event::Done];
        assert_every_split(&SITE, body.as_bytes(), &want);
    }

    #[test]
    fn a_content_filter_ends_the_answer_as_filtered() {
        let body = r#"data: {"v": {"response": {"status": "WIP", "fragments": [{"type": "RESPONSE", "content": "Well"}]}}}

data: {"v": "CONTENT_FILTER", "p": "response/status", "o": "SET"}

"#;
        let events = parse_whole(&SITE, body);
        assert_eq!(events[0], answer("Well"));
        assert_eq!(kind_of(&events[1]), FailureKind::ContentFiltered);
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn refusals_instead_of_a_stream() {
        let events = parse_whole(
            &SITE,
            r#"{"code":40003,"msg":"Authorization Failed (invalid token)","data":null}"#,
        );
        assert_eq!(kind_of(&events[0]), FailureKind::NotLoggedIn);
        let events = parse_whole(&SITE, r#"{"code":42900,"msg":"Too many requests"}"#);
        assert_eq!(kind_of(&events[0]), FailureKind::RateLimited);
        let body = "event: hint\ndata: {\"type\":\"error\",\"content\":\"You are sending messages too fast\",\"finish_reason\":\"rate_limit_reached\"}\n\n";
        assert_eq!(
            kind_of(&parse_whole(&SITE, body)[0]),
            FailureKind::RateLimited
        );
    }

    #[test]
    fn a_patch_that_does_not_fit_is_a_changed_site() {
        let events = parse_whole(
            &SITE,
            "data: {\"v\": \"x\", \"p\": \"response/status\", \"o\": \"MERGE\"}\n\n",
        );
        assert_eq!(kind_of(&events[0]), FailureKind::SiteChanged);
        let events = parse_whole(&SITE, "data: not json\n\n");
        assert_eq!(kind_of(&events[0]), FailureKind::SiteChanged);
    }
}
