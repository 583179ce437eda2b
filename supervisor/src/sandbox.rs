//! The sandbox chat site: a little chat page (`page.html`) that streams its answers over
//! SSE from `POST /api/chat`, following `prq_protocol::script`, and a record of every
//! stream it served at `GET /stats`, so that tests and benchmarks can drive real
//! Chromium through every path (answer, thinking, stop, failure, hang, crash) and then
//! check what the site saw.
//!
//! Like a real site, it tells accounts apart by a cookie: a page opened as
//! `/?account=NAME` (the runtime opens each sandbox lane that way) gets a session
//! cookie naming the account, and the `limit_account` directive rate-limits one account
//! (HTTP 429 with `Retry-After`) while the others are served. A page opened with
//! `login=1` (lanes with `login = true`) asks for a login first ([`login`]).
//!
//! The page has the controls chat sites have (a model picker, a search switch, a
//! temperature field, a temporary-chat switch: `sandbox/controls.rs`) and a sidebar of
//! the account's chats with delete buttons (`sandbox/chats.rs`).
//!
//! It takes uploads as chat sites do (`uploads.rs`): files chosen in its page go to the
//! server first, and the answer's first lines name each file the prompt came with.

mod chats;
mod controls;
mod uploads;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, FromRef, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use prq_protocol::prompt::last_user_text;
use prq_protocol::script::{self, answer_piece, reasoning_piece, Directives};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub mod login;

const PAGE: &str = include_str!("sandbox/page.html");

/// How long a stream may go without writing. hyper sees a page leave by the EOF on the
/// connection's read side (measured: within a few ms, even during a hang); should no
/// EOF come, only a failed write tells, and the second write after the close fails.
/// So a waiting or hung stream writes an SSE comment this often, and the abort is seen
/// within 2 × this either way.
const KEEP_ALIVE: Duration = Duration::from_millis(40);

/// Streams kept in the record; the oldest go first.
const MAX_RECORDED: usize = 10_000;

/// Characters of the prompt kept in the record.
const PROMPT_HEAD_CHARS: usize = 80;

/// The site's routes, with a fresh, empty record.
pub fn router() -> Router {
    let sandbox = Sandbox::default();
    Router::new()
        .route("/", get(page))
        .route("/chat", get(page))
        .route("/login", post(login::submit).delete(login::end_all))
        .route("/api/chat", post(chat))
        .route(
            "/api/upload",
            post(uploads::upload).layer(DefaultBodyLimit::max(uploads::MAX_UPLOAD_BYTES)),
        )
        .route("/stats", get(stats).delete(reset))
        .route("/stats/reset", post(reset))
        .with_state(sandbox.clone())
        .merge(chats::routes().with_state(sandbox.chats))
}

/// The cookie that names a page's account.
const ACCOUNT_COOKIE: &str = "prq_sandbox_account";

#[derive(Clone, Default)]
struct Sandbox {
    record: Arc<Mutex<Record>>,
    /// Rate-limited accounts, until when.
    limited: Arc<Mutex<HashMap<String, std::time::Instant>>>,
    /// Who is logged in, for lanes with `login = true`.
    sessions: login::Sessions,
    chats: chats::Chats,
    uploads: uploads::Uploads,
}

impl FromRef<Sandbox> for uploads::Uploads {
    fn from_ref(sandbox: &Sandbox) -> Self {
        sandbox.uploads.clone()
    }
}

#[derive(Default)]
struct Record {
    next_id: u64,
    streams: VecDeque<StreamStats>,
}

