//! The runtime: the lanes of one `prq start`, the queue, and the requests in flight.
//!
//! All shared state sits behind one short-held mutex (never across an `.await`). The
//! queue decides; this module carries its decisions out: it hands dispatched requests
//! to lane tasks, tells lanes to stop, and tells each client how its request ended.
//! Answer text does not pass through here: a dispatched request's event sender goes to
//! its lane task, which forwards deltas straight to the client.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prq_protocol::control::{
    LaneChange, LaneChangeKind, LaneDoctor, LaneState, LaneStatus, Mode, ModeStatus, QueueCounts,
    ReloadReport, RuntimeState, RuntimeStatus, StatusReport,
};
use prq_protocol::view::{QueueView, RequestView};
use prq_protocol::worker::{DeltaKind, Failure, FailureKind, Generate, LaneSpec, RequestId};
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

mod drain;
use drain::Drain;
pub use drain::{DrainCause, DrainError, DrainStart};

/// After a lane crash, other lanes finish what they are generating; this bounds it.
const DRAIN_GRACE: Duration = Duration::from_secs(600);
/// How long a lane gets to answer `prq doctor`: loading its page in a second tab (up
/// to 30 s), waiting for its elements (`cdp_timeout_ms`, 10 s by default), and the
/// screenshot, with room to spare.
const DOCTOR_DEADLINE: Duration = Duration::from_secs(90);

/// What a client hears about its request.
#[derive(Debug, Clone, PartialEq)]
pub enum ReqEvent {
    /// A lane took the request.
    Started {
        lane: String,
    },
    Delta {
        kind: DeltaKind,
        text: String,
    },
    /// The last event: how the request ended.
    End(End),
}

#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Completed,
    Stopped,
    Cancelled,
    TimedOut(Deadline),
    Failed(Failed),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Failed {
    /// The site or the worker reported it.
    Site(Failure),
    /// The lane serving the request died; `restarting`: the `restart` policy is
    /// starting it again (else the runtime stopped).
    LaneCrashed {
        lane: String,
        cause: String,
        restarting: bool,
    },
    /// The runtime stopped while the request waited.
    RuntimeStopped { reason: String },
    /// Its client fell this many bytes behind reading the answer; it was stopped.
    ClientTooSlow { budget: usize },
    /// A reload removed every lane of its prefix while it waited.
    LaneRemoved { prefix: String },
}

impl End {
    fn outcome(&self) -> Outcome {
        match self {
            End::Completed => Outcome::Completed,
            End::Stopped => Outcome::Stopped,
            End::TimedOut(_) => Outcome::TimedOut,
            End::Cancelled | End::Failed(_) => Outcome::Failed,
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the runtime is stopped ({reason}); run `prq start` to start it again")]
    RuntimeStopped { reason: String },
    #[error("the model `{model}` does not exist; served models: {}", served.join(", "))]
    UnknownModel { model: String, served: Vec<String> },
    #[error("the queue is full ({0} requests waiting); retry later")]
    QueueFull(usize),
    #[error("client {client} already has {limit} requests in the queue (limits.max_concurrent_per_client); retry when one ends")]
    ClientBusy { client: String, limit: usize },
    #[error("every lane of `{prefix}` is rate limited by its site (cooling); the soonest is free in {retry_after_s} s ([accounts] wait_for_cooldown = false)")]
    Cooling { prefix: String, retry_after_s: u64 },
    #[error("this prq host is draining ({0}) and takes no new requests; send the request to another host, or run `prq start` on this one")]
    Draining(&'static str),
}

/// A chat request as the API hands it over.
#[derive(Debug, Clone)]
pub struct Submission {
    pub messages: Vec<prq_protocol::worker::ChatMessage>,
    /// For listings; `meta.model` is routed.
    pub meta: Meta,
}

/// An admitted request: its events, and a guard that cancels or stops it when the
/// client goes away (the ticket is dropped before the end event was read).
pub struct Ticket {
    pub id: RequestId,
    pub events: relay::Receiver,
    _guard: AbandonGuard,
}

struct AbandonGuard {
    runtime: Arc<Runtime>,
    id: RequestId,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        self.runtime.abandon(self.id);
    }
}

/// The URLs the daemon serves, fixed at daemon start.
#[derive(Debug, Clone)]
pub struct Urls {
    pub api: String,
    pub panel: String,
    pub sandbox: Option<String>,
}

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
}

struct Slot {
    lane: Lane,
    state: LaneState,
    worker_pid: Option<u32>,
    browser_pid: Option<u32>,
    logged_in: Option<bool>,
    /// What the lane's browser said its user agent is, when it was last ready.
    user_agent: Option<String>,
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
}

struct Job {
    generate: Generate,
    tx: relay::Sender,
    /// Who sent it, for the per-client limit.
    client: String,
    /// When progress was last published for it.
    progress_published: Option<Instant>,
}

/// Progress events for one request are published at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// What the queue's event stream carries.
#[derive(Debug, Clone)]
pub enum QueueEvent {
    /// A request changed state, or streamed more text.
    Request(Box<RequestView>),
    /// The runtime or a lane changed: the full status report.
    Status(Box<StatusReport>),
}

/// How `prq start` went.
pub enum StartReply {
    Started { already: bool },
    Failed(String),
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

    /// Starts every lane from the config as it is on disk now, and waits until each is
    /// ready or one has failed. A start already under way is waited for instead.
    pub async fn start(self: &Arc<Self>, config_path: Option<PathBuf>) -> StartReply {
        enum Next {
            Launch,
            WaitForDrain,
            WaitForStart,
            Refuse(String),
        }
        loop {
            let next = {
                let mut inner = self.lock();
                match inner.state {
                    RuntimeState::Stopped if inner.lanes.iter().all(|s| !s.is_alive()) => {
                        // Claim the start under the lock: one launch at a time.
                        inner.state = RuntimeState::Starting;
                        inner.reason = None;
                        Next::Launch
                    }
                    // Lanes of a stopped runtime may still be finishing what they generate.
                    RuntimeState::Stopped => Next::WaitForDrain,
                    RuntimeState::Draining => match self.call_off_drain(&mut inner) {
                        Ok(()) => return StartReply::Started { already: true },
                        Err(why) => Next::Refuse(why),
                    },
                    _ => Next::WaitForStart,
                }
            };
            match next {
                Next::Launch => break,
                Next::Refuse(why) => return StartReply::Failed(why),
                Next::WaitForDrain => {
                    let drained = self
                        .wait_for(DRAIN_GRACE, |i| i.lanes.iter().all(|s| !s.is_alive()))
                        .await;
                    if !drained {
                        return StartReply::Failed(
                            "lanes of the last runtime are still finishing".into(),
                        );
                    }
                }
                Next::WaitForStart => {
                    self.wait_for(Duration::MAX, |i| i.state != RuntimeState::Starting)
                        .await;
                    let inner = self.lock();
                    return match inner.state {
                        RuntimeState::Running => StartReply::Started { already: true },
                        _ => StartReply::Failed(inner.reason.clone().unwrap_or_default()),
                    };
                }
            }
        }
        self.bump();
        let path = config_path.or_else(|| self.lock().config_path.clone());
        let loaded = match &path {
            Some(p) => Config::load(p),
            None => Ok(Config::builtin()),
        };
        let loaded = loaded.and_then(|c| Ok((Access::from_config(&c)?, c)));
        let (access, config) = match loaded {
            Ok(pair) => pair,
            Err(e) => {
                let reason = format!("{e:#}");
                let mut inner = self.lock();
                inner.state = RuntimeState::Stopped;
                inner.reason = Some(reason.clone());
                drop(inner);
                self.bump();
                return StartReply::Failed(reason);
            }
        };
        let start_timeout = config.start_timeout();
        self.lock().access = Arc::new(access);
        self.launch(config, path);
        self.wait_for(start_timeout + Duration::from_secs(5), |i| {
            i.state != RuntimeState::Starting
        })
        .await;
        let inner = self.lock();
        match inner.state {
            RuntimeState::Running => StartReply::Started { already: false },
            // A drain can begin as soon as the lanes are up.
            RuntimeState::Draining => StartReply::Started { already: false },
            RuntimeState::Stopped => StartReply::Failed(inner.reason.clone().unwrap_or_default()),
            RuntimeState::Starting => {
                StartReply::Failed("lanes did not become ready in time".into())
            }
        }
    }

