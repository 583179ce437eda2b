//! Panel latency: a change in the daemon → the open panel shows it. The panel is open
//! in headless Chromium; a request waits in the queue behind one that hangs, a
//! `MutationObserver` in the page stamps the moment its card turns `cancelled`, and the
//! bench cancels it through the queue API. Browser and bench share the machine's
//! clock, in whole milliseconds.

#[path = "../../../tests/panel/browser.rs"]
mod browser;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use browser::{until, Headless};
use prq_tests::{config, request_id, Prq};

use crate::stats::Percentiles;
use crate::table::{ms, Table, Target};

const REPEATS: usize = 30;
const TARGET: Target = Target::Below(100.0, "ms (p99)");
const SHOW: Duration = Duration::from_secs(20);

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("panel: one sandbox lane, the panel open in headless Chromium");
    let prq = Prq::start(&config("serial", &[("sandbox", "panel", "a")]));
    let viewer = Headless::launch(1280, 900).await?;
    let measured = measure(&prq, &viewer).await;
    viewer.close().await;
    let samples = measured?;
    crate::shut(prq)?;
    let p = Percentiles::of(samples);
    table.check(
        "cancel through the API → the panel shows it",
        format!("p50 {} · p99 {} (n={})", ms(p.p50), ms(p.p99), p.n),
        p.p99,
        TARGET,
    );
    Ok(())
}

async fn measure(prq: &Prq, viewer: &Headless) -> Result<Vec<f64>> {
    let page = viewer.open(&format!("{}/", prq.api)).await?;
    until(
        &page,
        "document.querySelector('#connection').dataset.state === 'live'",
        SHOW,
        "document.querySelector('#connection').textContent",
    )
    .await?;
    // Holds the lane for the whole run; stopped at the end.
    let busy = prq
        .chat_request("panel-chat", "busy\nsandbox: hang_at=1 delay_ms=0", true)
        .await;
    let busy_id = request_id(&busy).context("a request ID")?;
    prq.until_state(busy_id, "processing").await;

    let mut samples = Vec::with_capacity(REPEATS);
    for k in 0..REPEATS {
        let waiting = prq
            .chat_request("panel-chat", &format!("waiting {k}"), true)
            .await;
        let id = request_id(&waiting).context("a request ID")?;
        let card = format!("document.querySelector('[data-request-id=\"{id}\"]')");
        until(
            &page,
            &format!("{card}?.dataset.state === 'pending'"),
            SHOW,
            "document.body.innerText",
        )
        .await?;
        browser::stamp_when(&page, &format!("{card}?.dataset.state === 'cancelled'")).await?;
        let asked = unix_ms();
        let r = prq
            .http()
            .post(format!("{}/api/queue/{id}/cancel", prq.api))
            .send()
            .await?;
        ensure!(r.status() == 200, "cancel: {}", r.text().await?);
        let deadline = Instant::now() + SHOW;
        let changed_at = loop {
            if let Some(at) = browser::changed_at(&page).await? {
                break at;
            }
            ensure!(
                Instant::now() < deadline,
                "the panel never showed the cancel of {id}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        samples.push(changed_at.saturating_sub(asked) as f64);
        drop(waiting);
    }
    let r = prq
        .http()
        .post(format!("{}/api/queue/{busy_id}/stop", prq.api))
        .send()
        .await?;
    ensure!(r.status() == 200, "stop: {}", r.text().await?);
    drop(busy);
    Ok(samples)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
