//! Lane supervision: one task per lane spawns its worker, waits for it to connect and
//! be ready, relays requests and answers, and notices its end.
//!
//! A worker's end arrives as events — the child's exit, EOF on its socket, a `Fatal`
//! message — or, for a hung worker, as a missed heartbeat deadline, after which its
//! process group is killed. The worker is a process-group leader and its Chromium
//! inherits the group, so killing the group leaves nothing of the lane behind.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::{prelude::*, Listener, Stream};
use interprocess::local_socket::traits::StreamCommon;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use prq_protocol::handshake::{self, Peer};
use prq_protocol::screen::{ScreenCmd, ScreenEvent};
use prq_protocol::worker::{
    BrowserRelease, FailureKind, FinishReason, FromWorker, Generate, LaneSpec, PageReport,
    RequestId, ToWorker, STOP_GRACE,
};
use prq_protocol::{until_hang_up, FrameCodec};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::codec::Framed;

use crate::accept::AcceptErrors;
use crate::home::Home;
use crate::relay;
use crate::runtime::{End, Failed};

/// How long a worker has to exit after `Shutdown` (or a signal) before it is killed.
pub const EXIT_GRACE: Duration = Duration::from_secs(3);

type WorkerConn = Framed<Stream, FrameCodec<FromWorker, ToWorker>>;

/// What the runtime tells a lane task.
pub enum LaneCmd {
    Run {
        generate: Generate,
        tx: relay::Sender,
    },
    Stop {
        id: RequestId,
    },
    /// Finish the current request within `grace` (then stop it), then exit.
    Shutdown {
        grace: Duration,
    },
    /// The lane is broken (e.g. it does not end a stopped request): kill it.
    Kill {
        reason: String,
    },
    /// `prq doctor`: have the worker check its page (in a second tab) and answer on `tx`.
    Doctor {
        dir: PathBuf,
        type_check: bool,
        tx: oneshot::Sender<Result<PageReport, String>>,
    },
    /// The lane is idle and sleeps: its worker closes the browser and stays.
    Sleep,
    /// A request waits for the sleeping lane: start its browser again.
    Wake,
    /// The panel's login view opens: what the worker shows goes to `viewer` (a full
    /// viewer misses frames rather than holding the lane up).
    ScreenOpen {
        max_width: u32,
        max_height: u32,
        viewer: mpsc::Sender<ScreenEvent>,
    },
    /// The open view's input, navigation or close.
    Screen(ScreenCmd),
}

/// Workers the supervisor has spawned and is waiting to hear from, by process ID.
#[derive(Default)]
pub struct Registry {
    waiting: Mutex<HashMap<u32, (String, oneshot::Sender<WorkerConn>)>>,
    /// Every worker spawned and not yet reaped.
    alive: Mutex<std::collections::HashSet<u32>>,
    /// Workers reaped in the last [`ENDED_MEMORY`], by pid, with their lane: a worker
    /// can connect and die before its connection is read, and its handshake failure
    /// should still be reported as its lane's, not as a stranger's.
    ended: Mutex<HashMap<u32, (String, Instant)>>,
    /// Pinged whenever a worker is expected, for a connection that beat its
    /// registration by a few microseconds.
    expected: tokio::sync::Notify,
}

/// How long a connection from an unknown process waits for it to be registered.
const REGISTRATION_GRACE: Duration = Duration::from_secs(1);

/// How long a reaped worker's pid is still attributed to its lane.
const ENDED_MEMORY: Duration = Duration::from_secs(30);

