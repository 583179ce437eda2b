//! The driver that every chat site in a browser shares. A site is described by a
//! [`Site`] (its URL, its selectors, the request its answer streams from and the parser
//! for that stream, all in the site's own module); [`WebDriver`] does the rest the same
//! way for each: open a new chat, tell whether the account is logged in, set the page's
//! controls (its model, search, settings: `controls.rs`) and thinking, type the prompt,
//! send it, read the answer off the network as the page receives it, stop it (the
//! site's stop button, then aborting the page's request), delete the chat it made when
//! the lane says so, and turn what goes wrong into a [`Failure`] that names the
//! provider and says what to do.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prq_protocol::controls::AfterReply;
use prq_protocol::worker::{
    DeltaKind, Failure, FailureKind, FinishReason, LaneSpec, PageReport, SelectorFound, TypeCheck,
};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::challenge;
use super::controls::{self, PageFailure};
use super::format::{wait_in_words, Answered, Event, StreamParser};
use super::reading::Reading;
use super::selectors::{Defaults, Selector, Selectors};
use super::{failure, Deltas, Driver, Job, Outcome};
use crate::capture::{self, Recorder};
use crate::stream::{NetEvent, NetworkStream, StreamTap, UrlPattern};
use crate::tab::{PageError, Recovered, Tab, ABORT_REQUESTS, PAGE_CHECK};

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

