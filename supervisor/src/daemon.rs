//! The daemon: takes the home, binds the HTTP API, the sandbox site and the two local
//! sockets, starts the runtime, and runs until `prq stop` or a signal (SIGTERM drains
//! first, see `runtime/drain.rs`; SIGINT stops at once).
//!
//! `run` is a library function so tests could start a daemon in-process; `prq start
//! --foreground` calls it. On the way out — normal exit or panic — the sockets and the
//! pid file are removed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{Stream, StreamExt};
use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Access;
use crate::config::Config;
use crate::home::Home;
use crate::http::ConnLimits;
use crate::lanes::{self, Registry};
use crate::runtime::{DrainCause, DrainStart, Runtime, StartReply, Urls};
use crate::{api, control, http, sandbox};

/// How long the HTTP servers get to close their connections at shutdown.
const HTTP_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Binds a filesystem local socket, mode 0600. The caller holds the home lock, so a
/// socket file already there is a dead daemon's and is replaced.
pub fn bind_socket(path: &Path) -> anyhow::Result<Listener> {
    let _ = std::fs::remove_file(path);
    let name = path
        .to_fs_name::<GenericFilePath>()
        .with_context(|| format!("bad socket path {}", path.display()))?;
    ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .reclaim_name(false)
        .create_tokio()
        .with_context(|| format!("cannot listen on {}", path.display()))
}

fn url_of(addr: SocketAddr) -> String {
    // A wildcard address is not somewhere a client can connect to; show loopback.
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    if addr.is_ipv6() && !addr.ip().is_unspecified() {
        format!("http://[{host}]:{}", addr.port())
    } else {
        format!("http://{host}:{}", addr.port())
    }
}

/// A panic anywhere in the daemon — even in one task — leaves it in a state nobody
/// reasoned about: remove the sockets and the pid file and end the process. Workers see
/// their socket close and exit with their browsers; systemd (`Restart=on-failure`) or
/// the next `prq start` brings a clean daemon up.
fn exit_on_panic(home: &Home) {
    let files = [home.control_socket(), home.lanes_socket(), home.pid_file()];
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        previous(info);
        std::process::exit(101);
    }));
}

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM (systemd, containers, orchestrators): drain, then exit.
    Drain,
    /// SIGINT (Ctrl-C), or a second signal during a drain: stop now, as `prq stop`.
    Now,
}

