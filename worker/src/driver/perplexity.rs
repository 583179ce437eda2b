//! Perplexity (www.perplexity.ai).
//!
//! Known (xtekky/gpt4free `g4f/Provider/Perplexity.py`; recorded streams
//! kept as test fixtures by other public Perplexity clients): the answer streams
//! from `POST /rest/sse/perplexity_ask` as Server-Sent Events (`event: message`) whose
//! `data` carry `blocks`, each with an `intended_usage` and either a whole block
//! (`markdown_block` with `chunks` and `answer`, `plan_block` with `goals`) or a
//! `diff_block` naming the `field` it patches with RFC 6902 `patches`. The answer's
//! markdown comes *twice*, the same patches for two blocks, `ask_text_0_markdown` and
//! `ask_text`; the message's `structured_answer_block_usages` names the one that is the
//! answer. The work before the answer (what the site shows as its steps) is the
//! `goals` of a `plan_block` (in blocks such as `pro_search_steps` and `plan`), each
//! goal's `description` growing as it streams. A message with `final_sse_message: true`
//! and `status` `COMPLETED` (or an `end_of_stream` event) ends the stream; an earlier
//! `final_sse_message` with `status` `PENDING` does not.
//!
//! Assumed: that a `status` of `FAILED` or `BLOCKED` ends a failed or filtered answer
//! and an `error` event carries `code` and `message`; that when both `chunks` and
//! `answer` are there, the longer is the current text; every selector below.
//! Perplexity has no thinking switch of its own here: what thinks is the model the
//! account has chosen. Newer streams (2026-08) are reported to move the answer into a
//! `workflow_root` block; such a block's text is logged as unplaced, not read.
//!
//! Uploads: no public evidence of the page's upload control was found, so none is
//! named; set `attach_input` and `attach_done` under `[lanes.selectors]`.

use prq_protocol::worker::FailureKind;
use serde_json::Value;

use super::controls::ControlDefaults;
use super::format::json_patch::{self, pointer, Op};
use super::format::{failure_from_words, Event, Growing, SseBody, StreamParser, Unplaced};
use super::selectors::{AttachDefaults, Defaults};
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = super::Provider::Perplexity.name();

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://www.perplexity.ai/"),
    stream: UrlPattern::post("/rest/sse/perplexity_ask"),
    selectors: Defaults {
        prompt: &["#ask-input"],
        send: &["button[aria-label=\"Submit\"]"],
        stop: &["button[aria-label=\"Stop\"]"],
        thinking_toggle: &[],
        thinking_on: &[],
        logged_out: &["button[data-testid=\"login-button\"]"],
        controls: ControlDefaults::NONE,
        // No public evidence of its upload control yet (see the module doc).
        attach: AttachDefaults::UNKNOWN,
    },
    new_chat: NewChat::Reload,
    parser: || Box::<Parser>::default(),
};

/// The blocks that carry the answer, in the order one is chosen when the stream does not
/// name it: the same text comes in both.
const ANSWER_USAGES: [&str; 2] = ["ask_text_0_markdown", "ask_text"];

#[derive(Default)]
struct Parser {
    body: SseBody,
    /// Each block by its `intended_usage`, in the order they first came.
    blocks: Vec<(String, Value)>,
    /// The answer's block, as the stream names it (`structured_answer_block_usages`).
    named_answer: Option<String>,
    reasoning: Growing,
    answer: Growing,
    unplaced: Unplaced,
}

impl StreamParser for Parser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        self.body.push(bytes);
        while let Some(event) = self.body.next_event() {
            match event.event.as_deref() {
                None | Some("message") => self.message(&event.data, out),
                Some("end_of_stream") => out.push(Event::Done),
                Some("error") => {
                    let error: Value = serde_json::from_str(&event.data).unwrap_or_default();
                    let words = [&error["code"], &error["message"]]
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(": ");
                    out.push(failure_from_words(
                        NAME,
                        if words.is_empty() {
                            &event.data
                        } else {
                            &words
                        },
                    ));
                }
                Some(other) => tracing::trace!(event = other, "ignored"),
            }
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        if let Some(document) = self.body.plain_json() {
            let words = document["error"]
                .as_str()
                .or(document["detail"].as_str())
                .or(document["message"].as_str())
                .map_or_else(|| document.to_string(), str::to_owned);
            out.push(failure_from_words(NAME, &words));
        }
    }
}

