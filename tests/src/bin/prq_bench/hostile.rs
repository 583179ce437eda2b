//! Hostile clients, on echo lanes (no browser: what is measured is the daemon), with
//! the default `[limits]`:
//! - 1000 half-open connections (half a request head, then nothing): how many
//!   descriptors the daemon holds for them at most, how long until it has closed all
//!   of them, and how long an ordinary `/healthz` waits meanwhile;
//! - 50 streaming clients that never read answers of about 20 MB each: the daemon's
//!   peak RSS, and how their requests end.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::future::join_all;
use prq::procinfo::rss_kb;
use prq_tests::{config, raw, Prq};

use crate::stats::median;
use crate::table::{mib, ms, Table, Target};

const REPEATS: usize = 3;
const HALF_OPEN: usize = 1000;
const NON_READING: usize = 50;
/// Echo lanes serving the non-reading clients, so that many of them generate at once.
const LANES: usize = 10;
/// About 20 MB of answer: far more than the socket buffers and the per-request bound.
const HUGE: &str = "sandbox: tokens=3000000 delay_ms=0";
/// Far beyond any figure here: past it, something is broken, not slow.
const GIVE_UP: Duration = Duration::from_secs(300);

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("hostile clients: echo lanes, default [limits]");
    half_open(table).await?;
    non_reading(table).await
}

/// Open descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn daemon_pid(prq: &Prq) -> Result<u32> {
    Ok(prq.status()["pid"].as_u64().context("pid")? as u32)
}

async fn half_open(table: &mut Table) -> Result<()> {
    let prq = Prq::start(&config(
        "concurrent",
        &[("echo", "a", "x"), ("echo", "b", "y")],
    ));
    let pid = daemon_pid(&prq)?;
    let addr = prq.api_addr();
    let idle_fds = fds(pid);
    let (mut all_closed, mut peaks, mut healthz) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        let began = Instant::now();
        let conns = join_all(
            (0..HALF_OPEN).map(|_| raw::send(addr, b"GET /healthz HTTP/1.1\r\nHost: prq\r\n")),
        )
        .await;
        let closing = tokio::spawn(async move {
            join_all(conns.into_iter().map(|mut c| async move {
                raw::until_closed(&mut c).await;
            }))
            .await;
            began.elapsed()
        });
        let asked = Instant::now();
        let answer = reqwest::Client::new()
            .get(format!("{}/healthz", prq.api))
            .timeout(GIVE_UP)
            .send()
            .await?;
        ensure!(answer.status() == 200, "/healthz: {}", answer.status());
        healthz.push(asked.elapsed().as_secs_f64() * 1e3);
        let mut peak = 0;
        while !closing.is_finished() {
            peak = peak.max(fds(pid));
            ensure!(
                began.elapsed() < GIVE_UP,
                "half-open connections still open"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        all_closed.push(closing.await?.as_secs_f64());
        peaks.push(peak as f64);
    }
    let after_fds = fds(pid);
    let runs = |v: &[f64], unit: &str| {
        v.iter()
            .map(|x| format!("{x:.1}{unit}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    table.info(
        format!("daemon descriptors: idle / peak with {HALF_OPEN} half-open connections / after"),
        format!(
            "{idle_fds} / {} (runs: {}) / {after_fds} (max_connections = 512)",
            median(&peaks),
            runs(&peaks, "")
        ),
    );
    table.check(
        format!("{HALF_OPEN} half-open connections: all closed by the daemon after"),
        format!(
            "{:.1} s (runs: {} s; header_timeout_s = 5)",
            median(&all_closed),
            runs(&all_closed, "")
        ),
        median(&all_closed),
        Target::Below(15.0, "s"),
    );
    table.info(
        "`GET /healthz` from an ordinary client meanwhile",
        format!("{} (runs: {})", ms(median(&healthz)), runs(&healthz, " ms")),
    );
    crate::shut(prq)
}

async fn non_reading(table: &mut Table) -> Result<()> {
    let lanes: Vec<(String, String)> = (1..=LANES).map(|i| ("e".into(), format!("a{i}"))).collect();
    let lanes: Vec<(&str, &str, &str)> = lanes
        .iter()
        .map(|(prefix, account)| ("echo", prefix.as_str(), account.as_str()))
        .collect();
    let cfg = config("full", &lanes);
    let (mut idle, mut peaks, mut too_slow) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        let prq = Prq::start(&cfg);
        let pid = daemon_pid(&prq)?;
        idle.push(rss_kb(pid).context("RSS")? as f64);
        let began = Instant::now();
        let _clients =
            join_all((0..NON_READING).map(|_| raw::never_read(prq.api_addr(), "e-chat", HUGE)))
                .await;
        let mut peak = 0;
        loop {
            peak = peak.max(rss_kb(pid).context("RSS")?);
            let queue = prq.get_json("/api/queue").await;
            if queue["pending"] == 0 && queue["processing"] == 0 && began.elapsed().as_secs() > 1 {
                break;
            }
            ensure!(
                began.elapsed() < GIVE_UP,
                "the requests did not end: {queue}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peaks.push(peak as f64);
        let metrics = prq
            .http()
            .get(format!("{}/metrics", prq.api))
            .send()
            .await?
            .text()
            .await?;
        let failed = metrics
            .lines()
            .find_map(|l| l.strip_prefix("prq_requests_total{prefix=\"e\",outcome=\"failed\"} "))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
        too_slow.push(failed);
        let log = prq.daemon_log();
        ensure!(
            log.matches("client_too_slow: its client does not read")
                .count()
                == NON_READING,
            "not every request ended client_too_slow"
        );
        crate::shut(prq)?;
    }
    let runs = |v: &[f64]| {
        v.iter()
            .map(|kb| mib(*kb as u64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    table.info(
        "daemon RSS before the clients",
        format!("{} (runs: {})", mib(median(&idle) as u64), runs(&idle)),
    );
    table.check(
        format!("daemon RSS peak, {NON_READING} streaming clients that never read ~20 MB answers, {LANES} lanes"),
        format!("{} (runs: {}; client_buffer_bytes = 1 MiB)", mib(median(&peaks) as u64), runs(&peaks)),
        median(&peaks) / 1024.0,
        Target::Below(64.0, "MiB"),
    );
    table.info(
        "… of which ended `client_too_slow`",
        format!(
            "{} of {NON_READING} (median of {REPEATS} runs)",
            median(&too_slow)
        ),
    );
    Ok(())
}
