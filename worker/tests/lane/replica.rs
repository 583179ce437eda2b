//! Local replicas of the provider sites, served in-process: each site's page shape (the
//! markup its driver's selectors expect, `tests/replicas/<provider>.html`) and its
//! answer stream in the site's format at the site's path. Test code only.
//!
//! The replica's answer is deterministic ([`reasoning_pieces`], [`answer_pieces`]) and
//! re-cut into 7-byte chunks, so that events and multi-byte characters arrive split. A
//! line `replica: <mode> [words=N] [delay_ms=N] [at_once] [charset=yes|no]` in the
//! prompt picks what the site does ([`Mode`]), how its body comes (`at_once`: the whole
//! body in one write, at once) and whether its content type names a charset;
//! server-side switches pick what the page shows (logged out, changed), and a session
//! cookie can be made a condition of being logged in.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use prq_protocol::provider::Provider;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DeepSeek,
    Glm,
    Moonshot,
    Qwen,
    Perplexity,
    HuggingChat,
    AiStudio,
}

impl Kind {
    /// The provider's name in a lane's config.
    pub fn provider(self) -> &'static str {
        let provider = match self {
            Kind::DeepSeek => Provider::DeepSeek,
            Kind::Glm => Provider::Glm,
            Kind::Moonshot => Provider::Moonshot,
            Kind::Qwen => Provider::Qwen,
            Kind::Perplexity => Provider::Perplexity,
            Kind::HuggingChat => Provider::HuggingChat,
            Kind::AiStudio => Provider::AiStudio,
        };
        provider.name()
    }

    fn page(self) -> &'static str {
        match self {
            Kind::DeepSeek => include_str!("../replicas/deepseek.html"),
            Kind::Glm => include_str!("../replicas/glm.html"),
            Kind::Moonshot => include_str!("../replicas/moonshot.html"),
            Kind::Qwen => include_str!("../replicas/qwen.html"),
            Kind::Perplexity => include_str!("../replicas/perplexity.html"),
            Kind::HuggingChat => include_str!("../replicas/huggingchat.html"),
            Kind::AiStudio => include_str!("../replicas/aistudio.html"),
        }
    }

    /// Where the site's new chat is.
    fn page_path(self) -> &'static str {
        match self {
            Kind::HuggingChat => "/chat/",
            Kind::AiStudio => "/prompts/new_chat",
            _ => "/",
        }
    }

    fn stream_path(self) -> &'static str {
        match self {
            Kind::DeepSeek => "/api/v0/chat/completion",
            Kind::Glm | Kind::Qwen => "/api/v2/chat/completions",
            Kind::Moonshot => "/apiv2/kimi.gateway.chat.v1.ChatService/Chat",
            Kind::Perplexity => "/rest/sse/perplexity_ask",
            Kind::HuggingChat => "/chat/conversation/{id}",
            Kind::AiStudio => "/$rpc/google.internal.alkali.applications.makersuite.v1.MakerSuiteService/GenerateContent",
        }
    }

    /// Whether the site has a thinking switch; without one, its model always reasons.
    pub fn has_thinking_switch(self) -> bool {
        !matches!(self, Kind::Perplexity | Kind::HuggingChat)
    }
}

/// What the site does with a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Answer,
    /// Streams the first words, then nothing (until the page aborts).
    Hang,
    RateLimit,
    /// Streams the first words, then its content filter ends the answer.
    Filter,
    /// The site refuses the request as from a logged-out session.
    Login,
    /// The stream runs its course (reasoning included) but carries no answer text: what
    /// a changed site looks like to a parser that no longer finds the answer.
    Empty,
    /// The site wants a captcha solved (GLM's `FRONTEND_CAPTCHA…`, as an HTTP 403).
    Captcha,
}

pub const SESSION_COOKIE: &str = "replica_session=ok";

/// What a site's prompt box `#chat-input` is (the GLM and Qwen replicas'; Open WebUI
/// renders it as a textarea or as a rich editor).
#[derive(Debug, Clone, Default)]
pub enum PromptBox {
    #[default]
    Textarea,
    /// A bare contenteditable element.
    ContentEditable,
    /// A rich editor: the bundled script (`tests/editors/`) that mounts it.
    Editor(Arc<str>),
}

