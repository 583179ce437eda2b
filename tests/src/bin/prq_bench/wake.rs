//! Sleeping lanes: what a sleeping lane costs against an awake one, and what waking it
//! adds to a request. Two sandbox lanes on one prq: `awake` (never sleeps) and `sleepy`
//! (`idle_suspend_s = 1`). In turns, 10 times each: a streaming request to the awake
//! lane, and one to the sleepy lane once `prq status` shows it asleep; the figure is the
//! time from sending the request to reading its first piece of answer text. Memory: the
//! awake lane's worker RSS and browser PSS, against the sleeping lane's worker RSS (it
//! has no browser).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use prq::procinfo::{browser_pss_kb, rss_kb};
use prq_tests::{config, Prq};

use crate::stats::Percentiles;
use crate::table::{mib, ms, Table, Target};

const REPEATS: usize = 10;
/// Far beyond a wake: past it, something is broken, not slow.
const GIVE_UP: Duration = Duration::from_secs(60);

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("sleeping lanes: one awake and one sleepy sandbox lane");
    let cfg = config(
        "concurrent",
        &[("sandbox", "awake", "a"), ("sandbox", "sleepy", "b")],
    )
    .replace("account = \"b\"\n", "account = \"b\"\nidle_suspend_s = 1\n");
    let prq = Prq::start(&cfg);
    let (mut awake, mut woken) = (Vec::new(), Vec::new());
    let mut asleep_worker_kb = 0;
    for k in 0..REPEATS {
        let prompt = format!("wake {k}\nsandbox: tokens=3 delay_ms=5");
        awake.push(first_token_ms(&prq, "awake-chat", &prompt).await?);
        let lane = until_asleep(&prq).await?;
        if k == 0 {
            let worker = lane["worker_pid"].as_u64().context("worker_pid")? as u32;
            ensure!(
                browser_pss_kb(worker).is_none(),
                "a sleeping lane has no browser"
            );
            asleep_worker_kb = rss_kb(worker).context("the sleeping worker's RSS")?;
        }
        woken.push(first_token_ms(&prq, "sleepy-chat", &prompt).await?);
    }
    let lane = prq.lane("awake#1");
    let worker = lane["worker_pid"].as_u64().context("worker_pid")? as u32;
    let (worker_kb, browser_kb) = (
        rss_kb(worker).context("the worker's RSS")?,
        browser_pss_kb(worker).context("the browser's PSS")?,
    );
    table.info(
        "an awake lane: worker RSS + browser PSS",
        format!(
            "{} + {} = {}",
            mib(worker_kb),
            mib(browser_kb),
            mib(worker_kb + browser_kb)
        ),
    );
    table.info(
        "a sleeping lane: worker RSS, no browser",
        mib(asleep_worker_kb),
    );
    let (a, w) = (Percentiles::of(awake), Percentiles::of(woken));
    table.info(
        "first token, awake lane",
        format!("p50 {} · max {} (n={})", ms(a.p50), ms(a.p99), a.n),
    );
    table.info(
        "first token, sleeping lane (it wakes)",
        format!("p50 {} · max {} (n={})", ms(w.p50), ms(w.p99), w.n),
    );
    table.check(
        "added by waking (p50 − p50)",
        ms(w.p50 - a.p50),
        (w.p50 - a.p50) / 1e3,
        Target::Below(1.5, "s"),
    );
    crate::shut(prq)
}

/// Waits (polling `prq status`, outside any timing) until the sleepy lane is asleep.
async fn until_asleep(prq: &Prq) -> Result<serde_json::Value> {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let lane = prq.lane("sleepy#1");
        if lane["state"] == "asleep" {
            return Ok(lane);
        }
        ensure!(
            Instant::now() < deadline,
            "the sleepy lane never slept: {lane}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Milliseconds from sending a streaming request to reading its first answer text;
/// the rest of the answer is read to its end.
pub async fn first_token_ms(prq: &Prq, model: &str, prompt: &str) -> Result<f64> {
    let sent = Instant::now();
    let response = prq.chat_request(model, prompt, true).await;
    ensure!(response.status() == 200, "{model}: {}", response.status());
    let mut events = std::pin::pin!(sse_stream::SseByteStream::new(response.bytes_stream()));
    let mut first = None;
    while let Some(event) = tokio::time::timeout(GIVE_UP, events.next()).await? {
        let Some(data) = event?.data.filter(|_| first.is_none()) else {
            continue;
        };
        // The role chunk carries an empty content; text is a non-empty one.
        let chunk: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
        if chunk["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|text| !text.is_empty())
        {
            first = Some(sent.elapsed().as_secs_f64() * 1e3);
        }
    }
    match first {
        Some(ms) => Ok(ms),
        None => bail!("{model}: the answer had no text"),
    }
}
