//! DeepSeek (chat.deepseek.com).
//!
//! Known (a recorded stream of Nov 2025, and public clients:
//! NIyueeE/ds-free-api `docs/en/deepseek-api-reference.md`, which quotes the page's own
//! delta parser; xtekky/gpt4free `g4f/Provider/needs_auth/DeepSeek.py`): the answer
//! streams from `POST /api/v0/chat/completion` (sent by the page with
//! `XMLHttpRequest`) as Server-Sent Events whose `data` are patch operations
//! `{"p": path, "o": op, "v": value}` on one document: the first event sets the whole
//! document (`{"v": {"response": {...}}}`), `APPEND` adds text to a fragment's
//! `content`, `SET` replaces, `BATCH` applies a list of operations under its path. The
//! page keeps *both* the last `p` and the last `o`: an event that leaves out `o`
//! continues the last operation (most often `APPEND`) at its own or the last path, and
//! most text arrives as bare `{"v": "..."}`. The answer is `response.fragments`, typed
//! `THINK` (reasoning) and `RESPONSE` (`TOOL_SEARCH`, `TOOL_OPEN`, `TIP` are the site's
//! own); `response.status` ends `FINISHED`, `INCOMPLETE` (a stopped or cut answer: its
//! `o` is often left out) or `CONTENT_FILTER`; named events (`ready`, `update_session`,
//! `hint`, `title`, `close`, rarely `finish`) frame the stream, and a `hint` of type
//! `error` ends it with the site's refusal.
//!
//! The DeepThink switch is a `.ds-toggle-button` told from its neighbours (Search) only
//! by its label, "DeepThink", "Deep thinking" or "深度思考" by the page's language, and is
//! on while it has `ds-toggle-button--selected` (public clients of the page locate it so:
//! xtekky/gpt4free's DeepSeek provider, and browser-automation clients found by
//! `.ds-toggle-button` with `has_text`).
//!
//! The page's own controls (foxhui/WebAI2API `src/backend/adapter/deepseek_text.js`):
//! its models are two radio buttons of the composer, "Instant" (快速模式) and "Expert"
//! (专家模式), found by role and name; its web search is the `.ds-toggle-button`
//! named "Search" (智能搜索), on while `ds-toggle-button--selected`. Assumed: that the
//! radio picked carries `aria-checked="true"` (or is a checked input), and "联网搜索" as
//! the search switch's older Chinese label. No public source shows the page's elements
//! for deleting a chat (public clients delete through `POST /api/v0/chat_session/delete`
//! with the account's token, e.g. the ones behind deepseek-free-api PR #110), so
//! `after_reply = "delete"` needs `delete_chat` (and `delete_item`, `delete_confirm`)
//! under `[lanes.selectors]`.
//!
//! Assumed: that a status left without `o` is set, not appended to (the reference shows
//! `{"p": "response/status", "v": "FINISHED"}` as a set), and that an operation carried
//! over that does not fit its value is a set; the other selectors below; that a refused
//! request (expired login, rate limit) is answered with one JSON document
//! `{"code", "msg"}` instead of a stream, with codes 40002/40003 for a login that is no
//! longer valid.
//!
//! Uploads: no public evidence of the page's upload control was found (foxhui/WebAI2API's
//! `src/backend/adapter/deepseek_text.js` drives the same page and marks its models
//! `imagePolicy: 'forbidden'`), so none is named; set `attach_input` and `attach_done`
//! under `[lanes.selectors]`.

use prq_protocol::worker::FailureKind;
use serde_json::Value;

