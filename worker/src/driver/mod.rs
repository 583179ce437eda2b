//! Provider drivers. A driver knows one chat site: how to open it, and how to run one
//! generation on it — put the prompt in, stream the answer out as deltas, and stop it
//! when asked. Each provider is one module here implementing [`Driver`]; the lane
//! (`lane.rs`) owns everything around it (the supervisor link, the browser, the loop).

pub mod echo;
pub mod sandbox;

use std::future::Future;

use prq_protocol::worker::{DeltaKind, Failure, FailureKind, FinishReason, FromWorker, RequestId};
use tokio_util::sync::CancellationToken;

use crate::link::Outbox;
use crate::tab::PageError;

/// The providers this worker can drive, by their name in the lane's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// No browser: answers from `prq_protocol::script` (for measuring prq itself).
    Echo,
    /// prq's own sandbox chat site, in Chromium.
    Sandbox,
}

impl Provider {
    pub const NAMES: &'static str = "echo, sandbox";

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "echo" => Some(Provider::Echo),
            "sandbox" => Some(Provider::Sandbox),
            _ => None,
        }
    }
}

/// One generation as a driver sees it.
#[derive(Debug)]
pub struct Job {
    /// The conversation, flattened into the one prompt a site takes.
    pub prompt: String,
    /// Whether the site should think first (`Auto` already resolved).
    pub thinking: bool,
}

/// How a generation ended: `Finished` with this reason, or `Failed`.
pub type Outcome = Result<FinishReason, Failure>;

pub trait Driver: Send + Sync + 'static {
    /// Runs one generation to its end, sending its text to `out` as the site streams
    /// it. When `stop` fires, the driver stops the generation in the site and returns
    /// `Ok(Stopped)` (or how it had already ended).
    fn generate(
        &self,
        job: Job,
        out: Deltas,
        stop: CancellationToken,
    ) -> impl Future<Output = Outcome> + Send;
}

/// Where a generation's text goes: the supervisor, tagged with the request ID.
#[derive(Clone)]
pub struct Deltas {
    id: RequestId,
    out: Outbox,
}

impl Deltas {
    pub fn new(id: RequestId, out: Outbox) -> Self {
        Self { id, out }
    }

    pub async fn send(&self, kind: DeltaKind, text: String) {
        self.out
            .send(FromWorker::Delta {
                id: self.id,
                kind,
                text,
            })
            .await;
    }
}

pub fn failure(kind: FailureKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

impl From<PageError> for Failure {
    fn from(e: PageError) -> Self {
        let kind = match &e {
            _ if e.is_timeout() => FailureKind::BrowserUnresponsive,
            // The driver's own scripts and selectors no longer fit the page.
            PageError::Script(_) | PageError::Missing { .. } => FailureKind::SiteChanged,
            PageError::Load { .. } => FailureKind::SiteError,
            PageError::Cdp(_) | PageError::Gone | PageError::Unexpected(_) => FailureKind::Internal,
        };
        failure(kind, e.to_string())
    }
}
