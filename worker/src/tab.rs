//! The lane's one browser tab, as drivers use it: CDP calls and page scripts under the
//! lane's deadline, waiting for selectors, typing, loading the chat page, and noticing a
//! crashed renderer so that the page can be reloaded.

use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::input::InsertTextParams;
use chromiumoxide::cdp::browser_protocol::inspector::{
    EnableParams as InspectorEnable, EventTargetCrashed,
};
use chromiumoxide::cdp::browser_protocol::network::EnableParams as NetworkEnable;
use chromiumoxide::cdp::browser_protocol::page::AddScriptToEvaluateOnNewDocumentParams;
use chromiumoxide::cdp::browser_protocol::page::CrashParams;
use chromiumoxide::cdp::js_protocol::runtime::{
    EvaluateParams, RemoteObjectId, TerminateExecutionParams,
};
use chromiumoxide::cdp::IntoEventKind;
use chromiumoxide::listeners::EventStream;
use chromiumoxide::{Command, Method, Page};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::browser::{with_deadline, Browser, CdpError};
use crate::driver::selectors::Selector;

/// Loading the chat page, from navigation to the `load` event.
pub const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a settled page takes to evaluate `1`: milliseconds. A page that takes
/// this long is busy (its main thread runs a script or lays out a flood of text), and
/// a request sent into it would wait behind that.
pub const PAGE_CHECK: Duration = Duration::from_secs(2);

/// After `Page.crash`, how long the crash gets to be reported: Chromium reports a
/// crashed renderer once its crash handler has given up waiting for a dump, about 5 s.
const CRASH_REPORTED: Duration = Duration::from_secs(20);

/// Installed in every document before the site's own scripts: keeps a handle on every
/// `fetch` and `XMLHttpRequest` the page makes, so that the worker can abort the page's
/// answer stream when the site's stop button is missing or does nothing.
///
/// Why a page script and not CDP: the Fetch domain can fail a request only while it is
/// paused (before it is sent, or at its response headers) — once the answer's body
/// streams, no CDP command cancels it, and pausing every request of the page to keep
/// that option would slow the whole site. Aborting from inside the page also ends the
/// request the way the site's own Stop does, so the page's state stays consistent.
/// Requests from Web Workers or iframes are not covered (no site we drive streams its
/// answer from one).
const ABORT_HOOK: &str = include_str!("page/abort_hook.js");

/// The worker's page script for finding and using elements (see [`Tab::page_op`]).
const FIND_SCRIPT: &str = include_str!("page/find.js");

/// A page expression that aborts every request the page still has going (`fetch` and
/// `XMLHttpRequest`) and evaluates to how many it aborted.
pub const ABORT_REQUESTS: &str = "window.__prqAbortRequests()";

/// How a busy tab came back to answering ([`Tab::recover`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// It answered the first check: it had settled by itself.
    Settled,
    /// Its script was ended and the page loaded again.
    Reloaded,
    /// Its renderer was ended and the page loaded in a fresh one.
    FreshRenderer,
}

/// Why a page operation did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Cdp(#[from] CdpError),
    #[error("a page script failed: {0}")]
    Script(String),
    /// No element matches the selector named `name` (shown as `selector`).
    #[error("the page has no `{name}` element ({selector}) after {} s", within.as_secs_f32())]
    Missing {
        name: String,
        selector: String,
        within: Duration,
    },
    #[error("could not load {url}: {reason}")]
    Load { url: String, reason: String },
    #[error("the browser's event stream ended")]
    Gone,
    #[error("{0}")]
    Unexpected(String),
}

impl PageError {
    /// The browser did not answer in time (as opposed to answering with an error).
    pub fn is_timeout(&self) -> bool {
        matches!(self, PageError::Cdp(CdpError::Timeout { .. }))
    }
}

pub struct Tab {
    page: Page,
    url: String,
    cdp_timeout: Duration,
    /// Raised by a crash event, lowered by a successful (re)load.
    crashed: Arc<watch::Sender<bool>>,
    /// Turns the tab's crash events into `crashed`.
    crash_watch: JoinHandle<()>,
}

impl Drop for Tab {
    fn drop(&mut self) {
        // A browser closing kills its renderers: that is no crash to report.
        self.crash_watch.abort();
    }
}

