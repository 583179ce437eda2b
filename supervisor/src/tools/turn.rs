//! One answer as its client hears it: the request's events, read for tool calls or a
//! structured answer when the request asked for them ([`super::Plan`]), with the retry.
//!
//! A reply that breaks the format (a call that does not parse or validate, a required
//! call that did not come, JSON that does not validate) is asked for again, up to
//! `tool_retries` times (default once), saying what was wrong. The retry is a new
//! request to the same prefix carrying the conversation, the reply and the correction:
//! lanes open a new chat for every request, so "the same site chat" is the same
//! conversation typed again, not the site's own thread. A reply still wrong after the
//! retries reaches the client as text, with a note saying why.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::http::StatusCode;
use prq_protocol::worker::{ChatMessage, DeltaKind, RequestId, Role};

use super::check::{self, ToolCall};
use super::reader::{Piece, Reader, Unclosed};
use super::{prompt, Choice, Mode, Plan};
use crate::openai::ApiError;
use crate::runtime::{End, ReqEvent, Runtime, Submission, Ticket};

/// What the client hears next.
#[derive(Debug)]
pub enum Event {
    /// As the runtime sent it: the lane that took it, reasoning, answer text, the end.
    Req(ReqEvent),
    /// The reply's checked calls; the end follows.
    Calls(Vec<ToolCall>),
    /// The reply broke the format after every retry: it came as text, and this says
    /// why; the end follows.
    Note(String),
    /// The request cannot be answered as asked; nothing follows.
    Refused(ApiError),
}

/// The events of one answer.
pub struct Turn {
    ticket: Ticket,
    first_id: RequestId,
    tooled: Option<Tooled>,
    pending: VecDeque<Event>,
}

/// What a request with a plan needs beyond its ticket.
pub struct Tooled {
    rt: Arc<Runtime>,
    /// The conversation as submitted, grown by each retry.
    submission: Submission,
    retries_left: u32,
    reading: Reading,
}

/// The reading of the replies to one request: no I/O, so that it is tested (and
/// `prq_bench` times it) alone.
pub struct Reading {
    plan: Arc<Plan>,
    mode: Mode,
    attempt: Attempt,
    /// Answer text has gone to the client: a retry's text is then not sent again.
    text_sent: bool,
}

/// One reply being read.
#[derive(Default)]
struct Attempt {
    reader: Reader,
    /// The reply as the site wrote it.
    raw: String,
    /// Bytes of `raw` given to the client as text.
    given: usize,
    /// What stood between each call's tags.
    calls: Vec<String>,
    /// Text is not passed on (a retry after text went out).
    quiet: bool,
}

impl Tooled {
    /// The reading of a request's answer for `plan`; `None` when it asks for plain text.
    pub fn new(
        rt: Arc<Runtime>,
        plan: Arc<Plan>,
        submission: Submission,
        retries: u32,
    ) -> Option<Self> {
        Some(Self {
            rt,
            submission,
            retries_left: retries,
            reading: Reading::new(plan)?,
        })
    }

    /// Reads one event into `out`; a retry's ticket when the reply is asked for again.
    fn take(&mut self, event: ReqEvent, out: &mut VecDeque<Event>) -> Option<Ticket> {
        let problem = self.reading.take(event, out)?;
        if self.retries_left == 0 {
            self.reading.give_up(problem, out);
            return None;
        }
        self.retries_left -= 1;
        match self.retry(&problem) {
            Ok(ticket) => Some(ticket),
            Err(refusal) => {
                out.push_back(Event::Refused(refusal));
                None
            }
        }
    }

    /// Submits the conversation again with the reply and what was wrong with it.
    fn retry(&mut self, problem: &str) -> Result<Ticket, ApiError> {
        let messages = &mut self.submission.messages;
        messages.push(ChatMessage {
            role: Role::Assistant,
            content: self.reading.next_attempt(),
        });
        messages.push(ChatMessage {
            role: Role::User,
            content: prompt::correction(problem),
        });
        self.submission.meta.messages = messages.len();
        self.submission.meta.prompt_chars =
            messages.iter().map(|m| m.content.chars().count()).sum();
        Ok(self.rt.submit(self.submission.clone())?)
    }
}

