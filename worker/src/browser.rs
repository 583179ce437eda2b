//! The lane's Chromium: finding the executable, launching it on the lane's profile,
//! watching for its death, closing it, and the deadline every CDP call runs under.
//!
//! chromiumoxide's handler yields one error when the browser dies and then hangs, and
//! so does every CDP call in flight (observed with chromiumoxide 0.9.1). So the
//! browser's death is watched here, from the handler's first error *and* from the
//! process itself (a pidfd), and the handler is dropped at once, which makes the calls
//! in flight fail instead of hang.
//!
//! The other way round, Chromium must never outlive its worker, even one killed with
//! SIGKILL. chromiumoxide spawns the browser itself, so the worker has it spawn this very
//! binary as a *launcher* ([`run_as_launcher`]), which asks the kernel for SIGKILL when
//! the worker dies (`PR_SET_PDEATHSIG`) and then execs Chromium in its place.

use std::future::Future;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::browser::BrowserConfigBuilder;
use chromiumoxide::cdp::browser_protocol::browser::CloseParams;
use chromiumoxide::error::CdpError as RawCdpError;
use chromiumoxide::{BrowserConfig, Handler};
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use prq_protocol::worker::{BrowserProfile, BrowserRelease, LaneSpec, PresenceSpec};

use crate::display::VirtualDisplay;
use crate::presence::{Presence, WINDOW};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::devtools;

/// From spawning Chromium to its DevTools connection being up.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);

/// How long Chromium gets to shut down cleanly (and write the profile's cookies out)
/// before it is killed. Within the supervisor's 3 s for a worker to exit.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The part of the close grace that asking over DevTools may take; the rest is for the
/// browser to exit.
const CLOSE_ASK: Duration = Duration::from_millis(500);

/// When the DevTools connection breaks, the process is usually dying: wait this long for
/// its exit so that the reason can name the exit status.
const EXIT_GRACE: Duration = Duration::from_millis(200);

/// In the launcher's environment: the browser to exec, and the worker it belongs to.
const LAUNCH_BROWSER_ENV: &str = "PRQ_WORKER_LAUNCH_BROWSER";
const LAUNCH_PARENT_ENV: &str = "PRQ_WORKER_LAUNCH_PARENT";

/// Where a browser is looked for when neither the lane nor `PRQ_BROWSER` names one.
const CANDIDATES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("browser executable {path} (from {source_name}) {problem}")]
    BadExecutable {
        path: PathBuf,
        source_name: &'static str,
        problem: &'static str,
    },
    #[error(
        "no Chromium found: the lane names no browser, PRQ_BROWSER is not set, and none of \
         {} is on PATH (on Debian: `apt install chromium`)",
        CANDIDATES.join(", ")
    )]
    NotFound,
    /// The browser the lane's `browser_profile` runs cannot be found.
    #[error("{0}")]
    Unavailable(String),
    #[error("Chromium ({path}) failed to start: {message}")]
    Failed { path: PathBuf, message: String },
    #[error("Chromium ({path}) was not ready within {} s", LAUNCH_TIMEOUT.as_secs())]
    TimedOut { path: PathBuf },
    #[error("{0}")]
    Proxy(String),
}

/// A CDP call that did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum CdpError {
    #[error("the browser did not answer {method} within {} ms", timeout.as_millis())]
    Timeout { method: String, timeout: Duration },
    #[error("{method} failed: {source}")]
    Failed {
        method: String,
        #[source]
        source: RawCdpError,
    },
}

/// Runs one CDP call under a deadline of our own: chromiumoxide's request timeout does
/// not fire once the browser is gone.
pub async fn with_deadline<T>(
    timeout: Duration,
    method: &str,
    call: impl Future<Output = Result<T, RawCdpError>>,
) -> Result<T, CdpError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(CdpError::Failed {
            method: method.to_owned(),
            source,
        }),
        Err(_) => Err(CdpError::Timeout {
            method: method.to_owned(),
            timeout,
        }),
    }
}