impl Parser {
    fn message(&mut self, data: &str, out: &mut Vec<Event>) {
        let message: Value = match serde_json::from_str(data) {
            Ok(message) => message,
            Err(e) => return out.push(changed(&format!("a message is not JSON ({e})"))),
        };
        if let Some(usage) = message["structured_answer_block_usages"][0].as_str() {
            self.named_answer = Some(usage.to_owned());
        }
        for block in message["blocks"].as_array().into_iter().flatten() {
            if let Err(e) = self.block(block) {
                return out.push(changed(&format!("a block does not apply ({e})")));
            }
        }
        let (reasoning, answer) = self.texts();
        out.extend(self.reasoning.next(&reasoning).map(Event::Reasoning));
        out.extend(self.answer.next(&answer).map(Event::Answer));
        match message["status"].as_str() {
            Some("FAILED") => out.push(Event::failed(
                FailureKind::SiteError,
                format!("{NAME}: the answer failed (status FAILED)"),
            )),
            Some("BLOCKED") => out.push(Event::failed(
                FailureKind::ContentFiltered,
                format!("{NAME}: the answer was blocked (status BLOCKED)"),
            )),
            // An early final message still `PENDING` carries only telemetry.
            Some("PENDING") => {}
            _ if message["final_sse_message"] == true => out.push(Event::Done),
            _ => {}
        }
    }

    /// Takes in one block: a whole block (`markdown_block`, `plan_block`, …) replaces its
    /// field, a diff block patches it.
    fn block(&mut self, block: &Value) -> Result<(), String> {
        let usage = block["intended_usage"].as_str().unwrap_or("").to_owned();
        let index = match self.blocks.iter().position(|(u, _)| *u == usage) {
            Some(index) => index,
            None => {
                self.blocks.push((usage, Value::Object(Default::default())));
                self.blocks.len() - 1
            }
        };
        let doc = &mut self.blocks[index].1;
        let whole = block.as_object().into_iter().flatten();
        for (field, value) in whole.filter(|(f, _)| f.ends_with("_block") && *f != "diff_block") {
            doc[field.as_str()] = value.clone();
        }
        if let Some(diff) = block.get("diff_block") {
            let field = diff["field"]
                .as_str()
                .ok_or("a diff_block without a field")?;
            let target = &mut doc[field];
            for patch in diff["patches"].as_array().into_iter().flatten() {
                let op = match patch["op"].as_str() {
                    Some("add") => Op::Add,
                    // Some recorded patches leave `op` out for a whole new value.
                    Some("replace") | None => Op::Replace,
                    Some("remove") => Op::Remove,
                    other => return Err(format!("unknown op {other:?}")),
                };
                let path = pointer(patch["path"].as_str().unwrap_or(""));
                json_patch::apply(target, op, &path, patch["value"].clone())?;
            }
        }
        Ok(())
    }

    /// The reasoning and the answer as the blocks have them now: the plan's goals, and
    /// the one answer block's markdown.
    fn texts(&mut self) -> (String, String) {
        let answer_usage = self.answer_usage();
        let mut goals = Vec::new();
        let mut answer = String::new();
        for (usage, doc) in &self.blocks {
            for goal in doc["plan_block"]["goals"].as_array().into_iter().flatten() {
                let text = goal["description"].as_str().or(goal.as_str()).unwrap_or("");
                if !text.is_empty() {
                    goals.push(text);
                }
            }
            let markdown = markdown_text(&doc["markdown_block"]);
            if Some(usage.as_str()) == answer_usage.as_deref() {
                answer = markdown;
            } else if !markdown.is_empty() && !ANSWER_USAGES.contains(&usage.as_str()) {
                self.unplaced.text_in(NAME, "intended_usage", usage);
            }
        }
        (goals.join("\n"), answer)
    }

