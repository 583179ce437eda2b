//! The driver that every chat site in a browser shares. A site is described by a
//! [`Site`] (its URL, its selectors, the request its answer streams from and the parser
//! for that stream, all in the site's own module); [`WebDriver`] does the rest the same
//! way for each: open a new chat, tell whether the account is logged in, set thinking,
//! type the prompt, send it, read the answer off the network as the page receives it,
//! stop it (the site's stop button, then aborting the page's request), and turn what goes
//! wrong into a [`Failure`] that names the provider and says what to do.

use std::time::Duration;

use prq_protocol::worker::{DeltaKind, Failure, FailureKind, FinishReason, LaneSpec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::challenge;
use super::format::{kind_from_words, wait_in_words, Answered, Event, StreamParser};
use super::selectors::{Defaults, Selector, Selectors};
use super::{failure, Deltas, Driver, Job, Outcome};
use crate::stream::{NetEvent, NetworkStream, UrlPattern};
use crate::tab::{PageError, Tab, ABORT_REQUESTS};

/// One chat site, as its module describes it.
pub struct Site {
    /// The provider's name in the config (`deepseek`).
    pub name: &'static str,
    /// The page that opens a new chat; `None` when the lane must give `base_url`.
    pub url: Option<&'static str>,
    /// The request the answer streams from.
    pub stream: UrlPattern,
    pub selectors: Defaults,
    pub new_chat: NewChat,
    /// A parser for one answer's stream (the site's own format only: use
    /// [`Site::new_parser`], which adds what every site shares).
    pub parser: fn() -> Box<dyn StreamParser>,
}

impl Site {
    /// A parser for one answer's stream, as the driver reads it: the site's parser,
    /// under the rule that a stream without an answer is no answer ([`Answered`]).
    pub fn new_parser(&'static self) -> Box<dyn StreamParser> {
        Box::new(Answered::new(self.name, (self.parser)()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewChat {
    /// Each generation loads the chat page again: a fresh page is a new chat, so no
    /// earlier request leaks into the next one.
    Reload,
    /// The page is kept: the site keeps no conversation between sends (the sandbox).
    Keep,
}

/// From clicking Send to the answer's response headers.
const FIRST_RESPONSE_DEADLINE: Duration = Duration::from_secs(30);
/// After the stop button, how long the stream gets to end before the page's requests (fetch and XHR)
/// are aborted; and after that, before the stop is reported anyway.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// The site announced that it crashes its tab: how long the crash gets to be reported.
/// Chromium reports a crashed renderer only once the renderer's own crash handler has
/// given up waiting for its dump to be taken, about 5 s after the crash.
const CRASH_GRACE: Duration = Duration::from_secs(20);
/// A stream that broke for no reason may be a crash whose event is still on its way.
const CRASH_SETTLE: Duration = Duration::from_millis(250);
/// How much of an error response's body goes into a message.
const EXCERPT_CHARS: usize = 300;

pub struct WebDriver {
    tab: Tab,
    site: &'static Site,
    selectors: Selectors,
    /// What a user whose account is logged out should do, for this lane.
    login_hint: String,
    /// What a user whose site asks for a captcha should do, for this lane.
    captcha_hint: String,
    /// How long a page element gets to appear: the lane's deadline for browser calls.
    element_deadline: Duration,
    logged_in: Option<bool>,
}

/// What the chat page shows.
enum PageState {
    Ready,
    LoggedOut,
}

impl WebDriver {
    /// Takes over a tab that has the site's page loaded, and notes whether it shows a
    /// logged-in account. A page that shows neither state within the deadline still
    /// gives a driver (each request then reports what is missing), so that a changed
    /// site is one clear error per request rather than a lane that will not start.
    pub async fn open(
        tab: Tab,
        site: &'static Site,
        selectors: Selectors,
        spec: &LaneSpec,
    ) -> Result<Self, PageError> {
        let mut driver = Self {
            tab,
            site,
            selectors,
            login_hint: login_hint(spec),
            captcha_hint: captcha_hint(spec),
            element_deadline: Duration::from_millis(spec.cdp_timeout_ms),
            logged_in: None,
        };
        driver.logged_in = match driver.page_state().await {
            Ok(PageState::LoggedOut) => Some(false),
            Ok(PageState::Ready) => driver.selectors.logged_out.as_ref().map(|_| true),
            Err(e @ PageError::Missing { .. }) => {
                let missing = driver.page_failure(e);
                let seen = challenge::instead_of(&driver.tab, site.name, missing).await;
                tracing::warn!("{}", seen.message);
                // A bot check is cleared as a login is: by a person, with `prq login`.
                (seen.kind == FailureKind::Captcha).then_some(false)
            }
            Err(e) => return Err(e),
        };
        Ok(driver)
    }

    /// Waits until the page shows the prompt box or the logged-out state (which wins
    /// when both show: a site may show guests its prompt box and a login button).
    async fn page_state(&self) -> Result<PageState, PageError> {
        let ready = [self.selectors.prompt.css.as_str()];
        let Some(logged_out) = &self.selectors.logged_out else {
            self.tab.wait_for(&ready, self.element_deadline).await?;
            return Ok(PageState::Ready);
        };
        let logged_out = [logged_out.css.as_str()];
        let groups: [&[&str]; 2] = [&logged_out, &ready];
        match self.tab.wait_first(&groups, self.element_deadline).await? {
            0 => Ok(PageState::LoggedOut),
            _ => Ok(PageState::Ready),
        }
    }

    async fn run(&self, job: &Job, out: &Deltas, stop: &CancellationToken) -> Outcome {
        let fail = |e: PageError| self.page_failure(e);
        if self.site.new_chat == NewChat::Reload {
            self.tab.load().await.map_err(fail)?;
        }
        // Listening starts before Send is clicked, so the request cannot slip by.
        let mut stream = NetworkStream::watch(&self.tab, self.site.stream)
            .await
            .map_err(fail)?;
        if let PageState::LoggedOut = self.page_state().await.map_err(fail)? {
            return Err(self.not_logged_in());
        }
        if let Some((toggle, on)) = &self.selectors.thinking {
            self.switch_thinking(toggle, on, job.thinking).await?;
        }
        self.type_prompt(&job.prompt).await.map_err(fail)?;
        if stop.is_cancelled() {
            return Ok(FinishReason::Stopped);
        }
        self.click_when_enabled(&self.selectors.send).await?;
        self.read(&mut stream, out, stop).await
    }

    /// Reads the answer off the network until it ends, is stopped, or fails.
    async fn read(
        &self,
        stream: &mut NetworkStream<'_>,
        out: &Deltas,
        stop: &CancellationToken,
    ) -> Outcome {
        let mut phase = Phase::Starting;
        let mut deadline = Some(Instant::now() + FIRST_RESPONSE_DEADLINE);
        let mut parser = self.site.new_parser();
        let mut events = Vec::new();
        let mut status = 0;
        let mut retry_after = None;
        let mut error_body = Vec::new();
        loop {
            let event = tokio::select! {
                biased;
                _ = stop.cancelled(), if !matches!(phase, Phase::Stopping { .. }) => {
                    let how = self.stop_in_page().await.map_err(|e| self.page_failure(e))?;
                    tracing::debug!(how, "stopping in the page");
                    phase = Phase::Stopping { aborted: how != "button" };
                    deadline = Some(Instant::now() + STOP_GRACE);
                    continue;
                }
                // While stopping, the stop's deadlines come before the stream's events:
                // a fast stream always has another one ready.
                _ = sleep_until(deadline), if matches!(phase, Phase::Stopping { .. }) => match phase {
                    Phase::Stopping { aborted: false } => {
                        // The stop button did not end the stream: end it from outside.
                        let aborted: u32 = self.tab.eval(ABORT_REQUESTS).await.map_err(|e| self.page_failure(e))?;
                        tracing::debug!(aborted, "the stream went on after the stop button");
                        phase = Phase::Stopping { aborted: true };
                        deadline = Some(Instant::now() + STOP_GRACE);
                        continue;
                    }
                    _ => {
                        tracing::warn!("the stream went on after Stop and an abort");
                        return Ok(FinishReason::Stopped);
                    }
                },
                event = stream.next() => event.map_err(|e| self.page_failure(e))?,
                _ = sleep_until(deadline) => return Err(self.no_stream(stream.requested()).await),
            };
            match event {
                NetEvent::Response {
                    status: s,
                    retry_after: r,
                } => {
                    status = s;
                    retry_after = r;
                    if phase == Phase::Starting {
                        phase = Phase::Streaming;
                        deadline = None;
                    }
                }
                NetEvent::Data(bytes) if !(200..300).contains(&status) => {
                    error_body.extend_from_slice(&bytes);
                }
                NetEvent::Data(bytes) => {
                    parser.feed(&bytes, &mut events);
                    if let Some(outcome) = self.deliver(&mut events, out).await {
                        return stopped_or(phase, outcome);
                    }
                }
                NetEvent::Finished | NetEvent::Failed { .. }
                    if matches!(phase, Phase::Stopping { .. }) =>
                {
                    return Ok(FinishReason::Stopped);
                }
                NetEvent::Finished if !(200..300).contains(&status) => {
                    return Err(self.http_failure(status, retry_after.as_deref(), &error_body));
                }
                NetEvent::Finished => {
                    parser.end(&mut events);
                    if let Some(outcome) = self.deliver(&mut events, out).await {
                        return outcome;
                    }
                    return Err(failure(
                        FailureKind::SiteError,
                        format!(
                            "{}: the answer stream ended without its final event",
                            self.site.name
                        ),
                    ));
                }
                NetEvent::Failed { error, .. } => {
                    if tokio::time::timeout(CRASH_SETTLE, self.tab.crashed())
                        .await
                        .is_ok()
                    {
                        return Err(tab_crashed());
                    }
                    return Err(failure(
                        FailureKind::SiteError,
                        format!("{}: the answer stream failed: {error}", self.site.name),
                    ));
                }
            }
        }
    }

    /// Sends the parsed text on; `Some` once an event ends the generation.
    async fn deliver(&self, events: &mut Vec<Event>, out: &Deltas) -> Option<Outcome> {
        let mut end = None;
        for event in events.drain(..) {
            if end.is_some() {
                break;
            }
            match event {
                Event::Reasoning(text) => out.send(DeltaKind::Reasoning, text).await,
                Event::Answer(text) => out.send(DeltaKind::Answer, text).await,
                Event::Done => end = Some(Ok(FinishReason::Completed)),
                Event::Failed(failure) => end = Some(Err(failure)),
                Event::Crashing => {
                    let crashed = tokio::time::timeout(CRASH_GRACE, self.tab.crashed()).await;
                    end = Some(Err(match crashed {
                        Ok(()) => tab_crashed(),
                        Err(_) => failure(
                            FailureKind::SiteError,
                            format!(
                                "{}: the site announced a crash, but the tab survived it",
                                self.site.name
                            ),
                        ),
                    }));
                }
            }
        }
        end
    }

    /// The answer's request did not come, or came without a response.
    async fn no_stream(&self, requested: bool) -> Failure {
        if let Ok(PageState::LoggedOut) = self.page_state().await {
            return self.not_logged_in();
        }
        failure(
            FailureKind::SiteChanged,
            format!(
                "{}: the answer stream ({}) did not start within {} s{}; the site may have changed",
                self.site.name,
                self.site.stream,
                FIRST_RESPONSE_DEADLINE.as_secs(),
                if requested {
                    ""
                } else {
                    " (the page sent no such request)"
                },
            ),
        )
    }

    fn not_logged_in(&self) -> Failure {
        failure(
            FailureKind::NotLoggedIn,
            format!("{}: the page shows no logged-in account", self.site.name),
        )
    }

    /// `retry_after` is the response's `Retry-After` header, if it had one.
    fn http_failure(&self, status: i64, retry_after: Option<&str>, body: &[u8]) -> Failure {
        let body = String::from_utf8_lossy(body);
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
        failure.retry_after_s = retry_after.and_then(|v| v.trim().parse().ok());
        failure
    }

    /// A page operation's error as a failure that names the provider, and for a missing
    /// element, the selector to override.
    fn page_failure(&self, e: PageError) -> Failure {
        match &e {
            PageError::Missing { selector, within } => {
                let name = self.selectors.find(selector).map_or("?", |s| s.name);
                failure(
                    FailureKind::SiteChanged,
                    format!(
                        "{}: the page has no `{name}` element (`{selector}`) after {} s; the site may have changed: set a selector that matches it under [lanes.selectors] as {name} = \"...\"",
                        self.site.name,
                        within.as_secs_f32(),
                    ),
                )
            }
            _ => {
                let Failure { kind, message, .. } = Failure::from(e);
                failure(kind, format!("{}: {message}", self.site.name))
            }
        }
    }

    /// Adds what the user can do about a failure.
    fn advise(&self, mut failure: Failure) -> Failure {
        match failure.kind {
            FailureKind::NotLoggedIn => {
                failure.message = format!("{}; {}", failure.message, self.login_hint);
            }
            FailureKind::RateLimited => {
                if failure.retry_after_s.is_none() {
                    failure.retry_after_s = wait_in_words(&failure.message).map(|d| d.as_secs());
                }
                failure.message = format!(
                    "{}; wait before sending more, or spread requests over lanes with other accounts (mode = \"full\")",
                    failure.message
                );
            }
            FailureKind::Captcha => {
                failure.message = format!("{}; {}", failure.message, self.captcha_hint);
            }
            _ => {}
        }
        failure
    }

    /// Sets the thinking switch to `want`, and checks that it took.
    async fn switch_thinking(
        &self,
        toggle: &Selector,
        on: &Selector,
        want: bool,
    ) -> Result<(), Failure> {
        let script = format!(
            r#"new Promise((resolve) => {{
  const toggle = document.querySelector({toggle});
  if (!toggle) return resolve("missing");
  const on = () => document.querySelector({on}) !== null;
  if (on() === {want}) return resolve("ok");
  toggle.click();
  if (on() === {want}) return resolve("ok");
  const observer = new MutationObserver(() => {{
    if (on() === {want}) {{ observer.disconnect(); clearTimeout(timer); resolve("ok"); }}
  }});
  observer.observe(document, {{ childList: true, subtree: true, attributes: true }});
  const timer = setTimeout(() => {{ observer.disconnect(); resolve("stuck"); }}, {ms});
}})"#,
            toggle = js_string(&toggle.css),
            on = js_string(&on.css),
            ms = self.element_deadline.as_millis(),
        );
        let result: String = self
            .tab
            .eval_within(&script, self.element_deadline)
            .await
            .map_err(|e| self.page_failure(e))?;
        match result.as_str() {
            "ok" => Ok(()),
            "missing" => Err(self.page_failure(PageError::Missing {
                selector: toggle.css.clone(),
                within: Duration::ZERO,
            })),
            _ => Err(failure(
                FailureKind::SiteChanged,
                format!(
                    "{}: clicking the thinking switch (`{}`) did not turn it {}: `thinking_on` (`{}`) no longer tells its state; the site may have changed: fix the selectors under [lanes.selectors]",
                    self.site.name,
                    toggle.css,
                    if want { "on" } else { "off" },
                    on.css,
                ),
            )),
        }
    }

    /// Empties the prompt box and types the prompt into it, as one input event (a
    /// paste). Works for a textarea and for a contenteditable editor: selecting the
    /// box's contents makes the typed text replace them.
    async fn type_prompt(&self, prompt: &str) -> Result<(), PageError> {
        let css = &self.selectors.prompt.css;
        let script = format!(
            r#"(() => {{
  const box = document.querySelector({css});
  if (!box) return false;
  box.focus();
  if (typeof box.select === "function") {{
    box.select();
  }} else {{
    const range = document.createRange();
    range.selectNodeContents(box);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }}
  return true;
}})()"#,
            css = js_string(css),
        );
        if !self.tab.eval::<bool>(&script).await? {
            return Err(PageError::Missing {
                selector: css.clone(),
                within: Duration::ZERO,
            });
        }
        self.tab.insert_text(prompt).await
    }

    /// Waits until `button` is there and enabled (sites enable Send only once the prompt
    /// box has text), then clicks it.
    async fn click_when_enabled(&self, button: &Selector) -> Result<(), Failure> {
        let script = format!(
            r#"new Promise((resolve) => {{
  const usable = () => {{
    const b = document.querySelector({css});
    return b && !b.disabled && b.getAttribute("aria-disabled") !== "true" ? b : null;
  }};
  const click = (b) => {{ b.click(); resolve("clicked"); }};
  if (usable()) return click(usable());
  const observer = new MutationObserver(() => {{
    const b = usable();
    if (b) {{ observer.disconnect(); clearTimeout(timer); click(b); }}
  }});
  observer.observe(document, {{ childList: true, subtree: true, attributes: true }});
  const timer = setTimeout(() => {{
    observer.disconnect();
    resolve(document.querySelector({css}) ? "disabled" : "missing");
  }}, {ms});
}})"#,
            css = js_string(&button.css),
            ms = self.element_deadline.as_millis(),
        );
        let result: String = self
            .tab
            .eval_within(&script, self.element_deadline)
            .await
            .map_err(|e| self.page_failure(e))?;
        match result.as_str() {
            "clicked" => Ok(()),
            "missing" => Err(self.page_failure(PageError::Missing {
                selector: button.css.clone(),
                within: self.element_deadline,
            })),
            _ => Err(failure(
                FailureKind::SiteChanged,
                format!(
                    "{}: the `{}` button (`{}`) stayed disabled for {} s after the prompt was typed; the site may have changed (is `prompt` still its prompt box?)",
                    self.site.name,
                    button.name,
                    button.css,
                    self.element_deadline.as_secs_f32(),
                ),
            )),
        }
    }

    /// Clicks the site's stop button when the page offers it, else aborts the page's
    /// requests; says which.
    async fn stop_in_page(&self) -> Result<String, PageError> {
        let stop = self.selectors.stop.as_ref().map(|s| s.css.as_str());
        let script = format!(
            r#"(() => {{
  const selector = {stop};
  const stop = selector && document.querySelector(selector);
  if (stop && !stop.disabled && stop.getAttribute("aria-disabled") !== "true") {{
    stop.click();
    return "button";
  }}
  return {ABORT_REQUESTS} > 0 ? "aborted the page's requests" : "nothing to stop";
}})()"#,
            stop = serde_json::to_string(&stop).expect("strings serialize"),
        );
        self.tab.eval(&script).await
    }

    async fn reload(&self) -> Result<(), PageError> {
        self.tab.load().await?;
        self.page_state().await.map(drop)
    }
}

