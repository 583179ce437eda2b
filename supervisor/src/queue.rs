//! The request queue as a state machine with no I/O.
//!
//! Requests are admitted for a prefix, wait in arrival order, and are dispatched to an
//! idle lane of their prefix; the mode decides how much runs at once:
//! - `serial`: one request at a time across all lanes, strictly in arrival order;
//! - `concurrent` / `full`: each idle lane takes the oldest pending request of its
//!   prefix. (In `concurrent` the runtime enables one lane per prefix, so each lane is a
//!   FIFO; in `full` a prefix's FIFO is served by whichever of its lanes went idle first.)
//!
//! Methods change state and say what the caller must do (which request goes to which
//! lane, which lane to tell to stop); every state change is also recorded as an
//! [`Event`] for the caller to publish. The runtime performs the I/O.

use std::collections::{HashMap, VecDeque};

use prq_protocol::control::Mode;
use prq_protocol::worker::RequestId;

pub type LaneIdx = usize;

/// How many finished requests are kept for listings.
const HISTORY: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
    Stopped,
    TimedOut,
}

impl State {
    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Pending | State::Processing)
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub id: RequestId,
    pub prefix: String,
    pub state: State,
    pub lane: Option<LaneIdx>,
    /// A stop was asked for and the lane has not confirmed it yet.
    pub stopping: bool,
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
    Down,
}

