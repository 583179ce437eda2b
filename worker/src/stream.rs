//! Reading a chat site's answer as it streams: the network stream of one request,
//! taken from the browser over CDP ([`StreamTap`], [`NetworkStream`]), and an
//! incremental Server-Sent Events parser for its bytes. Nothing here knows a site:
//! drivers name the request ([`UrlPattern`]) and map the events.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use chromiumoxide::cdp::browser_protocol::fetch::{
    ContinueRequestParams, EnableParams as FetchEnable, EventRequestPaused, RequestPattern,
    RequestStage,
};
use chromiumoxide::cdp::browser_protocol::network::{
    EventDataReceived, EventLoadingFailed, EventLoadingFinished, EventRequestWillBeSent,
    EventResponseReceived, GetResponseBodyParams, RequestId, Response, StreamResourceContentParams,
};
use chromiumoxide::listeners::EventStream;
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::browser::CdpError;
use crate::tab::{Caller, PageError, Tab};

/// Which request a driver watches: its method and URL path (the host is left out, so
/// that a lane's `base_url` may move the site). In `path`, a `*` segment stands for any
/// one segment (`/chat/conversation/*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlPattern {
    pub method: &'static str,
    pub path: &'static str,
}

impl UrlPattern {
    pub const fn post(path: &'static str) -> Self {
        Self {
            method: "POST",
            path,
        }
    }

    pub fn matches(&self, method: &str, url: &str) -> bool {
        if !method.eq_ignore_ascii_case(self.method) {
            return false;
        }
        let mut want = self.path.split('/');
        let mut got = url_path(url).split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some("*"), Some(segment)) if !segment.is_empty() => {}
                (Some(w), Some(g)) if w == g => {}
                _ => return false,
            }
        }
    }
}

impl UrlPattern {
    /// A Fetch-domain URL pattern (`*` any characters, `?` one, `\\` escapes) that
    /// matches at least every URL this pattern matches, on any host, with any query.
    fn fetch_glob(&self) -> String {
        let mut glob = String::from("*");
        for c in self.path.chars() {
            if c == '?' || c == '\\' {
                glob.push('\\');
            }
            glob.push(c);
        }
        glob.push('*');
        glob
    }
}

impl std::fmt::Display for UrlPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// What happened next to the watched request.
#[derive(Debug, PartialEq)]
pub enum NetEvent {
    /// The response headers arrived; the body follows as `Data`. `retry_after` is its
    /// `Retry-After` header (a rate limit's wait), if it had one.
    Response {
        status: i64,
        retry_after: Option<String>,
        content_type: String,
    },
    /// The next bytes of the body, exactly as the page received them.
    Data(Vec<u8>),
    /// The body is complete.
    Finished,
    /// The request failed; `canceled` when the page aborted it.
    Failed { error: String, canceled: bool },
}

/// How many requests the tap remembers having turned streaming on for; a generation
/// takes its one request's entry at once, so only requests outside any generation
/// (none, on the sites driven) would pile up.
const TAPPED_KEPT: usize = 16;

/// Requests with streaming on, and the bytes buffered before it was (none, when the
/// request was paused before it was sent), newest last.
type Tapped = Mutex<VecDeque<(RequestId, Vec<u8>)>>;

/// Turns on streaming of each request matching a pattern before the request leaves the
/// browser, so that every `Network.dataReceived` of its body carries the bytes exactly as
/// the server sent them, however fast the body comes.
///
/// Why: `Network.streamResourceContent` is refused for a body that has already finished
/// loading, and `Network.getResponseBody` hands a finished body back as text decoded by
/// Chromium's rules, not as bytes: a `text/*` type without a charset comes back decoded
/// as windows-1252 (`Ünï` arrives as `ÃœnÃ¯`), and a JSON-ish type as UTF-8 with every
/// byte that is not UTF-8 (a Connect frame's length prefix) replaced. A short answer from
/// a fast site is finished before the worker has read its response headers. So each
/// matching request is paused (`Fetch.requestPaused` at the request stage, which carries
/// the request's `Network` ID), streaming is turned on for it, and it goes on its way:
/// nothing is buffered before streaming is on, on any timing. The pause costs two CDP
/// round trips, and only the site's answer request takes it.
///
/// One tap per tab, for its whole life: the Fetch domain stays on across page loads, and
/// every paused request is let go at once, whether or not a generation is reading it.
pub struct StreamTap {
    pattern: UrlPattern,
    tapped: Arc<Tapped>,
    task: JoinHandle<()>,
}

