//! The sandbox driver: prq's own chat site (served by the supervisor, see
//! `supervisor/src/sandbox`). Everything particular to that site lives here: its
//! selectors, the path its answer streams from, its event types and what they mean.

use std::time::Duration;

use prq_protocol::worker::{DeltaKind, FailureKind, FinishReason};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{failure, Deltas, Driver, Job, Outcome};
use crate::stream::{NetEvent, NetworkStream, SseParser};
use crate::tab::{PageError, Tab, ABORT_FETCHES};

/// The request the page streams its answer from.
const CHAT_PATH: &str = "/api/chat";

const PROMPT: &str = "textarea#prompt";
const SEND: &str = "button#send";
const STOP: &str = "button#stop";
const THINKING: &str = "input#thinking";
const LOG: &str = "#log";
/// What a loaded, usable chat page has.
const PAGE: [&str; 5] = [PROMPT, SEND, STOP, THINKING, LOG];

/// How long the page's controls get to appear.
const SELECTOR_DEADLINE: Duration = Duration::from_secs(10);
/// From clicking Send to the answer's response headers.
const FIRST_RESPONSE_DEADLINE: Duration = Duration::from_secs(30);
/// From clicking Stop to the stream's end; the stop is reported either way.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// The site announced that it crashes its tab: how long the crash gets to be reported.
/// Chromium reports a crashed renderer only once the renderer's own crash handler has
/// given up waiting for its dump to be taken, about 5 s after the crash.
const CRASH_GRACE: Duration = Duration::from_secs(20);
/// A stream that broke for no reason may be a crash whose event is still on its way.
const CRASH_SETTLE: Duration = Duration::from_millis(250);

/// One `data:` event of the page's stream.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum SiteEvent {
    Start {
        stream_id: u64,
    },
    Reasoning {
        text: String,
    },
    Answer {
        text: String,
    },
    Done,
    Error {
        message: String,
    },
    /// The page crashes its own renderer after this.
    Crash,
    #[serde(other)]
    Other,
}

pub struct Sandbox {
    tab: Tab,
}

impl Sandbox {
    /// Takes over a tab that has the sandbox page loaded; ready once its controls are.
    pub async fn open(tab: Tab) -> Result<Self, PageError> {
        tab.wait_for(&PAGE, SELECTOR_DEADLINE).await?;
        Ok(Self { tab })
    }

    async fn reload(&self) -> Result<(), PageError> {
        self.tab.load().await?;
        self.tab.wait_for(&PAGE, SELECTOR_DEADLINE).await
    }

    async fn run(&self, job: &Job, out: &Deltas, stop: &CancellationToken) -> Outcome {
        // Listening starts before Send is clicked, so the request cannot slip by.
        let mut stream = NetworkStream::watch(&self.tab, CHAT_PATH).await?;
        self.tab
            .wait_for(&[PROMPT, SEND, THINKING], SELECTOR_DEADLINE)
            .await?;
        self.tab.eval::<()>(&prepare(job.thinking)).await?;
        self.tab.insert_text(&job.prompt).await?;
        if stop.is_cancelled() {
            return Ok(FinishReason::Stopped);
        }
        self.tab
            .eval::<()>(&format!("document.querySelector({SEND:?}).click()"))
            .await?;

        let mut phase = Phase::Starting;
        let mut deadline = Some(Instant::now() + FIRST_RESPONSE_DEADLINE);
        let mut sse = SseParser::default();
        let mut status = 0;
        let mut error_body = Vec::new();
        loop {
            let event = tokio::select! {
                biased;
                _ = stop.cancelled(), if phase != Phase::Stopping => {
                    let how: String = self.tab.eval(&stop_script()).await?;
                    tracing::debug!(how, "stopping in the page");
                    phase = Phase::Stopping;
                    deadline = Some(Instant::now() + STOP_GRACE);
                    continue;
                }
                event = stream.next() => event?,
                _ = sleep_until(deadline) => {
                    return match phase {
                        Phase::Stopping => {
                            tracing::warn!("the stream went on {STOP_GRACE:?} after Stop");
                            Ok(FinishReason::Stopped)
                        }
                        _ => Err(failure(FailureKind::SiteChanged, format!(
                            "the answer stream ({CHAT_PATH}) did not start within {} s{}",
                            FIRST_RESPONSE_DEADLINE.as_secs(),
                            if stream.requested() { "" } else { " (the page sent no request)" },
                        ))),
                    };
                }
            };
            match event {
                NetEvent::Response { status: s } => {
                    status = s;
                    if phase == Phase::Starting {
                        phase = Phase::Streaming;
                        deadline = None;
                    }
                }
                NetEvent::Data(bytes) if !(200..300).contains(&status) => {
                    error_body.extend_from_slice(&bytes);
                }
                NetEvent::Data(bytes) => {
                    sse.push(&bytes);
                    while let Some(event) = sse.next_event() {
                        if let Some(outcome) = self.on_event(&event.data, out).await {
                            return outcome;
                        }
                    }
                }
                NetEvent::Finished | NetEvent::Failed { .. } if phase == Phase::Stopping => {
                    return Ok(FinishReason::Stopped);
                }
                NetEvent::Finished if !(200..300).contains(&status) => {
                    let body = String::from_utf8_lossy(&error_body);
                    let excerpt: String = body.chars().take(300).collect();
                    return Err(failure(
                        FailureKind::SiteError,
                        format!("{CHAT_PATH} answered HTTP {status}: {excerpt}"),
                    ));
                }
                NetEvent::Finished => {
                    return Err(failure(
                        FailureKind::SiteError,
                        "the answer stream ended without a final event",
                    ));
                }
                NetEvent::Failed { error, .. } => {
                    if tokio::time::timeout(CRASH_SETTLE, self.tab.crashed())
                        .await
                        .is_ok()
                    {
                        return Err(tab_crashed());
                    }
                    return Err(failure(
                        FailureKind::SiteError,
                        format!("the answer stream failed: {error}"),
                    ));
                }
            }
        }
    }