/// The tab's CDP commands, each under the lane's deadline, for a task that outlives a
/// borrow of the [`Tab`] (see [`Tab::caller`]).
#[derive(Clone)]
pub struct Caller {
    page: Page,
    cdp_timeout: Duration,
}

impl Caller {
    pub async fn call<C: Command>(&self, cmd: C) -> Result<C::Response, PageError> {
        let method = cmd.identifier();
        let response = with_deadline(self.cdp_timeout, &method, self.page.execute(cmd)).await?;
        Ok(response.result)
    }
}

impl Tab {
    /// Opens a tab and loads `url` in it.
    pub async fn open(
        browser: &Browser,
        url: &str,
        cdp_timeout: Duration,
    ) -> Result<Self, PageError> {
        let page = with_deadline(
            cdp_timeout,
            "Target.createTarget",
            browser.inner().new_page("about:blank"),
        )
        .await?;
        let mut crashes = with_deadline(
            cdp_timeout,
            "an event listener",
            page.event_listener::<EventTargetCrashed>(),
        )
        .await?;
        let crashed = Arc::new(watch::channel(false).0);
        let crash_watch = tokio::spawn({
            let crashed = Arc::clone(&crashed);
            async move {
                while crashes.next().await.is_some() {
                    tracing::warn!("the tab's renderer crashed");
                    crashed.send_replace(true);
                }
            }
        });
        let tab = Tab {
            page,
            url: url.to_owned(),
            cdp_timeout,
            crashed,
            crash_watch,
        };
        // The lane's identity, before the site's first script.
        browser.presence().prepare(&tab).await?;
        // `Inspector.targetCrashed` is only sent with the Inspector domain on.
        tab.call(InspectorEnable::default()).await?;
        // Streams are read from Network events (see `stream`).
        tab.call(NetworkEnable::default()).await?;
        tab.call(AddScriptToEvaluateOnNewDocumentParams::new(ABORT_HOOK))
            .await?;
        tab.load().await?;
        Ok(tab)
    }

    /// The chat page the tab loads.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One CDP command under the lane's deadline.
    pub async fn call<C: Command>(&self, cmd: C) -> Result<C::Response, PageError> {
        self.caller().call(cmd).await
    }

    /// A handle for the tab's CDP commands that a task of its own can keep.
    pub fn caller(&self) -> Caller {
        Caller {
            page: self.page.clone(),
            cdp_timeout: self.cdp_timeout,
        }
    }

    /// Subscribes to one CDP event type of this tab.
    pub async fn listen<T: IntoEventKind>(&self) -> Result<EventStream<T>, PageError> {
        Ok(with_deadline(
            self.cdp_timeout,
            "an event listener",
            self.page.event_listener(),
        )
        .await?)
    }

    /// Evaluates a page expression (awaiting it if it is a promise) and returns its
    /// value. A thrown exception is a [`PageError::Script`].
    pub async fn eval<T: DeserializeOwned>(&self, expression: &str) -> Result<T, PageError> {
        self.eval_within(expression, Duration::ZERO).await
    }

    /// [`eval`](Tab::eval) for a promise that may take up to `extra` longer than a
    /// CDP call.
    pub async fn eval_within<T: DeserializeOwned>(
        &self,
        expression: &str,
        extra: Duration,
    ) -> Result<T, PageError> {
        self.evaluate(expression, extra, false).await
    }

    /// [`eval_within`](Tab::eval_within); with `gesture`, as if a person's input
    /// started it (a page opens a file chooser only for one).
    async fn evaluate<T: DeserializeOwned>(
        &self,
        expression: &str,
        extra: Duration,
        gesture: bool,
    ) -> Result<T, PageError> {
        let params = EvaluateParams::builder()
            .expression(expression)
            .await_promise(true)
            .return_by_value(true)
            .user_gesture(gesture)
            .build()
            .map_err(PageError::Unexpected)?;
        let method = params.identifier();
        let done = with_deadline(self.cdp_timeout + extra, &method, self.page.execute(params))
            .await?
            .result;
        if let Some(exception) = done.exception_details {
            let detail = exception
                .exception
                .and_then(|e| e.description)
                .unwrap_or(exception.text);
            return Err(PageError::Script(detail));
        }
        let value = done.result.value.unwrap_or(serde_json::Value::Null);
        serde_json::from_value(value).map_err(|e| {
            PageError::Unexpected(format!("a page script returned something else: {e}"))
        })
    }

