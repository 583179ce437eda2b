//! Captures of the site streams a lane reads (`capture = true` on its `[[lanes]]`
//! entry), and replaying one through its driver's parser (`prq replay`). A capture is
//! how a site change travels from a user with an account to a fix: the user sends the
//! file in, and dropped into `worker/tests/captures/` it is a regression test.
//!
//! The format (JSON Lines, one record per line, documented in the README):
//! - first, the header: `{"prq_capture": 1, "provider", "lane", "method", "path",
//!   "status", "content_type", "started_unix_ms"}` — the request's URL *path* only (no
//!   host, no query), and no cookie, header or prompt;
//! - then each piece of the body as the page received it, `t_ms` after the response's
//!   headers: `{"t_ms", "text"}` when the piece is valid UTF-8, else `{"t_ms", "base64"}`;
//! - then how the request ended: `{"t_ms", "end": "finished" | "failed" | "stopped"}`
//!   (with `"error"` for `failed`);
//! - optionally, as a test fixture, what replaying it must give:
//!   `{"expect": {"answer", "reasoning", "outcome"}}`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use prq_protocol::worker::{FailureKind, LaneSpec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::driver::format::Event;
use crate::driver::reading::Reading;
use crate::driver::Provider;
use crate::files;

/// The format's version, in each header.
pub const VERSION: u64 = 1;

/// One stream being written to a capture file. Writing never fails a request: a
/// capture that cannot be written is logged once and given up.
pub struct Recorder {
    file: Option<BufWriter<File>>,
    path: PathBuf,
    since: Instant,
}

/// What the request was, for the header.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: i64,
    pub content_type: &'a str,
}

impl Recorder {
    /// Opens a new capture file under `dir` (created 0700; the file 0600).
    pub fn create(dir: &Path, spec: &LaneSpec, request: Request<'_>) -> Option<Self> {
        let started = files::unix_ms();
        let name = format!(
            "{}-{}-{started}.jsonl",
            files::safe_name(&spec.prefix),
            files::safe_name(&spec.account)
        );
        let (file, path) = match files::create_private(dir, &name) {
            Ok(created) => created,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "cannot write a capture: {e}");
                return None;
            }
        };
        let mut recorder = Recorder {
            file: Some(BufWriter::new(file)),
            path,
            since: Instant::now(),
        };
        let header = Header {
            prq_capture: VERSION,
            provider: &spec.provider,
            lane: &spec.lane_id,
            method: request.method,
            path: request.path,
            status: request.status,
            content_type: request.content_type,
            started_unix_ms: started,
        };
        recorder.write(&header);
        Some(recorder)
    }

    pub fn chunk(&mut self, bytes: &[u8]) {
        let t_ms = self.since.elapsed().as_millis() as u64;
        let line = match std::str::from_utf8(bytes) {
            Ok(text) => json!({ "t_ms": t_ms, "text": text }),
            Err(_) => json!({
                "t_ms": t_ms,
                "base64": base64::engine::general_purpose::STANDARD.encode(bytes),
            }),
        };
        self.write(&line);
    }

    /// Writes how the request ended and closes the file.
    pub fn end(mut self, how: End<'_>) {
        let t_ms = self.since.elapsed().as_millis() as u64;
        let line = match how {
            End::Finished => json!({ "t_ms": t_ms, "end": "finished" }),
            End::Stopped => json!({ "t_ms": t_ms, "end": "stopped" }),
            End::Failed(error) => json!({ "t_ms": t_ms, "end": "failed", "error": error }),
        };
        self.write(&line);
        if let Some(mut file) = self.file.take() {
            if let Err(e) = file.flush() {
                tracing::warn!(path = %self.path.display(), "cannot write a capture: {e}");
            }
        }
        tracing::info!(path = %self.path.display(), "stream captured");
    }

    fn write(&mut self, line: &impl Serialize) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let written = serde_json::to_writer(&mut *file, line)
            .map_err(std::io::Error::from)
            .and_then(|()| file.write_all(b"\n"));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), "cannot write a capture: {e}");
            self.file = None;
        }
    }
}

