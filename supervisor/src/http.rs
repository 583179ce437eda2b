//! The daemon's HTTP servers (the API and the sandbox site): their accept loop and the
//! limits every connection lives under, whatever it sends.
//!
//! - At most `limits.max_connections` connections are open at once; the loop accepts
//!   the next one only when one has closed, so further clients wait in the kernel's
//!   listen backlog instead of taking the daemon's descriptors.
//! - A new connection has `header_timeout_s` to send a complete request head, and a
//!   kept-alive one `keep_alive_idle_s` for its next (hyper's header-read timeout; see
//!   [`HeadTimer`]). A response being written — an SSE stream, an answer a request
//!   waits for in the queue — is never cut by them: hyper reads no next head meanwhile.
//! - The body deadline and the announced-size check are the API's (`api::read_body`).
//! - A response that leaves the request's body unread says `Connection: close`
//!   ([`answer`]), and the connection then closes lingering ([`Lingering`]): a client
//!   whose body was refused before it was read gets the refusal, not a reset, and
//!   does not send its next request into the closing connection.
//!
//! - HTTP/2 with prior knowledge (a client that opens with HTTP/2's preface rather than
//!   an HTTP/1.1 request) is refused the HTTP/2 way, with a GOAWAY that says to use
//!   HTTP/1.1 ([`refuse_http2`]); an HTTP/1.1 request without `Host` gets 400, as
//!   RFC 9112 §3.2 asks.
//!
//! axum's own `serve` has no header-read timeout (it gives hyper no timer) and no
//! connection cap, hence this loop with hyper's HTTP/1 connection builder.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use axum::http::{header, HeaderValue, Request, Response, Version};
use axum::response::IntoResponse as _;
use hyper::body::{Body as _, Frame, SizeHint};

use crate::accept::AcceptErrors;
use crate::config::LimitsConfig;
use crate::openai::ApiError;

/// The per-connection limits, from `[limits]` as the daemon started.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub keep_alive_idle: Duration,
}

