//! Parallel speedup: N sandbox lanes (one prefix each), N requests of one fixed length
//! sent at once, wall time in `serial` mode over wall time in `concurrent` mode. The
//! ideal is N; what is lost is Chromium and prq competing for the cores.

use std::time::Instant;

use anyhow::{ensure, Result};
use futures::future::join_all;
use prq_tests::Prq;

use crate::stats::median;
use crate::table::{Table, Target};
use crate::{lanes, sandbox_lanes};

const LANES: [usize; 3] = [1, 2, 4];
/// About a second of generation a request.
const SCRIPT: &str = "sandbox: tokens=40 delay_ms=25";
/// Timed rounds per mode; the median is reported.
const ROUNDS: usize = 3;
const TARGET_LANES: usize = 4;

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("parallel speedup: N requests on N sandbox lanes");
    for n in LANES {
        let (serial, concurrent) = wall_times(n).await?;
        let speedup = serial / concurrent;
        let figure = format!("×{speedup:.2} (serial {serial:.2} s, concurrent {concurrent:.2} s)");
        let what = format!("{}: serial ÷ concurrent", lanes(n));
        if n == TARGET_LANES {
            table.check(what, figure, speedup, Target::AtLeast(3.6, ""));
        } else {
            table.info(what, format!("{figure}; ideal ×{n}"));
        }
    }
    Ok(())
}

/// Median seconds, in `serial` and in `concurrent` mode, for one request on every
/// lane at once. Both run side by side and take turns, round by round, so that a change
/// in the machine's load between them does not pass for a difference between modes.
/// An untimed round first gets each page past its first request.
async fn wall_times(n: usize) -> Result<(f64, f64)> {
    let (serial, prefixes) = sandbox_lanes("serial", "p", n);
    let (concurrent, _) = sandbox_lanes("concurrent", "p", n);
    let prqs = [
        ("serial", Prq::start(&serial)),
        ("concurrent", Prq::start(&concurrent)),
    ];
    let mut walls = [Vec::new(), Vec::new()];
    for round in 0..=ROUNDS {
        for ((mode, prq), walls) in prqs.iter().zip(&mut walls) {
            let wall = one_round(prq, &prefixes, &format!("{mode} {round}")).await?;
            if round > 0 {
                walls.push(wall);
            }
        }
    }
    for (_, prq) in prqs {
        crate::shut(prq)?;
    }
    Ok((median(&walls[0]), median(&walls[1])))
}

/// Seconds from sending one request to every lane to the last answer.
async fn one_round(prq: &Prq, prefixes: &[String], tag: &str) -> Result<f64> {
    let started = Instant::now();
    let answers = join_all(prefixes.iter().map(|prefix| {
        let prompt = format!("speed {tag} {prefix}\n{SCRIPT}");
        async move { prq.chat(&format!("{prefix}-chat"), &prompt).await }
    }))
    .await;
    let wall = started.elapsed().as_secs_f64();
    for (status, body) in answers {
        ensure!(status == 200, "{tag}: {body}");
    }
    Ok(wall)
}
