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
use prq_protocol::worker::{
    FailureKind, FinishReason, FromWorker, Generate, LaneSpec, RequestId, ToWorker,
};
use prq_protocol::FrameCodec;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::codec::Framed;

use crate::home::Home;
use crate::runtime::{End, Failed, ReqEvent, Runtime};

/// How long a worker has to exit after `Shutdown` (or a signal) before it is killed.
pub const EXIT_GRACE: Duration = Duration::from_secs(3);
/// How long a stopped request may take to end after the worker was told to stop it.
const STOP_GRACE: Duration = Duration::from_secs(5);

type WorkerConn = Framed<Stream, FrameCodec<FromWorker, ToWorker>>;

/// What the runtime tells a lane task.
pub enum LaneCmd {
    Run {
        generate: Generate,
        tx: mpsc::UnboundedSender<ReqEvent>,
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
}

/// Workers the supervisor has spawned and is waiting to hear from, by lane ID.
#[derive(Default)]
pub struct Registry {
    waiting: Mutex<HashMap<String, oneshot::Sender<(u32, WorkerConn)>>>,
}

impl Registry {
    fn expect(&self, lane_id: &str) -> oneshot::Receiver<(u32, WorkerConn)> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lane_id.to_string(), tx);
        rx
    }

    fn deliver(&self, lane_id: &str, pid: u32, conn: WorkerConn) -> Result<(), String> {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(lane_id);
        match waiting {
            Some(tx) => tx
                .send((pid, conn))
                .map_err(|_| format!("lane {lane_id} stopped waiting for its worker")),
            None => Err(format!("no worker expected for lane {lane_id}")),
        }
    }
}

/// Accepts worker connections on the lanes socket for the daemon's lifetime. A peer
/// that fails the handshake is dropped with a log line; the daemon goes on.
pub async fn accept_workers(listener: Listener, registry: Arc<Registry>) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("lanes socket accept failed: {e}");
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let creds_pid = stream.peer_creds().ok().and_then(|c| c.pid());
            match handshake::accept::<_, FromWorker, ToWorker>(stream).await {
                Ok((Peer::Worker { lane_id, pid }, conn)) => {
                    // The hello's pid must be the connecting process's own.
                    if creds_pid.is_some_and(|c| c as u32 != pid) {
                        tracing::warn!(lane = %lane_id, pid, ?creds_pid, "worker hello pid does not match the peer; dropped");
                        return;
                    }
                    if let Err(e) = registry.deliver(&lane_id, pid, conn) {
                        tracing::warn!("worker connection dropped: {e}");
                    }
                }
                Ok((peer, _)) => {
                    tracing::warn!(?peer, "non-worker peer on the lanes socket; dropped")
                }
                Err(e) => tracing::warn!("worker handshake failed: {e}"),
            }
        });
    }
}

