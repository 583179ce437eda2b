//! `prq-worker`: one lane of prq. The supervisor starts it with the lane's socket and
//! ID; it connects, takes the lane's `Configure`, and runs the lane (`lane.rs`) until
//! it is shut down, the supervisor goes away, or its browser dies. Two hidden
//! subcommands serve `prq login` on a lane's profile (`profile.rs`).
//!
//! Exit codes: 0 shut down (or the supervisor went away), 1 the lane broke, 2 the lane
//! asked for something this worker cannot do (an unknown provider).

mod browser;
mod capture;
mod devtools;
mod display;
mod doctor;
mod driver;
mod files;
mod footprint;
mod lane;
mod link;
mod presence;
mod profile;
mod release;
mod screencast;
mod stream;
mod tab;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use prq_protocol::worker::{LaneSpec, ToWorker};
use tracing::Instrument as _;
use tracing_subscriber::EnvFilter;

use crate::lane::Exit;
use crate::link::{Inbound, Writer};

/// From the handshake to the supervisor's `Configure`.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(10);

/// One lane of prq: a headless Chromium driving one chat site, served to the supervisor.
#[derive(Debug, Parser)]
#[command(version, subcommand_negates_reqs = true)]
struct Args {
    /// The supervisor's lane socket.
    #[arg(long, required = true)]
    socket: Option<PathBuf>,
    /// This lane's ID, as the supervisor knows it.
    #[arg(long, required = true)]
    lane: Option<String>,
    #[command(subcommand)]
    tool: Option<Tool>,
}

/// What `prq login` runs on a lane's profile.
#[derive(Debug, Subcommand)]
enum Tool {
    /// Open the profile in a visible browser for a person to log in.
    #[command(hide = true)]
    LoginWindow {
        /// The provider whose chat page to open (unless `--url`).
        #[arg(long)]
        provider: String,
        #[arg(long)]
        profile: PathBuf,
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        browser: Option<PathBuf>,
    },
    /// Run a capture through its driver's parser (`prq replay`).
    #[command(hide = true)]
    Replay {
        file: PathBuf,
        /// Print `{"provider","answer","reasoning","outcome"}` (and `error`).
        #[arg(long)]
        json: bool,
    },
    /// `prq doctor` with no daemon running: check one lane's page on its profile. The
    /// lane's spec (JSON) comes on stdin; the report (JSON) goes to stdout.
    #[command(hide = true)]
    Doctor {
        /// Where to save the outline and the screenshot.
        #[arg(long)]
        dir: PathBuf,
        /// Check typing into the prompt box too.
        #[arg(long)]
        type_check: bool,
    },
    /// Load a JSON cookie export into the profile.
    #[command(hide = true)]
    ImportCookies {
        #[arg(long)]
        profile: PathBuf,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        browser: Option<PathBuf>,
    },
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
    let args = Args::parse();
    // chromiumoxide warns about every CDP message its schema does not know (Chromium
    // sends one, `Network.requestWillBeSentExtraInfo`, with each request): only its
    // errors are news by default. A subcommand run for a person says only what matters.
    let default_filter = match args.tool {
        Some(_) => "warn,chromiumoxide=off",
        None => "info,chromiumoxide::handler=error",
    };
    // A lane's stderr goes to the daemon, which writes its log: no colour codes there,
    // and the format the daemon was configured with.
    prq_protocol::log_format::install(
        prq_protocol::log_format::Format::from_env(),
        EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        std::io::stderr,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    if let Some(tool) = args.tool {
        return match run_tool(tool).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(Exit::Failed as u8)
            }
        };
    }
    let (Some(socket), Some(lane)) = (args.socket, args.lane) else {
        unreachable!("clap requires --socket and --lane without a subcommand");
    };
    let span = tracing::info_span!("lane", id = %lane);
    match run(socket, lane).instrument(span.clone()).await {
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

async fn run(socket: PathBuf, lane: String) -> anyhow::Result<Exit> {
    let (sink, mut inbound) = link::connect(&socket, &lane).await?;
    let Some(spec) = configure(&mut inbound).await? else {
        tracing::info!("shut down before Configure");
        return Ok(Exit::Clean);
    };
    if spec.lane_id != lane {
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

async fn run_tool(tool: Tool) -> anyhow::Result<()> {
    match tool {
        Tool::Doctor { dir, type_check } => {
            let spec: LaneSpec = serde_json::from_reader(std::io::stdin().lock())
                .context("reading the lane's spec from stdin")?;
            if let Some(pid) = profile::in_use(&spec.profile_dir) {
                bail!(
                    "the profile {} is open in another browser (pid {pid}); close it first",
                    spec.profile_dir.display()
                );
            }
            let (mut browser, _death) = browser::Browser::launch(&spec).await?;
            let report = doctor::examine(&browser, &spec, dir, type_check).await;
            browser.close().await;
            println!("{}", serde_json::to_string(&report)?);
        }
        Tool::Replay { file, json } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let at = |e: String| anyhow::anyhow!("{}: {e}", file.display());
            let capture = capture::Capture::parse(&text).map_err(at)?;
            let replayed = capture.replay().map_err(at)?;
            if json {
                println!("{}", serde_json::to_string(&replayed)?);
            } else {
                println!("provider: {}", replayed.provider);
                match &replayed.error {
                    Some(error) => println!("outcome: {} ({error})", replayed.outcome),
                    None => println!("outcome: {}", replayed.outcome),
                }
                println!("reasoning:\n{}", replayed.reasoning);
                println!("answer:\n{}", replayed.answer);
            }
            if !capture.as_expected(&replayed) {
                bail!(
                    "{}: its expect record says otherwise: the parser no longer gives what this capture expects",
                    file.display()
                );
            }
        }
        Tool::LoginWindow {
            provider,
            profile,
            url,
            browser,
        } => {
            let site = driver::Provider::from_name(&provider).and_then(driver::site);
            let Some(url) = url.or_else(|| site.and_then(|s| s.url).map(str::to_owned)) else {
                bail!("no chat page known for provider `{provider}`: give --url");
            };
            println!(
                "A browser window opens on {url} with the profile {}.\nLog in there, then close the window.",
                profile.display()
            );
            let status = profile::login_window(&profile, &url, browser.as_deref())?;
            if !status.success() {
                bail!("the browser exited with {status}");
            }
            println!("The window is closed; the login is kept in the profile.");
        }
        Tool::ImportCookies {
            profile,
            file,
            browser,
        } => {
            let imported = profile::import_cookies(&profile, &file, browser.as_deref()).await?;
            println!(
                "Imported {} cookies for {} into {}.",
                imported.cookies,
                imported.domains.join(", "),
                profile.display()
            );
            if imported.sessions_extended > 0 {
                println!(
                    "{} of them had no expiry (session cookies, which a browser drops when it restarts); they were given 30 days.",
                    imported.sessions_extended
                );
            }
        }
    }
    Ok(())
}
