//! One lane's life after `Configure`: start the driver (and its browser), report
//! `Ready`, serve `Generate` / `Stop` / `Shutdown` until the end, and leave nothing
//! behind. A `Sleep` closes the browser and keeps the worker; a `Wake` starts it all
//! again and reports `Ready` anew. One generation runs at a time, as its own task, so that the loop keeps
//! reading the supervisor (a Stop must reach the page at once) and watching the browser.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prq_protocol::prompt::flatten;
use prq_protocol::screen::{ScreenCmd, ScreenEvent};
use prq_protocol::worker::{
    FailureKind, FinishReason, FromWorker, Generate, LaneSpec, PageReport, RequestId, Thinking,
    ToWorker, STOP_DEADLINE,
};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::browser::{Browser, Death};
use crate::driver::echo::Echo;
use crate::driver::selectors::Selectors;
use crate::driver::web::{Site, WebDriver};
use crate::driver::{failure, Deltas, Driver, Job, Outcome, Provider};
use crate::link::{Inbound, Outbox};
use crate::screencast::Screencast;
use crate::tab::Tab;

/// How the lane ended; the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Shut down, or the supervisor went away: nothing left to report.
    Clean = 0,
    /// The lane broke (its browser died or did not start) or the link did.
    Failed = 1,
    /// The lane asked for something this worker cannot do.
    Usage = 2,
}

/// How a lane's serving ended.
enum Served {
    Exit(Exit),
    /// Told to sleep: the browser is closed; the worker waits to be woken.
    Asleep,
}

/// Runs the lane configured by `spec` to its end: serves, and between a `Sleep` and the
/// next `Wake` waits with its browser closed.
pub async fn run(spec: LaneSpec, inbound: &mut Inbound, out: Outbox) -> Exit {
    let Some(provider) = Provider::from_name(&spec.provider) else {
        let reason = format!(
            "unknown provider `{}` (this worker drives: {})",
            spec.provider,
            Provider::names()
        );
        return fatal(&out, reason, Exit::Usage).await;
    };
    loop {
        let served = match crate::driver::site(provider) {
            None => serve(Echo, None, &spec, inbound, &out).await,
            Some(site) => with_browser(site, &spec, inbound, &out).await,
        };
        match served {
            Served::Exit(exit) => return exit,
            Served::Asleep => {
                tracing::info!("asleep: the browser is closed until the next request");
                out.send(FromWorker::Asleep).await;
                if let Some(exit) = until_woken(inbound, &out).await {
                    return exit;
                }
                tracing::info!("waking");
            }
        }
    }
}

/// While the lane sleeps: returns `None` when told to wake, or how the lane ends when
/// told to shut down (or the supervisor goes away).
async fn until_woken(inbound: &mut Inbound, out: &Outbox) -> Option<Exit> {
    loop {
        match inbound.next().await {
            None | Some(Ok(ToWorker::Shutdown)) => return Some(Exit::Clean),
            Some(Err(e)) => {
                tracing::error!("bad message from the supervisor: {e}");
                return Some(Exit::Failed);
            }
            Some(Ok(ToWorker::Wake)) => return None,
            Some(Ok(ToWorker::Doctor { .. })) => {
                let report = Err(
                    "the lane is asleep (its browser is closed until a request wakes it)".into(),
                );
                out.send(FromWorker::Doctor { report }).await;
            }
            Some(Ok(ToWorker::Generate(g))) => {
                let failure = failure(FailureKind::Internal, "the lane is asleep: wake it first");
                out.send(FromWorker::Failed { id: g.id, failure }).await;
            }
            Some(Ok(other)) => tracing::debug!(?other, "ignored while asleep"),
        }
    }
}

