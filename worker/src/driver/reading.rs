//! What the answer's request means, from its status and body to how it ended: one
//! [`Reading`] per generation turns the network's events into the parser's [`Event`]s,
//! with the failures that the status, an error body or a stream cut short stand for.
//! The lane's driver (`web.rs`) reads a live stream with it, and `prq replay`
//! (`capture.rs`) a captured one, so a capture replays exactly as the lane read it.

use prq_protocol::worker::{Failure, FailureKind};

use super::failure;
use super::format::{kind_from_words, Event, StreamParser};
use super::web::{is_captcha, Site};

/// How much of an error response's body goes into a message.
const EXCERPT_CHARS: usize = 300;

pub struct Reading {
    site: &'static Site,
    parser: Box<dyn StreamParser>,
    /// The response's HTTP status; 0 before it came.
    status: i64,
    /// The response's `Retry-After` header, if it had one.
    retry_after: Option<String>,
    /// The body of a response that is not a success, for the message.
    error_body: Vec<u8>,
}

impl Reading {
    pub fn new(site: &'static Site) -> Self {
        Self {
            site,
            parser: site.new_parser(),
            status: 0,
            retry_after: None,
            error_body: Vec::new(),
        }
    }

    /// The response's headers arrived, with its `Retry-After` (a rate limit's wait).
    pub fn response(&mut self, status: i64, retry_after: Option<String>) {
        self.status = status;
        self.retry_after = retry_after;
    }

    fn success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The next bytes of the body: appends what they mean to `out`.
    pub fn data(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        if self.success() {
            self.parser.feed(bytes, out);
        } else {
            self.error_body.extend_from_slice(bytes);
        }
    }

    /// The body is complete: appends what its end means to `out`. Returns how the
    /// generation ended if no event in `out` ends it.
    pub fn finished(&mut self, out: &mut Vec<Event>) -> Failure {
        if !self.success() {
            return self.http_failure();
        }
        self.parser.end(out);
        failure(
            FailureKind::SiteError,
            format!(
                "{}: the answer stream ended without its final event",
                self.site.name
            ),
        )
    }

    /// The request failed on the network (not by a stop).
    pub fn failed(&self, error: &str) -> Failure {
        failure(
            FailureKind::SiteError,
            format!("{}: the answer stream failed: {error}", self.site.name),
        )
    }

    fn http_failure(&self) -> Failure {
        let status = self.status;
        let body = String::from_utf8_lossy(&self.error_body);
        let excerpt: String = body.trim().chars().take(EXCERPT_CHARS).collect();
        let kind = match status {
            // A site that wants a captcha solved refuses with 403 too (GLM's
            // `FRONTEND_CAPTCHA…`), and logging in again would not help.
            _ if is_captcha(&excerpt) => FailureKind::Captcha,
            401 | 403 => FailureKind::NotLoggedIn,
            429 => FailureKind::RateLimited,
            _ => kind_from_words(&excerpt).unwrap_or(FailureKind::SiteError),
        };
        let what = if kind == FailureKind::Captcha {
            "the site asks for a captcha to be solved: "
        } else {
            ""
        };
        let mut failure = failure(
            kind,
            format!(
                "{}: {what}{} answered HTTP {status}: {excerpt}",
                self.site.name, self.site.stream
            ),
        );
        // Retry-After in seconds (RFC 9110 §10.2.3); its HTTP-date form is left to the
        // supervisor's backoff.
        failure.retry_after_s = self
            .retry_after
            .as_deref()
            .and_then(|v| v.trim().parse().ok());
        failure
    }
}