impl Registry {
    fn expect(&self, pid: u32, lane_id: &str) -> oneshot::Receiver<WorkerConn> {
        self.alive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid, (lane_id.to_string(), tx));
        self.expected.notify_waiters();
        rx
    }

    fn lane_of(&self, pid: u32) -> Option<String> {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((lane, _)) = waiting.get(&pid) {
            return Some(lane.clone());
        }
        let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        ended.get(&pid).map(|(lane, _)| lane.clone())
    }

    /// The lane a spawned worker with this pid belongs to, waiting briefly for the
    /// spawn to be registered.
    async fn wait_for(&self, pid: u32) -> Option<String> {
        let deadline = Instant::now() + REGISTRATION_GRACE;
        loop {
            let notified = self.expected.notified();
            if let Some(lane) = self.lane_of(pid) {
                return Some(lane);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    fn deliver(&self, pid: u32, conn: WorkerConn) -> Result<(), String> {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        match waiting {
            Some((lane, tx)) => tx
                .send(conn)
                .map_err(|_| format!("lane {lane} stopped waiting for its worker")),
            None => Err(format!("no worker expected with pid {pid}")),
        }
    }

    fn forget(&self, pid: u32) {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        ended.retain(|_, (_, at)| now.duration_since(*at) < ENDED_MEMORY);
        if let Some((lane, _)) = waiting {
            ended.insert(pid, (lane, now));
        }
        drop(ended);
        self.alive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
    }

    /// Kills the process group of every worker still alive: the daemon's last act, so
    /// no lane outlives it even when a shutdown ran out of time.
    pub async fn kill_all(&self) {
        let alive: Vec<u32> = self
            .alive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        for &pid in &alive {
            kill_group(pid);
        }
        for pid in alive {
            until_gone(pid).await;
        }
    }
}

/// How long a killed process group gets to be gone before prq goes on regardless.
const GROUP_GONE_WITHIN: Duration = Duration::from_secs(2);

/// Waits (bounded) until no live process is left in `group`. SIGKILL is sent at once but
/// a process takes a moment to die: without this, `prq stop` could return while a
/// lane's Chromium was still running (seen as a rare failure of the crash tests).
async fn until_gone(group: u32) {
    let deadline = Instant::now() + GROUP_GONE_WITHIN;
    while group > 0
        && !crate::procinfo::group_members(group).is_empty()
        && Instant::now() < deadline
    {
        sleep(Duration::from_millis(10)).await;
    }
}

/// Kills the process group a worker leads (its Chromium is in it). A pid of 0 — a child
/// whose pid is no longer known — is skipped: `killpg(0)` would kill the daemon's own
/// group.
fn kill_group(pid: u32) {
    match i32::try_from(pid) {
        Ok(pid) if pid > 0 => {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        _ => tracing::warn!(pid, "no process group to kill"),
    }
}

/// Accepts worker connections on the lanes socket for the daemon's lifetime. Only a
/// process the supervisor spawned as a worker gets as far as the handshake (its pid,
/// from the socket's peer credentials, is checked first); a peer that then fails the
/// handshake is dropped with a log line. The daemon goes on either way.
pub async fn accept_workers(listener: Listener, registry: Arc<Registry>) {
    let mut errors = AcceptErrors::new("lanes socket");
    loop {
        let stream = errors.accept(|| listener.accept()).await;
        let registry = registry.clone();
        tokio::spawn(async move {
            let Some(pid) = stream
                .peer_creds()
                .ok()
                .and_then(|c| c.pid())
                .map(|p| p as u32)
            else {
                tracing::warn!("a lanes socket peer without credentials; dropped");
                return;
            };
            let Some(lane) = registry.wait_for(pid).await else {
                tracing::warn!(pid, "a process prq did not start as a worker connected to the lanes socket; dropped");
                return;
            };
            match handshake::accept::<_, FromWorker, ToWorker>(stream).await {
                Ok((Peer::Worker { lane_id, pid: said }, conn))
                    if lane_id == lane && said == pid =>
                {
                    if let Err(e) = registry.deliver(pid, conn) {
                        tracing::warn!("worker connection dropped: {e}");
                    }
                }
                Ok((peer, _)) => {
                    tracing::warn!(?peer, %lane, pid, "the worker's hello does not match how it was spawned; dropped")
                }
                Err(e) => tracing::warn!(%lane, pid, "worker handshake failed: {e}"),
            }
        });
    }
}

/// What a lane task tells the runtime about its lane, as it happens. `slot` and
/// `generation` say which lane and which start of the runtime it is: a report from an
/// older generation is stale and ignored. The runtime is the implementation; the lane
/// loop's tests record the reports instead.
pub trait LaneReports: Send + Sync + 'static {
    /// The worker is ready (after its start, or after waking).
    fn ready(&self, slot: usize, generation: u64, ready: Ready);
    /// The worker closed its browser (`idle_suspend_s`).
    fn asleep(&self, slot: usize, generation: u64);
    /// The worker brings back a page its last request left busy; it says `Ready` when
    /// the page answers again.
    fn recovering(&self, slot: usize, generation: u64);
    /// A keep-alive reload found the page's login changed.
    fn login_changed(&self, slot: usize, generation: u64, logged_in: Option<bool>);
    /// Request `id` streamed `chars` more bytes of text.
    fn progress(&self, id: RequestId, chars: usize);
    /// Request `id`'s client has `unread` bytes it does not read: past its budget.
    fn too_slow(&self, id: RequestId, unread: usize);
    /// The request the lane was running ended.
    fn finished(&self, slot: usize, generation: u64, id: RequestId, end: End);
    /// The chat request `id` made was deleted (`after_reply = "delete"`), or the
    /// delete failed.
    fn chat_deleted(&self, slot: usize, id: RequestId, deleted: bool);
    /// The lane task ended: shut down (`None`) or lost, and why.
    fn gone(self: Arc<Self>, slot: usize, generation: u64, crash: Option<String>);
}

/// A ready worker, as it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub worker_pid: u32,
    pub browser_pid: Option<u32>,
    pub logged_in: Option<bool>,
    pub user_agent: Option<String>,
    pub release: Option<BrowserRelease>,
}

pub struct LaneTask {
    pub runtime: Arc<dyn LaneReports>,
    pub registry: Arc<Registry>,
    pub home: Home,
    pub slot: usize,
    pub generation: u64,
    pub spec: LaneSpec,
    pub start_timeout: Duration,
    pub heartbeat_timeout: Duration,
}

/// Runs one lane until it shuts down or is lost, then reports which to the runtime.
pub async fn run(task: LaneTask, cmds: mpsc::UnboundedReceiver<LaneCmd>) {
    let lane = task.spec.lane_id.clone();
    let result = match task.spawn() {
        Ok(mut child) => {
            let pid = child.id().unwrap_or_default();
            let connected = task.registry.expect(pid, &lane);
            let result = task.drive(&mut child, connected, cmds).await;
            // Whatever happened, nothing of the lane outlives it: kill the worker's
            // whole process group (its Chromium with it) and reap the worker.
            kill_group(pid);
            let _ = child.wait().await;
            until_gone(pid).await;
            task.registry.forget(pid);
            result
        }
        Err(e) => Err(e),
    };
    if let Err(cause) = &result {
        tracing::warn!(%lane, %cause, "lane ended");
    }
    task.runtime
        .clone()
        .gone(task.slot, task.generation, result.err());
}

/// A command that reaches a lane before it is ready: a shutdown or a kill ends the
/// start (the caller then kills the worker's group); nothing else can arrive yet.
fn ended_while_starting(cmd: Option<LaneCmd>) -> Option<Result<(), String>> {
    match cmd {
        None | Some(LaneCmd::Shutdown { .. }) => Some(Ok(())),
        Some(LaneCmd::Kill { reason }) => Some(Err(reason)),
        Some(LaneCmd::Doctor { tx, .. }) => {
            let _ = tx.send(Err(
                "the lane is still starting; try again when it is ready".into(),
            ));
            None
        }
        Some(
            LaneCmd::Run { .. }
            | LaneCmd::Stop { .. }
            | LaneCmd::Sleep
            | LaneCmd::Wake
            | LaneCmd::ScreenOpen { .. }
            | LaneCmd::Screen(_),
        ) => None,
    }
}

fn describe_exit(status: std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("worker exited with code {code}"),
            (_, Some(sig)) => format!(
                "worker killed by signal {sig} ({})",
                Signal::try_from(sig).map_or("?", |s| s.as_str())
            ),
            _ => "worker exited".into(),
        },
        Err(e) => format!("worker wait failed: {e}"),
    }
}