/// Starts a browser lane: launches Chromium, loads the site's page in a tab, lets the
/// driver take the tab over, then serves. Startup gives way to a Shutdown, a
/// supervisor that goes away, and the browser's death.
async fn with_browser(
    site: &'static Site,
    spec: &LaneSpec,
    inbound: &mut Inbound,
    out: &Outbox,
) -> Served {
    let Some(url) = spec.base_url.clone().or(site.url.map(str::to_owned)) else {
        let reason = format!("the {} lane has no base_url", spec.provider);
        return Served::Exit(fatal(out, reason, Exit::Usage).await);
    };
    let selectors = match Selectors::new(&site.selectors, &spec.selectors) {
        Ok(selectors) => selectors,
        Err(e) => {
            let reason = format!("[lanes.selectors] of the {} lane: {e}", spec.provider);
            return Served::Exit(fatal(out, reason, Exit::Usage).await);
        }
    };
    let started = Instant::now();
    let launched = tokio::select! {
        launched = Browser::launch(spec) => launched,
        exit = until_told_to_end(inbound, out) => return Served::Exit(exit),
    };
    let (mut browser, mut death) = match launched {
        Ok(launched) => launched,
        Err(e) => return Served::Exit(fatal(out, e.to_string(), Exit::Failed).await),
    };
    let cdp_timeout = Duration::from_millis(spec.cdp_timeout_ms);
    let opening = async {
        let tab = Tab::open(&browser, &url, cdp_timeout).await?;
        WebDriver::open(tab, site, selectors, spec).await
    };
    let opened = tokio::select! {
        opened = opening => opened.map_err(|e| format!("opening {url}: {e}")),
        reason = death.wait() => Err(reason),
        exit = until_told_to_end(inbound, out) => {
            browser.close().await;
            return Served::Exit(exit);
        }
    };
    match opened {
        Ok(driver) => {
            let ms = started.elapsed().as_millis() as u64;
            tracing::info!(ms, "page ready");
            serve(driver, Some((browser, death)), spec, inbound, out).await
        }
        Err(reason) => {
            browser.close().await;
            Served::Exit(fatal(out, reason, Exit::Failed).await)
        }
    }
}

async fn fatal(out: &Outbox, reason: String, exit: Exit) -> Exit {
    tracing::error!(%reason, "the lane cannot go on");
    out.send(FromWorker::Fatal { reason }).await;
    exit
}

/// While the lane starts: answers what cannot be served yet, and returns when the
/// supervisor says to stop or goes away.
async fn until_told_to_end(inbound: &mut Inbound, out: &Outbox) -> Exit {
    loop {
        match inbound.next().await {
            None | Some(Ok(ToWorker::Shutdown)) => return Exit::Clean,
            Some(Err(e)) => {
                tracing::error!("bad message from the supervisor: {e}");
                return Exit::Failed;
            }
            Some(Ok(ToWorker::Generate(g))) => {
                let failure = failure(FailureKind::Internal, "the lane is not ready yet");
                out.send(FromWorker::Failed { id: g.id, failure }).await;
            }
            Some(Ok(ToWorker::Doctor { .. })) => {
                let report = Err("the lane is not ready yet".into());
                out.send(FromWorker::Doctor { report }).await;
            }
            Some(Ok(other)) => tracing::debug!(?other, "ignored while starting"),
        }
    }
}

/// The whole time a page gets to come back to taking requests ([`Driver::recover`],
/// whose steps have deadlines of their own that add up to less); past it the lane is
/// lost, and its crash policy applies.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(90);

/// A generation's end, and whether the page took it in its stride.
struct Generated {
    outcome: Outcome,
    /// The page answers at once: it may take the next request. Otherwise the lane
    /// recovers it first.
    settled: bool,
}

/// The generation in progress.
struct Current {
    id: RequestId,
    stop: CancellationToken,
    task: JoinHandle<Generated>,
    started: Instant,
    /// Once stopped: when the generation ends as stopped, whatever it is waiting for
    /// ([`STOP_DEADLINE`], which the supervisor's patience is derived from).
    stop_by: Option<Instant>,
}

