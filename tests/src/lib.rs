//! Helpers for the end-to-end tests: start the real `prq` on a temp `PRQ_HOME` and a
//! free port, talk to it through its CLI and HTTP API, read the sandbox site's record,
//! and check that nothing it started is left running.
//!
//! The binaries come from the same `target/<profile>` directory as the test itself;
//! build them first (`cargo build --bins`; the README's test command does).

pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tempfile::TempDir;

/// `target/<profile>/` — a test executable lives in its `deps/`, a tool of this crate
/// (`src/bin/`) in it.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("target/<profile>/...");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>/deps")
    } else {
        dir
    };
    dir.to_path_buf()
}

pub fn prq_bin() -> PathBuf {
    let bin = bin_dir().join("prq");
    assert!(
        bin.exists() && bin_dir().join("prq-worker").exists(),
        "build the binaries first: cargo build --bins (looked in {})",
        bin_dir().display()
    );
    bin
}

/// A config with `listen` on a free port and the given `[[lanes]]` tables.
pub fn config(mode: &str, lanes: &[(&str, &str, &str)]) -> String {
    let mut c = format!("listen = \"127.0.0.1:0\"\nmode = \"{mode}\"\nstart_timeout_s = 60\n");
    for (provider, prefix, account) in lanes {
        c.push_str(&format!(
            "\n[[lanes]]\nprovider = \"{provider}\"\nprefix = \"{prefix}\"\naccount = \"{account}\"\n"
        ));
    }
    c
}

/// `config` (as [`config`] makes it) with these `[limits]` lines, e.g.
/// `"header_timeout_s = 1"`.
pub fn with_limits(config: &str, limits: &[&str]) -> String {
    let table = format!("[limits]\n{}\n", limits.join("\n"));
    config.replacen(
        "start_timeout_s = 60\n",
        &format!("start_timeout_s = 60\n{table}"),
        1,
    )
}

/// One running prq, on its own home. Dropping it runs `prq stop` and then kills any
/// process still running from its home.
pub struct Prq {
    home: TempDir,
    pub config_path: PathBuf,
    pub api: String,
    http: reqwest::Client,
}

impl Prq {
    /// Writes `config` to a new home and runs `prq start --config`; panics with prq's
    /// output when it fails.
    pub fn start(config: &str) -> Self {
        let prq = Self::new(config);
        let out = prq.cli(&["start", "--config", prq.config_path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "prq start failed:\n{}\n{}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            prq.daemon_log()
        );
        prq.with_api()
    }

    /// A home with a config and no daemon yet.
    pub fn new(config: &str) -> Self {
        let home = tempfile::Builder::new()
            .prefix("prq-test-")
            .tempdir()
            .expect("temp home");
        let config_path = home.path().join("test-config.toml");
        std::fs::write(&config_path, config).expect("write config");
        Self {
            home,
            config_path,
            api: String::new(),
            http: reqwest::Client::new(),
        }
    }

    /// Reads the API URL from `prq status --json`.
    pub fn with_api(mut self) -> Self {
        self.api = self.status()["api_url"]
            .as_str()
            .expect("api_url")
            .to_string();
        self
    }

    /// The API's address, for raw TCP clients.
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.api
            .trim_start_matches("http://")
            .parse()
            .expect("api_url is http://IP:PORT")
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Runs the `prq` CLI on this home.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_env(args, &[])
    }

