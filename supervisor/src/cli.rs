//! The CLI's side of the daemon: find it, start it in the background, talk to it over
//! the control socket, and print what it says.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::{tokio::prelude::*, GenericFilePath, ToFsName};
use prq_protocol::control::{
    ControlRequest, ControlResponse, QueueCommand, RuntimeState, Started, StatusReport,
};
use prq_protocol::handshake::{self, Peer};
use prq_protocol::view::QueueView;
use prq_protocol::{until_hang_up, FrameCodec};
use sse_stream::SseByteStream;
use tokio_util::codec::Framed;

use crate::config::Config;
use crate::home::Home;

/// How long `prq start` waits for a new daemon's control socket.
const DAEMON_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `prq stop` waits for the daemon to exit.
const DAEMON_EXIT_TIMEOUT: Duration = Duration::from_secs(60);

type Conn = Framed<Stream, FrameCodec<ControlResponse, ControlRequest>>;

pub struct Client {
    conn: Conn,
}

impl Client {
    /// Connects to the daemon of `home`; `None` when no daemon is listening (including
    /// a socket file left behind by a killed one).
    pub async fn connect(home: &Home) -> anyhow::Result<Option<Self>> {
        let path = home.control_socket();
        let name = path.as_path().to_fs_name::<GenericFilePath>()?;
        let stream = match Stream::connect(name).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None)
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot connect to {}", path.display()))
            }
        };
        let conn = handshake::connect(stream, Peer::Cli)
            .await
            .context("the daemon refused the connection")?;
        Ok(Some(Self { conn }))
    }

    pub async fn request(&mut self, request: ControlRequest) -> anyhow::Result<ControlResponse> {
        self.conn.send(request).await?;
        match until_hang_up(self.conn.next().await) {
            Some(r) => Ok(r?),
            None => bail!("the daemon closed the connection"),
        }
    }

    pub async fn status(&mut self) -> anyhow::Result<StatusReport> {
        match self.request(ControlRequest::Status).await? {
            ControlResponse::Status(s) => Ok(s),
            other => bail!("unexpected answer from the daemon: {other:?}"),
        }
    }
}

/// The config `prq start` uses: `--config`/`PRQ_CONFIG`, else `$PRQ_HOME/config.toml`
/// when it exists, else none (the built-in sandbox config).
pub fn resolve_config(home: &Home, given: Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    let path = match given {
        Some(p) => p,
        None => {
            let default = home.root().join("config.toml");
            if !default.exists() {
                return Ok(None);
            }
            default
        }
    };
    let path = std::path::absolute(&path)?;
    if !path.exists() {
        bail!("the config file {} does not exist", path.display());
    }
    Ok(Some(path))
}