    /// Runs one operation of the page's find script (`page/find.js`: finding elements
    /// by selector, waiting for them, clicking, the doctor's counts) with its arguments,
    /// for up to `extra` longer than a CDP call.
    pub async fn page_op<T: DeserializeOwned>(
        &self,
        op: &str,
        args: serde_json::Value,
        extra: Duration,
    ) -> Result<T, PageError> {
        self.evaluate(&find_op(op, &args), extra, false).await
    }

    /// [`page_op`](Tab::page_op) as a person's input: what it clicks may open a file
    /// chooser.
    pub async fn page_op_as_user<T: DeserializeOwned>(
        &self,
        op: &str,
        args: serde_json::Value,
        extra: Duration,
    ) -> Result<T, PageError> {
        self.evaluate(&find_op(op, &args), extra, true).await
    }

    /// The first element `selector` finds, as a handle for CDP commands that take a
    /// node (`DOM.setFileInputFiles`); `None` when it finds none.
    pub async fn element(&self, selector: &Selector) -> Result<Option<RemoteObjectId>, PageError> {
        let args = serde_json::json!({ "selector": selector });
        let expression = format!("({FIND_SCRIPT})(\"element\", {args})");
        let params = EvaluateParams::builder()
            .expression(expression)
            .return_by_value(false)
            .build()
            .map_err(PageError::Unexpected)?;
        let method = params.identifier();
        let done = with_deadline(self.cdp_timeout, &method, self.page.execute(params))
            .await?
            .result;
        if let Some(exception) = done.exception_details {
            return Err(PageError::Script(exception.text));
        }
        Ok(done.result.object_id)
    }

    /// Waits until every selector matches an element, for at most `within`; the error
    /// names the first one missing.
    pub async fn wait_for(
        &self,
        selectors: &[&Selector],
        within: Duration,
    ) -> Result<(), PageError> {
        self.wait_first(&[selectors], within).await.map(drop)
    }