impl Drop for StreamTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StreamTap {
    pub async fn start(tab: &Tab, pattern: UrlPattern) -> Result<Self, PageError> {
        let mut paused = tab.listen::<EventRequestPaused>().await?;
        let intercept = RequestPattern::builder()
            .url_pattern(pattern.fetch_glob())
            .request_stage(RequestStage::Request)
            .build();
        tab.call(FetchEnable::builder().pattern(intercept).build())
            .await?;
        let tapped = Arc::new(Mutex::new(VecDeque::new()));
        let task = tokio::spawn({
            let (caller, tapped) = (tab.caller(), Arc::clone(&tapped));
            async move {
                while let Some(event) = paused.next().await {
                    tap(&caller, pattern, &event, &tapped).await;
                }
            }
        });
        Ok(Self {
            pattern,
            tapped,
            task,
        })
    }

    /// Whether the tap turned streaming on for `id`, with the bytes buffered before it
    /// did; forgets it.
    fn take(&self, id: &RequestId) -> Option<Vec<u8>> {
        let mut tapped = self.tapped.lock().unwrap_or_else(PoisonError::into_inner);
        let at = tapped.iter().position(|(tapped, _)| tapped == id)?;
        tapped.remove(at).map(|(_, bytes)| bytes)
    }
}

/// One paused request: streaming on if it is the watched one, then on its way.
async fn tap(caller: &Caller, pattern: UrlPattern, event: &EventRequestPaused, tapped: &Tapped) {
    let network_id = event.network_id.as_ref();
    if let (true, Some(id)) = (
        pattern.matches(&event.request.method, &event.request.url),
        network_id,
    ) {
        let streamed = caller
            .call(StreamResourceContentParams::new(id.clone()))
            .await;
        match streamed.and_then(|ret| decode(ret.buffered_data.as_ref())) {
            Ok(bytes) => {
                let mut tapped = tapped.lock().unwrap_or_else(PoisonError::into_inner);
                if tapped.len() == TAPPED_KEPT {
                    tapped.pop_front();
                }
                tapped.push_back((id.clone(), bytes));
            }
            // The reader falls back to turning streaming on at the response.
            Err(e) => tracing::warn!("streaming the answer request from its start: {e}"),
        }
    }
    let go = ContinueRequestParams::new(event.request_id.clone());
    if let Err(e) = caller.call(go).await {
        tracing::warn!("letting a paused request go: {e}");
    }
}

/// The body of the first request matching the tap's pattern that the page sends after
/// [`watch`], read over CDP as the page itself receives it.
///
/// Every CDP event type arrives on its own channel. chromiumoxide's handler hands out
/// everything it has read before it yields, and the worker's runtime has one thread,
/// so whenever this reader runs, every event the browser sent before the one it sees is
/// already in its channel: polling the channels with `biased` priority in browser order
/// (request, response, data, end) never sees the end of a body before its last data.
///
/// [`watch`]: NetworkStream::watch
pub struct NetworkStream<'t> {
    tab: &'t Tab,
    tap: &'t StreamTap,
    requests: EventStream<EventRequestWillBeSent>,
    responses: EventStream<EventResponseReceived>,
    data: EventStream<EventDataReceived>,
    finished: EventStream<EventLoadingFinished>,
    failed: EventStream<EventLoadingFailed>,
    request: Option<RequestId>,
    /// The watched request's URL path (no host, no query).
    path: String,
    /// The tap missed the request and `Network.streamResourceContent` was refused at
    /// its response (the body was already complete): the whole body is read with
    /// `Network.getResponseBody` when it finishes.
    whole_body: bool,
    /// Events already taken from the browser and not yet handed out.
    pending: VecDeque<NetEvent>,
}

impl<'t> NetworkStream<'t> {
    /// Starts listening. Call it before the page sends the request, so that no event
    /// of the request is missed.
    pub async fn watch(tab: &'t Tab, tap: &'t StreamTap) -> Result<Self, PageError> {
        Ok(Self {
            tab,
            tap,
            requests: tab.listen().await?,
            responses: tab.listen().await?,
            data: tab.listen().await?,
            finished: tab.listen().await?,
            failed: tab.listen().await?,
            request: None,
            path: String::new(),
            whole_body: false,
            pending: VecDeque::new(),
        })
    }

    /// The watched request's URL path; empty before the page sent it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the page has sent the watched request yet.
    pub fn requested(&self) -> bool {
        self.request.is_some()
    }

