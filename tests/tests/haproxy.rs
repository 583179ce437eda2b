//! Several hosts behind a load balancer: Debian's HAProxy, run with `contrib/haproxy.cfg`
//! (only its addresses rewritten), in front of two prq daemons on their own homes, one
//! sandbox lane each. With one host's browser killed, HAProxy takes the host out within
//! 2 s and no client request fails (the refused ones are retried on the other host);
//! `prq start` brings it back; `prq drain` moves its traffic to the other with no failed
//! request. HAProxy's state is read from its stats socket (`show stat`), not guessed by
//! sleeping. `scripts/install-deps.sh --test` installs HAProxy.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use prq_tests::{config, signal, Prq, Streamed};
use serde_json::json;

const BACKEND: &str = "prq_hosts";
/// The bound: a host whose runtime stopped is out of rotation within this.
const TAKEN_OUT: Duration = Duration::from_secs(2);
/// Bound for what waits on HAProxy's checks (rise 2 at fastinter) or a lane start.
const SETTLES: Duration = Duration::from_secs(30);

fn haproxy_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("haproxy"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/haproxy")])
        .find(|p| p.exists())
        .expect("no haproxy: run `bash scripts/install-deps.sh --test` (apt-get install haproxy)")
}

/// A running HAProxy; dropping it kills it.
struct Haproxy {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    url: String,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rewrites `contrib/haproxy.cfg` for this test: its own socket, a free port, loopback
/// servers, logs to stderr. Each rewrite must find its line, so the example cannot drift
/// away from what is tested.
fn haproxy_config(dir: &Path, port: u16, servers: &[(&str, &str)]) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/haproxy.cfg");
    let mut cfg = std::fs::read_to_string(&example).expect("contrib/haproxy.cfg");
    let mut rewrite = |from: &str, to: String| {
        assert!(cfg.contains(from), "contrib/haproxy.cfg has no {from:?}");
        cfg = cfg.replace(from, &to);
    };
    rewrite(
        "stats socket /run/haproxy/prq.sock",
        format!("stats socket {}", dir.join("haproxy.sock").display()),
    );
    rewrite("log /dev/log local0", "log stderr format raw local0".into());
    rewrite("bind :8765", format!("bind 127.0.0.1:{port}"));
    let lines: String = servers
        .iter()
        .map(|(name, addr)| format!("    server {name} {addr}\n"))
        .collect();
    rewrite("    server host1 10.0.0.11:8765\n", lines);
    rewrite("    server host2 10.0.0.12:8765\n", String::new());
    rewrite("    server host3 10.0.0.13:8765\n", String::new());
    cfg
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Haproxy {
    fn start(dir: &Path, servers: &[(&str, &str)]) -> Self {
        let port = free_port();
        let cfg_path = dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, haproxy_config(dir, port, servers)).unwrap();
        let log = dir.join("haproxy.log");
        let child = Command::new(haproxy_bin())
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start haproxy");
        let haproxy = Self {
            child,
            socket: dir.join("haproxy.sock"),
            log,
            url: format!("http://127.0.0.1:{port}"),
        };
        haproxy.until(SETTLES, "its stats socket answers", |_| true);
        haproxy
    }

