//! Reading chat sites' answer streams. A provider's parser turns the bytes of its
//! site's stream, as they arrive, into [`Event`]s; the pieces that several sites'
//! formats share live here: a Server-Sent Events body that may instead be one JSON
//! error document ([`SseBody`]), text that a site resends whole as it grows
//! ([`Growing`]), JSON patches ([`json_patch`]), Connect-protocol frames ([`connect`])
//! and JSON values run together ([`json_values`]).
//!
//! Parsers are fed exactly the bytes the page received, cut wherever the network cut
//! them (inside an event, inside a UTF-8 sequence); each one buffers until a unit of its
//! format is complete, so no cut changes what comes out (see [`testing`]).
//!
//! Two rules hold for every site: a stream that ends without answer text is a changed
//! site, never an empty answer ([`Answered`], which wraps every parser), and text a
//! parser finds where it does not know what it is gets logged, never silently dropped
//! ([`Unplaced`]).

pub mod connect;
pub mod json_patch;
pub mod json_values;

use prq_protocol::worker::{Failure, FailureKind};
use std::time::Duration;

use crate::stream::{SseEvent, SseParser};

/// What a piece of a site's stream means.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Reasoning(String),
    Answer(String),
    /// The site finished its answer.
    Done,
    /// The site refused or broke off the answer; the message names the provider.
    Failed(Failure),
    /// The site announced that its tab is about to crash (the sandbox does, on request):
    /// the crash is reported once the browser sees it.
    Crashing,
}

impl Event {
    pub fn failed(kind: FailureKind, message: impl Into<String>) -> Self {
        Event::Failed(crate::driver::failure(kind, message))
    }
}

/// One site's stream format, read incrementally.
pub trait StreamParser: Send {
    /// Reads the next bytes of the body and appends what they mean to `out`, in order.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>);

    /// The body is complete: appends whatever its end means (a stream format whose end
    /// is its last frame says `Done` here).
    fn end(&mut self, _out: &mut Vec<Event>) {}
}

/// A site's parser, held to the rule every site shares: a stream that ends without any
/// answer text and without an error is not an (empty) answer but a site whose stream
/// is no longer what its parser reads, so it fails as [`FailureKind::SiteChanged`]; and
/// the first end (`Done` or `Failed`) is the end, whatever follows it.
pub struct Answered {
    site: &'static str,
    inner: Box<dyn StreamParser>,
    answered: bool,
    ended: bool,
}

impl Answered {
    pub fn new(site: &'static str, inner: Box<dyn StreamParser>) -> Self {
        Self {
            site,
            inner,
            answered: false,
            ended: false,
        }
    }

    /// Passes on the events from `from` on, up to the first end, in place.
    fn check(&mut self, out: &mut Vec<Event>, from: usize) {
        let mut kept = from;
        for i in from..out.len() {
            if self.ended {
                break;
            }
            let mut event = std::mem::replace(&mut out[i], Event::Done);
            match &event {
                Event::Answer(text) if !text.is_empty() => self.answered = true,
                Event::Done if !self.answered => {
                    self.ended = true;
                    event = self.no_answer();
                }
                Event::Done | Event::Failed(_) | Event::Crashing => self.ended = true,
                _ => {}
            }
            out[kept] = event;
            kept += 1;
        }
        out.truncate(kept);
    }

    fn no_answer(&self) -> Event {
        Event::failed(
            FailureKind::SiteChanged,
            format!(
                "{}: the site's stream ended without an answer; the site may have changed",
                self.site
            ),
        )
    }
}

impl StreamParser for Answered {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        let from = out.len();
        self.inner.feed(bytes, out);
        self.check(out, from);
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        let from = out.len();
        self.inner.end(out);
        self.check(out, from);
        if !self.ended && !self.answered {
            self.ended = true;
            out.push(self.no_answer());
        }
    }
}

/// Logs, once per parser and name, that a site sent text in a place its parser does not
/// know (a new block, phase or type): at `warn`, naming the place and never the text,
/// so that a changed site shows in the log instead of as missing words.
#[derive(Debug, Default)]
pub struct Unplaced {
    seen: Vec<String>,
}