/// Spawns `prq start --foreground` as a detached daemon and waits for its socket.
async fn spawn_daemon(home: &Home, config: Option<&Path>) -> anyhow::Result<Client> {
    home.create()?;
    let log_path = home.daemon_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    // What this daemon writes starts here; earlier runs' lines are not its story.
    let log_start = log.metadata().map_or(0, |m| m.len());
    let exe = std::env::current_exe().context("cannot find the prq executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["start", "--foreground", "--no-autostart", "--log-files"])
        .env("PRQ_HOME", home.root())
        .env_remove("PRQ_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    // A new session: the daemon outlives the terminal that started it.
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the child only calls setsid, which is
    // async-signal-safe, and touches no memory of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().context("cannot start the daemon")?;
    let deadline = tokio::time::Instant::now() + DAEMON_UP_TIMEOUT;
    // Polling, because the socket appears in another process; the interval is short
    // and the wait bounded.
    loop {
        if let Some(client) = Client::connect(home).await? {
            // Reap the child in the background so it never lingers as a zombie of ours.
            std::thread::spawn(move || child.wait());
            return Ok(client);
        }
        // A daemon that exits because another one holds the home (two `prq start`
        // racing) is no failure: that other daemon's socket is the one to wait for.
        if let Some(status) = child
            .try_wait()?
            .filter(|_| home.running_daemon_pid().is_none())
        {
            bail!(
                "the daemon exited during start-up ({status}):\n{}",
                log_tail(&log_path, log_start, 15)
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the daemon did not come up within {DAEMON_UP_TIMEOUT:?}; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The last `lines` lines of the log written from byte `from` on.
fn log_tail(path: &Path, from: u64, lines: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `prq start`. Returns the status when the runtime is running.
pub async fn start(home: &Home, config: Option<PathBuf>) -> anyhow::Result<StatusReport> {
    let config = resolve_config(home, config)?;
    // Check the config here too, so a mistake is reported without starting anything.
    if let Some(path) = &config {
        Config::load(path)?;
    }
    let mut client = match Client::connect(home).await? {
        Some(c) => c,
        None => spawn_daemon(home, config.as_deref()).await?,
    };
    match client.request(ControlRequest::Start { config }).await? {
        ControlResponse::Started { how, status } => {
            // The daemon knows which start launched the runtime; of several racing
            // `prq start`s exactly one did.
            match how {
                Started::AlreadyRunning => {
                    println!("prq is already running (pid {}).", status.pid)
                }
                Started::DrainCalledOff => println!(
                    "prq (pid {}) was draining: the drain is called off, and it takes requests again.",
                    status.pid
                ),
                Started::Launched => println!(
                    "prq started (pid {}): {} lane(s) ready.",
                    status.pid,
                    status
                        .lanes
                        .iter()
                        .filter(|l| l.worker_pid.is_some())
                        .count()
                ),
            }
            print_urls(&status);
            Ok(status)
        }
        ControlResponse::StartFailed { message, status } => {
            bail!(
                "{message}\n(the daemon (pid {}) is still up with the runtime stopped; fix the cause and run `prq start` again, or `prq stop`; logs in {})",
                status.pid,
                home.logs_dir().display()
            )
        }
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

fn print_urls(status: &StatusReport) {
    println!("  API:   {}/v1", status.api_url);
    println!("  Panel: {}", status.panel_url);
    if let Some(s) = &status.sandbox_url {
        println!("  Sandbox site: {s}");
    }
}

/// `prq stop`.
pub async fn stop(home: &Home) -> anyhow::Result<()> {
    let Some(mut client) = Client::connect(home).await? else {
        println!("prq is not running ({}).", home.root().display());
        return Ok(());
    };
    let pid = client.status().await?.pid;
    client.request(ControlRequest::Shutdown).await?;
    drop(client);
    let deadline = tokio::time::Instant::now() + DAEMON_EXIT_TIMEOUT;
    // The daemon's exit shows as its pid-file lock being released.
    while home.running_daemon_pid() == Some(pid) {
        if tokio::time::Instant::now() > deadline {
            bail!("the daemon (pid {pid}) did not exit within {DAEMON_EXIT_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    println!("prq stopped (pid {pid}).");
    Ok(())
}

/// `prq drain [--wait]`.
pub async fn drain(home: &Home, wait: bool) -> anyhow::Result<()> {
    let Some(mut client) = Client::connect(home).await? else {
        println!(
            "prq is not running ({}): nothing to drain.",
            home.root().display()
        );
        return Ok(());
    };
    if wait {
        println!("draining; waiting until nothing is in flight ...");
    }
    let status = match client.request(ControlRequest::Drain { wait }).await? {
        ControlResponse::Draining { status } => status,
        ControlResponse::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    };
    let reason = status.runtime.reason.as_deref().unwrap_or("");
    match status.runtime.state {
        RuntimeState::Draining => println!(
            "prq (pid {}) is draining: {reason}.\n`prq drain --wait` waits for the end; `prq start` calls it off.",
            status.pid
        ),
        RuntimeState::Stopped => println!(
            "prq (pid {}): nothing in flight; the runtime is stopped ({reason}). The daemon is still up: `prq start` makes it ready again, `prq stop` ends it.",
            status.pid
        ),
        // `prq start` called the drain off meanwhile.
        RuntimeState::Running | RuntimeState::Starting => println!(
            "prq (pid {}): the drain was called off; the runtime is {}.",
            status.pid,
            status.runtime.state.as_str()
        ),
    }
    Ok(())
}

/// `prq reload [--config FILE]`: prints what changed per lane. Returns false when no
/// daemon runs.
pub async fn reload(home: &Home, config: Option<PathBuf>) -> anyhow::Result<bool> {
    let Some(mut client) = Client::connect(home).await? else {
        eprintln!(
            "prq is not running ({}); start it with `prq start` (it reads the config then).",
            home.root().display()
        );
        return Ok(false);
    };
    let config = match config {
        Some(p) => Some(std::path::absolute(&p)?),
        None => None,
    };
    match client.request(ControlRequest::Reload { config }).await? {
        ControlResponse::Reloaded(report) => print!("{}", render_reload(&report)),
        ControlResponse::Error { message } => bail!("reload refused: {message}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
    Ok(true)
}

fn render_reload(r: &prq_protocol::control::ReloadReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let from = r.config.as_deref().unwrap_or("the built-in config");
    if !r.applied {
        let _ = writeln!(
            out,
            "read {from}: the runtime is not running; `prq start` starts its lanes"
        );
    } else {
        let _ = writeln!(out, "reloaded {from}");
    }
    for lane in &r.lanes {
        let detail = if lane.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", lane.detail)
        };
        let _ = writeln!(out, "  {:<16} {}{detail}", lane.id, lane.change.as_str());
    }
    if !r.settings.is_empty() {
        let _ = writeln!(out, "settings:");
    }
    for s in &r.settings {
        let _ = writeln!(out, "  {:<28} {}: {}", s.name, s.applies.as_str(), s.detail);
    }
    out
}

/// `prq queue ...`. Returns false when no daemon runs.
pub async fn queue(home: &Home, command: QueueCommand, json: bool) -> anyhow::Result<bool> {
    let Some(mut client) = Client::connect(home).await? else {
        eprintln!(
            "prq is not running ({}); start it with `prq start`.",
            home.root().display()
        );
        return Ok(false);
    };
    let verb = match &command {
        QueueCommand::List => "",
        QueueCommand::Cancel { .. } | QueueCommand::Clear => "cancelled",
        QueueCommand::Stop { .. } | QueueCommand::StopAll => "stopping",
    };
    match client.request(ControlRequest::Queue(command)).await? {
        ControlResponse::Queue(view) if json => println!("{}", serde_json::to_string(&view)?),
        ControlResponse::Queue(view) => print!("{}", render_queue(&view)),
        ControlResponse::Acted { ids } if json => println!("{}", serde_json::json!({ "ids": ids })),
        ControlResponse::Acted { ids } if ids.is_empty() => println!("nothing to act on"),
        ControlResponse::Acted { ids } => {
            let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
            println!("{verb}: {}", ids.join(" "));
        }
        ControlResponse::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
    Ok(true)
}

fn render_queue(q: &QueueView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} pending, {} processing (runtime {})",
        q.pending,
        q.processing,
        q.runtime.state.as_str()
    );
    let _ = writeln!(
        out,
        "{:>6} {:<11} {:<20} {:<12} {:<22} {:>8} {:>7}",
        "ID", "STATE", "MODEL", "LANE", "CLIENT", "AGE", "CHARS"
    );
    for r in q.requests.iter().chain(&q.finished) {
        let _ = writeln!(
            out,
            "{:>6} {:<11} {:<20} {:<12} {:<22} {:>7.1}s {:>7}",
            r.id,
            r.state.as_str(),
            r.model,
            r.lane.as_deref().unwrap_or("-"),
            r.client,
            r.age_ms as f64 / 1000.0,
            r.chars,
        );
    }
    out
}

/// `prq status`.
pub async fn status(home: &Home, json: bool) -> anyhow::Result<bool> {
    let Some(mut client) = Client::connect(home).await? else {
        eprintln!(
            "prq is not running ({}); start it with `prq start`.",
            home.root().display()
        );
        return Ok(false);
    };
    let s = client.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", render_status(&s));
    }
    Ok(true)
}

pub fn render_status(s: &StatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "prq (pid {}) runtime {}{}",
        s.pid,
        s.runtime.state.as_str(),
        s.runtime
            .reason
            .as_ref()
            .map_or(String::new(), |r| format!(": {r}"))
    );
    let _ = writeln!(
        out,
        "mode {} (configured {}){}",
        s.mode.effective.as_str(),
        s.mode.configured.as_str(),
        s.mode
            .reason
            .as_ref()
            .map_or(String::new(), |r| format!(" — {r}"))
    );
    let _ = writeln!(out, "API {}/v1   panel {}", s.api_url, s.panel_url);
    if let Some(u) = &s.sandbox_url {
        let _ = writeln!(out, "sandbox site {u}");
    }
    let _ = writeln!(
        out,
        "queue: {} pending, {} processing",
        s.queue.pending, s.queue.processing
    );
    if s.log_lines_dropped > 0 {
        let _ = writeln!(
            out,
            "logs: {} line(s) lost (a full disk or an unwritable {}/logs)",
            s.log_lines_dropped, s.home
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<16} {:<11} {:<12} {:<10} {:<10} {:<9} {:>8} {:>8} {:>8}",
        "LANE",
        "PROVIDER",
        "PREFIX",
        "ACCOUNT",
        "STATE",
        "LOGGED-IN",
        "WORKER",
        "BROWSER",
        "REQUEST"
    );
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for l in &s.lanes {
        let _ = writeln!(
            out,
            "{:<16} {:<11} {:<12} {:<10} {:<10} {:<9} {:>8} {:>8} {:>8}",
            l.id,
            l.provider,
            l.prefix,
            l.account,
            l.state.as_str(),
            match l.logged_in {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            },
            dash(l.worker_pid.map(|p| p.to_string())),
            dash(l.browser_pid.map(|p| p.to_string())),
            dash(l.current.map(|p| p.to_string())),
        );
        if let Some(p) = &l.presence {
            let browser = match (&p.browser_version, &p.browser_updated_from) {
                (Some(v), Some(from)) => format!(" · Chromium {v} (was {from})"),
                (Some(v), None) => format!(" · Chromium {v}"),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                out,
                "  {} · {} · {} · {}{browser}",
                match p.headless {
                    true => "headless",
                    false => "headed (virtual display)",
                },
                p.locale,
                p.timezone,
                p.proxy
                    .as_deref()
                    .map_or("direct".into(), |p| format!("proxy {p}")),
            );
        }
        if let Some(note) = &l.note {
            let _ = writeln!(out, "  {note}");
        }
        if l.after_reply != prq_protocol::controls::AfterReply::Keep {
            let _ = writeln!(
                out,
                "  after_reply = {}: {} chat(s) deleted, {} delete(s) failed",
                l.after_reply.as_str(),
                l.chats.deleted,
                l.chats.failed
            );
        }
        if let Some(ms) = l.cooling_left_ms {
            let _ = writeln!(
                out,
                "  rate limited by its site: takes requests again in {} s",
                crate::runtime::whole_secs(std::time::Duration::from_millis(ms))
            );
        }
    }
    out
}

/// `prq demo`: start on the built-in sandbox config (unless a config is given), send
/// one chat request, and stream its answer to the terminal.
pub async fn demo(home: &Home, config: Option<PathBuf>) -> anyhow::Result<()> {
    let status = start(home, config).await?;
    let model = status
        .lanes
        .iter()
        .find(|l| l.worker_pid.is_some())
        .map(|l| format!("{}-reasoner", l.prefix))
        .context("no lane is running")?;
    let prompt = "Hello from prq! Which browser is answering?";
    println!(
        "\n> POST {}/v1/chat/completions  model={model} stream=true",
        status.api_url
    );
    println!("> {prompt}\n");
    let body = serde_json::json!({
        "model": model,
        "stream": true,
        "messages": [{"role": "user", "content": prompt}],
    });
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", status.api_url))
        .json(&body)
        .send()
        .await
        .context("the API did not answer")?;
    if !response.status().is_success() {
        bail!(
            "the API answered {}: {}",
            response.status(),
            response.text().await?
        );
    }
    let mut events = std::pin::pin!(SseByteStream::new(response.bytes_stream()));
    let mut in_reasoning = false;
    let stdout = std::io::stdout();
    while let Some(event) = events.next().await {
        // Keep-alive comments and data-less blocks carry no chunk.
        let Some(data) = event.context("the answer's stream broke")?.data else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&data)?;
        if let Some(err) = v.get("error") {
            bail!("the request failed: {}", err["message"]);
        }
        let delta = &v["choices"][0]["delta"];
        let mut out = stdout.lock();
        if let Some(r) = delta["reasoning_content"].as_str() {
            if !in_reasoning {
                write!(out, "(thinking) ")?;
                in_reasoning = true;
            }
            write!(out, "{r}")?;
        }
        if let Some(c) = delta["content"].as_str().filter(|c| !c.is_empty()) {
            if in_reasoning {
                write!(out, "\n\n")?;
                in_reasoning = false;
            }
            write!(out, "{c}")?;
        }
        out.flush()?;
    }
    println!("\n");
    println!("That answer was typed into a real headless Chromium, streamed by the sandbox chat site, and relayed by prq.");
    println!("prq is still running. Try it:");
    println!(
        "  curl -N {}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"{model}\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'",
        status.api_url
    );
    // The newcomer may not have prq on PATH: name it as they can run it.
    let exe = std::env::current_exe().unwrap_or_else(|_| "prq".into());
    let exe = std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or(exe);
    let prq = exe.display();
    println!("  {prq} status     # lanes, browsers, queue");
    println!("  {prq} queue      # requests");
    println!("  Panel: {}", status.panel_url);
    println!("  {prq} stop       # when done");
    Ok(())
}