/// The lane's loop, from `Ready` to its end or to a `Sleep`; closes the browser on the
/// way out.
async fn serve<D: Driver>(
    driver: D,
    browser: Option<(Browser, Death)>,
    spec: &LaneSpec,
    inbound: &mut Inbound,
    out: &Outbox,
) -> Served {
    let (mut browser, mut death) = browser.unzip();
    let browser_pid = browser.as_ref().map(Browser::pid);
    let user_agent = browser.as_ref().map(|b| b.presence().user_agent.clone());
    let release = browser.as_ref().map(|b| b.release().clone());
    // What the page shows of its login changes with a login view; the rest does not.
    let ready = |logged_in: Option<bool>| FromWorker::Ready {
        browser_pid,
        logged_in,
        user_agent: user_agent.clone(),
        release: release.clone(),
    };
    let logged_in = driver.logged_in();
    out.send(ready(logged_in)).await;
    tracing::info!(?browser_pid, ?logged_in, "ready");
    let driver = Arc::new(driver);
    let mut current: Option<Current> = None;
    // A `prq doctor` check in a second tab, beside the generation.
    let mut doctor: Option<Pin<Box<dyn Future<Output = DoctorReply> + '_>>> = None;
    // Bringing a busy page back; the lane takes no request until it ends.
    let mut recovery: Option<Pin<Box<dyn Future<Output = Recovery> + Send>>> = None;
    // The panel's login view, while open; then the page's login checked again.
    let mut screen: Option<Screencast> = None;
    let mut recheck: Option<Pin<Box<dyn Future<Output = Recheck> + Send>>> = None;
    // `keep_alive_s`: an idle page loaded again now and then; a request cancels it.
    let mut keep_alive = spec
        .keep_alive_s
        .filter(|_| driver.tab().is_some())
        .map(|s| {
            let every = Duration::from_secs(s.max(1));
            let mut timer = tokio::time::interval_at(Instant::now() + every, every);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer
        });
    // What the page showed before, and shows now.
    let mut reloading: Option<Pin<Box<dyn Future<Output = KeepAlive> + Send>>> = None;
    let served = {
        // The watch borrows the browser while the loop runs; the browser is closed after.
        let mut hung = std::pin::pin!(hung(browser.as_ref(), spec));
        loop {
            tokio::select! {
                // A dead browser first: the failed calls of the generation follow from it.
                biased;
                reason = died(&mut death) => break Served::Exit(fatal(out, reason, Exit::Failed).await),
                reason = &mut hung => break Served::Exit(fatal(out, reason, Exit::Failed).await),
                report = checked(&mut doctor) => {
                    doctor = None;
                    out.send(FromWorker::Doctor { report }).await;
                }
                recovered = recovering(&mut recovery) => {
                    recovery = None;
                    match recovered {
                        Ok(how) => {
                            tracing::info!(how, "the page takes requests again");
                            out.send(ready(driver.logged_in())).await;
                        }
                        Err(reason) => {
                            let reason = format!("the page did not come back after a request left it busy: {reason}");
                            break Served::Exit(fatal(out, reason, Exit::Failed).await);
                        }
                    }
                }
                () = tick(&mut keep_alive) => {
                    let idle = current.is_none() && recovery.is_none() && screen.is_none()
                        && recheck.is_none() && doctor.is_none() && reloading.is_none();
                    if idle {
                        tracing::debug!("keep-alive: loading the page again");
                        let before = driver.logged_in();
                        let reload = recheck_page(Arc::clone(&driver));
                        reloading = Some(Box::pin(async move { reload.await.map(|now| (before, now)) }));
                    }
                }
                checked = awaiting(&mut reloading) => {
                    reloading = None;
                    match checked {
                        Ok((before, now)) if now != before => {
                            if now == Some(false) {
                                tracing::warn!("keep-alive: the page is logged out now");
                            }
                            out.send(FromWorker::LoginChanged { logged_in: now }).await;
                        }
                        Ok(_) => {}
                        Err(reason) => tracing::warn!(%reason, "keep-alive: loading the page again failed"),
                    }
                }
                checked = awaiting(&mut recheck) => {
                    recheck = None;
                    let logged_in = match checked {
                        Ok(logged_in) => logged_in,
                        Err(reason) => {
                            tracing::warn!(%reason, "after the login view, the page's login could not be checked");
                            driver.logged_in()
                        }
                    };
                    tracing::info!(?logged_in, "login view closed: the page checked again");
                    out.send(ready(logged_in)).await;
                }
                ended = finished(&mut current) => {
                    let done = current.take().expect("a generation was running");
                    let generated = match ended {
                        Ended::Joined(joined) => joined.unwrap_or_else(|e| Generated {
                            outcome: Err(failure(FailureKind::Internal, format!("the generation task failed: {e}"))),
                            settled: false,
                        }),
                        Ended::StopDue => {
                            done.task.abort();
                            tracing::warn!(
                                request = done.id,
                                "the generation did not end within {STOP_DEADLINE:?} of its stop (a \
                                 page busy with its stream holds the stop up); it ends as stopped"
                            );
                            Generated { outcome: Ok(FinishReason::Stopped), settled: false }
                        }
                    };
                    // Said before the end, so that the supervisor gives the lane nothing
                    // new until it is ready again.
                    if !generated.settled {
                        tracing::warn!(request = done.id, "the page is busy after its request: recovering it before the next");
                        out.send(FromWorker::Recovering).await;
                    }
                    if report(done, generated.outcome, out).await == Some(FailureKind::BrowserUnresponsive) {
                        if let Some(reason) = unresponsive(browser.as_ref(), spec).await {
                            break Served::Exit(fatal(out, reason, Exit::Failed).await);
                        }
                    }
                    if !generated.settled {
                        recovery = Some(Box::pin(recover(Arc::clone(&driver))));
                    }
                }
                msg = inbound.next() => match msg {
                    None => {
                        tracing::info!("the supervisor closed the connection");
                        break Served::Exit(Exit::Clean);
                    }
                    Some(Err(e)) => {
                        tracing::error!("bad message from the supervisor: {e}");
                        break Served::Exit(Exit::Failed);
                    }
                    Some(Ok(ToWorker::Generate(g))) if screen.is_some() || recheck.is_some() => {
                        let failure = failure(FailureKind::Internal, "the lane is in the panel's login view");
                        out.send(FromWorker::Failed { id: g.id, failure }).await;
                    }
                    Some(Ok(ToWorker::Generate(g))) => match (&current, &recovery) {
                        // A keep-alive reload gives way to the request (which waits for its
                        // page's elements as after any load).
                        (None, None) if reloading.take().is_some() => {
                            tracing::debug!("keep-alive: a request came; the reload gives way");
                            current = Some(start(&driver, g, spec, out));
                        }
                        (Some(running), _) => {
                            let message = format!("request {} is still generating", running.id);
                            let failure = failure(FailureKind::Internal, message);
                            out.send(FromWorker::Failed { id: g.id, failure }).await;
                        }
                        (None, Some(_)) => {
                            let failure = failure(FailureKind::Internal, "the lane is recovering its page");
                            out.send(FromWorker::Failed { id: g.id, failure }).await;
                        }
                        (None, None) => current = Some(start(&driver, g, spec, out)),
                    },
                    Some(Ok(ToWorker::Stop { id })) => match &mut current {
                        Some(running) if running.id == id => {
                            tracing::info!(request = id, "stop");
                            running.stop.cancel();
                            running.stop_by.get_or_insert(Instant::now() + STOP_DEADLINE);
                        }
                        _ => tracing::debug!(request = id, "stop for a request that is not running"),
                    },
                    Some(Ok(ToWorker::Shutdown)) => {
                        tracing::info!("shutdown");
                        break Served::Exit(Exit::Clean);
                    }
                    // The supervisor sleeps only idle lanes; a generation still running
                    // (its end not yet read there) keeps the lane awake.
                    Some(Ok(ToWorker::Sleep)) => match (&current, &recovery) {
                        (Some(running), _) => tracing::warn!(id = running.id, "told to sleep while generating; staying awake"),
                        (None, Some(_)) => tracing::warn!("told to sleep while recovering the page; staying awake"),
                        (None, None) => break Served::Asleep,
                    },
                    // Awake already (a Sleep that came while generating): say so.
                    Some(Ok(ToWorker::Wake)) => {
                        out.send(ready(driver.logged_in())).await;
                    }
                    Some(Ok(ToWorker::Screen(ScreenCmd::Open { max_width, max_height }))) => {
                        match open_screen(&*driver, screen.is_some(), max_width, max_height, out).await {
                            Ok(opened) => screen = Some(opened),
                            Err(message) => {
                                tracing::warn!(%message, "the login view did not open");
                                out.send(FromWorker::Screen(ScreenEvent::Refused { message })).await;
                            }
                        }
                    }
                    Some(Ok(ToWorker::Screen(ScreenCmd::Close))) => {
                        if let Some(open) = screen.take() {
                            open.close().await;
                        }
                        if recheck.is_none() {
                            reloading = None;
                            recheck = Some(Box::pin(recheck_page(Arc::clone(&driver))));
                        }
                    }
                    Some(Ok(ToWorker::Screen(cmd))) => match &screen {
                        Some(open) => open.send(cmd).await,
                        None => tracing::debug!("input for a login view that is not open, ignored"),
                    },
                    Some(Ok(ToWorker::Configure(_))) => tracing::warn!("a second Configure, ignored"),
                    Some(Ok(ToWorker::Doctor { dir, type_check })) => match (&doctor, browser.as_ref()) {
                        (Some(_), _) => {
                            let report = Err("a doctor check of this lane is already running".into());
                            out.send(FromWorker::Doctor { report }).await;
                        }
                        (None, None) => {
                            let report = Err(format!("the {} lane has no page to check", spec.provider));
                            out.send(FromWorker::Doctor { report }).await;
                        }
                        (None, Some(browser)) => {
                            tracing::info!("doctor: checking the page in a second tab");
                            doctor = Some(Box::pin(crate::doctor::examine(browser, spec, dir, type_check)));
                        }
                    },
                },
            }
        }
    };
    if let Some(running) = current.take() {
        running.stop.cancel();
        running.task.abort();
        let _ = running.task.await;
    }
    drop(doctor);
    drop(recovery);
    drop(screen);
    drop(recheck);
    drop(reloading);
    // The driver (its tab) goes before the browser, so closing is not taken for a crash.
    drop(driver);
    if let Some(browser) = browser.as_mut() {
        browser.close().await;
    }
    served
}

