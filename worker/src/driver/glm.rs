//! GLM Chat (chat.z.ai).
//!
//! Known (public clients of the site: xtekky/gpt4free
//! `g4f/Provider/glm/__init__.py`, SSDFDFDF/zai2api `app/core/response_handler.py`, and
//! a public analysis of a recorded session, Sept 2025): the answer streams from
//! `POST /api/v2/chat/completions` as Server-Sent Events whose `data` are
//! `{"type": "chat:completion", "data": {...}}`; `data.phase` is `thinking`, `answer`,
//! `tool_call`, `tool_response`, `other` or `done`, the text is in `data.delta_content`,
//! and only `data.done: true` (or the `done` phase) ends the answer: a `usage` frame may
//! come before the last text. Thinking text carries Open WebUI's markup: the first delta
//! opens `<details type="reasoning" …>\n<summary>…</summary>\n> `, and every later line
//! of it starts `> `; the markup is taken out here. The first answer text may come not in
//! `delta_content` but in `data.edit_content` (with `edit_index`): the whole reasoning
//! block again, closed by `</details>`, and the answer's start after it. A captcha
//! demand (`FRONTEND_CAPTCHA…` as the error's code, in the stream or as an HTTP 403) is
//! its own failure, `captcha_required`: logging in again would not help.
//!
//! The prompt box is `#chat-input`, a textarea or a rich editor: Open WebUI's
//! `src/lib/components/chat/MessageInput.svelte` renders it as `RichTextInput` (a TipTap
//! editor) with `id="chat-input"` unless the user turned rich text off
//! (`$settings?.richTextInput ?? true`), and as a `<textarea id="chat-input">` when they
//! did; on submit, the rich form's text has each `\n\n` replaced by `\n` there.
//!
//! Assumed: every other selector below (the site is built on Open WebUI, whose ids they
//! follow); that other failures come as `data.error` (`code`, `detail` or `message`) or,
//! for a refused request, as one JSON document `{"detail": ...}` instead of a stream; that
//! an `edit_content` without `</details>` rewrites text already sent (it is logged, not
//! read).
//!
//! Uploads (partly known): Open WebUI's `src/lib/components/chat/MessageInput.svelte`
//! keeps a hidden `<input type="file" multiple>` and shows each chosen file as a
//! `FileItem` with a spinner while its status is `uploading`; what marks a file uploaded
//! on this site's page is not public, and Open WebUI refuses a send while a file
//! uploads, so no upload control is named: to try it, set `attach_input =
//! 'input[type="file"][multiple]'` and an `attach_done` that `prq doctor` shows.

use serde_json::Value;

use prq_protocol::worker::FailureKind;

use super::controls::ControlDefaults;
use super::format::{failure_from_words, Event, SseBody, StreamParser, Unplaced};
use super::selectors::{AttachDefaults, Defaults};
use super::web::is_captcha;
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = super::Provider::Glm.name();

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://chat.z.ai/"),
    stream: UrlPattern::post("/api/v2/chat/completions"),
    selectors: Defaults {
        prompt: &["#chat-input"],
        send: &["button#send-message-button"],
        stop: &["button#stop-response-button"],
        thinking_toggle: &["button#deep-think-toggle"],
        thinking_on: &["button#deep-think-toggle[aria-pressed=\"true\"]"],
        logged_out: &["button#sign-in-button, form input[type=\"password\"]"],
        controls: ControlDefaults::NONE,
        // No public evidence of its upload control yet (see the module doc).
        attach: AttachDefaults::UNKNOWN,
    },
    new_chat: NewChat::Reload,
    parser: || Box::<Parser>::default(),
};

