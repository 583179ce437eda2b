//! How the worker reaches its browser's DevTools: over a pipe, never over a port.
//!
//! A DevTools port (`--remote-debugging-port`) listens on loopback, where every local
//! user can connect to it — and DevTools is full control of the browser and of the
//! account logged in to it. With `--remote-debugging-pipe` Chromium opens no port: it
//! reads commands from its fd 3 and writes answers and events to its fd 4, each message
//! one JSON text ended by a NUL byte (Chromium's `content/browser/devtools/
//! devtools_pipe_handler.cc`; puppeteer's `PipeTransport` speaks it the same way).
//!
//! chromiumoxide 0.9.1 speaks DevTools only over a WebSocket it connects to itself
//! (`chromiumoxide::conn::Connection` wraps a `WebSocketStream` over TCP). So the
//! worker relays ([`Relay`]): it serves one WebSocket on a loopback port, at a path with
//! 128 random bits in it that never leave the worker, accepts the one connection that
//! asks for that path — chromiumoxide's — and closes the port at once; from then on it
//! passes each message between that connection and the pipe. The launcher
//! ([`into_browser_ends`], run by `browser::run_as_launcher`) puts the pipe on the
//! browser's fds 3 and 4, turns chromiumoxide's `--remote-debugging-port` into
//! `--remote-debugging-pipe`, and tells chromiumoxide where the relay is the way Chromium
//! announces its port: a `DevTools listening on ws://...` line on stderr.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::StatusCode;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::net::TcpListener;

/// In the launcher's environment: the browser's ends of the pipe and of its stderr
/// (`<commands>,<events>,<stderr>`),
/// and the relay's address.
const PIPE_ENV: &str = "PRQ_WORKER_LAUNCH_DEVTOOLS_PIPE";
const URL_ENV: &str = "PRQ_WORKER_LAUNCH_DEVTOOLS_URL";

/// Where Chromium reads commands and writes messages with `--remote-debugging-pipe`.
const BROWSER_COMMANDS_FD: RawFd = 3;
const BROWSER_EVENTS_FD: RawFd = 4;

/// How long one connection to the relay's port gets to finish its WebSocket handshake:
/// a stranger that connects and says nothing must not keep chromiumoxide out.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The worker's side of one browser's DevTools pipe, and the loopback port chromiumoxide
/// connects to until it has connected.
pub struct Relay {
    listener: TcpListener,
    path: String,
    /// The worker writes commands here ...
    commands: OwnedFd,
    /// ... and reads answers and events here.
    events: OwnedFd,
    /// The browser's stderr (see [`StderrTail`]).
    stderr: OwnedFd,
    tail: StderrTail,
}

/// The browser's ends of the pipe, held until the launcher has been spawned with them;
/// dropping them then is what lets the worker see the pipe close when the browser goes.
pub struct BrowserEnds {
    commands: OwnedFd,
    events: OwnedFd,
    stderr: OwnedFd,
    url: String,
}

/// The last lines the browser wrote to stderr. Its stderr cannot stay chromiumoxide's
/// (which stops reading once it has the DevTools address: a browser that writes on then
/// dies of SIGPIPE), and most of it is noise (D-Bus complaints); its last lines are what
/// says why a browser that exits did.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

/// How many lines, of how many characters at most, the tail keeps.
const TAIL_LINES: usize = 5;
const TAIL_LINE_CHARS: usize = 300;

impl StderrTail {
    /// The lines kept, joined with ` | `; empty when the browser said nothing.
    pub fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    fn push(&self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line.chars().take(TAIL_LINE_CHARS).collect());
    }

    /// Reads the browser's stderr to its end, keeping the last lines.
    async fn drain(self, stderr: OwnedFd) {
        let Ok(stderr) = pipe::Receiver::from_owned_fd(stderr) else {
            return;
        };
        let mut lines = BufReader::new(stderr).split(b'\n');
        while let Ok(Some(line)) = lines.next_segment().await {
            self.push(&String::from_utf8_lossy(&line));
        }
    }
}

