//! Provider drivers. A driver knows one chat site: how to open it, and how to run one
//! generation on it — put the prompt in, stream the answer out as deltas, and stop it
//! when asked. Every site in a browser is driven by the one [`web::WebDriver`]; what
//! is particular to a site (URLs, selectors, the stream and its parser) is its module
//! here, one per provider. The lane (`lane.rs`) owns everything around the driver (the
//! supervisor link, the browser, the loop).

mod challenge;
pub mod controls;
pub mod echo;
pub mod format;
pub mod reading;
pub mod selectors;
pub mod web;

mod aistudio;
mod deepseek;
mod glm;
mod huggingchat;
mod moonshot;
mod perplexity;
mod qwen;
mod sandbox;
mod upload;

use std::future::Future;

use prq_protocol::worker::{DeltaKind, Failure, FailureKind, FinishReason, FromWorker, RequestId};
use tokio_util::sync::CancellationToken;

use crate::link::Outbox;
use crate::tab::{PageError, Tab};
use web::Site;

pub use prq_protocol::provider::Provider;

/// The chat site a browser lane of `provider` drives; `None` for echo.
pub fn site(provider: Provider) -> Option<&'static Site> {
    match provider {
        Provider::Echo => None,
        Provider::Sandbox => Some(&sandbox::SITE),
        Provider::DeepSeek => Some(&deepseek::SITE),
        Provider::Glm => Some(&glm::SITE),
        Provider::Moonshot => Some(&moonshot::SITE),
        Provider::Qwen => Some(&qwen::SITE),
        Provider::Perplexity => Some(&perplexity::SITE),
        Provider::HuggingChat => Some(&huggingchat::SITE),
        Provider::AiStudio => Some(&aistudio::SITE),
    }
}

/// One generation as a driver sees it.
#[derive(Debug)]
pub struct Job {
    /// The conversation, flattened into the one prompt a site takes.
    pub prompt: String,
    /// Whether the site should think first (`Auto` already resolved).
    pub thinking: bool,
    /// The page's own controls to set before sending.
    pub controls: prq_protocol::controls::PageControls,
    /// Files to attach through the page before it is sent.
    pub attachments: Vec<prq_protocol::worker::Attachment>,
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

    /// Whether the page takes the next request at once: asked after a generation
    /// that did not complete, which may leave the page busy (a stopped flood of text,
    /// a script that spins). Quick: one check under a short deadline.
    fn settled(&self) -> impl Future<Output = bool> + Send {
        std::future::ready(true)
    }

    /// Brings a page that is not [`settled`](Driver::settled) back to taking
    /// requests, by steps each under its own deadline; says which step did it, or why
    /// none did (the lane cannot go on).
    fn recover(&self) -> impl Future<Output = Result<&'static str, String>> + Send {
        std::future::ready(Ok("nothing to recover"))
    }

    /// Whether the page showed a logged-in account when it opened; `None` when the
    /// provider has no login or the page showed neither state.
    fn logged_in(&self) -> Option<bool> {
        None
    }

    /// The tab the panel's login view shows; `None` for a lane without a browser.
    fn tab(&self) -> Option<&Tab> {
        None
    }

    /// After a login view: loads the chat page again and says whether it shows a
    /// logged-in account now (what [`logged_in`](Driver::logged_in) says from then on).
    fn recheck(&self) -> impl Future<Output = Result<Option<bool>, String>> + Send {
        std::future::ready(Ok(self.logged_in()))
    }
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

    /// Reports whether the chat this generation made was deleted (`after_reply`).
    pub async fn chat_deleted(&self, deleted: bool) {
        let id = self.id;
        self.out.send(FromWorker::ChatDeleted { id, deleted }).await;
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
        retry_after_s: None,
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
