//! What the runtime hands out and takes in: a request's submission and ticket, the
//! events its client hears, how it ended, and why one was refused.

use super::*;

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
    pub(super) fn outcome(&self) -> Outcome {
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
    /// The request's sampling settings, for a page that has fields for them.
    pub settings: prq_protocol::controls::Settings,
    /// `tools` held a Google-search tool (taken out): the site's search goes on.
    pub search_tool: bool,
    /// The files for the page, in `files`' directory, which the runtime keeps until
    /// the request ends.
    pub attachments: Vec<prq_protocol::worker::Attachment>,
    pub files: Option<Arc<crate::attachments::RequestDir>>,
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

impl Ticket {
    /// The ticket of admitted request `id`: dropping it abandons the request.
    pub(super) fn new(id: RequestId, events: relay::Receiver, runtime: Arc<Runtime>) -> Self {
        Self {
            id,
            events,
            _guard: AbandonGuard { runtime, id },
        }
    }
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

/// What the queue's event stream carries.
#[derive(Debug, Clone)]
pub enum QueueEvent {
    /// A request changed state, or streamed more text.
    Request(Box<RequestView>),
    /// The runtime or a lane changed: the full status report.
    Status(Box<StatusReport>),
}
