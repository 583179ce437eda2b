//! Cancel latency, all measured on the sandbox site's own clock against the moment the
//! bench acted: Stop → the site sees the abort; Stop → the lane's next request reaches
//! the site; a streaming client that goes away → the site sees the abort.
//!
//! Each request streams three words and then hangs (`hang_at=3`), so it is surely
//! generating when it is stopped. The site records times in whole milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use prq_tests::{config, request_id, stream_for, Prq, Streamed};
use serde_json::Value;

use crate::stats::Percentiles;
use crate::table::{ms, Table, Target};
use crate::Site;

const REPEATS: usize = 20;
const HANGING: &str = "sandbox: hang_at=3 delay_ms=0";
const TARGET: Target = Target::Below(100.0, "ms (p99)");

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("cancel latency: one sandbox lane");
    let prq = Prq::start(&config("serial", &[("sandbox", "cancel", "a")]));
    let site = Site::of(&prq);
    let (mut stop_seen, mut next_taken, mut drop_seen) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..REPEATS {
        let (seen, taken) = stop(&prq, &site, k).await?;
        stop_seen.push(seen);
        next_taken.push(taken);
        drop_seen.push(disconnect(&prq, &site, k).await?);
    }
    for (what, samples) in [
        ("Stop → the site sees the abort", stop_seen),
        (
            "Stop → the lane's next request reaches the site",
            next_taken,
        ),
        ("client disconnect → the site sees the abort", drop_seen),
    ] {
        let p = Percentiles::of(samples);
        let figure = format!("p50 {} · p99 {} (n={})", ms(p.p50), ms(p.p99), p.n);
        table.check(what, figure, p.p99, TARGET);
    }
    crate::shut(prq)
}

/// Stops a hanging request with another queued behind it; returns the milliseconds to
/// the site seeing the abort and to the next request reaching the site.
async fn stop(prq: &Prq, site: &Site, k: usize) -> Result<(f64, f64)> {
    let head = format!("stop {k}\n");
    let stream = prq
        .chat_request("cancel-chat", &format!("{head}{HANGING}"), true)
        .await;
    let id = request_id(&stream).context("a request ID")?;
    // Admitted after the hanging one, so it waits behind it on the one lane.
    let next_head = format!("next {k}\n");
    let next_prompt = format!("{next_head}sandbox: tokens=1 delay_ms=0");
    let next = prq.chat("cancel-chat", &next_prompt);
    let stop_and_wait = async {
        let hanging = site.wait(&head, |s| s["tokens_sent"] == 3).await?;
        ensure!(hanging["outcome"] == "streaming", "{hanging}");
        let stopped_at = now_ms();
        let (status, body) = prq.post(&format!("/api/queue/{id}/stop")).await;
        ensure!(status == 200, "stop: {body}");
        let streamed = Streamed::read(stream).await;
        ensure!(
            streamed.error.is_some(),
            "a stopped stream ends with its error"
        );
        anyhow::Ok(stopped_at)
    };
    let (stopped_at, (status, body)) = tokio::join!(stop_and_wait, next);
    let stopped_at = stopped_at?;
    ensure!(status == 200, "the next request: {body}");
    let aborted = site.wait(&head, |s| s["outcome"] != "streaming").await?;
    ensure!(aborted["outcome"] == "aborted", "{aborted}");
    let streams = site.streams().await?;
    let next = stream_for(&streams, &next_head)?;
    Ok((
        ms_of(&aborted["ended_ms"])? - stopped_at,
        ms_of(&next["started_ms"])? - stopped_at,
    ))
}

/// Drops a streaming response mid-generation; returns the milliseconds to the site
/// seeing the abort.
async fn disconnect(prq: &Prq, site: &Site, k: usize) -> Result<f64> {
    let head = format!("drop {k}\n");
    let stream = prq
        .chat_request("cancel-chat", &format!("{head}{HANGING}"), true)
        .await;
    site.wait(&head, |s| s["tokens_sent"] == 3).await?;
    let dropped_at = now_ms();
    drop(stream);
    let aborted = site.wait(&head, |s| s["outcome"] != "streaming").await?;
    ensure!(aborted["outcome"] == "aborted", "{aborted}");
    Ok(ms_of(&aborted["ended_ms"])? - dropped_at)
}

/// Unix time in whole milliseconds, as the site records it.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64) as f64
}

pub fn ms_of(v: &Value) -> Result<f64> {
    v.as_u64()
        .map(|ms| ms as f64)
        .with_context(|| format!("a time in ms, got {v}"))
}