type DoctorReply = Result<PageReport, String>;

/// The page's login after a login view: what it shows now, or why it could not tell.
type Recheck = Result<Option<bool>, String>;

/// A keep-alive reload: what the page showed before and shows now, or why it failed.
type KeepAlive = Result<(Option<bool>, Option<bool>), String>;

/// Loading the page again (after a login view, or to keep a session alive) and waiting
/// for its state: the page
/// load's deadline and the element wait's, with room to spare.
const RECHECK_DEADLINE: Duration = Duration::from_secs(60);

/// The future's output once it is ready; never without one.
async fn awaiting<T>(future: &mut Option<Pin<Box<dyn Future<Output = T> + Send>>>) -> T {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// [`Driver::recheck`] under [`RECHECK_DEADLINE`].
async fn recheck_page<D: Driver>(driver: Arc<D>) -> Recheck {
    tokio::time::timeout(RECHECK_DEADLINE, driver.recheck())
        .await
        .unwrap_or_else(|_| Err(format!("not done within {} s", RECHECK_DEADLINE.as_secs())))
}

/// The keep-alive timer's next tick; never without one.
async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(timer) => drop(timer.tick().await),
        None => std::future::pending().await,
    }
}

/// Opens the panel's login view of the driver's tab, or says why it cannot.
async fn open_screen<D: Driver>(
    driver: &D,
    already: bool,
    max_width: u32,
    max_height: u32,
    out: &Outbox,
) -> Result<Screencast, String> {
    if already {
        return Err("a login view of this lane is already open".into());
    }
    let Some(tab) = driver.tab() else {
        return Err("this lane has no page to show (it runs no browser)".into());
    };
    tracing::info!(max_width, max_height, "login view open");
    Screencast::open(tab, tab.url(), max_width, max_height, out.clone())
        .await
        .map_err(|e| format!("the page's screencast did not start: {e}"))
}

