//! CLI ↔ daemon messages over the control socket, and the status report that
//! `prq status --json` prints (its JSON keys are a public contract).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::worker::RequestId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Serial,
    Concurrent,
    Full,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Serial => "serial",
            Mode::Concurrent => "concurrent",
            Mode::Full => "full",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlRequest {
    Status,
    /// Start the runtime from the config file as it is on disk now (`None`: the
    /// config the daemon was started with).
    Start {
        config: Option<PathBuf>,
    },
    /// Stop the runtime and the daemon.
    Shutdown,
    /// Read the config again (`None`: the one in use) and apply the difference lane
    /// by lane (`prq reload`).
    Reload {
        config: Option<PathBuf>,
    },
    Queue(QueueCommand),
    /// Take this host out of a load balancer gracefully: `/readyz` fails at once, new
    /// requests are refused after `drain_s`, admitted ones finish, the runtime stops.
    /// With `wait`, the answer comes when nothing is in flight any more.
    Drain {
        wait: bool,
    },
    /// `prq doctor [PREFIX]`: check the page of each running lane (of `prefix`), saving
    /// the outlines and screenshots in `dir`; with `type_check`, check typing too.
    Doctor {
        prefix: Option<String>,
        dir: PathBuf,
        type_check: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QueueCommand {
    List,
    Cancel { id: RequestId },
    Stop { id: RequestId },
    StopAll,
    Clear,
}

/// What a `prq start` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Started {
    /// It launched the runtime.
    Launched,
    /// The runtime was running already (or another start launched it).
    AlreadyRunning,
    /// The runtime was draining (`prq drain`): the drain is called off and it takes
    /// requests again.
    DrainCalledOff,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlResponse {
    Status(StatusReport),
    /// The runtime is running (again); `how` says what the start did.
    Started {
        how: Started,
        status: StatusReport,
    },
    /// Some lane did not come up; the message names it and says why.
    StartFailed {
        message: String,
        status: StatusReport,
    },
    ShuttingDown,
    /// A drain began (or was under way); with `wait`, it has ended: nothing is in
    /// flight and the runtime is stopped.
    Draining {
        status: StatusReport,
    },
    /// What a reload changed; a config that did not load comes back as `Error`.
    Reloaded(ReloadReport),
    /// A queue listing (the same document as `GET /api/queue`).
    Queue(Box<crate::view::QueueView>),
    /// The IDs a queue action acted on.
    Acted {
        ids: Vec<RequestId>,
    },
    Error {
        message: String,
    },
    Doctor(Vec<LaneDoctor>),
}

/// One lane's `prq doctor` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneDoctor {
    pub id: String,
    pub provider: String,
    pub prefix: String,
    pub account: String,
    pub report: Result<crate::worker::PageReport, String>,
}

/// What `prq reload` changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The config file read (`None`: the built-in config).
    pub config: Option<String>,
    /// `false` when the runtime was not running: nothing ran to change, and the next
    /// `prq start` uses this config.
    pub applied: bool,
    /// Every lane of the new config, and every lane it removed.
    pub lanes: Vec<LaneChange>,
    /// The daemon-wide settings that changed (by name: some values are secrets), and
    /// how each takes effect.
    pub settings: Vec<SettingChange>,
}

/// A daemon-wide setting a reload changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingChange {
    /// Its key, as in the config (`deadlines`, `limits.max_connections`).
    pub name: String,
    pub applies: Applies,
    /// When and to what it applies, or why it waits and what to run, in words.
    pub detail: String,
}

/// How a changed setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applies {
    /// At once, with no lane restarted.
    Now,
    /// It is part of every lane's worker: each running lane restarts with it after its
    /// current request (listed among the lanes).
    LaneRestart,
    /// The daemon took it as it started: it waits for `prq stop` and `prq start`.
    DaemonRestart,
}