    /// Acts on one event of the page's stream; `Some` when it ends the generation.
    async fn on_event(&self, data: &str, out: &Deltas) -> Option<Outcome> {
        let event = match serde_json::from_str::<SiteEvent>(data) {
            Ok(event) => event,
            Err(e) => {
                return Some(Err(failure(
                    FailureKind::SiteChanged,
                    format!("an event from {CHAT_PATH} does not parse ({e})"),
                )))
            }
        };
        match event {
            SiteEvent::Start { stream_id } => tracing::debug!(stream_id, "stream started"),
            SiteEvent::Reasoning { text } => out.send(DeltaKind::Reasoning, text).await,
            SiteEvent::Answer { text } => out.send(DeltaKind::Answer, text).await,
            SiteEvent::Done => return Some(Ok(FinishReason::Completed)),
            SiteEvent::Error { message } => {
                return Some(Err(failure(FailureKind::SiteError, message)))
            }
            SiteEvent::Crash => {
                let crashed = tokio::time::timeout(CRASH_GRACE, self.tab.crashed()).await;
                return Some(Err(match crashed {
                    Ok(()) => tab_crashed(),
                    Err(_) => failure(
                        FailureKind::SiteError,
                        "the site announced a crash, but the tab survived it",
                    ),
                }));
            }
            SiteEvent::Other => tracing::debug!("an event of an unknown type, ignored"),
        }
        None
    }
}

impl Driver for Sandbox {
    async fn generate(&self, job: Job, out: Deltas, stop: CancellationToken) -> Outcome {
        if self.tab.has_crashed() {
            self.reload().await.map_err(|e| {
                failure(
                    FailureKind::TabCrashed,
                    format!("the tab had crashed and does not reload: {e}"),
                )
            })?;
        }
        let outcome = tokio::select! {
            biased;
            _ = self.tab.crashed() => Err(tab_crashed()),
            outcome = self.run(&job, &out, &stop) => outcome,
        };
        if self.tab.has_crashed() {
            if let Err(e) = self.reload().await {
                tracing::error!("reloading the crashed tab failed: {e}");
            }
        }
        outcome
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Send was clicked; the response has not come.
    Starting,
    Streaming,
    /// Stop was clicked; waiting for the stream to end.
    Stopping,
}

fn tab_crashed() -> prq_protocol::worker::Failure {
    failure(
        FailureKind::TabCrashed,
        "the tab's renderer crashed; the page is reloaded for the next request",
    )
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sets the thinking switch and leaves the prompt box empty and focused for typing.
fn prepare(thinking: bool) -> String {
    format!(
        r#"(() => {{
  const thinking = document.querySelector({THINKING:?});
  if (thinking.checked !== {thinking}) thinking.click();
  const prompt = document.querySelector({PROMPT:?});
  prompt.value = "";
  prompt.focus();
}})()"#
    )
}

/// Clicks Stop when the page offers it, else aborts the page's fetches; says which.
fn stop_script() -> String {
    format!(
        r#"(() => {{
  const stop = document.querySelector({STOP:?});
  if (stop && !stop.disabled) {{ stop.click(); return "button"; }}
  return {ABORT_FETCHES} > 0 ? "aborted the page's fetches" : "nothing to stop";
}})()"#
    )
}