    fn launch(self: &Arc<Self>, config: Config, path: Option<PathBuf>) {
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        inner.config_path = path;

        let all = config.lanes();
        let (notes, mode) = lanes_to_run(&config, &all);
        let enabled: Vec<usize> = (0..all.len()).filter(|&i| notes[i].is_none()).collect();
        let effective = mode.effective;
        inner.mode = mode;
        let prefixes = enabled.iter().map(|&i| all[i].prefix.clone()).collect();
        inner
            .queue
            .reset_lanes(effective, config.max_pending, config.deadlines(), prefixes);
        inner.queue.set_accounts(config.accounts.settings());
        inner.lanes = all
            .into_iter()
            .zip(notes)
            .map(|(lane, note)| Slot::new(lane, note))
            .collect();
        for (qidx, &slot_idx) in enabled.iter().enumerate() {
            inner.lanes[slot_idx].qidx = Some(qidx);
            self.spawn_lane(&mut inner, slot_idx, generation, &config);
        }
        inner.enabled = enabled;
        inner.config = Arc::new(config);
        inner.status_changed = true;
        tracing::info!(
            lanes = inner.enabled.len(),
            mode = effective.as_str(),
            "runtime starting"
        );
        drop(inner);
        self.bump();
    }

    fn lane_spec(&self, config: &Config, lane: &Lane) -> LaneSpec {
        lane.spec(config, &self.home, self.urls.sandbox.clone())
    }

    /// `prq doctor`: has each running lane (of `prefix`) check its page, at once.
    pub async fn doctor(&self, prefix: Option<&str>, dir: &std::path::Path) -> Vec<LaneDoctor> {
        let asked: Vec<_> = {
            let inner = self.lock();
            inner
                .lanes
                .iter()
                .filter(|s| prefix.is_none_or(|p| s.lane.prefix == p))
                .map(|s| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let asked = s.cmd.as_ref().is_some_and(|cmd| {
                        cmd.send(LaneCmd::Doctor {
                            dir: dir.to_owned(),
                            tx,
                        })
                        .is_ok()
                    });
                    let state = s.state;
                    (s.lane.clone(), asked.then_some(rx), state)
                })
                .collect()
        };
        let answers = asked.into_iter().map(|(lane, rx, state)| async move {
            let report = match rx {
                None => Err(format!(
                    "the lane is {} (not running); `prq start` starts it",
                    state.as_str()
                )),
                Some(rx) => match tokio::time::timeout(DOCTOR_DEADLINE, rx).await {
                    Ok(Ok(report)) => report,
                    Ok(Err(_)) => Err("the lane ended before it answered".into()),
                    Err(_) => Err(format!("no answer within {} s", DOCTOR_DEADLINE.as_secs())),
                },
            };
            LaneDoctor {
                id: lane.id,
                provider: lane.provider,
                prefix: lane.prefix,
                account: lane.account,
                report,
            }
        });
        futures::future::join_all(answers).await
    }

    /// Keys, sessions and the allow-list in force.
    pub fn access(&self) -> Arc<Access> {
        self.lock().access.clone()
    }

    /// The request limits in force.
    pub fn limits(&self) -> LimitsConfig {
        self.lock().config.limits.clone()
    }

