//! `prq_bench`: every benchmark of prq in one run, printed as one table with the target
//! beside each figure (BENCHMARKS.md has the method, a run, and what limits each
//! figure).
//!
//! ```sh
//! cargo build --release --bins
//! cargo run --release -p prq-tests --bin prq_bench            # everything
//! cargo run --release -p prq-tests --bin prq_bench -- cancel  # some sections
//! ```
//!
//! Each section starts the release `prq` on fresh temp `PRQ_HOME`s, measures, and stops
//! it, checking that none of its processes are left; the bench fails if one is. The
//! targets are goals, not assertions: a missed one is marked in the table.

mod attach;
mod cancel;
mod crash;
mod faults;
mod headed;
mod hostile;
mod login_view;
mod memory;
mod models;
mod overhead;
mod panel;
mod prompts;
mod relay;
mod speedup;
mod stats;
mod table;
mod tools;
mod wake;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use prq_tests::{bin_dir, config, stream_for, Prq};
use serde_json::Value;

use crate::table::{load_average, Table};

/// The sections, in the order they run, by the names that choose them.
const SECTIONS: [&str; 16] = [
    "overhead", "relay", "speedup", "cancel", "panel", "crash", "faults", "memory", "headed",
    "hostile", "wake", "tools", "prompts", "login", "models", "attach",
];

async fn run_section(name: &str, table: &mut Table) -> Result<()> {
    match name {
        "overhead" => overhead::run(table).await,
        "relay" => relay::run(table).await,
        "speedup" => speedup::run(table).await,
        "cancel" => cancel::run(table).await,
        "panel" => panel::run(table).await,
        "crash" => crash::run(table).await,
        "faults" => faults::run(table).await,
        "memory" => memory::run(table).await,
        "headed" => headed::run(table).await,
        "hostile" => hostile::run(table).await,
        "wake" => wake::run(table).await,
        "tools" => tools::run(table).await,
        "prompts" => prompts::run(table).await,
        "login" => login_view::run(table).await,
        "models" => models::run(table).await,
        "attach" => attach::run(table).await,
        _ => unreachable!("`main` lets only the names in SECTIONS through"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let chosen: Vec<String> = std::env::args().skip(1).collect();
    if let Some(unknown) = chosen.iter().find(|c| !SECTIONS.contains(&c.as_str())) {
        bail!(
            "unknown section `{unknown}`; the sections are: {}",
            SECTIONS.join(", ")
        );
    }
    check_release_binaries()?;
    println!("{}", machine());
    println!("load average at the start: {}\n", load_average());

    let mut table = Table::default();
    let run_all = chosen.is_empty();
    for name in SECTIONS
        .into_iter()
        .filter(|s| run_all || chosen.iter().any(|c| c == s))
    {
        eprintln!("prq_bench: {name} …");
        run_section(name, &mut table)
            .await
            .with_context(|| format!("the {name} benchmark"))?;
    }
    print!("{}", table.render());
    println!("\nload average at the end: {}", load_average());
    println!(
        "targets missed: {}; processes left running: none",
        table.missed()
    );
    Ok(())
}

/// Timings of a debug build say nothing about prq, so only release binaries will do.
fn check_release_binaries() -> Result<()> {
    let dir = bin_dir();
    let missing: Vec<&str> = ["prq", "prq-worker"]
        .into_iter()
        .filter(|b| !dir.join(b).exists())
        .collect();
    if !dir.ends_with("release") || !missing.is_empty() {
        bail!(
            "prq_bench measures the release binaries: run `cargo build --release --bins`, \
             then `cargo run --release -p prq-tests --bin prq_bench` (looked in {}; missing: {})",
            dir.display(),
            if missing.is_empty() {
                "none, but this is not a release build".to_string()
            } else {
                missing.join(", ")
            }
        );
    }
    Ok(())
}

/// Cores, CPU, memory, Chromium and Rust, for the record.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(
            || "unknown".into(),
            |kb| format!("{:.1} GiB", kb as f64 / 1048576.0),
        );
    let browser = std::env::var("PRQ_BROWSER").unwrap_or_else(|_| "chromium".into());
    let shell = std::env::var("PRQ_HEADLESS_SHELL")
        .unwrap_or_else(|_| "/usr/lib/chromium/chromium-headless-shell".into());
    format!(
        "machine: {cores} cores ({cpu}), {memory} memory\nbrowser: {}\nheadless shell \
         (lean lanes): {}\nrust: {}",
        version_of(&browser),
        version_of(&shell),
        version_of("rustc")
    )
}

fn version_of(program: &str) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| format!("{program}: unknown"))
}

/// `prq start` on a fresh home with `cfg`, timed from the CLI's start to its exit (when
/// every lane is ready): the running prq, and the seconds it took.
pub fn timed_start(cfg: &str) -> Result<(Prq, f64)> {
    let prq = Prq::new(cfg);
    let began = Instant::now();
    let out = prq.cli(&["start", "--config", &prq.config_path.to_string_lossy()]);
    let took = began.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "prq start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((prq.with_api(), took))
}

/// `prq stop`, then makes sure that nothing of this prq is left running.
pub fn shut(prq: Prq) -> Result<()> {
    prq.stop();
    let left = prq.processes();
    ensure!(left.is_empty(), "left running after `prq stop`: {left:?}");
    Ok(())
}

/// A config of `n` sandbox lanes, prefixes `<tag>1` … `<tag>n`, an account each;
/// and those prefixes.
pub fn sandbox_lanes(mode: &str, tag: &str, n: usize) -> (String, Vec<String>) {
    let prefixes: Vec<String> = (1..=n).map(|i| format!("{tag}{i}")).collect();
    let accounts: Vec<String> = (1..=n).map(|i| format!("a{i}")).collect();
    let lanes: Vec<_> = prefixes
        .iter()
        .zip(&accounts)
        .map(|(prefix, account)| ("sandbox", prefix.as_str(), account.as_str()))
        .collect();
    (config(mode, &lanes), prefixes)
}

/// "1 lane", "4 lanes".
pub fn lanes(n: usize) -> String {
    format!("{n} lane{}", if n == 1 { "" } else { "s" })
}

/// One prq's sandbox site, read directly: its URL is looked up once, not with a
/// `prq status` per read.
pub struct Site {
    stats: String,
    http: reqwest::Client,
}

impl Site {
    pub fn of(prq: &Prq) -> Self {
        Self {
            stats: format!("{}/stats", prq.sandbox_url()),
            http: prq.http().clone(),
        }
    }

    pub async fn streams(&self) -> Result<Vec<Value>> {
        let v: Value = self.http.get(&self.stats).send().await?.json().await?;
        Ok(v["streams"].as_array().cloned().unwrap_or_default())
    }

    /// The stream whose prompt starts with `head`, once `ready` holds for it. A poll:
    /// the site records and does not notify. The figures come from the site's own
    /// timestamps, so the poll's interval does not enter them.
    pub async fn wait(&self, head: &str, ready: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let streams = self.streams().await?;
            if let Ok(stream) = stream_for(&streams, head) {
                if ready(stream) {
                    return Ok(stream.clone());
                }
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the site's stream {head:?} did not get there: {streams:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
