//! The request queue as a state machine with no I/O.
//!
//! Requests are admitted for a prefix, wait in arrival order, and are dispatched to an
//! idle lane of their prefix; the mode decides how much runs at once:
//! - `serial`: one request at a time across all lanes, strictly in arrival order;
//! - `concurrent` / `full`: each idle lane takes the oldest pending request of its
//!   prefix. (In `concurrent` the runtime enables one lane per prefix, so each lane is a
//!   FIFO; in `full` a prefix's FIFO is served by whichever of its lanes went idle first.)
//!
//! Lanes with an `idle_suspend` sleep (their browser closed) once idle that long
//! ([`Queue::expire`] says which); a request for a prefix whose lanes are all busy or
//! asleep wakes one ([`Queue::to_wake`]) and waits, pending, until a lane of its prefix
//! is idle — the woken one or any other, whichever comes first, so an awake lane is
//! always preferred over a sleeping one.
//!
//! Methods change state and say what the caller must do (which request goes to which
//! lane, which lane to tell to stop); every state change is also recorded as an
//! [`Event`] for the caller to publish. Time comes in as an argument (`now`), and
//! [`Queue::expire`] applies the deadlines, so every timing rule is tested with paused
//! time and no sleeping. The runtime performs the I/O.
//!
//! A lane whose site answered with a rate limit *cools*: it takes no requests until
//! the time the site gave (or a backoff, [`Accounts`]) is up; [`Queue::expire`] ends
//! the cooling like any other deadline. The request it was serving, if nothing of it
//! was streamed, goes back to the head of the queue for another lane of its prefix.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use prq_protocol::control::Mode;
use prq_protocol::worker::RequestId;
use tokio::time::Instant;

pub type LaneIdx = usize;

/// How many finished requests are kept, for listings and for asking after an ID.
const HISTORY: usize = 10_000;

/// How long a lane has to end a request it was told to stop before the lane is given
/// up as broken: the worker's own stop deadline, and room (see the protocol crate).
pub use prq_protocol::worker::STOP_GRACE;

/// How long a request may take in each phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Admitted → taken by a lane.
    pub queue_wait: Duration,
    /// Taken by a lane → first piece of text.
    pub first_token: Duration,
    /// Between two pieces of text.
    pub idle: Duration,
    /// Taken by a lane → end.
    pub total: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            queue_wait: Duration::from_secs(600),
            first_token: Duration::from_secs(180),
            idle: Duration::from_secs(120),
            total: Duration::from_secs(1800),
        }
    }
}

/// `[accounts]`: how rate-limited lanes cool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accounts {
    /// The first cooling when the site gives no time; it doubles with each further rate
    /// limit in a row on the lane ...
    pub cooldown: Duration,
    /// ... up to this.
    pub cooldown_max: Duration,
    /// While every lane of a prefix cools, its requests wait (within their deadlines);
    /// `false`: they fail at once, saying when the soonest lane is free.
    pub wait_for_cooldown: bool,
}

impl Default for Accounts {
    fn default() -> Self {
        Self {
            cooldown: Duration::from_secs(60),
            cooldown_max: Duration::from_secs(3600),
            wait_for_cooldown: true,
        }
    }
}

/// The longest cooling a site's own time may ask for: a week (a garbled header should
/// not take a lane out for years).
const MAX_SITE_COOLING: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a deadline check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// A pending request waited too long; it is now `timed_out`.
    Waiting { id: RequestId, deadline: Deadline },
    /// A processing request ran out of time: tell its lane to stop it.
    Stop {
        id: RequestId,
        lane: LaneIdx,
        deadline: Deadline,
    },
    /// A lane was told to stop a request and has not ended it within [`STOP_GRACE`].
    LaneStuck { id: RequestId, lane: LaneIdx },
    /// A cooling lane's time is up: it is idle again.
    Cooled { lane: LaneIdx },
    /// A lane has been idle for its `idle_suspend`: it is now asleep; tell it to close
    /// its browser.
    Sleep { lane: LaneIdx },
}

/// A request's state, as the queue views show it.
pub use prq_protocol::view::RequestState as State;
pub use prq_protocol::view::{Deadline, StopCause};

/// The end states a processing request can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    Stopped,
    TimedOut,
}

impl From<Outcome> for State {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Completed => State::Completed,
            Outcome::Failed => State::Failed,
            Outcome::Stopped => State::Stopped,
            Outcome::TimedOut => State::TimedOut,
        }
    }
}

/// What a request is, for listings; the queue does not decide anything by it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub model: String,
    /// `chat` or `completion`.
    pub kind: &'static str,
    /// The API key's name, else the client's address.
    pub client: String,
    pub messages: usize,
    pub prompt_chars: usize,
    pub stream: bool,
    /// Wall-clock admission time, ms since the Unix epoch.
    pub admitted_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: RequestId,
    pub prefix: String,
    pub meta: Meta,
    pub state: State,
    pub lane: Option<LaneIdx>,
    /// A stop is under way (since when, and why); the lane has not confirmed it yet.
    pub stopping: Option<(Instant, StopCause)>,
    /// The deadline that ended it, for `timed_out` requests.
    pub deadline: Option<Deadline>,
    /// Why it failed, for a `failed` request whose cause the queue decided
    /// (`client_too_slow`).
    pub error: Option<&'static str>,
    pub admitted: Instant,
    pub started: Option<Instant>,
    pub first_token: Option<Instant>,
    pub last_token: Option<Instant>,
    pub ended: Option<Instant>,
    /// Characters streamed so far.
    pub chars: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: RequestId,
    pub state: State,
    pub lane: Option<LaneIdx>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneAvail {
    Starting,
    /// Idle since this tick (a counter, so "idle first" needs no clock).
    Idle(u64),
    Busy(RequestId),
    /// Rate-limited: no requests until then.
    Cooling(Instant),
    /// Its browser is closed (since this tick); a request wakes it.
    Asleep(u64),
    /// Told to wake; it takes requests once ready, like a starting lane.
    Waking,
    /// Its page is being brought back ([`Queue::lane_recovering`]); it takes requests
    /// once ready again.
    Recovering,
    /// A person logs it in through the panel's login view ([`Queue::lane_login`]); it
    /// takes requests once its worker, the view closed, says it is ready again.
    Login,
    Down,
}

#[derive(Debug, Clone)]
struct Lane {
    prefix: String,
    avail: LaneAvail,
    /// Rate limits in a row (a completed request resets it), for the backoff.
    strikes: u32,
    /// Idle this long, the lane goes to sleep; `None`: never.
    idle_suspend: Option<Duration>,
    /// When it last went idle. A lane that became ready is stamped by the next
    /// [`Queue::expire`] (the caller applies the deadlines after every change), so that
    /// `lane_ready` needs no clock.
    idle_since: Option<Instant>,
    /// The lane is being taken out (by a reload): it takes no new requests, and goes
    /// down once its current one ends.
    leaving: Option<Leaving>,
    /// A lane taken out while its account cools: it cools on until then once it is
    /// back (the site's rate limit is on the account, not on the worker).
    cool_until: Option<Instant>,
    /// Its worker said it recovers its page: when its request ends, the lane is not
    /// idle but [`LaneAvail::Recovering`], until [`Queue::lane_ready`].
    recovering: bool,
}

/// Why a lane cannot be given to the login view now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    /// It generates this request, which finishes first (or is stopped).
    Busy(RequestId),
    /// What it is doing instead.
    Not(&'static str),
}

/// Why a lane is taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    /// For good: it no longer serves its prefix.
    Removed,
    /// To start again with new settings: its prefix's requests wait for it.
    Restart,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmitError {
    #[error("the queue is full ({0} requests waiting)")]
    Full(usize),
    #[error("no lane serves prefix {0:?}")]
    NoLane(String),
    /// Every lane of the prefix is cooling and requests do not wait for it.
    #[error("every lane of prefix {prefix:?} is rate limited; the soonest is free in {} s", retry_after.as_secs())]
    Cooling {
        prefix: String,
        retry_after: Duration,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActionError {
    #[error("no request {0} in the queue")]
    NotFound(RequestId),
    #[error("request {id} is {state:?}, not {wanted}")]
    WrongState {
        id: RequestId,
        state: State,
        wanted: &'static str,
    },
}

/// What became of a lost lane's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneLoss {
    /// The lane was not serving one.
    Idle,
    Failed(RequestId),
    /// Nothing of it had been streamed: it waits at the head of the queue again.
    Requeued(RequestId),
}

/// What a rate limit did: the lane cools until `until`, and its request ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub lane: LaneIdx,
    pub until: Instant,
    pub request: RateLimited,
    /// Pending requests of the prefix that failed with it: every lane of the prefix
    /// is cooling and [`Accounts::wait_for_cooldown`] is off.
    pub also_failed: Vec<RequestId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimited {
    /// ... waits at the head of the queue for another lane (nothing was streamed).
    Requeued,
    /// ... failed; `retry_after` is when the soonest lane of its prefix is free.
    Failed { retry_after: Duration },
}

/// What an abandoned (client gone) request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandoned {
    /// It was pending and is now cancelled.
    Cancelled,
    /// It is processing on this lane: tell the lane to stop it.
    Stop(LaneIdx),
    /// It had already ended (or a stop was already under way).
    Nothing,
}

