//! The runtime: the lanes of one `prq start`, the queue, and the requests in flight.
//!
//! All shared state sits behind one short-held mutex (never across an `.await`). The
//! queue decides; this module carries its decisions out: it hands dispatched requests
//! to lane tasks, tells lanes to stop, and tells each client how its request ended.
//! Answer text does not pass through here: a dispatched request's event sender goes to
//! its lane task, which forwards deltas straight to the client.
//!
//! This file holds the runtime's state; its work is in `runtime/`, one concern a file:
//! [`requests`] (what a request is handed and how it ends), [`lifecycle`] (start,
//! restart, stop, shutdown), [`admission`] (admission, dispatch, queue actions,
//! deadlines), [`lane_events`] (what lane tasks report), [`views`] (status, the queue
//! listing, events, readiness, metrics), [`drain`] and [`reconfigure`] (`prq reload`),
//! [`login_view`] (the panel's login view of a lane).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prq_protocol::control::{
    ChatsDeleted, LaneChange, LaneChangeKind, LaneDoctor, LaneState, LaneStatus, Mode, ModeStatus,
    QueueCounts, ReloadReport, RuntimeState, RuntimeStatus, StatusReport,
};
use prq_protocol::view::{QueueView, RequestView};
use prq_protocol::worker::{
    BrowserRelease, DeltaKind, Failure, FailureKind, Generate, LaneSpec, RequestId,
};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::time::Instant;

use crate::auth::Access;
use crate::config::{Config, Lane, LimitsConfig, OnLaneCrash};
use crate::home::Home;
use crate::lanes::{self, LaneCmd, LaneReports, Registry};
use crate::metrics::{Gauges, Metrics};
use crate::queue::{
    Abandoned, ActionError, AdmitError, Deadline, Deadlines, Entry, Expired, LaneIdx, LaneLoss,
    Leaving, Meta, Outcome, Queue, RateLimited, State,
};
use crate::ready::Readiness;
use crate::reload::{self, Step};
use crate::{relay, router};

mod admission;
mod drain;
mod lane_events;
mod lifecycle;
mod login_view;
mod reconfigure;
mod requests;
mod views;

use admission::enforce_deadlines;
use drain::Drain;
pub use drain::{DrainCause, DrainError, DrainStart};
use lifecycle::lanes_to_run;
pub use lifecycle::StartReply;
pub use login_view::{LoginView, ViewError};
pub use requests::{End, Failed, QueueEvent, ReqEvent, Submission, SubmitError, Ticket, Urls};

/// After a lane crash, other lanes finish what they are generating; this bounds it.
const DRAIN_GRACE: Duration = Duration::from_secs(600);
/// How long a lane gets to answer `prq doctor`: loading its page in a second tab (up
/// to 30 s), waiting for its elements (`cdp_timeout_ms`, 10 s by default), and the
/// screenshot, with room to spare.
const DOCTOR_DEADLINE: Duration = Duration::from_secs(90);

pub struct Runtime {
    home: Home,
    urls: Urls,
    registry: Arc<Registry>,
    inner: Mutex<Inner>,
    /// Bumped on every change that status waiters care about.
    changed: watch::Sender<u64>,
    /// Every request state change (as the JSON the queue API lists), progress of
    /// streaming requests (throttled), and runtime/lane changes (the status report).
    events: broadcast::Sender<QueueEvent>,
    /// Wakes the deadline task when the next deadline may have moved earlier.
    deadlines_moved: Notify,
}

struct Inner {
    state: RuntimeState,
    reason: Option<String>,
    /// Incremented by every start, so a lane task of an earlier start cannot touch
    /// the current one.
    generation: u64,
    config_path: Option<PathBuf>,
    mode: ModeStatus,
    lanes: Vec<Slot>,
    /// Queue lane index → slot index.
    enabled: Vec<usize>,
    queue: Queue,
    jobs: HashMap<RequestId, Job>,
    metrics: Metrics,
    /// The config of the current (or last) start, or of the last reload.
    config: Arc<Config>,
    /// The config the daemon started with: what it took once (the HTTP listener's
    /// limits, the log files) runs as this says until the daemon restarts.
    boot: Arc<Config>,
    /// Keys, admin sessions and the allow-list, from that config.
    access: Arc<Access>,
    /// Admitted, unfinished requests per client (API key name, else address).
    per_client: HashMap<String, usize>,
    /// The runtime or a lane changed since the last status event.
    status_changed: bool,
    /// Set while the runtime is `Draining`.
    drain: Option<Drain>,
    /// Login views opened so far (each view's ID).
    views_opened: u64,
}

struct Slot {
    lane: Lane,
    state: LaneState,
    worker_pid: Option<u32>,
    browser_pid: Option<u32>,
    logged_in: Option<bool>,
    /// What the lane's browser said its user agent is, when it was last ready.
    user_agent: Option<String>,
    /// Which browser release it runs, as of when it was last ready.
    release: Option<BrowserRelease>,
    note: Option<String>,
    qidx: Option<LaneIdx>,
    cmd: Option<mpsc::UnboundedSender<LaneCmd>>,
    /// When the lane was restarted, within the restart window.
    restarts: VecDeque<Instant>,
    /// A reload removed it: it drains, then it is gone (and no longer listed).
    retired: bool,
    /// A reload changed its settings: it restarts with these once its current
    /// request ends.
    next: Option<Lane>,
    /// Its restart (to `next`) waits for its turn: a prefix's lanes restart one at a
    /// time, so the prefix keeps serving while a reload restarts them all.
    turn_waits: bool,
    /// Who holds the panel's login view of the lane, while one is open.
    view: Option<login_view::ViewHolder>,
    /// `after_reply = "delete"`: the chats its requests made that it deleted, and the
    /// deletes that failed, since the daemon started.
    chats: ChatsDeleted,
}

