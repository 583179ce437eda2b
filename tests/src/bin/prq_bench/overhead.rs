//! prq's own cost: requests through HTTP → queue → worker → HTTP on echo lanes,
//! against a bare axum handler that answers the same text in the same shapes, measured
//! back to back with the same client, the same requests and the same concurrency.
//!
//! Eight echo lanes of one prefix in `full` mode, so that up to eight requests are
//! served at once and concurrency 8 measures prq rather than a lane's FIFO; at 64 the
//! surplus waits in the queue, which is part of what prq costs there.

use prq::procinfo::{cpu_ticks, own_threads_cpu_ticks};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use axum::body::Bytes;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use prq::openai::{usage, ApiError, Kind, Request, Shape};
use prq_protocol::prompt::{flatten, last_user_text};
use prq_protocol::script::{answer_piece, expected, Directives};
use prq_tests::{config, Prq, Streamed};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::stats::Percentiles;
use crate::table::{mib, ms, ms_diff, Table, Target};

const ACCOUNTS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
const MODEL: &str = "echo-chat";
/// Sixteen words after the echo: 17 content chunks a stream.
const PROMPT: &str = "overhead\nsandbox: tokens=16 delay_ms=0";
const CONCURRENCY: [usize; 3] = [1, 8, 64];
/// Timed requests per server, kind and concurrency ...
const REQUESTS: usize = 10_000;
/// ... in this many batches, the two servers taking turns, so that a burst of load
/// from elsewhere on the machine falls on both alike.
const BATCHES: usize = 10;
/// Untimed requests first, so that connections are open and caches are warm.
const WARMUP: usize = 200;
/// Where the target applies.
const TARGET_CONCURRENCY: usize = 8;
/// The bare server's threads.
const BARE_THREADS: &str = "bare-axum";

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("overhead: echo lanes vs a bare axum handler");
    let lanes: Vec<_> = ACCOUNTS.iter().map(|a| ("echo", "echo", *a)).collect();
    let prq = Prq::start(&config("full", &lanes));
    let bare = Bare::start().await?;
    let client = reqwest::Client::new();
    let status = prq.status();
    let pid = |v: &Value| {
        v.as_u64()
            .map(|p| p as u32)
            .context("a pid in `prq status`")
    };
    let workers = status["lanes"].as_array().context("lanes")?;
    let servers = [
        Server {
            name: "prq",
            url: format!("{}/v1/chat/completions", prq.api),
            cpu: vec![
                ("daemon", Cpu::Processes(vec![pid(&status["pid"])?])),
                (
                    "workers",
                    Cpu::Processes(
                        workers
                            .iter()
                            .map(|l| pid(&l["worker_pid"]))
                            .collect::<Result<_>>()?,
                    ),
                ),
            ],
        },
        Server {
            name: "bare axum",
            url: bare.url(),
            cpu: vec![("handler", Cpu::Threads(BARE_THREADS))],
        },
    ];
    for server in &servers {
        same_answer(&client, &server.url).await?;
    }

    for stream in [false, true] {
        let kind = if stream { "streaming" } else { "non-streaming" };
        let body = Bytes::from(
            json!({
                "model": MODEL,
                "stream": stream,
                "messages": [{"role": "user", "content": PROMPT}],
            })
            .to_string(),
        );
        for concurrency in CONCURRENCY {
            for server in &servers {
                load(&client, &server.url, &body, concurrency, WARMUP).await?;
            }
            let mut runs = [Run::default(), Run::default()];
            for _ in 0..BATCHES {
                for (server, run) in servers.iter().zip(&mut runs) {
                    let before = server.cpu_used();
                    let mut batch =
                        load(&client, &server.url, &body, concurrency, REQUESTS / BATCHES).await?;
                    batch.cpu = server
                        .cpu_used()
                        .into_iter()
                        .zip(before)
                        .map(|(a, b)| a - b)
                        .collect();
                    run.add(batch);
                }
            }
            let [prq_run, bare_run] = runs.map(Run::summary);
            for (server, run) in servers.iter().zip([&prq_run, &bare_run]) {
                table.info(
                    format!("{kind}, c={concurrency}: {}", server.name),
                    format!("{run} · CPU/req {}", server.cpu_text(run)),
                );
            }
            let extra_p99 = prq_run.latency.p99 - bare_run.latency.p99;
            let figure = format!(
                "p50 {} · p99 {} · req/s ×{:.2} of bare",
                ms_diff(prq_run.latency.p50 - bare_run.latency.p50),
                ms_diff(extra_p99),
                prq_run.rate / bare_run.rate
            );
            let what = format!("{kind}, c={concurrency}: prq − bare");
            if concurrency == TARGET_CONCURRENCY {
                table.check(what, figure, extra_p99, Target::Below(1.0, "ms (p99)"));
            } else {
                table.info(what, figure);
            }
        }
    }

    let daemon = pid(&status["pid"])?;
    let rss = prq::procinfo::rss_kb(daemon).context("the daemon's RSS")?;
    table.check(
        "supervisor RSS after this load",
        mib(rss),
        rss as f64 / 1024.0,
        Target::Below(30.0, "MiB"),
    );
    drop(client);
    bare.stop().await?;
    crate::shut(prq)
}