/// A running Chromium and its DevTools connection.
pub struct Browser {
    /// Shared with the task that answers the proxy's password challenges, if any.
    inner: Arc<chromiumoxide::Browser>,
    pid: u32,
    watch: JoinHandle<()>,
    /// The DevTools relay between chromiumoxide and the browser's pipe (none in unit
    /// tests, which connect over the port: see [`through_launcher`]); it ends with the
    /// browser.
    _relay: Option<devtools::Serving>,
    /// Raised by [`close_within`](Browser::close_within): the exit that follows is no
    /// death.
    closing: Arc<AtomicBool>,
    presence: Presence,
    proxy_auth: Option<JoinHandle<()>>,
    /// A headed browser's virtual display; ended after the browser.
    display: Option<VirtualDisplay>,
    /// Which release runs, as its profile's note has it ([`crate::release`]).
    release: BrowserRelease,
}

/// The news of a browser's death: apart from [`Browser`], so that a lane can wait for
/// it while it uses the browser.
pub struct Death(oneshot::Receiver<String>);

impl Death {
    /// Resolves, with the cause, when the browser has died. Cancel-safe; once it has
    /// resolved the lane is over, and it must not be awaited again.
    pub async fn wait(&mut self) -> String {
        (&mut self.0)
            .await
            .unwrap_or_else(|_| "the browser's death watch ended without a word".into())
    }
}

impl Browser {
    /// Launches the lane's browser: headless, on the lane's own profile directory.
    pub async fn launch(spec: &LaneSpec) -> Result<(Self, Death), LaunchError> {
        let cdp_timeout = Duration::from_millis(spec.cdp_timeout_ms);
        let path = crate::footprint::executable(spec.browser_profile, spec.browser.as_deref())
            .map_err(LaunchError::Unavailable)?;
        let footprint = spec.browser_profile;
        Self::launch_on(
            Some(&path),
            &spec.profile_dir,
            cdp_timeout,
            &spec.presence,
            footprint,
        )
        .await
    }