#[derive(Default)]
struct Parser {
    body: SseBody,
    reasoning: Markup,
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
                out.push(changed("an event of its stream is not JSON"));
                continue;
            };
            let data = &message["data"];
            if let Some(error) =
                error_words(&message["error"]).or_else(|| error_words(&data["error"]))
            {
                out.push(failure(&error));
                continue;
            }
            if message["type"] != "chat:completion" {
                continue;
            }
            let phase = data["phase"].as_str();
            let text = data["delta_content"].as_str().filter(|t| !t.is_empty());
            let edit = data["edit_content"].as_str().filter(|t| !t.is_empty());
            match (phase, text, edit) {
                (Some("thinking"), Some(text), _) => self.reasoning.push(text, out),
                (Some("answer") | None, Some(text), _) => out.push(Event::Answer(text.to_owned())),
                // The reasoning block again, and the answer's first text after it.
                (Some("answer") | None, None, Some(edit)) => match edit.split_once(DETAILS_END) {
                    Some((_, answer)) => {
                        let answer = answer.trim_start_matches('\n');
                        if !answer.is_empty() {
                            out.push(Event::Answer(answer.to_owned()));
                        }
                    }
                    None => self.unplaced.text_in(NAME, "edit_content", "answer"),
                },
                // Tool calls and their results are the site's own business.
                (Some("tool_call" | "tool_response" | "other" | "done" | "thinking"), _, _) => {}
                (Some(phase), Some(_), _) => self.unplaced.text_in(NAME, "phase", phase),
                _ => {}
            }
            if data["done"] == true || phase == Some("done") {
                out.push(Event::Done);
            }
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        self.reasoning.flush(out);
        if let Some(refusal) = self.body.plain_json() {
            let words = error_words(&refusal).unwrap_or_else(|| refusal.to_string());
            out.push(failure(&words));
        }
    }
}

/// A failure from the site's error words: a captcha demand, else by the words.
fn failure(words: &str) -> Event {
    if is_captcha(words) {
        Event::failed(
            FailureKind::Captcha,
            format!("{NAME}: the site asks for a captcha to be solved ({words})"),
        )
    } else {
        failure_from_words(NAME, words)
    }
}

const DETAILS_START: &str = "<details";
const DETAILS_END: &str = "</details>";
const SUMMARY_END: &str = "</summary>";
const QUOTE: &str = "> ";

/// Takes Open WebUI's markup out of the thinking text as it streams: the opening
/// `<details …>` and its `<summary>`, the `> ` that starts each line, and the closing
/// `</details>`. Text that does not open with `<details` is passed as it is. What could
/// still turn out to be markup waits for the next delta.
#[derive(Debug, Default)]
struct Markup {
    state: MarkupState,
    pending: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum MarkupState {
    /// Nothing yet: is it markup?
    #[default]
    Start,
    /// Inside the opening, up to the end of the summary.
    Header,
    /// Right after the summary: its line end is markup too.
    AfterHeader,
    LineStart,
    InLine,
    /// No markup: the text as it comes.
    Plain,
    /// After `</details>`.
    Closed,
}

impl Markup {
    fn push(&mut self, text: &str, out: &mut Vec<Event>) {
        use MarkupState::*;
        self.pending.push_str(text);
        let mut reasoning = String::new();
        loop {
            let p = self.pending.as_str();
            let (state, consumed, emit) = match self.state {
                Start if p.starts_with(DETAILS_START) => (Header, 0, 0),
                Start if DETAILS_START.starts_with(p) => break,
                Start => (Plain, 0, 0),
                Header => match p.find(SUMMARY_END) {
                    Some(at) => (AfterHeader, at + SUMMARY_END.len(), 0),
                    None => break,
                },
                AfterHeader if p.is_empty() => break,
                AfterHeader => (LineStart, usize::from(p.starts_with('\n')), 0),
                LineStart if p.is_empty() => break,
                LineStart if p.starts_with(QUOTE) => (InLine, QUOTE.len(), 0),
                LineStart if p.starts_with(DETAILS_END) => (Closed, DETAILS_END.len(), 0),
                LineStart if QUOTE.starts_with(p) || DETAILS_END.starts_with(p) => break,
                // A quoted empty line.
                LineStart if p.starts_with(">\n") => (InLine, 1, 0),
                LineStart => (InLine, 0, 0),
                InLine => match p.find('\n') {
                    Some(at) => (LineStart, 0, at + 1),
                    None => (InLine, 0, p.len()),
                },
                Plain => (Plain, 0, p.len()),
                Closed => (Closed, p.len(), 0),
            };
            reasoning.push_str(&p[consumed..consumed + emit]);
            self.pending.drain(..consumed + emit);
            let progressed = consumed + emit > 0 || state != self.state;
            self.state = state;
            if !progressed || (self.pending.is_empty() && state != AfterHeader) {
                break;
            }
        }
        if !reasoning.is_empty() {
            out.push(Event::Reasoning(reasoning));
        }
    }