impl LaneTask {
    /// The `prq-worker` binary: `PRQ_WORKER`, else next to this one, else on PATH.
    pub(crate) fn worker_exe() -> PathBuf {
        if let Some(p) = std::env::var_os("PRQ_WORKER") {
            return PathBuf::from(p);
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("prq-worker")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("prq-worker"))
    }

    fn spawn(&self) -> Result<Child, String> {
        let exe = Self::worker_exe();
        let (format_key, format) = crate::logs::worker_env();
        let mut child = Command::new(&exe)
            .arg("--socket")
            .arg(self.home.lanes_socket())
            .arg("--lane")
            .arg(&self.spec.lane_id)
            .env(format_key, format)
            .stdin(Stdio::null())
            // The lane's log is written by the daemon, which rotates it (crate::logs).
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the worker {}: {e}", exe.display()))?;
        crate::logs::attach_lane(
            &self.home,
            &self.spec.lane_id,
            child.stdout.take(),
            child.stderr.take(),
        )?;
        Ok(child)
    }

    async fn drive(
        &self,
        child: &mut Child,
        connected: oneshot::Receiver<WorkerConn>,
        mut cmds: mpsc::UnboundedReceiver<LaneCmd>,
    ) -> Result<(), String> {
        let lane = &self.spec.lane_id;
        let worker_pid = child.id().unwrap_or_default();
        let ready_by = Instant::now() + self.start_timeout;
        let start_timeout = self.start_timeout;

        // Until it is ready, a lane also gives way to a shutdown.
        tokio::pin!(connected);
        let mut conn = loop {
            tokio::select! {
                c = &mut connected => break c.map_err(|_| "worker registry closed".to_string())?,
                status = child.wait() => return Err(describe_exit(status)),
                _ = sleep_until(ready_by) => return Err(format!("worker did not connect within {start_timeout:?}")),
                cmd = cmds.recv() => if let Some(end) = ended_while_starting(cmd) { return end },
            }
        };
        conn.send(ToWorker::Configure(self.spec.clone()))
            .await
            .map_err(|e| format!("cannot configure the worker: {e}"))?;
        let (browser_pid, logged_in, user_agent, release) = loop {
            tokio::select! {
                msg = conn.next() => match until_hang_up(msg) {
                    Some(Ok(FromWorker::Ready { browser_pid, logged_in, user_agent, release })) => break (browser_pid, logged_in, user_agent, release),
                    Some(Ok(FromWorker::Heartbeat)) => {}
                    Some(Ok(FromWorker::Fatal { reason })) => return Err(reason),
                    Some(Ok(other)) => return Err(format!("unexpected message before ready: {other:?}")),
                    Some(Err(e)) => return Err(format!("bad frame from the worker: {e}")),
                    None => return Err(describe_exit(child.wait().await)),
                },
                status = child.wait() => {
                    let said = last_words(&mut conn, |msg| match msg {
                        FromWorker::Fatal { reason } => Err(reason),
                        _ => Ok(()),
                    });
                    return Err(said.await.unwrap_or_else(|| describe_exit(status)));
                }
                _ = sleep_until(ready_by) => return Err(format!("not ready within {start_timeout:?} (see {})", self.home.lane_log(lane).display())),
                cmd = cmds.recv() => if let Some(end) = ended_while_starting(cmd) { return end },
            }
        };
        self.runtime.ready(
            self.slot,
            self.generation,
            Ready {
                worker_pid,
                browser_pid,
                logged_in,
                user_agent,
                release,
            },
        );

        let mut current: Option<(RequestId, relay::Sender)> = None;
        // Set by Shutdown: when the current request must be stopped, then when the
        // worker must be told to exit.
        let mut shutdown_at: Option<Instant> = None;
        let mut stop_sent = false;
        // Who waits for the worker's answer to a doctor check.
        let mut doctor: Option<oneshot::Sender<Result<PageReport, String>>> = None;
        // Set by Wake: when the worker must be ready again.
        let mut wake_by: Option<Instant> = None;
        // Who watches the panel's login view of the lane, while it is open.
        let mut viewer: Option<mpsc::Sender<ScreenEvent>> = None;
        let heartbeat = sleep(self.heartbeat_timeout);
        tokio::pin!(heartbeat);

        loop {
            if shutdown_at.is_some() && current.is_none() {
                return self.exit_gracefully(conn, child).await;
            }
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(LaneCmd::Run { generate, tx }) => {
                        let id = generate.id;
                        current = Some((id, tx));
                        stop_sent = false;
                        conn.send(ToWorker::Generate(generate)).await
                            .map_err(|e| format!("cannot send to the worker: {e}"))?;
                    }
                    Some(LaneCmd::Stop { id }) => {
                        if current.as_ref().is_some_and(|(c, _)| *c == id) && !stop_sent {
                            stop_sent = true;
                            conn.send(ToWorker::Stop { id }).await
                                .map_err(|e| format!("cannot send to the worker: {e}"))?;
                        }
                    }
                    Some(LaneCmd::Shutdown { grace }) => {
                        shutdown_at.get_or_insert(Instant::now() + grace);
                    }
                    Some(LaneCmd::Kill { reason }) => return Err(reason),
                    Some(LaneCmd::Doctor { dir, type_check, tx }) => {
                        if doctor.as_ref().is_some_and(|waiting| !waiting.is_closed()) {
                            let _ = tx.send(Err("a doctor check of this lane is already running".into()));
                        } else {
                            doctor = Some(tx);
                            conn.send(ToWorker::Doctor { dir, type_check }).await
                                .map_err(|e| format!("cannot send to the worker: {e}"))?;
                        }
                    }
                    Some(LaneCmd::Sleep) => {
                        conn.send(ToWorker::Sleep).await
                            .map_err(|e| format!("cannot send to the worker: {e}"))?;
                    }
                    Some(LaneCmd::Wake) => {
                        wake_by = Some(Instant::now() + start_timeout);
                        conn.send(ToWorker::Wake).await
                            .map_err(|e| format!("cannot send to the worker: {e}"))?;
                    }
                    Some(LaneCmd::ScreenOpen { max_width, max_height, viewer: to }) => {
                        viewer = Some(to);
                        conn.send(ToWorker::Screen(ScreenCmd::Open { max_width, max_height })).await
                            .map_err(|e| format!("cannot send to the worker: {e}"))?;
                    }
                    Some(LaneCmd::Screen(cmd)) => {
                        if cmd == ScreenCmd::Close {
                            viewer = None;
                        }
                        conn.send(ToWorker::Screen(cmd)).await
                            .map_err(|e| format!("cannot send to the worker: {e}"))?;
                    }
                    None => shutdown_at = Some(Instant::now()),
                },
                msg = conn.next() => {
                    heartbeat.as_mut().reset(Instant::now() + self.heartbeat_timeout);
                    match until_hang_up(msg) {
                        Some(Ok(FromWorker::Doctor { report })) => {
                            if let Some(tx) = doctor.take() {
                                let _ = tx.send(report);
                            }
                        }
                        // Woken: the browser is up again.
                        Some(Ok(FromWorker::Ready { browser_pid, logged_in, user_agent, release })) => {
                            wake_by = None;
                            let ready = Ready { worker_pid, browser_pid, logged_in, user_agent, release };
                            self.runtime.ready(self.slot, self.generation, ready);
                        }
                        Some(Ok(FromWorker::Asleep)) => self.runtime.asleep(self.slot, self.generation),
                        Some(Ok(FromWorker::LoginChanged { logged_in })) => {
                            self.runtime.login_changed(self.slot, self.generation, logged_in);
                        }
                        Some(Ok(FromWorker::Screen(event))) => {
                            if let Some(to) = &viewer {
                                // A viewer that does not keep up misses frames.
                                let _ = to.try_send(event);
                            }
                        }
                        Some(Ok(FromWorker::Recovering)) => {
                            tracing::warn!(lane = %self.spec.lane_id, "the worker recovers its page");
                            self.runtime.recovering(self.slot, self.generation);
                        }
                        Some(Ok(msg)) => self.on_message(&mut current, msg).map_err(|reason| match wake_by {
                            Some(_) => format!("failed to wake: {reason}"),
                            None => reason,
                        })?,
                        Some(Err(e)) => return Err(format!("bad frame from the worker: {e}")),
                        None => {
                            // EOF usually means the process is exiting: name its exit.
                            let status = tokio::time::timeout(Duration::from_millis(200), child.wait()).await;
                            return Err(match status {
                                Ok(s) => describe_exit(s),
                                Err(_) => "worker closed its socket".into(),
                            });
                        }
                    }
                }
                status = child.wait() => {
                    let said = last_words(&mut conn, |msg| self.on_message(&mut current, msg));
                    return Err(said.await.unwrap_or_else(|| describe_exit(status)));
                }
                _ = &mut heartbeat => {
                    return Err(format!("worker sent no heartbeat for {:?} (hung); killed", self.heartbeat_timeout));
                }
                _ = sleep_until(wake_by.unwrap_or_else(Instant::now)), if wake_by.is_some() => {
                    return Err(format!("failed to wake: not ready within {start_timeout:?} (see {})", self.home.lane_log(lane).display()));
                }
                _ = sleep_until(shutdown_at.unwrap_or_else(Instant::now)), if shutdown_at.is_some() && current.is_some() => {
                    let (id, _) = current.as_ref().expect("checked");
                    if stop_sent {
                        return Err("the current request did not stop in time during shutdown".into());
                    }
                    stop_sent = true;
                    conn.send(ToWorker::Stop { id: *id }).await
                        .map_err(|e| format!("cannot send to the worker: {e}"))?;
                    shutdown_at = Some(Instant::now() + STOP_GRACE);
                }
            }
        }
    }

    /// Applies one message from a ready worker; `Err` when it ends the lane.
    fn on_message(
        &self,
        current: &mut Option<(RequestId, relay::Sender)>,
        msg: FromWorker,
    ) -> Result<(), String> {
        match msg {
            // A doctor's answer after its asker went away.
            FromWorker::Heartbeat
            | FromWorker::Ready { .. }
            | FromWorker::Asleep
            | FromWorker::Recovering
            | FromWorker::Screen(_)
            | FromWorker::LoginChanged { .. }
            | FromWorker::Doctor { .. } => {}
            FromWorker::Delta { id, kind, text } => {
                if let Some((cur, tx)) = current.as_ref() {
                    if *cur == id {
                        self.runtime.progress(id, text.len());
                        if let Err(behind) = tx.send_text(kind, text) {
                            self.runtime.too_slow(id, behind.unread);
                        }
                    }
                }
            }
            FromWorker::Finished { id, reason } => {
                let end = match reason {
                    FinishReason::Completed => End::Completed,
                    FinishReason::Stopped => End::Stopped,
                };
                self.finish(current, id, end);
            }
            FromWorker::Failed { id, failure } => {
                if failure.kind == FailureKind::BrowserUnresponsive {
                    tracing::warn!(lane = %self.spec.lane_id, "worker reports its browser unresponsive");
                }
                self.finish(current, id, End::Failed(Failed::Site(failure)));
            }
            FromWorker::ChatDeleted { id, deleted } => {
                self.runtime.chat_deleted(self.slot, id, deleted)
            }
            FromWorker::Fatal { reason } => return Err(reason),
        }
        Ok(())
    }

    fn finish(&self, current: &mut Option<(RequestId, relay::Sender)>, id: RequestId, end: End) {
        if current.as_ref().is_some_and(|(c, _)| *c == id) {
            *current = None;
            self.runtime.finished(self.slot, self.generation, id, end);
        }
    }

    async fn exit_gracefully(&self, mut conn: WorkerConn, child: &mut Child) -> Result<(), String> {
        let _ = conn.send(ToWorker::Shutdown).await;
        match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => {
                tracing::warn!(lane = %self.spec.lane_id, "worker did not exit after Shutdown; killing it");
                Ok(())
            }
        }
    }
}