impl Driver for WebDriver {
    async fn generate(&self, job: Job, out: Deltas, stop: CancellationToken) -> Outcome {
        if self.tab.has_crashed() {
            self.reload().await.map_err(|e| {
                failure(
                    FailureKind::TabCrashed,
                    format!("the tab had crashed and does not reload: {e}"),
                )
            })?;
        }
        let outcome = tokio::select! {
            biased;
            _ = self.tab.crashed() => Err(tab_crashed()),
            outcome = self.run(&job, &out, &stop) => outcome,
        };
        if self.tab.has_crashed() {
            if let Err(e) = self.reload().await {
                tracing::error!("reloading the crashed tab failed: {e}");
            }
        }
        let outcome = match outcome {
            Err(f) => Err(challenge::instead_of(&self.tab, self.site.name, f).await),
            done => done,
        };
        outcome.map_err(|f| self.advise(f))
    }

    fn logged_in(&self) -> Option<bool> {
        self.logged_in
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Send was clicked; the response has not come.
    Starting,
    Streaming,
    /// Stop was asked for; waiting for the stream to end. `aborted`: the page's
    /// requests were aborted (else only the stop button was clicked).
    Stopping {
        aborted: bool,
    },
}

/// The command that opens a browser window on the lane's profile.
fn login_command(spec: &LaneSpec) -> String {
    let account = match spec.account.as_str() {
        "default" => String::new(),
        account => format!(" --account {account}"),
    };
    format!("prq login {}{account}", spec.prefix)
}

/// What to run to log the lane's account in.
fn login_hint(spec: &LaneSpec) -> String {
    let login = login_command(spec);
    format!(
        "log in once with `{login}` (opens a browser window on this lane's profile; needs a display), or import cookies exported from a logged-in browser with `{login} --import-cookies FILE`, then `prq start` again"
    )
}

/// What to do when the site asks for a captcha: a person solves it in the lane's
/// profile; prq does not solve captchas.
fn captcha_hint(spec: &LaneSpec) -> String {
    format!(
        "solve it once in a browser window on this lane's profile (`{}`, needs a display), or wait and send less often from this account",
        login_command(spec)
    )
}

/// How a generation that the parser ended came out: while a stop is under way, the
/// site ending its stream (a status of its own such as DeepSeek's `INCOMPLETE`, or an
/// error for the aborted request) is the stop the supervisor asked for.
fn stopped_or(phase: Phase, outcome: Outcome) -> Outcome {
    match (phase, &outcome) {
        (_, Err(f)) if f.kind == FailureKind::TabCrashed => outcome,
        (Phase::Stopping { .. }, _) => Ok(FinishReason::Stopped),
        _ => outcome,
    }
}

/// Whether a site's words ask for a captcha to be solved.
pub fn is_captcha(words: &str) -> bool {
    words.to_ascii_lowercase().contains("captcha")
}

fn tab_crashed() -> Failure {
    failure(
        FailureKind::TabCrashed,
        "the tab's renderer crashed; the page is reloaded for the next request",
    )
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `text` as a JavaScript string literal.
fn js_string(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}