    /// Launches a headless browser (`browser`, else one found as [`find_executable`]
    /// does) on the profile directory `profile`, presenting itself as an ordinary
    /// desktop browser with the settings of `presence` ([`Presence`]) and the memory
    /// switches of `footprint`.
    pub async fn launch_on(
        browser: Option<&Path>,
        profile: &Path,
        cdp_timeout: Duration,
        presence: &PresenceSpec,
        footprint: BrowserProfile,
    ) -> Result<(Self, Death), LaunchError> {
        let path = find_executable(browser)?;
        let failed = |message: String| LaunchError::Failed {
            path: path.clone(),
            message,
        };
        let presence = Presence::for_lane(presence, &path).await.map_err(failed)?;
        presence.check_proxy().await.map_err(LaunchError::Proxy)?;
        std::fs::create_dir_all(profile).map_err(|e| {
            failed(format!(
                "cannot create the profile directory {}: {e}",
                profile.display()
            ))
        })?;
        let display = match presence.headless {
            true => None,
            false => {
                let (width, height) = WINDOW;
                Some(
                    VirtualDisplay::start(profile, width, height)
                        .await
                        .map_err(failed)?,
                )
            }
        };
        let (config, devtools) =
            through_launcher(BrowserConfig::builder(), &path).map_err(failed)?;
        let config = config
            .user_data_dir(profile)
            .launch_timeout(LAUNCH_TIMEOUT)
            // Our own deadlines (`with_deadline`) are the ones in force: a call awaiting
            // an in-page wait gets `cdp_timeout` plus the wait. chromiumoxide's timeout
            // (checked on a timer of its own period) must not cut those short: at
            // `cdp_timeout` it raced the page's own timer and, under load, turned
            // "selector missing" into an internal error.
            .request_timeout(cdp_timeout * 4);
        // The memory switches after the presence ones, which start from a config with
        // chromiumoxide's defaults off.
        let mut config = crate::footprint::configure(presence.configure(config), footprint);
        for (key, value) in display.iter().flat_map(VirtualDisplay::env) {
            config = config.env(key, value);
        }
        // Chromium refuses to run as root with its sandbox on.
        if nix::unistd::geteuid().is_root() {
            config = config.no_sandbox();
        }
        let config = config.build().map_err(failed)?;
        // The relay serves chromiumoxide's connection while it launches (see `devtools`).
        let stderr = devtools.as_ref().map(|(relay, _)| relay.stderr_tail());
        let relay = devtools.map(|(relay, ends)| (relay.spawn(LAUNCH_TIMEOUT), ends));
        // chromiumoxide's launch timeout covers reading the DevTools URL, not connecting
        // to it; this one covers both. Dropping the launch kills the child.
        let launch_by = tokio::time::Instant::now() + LAUNCH_TIMEOUT;
        let launched =
            tokio::time::timeout_at(launch_by, chromiumoxide::Browser::launch(config)).await;
        // The launcher has its copies of the browser's pipe ends; the worker's go, so that
        // the pipe closes when the browser does.
        let relay = relay.map(|(relay, ends)| {
            drop(ends);
            relay
        });
        let (mut inner, handler) = match launched {
            Ok(Ok(launched)) => launched,
            Ok(Err(e)) => return Err(failed(describe_launch_error(e))),
            Err(_) => return Err(LaunchError::TimedOut { path }),
        };
        let pid = inner
            .get_mut_child()
            .and_then(|child| child.as_mut_inner().id())
            .ok_or_else(|| failed("it exited right after starting".into()))?;
        let exit = pidfd(pid).map_err(|e| failed(format!("cannot watch process {pid}: {e}")))?;
        let (report, died) = oneshot::channel();
        let closing = Arc::new(AtomicBool::new(false));
        let watch = tokio::spawn(watch_death(
            handler,
            exit,
            report,
            Arc::clone(&closing),
            stderr,
        ));
        let mut death = Death(died);
        // Over the pipe, chromiumoxide is connected before the browser has started, so
        // the launch is over only when the browser answers.
        let answered = with_deadline(
            launch_by.saturating_duration_since(tokio::time::Instant::now()),
            "Browser.getVersion",
            inner.version(),
        );
        let ready = tokio::select! {
            answered = answered => match answered {
                Ok(v) => Ok(crate::release::note(profile, crate::release::version_of_product(&v.product))),
                Err(CdpError::Timeout { .. }) => Err(LaunchError::TimedOut { path: path.clone() }),
                Err(e) => Err(failed(e.to_string())),
            },
            reason = death.wait() => Err(failed(reason)),
        };
        let release = match ready {
            Ok(release) => release,
            Err(e) => {
                watch.abort();
                return Err(e);
            }
        };
        tracing::info!(pid, path = %path.display(), version = %release.version, "browser launched");
        let inner = Arc::new(inner);
        let proxy_auth = match presence.answer_proxy(&inner, cdp_timeout).await {
            Ok(task) => task,
            Err(e) => {
                watch.abort();
                return Err(failed(format!("cannot answer the proxy's challenges: {e}")));
            }
        };
        let browser = Self {
            inner,
            pid,
            watch,
            _relay: relay,
            closing,
            presence,
            proxy_auth,
            display,
            release,
        };
        Ok((browser, death))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn release(&self) -> &BrowserRelease {
        &self.release
    }

    pub fn inner(&self) -> &chromiumoxide::Browser {
        &self.inner
    }

    /// How the browser presents itself; its tabs apply the rest ([`Presence::prepare`]).
    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    /// Whether the browser process itself answers a CDP call within `timeout`. Page
    /// calls are served by the tab's renderer, which a busy page can hold up for
    /// seconds; this one is served by the browser.
    pub async fn answers(&self, timeout: Duration) -> bool {
        with_deadline(timeout, "Browser.getVersion", self.inner.version())
            .await
            .is_ok()
    }

    /// Ends the browser: asks it to close, gives it [`CLOSE_GRACE`] to exit cleanly, then
    /// SIGKILL; the process is reaped either way.
    pub async fn close(&mut self) {
        self.close_within(CLOSE_GRACE).await;
    }

    /// [`close`](Browser::close) with a grace period of `grace`; returns whether the
    /// browser exited by itself (and so wrote its profile out).
    ///
    /// `Browser.close` shuts the browser down the way closing its last window does,
    /// which writes the profile's cookies out; after a SIGTERM they were often missing.
    /// The browser's helper processes outlive it by a moment, and one of them (the
    /// network service) writes the cookies: the close waits, within the same grace,
    /// until they are gone too, so that a browser started next on the profile finds the
    /// cookies written.
    pub async fn close_within(&mut self, grace: Duration) -> bool {
        self.closing.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + grace;
        let helpers: Vec<_> = descendants(self.pid)
            .into_iter()
            .filter_map(|pid| pidfd(pid).ok())
            .collect();
        // The browser may go before it answers: how the call ends says nothing.
        let ask = self.inner.execute(CloseParams::default());
        let _ = tokio::time::timeout(CLOSE_ASK.min(grace), ask).await;
        // Asked: the connection is of no more use, and its end is no news.
        self.watch.abort();
        let exited = tokio::time::timeout_at(deadline, self.reap()).await;
        match exited {
            Ok(_) => {
                let gone = futures::future::join_all(helpers.iter().map(|h| h.readable()));
                if tokio::time::timeout_at(deadline, gone).await.is_err() {
                    tracing::warn!(pid = self.pid, "the browser's helper processes outlived it");
                }
                tracing::info!(pid = self.pid, "browser closed");
                true
            }
            Err(_) => {
                tracing::warn!(
                    pid = self.pid,
                    "the browser did not close in time; killing it"
                );
                let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
                self.reap().await;
                false
            }
        }
    }

    /// Waits for the browser process to exit, and reaps it.
    async fn reap(&mut self) {
        // The proxy's answering task holds the other reference to the connection.
        if let Some(task) = self.proxy_auth.take() {
            task.abort();
            let _ = task.await;
        }
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => drop(inner.wait().await),
            None => tracing::warn!(pid = self.pid, "the browser is still shared; not reaped"),
        }
        if let Some(display) = &mut self.display {
            display.stop().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromiumoxide kills the child on drop; the handler must go with it.
        self.watch.abort();
        if let Some(task) = &self.proxy_auth {
            task.abort();
        }
    }
}

/// Has chromiumoxide start `browser` through this binary as its launcher, with the
/// DevTools pipe (see `devtools`): the worker's relay and the browser's ends of the pipe.
fn through_launcher(
    config: BrowserConfigBuilder,
    browser: &Path,
) -> Result<
    (
        BrowserConfigBuilder,
        Option<(devtools::Relay, devtools::BrowserEnds)>,
    ),
    String,
> {
    // Unit tests run inside the test harness's binary, which is no launcher: they
    // connect over the port; the integration tests cover the launcher and the pipe.
    if cfg!(test) {
        return Ok((config.chrome_executable(browser), None));
    }
    let launcher =
        std::env::current_exe().map_err(|e| format!("cannot find the worker's own binary: {e}"))?;
    let browser = browser.to_str().ok_or("the browser's path is not UTF-8")?;
    let (relay, ends) =
        devtools::Relay::open().map_err(|e| format!("cannot set up the DevTools pipe: {e}"))?;
    let pipe_env = ends
        .launcher_env()
        .map_err(|e| format!("cannot set up the DevTools pipe: {e}"))?;
    let config = config
        .chrome_executable(launcher)
        .env(LAUNCH_BROWSER_ENV, browser)
        .env(LAUNCH_PARENT_ENV, std::process::id().to_string())
        .envs(pipe_env);
    Ok((config, Some((relay, ends))))
}

/// When this process is the browser's launcher (see the module doc): becomes the
/// browser, bound to die with the worker. Returns only if that fails, with the exit code;
/// `None` in a worker. Must run before any thread is started: the death signal is tied
/// to the thread that spawned the launcher, which is why the worker's runtime has one
/// thread (its main thread) and launches from it.
pub fn run_as_launcher() -> Option<std::process::ExitCode> {
    use std::os::unix::process::CommandExt;

    let browser = std::env::var_os(LAUNCH_BROWSER_ENV)?;
    let worker = std::env::var(LAUNCH_PARENT_ENV).ok();
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        eprintln!("prq-worker: cannot bind the browser to its worker: {e}");
        return Some(std::process::ExitCode::from(127));
    }
    // The worker may have died before the signal was asked for.
    if worker != Some(nix::unistd::getppid().to_string()) {
        return Some(std::process::ExitCode::from(127));
    }
    let args = match devtools::into_browser_ends(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("prq-worker: {e}");
            return Some(std::process::ExitCode::from(127));
        }
    };
    let error = std::process::Command::new(&browser)
        .args(args)
        .env_remove(LAUNCH_BROWSER_ENV)
        .env_remove(LAUNCH_PARENT_ENV)
        .exec();
    eprintln!(
        "prq-worker: cannot start the browser {}: {error}",
        Path::new(&browser).display()
    );
    Some(std::process::ExitCode::from(127))
}

