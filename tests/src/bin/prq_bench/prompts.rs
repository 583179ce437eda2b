//! Long prompts: the time from a request's admission to the sandbox site receiving it
//! (the prompt put in the page's prompt box and sent), for prompts of 1,000 to 400,000
//! characters shaped like a flattened roleplay (short lines of mixed Latin and Chinese
//! text, blank lines between turns). One sandbox lane; the sizes take turns, so that a
//! burst of load from elsewhere falls on each alike. Both ends are the same clock's unix
//! milliseconds: the request's `admitted_ms` and the sandbox stream's `started_ms`.
//!
//! After each measured request, a short one that is not measured: the page lays out the
//! prompt it shows in its chat after sending it (a second or more for 400,000
//! characters), and the next request would wait for that, whatever its own size.

use anyhow::{ensure, Context, Result};
use prq_tests::{config, request_id, stream_for, Prq};

use crate::stats::Percentiles;
use crate::table::{ms, Table, Target};

const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 400_000];
const REPEATS: usize = 5;
const MODEL: &str = "long-chat";

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("long prompts: admission → the site's request, one sandbox lane");
    let prq = Prq::start(&config("serial", &[("sandbox", "long", "a")]));
    let mut samples = vec![Vec::new(); SIZES.len()];
    for k in 0..REPEATS {
        for (size, samples) in SIZES.iter().zip(&mut samples) {
            samples.push(to_site_ms(&prq, *size, k).await?);
            let settle = prq.chat_request(MODEL, "settle\nsandbox: tokens=1", false);
            ensure!(settle.await.status() == 200, "the settling request failed");
        }
    }
    let p: Vec<Percentiles> = samples.into_iter().map(Percentiles::of).collect();
    for (size, p) in SIZES.iter().zip(&p) {
        table.info(
            format!("{size} characters: admission → site request"),
            format!("p50 {} · max {} (n={})", ms(p.p50), ms(p.p99), p.n),
        );
    }
    let added = p[2].p50 - p[0].p50;
    table.check(
        "100,000 characters against 1,000 (p50 − p50)",
        ms(added),
        added / 1e3,
        Target::Below(1.0, "s"),
    );
    crate::shut(prq)
}

/// One request with a prompt of `size` characters; milliseconds from its admission to
/// the site's request.
async fn to_site_ms(prq: &Prq, size: usize, k: usize) -> Result<f64> {
    let head = format!("long prompt {size} #{k}");
    let prompt = long_prompt(&head, size);
    let response = prq.chat_request(MODEL, &prompt, false).await;
    let id = request_id(&response).context("the request's ID")?;
    let status = response.status();
    let body = response.text().await?;
    ensure!(status == 200, "{size} characters: HTTP {status}: {body}");
    let admitted = prq.record(id).await["admitted_ms"]
        .as_u64()
        .context("admitted_ms")?;
    let streams = prq.sandbox_streams().await;
    let started = stream_for(&streams, &head)?["started_ms"]
        .as_u64()
        .context("started_ms")?;
    Ok(started.saturating_sub(admitted) as f64)
}

/// `head`, then lines of a roleplay up to `size` characters in all, then the sandbox's
/// directive (a one-word answer, at once).
fn long_prompt(head: &str, size: usize) -> String {
    const TURN: &str = "User: 她看着窗外的雨，轻声说：“我们明天再走吧。” She smiled.\n\nAssistant: *nods*  \tThe rain keeps falling — 雨一直下。\n\n";
    let directive = "\nsandbox: tokens=1 delay_ms=0";
    let fill = size.saturating_sub(head.chars().count() + directive.chars().count() + 1);
    let body: String = TURN.chars().cycle().take(fill).collect();
    format!("{head}\n{body}{directive}")
}