#[derive(Debug)]
pub struct Queue {
    mode: Mode,
    max_pending: usize,
    deadlines: Deadlines,
    accounts: Accounts,
    lanes: Vec<Lane>,
    pending: VecDeque<RequestId>,
    live: HashMap<RequestId, Entry>,
    history: VecDeque<Entry>,
    events: Vec<Event>,
    next_id: RequestId,
    tick: u64,
}

impl Queue {
    /// `lanes` are the enabled lanes' prefixes, by lane index; all start `Starting`.
    pub fn new(mode: Mode, max_pending: usize, deadlines: Deadlines, lanes: Vec<String>) -> Self {
        Self {
            mode,
            max_pending,
            deadlines,
            accounts: Accounts::default(),
            lanes: lanes
                .into_iter()
                .map(|prefix| Lane {
                    prefix,
                    avail: LaneAvail::Starting,
                    strikes: 0,
                    idle_suspend: None,
                    idle_since: None,
                    leaving: None,
                    cool_until: None,
                    recovering: false,
                })
                .collect(),
            pending: VecDeque::new(),
            live: HashMap::new(),
            history: VecDeque::new(),
            events: Vec::new(),
            next_id: 1,
            tick: 0,
        }
    }

    /// Starts a new generation of lanes with new settings, keeping request IDs unique
    /// and the history across runtimes.
    pub fn reset_lanes(
        &mut self,
        mode: Mode,
        max_pending: usize,
        deadlines: Deadlines,
        lanes: Vec<String>,
    ) {
        debug_assert!(self.live.is_empty(), "lanes reset with live requests");
        let next_id = self.next_id;
        let history = std::mem::take(&mut self.history);
        *self = Self::new(mode, max_pending, deadlines, lanes);
        self.next_id = next_id;
        self.history = history;
    }

    /// Sets how rate-limited lanes cool (the config's `[accounts]`).
    pub fn set_accounts(&mut self, accounts: Accounts) {
        self.accounts = accounts;
    }

    /// New settings for the running lanes (a reload): they apply to every request from
    /// now on, the ones already admitted included.
    pub fn set_settings(&mut self, mode: Mode, max_pending: usize, deadlines: Deadlines) {
        self.mode = mode;
        self.max_pending = max_pending;
        self.deadlines = deadlines;
    }

    /// A lane added to the running ones (a reload); it starts `Starting`.
    pub fn add_lane(&mut self, prefix: String) -> LaneIdx {
        self.lanes.push(Lane {
            prefix,
            avail: LaneAvail::Starting,
            strikes: 0,
            idle_suspend: None,
            idle_since: None,
            leaving: None,
            cool_until: None,
            recovering: false,
        });
        self.lanes.len() - 1
    }

    /// Takes a lane out: at once when it serves nothing, else once its request ends.
    pub fn lane_leave(&mut self, lane: LaneIdx, why: Leaving) {
        let l = &mut self.lanes[lane];
        l.leaving = Some(why);
        l.idle_since = None;
        match l.avail {
            LaneAvail::Busy(_) => {}
            LaneAvail::Cooling(until) => {
                l.cool_until = Some(until);
                l.avail = LaneAvail::Down;
            }
            _ => l.avail = LaneAvail::Down,
        }
    }

    /// Whether a lane is being taken out (removed, or restarting with new settings).
    pub fn is_leaving(&self, lane: LaneIdx) -> bool {
        self.lanes.get(lane).is_some_and(|l| l.leaving.is_some())
    }

    /// Whether a lane was taken out for good.
    pub fn is_removed(&self, lane: LaneIdx) -> bool {
        self.lanes
            .get(lane)
            .is_some_and(|l| l.leaving == Some(Leaving::Removed))
    }

    /// Fails the pending requests whose prefix no lane serves any more (their lanes
    /// were removed); returns them.
    pub fn fail_unserved(&mut self, now: Instant) -> Vec<RequestId> {
        let ids: Vec<_> = self
            .pending
            .iter()
            .copied()
            .filter(|id| !self.serves(&self.live[id].prefix))
            .collect();
        self.pending.retain(|p| !ids.contains(p));
        for &id in &ids {
            self.end(id, State::Failed, now);
        }
        ids
    }

    /// Whether some lane (starting, up or coming back) serves `prefix`.
    fn serves(&self, prefix: &str) -> bool {
        self.lanes
            .iter()
            .any(|l| l.prefix == prefix && l.leaving != Some(Leaving::Removed))
    }

    pub fn admit(
        &mut self,
        prefix: &str,
        meta: Meta,
        now: Instant,
    ) -> Result<RequestId, AdmitError> {
        if !self.serves(prefix) {
            return Err(AdmitError::NoLane(prefix.to_string()));
        }
        if !self.accounts.wait_for_cooldown {
            if let Some(until) = self.prefix_cooling(prefix) {
                return Err(AdmitError::Cooling {
                    prefix: prefix.to_string(),
                    retry_after: until.saturating_duration_since(now),
                });
            }
        }
        if self.pending.len() >= self.max_pending {
            return Err(AdmitError::Full(self.pending.len()));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.live.insert(
            id,
            Entry {
                id,
                prefix: prefix.to_string(),
                meta,
                state: State::Pending,
                lane: None,
                stopping: None,
                deadline: None,
                error: None,
                admitted: now,
                started: None,
                first_token: None,
                last_token: None,
                ended: None,
                chars: 0,
            },
        );
        self.pending.push_back(id);
        self.record(id);
        Ok(id)
    }

    /// Assigns pending requests to idle lanes; the caller sends each one to its lane.
    pub fn dispatch(&mut self, now: Instant) -> Vec<(RequestId, LaneIdx)> {
        let mut out = Vec::new();
        if self.mode == Mode::Serial {
            let busy = self
                .lanes
                .iter()
                .any(|l| matches!(l.avail, LaneAvail::Busy(_)));
            if !busy {
                // Requests whose every lane cools wait without holding up the others.
                let next = self
                    .pending
                    .iter()
                    .copied()
                    .find(|id| self.prefix_cooling(&self.live[id].prefix).is_none());
                if let Some(id) = next {
                    if let Some(lane) = self.idle_lane_for(&self.live[&id].prefix) {
                        self.pending.retain(|&p| p != id);
                        self.start(id, lane, now);
                        out.push((id, lane));
                    }
                }
            }
            return out;
        }
        let mut i = 0;
        while i < self.pending.len() {
            if !self
                .lanes
                .iter()
                .any(|l| matches!(l.avail, LaneAvail::Idle(_)))
            {
                break;
            }
            let id = self.pending[i];
            match self.idle_lane_for(&self.live[&id].prefix) {
                Some(lane) => {
                    self.pending.remove(i);
                    self.start(id, lane, now);
                    out.push((id, lane));
                }
                None => i += 1,
            }
        }
        out
    }

    fn idle_lane_for(&self, prefix: &str) -> Option<LaneIdx> {
        self.lanes
            .iter()
            .enumerate()
            .filter(|(_, l)| l.prefix == prefix)
            .filter_map(|(i, l)| match l.avail {
                LaneAvail::Idle(since) => Some((since, i)),
                _ => None,
            })
            .min()
            .map(|(_, i)| i)
    }

    /// When every lane of `prefix` is cooling: the soonest end of it. `None` when any
    /// lane of the prefix is not cooling.
    fn prefix_cooling(&self, prefix: &str) -> Option<Instant> {
        let mut soonest: Option<Instant> = None;
        let lanes = self.lanes.iter().filter(|l| l.prefix == prefix);
        for lane in lanes.filter(|l| l.leaving != Some(Leaving::Removed)) {
            let LaneAvail::Cooling(until) = lane.avail else {
                return None;
            };
            soonest = Some(soonest.map_or(until, |s| s.min(until)));
        }
        soonest
    }

    fn start(&mut self, id: RequestId, lane: LaneIdx, now: Instant) {
        self.lanes[lane].avail = LaneAvail::Busy(id);
        let e = self.live.get_mut(&id).expect("dispatched request is live");
        e.state = State::Processing;
        e.lane = Some(lane);
        e.started = Some(now);
        self.record(id);
    }

    /// Cancels a pending request.
    pub fn cancel(&mut self, id: RequestId, now: Instant) -> Result<(), ActionError> {
        self.expect_state(id, State::Pending, "pending")?;
        self.pending.retain(|&p| p != id);
        self.end(id, State::Cancelled, now);
        Ok(())
    }

    /// Asks for a processing request to be stopped; returns the lane to tell. The request
    /// ends when the lane reports it ([`Queue::finish`]). Asking again changes nothing.
    pub fn stop(&mut self, id: RequestId, now: Instant) -> Result<LaneIdx, ActionError> {
        self.stop_for(id, StopCause::Asked, now)
    }

    fn stop_for(
        &mut self,
        id: RequestId,
        cause: StopCause,
        now: Instant,
    ) -> Result<LaneIdx, ActionError> {
        self.expect_state(id, State::Processing, "processing")?;
        let e = self.live.get_mut(&id).expect("checked above");
        let lane = e.lane.expect("processing requests have a lane");
        if e.stopping.is_none() {
            e.stopping = Some((now, cause));
            // Watchers see "stopping" before the lane confirms.
            self.record(id);
        }
        Ok(lane)
    }

    /// The client went away: cancel it if pending, stop it if processing.
    pub fn abandon(&mut self, id: RequestId, now: Instant) -> Abandoned {
        match self.live.get(&id).map(|e| (e.state, e.stopping.is_some())) {
            Some((State::Pending, _)) => {
                self.cancel(id, now).expect("pending");
                Abandoned::Cancelled
            }
            Some((State::Processing, false)) => Abandoned::Stop(
                self.stop_for(id, StopCause::ClientGone, now)
                    .expect("processing"),
            ),
            _ => Abandoned::Nothing,
        }
    }

    /// Stops a processing request for `cause` (its client too slow, a stop string
    /// reached) unless it is already stopping or over. Returns the lane to tell, the
    /// first time only.
    pub fn stop_once(&mut self, id: RequestId, cause: StopCause, now: Instant) -> Option<LaneIdx> {
        match self.live.get(&id) {
            Some(e) if e.state == State::Processing && e.stopping.is_none() => {
                self.stop_for(id, cause, now).ok()
            }
            _ => None,
        }
    }

    /// Cancels every pending request; returns their IDs.
    pub fn clear(&mut self, now: Instant) -> Vec<RequestId> {
        let ids: Vec<_> = self.pending.drain(..).collect();
        for &id in &ids {
            self.end(id, State::Cancelled, now);
        }
        ids
    }

    /// Asks every processing request to stop; returns (request, lane) pairs to tell.
    pub fn stop_all(&mut self, now: Instant) -> Vec<(RequestId, LaneIdx)> {
        let mut ids: Vec<_> = self
            .live
            .values()
            .filter(|e| e.state == State::Processing && e.stopping.is_none())
            .map(|e| e.id)
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| (id, self.stop(id, now).expect("processing")))
            .collect()
    }

