//! The echo driver: no browser, no site. It answers exactly what the sandbox site
//! would (`prq_protocol::script`), at the pace the prompt asks for, so that a lane of
//! it measures prq's own overhead. Its hot path allocates nothing beyond the text.

use prq_protocol::script::{self, answer_piece, reasoning_piece, Directives, Reply};
use prq_protocol::worker::{DeltaKind, FailureKind, FinishReason};
use tokio_util::sync::CancellationToken;

use super::{failure, Deltas, Driver, Job, Outcome};

pub struct Echo;

impl Driver for Echo {
    async fn generate(&self, job: Job, out: Deltas, stop: CancellationToken) -> Outcome {
        let reply = script::reply(&job.prompt).map_err(|e| failure(FailureKind::SiteError, e))?;
        tokio::select! {
            biased;
            _ = stop.cancelled() => Ok(FinishReason::Stopped),
            outcome = play(&reply, job.thinking, &out) => outcome,
        }
    }
}

/// The script's pieces in order: reasoning, the echo, the answer words (or the scripted
/// answer's pieces); a pause before each, and the faults where the script puts them.
async fn play(reply: &Reply<'_>, thinking: bool, out: &Deltas) -> Outcome {
    let script = &reply.directives;
    for i in 0..script.think_tokens(thinking) {
        pause(script).await;
        out.send(DeltaKind::Reasoning, reasoning_piece(i)).await;
    }
    if let Some(text) = &reply.scripted {
        for piece in script::scripted_pieces(text) {
            pause(script).await;
            out.send(DeltaKind::Answer, piece).await;
        }
        return Ok(FinishReason::Completed);
    }
    pause(script).await;
    out.send(DeltaKind::Answer, reply.echo.to_owned()).await;
    if script.crash {
        return Err(failure(
            FailureKind::TabCrashed,
            "the sandbox crashed the tab as asked",
        ));
    }
    for i in 0..=script.tokens {
        if script.fail_at == Some(i) {
            return Err(failure(
                FailureKind::SiteError,
                format!("sandbox: failure injected after {i} words"),
            ));
        }
        if script.hang_at == Some(i) {
            // Until stopped: the caller's select ends it.
            std::future::pending::<()>().await;
        }
        if i == script.tokens {
            break;
        }
        pause(script).await;
        out.send(DeltaKind::Answer, answer_piece(i)).await;
    }
    Ok(FinishReason::Completed)
}

async fn pause(script: &Directives) {
    // A zero delay must not cost a timer per piece.
    if !script.delay.is_zero() {
        tokio::time::sleep(script.delay).await;
    }
}