    /// The block whose markdown is the answer: the one the stream names, else the first
    /// of [`ANSWER_USAGES`] that has come.
    fn answer_usage(&self) -> Option<String> {
        let has = |usage: &str| self.blocks.iter().any(|(u, _)| u == usage);
        self.named_answer
            .clone()
            .filter(|usage| has(usage))
            .or_else(|| {
                ANSWER_USAGES
                    .into_iter()
                    .find(|usage| has(usage))
                    .map(str::to_owned)
            })
    }
}

/// A markdown block's text: its `chunks` joined, or its whole `answer`, whichever has
/// more (a stream may patch either).
fn markdown_text(markdown: &Value) -> String {
    let chunks: String = markdown["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let whole = markdown["answer"].as_str().unwrap_or("");
    if whole.len() >= chunks.len() {
        whole.to_owned()
    } else {
        chunks
    }
}

fn changed(what: &str) -> Event {
    Event::failed(FailureKind::SiteChanged, format!("{NAME}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::format::testing::{
        answer, assert_every_split, assert_no_answer_is_site_changed, kind_of, parse_whole,
        reasoning,
    };

    fn message(json: &str) -> String {
        format!("event: message\ndata: {json}\n\n")
    }

    /// The same patch for both answer blocks, as the site sends it.
    fn doubled(patches: &str) -> String {
        message(&format!(
            r#"{{"status":"PENDING","structured_answer_block_usages":["ask_text_0_markdown"],"blocks":[{{"intended_usage":"ask_text_0_markdown","diff_block":{{"field":"markdown_block","patches":{patches}}}}},{{"intended_usage":"ask_text","diff_block":{{"field":"markdown_block","patches":{patches}}}}}]}}"#
        ))
    }

    #[test]
    fn plan_goals_then_a_doubled_answer_at_every_split() {
        let body = [
            message(r#"{"status":"PENDING","blocks":[{"intended_usage":"pro_search_steps","plan_block":{"progress":"IN_PROGRESS","goals":[],"steps":[{"step_type":"INITIAL_QUERY","initial_query_content":{"query":"hi"}}]}}]}"#),
            message(r#"{"status":"PENDING","blocks":[{"intended_usage":"pro_search_steps","diff_block":{"field":"plan_block","patches":[{"op":"add","path":"/goals/0","value":{"id":"g0","description":"Hmm","final":false}}]}}]}"#),
            message(r#"{"status":"PENDING","blocks":[{"intended_usage":"pro_search_steps","diff_block":{"field":"plan_block","patches":[{"op":"replace","path":"/goals/0/description","value":"Hmm… é"}]}}]}"#),
            doubled(r#"[{"op":"replace","path":"","value":{"progress":"IN_PROGRESS","chunks":["Hé"],"answer":""}}]"#),
            doubled(r#"[{"op":"add","path":"/chunks/-","value":"llo 日本"}]"#),
            doubled(r#"[{"op":"add","path":"/chunks/2","value":" 🎉"}]"#),
            message(r#"{"status":"PENDING","final_sse_message":true,"telemetry_data":{}}"#),
            message(r#"{"status":"COMPLETED","final_sse_message":true,"structured_answer_block_usages":["ask_text_0_markdown"],"blocks":[{"intended_usage":"ask_text_0_markdown","markdown_block":{"progress":"DONE","chunks":["Hé","llo 日本"," 🎉"],"answer":"Héllo 日本 🎉"}},{"intended_usage":"ask_text","markdown_block":{"progress":"DONE","chunks":["Hé","llo 日本"," 🎉"],"answer":"Héllo 日本 🎉"}}]}"#),
            "event: end_of_stream\ndata: {}\n\n".to_owned(),
        ]
        .concat();
        let want = [reasoning("Hmm… é"), answer("Héllo 日本 🎉"), Event::Done];
        assert_every_split(&SITE, body.as_bytes(), &want);
    }

    /// A recorded session quoted publicly starts this way: the first message carries a
    /// whole plan block whose goals are already there, patched after.
    #[test]
    fn goals_of_a_whole_plan_block_are_reasoning_too() {
        let body = [
            message(r#"{"status":"PENDING","blocks":[{"intended_usage":"pro_search_steps","plan_block":{"progress":"IN_PROGRESS","goals":[{"id":"g0","description":"Looking up 日本","final":false}]}}]}"#),
            message(r#"{"status":"PENDING","blocks":[{"intended_usage":"pro_search_steps","diff_block":{"field":"plan_block","patches":[{"op":"replace","path":"/goals/0/description","value":"Looking up 日本 🎉"}]}}]}"#),
            doubled(r#"[{"op":"replace","path":"","value":{"progress":"IN_PROGRESS","chunks":["Done"],"answer":""}}]"#),
            message(r#"{"status":"COMPLETED","final_sse_message":true}"#),
        ]
        .concat();
        let want = [reasoning("Looking up 日本 🎉"), answer("Done"), Event::Done];
        assert_eq!(parse_whole(&SITE, &body), want);
    }

    #[test]
    fn without_the_naming_the_markdown_block_wins_and_the_other_is_not_added() {
        let patches = r#"[{"op":"add","path":"/chunks/-","value":"One"}]"#;
        let both = format!(
            r#"{{"blocks":[{{"intended_usage":"ask_text","diff_block":{{"field":"markdown_block","patches":{patches}}}}},{{"intended_usage":"ask_text_0_markdown","diff_block":{{"field":"markdown_block","patches":{patches}}}}}]}}"#
        );
        let body = message(&both) + &message(r#"{"status":"COMPLETED","final_sse_message":true}"#);
        assert_eq!(parse_whole(&SITE, &body), vec![answer("One"), Event::Done]);
        // A stream with only the plain block (older streams) reads the same.
        let body = message(
            r#"{"blocks":[{"intended_usage":"ask_text","markdown_block":{"chunks":["One"]}}]}"#,
        ) + &message(r#"{"status":"COMPLETED","final_sse_message":true}"#);
        assert_eq!(parse_whole(&SITE, &body), vec![answer("One"), Event::Done]);
    }

    #[test]
    fn an_answer_replaced_whole_grows_by_its_new_tail() {
        let body = [
            message(r#"{"blocks":[{"intended_usage":"ask_text","diff_block":{"field":"markdown_block","patches":[{"op":"replace","path":"/answer","value":"One"}]}}]}"#),
            message(r#"{"blocks":[{"intended_usage":"ask_text","diff_block":{"field":"markdown_block","patches":[{"op":"replace","path":"/answer","value":"One two"}]}}]}"#),
        ]
        .concat();
        // No final message: the answer so far, then the stream ended without its end.
        assert_eq!(parse_whole(&SITE, &body), vec![answer("One two")]);
    }

    #[test]
    fn a_stream_of_steps_only_is_no_answer() {
        let body = [
            message(r#"{"status":"PENDING","blocks":[{"intended_usage":"plan","plan_block":{"goals":[{"description":"Searching"}]}}]}"#),
            message(r#"{"status":"PENDING","blocks":[{"intended_usage":"workflow_root","markdown_block":{"answer":"moved here"}}]}"#),
            message(r#"{"status":"COMPLETED","final_sse_message":true,"blocks":[]}"#),
        ]
        .concat();
        assert_no_answer_is_site_changed(&SITE, body.as_bytes());
    }

    #[test]
    fn failures() {
        let blocked = message(r#"{"status":"BLOCKED","final_sse_message":true}"#);
        assert_eq!(
            kind_of(&parse_whole(&SITE, &blocked)[0]),
            FailureKind::ContentFiltered
        );
        let limit = "event: error\ndata: {\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit exceeded\"}\n\n";
        assert_eq!(
            kind_of(&parse_whole(&SITE, limit)[0]),
            FailureKind::RateLimited
        );
        let bad = message(
            r#"{"blocks":[{"intended_usage":"ask_text","diff_block":{"field":"markdown_block","patches":[{"op":"move","path":"/a"}]}}]}"#,
        );
        assert_eq!(
            kind_of(&parse_whole(&SITE, &bad)[0]),
            FailureKind::SiteChanged
        );
        let refusal = r#"{"error":"Please sign in to continue"}"#;
        assert_eq!(
            kind_of(&parse_whole(&SITE, refusal)[0]),
            FailureKind::NotLoggedIn
        );
    }
}
