//! Token relay: from the sandbox site sending an answer piece to the client reading it,
//! through Chromium, the worker and the supervisor.
//!
//! The site records when it sent each piece (`sandbox: trace`, `emitted_us` in its
//! `/stats`); the client stamps each network read that grows the answer. A read can
//! carry several pieces, so a piece is matched to the first read after which the
//! answer is at least as long as the text up to that piece. One machine, one clock.

use std::time::UNIX_EPOCH;

use anyhow::{ensure, Context, Result};
use prq_protocol::script::{answer_piece, expected};
use prq_tests::{config, stream_for, Prq};

use crate::stats::Percentiles;
use crate::table::{ms, Table};

/// Streams, one after another on one lane.
const STREAMS: usize = 10;
/// Fifty words a stream at the sandbox's default pace.
const SCRIPT: &str = "sandbox: trace tokens=50 delay_ms=20";

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("token relay: sandbox site → client, in Chromium");
    let prq = Prq::start(&config("serial", &[("sandbox", "relay", "a")]));
    let site = crate::Site::of(&prq);
    let mut samples = Vec::new();
    for k in 0..STREAMS {
        let head = format!("relay {k}\n");
        let prompt = format!("{head}{SCRIPT}");
        let streamed = prq.chat_stream("relay-chat", &prompt).await;
        let (_, want) = expected(&prompt, false).map_err(anyhow::Error::msg)?;
        ensure!(streamed.answer == want, "relay {k}: {streamed:?}");

        let streams = site.streams().await?;
        let emitted: Vec<u64> =
            serde_json::from_value(stream_for(&streams, &head)?["emitted_us"].clone())
                .context("emitted_us")?;
        // Where each piece ends in the answer: the echo, then the words.
        let mut end = prompt.len();
        let ends = std::iter::once(end).chain((0..emitted.len() - 1).map(|i| {
            end += answer_piece(i).len();
            end
        }));
        for (sent_us, end) in emitted.iter().zip(ends) {
            let (read_at, _) = streamed
                .answer_arrivals
                .iter()
                .find(|(_, len)| *len >= end)
                .context("a piece the client never read")?;
            let read_us = read_at.duration_since(UNIX_EPOCH)?.as_micros() as f64;
            samples.push((read_us - *sent_us as f64) / 1e3);
        }
    }
    let relay = Percentiles::of(samples);
    table.info(
        format!("site sent a piece → client read it ({} pieces)", relay.n),
        format!("p50 {} · p99 {}", ms(relay.p50), ms(relay.p99)),
    );
    crate::shut(prq)
}