    /// Waits for the next event of the watched request.
    ///
    /// Cancel-safe, except that cancelling it while it hands the body over to
    /// streaming (one CDP call right after the response) loses the bytes buffered
    /// until then; drivers only cancel it to stop, when they no longer want them.
    pub async fn next(&mut self) -> Result<NetEvent, PageError> {
        if let Some(event) = self.pending.pop_front() {
            return Ok(event);
        }
        loop {
            tokio::select! {
                biased;
                ev = self.requests.next() => {
                    let ev = ev.ok_or(PageError::Gone)?;
                    if self.request.is_none() && self.tap.pattern.matches(&ev.request.method, &ev.request.url) {
                        self.request = Some(ev.request_id.clone());
                        self.path = url_path(&ev.request.url).to_owned();
                    }
                }
                ev = self.responses.next() => {
                    let ev = ev.ok_or(PageError::Gone)?;
                    if self.is_ours(&ev.request_id) {
                        self.start_streaming(&ev.request_id).await?;
                        return Ok(NetEvent::Response {
                            status: ev.response.status,
                            retry_after: header(ev.response.headers.inner(), "retry-after"),
                            content_type: content_type(&ev.response),
                        });
                    }
                }
                ev = self.data.next() => {
                    let ev = ev.ok_or(PageError::Gone)?;
                    // Chunks that came before streaming was on carry no data; the buffered
                    // bytes returned by `streamResourceContent` stand for them.
                    if let (true, Some(data)) = (self.is_ours(&ev.request_id), &ev.data) {
                        return decode(data.as_ref()).map(NetEvent::Data);
                    }
                }
                ev = self.finished.next() => {
                    let ev = ev.ok_or(PageError::Gone)?;
                    if self.is_ours(&ev.request_id) {
                        if self.whole_body {
                            self.whole_body = false;
                            let body = self.read_whole_body(ev.request_id.clone()).await?;
                            self.pending.push_back(NetEvent::Finished);
                            return Ok(NetEvent::Data(body));
                        }
                        return Ok(NetEvent::Finished);
                    }
                }
                ev = self.failed.next() => {
                    let ev = ev.ok_or(PageError::Gone)?;
                    if self.is_ours(&ev.request_id) {
                        return Ok(NetEvent::Failed {
                            error: ev.error_text.clone(),
                            canceled: ev.canceled.unwrap_or(false),
                        });
                    }
                }
            }
        }
    }

    fn is_ours(&self, id: &RequestId) -> bool {
        self.request.as_ref() == Some(id)
    }

    async fn start_streaming(&mut self, id: &RequestId) -> Result<(), PageError> {
        if let Some(bytes) = self.tap.take(id) {
            if !bytes.is_empty() {
                self.pending.push_back(NetEvent::Data(bytes));
            }
            return Ok(());
        }
        tracing::warn!("the answer request was not paused to stream it from its start");
        match self
            .tab
            .call(StreamResourceContentParams::new(id.clone()))
            .await
        {
            Ok(ret) => {
                let bytes = decode(ret.buffered_data.as_ref())?;
                if !bytes.is_empty() {
                    self.pending.push_back(NetEvent::Data(bytes));
                }
            }
            // A body that is already complete cannot be streamed; read it at its end (as
            // text that Chromium decoded, for a text type: see `StreamTap`).
            Err(PageError::Cdp(CdpError::Failed { .. })) => self.whole_body = true,
            Err(e) => return Err(e),
        }
        Ok(())
    }

    async fn read_whole_body(&self, id: RequestId) -> Result<Vec<u8>, PageError> {
        let body = self.tab.call(GetResponseBodyParams::new(id)).await?;
        if body.base64_encoded {
            decode(&body.body)
        } else {
            Ok(body.body.into_bytes())
        }
    }
}

/// A response header's value, by its name in any case (CDP keeps the server's case).
fn header(headers: &serde_json::Value, name: &str) -> Option<String> {
    let (_, value) = headers
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))?;
    value.as_str().map(str::to_owned)
}

fn decode(base64: &str) -> Result<Vec<u8>, PageError> {
    base64::engine::general_purpose::STANDARD
        .decode(base64)
        .map_err(|e| PageError::Unexpected(format!("a network chunk is not base64: {e}")))
}

/// The response's `Content-Type` header as the site sent it, else the type Chromium
/// made of it.
fn content_type(response: &Response) -> String {
    header(response.headers.inner(), "content-type").unwrap_or_else(|| response.mime_type.clone())
}

/// The path of an absolute URL, without query or fragment.
fn url_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    path.split(['?', '#']).next().unwrap_or(path)
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the server named the event.
    pub event: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// An incremental parser for a `text/event-stream` body (the WHATWG rules: lines end in
/// `\n`, `\r\n` or `\r`; a blank line dispatches; `:` starts a comment).
///
/// Bytes go in as they arrive, split anywhere (even inside a UTF-8 sequence); a line is
/// decoded only when its terminator has arrived, and line terminators are ASCII, so no
/// character is ever cut.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Where the first unread line starts in `buf`.
    start: usize,
    /// The last line ended in `\r`: a `\n` right after it belongs to that line.
    after_cr: bool,
    event: PendingEvent,
}

