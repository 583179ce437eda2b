//! Google AI Studio (aistudio.google.com).
//!
//! Known (public clients that read the same request, e.g.
//! CJackHwang/AIStudioProxyAPI and its forks, `stream/interceptors.py` and
//! `config/selectors.py`): a new chat is `/prompts/new_chat`; the answer streams from
//! `POST …/$rpc/google.internal.alkali.applications.makersuite.v1.MakerSuiteService/
//! GenerateContent` (on another host, `alkalimakersuite-pa.clients6.google.com`) as one
//! JSON array, after a `)]}'` prefix, whose elements arrive one by one; each element
//! holds candidates in positional ("JSPB") form, a candidate's content being
//! `[[part, …], "model"]`. A part of two elements, `[null, "text"]`, is answer text; a
//! longer part with text at index 1 is a thought (reasoning); a part with no text there
//! (a function call) is neither. The thinking switch is
//! `button[role="switch"][aria-label="Toggle thinking mode"]` (older pages:
//! `mat-slide-toggle[data-test-toggle="enable-thinking"]`); newer models show a
//! "Thinking level" select instead, which this driver does not set.
//!
//! The page's own controls (CJackHwang/AIstudioProxyAPI `config/selectors.py`): the
//! temperature is the `ms-slider` number input with `max="2"`, top_p the one with
//! `max="1"`, the output limit `input[aria-label="Maximum output tokens"]`, Google
//! Search grounding the switch in `div[data-test-id="searchAsAToolTooltip"]`, and the
//! picked model's name `[data-test-id="model-name"]` (older pages: `ms-model-selector
//! .model-selector-card .title`, as public userscripts read it). Assumed: what opens the
//! model list and what its entries are (`model_menu`, `model_option`), and that a
//! grounding switch is on with `aria-checked="true"`, as its thinking switch is.
//!
//! Assumed (no public evidence found): the positions beyond the text, taken from the
//! public Gemini API's field numbers: an element is `[candidates, prompt_feedback, …]`,
//! a candidate `[content, finish_reason, …]`; finish reasons 1 (stop) and 2 (length)
//! end the answer and the safety-like ones below filter it; a blocked prompt has a
//! block reason first in its prompt feedback; the end of the array ends the answer when
//! no finish reason did. Every selector below but the thinking switch (all of them can
//! be overridden under `[lanes.selectors]`).
//!
//! Uploads (AIStudioProxyAPI, `browser_utils/page_controller_modules/input.py` and
//! `config/selectors.py`): the prompt is filled first; the "Insert assets" button
//! (`button[data-test-id="add-media-button"]`, or by its `aria-label` "Insert assets…" /
//! older "Insert images…") opens a menu whose item `button[role="menuitem"]` labelled
//! "Upload a file" (older: "Upload File") holds a hidden `input[type="file"]` that takes
//! the files. Assumed: that the Run button stays disabled while a file uploads (that
//! client waits for nothing else), so no "uploaded" marker is named; a copyright dialog
//! it answers after some uploads is not handled here.

use prq_protocol::worker::FailureKind;
use serde_json::Value;

use super::controls::ControlDefaults;
use super::format::json_values::JsonValues;
use super::format::{Event, StreamParser};
use super::selectors::{AttachDefaults, Defaults};
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = super::Provider::AiStudio.name();

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://aistudio.google.com/prompts/new_chat"),
    stream: UrlPattern::post(
        "/$rpc/google.internal.alkali.applications.makersuite.v1.MakerSuiteService/GenerateContent",
    ),
    selectors: Defaults {
        prompt: &["ms-prompt-input-wrapper textarea"],
        send: &["button.run-button[aria-label=\"Run\"]"],
        stop: &["button.run-button[aria-label=\"Stop\"]"],
        thinking_toggle: &[
            "button[role=\"switch\"][aria-label=\"Toggle thinking mode\"]",
            "mat-slide-toggle[data-test-toggle=\"enable-thinking\"] button[role=\"switch\"]",
        ],
        thinking_on: &[
            "button[role=\"switch\"][aria-label=\"Toggle thinking mode\"][aria-checked=\"true\"]",
            "mat-slide-toggle[data-test-toggle=\"enable-thinking\"] button[role=\"switch\"][aria-checked=\"true\"]",
        ],
        logged_out: &["input[type=\"email\"]"],
        // The settings, the grounding switch and the model's name: see the module doc.
        controls: ControlDefaults {
            model_menu: &["ms-model-selector button", "[data-test-id=\"model-name\"]"],
            model_current: &[
                "[data-test-id=\"model-name\"]",
                "ms-model-selector .model-selector-card .title",
            ],
            model_option: &["ms-model-carousel-row .model-title-text", "[role=\"option\"]"],
            search_toggle: &["div[data-test-id=\"searchAsAToolTooltip\"] mat-slide-toggle button"],
            search_on: &[
                "div[data-test-id=\"searchAsAToolTooltip\"] mat-slide-toggle button[aria-checked=\"true\"]",
            ],
            temperature: &["ms-slider input[type=\"number\"][max=\"2\"]"],
            top_p: &["ms-slider input[type=\"number\"][max=\"1\"]"],
            max_output_tokens: &["input[aria-label=\"Maximum output tokens\"]"],
            ..ControlDefaults::NONE
        },
        attach: AttachDefaults {
            input: &[
                "div[role=\"menu\"] button[role=\"menuitem\"][aria-label=\"Upload a file\"] input[type=\"file\"]",
                "div[role=\"menu\"] button[role=\"menuitem\"][aria-label=\"Upload File\"] input[type=\"file\"]",
            ],
            button: &[
                "button[data-test-id=\"add-media-button\"]",
                "button[aria-label^=\"Insert assets\"]",
                "button[aria-label^=\"Insert images\"]",
            ],
            done: &[],
            error: &[],
        },
    },
    new_chat: NewChat::Reload,
    parser: || Box::new(Parser(JsonValues::array_elements(b")]}'"))),
};

