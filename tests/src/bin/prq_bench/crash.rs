//! Crash detection: SIGKILL to a lane's browser → the runtime is stopped, timed to the
//! `status` event on `GET /api/queue/events` that says so (subscribed before the kill,
//! so the figure is prq's reaction, not a poll interval). `prq start` between repeats.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use nix::sys::signal::Signal;
use prq_tests::{config, signal, Prq};
use serde_json::Value;

use crate::stats::Percentiles;
use crate::table::{ms, Table, Target};

const REPEATS: usize = 5;
/// Far beyond the target: past it, something is broken, not slow.
const GIVE_UP: Duration = Duration::from_secs(10);

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("crash detection: two sandbox lanes");
    let prq = Prq::start(&config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    ));
    let mut samples = Vec::new();
    for k in 0..REPEATS {
        if k > 0 {
            prq.restart_runtime();
        }
        let mut events = Events::subscribe(&prq).await?;
        let browser = prq.lane("alpha#1")["browser_pid"]
            .as_u64()
            .context("alpha#1's browser_pid")?;
        let killed = Instant::now();
        signal(browser, Signal::SIGKILL);
        tokio::time::timeout(GIVE_UP, async {
            loop {
                let (event, data) = events.next().await?;
                if event == "status" && data["runtime"]["state"] == "stopped" {
                    return anyhow::Ok(());
                }
            }
        })
        .await
        .context("no `runtime stopped` event")??;
        samples.push(killed.elapsed().as_secs_f64() * 1e3);
    }
    let p = Percentiles::of(samples);
    table.check(
        "browser SIGKILL → `status` event: runtime stopped",
        format!("p50 {} · max {} (n={})", ms(p.p50), ms(p.p99), p.n),
        p.p99,
        Target::Below(500.0, "ms"),
    );
    crate::shut(prq)
}

/// The queue's SSE event stream: (event name, data) as they arrive.
struct Events {
    events: futures::stream::BoxStream<'static, Result<sse_stream::Sse, sse_stream::Error>>,
}

impl Events {
    /// Subscribes, and waits for the `hello` that says the subscription is live.
    async fn subscribe(prq: &Prq) -> Result<Self> {
        let response = prq
            .http()
            .get(format!("{}/api/queue/events", prq.api))
            .send()
            .await?;
        ensure!(response.status() == 200, "events: {}", response.status());
        let mut events = Self {
            events: sse_stream::SseByteStream::new(response.bytes_stream()).boxed(),
        };
        let (first, _) = events.next().await?;
        ensure!(first == "hello", "the first event is {first}");
        Ok(events)
    }

    async fn next(&mut self) -> Result<(String, Value)> {
        loop {
            let Some(block) = self.events.next().await else {
                bail!("the event stream ended");
            };
            // Keep-alive comments carry neither.
            if let sse_stream::Sse {
                event: Some(event),
                data: Some(data),
                ..
            } = block?
            {
                return Ok((event, serde_json::from_str(&data)?));
            }
        }
    }
}