    /// How often a quiet SSE stream gets a keep-alive comment.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.lock().config.keep_alive_s)
    }

    /// Admits a request; its events arrive on the ticket.
    pub fn submit(self: &Arc<Self>, sub: Submission) -> Result<Ticket, SubmitError> {
        let mut inner = self.lock();
        if let Some(limit) = inner.config.limits.max_concurrent_per_client {
            if inner.per_client.get(&sub.meta.client).copied().unwrap_or(0) >= limit {
                return Err(SubmitError::ClientBusy {
                    client: sub.meta.client,
                    limit,
                });
            }
        }
        if inner.state == RuntimeState::Stopped {
            return Err(SubmitError::RuntimeStopped {
                reason: inner.reason.clone().unwrap_or_default(),
            });
        }
        if let Some(by) = inner.drain.as_ref().and_then(Drain::refusing) {
            return Err(SubmitError::Draining(by));
        }
        let served = inner.served_prefixes();
        let model = sub.meta.model.clone();
        let Some((prefix, thinking)) = router::route(&model, &served) else {
            // The ID goes into the error message: keep an absurd one short.
            let mut model = model;
            if let Some((cut, _)) = model.char_indices().nth(80) {
                model.truncate(cut);
                model.push('…');
            }
            return Err(SubmitError::UnknownModel {
                model,
                served: router::model_ids(&served),
            });
        };
        let client = sub.meta.client.clone();
        let id = match inner.queue.admit(prefix, sub.meta, Instant::now()) {
            Ok(id) => id,
            Err(AdmitError::Full(n)) => return Err(SubmitError::QueueFull(n)),
            Err(AdmitError::Cooling {
                prefix,
                retry_after,
            }) => {
                return Err(SubmitError::Cooling {
                    prefix,
                    retry_after_s: whole_secs(retry_after),
                })
            }
            Err(AdmitError::NoLane(_)) => unreachable!("routed prefixes have lanes"),
        };
        let (tx, rx) = relay::channel(inner.config.limits.client_buffer_bytes);
        let generate = Generate {
            id,
            thinking,
            messages: sub.messages,
        };
        *inner.per_client.entry(client.clone()).or_default() += 1;
        inner.jobs.insert(
            id,
            Job {
                generate,
                tx,
                client,
                progress_published: None,
            },
        );
        tracing::debug!(request = id, %model, "admitted");
        self.pump(&mut inner);
        drop(inner);
        Ok(Ticket {
            id,
            events: rx,
            _guard: AbandonGuard {
                runtime: self.clone(),
                id,
            },
        })
    }

    /// The model IDs that route now.
    pub fn models(&self) -> Vec<String> {
        router::model_ids(&self.lock().served_prefixes())
    }

    /// Sends dispatched requests to their lanes and publishes what changed.
    fn pump(&self, inner: &mut Inner) {
        for (id, qidx) in inner.queue.dispatch(Instant::now()) {
            let slot_idx = inner.enabled[qidx];
            let lane_id = inner.lanes[slot_idx].lane.id.clone();
            let job = &inner.jobs[&id];
            job.tx.send(ReqEvent::Started {
                lane: lane_id.clone(),
            });
            let slot = &mut inner.lanes[slot_idx];
            slot.state = LaneState::Busy;
            inner.status_changed = true;
            tracing::debug!(request = id, lane = %lane_id, "dispatched");
            let cmd = LaneCmd::Run {
                generate: job.generate.clone(),
                tx: job.tx.clone(),
            };
            if let Some(lane) = &slot.cmd {
                let _ = lane.send(cmd);
            }
        }
        for qidx in inner.queue.to_wake() {
            let slot = &mut inner.lanes[inner.enabled[qidx]];
            tracing::info!(lane = %slot.lane.id, "a request waits: waking the lane");
            // Its browser starts again, as at a start.
            slot.state = LaneState::Starting;
            inner.status_changed = true;
            inner.tell_lane(qidx, LaneCmd::Wake);
        }
        // Building the reports cost a third of all the CPU time a request took on echo
        // lanes (prq_bench: 6 000 → 9 400 requests/s without them); with nobody
        // watching, they are not built.
        let watched = self.events.receiver_count() > 0;
        for event in inner.queue.drain_events() {
            let Some(entry) = inner.queue.get(event.id) else {
                continue;
            };
            if event.state.is_terminal() {
                inner.metrics.ended(entry);
                // One line per request at the default level: how it ended. (Its way
                // there is at debug; per-request log lines were a measurable share
                // of prq's own cost per request.)
                let ms = |d: Duration| d.as_millis() as u64;
                tracing::info!(
                    request = entry.id,
                    model = %entry.meta.model,
                    client = %entry.meta.client,
                    lane = entry.lane.and_then(|q| inner.lane_id(q)).unwrap_or("-"),
                    state = ?entry.state,
                    error = entry.error,
                    wait_ms = entry.started.map(|s| ms(s - entry.admitted)),
                    took_ms = entry.ended.map(|e| ms(e - entry.admitted)),
                    chars = entry.chars,
                    "request ended"
                );
            }
            if !watched {
                continue;
            }
            // The entry may have moved on within this pump; report it as of the event.
            let mut view = inner.entry_view(entry, Instant::now());
            view.state = event.state;
            view.lane = event.lane.and_then(|q| inner.lane_id(q)).map(str::to_owned);
            // A subscriber that left since is fine.
            let _ = self.events.send(QueueEvent::Request(Box::new(view)));
        }
        if inner.status_changed {
            inner.status_changed = false;
            if watched {
                let status = self.status_of(inner);
                let _ = self.events.send(QueueEvent::Status(Box::new(status)));
            }
        }
        self.bump();
        self.deadlines_moved.notify_one();
    }

    /// The client went away.
    fn abandon(&self, id: RequestId) {
        let mut inner = self.lock();
        match inner.queue.abandon(id, Instant::now()) {
            Abandoned::Cancelled => {
                inner.end_job(id, End::Cancelled);
                tracing::info!(request = id, "cancelled: client went away");
                self.pump(&mut inner);
            }
            Abandoned::Stop(qidx) => {
                tracing::info!(request = id, "stopping: client went away");
                inner.tell_lane(qidx, LaneCmd::Stop { id });
            }
            Abandoned::Nothing => {}
        }
    }

    /// A request's client is `unread` bytes behind reading its answer, over its
    /// budget (from its lane task): the request is stopped, and ends `client_too_slow`.
    pub(crate) fn client_too_slow(&self, id: RequestId, unread: usize) {
        let mut inner = self.lock();
        if let Some(qidx) = inner.queue.too_slow(id, Instant::now()) {
            tracing::warn!(
                request = id,
                unread,
                budget = inner.config.limits.client_buffer_bytes,
                "client_too_slow: its client does not read the answer; stopping"
            );
            inner.tell_lane(qidx, LaneCmd::Stop { id });
            self.pump(&mut inner);
        }
    }

    /// Cancels a pending request (queue API and CLI).
    pub fn cancel(&self, id: RequestId) -> Result<(), ActionError> {
        let mut inner = self.lock();
        inner.queue.cancel(id, Instant::now())?;
        tracing::info!(request = id, "cancelled");
        inner.end_job(id, End::Cancelled);
        self.pump(&mut inner);
        Ok(())
    }

    /// Stops a processing request (queue API and CLI). It ends when its lane confirms.
    pub fn stop(&self, id: RequestId) -> Result<(), ActionError> {
        let mut inner = self.lock();
        let qidx = inner.queue.stop(id, Instant::now())?;
        tracing::info!(request = id, "stopping");
        inner.tell_lane(qidx, LaneCmd::Stop { id });
        self.pump(&mut inner);
        Ok(())
    }

    /// Stops every processing request; returns their IDs.
    pub fn stop_all(&self) -> Vec<RequestId> {
        let mut inner = self.lock();
        let stopped = inner.queue.stop_all(Instant::now());
        for &(id, qidx) in &stopped {
            inner.tell_lane(qidx, LaneCmd::Stop { id });
        }
        tracing::info!(count = stopped.len(), "stop all");
        self.pump(&mut inner);
        stopped.into_iter().map(|(id, _)| id).collect()
    }

    /// Cancels every pending request; returns their IDs.
    pub fn clear(&self) -> Vec<RequestId> {
        let mut inner = self.lock();
        let cancelled = inner.queue.clear(Instant::now());
        for &id in &cancelled {
            inner.end_job(id, End::Cancelled);
        }
        tracing::info!(count = cancelled.len(), "queue cleared");
        self.pump(&mut inner);
        cancelled
    }

    /// Text arrived for a request (from its lane task): moves its deadlines, and now
    /// and then tells the queue's watchers how far it got.
    pub(crate) fn progress(&self, id: RequestId, chars: usize) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.queue.progress(id, chars, now);
        let due = match inner.jobs.get(&id) {
            Some(job) => job
                .progress_published
                .is_none_or(|at| now >= at + PROGRESS_EVERY),
            None => false,
        };
        if due && self.events.receiver_count() > 0 {
            if let Some(job) = inner.jobs.get_mut(&id) {
                job.progress_published = Some(now);
            }
            if let Some(e) = inner.queue.get(id) {
                let _ = self
                    .events
                    .send(QueueEvent::Request(Box::new(inner.entry_view(e, now))));
            }
        }
    }

    /// Applies the deadlines now; returns when they next need applying.
    fn expire(&self) -> Option<Instant> {
        let mut inner = self.lock();
        let expired = inner.queue.expire(Instant::now());
        let any = !expired.is_empty();
        for expired in expired {
            match expired {
                Expired::Waiting { id, deadline } => {
                    tracing::info!(
                        request = id,
                        deadline = deadline.as_str(),
                        "timed out waiting"
                    );
                    inner.end_job(id, End::TimedOut(deadline));
                }
                Expired::Stop { id, lane, deadline } => {
                    tracing::info!(
                        request = id,
                        deadline = deadline.as_str(),
                        "timed out; stopping"
                    );
                    inner.tell_lane(lane, LaneCmd::Stop { id });
                }
                Expired::Cooled { lane } => {
                    let slot = inner.enabled[lane];
                    let s = &mut inner.lanes[slot];
                    if s.state == LaneState::Cooling {
                        s.state = LaneState::Idle;
                        tracing::info!(lane = %s.lane.id, "cooled down: takes requests again");
                    }
                    inner.status_changed = true;
                }
                Expired::LaneStuck { id, lane } => {
                    let reason = format!(
                        "did not end request {id} within {:?} of being told to stop",
                        crate::queue::STOP_GRACE
                    );
                    inner.tell_lane(lane, LaneCmd::Kill { reason });
                }
                Expired::Sleep { lane } => {
                    tracing::info!(
                        lane = inner.lane_id(lane).unwrap_or("-"),
                        "idle: closing its browser"
                    );
                    inner.tell_lane(lane, LaneCmd::Sleep);
                }
            }
        }
        // Only when something changed: pumping wakes this task again.
        if any {
            self.pump(&mut inner);
        }
        inner.queue.next_deadline()
    }

    /// One listing of the queue: live requests (pending in order, then processing) and
    /// the most recent finished ones.
    pub fn queue_view(&self, finished: usize) -> QueueView {
        let inner = self.lock();
        let now = Instant::now();
        let requests = inner
            .queue
            .live()
            .map(|e| inner.entry_view(e, now))
            .collect();
        let history: Vec<&Entry> = inner.queue.history().collect();
        let finished = history
            .iter()
            .rev()
            .take(finished)
            .map(|e| inner.entry_view(e, now))
            .collect();
        QueueView {
            runtime: RuntimeStatus {
                state: inner.state,
                reason: inner.reason.clone(),
            },
            pending: inner.queue.pending_len(),
            processing: inner.queue.processing_len(),
            requests,
            finished,
        }
    }

    /// One request, live or finished (as long as the history holds it).
    pub fn request_view(&self, id: RequestId) -> Option<RequestView> {
        let inner = self.lock();
        let e = inner.queue.get(id)?;
        Some(inner.entry_view(e, Instant::now()))
    }

    /// Every request and runtime change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<QueueEvent> {
        self.events.subscribe()
    }

    /// Counts a request refused before it was queued, for `/metrics`.
    pub fn rejected(&self, status: u16, reason: &'static str) {
        self.lock().metrics.rejected(status, reason);
    }

    /// The Prometheus text for `GET /metrics`.
    pub fn metrics_text(&self) -> String {
        let inner = self.lock();
        // Every served prefix gets a series, 0 included: a balancer's or an autoscaler's
        // query then reads an empty queue instead of no data.
        let served = inner.served_prefixes();
        let mut pending: std::collections::BTreeMap<&str, usize> =
            served.iter().map(|p| (p.as_str(), 0)).collect();
        for e in inner.queue.live().filter(|e| e.state == State::Pending) {
            *pending.entry(e.prefix.as_str()).or_default() += 1;
        }
        // A lane a reload removed is listed until it has stopped, as in `prq status`.
        let lanes = inner
            .lanes
            .iter()
            .filter(|s| !s.retired || s.is_alive())
            .map(|s| {
                (
                    s.lane.id.as_str(),
                    s.lane.prefix.as_str(),
                    s.state.as_str(),
                    usize::from(s.state == LaneState::Busy),
                )
            })
            .collect();
        let now = Instant::now();
        let cooling = inner
            .lanes
            .iter()
            .filter_map(|s| {
                let left = inner.queue.cooling_left(s.qidx?, now)?;
                Some((s.lane.id.as_str(), s.lane.prefix.as_str(), left))
            })
            .collect();
        inner.metrics.render(&Gauges {
            pending_by_prefix: pending,
            lanes,
            cooling,
            runtime_state: inner.state.as_str(),
            ready: inner.readiness().ready,
        })
    }

    // ----- called by lane tasks -----

    pub(crate) fn lane_ready(
        &self,
        slot: usize,
        generation: u64,
        worker_pid: u32,
        browser_pid: Option<u32>,
        logged_in: Option<bool>,
        user_agent: Option<String>,
    ) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        inner.status_changed = true;
        let s = &mut inner.lanes[slot];
        s.state = LaneState::Idle;
        s.worker_pid = Some(worker_pid);
        s.browser_pid = browser_pid;
        s.logged_in = logged_in;
        s.user_agent = user_agent;
        let qidx = s.qidx.expect("enabled lane");
        tracing::info!(lane = %s.lane.id, worker_pid, ?browser_pid, "lane ready");
        inner.queue.lane_ready(qidx);
        // Restarted by a reload while its account cooled: it cools on.
        if inner.queue.cooling_left(qidx, Instant::now()).is_some() {
            inner.lanes[slot].state = LaneState::Cooling;
        }
        let all_ready = inner
            .enabled
            .iter()
            .all(|&i| inner.lanes[i].state != LaneState::Starting);
        if inner.state == RuntimeState::Starting && all_ready {
            inner.state = RuntimeState::Running;
            tracing::info!("runtime running");
        }
        self.pump(&mut inner);
    }

    pub(crate) fn lane_finished(&self, slot: usize, generation: u64, id: RequestId, end: End) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if let End::Failed(Failed::Site(f)) = &end {
            if f.kind == FailureKind::RateLimited {
                return self.rate_limited(&mut inner, slot, id, f.clone());
            }
        }
        let Ok((_, state)) = inner.queue.finish(id, end.outcome(), Instant::now()) else {
            return;
        };
        let end = match (state, inner.queue.get(id).and_then(|e| e.deadline)) {
            (State::TimedOut, Some(deadline)) => End::TimedOut(deadline),
            _ if inner.queue.get(id).and_then(|e| e.error) == Some("client_too_slow") => {
                End::Failed(Failed::ClientTooSlow {
                    budget: inner.config.limits.client_buffer_bytes,
                })
            }
            _ => end,
        };
        tracing::debug!(request = id, ?state, "finished");
        inner.end_job(id, end);
        let s = &mut inner.lanes[slot];
        if s.state == LaneState::Busy {
            s.state = LaneState::Idle;
            inner.status_changed = true;
        }
        self.pump(&mut inner);
    }

    /// A lane's site said rate limit: the lane cools, and its request goes to another
    /// lane or fails (see [`Queue::rate_limited`]).
    fn rate_limited(&self, inner: &mut Inner, slot: usize, id: RequestId, failure: Failure) {
        let now = Instant::now();
        let site_wait = failure.retry_after_s.map(Duration::from_secs);
        let Ok(limit) = inner.queue.rate_limited(id, site_wait, now) else {
            return;
        };
        let lane_id = inner.lanes[slot].lane.id.clone();
        let cooling = limit.until - now;
        tracing::warn!(lane = %lane_id, cooling_s = cooling.as_secs(), "rate limited by the site: the lane cools");
        let s = &mut inner.lanes[slot];
        s.state = LaneState::Cooling;
        inner.status_changed = true;
        let prefix = s.lane.prefix.clone();
        match limit.request {
            RateLimited::Requeued => {
                tracing::info!(request = id, lane = %lane_id, "requeued: rate limited before anything was streamed")
            }
            RateLimited::Failed { retry_after } => {
                let failure = Failure {
                    retry_after_s: Some(whole_secs(retry_after)),
                    ..failure
                };
                inner.end_job(id, End::Failed(Failed::Site(failure)));
            }
        }
        for other in limit.also_failed {
            let retry_after_s = inner.queue.soonest_free(&prefix, now).map_or(0, whole_secs);
            let failure = Failure {
                kind: FailureKind::RateLimited,
                message: format!(
                    "every lane of `{prefix}` is rate limited by its site (cooling); the soonest is free in {retry_after_s} s ([accounts] wait_for_cooldown = false)"
                ),
                retry_after_s: Some(retry_after_s),
            };
            inner.end_job(other, End::Failed(Failed::Site(failure)));
        }
        self.pump(inner);
    }

    /// The lane's browser is closed after it was told to sleep.
    pub(crate) fn lane_asleep(&self, slot: usize, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let s = &mut inner.lanes[slot];
        s.browser_pid = None;
        // A lane woken before its worker said it slept is starting again already.
        if s.state == LaneState::Idle {
            s.state = LaneState::Asleep;
            tracing::info!(lane = %s.lane.id, "lane asleep");
        }
        inner.status_changed = true;
        self.pump(&mut inner);
    }

    /// The lane's worker is gone. `crash` is `None` after an orderly shutdown.
    pub(crate) fn lane_gone(self: &Arc<Self>, slot: usize, generation: u64, crash: Option<String>) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let s = &inner.lanes[slot];
        if s.retired || s.next.is_some() || s.qidx.is_some_and(|q| inner.queue.is_removed(q)) {
            return self.lane_left(&mut inner, slot, generation, crash);
        }
        let now = Instant::now();
        inner.status_changed = true;
        let in_first_start = inner.state == RuntimeState::Starting;
        let restart = crash.is_some()
            && !in_first_start
            && matches!(inner.state, RuntimeState::Running | RuntimeState::Draining)
            && inner.config.on_lane_crash == OnLaneCrash::Restart
            && {
                let config = inner.config.clone();
                inner.lanes[slot].may_restart(now, &config)
            };
        let s = &mut inner.lanes[slot];
        let lane_id = s.lane.id.clone();
        s.cmd = None;
        s.state = match (&crash, restart) {
            (None, _) => LaneState::Stopped,
            (Some(_), true) => LaneState::Starting,
            (Some(_), false) => LaneState::Crashed,
        };
        if crash.is_none() || restart {
            s.worker_pid = None;
            s.browser_pid = None;
            s.logged_in = None;
        }
        let qidx = s.qidx.expect("enabled lane");
        let cause = crash.clone().unwrap_or_else(|| "its worker exited".into());
        match inner.queue.lane_down(qidx, restart, now) {
            LaneLoss::Failed(id) => inner.end_job(
                id,
                End::Failed(Failed::LaneCrashed {
                    lane: lane_id.clone(),
                    cause: cause.clone(),
                    restarting: restart,
                }),
            ),
            LaneLoss::Requeued(id) => {
                tracing::info!(request = id, lane = %lane_id, "requeued: nothing of it was streamed")
            }
            LaneLoss::Idle => {}
        }
        if crash.is_some() {
            tracing::error!(lane = %lane_id, %cause, "lane lost");
            if restart {
                inner.queue.lane_restarting(qidx);
                let s = &mut inner.lanes[slot];
                s.restarts.push_back(now);
                // 250 ms, 500 ms, 1 s, ... by restarts within the window.
                let backoff = Duration::from_millis(250) * (1 << (s.restarts.len() - 1).min(6));
                tracing::warn!(lane = %lane_id, ?backoff, "restarting the lane");
                let runtime = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(backoff).await;
                    runtime.respawn(slot, generation);
                });
            } else {
                let reason = if in_first_start {
                    format!("lane {lane_id} failed to start: {cause}")
                } else if inner.config.on_lane_crash == OnLaneCrash::Restart {
                    format!(
                        "lane {lane_id} crashed more than {} times in {} s: {cause}",
                        inner.config.restart_limit, inner.config.restart_window_s
                    )
                } else {
                    format!("lane {lane_id} crashed: {cause}")
                };
                self.stop_runtime(&mut inner, reason, DRAIN_GRACE);
            }
        }
        self.pump(&mut inner);
    }

    /// A lane that a reload took out is gone: a removed one stays gone, a changed one
    /// starts again with its new settings. Its loss is no crash of the runtime's.
    fn lane_left(
        self: &Arc<Self>,
        inner: &mut Inner,
        slot: usize,
        generation: u64,
        crash: Option<String>,
    ) {
        let now = Instant::now();
        inner.status_changed = true;
        let s = &mut inner.lanes[slot];
        s.cmd = None;
        s.worker_pid = None;
        s.browser_pid = None;
        s.logged_in = None;
        s.user_agent = None;
        s.state = LaneState::Stopped;
        let lane_id = s.lane.id.clone();
        // Only a lane that runs (so has a queue index) is taken out.
        let Some(qidx) = s.qidx else { return };
        if let Some(cause) = &crash {
            tracing::warn!(lane = %lane_id, %cause, "lane lost while a reload took it out");
        }
        // A changed lane starts again with its new settings; a removed one does not.
        let restarting = s.next.is_some() && inner.state == RuntimeState::Running;
        match inner.queue.lane_down(qidx, true, now) {
            LaneLoss::Failed(id) => inner.end_job(
                id,
                End::Failed(Failed::LaneCrashed {
                    lane: lane_id.clone(),
                    cause: crash.unwrap_or_else(|| "its worker exited".into()),
                    restarting,
                }),
            ),
            LaneLoss::Requeued(id) => {
                tracing::info!(request = id, lane = %lane_id, "requeued: nothing of it was streamed")
            }
            LaneLoss::Idle => {}
        }
        inner.fail_unserved();
        let s = &mut inner.lanes[slot];
        match s.next.take() {
            Some(next) if inner.state == RuntimeState::Running => {
                s.lane = next;
                s.note = None;
                s.restarts.clear();
                inner.queue.lane_restarting(qidx);
                tracing::info!(lane = %lane_id, "restarting with its new settings");
                let config = inner.config.clone();
                self.spawn_lane(inner, slot, generation, &config);
            }
            Some(next) => s.lane = next,
            None => tracing::info!(lane = %lane_id, "removed by a reload: stopped"),
        }
        self.pump(inner);
    }

    /// Reads the config again (`path`, else the one in use) and applies the difference
    /// lane by lane: added lanes start, removed ones drain and stop, changed ones
    /// restart after their current request; the others serve on. A config that does not
    /// load, or that moves the listener, changes nothing.
    pub fn reload(self: &Arc<Self>, path: Option<PathBuf>) -> Result<ReloadReport, String> {
        let path = path.or_else(|| self.lock().config_path.clone());
        let loaded = match &path {
            Some(p) => Config::load(p),
            None => Ok(Config::builtin()),
        };
        let (config, access) = loaded
            .and_then(|c| Ok((Access::from_config(&c)?, c)))
            .map(|(a, c)| (c, a))
            .map_err(|e| format!("nothing changed: {}", format!("{e:#}").trim_end()))?;
        let mut inner = self.lock();
        if config.listen != inner.config.listen {
            return Err(format!(
                "nothing changed: listen changed ({} → {}), and the API cannot move to another address while prq runs; put listen back, or run `prq stop` and `prq start` to listen there",
                inner.config.listen, config.listen
            ));
        }
        let shown_path = path.as_ref().map(|p| p.display().to_string());
        let settings = reload::changed_settings(&inner.boot, &inner.config, &config);
        match inner.state {
            RuntimeState::Starting => {
                return Err(
                    "nothing changed: the runtime is starting; reload once `prq start` is done"
                        .into(),
                )
            }
            // Its lanes finish their requests and stop: nothing to add to or restart.
            RuntimeState::Draining => {
                return Err(
                    "nothing changed: prq is draining (prq drain); `prq start` calls the drain off, then `prq reload` applies the config"
                        .into(),
                )
            }
            RuntimeState::Stopped => {
                inner.config_path = path;
                access.carry_sessions(&inner.access);
                inner.access = Arc::new(access);
                inner.config = Arc::new(config);
                drop(inner);
                self.bump();
                return Ok(ReloadReport {
                    config: shown_path,
                    applied: false,
                    lanes: Vec::new(),
                    settings,
                });
            }
            RuntimeState::Running => {}
        }
        let all = config.lanes();
        let (notes, mode) = lanes_to_run(&config, &all);
        let current: Vec<reload::Current> = inner
            .lanes
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.retired)
            .map(|(slot, s)| reload::Current {
                slot,
                lane: s.next.clone().unwrap_or_else(|| s.lane.clone()),
                on: s.qidx.is_some_and(|q| !inner.queue.is_removed(q)),
                spec: self.lane_spec(&inner.config, s.next.as_ref().unwrap_or(&s.lane)),
            })
            .collect();
        let wanted = all
            .into_iter()
            .zip(notes)
            .map(|(lane, note)| reload::Wanted {
                lane,
                on: note.is_none(),
                note,
            })
            .collect();
        let draining = inner
            .lanes
            .iter()
            .filter(|s| s.retired && s.is_alive())
            .map(|s| s.lane.id.clone())
            .collect();
        let steps = reload::plan(&current, draining, wanted, |lane| {
            self.lane_spec(&config, lane)
        });

        let generation = inner.generation;
        let grace = config.deadlines().total;
        inner
            .queue
            .set_settings(mode.effective, config.max_pending, config.deadlines());
        inner.queue.set_accounts(config.accounts.settings());
        inner.mode = mode;
        inner.config = Arc::new(config);
        access.carry_sessions(&inner.access);
        inner.access = Arc::new(access);
        inner.config_path = path;
        let config = inner.config.clone();
        let mut lanes = Vec::new();
        for step in steps {
            let (id, change, detail) = match step {
                Step::Keep { slot, lane, note } => {
                    let s = &mut inner.lanes[slot];
                    // An unchanged lane keeps its settings; one that does not run takes the new.
                    if s.qidx.is_none() {
                        s.lane = lane;
                    }
                    // A lane waiting to restart keeps saying so.
                    if s.next.is_none() {
                        s.note = note.clone();
                    }
                    (
                        s.lane.id.clone(),
                        LaneChangeKind::Unchanged,
                        note.unwrap_or_default(),
                    )
                }
                Step::Update {
                    slot,
                    lane,
                    changed,
                } => {
                    let id = lane.id.clone();
                    let s = &mut inner.lanes[slot];
                    let idle_suspend = lane.idle_suspend;
                    // A lane waiting to restart takes it with its restart.
                    match &mut s.next {
                        Some(next) => *next = lane,
                        None => s.lane = lane,
                    }
                    if let Some(qidx) = s.qidx {
                        inner.queue.set_idle_suspend(qidx, idle_suspend);
                    }
                    let detail = format!(
                        "{} applied, with no restart (from its next idle time)",
                        changed.join(", ")
                    );
                    (id, LaneChangeKind::Updated, detail)
                }
                Step::Restart {
                    slot,
                    lane,
                    changed,
                } => {
                    let id = lane.id.clone();
                    let changed = changed.join(", ");
                    let s = &mut inner.lanes[slot];
                    let Some(qidx) = s.qidx else {
                        // The planner restarts only running lanes; nothing to do.
                        continue;
                    };
                    let when = if s.is_alive() {
                        s.next = Some(lane);
                        s.note = Some(format!(
                            "{changed} changed by a reload: restarts after its current request"
                        ));
                        let busy = inner.queue.lane_request(qidx).is_some();
                        inner.queue.lane_leave(qidx, Leaving::Restart);
                        inner.tell_lane(qidx, LaneCmd::Shutdown { grace });
                        if busy {
                            "restarts with them after its current request"
                        } else {
                            "restarting with them"
                        }
                    } else {
                        s.lane = lane;
                        s.note = None;
                        inner.queue.lane_restarting(qidx);
                        self.spawn_lane(&mut inner, slot, generation, &config);
                        "starting with them"
                    };
                    let detail = format!("{changed} changed: {when}");
                    (id, LaneChangeKind::Restarting, detail)
                }
                Step::Start { slot, lane } => {
                    let id = lane.id.clone();
                    let s = &mut inner.lanes[slot];
                    s.note = None;
                    let detail = match s.qidx {
                        // Still finishing from an earlier reload: it starts again after.
                        Some(qidx) if s.is_alive() => {
                            s.next = Some(lane);
                            inner.queue.lane_leave(qidx, Leaving::Restart);
                            "starts after its current request"
                        }
                        Some(qidx) => {
                            s.lane = lane;
                            inner.queue.lane_restarting(qidx);
                            self.spawn_lane(&mut inner, slot, generation, &config);
                            "starting"
                        }
                        None => {
                            let prefix = lane.prefix.clone();
                            s.lane = lane;
                            let qidx = inner.queue.add_lane(prefix);
                            inner.lanes[slot].qidx = Some(qidx);
                            inner.enabled.push(slot);
                            self.spawn_lane(&mut inner, slot, generation, &config);
                            "starting"
                        }
                    };
                    (id, LaneChangeKind::Added, detail.to_string())
                }
                Step::Stop { slot, note } => {
                    let id = inner.lanes[slot].lane.id.clone();
                    let detail = self.take_out(&mut inner, slot, grace);
                    inner.lanes[slot].note = note.clone();
                    (
                        id,
                        LaneChangeKind::Removed,
                        format!("{detail}; {}", note.unwrap_or_default()),
                    )
                }
                Step::Remove { slot } => {
                    let id = inner.lanes[slot].lane.id.clone();
                    let detail = self.take_out(&mut inner, slot, grace);
                    inner.lanes[slot].retired = true;
                    (id, LaneChangeKind::Removed, detail)
                }
                Step::Add { lane, on, note } => {
                    let id = lane.id.clone();
                    let prefix = lane.prefix.clone();
                    inner.lanes.push(Slot::new(lane, note.clone()));
                    let slot = inner.lanes.len() - 1;
                    if on {
                        let qidx = inner.queue.add_lane(prefix);
                        inner.enabled.push(slot);
                        inner.lanes[slot].qidx = Some(qidx);
                        self.spawn_lane(&mut inner, slot, generation, &config);
                        (id, LaneChangeKind::Added, "starting".to_string())
                    } else {
                        (
                            id,
                            LaneChangeKind::Added,
                            format!("not started: {}", note.unwrap_or_default()),
                        )
                    }
                }
            };
            tracing::info!(lane = %id, change = change.as_str(), %detail, "reload");
            lanes.push(LaneChange { id, change, detail });
        }
        inner.fail_unserved();
        for setting in &settings {
            tracing::info!(
                setting = %setting.name,
                applies = setting.applies.as_str(),
                "reload: {}",
                setting.detail
            );
        }
        inner.status_changed = true;
        self.pump(&mut inner);
        Ok(ReloadReport {
            config: shown_path,
            applied: true,
            lanes,
            settings,
        })
    }

    /// Takes a running lane out of service for a reload: it finishes its current
    /// request (within `grace`), then stops. Says what happens, for the report.
    fn take_out(&self, inner: &mut Inner, slot: usize, grace: Duration) -> String {
        let Some(qidx) = inner.lanes[slot].qidx else {
            return "was not running".into();
        };
        let busy = inner.queue.lane_request(qidx).is_some();
        inner.queue.lane_leave(qidx, Leaving::Removed);
        let s = &mut inner.lanes[slot];
        if !s.is_alive() {
            return "stopped".into();
        }
        s.note = Some("removed by a reload: stops after its current request".into());
        inner.tell_lane(qidx, LaneCmd::Shutdown { grace });
        if busy {
            "stops after its current request".into()
        } else {
            "stopping".into()
        }
    }

    /// Starts a lost lane again (the `restart` policy), unless the runtime moved on.
    fn respawn(self: &Arc<Self>, slot: usize, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation
            || !matches!(inner.state, RuntimeState::Running | RuntimeState::Draining)
        {
            return;
        }
        // A reload may have started it already, or taken it out.
        let s = &inner.lanes[slot];
        if s.is_alive() || s.retired || s.qidx.is_some_and(|q| inner.queue.is_removed(q)) {
            return;
        }
        let config = inner.config.clone();
        self.spawn_lane(&mut inner, slot, generation, &config);
        inner.status_changed = true;
        self.pump(&mut inner);
    }

    fn spawn_lane(
        self: &Arc<Self>,
        inner: &mut Inner,
        slot_idx: usize,
        generation: u64,
        config: &Config,
    ) {
        let spec = self.lane_spec(config, &inner.lanes[slot_idx].lane);
        // Its sleep setting, as this start (or a reload's restart) of it says.
        let s = &inner.lanes[slot_idx];
        if let Some(qidx) = s.qidx {
            let idle_suspend = s.lane.idle_suspend;
            inner.queue.set_idle_suspend(qidx, idle_suspend);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let slot = &mut inner.lanes[slot_idx];
        slot.state = LaneState::Starting;
        slot.cmd = Some(tx);
        tokio::spawn(lanes::run(
            lanes::LaneTask {
                runtime: self.clone(),
                registry: self.registry.clone(),
                home: self.home.clone(),
                slot: slot_idx,
                generation,
                spec,
                start_timeout: config.start_timeout(),
                heartbeat_timeout: Duration::from_millis(config.heartbeat_timeout_ms),
            },
            rx,
        ));
    }

    /// Marks the runtime stopped: pending requests fail, lanes finish what they are
    /// generating (within `grace`) and exit.
    fn stop_runtime(&self, inner: &mut Inner, reason: String, grace: Duration) {
        inner.status_changed = true;
        // A drain under way ends here, whatever stopped the runtime.
        if let Some(drain) = inner.drain.take() {
            drain.call_off();
        }
        if inner.state != RuntimeState::Stopped {
            tracing::warn!(%reason, "runtime stopped");
            inner.state = RuntimeState::Stopped;
            inner.reason = Some(reason.clone());
        }
        for id in inner.queue.fail_pending(Instant::now()) {
            inner.end_job(
                id,
                End::Failed(Failed::RuntimeStopped {
                    reason: reason.clone(),
                }),
            );
        }
        for s in &mut inner.lanes {
            match &s.cmd {
                Some(cmd) => {
                    let _ = cmd.send(LaneCmd::Shutdown { grace });
                }
                // A lane waiting for its restart will not be started.
                None if s.state == LaneState::Starting => s.state = LaneState::Stopped,
                None => {}
            }
        }
    }

    /// Stops the runtime for `prq stop` and waits for every lane to exit.
    pub async fn shutdown(&self) {
        {
            let mut inner = self.lock();
            let grace = Duration::from_secs(inner.config.shutdown_grace_s);
            self.stop_runtime(&mut inner, "stopped by `prq stop`".into(), grace);
            self.pump(&mut inner);
        }
        let grace = Duration::from_secs(self.lock().config.shutdown_grace_s);
        let all_gone = grace + lanes::EXIT_GRACE * 3;
        if !self
            .wait_for(all_gone, |i| i.lanes.iter().all(|s| !s.is_alive()))
            .await
        {
            tracing::error!("lanes did not exit in time");
        }
    }

    /// What `GET /readyz` answers.
    pub fn readiness(&self) -> Readiness {
        self.lock().readiness()
    }

    pub fn status(&self) -> StatusReport {
        self.status_of(&self.lock())
    }

    fn status_of(&self, inner: &Inner) -> StatusReport {
        let now = Instant::now();
        let sandbox_lane = inner
            .enabled
            .iter()
            .any(|&i| inner.lanes[i].lane.provider == "sandbox");
        StatusReport {
            pid: std::process::id(),
            home: self.home.root().display().to_string(),
            config: inner.config_path.as_ref().map(|p| p.display().to_string()),
            runtime: RuntimeStatus {
                state: inner.state,
                reason: inner.reason.clone(),
            },
            mode: inner.mode.clone(),
            api_url: self.urls.api.clone(),
            panel_url: self.urls.panel.clone(),
            sandbox_url: self.urls.sandbox.clone().filter(|_| sandbox_lane),
            lanes: inner
                .lanes
                .iter()
                .filter(|s| !s.retired || s.is_alive())
                .map(|s| LaneStatus {
                    id: s.lane.id.clone(),
                    provider: s.lane.provider.clone(),
                    prefix: s.lane.prefix.clone(),
                    account: s.lane.account.clone(),
                    state: s.state,
                    worker_pid: s.worker_pid,
                    browser_pid: s.browser_pid,
                    logged_in: s.logged_in,
                    presence: crate::presence::status(&s.lane, s.user_agent.as_deref()),
                    current: s.qidx.and_then(|q| inner.queue.lane_request(q)),
                    note: s.note.clone(),
                    cooling_left_ms: s
                        .qidx
                        .and_then(|q| inner.queue.cooling_left(q, now))
                        .map(|d| d.as_millis() as u64),
                })
                .collect(),
            queue: QueueCounts {
                pending: inner.queue.pending_len(),
                processing: inner.queue.processing_len(),
            },
        }
    }
}