    /// Waits until every selector of one of the `groups` matches an element, for at most
    /// `within`, and returns that group's index (the first, when several match at once:
    /// list exceptions that take precedence first, the usual outcome last). On timeout
    /// the error names the first selector missing from the last group. A
    /// MutationObserver in the page does the waiting, so this is one CDP call however
    /// long the page takes; it watches attributes and text too, for states a page shows
    /// by flipping a class, an `aria-*` attribute or a label.
    pub async fn wait_first(
        &self,
        groups: &[&[&Selector]],
        within: Duration,
    ) -> Result<usize, PageError> {
        let args = serde_json::json!({ "groups": groups, "ms": within.as_millis() as u64 });
        match self
            .page_op::<serde_json::Value>("wait", args, within)
            .await?
        {
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| PageError::Unexpected(format!("a group index of {n}"))),
            serde_json::Value::String(name) => {
                let missing = groups
                    .iter()
                    .flat_map(|g| g.iter())
                    .find(|s| s.name == name);
                Err(PageError::Missing {
                    name,
                    selector: missing.map_or_else(String::new, |s| s.shown()),
                    within,
                })
            }
            other => Err(PageError::Unexpected(format!(
                "waiting for selectors returned {other}"
            ))),
        }
    }

    /// Types `text` into the focused element as one input (as an input method commits
    /// text), with up to `extra` longer than a CDP call. One call, not pieces: an
    /// editor's selection may not have followed one piece when the next arrives (TipTap
    /// put the next piece mid-line; Lexical lost a line end at each cut).
    pub async fn insert_text(&self, text: &str, extra: Duration) -> Result<(), PageError> {
        let cmd = InsertTextParams::new(text);
        let method = cmd.identifier();
        with_deadline(self.cdp_timeout + extra, &method, self.page.execute(cmd)).await?;
        Ok(())
    }

    /// (Re)loads the chat page; a successful load clears a crash.
    pub async fn load(&self) -> Result<(), PageError> {
        let failed = |reason: String| PageError::Load {
            url: self.url.clone(),
            reason,
        };
        match tokio::time::timeout(PAGE_LOAD_TIMEOUT, self.page.goto(self.url.as_str())).await {
            Ok(Ok(_)) => {
                self.crashed.send_replace(false);
                Ok(())
            }
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(failed(format!(
                "not loaded within {} s",
                PAGE_LOAD_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Whether the page evaluates a trivial expression within `within`: its main
    /// thread is free to take the next request.
    pub async fn answers(&self, within: Duration) -> bool {
        let params = EvaluateParams::new("1");
        with_deadline(within, "Runtime.evaluate", self.page.execute(params))
            .await
            .is_ok()
    }

    /// Brings a tab whose page may be busy back to answering, each step bounded: a
    /// check ([`PAGE_CHECK`]); then the page's script ended and the page loaded again;
    /// then its renderer ended and the page loaded in a fresh one. Both
    /// `Runtime.terminateExecution` and `Page.crash` are served on the renderer's IO
    /// thread and interrupt the script there, where any other call (a click, an
    /// evaluation, a navigation's commit) waits for the busy main thread.
    pub async fn recover(&self) -> Result<Recovered, PageError> {
        if self.answers(PAGE_CHECK).await {
            return Ok(Recovered::Settled);
        }
        let terminate = TerminateExecutionParams::default();
        let method = terminate.identifier();
        if let Err(e) = with_deadline(PAGE_CHECK, &method, self.page.execute(terminate)).await {
            tracing::warn!("recovering the tab: {e}");
        }
        match self.load().await {
            Ok(()) if self.answers(PAGE_CHECK).await => return Ok(Recovered::Reloaded),
            Ok(()) => tracing::warn!("recovering the tab: reloaded, but it does not answer"),
            Err(e) => tracing::warn!("recovering the tab: {e}"),
        }
        // The call never gets its answer (its renderer is gone); the crash event counts.
        let _ = tokio::time::timeout(PAGE_CHECK, self.page.execute(CrashParams::default())).await;
        tokio::time::timeout(CRASH_REPORTED, self.crashed())
            .await
            .map_err(|_| {
                PageError::Unexpected(format!(
                    "its renderer did not end within {} s of Page.crash",
                    CRASH_REPORTED.as_secs()
                ))
            })?;
        self.load().await?;
        match self.answers(PAGE_CHECK).await {
            true => Ok(Recovered::FreshRenderer),
            false => Err(PageError::Unexpected(format!(
                "the page loaded in a fresh renderer does not answer within {} s",
                PAGE_CHECK.as_secs()
            ))),
        }
    }

    /// The page's URL (after any redirect) and title.
    pub async fn url_and_title(&self) -> Result<(String, String), PageError> {
        self.eval("[location.href, document.title]").await
    }

    /// A PNG of what the tab shows.
    pub async fn screenshot(&self) -> Result<Vec<u8>, PageError> {
        let params = chromiumoxide::page::ScreenshotParams::builder().build();
        Ok(with_deadline(
            self.cdp_timeout,
            "Page.captureScreenshot",
            self.page.screenshot(params),
        )
        .await?)
    }

    /// Closes the tab (a lane's only tab lives as long as its browser; a doctor's goes).
    pub async fn close(self) {
        let page = self.page.clone();
        if let Err(e) = with_deadline(self.cdp_timeout, "Page.close", page.close()).await {
            tracing::warn!("closing a tab: {e}");
        }
    }

    pub fn has_crashed(&self) -> bool {
        *self.crashed.borrow()
    }

    /// Resolves once the renderer has crashed (at once if it already has).
    pub async fn crashed(&self) {
        let mut crashed = self.crashed.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = crashed.wait_for(|crashed| *crashed).await;
    }
}

/// The expression that runs operation `op` of the page's find script with `args`.
fn find_op(op: &str, args: &serde_json::Value) -> String {
    format!("({FIND_SCRIPT})({}, {args})", serde_json::Value::from(op))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::Body;
    use axum::routing::get;
    use prq_protocol::worker::LaneSpec;

    use super::*;

    const CDP_TIMEOUT: Duration = Duration::from_secs(10);

    /// Elements a person tells apart by what they read, not by their markup.
    const CONTROLS: &str = r#"<!doctype html><meta charset="utf-8"><body>
      <button id="a" aria-label="Send message"><svg></svg></button>
      <div role="button" class="t">Search</div>
      <div role="button" class="t"><span>DeepThink</span></div>
      <label for="q">Question</label><input id="q">
      <div contenteditable="true" class="ed"></div>
      <a href="/x">Sign in</a>
      <button disabled>Run</button>
      <script>setTimeout(() => document.body.append(Object.assign(
        document.createElement("p"), { textContent: "Later 深度思考" })), 300);</script>
    </body>"#;

    /// A page whose script holds its main thread once it has loaded: for good with
    /// `?always`, else on its first load in the tab only.
    const SPIN: &str = r#"<!doctype html><p id=here>spin</p><script>
      addEventListener("load", () => setTimeout(() => {
        if (location.search !== "?always" && sessionStorage.getItem("spun")) return;
        sessionStorage.setItem("spun", "1");
        for (;;) {}
      }, 0));
    </script>"#;

    /// A selector of one alternative, named as the test likes.
    fn css(name: &'static str, text: &str) -> Selector {
        Selector::new(name, vec![text.into()]).unwrap()
    }

    /// A page, and `/endless`: a body that starts and never ends.
    async fn serve() -> String {
        let app = axum::Router::new()
            .route(
                "/",
                get(|| async { axum::response::Html("<p id=here>hi</p>") }),
            )
            .route(
                "/controls",
                get(|| async { axum::response::Html(CONTROLS) }),
            )
            .route("/spin", get(|| async { axum::response::Html(SPIN) }))
            .route(
                "/captcha",
                get(|| async { axum::response::Html(r#"<div id="px-captcha"></div>"#) }),
            )
            .route(
                "/endless",
                get(|| async {
                    let first = futures::stream::once(async { Ok::<_, Infallible>("x") });
                    // Typed and not to be sniffed: Chromium would hold the first 512
                    // bytes back from the page to guess a type.
                    let headers = [
                        ("content-type", "application/octet-stream"),
                        ("x-content-type-options", "nosniff"),
                    ];
                    (
                        headers,
                        Body::from_stream(first.chain(futures::stream::pending())),
                    )
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    async fn launch(profile: &std::path::Path) -> Browser {
        launch_with(profile, CDP_TIMEOUT).await
    }

    async fn launch_with(profile: &std::path::Path, cdp_timeout: Duration) -> Browser {
        let spec = LaneSpec {
            lane_id: "tab-test".into(),
            provider: "test".into(),
            prefix: "test".into(),
            account: "default".into(),
            profile_dir: profile.to_owned(),
            base_url: None,
            browser: Some("/usr/bin/chromium".into()),
            thinking_default: false,
            heartbeat_ms: 1000,
            heartbeat_timeout_ms: 3_000,
            cdp_timeout_ms: cdp_timeout.as_millis() as u64,
            selectors: Default::default(),
            presence: Default::default(),
            capture_dir: None,
            browser_profile: Default::default(),
            keep_alive_s: None,
            after_reply: Default::default(),
            upload_timeout_ms: 60_000,
        };
        Browser::launch(&spec).await.unwrap().0
    }

    #[tokio::test]
    async fn the_pages_fetches_and_xhrs_can_be_aborted_from_outside_and_by_the_page() {
        let (url, profile) = (serve().await, tempfile::tempdir().unwrap());
        let mut browser = launch(profile.path()).await;
        let tab = Tab::open(&browser, &url, CDP_TIMEOUT).await.unwrap();

        // How a fetch whose body never ends comes out, kept for later.
        let read = |name: &str, options: &str| {
            format!(
                "void (window.{name} = fetch('/endless', {options}).then((r) => r.text())
                   .then(() => 'done', (e) => e.name))"
            )
        };
        tab.eval::<()>(&read("ours", "{}")).await.unwrap();
        // The page's own signal still works beside the worker's.
        let own = "{ signal: (window.own = new AbortController()).signal }";
        tab.eval::<()>(&read("theirs", own)).await.unwrap();
        tab.eval::<()>("window.own.abort()").await.unwrap();
        assert_eq!(
            tab.eval::<String>("window.theirs").await.unwrap(),
            "AbortError"
        );

        // An XMLHttpRequest whose body has started streaming and never ends, and one
        // that ended (it leaves the worker's set).
        let xhr = r#"new Promise((resolve) => {
          const done = new XMLHttpRequest();
          done.open("GET", "/");
          done.onloadend = () => {
            const x = (window.xhr = new XMLHttpRequest());
            x.open("GET", "/endless");
            x.onprogress = () => resolve(x.readyState);
            x.onabort = () => (window.xhrEnd = "abort");
            x.onload = () => (window.xhrEnd = "load");
            x.send();
          };
          done.send();
        })"#;
        assert_eq!(
            tab.eval::<u32>(xhr).await.unwrap(),
            3,
            "the XHR is streaming"
        );

        let aborted: u32 = tab.eval(ABORT_REQUESTS).await.unwrap();
        assert_eq!(
            aborted, 3,
            "both fetches and the streaming XHR were still tracked"
        );
        assert_eq!(
            tab.eval::<String>("window.ours").await.unwrap(),
            "AbortError"
        );
        assert_eq!(tab.eval::<String>("window.xhrEnd").await.unwrap(), "abort");
        assert_eq!(tab.eval::<u32>(ABORT_REQUESTS).await.unwrap(), 0);
        drop(tab);
        browser.close().await;
    }

    /// A page whose script spins is recovered by ending its script and loading it
    /// again; one that spins again on every load is given a fresh renderer, and when
    /// that spins too, recovery says so (the lane is then lost) instead of waiting.
    #[tokio::test]
    async fn a_spinning_page_is_reloaded_and_one_that_always_spins_is_given_up() {
        let (url, profile) = (serve().await, tempfile::tempdir().unwrap());
        let mut browser = launch(profile.path()).await;
        let tab = Tab::open(&browser, &format!("{url}spin"), CDP_TIMEOUT)
            .await
            .unwrap();
        assert!(!tab.answers(PAGE_CHECK).await, "the page spins");
        assert_eq!(tab.recover().await.unwrap(), Recovered::Reloaded);
        assert!(tab.answers(PAGE_CHECK).await);
        assert_eq!(tab.recover().await.unwrap(), Recovered::Settled);

        let tab = Tab::open(&browser, &format!("{url}spin?always"), CDP_TIMEOUT)
            .await
            .unwrap();
        let t0 = std::time::Instant::now();
        let given_up = tab.recover().await.unwrap_err();
        eprintln!("TIMING given up after {:?}: {given_up}", t0.elapsed());
        assert!(
            given_up.to_string().contains("fresh renderer"),
            "{given_up}"
        );
        drop(tab);
        browser.close().await;
    }

    /// The bot-check probe (driver/challenge.rs) names the check a page shows, and
    /// none on an ordinary page.
    #[tokio::test]
    async fn the_bot_check_probe_names_what_the_page_shows() {
        let (url, profile) = (serve().await, tempfile::tempdir().unwrap());
        let mut browser = launch(profile.path()).await;
        let probe = include_str!("page/challenge_probe.js");
        let tab = Tab::open(&browser, &url, CDP_TIMEOUT).await.unwrap();
        assert_eq!(tab.eval::<Option<String>>(probe).await.unwrap(), None);
        let tab = Tab::open(&browser, &format!("{url}captcha"), CDP_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(
            tab.eval::<Option<String>>(probe).await.unwrap().as_deref(),
            Some("HUMAN (PerimeterX)")
        );
        browser.close().await;
    }

    /// The page script finds by visible text and by role and accessible name, tries a
    /// list in order, waits for text that comes later, and tells a disabled button.
    #[tokio::test]
    async fn elements_are_found_by_what_a_person_sees() {
        let (url, profile) = (serve().await, tempfile::tempdir().unwrap());
        let mut browser = launch(profile.path()).await;
        let tab = Tab::open(&browser, &format!("{url}controls"), CDP_TIMEOUT)
            .await
            .unwrap();
        let count = |written: &[&str]| {
            let selector =
                Selector::new("x", written.iter().map(|w| w.to_string()).collect()).unwrap();
            let tab = &tab;
            async move {
                let args = serde_json::json!({ "selectors": [selector] });
                let counted: serde_json::Value =
                    tab.page_op("count", args, Duration::ZERO).await.unwrap();
                let one = &counted[0];
                (
                    one["alternative"].as_i64().unwrap(),
                    one["found"].as_u64().unwrap(),
                )
            }
        };
        for (written, want) in [
            (&["text=DeepThink"][..], (0, 1)),
            (&["text=\"deepthink\""], (-1, 0)),
            (&["text=\"DeepThink\""], (0, 1)),
            (&[".t:has-text(deepthink)"], (0, 1)),
            (&["role=button"], (0, 4)),
            (&["role=button[name=\"Send message\"]"], (0, 1)),
            (&["role=button[name=send]"], (0, 1)),
            (&["role=textbox"], (0, 2)),
            (&["role=textbox[name=\"Question\"]"], (0, 1)),
            (&["role=link[name=\"Sign in\"]"], (0, 1)),
            (
                &["#nope", "role=button[name=\"Send message\"]", "button"],
                (1, 1),
            ),
            (&["#nope", "text=nowhere"], (-1, 0)),
        ] {
            assert_eq!(count(written).await, want, "{written:?}");
        }

        let later = Selector::new("later", vec!["text=深度思考".into()]).unwrap();
        tab.wait_for(&[&later], Duration::from_secs(5))
            .await
            .unwrap();

        let run = Selector::new("send", vec!["role=button[name=Run]".into()]).unwrap();
        let args = serde_json::json!({ "button": run, "ms": 100 });
        let clicked: String = tab.page_op("click", args, Duration::ZERO).await.unwrap();
        assert_eq!(clicked, "disabled");
        drop(tab);
        browser.close().await;
    }

    /// An in-page wait longer than the CDP deadline itself (drivers wait for elements
    /// as long as it) ends by the page's own timer, naming the selector, and never as
    /// a CDP timeout.
    #[tokio::test]
    async fn an_in_page_wait_longer_than_the_cdp_deadline_ends_as_missing() {
        // The lane's CDP deadline; the tab gets a generous one of its own so that only
        // the browser-wide timeout chromiumoxide keeps is under test.
        let cdp_timeout = Duration::from_secs(1);
        let (url, profile) = (serve().await, tempfile::tempdir().unwrap());
        let mut browser = launch_with(profile.path(), cdp_timeout).await;
        let tab = Tab::open(&browser, &url, CDP_TIMEOUT).await.unwrap();
        let nowhere = css("nowhere", "#nowhere");
        for _ in 0..3 {
            let missing = tab
                .wait_for(&[&nowhere], cdp_timeout * 2)
                .await
                .unwrap_err();
            assert!(matches!(&missing, PageError::Missing { .. }), "{missing}");
        }
        drop(tab);
        browser.close().await;
    }

    #[tokio::test]
    async fn a_missing_selector_is_named_and_a_crash_is_seen_and_reloaded() {
        let (url, profile) = (serve().await, tempfile::tempdir().unwrap());
        let mut browser = launch(profile.path()).await;
        let tab = Tab::open(&browser, &url, CDP_TIMEOUT).await.unwrap();

        let (here, nowhere, p) = (
            css("here", "#here"),
            css("nowhere", "#nowhere"),
            css("p", "p"),
        );
        tab.wait_for(&[&here], Duration::from_millis(100))
            .await
            .unwrap();
        let missing = tab
            .wait_for(&[&here, &nowhere], Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(
            matches!(&missing, PageError::Missing { name, selector, .. } if name == "nowhere" && selector == "`#nowhere`"),
            "{missing}"
        );
        let groups: [&[&Selector]; 2] = [&[&nowhere], &[&p, &here]];
        let first = tab.wait_first(&groups, Duration::from_millis(100));
        assert_eq!(first.await.unwrap(), 1);

        assert!(!tab.has_crashed());
        let t0 = std::time::Instant::now();
        // The call never gets its answer (the renderer is gone); the event is what counts.
        let crash = tab.page.execute(CrashParams::default());
        let _ = tokio::time::timeout(Duration::from_millis(200), crash).await;
        // Chromium reports a crashed renderer only once the renderer's own crash handler
        // has given up waiting for its dump to be taken: about 5 s here.
        tokio::time::timeout(Duration::from_secs(20), tab.crashed())
            .await
            .expect("the crash is seen");
        eprintln!("TIMING crash seen {:?}", t0.elapsed());
        tab.load().await.unwrap();
        eprintln!("TIMING reloaded {:?}", t0.elapsed());
        assert!(!tab.has_crashed());
        tab.wait_for(&[&here], Duration::from_secs(1))
            .await
            .unwrap();
        drop(tab);
        browser.close().await;
    }
}
