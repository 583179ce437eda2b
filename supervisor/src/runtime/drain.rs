//! Drain: taking this host out of a load balancer without failing a request.
//!
//! `prq drain` (or SIGTERM) makes the runtime `Draining`: `/readyz` answers 503 at
//! once, while requests are still admitted for `drain_s` — the time a balancer's health
//! check needs to notice. Then new requests are refused (503 `draining`, which a
//! balancer may retry elsewhere: nothing of them was admitted), what was admitted is
//! served for up to `shutdown_grace_s`, and the runtime stops (still processing then:
//! stopped in the page; still pending: failed). The daemon stays up after `prq drain`
//! — `prq start` makes it ready again, and calls off a drain under way — and exits
//! after a drain that SIGTERM began.

use std::sync::Arc;
use std::time::Duration;

use prq_protocol::control::RuntimeState;
use tokio_util::sync::CancellationToken;

use super::{Inner, Runtime};

/// Who began a drain: it decides whether `prq start` may call it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainCause {
    /// `prq drain`: the daemon stays up after it.
    Cli,
    /// SIGTERM: the daemon exits after it.
    Signal,
}

impl DrainCause {
    fn words(self) -> &'static str {
        match self {
            DrainCause::Cli => "`prq drain`",
            DrainCause::Signal => "SIGTERM",
        }
    }
}

/// How a drain request found the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStart {
    Begun,
    /// A drain was already under way; it goes on (from SIGTERM, it now ends the daemon).
    AlreadyDraining,
    /// Nothing runs: nothing to drain.
    AlreadyStopped,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("the runtime is starting; run `prq drain` once `prq start` has finished, or `prq stop` to stop now")]
    Starting,
}

/// A drain under way (the runtime is `Draining` exactly while there is one).
pub(super) struct Drain {
    cause: DrainCause,
    /// Past `drain_s`: new requests are refused.
    refusing: bool,
    /// Ends the drain's task: `prq start` called it off, or the runtime stopped.
    cancel: CancellationToken,
}

impl Drain {
    /// Whether new requests are refused, and if so, by whose drain (for the error).
    pub(super) fn refusing(&self) -> Option<&'static str> {
        self.refusing.then(|| self.cause.words())
    }

    pub(super) fn call_off(self) {
        self.cancel.cancel();
    }
}

impl Runtime {
    /// Begins a drain, or joins the one under way.
    pub fn drain(self: &Arc<Self>, cause: DrainCause) -> Result<DrainStart, DrainError> {
        let mut inner = self.lock();
        match inner.state {
            RuntimeState::Running => {}
            RuntimeState::Draining => {
                if let Some(drain) = inner.drain.as_mut() {
                    if cause == DrainCause::Signal && drain.cause != cause {
                        tracing::info!("SIGTERM during `prq drain`: the daemon exits when it ends");
                        drain.cause = cause;
                    }
                }
                return Ok(DrainStart::AlreadyDraining);
            }
            RuntimeState::Stopped => return Ok(DrainStart::AlreadyStopped),
            RuntimeState::Starting => return Err(DrainError::Starting),
        }
        let announce = Duration::from_secs(inner.config.drain_s);
        let grace = Duration::from_secs(inner.config.shutdown_grace_s);
        let cancel = CancellationToken::new();
        inner.state = RuntimeState::Draining;
        inner.reason = Some(format!(
            "draining ({}): /readyz answers 503; new requests are refused after {} s, then what was admitted gets up to {} s to finish",
            cause.words(),
            announce.as_secs(),
            grace.as_secs()
        ));
        inner.drain = Some(Drain {
            cause,
            refusing: false,
            cancel: cancel.clone(),
        });
        inner.status_changed = true;
        tracing::info!(
            by = cause.words(),
            drain_s = announce.as_secs(),
            "draining: not ready; still taking requests until the balancer notices"
        );
        self.pump(&mut inner);
        drop(inner);
        tokio::spawn(self.clone().run_drain(cancel, announce, grace));
        Ok(DrainStart::Begun)
    }

    async fn run_drain(
        self: Arc<Self>,
        cancel: CancellationToken,
        announce: Duration,
        grace: Duration,
    ) {
        tokio::select! {
            _ = tokio::time::sleep(announce) => {}
            _ = cancel.cancelled() => return,
        }
        {
            let mut inner = self.lock();
            // Checked under the lock: a call-off takes the lock too.
            if cancel.is_cancelled() {
                return;
            }
            let Some(drain) = inner.drain.as_mut() else {
                return;
            };
            drain.refusing = true;
            let by = drain.cause.words();
            let in_flight = in_flight(&inner);
            inner.reason = Some(format!(
                "draining ({by}): refusing new requests; {in_flight} admitted get up to {} s to finish",
                grace.as_secs()
            ));
            inner.status_changed = true;
            tracing::info!(in_flight, "draining: refusing new requests");
            self.pump(&mut inner);
        }
        let finished = tokio::select! {
            done = self.wait_for(grace, |i| in_flight(i) == 0) => done,
            _ = cancel.cancelled() => return,
        };
        let mut inner = self.lock();
        if cancel.is_cancelled() {
            return;
        }
        let by = inner.drain.as_ref().map_or("a drain", |d| d.cause.words());
        let reason = if finished {
            format!("drained by {by}; run `prq start` to take requests again")
        } else {
            format!(
                "drained by {by}: what was still in flight after shutdown_grace_s ({} s) was stopped; run `prq start` to take requests again",
                grace.as_secs()
            )
        };
        tracing::info!(finished, "drained");
        // Nothing is in flight (or what is gets stopped now): the lanes exit at once.
        self.stop_runtime(&mut inner, reason, Duration::ZERO);
        self.pump(&mut inner);
    }

    /// Waits until no drain is under way and, if the runtime stopped, until every lane
    /// has exited: for `prq drain --wait` and a daemon draining on SIGTERM.
    pub async fn drained(&self) {
        self.wait_for(Duration::MAX, |i| match i.state {
            RuntimeState::Draining => false,
            RuntimeState::Stopped => i.lanes.iter().all(|s| !s.is_alive()),
            RuntimeState::Starting | RuntimeState::Running => true,
        })
        .await;
    }

    /// `prq start` during a drain: a drain from `prq drain` is called off and the
    /// runtime is ready again; one from SIGTERM is not (the daemon is on its way out).
    pub(super) fn call_off_drain(&self, inner: &mut Inner) -> Result<(), String> {
        match inner.drain.as_ref().map(|d| d.cause) {
            Some(DrainCause::Signal) => {
                return Err("the daemon is shutting down (SIGTERM): it finishes what it has, then exits; start it again after that".into())
            }
            Some(DrainCause::Cli) | None => {}
        }
        if let Some(drain) = inner.drain.take() {
            drain.call_off();
        }
        inner.state = RuntimeState::Running;
        inner.reason = None;
        inner.status_changed = true;
        tracing::info!("drain called off by `prq start`: ready again");
        self.pump(inner);
        Ok(())
    }
}

/// Requests admitted and not yet ended.
fn in_flight(inner: &Inner) -> usize {
    inner.queue.pending_len() + inner.queue.processing_len()
}