/// A capture's first line (a struct, so that its keys keep this order in the file).
#[derive(Serialize)]
struct Header<'a> {
    prq_capture: u64,
    provider: &'a str,
    lane: &'a str,
    method: &'a str,
    path: &'a str,
    status: i64,
    content_type: &'a str,
    started_unix_ms: u64,
}

/// How a captured request ended.
pub enum End<'a> {
    Finished,
    Stopped,
    Failed(&'a str),
}

/// What a capture replays to: what the lane would have answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    pub provider: String,
    pub answer: String,
    pub reasoning: String,
    /// `completed`, `stopped`, a failure's code (`site_changed`, `rate_limited`, ...),
    /// or `incomplete` when the capture has no end.
    pub outcome: String,
    /// The failure's message, for a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a fixture says replaying it must give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    pub answer: String,
    pub reasoning: String,
    pub outcome: String,
}

/// A capture file, read back.
#[derive(Debug)]
pub struct Capture {
    pub provider: String,
    status: i64,
    records: Vec<Record>,
    /// The fixture's `expect` record, if it has one.
    pub expect: Option<Expected>,
}

#[derive(Debug)]
enum Record {
    Chunk(Vec<u8>),
    End { how: String, error: Option<String> },
}

impl Capture {
    /// Reads a capture file's text; the error says which line is wrong and why.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, first) = lines.next().ok_or("the file is empty")?;
        let header: Value = serde_json::from_str(first)
            .map_err(|e| format!("line 1 is not a capture header: {e}"))?;
        match header["prq_capture"].as_u64() {
            Some(VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "capture format {v} is newer than this prq reads ({VERSION})"
                ))
            }
            None => return Err("line 1 has no \"prq_capture\": this is not a prq capture".into()),
        }
        let provider = header["provider"]
            .as_str()
            .ok_or("the header names no provider")?
            .to_owned();
        let status = header["status"]
            .as_i64()
            .ok_or("the header has no status")?;
        let mut records = Vec::new();
        let mut expect = None;
        for (i, line) in lines {
            let at = |e: String| format!("line {}: {e}", i + 1);
            let record: Value = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
            if let Some(text) = record["text"].as_str() {
                records.push(Record::Chunk(text.as_bytes().to_vec()));
            } else if let Some(b64) = record["base64"].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| at(format!("bad base64: {e}")))?;
                records.push(Record::Chunk(bytes));
            } else if let Some(how) = record["end"].as_str() {
                let error = record["error"].as_str().map(str::to_owned);
                records.push(Record::End {
                    how: how.to_owned(),
                    error,
                });
            } else if record.get("expect").is_some() {
                let e = serde_json::from_value(record["expect"].clone())
                    .map_err(|e| at(format!("a bad expect record: {e}")))?;
                expect = Some(e);
            } else {
                return Err(at(
                    "neither a chunk (text/base64), an end nor an expect record".into(),
                ));
            }
        }
        Ok(Self {
            provider,
            status,
            records,
            expect,
        })
    }

    /// Whether `replayed` is what the capture's `expect` record says (true without one).
    pub fn as_expected(&self, replayed: &Replayed) -> bool {
        self.expect.as_ref().is_none_or(|e| {
            (&e.answer, &e.reasoning, &e.outcome)
                == (&replayed.answer, &replayed.reasoning, &replayed.outcome)
        })
    }

    /// Runs the capture through its driver's parser, as the lane read it.
    pub fn replay(&self) -> Result<Replayed, String> {
        let site = Provider::from_name(&self.provider)
            .and_then(crate::driver::site)
            .ok_or_else(|| {
                format!(
                    "the capture is of provider `{}`, which this build has no stream parser for (it has: {})",
                    self.provider,
                    Provider::names()
                )
            })?;
        let mut replayed = Replayed {
            provider: self.provider.clone(),
            answer: String::new(),
            reasoning: String::new(),
            outcome: "incomplete".into(),
            error: None,
        };
        let mut reading = Reading::new(site);
        reading.response(self.status, None);
        let mut events = Vec::new();
        for record in &self.records {
            match record {
                Record::Chunk(bytes) => reading.data(bytes, &mut events),
                Record::End { how, error } => match how.as_str() {
                    "finished" => {
                        let unended = reading.finished(&mut events);
                        events.push(Event::Failed(unended));
                    }
                    "stopped" => {
                        if take(&mut replayed, &mut events) {
                            return Ok(replayed);
                        }
                        replayed.outcome = "stopped".into();
                        return Ok(replayed);
                    }
                    _ => {
                        let failure = reading.failed(error.as_deref().unwrap_or(how));
                        events.push(Event::Failed(failure));
                    }
                },
            }
            if take(&mut replayed, &mut events) {
                return Ok(replayed);
            }
        }
        Ok(replayed)
    }
}