impl Relay {
    /// A pipe for one browser and the relay's port.
    pub fn open() -> std::io::Result<(Relay, BrowserEnds)> {
        let (browser_reads, commands) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (events, browser_writes) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (stderr, browser_stderr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let path = format!("/devtools/browser/{}", secret()?);
        let relay = Relay {
            listener: TcpListener::from_std(listener)?,
            path: path.clone(),
            commands,
            events,
            stderr,
            tail: StderrTail::default(),
        };
        let ends = BrowserEnds {
            commands: browser_reads,
            events: browser_writes,
            stderr: browser_stderr,
            url: format!("ws://127.0.0.1:{port}{path}"),
        };
        Ok((relay, ends))
    }

    /// What the browser says on stderr, as [`serve`](Relay::serve) reads it.
    pub fn stderr_tail(&self) -> StderrTail {
        self.tail.clone()
    }

    /// Serves the relay ([`serve`](Relay::serve)) as a task of its own, for as long as
    /// the returned handle lives.
    pub fn spawn(self, within: Duration) -> Serving {
        Serving(tokio::spawn(self.serve(within)))
    }

    /// Serves the relay: waits (up to `within`) for chromiumoxide's connection, closes
    /// the port, then passes messages both ways until either side ends. Ending closes
    /// the pipe to the browser and the connection to chromiumoxide, so each side sees
    /// the other go.
    async fn serve(self, within: Duration) {
        let Relay {
            listener,
            path,
            commands,
            events,
            stderr,
            tail,
        } = self;
        // Read for as long as the browser lives, whatever becomes of the relay.
        tokio::spawn(tail.drain(stderr));
        let ws = match tokio::time::timeout(within, accept(&listener, &path)).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::error!("the DevTools relay cannot accept: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!("nothing connected to the DevTools relay in time");
                return;
            }
        };
        drop(listener);
        let (to_browser, from_browser) = match (
            pipe::Sender::from_owned_fd(commands),
            pipe::Receiver::from_owned_fd(events),
        ) {
            (Ok(to), Ok(from)) => (to, from),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("the DevTools pipe cannot be used: {e}");
                return;
            }
        };
        let (mut to_client, mut from_client) = ws.split();
        let commands = async {
            let mut to_browser = to_browser;
            while let Some(msg) = from_client.next().await {
                let text = match msg {
                    Ok(Message::Text(text)) => text,
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => continue,
                };
                let mut framed = Vec::with_capacity(text.len() + 1);
                framed.extend_from_slice(text.as_bytes());
                framed.push(0);
                if to_browser.write_all(&framed).await.is_err() {
                    break;
                }
            }
        };
        let events = async {
            let mut from_browser = BufReader::with_capacity(64 * 1024, from_browser);
            let mut message = Vec::new();
            loop {
                message.clear();
                match from_browser.read_until(0, &mut message).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                let Ok(text) = String::from_utf8(std::mem::take(&mut message)) else {
                    tracing::warn!("the browser sent a DevTools message that is not UTF-8");
                    continue;
                };
                // Whatever else the browser has already written goes out in one flush.
                let sent = match from_browser.buffer().contains(&0) {
                    true => to_client.feed(Message::text(text)).await,
                    false => to_client.send(Message::text(text)).await,
                };
                if sent.is_err() {
                    break;
                }
            }
            let _ = to_client.close(None).await;
        };
        tokio::select! {
            () = commands => {}
            () = events => {}
        }
    }
}

