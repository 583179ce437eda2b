//! Attachments: the time from sending a request to the sandbox site receiving its
//! prompt, for no image, a 1 MB and a 10 MB PNG (as a base64 `data:` URL, as clients
//! send a pasted screenshot). It covers all that an attachment adds: reading and
//! decoding the body, writing the file to the request's directory, setting it on the
//! page's file input, the page's upload to the site, and waiting for the "uploaded"
//! marker. One sandbox lane; the sizes take turns. Both ends are the same clock's unix
//! milliseconds: the client's send and the sandbox stream's `started_ms`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use base64::Engine;
use prq_tests::{config, stream_for, with_limits, Prq};
use serde_json::json;

use crate::stats::Percentiles;
use crate::table::{ms, ms_diff, Table};

const SIZES: [usize; 3] = [0, 1_000_000, 10_000_000];
const REPEATS: usize = 5;

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("attachments: send → the site's request, one sandbox lane");
    let cfg = with_limits(
        &config("serial", &[("sandbox", "img", "a")]),
        &["max_body_bytes = 33554432"],
    );
    let prq = Prq::start(&cfg);
    let images: Vec<String> = SIZES
        .iter()
        .map(|&n| base64::engine::general_purpose::STANDARD.encode(noise(n)))
        .collect();
    let mut samples = vec![Vec::new(); SIZES.len()];
    for k in 0..REPEATS {
        for ((size, image), samples) in SIZES.iter().zip(&images).zip(&mut samples) {
            samples.push(to_site_ms(&prq, *size, image, k).await?);
        }
    }
    let p: Vec<Percentiles> = samples.into_iter().map(Percentiles::of).collect();
    for (size, p) in SIZES.iter().zip(&p) {
        let what = match size {
            0 => "no image".to_string(),
            n => format!("a {} MB image", n / 1_000_000),
        };
        table.info(
            format!("{what}: send → site request"),
            format!("p50 {} · max {} (n={})", ms(p.p50), ms(p.p99), p.n),
        );
    }
    for (i, size) in SIZES.iter().enumerate().skip(1) {
        table.info(
            format!(
                "time to attach {} MB (p50 − p50 of no image)",
                size / 1_000_000
            ),
            ms_diff(p[i].p50 - p[0].p50),
        );
    }
    crate::shut(prq)
}

/// Bytes that do not compress, as an image's do not.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn to_site_ms(prq: &Prq, size: usize, image: &str, k: usize) -> Result<f64> {
    let head = format!("attach {size} #{k}");
    let mut content =
        vec![json!({"type": "text", "text": format!("{head}\nsandbox: tokens=1 delay_ms=0")})];
    if size > 0 {
        content.push(json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{image}")}}));
    }
    let body = json!({"model": "img-chat", "messages": [{"role": "user", "content": content}]});
    let sent = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let response = prq
        .http()
        .post(format!("{}/v1/chat/completions", prq.api))
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status == 200, "{size} bytes: HTTP {status}: {text}");
    let streams = prq.sandbox_streams().await;
    let started = stream_for(&streams, &head)?["started_ms"]
        .as_u64()
        .context("started_ms")?;
    Ok(started.saturating_sub(sent) as f64)
}