    /// One command on the stats socket (HAProxy answers it and closes).
    fn command(&self, cmd: &str) -> Option<String> {
        let mut s = UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("{cmd}\n").as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// `show stat` for the backend's servers: name → (column → value).
    fn servers(&self) -> Option<HashMap<String, HashMap<String, String>>> {
        let text = self.command("show stat")?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let mut servers = HashMap::new();
        for line in lines {
            let row: HashMap<String, String> = header
                .iter()
                .zip(line.split(','))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let is_server = row.get("pxname").map(String::as_str) == Some(BACKEND)
                && !matches!(
                    row.get("svname").map(String::as_str),
                    Some("BACKEND" | "FRONTEND")
                );
            if is_server {
                servers.insert(row["svname"].clone(), row);
            }
        }
        Some(servers)
    }

    /// A counter column of one server.
    fn counter(&self, server: &str, column: &str) -> u64 {
        self.servers()
            .and_then(|s| s.get(server).and_then(|r| r[column].parse().ok()))
            .unwrap_or(0)
    }

    /// Polls the stats socket every 20 ms until `cond` holds; panics with HAProxy's
    /// log after `limit`. Returns how long it took.
    fn until(
        &self,
        limit: Duration,
        what: &str,
        cond: impl Fn(&HashMap<String, HashMap<String, String>>) -> bool,
    ) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.servers().is_some_and(|s| cond(&s)) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < limit,
                "HAProxy: {what} did not happen within {limit:?}; stats {:?}\n--- log ---\n{}",
                self.servers(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn until_status(&self, server: &str, status: &str) -> Duration {
        self.until(SETTLES, &format!("{server} {status}"), |s| {
            s.get(server).is_some_and(|r| r["status"] == status)
        })
    }
}

/// One prq host: a sandbox lane under the prefix every host serves.
fn host() -> Prq {
    let cfg = config("serial", &[("sandbox", "sandbox", "one")]).replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\ndrain_s = 2\nshutdown_grace_s = 60\n",
    );
    Prq::start(&cfg)
}

fn addr(prq: &Prq) -> String {
    prq.api.trim_start_matches("http://").to_string()
}

/// What clients of the balancer saw: each request's tag, and the failures.
#[derive(Default)]
struct Seen {
    ok: Vec<String>,
    failed: Vec<String>,
}

/// One request through HAProxy, streamed or not; `Err` with what went wrong.
async fn one_request(url: &str, tag: &str, stream: bool, answer: &str) -> Result<(), String> {
    let body = json!({
        "model": "sandbox-chat",
        "stream": stream,
        "messages": [{"role": "user", "content": format!("{tag}\nsandbox: {answer}")}],
    });
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{tag}: {e}"))?;
    if stream {
        let s = Streamed::read(r).await;
        if s.status == 200 && s.error.is_none() && s.done && s.answer.starts_with(tag) {
            return Ok(());
        }
        return Err(format!(
            "{tag}: status {} error {:?} done {}",
            s.status, s.error, s.done
        ));
    }
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    if status == 200 && text.starts_with(tag) {
        Ok(())
    } else {
        Err(format!("{tag}: status {status}: {v}"))
    }
}

/// Clients of the balancer sending requests one after another (streamed and not, in
/// turn) until [`Load::finish`].
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Seen>>,
    name: String,
}

impl Load {
    /// `clients` clients, each request tagged `name-cC-rN`, answered as `answer` says.
    fn start(url: &str, name: &str, clients: usize, answer: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                let (url, stop, answer) = (url.to_string(), stop.clone(), answer.to_string());
                let name = name.to_string();
                tokio::spawn(async move {
                    let mut seen = Seen::default();
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let tag = format!("{name}-c{c}-r{n}");
                        match one_request(&url, &tag, n % 2 == 0, &answer).await {
                            Ok(()) => seen.ok.push(tag),
                            Err(e) => seen.failed.push(e),
                        }
                    }
                    seen
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            name: name.to_string(),
        }
    }

    /// Stops sending, waits for the requests under way, and checks that none failed;
    /// returns the tags of the answered ones.
    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Seen::default();
        for t in self.tasks {
            let s = t.await.unwrap();
            all.ok.extend(s.ok);
            all.failed.extend(s.failed);
        }
        assert!(
            all.failed.is_empty(),
            "{}: requests failed: {:?}",
            self.name,
            all.failed
        );
        all.ok
    }
}

/// How many of `tags` each host's sandbox site served.
async fn served_by(host: &Prq, tags: &[String]) -> usize {
    let streams = host.sandbox_streams().await;
    tags.iter()
        .filter(|t| {
            streams.iter().any(|s| {
                s["prompt_head"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&format!("{t}\n")))
            })
        })
        .count()
}

/// Kills the host's browser and waits until its runtime has stopped.
fn kill_browser(host: &Prq) {
    let browser = host.lane("sandbox#1")["browser_pid"]
        .as_u64()
        .expect("browser pid");
    signal(browser, Signal::SIGKILL);
    assert!(
        prq_tests::wait_until(SETTLES, || host.status()["runtime"]["state"] == "stopped"),
        "the host's runtime stops when its browser dies"
    );
}