pub async fn run(
    home: Home,
    config_path: Option<PathBuf>,
    autostart: bool,
    signals: impl Stream<Item = Stop>,
) -> anyhow::Result<()> {
    home.create()?;
    let _lock = home.lock()?;
    // Only a daemon that died mid-request leaves request directories behind; with the
    // home locked, none of them is in use.
    let swept = crate::attachments::sweep(&home.uploads_dir());
    if swept > 0 {
        tracing::info!(swept, "removed the attachments a stopped daemon left");
    }
    exit_on_panic(&home);
    let hangups = hangups();
    raise_fd_limit();
    let config = match &config_path {
        Some(p) => Config::load(p)?,
        None => Config::builtin(),
    };
    let api_listener = match TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let fix = if config_path.is_some() {
                "set another port with `listen` in the config"
            } else {
                "start with a config file that sets another port, e.g. `listen = \"127.0.0.1:8766\"` (prq start --config FILE)"
            };
            anyhow::bail!(
                "cannot listen on {}: the port is in use (another prq, on another PRQ_HOME, or another program?); stop that, or {fix}",
                config.listen
            );
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot listen on {} (`listen` in the config)",
                    config.listen
                )
            })
        }
    };
    let api_addr = api_listener.local_addr()?;
    let sandbox_listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot listen for the sandbox site")?;
    let sandbox_addr = sandbox_listener.local_addr()?;
    let urls = Urls {
        api: url_of(api_addr),
        panel: format!("{}/", url_of(api_addr)),
        sandbox: Some(format!("{}/", url_of(sandbox_addr))),
    };
    let control_listener = bind_socket(&home.control_socket())?;
    let lanes_listener = bind_socket(&home.lanes_socket())?;

    let conn_limits = ConnLimits::from_config(&config.limits);
    let registry = Arc::new(Registry::default());
    let workers = registry.clone();
    let access = Access::from_config(&config)?;
    let runtime = Runtime::new(
        home.clone(),
        urls.clone(),
        registry.clone(),
        config_path,
        config,
        access,
    );
    let stop = CancellationToken::new();

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(lanes::accept_workers(lanes_listener, registry));
    tasks.spawn(control::serve(
        control_listener,
        runtime.clone(),
        stop.clone(),
    ));
    let http_stop = CancellationToken::new();
    let api = tokio::spawn(http::serve(
        api_listener,
        api::router(runtime.clone()),
        conn_limits,
        "HTTP API",
        http_stop.clone(),
    ));
    let site = tokio::spawn(http::serve(
        sandbox_listener,
        sandbox::router(),
        conn_limits,
        "sandbox site",
        http_stop.clone(),
    ));
    tracing::info!(
        pid = std::process::id(),
        home = %home.root().display(),
        api = %urls.api,
        "daemon up"
    );

    tasks.spawn(reload_on_hangup(runtime.clone(), hangups));

    // In the foreground (systemd, containers) the daemon brings its runtime up by
    // itself; a `prq start` that arrives meanwhile waits for this start.
    if autostart {
        let starter = runtime.clone();
        tasks.spawn(async move {
            if let StartReply::Failed(reason) = starter.start(None).await {
                tracing::error!(%reason, "runtime did not start");
            }
        });
    }

    let mut signals = std::pin::pin!(signals);
    let first = tokio::select! {
        signal = signals.next() => {
            let signal = signal.unwrap_or(Stop::Now);
            tracing::info!(?signal, "signal received; shutting down");
            signal
        }
        _ = stop.cancelled() => {
            tracing::info!("`prq stop` received; shutting down");
            Stop::Now
        }
    };
    // A drain fails /readyz first, so a balancer stops sending before requests are
    // refused; with nothing running there is nothing to drain.
    let draining = first == Stop::Drain
        && matches!(
            runtime.drain(DrainCause::Signal),
            Ok(DrainStart::Begun | DrainStart::AlreadyDraining)
        );
    if draining {
        tracing::info!(
            "SIGTERM: draining, then exiting (another signal or `prq stop` stops at once)"
        );
        tokio::select! {
            _ = runtime.drained() => {}
            _ = signals.next() => tracing::info!("second signal: stopping now"),
            _ = stop.cancelled() => tracing::info!("`prq stop` received: stopping now"),
        }
    }
    runtime.shutdown().await;
    http_stop.cancel();
    for server in [api, site] {
        if tokio::time::timeout(HTTP_CLOSE_GRACE, server)
            .await
            .is_err()
        {
            tracing::warn!("an HTTP server did not close in time");
        }
    }
    tasks.abort_all();
    workers.kill_all().await;
    crate::logs::drain_lanes().await;
    let _ = std::fs::remove_file(home.control_socket());
    let _ = std::fs::remove_file(home.lanes_socket());
    tracing::info!("daemon stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: each HTTP connection, lane
/// and log holds descriptors, and the usual soft limit (1024) is below what
/// `limits.max_connections` and a few lanes may need. The hard limit is the
/// operator's (`LimitNOFILE` in `contrib/prq.service`, `ulimit -Hn`).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(soft, hard, "cannot raise the open-file limit: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
}

/// SIGTERM as [`Stop::Drain`], SIGINT as [`Stop::Now`], each time one arrives.
pub fn signals() -> anyhow::Result<impl Stream<Item = Stop>> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(futures::stream::unfold(
        (term, int),
        |(mut term, mut int)| async move {
            let stop = tokio::select! {
                _ = term.recv() => Stop::Drain,
                _ = int.recv() => Stop::Now,
            };
            Some((stop, (term, int)))
        },
    ))
}

/// SIGHUP, taken over as the daemon starts: left to its default action, a hangup
/// before the reload task runs would end the daemon.
fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .inspect_err(|e| tracing::error!("cannot handle SIGHUP ({e}); reload with `prq reload`"))
        .ok()
}

/// SIGHUP reloads the config, as `prq reload` does; the outcome goes to the log.
async fn reload_on_hangup(runtime: Arc<Runtime>, hangups: Option<tokio::signal::unix::Signal>) {
    let Some(mut hangups) = hangups else { return };
    while hangups.recv().await.is_some() {
        match runtime.reload(None) {
            Ok(report) => tracing::info!(
                lanes = report.lanes.len(),
                applied = report.applied,
                "SIGHUP: config reloaded"
            ),
            Err(reason) => tracing::error!(%reason, "SIGHUP: reload refused"),
        }
    }
}