/// Waits for the first sign of death, reports it, then drops the handler so that every
/// CDP call still in flight fails at once.
async fn watch_death(
    mut handler: Handler,
    exit: AsyncFd<OwnedFd>,
    report: oneshot::Sender<String>,
    closing: Arc<AtomicBool>,
    stderr: Option<devtools::StderrTail>,
) {
    let stderr = stderr.as_ref();
    let reason = tokio::select! {
        _ = exit.readable() => exit_reason(&exit, stderr),
        lost = first_failure(&mut handler) => {
            match tokio::time::timeout(EXIT_GRACE, exit.readable()).await {
                Ok(_) => exit_reason(&exit, stderr),
                Err(_) => lost,
            }
        }
    };
    if closing.load(Ordering::Relaxed) {
        tracing::debug!(%reason, "the browser is closing as asked");
    } else {
        tracing::error!(%reason, "browser died");
    }
    // Report before dropping the handler: the lane must learn of the death before it
    // sees the failed calls that the drop causes.
    let _ = report.send(reason);
    drop(handler);
}

async fn first_failure(handler: &mut Handler) -> String {
    loop {
        match handler.next().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return format!("lost the DevTools connection to the browser: {e}"),
            None => return "the browser closed its DevTools connection".into(),
        }
    }
}