/// Both servers give the script's answer, whole and streamed, before any timing.
async fn same_answer(client: &reqwest::Client, url: &str) -> Result<()> {
    let (_, want) = expected(PROMPT, false).map_err(anyhow::Error::msg)?;
    let ask = |stream: bool| {
        client.post(url).json(&json!({
            "model": MODEL,
            "stream": stream,
            "messages": [{"role": "user", "content": PROMPT}],
        }))
    };
    let whole: Value = ask(false).send().await?.json().await?;
    let got = whole["choices"][0]["message"]["content"].as_str();
    ensure!(got == Some(want.as_str()), "{url} answered {whole}");
    let streamed = Streamed::read(ask(true).send().await?).await;
    ensure!(
        streamed.done && streamed.answer == want,
        "{url} streamed {streamed:?}"
    );
    Ok(())
}

/// A server under measurement: where its requests go, and whose CPU time it uses.
struct Server {
    name: &'static str,
    url: String,
    /// Labelled parts whose CPU time (user + system) is counted.
    cpu: Vec<(&'static str, Cpu)>,
}

impl Server {
    fn cpu_used(&self) -> Vec<Duration> {
        self.cpu.iter().map(|(_, cpu)| cpu.used()).collect()
    }

    /// Each part's CPU time per request, e.g. "daemon 52 µs + workers 21 µs".
    fn cpu_text(&self, summary: &Summary) -> String {
        let parts = self.cpu.iter().zip(&summary.cpu_per_request);
        let parts: Vec<String> = parts
            .map(|((label, _), d)| format!("{label} {:.0} µs", d.as_secs_f64() * 1e6))
            .collect();
        parts.join(" + ")
    }
}

/// Where CPU time is read from: `/proc`, in clock ticks (10 ms), so it is summed over
/// whole batches of requests.
enum Cpu {
    Processes(Vec<u32>),
    /// This process's threads of that name.
    Threads(&'static str),
}

impl Cpu {
    fn used(&self) -> Duration {
        let ticks: u64 = match self {
            Cpu::Processes(pids) => pids.iter().filter_map(|&pid| cpu_ticks(pid)).sum(),
            Cpu::Threads(name) => own_threads_cpu_ticks(name),
        };
        // SAFETY: sysconf only reads a system constant.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Duration::from_secs_f64(ticks as f64 / per_second)
    }
}

/// Requests timed against one server, in one or more batches.
#[derive(Default)]
struct Run {
    wall: Duration,
    /// Milliseconds from sending each request to reading its body's end.
    latencies: Vec<f64>,
    /// CPU time used meanwhile, per part of the server.
    cpu: Vec<Duration>,
}

impl Run {
    fn add(&mut self, batch: Run) {
        self.wall += batch.wall;
        self.latencies.extend(batch.latencies);
        self.cpu.resize(batch.cpu.len(), Duration::ZERO);
        for (total, d) in self.cpu.iter_mut().zip(batch.cpu) {
            *total += d;
        }
    }

