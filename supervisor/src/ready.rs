//! Readiness: whether a load balancer should send this host requests (`GET /readyz`).
//!
//! Liveness (`/healthz`) says the daemon serves HTTP; readiness says a request sent now
//! would be taken: the runtime runs (not starting, draining or stopped) and at least
//! one lane can serve ([`LaneState::can_serve`]) and was not seen logged out — a host
//! whose every lane fails at once with `not_logged_in` would otherwise draw *more*
//! traffic from a least-connections balancer, its requests ending fastest. A pure
//! function of the runtime's and the lanes' states, tested without a daemon.

use prq_protocol::control::{LaneState, RuntimeState};
use serde::Serialize;

/// The answer of `/readyz`: `reason` is a stable code, `message` its words. Neither
/// names a lane, an account or the queue: the endpoint needs no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub state: RuntimeState,
    pub reason: &'static str,
    pub message: &'static str,
}

/// `lanes`: each lane's state and whether its page showed a logged-in account (`None`:
/// no login, or it could not tell).
pub fn readiness(
    state: RuntimeState,
    lanes: impl IntoIterator<Item = (LaneState, Option<bool>)>,
) -> Readiness {
    let (ready, reason, message) = match state {
        RuntimeState::Starting => (false, "starting", "the runtime is starting its lanes"),
        RuntimeState::Draining => (
            false,
            "draining",
            "this host is draining: it finishes what it has and takes no new requests",
        ),
        RuntimeState::Stopped => (
            false,
            "stopped",
            "the runtime is stopped; run `prq start` on this host",
        ),
        RuntimeState::Running
            if lanes
                .into_iter()
                .any(|(lane, logged_in)| lane.can_serve() && logged_in != Some(false)) =>
        {
            (true, "ready", "the runtime is running and a lane can serve")
        }
        RuntimeState::Running => (
            false,
            "no_lane",
            "no lane can take a request (each is crashed, restarting, logged out or otherwise unable)",
        ),
    };
    Readiness {
        ready,
        state,
        reason,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LaneState::*;

    #[test]
    fn ready_only_when_running_with_a_lane_that_can_serve() {
        let running = |lanes: &[LaneState]| {
            readiness(RuntimeState::Running, lanes.iter().map(|&l| (l, None)))
        };
        assert!(running(&[Idle]).ready);
        assert!(
            running(&[Busy, Busy]).ready,
            "busy lanes queue: still ready"
        );
        assert!(running(&[Crashed, Idle]).ready, "one lane is enough");
        assert!(
            !running(&[Cooling, Cooling]).ready,
            "rate limited everywhere"
        );
        assert!(running(&[Cooling, Busy]).ready);
        assert!(
            running(&[Asleep, Crashed]).ready,
            "a request wakes a sleeping lane"
        );
        let r = running(&[Crashed, Starting, Stopped]);
        assert_eq!((r.ready, r.reason), (false, "no_lane"));
        assert_eq!(running(&[]).reason, "no_lane");
    }

    #[test]
    fn a_lane_seen_logged_out_cannot_serve() {
        let r = readiness(RuntimeState::Running, [(Idle, Some(false))]);
        assert_eq!((r.ready, r.reason), (false, "no_lane"));
        let r = readiness(
            RuntimeState::Running,
            [(Idle, Some(false)), (Busy, Some(true))],
        );
        assert!(r.ready);
    }

    #[test]
    fn not_ready_while_starting_draining_or_stopped_whatever_the_lanes() {
        for (state, reason) in [
            (RuntimeState::Starting, "starting"),
            (RuntimeState::Draining, "draining"),
            (RuntimeState::Stopped, "stopped"),
        ] {
            let r = readiness(state, [(Idle, None), (Busy, Some(true))]);
            assert_eq!((r.ready, r.reason, r.state), (false, reason, state));
        }
    }
}