/// Waits until the host's sandbox site has served more than `before` streams.
async fn until_served(host: &Prq, before: usize) {
    let t0 = Instant::now();
    while host.sandbox_streams().await.len() <= before {
        assert!(t0.elapsed() < SETTLES, "the host serves nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn haproxy_takes_a_stopped_or_draining_host_out_and_no_request_fails() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(host);
        let b = s.spawn(host);
        (a.join().unwrap(), b.join().unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let lb = Haproxy::start(dir.path(), &[("host_a", &addr(&a)), ("host_b", &addr(&b))]);
    lb.until_status("host_a", "UP");
    lb.until_status("host_b", "UP");
    const SHORT: &str = "tokens=5 delay_ms=20";

    // Both hosts take requests.
    let load = Load::start(&lb.url, "warm", 2, SHORT);
    until_served(&a, 0).await;
    until_served(&b, 0).await;
    let ok = load.finish().await;
    assert!(served_by(&a, &ok).await > 0 && served_by(&b, &ok).await > 0);

    // Host A's browser dies while it has nothing in flight (a request generating in a
    // killed browser is lost whatever the balancer does): its runtime stops, and clients
    // send on while HAProxy has not noticed yet.
    let killed = Instant::now();
    kill_browser(&a);
    let load = Load::start(&lb.url, "kill", 2, SHORT);
    lb.until(TAKEN_OUT + SETTLES, "host_a DOWN", |s| {
        s["host_a"]["status"] == "DOWN"
    });
    let out_after = killed.elapsed();
    load.finish().await;
    assert!(
        out_after < TAKEN_OUT,
        "HAProxy took the stopped host out after {out_after:?}"
    );

    // `prq start` on A: HAProxy puts it back, and it takes requests again.
    a.restart_runtime();
    lb.until_status("host_a", "UP");
    let load = Load::start(&lb.url, "back", 2, SHORT);
    until_served(&a, a.sandbox_streams().await.len()).await;
    let ok = load.finish().await;
    assert!(served_by(&a, &ok).await > 0, "host A serves again");

    // The retry itself, without the health check's help: with A's check paused while it
    // is up, HAProxy keeps sending to A after its runtime stopped; A refuses (503 before
    // admission) and each refused request must be retried on B.
    assert!(lb.command("disable health prq_hosts/host_a").is_some());
    kill_browser(&a);
    let redispatched = lb.counter("host_a", "wredis");
    let load = Load::start(&lb.url, "retry", 2, "tokens=3 delay_ms=0");
    lb.until(SETTLES, "a request refused by host_a, retried", |s| {
        s["host_a"]["wredis"].parse::<u64>().unwrap_or(0) > redispatched
    });
    load.finish().await;
    assert!(lb.command("enable health prq_hosts/host_a").is_some());
    lb.until_status("host_a", "DOWN");
    a.restart_runtime();
    lb.until_status("host_a", "UP");

    // `prq drain` on A while clients send answers of about a second: what A admitted
    // finishes there, the rest goes to B, nothing fails.
    let load = Load::start(&lb.url, "drain", 3, "tokens=20 delay_ms=50");
    a.first_live("processing").await;
    let drained = tokio::task::spawn_blocking({
        let home = a.home().to_path_buf();
        move || {
            Command::new(prq_tests::prq_bin())
                .args(["drain", "--wait"])
                .env("PRQ_HOME", home)
                .output()
                .expect("prq drain")
        }
    });
    lb.until_status("host_a", "DOWN");
    let out = drained.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.status()["runtime"]["state"], "stopped");
    let served_a = a.sandbox_streams().await.len();
    // B alone now: a few more answers.
    until_served(&b, b.sandbox_streams().await.len() + 3).await;
    let ok = load.finish().await;
    assert_eq!(
        a.sandbox_streams().await.len(),
        served_a,
        "nothing reached A after its drain"
    );
    assert_eq!(
        served_by(&a, &ok).await + served_by(&b, &ok).await,
        ok.len(),
        "every answer came from one of the hosts"
    );
}