/// What the site saw of one `/api/chat` stream.
#[derive(Debug, Clone, Serialize)]
struct StreamStats {
    id: u64,
    /// The page's account (its cookie), if it had one.
    account: Option<String>,
    prompt_head: String,
    thinking: bool,
    started_ms: u64,
    ended_ms: Option<u64>,
    outcome: Outcome,
    reasoning_sent: usize,
    /// Answer words sent after the echo.
    tokens_sent: usize,
    /// The files the prompt came with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<uploads::Uploaded>,
    /// With `sandbox: trace`: when each answer piece (the echo, then each word) was
    /// sent, in unix microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    emitted_us: Option<Vec<u64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Streaming,
    /// `done` was sent.
    Finished,
    /// The page went away mid-stream.
    Aborted,
    /// An `error` or `crash` event was sent.
    Failed,
    /// Refused with HTTP 429: the page's account is rate-limited.
    Limited,
}

impl Sandbox {
    fn record(&self) -> MutexGuard<'_, Record> {
        // The record stays consistent even if a holder panicked: every update is one
        // field assignment.
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self, request: &ChatRequest, account: Option<&str>) -> u64 {
        let mut record = self.record();
        record.next_id += 1;
        let id = record.next_id;
        if record.streams.len() == MAX_RECORDED {
            record.streams.pop_front();
        }
        record.streams.push_back(StreamStats {
            id,
            account: account.map(str::to_owned),
            prompt_head: request.prompt.chars().take(PROMPT_HEAD_CHARS).collect(),
            thinking: request.thinking,
            started_ms: now_ms(),
            ended_ms: None,
            outcome: Outcome::Streaming,
            reasoning_sent: 0,
            tokens_sent: 0,
            attachments: Vec::new(),
            emitted_us: None,
        });
        id
    }

    /// How long `account` is still rate-limited: set (from now) when the request's
    /// `limit_account` directive names it, and counted down by later requests.
    fn limit_left(&self, account: &str, prompt: &str) -> Option<Duration> {
        let now = std::time::Instant::now();
        let mut limited = self.limited.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&until) = limited.get(account) {
            if until > now {
                return Some(until - now);
            }
            limited.remove(account);
        }
        let directives = Directives::parse(last_user_text(prompt)).ok()?;
        if directives.limit_account.as_deref() != Some(account) {
            return None;
        }
        let left = Duration::from_secs(directives.limit_s);
        limited.insert(account.to_string(), now + left);
        Some(left)
    }

    /// Applies `change` to stream `id`, unless the record was reset since it began.
    fn update(&self, id: u64, change: impl FnOnce(&mut StreamStats)) {
        // Live streams are the newest entries, so the search from the back is short.
        if let Some(stats) = self.record().streams.iter_mut().rev().find(|s| s.id == id) {
            change(stats);
        }
    }
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn now_ms() -> u64 {
    since_epoch().as_millis() as u64
}

#[derive(Deserialize)]
struct PageQuery {
    account: Option<String>,
    /// `1`: the site asks for a login first (a lane with `login = true`, see [`login`]).
    #[serde(default)]
    login: Option<String>,
}

