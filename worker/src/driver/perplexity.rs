//! Perplexity (www.perplexity.ai).
//!
//! Known (FIELD-NOTES, and public notes on the format): the answer streams from
//! `POST /rest/sse/perplexity_ask` as Server-Sent Events (`event: message`) whose `data`
//! carry `blocks`, each with an `intended_usage` and either a whole block
//! (`markdown_block` with `chunks` and `answer`) or a `diff_block` naming the `field` it
//! patches with RFC 6902 `patches`; the answer is the `ask_text` block's markdown;
//! a message with `final_sse_message: true` and `status` `COMPLETED` (or an
//! `end_of_stream` event) ends the stream.
//!
//! Assumed: that reasoning (from reasoning models) comes as blocks whose
//! `intended_usage` starts with `reasoning`, in the same markdown shape; that a
//! `status` of `FAILED` or `BLOCKED` ends a failed or filtered answer and an `error`
//! event carries `code` and `message`; every selector below. Perplexity has no
//! thinking switch of its own here: what thinks is the model the account has chosen.

use prq_protocol::worker::FailureKind;
use serde_json::Value;

use super::format::json_patch::{self, pointer, Op};
use super::format::{failure_from_words, Event, Growing, SseBody, StreamParser};
use super::selectors::Defaults;
use super::web::{NewChat, Site};
use crate::stream::UrlPattern;

const NAME: &str = "perplexity";

pub static SITE: Site = Site {
    name: NAME,
    url: Some("https://www.perplexity.ai/"),
    stream: UrlPattern::post("/rest/sse/perplexity_ask"),
    selectors: Defaults {
        prompt: "#ask-input",
        send: "button[aria-label=\"Submit\"]",
        stop: Some("button[aria-label=\"Stop\"]"),
        thinking_toggle: None,
        thinking_on: None,
        logged_out: Some("button[data-testid=\"login-button\"]"),
    },
    new_chat: NewChat::Reload,
    parser: || Box::<Parser>::default(),
};

const ANSWER_USAGE: &str = "ask_text";
const REASONING_USAGE: &str = "reasoning";

#[derive(Default)]
struct Parser {
    body: SseBody,
    /// Each block by its `intended_usage`, in the order they first came.
    blocks: Vec<(String, Value)>,
    reasoning: Growing,
    answer: Growing,
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
            _ if message["final_sse_message"] == true => out.push(Event::Done),
            _ => {}
        }
    }

    /// Takes in one block: a whole block replaces the field, a diff block patches it.
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
        if let Some(markdown) = block.get("markdown_block") {
            doc["markdown_block"] = markdown.clone();
        }
        if let Some(diff) = block.get("diff_block") {
            let field = diff["field"]
                .as_str()
                .ok_or("a diff_block without a field")?;
            let target = &mut doc[field];
            for patch in diff["patches"].as_array().into_iter().flatten() {
                let op = match patch["op"].as_str() {
                    Some("add") => Op::Add,
                    Some("replace") => Op::Replace,
                    Some("remove") => Op::Remove,
                    other => return Err(format!("unknown op {other:?}")),
                };
                let path = pointer(patch["path"].as_str().unwrap_or(""));
                json_patch::apply(target, op, &path, patch["value"].clone())?;
            }
        }
        Ok(())
    }

    /// The reasoning and the answer as the blocks have them now.
    fn texts(&self) -> (String, String) {
        let (mut reasoning, mut answer) = (String::new(), String::new());
        for (usage, doc) in &self.blocks {
            let text = if usage.starts_with(ANSWER_USAGE) {
                &mut answer
            } else if usage.starts_with(REASONING_USAGE) {
                &mut reasoning
            } else {
                continue;
            };
            let markdown = &doc["markdown_block"];
            match markdown["chunks"].as_array() {
                Some(chunks) if !chunks.is_empty() => chunks
                    .iter()
                    .filter_map(Value::as_str)
                    .for_each(|c| text.push_str(c)),
                _ => text.push_str(markdown["answer"].as_str().unwrap_or("")),
            }
        }
        (reasoning, answer)
    }
}

fn changed(what: &str) -> Event {
    Event::failed(FailureKind::SiteChanged, format!("{NAME}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::format::testing::{
        answer, assert_every_split, kind_of, parse_whole, reasoning,
    };

    fn message(json: &str) -> String {
        format!("event: message\ndata: {json}\n\n")
    }

    #[test]
    fn markdown_chunks_patched_in_at_every_split() {
        let body = [
            message(r#"{"status":"PENDING","blocks":[{"intended_usage":"plan","plan_block":{"goals":[]}}]}"#),
            message(r#"{"blocks":[{"intended_usage":"reasoning_steps","markdown_block":{"chunks":["Hmm… "],"progress":"IN_PROGRESS"}}]}"#),
            message(r#"{"blocks":[{"intended_usage":"ask_text","markdown_block":{"chunks":["Hé"],"answer":"Hé"}}]}"#),
            message(r#"{"blocks":[{"intended_usage":"ask_text","diff_block":{"field":"markdown_block","patches":[{"op":"add","path":"/chunks/-","value":"llo 日本"},{"op":"replace","path":"/answer","value":"Héllo 日本"}]}}]}"#),
            message(r#"{"blocks":[{"intended_usage":"ask_text","diff_block":{"field":"markdown_block","patches":[{"op":"add","path":"/chunks/2","value":" 🎉"}]}}]}"#),
            message(r#"{"status":"COMPLETED","final_sse_message":true,"blocks":[]}"#),
            "event: end_of_stream\ndata: {}\n\n".to_owned(),
        ]
        .concat();
        let want = [
            reasoning("Hmm… "),
            answer("Héllo 日本 🎉"),
            Event::Done,
            Event::Done,
        ];
        assert_every_split(SITE.parser, body.as_bytes(), &want);
    }

    #[test]
    fn an_answer_replaced_whole_grows_by_its_new_tail() {
        let body = [
            message(r#"{"blocks":[{"intended_usage":"ask_text","diff_block":{"field":"markdown_block","patches":[{"op":"replace","path":"/answer","value":"One"}]}}]}"#),
            message(r#"{"blocks":[{"intended_usage":"ask_text","diff_block":{"field":"markdown_block","patches":[{"op":"replace","path":"/answer","value":"One two"}]}}]}"#),
        ]
        .concat();
        assert_eq!(parse_whole(&SITE, &body), vec![answer("One two")]);
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
