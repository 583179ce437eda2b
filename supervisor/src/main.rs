//! `prq`: the command line. Parsing only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use prq::cli;
use prq::home::Home;

#[derive(Parser)]
#[command(
    name = "prq",
    version,
    about = "A parallel request queue for browser-backed chat sites, behind an OpenAI-compatible API"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the daemon (if needed) and every lane; wait until they are ready.
    Start {
        /// The config file (TOML). Default: $PRQ_HOME/config.toml, else the built-in sandbox config.
        #[arg(long, env = "PRQ_CONFIG")]
        config: Option<PathBuf>,
        /// Run the daemon in this process (for systemd and containers).
        #[arg(long)]
        foreground: bool,
        /// With --foreground: wait for a `prq start` instead of starting the lanes at once
        /// (how `prq start` launches its background daemon).
        #[arg(long, hide = true, requires = "foreground")]
        no_autostart: bool,
        /// With --foreground: write the logs to files under the home, rotated, instead
        /// of standard error (how `prq start` launches its background daemon).
        #[arg(long, hide = true, requires = "foreground")]
        log_files: bool,
    },
    /// Stop the runtime and the daemon.
    Stop,
    /// Take this host out of a load balancer: /readyz fails at once, new requests are
    /// refused after drain_s, admitted ones finish (within shutdown_grace_s), then the
    /// runtime stops; the daemon stays up (`prq start` makes it ready again).
    Drain {
        /// Return only when nothing is in flight and the runtime has stopped.
        #[arg(long)]
        wait: bool,
    },
    /// Read the config again and apply what changed, lane by lane, without a restart.
    ///
    /// Added lanes start, removed lanes finish their current request and stop, changed
    /// lanes restart after their current request; the others serve on. A config that
    /// does not load changes nothing. (SIGHUP to the daemon does the same.)
    Reload {
        /// Read this config file from now on (default: the one prq runs with).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show the runtime, its lanes and the queue.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the queue, or act on it.
    Queue {
        /// Print JSON (the same documents as the queue API).
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: Option<QueueAction>,
    },
    /// Show the daemon's log or a lane's, across rotated files; works with the daemon
    /// stopped too.
    Logs {
        /// `daemon` (the default), a lane's ID (`sandbox#1`) or prefix (its lanes'
        /// logs merged by time), or `all`.
        which: Option<String>,
        /// Keep printing new lines as they are written (across rotations).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines (with -f, default 10).
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
        /// Only lines written since this long ago: 30s, 10m, 2h, 7d.
        #[arg(long, value_name = "DURATION", value_parser = prq::logs::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only lines about this request (its queue ID, as in `x-prq-request-id`).
        #[arg(long, value_name = "ID")]
        request: Option<u64>,
    },
    /// Log a lane's account in, once, in its browser profile.
    ///
    /// With a display, a browser window opens on the lane's profile for you to log in;
    /// on a server without one, give a cookie export from a browser where you are
    /// logged in. prq must not be running that lane meanwhile.
    Login {
        /// The lane's prefix (or a provider's name, before any lane of it exists).
        prefix: String,
        /// Which account's profile, when the prefix's lanes have several.
        #[arg(long)]
        account: Option<String>,
        /// Load this JSON cookie export (an array of cookies as browser extensions
        /// export them) instead of opening a window.
        #[arg(long, value_name = "FILE")]
        import_cookies: Option<PathBuf>,
        /// Print the URL of the lane's login view in the panel (its page in the running
        /// lane's own browser), for a person on another machine, instead of opening a
        /// window.
        #[arg(long, conflicts_with = "import_cookies")]
        panel: bool,
        /// The config file (TOML). Default: $PRQ_HOME/config.toml, else the built-in one.
        #[arg(long, env = "PRQ_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check each lane's chat page: per selector how many elements match, whether it
    /// looks logged in, the thinking switch, its URL and title; saves an outline of its
    /// elements and a screenshot under PRQ_HOME/diagnostics/. Sends nothing to the site.
    Doctor {
        /// Only the lanes of this prefix.
        prefix: Option<String>,
        /// Print `{"lanes":[{"id","provider","url","logged_in","selectors":[...]},...]}`.
        #[arg(long)]
        json: bool,
        /// Also type a multi-line unicode probe text into the prompt box, read back what
        /// it holds (exact, or where it differs), and clear it; nothing is sent.
        #[arg(long)]
        type_check: bool,
        /// The config file (TOML), when no daemon runs. Default: $PRQ_HOME/config.toml, else the built-in one.
        #[arg(long, env = "PRQ_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Replay a captured site stream (`capture = true`) through its driver's parser:
    /// prints the answer, the reasoning and how it ended.
    Replay {
        /// A capture file (PRQ_HOME/captures/*.jsonl).
        file: PathBuf,
        /// Print `{"provider","answer","reasoning","outcome"}` (and `error` for a failure).
        #[arg(long)]
        json: bool,
    },
    /// Start prq on the sandbox and stream one answer through a real browser.
    Demo {
        /// Use this config instead of the built-in sandbox lanes.
        #[arg(long, env = "PRQ_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// Cancel a pending request.
    Cancel { id: u64 },
    /// Stop a processing request.
    Stop { id: u64 },
    /// Stop every processing request.
    StopAll,
    /// Cancel every pending request.
    Clear,
}

fn main() -> ExitCode {
    // Before the runtime's threads exist, so that none of them gets an arena of its own.
    prq::memory::limit_arenas();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args = Args::parse();
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let home = Home::from_env()?;
    match args.command {
        Command::Start {
            config,
            foreground: true,
            no_autostart,
            log_files,
        } => {
            let config = cli::resolve_config(&home, config)?;
            let logs = match &config {
                Some(path) => prq::config::Config::load(path)?.logs,
                None => prq::config::Config::builtin().logs,
            };
            prq::logs::init_daemon(&home, &logs, log_files)?;
            prq::daemon::run(home, config, !no_autostart, prq::daemon::signals()?).await?;
        }
        Command::Start { config, .. } => {
            cli::start(&home, config).await?;
        }
        Command::Stop => cli::stop(&home).await?,
        Command::Drain { wait } => cli::drain(&home, wait).await?,
        Command::Reload { config } => {
            if !cli::reload(&home, config).await? {
                return Ok(ExitCode::from(3));
            }
        }
        Command::Status { json } => {
            if !cli::status(&home, json).await? {
                return Ok(ExitCode::from(3));
            }
        }
        Command::Demo { config } => cli::demo(&home, config).await?,
        Command::Logs {
            which,
            follow,
            lines,
            since,
            request,
        } => {
            let query = prq::logs::Query {
                which,
                follow,
                lines,
                since,
                request,
            };
            prq::logs::show(&home, &query, &mut std::io::stdout().lock())?;
        }
        Command::Replay { file, json } => return prq::replay::replay(&file, json),
        Command::Doctor {
            prefix,
            json,
            type_check,
            config,
        } => {
            if !prq::doctor::doctor(&home, config, prefix.as_deref(), json, type_check).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Login {
            prefix,
            account,
            panel: true,
            ..
        } => prq::login::panel(&home, &prefix, account.as_deref()).await?,
        Command::Login {
            prefix,
            account,
            import_cookies,
            config,
            panel: false,
        } => {
            prq::login::login(
                &home,
                config,
                &prefix,
                account.as_deref(),
                import_cookies.as_deref(),
            )
            .await?
        }
        Command::Queue { json, action } => {
            use prq_protocol::control::QueueCommand;
            let command = match action {
                None => QueueCommand::List,
                Some(QueueAction::Cancel { id }) => QueueCommand::Cancel { id },
                Some(QueueAction::Stop { id }) => QueueCommand::Stop { id },
                Some(QueueAction::StopAll) => QueueCommand::StopAll,
                Some(QueueAction::Clear) => QueueCommand::Clear,
            };
            if !cli::queue(&home, command, json).await? {
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