pub struct WebDriver {
    tab: Tab,
    /// Streams the site's answer requests from their start.
    tap: StreamTap,
    site: &'static Site,
    selectors: Selectors,
    /// What a user whose account is logged out should do, for this lane.
    login_hint: String,
    /// What a user whose site asks for a captcha should do, for this lane.
    captcha_hint: String,
    /// How long a page element gets to appear: the lane's deadline for browser calls.
    element_deadline: Duration,
    /// Set when the page opened, and again after each login view.
    logged_in: std::sync::Mutex<Option<bool>>,
    /// Where the lane keeps its captures (`capture = true`), and the lane they name.
    capture_dir: Option<PathBuf>,
    spec: LaneSpec,
    /// What the page's controls remember between requests.
    memory: controls::Memory,
    /// The site answered the request being generated: it made a chat.
    made_chat: AtomicBool,
    /// Files were put in the page and not sent with a prompt (a stop or a failure came
    /// between): the next request loads the page afresh, so they are not sent with it.
    unsent_files: AtomicBool,
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
        let tap = StreamTap::start(&tab, site.stream).await?;
        let driver = Self {
            tab,
            tap,
            site,
            selectors,
            login_hint: login_hint(spec),
            captcha_hint: captcha_hint(spec),
            element_deadline: Duration::from_millis(spec.cdp_timeout_ms),
            logged_in: std::sync::Mutex::new(None),
            capture_dir: spec.capture_dir.clone(),
            spec: spec.clone(),
            memory: controls::Memory::default(),
            made_chat: AtomicBool::new(false),
            unsent_files: AtomicBool::new(false),
        };
        driver.check_login().await?;
        Ok(driver)
    }

    /// Notes whether the page shows a logged-in account. A page that shows neither
    /// state in time is no error: each request then reports what is missing.
    async fn check_login(&self) -> Result<Option<bool>, PageError> {
        let logged_in = match self.page_state().await {
            Ok(PageState::LoggedOut) => Some(false),
            Ok(PageState::Ready) => self.selectors.logged_out.as_ref().map(|_| true),
            Err(e @ PageError::Missing { .. }) => {
                let missing = self.page_failure(e);
                let seen = challenge::instead_of(&self.tab, self.site.name, missing).await;
                tracing::warn!("{}", seen.message);
                // A bot check is cleared as a login is: by a person, with `prq login`.
                (seen.kind == FailureKind::Captcha).then_some(false)
            }
            Err(e) => return Err(e),
        };
        *self.logged_in.lock().unwrap_or_else(|p| p.into_inner()) = logged_in;
        Ok(logged_in)
    }

    /// Waits until the page shows the prompt box or the logged-out state (which wins
    /// when both show: a site may show guests its prompt box and a login button).
    async fn page_state(&self) -> Result<PageState, PageError> {
        let ready = [&self.selectors.prompt];
        let Some(logged_out) = &self.selectors.logged_out else {
            self.tab.wait_for(&ready, self.element_deadline).await?;
            return Ok(PageState::Ready);
        };
        let groups: [&[&Selector]; 2] = [&[logged_out], &ready];
        match self.tab.wait_first(&groups, self.element_deadline).await? {
            0 => Ok(PageState::LoggedOut),
            _ => Ok(PageState::Ready),
        }
    }

    async fn run(&self, job: &Job, out: &Deltas, stop: &CancellationToken) -> Outcome {
        let fail = |e: PageError| self.page_failure(e);
        let began = Instant::now();
        self.made_chat.store(false, Ordering::Relaxed);
        if self.site.new_chat == NewChat::Reload || self.unsent_files.swap(false, Ordering::SeqCst)
        {
            self.tab.load().await.map_err(fail)?;
        }
        // Listening starts before Send is clicked, so the request cannot slip by.
        let mut stream = NetworkStream::watch(&self.tab, &self.tap)
            .await
            .map_err(fail)?;
        if let PageState::LoggedOut = self.page_state().await.map_err(fail)? {
            return Err(self.not_logged_in());
        }
        let page = self.controls();
        let set = |e: PageFailure| self.control_failure(e);
        page.apply(&job.controls, self.spec.after_reply)
            .await
            .map_err(set)?;
        match &self.selectors.thinking {
            Some((toggle, on)) => page
                .switch("thinking", toggle, on, job.thinking)
                .await
                .map_err(set)?,
            None if job.thinking => self.memory.ignored(
                self.site.name,
                "thinking",
                "set thinking_toggle and thinking_on under [lanes.selectors] if the site has the switch",
            ),
            None => {}
        }
        let ready_ms = began.elapsed().as_millis();
        if job.attachments.is_empty() {
            if !self.fill_and_send(&job.prompt).await? {
                self.type_into_editor(&job.prompt).await.map_err(fail)?;
                if stop.is_cancelled() {
                    return Ok(FinishReason::Stopped);
                }
                self.click_when_enabled(&self.selectors.send).await?;
            }
        } else {
            self.type_prompt(&job.prompt).await.map_err(fail)?;
            // Typed first, attached then: a site may read the draft when a file comes
            // (the sandbox reads its directives from it), and none is known to lose the
            // typed text on an attachment.
            self.unsent_files.store(true, Ordering::SeqCst);
            tokio::select! {
                attached = self.attach(&job.attachments) => attached?,
                () = stop.cancelled() => return Ok(FinishReason::Stopped),
            }
            if stop.is_cancelled() {
                return Ok(FinishReason::Stopped);
            }
            self.click_when_enabled(&self.selectors.send).await?;
            self.unsent_files.store(false, Ordering::SeqCst);
        }
        tracing::debug!(
            ready_ms,
            sent_ms = began.elapsed().as_millis(),
            chars = job.prompt.chars().count(),
            files = job.attachments.len(),
            "prompt sent"
        );
        self.read(&mut stream, out, stop).await
    }

    /// Attaches `files` through the site's upload control, if the lane has one.
    async fn attach(&self, files: &[prq_protocol::worker::Attachment]) -> Result<(), Failure> {
        let Some(control) = &self.selectors.attach else {
            return Err(failure(
                FailureKind::UploadRejected,
                format!(
                    "{}: this lane knows no upload control for its site, so it cannot attach files; name it under [lanes.selectors] as attach_input, and attach_done for what marks a file uploaded (`prq doctor` shows what the page has)",
                    self.site.name
                ),
            ));
        };
        let deadline = Duration::from_millis(self.spec.upload_timeout_ms);
        super::upload::attach(
            &self.tab,
            self.site.name,
            control,
            files,
            deadline,
            self.element_deadline,
        )
        .await
    }

    /// Reads the answer off the network until it ends, is stopped, or fails; with the
    /// lane's `capture` on, keeps the stream's bytes in a capture file as it goes.
    async fn read(
        &self,
        stream: &mut NetworkStream<'_>,
        out: &Deltas,
        stop: &CancellationToken,
    ) -> Outcome {
        let mut recorder = None;
        let outcome = self.read_into(stream, out, stop, &mut recorder).await;
        if let Some(recorder) = recorder {
            recorder.end(match &outcome {
                Ok(FinishReason::Stopped) => capture::End::Stopped,
                Ok(FinishReason::Completed) => capture::End::Finished,
                Err(failure) => capture::End::Failed(&failure.message),
            });
        }
        outcome
    }

    async fn read_into(
        &self,
        stream: &mut NetworkStream<'_>,
        out: &Deltas,
        stop: &CancellationToken,
        recorder: &mut Option<Recorder>,
    ) -> Outcome {
        let mut phase = Phase::Starting;
        let mut deadline = Some(Instant::now() + FIRST_RESPONSE_DEADLINE);
        let mut reading = Reading::new(self.site);
        let mut events = Vec::new();
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
                    status,
                    retry_after,
                    content_type,
                } => {
                    reading.response(status, retry_after);
                    if status < 400 {
                        self.made_chat.store(true, Ordering::Relaxed);
                    }
                    if let Some(dir) = &self.capture_dir {
                        let request = capture::Request {
                            method: self.site.stream.method,
                            path: stream.path(),
                            status,
                            content_type: &content_type,
                        };
                        *recorder = Recorder::create(dir, &self.spec, request);
                    }
                    if phase == Phase::Starting {
                        phase = Phase::Streaming;
                        deadline = None;
                    }
                }
                NetEvent::Data(bytes) => {
                    if let Some(recorder) = recorder {
                        recorder.chunk(&bytes);
                    }
                    reading.data(&bytes, &mut events);
                    if let Some(outcome) = self.deliver(&mut events, out).await {
                        return stopped_or(phase, outcome);
                    }
                }
                NetEvent::Finished | NetEvent::Failed { .. }
                    if matches!(phase, Phase::Stopping { .. }) =>
                {
                    return Ok(FinishReason::Stopped);
                }
                NetEvent::Finished => {
                    let unended = reading.finished(&mut events);
                    let outcome = self.deliver(&mut events, out).await;
                    return outcome.unwrap_or(Err(unended));
                }
                NetEvent::Failed { error, .. } => {
                    if tokio::time::timeout(CRASH_SETTLE, self.tab.crashed())
                        .await
                        .is_ok()
                    {
                        return Err(tab_crashed());
                    }
                    return Err(reading.failed(&error));
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

    /// A page operation's error as a failure that names the provider, and for a missing
    /// element, the selector to override.
    fn page_failure(&self, e: PageError) -> Failure {
        match &e {
            PageError::Missing {
                name,
                selector,
                within,
            } => {
                failure(
                    FailureKind::SiteChanged,
                    format!(
                        "{}: the page has no `{name}` element ({selector}) after {} s; the site may have changed: set a selector that matches it under [lanes.selectors] as {name} = \"...\" (CSS, text=..., role=...[name=...], or a list of them; `prq doctor` shows what the page has)",
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

    /// The page's own controls, for one request.
    fn controls(&self) -> controls::Page<'_> {
        controls::Page {
            tab: &self.tab,
            site: self.site.name,
            selectors: &self.selectors.controls,
            memory: &self.memory,
            deadline: self.element_deadline,
        }
    }

    fn control_failure(&self, e: PageFailure) -> Failure {
        match e {
            PageFailure::Page(e) => self.page_failure(e),
            PageFailure::Failed(f) => f,
        }
    }

    /// `after_reply = "delete"`: deletes the chat the request made, once its answer has
    /// ended however it ended, and reports whether it went; a failed delete is logged,
    /// never the request's failure.
    async fn delete_chat(&self, out: &Deltas) {
        if self.spec.after_reply != AfterReply::Delete || !self.made_chat.load(Ordering::Relaxed) {
            return;
        }
        let deleted = match self.controls().delete_chat().await {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(
                    "{}: the chat this request made was not deleted: {why}",
                    self.site.name
                );
                false
            }
        };
        out.chat_deleted(deleted).await;
    }

    /// Puts the prompt in the prompt box in place of what it holds: a textarea's value
    /// set at once (`fill` in `page/find.js`), or typed into a rich editor.
    async fn type_prompt(&self, prompt: &str) -> Result<(), PageError> {
        let box_ = &self.selectors.prompt;
        let args = json!({ "prompt": box_, "text": prompt });
        let how: String = self
            .tab
            .page_op("fill", args, per_size(prompt.len(), FILL_PER_1000))
            .await?;
        match how.as_str() {
            "filled" => Ok(()),
            "missing" => Err(missing(box_, Duration::ZERO)),
            _ => self.type_into_editor(prompt).await,
        }
    }

    /// Types the prompt into the rich editor that `fill` left focused with its
    /// contents selected.
    async fn type_into_editor(&self, prompt: &str) -> Result<(), PageError> {
        let extra = per_size(prompt.len(), TYPE_PER_1000);
        self.tab.insert_text(prompt, extra).await
    }

    /// Puts the prompt in a textarea and clicks Send once it is enabled, in one page
    /// task (`submit` in `page/find.js`): no frame lays out the box holding the whole
    /// prompt before the page's send empties it. That layout was most of a long
    /// prompt's cost: 100,000 characters of Chinese lines took 0.7-0.8 s to lay out in
    /// the sandbox's textarea, between one CDP call filling it and the next clicking.
    /// `false` when the box is a rich editor, which `fill` left focused and selected
    /// for the prompt to be typed into.
    async fn fill_and_send(&self, prompt: &str) -> Result<bool, Failure> {
        let (box_, send) = (&self.selectors.prompt, &self.selectors.send);
        let ms = self.element_deadline.as_millis() as u64;
        let args = json!({ "prompt": box_, "text": prompt, "button": send, "ms": ms });
        let extra = self.element_deadline + per_size(prompt.len(), FILL_PER_1000);
        let how: String = self
            .tab
            .page_op("submit", args, extra)
            .await
            .map_err(|e| self.page_failure(e))?;
        match how.as_str() {
            "editor" => Ok(false),
            "no box" => Err(self.page_failure(missing(box_, Duration::ZERO))),
            clicked => self.clicked(send, clicked).map(|()| true),
        }
    }

    /// Waits until `button` is there and enabled (sites enable Send only once the prompt
    /// box has text), then clicks it.
    async fn click_when_enabled(&self, button: &Selector) -> Result<(), Failure> {
        let ms = self.element_deadline.as_millis() as u64;
        let result: String = self
            .tab
            .page_op(
                "click",
                json!({ "button": button, "ms": ms }),
                self.element_deadline,
            )
            .await
            .map_err(|e| self.page_failure(e))?;
        self.clicked(button, &result)
    }

    /// What the page's `click` said about `button`, as an outcome.
    fn clicked(&self, button: &Selector, result: &str) -> Result<(), Failure> {
        match result {
            "clicked" => Ok(()),
            "missing" => Err(self.page_failure(missing(button, self.element_deadline))),
            _ => Err(failure(
                FailureKind::SiteChanged,
                format!(
                    "{}: the `{}` button ({}) stayed disabled for {} s after the prompt was typed; the site may have changed (is `prompt` still its prompt box?)",
                    self.site.name,
                    button.name,
                    button.shown(),
                    self.element_deadline.as_secs_f32(),
                ),
            )),
        }
    }

    /// Clicks the site's stop button when the page offers it, else aborts the page's
    /// requests; says which.
    async fn stop_in_page(&self) -> Result<String, PageError> {
        let args = json!({ "stop": self.selectors.stop });
        self.tab.page_op("stop", args, Duration::ZERO).await
    }

    /// `prq doctor`: what the page shows, as the driver reads it (the files are the
    /// caller's: [`outline`](Self::outline), [`screenshot`](Self::screenshot)).
    pub async fn examine(&self) -> PageReport {
        let mut report = PageReport {
            url: String::new(),
            title: String::new(),
            logged_in: self.logged_in(),
            thinking: None,
            selectors: Vec::new(),
            outline: None,
            screenshot: None,
            problems: Vec::new(),
            release: None,
            typing: None,
        };
        match self.tab.url_and_title().await {
            Ok((url, title)) => (report.url, report.title) = (url, title),
            Err(e) => report.problems.push(format!("no URL or title: {e}")),
        }
        let all = self.selectors.all();
        let counted: Result<Vec<Counted>, PageError> = self
            .tab
            .page_op("count", json!({ "selectors": all }), Duration::ZERO)
            .await;
        let counted = match counted {
            Ok(counted) => counted,
            Err(e) => {
                report
                    .problems
                    .push(format!("the selectors could not be counted: {e}"));
                return report;
            }
        };
        for (selector, counted) in all.iter().zip(&counted) {
            let matched = usize::try_from(counted.alternative).ok();
            report.selectors.push(SelectorFound {
                name: selector.name.to_owned(),
                selector: selector.written[matched.unwrap_or(0)].clone(),
                alternatives: selector.written.clone(),
                found: counted.found,
            });
        }
        let found = |name: &str| {
            counted
                .iter()
                .find(|c| c.name == name)
                .map_or(0, |c| c.found)
        };
        if self.selectors.thinking.is_some() && found("thinking_toggle") > 0 {
            report.thinking = Some(found("thinking_on") > 0);
        }
        report
    }

    /// `prq doctor --type-check`: types [`TYPE_PROBE`] into the prompt box as a prompt
    /// is typed, reads back what the box holds, and empties it. Nothing is sent: typing
    /// presses no Enter, and Send is not clicked.
    pub async fn type_check(&self) -> TypeCheck {
        let failed = |e: PageError| TypeCheck {
            exact: false,
            detail: format!("could not type: {e}"),
        };
        if let Err(e) = self.type_prompt(TYPE_PROBE).await {
            return failed(e);
        }
        let args = json!({ "prompt": &self.selectors.prompt });
        let held: Result<String, PageError> =
            self.tab.page_op("held", args.clone(), Duration::ZERO).await;
        let cleared: Result<bool, PageError> =
            self.tab.page_op("clear", args, Duration::ZERO).await;
        let mut check = match held {
            Ok(held) => compare(TYPE_PROBE, &held),
            Err(e) => failed(e),
        };
        match cleared {
            Ok(true) => {}
            Ok(false) => check.detail += "; the box could not be emptied",
            Err(e) => check.detail += &format!("; emptying the box failed: {e}"),
        }
        check
    }

    /// The page's element tree, one line per element.
    pub async fn outline(&self, max_lines: u32, max_depth: u32) -> Result<String, PageError> {
        let args = json!({ "max_lines": max_lines, "max_depth": max_depth });
        self.tab.page_op("outline", args, Duration::ZERO).await
    }

    pub async fn screenshot(&self) -> Result<Vec<u8>, PageError> {
        self.tab.screenshot().await
    }

    /// Closes the driver's tab (a doctor's; a lane's lives as long as the lane).
    pub async fn close(self) {
        self.tab.close().await;
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
        } else {
            self.delete_chat(&out).await;
        }
        let outcome = match outcome {
            Err(f) => Err(challenge::instead_of(&self.tab, self.site.name, f).await),
            done => done,
        };
        outcome.map_err(|f| self.advise(f))
    }

    async fn settled(&self) -> bool {
        self.tab.answers(PAGE_CHECK).await
    }

    async fn recover(&self) -> Result<&'static str, String> {
        let how = self.tab.recover().await.map_err(|e| e.to_string())?;
        // A page loaded again must show its prompt box (or its logged-out state) before
        // it takes a request, as when the lane started.
        if how != Recovered::Settled {
            self.page_state().await.map_err(|e| e.to_string())?;
        }
        Ok(match how {
            Recovered::Settled => "the page settled by itself",
            Recovered::Reloaded => "the page's script was ended and the page reloaded",
            Recovered::FreshRenderer => "the page was loaded in a fresh renderer",
        })
    }

    fn logged_in(&self) -> Option<bool> {
        *self.logged_in.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tab(&self) -> Option<&Tab> {
        Some(&self.tab)
    }

    async fn recheck(&self) -> Result<Option<bool>, String> {
        self.tab.load().await.map_err(|e| e.to_string())?;
        self.check_login().await.map_err(|e| e.to_string())
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

/// One selector as the page script's `count` sees it.
#[derive(Debug, serde::Deserialize)]
struct Counted {
    name: String,
    /// The index of the alternative that matched; -1 for none.
    alternative: i64,
    found: u32,
}

/// What `prq doctor --type-check` types: several lines, a blank one, leading spaces and
/// a tab, markup, and unicode from several scripts (an emoji ZWJ sequence, right to left).
const TYPE_PROBE: &str = "prq type check\n\n  two spaces, then a tab:\tend\n<tag> ```code``` & é 日本語 👩‍👩‍👧‍👦 שלום\nlast line";

/// Whether the box `held` the `probe`, and if not, from where it differs.
fn compare(probe: &str, held: &str) -> TypeCheck {
    if probe == held {
        return TypeCheck {
            exact: true,
            detail: format!("{} characters typed and read back", probe.chars().count()),
        };
    }
    let same = probe
        .chars()
        .zip(held.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let from = |text: &str| text.chars().skip(same).take(24).collect::<String>();
    TypeCheck {
        exact: false,
        detail: format!(
            "from character {same} the box holds {:?} where {:?} was typed ({} characters held, {} typed)",
            from(held),
            from(probe),
            held.chars().count(),
            probe.chars().count()
        ),
    }
}

/// How much longer than a CDP call setting a textarea's value may take, per 1,000
/// characters: 100,000 characters took 0.04 s.
const FILL_PER_1000: Duration = Duration::from_millis(10);
/// How much longer than a CDP call typing into a rich editor may take, per 1,000
/// characters. Editors differ by far: 300,000 characters of lines went into Lexical in
/// 0.18 s, 100,000 into TipTap in 11.6 s (ProseMirror handles each line end as an edit
/// of its own, at a cost that grows with the text).
const TYPE_PER_1000: Duration = Duration::from_secs(1);

/// How much longer than a CDP call an operation on `chars` characters may take, at
/// `per_1000`: the deadline grows with the prompt, so that no fixed deadline fails a
/// long prompt.
fn per_size(chars: usize, per_1000: Duration) -> Duration {
    per_1000 * u32::try_from(chars / 1_000).unwrap_or(u32::MAX)
}

/// The error for `selector` matching nothing.
fn missing(selector: &Selector, within: Duration) -> PageError {
    PageError::Missing {
        name: selector.name.to_owned(),
        selector: selector.shown(),
        within,
    }
}