struct Job {
    generate: Generate,
    tx: relay::Sender,
    /// Who sent it, for the per-client limit.
    client: String,
    /// When progress was last published for it.
    progress_published: Option<Instant>,
    /// Its attachments' directory: removed once the request's record and its client's
    /// handler have both let go.
    _files: Option<Arc<crate::attachments::RequestDir>>,
}

impl Runtime {
    /// A stopped runtime; `config` (the daemon's) sets access and limits until the
    /// first start.
    pub fn new(
        home: Home,
        urls: Urls,
        registry: Arc<Registry>,
        config_path: Option<PathBuf>,
        config: Config,
        access: Access,
    ) -> Arc<Self> {
        let config = Arc::new(config);
        let runtime = Arc::new(Self {
            home,
            urls,
            registry,
            inner: Mutex::new(Inner {
                state: RuntimeState::Stopped,
                reason: Some("not started yet; run `prq start`".into()),
                generation: 0,
                config_path,
                mode: ModeStatus {
                    configured: Mode::Concurrent,
                    effective: Mode::Concurrent,
                    reason: None,
                },
                lanes: Vec::new(),
                enabled: Vec::new(),
                queue: Queue::new(Mode::Serial, 0, Deadlines::default(), Vec::new()),
                jobs: HashMap::new(),
                metrics: Metrics::default(),
                boot: config.clone(),
                config,
                access: Arc::new(access),
                per_client: HashMap::new(),
                status_changed: false,
                drain: None,
                views_opened: 0,
            }),
            changed: watch::Sender::new(0),
            events: broadcast::Sender::new(1024),
            deadlines_moved: Notify::new(),
        });
        tokio::spawn(enforce_deadlines(runtime.clone()));
        runtime
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits until `done` holds for the runtime's state, or the deadline passes.
    async fn wait_for(&self, deadline: Duration, done: impl Fn(&Inner) -> bool) -> bool {
        let mut rx = self.changed.subscribe();
        let wait = async {
            loop {
                if done(&self.lock()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }

    /// Keys, sessions and the allow-list in force.
    pub fn access(&self) -> Arc<Access> {
        self.lock().access.clone()
    }

    /// The request limits in force.
    pub fn limits(&self) -> LimitsConfig {
        self.lock().config.limits.clone()
    }

    /// How often a reply that broke the tool or answer format is asked for again.
    pub fn tool_retries(&self) -> u32 {
        self.lock().config.tool_retries
    }

    /// Where requests keep their attachments.
    pub fn uploads_dir(&self) -> PathBuf {
        self.home.uploads_dir()
    }

    /// How `https` images are fetched.
    pub fn fetch_config(&self) -> crate::attachments::FetchConfig {
        self.lock().config.attachments.clone()
    }

    /// The provider and attachment rules of the lanes `model` routes to (the first
    /// enabled lane's: lanes of one prefix serve one site); `None` when it routes to
    /// none (admission then says so).
    pub fn attachment_rules(&self, model: &str) -> Option<(String, crate::attachments::Rules)> {
        let inner = self.lock();
        let menus = inner.menus();
        let prefix = router::route(model, &menus)?.prefix;
        inner
            .enabled
            .iter()
            .map(|&i| &inner.lanes[i].lane)
            .find(|l| l.prefix == prefix)
            .map(|l| (l.provider.clone(), l.attachments.clone()))
    }

    /// How often a quiet SSE stream gets a keep-alive comment.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.lock().config.keep_alive_s)
    }
}

impl Inner {
    fn lane_id(&self, qidx: LaneIdx) -> Option<&str> {
        let slot = *self.enabled.get(qidx)?;
        Some(self.lanes[slot].lane.id.as_str())
    }

    fn tell_lane(&self, qidx: LaneIdx, cmd: LaneCmd) {
        if let Some(tx) = &self.lanes[self.enabled[qidx]].cmd {
            let _ = tx.send(cmd);
        }
    }
}

impl Slot {
    fn new(lane: Lane, note: Option<String>) -> Self {
        Self {
            lane,
            state: LaneState::Stopped,
            worker_pid: None,
            browser_pid: None,
            logged_in: None,
            user_agent: None,
            release: None,
            note,
            qidx: None,
            cmd: None,
            restarts: VecDeque::new(),
            retired: false,
            next: None,
            turn_waits: false,
            view: None,
            chats: ChatsDeleted::default(),
        }
    }

    fn is_alive(&self) -> bool {
        self.cmd.is_some()
    }

    /// Whether one more restart stays within the limit (forgetting old restarts).
    fn may_restart(&mut self, now: Instant, config: &Config) -> bool {
        let window = Duration::from_secs(config.restart_window_s);
        while self.restarts.front().is_some_and(|&t| now >= t + window) {
            self.restarts.pop_front();
        }
        self.restarts.len() < config.restart_limit
    }
}

/// A wait in whole seconds, rounded up (what `Retry-After` carries): a client that
/// waits that long finds the lane free.
pub fn whole_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}