/// How long the frames a worker wrote before it exited are read after its exit.
const LAST_WORDS: Duration = Duration::from_millis(500);

/// The frames a worker wrote before it exited, each handed to `on` in order: its exit
/// can be seen before them, and its `Fatal` reason (what `on` returns as `Err`) says
/// more than its exit status. `None`: it said nothing that ends the lane.
async fn last_words(
    conn: &mut WorkerConn,
    mut on: impl FnMut(FromWorker) -> Result<(), String>,
) -> Option<String> {
    let deadline = Instant::now() + LAST_WORDS;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, conn.next()).await {
        if let Err(reason) = on(msg) {
            return Some(reason);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use interprocess::local_socket::{GenericFilePath, ToFsName};
    use nix::sys::signal;

    use super::*;

    #[tokio::test]
    async fn a_worker_reaped_before_its_connection_is_read_is_still_its_lanes() {
        let registry = Registry::default();
        let _rx = registry.expect(4242, "alpha#1");
        registry.forget(4242);
        assert_eq!(registry.wait_for(4242).await.as_deref(), Some("alpha#1"));
    }

    /// A worker that says why it ends and exits: its exit may be seen first, and its
    /// reason is still read from the socket.
    #[tokio::test]
    async fn a_dead_workers_last_words_are_read_after_its_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanes.sock");
        let listener = crate::daemon::bind_socket(&path).unwrap();
        let name = path.as_path().to_fs_name::<GenericFilePath>().unwrap();
        let mut worker = Framed::new(
            Stream::connect(name).await.unwrap(),
            FrameCodec::<ToWorker, FromWorker>::default(),
        );
        let mut conn: WorkerConn =
            Framed::new(listener.accept().await.unwrap(), FrameCodec::default());
        worker.send(FromWorker::Heartbeat).await.unwrap();
        worker
            .send(FromWorker::Fatal {
                reason: "its browser died".into(),
            })
            .await
            .unwrap();
        drop(worker);
        let mut seen = 0;
        let said = last_words(&mut conn, |msg| match msg {
            FromWorker::Fatal { reason } => Err(reason),
            _ => {
                seen += 1;
                Ok(())
            }
        });
        assert_eq!(said.await.as_deref(), Some("its browser died"));
        assert_eq!(seen, 1, "the frames before it were handed on");
        // A worker that said nothing: nothing to tell.
        assert_eq!(last_words(&mut conn, |_| Ok(())).await, None);
    }

    /// A lane task's loop (`drive`) against a worker the test plays over a real
    /// socket; the worker's process is a `sleep` the test may kill. Every report the
    /// loop makes to the runtime arrives on `reports`, as text.
    struct Rig {
        worker: Framed<Stream, FrameCodec<ToWorker, FromWorker>>,
        worker_pid: u32,
        cmds: mpsc::UnboundedSender<LaneCmd>,
        reports: mpsc::UnboundedReceiver<String>,
        ended: tokio::task::JoinHandle<Result<(), String>>,
        _home: tempfile::TempDir,
    }

    struct Recorder(mpsc::UnboundedSender<String>);

    impl LaneReports for Recorder {
        fn ready(&self, slot: usize, generation: u64, ready: Ready) {
            let browser = ready.browser_pid.unwrap_or_default();
            let _ = self
                .0
                .send(format!("ready {slot}/{generation} browser {browser}"));
        }
        fn asleep(&self, slot: usize, generation: u64) {
            let _ = self.0.send(format!("asleep {slot}/{generation}"));
        }
        fn recovering(&self, slot: usize, generation: u64) {
            let _ = self.0.send(format!("recovering {slot}/{generation}"));
        }
        fn login_changed(&self, slot: usize, generation: u64, logged_in: Option<bool>) {
            let _ = self
                .0
                .send(format!("login {slot}/{generation} {logged_in:?}"));
        }
        fn progress(&self, id: RequestId, chars: usize) {
            let _ = self.0.send(format!("progress {id} +{chars}"));
        }
        fn too_slow(&self, id: RequestId, unread: usize) {
            let _ = self.0.send(format!("too slow {id} {unread}"));
        }
        fn finished(&self, slot: usize, generation: u64, id: RequestId, end: End) {
            let _ = self
                .0
                .send(format!("finished {slot}/{generation} {id} {end:?}"));
        }
        fn chat_deleted(&self, slot: usize, id: RequestId, deleted: bool) {
            let _ = self.0.send(format!("chat deleted {slot} {id} {deleted}"));
        }
        fn gone(self: Arc<Self>, slot: usize, generation: u64, crash: Option<String>) {
            let _ = self.0.send(format!("gone {slot}/{generation} {crash:?}"));
        }
    }

    /// Far more than any step takes: a wait past it is a failure, not slowness.
    const PATIENCE: Duration = Duration::from_secs(30);

    impl Rig {
        /// A lane whose worker has connected, been configured and said it is ready.
        async fn ready(heartbeat_timeout: Duration) -> Rig {
            let home = tempfile::tempdir().unwrap();
            let path = home.path().join("lanes.sock");
            let listener = crate::daemon::bind_socket(&path).unwrap();
            let name = path.as_path().to_fs_name::<GenericFilePath>().unwrap();
            let worker = Framed::new(Stream::connect(name).await.unwrap(), FrameCodec::default());
            let conn: WorkerConn =
                Framed::new(listener.accept().await.unwrap(), FrameCodec::default());
            let (connected, conn_rx) = oneshot::channel();
            let _ = connected.send(conn);
            let mut child = Command::new("sleep")
                .arg("600")
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let worker_pid = child.id().unwrap();
            let config =
                crate::config::Config::parse("[[lanes]]\nprovider = \"echo\"\nprefix = \"t\"\n")
                    .unwrap();
            let lane_home = Home::at(home.path());
            let spec = config.lanes()[0].spec(&config, &lane_home, None);
            let (report, reports) = mpsc::unbounded_channel();
            let task = LaneTask {
                runtime: Arc::new(Recorder(report)),
                registry: Arc::new(Registry::default()),
                home: lane_home,
                slot: 3,
                generation: 2,
                spec,
                start_timeout: PATIENCE,
                heartbeat_timeout,
            };
            let (cmds, cmd_rx) = mpsc::unbounded_channel();
            let ended = tokio::spawn(async move { task.drive(&mut child, conn_rx, cmd_rx).await });
            let mut rig = Rig {
                worker,
                worker_pid,
                cmds,
                reports,
                ended,
                _home: home,
            };
            assert!(matches!(rig.told().await, ToWorker::Configure(_)));
            rig.say(FromWorker::Ready {
                browser_pid: Some(77),
                logged_in: None,
                user_agent: None,
                release: None,
            })
            .await;
            assert_eq!(rig.report().await, "ready 3/2 browser 77");
            rig
        }

        async fn told(&mut self) -> ToWorker {
            let next = tokio::time::timeout(PATIENCE, self.worker.next()).await;
            next.expect("the lane told the worker something")
                .expect("the lane's socket is open")
                .unwrap()
        }

        async fn say(&mut self, msg: FromWorker) {
            self.worker.send(msg).await.unwrap();
        }

        async fn report(&mut self) -> String {
            let next = tokio::time::timeout(PATIENCE, self.reports.recv()).await;
            next.expect("a report to the runtime").unwrap()
        }

        /// Runs request `id` on the lane; the client's end of its answer.
        async fn run(&mut self, id: RequestId) -> relay::Receiver {
            let (tx, rx) = relay::channel(1 << 20);
            let generate = Generate {
                id,
                thinking: prq_protocol::worker::Thinking::Off,
                messages: Vec::new(),
                controls: Default::default(),
                attachments: Vec::new(),
            };
            let _ = self.cmds.send(LaneCmd::Run { generate, tx });
            assert!(matches!(self.told().await, ToWorker::Generate(g) if g.id == id));
            rx
        }

        /// The worker's process exits, as a worker told `Shutdown` does.
        /// The lane told the worker to stop request `id`; the worker confirms it stopped,
        /// the lane reports it, then shuts the worker down, and ends cleanly.
        async fn stopped_then_shut_down(mut self, id: RequestId) {
            assert!(matches!(self.told().await, ToWorker::Stop { id: i } if i == id));
            self.say(FromWorker::Finished {
                id,
                reason: FinishReason::Stopped,
            })
            .await;
            assert_eq!(self.report().await, format!("finished 3/2 {id} Stopped"));
            assert!(matches!(self.told().await, ToWorker::Shutdown));
            self.exits();
            assert_eq!(self.ended().await, Ok(()));
        }

        fn exits(&self) {
            signal::kill(Pid::from_raw(self.worker_pid as i32), Signal::SIGTERM).unwrap();
        }

        async fn ended(self) -> Result<(), String> {
            tokio::time::timeout(PATIENCE, self.ended)
                .await
                .expect("the lane loop ended")
                .unwrap()
        }
    }

    #[tokio::test]
    async fn a_request_runs_and_its_text_reaches_its_client() {
        let mut rig = Rig::ready(PATIENCE).await;
        let mut client = rig.run(5).await;
        rig.say(FromWorker::Delta {
            id: 5,
            kind: prq_protocol::worker::DeltaKind::Answer,
            text: "hello".into(),
        })
        .await;
        // A delta of another request (one that ended) is not this one's.
        rig.say(FromWorker::Delta {
            id: 4,
            kind: prq_protocol::worker::DeltaKind::Answer,
            text: "stale".into(),
        })
        .await;
        rig.say(FromWorker::Finished {
            id: 5,
            reason: FinishReason::Completed,
        })
        .await;
        assert_eq!(rig.report().await, "progress 5 +5");
        assert_eq!(rig.report().await, "finished 3/2 5 Completed");
        match client.recv().await {
            Some(crate::runtime::ReqEvent::Delta { text, .. }) => assert_eq!(text, "hello"),
            other => panic!("the client got {other:?}"),
        }
    }

    /// A Stop reaches the worker once however often it is asked; a shutdown waits for
    /// the stopped request to end, then tells the worker to exit, and the lane ends
    /// cleanly.
    #[tokio::test]
    async fn a_stop_is_sent_once_and_a_shutdown_waits_for_the_request() {
        let mut rig = Rig::ready(PATIENCE).await;
        let _client = rig.run(5).await;
        for _ in 0..3 {
            let _ = rig.cmds.send(LaneCmd::Stop { id: 5 });
        }
        let _ = rig.cmds.send(LaneCmd::Shutdown { grace: PATIENCE });
        rig.stopped_then_shut_down(5).await;
    }

    /// A shutdown with no time to spare stops the running request itself, and gives
    /// it the stop grace before the lane gives up on it.
    #[tokio::test]
    async fn a_shutdown_stops_the_running_request_first() {
        let mut rig = Rig::ready(PATIENCE).await;
        let _client = rig.run(9).await;
        let _ = rig.cmds.send(LaneCmd::Shutdown {
            grace: Duration::ZERO,
        });
        rig.stopped_then_shut_down(9).await;
    }

    /// Heartbeats keep a lane; silence past `heartbeat_timeout` ends it as hung.
    #[tokio::test]
    async fn a_worker_that_goes_silent_is_taken_for_hung() {
        let mut rig = Rig::ready(Duration::from_secs(1)).await;
        for _ in 0..20 {
            rig.say(FromWorker::Heartbeat).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!rig.ended.is_finished(), "a lane that beats is kept");
        let ended = rig.ended().await.unwrap_err();
        assert!(ended.contains("no heartbeat"), "{ended}");
    }

    /// A worker's `Fatal` ends the lane with the worker's reason, and its process's
    /// death ends it with how the process died.
    #[tokio::test]
    async fn a_fatal_message_or_the_workers_death_ends_the_lane_with_its_cause() {
        let mut rig = Rig::ready(PATIENCE).await;
        rig.say(FromWorker::Fatal {
            reason: "the browser died".into(),
        })
        .await;
        assert_eq!(rig.ended().await, Err("the browser died".into()));

        let rig = Rig::ready(PATIENCE).await;
        signal::kill(Pid::from_raw(rig.worker_pid as i32), Signal::SIGKILL).unwrap();
        let ended = rig.ended().await.unwrap_err();
        assert!(ended.contains("signal 9 (SIGKILL)"), "{ended}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pid_nobody_spawned_is_a_stranger() {
        let registry = Registry::default();
        let _rx = registry.expect(4242, "alpha#1");
        assert_eq!(registry.wait_for(4343).await, None);
        registry.forget(4242);
        tokio::time::advance(ENDED_MEMORY + Duration::from_secs(1)).await;
        let _rx = registry.expect(5555, "beta#1");
        registry.forget(5555);
        assert_eq!(registry.wait_for(4242).await, None);
    }
}
