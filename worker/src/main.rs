//! `prq-worker`: one lane of prq. The supervisor starts it with the lane's socket and
//! ID; it connects, takes the lane's `Configure`, and runs the lane (`lane.rs`) until
//! it is shut down, the supervisor goes away, or its browser dies.
//!
//! Exit codes: 0 shut down (or the supervisor went away), 1 the lane broke, 2 the lane
//! asked for something this worker cannot do (an unknown provider).

mod browser;
mod driver;
mod lane;
mod link;
mod stream;
mod tab;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use prq_protocol::worker::{LaneSpec, ToWorker};
use tracing::Instrument as _;
use tracing_subscriber::EnvFilter;

use crate::lane::Exit;
use crate::link::{Inbound, Writer};

/// From the handshake to the supervisor's `Configure`.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(10);

/// One lane of prq: a headless Chromium driving one chat site, served to the supervisor.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The supervisor's lane socket.
    #[arg(long)]
    socket: PathBuf,
    /// This lane's ID, as the supervisor knows it.
    #[arg(long)]
    lane: String,
}

fn main() -> ExitCode {
    // This binary doubles as the browser's launcher; that must come before anything else.
    if let Some(code) = browser::run_as_launcher() {
        return code;
    }
    // One thread: a lane is I/O-bound, `stream::NetworkStream` relies on no reader running
    // while chromiumoxide's handler hands a batch of CDP events out, and the browser must
    // be spawned from the main thread (see `browser::run_as_launcher`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(worker()),
        Err(e) => {
            eprintln!("prq-worker: cannot start the async runtime: {e}");
            ExitCode::from(Exit::Failed as u8)
        }
    }
}

async fn worker() -> ExitCode {
    // chromiumoxide warns about every CDP message its schema does not know (Chromium
    // sends one, `Network.requestWillBeSentExtraInfo`, with each request): only its
    // errors are news by default.
    let default_filter = "info,chromiumoxide::handler=error";
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let span = tracing::info_span!("lane", id = %args.lane);
    match run(args).instrument(span.clone()).await {
        Ok(exit) => {
            span.in_scope(|| tracing::info!(?exit, "exit"));
            ExitCode::from(exit as u8)
        }
        Err(e) => {
            span.in_scope(|| tracing::error!("{e:#}"));
            ExitCode::from(Exit::Failed as u8)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<Exit> {
    let (sink, mut inbound) = link::connect(&args.socket, &args.lane).await?;
    let Some(spec) = configure(&mut inbound).await? else {
        tracing::info!("shut down before Configure");
        return Ok(Exit::Clean);
    };
    if spec.lane_id != args.lane {
        tracing::warn!(configured = %spec.lane_id, "the lane's Configure names another lane");
    }
    tracing::info!(provider = %spec.provider, "configured");
    let heartbeat = Duration::from_millis(spec.heartbeat_ms.max(1));
    let (out, writer) = Writer::start(sink, heartbeat);
    let exit = lane::run(spec, &mut inbound, out).await;
    writer.finish().await;
    Ok(exit)
}

/// The lane's spec; `None` when told to shut down first.
async fn configure(inbound: &mut Inbound) -> anyhow::Result<Option<LaneSpec>> {
    let first = tokio::time::timeout(CONFIGURE_TIMEOUT, inbound.next())
        .await
        .with_context(|| {
            format!(
                "the supervisor sent no Configure within {} s",
                CONFIGURE_TIMEOUT.as_secs()
            )
        })?;
    match first {
        Some(Ok(ToWorker::Configure(spec))) => Ok(Some(spec)),
        Some(Ok(ToWorker::Shutdown)) => Ok(None),
        Some(Ok(other)) => bail!("the supervisor's first message is {other:?}, not Configure"),
        Some(Err(e)) => Err(e).context("reading the supervisor's Configure"),
        None => bail!("the supervisor closed the connection before Configure"),
    }
}