    /// Fails every pending request (the runtime stopped); returns their IDs.
    pub fn fail_pending(&mut self, now: Instant) -> Vec<RequestId> {
        let ids: Vec<_> = self.pending.drain(..).collect();
        for &id in &ids {
            self.end(id, State::Failed, now);
        }
        ids
    }

    /// Text arrived for a processing request. Returns true when it was the request's
    /// first text: its deadline is then `idle` from now instead of `first_token` from its
    /// start, which may be sooner, so whoever sleeps until the next deadline must look
    /// again. Later text only moves the deadline later.
    pub fn progress(&mut self, id: RequestId, chars: usize, now: Instant) -> bool {
        let Some(e) = self.live.get_mut(&id) else {
            return false;
        };
        let first = e.first_token.is_none();
        e.first_token.get_or_insert(now);
        e.last_token = Some(now);
        e.chars += chars;
        first
    }

    /// A lane reports the end of its request; returns its lane, idle again, and the
    /// state it ended in (a request stopped for a deadline ends `timed_out`).
    pub fn finish(
        &mut self,
        id: RequestId,
        outcome: Outcome,
        now: Instant,
    ) -> Result<(LaneIdx, State), ActionError> {
        self.expect_state(id, State::Processing, "processing")?;
        let e = &self.live[&id];
        let lane = e.lane.expect("processing requests have a lane");
        let state = match (outcome, e.stopping) {
            (Outcome::Stopped, Some((_, StopCause::Deadline(d)))) => {
                self.live.get_mut(&id).expect("live").deadline = Some(d);
                State::TimedOut
            }
            // Whatever the lane says after that, its client has its whole answer.
            (_, Some((_, StopCause::StopSequence))) => State::Completed,
            // Whatever the lane says, its client did not get the whole answer.
            (_, Some((_, StopCause::ClientTooSlow))) => {
                self.live.get_mut(&id).expect("live").error = Some("client_too_slow");
                State::Failed
            }
            _ => outcome.into(),
        };
        self.end(id, state, now);
        self.tick += 1;
        let l = &mut self.lanes[lane];
        l.avail = match (l.leaving, l.recovering) {
            (Some(_), _) => LaneAvail::Down,
            (None, true) => LaneAvail::Recovering,
            (None, false) => LaneAvail::Idle(self.tick),
        };
        l.idle_since = Some(now);
        if state == State::Completed {
            l.strikes = 0;
        }
        Ok((lane, state))
    }

    /// A lane's site answered its request with a rate limit, saying to wait
    /// `site_wait` (if it said). The lane cools for that long, else for the backoff;
    /// the request goes back to the head of the queue if nothing of it was streamed
    /// (and, without [`Accounts::wait_for_cooldown`], some lane of its prefix is not
    /// cooling), else it fails.
    pub fn rate_limited(
        &mut self,
        id: RequestId,
        site_wait: Option<Duration>,
        now: Instant,
    ) -> Result<RateLimit, ActionError> {
        self.expect_state(id, State::Processing, "processing")?;
        let e = &self.live[&id];
        let lane = e.lane.expect("processing requests have a lane");
        let unstreamed = e.chars == 0 && e.stopping.is_none();
        let prefix = e.prefix.clone();
        let a = self.accounts;
        let l = &mut self.lanes[lane];
        l.strikes += 1;
        let wait = match site_wait {
            Some(wait) => wait.min(MAX_SITE_COOLING),
            None => a
                .cooldown
                .saturating_mul(1 << (l.strikes - 1).min(20))
                .min(a.cooldown_max),
        };
        let until = now + wait;
        l.avail = match l.leaving {
            Some(_) => {
                l.cool_until = Some(until);
                LaneAvail::Down
            }
            None => LaneAvail::Cooling(until),
        };
        let all_cooling = self.prefix_cooling(&prefix);
        let request = match all_cooling {
            _ if !unstreamed => None,
            Some(_) if !a.wait_for_cooldown => None,
            _ => Some(RateLimited::Requeued),
        };
        let request = match request {
            Some(requeued) => {
                let e = self.live.get_mut(&id).expect("live");
                e.state = State::Pending;
                e.lane = None;
                e.started = None;
                self.pending.push_front(id);
                self.record(id);
                requeued
            }
            None => {
                self.end(id, State::Failed, now);
                RateLimited::Failed {
                    retry_after: all_cooling.unwrap_or(now).saturating_duration_since(now),
                }
            }
        };
        let also_failed = match all_cooling {
            Some(_) if !a.wait_for_cooldown => {
                let ids: Vec<_> = self
                    .pending
                    .iter()
                    .copied()
                    .filter(|p| self.live[p].prefix == prefix)
                    .collect();
                self.pending.retain(|p| !ids.contains(p));
                for &p in &ids {
                    self.end(p, State::Failed, now);
                }
                ids
            }
            _ => Vec::new(),
        };
        Ok(RateLimit {
            lane,
            until,
            request,
            also_failed,
        })
    }

    /// When every lane of `prefix` is cooling: how long until the soonest is free.
    pub fn soonest_free(&self, prefix: &str, now: Instant) -> Option<Duration> {
        self.prefix_cooling(prefix)
            .map(|until| until.saturating_duration_since(now))
    }

    /// How long a cooling lane has left.
    pub fn cooling_left(&self, lane: LaneIdx, now: Instant) -> Option<Duration> {
        match self.lanes.get(lane)?.avail {
            LaneAvail::Cooling(until) => Some(until.saturating_duration_since(now)),
            _ => None,
        }
    }

    /// A lane's worker brings its page back (the request it serves, if any, is about
    /// to end): it takes no request until [`Queue::lane_ready`]. Its requests wait, or
    /// go to another lane of the prefix.
    pub fn lane_recovering(&mut self, lane: LaneIdx) {
        let l = &mut self.lanes[lane];
        l.recovering = true;
        if matches!(l.avail, LaneAvail::Idle(_)) {
            l.avail = LaneAvail::Recovering;
        }
    }

    /// The panel's login view opens on a lane: it takes no request until
    /// [`Queue::lane_ready`], and its prefix's requests wait or go to another of its
    /// lanes. Only an idle lane is given over; otherwise says what it is doing.
    pub fn lane_login(&mut self, lane: LaneIdx) -> Result<(), LoginRefused> {
        let l = &mut self.lanes[lane];
        match l.avail {
            LaneAvail::Idle(_) if l.leaving.is_none() => {
                l.avail = LaneAvail::Login;
                l.idle_since = None;
                Ok(())
            }
            LaneAvail::Busy(id) => Err(LoginRefused::Busy(id)),
            LaneAvail::Login => Err(LoginRefused::Not("in the login view already")),
            LaneAvail::Cooling(_) => Err(LoginRefused::Not("cooling (its site said rate limit)")),
            LaneAvail::Asleep(_) | LaneAvail::Waking => Err(LoginRefused::Not(
                "asleep (its browser is closed): send it a request to wake it",
            )),
            LaneAvail::Starting => Err(LoginRefused::Not("still starting")),
            LaneAvail::Recovering => Err(LoginRefused::Not("recovering its page")),
            LaneAvail::Idle(_) | LaneAvail::Down => Err(LoginRefused::Not("not running")),
        }
    }

    /// A lane started, woke or recovered: it is idle.
    pub fn lane_ready(&mut self, lane: LaneIdx) {
        self.tick += 1;
        let l = &mut self.lanes[lane];
        l.idle_since = None;
        l.recovering = false;
        // A lane taken out while it started takes nothing; one back from a restart
        // while its account cooled cools on (`expire` ends it).
        if l.leaving.is_none() {
            l.avail = match l.cool_until.take() {
                Some(until) => LaneAvail::Cooling(until),
                None => LaneAvail::Idle(self.tick),
            };
        }
    }