use super::controls::ControlDefaults;
use super::format::json_patch::{self, slash_path, Op};
use super::format::{failure_from_words, kind_from_words, Event, SseBody, StreamParser, Unplaced};
use super::selectors::{AttachDefaults, Defaults};
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = super::Provider::DeepSeek.name();

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://chat.deepseek.com/"),
    stream: UrlPattern::post("/api/v0/chat/completion"),
    selectors: Defaults {
        prompt: &["textarea#chat-input"],
        send: &["div[role=\"button\"].ds-send-button"],
        stop: &["div[role=\"button\"].ds-stop-button"],
        thinking_toggle: &[
            ".ds-toggle-button:has-text(\"DeepThink\")",
            ".ds-toggle-button:has-text(\"Deep thinking\")",
            ".ds-toggle-button:has-text(\"深度思考\")",
        ],
        thinking_on: &[
            ".ds-toggle-button.ds-toggle-button--selected:has-text(\"DeepThink\")",
            ".ds-toggle-button.ds-toggle-button--selected:has-text(\"Deep thinking\")",
            ".ds-toggle-button.ds-toggle-button--selected:has-text(\"深度思考\")",
        ],
        logged_out: &["a[href*=\"sign_in\"], input[type=\"password\"]"],
        // The mode radios and the Search switch: see the module doc.
        controls: ControlDefaults {
            model_current: &[
                "[role=\"radio\"][aria-checked=\"true\"]",
                "[role=\"radio\"]:checked",
            ],
            model_option: &["role=radio"],
            search_toggle: &[
                ".ds-toggle-button:has-text(\"Search\")",
                ".ds-toggle-button:has-text(\"智能搜索\")",
                ".ds-toggle-button:has-text(\"联网搜索\")",
            ],
            search_on: &[
                ".ds-toggle-button.ds-toggle-button--selected:has-text(\"Search\")",
                ".ds-toggle-button.ds-toggle-button--selected:has-text(\"智能搜索\")",
                ".ds-toggle-button.ds-toggle-button--selected:has-text(\"联网搜索\")",
            ],
            ..ControlDefaults::NONE
        },
        // No public evidence of its upload control yet (see the module doc).
        attach: AttachDefaults::UNKNOWN,
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
    /// What an event without `p` / `o` carries on: each is kept on its own.
    last_path: Vec<String>,
    last_op: Option<PatchOp>,
    /// How much of each fragment's text has been handed out.
    sent: Vec<usize>,
    ended: bool,
    unplaced: Unplaced,
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
        let path = match patch["p"].as_str() {
            Some(p) => slash_path(p),
            None => self.last_path.clone(),
        };
        let value = patch["v"].take();
        let op = match op_of(&patch["o"])? {
            Some(op) => {
                apply(&mut self.doc, op, &path, value)?;
                op
            }
            // A status is a state, set whatever the last operation was.
            None if path.last().is_some_and(|last| last.ends_with("status")) => {
                apply(&mut self.doc, SET, &path, value)?;
                self.last_op.unwrap_or(SET)
            }
            None => {
                let op = self.last_op.unwrap_or(SET);
                // The operation carried over may not fit this value (a BATCH then a
                // number): then it is a set, as a first event's is.
                if op != SET && !fits(op, &value) {
                    apply(&mut self.doc, SET, &path, value)?;
                } else {
                    apply(&mut self.doc, op, &path, value)?;
                }
                op
            }
        };
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
                // Search results, pages read and tips are not text of the answer.
                Some("TOOL_SEARCH" | "TOOL_OPEN" | "TIP") => {}
                other => self
                    .unplaced
                    .text_in(NAME, "fragment type", other.unwrap_or("(none)")),
            }
        }
        match response["status"].as_str() {
            Some("FINISHED") => self.end_with(out, Event::Done),
            // Stopped (a stop in the page, which the driver reports as such) or cut off
            // by the site.
            Some("INCOMPLETE") => self.end_with(
                out,
                Event::failed(
                    FailureKind::SiteError,
                    format!("{NAME}: the site cut the answer off (status INCOMPLETE)"),
                ),
            ),
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

const SET: PatchOp = PatchOp::Patch(Op::Replace);

/// Whether an operation carried over from an earlier event fits `value`.
fn fits(op: PatchOp, value: &Value) -> bool {
    match op {
        PatchOp::Batch => value.is_array(),
        PatchOp::Patch(Op::Append) => value.is_string() || value.is_array(),
        PatchOp::Patch(_) => true,
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
                let op = op_of(&patch["o"])?.unwrap_or(SET);
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
        answer, assert_every_split, assert_no_answer_is_site_changed, kind_of, parse_whole,
        reasoning,
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

    /// The forms the page's own parser reads (ds-free-api's reference): a path without
    /// an operation continues the last one (APPEND), a bare BATCH list continues the
    /// last BATCH, the status set without an operation, and INCOMPLETE.
    #[test]
    fn a_path_without_an_operation_continues_the_last_one_at_every_split() {
        let body = r#"data: {"v": {"response": {"status": "WIP", "fragments": [{"id": 1, "type": "THINK", "content": ""}]}}}

data: {"p": "response/fragments/-1/content", "o": "APPEND", "v": "Hm"}

data: {"v": "m"}

data: {"p": "response/fragments/-1/elapsed_secs", "o": "SET", "v": 0.9}

data: {"p": "response/fragments", "o": "APPEND", "v": [{"id": 2, "type": "RESPONSE", "content": "日"}]}

data: {"p": "response/fragments/-1/content", "v": "本"}

data: {"p": "response/fragments/-1", "o": "BATCH", "v": [{"p": "content", "o": "APPEND", "v": " [1]"}, {"p": "references", "o": "SET", "v": [{"id": 3}]}]}

data: {"v": [{"p": "content", "o": "APPEND", "v": " 🎉"}, {"p": "references", "v": [{"id": 5}]}]}

data: {"p": "response/fragments/-1/content", "o": "APPEND", "v": "!"}

data: {"p": "response", "o": "BATCH", "v": [{"p": "accumulated_token_usage", "v": 41}, {"p": "quasi_status", "v": "FINISHED"}]}

data: {"p": "response/status", "v": "FINISHED"}

event: title
data: {"content": "Hi"}

event: close
data: {"click_behavior": "none", "auto_resume": false}

"#;
        let want = [reasoning("Hmm"), answer("日本 [1] 🎉!"), Event::Done];
        assert_every_split(&SITE, body.as_bytes(), &want);
    }

    #[test]
    fn incomplete_ends_a_cut_answer() {
        let body = r#"data: {"v": {"response": {"status": "WIP", "fragments": [{"type": "RESPONSE", "content": "Par"}]}}}

data: {"p": "response/fragments/-1/content", "o": "APPEND", "v": "tial"}

data: {"p": "response", "o": "BATCH", "v": [{"p": "accumulated_token_usage", "v": 39}, {"p": "quasi_status", "v": "INCOMPLETE"}]}

data: {"p": "response/status", "v": "INCOMPLETE"}

data: {"p": "response/fragments/-1/elapsed_secs", "o": "SET", "v": 2.5}

"#;
        let events = parse_whole(&SITE, body);
        assert_eq!(events[0], answer("Partial"));
        assert_eq!(kind_of(&events[1]), FailureKind::SiteError);
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn thinking_and_a_finish_without_an_answer_is_no_answer() {
        let body = r#"data: {"v": {"response": {"status": "WIP", "fragments": [{"type": "THINK", "content": "Hmm"}]}}}

data: {"p": "response/status", "o": "SET", "v": "FINISHED"}

"#;
        assert_no_answer_is_site_changed(&SITE, body.as_bytes());
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
