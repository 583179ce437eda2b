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
//!
//! axum's own `serve` has no header-read timeout (it gives hyper no timer) and no
//! connection cap, hence this loop with hyper's HTTP/1 connection builder.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::accept::AcceptErrors;
use crate::config::LimitsConfig;

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
        let service = app
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(HeadTimer::new(
                limits.header_timeout,
                limits.keep_alive_idle,
            ))
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // The slot is this connection's until it closes, however it closes.
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "{what} connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
}

impl HeadTimer {
    fn new(header_timeout: Duration, keep_alive_idle: Duration) -> Self {
        Self {
            tokio: TokioTimer::new(),
            header_timeout,
            keep_alive_idle,
            first_head_done: AtomicBool::new(false),
        }
    }

    /// hyper's deadline (`now + header_timeout`) as it applies to this head.
    fn deadline(&self, hyper_deadline: Instant) -> Instant {
        if !self.first_head_done.swap(true, Ordering::Relaxed) {
            return hyper_deadline;
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