/// Describes how the process ended, leaving it unreaped (`WNOWAIT`): the child handle
/// inside chromiumoxide still owns the reaping.
/// A browser that exits by itself usually says why on stderr: its last lines are added.
fn exit_reason(exit: &AsyncFd<OwnedFd>, stderr: Option<&devtools::StderrTail>) -> String {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    match waitid(Id::PIDFd(exit.get_ref().as_fd()), flags) {
        Ok(WaitStatus::Exited(_, code)) => {
            let said = stderr.map(|tail| tail.text()).unwrap_or_default();
            match said.is_empty() {
                true => format!("browser process exited (code {code})"),
                false => format!("browser process exited (code {code}); it said: {said}"),
            }
        }
        Ok(WaitStatus::Signaled(_, signal, _)) => {
            format!(
                "browser process exited (signal {}, {signal})",
                signal as i32
            )
        }
        _ => "browser process exited".into(),
    }
}

/// The processes descended from `pid` (its children, theirs, ...), from `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let Ok(processes) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = processes
        .filter_map(|p| {
            let stat = p.ok()?.stat().ok()?;
            Some((
                u32::try_from(stat.pid).ok()?,
                u32::try_from(stat.ppid).ok()?,
            ))
        })
        .collect();
    let mut family = vec![pid];
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        family.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    family.remove(0);
    family
}