impl Turn {
    pub fn new(ticket: Ticket, tooled: Option<Tooled>) -> Self {
        Self {
            first_id: ticket.id,
            ticket,
            tooled,
            pending: VecDeque::new(),
        }
    }

    /// The request's ID (a retry's request has another; the client knows this one).
    pub fn id(&self) -> RequestId {
        self.first_id
    }

    /// The ID of the request now answering (the retry's, after one).
    pub fn current(&self) -> RequestId {
        self.ticket.id
    }

    /// The next event; `None` when the runtime dropped the request without an end.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let event = self.ticket.events.recv().await?;
            self.take(event);
        }
    }

    /// The next event if one is there already.
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let event = self.ticket.events.try_recv().ok()?;
            self.take(event);
        }
    }

    fn take(&mut self, event: ReqEvent) {
        let Some(tooled) = &mut self.tooled else {
            self.pending.push_back(Event::Req(event));
            return;
        };
        if let Some(ticket) = tooled.take(event, &mut self.pending) {
            tracing::info!(
                request = self.first_id,
                retry = ticket.id,
                "the reply broke the tool format; asking again"
            );
            self.ticket = ticket;
        }
    }
}

impl Reading {
    /// `None` when `plan` asks for plain text.
    pub fn new(plan: Arc<Plan>) -> Option<Self> {
        Some(Self {
            mode: plan.mode()?,
            plan,
            attempt: Attempt::default(),
            text_sent: false,
        })
    }

    /// Reads one event of the current reply into `out`; at its end, what is wrong with
    /// it, if anything.
    pub fn take(&mut self, event: ReqEvent, out: &mut VecDeque<Event>) -> Option<String> {
        match event {
            ReqEvent::Delta {
                kind: DeltaKind::Answer,
                text,
            } => {
                self.attempt.raw.push_str(&text);
                if self.mode == Mode::Calls {
                    let mut pieces = Vec::new();
                    self.attempt.reader.push(&text, &mut pieces);
                    self.pieces(pieces, out);
                }
                None
            }
            ReqEvent::End(End::Completed) => self.settle(out).err(),
            other => {
                out.push_back(Event::Req(other));
                None
            }
        }
    }

    fn pieces(&mut self, pieces: Vec<Piece>, out: &mut VecDeque<Event>) {
        for piece in pieces {
            match piece {
                Piece::Text(text) => self.give(text, out),
                Piece::Call(call) => self.attempt.calls.push(call),
            }
        }
    }

    fn give(&mut self, text: String, out: &mut VecDeque<Event>) {
        if self.attempt.quiet || text.is_empty() {
            return;
        }
        self.attempt.given += text.len();
        self.text_sent = true;
        out.push_back(Event::Req(ReqEvent::Delta {
            kind: DeltaKind::Answer,
            text,
        }));
    }

    /// The reply is complete: its calls or its JSON go out and the end follows, or it
    /// says what is wrong.
    fn settle(&mut self, out: &mut VecDeque<Event>) -> Result<(), String> {
        let calls = match self.mode {
            Mode::Calls => self.checked_calls(out)?,
            Mode::Json => {
                let json = check::json_answer(&self.plan.format, &self.attempt.raw)?;
                self.give(json, out);
                Vec::new()
            }
        };
        if !calls.is_empty() {
            out.push_back(Event::Calls(calls));
        }
        out.push_back(Event::Req(ReqEvent::End(End::Completed)));
        Ok(())
    }