async fn checked(
    doctor: &mut Option<Pin<Box<dyn Future<Output = DoctorReply> + '_>>>,
) -> DoctorReply {
    match doctor {
        Some(check) => check.await,
        None => std::future::pending().await,
    }
}

fn start<D: Driver>(driver: &Arc<D>, g: Generate, spec: &LaneSpec, out: &Outbox) -> Current {
    let thinking = match g.thinking {
        Thinking::On => true,
        Thinking::Off => false,
        Thinking::Auto => spec.thinking_default,
    };
    let job = Job {
        prompt: flatten(&g.messages),
        thinking,
        controls: g.controls,
        attachments: g.attachments.clone(),
    };
    tracing::debug!(
        request = g.id,
        thinking,
        chars = job.prompt.len(),
        "generate"
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let driver = Arc::clone(driver);
        let deltas = Deltas::new(g.id, out.clone());
        let stop = stop.clone();
        async move {
            let outcome = driver.generate(job, deltas, stop).await;
            let settled = match &outcome {
                Ok(FinishReason::Completed) => true,
                // The page did not answer a call in time: it is busy for sure.
                Err(f) if f.kind == FailureKind::BrowserUnresponsive => false,
                // A stop or a failure may have left the page busy.
                _ => driver.settled().await,
            };
            Generated { outcome, settled }
        }
        .instrument(tracing::info_span!("request", id = g.id))
    });
    Current {
        id: g.id,
        stop,
        task,
        started: Instant::now(),
        stop_by: None,
    }
}

