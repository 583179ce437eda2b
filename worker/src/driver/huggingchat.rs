//! HuggingChat (huggingface.co/chat).
//!
//! Known (the site's open-source code, huggingface/chat-ui:
//! `src/lib/types/MessageUpdate.ts`, `src/routes/conversation/[id]/+server.ts`,
//! `src/lib/server/endpoints/openai/openAIChatToTextGenerationStream.ts`,
//! `src/lib/server/textGeneration/generate.ts`, `chart/env/prod.yaml`): sending creates
//! a conversation and posts the message to `/chat/conversation/<id>`, whose response is
//! a stream of JSON objects one after another (one per line, `stream` tokens padded to
//! 16 characters with NULs); each has a `type`: `stream` carries answer text in
//! `token`, `finalAnswer` ends the answer, `status` with `status` `error` carries a
//! failure in `message`; `title`, `webSearch`, `tool`, `file`, `routerMetadata` and the
//! like are the site's own. The production models (served through its OpenAI-style
//! endpoint) send their reasoning *inside* the `stream` tokens, wrapped in
//! `<think>…</think>`, the tags cut wherever the tokens are; `reasoning` updates
//! (`subtype` `stream`, text in `token`) come only from models configured with
//! reasoning tokens. Both are read: think blocks are taken out of the answer into the
//! reasoning, and the whitespace after a think block is not answer.
//!
//! Assumed: every selector below; that a failure's words say whether it is a login, a
//! limit or a filter. HuggingChat has no thinking switch: what thinks is the model the
//! account has chosen.
//!
//! Uploads: no public evidence of the page's upload control was found, so none is
//! named; set `attach_input` and `attach_done` under `[lanes.selectors]`.

use prq_protocol::worker::FailureKind;
use serde_json::Value;

use super::controls::ControlDefaults;
use super::format::json_values::JsonValues;
use super::format::{failure_from_words, Event, StreamParser, Unplaced};
use super::selectors::{AttachDefaults, Defaults};
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = super::Provider::HuggingChat.name();

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://huggingface.co/chat/"),
    stream: UrlPattern::post("/chat/conversation/*"),
    selectors: Defaults {
        prompt: &["form textarea[placeholder]"],
        send: &["button[name=\"submit\"]"],
        stop: &["button[aria-label=\"Stop generating\"]"],
        thinking_toggle: &[],
        thinking_on: &[],
        logged_out: &["a[href$=\"/login\"], form[action$=\"/login\"]"],
        controls: ControlDefaults::NONE,
        // No public evidence of its upload control yet (see the module doc).
        attach: AttachDefaults::UNKNOWN,
    },
    new_chat: NewChat::Reload,
    parser: || {
        Box::new(Parser {
            values: JsonValues::top_level(),
            think: ThinkTags::default(),
            unplaced: Unplaced::default(),
        })
    },
};

struct Parser {
    values: JsonValues,
    think: ThinkTags,
    unplaced: Unplaced,
}

impl StreamParser for Parser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        let Self {
            values,
            think,
            unplaced,
        } = self;
        if let Err(e) = values.feed(bytes, |update| update_event(&update, think, unplaced, out)) {
            out.push(Event::failed(
                FailureKind::SiteChanged,
                format!("{NAME}: its stream is not JSON objects ({e})"),
            ));
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        self.think.flush(out);
        if self.values.incomplete() {
            out.push(Event::failed(
                FailureKind::SiteError,
                format!("{NAME}: the stream broke off inside an update"),
            ));
        }
    }
}

/// The update types the site sends that carry no answer text of their own.
const SITE_OWN: [&str; 7] = [
    "status",
    "title",
    "webSearch",
    "tool",
    "file",
    "routerMetadata",
    "elicitation",
];

/// What one update of the stream means.
fn update_event(
    update: &Value,
    think: &mut ThinkTags,
    unplaced: &mut Unplaced,
    out: &mut Vec<Event>,
) {
    // Tokens may be padded to a fixed length with NULs, so that their length does not
    // leak through compression.
    let token = || {
        let token = update["token"].as_str().unwrap_or("").replace('\0', "");
        (!token.is_empty()).then_some(token)
    };
    match update["type"].as_str() {
        Some("stream") => {
            if let Some(token) = token() {
                think.push(&token, out);
            }
        }
        Some("reasoning") if update["subtype"] == "stream" => {
            out.extend(token().map(Event::Reasoning))
        }
        Some("finalAnswer") => {
            think.flush(out);
            out.push(Event::Done);
        }
        Some("status") if update["status"] == "error" => {
            let message = update["message"].as_str().unwrap_or("an error");
            out.push(failure_from_words(NAME, message));
        }
        // A refusal as one plain object (`{"message": ...}`), not an update.
        None if update["message"].is_string() => {
            out.push(failure_from_words(
                NAME,
                update["message"].as_str().unwrap_or(""),
            ));
        }
        Some(kind) if !SITE_OWN.contains(&kind) && kind != "reasoning" && token().is_some() => {
            unplaced.text_in(NAME, "type", kind)
        }
        _ => {}
    }
}

/// Splits answer tokens at `<think>` and `</think>`: what is between is reasoning. A
/// tag may be cut across tokens, so the end of a token that could begin a tag waits for
/// the next one.
#[derive(Debug, Default)]
struct ThinkTags {
    inside: bool,
    /// The end of the text so far that may be the start of the next tag.
    pending: String,
    /// A think block just closed: the whitespace that follows is not answer.
    after_block: bool,
}

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

