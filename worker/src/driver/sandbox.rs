//! The sandbox: prq's own chat site (served by the supervisor, see
//! `supervisor/src/sandbox`). Its selectors, the path its answer streams from, and its
//! events and what they mean. The site's URL is always the lane's `base_url`.

use prq_protocol::worker::FailureKind;
use serde::Deserialize;

use super::controls::ControlDefaults;
use super::format::{Event, SseBody, StreamParser};
use super::selectors::{AttachDefaults, Defaults};
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

pub static SITE: Site = Site {
    name: super::Provider::Sandbox.name(),
    url: None,
    stream: UrlPattern::post("/api/chat"),
    selectors: Defaults {
        prompt: &["textarea#prompt"],
        send: &["button#send"],
        stop: &["button#stop"],
        thinking_toggle: &["input#thinking"],
        thinking_on: &["input#thinking:checked"],
        logged_out: &[],
        controls: ControlDefaults {
            model_menu: &["button#model-button"],
            model_current: &["#model-name"],
            model_option: &["#model-menu [role=\"option\"]"],
            search_toggle: &["input#search"],
            search_on: &["input#search:checked"],
            temperature: &["input#temperature"],
            delete_chat: &["#chat-list .chat.active button.delete-chat"],
            temporary_toggle: &["input#temporary"],
            temporary_on: &["input#temporary:checked"],
            ..ControlDefaults::NONE
        },
        attach: AttachDefaults {
            input: &["input#attach-input"],
            button: &["button#attach"],
            done: &["#chips .chip[data-state=\"uploaded\"]"],
            error: &["#chips .attach-error"],
        },
    },
    // The sandbox keeps no conversation: each send is a chat of its own.
    new_chat: NewChat::Keep,
    parser: || Box::<Parser>::default(),
};

/// One `data:` event of the page's stream.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum SiteEvent {
    Start {
        stream_id: u64,
    },
    Reasoning {
        text: String,
    },
    Answer {
        text: String,
    },
    Done,
    Error {
        message: String,
    },
    /// The page crashes its own renderer after this.
    Crash,
    #[serde(other)]
    Other,
}

#[derive(Default)]
struct Parser {
    body: SseBody,
}

impl StreamParser for Parser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        self.body.push(bytes);
        while let Some(event) = self.body.next_event() {
            let event = match serde_json::from_str::<SiteEvent>(&event.data) {
                Ok(event) => event,
                Err(e) => {
                    out.push(Event::failed(
                        FailureKind::SiteChanged,
                        format!("sandbox: an event of its stream does not parse ({e})"),
                    ));
                    continue;
                }
            };
            match event {
                SiteEvent::Start { stream_id } => tracing::debug!(stream_id, "stream started"),
                SiteEvent::Reasoning { text } => out.push(Event::Reasoning(text)),
                SiteEvent::Answer { text } => out.push(Event::Answer(text)),
                SiteEvent::Done => out.push(Event::Done),
                // The site's message names it already ("sandbox: ...").
                SiteEvent::Error { message } => {
                    out.push(Event::failed(FailureKind::SiteError, message))
                }
                SiteEvent::Crash => out.push(Event::Crashing),
                SiteEvent::Other => tracing::debug!("an event of an unknown type, ignored"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::format::testing::{
        answer, assert_every_split, assert_no_answer_is_site_changed, reasoning,
    };

    #[test]
    fn reasoning_answer_and_end_at_every_split() {
        let body = "data: {\"type\":\"start\",\"stream_id\":1}\n\n\
                    data: {\"type\":\"reasoning\",\"text\":\"Hmm… \"}\n\n\
                    data: {\"type\":\"answer\",\"text\":\"日本 🎉\"}\n\n\
                    data: {\"type\":\"done\"}\n\n";
        let want = [reasoning("Hmm… "), answer("日本 🎉"), Event::Done];
        assert_every_split(&SITE, body.as_bytes(), &want);
    }

    #[test]
    fn the_sites_error_and_crash() {
        // The first end is the end: nothing after the error counts.
        let body = "data: {\"type\":\"answer\",\"text\":\"a\"}\n\n\
                    data: {\"type\":\"error\",\"message\":\"sandbox: failure injected after 1 words\"}\n\n\
                    data: {\"type\":\"crash\"}\n\n";
        let want = [
            answer("a"),
            Event::failed(
                FailureKind::SiteError,
                "sandbox: failure injected after 1 words",
            ),
        ];
        assert_every_split(&SITE, body.as_bytes(), &want);
        let crash = "data: {\"type\":\"crash\"}\n\n";
        assert_every_split(&SITE, crash.as_bytes(), &[Event::Crashing]);
    }

    #[test]
    fn a_stream_without_an_answer_is_a_changed_site() {
        let body = "data: {\"type\":\"start\",\"stream_id\":1}\n\n\
                    data: {\"type\":\"reasoning\",\"text\":\"Hmm\"}\n\n\
                    data: {\"type\":\"done\"}\n\n";
        assert_no_answer_is_site_changed(&SITE, body.as_bytes());
    }
}