/// An account name fit for a cookie, or `None`.
fn checked_account(account: Option<String>) -> Option<String> {
    account.filter(|a| {
        !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// The chat page; `?account=NAME` signs the browser in as that account (a cookie).
async fn page(
    State(sandbox): State<Sandbox>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let account = checked_account(query.account);
    if sandbox
        .sessions
        .required(query.login.as_deref() == Some("1"), &headers)
    {
        return login::form(StatusCode::OK, account.as_deref().unwrap_or(""), None);
    }
    match account {
        Some(account) => (
            [(
                header::SET_COOKIE,
                format!("{ACCOUNT_COOKIE}={account}; Path=/; SameSite=Strict; HttpOnly"),
            )],
            Html(PAGE),
        )
            .into_response(),
        None => Html(PAGE).into_response(),
    }
}

/// The account a request's cookie names.
pub(crate) fn account_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(ACCOUNT_COOKIE)?.strip_prefix('='))
        .map(str::to_owned)
}

#[derive(Serialize)]
struct Stats {
    streams: Vec<StreamStats>,
}

async fn stats(State(sandbox): State<Sandbox>) -> Json<Stats> {
    let streams = sandbox.record().streams.iter().cloned().collect();
    Json(Stats { streams })
}

async fn reset(State(sandbox): State<Sandbox>) {
    sandbox.record().streams.clear();
}

#[derive(Deserialize)]
struct ChatRequest {
    prompt: String,
    #[serde(default)]
    thinking: bool,
    #[serde(flatten)]
    controls: controls::PageControls,
    /// The IDs of the files uploaded for this prompt (`/api/upload`).
    #[serde(default)]
    attachments: Vec<u64>,
}

/// One SSE event of `/api/chat`, sent as `data: <json>`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Served {
    /// `busy_ms`: how long the page's script spins after a stop (`sandbox: busy_ms=N`).
    Start {
        stream_id: u64,
        busy_ms: u64,
        /// The chat this send made; `None` in temporary mode.
        chat_id: Option<u64>,
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
    Crash,
}

/// Streams the answer from a task of its own, through a channel: when hyper drops the
/// body (the page went away), the channel closes, and that is the abort signal. A
/// rate-limited account gets HTTP 429 instead.
async fn chat(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    Json(request): Json<ChatRequest>,
) -> Response {
    let account = account_of(&headers);
    let id = sandbox.open(&request, account.as_deref());
    let limit = account
        .as_deref()
        .and_then(|a| Some((a, sandbox.limit_left(a, &request.prompt)?)));
    if let Some((account, left)) = limit {
        sandbox.update(id, |s| {
            s.outcome = Outcome::Limited;
            s.ended_ms = Some(now_ms());
        });
        // Whole seconds, rounded up, so a client that waits that long finds it over.
        let secs = left.as_millis().div_ceil(1000) as u64;
        tracing::debug!(stream = id, account, secs, "sandbox: rate limited");
        let body = serde_json::json!({
            "error": format!("sandbox: account {account} is rate limited; try again in {secs} s")
        });
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Json(body),
        )
            .into_response();
    }
    // Like a site, the sandbox keeps the chat a send makes, but in temporary mode.
    let chat_id = (!request.controls.temporary).then(|| {
        let deletable =
            Directives::parse(last_user_text(&request.prompt)).map_or(true, |d| !d.delete_fails);
        sandbox.chats.open(
            account.as_deref(),
            last_user_text(&request.prompt),
            deletable,
        )
    });
    let attached = sandbox.uploads.take(&request.attachments);
    if let Ok(files) = &attached {
        sandbox.update(id, |s| s.attachments = files.clone());
    }
    stream(sandbox, id, chat_id, request, attached).into_response()
}

