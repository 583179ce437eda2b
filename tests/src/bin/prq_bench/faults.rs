//! A lane's browser under strain (issue 13): stopping a fast stream, and finding a
//! frozen browser.
//!
//! Fast-stream stop: one sandbox lane; each request streams 5000 words with no pause
//! (`delay_ms=0`), which keeps the page and the worker as busy as a stream can. Once
//! the site has sent 50 words, `POST /api/queue/{id}/stop`. Figures: Stop → the client's
//! stream ends (with `request_stopped`, or the repeat fails), and Stop → the site sees
//! the abort (its `ended_ms`; site clock, whole milliseconds).
//!
//! Frozen browser: one sandbox lane with `on_lane_crash = "restart"`; a request streams
//! three words and hangs; once the client has some of them, SIGSTOP to the lane's
//! browser; figure: SIGSTOP → the client reads `lane_crashed`. Then the lane is awaited back (a new browser) for the next.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use prq_tests::{config, request_id, signal, Prq, Streamed};

use crate::cancel::{ms_of, now_ms};
use crate::stats::Percentiles;
use crate::table::{ms, Table, Target};
use crate::Site;

const STOPS: usize = 10;
const FREEZES: usize = 3;
/// Past this a repeat is broken, not slow.
const GIVE_UP: Duration = Duration::from_secs(30);

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("hostile clients: fast-stream stop and frozen browser, one sandbox lane");
    let prq = Prq::start(&config("serial", &[("sandbox", "fast", "a")]));
    let site = Site::of(&prq);
    let (mut ended, mut aborted) = (Vec::new(), Vec::new());
    for k in 0..STOPS {
        let (client, site_saw) = fast_stop(&prq, &site, k).await?;
        ended.push(client);
        aborted.push(site_saw);
    }
    for (what, samples, target) in [
        (
            "fast stream (delay_ms=0): Stop → client reads request_stopped",
            ended,
            Target::Below(
                prq_protocol::worker::STOP_GRACE.as_millis() as f64,
                "ms (p99: the supervisor's stop grace)",
            ),
        ),
        (
            "fast stream (delay_ms=0): Stop → the site sees the abort",
            aborted,
            Target::Below(1000.0, "ms (p99)"),
        ),
    ] {
        let p = Percentiles::of(samples);
        let figure = format!("p50 {} · p99 {} (n={})", ms(p.p50), ms(p.p99), p.n);
        table.check(what, figure, p.p99, target);
    }
    crate::shut(prq)?;

    let cfg = config("serial", &[("sandbox", "frozen", "a")]).replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\non_lane_crash = \"restart\"\n",
    );
    let prq = Prq::start(&cfg);
    let site = Site::of(&prq);
    let mut found = Vec::new();
    for k in 0..FREEZES {
        found.push(freeze(&prq, &site, k).await?);
    }
    let p = Percentiles::of(found);
    table.check(
        "browser SIGSTOP → client reads lane_crashed (heartbeat_timeout_ms = 3000)",
        format!("p50 {} · max {} (n={})", ms(p.p50), ms(p.p99), p.n),
        p.p99,
        Target::Below(5000.0, "ms"),
    );
    crate::shut(prq)
}

/// One stop of a fast stream: ms from Stop to the client's end, and to the site's abort.
async fn fast_stop(prq: &Prq, site: &Site, k: usize) -> Result<(f64, f64)> {
    let head = format!("fast {k}\n");
    let prompt = format!("{head}sandbox: tokens=5000 delay_ms=0");
    let stream = prq.chat_request("fast-chat", &prompt, true).await;
    let id = request_id(&stream).context("a request ID")?;
    site.wait(&head, |s| s["tokens_sent"].as_u64() >= Some(50))
        .await?;
    let (stopped_at, t0) = (now_ms(), Instant::now());
    let (status, body) = prq.post(&format!("/api/queue/{id}/stop")).await;
    ensure!(status == 200, "stop: {body}");
    let streamed = tokio::time::timeout(GIVE_UP, Streamed::read(stream))
        .await
        .context("the stopped stream did not end")?;
    let client = t0.elapsed().as_secs_f64() * 1e3;
    let kind = streamed
        .error
        .as_ref()
        .and_then(|e| e["error"]["type"].as_str());
    ensure!(
        kind == Some("request_stopped"),
        "ended with {:?}",
        streamed.error
    );
    let stream = site.wait(&head, |s| s["outcome"] != "streaming").await?;
    ensure!(stream["outcome"] == "aborted", "{stream}");
    Ok((client, ms_of(&stream["ended_ms"])? - stopped_at))
}

/// One frozen browser: ms from SIGSTOP to the client reading `lane_crashed`.
async fn freeze(prq: &Prq, site: &Site, k: usize) -> Result<f64> {
    let head = format!("frozen {k}\n");
    let browser = prq.lane("frozen#1")["browser_pid"]
        .as_u64()
        .context("browser_pid")?;
    let stream = prq
        .chat_request(
            "frozen-chat",
            &format!("{head}sandbox: hang_at=3 delay_ms=0"),
            true,
        )
        .await;
    site.wait(&head, |s| s["tokens_sent"] == 3).await?;
    // Until the supervisor has relayed some of it: a request lost with nothing streamed
    // is requeued, not failed, and would hang again on the lane's next browser.
    let id = request_id(&stream).context("a request ID")?;
    prq.until_state(id, "processing").await;
    let t0 = Instant::now();
    signal(browser, Signal::SIGSTOP);
    let streamed = tokio::time::timeout(GIVE_UP, Streamed::read(stream)).await;
    let found = t0.elapsed().as_secs_f64() * 1e3;
    // Whatever happened, the stopped browser must not stay behind.
    if prq_tests::is_alive(browser as u32) {
        signal(browser, Signal::SIGCONT);
        signal(browser, Signal::SIGKILL);
    }
    let streamed = streamed.context("the request on the frozen browser did not end")?;
    let kind = streamed
        .error
        .as_ref()
        .and_then(|e| e["error"]["type"].as_str());
    ensure!(
        kind == Some("lane_crashed"),
        "ended with {:?}",
        streamed.error
    );
    let back = tokio::time::timeout(GIVE_UP, async {
        loop {
            let lane = prq.lane("frozen#1");
            if lane["state"] == "idle" && lane["browser_pid"].as_u64() != Some(browser) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    back.await.context("the lane did not come back")?;
    Ok(found)
}