impl Unplaced {
    pub fn text_in(&mut self, site: &str, field: &str, name: &str) {
        if self.seen.iter().any(|s| s == name) {
            return;
        }
        self.seen.push(name.to_owned());
        tracing::warn!(
            site,
            field,
            name,
            "the site sent text where its parser does not know what it is; it is left out of the answer (the site may have changed)"
        );
    }
}

/// A body read as Server-Sent Events. Sites refuse a request (not logged in, rate
/// limited) with one JSON document instead of a stream; while no event has come, the
/// body's first bytes are kept so that [`plain_json`](SseBody::plain_json) can read
/// that document at the end.
#[derive(Debug, Default)]
pub struct SseBody {
    sse: SseParser,
    events_seen: bool,
    head: Vec<u8>,
}

/// The most of a non-SSE body kept for [`SseBody::plain_json`].
const PLAIN_BODY_MAX: usize = 64 * 1024;

impl SseBody {
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.events_seen && self.head.len() < PLAIN_BODY_MAX {
            self.head.extend_from_slice(bytes);
        }
        self.sse.push(bytes);
    }

    pub fn next_event(&mut self) -> Option<SseEvent> {
        let event = self.sse.next_event()?;
        if !self.events_seen {
            self.events_seen = true;
            self.head = Vec::new();
        }
        Some(event)
    }

    /// The body as one JSON document, when it carried no event at all.
    pub fn plain_json(&self) -> Option<serde_json::Value> {
        if self.events_seen {
            return None;
        }
        serde_json::from_slice(&self.head).ok()
    }
}

/// Text that a site sends whole each time it grows (a document it keeps patching):
/// hands out only what is new.
#[derive(Debug, Default)]
pub struct Growing {
    sent: String,
}

impl Growing {
    /// What `full` adds to the text handed out so far. When the site rewrote what was
    /// already handed out (it can: a citation marker turned into a link), the new
    /// version becomes the base and nothing is handed out for it; a client cannot
    /// take text back.
    pub fn next(&mut self, full: &str) -> Option<String> {
        if full.len() <= self.sent.len() {
            if !self.sent.starts_with(full) {
                tracing::debug!("a site rewrote text it had sent");
                self.sent = full.to_owned();
            }
            return None;
        }
        if !full.starts_with(self.sent.as_str()) {
            tracing::debug!("a site rewrote text it had sent");
            self.sent = full.to_owned();
            return None;
        }
        let new = full[self.sent.len()..].to_owned();
        self.sent.push_str(&new);
        Some(new)
    }
}

/// The failure a site's own error words describe, for sites whose error codes are not
/// known: logins, limits and filters each have a small vocabulary. `None` when the words
/// say none of these.
pub fn kind_from_words(text: &str) -> Option<FailureKind> {
    let text = text.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if any(&[
        "unauth",
        "not logged",
        "log in",
        "login",
        "sign in",
        "signin",
        "expired token",
        "token expired",
        "invalid token",
    ]) {
        Some(FailureKind::NotLoggedIn)
    } else if any(&[
        "rate limit",
        "ratelimit",
        "rate_limit",
        "too many",
        "quota",
        "exhaust",
        "limit reached",
        "usage limit",
    ]) {
        Some(FailureKind::RateLimited)
    } else if any(&[
        "filter",
        "sensitive",
        "safety",
        "inspection",
        "moderat",
        "blocked",
        "prohibited",
        "inappropriate",
    ]) {
        Some(FailureKind::ContentFiltered)
    } else {
        None
    }
}