impl Inner {
    fn readiness(&self) -> Readiness {
        crate::ready::readiness(
            self.state,
            // A lane a reload takes out serves no new request, whatever it is doing.
            self.lanes
                .iter()
                .filter(|s| !s.retired && !s.qidx.is_some_and(|q| self.queue.is_leaving(q)))
                .map(|s| {
                    // A waking lane shows `starting` but serves by itself soon, as the
                    // sleeping lane it was did: readiness does not flap on a wake.
                    let waking = s.qidx.is_some_and(|q| self.queue.is_waking(q));
                    let state = match waking {
                        true => LaneState::Asleep,
                        false => s.state,
                    };
                    (state, s.logged_in)
                }),
        )
    }

    fn lane_id(&self, qidx: LaneIdx) -> Option<&str> {
        let slot = *self.enabled.get(qidx)?;
        Some(self.lanes[slot].lane.id.as_str())
    }

    fn entry_view(&self, e: &Entry, now: Instant) -> RequestView {
        let ms = |d: Duration| d.as_millis() as u64;
        let end = e.ended.unwrap_or(now);
        RequestView {
            id: e.id,
            state: e.state,
            model: e.meta.model.clone(),
            prefix: e.prefix.clone(),
            lane: e.lane.and_then(|q| self.lane_id(q)).map(str::to_owned),
            client: e.meta.client.clone(),
            kind: e.meta.kind.to_owned(),
            messages: e.meta.messages,
            prompt_chars: e.meta.prompt_chars,
            stream: e.meta.stream,
            position: self.queue.position(e.id),
            admitted_ms: e.meta.admitted_unix_ms,
            age_ms: ms(end - e.admitted),
            wait_ms: e.started.map(|s| ms(s - e.admitted)),
            chars: e.chars,
            stopping: e.stopping.map(|(_, cause)| cause),
            deadline: e.deadline,
            error: e.error.map(str::to_owned),
        }
    }

