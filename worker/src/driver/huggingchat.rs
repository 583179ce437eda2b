//! HuggingChat (huggingface.co/chat).
//!
//! Known (FIELD-NOTES, and the site's open-source code, huggingface/chat-ui): sending
//! creates a conversation and posts the message to `/chat/conversation/<id>`, whose
//! response is a stream of JSON objects one after another (one per line, stream tokens
//! possibly padded with NUL characters); each has a `type`: `stream` carries answer
//! text in `token`, `reasoning` with `subtype` `stream` carries reasoning in `token`,
//! `finalAnswer` ends the answer, `status` with `status` `error` carries a failure in
//! `message`; `title`, `webSearch`, `tool`, `file` and the like are the site's own.
//!
//! Assumed: every selector below; that a failure's words say whether it is a login, a
//! limit or a filter. HuggingChat has no thinking switch: what thinks is the model the
//! account has chosen.

use prq_protocol::worker::FailureKind;
use serde_json::Value;

use super::format::json_values::JsonValues;
use super::format::{failure_from_words, Event, StreamParser};
use super::selectors::Defaults;
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = "huggingchat";

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://huggingface.co/chat/"),
    stream: UrlPattern::post("/chat/conversation/*"),
    selectors: Defaults {
        prompt: "form textarea[placeholder]",
        send: "button[name=\"submit\"]",
        stop: Some("button[aria-label=\"Stop generating\"]"),
        thinking_toggle: None,
        thinking_on: None,
        logged_out: Some("a[href$=\"/login\"], form[action$=\"/login\"]"),
    },
    new_chat: NewChat::Reload,
    parser: || Box::new(Parser(JsonValues::top_level())),
};

struct Parser(JsonValues);

impl StreamParser for Parser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        if let Err(e) = self.0.feed(bytes, |update| update_event(&update, out)) {
            out.push(Event::failed(
                FailureKind::SiteChanged,
                format!("{NAME}: its stream is not JSON objects ({e})"),
            ));
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        if self.0.incomplete() {
            out.push(Event::failed(
                FailureKind::SiteError,
                format!("{NAME}: the stream broke off inside an update"),
            ));
        }
    }
}

/// What one update of the stream means.
fn update_event(update: &Value, out: &mut Vec<Event>) {
    // Tokens may be padded to a fixed length with NULs, so that their length does not
    // leak through compression.
    let token = || {
        let token = update["token"].as_str().unwrap_or("").replace('\0', "");
        (!token.is_empty()).then_some(token)
    };
    match update["type"].as_str() {
        Some("stream") => out.extend(token().map(Event::Answer)),
        Some("reasoning") if update["subtype"] == "stream" => {
            out.extend(token().map(Event::Reasoning))
        }
        Some("finalAnswer") => out.push(Event::Done),
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
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::format::testing::{
        answer, assert_every_split, kind_of, parse_whole, reasoning,
    };

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
