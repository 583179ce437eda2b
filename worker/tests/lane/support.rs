//! The supervisor's side, played for real: a lane socket in a temp dir, the
//! `prq-worker` binary spawned on it as a process-group leader, the handshake and
//! `Configure`, and — for sandbox lanes — the sandbox site served in-process. Dropping a
//! [`Lane`] kills the worker's process group (its Chromium with it) and the site.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::{prelude::*, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use nix::sys::signal::{killpg, Signal};
use nix::sys::socket::{recv, MsgFlags};
use nix::unistd::Pid;
use prq_protocol::handshake::{self, Peer};
use prq_protocol::worker::{
    ChatMessage, DeltaKind, Failure, FinishReason, FromWorker, Generate, LaneSpec, Role, Thinking,
    ToWorker,
};
use prq_protocol::{until_hang_up, FrameCodec};
use serde_json::Value;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

/// Generous bound for anything that should happen "soon" (a browser launch, an answer).
pub const SOON: Duration = Duration::from_secs(30);

/// How soon what an event causes (an exit, a stop, a dead browser noticed) must be
/// seen: far under every timer that could cause it instead (the 10 s CDP deadline),
/// with room for a loaded CI machine. How fast it really is, the benches measure.
pub const PROMPTLY: Duration = Duration::from_secs(5);

pub type Conn = Framed<Stream, FrameCodec<FromWorker, ToWorker>>;

/// How a lane is set up.
pub struct Setup {
    pub provider: &'static str,
    /// Serve the sandbox site and point the lane at it.
    pub site: bool,
    /// The chat page, when it is not the sandbox's.
    pub base_url: Option<String>,
    pub browser: Option<PathBuf>,
    pub heartbeat_ms: u64,
    /// Also how long a page element gets to appear.
    pub cdp_timeout_ms: u64,
    pub selectors: BTreeMap<String, Vec<String>>,
    /// A profile of the test's own (to see what a profile keeps); default: a fresh one.
    pub profile_dir: Option<PathBuf>,
    /// Where the lane keeps its captures; default: no captures.
    pub capture_dir: Option<PathBuf>,
}

impl Setup {
    pub fn echo() -> Self {
        Self {
            provider: "echo",
            site: false,
            base_url: None,
            browser: None,
            heartbeat_ms: 200,
            // The supervisor's default.
            cdp_timeout_ms: 10_000,
            selectors: BTreeMap::new(),
            profile_dir: None,
            capture_dir: None,
        }
    }

    pub fn sandbox() -> Self {
        Self {
            provider: "sandbox",
            site: true,
            browser: Some("/usr/bin/chromium".into()),
            ..Self::echo()
        }
    }

    /// A lane of `provider` on the chat page at `url` (a replica).
    pub fn site(provider: &'static str, url: &str) -> Self {
        Self {
            provider,
            site: false,
            base_url: Some(url.to_owned()),
            ..Self::sandbox()
        }
    }
}

/// The sandbox site on a free loopback port.
pub struct Site {
    pub base: String,
    server: JoinHandle<()>,
}