/// Sends how a generation ended; returns the failure's kind if it failed.
async fn report(done: Current, outcome: Outcome, out: &Outbox) -> Option<FailureKind> {
    let id = done.id;
    let ms = done.started.elapsed().as_millis() as u64;
    match outcome {
        Ok(reason) => {
            tracing::debug!(request = id, ms, ?reason, "finished");
            out.send(FromWorker::Finished { id, reason }).await;
            None
        }
        Err(failure) => {
            let kind = failure.kind;
            tracing::warn!(request = id, ms, ?kind, error = %failure.message, "failed");
            out.send(FromWorker::Failed { id, failure }).await;
            Some(kind)
        }
    }
}

/// After a CDP call timed out: the reason the lane cannot go on, or `None` when the
/// browser still answers (only its tab was busy, and the next request may find it back).
async fn unresponsive(browser: Option<&Browser>, spec: &LaneSpec) -> Option<String> {
    let browser = browser?;
    let timeout = Duration::from_millis(spec.cdp_timeout_ms);
    if browser.answers(timeout).await {
        tracing::warn!("the tab did not answer in time, but the browser does; the lane goes on");
        return None;
    }
    Some(format!(
        "the browser stopped answering (no answer to a CDP call within {} ms)",
        spec.cdp_timeout_ms
    ))
}

/// How bringing a busy page back ended: the step that did it, or why none did.
type Recovery = Result<&'static str, String>;

/// [`Driver::recover`] under [`RECOVERY_DEADLINE`].
async fn recover<D: Driver>(driver: Arc<D>) -> Recovery {
    tokio::time::timeout(RECOVERY_DEADLINE, driver.recover())
        .await
        .unwrap_or_else(|_| Err(format!("not back within {} s", RECOVERY_DEADLINE.as_secs())))
}

async fn recovering(
    recovery: &mut Option<Pin<Box<dyn Future<Output = Recovery> + Send>>>,
) -> Recovery {
    match recovery {
        Some(recovery) => recovery.await,
        None => std::future::pending().await,
    }
}

async fn died(death: &mut Option<Death>) -> String {
    match death {
        Some(death) => death.wait().await,
        None => std::future::pending().await,
    }
}

/// Resolves, with the reason, once the browser has failed to answer a browser-level
/// call within `heartbeat_timeout_ms`; asks every `heartbeat_ms`, one question at a
/// time. A frozen browser (stopped, deadlocked) neither dies nor answers: without this
/// its request would wait for its idle deadline, and only then learn that the stop
/// cannot reach the page. The supervisor holds the worker to the same deadline.
async fn hung(browser: Option<&Browser>, spec: &LaneSpec) -> String {
    let Some(browser) = browser else {
        return std::future::pending().await;
    };
    let timeout = Duration::from_millis(spec.heartbeat_timeout_ms);
    let mut every = tokio::time::interval(Duration::from_millis(spec.heartbeat_ms.max(1)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if !browser.answers(timeout).await {
            return format!(
                "the browser is hung: it did not answer Browser.getVersion within {} ms \
                 (heartbeat_timeout_ms)",
                spec.heartbeat_timeout_ms
            );
        }
    }
}

/// How the generation in progress ended.
enum Ended {
    /// Its task returned (or failed).
    Joined(Result<Generated, JoinError>),
    /// It was stopped and its [`STOP_DEADLINE`] passed first.
    StopDue,
}

async fn finished(current: &mut Option<Current>) -> Ended {
    let Some(running) = current else {
        return std::future::pending().await;
    };
    let stop_by = running.stop_by;
    let due = async {
        match stop_by {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        joined = &mut running.task => Ended::Joined(joined),
        () = due => Ended::StopDue,
    }
}