/// The wait a site's rate-limit message names ("try again in 20 minutes", "retry
/// after 30 s", "Retry-After: 12"), for sites that give it in words rather than a
/// header. Only a number with a time unit (or after `retry-after:`) counts, so an HTTP
/// status or a count in the same message is not taken for a time.
pub fn wait_in_words(text: &str) -> Option<Duration> {
    let text = text.to_ascii_lowercase();
    if let Some((_, rest)) = text.split_once("retry-after:") {
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse::<u64>() {
            return Some(Duration::from_secs(n));
        }
    }
    // Words, with numbers split from units written together ("30s", "5min").
    let mut words = Vec::new();
    for word in text.split(|c: char| !c.is_ascii_alphanumeric() && c != '.') {
        let word = word.trim_end_matches('.');
        let split = word
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(word.len());
        let (number, unit) = word.split_at(split);
        for part in [number, unit] {
            if !part.is_empty() {
                words.push(part);
            }
        }
    }
    words.windows(2).find_map(|pair| {
        let n: u64 = pair[0].parse().ok()?;
        let unit = match pair[1] {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            _ => return None,
        };
        Some(Duration::from_secs(n.saturating_mul(unit)))
    })
}

/// A failure from a site's own error words: the kind [`kind_from_words`] finds, else
/// [`FailureKind::SiteError`].
pub fn failure_from_words(provider: &str, words: &str) -> Event {
    let kind = kind_from_words(words).unwrap_or(FailureKind::SiteError);
    Event::failed(kind, format!("{provider} says: {words}"))
}

/// Shared checks for parsers: every way of cutting a recorded-shape body gives the
/// same events.
#[cfg(test)]
pub mod testing {
    use super::{Event, StreamParser};
    use crate::driver::web::Site;

    /// A fresh parser of `site`'s stream, as the driver runs it.
    pub fn parser_of(site: &'static Site) -> Box<dyn StreamParser> {
        site.new_parser()
    }

    /// `body` parsed in one piece by a fresh parser of `site`'s stream.
    pub fn parse_whole(site: &'static Site, body: &str) -> Vec<Event> {
        parse_in_chunks(&mut *parser_of(site), body.as_bytes(), [body.len()])
    }

    /// Feeds `body` cut into chunks of the given sizes, then ends it; adjacent text
    /// events of one kind are merged (a parser may hand text out in any pieces).
    pub fn parse_in_chunks(
        parser: &mut dyn StreamParser,
        body: &[u8],
        sizes: impl IntoIterator<Item = usize>,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let mut rest = body;
        for size in sizes {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            parser.feed(chunk, &mut out);
            rest = tail;
        }
        assert!(rest.is_empty(), "the chunk sizes ran out");
        parser.end(&mut out);
        merge(out)
    }

    fn merge(events: Vec<Event>) -> Vec<Event> {
        let mut merged: Vec<Event> = Vec::new();
        for event in events {
            match (merged.last_mut(), event) {
                (Some(Event::Reasoning(a)), Event::Reasoning(b))
                | (Some(Event::Answer(a)), Event::Answer(b)) => a.push_str(&b),
                (_, event) => merged.push(event),
            }
        }
        merged
    }

    /// Asserts that `body` gives `want` whole, one byte at a time, and cut in two at
    /// every byte (inside events, frames and multi-byte characters).
    pub fn assert_every_split(site: &'static Site, body: &[u8], want: &[Event]) {
        let whole = parse_in_chunks(&mut *parser_of(site), body, [body.len()]);
        assert_eq!(whole, want, "the whole body at once");
        let bytes = parse_in_chunks(&mut *parser_of(site), body, std::iter::repeat(1));
        assert_eq!(bytes, want, "one byte at a time");
        for cut in 1..body.len() {
            let two = parse_in_chunks(&mut *parser_of(site), body, [cut, body.len()]);
            assert_eq!(two, want, "cut at byte {cut}");
        }
    }

    /// Asserts that `text` sent in pieces — cut in three at every pair of character
    /// boundaries, each non-empty piece wrapped by `piece` into one unit of the site's
    /// stream, then `tail` — gives `want`: for text that a site cuts wherever its tokens
    /// end (tags, markup).
    pub fn assert_every_cut_in_pieces(
        site: &'static Site,
        text: &str,
        piece: impl Fn(&str) -> String,
        tail: &str,
        want: &[Event],
    ) {
        let cuts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        for &a in &cuts {
            for &b in cuts.iter().filter(|&&b| b >= a) {
                let mut body: String = [&text[..a], &text[a..b], &text[b..]]
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .map(&piece)
                    .collect();
                body.push_str(tail);
                assert_eq!(parse_whole(site, &body), want, "cut at {a} and {b}");
            }
        }
    }