    fn summary(self) -> Summary {
        let n = self.latencies.len() as u32;
        Summary {
            rate: f64::from(n) / self.wall.as_secs_f64(),
            latency: Percentiles::of(self.latencies),
            cpu_per_request: self.cpu.into_iter().map(|d| d / n).collect(),
        }
    }
}

struct Summary {
    /// Requests per second over the wall time of the batches.
    rate: f64,
    latency: Percentiles,
    cpu_per_request: Vec<Duration>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} req/s · p50 {} · p99 {}",
            self.rate,
            ms(self.latency.p50),
            ms(self.latency.p99)
        )
    }
}

/// `count` requests from `concurrency` clients that each send the next one as soon as
/// their last one is read to the end, over keep-alive connections.
async fn load(
    client: &reqwest::Client,
    url: &str,
    body: &Bytes,
    concurrency: usize,
    count: usize,
) -> Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, body, next) =
                (client.clone(), url.to_string(), body.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let sent = Instant::now();
                    one(&client, &url, body.clone()).await?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for c in clients {
        latencies.extend(c.await??);
    }
    Ok(Run {
        wall: started.elapsed(),
        latencies,
        cpu: Vec::new(),
    })
}

/// One request, its body read to the end; a stream must end with `[DONE]`.
async fn one(client: &reqwest::Client, url: &str, body: Bytes) -> Result<()> {
    let r = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let streamed = r.headers().get(reqwest::header::CONTENT_TYPE)
        == Some(&reqwest::header::HeaderValue::from_static(
            "text/event-stream",
        ));
    let body = r.bytes().await?;
    ensure!(status.is_success(), "{url}: {status} {body:?}");
    ensure!(
        !streamed || body.ends_with(b"data: [DONE]\n\n"),
        "{url}: a stream that did not end with [DONE]"
    );
    Ok(())
}

/// The bare handler on its own runtime and threads, as prq's daemon has its own
/// process: it does not share the client's threads, and prq does not either.
struct Bare {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl Bare {
    async fn start() -> Result<Self> {
        let (ready_tx, ready) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            // Multi-threaded with a worker per core, like the daemon's `#[tokio::main]`;
            // its threads named so that their CPU time can be told from the client's.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .thread_name(BARE_THREADS)
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let _ = ready_tx.send(listener.local_addr()?);
                // As prq's listeners do: with Nagle's algorithm, each SSE chunk after the
                // first would wait for the client's delayed ACK (40 ms on Linux).
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let app = Router::new().route("/v1/chat/completions", post(bare_chat));
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await?;
                Ok(())
            })
        });
        let addr = ready.await.context("the bare server did not start")?;
        Ok(Self { addr, stop, thread })
    }

    fn url(&self) -> String {
        format!("http://{}/v1/chat/completions", self.addr)
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        tokio::task::spawn_blocking(move || self.thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the bare server panicked"))?
    }
}

/// What an echo lane answers, parsed and shaped by prq's own code, with nothing in
/// between: no queue, no worker, no socket.
async fn bare_chat(body: Bytes) -> Response {
    let req = match Request::parse_chat(&body) {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    let prompt = flatten(&req.messages);
    let asked = last_user_text(&prompt);
    let script = match Directives::parse(asked) {
        Ok(script) => script,
        Err(e) => return ApiError::invalid(e).into_response(),
    };
    let pieces: Vec<String> = std::iter::once(asked.to_string())
        .chain((0..script.tokens).map(answer_piece))
        .collect();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let shape = Shape {
        kind: Kind::Chat,
        id: "chatcmpl-bare",
        created,
        model: &req.model,
    };
    if req.stream {
        let chunks = shape
            .role_chunk()
            .into_iter()
            .chain(pieces.iter().filter_map(|p| shape.text_chunk(p, false)))
            .chain([shape.finish_chunk(false, None)]);
        let events: Vec<Result<Event, Infallible>> = chunks
            .map(|c| Ok(Event::default().data(c.to_string())))
            .chain([Ok(Event::default().data("[DONE]"))])
            .collect();
        Sse::new(futures::stream::iter(events)).into_response()
    } else {
        let answer = pieces.concat();
        let usage = usage(req.prompt_chars(), answer.chars().count());
        Json(shape.complete("", &answer, &[], usage)).into_response()
    }
}