#[derive(Debug, Default)]
struct PendingEvent {
    name: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event from the bytes pushed so far.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if self.after_cr && self.start < self.buf.len() {
                if self.buf[self.start] == b'\n' {
                    self.start += 1;
                }
                self.after_cr = false;
            }
            let len = self.buf[self.start..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')?;
            let (begin, end) = (self.start, self.start + len);
            self.after_cr = self.buf[end] == b'\r';
            self.start = end + 1;
            if let Some(event) = self.event.line(&self.buf[begin..end]) {
                return Some(event);
            }
        }
    }
}

impl PendingEvent {
    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let name = self.name.take();
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let data = std::mem::take(&mut self.data);
            return Some(SseEvent { event: name, data });
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.name = Some(value.to_owned()),
            // `id` and `retry` steer EventSource reconnects, which a page's fetch never does.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(text: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: text.into(),
        }
    }

    /// Feeds `body` in the given chunk sizes and collects every event.
    fn parse_in_chunks(body: &[u8], sizes: impl Iterator<Item = usize>) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        let mut rest = body;
        for size in sizes {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            parser.push(chunk);
            events.extend(std::iter::from_fn(|| parser.next_event()));
            rest = tail;
        }
        assert!(rest.is_empty(), "the chunk sizes ran out");
        events
    }

    const BODY: &str = ": keep-alive\n\ndata: {\"type\":\"start\"}\n\ndata: héllo wörld — 日本語 🎉\n\n: ping\ndata: a\ndata:b\n\nevent: done\ndata: {}\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            data("{\"type\":\"start\"}"),
            data("héllo wörld — 日本語 🎉"),
            data("a\nb"),
            SseEvent {
                event: Some("done".into()),
                data: "{}".into(),
            },
        ]
    }

    #[test]
    fn whole_body_at_once() {
        assert_eq!(
            parse_in_chunks(BODY.as_bytes(), std::iter::once(BODY.len())),
            expected()
        );
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        // Two chunks, cut at every byte: inside `data:`, inside `\n\n`, and inside each
        // multi-byte character.
        for cut in 1..BODY.len() {
            let events = parse_in_chunks(BODY.as_bytes(), [cut, BODY.len()].into_iter());
            assert_eq!(events, expected(), "cut at byte {cut}");
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        assert_eq!(
            parse_in_chunks(BODY.as_bytes(), std::iter::repeat(1)),
            expected()
        );
    }

    #[test]
    fn crlf_and_cr_line_ends_even_when_split_between_them() {
        let body = "data: one\r\n\r\ndata: two\r\rdata: three\n\n";
        let want = vec![data("one"), data("two"), data("three")];
        for cut in 1..body.len() {
            let events = parse_in_chunks(body.as_bytes(), [cut, body.len()].into_iter());
            assert_eq!(events, want, "cut at byte {cut}");
        }
    }

    #[test]
    fn blocks_without_data_and_unfinished_events_are_not_dispatched() {
        let body = "event: ping\n\nid: 7\nretry: 10\n\ndata: last but unterminated\n";
        assert!(parse_in_chunks(body.as_bytes(), std::iter::once(body.len())).is_empty());
    }

    #[test]
    fn a_field_without_colon_and_an_empty_data_line() {
        let body = "data\n\ndata:\ndata: x\n\n";
        let events = parse_in_chunks(body.as_bytes(), std::iter::once(body.len()));
        assert_eq!(events, vec![data(""), data("\nx")]);
    }

    #[test]
    fn url_patterns_match_method_and_path_segments() {
        let chat = UrlPattern::post("/chat/conversation/*");
        assert!(chat.matches("POST", "https://x.test/chat/conversation/66a1b2?x=1"));
        assert!(!chat.matches("GET", "https://x.test/chat/conversation/66a1b2"));
        assert!(!chat.matches("POST", "https://x.test/chat/conversation"));
        assert!(!chat.matches("POST", "https://x.test/chat/conversation/"));
        assert!(!chat.matches("POST", "https://x.test/chat/conversation/66a1b2/stop"));
        let exact = UrlPattern::post("/api/chat");
        assert!(exact.matches("post", "http://127.0.0.1:9/api/chat"));
        assert!(!exact.matches("POST", "http://127.0.0.1:9/api/chat2"));
    }

    #[test]
    fn url_paths() {
        assert_eq!(url_path("http://127.0.0.1:8080/api/chat"), "/api/chat");
        assert_eq!(url_path("https://x.test/api/chat?stream=1#f"), "/api/chat");
        assert_eq!(url_path("https://x.test"), "/");
    }
}