    /// The thinking ended: what waited is text after all, unless it was markup.
    fn flush(&mut self, out: &mut Vec<Event>) {
        let pending = std::mem::take(&mut self.pending);
        if matches!(
            self.state,
            MarkupState::Start | MarkupState::Plain | MarkupState::InLine
        ) && !pending.is_empty()
        {
            out.push(Event::Reasoning(pending));
        }
    }
}

/// The words of an error object (`code`, `detail`, `message`), if it is one.
fn error_words(error: &Value) -> Option<String> {
    if let Some(text) = error.as_str() {
        return Some(text.to_owned());
    }
    let words: Vec<String> = ["code", "error_code", "detail", "message"]
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
    Event::failed(FailureKind::SiteChanged, format!("{NAME}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::format::testing::{
        answer, assert_every_cut_in_pieces, assert_every_split, assert_no_answer_is_site_changed,
        kind_of, parse_whole, reasoning,
    };

    fn frame(data: &str) -> String {
        format!("data: {{\"type\":\"chat:completion\",\"data\":{data}}}\n\n")
    }

    fn delta(phase: &str, text: &str) -> String {
        frame(&serde_json::json!({"delta_content": text, "phase": phase}).to_string())
    }

    #[test]
    fn phases_and_the_usage_trap_at_every_split() {
        let body = [
            delta("thinking", "Let me "),
            delta("thinking", "think… "),
            delta("answer", "Hé"),
            frame(r#"{"phase":"tool_call","delta_content":"{\"q\":1}"}"#),
            frame(r#"{"usage":{"total_tokens":9},"phase":"other"}"#),
            // A phase this parser does not know: logged, not taken for answer.
            delta("mystery", "not the answer"),
            // The last text comes after the usage frame.
            delta("answer", "llo 🎉"),
            frame(r#"{"phase":"done","done":true}"#),
        ]
        .concat();
        let want = [reasoning("Let me think… "), answer("Héllo 🎉"), Event::Done];
        assert_every_split(&SITE, body.as_bytes(), &want);
    }

    #[test]
    fn reasoning_markup_is_taken_out_and_the_answer_starts_in_edit_content() {
        let body = [
            delta(
                "thinking",
                "<details type=\"reasoning\" done=\"false\">\n<summary>Thinking…</summary>\n> Let me",
            ),
            delta("thinking", " think.\n"),
            delta("thinking", "> Second 思考\n>\n> line"),
            frame(
                &serde_json::json!({"phase": "answer", "edit_index": 120, "edit_content":
                    "<details type=\"reasoning\" done=\"true\" duration=\"2\">\n<summary>Thought for 2 seconds</summary>\n> Let me think.\n> Second 思考\n>\n> line\n</details>\nHé"})
                .to_string(),
            ),
            delta("answer", "llo 🎉"),
            frame(r#"{"phase":"done","done":true}"#),
        ]
        .concat();
        let want = [
            reasoning("Let me think.\nSecond 思考\n\nline"),
            answer("Héllo 🎉"),
            Event::Done,
        ];
        assert_every_split(&SITE, body.as_bytes(), &want);
    }

    #[test]
    fn markup_cut_at_every_point_across_deltas() {
        let text = "<details type=\"reasoning\">\n<summary>T</summary>\n> a\n> b>c\n</details>\n";
        let done = delta("answer", "ok") + &frame(r#"{"phase":"done","done":true}"#);
        let want = [reasoning("a\nb>c\n"), answer("ok"), Event::Done];
        assert_every_cut_in_pieces(&SITE, text, |p| delta("thinking", p), &done, &want);
    }

    #[test]
    fn thinking_and_nothing_else_is_no_answer() {
        let body = delta("thinking", "Hmm") + &frame(r#"{"phase":"done","done":true}"#);
        assert_no_answer_is_site_changed(&SITE, body.as_bytes());
    }

    #[test]
    fn a_captcha_is_its_own_failure() {
        let body = frame(
            r#"{"error":{"code":"FRONTEND_CAPTCHA_REQUIRED","detail":"Please complete the verification"},"done":true}"#,
        );
        let events = parse_whole(&SITE, &body);
        assert_eq!(kind_of(&events[0]), FailureKind::Captcha);
        let events = parse_whole(&SITE, r#"{"detail":"FRONTEND_CAPTCHA_INVALID"}"#);
        assert_eq!(kind_of(&events[0]), FailureKind::Captcha);
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