#[derive(Debug, Clone)]
struct Lane {
    prefix: String,
    avail: LaneAvail,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmitError {
    #[error("the queue is full ({0} requests waiting)")]
    Full(usize),
    #[error("no lane serves prefix {0:?}")]
    NoLane(String),
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
    pub fn new(mode: Mode, max_pending: usize, lanes: Vec<String>) -> Self {
        Self {
            mode,
            max_pending,
            lanes: lanes
                .into_iter()
                .map(|prefix| Lane {
                    prefix,
                    avail: LaneAvail::Starting,
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

    /// Starts a new generation of lanes, keeping request IDs unique across runtimes.
    pub fn reset_lanes(&mut self, mode: Mode, lanes: Vec<String>) {
        debug_assert!(self.live.is_empty(), "lanes reset with live requests");
        let next_id = self.next_id;
        let history = std::mem::take(&mut self.history);
        *self = Self::new(mode, self.max_pending, lanes);
        self.next_id = next_id;
        self.history = history;
    }

    pub fn admit(&mut self, prefix: &str) -> Result<RequestId, AdmitError> {
        if !self.lanes.iter().any(|l| l.prefix == prefix) {
            return Err(AdmitError::NoLane(prefix.to_string()));
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
                state: State::Pending,
                lane: None,
                stopping: false,
            },
        );
        self.pending.push_back(id);
        self.record(id);
        Ok(id)
    }

    /// Assigns pending requests to idle lanes; the caller sends each one to its lane.
    pub fn dispatch(&mut self) -> Vec<(RequestId, LaneIdx)> {
        let mut out = Vec::new();
        if self.mode == Mode::Serial {
            let busy = self
                .lanes
                .iter()
                .any(|l| matches!(l.avail, LaneAvail::Busy(_)));
            if !busy {
                if let Some(&id) = self.pending.front() {
                    if let Some(lane) = self.idle_lane_for(&self.live[&id].prefix) {
                        self.pending.pop_front();
                        self.start(id, lane);
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
                    self.start(id, lane);
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

    fn start(&mut self, id: RequestId, lane: LaneIdx) {
        self.lanes[lane].avail = LaneAvail::Busy(id);
        let e = self.live.get_mut(&id).expect("dispatched request is live");
        e.state = State::Processing;
        e.lane = Some(lane);
        self.record(id);
    }

    /// Cancels a pending request.
    pub fn cancel(&mut self, id: RequestId) -> Result<(), ActionError> {
        self.expect_state(id, State::Pending, "pending")?;
        self.pending.retain(|&p| p != id);
        self.end(id, State::Cancelled);
        Ok(())
    }

    /// Asks for a processing request to be stopped; returns the lane to tell. The request
    /// ends when the lane reports it ([`Queue::finish`]).
    pub fn stop(&mut self, id: RequestId) -> Result<LaneIdx, ActionError> {
        self.expect_state(id, State::Processing, "processing")?;
        let e = self.live.get_mut(&id).expect("checked above");
        e.stopping = true;
        Ok(e.lane.expect("processing requests have a lane"))
    }

    /// The client went away: cancel it if pending, stop it if processing.
    pub fn abandon(&mut self, id: RequestId) -> Abandoned {
        match self.live.get(&id).map(|e| (e.state, e.stopping)) {
            Some((State::Pending, _)) => {
                self.cancel(id).expect("pending");
                Abandoned::Cancelled
            }
            Some((State::Processing, false)) => Abandoned::Stop(self.stop(id).expect("processing")),
            _ => Abandoned::Nothing,
        }
    }

    /// Cancels every pending request; returns their IDs.
    pub fn clear(&mut self) -> Vec<RequestId> {
        let ids: Vec<_> = self.pending.drain(..).collect();
        for &id in &ids {
            self.end(id, State::Cancelled);
        }
        ids
    }

    /// Asks every processing request to stop; returns (request, lane) pairs to tell.
    pub fn stop_all(&mut self) -> Vec<(RequestId, LaneIdx)> {
        let ids: Vec<_> = self
            .live
            .values()
            .filter(|e| e.state == State::Processing && !e.stopping)
            .map(|e| e.id)
            .collect();
        ids.into_iter()
            .map(|id| (id, self.stop(id).expect("processing")))
            .collect()
    }

    /// Fails every pending request (the runtime stopped); returns their IDs.
    pub fn fail_pending(&mut self) -> Vec<RequestId> {
        let ids: Vec<_> = self.pending.drain(..).collect();
        for &id in &ids {
            self.end(id, State::Failed);
        }
        ids
    }

    /// A lane reports the end of its request. The lane is idle again.
    pub fn finish(&mut self, id: RequestId, outcome: Outcome) -> Result<LaneIdx, ActionError> {
        self.expect_state(id, State::Processing, "processing")?;
        let lane = self.live[&id]
            .lane
            .expect("processing requests have a lane");
        self.end(id, outcome.into());
        self.tick += 1;
        self.lanes[lane].avail = LaneAvail::Idle(self.tick);
        Ok(lane)
    }

    pub fn lane_ready(&mut self, lane: LaneIdx) {
        self.tick += 1;
        self.lanes[lane].avail = LaneAvail::Idle(self.tick);
    }

    /// A lane is gone; the request it was serving (if any) is failed and returned.
    pub fn lane_down(&mut self, lane: LaneIdx) -> Option<RequestId> {
        let was = std::mem::replace(&mut self.lanes[lane].avail, LaneAvail::Down);
        match was {
            LaneAvail::Busy(id) => {
                self.end(id, State::Failed);
                Some(id)
            }
            _ => None,
        }
    }

    fn expect_state(
        &self,
        id: RequestId,
        want: State,
        wanted: &'static str,
    ) -> Result<(), ActionError> {
        let state = match self.live.get(&id) {
            Some(e) => e.state,
            None => match self.history.iter().find(|e| e.id == id) {
                Some(e) => e.state,
                None => return Err(ActionError::NotFound(id)),
            },
        };
        if state != want {
            return Err(ActionError::WrongState { id, state, wanted });
        }
        Ok(())
    }

    fn end(&mut self, id: RequestId, state: State) {
        let mut e = self.live.remove(&id).expect("ending a live request");
        e.state = state;
        e.stopping = false;
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
            .or_else(|| self.history.iter().find(|e| e.id == id))
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

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
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

    fn queue(mode: Mode, prefixes: &[&str]) -> Queue {
        let mut q = Queue::new(mode, 8, prefixes.iter().map(|p| p.to_string()).collect());
        for lane in 0..prefixes.len() {
            q.lane_ready(lane);
        }
        q
    }

    #[test]
    fn concurrent_lanes_take_requests_at_once_and_in_order() {
        let mut q = queue(Mode::Concurrent, &["a", "b"]);
        let a1 = q.admit("a").unwrap();
        let a2 = q.admit("a").unwrap();
        let b1 = q.admit("b").unwrap();
        assert_eq!(q.dispatch(), vec![(a1, 0), (b1, 1)]);
        assert_eq!(q.get(a2).unwrap().state, State::Pending);
        assert_eq!(q.dispatch(), vec![]);
        q.finish(a1, Outcome::Completed).unwrap();
        assert_eq!(q.dispatch(), vec![(a2, 0)]);
    }

    #[test]
    fn serial_takes_one_at_a_time_in_arrival_order() {
        let mut q = queue(Mode::Serial, &["a", "b"]);
        let b1 = q.admit("b").unwrap();
        let a1 = q.admit("a").unwrap();
        assert_eq!(q.dispatch(), vec![(b1, 1)]);
        assert_eq!(q.dispatch(), vec![]);
        q.finish(b1, Outcome::Completed).unwrap();
        assert_eq!(q.dispatch(), vec![(a1, 0)]);
    }

    #[test]
    fn full_mode_serves_a_prefix_from_whichever_lane_went_idle_first() {
        let mut q = queue(Mode::Full, &["a", "a", "a"]);
        let ids: Vec<_> = (0..4).map(|_| q.admit("a").unwrap()).collect();
        assert_eq!(q.dispatch(), vec![(ids[0], 0), (ids[1], 1), (ids[2], 2)]);
        q.finish(ids[1], Outcome::Completed).unwrap();
        assert_eq!(q.dispatch(), vec![(ids[3], 1)]);
        // Lane 0 then lane 2 go idle; the next request goes to lane 0, idle longer.
        q.finish(ids[0], Outcome::Completed).unwrap();
        q.finish(ids[2], Outcome::Completed).unwrap();
        let next = q.admit("a").unwrap();
        assert_eq!(q.dispatch(), vec![(next, 0)]);
    }

    #[test]
    fn requests_wait_for_a_starting_lane() {
        let mut q = Queue::new(Mode::Concurrent, 8, vec!["a".into(), "b".into()]);
        let a = q.admit("a").unwrap();
        assert_eq!(q.dispatch(), vec![]);
        q.lane_ready(0);
        assert_eq!(q.dispatch(), vec![(a, 0)]);
    }

    #[test]
    fn admission_is_bounded_and_routed() {
        let mut q = Queue::new(Mode::Concurrent, 2, vec!["a".into()]);
        q.admit("a").unwrap();
        q.admit("a").unwrap();
        assert_eq!(q.admit("a"), Err(AdmitError::Full(2)));
        assert_eq!(q.admit("zzz"), Err(AdmitError::NoLane("zzz".into())));
    }

    #[test]
    fn cancel_applies_to_pending_only() {
        let mut q = queue(Mode::Concurrent, &["a"]);
        let a1 = q.admit("a").unwrap();
        let a2 = q.admit("a").unwrap();
        q.dispatch();
        assert!(matches!(
            q.cancel(a1),
            Err(ActionError::WrongState {
                state: State::Processing,
                ..
            })
        ));
        q.cancel(a2).unwrap();
        assert_eq!(q.get(a2).unwrap().state, State::Cancelled);
        assert!(matches!(q.cancel(a2), Err(ActionError::WrongState { .. })));
        assert_eq!(q.cancel(999), Err(ActionError::NotFound(999)));
    }

    #[test]
    fn stop_asks_the_lane_and_the_lane_ends_it() {
        let mut q = queue(Mode::Concurrent, &["a"]);
        let a1 = q.admit("a").unwrap();
        let a2 = q.admit("a").unwrap();
        q.dispatch();
        assert_eq!(q.stop(a1), Ok(0));
        assert!(q.get(a1).unwrap().stopping);
        assert_eq!(
            q.abandon(a1),
            Abandoned::Nothing,
            "a stop is already under way"
        );
        q.finish(a1, Outcome::Stopped).unwrap();
        assert_eq!(q.get(a1).unwrap().state, State::Stopped);
        assert_eq!(q.dispatch(), vec![(a2, 0)]);
    }

    #[test]
    fn an_abandoned_request_is_cancelled_or_stopped() {
        let mut q = queue(Mode::Concurrent, &["a"]);
        let a1 = q.admit("a").unwrap();
        let a2 = q.admit("a").unwrap();
        q.dispatch();
        assert_eq!(q.abandon(a2), Abandoned::Cancelled);
        assert_eq!(q.abandon(a1), Abandoned::Stop(0));
        q.finish(a1, Outcome::Stopped).unwrap();
        assert_eq!(q.abandon(a1), Abandoned::Nothing);
    }

    #[test]
    fn a_lost_lane_fails_its_request_and_takes_no_more() {
        let mut q = queue(Mode::Concurrent, &["a", "b"]);
        let a1 = q.admit("a").unwrap();
        let a2 = q.admit("a").unwrap();
        q.dispatch();
        assert_eq!(q.lane_down(0), Some(a1));
        assert_eq!(q.get(a1).unwrap().state, State::Failed);
        assert_eq!(q.dispatch(), vec![]);
        assert_eq!(q.fail_pending(), vec![a2]);
        assert!(q.is_empty());
    }

    #[test]
    fn bulk_actions_name_what_they_acted_on() {
        let mut q = queue(Mode::Concurrent, &["a", "b"]);
        let a1 = q.admit("a").unwrap();
        let b1 = q.admit("b").unwrap();
        let a2 = q.admit("a").unwrap();
        q.dispatch();
        assert_eq!(q.clear(), vec![a2]);
        let mut stopped = q.stop_all();
        stopped.sort();
        assert_eq!(stopped, vec![(a1, 0), (b1, 1)]);
        assert_eq!(q.stop_all(), vec![], "already stopping");
    }

    #[test]
    fn every_state_change_is_an_event() {
        let mut q = queue(Mode::Concurrent, &["a"]);
        let a1 = q.admit("a").unwrap();
        q.dispatch();
        q.finish(a1, Outcome::Completed).unwrap();
        let states: Vec<_> = q.drain_events().into_iter().map(|e| e.state).collect();
        assert_eq!(
            states,
            vec![State::Pending, State::Processing, State::Completed]
        );
        assert!(q.drain_events().is_empty());
    }

    #[test]
    fn ids_stay_unique_across_runtime_restarts() {
        let mut q = queue(Mode::Concurrent, &["a"]);
        let first = q.admit("a").unwrap();
        q.cancel(first).unwrap();
        q.reset_lanes(Mode::Concurrent, vec!["a".into()]);
        q.lane_ready(0);
        assert!(q.admit("a").unwrap() > first);
    }
}
