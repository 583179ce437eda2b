//! `prq replay FILE [--json]`: what a captured site stream (`capture = true`) turns
//! into — the answer, the reasoning and how it ended — through the driver's own parser.
//! The parsers live in the worker, so this runs its hidden `replay` subcommand, the way
//! `prq login` runs `login-window` (this binary carries no browser or site code).

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::Context as _;

use crate::lanes::LaneTask;

pub fn replay(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let file = std::path::absolute(file)?;
    let mut worker = Command::new(LaneTask::worker_exe());
    worker.arg("replay").arg(&file);
    if json {
        worker.arg("--json");
    }
    let status = worker
        .status()
        .with_context(|| format!("cannot run {}", LaneTask::worker_exe().display()))?;
    // The worker has printed the result or the one-line error already.
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