    /// Whether `lane` was told to wake and is not ready yet.
    pub fn is_waking(&self, lane: LaneIdx) -> bool {
        self.lanes[lane].avail == LaneAvail::Waking
    }

    /// Sets how long `lane` may stay idle before it sleeps (`None`: it never does).
    pub fn set_idle_suspend(&mut self, lane: LaneIdx, after: Option<Duration>) {
        self.lanes[lane].idle_suspend = after;
    }

    /// The sleeping lanes to wake now, each marked waking: for each prefix, one per
    /// pending request that no idle, starting or waking lane of the prefix will take
    /// (in `serial` mode, which runs one request at a time, one per prefix at most).
    /// The lane asleep the longest goes first, so that a prefix's accounts take turns.
    /// Call after [`Queue::dispatch`], which gives idle lanes their requests first.
    pub fn to_wake(&mut self) -> Vec<LaneIdx> {
        // Called after every dispatch: without a sleeping lane there is nothing to count.
        if !self
            .lanes
            .iter()
            .any(|l| matches!(l.avail, LaneAvail::Asleep(_)))
        {
            return Vec::new();
        }
        let mut wanted: Vec<(&str, usize)> = Vec::new();
        for id in &self.pending {
            let prefix = self.live[id].prefix.as_str();
            match wanted.iter_mut().find(|(p, _)| *p == prefix) {
                Some((_, n)) => *n += 1,
                None => wanted.push((prefix, 1)),
            }
        }
        let mut wake = Vec::new();
        for (prefix, pending) in wanted {
            let pending = match self.mode {
                Mode::Serial => pending.min(1),
                _ => pending,
            };
            let of_prefix = || {
                self.lanes
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.prefix == prefix)
            };
            let coming = of_prefix()
                .filter(|(_, l)| {
                    matches!(
                        l.avail,
                        LaneAvail::Idle(_)
                            | LaneAvail::Starting
                            | LaneAvail::Waking
                            | LaneAvail::Recovering
                    )
                })
                .count();
            let mut asleep: Vec<(u64, LaneIdx)> = of_prefix()
                .filter_map(|(i, l)| match l.avail {
                    LaneAvail::Asleep(since) => Some((since, i)),
                    _ => None,
                })
                .collect();
            asleep.sort_unstable();
            wake.extend(
                asleep
                    .into_iter()
                    .take(pending.saturating_sub(coming))
                    .map(|(_, i)| i),
            );
        }
        for &lane in &wake {
            self.lanes[lane].avail = LaneAvail::Waking;
        }
        wake
    }

    /// A lane is gone. The request it was serving fails — or, with `requeue` and when
    /// nothing of it was streamed yet, goes back to the head of the queue.
    pub fn lane_down(&mut self, lane: LaneIdx, requeue: bool, now: Instant) -> LaneLoss {
        self.lanes[lane].recovering = false;
        let was = std::mem::replace(&mut self.lanes[lane].avail, LaneAvail::Down);
        let LaneAvail::Busy(id) = was else {
            return LaneLoss::Idle;
        };
        let e = self
            .live
            .get_mut(&id)
            .expect("a busy lane's request is live");
        if requeue && e.chars == 0 && e.stopping.is_none() {
            e.state = State::Pending;
            e.lane = None;
            e.started = None;
            self.pending.push_front(id);
            self.record(id);
            LaneLoss::Requeued(id)
        } else {
            self.end(id, State::Failed, now);
            LaneLoss::Failed(id)
        }
    }

    /// A lost lane (or one taken out to restart) is being started again.
    pub fn lane_restarting(&mut self, lane: LaneIdx) {
        let l = &mut self.lanes[lane];
        l.avail = LaneAvail::Starting;
        l.idle_since = None;
        l.leaving = None;
    }

    /// Applies the deadlines at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired> {
        let d = self.deadlines;
        let mut out = Vec::new();
        for lane in 0..self.lanes.len() {
            if matches!(self.lanes[lane].avail, LaneAvail::Cooling(until) if now >= until) {
                self.lane_ready(lane);
                out.push(Expired::Cooled { lane });
            }
        }
        let waited: Vec<_> = self
            .pending
            .iter()
            .copied()
            .filter(|id| now >= self.live[id].admitted + d.queue_wait)
            .collect();
        for id in waited {
            self.pending.retain(|&p| p != id);
            self.live.get_mut(&id).expect("live").deadline = Some(Deadline::QueueWait);
            self.end(id, State::TimedOut, now);
            out.push(Expired::Waiting {
                id,
                deadline: Deadline::QueueWait,
            });
        }
        let mut processing: Vec<_> = self
            .live
            .values()
            .filter(|e| e.state == State::Processing)
            .map(|e| (e.id, e.lane.expect("lane"), e.stopping, Self::due(e, &d)))
            .collect();
        processing.sort_unstable_by_key(|p| p.0);
        for (id, lane, stopping, due) in processing {
            match (stopping, due) {
                (Some((since, _)), _) if now >= since + STOP_GRACE => {
                    out.push(Expired::LaneStuck { id, lane })
                }
                (None, Some((at, deadline))) if now >= at => {
                    self.stop_for(id, StopCause::Deadline(deadline), now)
                        .expect("processing");
                    out.push(Expired::Stop { id, lane, deadline });
                }
                _ => {}
            }
        }
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            let (LaneAvail::Idle(_), Some(after)) = (lane.avail, lane.idle_suspend) else {
                continue;
            };
            let since = *lane.idle_since.get_or_insert(now);
            if now >= since + after {
                self.tick += 1;
                lane.avail = LaneAvail::Asleep(self.tick);
                lane.idle_since = None;
                out.push(Expired::Sleep { lane: i });
            }
        }
        out
    }

    /// The earliest deadline of a processing request.
    fn due(e: &Entry, d: &Deadlines) -> Option<(Instant, Deadline)> {
        let started = e.started?;
        let total = (started + d.total, Deadline::Total);
        let token = match e.last_token {
            None => (started + d.first_token, Deadline::FirstToken),
            Some(last) => (last + d.idle, Deadline::Idle),
        };
        Some(if token.0 < total.0 { token } else { total })
    }

    /// When [`Queue::expire`] next has something to do, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let waiting = self
            .pending
            .iter()
            .map(|id| self.live[id].admitted + self.deadlines.queue_wait);
        let running = self.live.values().filter_map(|e| match e.stopping {
            Some((since, _)) => Some(since + STOP_GRACE),
            None if e.state == State::Processing => Self::due(e, &self.deadlines).map(|d| d.0),
            None => None,
        });
        let cooling = self.lanes.iter().filter_map(|l| match l.avail {
            LaneAvail::Cooling(until) => Some(until),
            _ => None,
        });
        let sleeping = self
            .lanes
            .iter()
            .filter_map(|l| match (l.avail, l.idle_suspend) {
                (LaneAvail::Idle(_), Some(after)) => l.idle_since.map(|since| since + after),
                _ => None,
            });
        waiting.chain(running).chain(cooling).chain(sleeping).min()
    }

    fn expect_state(
        &self,
        id: RequestId,
        want: State,
        wanted: &'static str,
    ) -> Result<(), ActionError> {
        let state = match self.live.get(&id) {
            Some(e) => e.state,
            None => match self.history.iter().rev().find(|e| e.id == id) {
                Some(e) => e.state,
                None => return Err(ActionError::NotFound(id)),
            },
        };
        if state != want {
            return Err(ActionError::WrongState { id, state, wanted });
        }
        Ok(())
    }

    fn end(&mut self, id: RequestId, state: State, now: Instant) {
        let mut e = self.live.remove(&id).expect("ending a live request");
        e.state = state;
        e.ended = Some(now);
        self.events.push(Event {
            id,
            state,
            lane: e.lane,
        });
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(e);
    }

    fn record(&mut self, id: RequestId) {
        let e = &self.live[&id];
        self.events.push(Event {
            id,
            state: e.state,
            lane: e.lane,
        });
    }

    /// The state changes since the last call, in order.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn get(&self, id: RequestId) -> Option<&Entry> {
        self.live
            .get(&id)
            // Newest first: the usual caller wants a request that has just ended, and
            // the history holds up to HISTORY of them.
            .or_else(|| self.history.iter().rev().find(|e| e.id == id))
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn processing_len(&self) -> usize {
        self.live.len() - self.pending.len()
    }

    /// Position (0 = next) of a pending request in arrival order.
    pub fn position(&self, id: RequestId) -> Option<usize> {
        self.pending.iter().position(|&p| p == id)
    }

    pub fn lane_request(&self, lane: LaneIdx) -> Option<RequestId> {
        match self.lanes.get(lane)?.avail {
            LaneAvail::Busy(id) => Some(id),
            _ => None,
        }
    }

    /// Live requests: pending in arrival order, then processing.
    pub fn live(&self) -> impl Iterator<Item = &Entry> {
        let processing = self.live.values().filter(|e| e.state == State::Processing);
        self.pending
            .iter()
            .map(|id| &self.live[id])
            .chain(processing)
    }

    pub fn history(&self) -> impl Iterator<Item = &Entry> {
        self.history.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    fn queue(mode: Mode, prefixes: &[&str]) -> Queue {
        let mut q = Queue::new(
            mode,
            8,
            Deadlines::default(),
            prefixes.iter().map(|p| p.to_string()).collect(),
        );
        for lane in 0..prefixes.len() {
            q.lane_ready(lane);
        }
        q
    }

    #[test]
    fn concurrent_lanes_take_requests_at_once_and_in_order() {
        let now = t0();
        let mut q = queue(Mode::Concurrent, &["a", "b"]);
        let a1 = q.admit("a", Meta::default(), now).unwrap();
        let a2 = q.admit("a", Meta::default(), now).unwrap();
        let b1 = q.admit("b", Meta::default(), now).unwrap();
        assert_eq!(q.dispatch(now), vec![(a1, 0), (b1, 1)]);
        assert_eq!(q.get(a2).unwrap().state, State::Pending);
        assert_eq!(q.dispatch(now), vec![]);
        q.finish(a1, Outcome::Completed, now).unwrap();
        assert_eq!(q.dispatch(now), vec![(a2, 0)]);
    }

    /// A lane whose worker recovers its page takes nothing when its request ends:
    /// the requests wait for it, or go to another lane of the prefix, until it is
    /// ready again. One lost while recovering is down like any other.
    /// The login view takes an idle lane only; while it has it, the prefix's requests
    /// wait or go to its other lane, and the lane is back once ready.
    #[test]
    fn a_lane_in_the_login_view_takes_no_request_until_it_is_ready_again() {
        let now = t0();
        let mut q = queue(Mode::Full, &["a", "a"]);
        let first = q.admit("a", Meta::default(), now).unwrap();
        assert_eq!(q.dispatch(now), vec![(first, 0)]);
        assert_eq!(
            q.lane_login(0),
            Err(LoginRefused::Busy(first)),
            "it finishes first"
        );
        assert_eq!(q.lane_login(1), Ok(()));
        assert!(
            matches!(q.lane_login(1), Err(LoginRefused::Not(_))),
            "once at a time"
        );
        let waiting = q.admit("a", Meta::default(), now).unwrap();
        assert_eq!(
            q.dispatch(now),
            vec![],
            "lane 0 is busy, lane 1 in the view"
        );
        q.finish(first, Outcome::Completed, now).unwrap();
        assert_eq!(
            q.dispatch(now),
            vec![(waiting, 0)],
            "the other lane takes it"
        );
        let next = q.admit("a", Meta::default(), now).unwrap();
        assert_eq!(q.dispatch(now), vec![]);
        q.lane_ready(1);
        assert_eq!(q.dispatch(now), vec![(next, 1)], "back once ready");
    }

    #[test]
    fn a_recovering_lane_takes_no_request_until_it_is_ready_again() {
        let now = t0();
        let mut q = queue(Mode::Full, &["a", "a"]);
        let ids: Vec<_> = (0..4)
            .map(|_| q.admit("a", Meta::default(), now).unwrap())
            .collect();
        assert_eq!(q.dispatch(now), vec![(ids[0], 0), (ids[1], 1)]);
        q.lane_recovering(0);
        assert_eq!(
            q.finish(ids[0], Outcome::Stopped, now),
            Ok((0, State::Stopped))
        );
        assert_eq!(q.dispatch(now), vec![], "lane 0 recovers; lane 1 is busy");
        q.finish(ids[1], Outcome::Completed, now).unwrap();
        assert_eq!(
            q.dispatch(now),
            vec![(ids[2], 1)],
            "the other lane takes it"
        );
        q.lane_ready(0);
        assert_eq!(q.dispatch(now), vec![(ids[3], 0)], "back once ready");
        q.finish(ids[3], Outcome::Completed, now).unwrap();
        assert_eq!(q.dispatch(now), vec![], "and idle after, not recovering");
        let next = q.admit("a", Meta::default(), now).unwrap();
        assert_eq!(q.dispatch(now), vec![(next, 0)]);

        // Serial: a recovering lane holds the one request at a time up, and a lane lost
        // while it recovers is down.
        let mut q = queue(Mode::Serial, &["a"]);
        let (a1, a2) = (
            q.admit("a", Meta::default(), now).unwrap(),
            q.admit("a", Meta::default(), now).unwrap(),
        );
        assert_eq!(q.dispatch(now), vec![(a1, 0)]);
        q.lane_recovering(0);
        q.finish(a1, Outcome::Stopped, now).unwrap();
        assert_eq!(q.dispatch(now), vec![]);
        assert_eq!(q.lane_down(0, true, now), LaneLoss::Idle);
        assert_eq!(q.get(a2).unwrap().state, State::Pending);
        q.lane_restarting(0);
        q.lane_ready(0);
        assert_eq!(q.dispatch(now), vec![(a2, 0)]);
    }

    #[test]
    fn serial_takes_one_at_a_time_in_arrival_order() {
        let now = t0();
        let mut q = queue(Mode::Serial, &["a", "b"]);
        let b1 = q.admit("b", Meta::default(), now).unwrap();
        let a1 = q.admit("a", Meta::default(), now).unwrap();
        assert_eq!(q.dispatch(now), vec![(b1, 1)]);
        assert_eq!(q.dispatch(now), vec![]);
        q.finish(b1, Outcome::Completed, now).unwrap();
        assert_eq!(q.dispatch(now), vec![(a1, 0)]);
    }

    #[test]
    fn full_mode_serves_a_prefix_from_whichever_lane_went_idle_first() {
        let now = t0();
        let mut q = queue(Mode::Full, &["a", "a", "a"]);
        let ids: Vec<_> = (0..4)
            .map(|_| q.admit("a", Meta::default(), now).unwrap())
            .collect();
        assert_eq!(q.dispatch(now), vec![(ids[0], 0), (ids[1], 1), (ids[2], 2)]);
        q.finish(ids[1], Outcome::Completed, now).unwrap();
        assert_eq!(q.dispatch(now), vec![(ids[3], 1)]);
        // Lane 0 then lane 2 go idle; the next request goes to lane 0, idle longer.
        q.finish(ids[0], Outcome::Completed, now).unwrap();
        q.finish(ids[2], Outcome::Completed, now).unwrap();
        let next = q.admit("a", Meta::default(), now).unwrap();
        assert_eq!(q.dispatch(now), vec![(next, 0)]);
    }

    #[test]
    fn full_mode_never_leaves_a_request_waiting_while_a_lane_of_its_prefix_is_idle() {
        let now = t0();
        let mut q = queue(Mode::Full, &["a", "b", "a"]);
        let b1 = q.admit("b", Meta::default(), now).unwrap();
        let b2 = q.admit("b", Meta::default(), now).unwrap();
        let a1 = q.admit("a", Meta::default(), now).unwrap();
        // b2 waits for the one b lane, but does not hold up a1 behind it.
        assert_eq!(q.dispatch(now), vec![(b1, 1), (a1, 0)]);
        assert_eq!(q.get(b2).unwrap().state, State::Pending);
    }

    #[test]
    fn requests_wait_for_a_starting_lane() {
        let now = t0();
        let mut q = Queue::new(
            Mode::Concurrent,
            8,
            Deadlines::default(),
            vec!["a".into(), "b".into()],
        );
        let a = q.admit("a", Meta::default(), now).unwrap();
        assert_eq!(q.dispatch(now), vec![]);
        q.lane_ready(0);
        assert_eq!(q.dispatch(now), vec![(a, 0)]);
    }

    #[test]
    fn admission_is_bounded_and_routed() {
        let now = t0();
        let mut q = Queue::new(Mode::Concurrent, 2, Deadlines::default(), vec!["a".into()]);
        q.admit("a", Meta::default(), now).unwrap();
        q.admit("a", Meta::default(), now).unwrap();
        assert_eq!(q.admit("a", Meta::default(), now), Err(AdmitError::Full(2)));
        assert_eq!(
            q.admit("zzz", Meta::default(), now),
            Err(AdmitError::NoLane("zzz".into()))
        );
    }

    #[test]
    fn cancel_applies_to_pending_only() {
        let now = t0();
        let mut q = queue(Mode::Concurrent, &["a"]);
        let a1 = q.admit("a", Meta::default(), now).unwrap();
        let a2 = q.admit("a", Meta::default(), now).unwrap();
        q.dispatch(now);
        assert!(matches!(
            q.cancel(a1, now),
            Err(ActionError::WrongState {
                state: State::Processing,
                ..
            })
        ));
        q.cancel(a2, now).unwrap();
        assert_eq!(q.get(a2).unwrap().state, State::Cancelled);
        assert!(matches!(
            q.cancel(a2, now),
            Err(ActionError::WrongState { .. })
        ));
        assert_eq!(q.cancel(999, now), Err(ActionError::NotFound(999)));
        assert!(matches!(
            q.stop(a2, now),
            Err(ActionError::WrongState { .. })
        ));
    }

    #[test]
    fn stop_asks_the_lane_and_the_lane_ends_it() {
        let now = t0();
        let mut q = queue(Mode::Concurrent, &["a"]);
        let a1 = q.admit("a", Meta::default(), now).unwrap();
        let a2 = q.admit("a", Meta::default(), now).unwrap();
        q.dispatch(now);
        assert_eq!(q.stop(a1, now), Ok(0));
        assert!(q.get(a1).unwrap().stopping.is_some());
        assert_eq!(
            q.abandon(a1, now),
            Abandoned::Nothing,
            "a stop is already under way"
        );
        assert_eq!(q.finish(a1, Outcome::Stopped, now), Ok((0, State::Stopped)));
        assert_eq!(q.dispatch(now), vec![(a2, 0)]);
    }

    #[test]
    fn a_request_whose_client_is_too_slow_is_stopped_once_and_fails() {
        let now = t0();
        let mut q = queue(Mode::Concurrent, &["a"]);
        let a1 = q.admit("a", Meta::default(), now).unwrap();
        q.dispatch(now);
        assert_eq!(q.stop_once(a1, StopCause::ClientTooSlow, now), Some(0));
        assert_eq!(
            q.stop_once(a1, StopCause::ClientTooSlow, now),
            None,
            "the lane is told once"
        );
        // Even when the lane finished the answer before the stop reached it.
        assert_eq!(
            q.finish(a1, Outcome::Completed, now),
            Ok((0, State::Failed))
        );
        assert_eq!(q.get(a1).unwrap().error, Some("client_too_slow"));
    }

    #[test]
    fn a_request_stopped_at_a_stop_string_ends_completed_whatever_the_lane_says() {
        let now = t0();
        let mut q = queue(Mode::Concurrent, &["a"]);
        let a1 = q.admit("a", Meta::default(), now).unwrap();
        q.dispatch(now);
        assert_eq!(q.stop_once(a1, StopCause::StopSequence, now), Some(0));
        assert_eq!(
            q.abandon(a1, now),
            Abandoned::Nothing,
            "its client leaving changes nothing"
        );
        assert_eq!(
            q.finish(a1, Outcome::Stopped, now),
            Ok((0, State::Completed))
        );
    }

    #[test]
    fn an_abandoned_request_is_cancelled_or_stopped() {
        let now = t0();
        let mut q = queue(Mode::Concurrent, &["a"]);
        let a1 = q.admit("a", Meta::default(), now).unwrap();
        let a2 = q.admit("a", Meta::default(), now).unwrap();
        q.dispatch(now);
        assert_eq!(q.abandon(a2, now), Abandoned::Cancelled);
        assert_eq!(q.abandon(a1, now), Abandoned::Stop(0));
        q.finish(a1, Outcome::Stopped, now).unwrap();
        assert_eq!(q.abandon(a1, now), Abandoned::Nothing);
    }

    #[test]
    fn a_lost_lane_fails_its_request_and_takes_no_more() {
        let now = t0();
        let mut q = queue(Mode::Concurrent, &["a", "b"]);
        let a1 = q.admit("a", Meta::default(), now).unwrap();
        let a2 = q.admit("a", Meta::default(), now).unwrap();
        q.dispatch(now);
        assert_eq!(q.lane_down(0, false, now), LaneLoss::Failed(a1));
        assert_eq!(q.get(a1).unwrap().state, State::Failed);
        assert_eq!(q.dispatch(now), vec![]);
        assert_eq!(q.fail_pending(now), vec![a2]);
        assert_eq!((q.pending_len(), q.processing_len()), (0, 0));
    }

    #[test]
    fn bulk_actions_name_what_they_acted_on() {
        let now = t0();
        let mut q = queue(Mode::Concurrent, &["a", "b"]);
        let a1 = q.admit("a", Meta::default(), now).unwrap();
        let b1 = q.admit("b", Meta::default(), now).unwrap();
        let a2 = q.admit("a", Meta::default(), now).unwrap();
        q.dispatch(now);
        assert_eq!(q.clear(now), vec![a2]);
        assert_eq!(q.stop_all(now), vec![(a1, 0), (b1, 1)]);
        assert_eq!(q.stop_all(now), vec![], "already stopping");
    }

    #[test]
    fn every_state_change_is_an_event() {
        let now = t0();
        let mut q = queue(Mode::Concurrent, &["a"]);
        let a1 = q.admit("a", Meta::default(), now).unwrap();
        q.dispatch(now);
        q.stop(a1, now).unwrap();
        q.finish(a1, Outcome::Stopped, now).unwrap();
        let states: Vec<_> = q.drain_events().into_iter().map(|e| e.state).collect();
        assert_eq!(
            states,
            vec![
                State::Pending,
                State::Processing,
                State::Processing,
                State::Stopped
            ],
            "admitted, taken, asked to stop, stopped"
        );
        assert!(q.drain_events().is_empty());
    }

    #[test]
    fn ids_stay_unique_across_runtime_restarts() {
        let now = t0();
        let mut q = queue(Mode::Concurrent, &["a"]);
        let first = q.admit("a", Meta::default(), now).unwrap();
        q.cancel(first, now).unwrap();
        q.reset_lanes(Mode::Concurrent, 8, Deadlines::default(), vec!["a".into()]);
        q.lane_ready(0);
        assert!(q.admit("a", Meta::default(), now).unwrap() > first);
        assert_eq!(
            q.get(first).unwrap().state,
            State::Cancelled,
            "history is kept"
        );
    }

    fn short() -> Deadlines {
        Deadlines {
            queue_wait: Duration::from_secs(10),
            first_token: Duration::from_secs(5),
            idle: Duration::from_secs(3),
            total: Duration::from_secs(20),
        }
    }

    fn timed_queue() -> Queue {
        let mut q = Queue::new(Mode::Concurrent, 8, short(), vec!["a".into()]);
        q.lane_ready(0);
        q
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_first_text_can_bring_the_next_deadline_forward_and_says_so() {
        let t = t0();
        let mut q = timed_queue();
        let a1 = q.admit("a", Meta::default(), t).unwrap();
        q.dispatch(t);
        assert_eq!(q.next_deadline(), Some(t + S(5)), "first_token");
        // Idle (3 s) from a first token at 1 s is due at 4 s, before first_token's 5 s:
        // the deadline task, asleep until 5 s, must be told.
        assert!(q.progress(a1, 3, t + S(1)));
        assert_eq!(q.next_deadline(), Some(t + S(4)));
        assert!(
            !q.progress(a1, 3, t + S(2)),
            "later text only moves it later"
        );
        assert_eq!(q.next_deadline(), Some(t + S(5)));
    }

    #[test]
    fn a_request_that_waits_too_long_times_out_in_the_queue() {
        let t = t0();
        let mut q = timed_queue();
        let a1 = q.admit("a", Meta::default(), t).unwrap();
        q.dispatch(t);
        let a2 = q.admit("a", Meta::default(), t + S(1)).unwrap();
        assert_eq!(
            q.next_deadline(),
            Some(t + S(5)),
            "a1's first token is due first"
        );
        q.progress(a1, 3, t + S(2));
        assert_eq!(q.next_deadline(), Some(t + S(5)), "then a1 idle");
        // Keep a1 alive so only a2's wait runs out.
        for s in 3..=11 {
            q.progress(a1, 1, t + S(s));
        }
        assert_eq!(q.expire(t + S(10)), vec![]);
        assert_eq!(
            q.expire(t + S(11)),
            vec![Expired::Waiting {
                id: a2,
                deadline: Deadline::QueueWait
            }]
        );
        let e = q.get(a2).unwrap();
        assert_eq!(
            (e.state, e.deadline),
            (State::TimedOut, Some(Deadline::QueueWait))
        );
    }

    #[test]
    fn no_first_token_in_time_stops_the_request_and_it_ends_timed_out() {
        let t = t0();
        let mut q = timed_queue();
        let a1 = q.admit("a", Meta::default(), t).unwrap();
        q.dispatch(t + S(1));
        assert_eq!(q.expire(t + S(5)), vec![]);
        assert_eq!(
            q.expire(t + S(6)),
            vec![Expired::Stop {
                id: a1,
                lane: 0,
                deadline: Deadline::FirstToken
            }]
        );
        assert_eq!(q.expire(t + S(7)), vec![], "asked once");
        assert_eq!(
            q.finish(a1, Outcome::Stopped, t + S(7)),
            Ok((0, State::TimedOut))
        );
        assert_eq!(q.get(a1).unwrap().deadline, Some(Deadline::FirstToken));
    }

    #[test]
    fn a_stall_between_tokens_hits_the_idle_deadline() {
        let t = t0();
        let mut q = timed_queue();
        let a1 = q.admit("a", Meta::default(), t).unwrap();
        q.dispatch(t);
        q.progress(a1, 5, t + S(1));
        q.progress(a1, 5, t + S(2));
        assert_eq!(q.expire(t + S(4)), vec![]);
        assert_eq!(
            q.expire(t + S(5)),
            vec![Expired::Stop {
                id: a1,
                lane: 0,
                deadline: Deadline::Idle
            }]
        );
        assert_eq!(q.get(a1).unwrap().chars, 10);
    }

    #[test]
    fn a_request_streaming_steadily_still_ends_at_the_total_deadline() {
        let t = t0();
        let mut q = timed_queue();
        let a1 = q.admit("a", Meta::default(), t).unwrap();
        q.dispatch(t);
        for s in 1..20 {
            q.progress(a1, 1, t + S(s));
            assert_eq!(q.expire(t + S(s)), vec![]);
        }
        assert_eq!(q.next_deadline(), Some(t + S(20)));
        assert_eq!(
            q.expire(t + S(20)),
            vec![Expired::Stop {
                id: a1,
                lane: 0,
                deadline: Deadline::Total
            }]
        );
    }

    #[test]
    fn a_lane_that_does_not_end_a_stopped_request_is_reported_stuck() {
        let t = t0();
        let mut q = timed_queue();
        let a1 = q.admit("a", Meta::default(), t).unwrap();
        q.dispatch(t);
        q.stop(a1, t + S(1)).unwrap();
        assert_eq!(q.next_deadline(), Some(t + S(1) + STOP_GRACE));
        assert_eq!(
            q.expire(t + S(1) + STOP_GRACE),
            vec![Expired::LaneStuck { id: a1, lane: 0 }]
        );
        // A stop that was asked for (not a deadline) ends `stopped`.
        assert_eq!(
            q.finish(a1, Outcome::Stopped, t + S(2)),
            Ok((0, State::Stopped))
        );
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn a_lost_lanes_unstreamed_request_goes_back_to_the_head_of_the_queue() {
        let now = t0();
        let mut q = queue(Mode::Concurrent, &["a"]);
        let a1 = q.admit("a", Meta::default(), now).unwrap();
        let a2 = q.admit("a", Meta::default(), now).unwrap();
        q.dispatch(now);
        assert_eq!(q.lane_down(0, true, now), LaneLoss::Requeued(a1));
        assert_eq!(q.position(a1), Some(0), "ahead of a2");
        q.lane_restarting(0);
        assert_eq!(q.dispatch(now), vec![]);
        q.lane_ready(0);
        assert_eq!(q.dispatch(now), vec![(a1, 0)]);
        // Once text was streamed, a lost lane fails the request even when requeueing.
        q.progress(a1, 4, now);
        assert_eq!(q.lane_down(0, true, now), LaneLoss::Failed(a1));
        assert_eq!(q.get(a2).unwrap().state, State::Pending);
    }
    fn accounts(wait: bool) -> Accounts {
        Accounts {
            cooldown: S(60),
            cooldown_max: S(200),
            wait_for_cooldown: wait,
        }
    }

    #[test]
    fn a_rate_limited_lane_cools_and_its_request_goes_to_another_lane() {
        let t = t0();
        let mut q = queue(Mode::Full, &["a", "a"]);
        q.set_accounts(accounts(true));
        let a1 = q.admit("a", Meta::default(), t).unwrap();
        let a2 = q.admit("a", Meta::default(), t).unwrap();
        assert_eq!(q.dispatch(t), vec![(a1, 0), (a2, 1)]);
        let limit = q.rate_limited(a1, Some(S(30)), t + S(1)).unwrap();
        assert_eq!(
            limit,
            RateLimit {
                lane: 0,
                until: t + S(31),
                request: RateLimited::Requeued,
                also_failed: vec![],
            }
        );
        assert_eq!(q.position(a1), Some(0));
        assert_eq!(q.cooling_left(0, t + S(11)), Some(S(20)));
        // The cooling lane takes nothing; lane 1 takes a1 once it is free.
        assert_eq!(q.dispatch(t + S(1)), vec![]);
        q.finish(a2, Outcome::Completed, t + S(2)).unwrap();
        assert_eq!(q.dispatch(t + S(2)), vec![(a1, 1)]);
        let a3 = q.admit("a", Meta::default(), t + S(3)).unwrap();
        assert_eq!(q.dispatch(t + S(3)), vec![]);
        // The cooling ends at its time, by the deadline timer, not before.
        assert_eq!(q.next_deadline(), Some(t + S(31)));
        assert_eq!(q.expire(t + S(30)), vec![]);
        assert_eq!(q.expire(t + S(31)), vec![Expired::Cooled { lane: 0 }]);
        assert_eq!(q.cooling_left(0, t + S(31)), None);
        assert_eq!(q.dispatch(t + S(31)), vec![(a3, 0)]);
    }

    #[test]
    fn without_a_site_time_the_cooling_doubles_up_to_its_cap_and_resets_on_success() {
        let t = t0();
        let mut q = queue(Mode::Concurrent, &["a"]);
        q.set_accounts(accounts(true));
        let mut cooled_for = Vec::new();
        let mut now = t;
        for _ in 0..4 {
            let id = q.admit("a", Meta::default(), now).unwrap();
            q.dispatch(now);
            let limit = q.rate_limited(id, None, now).unwrap();
            cooled_for.push(limit.until - now);
            now = limit.until;
            assert_eq!(q.expire(now), vec![Expired::Cooled { lane: 0 }]);
            q.cancel(id, now).unwrap_or(());
            assert_eq!(q.pending_len(), 0);
        }
        assert_eq!(cooled_for, vec![S(60), S(120), S(200), S(200)]);
        let id = q.admit("a", Meta::default(), now).unwrap();
        q.dispatch(now);
        q.finish(id, Outcome::Completed, now).unwrap();
        let id = q.admit("a", Meta::default(), now).unwrap();
        q.dispatch(now);
        let limit = q.rate_limited(id, None, now).unwrap();
        assert_eq!(limit.until - now, S(60), "a success resets the backoff");
    }

    #[test]
    fn a_request_that_streamed_text_fails_when_its_lane_is_rate_limited() {
        let t = t0();
        let mut q = queue(Mode::Full, &["a", "a"]);
        let a1 = q.admit("a", Meta::default(), t).unwrap();
        q.dispatch(t);
        q.progress(a1, 5, t);
        let limit = q.rate_limited(a1, Some(S(10)), t).unwrap();
        assert_eq!(
            limit.request,
            RateLimited::Failed { retry_after: S(0) },
            "lane 1 is free now"
        );
        assert_eq!(q.get(a1).unwrap().state, State::Failed);
        assert_eq!(q.cooling_left(0, t), Some(S(10)));
    }

    #[test]
    fn while_every_lane_of_a_prefix_cools_its_requests_wait_or_fail_at_once() {
        let t = t0();
        // Waiting (the default): the request waits for the soonest lane.
        let mut q = queue(Mode::Full, &["a", "a", "b"]);
        let ids: Vec<_> = (0..2)
            .map(|_| q.admit("a", Meta::default(), t).unwrap())
            .collect();
        q.dispatch(t);
        q.rate_limited(ids[0], Some(S(50)), t).unwrap();
        let last = q.rate_limited(ids[1], Some(S(20)), t).unwrap();
        assert_eq!(last.request, RateLimited::Requeued);
        let b1 = q.admit("b", Meta::default(), t).unwrap();
        assert_eq!(q.dispatch(t), vec![(b1, 2)], "b is not held up");
        assert_eq!(q.expire(t + S(20)), vec![Expired::Cooled { lane: 1 }]);
        assert_eq!(q.dispatch(t + S(20)), vec![(ids[1], 1)]);

        // Not waiting: the request, and the prefix's others, fail with the soonest time;
        // new ones are refused until then.
        let mut q = queue(Mode::Full, &["a", "a"]);
        q.set_accounts(accounts(false));
        let ids: Vec<_> = (0..3)
            .map(|_| q.admit("a", Meta::default(), t).unwrap())
            .collect();
        q.dispatch(t);
        let first = q.rate_limited(ids[0], Some(S(50)), t).unwrap();
        assert_eq!(
            first.request,
            RateLimited::Requeued,
            "lane 1 is not cooling"
        );
        let last = q.rate_limited(ids[1], Some(S(20)), t + S(1)).unwrap();
        assert_eq!(last.request, RateLimited::Failed { retry_after: S(20) });
        assert_eq!(last.also_failed, vec![ids[0], ids[2]]);
        assert_eq!(
            q.admit("a", Meta::default(), t + S(11)),
            Err(AdmitError::Cooling {
                prefix: "a".into(),
                retry_after: S(10)
            })
        );
        q.expire(t + S(21));
        assert!(q.admit("a", Meta::default(), t + S(21)).is_ok());
    }

    #[test]
    fn serial_mode_passes_over_a_request_whose_lanes_all_cool() {
        let t = t0();
        let mut q = queue(Mode::Serial, &["a", "b"]);
        let a1 = q.admit("a", Meta::default(), t).unwrap();
        q.dispatch(t);
        q.rate_limited(a1, Some(S(30)), t).unwrap();
        let b1 = q.admit("b", Meta::default(), t).unwrap();
        assert_eq!(q.dispatch(t), vec![(b1, 1)]);
        q.finish(b1, Outcome::Completed, t).unwrap();
        q.expire(t + S(30));
        assert_eq!(q.dispatch(t + S(30)), vec![(a1, 0)]);
    }

    /// A queue whose lanes (of these prefixes) sleep after 60 s idle, all of them idle
    /// since `now` (stamped by a first `expire`).
    fn sleepy(mode: Mode, prefixes: &[&str], now: Instant) -> Queue {
        let mut q = queue(mode, prefixes);
        for lane in 0..prefixes.len() {
            q.set_idle_suspend(lane, Some(S(60)));
        }
        assert_eq!(q.expire(now), vec![]);
        q
    }

    #[test]
    fn an_idle_lane_sleeps_after_its_idle_suspend_and_only_then() {
        let now = t0();
        let mut q = sleepy(Mode::Concurrent, &["a", "b"], now);
        q.set_idle_suspend(1, None);
        assert_eq!(q.next_deadline(), Some(now + S(60)));
        assert_eq!(q.expire(now + S(59)), vec![]);
        assert_eq!(q.expire(now + S(60)), vec![Expired::Sleep { lane: 0 }]);
        // Once: an asleep lane is not told again, and a lane without one never sleeps.
        assert_eq!(q.expire(now + S(600)), vec![]);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn a_request_keeps_its_lane_awake_and_the_idle_time_counts_from_its_end() {
        let now = t0();
        let mut q = sleepy(Mode::Concurrent, &["a"], now);
        let a1 = q.admit("a", Meta::default(), now + S(30)).unwrap();
        q.dispatch(now + S(30));
        assert_eq!(q.expire(now + S(200)), vec![], "busy lanes do not sleep");
        q.finish(a1, Outcome::Completed, now + S(200)).unwrap();
        assert_eq!(q.expire(now + S(259)), vec![]);
        assert_eq!(q.expire(now + S(260)), vec![Expired::Sleep { lane: 0 }]);
    }

    #[test]
    fn a_request_for_a_sleeping_lane_wakes_it_once_and_waits_for_it() {
        let now = t0();
        let mut q = sleepy(Mode::Concurrent, &["a"], now);
        q.expire(now + S(60));
        let a1 = q.admit("a", Meta::default(), now + S(61)).unwrap();
        let a2 = q.admit("a", Meta::default(), now + S(61)).unwrap();
        assert_eq!(q.dispatch(now + S(61)), vec![]);
        assert_eq!(q.to_wake(), vec![0]);
        assert_eq!(
            q.to_wake(),
            Vec::<LaneIdx>::new(),
            "a waking lane is not woken again"
        );
        assert_eq!(
            q.get(a1).unwrap().state,
            State::Pending,
            "cancellable while it wakes"
        );
        q.lane_ready(0);
        assert_eq!(q.dispatch(now + S(62)), vec![(a1, 0)]);
        assert_eq!(q.get(a2).unwrap().state, State::Pending);
    }

    #[test]
    fn full_mode_prefers_an_awake_idle_lane_to_a_sleeping_one() {
        let now = t0();
        let mut q = sleepy(Mode::Full, &["a", "a"], now);
        // Lane 1 sleeps; lane 0 was kept busy and is idle again.
        let first = q.admit("a", Meta::default(), now).unwrap();
        assert_eq!(q.dispatch(now), vec![(first, 0)]);
        assert_eq!(q.expire(now + S(60)), vec![Expired::Sleep { lane: 1 }]);
        q.finish(first, Outcome::Completed, now + S(61)).unwrap();
        let next = q.admit("a", Meta::default(), now + S(62)).unwrap();
        assert_eq!(q.dispatch(now + S(62)), vec![(next, 0)]);
        assert_eq!(
            q.to_wake(),
            Vec::<LaneIdx>::new(),
            "nothing waits: the sleeping lane sleeps on"
        );
    }

    #[test]
    fn full_mode_wakes_a_sleeping_lane_when_the_awake_ones_are_busy() {
        let now = t0();
        let mut q = sleepy(Mode::Full, &["a", "a", "a"], now);
        let busy = q.admit("a", Meta::default(), now).unwrap();
        q.dispatch(now);
        // Lanes 1 and 2 sleep, 2 after 1 (it had been idle a little less long).
        q.lane_ready(2);
        assert_eq!(q.expire(now + S(1)), vec![]);
        assert_eq!(q.expire(now + S(60)), vec![Expired::Sleep { lane: 1 }]);
        assert_eq!(q.expire(now + S(61)), vec![Expired::Sleep { lane: 2 }]);
        let waiting = q.admit("a", Meta::default(), now + S(70)).unwrap();
        assert_eq!(q.dispatch(now + S(70)), vec![]);
        assert_eq!(q.to_wake(), vec![1], "one lane, the one asleep the longest");
        // The busy lane ends first: the request takes it, and the woken lane idles.
        q.finish(busy, Outcome::Completed, now + S(71)).unwrap();
        assert_eq!(q.dispatch(now + S(71)), vec![(waiting, 0)]);
        q.lane_ready(1);
        assert_eq!(q.dispatch(now + S(72)), vec![]);
        assert_eq!(q.to_wake(), Vec::<LaneIdx>::new());
    }

    #[test]
    fn as_many_lanes_wake_as_requests_wait_and_serial_wakes_one() {
        let now = t0();
        for (mode, woken) in [(Mode::Full, vec![0, 1]), (Mode::Serial, vec![0])] {
            let mut q = sleepy(mode, &["a", "a", "a"], now);
            assert_eq!(q.expire(now + S(60)).len(), 3);
            for _ in 0..2 {
                q.admit("a", Meta::default(), now + S(61)).unwrap();
            }
            q.dispatch(now + S(61));
            assert_eq!(q.to_wake(), woken, "{mode:?}");
        }
    }

    #[test]
    fn a_lane_that_fails_to_wake_is_down_and_its_waiting_request_stays_queued() {
        let now = t0();
        let mut q = sleepy(Mode::Concurrent, &["a"], now);
        q.expire(now + S(60));
        let a1 = q.admit("a", Meta::default(), now + S(61)).unwrap();
        assert_eq!(q.to_wake(), vec![0]);
        // The caller decides (on_lane_crash): restart the lane, or fail what waits.
        assert_eq!(q.lane_down(0, true, now + S(62)), LaneLoss::Idle);
        assert_eq!(q.get(a1).unwrap().state, State::Pending);
        assert_eq!(
            q.to_wake(),
            Vec::<LaneIdx>::new(),
            "a lost lane is not woken"
        );
        assert_eq!(q.fail_pending(now + S(62)), vec![a1]);
    }

    #[test]
    fn a_lane_restarted_by_a_reload_while_it_cools_cools_on() {
        let t = t0();
        let mut q = queue(Mode::Full, &["a", "a"]);
        q.set_accounts(accounts(true));
        let a1 = q.admit("a", Meta::default(), t).unwrap();
        assert_eq!(q.dispatch(t), vec![(a1, 0)]);
        q.rate_limited(a1, Some(S(30)), t).unwrap();
        assert_eq!(q.dispatch(t), vec![(a1, 1)]);
        // Lane 0 restarts with new settings while it cools: back, it takes nothing
        // until its account's time is up, then serves.
        q.lane_leave(0, Leaving::Restart);
        q.lane_restarting(0);
        q.lane_ready(0);
        assert_eq!(q.cooling_left(0, t + S(10)), Some(S(20)));
        q.finish(a1, Outcome::Completed, t + S(10)).unwrap();
        let a2 = q.admit("a", Meta::default(), t + S(10)).unwrap();
        let a3 = q.admit("a", Meta::default(), t + S(10)).unwrap();
        assert_eq!(q.dispatch(t + S(10)), vec![(a2, 1)]);
        assert_eq!(q.expire(t + S(30)), vec![Expired::Cooled { lane: 0 }]);
        assert_eq!(q.dispatch(t + S(30)), vec![(a3, 0)]);
        // A rate limit on a request a leaving lane finishes: it still cools after.
        q.lane_leave(0, Leaving::Restart);
        q.rate_limited(a3, Some(S(60)), t + S(31)).unwrap();
        q.lane_restarting(0);
        q.lane_ready(0);
        assert_eq!(q.cooling_left(0, t + S(31)), Some(S(60)));
    }

    #[test]
    fn a_lane_taken_out_finishes_its_request_and_takes_no_more() {
        let t = t0();
        let mut q = queue(Mode::Full, &["a", "a", "d"]);
        let a1 = q.admit("a", Meta::default(), t).unwrap();
        let d1 = q.admit("d", Meta::default(), t).unwrap();
        let d2 = q.admit("d", Meta::default(), t).unwrap();
        assert_eq!(q.dispatch(t), vec![(a1, 0), (d1, 2)]);
        q.lane_leave(0, Leaving::Restart);
        q.lane_leave(1, Leaving::Removed);
        q.lane_leave(2, Leaving::Removed);
        // The prefix whose every lane is removed takes nothing new; its waiting
        // request fails; the one generating finishes.
        assert_eq!(
            q.admit("d", Meta::default(), t),
            Err(AdmitError::NoLane("d".into()))
        );
        assert_eq!(q.fail_unserved(t), vec![d2]);
        assert_eq!(
            q.finish(d1, Outcome::Completed, t),
            Ok((2, State::Completed))
        );
        // A lane restarting keeps its prefix served: requests wait for it.
        let a2 = q.admit("a", Meta::default(), t).unwrap();
        assert_eq!(q.fail_unserved(t), Vec::<RequestId>::new());
        q.finish(a1, Outcome::Completed, t).unwrap();
        assert_eq!(q.dispatch(t), vec![], "lane 0 leaves, lane 1 is gone");
        q.lane_ready(0);
        assert_eq!(q.dispatch(t), vec![], "not before it restarted");
        q.lane_restarting(0);
        q.lane_ready(0);
        assert_eq!(q.dispatch(t), vec![(a2, 0)]);
        // An added lane serves its prefix once ready.
        let e = q.add_lane("e".into());
        let e1 = q.admit("e", Meta::default(), t).unwrap();
        assert_eq!(q.dispatch(t), vec![]);
        q.lane_ready(e);
        assert_eq!(q.dispatch(t), vec![(e1, e)]);
        assert!(q.is_removed(1) && !q.is_removed(0));
    }
}