/// Finish reasons that mean a filter stopped the answer: safety, recitation, a
/// blocklist, prohibited content, personal data.
const FILTERED: [i64; 5] = [3, 4, 7, 8, 9];

struct Parser(JsonValues);

impl StreamParser for Parser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        if let Err(e) = self.0.feed(bytes, |element| response(&element, out)) {
            out.push(Event::failed(
                FailureKind::SiteChanged,
                format!("{NAME}: its stream is not the JSON array it was ({e})"),
            ));
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        // The array closing is the end of the answer, when no finish reason said so.
        if self.0.closed() {
            out.push(Event::Done);
        }
    }
}

/// What one element (one Gemini response) means.
fn response(element: &Value, out: &mut Vec<Event>) {
    if let Some(reason) = element[1][0].as_i64() {
        return out.push(Event::failed(
            FailureKind::ContentFiltered,
            format!("{NAME}: the prompt was blocked (block reason {reason})"),
        ));
    }
    for candidate in element[0].as_array().into_iter().flatten() {
        for part in candidate[0][0].as_array().into_iter().flatten() {
            let Some(text) = part[1].as_str().filter(|t| !t.is_empty()) else {
                continue;
            };
            // `[null, text]` is the answer; anything longer that carries text, a thought.
            let is_answer = part.as_array().is_some_and(|p| p.len() == 2);
            out.push(if is_answer {
                Event::Answer(text.to_owned())
            } else {
                Event::Reasoning(text.to_owned())
            });
        }
        match candidate[1].as_i64() {
            None | Some(0) => {}
            Some(1 | 2) => out.push(Event::Done),
            Some(reason) if FILTERED.contains(&reason) => out.push(Event::failed(
                FailureKind::ContentFiltered,
                format!("{NAME}: a filter stopped the answer (finish reason {reason})"),
            )),
            Some(reason) => out.push(Event::failed(
                FailureKind::SiteError,
                format!("{NAME}: the answer ended early (finish reason {reason})"),
            )),
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

    /// A part: `[null, text]`, or a thought, a longer part (the flag where the Gemini
    /// API numbers it).
    fn part(text: &str, thought: bool) -> String {
        let flag = if thought {
            ",null,null,null,null,null,null,null,null,null,null,1"
        } else {
            ""
        };
        format!("[null,{}{flag}]", serde_json::to_string(text).unwrap())
    }

    fn element(parts: &[String], finish: Option<u8>) -> String {
        let finish = finish.map_or(String::new(), |f| format!(",{f}"));
        format!("[[[[[{}],\"model\"]{finish}]]]", parts.join(","))
    }

    #[test]
    fn thoughts_then_text_then_stop_at_every_split() {
        let body = format!(
            ")]}}'\n[{},\n{},\n{},\n{}]",
            element(&[part("Thinking… ", true)], None),
            element(&[part("é", true), part("日本", false)], None),
            element(&[part(" 🎉", false)], None),
            element(&[part("", false)], Some(1)),
        );
        let want = [reasoning("Thinking… é"), answer("日本 🎉"), Event::Done];
        assert_every_split(&SITE, body.as_bytes(), &want);
    }

    #[test]
    fn thoughts_alone_are_no_answer_and_a_function_call_is_neither() {
        let call = r#"[null,null,null,null,null,null,null,null,null,null,["lookup",[[]]]]"#;
        let body = format!(
            ")]}}'\n[{},\n{}]",
            element(&[part("Thinking…", true), call.to_owned()], None),
            element(&[part("", false)], Some(1)),
        );
        assert_no_answer_is_site_changed(&SITE, body.as_bytes());
    }

    #[test]
    fn filters_and_a_changed_format() {
        let body = format!(")]}}'\n[{}]", element(&[part("x", false)], Some(3)));
        let events = parse_whole(&SITE, &body);
        assert_eq!(events[0], answer("x"));
        assert_eq!(kind_of(&events[1]), FailureKind::ContentFiltered);
        let blocked = ")]}'\n[[null,[1]]]";
        assert_eq!(
            kind_of(&parse_whole(&SITE, blocked)[0]),
            FailureKind::ContentFiltered
        );
        assert_eq!(
            kind_of(&parse_whole(&SITE, "<!DOCTYPE html>")[0]),
            FailureKind::SiteChanged
        );
    }
}