impl ConnLimits {
    pub fn from_config(l: &LimitsConfig) -> Self {
        Self {
            max_connections: l.max_connections,
            header_timeout: Duration::from_secs_f64(l.header_timeout_s),
            keep_alive_idle: Duration::from_secs_f64(l.keep_alive_idle_s),
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets the open connections finish
/// their responses (the caller bounds how long). Each request carries its peer's
/// address as axum's `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    what: &'static str,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut errors = AcceptErrors::new(what);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
            _ = shutdown.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            conn = errors.accept(|| listener.accept()) => conn,
            _ = shutdown.cancelled() => break,
        };
        // With Nagle's algorithm a stream's small writes wait for the peer's delayed
        // ACK: measured, every SSE chunk after the first came 40 ms late.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // The slot is this connection's until it closes, however it closes.
            let _slot = slot;
            // The first head's deadline counts from here, the look at the first bytes
            // included.
            let timer = HeadTimer::new(limits.header_timeout, limits.keep_alive_idle);
            match tokio::time::timeout(limits.header_timeout, opens_with_http2(&tcp)).await {
                Ok(Ok(true)) => return refuse_http2(tcp, peer, what).await,
                Ok(Ok(false)) => {}
                // Silent past the head deadline, or broken: nothing to answer.
                Ok(Err(_)) | Err(_) => return,
            }
            let service = tower::service_fn(move |req| answer(app.clone(), req, peer));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(timer)
                .header_read_timeout(limits.header_timeout)
                .serve_connection(
                    TokioIo::new(Lingering::new(tcp)),
                    TowerToHyperService::new(service),
                );
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, "{what} connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One request through `app`, with its peer's address as `ConnectInfo`. A response
/// that leaves part of the request's body unread (a refusal on the announced size, an
/// error before the body was needed) says `Connection: close`: the daemon will close
/// the connection rather than read the rest, and a pooled client told nothing would
/// send its next request into a closing connection and lose it.
async fn answer(
    app: Router,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Result<Response<axum::body::Body>, std::convert::Infallible> {
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let ended = Arc::new(AtomicBool::new(body.is_end_stream()));
    let body = axum::body::Body::new(Watched {
        inner: body,
        ended: ended.clone(),
    });
    // hyper takes an HTTP/1.1 request without `Host`; RFC 9112 §3.2 says to refuse it.
    let no_host = parts.version == Version::HTTP_11 && !parts.headers.contains_key(header::HOST);
    let mut response = match no_host {
        true => ApiError::invalid("an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)")
            .code("missing_host")
            .into_response(),
        false => app.oneshot(Request::from_parts(parts, body)).await?,
    };
    if !ended.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the connection opens with HTTP/2's preface (prior knowledge). Looks at the
/// first bytes without taking them; `PRI` is no HTTP/1 method, so three are enough
/// (clients send the preface in one piece).
async fn opens_with_http2(tcp: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 3];
    let n = tcp.peek(&mut first).await?;
    Ok(n > 0 && HTTP2_PREFACE.starts_with(&first[..n]) && n == first.len())
}

/// Refuses HTTP/2 with prior knowledge the way RFC 9113 has for it: the server's
/// preface (an empty SETTINGS frame), then GOAWAY with `HTTP_1_1_REQUIRED` and a
/// message a person can read in the client's error, then a lingering close (so the
/// client reads the GOAWAY rather than a reset). prq serves HTTP/1.1 only.
async fn refuse_http2(tcp: TcpStream, peer: std::net::SocketAddr, what: &'static str) {
    use tokio::io::AsyncWriteExt as _;
    /// RFC 9113 §7: "The endpoint requires that HTTP/1.1 be used instead of HTTP/2."
    const HTTP_1_1_REQUIRED: u32 = 0xd;
    const MESSAGE: &[u8] = b"prq serves HTTP/1.1 only: send the request over HTTP/1.1";
    let frame = |kind: u8, payload: &[u8]| {
        let len = (payload.len() as u32).to_be_bytes();
        // Length (24 bits), type, flags, stream 0, payload.
        let mut frame = vec![len[1], len[2], len[3], kind, 0, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        frame
    };
    let mut goaway = Vec::with_capacity(8 + MESSAGE.len());
    goaway.extend_from_slice(&0u32.to_be_bytes()); // last stream: none was processed
    goaway.extend_from_slice(&HTTP_1_1_REQUIRED.to_be_bytes());
    goaway.extend_from_slice(MESSAGE);
    let mut out = frame(0x4, &[]);
    out.extend(frame(0x7, &goaway));
    tracing::debug!(%peer, "{what}: HTTP/2 with prior knowledge refused (GOAWAY)");
    let mut conn = Lingering::new(tcp);
    let sent = async {
        conn.write_all(&out).await?;
        conn.shutdown().await
    };
    let _ = tokio::time::timeout(LINGER_FOR + LINGER_FOR, sent).await;
}

/// A request body that records when it has been read to its end.
struct Watched {
    inner: Incoming,
    ended: Arc<AtomicBool>,
}

impl hyper::body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() || self.inner.is_end_stream() {
            self.ended.store(true, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The timer hyper's HTTP/1 connection uses, which it uses only for its header-read
/// timeout (hyper 1.x, `proto/h1/conn.rs`): the deadline it sets for the first request
/// head stays `header_timeout`; every later one — a kept-alive connection waiting for
/// its next request — becomes `keep_alive_idle`. One timer per connection.
struct HeadTimer {
    tokio: TokioTimer,
    header_timeout: Duration,
    keep_alive_idle: Duration,
    first_head_done: AtomicBool,
    /// The first head is due `header_timeout` after this: when the connection came.
    accepted: Instant,
}

impl HeadTimer {
    /// A timer for a connection accepted now.
    fn new(header_timeout: Duration, keep_alive_idle: Duration) -> Self {
        Self {
            tokio: TokioTimer::new(),
            header_timeout,
            keep_alive_idle,
            first_head_done: AtomicBool::new(false),
            accepted: Instant::now(),
        }
    }

    /// hyper's deadline (`now + header_timeout`) as it applies to this head.
    fn deadline(&self, hyper_deadline: Instant) -> Instant {
        if !self.first_head_done.swap(true, Ordering::Relaxed) {
            return hyper_deadline.min(self.accepted + self.header_timeout);
        }
        hyper_deadline
            .checked_sub(self.header_timeout)
            .map_or(hyper_deadline, |start| start + self.keep_alive_idle)
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.tokio.sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.tokio.sleep_until(self.deadline(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        self.tokio.reset(sleep, self.deadline(new_deadline));
    }
}

/// How long a closing connection goes on reading what its client still sends, at
/// most, and how long it waits for more once the client has gone quiet.
const LINGER_FOR: Duration = Duration::from_secs(2);
const LINGER_QUIET: Duration = Duration::from_millis(500);
/// Reads of one poll while lingering, before the task yields to others.
const LINGER_READS_PER_POLL: usize = 16;

/// A connection's TCP stream that closes the way a web server must when it may have
/// refused a body it did not read (a 413 on the announced size, an error before the
/// body was needed): hyper ends the connection with a shutdown, which here sends FIN
/// and then reads and discards what the client still sends — until it closes, goes
/// quiet for `LINGER_QUIET`, or `LINGER_FOR` has passed. Closing a socket with bytes
/// unread in it makes the kernel send a reset instead, which can reach the client
/// before it has read the response: it sees "connection reset" or an incomplete
/// message, not the 413 (nginx's and Apache's "lingering close" exist for this).
/// A connection that ends on an error (a head deadline) is dropped at once.
struct Lingering {
    tcp: TcpStream,
    linger: Option<Linger>,
}

struct Linger {
    until: Pin<Box<tokio::time::Sleep>>,
    quiet: Pin<Box<tokio::time::Sleep>>,
}

impl Lingering {
    fn new(tcp: TcpStream) -> Self {
        Self { tcp, linger: None }
    }
}

impl Linger {
    /// Reads and discards until the client is done or a deadline passes; `Ready` when
    /// the connection may close.
    fn poll_drain(&mut self, tcp: &mut TcpStream, cx: &mut Context<'_>) -> Poll<()> {
        let mut scratch = [0u8; 8192];
        for _ in 0..LINGER_READS_PER_POLL {
            if self.until.as_mut().poll(cx).is_ready() || self.quiet.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *tcp).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {
                    let again = tokio::time::Instant::now() + LINGER_QUIET;
                    self.quiet.as_mut().reset(again);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        // A client still sending fast: let other tasks run before reading on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.tcp).poll_shutdown(cx))?;
            this.linger = Some(Linger {
                until: Box::pin(tokio::time::sleep(LINGER_FOR)),
                quiet: Box::pin(tokio::time::sleep(LINGER_QUIET)),
            });
        }
        match &mut this.linger {
            Some(linger) => linger.poll_drain(&mut this.tcp, cx).map(Ok),
            None => Poll::Ready(Ok(())),
        }
    }
}