    fn served_prefixes(&self) -> Vec<String> {
        let mut prefixes: Vec<String> = Vec::new();
        for &i in &self.enabled {
            if self.lanes[i].qidx.is_some_and(|q| self.queue.is_removed(q)) {
                continue;
            }
            let prefix = &self.lanes[i].lane.prefix;
            if !prefixes.contains(prefix) {
                prefixes.push(prefix.clone());
            }
        }
        prefixes
    }

    /// Fails the waiting requests whose prefix no lane serves any more (a reload
    /// removed its lanes).
    fn fail_unserved(&mut self) {
        for id in self.queue.fail_unserved(Instant::now()) {
            let prefix = self
                .queue
                .get(id)
                .map(|e| e.prefix.clone())
                .unwrap_or_default();
            self.end_job(id, End::Failed(Failed::LaneRemoved { prefix }));
        }
    }

    /// The one place a request's client is told how it ended.
    fn end_job(&mut self, id: RequestId, end: End) {
        if let Some(job) = self.jobs.remove(&id) {
            if let Some(n) = self.per_client.get_mut(&job.client) {
                *n -= 1;
                if *n == 0 {
                    self.per_client.remove(&job.client);
                }
            }
            job.tx.send(ReqEvent::End(end));
        }
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
            note,
            qidx: None,
            cmd: None,
            restarts: VecDeque::new(),
            retired: false,
            next: None,
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

/// Which of a config's lanes run: `None` for each that does, else why not (`concurrent`
/// runs one lane per prefix); and the mode they run in (fewer than two lanes run
/// `serial`).
fn lanes_to_run(config: &Config, all: &[Lane]) -> (Vec<Option<String>>, ModeStatus) {
    let mut notes = vec![None; all.len()];
    for (i, lane) in all.iter().enumerate() {
        let first_of_prefix = !all[..i].iter().any(|l| l.prefix == lane.prefix);
        if config.mode == Mode::Concurrent && !first_of_prefix {
            notes[i] = Some(format!(
                "not started: concurrent mode runs one lane per prefix ({}); set mode = \"full\" to use every account",
                lane.prefix
            ));
        }
    }
    let running = notes.iter().filter(|n| n.is_none()).count();
    let (effective, reason) = if running < 2 && config.mode != Mode::Serial {
        (
            Mode::Serial,
            Some(format!(
                "{running} lane(s) enabled: with fewer than two lanes, {} mode runs as serial",
                config.mode.as_str()
            )),
        )
    } else {
        (config.mode, None)
    };
    if let Some(reason) = &reason {
        tracing::info!("{reason}");
    }
    let mode = ModeStatus {
        configured: config.mode,
        effective,
        reason,
    };
    (notes, mode)
}

/// A wait in whole seconds, rounded up (what `Retry-After` carries): a client that
/// waits that long finds the lane free.
pub fn whole_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// Sleeps until the queue's next deadline (or until one may have moved earlier) and
/// applies the deadlines; runs for the daemon's lifetime.
async fn enforce_deadlines(rt: Arc<Runtime>) {
    let mut next: Option<Instant> = None;
    loop {
        let moved = rt.deadlines_moved.notified();
        tokio::pin!(moved);
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut moved => {}
            _ = sleep => {}
        }
        next = rt.expire();
    }
}

impl LaneReports for Runtime {
    fn ready(&self, slot: usize, generation: u64, ready: lanes::Ready) {
        self.lane_ready(
            slot,
            generation,
            ready.worker_pid,
            ready.browser_pid,
            ready.logged_in,
            ready.user_agent,
        );
    }

    fn asleep(&self, slot: usize, generation: u64) {
        self.lane_asleep(slot, generation);
    }

    fn progress(&self, id: RequestId, chars: usize) {
        Runtime::progress(self, id, chars);
    }

    fn too_slow(&self, id: RequestId, unread: usize) {
        self.client_too_slow(id, unread);
    }

    fn finished(&self, slot: usize, generation: u64, id: RequestId, end: End) {
        self.lane_finished(slot, generation, id, end);
    }

    fn gone(self: Arc<Self>, slot: usize, generation: u64, crash: Option<String>) {
        self.lane_gone(slot, generation, crash);
    }
}