/// One answer stream the replica served.
#[derive(Debug, Clone)]
pub struct Served {
    pub prompt: String,
    pub thinking: bool,
    /// The page read the prompt from a rich editor's own model.
    pub editor: bool,
    /// `streaming`, `finished` or `aborted`.
    pub outcome: &'static str,
    /// How the page sent it: `fetch` or `xhr`.
    pub transport: String,
}

#[derive(Default)]
struct Shared {
    logged_out: bool,
    changed: bool,
    /// The page's stop button does nothing (a broken site's).
    stop_inert: bool,
    /// What the prompt box `#chat-input` is.
    prompt_box: PromptBox,
    /// Logged in only with [`SESSION_COOKIE`].
    require_session: bool,
    served: Vec<Served>,
    /// The `Cookie` header of each page load.
    page_cookies: Vec<String>,
    conversations: u32,
}

#[derive(Clone)]
struct App {
    kind: Kind,
    shared: Arc<Mutex<Shared>>,
}

pub struct Replica {
    /// The new chat page: a lane's `base_url`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    server: JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Replica {
    pub async fn serve(kind: Kind) -> Replica {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = App {
            kind,
            shared: Arc::clone(&shared),
        };
        let mut router = Router::new()
            .route(kind.page_path(), get(page))
            .route("/replica.js", get(script))
            .route("/editor.js", get(editor_script))
            .route(kind.stream_path(), post(stream));
        if kind == Kind::HuggingChat {
            router = router.route("/chat/conversation", post(new_conversation));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}{}",
            listener.local_addr().unwrap(),
            kind.page_path()
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, router.with_state(app)).await.unwrap();
        });
        Replica {
            url,
            shared,
            server,
        }
    }

    pub fn set_logged_out(&self, logged_out: bool) {
        self.shared.lock().unwrap().logged_out = logged_out;
    }

    pub fn set_changed(&self, changed: bool) {
        self.shared.lock().unwrap().changed = changed;
    }

    pub fn set_stop_inert(&self, inert: bool) {
        self.shared.lock().unwrap().stop_inert = inert;
    }

    pub fn set_prompt_box(&self, prompt_box: PromptBox) {
        self.shared.lock().unwrap().prompt_box = prompt_box;
    }

    pub fn require_session(&self) {
        self.shared.lock().unwrap().require_session = true;
    }

    pub fn served(&self) -> Vec<Served> {
        self.shared.lock().unwrap().served.clone()
    }

    pub fn page_cookies(&self) -> Vec<String> {
        self.shared.lock().unwrap().page_cookies.clone()
    }

    /// Waits until the newest stream has ended; panics after `within`.
    pub async fn last_stream_ended(&self, within: Duration) -> Served {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let last = self.served().pop().expect("a stream was served");
            if last.outcome != "streaming" {
                return last;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still streaming: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn logged_in(shared: &Shared, headers: &HeaderMap) -> bool {
    let cookies = headers
        .get(header::COOKIE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("");
    !shared.logged_out && (!shared.require_session || cookies.contains(SESSION_COOKIE))
}

async fn page(State(app): State<App>, headers: HeaderMap) -> Response {
    let mut shared = app.shared.lock().unwrap();
    let cookies = headers
        .get(header::COOKIE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("")
        .to_owned();
    shared.page_cookies.push(cookies);
    let state = match (logged_in(&shared, &headers), shared.changed) {
        (false, _) => "login",
        (true, true) => "changed",
        (true, false) => "chat",
    };
    let stop = if shared.stop_inert { "inert" } else { "works" };
    let mut html = app.kind.page().replace(
        "data-state=\"chat\"",
        &format!("data-state=\"{state}\" data-stop=\"{stop}\""),
    );
    let rich = match shared.prompt_box {
        PromptBox::Textarea => None,
        PromptBox::ContentEditable => Some(" contenteditable=\"true\""),
        PromptBox::Editor(_) => Some(""),
    };
    if let Some(attributes) = rich {
        html = html
            .replace(
                "<textarea id=\"chat-input\"",
                &format!("<div{attributes} id=\"chat-input\""),
            )
            .replace("></textarea>", "></div>");
    }
    if let PromptBox::Editor(_) = shared.prompt_box {
        html = html.replace(
            "<script src=\"/replica.js\"></script>",
            "<script src=\"/replica.js\"></script>\n<script src=\"/editor.js\"></script>",
        );
    }
    // A cookie of the site's own, kept for a day: it must outlive a browser restart.
    let visit = format!(
        "replica_visit={}; Max-Age=86400; Path=/",
        shared.page_cookies.len()
    );
    ([(header::SET_COOKIE, visit)], Html(html)).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript")],
        include_str!("../replicas/replica.js"),
    )
        .into_response()
}

/// The prompt box's editor script, when it has one.
async fn editor_script(State(app): State<App>) -> Response {
    match &app.shared.lock().unwrap().prompt_box {
        PromptBox::Editor(js) => {
            ([(header::CONTENT_TYPE, "text/javascript")], js.to_string()).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn new_conversation(State(app): State<App>) -> Response {
    let mut shared = app.shared.lock().unwrap();
    shared.conversations += 1;
    let id = format!("66a0{:020x}", shared.conversations);
    axum::Json(json!({ "conversationId": id })).into_response()
}

async fn stream(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let prompt = request["prompt"].as_str().unwrap_or("").to_owned();
    let asked = directives(&prompt);
    let thinking = request["thinking"] == true || !app.kind.has_thinking_switch();
    let logged_in = logged_in(&app.shared.lock().unwrap(), &headers);
    let mode = if logged_in { asked.mode } else { Mode::Login };
    let reply = reply(app.kind, mode, thinking, asked.words);
    let index = {
        let mut shared = app.shared.lock().unwrap();
        shared.served.push(Served {
            prompt,
            thinking,
            editor: request["editor"] == true,
            outcome: "streaming",
            transport: headers
                .get("x-replica-transport")
                .and_then(|t| t.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        });
        shared.served.len() - 1
    };
    let ended = Ended {
        shared: Arc::clone(&app.shared),
        index,
        finished: false,
    };
    match reply {
        Reply::Refuse {
            status,
            content_type,
            body,
        } => {
            drop(ended.finish());
            (
                StatusCode::from_u16(status).unwrap(),
                [(header::CONTENT_TYPE, content_type)],
                body,
            )
                .into_response()
        }
        Reply::Stream {
            content_type,
            events,
            hang_after,
        } => {
            let content_type = with_charset(content_type, asked.charset);
            let chunk = if asked.at_once { usize::MAX } else { 7 };
            let body = paced(events, hang_after, chunk, asked.delay, ended);
            (
                [(header::CONTENT_TYPE, content_type)],
                Body::from_stream(body),
            )
                .into_response()
        }
    }
}

/// Records how a stream ended: `finished` once its last byte is out, `aborted` when
/// the body is dropped before (the page went away or aborted the fetch).
struct Ended {
    shared: Arc<Mutex<Shared>>,
    index: usize,
    finished: bool,
}

impl Ended {
    fn finish(mut self) -> Self {
        self.finished = true;
        self
    }
}

impl Drop for Ended {
    fn drop(&mut self) {
        let outcome = if self.finished { "finished" } else { "aborted" };
        self.shared.lock().unwrap().served[self.index].outcome = outcome;
    }
}

/// The site's content type with a charset (`Some(true)`: UTF-8, added if it had none),
/// without one (`Some(false)`: removed), or as the site sends it (`None`).
fn with_charset(content_type: &str, charset: Option<bool>) -> String {
    let bare = content_type.split(';').next().unwrap_or(content_type);
    match charset {
        None => content_type.to_owned(),
        Some(true) => format!("{bare}; charset=utf-8"),
        Some(false) => bare.to_owned(),
    }
}

/// The events re-cut into chunks of `chunk` bytes, `delay` apart, stopping for good after
/// `hang_after` events. The first comes right after the head: a short answer is then
/// complete before the worker has read the response's head, which is what a fast site's
/// short answer looks like to a worker on a loaded machine.
/// `ended` lives in the stream's last part, which runs once every chunk is out: there
/// it is finished, or (hanging) held until the body is dropped.
fn paced(
    events: Vec<Vec<u8>>,
    hang_after: Option<usize>,
    chunk: usize,
    delay: Duration,
    ended: Ended,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    let hangs = hang_after.is_some();
    let events: Vec<Vec<u8>> = events
        .into_iter()
        .take(hang_after.unwrap_or(usize::MAX))
        .collect();
    let bytes: Vec<u8> = events.concat();
    let chunks: Vec<Bytes> = bytes.chunks(chunk).map(Bytes::copy_from_slice).collect();
    futures::stream::iter(chunks.into_iter().enumerate())
        .then(move |(i, chunk)| async move {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(chunk)
        })
        .chain(
            futures::stream::once(async move {
                if hangs {
                    let _held = ended;
                    std::future::pending::<()>().await;
                } else {
                    drop(ended.finish());
                }
                Ok(Bytes::new())
            })
            .filter(|chunk: &Result<Bytes, Infallible>| {
                std::future::ready(chunk.as_ref().is_ok_and(|c| !c.is_empty()))
            }),
        )
}

/// What a prompt's `replica:` line asks of the site.
struct Directives {
    mode: Mode,
    words: usize,
    delay: Duration,
    at_once: bool,
    charset: Option<bool>,
}

fn directives(prompt: &str) -> Directives {
    let mut asked = Directives {
        mode: Mode::Answer,
        words: 3,
        delay: Duration::ZERO,
        at_once: false,
        charset: None,
    };
    let Some(line) = prompt
        .lines()
        .find_map(|l| l.trim().strip_prefix("replica:"))
    else {
        return asked;
    };
    for word in line.split_whitespace() {
        match word.split_once('=') {
            Some(("words", n)) => asked.words = n.parse().unwrap(),
            Some(("delay_ms", n)) => asked.delay = Duration::from_millis(n.parse().unwrap()),
            Some(("charset", yes)) => asked.charset = Some(yes == "yes"),
            _ if word == "at_once" => asked.at_once = true,
            _ => {
                asked.mode = match word {
                    "hang" => Mode::Hang,
                    "rate_limit" => Mode::RateLimit,
                    "filter" => Mode::Filter,
                    "login" => Mode::Login,
                    "empty" => Mode::Empty,
                    "captcha" => Mode::Captcha,
                    other => panic!("unknown replica directive {other}"),
                }
            }
        }
    }
    asked
}

/// The reasoning a thinking answer streams, piece by piece.
pub fn reasoning_pieces() -> Vec<String> {
    // Two lines: sites mark up a line's start (GLM quotes each one).
    ["Let me think", "\n— 思考中", " 🤔."]
        .map(String::from)
        .to_vec()
}

/// The answer, piece by piece: multi-byte text (an emoji ZWJ sequence, right-to-left
/// Hebrew and Arabic), then `words` numbered words.
pub fn answer_pieces(words: usize) -> Vec<String> {
    let mut pieces: Vec<String> = ["Héllo", " from", " 日本語", " 🎉", " 👩‍👩‍👧‍👦", " שָׁלוֹם مرحبا"]
        .map(String::from)
        .to_vec();
    pieces.extend((0..words).map(|i| format!(" w{i}")));
    pieces
}

/// How many events of [`answer_pieces`] a filtered or hanging answer gets out.
const BEFORE_TROUBLE: usize = 2;

enum Reply {
    Stream {
        content_type: &'static str,
        events: Vec<Vec<u8>>,
        hang_after: Option<usize>,
    },
    Refuse {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
}

fn refuse(status: u16, body: Value) -> Reply {
    Reply::Refuse {
        status,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
    }
}

fn sse(data: Value) -> Vec<u8> {
    format!("data: {data}\n\n").into_bytes()
}

fn named(event: &str, data: Value) -> Vec<u8> {
    format!("event: {event}\ndata: {data}\n\n").into_bytes()
}

/// The site's reply in its own format.
fn reply(kind: Kind, mode: Mode, thinking: bool, words: usize) -> Reply {
    let reasoning = if thinking { reasoning_pieces() } else { vec![] };
    let mut answer = answer_pieces(words);
    if matches!(mode, Mode::Filter | Mode::Hang) {
        answer.truncate(BEFORE_TROUBLE);
    }
    if mode == Mode::Empty {
        answer.clear();
    }
    let encode = match kind {
        Kind::DeepSeek => deepseek,
        Kind::Glm => glm,
        Kind::Moonshot => moonshot,
        Kind::Qwen => qwen,
        Kind::Perplexity => perplexity,
        Kind::HuggingChat => huggingchat,
        Kind::AiStudio => aistudio,
    };
    let (content_type, mut events, end) = match encode(mode, &reasoning, &answer) {
        Ok(stream) => stream,
        Err(refusal) => return refusal,
    };
    if mode == Mode::Hang {
        let hang_after = events.len();
        return Reply::Stream {
            content_type,
            events,
            hang_after: Some(hang_after),
        };
    }
    events.extend(end);
    Reply::Stream {
        content_type,
        events,
        hang_after: None,
    }
}

/// A stream's content type, its events up to the end, and its ending events (which
/// depend on the mode); or a refusal instead of a stream.
type Encoded = Result<(&'static str, Vec<Vec<u8>>, Vec<Vec<u8>>), Reply>;

const SSE: &str = "text/event-stream; charset=utf-8";

fn deepseek(mode: Mode, reasoning: &[String], answer: &[String]) -> Encoded {
    if mode == Mode::Login {
        return Err(refuse(
            200,
            json!({"code": 40003, "msg": "Authorization Failed (invalid token)", "data": null}),
        ));
    }
    let mut events = vec![
        named(
            "ready",
            json!({"request_message_id": 1, "response_message_id": 2}),
        ),
        named("update_session", json!({"updated_at": 1763793566.476625})),
        sse(
            json!({"v": {"response": {"message_id": 2, "parent_id": 1, "role": "ASSISTANT", "status": "WIP", "fragments": []}}}),
        ),
    ];
    // A fragment opens with its first piece; then its path with no operation (the last
    // one, APPEND, carries on), then bare continuations.
    for (kind, pieces) in [("THINK", reasoning), ("RESPONSE", answer)] {
        let Some((first, rest)) = pieces.split_first() else {
            continue;
        };
        events.push(sse(json!({"v": [{"id": 1, "type": kind, "content": first}], "p": "response/fragments", "o": "APPEND"})));
        let mut rest = rest.iter();
        if let Some(second) = rest.next() {
            events.push(sse(
                json!({"v": second, "p": "response/fragments/-1/content"}),
            ));
        }
        events.extend(rest.map(|piece| sse(json!({"v": piece}))));
        if kind == "THINK" {
            events.push(sse(
                json!({"v": 1.2, "p": "response/fragments/-1/elapsed_secs", "o": "SET"}),
            ));
        }
    }
    let end = match mode {
        Mode::RateLimit => vec![named(
            "hint",
            json!({"type": "error", "content": "You are sending messages too fast.", "finish_reason": "rate_limit_reached"}),
        )],
        Mode::Filter => vec![sse(
            json!({"v": "CONTENT_FILTER", "p": "response/status", "o": "SET"}),
        )],
        _ => vec![
            sse(
                json!({"v": [{"v": 115, "p": "accumulated_token_usage"}, {"v": "FINISHED", "p": "quasi_status"}], "p": "response", "o": "BATCH"}),
            ),
            // The status with no operation: after a BATCH, still a set.
            sse(json!({"v": "FINISHED", "p": "response/status"})),
            named("title", json!({"content": "A greeting"})),
            named(
                "close",
                json!({"click_behavior": "none", "auto_resume": false}),
            ),
        ],
    };
    Ok((SSE, events, end))
}

fn glm(mode: Mode, reasoning: &[String], answer: &[String]) -> Encoded {
    match mode {
        Mode::Login => return Err(refuse(401, json!({"detail": "Not authenticated"}))),
        Mode::Captcha => {
            return Err(refuse(
                403,
                json!({"detail": "FRONTEND_CAPTCHA_REQUIRED", "message": "Please complete the verification"}),
            ))
        }
        _ => {}
    }
    let frame = |data: Value| sse(json!({"type": "chat:completion", "data": data}));
    // Thinking in Open WebUI's markup: a details block opened with a summary, each line
    // quoted.
    const OPENING: &str =
        "<details type=\"reasoning\" done=\"false\">\n<summary>Thinking…</summary>\n> ";
    let quoted = |text: &str| text.replace('\n', "\n> ");
    let mut events: Vec<Vec<u8>> = reasoning
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let text = if i == 0 {
                format!("{OPENING}{}", quoted(p))
            } else {
                quoted(p)
            };
            frame(json!({"delta_content": text, "phase": "thinking"}))
        })
        .collect();
    for (i, piece) in answer.iter().enumerate() {
        if i == 0 && !reasoning.is_empty() {
            // The first answer text comes after the whole reasoning block, as an edit.
            let block = format!(
                "<details type=\"reasoning\" done=\"true\" duration=\"1\">\n<summary>Thought for 1 seconds</summary>\n> {}\n</details>\n",
                quoted(&reasoning.concat())
            );
            events.push(frame(json!({"edit_index": block.len(), "edit_content": format!("{block}{piece}"), "phase": "answer"})));
        } else {
            events.push(frame(json!({"delta_content": piece, "phase": "answer"})));
        }
    }
    let end = match mode {
        Mode::RateLimit => vec![frame(
            json!({"error": {"code": 429, "detail": "Too many requests, please wait"}, "done": true}),
        )],
        Mode::Filter => vec![frame(
            json!({"error": {"detail": "The content may contain sensitive information"}, "done": true}),
        )],
        _ => vec![
            frame(json!({"usage": {"total_tokens": 12}, "phase": "other"})),
            frame(json!({"phase": "done", "done": true})),
        ],
    };
    Ok((SSE, events, end))
}

fn connect_frame(end: bool, message: Value) -> Vec<u8> {
    let message = message.to_string().into_bytes();
    let mut frame = vec![if end { 2 } else { 0 }];
    frame.extend((message.len() as u32).to_be_bytes());
    frame.extend(message);
    frame
}

fn moonshot(mode: Mode, reasoning: &[String], answer: &[String]) -> Encoded {
    let mut events = vec![
        connect_frame(false, json!({"heartbeat": {}})),
        connect_frame(
            false,
            json!({"op": "set", "mask": "chat", "eventOffset": 1, "chat": {"id": "c1"}}),
        ),
        // The user's message echoed back, completed, before the assistant's opens.
        connect_frame(
            false,
            json!({"op": "set", "mask": "message", "eventOffset": 2, "message": {
                "id": "m1", "parentId": "", "role": "user", "status": "MESSAGE_STATUS_COMPLETED",
                "blocks": [{"messageId": "m1", "text": {"content": "(the prompt)"}}]}}),
        ),
        connect_frame(
            false,
            json!({"op": "set", "mask": "message", "eventOffset": 3, "message": {
                "id": "m2", "parentId": "m1", "role": "assistant", "status": "MESSAGE_STATUS_GENERATING",
                "blocks": []}}),
        ),
    ];
    for (part, id, pieces) in [("think", "0", reasoning), ("text", "1", answer)] {
        for (i, piece) in pieces.iter().enumerate() {
            let (op, mask) = match i {
                0 => ("set", format!("block.{part}")),
                _ => ("append", format!("block.{part}.content")),
            };
            events.push(connect_frame(
                false,
                json!({"op": op, "mask": mask, "block": {"id": id, part: {"content": piece}}}),
            ));
        }
    }
    let end = match mode {
        Mode::Login => {
            events.clear();
            vec![connect_frame(
                true,
                json!({"error": {"code": "unauthenticated", "message": "auth failed"}}),
            )]
        }
        Mode::RateLimit => vec![connect_frame(
            true,
            json!({"error": {"code": "resource_exhausted", "message": "Too many people are chatting with Kimi"}}),
        )],
        Mode::Filter => vec![connect_frame(
            false,
            json!({"op": "set", "mask": "message.status", "message": {"id": "m2", "status": "MESSAGE_STATUS_BLOCKED"}}),
        )],
        _ => vec![
            connect_frame(
                false,
                json!({"op": "set", "mask": "message.status", "message": {"id": "m2", "status": "MESSAGE_STATUS_COMPLETED"}}),
            ),
            connect_frame(false, json!({"eventOffset": 9, "done": {}})),
            connect_frame(true, json!({})),
        ],
    };
    Ok(("application/connect+json", events, end))
}

fn qwen(mode: Mode, reasoning: &[String], answer: &[String]) -> Encoded {
    match mode {
        Mode::Login => {
            return Err(refuse(
                401,
                json!({"success": false, "data": {"code": "Unauthorized", "details": "Please log in"}}),
            ))
        }
        Mode::RateLimit => {
            return Err(refuse(
                200,
                json!({"success": false, "data": {"code": "RateLimited", "details": "You have reached the limit"}}),
            ))
        }
        _ => {}
    }
    let delta = |delta: Value| sse(json!({"choices": [{"delta": delta}]}));
    let mut events = vec![sse(
        json!({"response.created": {"chat_id": "c", "response_id": "r"}}),
    )];
    // The web UI asks for `thinking_format: "summary"`: the reasoning comes as a summary
    // resent whole as it grows, its text in `extra`, `content` empty.
    let mut thought = String::new();
    for piece in reasoning {
        thought.push_str(piece);
        events.push(delta(json!({"role": "assistant", "content": "", "phase": "thinking_summary",
            "extra": {"summary_title": {"content": ["Thinking it over"]}, "summary_thought": {"content": [thought]}}})));
    }
    if !reasoning.is_empty() {
        events.push(delta(json!({"content": "", "phase": "thinking_summary", "status": "finished",
            "extra": {"summary_title": {"content": ["Thinking it over"]}, "summary_thought": {"content": [thought]}}})));
    }
    events.extend(
        answer
            .iter()
            .map(|p| delta(json!({"content": p, "phase": "answer", "status": "typing"}))),
    );
    let end = match mode {
        Mode::Filter => vec![sse(
            json!({"error": {"code": "DataInspectionFailed", "details": "Output data may contain inappropriate content."}}),
        )],
        _ => vec![
            delta(json!({"content": "", "phase": "answer", "status": "finished"})),
            b"data: [DONE]\n\n".to_vec(),
        ],
    };
    Ok((SSE, events, end))
}

fn perplexity(mode: Mode, reasoning: &[String], answer: &[String]) -> Encoded {
    match mode {
        Mode::RateLimit => return Err(refuse(429, json!({"error": "Too many requests"}))),
        Mode::Login => {
            let error = named(
                "error",
                json!({"code": "authentication_failed", "message": "Please log in to continue"}),
            );
            return Ok((SSE, vec![], vec![error]));
        }
        _ => {}
    }
    const NAMED: &str = "ask_text_0_markdown";
    let message = |mut data: Value| {
        data["backend_uuid"] = json!("b1");
        data["structured_answer_block_usages"] = json!([NAMED]);
        named("message", data)
    };
    // The steps: one goal whose description grows. The first message is a whole plan
    // block that already has it (as a recorded session quoted publicly starts), the
    // rest patch it.
    let mut goal = reasoning.first().cloned().unwrap_or_default();
    let goals = if goal.is_empty() {
        json!([])
    } else {
        json!([{"id": "g0", "description": goal, "final": false}])
    };
    let mut events = vec![message(
        json!({"status": "PENDING", "final_sse_message": false, "blocks": [{"intended_usage": "pro_search_steps", "plan_block": {"progress": "IN_PROGRESS", "goals": goals, "steps": [{"step_type": "INITIAL_QUERY", "initial_query_content": {"query": "(the prompt)"}}]}}]}),
    )];
    for piece in reasoning.iter().skip(1) {
        goal.push_str(piece);
        let patch = json!({"op": "replace", "path": "/goals/0/description", "value": goal});
        events.push(message(json!({"status": "PENDING", "blocks": [
            {"intended_usage": "pro_search_steps", "diff_block": {"field": "plan_block", "patches": [patch]}}]})));
    }
    // The answer: the same patch for both of its blocks.
    for (i, piece) in answer.iter().enumerate() {
        let patch = match i {
            0 => {
                json!({"op": "replace", "path": "", "value": {"progress": "IN_PROGRESS", "chunks": [piece], "answer": ""}})
            }
            _ => json!({"op": "add", "path": "/chunks/-", "value": piece}),
        };
        let block = |usage: &str| json!({"intended_usage": usage, "diff_block": {"field": "markdown_block", "patches": [patch.clone()]}});
        events.push(message(
            json!({"status": "PENDING", "blocks": [block(NAMED), block("ask_text")]}),
        ));
    }
    let whole = |usage: &str| json!({"intended_usage": usage, "markdown_block": {"progress": "DONE", "chunks": answer, "answer": answer.concat()}});
    let end = match mode {
        Mode::Filter => vec![message(
            json!({"status": "BLOCKED", "final_sse_message": true, "blocks": []}),
        )],
        _ => vec![
            // An early final message, still pending, with only telemetry.
            message(
                json!({"status": "PENDING", "final_sse_message": true, "telemetry_data": {"n": 1}}),
            ),
            message(
                json!({"status": "COMPLETED", "final_sse_message": true, "text_completed": true,
                "blocks": if answer.is_empty() { vec![] } else { vec![whole(NAMED), whole("ask_text")] }}),
            ),
            named("end_of_stream", json!({})),
        ],
    };
    Ok((SSE, events, end))
}

fn huggingchat(mode: Mode, reasoning: &[String], answer: &[String]) -> Encoded {
    if mode == Mode::Login {
        return Err(refuse(403, json!({"message": "You need to be logged in"})));
    }
    let update = |update: Value| format!("{update}\n").into_bytes();
    // Padded with NULs to 16 characters, as the site pads its tokens.
    let token = |t: &str| update(json!({"type": "stream", "token": format!("{t:\0<16}")}));
    let mut events = vec![update(json!({"type": "status", "status": "started"}))];
    // Its production models reason inside the answer's own tokens, in a think block
    // whose tags the tokens cut.
    if let Some((first, rest)) = reasoning.split_first() {
        events.push(token("<thi"));
        let mut pieces = vec![format!("nk>{first}")];
        pieces.extend(rest.iter().cloned());
        if let Some(last) = pieces.last_mut() {
            last.push_str("</");
        }
        pieces.push("think>\n\n".to_owned());
        events.extend(pieces.iter().map(|t| token(t)));
    }
    events.extend(answer.iter().map(|t| token(t)));
    let end = match mode {
        Mode::RateLimit => vec![update(
            json!({"type": "status", "status": "error", "message": "You are sending too many messages. Try again later."}),
        )],
        Mode::Filter => vec![update(
            json!({"type": "status", "status": "error", "message": "This conversation was blocked by the safety filter."}),
        )],
        _ => vec![
            update(json!({"type": "title", "title": "A greeting"})),
            update(json!({"type": "finalAnswer", "text": answer.concat(), "interrupted": false})),
        ],
    };
    Ok(("application/jsonl", events, end))
}

fn aistudio(mode: Mode, reasoning: &[String], answer: &[String]) -> Encoded {
    match mode {
        Mode::Login => {
            return Err(refuse(
                401,
                json!([[
                    null,
                    null,
                    16,
                    "Request had invalid authentication credentials."
                ]]),
            ))
        }
        Mode::RateLimit => {
            return Err(refuse(
                429,
                json!([[
                    null,
                    null,
                    8,
                    "Resource has been exhausted (e.g. check quota)."
                ]]),
            ))
        }
        _ => {}
    }
    // Parts: [null, text] with the thought flag at index 12.
    let part = |text: &str, thought: bool| {
        let mut part = vec![Value::Null, json!(text)];
        if thought {
            part.resize(12, Value::Null);
            part.push(json!(1));
        }
        Value::Array(part)
    };
    let element = |parts: Vec<Value>, finish: Option<u8>| {
        let mut candidate = vec![json!([parts, "model"])];
        candidate.extend(finish.map(|f| json!(f)));
        json!([[candidate]])
    };
    let mut elements: Vec<Value> = reasoning
        .iter()
        .map(|t| element(vec![part(t, true)], None))
        .collect();
    elements.extend(answer.iter().map(|t| element(vec![part(t, false)], None)));
    let last = match mode {
        Mode::Filter => element(vec![part("", false)], Some(3)),
        _ => element(vec![part("", false)], Some(1)),
    };
    // `)]}'`, then one array whose elements arrive one by one.
    let mut events: Vec<Vec<u8>> = vec![b")]}'\n[".to_vec()];
    events.extend(elements.iter().map(|e| format!("{e},\n").into_bytes()));
    let end = vec![format!("{last}]").into_bytes()];
    Ok(("application/json+protobuf; charset=UTF-8", events, end))
}
