//! The queue as prq shows it: one request ([`RequestView`]) and a listing
//! ([`QueueView`]). The daemon builds them; `GET /api/queue`, the panel's events and
//! `prq queue` (over the control socket) all carry these same structs, so their JSON
//! keys are one public contract.

use serde::{Deserialize, Serialize};

use crate::control::RuntimeStatus;
use crate::worker::RequestId;

/// Where a request is in its life. Pending and processing are live; the rest are its
/// one terminal state. Its name ([`RequestState::as_str`]) is its JSON form too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum RequestState {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
    Stopped,
    TimedOut,
}

impl RequestState {
    pub const ALL: [RequestState; 7] = [
        RequestState::Pending,
        RequestState::Processing,
        RequestState::Completed,
        RequestState::Failed,
        RequestState::Cancelled,
        RequestState::Stopped,
        RequestState::TimedOut,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Processing => "processing",
            RequestState::Completed => "completed",
            RequestState::Failed => "failed",
            RequestState::Cancelled => "cancelled",
            RequestState::Stopped => "stopped",
            RequestState::TimedOut => "timed_out",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, RequestState::Pending | RequestState::Processing)
    }
}

impl From<RequestState> for &'static str {
    fn from(state: RequestState) -> Self {
        state.as_str()
    }
}

impl TryFrom<String> for RequestState {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| format!("no request state is called {name:?}"))
    }
}

/// The deadlines a request lives under (`[deadlines]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deadline {
    QueueWait,
    FirstToken,
    Idle,
    Total,
}

impl Deadline {
    pub fn as_str(self) -> &'static str {
        match self {
            Deadline::QueueWait => "queue_wait",
            Deadline::FirstToken => "first_token",
            Deadline::Idle => "idle",
            Deadline::Total => "total",
        }
    }
}

/// Why a processing request is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopCause {
    /// The queue API, the CLI or the panel asked.
    Asked,
    /// Its client went away.
    ClientGone,
    /// It ran out of time.
    Deadline(Deadline),
    /// Its client fell too far behind reading the answer (`limits.client_buffer_bytes`).
    ClientTooSlow,
    /// Its answer reached one of the request's `stop` strings: it ends `completed`.
    StopSequence,
}

/// One request as the queue shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    pub id: RequestId,
    pub state: RequestState,
    pub model: String,
    /// The model ID's prefix: which lanes may serve it.
    pub prefix: String,
    /// The lane serving it or that served it.
    pub lane: Option<String>,
    /// Its API key's name, or its client's address.
    pub client: String,
    /// `chat` or `completion`.
    pub kind: String,
    pub messages: usize,
    pub prompt_chars: usize,
    pub stream: bool,
    /// Its place among the pending requests of its prefix (0 = next); `None` once it
    /// is not pending.
    pub position: Option<usize>,
    /// When it was admitted, in unix milliseconds.
    pub admitted_ms: u64,
    /// Since it was admitted, until it ended.
    pub age_ms: u64,
    /// How long it waited for a lane; `None` while pending or if it never started.
    pub wait_ms: Option<u64>,
    /// Characters streamed so far (reasoning and answer).
    pub chars: usize,
    /// Set once it has been told to stop, and why.
    pub stopping: Option<StopCause>,
    /// The deadline it ran out of, if it did.
    pub deadline: Option<Deadline>,
    /// How it failed (a `FailureKind`'s code), if it did.
    pub error: Option<String>,
}

/// One listing of the queue: `GET /api/queue` and `prq queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueView {
    pub runtime: RuntimeStatus,
    pub pending: usize,
    pub processing: usize,
    /// The live requests: pending ones in order, then processing ones.
    pub requests: Vec<RequestView>,
    /// The most recently finished, newest first.
    pub finished: Vec<RequestView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_its_name_in_json_and_reads_back() {
        for state in RequestState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<RequestState>(&json).unwrap(), state);
        }
        assert!(serde_json::from_str::<RequestState>("\"done\"").is_err());
    }

    #[test]
    fn a_listing_crosses_the_control_socket_whole() {
        let request = RequestView {
            id: 7,
            state: RequestState::Processing,
            model: "sandbox-chat".into(),
            prefix: "sandbox".into(),
            lane: Some("sandbox#1".into()),
            client: "127.0.0.1".into(),
            kind: "chat".into(),
            messages: 2,
            prompt_chars: 40,
            stream: true,
            position: None,
            admitted_ms: 1_700_000_000_000,
            age_ms: 1200,
            wait_ms: Some(3),
            chars: 17,
            stopping: Some(StopCause::Deadline(Deadline::Idle)),
            deadline: None,
            error: None,
        };
        let view = QueueView {
            runtime: RuntimeStatus {
                state: crate::control::RuntimeState::Running,
                reason: None,
            },
            pending: 0,
            processing: 1,
            requests: vec![request.clone()],
            finished: vec![RequestView {
                state: RequestState::Failed,
                error: Some("site_changed".into()),
                ..request
            }],
        };
        let response = crate::control::ControlResponse::Queue(Box::new(view));
        let body = crate::frame::encode_body(&response).unwrap();
        let back: crate::control::ControlResponse = crate::frame::decode_body(&body).unwrap();
        assert_eq!(back, response);
    }
}