    /// Runs the `prq` CLI with extra environment (a daemon it starts inherits it).
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(prq_bin())
            .args(args)
            .env("PRQ_HOME", self.home.path())
            .env_remove("PRQ_CONFIG")
            .envs(env.iter().copied())
            .output()
            .expect("run prq")
    }

    /// Runs `prq start --foreground` on this home's config (its output discarded) and
    /// waits until it has started its lanes by itself; the caller ends the process.
    pub fn start_foreground(&self) -> std::process::Child {
        let child = Command::new(prq_bin())
            .args([
                "start",
                "--foreground",
                "--config",
                self.config_path.to_str().unwrap(),
            ])
            .env("PRQ_HOME", self.home.path())
            .env_remove("PRQ_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run prq start --foreground");
        assert!(
            wait_until(Duration::from_secs(20), || {
                let out = self.cli(&["status", "--json"]);
                out.status.success()
                    && serde_json::from_slice::<Value>(&out.stdout)
                        .is_ok_and(|s| s["runtime"]["state"] == "running")
            }),
            "the foreground daemon starts its lanes by itself"
        );
        child
    }

    /// `prq start` again on this home's config; panics with prq's output on failure.
    pub fn restart_runtime(&self) {
        let out = self.cli(&["start", "--config", self.config_path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "prq start failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A lane's entry in `prq status --json`.
    pub fn lane(&self, id: &str) -> Value {
        self.status()["lanes"]
            .as_array()
            .expect("lanes")
            .iter()
            .find(|l| l["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no lane {id}"))
    }

    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "prq status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    pub fn sandbox_url(&self) -> String {
        self.status()["sandbox_url"]
            .as_str()
            .expect("a sandbox lane")
            .trim_end_matches('/')
            .to_string()
    }

    /// The sandbox site's record of the streams it served.
    pub async fn sandbox_streams(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/stats", self.sandbox_url()))
            .send()
            .await
            .expect("sandbox stats")
            .json()
            .await
            .expect("stats JSON");
        v["streams"].as_array().cloned().unwrap_or_default()
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("logs/daemon.log")).unwrap_or_default()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `/metrics` as text (Prometheus exposition format).
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.api))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("/metrics text")
    }

    /// GETs an API path (e.g. `/api/queue`) as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.api))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// GETs a path, with `bearer` as `Authorization: Bearer` when given: (status, JSON
    /// body or null).
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.api));
        if let Some(key) = bearer {
            req = req.bearer_auth(key);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POSTs to an API path with no body: (status, JSON body or null).
    pub async fn post(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.api))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The queue's record of one request.
    pub async fn record(&self, id: u64) -> Value {
        self.get_json(&format!("/api/queue/{id}")).await
    }

    /// Waits until request `id` is in `state` — for `processing`, also until it has
    /// streamed some text, so a stop lands mid-answer.
    pub async fn until_state(&self, id: u64, state: &str) {
        eventually(Duration::from_secs(20), || async {
            let r = self.record(id).await;
            r["state"] == state && (state != "processing" || r["chars"].as_u64() > Some(0))
        })
        .await
        .unwrap_or_else(|_| panic!("request {id} never reached {state}"));
    }

    /// The ID of the first live request in `state`, waiting (bounded) for one.
    pub async fn first_live(&self, state: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let q = self.get_json("/api/queue").await;
            let found = q["requests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["state"] == state)
                .and_then(|r| r["id"].as_u64());
            if let Some(id) = found {
                return id;
            }
            assert!(Instant::now() < deadline, "no request became {state}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs a chat request with one user message.
    pub async fn chat_request(&self, model: &str, prompt: &str, stream: bool) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.api))
            .json(&json!({
                "model": model,
                "stream": stream,
                "messages": [{"role": "user", "content": prompt}],
            }))
            .send()
            .await
            .expect("POST /v1/chat/completions")
    }

    /// A non-streaming chat: (status, body).
    pub async fn chat(&self, model: &str, prompt: &str) -> (u16, Value) {
        let r = self.chat_request(model, prompt, false).await;
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON body"))
    }

    /// A streaming chat, read to the end.
    pub async fn chat_stream(&self, model: &str, prompt: &str) -> Streamed {
        let r = self.chat_request(model, prompt, true).await;
        Streamed::read(r).await
    }

    /// Every process whose command line mentions this home: the daemon, its workers
    /// and their browsers (their profile directories live here).
    pub fn processes(&self) -> Vec<(u32, String)> {
        processes_mentioning(self.home.path())
    }

    /// `prq stop`, then waits (bounded) for every process of this home to be gone.
    pub fn stop(&self) -> Output {
        let out = self.cli(&["stop"]);
        wait_until(Duration::from_secs(10), || self.processes().is_empty());
        out
    }
}

