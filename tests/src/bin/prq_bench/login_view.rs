//! The panel's login view: from an input to the first frame that shows its effect, and
//! the daemon's CPU while one view is open and idle. One sandbox lane whose site asks
//! for a login; its view is read as the panel's page reads it (the SSE stream), and
//! the input goes in as the page sends it (a typed character into the focused user
//! field). A frame "shows the effect" when its image is one the view had not shown
//! before the input: the caret's blink alternates between frames seen already.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use futures::StreamExt;
use prq_tests::{config, Prq};
use serde_json::{json, Value};

use crate::stats::Percentiles;
use crate::table::{ms, Table, Target};

const REPEATS: usize = 20;
/// A person sees typing as immediate below about 100 ms; the frame pacing alone may
/// take up to 100 ms (10 frames a second).
const TARGET: Target = Target::Below(200.0, "ms (p50)");
/// Before each input: long enough for the caret to blink both ways.
const SETTLE: Duration = Duration::from_millis(1200);
/// The idle window the CPU is read over.
const IDLE: Duration = Duration::from_secs(10);
const VIEW: &str = "/api/lanes/bench%231/view";

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("login view: one sandbox lane with login = true, its view read over SSE");
    let prq = Prq::start(&format!(
        "{}login = true\n",
        config("serial", &[("sandbox", "bench", "a")])
    ));
    let measured = measure(&prq, table).await;
    crate::shut(prq)?;
    measured
}

async fn measure(prq: &Prq, table: &mut Table) -> Result<()> {
    let daemon = prq.status()["pid"].as_u64().context("the daemon's pid")? as u32;
    let worker = prq.lane("bench#1")["worker_pid"]
        .as_u64()
        .context("the worker's pid")? as u32;
    let without = cpu_share(daemon, IDLE).await?;

    let mut view = View::open(prq).await?;
    let mut seen = HashSet::new();
    seen.insert(view.frame().await?);
    // Idle: nobody types, the viewer reads what comes (the caret's blink); what that
    // costs the daemon (and the lane's worker).
    let frames_before = view.frames;
    let (daemon_cpu, worker_cpu, read) = tokio::join!(
        cpu_share(daemon, IDLE),
        cpu_share(worker, IDLE),
        view.drain_for(IDLE, &mut seen)
    );
    let (daemon_cpu, worker_cpu) = (daemon_cpu?, worker_cpu?);
    read?;
    let idle_fps = (view.frames - frames_before) as f64 / IDLE.as_secs_f64();

    let mut samples = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        view.drain_for(SETTLE, &mut seen).await?;
        let sent = Instant::now();
        view.send(
            prq,
            json!({ "do": "input", "event": { "text": { "text": "x" } } }),
        )
        .await?;
        loop {
            let jpeg = view.frame().await?;
            if seen.insert(jpeg) {
                break;
            }
        }
        samples.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    let p = Percentiles::of(samples);
    table.check(
        "typed character → the first frame showing it",
        format!("p50 {} · p99 {} (n={})", ms(p.p50), ms(p.p99), p.n),
        p.p50,
        TARGET,
    );
    table.info(
        "daemon CPU, one view open and idle",
        format!(
            "{daemon_cpu:.2} % of a core (without a view: {without:.2} %); the lane's worker {worker_cpu:.2} %; {idle_fps:.1} frames/s (the caret's blink)"
        ),
    );
    view.send(prq, json!({ "do": "close" })).await?;
    Ok(())
}

/// The share of one core `pid` used over `window`, in percent.
async fn cpu_share(pid: u32, window: Duration) -> Result<f64> {
    let ticks = || prq::procinfo::cpu_ticks(pid).context("the process's CPU time");
    let before = ticks()?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let used = ticks()? - before;
    // procfs reports clock ticks: 100 a second on Linux.
    Ok(used as f64 / 100.0 / started.elapsed().as_secs_f64() * 100.0)
}

/// An open view, read from its SSE stream.
struct View {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>,
    buffer: String,
    token: String,
    frames: usize,
}

impl View {
    async fn open(prq: &Prq) -> Result<View> {
        let r = prq
            .http()
            .get(format!("{}{VIEW}?w=1280&h=800", prq.api))
            .send()
            .await?;
        ensure!(r.status() == 200, "opening the view: {}", r.text().await?);
        let mut view = View {
            body: Box::pin(r.bytes_stream()),
            buffer: String::new(),
            token: String::new(),
            frames: 0,
        };
        let (name, open) = view
            .next(Duration::from_secs(30))
            .await?
            .context("the view's stream ended")?;
        ensure!(name == "open", "the first event is {name}");
        view.token = open["token"].as_str().context("a token")?.to_owned();
        Ok(view)
    }

    async fn send(&self, prq: &Prq, mut action: Value) -> Result<()> {
        action["token"] = json!(self.token);
        let r = prq
            .http()
            .post(format!("{}{VIEW}/input", prq.api))
            .json(&action)
            .send()
            .await?;
        ensure!(r.status() == 204, "input: {}", r.text().await?);
        Ok(())
    }

    /// The next event within `limit`; `None` when none came.
    async fn next(&mut self, limit: Duration) -> Result<Option<(String, Value)>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(cut) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..cut + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event:") {
                        name = n.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                if name == "frame" {
                    self.frames += 1;
                }
                return Ok(Some((name, serde_json::from_str(&data)?)));
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("the view's stream ended"),
                Ok(Some(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk?)),
            }
        }
    }

    /// The next frame's image.
    async fn frame(&mut self) -> Result<Vec<u8>> {
        loop {
            match self.next(Duration::from_secs(30)).await? {
                Some((name, data)) if name == "frame" => {
                    let jpeg = data["jpeg"].as_str().context("a frame's image")?;
                    return Ok(base64::engine::general_purpose::STANDARD.decode(jpeg)?);
                }
                Some((name, data)) if name == "ended" || name == "closed" => {
                    bail!("the view {name}: {data}")
                }
                Some(_) => {}
                None => bail!("no frame within 30 s"),
            }
        }
    }

    /// Reads every frame that comes within `window`, noting each image as seen.
    async fn drain_for(&mut self, window: Duration, seen: &mut HashSet<Vec<u8>>) -> Result<()> {
        let deadline = Instant::now() + window;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left).await? {
                Some((name, data)) if name == "frame" => {
                    let jpeg = data["jpeg"].as_str().context("a frame's image")?;
                    seen.insert(base64::engine::general_purpose::STANDARD.decode(jpeg)?);
                }
                Some(_) => {}
                None => break,
            }
        }
        Ok(())
    }
}
