//! Headed lanes (`headless = false`: Chromium on an Xvfb of the lane's own) beside
//! headless ones: the time `prq start` takes until the lane is ready, on a fresh home
//! each time, and the browser's PSS after one answer, its Xvfb included (the worker's
//! process group holds both).

use anyhow::{ensure, Context, Result};
use prq::procinfo::browser_pss_kb;

use crate::stats::median;
use crate::table::{mib, Table};
use crate::{sandbox_lanes, timed_start};

/// Starts per kind; the median is reported.
const STARTS: usize = 3;

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("headed lanes beside headless: 1 sandbox lane");
    for headed in [false, true] {
        let kind = if headed { "headed (Xvfb)" } else { "headless" };
        let (cfg, prefixes) = sandbox_lanes("concurrent", "h", 1);
        let cfg = match headed {
            true => cfg.replace("account = ", "headless = false\naccount = "),
            false => cfg,
        };
        let mut starts = Vec::new();
        let mut pss = 0;
        for start in 0..STARTS {
            let (prq, took) = timed_start(&cfg)?;
            starts.push(took);
            if start + 1 == STARTS {
                let (status, body) = prq
                    .chat(
                        &format!("{}-chat", prefixes[0]),
                        "headed\nsandbox: tokens=20",
                    )
                    .await;
                ensure!(status == 200, "{body}");
                let worker = prq.status()["lanes"][0]["worker_pid"]
                    .as_u64()
                    .context("worker_pid")? as u32;
                pss = browser_pss_kb(worker).context("the browser's PSS")?;
            }
            crate::shut(prq)?;
        }
        let runs: Vec<String> = starts.iter().map(|s| format!("{s:.2}")).collect();
        table.info(
            format!("{kind}: `prq start` → ready"),
            format!("{:.2} s (runs: {} s)", median(&starts), runs.join(", ")),
        );
        table.info(format!("{kind}: browser PSS after one answer"), mib(pss));
    }
    Ok(())
}