    /// Asserts that a stream that ends with no answer text is a changed site.
    pub fn assert_no_answer_is_site_changed(site: &'static Site, body: &[u8]) {
        let events = parse_in_chunks(&mut *parser_of(site), body, [body.len()]);
        match events.last() {
            Some(Event::Failed(failure)) => {
                assert_eq!(
                    failure.kind,
                    prq_protocol::worker::FailureKind::SiteChanged,
                    "{events:?}"
                );
                assert!(
                    failure
                        .message
                        .contains("the site's stream ended without an answer"),
                    "{}",
                    failure.message
                );
            }
            _ => panic!("expected a site_changed failure, got {events:?}"),
        }
        assert!(
            !events.iter().any(|e| matches!(e, Event::Answer(_))),
            "{events:?}"
        );
    }

    pub fn reasoning(text: &str) -> Event {
        Event::Reasoning(text.into())
    }

    pub fn answer(text: &str) -> Event {
        Event::Answer(text.into())
    }

    /// The failure's kind, or a panic naming what came instead.
    pub fn kind_of(event: &Event) -> prq_protocol::worker::FailureKind {
        match event {
            Event::Failed(failure) => failure.kind,
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_text_hands_out_only_what_is_new() {
        let mut g = Growing::default();
        assert_eq!(g.next("Hé").as_deref(), Some("Hé"));
        assert_eq!(g.next("Hé"), None);
        assert_eq!(g.next("Héllo 日本").as_deref(), Some("llo 日本"));
        // Rewritten: nothing to take back, and the rewrite is the new base.
        assert_eq!(g.next("Hi there"), None);
        assert_eq!(g.next("Hi there!").as_deref(), Some("!"));
    }

    #[test]
    fn a_json_error_document_is_told_from_a_stream() {
        let mut body = SseBody::default();
        body.push(br#"{"code": 40003, "msg": "#);
        body.push(br#""Authorization Failed"}"#);
        assert_eq!(body.next_event(), None);
        assert_eq!(body.plain_json().unwrap()["code"], 40003);

        let mut body = SseBody::default();
        body.push(b"data: {}\n\n");
        assert!(body.next_event().is_some());
        assert_eq!(body.plain_json(), None);
    }

    /// A writer for a test's log lines.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn unplaced_text_is_logged_at_warn_once_per_place_by_its_field_names() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut unplaced = Unplaced::default();
            unplaced.text_in("glm", "phase", "web_search");
            unplaced.text_in("glm", "phase", "web_search");
            unplaced.text_in("glm", "phase", "summary");
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(lines[0].contains("WARN"), "{log}");
        assert!(
            lines[0].contains("site=\"glm\"")
                && lines[0].contains("field=\"phase\"")
                && lines[0].contains("name=\"web_search\""),
            "{log}"
        );
    }

    #[test]
    fn the_wait_a_limit_message_names() {
        let secs = |t: &str| wait_in_words(t).map(|d| d.as_secs());
        assert_eq!(
            secs("Too many requests. Try again in 20 minutes."),
            Some(1200)
        );
        assert_eq!(secs("rate limited; retry after 30s"), Some(30));
        assert_eq!(secs("HTTP 429: Retry-After: 12"), Some(12));
        assert_eq!(secs("quota resets in 2 hours"), Some(7200));
        // A status code or a count is not a time.
        assert_eq!(secs("HTTP 429: too many requests (limit 50 per day)"), None);
        assert_eq!(secs("rate limit reached"), None);
    }

    #[test]
    fn error_words_name_their_kind() {
        assert_eq!(
            kind_from_words("Too many requests, slow down"),
            Some(FailureKind::RateLimited)
        );
        assert_eq!(
            kind_from_words("Please log in again"),
            Some(FailureKind::NotLoggedIn)
        );
        assert_eq!(
            kind_from_words("DataInspectionFailed"),
            Some(FailureKind::ContentFiltered)
        );
        assert_eq!(kind_from_words("internal error"), None);
    }
}