/// Adds the events' text to `replayed`; true once an event ended the generation.
fn take(replayed: &mut Replayed, events: &mut Vec<Event>) -> bool {
    for event in events.drain(..) {
        match event {
            Event::Reasoning(text) => replayed.reasoning.push_str(&text),
            Event::Answer(text) => replayed.answer.push_str(&text),
            Event::Done => {
                replayed.outcome = "completed".into();
                return true;
            }
            Event::Failed(failure) => {
                replayed.outcome = failure.kind.code().into();
                replayed.error = Some(failure.message);
                return true;
            }
            Event::Crashing => {
                replayed.outcome = FailureKind::TabCrashed.code().into();
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The directory of checked-in captures; each must replay as its `expect` says.
    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures")
    }

    /// Every capture in `tests/captures/` replays to what its `expect` record says: a
    /// user's capture of a broken site, with the answer the fixed driver must give, is a
    /// regression test by being there.
    #[test]
    fn every_checked_in_capture_replays_as_expected() {
        let mut checked = 0;
        let mut entries: Vec<_> = std::fs::read_dir(fixtures())
            .expect("tests/captures exists")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        entries.sort();
        for path in entries {
            let name = path.display();
            let text = std::fs::read_to_string(&path).unwrap();
            let capture = Capture::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = capture.replay().unwrap_or_else(|e| panic!("{name}: {e}"));
            let Some(expect) = &capture.expect else {
                panic!(
                    "{name} has no expect record; it replays to {}: add the line the fixed driver must give",
                    serde_json::to_string(&json!({"expect": {"answer": got.answer, "reasoning": got.reasoning, "outcome": got.outcome}})).unwrap()
                );
            };
            assert_eq!(
                (&got.answer, &got.reasoning, &got.outcome),
                (&expect.answer, &expect.reasoning, &expect.outcome),
                "{name} (error: {:?})",
                got.error
            );
            assert!(capture.as_expected(&got));
            checked += 1;
        }
        assert!(
            checked >= 7,
            "a capture of each driver's replica stream: {checked}"
        );
    }

    fn spec(dir: &Path) -> LaneSpec {
        LaneSpec {
            lane_id: "ds#1".into(),
            provider: "deepseek".into(),
            prefix: "ds".into(),
            account: "work/1".into(),
            profile_dir: dir.into(),
            base_url: None,
            browser: None,
            thinking_default: false,
            heartbeat_ms: 500,
            heartbeat_timeout_ms: 3_000,
            cdp_timeout_ms: 1000,
            selectors: Default::default(),
            presence: Default::default(),
            capture_dir: None,
            browser_profile: Default::default(),
            keep_alive_s: None,
            after_reply: Default::default(),
            upload_timeout_ms: 60_000,
        }
    }

    #[test]
    fn a_recorded_stream_replays_cut_anywhere_and_in_binary() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("captures");
        let request = Request {
            method: "POST",
            path: "/api/v0/chat/completion",
            status: 200,
            content_type: "text/event-stream",
        };
        let mut recorder = Recorder::create(&dir, &spec(home.path()), request).unwrap();
        let body = "data: {\"v\": {\"response\": {\"status\": \"WIP\", \"fragments\": [{\"type\": \"RESPONSE\", \"content\": \"日本\"}]}}}\n\ndata: {\"v\": \"FINISHED\", \"p\": \"response/status\"}\n\n";
        // Cut inside a multi-byte character: that piece is not UTF-8 on its own.
        let cut = body.find('本').unwrap() + 1;
        recorder.chunk(&body.as_bytes()[..cut]);
        recorder.chunk(&body.as_bytes()[cut..]);
        let path = recorder.path.clone();
        recorder.end(End::Finished);

        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert!(path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("ds-work_1-"));

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"base64\""), "{text}");
        let capture = Capture::parse(&text).unwrap();
        let chunks: Vec<u8> = capture
            .records
            .iter()
            .flat_map(|r| match r {
                Record::Chunk(bytes) => bytes.clone(),
                Record::End { .. } => vec![],
            })
            .collect();
        assert_eq!(chunks, body.as_bytes());
        let got = capture.replay().unwrap();
        assert_eq!(got.answer, "日本");
        assert_eq!(got.outcome, "completed");
    }

    #[test]
    fn how_a_capture_ends_is_how_it_replays() {
        let header = r#"{"prq_capture":1,"provider":"deepseek","lane":"d#1","method":"POST","path":"/api/v0/chat/completion","status":200,"content_type":"text/event-stream","started_unix_ms":0}"#;
        let start = r#"{"t_ms":1,"text":"data: {\"v\": {\"response\": {\"status\": \"WIP\", \"fragments\": [{\"type\": \"RESPONSE\", \"content\": \"Hi\"}]}}}\n\n"}"#;
        let replay = |rest: &str| {
            Capture::parse(&format!("{header}\n{start}\n{rest}"))
                .unwrap()
                .replay()
                .unwrap()
        };
        let stopped = replay(r#"{"t_ms":2,"end":"stopped"}"#);
        assert_eq!(
            (stopped.answer.as_str(), stopped.outcome.as_str()),
            ("Hi", "stopped")
        );
        let cut = replay(r#"{"t_ms":2,"end":"finished"}"#);
        assert_eq!(cut.outcome, "site_error", "{:?}", cut.error);
        let failed = replay(r#"{"t_ms":2,"end":"failed","error":"net::ERR_CONNECTION_RESET"}"#);
        assert!(failed.error.unwrap().contains("ERR_CONNECTION_RESET"));
        assert_eq!(replay("").outcome, "incomplete");

        let refused = format!(
            "{}\n{}\n{}",
            header.replace("\"status\":200", "\"status\":429"),
            r#"{"t_ms":1,"text":"{\"error\":\"slow down\"}"}"#,
            r#"{"t_ms":2,"end":"finished"}"#
        );
        let got = Capture::parse(&refused).unwrap().replay().unwrap();
        assert_eq!(got.outcome, "rate_limited");
    }

    #[test]
    fn a_file_that_is_no_capture_is_refused_with_the_line() {
        assert!(Capture::parse("").unwrap_err().contains("empty"));
        assert!(Capture::parse("{}")
            .unwrap_err()
            .contains("not a prq capture"));
        let header = r#"{"prq_capture":1,"provider":"nope","status":200}"#;
        let e = Capture::parse(header).unwrap().replay().unwrap_err();
        assert!(e.contains("nope") && e.contains("deepseek"), "{e}");
        let e = Capture::parse(&format!("{header}\n{{\"what\":1}}")).unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
    }
}