fn stream(
    sandbox: Sandbox,
    id: u64,
    chat_id: Option<u64>,
    request: ChatRequest,
    attached: Result<Vec<uploads::Uploaded>, String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let generation = Generation {
            tx,
            sandbox,
            id,
            chat_id,
        };
        let outcome = generation
            .run(&request, attached)
            .await
            .unwrap_or(Outcome::Aborted);
        tracing::debug!(stream = id, ?outcome, "sandbox stream ended");
        generation.sandbox.update(id, |s| {
            s.outcome = outcome;
            s.ended_ms = Some(now_ms());
        });
    });
    let events = ReceiverStream::new(rx).map(|served: Served| {
        let json = serde_json::to_string(&served).expect("sandbox events serialize");
        Ok(Event::default().data(json))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// The page went away: the stream's receiver is gone.
struct Gone;

struct Generation {
    tx: mpsc::Sender<Served>,
    sandbox: Sandbox,
    id: u64,
    chat_id: Option<u64>,
}

impl Generation {
    /// Plays the script for one request; `Err(Gone)` once the page has left. An
    /// unscripted answer begins with a line for each file the prompt came with.
    async fn run(
        &self,
        request: &ChatRequest,
        attached: Result<Vec<uploads::Uploaded>, String>,
    ) -> Result<Outcome, Gone> {
        let reply = script::reply(&request.prompt);
        let busy_ms = reply
            .as_ref()
            .map_or(0, |r| r.directives.busy.as_millis() as u64);
        self.send(Served::Start {
            stream_id: self.id,
            busy_ms,
            chat_id: self.chat_id,
        })
        .await?;
        let (reply, attached) = match (reply, attached) {
            (Ok(reply), Ok(attached)) => (reply, attached),
            (Err(message), _) | (_, Err(message)) => {
                return self.fail(Served::Error { message }).await
            }
        };
        let script = &reply.directives;
        for i in 0..script.think_tokens(request.thinking) {
            self.pause(script.delay).await?;
            let text = reasoning_piece(i);
            self.send(Served::Reasoning { text }).await?;
            self.sandbox.update(self.id, |s| s.reasoning_sent = i + 1);
        }
        if script.controls {
            let lines = request.controls.header_lines();
            self.pause(script.delay).await?;
            self.answer(script::header(&lines), script.trace).await?;
        }
        if let Some(text) = &reply.scripted {
            for piece in script::scripted_pieces(text) {
                self.pause(script.delay).await?;
                self.answer(piece, script.trace).await?;
            }
            self.send(Served::Done).await?;
            return Ok(Outcome::Finished);
        }
        if !attached.is_empty() {
            let lines: String = attached.iter().map(|f| f.line() + "\n").collect();
            self.send(Served::Answer { text: lines }).await?;
        }
        self.pause(script.delay).await?;
        self.answer(reply.echo.to_string(), script.trace).await?;
        if script.crash {
            return self.fail(Served::Crash).await;
        }
        // Faults strike after `sent` words, checked before each word and after the last.
        for sent in 0..=script.tokens {
            if script.fail_at == Some(sent) {
                let message = format!("sandbox: failure injected after {sent} words");
                return self.fail(Served::Error { message }).await;
            }
            if script.hang_at == Some(sent) {
                self.tx.closed().await;
                return Err(Gone);
            }
            if sent == script.tokens {
                break;
            }
            self.pause(script.delay).await?;
            self.answer(answer_piece(sent), script.trace).await?;
            self.sandbox.update(self.id, |s| s.tokens_sent = sent + 1);
        }
        self.send(Served::Done).await?;
        Ok(Outcome::Finished)
    }

    async fn send(&self, event: Served) -> Result<(), Gone> {
        self.tx.send(event).await.map_err(|_| Gone)
    }

    /// Sends an answer piece; with `trace`, records when.
    async fn answer(&self, text: String, trace: bool) -> Result<(), Gone> {
        let at = since_epoch().as_micros() as u64;
        self.send(Served::Answer { text }).await?;
        if trace {
            self.sandbox.update(self.id, |s| {
                s.emitted_us.get_or_insert_with(Vec::new).push(at);
            });
        }
        Ok(())
    }

    async fn fail(&self, event: Served) -> Result<Outcome, Gone> {
        self.send(event).await?;
        Ok(Outcome::Failed)
    }

    /// Waits `delay`, or less if the page leaves meanwhile.
    async fn pause(&self, delay: Duration) -> Result<(), Gone> {
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.tx.closed() => Err(Gone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prq_protocol::script::expected;
    use serde_json::{json, Value};
    use std::time::Instant;

    /// Serves a fresh site on a free loopback port; returns its base URL.
    async fn serve() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router()).await.unwrap() });
        format!("http://{addr}")
    }

    /// The `data:` events of one `/api/chat` stream, read as they arrive.
    struct Events {
        body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
        buffer: String,
    }

    impl Events {
        async fn open(base: &str, prompt: &str, thinking: bool) -> Self {
            Self::open_with(base, json!({ "prompt": prompt, "thinking": thinking })).await
        }

        async fn open_with(base: &str, request: Value) -> Self {
            let response = reqwest::Client::new()
                .post(format!("{base}/api/chat"))
                .json(&request)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            let body = response.bytes_stream().boxed();
            Self {
                body,
                buffer: String::new(),
            }
        }

        async fn next(&mut self) -> Option<Value> {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    if let Some(data) = block.strip_prefix("data: ") {
                        return Some(serde_json::from_str(data.trim_end()).unwrap());
                    }
                    assert_eq!(block, ":\n\n", "only keep-alive comments besides data");
                }
                let chunk = self.body.next().await?.unwrap();
                self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        }

        async fn all(mut self) -> Vec<Value> {
            let mut events = Vec::new();
            while let Some(event) = self.next().await {
                events.push(event);
            }
            events
        }
    }

    /// The concatenated text of the events of `kind`.
    fn text_of(events: &[Value], kind: &str) -> String {
        let pieces = events.iter().filter(|e| e["type"] == kind);
        pieces.map(|e| e["text"].as_str().unwrap()).collect()
    }

    async fn streams(base: &str) -> Vec<Value> {
        let stats: Value = reqwest::get(format!("{base}/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["streams"].as_array().unwrap().clone()
    }

    /// Polls `/stats` until stream `id` has ended; panics after `within`.
    async fn ended(base: &str, id: u64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let all = streams(base).await;
            let stream = all.into_iter().find(|s| s["id"] == id).unwrap();
            if stream["outcome"] != "streaming" {
                return stream;
            }
            assert!(Instant::now() < deadline, "still streaming: {stream}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn the_answer_echoes_the_last_user_message_then_counts_words() {
        let base = serve().await;
        let last_user = "Say hi\nsandbox: tokens=5 delay_ms=0";
        let prompt = format!("System: be brief\n\nUser: {last_user}");
        let events = Events::open(&base, &prompt, false).await.all().await;

        assert_eq!(
            events[0],
            json!({"type": "start", "stream_id": 1, "busy_ms": 0, "chat_id": 1})
        );
        assert_eq!(events[1], json!({"type": "answer", "text": last_user}));
        assert_eq!(events.last().unwrap(), &json!({"type": "done"}));
        let (reasoning, answer) = expected(last_user, false).unwrap();
        assert_eq!(text_of(&events, "reasoning"), reasoning);
        assert_eq!(text_of(&events, "answer"), answer);
        assert_eq!(events.len(), 1 + 1 + 5 + 1);
    }

    #[tokio::test]
    async fn thinking_streams_the_reasoning_before_the_answer() {
        let base = serve().await;
        let prompt = "Why?\nsandbox: tokens=3 think_tokens=4 delay_ms=1";
        let events = Events::open(&base, prompt, true).await.all().await;

        let kinds: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        let mut want = vec!["start"];
        want.extend(["reasoning"; 4]);
        want.extend(["answer"; 1 + 3]);
        want.push("done");
        assert_eq!(kinds, want);
        let (reasoning, answer) = expected(prompt, true).unwrap();
        assert_eq!(text_of(&events, "reasoning"), reasoning);
        assert_eq!(text_of(&events, "answer"), answer);
    }

    #[tokio::test]
    async fn stats_record_finished_and_failed_streams() {
        let base = serve().await;
        let long = format!("{}\nsandbox: tokens=4 delay_ms=0", "é".repeat(100));
        Events::open(&base, &long, true).await.all().await;
        let failing = "oops\nsandbox: tokens=5 fail_at=2 delay_ms=0";
        let events = Events::open(&base, failing, false).await.all().await;
        let last = events.last().unwrap();
        assert_eq!(last["type"], "error");
        assert_eq!(last["message"], "sandbox: failure injected after 2 words");
        assert_eq!(
            text_of(&events, "answer"),
            "oops\nsandbox: tokens=5 fail_at=2 delay_ms=0 lorem ipsum"
        );

        let all = streams(&base).await;
        let (finished, failed) = (&all[0], &all[1]);
        assert_eq!(finished["id"], 1);
        assert_eq!(finished["outcome"], "finished");
        assert_eq!(finished["prompt_head"], "é".repeat(80));
        assert_eq!(finished["tokens_sent"], 4);
        assert_eq!(finished["reasoning_sent"], 10);
        assert!(finished["ended_ms"].as_u64() >= finished["started_ms"].as_u64());
        assert_eq!(failed["id"], 2);
        assert_eq!(failed["outcome"], "failed");
        assert_eq!(failed["tokens_sent"], 2);

        reqwest::Client::new()
            .delete(format!("{base}/stats"))
            .send()
            .await
            .unwrap();
        assert!(streams(&base).await.is_empty());
    }

    #[tokio::test]
    async fn trace_records_when_each_answer_piece_was_sent() {
        let base = serve().await;
        for (prompt, thinking) in [
            ("untraced\nsandbox: tokens=2 delay_ms=0", false),
            ("traced\nsandbox: trace tokens=3 delay_ms=1", true),
        ] {
            Events::open(&base, prompt, thinking).await.all().await;
        }

        let all = streams(&base).await;
        assert!(all[0].get("emitted_us").is_none(), "only on request");
        let emitted: Vec<u64> = serde_json::from_value(all[1]["emitted_us"].clone()).unwrap();
        assert_eq!(emitted.len(), 1 + 3, "the echo and each word, no reasoning");
        assert!(emitted.windows(2).all(|w| w[0] <= w[1]), "{emitted:?}");
        let started_us = all[1]["started_ms"].as_u64().unwrap() * 1000;
        assert!(emitted[0] >= started_us, "{emitted:?} after {started_us}");
    }

    #[tokio::test]
    async fn a_page_that_leaves_between_words_is_seen_within_500_ms() {
        let base = serve().await;
        let mut events = Events::open(&base, "slow\nsandbox: delay_ms=5000", false).await;
        assert_eq!(events.next().await.unwrap()["type"], "start");
        let left_ms = now_ms();
        drop(events);

        let stream = ended(&base, 1, Duration::from_millis(500)).await;
        assert_eq!(stream["outcome"], "aborted");
        assert_eq!(stream["tokens_sent"], 0);
        assert!(stream["ended_ms"].as_u64().unwrap() >= left_ms);
    }

    #[tokio::test]
    async fn a_page_that_leaves_a_hung_stream_is_seen_within_500_ms() {
        let base = serve().await;
        let mut events = Events::open(&base, "stall\nsandbox: hang_at=2 delay_ms=0", false).await;
        for _ in 0..4 {
            events.next().await.unwrap(); // start, echo, two words
        }
        // Long enough that the stream is surely stalled, not between words.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = streams(&base).await;
        assert_eq!(before[0]["outcome"], "streaming");
        assert_eq!(before[0]["tokens_sent"], 2);
        drop(events);

        let stream = ended(&base, 1, Duration::from_millis(500)).await;
        assert_eq!(stream["outcome"], "aborted");
        assert_eq!(stream["tokens_sent"], 2);
    }

    #[tokio::test]
    async fn a_bad_directive_is_a_start_then_an_error_naming_it() {
        let base = serve().await;
        let events = Events::open(&base, "hi\nsandbox: tokens=lots", false)
            .await
            .all()
            .await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0]["type"], "start");
        assert_eq!(events[1]["type"], "error");
        let message = events[1]["message"].as_str().unwrap();
        assert!(
            message.contains("tokens") && message.contains("lots"),
            "{message}"
        );
        assert_eq!(streams(&base).await[0]["outcome"], "failed");
    }

    #[tokio::test]
    async fn a_call_directive_answers_with_the_call_in_pieces_and_a_result_is_echoed() {
        let base = serve().await;
        let ask = r#"sandbox: delay_ms=0 call=get_weather:{"city":"Paris"}"#;
        let events = Events::open(&base, ask, false).await.all().await;
        let call = prq_protocol::tool_call::render("get_weather", r#"{"city":"Paris"}"#);
        assert_eq!(text_of(&events, "answer"), call);
        let pieces = events.iter().filter(|e| e["type"] == "answer").count();
        assert_eq!(
            pieces,
            call.chars().count().div_ceil(script::SCRIPTED_PIECE_CHARS)
        );
        assert_eq!(events.last().unwrap()["type"], "done");
        // After the tool's result, the site answers from it and calls nothing.
        let result = format!("User: {ask}\n\nAssistant: {call}\n\nTool: 22 C");
        let events = Events::open(&base, &result, false).await.all().await;
        let answer = text_of(&events, "answer");
        assert!(answer.starts_with("22 C lorem"), "{answer}");
    }

    async fn upload(base: &str, name: &str, draft: &str, bytes: Vec<u8>) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{base}/api/upload"))
            .query(&[("name", name), ("draft", draft)])
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_answer_begins_with_a_line_for_each_uploaded_file() {
        let base = serve().await;
        let mut ids = Vec::new();
        for (name, bytes) in [("a.png", b"abc".to_vec()), ("b.pdf", vec![0u8; 70_000])] {
            let reply: Value = upload(&base, name, "", bytes).await.json().await.unwrap();
            ids.push(reply["id"].as_u64().unwrap());
        }
        let prompt = "look\nsandbox: tokens=1 delay_ms=0";
        let events = Events::open_with(&base, json!({ "prompt": prompt, "attachments": ids }))
            .await
            .all()
            .await;
        let answer = text_of(&events, "answer");
        // As `sha256sum` gives them for "abc" and for 70 000 zero bytes.
        let want = "attached: a.png 3 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n\
                    attached: b.pdf 70000 f51b279903037b37ea1828a1021499995718d38016cad6c0da30962a41be052f\n\
                    look\nsandbox: tokens=1 delay_ms=0 lorem";
        assert_eq!(answer, want);
        assert_eq!(streams(&base).await[0]["attachments"][1]["size"], 70_000);
        // Used up: a second prompt naming them fails, naming one.
        let again = Events::open_with(&base, json!({ "prompt": "x", "attachments": ids }))
            .await
            .all()
            .await;
        let message = again.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains("no uploaded file"), "{message}");
    }

    #[tokio::test]
    async fn reject_upload_refuses_the_file_with_a_text_the_page_shows() {
        let base = serve().await;
        let response = upload(&base, "big.png", "sandbox: reject_upload=1", vec![1; 10]).await;
        assert_eq!(response.status(), 422);
        let reply: Value = response.json().await.unwrap();
        let error = reply["error"].as_str().unwrap();
        assert!(
            error.contains("big.png") && error.contains("refused"),
            "{error}"
        );
        let response = upload(&base, "ok.png", "sandbox: tokens=2", vec![1; 10]).await;
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn crash_ends_the_stream_after_the_echo() {
        let base = serve().await;
        let events = Events::open(&base, "boom\nsandbox: crash delay_ms=0", false)
            .await
            .all()
            .await;
        let kinds: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["start", "answer", "crash"]);
        assert_eq!(streams(&base).await[0]["outcome"], "failed");
    }

    #[tokio::test]
    async fn the_page_has_the_controls_the_driver_uses() {
        let base = serve().await;
        for path in ["/", "/chat"] {
            let page = reqwest::get(format!("{base}{path}")).await.unwrap();
            assert!(page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"));
            let html = page.text().await.unwrap();
            for needle in [
                r#"<textarea id="prompt""#,
                r#"<button type="button" id="send""#,
                r#"<button type="button" id="stop" disabled"#,
                r#"<input type="checkbox" id="thinking""#,
                r#"<main id="log""#,
                r#"<body data-state="idle""#,
                r#"fetch("/api/chat""#,
                r#"<button type="button" id="attach""#,
                r#"<input type="file" id="attach-input" multiple"#,
                r#"<div id="chips""#,
            ] {
                assert!(html.contains(needle), "{path} lacks {needle}");
            }
        }
    }
}
