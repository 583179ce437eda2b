//! Saves a screenshot of the Request Queue panel with a busy queue, for the README:
//!
//! ```sh
//! cargo build --bins && cargo run -p prq-tests --bin panel_screenshot -- docs/panel.png [--dark]
//! ```
//!
//! It starts prq on a temp home with three sandbox lanes, finishes a few requests,
//! leaves some generating (`hang_at`) and some waiting, opens the panel in headless
//! Chromium with a 1280×900 window, saves the whole page as a PNG, and stops prq.

#[path = "../../tests/panel/browser.rs"]
mod browser;

use std::time::Duration;

use anyhow::{bail, Context};
use browser::{cdp, until, Headless};
use chromiumoxide::cdp::browser_protocol::emulation::MediaFeature;
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::page::ScreenshotParams;
use prq_tests::{config, eventually, Prq};
use serde_json::{json, Value};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;
const READY: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut out = None;
    let mut dark = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--dark" => dark = true,
            _ if out.is_none() && !arg.starts_with('-') => out = Some(arg),
            _ => bail!("usage: panel_screenshot OUT.png [--dark]"),
        }
    }
    let out = out.context("usage: panel_screenshot OUT.png [--dark]")?;
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let prq = Prq::start(&config(
        "concurrent",
        &[
            ("sandbox", "alpha", "work"),
            ("sandbox", "beta", "personal"),
            ("sandbox", "gamma", "team"),
        ],
    ));

    // A few finished ones: two completed, one stopped.
    call(
        &prq,
        "/v1/chat/completions",
        chat(
            "beta-chat",
            "Summarise these notes\nsandbox: tokens=12 delay_ms=5",
            false,
        ),
    )
    .await?;
    call(
        &prq,
        "/v1/completions",
        json!({"model": "gamma-auto", "prompt": "Once upon a time\nsandbox: tokens=20 delay_ms=5"}),
    )
    .await?;
    spawn_request(
        &prq,
        "/v1/chat/completions",
        chat(
            "alpha-chat",
            "Write a long story\nsandbox: hang_at=30 delay_ms=5",
            true,
        ),
    );
    until_queue(&prq, "the story streams", |q| streamed(q) == 1).await?;
    let id = queue(&prq).await?["requests"][0]["id"]
        .as_u64()
        .context("the request to stop")?;
    prq.http()
        .post(format!("{}/api/queue/{id}/stop", prq.api))
        .send()
        .await?
        .error_for_status()?;
    until_queue(&prq, "the story stopped", |q| q["processing"] == 0).await?;

    // One generating on each lane, each at its own point.
    let review = json!({
        "model": "alpha-reasoner",
        "stream": true,
        "messages": [
            {"role": "system", "content": "You are a careful reviewer."},
            {"role": "user", "content": "Review this pull request."},
            {"role": "assistant", "content": "Which one?"},
            {"role": "user", "content": "The queue one.\nsandbox: tokens=200 hang_at=80 delay_ms=8"},
        ],
    });
    let generating = [
        ("/v1/chat/completions", review),
        (
            "/v1/chat/completions",
            chat(
                "beta-chat",
                "Translate this page\nsandbox: tokens=200 hang_at=35 delay_ms=15",
                true,
            ),
        ),
        (
            "/v1/completions",
            json!({"model": "gamma-chat", "prompt": "Plan the release\nsandbox: tokens=200 hang_at=12 delay_ms=25"}),
        ),
    ];
    for (n, (path, body)) in generating.into_iter().enumerate() {
        spawn_request(&prq, path, body);
        until_queue(&prq, "one more generating", |q| streamed(q) == n + 1).await?;
    }
    // Waiting behind them, in this order.
    let waiting = [
        chat("alpha-chat", "Draft the changelog", true),
        chat("beta-auto", "Explain this stack trace", false),
        chat("alpha-chat", "Tidy up the README", true),
    ];
    for (n, body) in waiting.into_iter().enumerate() {
        spawn_request(&prq, "/v1/chat/completions", body);
        until_queue(&prq, "one more waiting", |q| q["pending"] == n + 1).await?;
    }

    let browser = Headless::launch(WIDTH, HEIGHT).await?;
    let shot = async {
        let page = browser.open(&format!("{}/", prq.api)).await?;
        if dark {
            let feature = MediaFeature::new("prefers-color-scheme", "dark");
            cdp("emulating dark mode", page.emulate_media_features(vec![feature])).await?;
        }
        until(
            &page,
            "document.querySelector('#connection').dataset.state === 'live' \
             && document.querySelectorAll('#pending > li').length === 3 \
             && [...document.querySelectorAll('#lanes .lane-memory')].every(m => m.textContent.includes('MiB'))",
            READY,
            "document.body.innerText",
        )
        .await?;
        // Let the ages tick past zero.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let params = ScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .full_page(true)
            .build();
        cdp("taking the screenshot", page.save_screenshot(params, &out)).await
    }
    .await;
    browser.close().await;
    shot?;
    println!("saved {out}");
    Ok(())
}

fn chat(model: &str, prompt: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]})
}

/// POSTs `body` to the API and reads the whole answer.
async fn call(prq: &Prq, path: &str, body: Value) -> anyhow::Result<()> {
    let r = prq
        .http()
        .post(format!("{}{path}", prq.api))
        .json(&body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("POST {path}: {} {}", r.status(), r.text().await?);
    }
    r.bytes().await?;
    Ok(())
}

/// POSTs `body` on a task of its own that reads the answer to its end: the request
/// stays open until prq ends it (a client that hangs up would cancel it).
fn spawn_request(prq: &Prq, path: &str, body: Value) {
    let (http, url) = (prq.http().clone(), format!("{}{path}", prq.api));
    tokio::spawn(async move {
        if let Ok(r) = http.post(url).json(&body).send().await {
            let _ = r.bytes().await;
        }
    });
}

async fn queue(prq: &Prq) -> anyhow::Result<Value> {
    Ok(prq
        .http()
        .get(format!("{}/api/queue", prq.api))
        .send()
        .await?
        .json()
        .await?)
}

/// Processing requests that have streamed something.
fn streamed(q: &Value) -> usize {
    q["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "processing" && r["chars"].as_u64() > Some(0))
        .count()
}

async fn until_queue(prq: &Prq, what: &str, cond: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
    if eventually(READY, || async { queue(prq).await.is_ok_and(|q| cond(&q)) })
        .await
        .is_err()
    {
        bail!(
            "{what}: not within {READY:?}; the queue: {}",
            queue(prq).await?
        );
    }
    Ok(())
}