    /// The reply was wrong after every retry: it goes out as text with a note, or, when
    /// a call was required and none came, as a refusal.
    fn give_up(&mut self, problem: String, out: &mut VecDeque<Event>) {
        if self.mode == Mode::Calls && self.attempt.calls.is_empty() && self.must_call() {
            out.push_back(Event::Refused(
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "provider_error",
                    format!("the model answered without the tool call that tool_choice asks for, also when asked again ({problem})"),
                )
                .code("tool_call_missing"),
            ));
            return;
        }
        let rest = self.attempt.raw[self.attempt.given..].to_string();
        self.attempt.quiet = false;
        self.give(rest, out);
        out.push_back(Event::Note(problem));
        out.push_back(Event::Req(ReqEvent::End(End::Completed)));
    }

    /// Starts reading the next reply; returns the last one's text.
    fn next_attempt(&mut self) -> String {
        let last = std::mem::take(&mut self.attempt);
        self.attempt.quiet = self.text_sent;
        last.raw
    }

    fn must_call(&self) -> bool {
        matches!(self.plan.choice, Choice::Required | Choice::Named(_))
    }

    /// The reply's calls, each checked; the first thing wrong otherwise.
    fn checked_calls(&mut self, out: &mut VecDeque<Event>) -> Result<Vec<ToolCall>, String> {
        let mut tail = Vec::new();
        let closed = self.attempt.reader.finish(&mut tail);
        self.pieces(tail, out);
        if closed == Err(Unclosed) {
            return Err("a <tool_call> was opened and not closed with </tool_call>".into());
        }
        // Without parallel calls only the first counts: the prompt asked for one.
        let wanted = if self.plan.parallel { usize::MAX } else { 1 };
        let calls = self.attempt.calls.iter().take(wanted);
        let calls = calls
            .map(|raw| check::call(&self.plan, raw))
            .collect::<Result<Vec<_>, _>>()?;
        if calls.is_empty() && self.must_call() {
            return Err(match &self.plan.choice {
                Choice::Named(name) => {
                    format!("the reply calls no function; you must call `{name}`")
                }
                _ => "the reply calls no function; you must call at least one".into(),
            });
        }
        Ok(calls)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::weather;
    use super::*;
    use serde_json::json;

    fn plan(choice: Option<serde_json::Value>) -> Arc<Plan> {
        let time = json!({"type": "function", "function": {"name": "get_time",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}});
        Arc::new(
            Plan::parse(Some(vec![weather(), time]), choice, None, None)
                .unwrap()
                .unwrap(),
        )
    }

    fn answer(text: &str) -> ReqEvent {
        ReqEvent::Delta {
            kind: DeltaKind::Answer,
            text: text.into(),
        }
    }

    fn reasoning(text: &str) -> ReqEvent {
        ReqEvent::Delta {
            kind: DeltaKind::Reasoning,
            text: text.into(),
        }
    }

    /// What a client hears of `events`: reasoning, text, the calls' (name, arguments),
    /// and the problem when the reply is wrong.
    fn heard(
        reading: &mut Reading,
        events: Vec<ReqEvent>,
    ) -> (String, String, Vec<(String, String)>, Option<String>) {
        let (mut r, mut t, mut calls, mut problem) = (String::new(), String::new(), vec![], None);
        let mut out = VecDeque::new();
        for event in events {
            if let Some(p) = reading.take(event, &mut out) {
                problem = Some(p);
            }
        }
        for event in out {
            match event {
                Event::Req(ReqEvent::Delta {
                    kind: DeltaKind::Reasoning,
                    text,
                }) => r.push_str(&text),
                Event::Req(ReqEvent::Delta {
                    kind: DeltaKind::Answer,
                    text,
                }) => t.push_str(&text),
                Event::Calls(c) => calls = c.into_iter().map(|c| (c.name, c.arguments)).collect(),
                Event::Req(ReqEvent::End(End::Completed)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        (r, t, calls, problem)
    }

    /// A reply of text, reasoning (whose tags stay reasoning) and two calls, cut at
    /// every byte boundary of the answer and of the reasoning, with reasoning between
    /// the answer's two pieces: the client hears the same each time.
    #[test]
    fn a_reply_cut_anywhere_reads_the_same() {
        let think = "I should call <tool_call>{\"name\": \"nope\"}</tool_call> twice. Ünïcode.";
        let text = "Let me check — 🌦 first.\n";
        let reply = format!(
            "{text}<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Zürich\"}}}}\n</tool_call>\n<tool_call>{{\"name\":\"get_time\",\"arguments\":{{\"zone\":\"CET\"}}}}</tool_call>\n"
        );
        let want_calls = vec![
            (
                "get_weather".to_string(),
                r#"{"city":"Zürich"}"#.to_string(),
            ),
            ("get_time".to_string(), r#"{"zone":"CET"}"#.to_string()),
        ];
        let cuts = |s: &str| {
            (0..=s.len())
                .filter(|&i| s.is_char_boundary(i))
                .collect::<Vec<_>>()
        };
        for i in cuts(&reply) {
            for j in cuts(think).into_iter().step_by(7) {
                let mut reading = Reading::new(plan(None)).unwrap();
                let events = vec![
                    reasoning(&think[..j]),
                    answer(&reply[..i]),
                    reasoning(&think[j..]),
                    answer(&reply[i..]),
                    ReqEvent::End(End::Completed),
                ];
                let (r, t, calls, problem) = heard(&mut reading, events);
                assert_eq!(r, think, "cut at {i}/{j}");
                assert_eq!(t, text, "cut at {i}/{j}");
                assert_eq!(calls, want_calls, "cut at {i}/{j}");
                assert_eq!(problem, None);
            }
        }
    }

    #[test]
    fn a_wrong_reply_says_why_and_after_the_retries_is_text_with_a_note() {
        let mut reading = Reading::new(plan(None)).unwrap();
        let bad = "Hm.\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {}}</tool_call>";
        let (_, t, calls, problem) = heard(
            &mut reading,
            vec![answer(bad), ReqEvent::End(End::Completed)],
        );
        assert_eq!(t, "Hm.\n");
        assert!(calls.is_empty());
        let problem = problem.unwrap();
        assert!(
            problem.contains("\"city\" is a required property"),
            "{problem}"
        );
        // The retry's text is not sent again; its valid call goes out.
        assert_eq!(reading.next_attempt(), bad);
        let good = "Hm.\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>";
        let (_, t, calls, problem) = heard(
            &mut reading,
            vec![answer(good), ReqEvent::End(End::Completed)],
        );
        assert_eq!((t.as_str(), calls.len(), problem), ("", 1, None));
        // Given up: the reply's rest as text, then the note.
        let mut reading = Reading::new(plan(None)).unwrap();
        let mut out = VecDeque::new();
        reading.take(answer(bad), &mut out);
        let problem = reading
            .take(ReqEvent::End(End::Completed), &mut out)
            .unwrap();
        reading.give_up(problem, &mut out);
        let text: String = out
            .iter()
            .filter_map(|e| match e {
                Event::Req(ReqEvent::Delta { text, .. }) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, bad);
        assert!(matches!(out[out.len() - 2], Event::Note(_)));
    }

    #[test]
    fn a_required_call_that_does_not_come_is_refused_with_its_code() {
        let mut reading = Reading::new(plan(Some(json!("required")))).unwrap();
        let mut out = VecDeque::new();
        reading.take(answer("It is sunny."), &mut out);
        let problem = reading
            .take(ReqEvent::End(End::Completed), &mut out)
            .unwrap();
        assert!(problem.contains("must call at least one"), "{problem}");
        reading.give_up(problem, &mut out);
        match out.back().unwrap() {
            Event::Refused(e) => assert_eq!(e.code, Some("tool_call_missing")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_structured_answer_is_held_until_it_checks() {
        let format = json!({"type": "json_schema", "json_schema": {"name": "n", "strict": true,
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}});
        let plan = Arc::new(
            Plan::parse(None, None, None, Some(format))
                .unwrap()
                .unwrap(),
        );
        let mut reading = Reading::new(plan.clone()).unwrap();
        let (_, t, _, problem) = heard(
            &mut reading,
            vec![
                answer("```json\n{\"n\":"),
                answer(" 3}\n```"),
                ReqEvent::End(End::Completed),
            ],
        );
        assert_eq!((t.as_str(), problem), ("{\"n\": 3}", None));
        let mut reading = Reading::new(plan).unwrap();
        let (_, t, _, problem) = heard(
            &mut reading,
            vec![answer("{\"n\": \"3\"}"), ReqEvent::End(End::Completed)],
        );
        assert_eq!(t, "");
        assert!(problem.unwrap().contains("/n"));
    }
}