impl Site {
    async fn serve() -> Site {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, prq::sandbox::router()).await.unwrap();
        });
        Site { base, server }
    }

    /// The streams the site has served, oldest first (`GET /stats`).
    pub async fn streams(&self) -> Vec<Value> {
        let stats: Value = reqwest::get(format!("{}/stats", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["streams"].as_array().unwrap().clone()
    }

    /// Polls `/stats` until the newest stream has ended; panics after `within`.
    pub async fn last_stream_ended(&self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let last = self.streams().await.pop().expect("a stream was served");
            if last["outcome"] != "streaming" {
                return last;
            }
            assert!(Instant::now() < deadline, "still streaming: {last}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// How a generation ended, as the worker reported it.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Finished(FinishReason),
    Failed(Failure),
}

/// Everything the worker sent for one request.
#[derive(Debug)]
pub struct Answer {
    pub reasoning: String,
    pub answer: String,
    pub end: End,
}

pub struct Lane {
    pub dir: TempDir,
    /// `None` once the test hung up, as a dying supervisor would.
    conn: Option<Conn>,
    pub worker: Child,
    pub worker_pid: u32,
    pub site: Option<Site>,
    /// Heartbeats seen so far.
    pub heartbeats: usize,
    /// The worker said `Recovering` and has not said `Ready` since: it takes no
    /// request until it does.
    recovering: bool,
    /// The next message must be the end of a request that did not complete: the worker
    /// says `Recovering` just before it.
    end_due: bool,
    /// Recoveries that ended in `Ready` so far.
    pub recoveries: usize,
}

impl Lane {
    /// Spawns the worker, shakes hands and configures it; does not wait for `Ready`.
    pub async fn start(setup: Setup) -> Lane {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("lanes.sock");
        let listener = ListenerOptions::new()
            .name(socket.as_path().to_fs_name::<GenericFilePath>().unwrap())
            .create_tokio()
            .unwrap();
        let worker = Command::new(env!("CARGO_BIN_EXE_prq-worker"))
            .arg("--socket")
            .arg(&socket)
            .args(["--lane", "test#1"])
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let worker_pid = worker.id().unwrap();
        let stream = tokio::time::timeout(SOON, listener.accept())
            .await
            .expect("the worker connects")
            .unwrap();
        let (peer, mut conn): (Peer, Conn) = handshake::accept(stream).await.unwrap();
        assert_eq!(
            peer,
            Peer::Worker {
                lane_id: "test#1".into(),
                pid: worker_pid
            }
        );
        let site = match setup.site {
            true => Some(Site::serve().await),
            false => None,
        };
        let spec = LaneSpec {
            lane_id: "test#1".into(),
            provider: setup.provider.into(),
            prefix: setup.provider.into(),
            account: "default".into(),
            profile_dir: setup
                .profile_dir
                .unwrap_or_else(|| dir.path().join("profile")),
            base_url: site
                .as_ref()
                .map(|s| format!("{}/", s.base))
                .or(setup.base_url),
            browser: setup.browser,
            thinking_default: false,
            heartbeat_ms: setup.heartbeat_ms,
            heartbeat_timeout_ms: 3_000,
            cdp_timeout_ms: setup.cdp_timeout_ms,
            selectors: setup.selectors,
            presence: Default::default(),
            capture_dir: setup.capture_dir,
            browser_profile: Default::default(),
            keep_alive_s: None,
            after_reply: Default::default(),
            upload_timeout_ms: 60_000,
        };
        conn.send(ToWorker::Configure(spec)).await.unwrap();
        Lane {
            dir,
            conn: Some(conn),
            worker,
            worker_pid,
            site,
            heartbeats: 0,
            recovering: false,
            end_due: false,
            recoveries: 0,
        }
    }

    /// Waits for `Ready`; returns the browser's pid.
    pub async fn ready(&mut self) -> Option<u32> {
        self.ready_logged_in().await.0
    }

    /// Waits for `Ready`; returns the browser's pid and what the page said of its login.
    pub async fn ready_logged_in(&mut self) -> (Option<u32>, Option<bool>) {
        match self.recv().await {
            FromWorker::Ready {
                browser_pid,
                logged_in,
                ..
            } => (browser_pid, logged_in),
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    pub fn site(&self) -> &Site {
        self.site.as_ref().expect("a sandbox lane")
    }

    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("the test has not hung up")
    }

    /// Closes the lane socket, as a supervisor that dies does.
    pub fn hang_up(&mut self) {
        self.conn = None;
    }

    /// Hangs up as a supervisor dying mid-conversation does: with messages from the
    /// worker still unread in the socket, which resets the connection instead of
    /// ending it. Waits until there are such bytes (a heartbeat comes every
    /// `heartbeat_ms`), then closes.
    pub async fn hang_up_unread(&mut self) {
        let conn = self.conn.take().expect("the worker is connected");
        let Stream::UdSocket(stream) = conn.get_ref();
        let fd = stream.as_fd().as_raw_fd();
        let deadline = Instant::now() + SOON;
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        while !matches!(recv(fd, &mut [0u8; 1], flags), Ok(n) if n > 0) {
            assert!(
                Instant::now() < deadline,
                "the worker sent nothing within {SOON:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(conn);
    }

    pub async fn send(&mut self, msg: ToWorker) {
        self.conn().send(msg).await.unwrap();
    }

    /// The next message that is not a heartbeat and not part of a recovery; `None` when
    /// the worker closed the socket. Panics if nothing comes within `within`.
    ///
    /// After a stop or a failure the worker may find its page busy: it says
    /// `Recovering` just before that request's end, and `Ready` once the page takes
    /// requests again (under load, a page merely slow to answer its settle check does
    /// this too). The supervisor's side of that is tested end to end; here the pair is
    /// checked for its place and kept out of the test's way, and [`Lane::generate`]
    /// waits for the `Ready` as the supervisor would.
    pub async fn recv_within(&mut self, within: Duration) -> Option<FromWorker> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(msg) = self.next_at(deadline, within).await {
                return msg;
            }
        }
    }

    /// The next frame: `Some` of what [`Lane::recv_within`] hands out, or `None` for a
    /// heartbeat or a message of a recovery, which are noted here.
    async fn next_at(
        &mut self,
        deadline: tokio::time::Instant,
        within: Duration,
    ) -> Option<Option<FromWorker>> {
        let msg = tokio::time::timeout_at(deadline, self.conn().next())
            .await
            .unwrap_or_else(|_| panic!("nothing from the worker within {within:?}"));
        let msg = match until_hang_up(msg) {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => panic!("bad frame from the worker: {e}"),
            None => return Some(None),
        };
        if std::mem::take(&mut self.end_due) {
            let incomplete = match &msg {
                FromWorker::Finished { reason, .. } => *reason != FinishReason::Completed,
                FromWorker::Failed { .. } => true,
                _ => false,
            };
            assert!(
                incomplete,
                "Recovering must come just before the end of a request that did not \
                 complete, got {msg:?}"
            );
        }
        match msg {
            FromWorker::Heartbeat => self.heartbeats += 1,
            FromWorker::Recovering => {
                assert!(!self.recovering, "Recovering twice without Ready");
                eprintln!("lane: the worker recovers its page after a request");
                self.recovering = true;
                self.end_due = true;
            }
            FromWorker::Ready { .. } if self.recovering => {
                self.recovering = false;
                self.recoveries += 1;
            }
            msg => return Some(Some(msg)),
        }
        None
    }

    /// Waits until the worker is done recovering its page, if it is.
    async fn recovered(&mut self) {
        let deadline = tokio::time::Instant::now() + SOON;
        while self.recovering {
            match self.next_at(deadline, SOON).await {
                None => {}
                Some(None) => panic!("the worker hung up while recovering its page"),
                Some(Some(other)) => panic!("unexpected while the lane recovers: {other:?}"),
            }
        }
    }

    pub async fn recv(&mut self) -> FromWorker {
        self.recv_within(SOON)
            .await
            .expect("the worker is connected")
    }

    /// Asks for a generation of a one-message conversation.
    pub async fn generate(&mut self, id: u64, prompt: &str, thinking: Thinking) {
        let messages = vec![ChatMessage {
            role: Role::User,
            content: prompt.into(),
        }];
        self.generate_chat(id, messages, thinking).await;
    }

    /// Waits first until the lane takes requests, as the supervisor does.
    pub async fn generate_chat(&mut self, id: u64, messages: Vec<ChatMessage>, thinking: Thinking) {
        self.recovered().await;
        self.send(ToWorker::Generate(Generate {
            id,
            thinking,
            messages,
            controls: Default::default(),
            attachments: Vec::new(),
        }))
        .await;
    }

    /// Reads request `id`'s deltas until it ends.
    pub async fn answer(&mut self, id: u64) -> Answer {
        let mut answer = Answer {
            reasoning: String::new(),
            answer: String::new(),
            end: End::Finished(FinishReason::Completed),
        };
        loop {
            match self.recv().await {
                FromWorker::Delta { id: of, kind, text } if of == id => match kind {
                    DeltaKind::Reasoning => answer.reasoning.push_str(&text),
                    DeltaKind::Answer => answer.answer.push_str(&text),
                },
                FromWorker::Finished { id: of, reason } if of == id => {
                    answer.end = End::Finished(reason);
                    return answer;
                }
                FromWorker::Failed { id: of, failure } if of == id => {
                    answer.end = End::Failed(failure);
                    return answer;
                }
                other => panic!("unexpected while answering {id}: {other:?}"),
            }
        }
    }

    /// Waits for deltas of request `id` until the answer has `len` bytes.
    pub async fn answer_until(&mut self, id: u64, len: usize) -> String {
        let mut answer = String::new();
        while answer.len() < len {
            match self.recv().await {
                FromWorker::Delta {
                    id: of,
                    kind: DeltaKind::Answer,
                    text,
                } if of == id => answer.push_str(&text),
                FromWorker::Delta {
                    kind: DeltaKind::Reasoning,
                    ..
                } => {}
                other => panic!("unexpected while waiting for the answer of {id}: {other:?}"),
            }
        }
        answer
    }

    /// Waits for the worker to exit; panics after `within`.
    pub async fn exit_within(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.worker.wait())
            .await
            .unwrap_or_else(|_| panic!("the worker still runs after {within:?}"))
            .unwrap()
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // The worker leads its process group, and its Chromium is in it (never 0:
        // `killpg(0)` would kill the test's own group).
        if self.worker_pid > 0 {
            let _ = killpg(Pid::from_raw(self.worker_pid as i32), Signal::SIGKILL);
        }
    }
}

/// Whether `pid` is a live process (a zombie waiting to be reaped is not).
pub fn alive(pid: u32) -> bool {
    prq::procinfo::is_alive(pid)
}

/// Waits until `pid` is gone; panics after `within`. Returns how long it took.
pub async fn gone_within(pid: u32, within: Duration) -> Duration {
    let started = Instant::now();
    while alive(pid) {
        assert!(
            started.elapsed() < within,
            "process {pid} still alive after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// Milliseconds since the Unix epoch, as the sandbox records them.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