/// A pidfd for `pid`, readable once the process has exited.
fn pidfd(pid: u32) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nothing else; the
    // `OwnedFd` keeps it open for as long as the `AsyncFd` lives.
    unsafe {
        let fd = OwnedFd::from_raw_fd(fd as i32);
        Ok(AsyncFd::register_with_interest(fd, Interest::READABLE)?)
    }
}

/// The lane's browser, else `PRQ_BROWSER`, else the first of [`CANDIDATES`] on PATH.
pub fn find_executable(configured: Option<&Path>) -> Result<PathBuf, LaunchError> {
    let env = std::env::var_os("PRQ_BROWSER").filter(|v| !v.is_empty());
    let (path, source_name) = match (configured, env) {
        (Some(path), _) => (path.to_owned(), "the lane's `browser` setting"),
        (None, Some(env)) => (PathBuf::from(env), "PRQ_BROWSER"),
        (None, None) => {
            return CANDIDATES
                .iter()
                .find_map(|name| on_path(Path::new(name)))
                .ok_or(LaunchError::NotFound)
        }
    };
    let problem = if path.components().count() == 1 {
        match on_path(&path) {
            Some(found) => return Ok(found),
            None => "is not on PATH",
        }
    } else {
        match executable(&path) {
            Ok(()) => return Ok(path),
            Err(problem) => problem,
        }
    };
    Err(LaunchError::BadExecutable {
        path,
        source_name,
        problem,
    })
}

fn on_path(name: &Path) -> Option<PathBuf> {
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|dir| dir.join(name))
        .find(|candidate| executable(candidate).is_ok())
}

fn executable(path: &Path) -> Result<(), &'static str> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(_) => Err("does not exist"),
        Ok(meta) if !meta.is_file() => Err("is not a file"),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Err("is not executable"),
        Ok(_) => Ok(()),
    }
}

/// Chromium's own words when it fails to start: the tail of its stderr.
fn describe_launch_error(e: RawCdpError) -> String {
    let (what, stderr) = match e {
        RawCdpError::LaunchExit(status, stderr) => (format!("it exited ({status})"), stderr),
        RawCdpError::LaunchTimeout(stderr) => ("it printed no DevTools address".into(), stderr),
        RawCdpError::LaunchIo(e, stderr) => (format!("reading its output failed: {e}"), stderr),
        other => return other.to_string(),
    };
    let stderr = String::from_utf8_lossy(stderr.as_slice());
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.len() {
        0 => what,
        n => format!("{what}: {}", lines[n.saturating_sub(5)..].join(" | ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_browser_that_does_not_exist_is_named() {
        let e = find_executable(Some(Path::new("/nonexistent/chromium"))).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("/nonexistent/chromium") && text.contains("does not exist"),
            "{text}"
        );
    }

    #[test]
    fn a_bare_name_is_looked_up_on_path() {
        let sh = find_executable(Some(Path::new("sh"))).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
    }

    #[test]
    fn descendants_are_found_through_proc() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .spawn()
            .unwrap();
        let sh = child.id();
        let mut sleep = Vec::new();
        for _ in 0..200 {
            sleep = descendants(sh);
            if !sleep.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sleep.len(), 1, "sh has its sleep: {sleep:?}");
        // Grandchildren are descendants too.
        let family = descendants(std::process::id());
        assert!(
            family.contains(&sh) && family.contains(&sleep[0]),
            "{family:?}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_directory_is_not_a_browser() {
        let e = find_executable(Some(Path::new("/tmp"))).unwrap_err();
        assert!(e.to_string().contains("is not a file"), "{e}");
    }
}