impl ThinkTags {
    fn push(&mut self, token: &str, out: &mut Vec<Event>) {
        let mut text = std::mem::take(&mut self.pending);
        text.push_str(token);
        let mut rest = text.as_str();
        loop {
            let tag = if self.inside { CLOSE } else { OPEN };
            if let Some(at) = rest.find(tag) {
                self.emit(&rest[..at], out);
                self.inside = !self.inside;
                self.after_block = !self.inside;
                rest = &rest[at + tag.len()..];
                continue;
            }
            // Keep back the longest end of `rest` that begins the tag.
            let keep = (1..tag.len().min(rest.len() + 1))
                .rev()
                .find(|&n| {
                    rest.is_char_boundary(rest.len() - n)
                        && tag.starts_with(&rest[rest.len() - n..])
                })
                .unwrap_or(0);
            self.emit(&rest[..rest.len() - keep], out);
            self.pending = rest[rest.len() - keep..].to_owned();
            return;
        }
    }

    /// The stream ended: what was kept back is text after all.
    fn flush(&mut self, out: &mut Vec<Event>) {
        let pending = std::mem::take(&mut self.pending);
        self.emit(&pending, out);
    }

    fn emit(&mut self, text: &str, out: &mut Vec<Event>) {
        if self.inside {
            if !text.is_empty() {
                out.push(Event::Reasoning(text.to_owned()));
            }
            return;
        }
        let text = if self.after_block {
            let trimmed = text.trim_start();
            if !trimmed.is_empty() {
                self.after_block = false;
            }
            trimmed
        } else {
            text
        };
        if !text.is_empty() {
            out.push(Event::Answer(text.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::format::testing::{
        answer, assert_every_cut_in_pieces, assert_every_split, assert_no_answer_is_site_changed,
        kind_of, parse_whole, reasoning,
    };

    fn stream(token: &str) -> String {
        let padded = format!("{token:\0<16}");
        format!(
            "{}\n",
            serde_json::json!({"type": "stream", "token": padded})
        )
    }

    #[test]
    fn updates_one_after_another_at_every_split() {
        let body = concat!(
            "{\"type\":\"status\",\"status\":\"started\"}\n",
            "{\"type\":\"reasoning\",\"subtype\":\"stream\",\"token\":\"Hmm\"}\n",
            "{\"type\":\"reasoning\",\"subtype\":\"status\",\"status\":\"Done in 2s\"}\n",
            "{\"type\":\"stream\",\"token\":\"Hé\\u0000\\u0000\\u0000\"}\n",
            "{\"type\":\"status\",\"status\":\"keepAlive\"}",
            "{\"type\":\"stream\",\"token\":\"llo 日本 🎉\"}\n",
            "{\"type\":\"title\",\"title\":\"Greeting\"}\n",
            "{\"type\":\"finalAnswer\",\"text\":\"Héllo 日本 🎉\",\"interrupted\":false}\n",
        );
        let want = [reasoning("Hmm"), answer("Héllo 日本 🎉"), Event::Done];
        assert_every_split(&SITE, body.as_bytes(), &want);
    }

    #[test]
    fn think_tags_in_stream_tokens_become_reasoning_at_every_split() {
        let tokens = [
            "<think>",
            "Let me",
            " think — 思考",
            "中 🤔.",
            "</think>",
            "\n\n",
            "Héllo",
            " 日本",
            " 🎉",
        ];
        let mut body: String = tokens.iter().map(|t| stream(t)).collect();
        body.push_str("{\"type\":\"finalAnswer\",\"text\":\"\",\"interrupted\":false}\n");
        let want = [
            reasoning("Let me think — 思考中 🤔."),
            answer("Héllo 日本 🎉"),
            Event::Done,
        ];
        assert_every_split(&SITE, body.as_bytes(), &want);
    }

    #[test]
    fn a_tag_cut_at_every_point_across_tokens() {
        let text = "<think>Hm… é</think>\n\nAnswer <b>日本</b>";
        let want = [
            reasoning("Hm… é"),
            answer("Answer <b>日本</b>"),
            Event::Done,
        ];
        let done = "{\"type\":\"finalAnswer\"}\n";
        assert_every_cut_in_pieces(&SITE, text, stream, done, &want);
    }

    #[test]
    fn a_lone_angle_bracket_and_an_unclosed_block() {
        let body = stream("1 <") + &stream(" 2") + "{\"type\":\"finalAnswer\"}\n";
        assert_eq!(
            parse_whole(&SITE, &body),
            vec![answer("1 < 2"), Event::Done]
        );
        let body = stream("<thi");
        // Kept back as a possible tag, then given out when the stream ends without it.
        assert_eq!(parse_whole(&SITE, &body)[0], answer("<thi"),);
    }

    #[test]
    fn reasoning_and_nothing_else_is_no_answer() {
        let body = stream("<think>Hmm") + &stream("</think>") + "{\"type\":\"finalAnswer\"}\n";
        assert_no_answer_is_site_changed(&SITE, body.as_bytes());
    }

    #[test]
    fn errors() {
        let body = "{\"type\":\"status\",\"status\":\"error\",\"message\":\"You are sending too many messages. Try again later.\"}\n";
        assert_eq!(
            kind_of(&parse_whole(&SITE, body)[0]),
            FailureKind::RateLimited
        );
        let body = "{\"message\":\"You need to log in to use this model\"}";
        assert_eq!(
            kind_of(&parse_whole(&SITE, body)[0]),
            FailureKind::NotLoggedIn
        );
        assert_eq!(
            kind_of(&parse_whole(&SITE, "data: {}\n\n")[0]),
            FailureKind::SiteChanged
        );
        assert_eq!(
            kind_of(&parse_whole(&SITE, "{\"type\":\"stream\",\"tok")[0]),
            FailureKind::SiteError
        );
    }
}