pub struct LaneTask {
    pub runtime: Arc<Runtime>,
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
    let connected = task.registry.expect(&lane);
    let result = match task.spawn() {
        Ok(mut child) => {
            let pid = child.id();
            let result = task.drive(&mut child, connected, cmds).await;
            // Whatever happened, nothing of the lane outlives it: kill the worker's
            // whole process group (its Chromium with it) and reap the worker.
            if let Some(pid) = pid {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let _ = child.wait().await;
            result
        }
        Err(e) => Err(e),
    };
    if let Err(cause) = &result {
        tracing::warn!(%lane, %cause, "lane ended");
    }
    task.runtime
        .lane_gone(task.slot, task.generation, result.err());
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
    fn worker_exe() -> PathBuf {
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
        let log_path = self.home.lane_log(&self.spec.lane_id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let exe = Self::worker_exe();
        Command::new(&exe)
            .arg("--socket")
            .arg(self.home.lanes_socket())
            .arg("--lane")
            .arg(&self.spec.lane_id)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the worker {}: {e}", exe.display()))
    }

    async fn drive(
        &self,
        child: &mut Child,
        connected: oneshot::Receiver<(u32, WorkerConn)>,
        mut cmds: mpsc::UnboundedReceiver<LaneCmd>,
    ) -> Result<(), String> {
        let lane = &self.spec.lane_id;
        let worker_pid = child.id().unwrap_or_default();
        let ready_by = Instant::now() + self.start_timeout;
        let start_timeout = self.start_timeout;

        let (peer_pid, mut conn) = tokio::select! {
            c = connected => c.map_err(|_| "worker registry closed".to_string())?,
            status = child.wait() => return Err(describe_exit(status)),
            _ = sleep_until(ready_by) => return Err(format!("worker did not connect within {start_timeout:?}")),
        };
        if peer_pid != worker_pid {
            return Err(format!(
                "a process (pid {peer_pid}) that is not this lane's worker ({worker_pid}) connected"
            ));
        }
        conn.send(ToWorker::Configure(self.spec.clone()))
            .await
            .map_err(|e| format!("cannot configure the worker: {e}"))?;
        let browser_pid = loop {
            tokio::select! {
                msg = conn.next() => match msg {
                    Some(Ok(FromWorker::Ready { browser_pid })) => break browser_pid,
                    Some(Ok(FromWorker::Heartbeat)) => {}
                    Some(Ok(FromWorker::Fatal { reason })) => return Err(reason),
                    Some(Ok(other)) => return Err(format!("unexpected message before ready: {other:?}")),
                    Some(Err(e)) => return Err(format!("bad frame from the worker: {e}")),
                    None => return Err(describe_exit(child.wait().await)),
                },
                status = child.wait() => return Err(describe_exit(status)),
                _ = sleep_until(ready_by) => return Err(format!("not ready within {start_timeout:?} (see {})", self.home.lane_log(lane).display())),
            }
        };
        self.runtime
            .lane_ready(self.slot, self.generation, worker_pid, browser_pid);

        let mut current: Option<(RequestId, mpsc::UnboundedSender<ReqEvent>)> = None;
        // Set by Shutdown: when the current request must be stopped, then when the
        // worker must be told to exit.
        let mut shutdown_at: Option<Instant> = None;
        let mut stop_sent = false;
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
                    None => shutdown_at = Some(Instant::now()),
                },
                msg = conn.next() => {
                    heartbeat.as_mut().reset(Instant::now() + self.heartbeat_timeout);
                    match msg {
                        Some(Ok(FromWorker::Heartbeat)) | Some(Ok(FromWorker::Ready { .. })) => {}
                        Some(Ok(FromWorker::Delta { id, kind, text })) => {
                            if let Some((cur, tx)) = &current {
                                if *cur == id {
                                    self.runtime.progress(id, text.len());
                                    let _ = tx.send(ReqEvent::Delta { kind, text });
                                }
                            }
                        }
                        Some(Ok(FromWorker::Finished { id, reason })) => {
                            let end = match reason {
                                FinishReason::Completed => End::Completed,
                                FinishReason::Stopped => End::Stopped,
                            };
                            self.finish(&mut current, id, end);
                        }
                        Some(Ok(FromWorker::Failed { id, failure })) => {
                            if failure.kind == FailureKind::BrowserUnresponsive {
                                tracing::warn!(%lane, "worker reports its browser unresponsive");
                            }
                            self.finish(&mut current, id, End::Failed(Failed::Site(failure)));
                        }
                        Some(Ok(FromWorker::Fatal { reason })) => return Err(reason),
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
                status = child.wait() => return Err(describe_exit(status)),
                _ = &mut heartbeat => {
                    return Err(format!("worker sent no heartbeat for {:?} (hung); killed", self.heartbeat_timeout));
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

    fn finish(
        &self,
        current: &mut Option<(RequestId, mpsc::UnboundedSender<ReqEvent>)>,
        id: RequestId,
        end: End,
    ) {
        if current.as_ref().is_some_and(|(c, _)| *c == id) {
            *current = None;
            self.runtime
                .lane_finished(self.slot, self.generation, id, end);
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
