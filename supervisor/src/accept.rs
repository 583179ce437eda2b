//! Accept loops that never spin: every listener of the daemon (the HTTP API, the
//! sandbox site, the control socket, the lanes socket) takes its connections through
//! [`AcceptErrors::accept`].
//!
//! An accept that fails — typically `EMFILE` at the descriptor limit — fails again at
//! once while the connection waits in the backlog: retried without a pause, one such
//! loop wrote 261 MB of log in 3 s at full CPU. Here a failure waits (10 ms, doubling to
//! 1 s) before the next try, and a repeated failure is logged once per [`REPORT_EVERY`]
//! with how many times it happened since the last line.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The first pause after a failed accept; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause: a listener at the descriptor limit recovers within this of a
/// descriptor being freed.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A repeated accept failure is logged at most this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The failures of one accept loop: its backoff and its log throttle.
pub struct AcceptErrors {
    /// What accepts: named in the log line ("control socket", "HTTP API", ...).
    what: &'static str,
    backoff: Duration,
    /// Failures since the last log line.
    unreported: u64,
    last_report: Option<Instant>,
    /// Log lines written (for tests).
    reports: u64,
}

impl AcceptErrors {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            backoff: FIRST_BACKOFF,
            unreported: 0,
            last_report: None,
            reports: 0,
        }
    }

    /// Calls `accept` until it succeeds, pausing and reporting as the module says.
    pub async fn accept<T, F, Fut>(&mut self, mut accept: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::io::Result<T>>,
    {
        loop {
            match accept().await {
                Ok(conn) => {
                    self.backoff = FIRST_BACKOFF;
                    return conn;
                }
                Err(e) => self.failed(&e).await,
            }
        }
    }

    async fn failed(&mut self, e: &std::io::Error) {
        self.unreported += 1;
        let now = Instant::now();
        if self.last_report.is_none_or(|at| now >= at + REPORT_EVERY) {
            tracing::warn!(
                failures = self.unreported,
                retry_in_ms = self.backoff.as_millis() as u64,
                "{} accept failed: {e} ({} time(s) since the last report)",
                self.what,
                self.unreported
            );
            self.unreported = 0;
            self.last_report = Some(now);
            self.reports += 1;
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1000 failures in a row (a listener at the descriptor limit) take at least the
    /// backoff between each, are reported once per interval, and the next success
    /// goes through.
    #[tokio::test(start_paused = true)]
    async fn failing_accepts_back_off_and_are_reported_once_per_interval() {
        let mut errors = AcceptErrors::new("test");
        let mut calls = 0u32;
        let started = Instant::now();
        let got = errors
            .accept(|| {
                calls += 1;
                let n = calls;
                async move {
                    if n <= 1000 {
                        Err(std::io::Error::from_raw_os_error(libc::EMFILE))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(got, 1001);
        let took = started.elapsed();
        // 10+20+...+640 ms, then 1 s for each of the other 993.
        assert!(took >= Duration::from_secs(993), "{took:?}");
        let intervals = took.as_secs() / REPORT_EVERY.as_secs() + 1;
        assert!(
            errors.reports <= intervals && errors.reports >= intervals - 1,
            "{} reports in {took:?}",
            errors.reports
        );
        // A success resets the pause.
        assert_eq!(errors.backoff, FIRST_BACKOFF);
    }
}