impl Drop for Prq {
    fn drop(&mut self) {
        let _ = self.cli(&["stop"]);
        wait_until(Duration::from_secs(10), || self.processes().is_empty());
        for (pid, _) in self.processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// What a streaming client saw.
#[derive(Debug, Default)]
pub struct Streamed {
    pub status: u16,
    pub request_id: Option<u64>,
    pub reasoning: String,
    pub answer: String,
    /// The in-band error object, if the stream ended with one.
    pub error: Option<Value>,
    pub finish_reason: Option<String>,
    pub done: bool,
    pub chunks: Vec<Value>,
    /// When the answer grew: when the event that carried the text was parsed (as the
    /// network read that completed it arrived), and the answer's length in bytes after it
    /// (for relay timings).
    pub answer_arrivals: Vec<(SystemTime, usize)>,
}

impl Streamed {
    pub async fn read(r: reqwest::Response) -> Self {
        use futures::StreamExt;
        let mut s = Streamed {
            status: r.status().as_u16(),
            request_id: request_id(&r),
            ..Default::default()
        };
        if s.status != 200 {
            s.error = r.json().await.ok();
            return s;
        }
        let mut events = std::pin::pin!(sse_stream::SseByteStream::new(r.bytes_stream()));
        while let Some(event) = events.next().await {
            // An event is parsed as soon as the read that completes it arrives.
            let at = SystemTime::now();
            // Keep-alive comments and data-less blocks carry no chunk.
            if let Some(data) = event.expect("an SSE event").data {
                s.take_data(&data, at);
            }
        }
        s
    }

    fn take_data(&mut self, data: &str, at: SystemTime) {
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        let v: Value = serde_json::from_str(data).expect("chunk JSON");
        if v.get("error").is_some() {
            self.error = Some(v.clone());
        }
        let choice = &v["choices"][0];
        if let Some(t) = choice["delta"]["reasoning_content"].as_str() {
            self.reasoning.push_str(t);
        }
        let text = choice["delta"]["content"]
            .as_str()
            .or(choice["text"].as_str());
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            self.answer.push_str(t);
            self.answer_arrivals.push((at, self.answer.len()));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(f.to_string());
        }
        self.chunks.push(v);
    }
}

pub fn request_id(r: &reqwest::Response) -> Option<u64> {
    r.headers()
        .get("x-prq-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Processes (not zombies) whose command line contains `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<(u32, String)> {
    let needle = needle.to_string_lossy().to_string();
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || !is_alive(pid) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// True when the process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    prq::procinfo::is_alive(pid)
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u64, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("kill");
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async form of [`wait_until`].
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("condition not met within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sandbox stream whose prompt starts with `head`.
pub fn stream_for<'a>(streams: &'a [Value], head: &str) -> anyhow::Result<&'a Value> {
    streams
        .iter()
        .find(|s| {
            s["prompt_head"]
                .as_str()
                .is_some_and(|p| p.starts_with(head))
        })
        .with_context(|| format!("no sandbox stream for {head:?} in {streams:?}"))
}

/// Raw HTTP/1.1 over TCP, for clients no HTTP library would be: half-open, silent,
/// non-reading.
pub mod raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Connects and sends `bytes` (nothing more).
    pub async fn send(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
        let mut tcp = TcpStream::connect(addr).await.expect("connect to the API");
        tcp.write_all(bytes).await.expect("write");
        tcp
    }

    /// A streaming chat request whose client will never read the answer: sent, and
    /// the connection handed back to be left alone.
    pub async fn never_read(addr: std::net::SocketAddr, model: &str, prompt: &str) -> TcpStream {
        let body = serde_json::json!({
            "model": model,
            "stream": true,
            "messages": [{"role": "user", "content": prompt}],
        })
        .to_string();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: prq\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        send(addr, head.as_bytes()).await
    }

    /// Reads one response whose body has a `Content-Length`: (status, body).
    pub async fn response(tcp: &mut TcpStream) -> anyhow::Result<(u16, String)> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let status: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("no status line in {head:?}"))?;
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                    return Ok((status, body));
                }
            }
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                anyhow::bail!("closed after {:?}", String::from_utf8_lossy(&buf));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until the server closes the connection (end of stream or reset); what
    /// came before that.
    pub async fn until_closed(tcp: &mut TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return buf,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client reads from any SSE server, not only prq's: CRLF line ends, a
    /// comment, a `data:` field over two lines, and reads that split lines anywhere.
    #[tokio::test]
    async fn streamed_reads_events_however_the_wire_splits_them() {
        let wire = ": keep-alive\r\n\r\n\
            data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n\
            data: {\"choices\":[{\"delta\":\r\n\
            data: {\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n\
            data: [DONE]\n\n";
        let reads: Vec<Result<axum::body::Bytes, std::io::Error>> = wire
            .as_bytes()
            .chunks(3)
            .map(|read| Ok(axum::body::Bytes::copy_from_slice(read)))
            .collect();
        let body = reqwest::Body::wrap_stream(futures::stream::iter(reads));
        let response = axum::http::Response::builder().body(body).unwrap();
        let s = Streamed::read(reqwest::Response::from(response)).await;
        assert_eq!(s.answer, "Hello");
        assert_eq!(s.chunks.len(), 2);
        assert_eq!(s.finish_reason.as_deref(), Some("stop"));
        assert!(s.done && s.error.is_none());
    }
}