/// A relay being served; dropping it ends the relay (and so the connection).
pub struct Serving(tokio::task::JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl BrowserEnds {
    /// The launcher's environment: the fds it inherits (made inheritable here, so
    /// spawn the launcher right after) and the relay's address.
    pub fn launcher_env(&self) -> std::io::Result<[(&'static str, String); 2]> {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let ends = [&self.commands, &self.events, &self.stderr];
        for fd in ends {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
        }
        let fds = ends.map(|fd| fd.as_raw_fd().to_string()).join(",");
        Ok([(PIPE_ENV, fds), (URL_ENV, self.url.clone())])
    }
}

/// Accepts connections until one completes a WebSocket handshake for `path`.
async fn accept(
    listener: &TcpListener,
    path: &str,
) -> std::io::Result<
    async_tungstenite::WebSocketStream<
        async_tungstenite::tokio::TokioAdapter<tokio::net::TcpStream>,
    >,
> {
    // DevTools messages can be large (a screenshot, a big response body).
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    loop {
        let (stream, peer) = listener.accept().await?;
        // The callback's type is tungstenite's (`Callback`): its error is a whole response.
        #[allow(clippy::result_large_err)]
        let check = |request: &Request, response: Response| {
            if request.uri().path() == path {
                Ok(response)
            } else {
                let mut refused = ErrorResponse::new(None);
                *refused.status_mut() = StatusCode::NOT_FOUND;
                Err(refused)
            }
        };
        let handshake =
            async_tungstenite::tokio::accept_hdr_async_with_config(stream, check, Some(config));
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(ws)) => return Ok(ws),
            Ok(Err(e)) => tracing::warn!(%peer, "refused a connection to the DevTools relay: {e}"),
            Err(_) => tracing::warn!(%peer, "a connection to the DevTools relay said nothing"),
        }
    }
}

/// 128 random bits, in hex.
fn secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// In the launcher, just before it becomes the browser: when the worker handed it a
/// DevTools pipe, puts the pipe on fds 3 and 4, announces the relay on stderr for
/// chromiumoxide, and returns the browser's arguments with the port switched to the
/// pipe. Without a pipe, the arguments as they are.
pub fn into_browser_ends(args: impl Iterator<Item = OsString>) -> Result<Vec<OsString>, String> {
    let (Some(fds), Some(url)) = (std::env::var_os(PIPE_ENV), std::env::var_os(URL_ENV)) else {
        return Ok(args.collect());
    };
    let fds: [RawFd; 3] = fds
        .to_str()
        .and_then(|fds| {
            fds.split(',')
                .map(|fd| fd.parse().ok())
                .collect::<Option<Vec<_>>>()
        })
        .and_then(|fds| fds.try_into().ok())
        .ok_or("the DevTools pipe's descriptors are garbled")?;
    // SAFETY: the worker spawned this process with these descriptors open for it, and
    // nothing else in this process uses them.
    let [commands, events, stderr] = fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    // Out of the way first: either may sit on the other's target number.
    let (commands, events) = (above_targets(commands)?, above_targets(events)?);
    onto(&commands, BROWSER_COMMANDS_FD)?;
    onto(&events, BROWSER_EVENTS_FD)?;
    std::env::remove_var(PIPE_ENV);
    std::env::remove_var(URL_ENV);
    // What chromiumoxide waits for on stderr (`ws_url_from_output`), as Chromium says it.
    eprintln!("DevTools listening on {}", url.to_string_lossy());
    // From here the browser's stderr is the worker's (see `StderrTail`).
    onto(&stderr, libc::STDERR_FILENO)?;
    drop(stderr);
    Ok(args
        .filter(|arg| {
            !arg.to_str()
                .is_some_and(|a| a.starts_with("--remote-debugging-port"))
        })
        .chain([OsString::from("--remote-debugging-pipe")])
        .collect())
}

fn pipe_failure(e: nix::Error) -> String {
    format!("cannot hand the DevTools pipe to the browser: {e}")
}

/// `fd` moved to a number above 3 and 4 (closed on exec); the old number is closed.
fn above_targets(fd: OwnedFd) -> Result<OwnedFd, String> {
    use nix::fcntl::{fcntl, FcntlArg};
    let moved =
        fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(BROWSER_EVENTS_FD + 1)).map_err(pipe_failure)?;
    // SAFETY: fcntl just made this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// Puts a copy of `fd` on `target`, inheritable by the browser.
fn onto(fd: &OwnedFd, target: RawFd) -> Result<(), String> {
    // SAFETY: dup2 onto a fixed number that nothing in this process uses (the launcher
    // execs the browser right after); the copy is left open for the browser on purpose.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(pipe_failure(nix::Error::last()));
    }
    Ok(())
}