impl Applies {
    pub fn as_str(self) -> &'static str {
        match self {
            Applies::Now => "applied",
            Applies::LaneRestart => "lanes restart",
            Applies::DaemonRestart => "waits for a restart",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneChange {
    pub id: String,
    pub change: LaneChangeKind,
    /// What happens to it, in words.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneChangeKind {
    Added,
    Removed,
    /// Settings that apply to it as it runs changed (`idle_suspend_s`): no restart.
    Updated,
    /// Its settings changed: it restarts after its current request.
    Restarting,
    Unchanged,
}

impl LaneChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LaneChangeKind::Added => "added",
            LaneChangeKind::Removed => "removed",
            LaneChangeKind::Updated => "updated",
            LaneChangeKind::Restarting => "restarting",
            LaneChangeKind::Unchanged => "unchanged",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeState {
    Starting,
    Running,
    /// `prq drain` or SIGTERM: not ready for a balancer; finishing what was admitted.
    Draining,
    Stopped,
}

impl RuntimeState {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeState::Starting => "starting",
            RuntimeState::Running => "running",
            RuntimeState::Draining => "draining",
            RuntimeState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneState {
    Starting,
    Idle,
    Busy,
    /// Its site said rate limit: it takes no requests until `cooling_left_ms` is up.
    Cooling,
    /// Idle for `idle_suspend_s`: its browser is closed, its worker waits; the next
    /// request for it wakes it.
    Asleep,
    /// Its last request left its page busy: it takes no request until the page
    /// answers again (or it is crashed, when the page does not come back).
    Recovering,
    /// A person logs it in through the panel's login view: it takes no requests until
    /// the view is closed and its page checked again.
    Login,
    Crashed,
    Stopped,
}

impl LaneState {
    pub fn as_str(self) -> &'static str {
        match self {
            LaneState::Starting => "starting",
            LaneState::Idle => "idle",
            LaneState::Busy => "busy",
            LaneState::Cooling => "cooling",
            LaneState::Asleep => "asleep",
            LaneState::Recovering => "recovering",
            LaneState::Login => "login",
            LaneState::Crashed => "crashed",
            LaneState::Stopped => "stopped",
        }
    }

    /// Whether the lane can take a request now or by itself soon (it is up, or can
    /// wake): what `/readyz` asks of at least one lane. A busy lane counts — it queues
    /// — so readiness does not flap with load; a lane that needs `prq start`, is still
    /// starting, or is cooling (its site said rate limit: a balancer had better send
    /// elsewhere until it is up) does not. Every new state must say which it is here.
    pub fn can_serve(self) -> bool {
        match self {
            // A request wakes a sleeping lane (one that fails to wake is crashed); a
            // recovering one takes requests again within seconds, or is crashed.
            LaneState::Idle | LaneState::Busy | LaneState::Asleep | LaneState::Recovering => true,
            // A lane in the login view is back when a person is done: no time to count on.
            LaneState::Starting
            | LaneState::Cooling
            | LaneState::Login
            | LaneState::Crashed
            | LaneState::Stopped => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub pid: u32,
    pub home: String,
    pub config: Option<String>,
    pub runtime: RuntimeStatus,
    pub mode: ModeStatus,
    pub api_url: String,
    pub panel_url: String,
    pub sandbox_url: Option<String>,
    pub lanes: Vec<LaneStatus>,
    pub queue: QueueCounts,
    /// Log lines lost since the daemon started (a full disk, an unwritable `logs/`).
    pub log_lines_dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeStatus {
    pub state: RuntimeState,
    /// Why the runtime is stopped; `None` while it runs.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeStatus {
    pub configured: Mode,
    pub effective: Mode,
    /// Why the effective mode differs from the configured one.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneStatus {
    pub id: String,
    pub provider: String,
    pub prefix: String,
    pub account: String,
    pub state: LaneState,
    pub worker_pid: Option<u32>,
    pub browser_pid: Option<u32>,
    /// Whether the lane's page showed a logged-in account when it opened; `None` when
    /// the provider has no login or it could not tell.
    pub logged_in: Option<bool>,
    /// How the lane's browser presents itself; `None` for a lane without a browser.
    pub presence: Option<PresenceStatus>,
    /// The request the lane is generating.
    pub current: Option<RequestId>,
    /// Why a configured lane is not running (e.g. an extra lane in `concurrent` mode).
    pub note: Option<String>,
    /// A `cooling` lane's time left, in milliseconds, as of this report.
    pub cooling_left_ms: Option<u64>,
    /// What becomes of the chats its requests make.
    pub after_reply: crate::controls::AfterReply,
    /// With `after_reply = "delete"`: the chats it deleted and the deletes that failed.
    pub chats: ChatsDeleted,
}

/// A lane's deletes of the chats its requests made, since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatsDeleted {
    pub deleted: u64,
    pub failed: u64,
}

/// A lane's browser identity and network path as `prq status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceStatus {
    /// The user agent its browser sends; `None` until the browser has started.
    pub user_agent: Option<String>,
    pub locale: String,
    pub timezone: String,
    /// The proxy, its password masked; `None`: a direct connection.
    pub proxy: Option<String>,
    /// `false`: a headed browser on a virtual display.
    pub headless: bool,
    /// The browser release the lane runs (`156.0.8078.129`); `None` until it started.
    pub browser_version: Option<String>,
    /// The version its profile ran with before the browser's last change of major
    /// version; `None`: no change seen.
    pub browser_updated_from: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    pub pending: usize,
    pub processing: usize,
}
