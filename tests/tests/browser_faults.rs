//! A lane's browser under strain, end to end with real Chromium on the sandbox: a stop
//! that lands in a fast stream, a browser that freezes (SIGSTOP), and the browser's
//! DevTools endpoint, which no other local user may reach.

use std::collections::HashSet;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use prq_tests::{config, is_alive, signal, wait_until, Prq, Streamed};
use serde_json::Value;

fn one_lane(extra: &str) -> Prq {
    let cfg = config("serial", &[("sandbox", "alpha", "a")]).replace(
        "start_timeout_s = 60\n",
        &format!("start_timeout_s = 60\n{extra}"),
    );
    Prq::start(&cfg)
}

/// The lane's log lines that say how its page came back.
fn recovered(prq: &Prq) -> String {
    let log = std::fs::read_to_string(prq.home().join("logs/alpha-1.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("recover") || l.contains("takes requests again"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn error_type(s: &Streamed) -> Option<&str> {
    s.error.as_ref().and_then(|e| e["error"]["type"].as_str())
}

/// Starts a streaming request and waits until it is processing with some text out.
async fn generating(prq: &Prq, prompt: &str) -> (u64, reqwest::Response) {
    let r = prq.chat_request("alpha-chat", prompt, true).await;
    assert_eq!(r.status(), 200);
    let id = prq_tests::request_id(&r).expect("x-prq-request-id");
    prq.until_state(id, "processing").await;
    (id, r)
}

/// The record of request `id` once it has ended (bounded).
async fn ended(prq: &Prq, id: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let record = prq.record(id).await;
        if !matches!(record["state"].as_str(), Some("pending" | "processing")) {
            return record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "request {id} did not end: {record}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops land in fast streams (5000 words, no pause or 1–5 ms between them) and each
/// ends `request_stopped` with the lane idle and the runtime running — the stop is not
/// held up behind the flood of network events the worker is still reading, and the
/// supervisor does not give the lane up before the worker's own deadlines run out.
/// With the default `on_lane_crash = "stop"`, a lane given up would stop the runtime.
#[tokio::test(flavor = "multi_thread")]
async fn stopping_a_fast_stream_ends_it_stopped_and_the_lane_goes_on() {
    let prq = one_lane("");
    for delay in [0, 1, 5] {
        let prompt = format!("fast {delay}\nsandbox: tokens=5000 delay_ms={delay}");
        let (id, r) = generating(&prq, &prompt).await;
        let (status, body) = prq.post(&format!("/api/queue/{id}/stop")).await;
        assert_eq!(status, 200, "stop at delay_ms={delay}: {body}");
        let s = Streamed::read(r).await;
        assert_eq!(
            error_type(&s),
            Some("request_stopped"),
            "delay_ms={delay}: {:?}\n--- daemon log ---\n{}",
            s.error,
            prq.daemon_log()
        );
        assert_eq!(prq.record(id).await["state"], "stopped", "delay_ms={delay}");
        let status = prq.status();
        assert_eq!(status["runtime"]["state"], "running", "delay_ms={delay}");
        assert_eq!(prq.lane("alpha#1")["state"], "idle", "delay_ms={delay}");
    }
    // A client that goes away from a fast stream stops it the same way.
    let (id, r) = generating(&prq, "gone\nsandbox: tokens=5000 delay_ms=0").await;
    drop(r);
    assert_eq!(
        ended(&prq, id).await["state"],
        "stopped",
        "{}",
        prq.daemon_log()
    );
    let (status, body) = prq.chat("alpha-chat", "after\nsandbox: tokens=3").await;
    assert_eq!(status, 200, "the lane serves the next request: {body}");
    assert_eq!(prq.status()["runtime"]["state"], "running");
}

/// A browser that freezes (SIGSTOP: it neither dies nor answers) is taken as hung on the
/// worker's heartbeat — its request fails `lane_crashed` naming the hung browser, not
/// after the idle deadline (set here far beyond the read bound) — and the lane's
/// policy applies: with `restart`, the lane comes back and serves the next request.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_browser_is_found_on_the_heartbeat_and_the_lane_restarts() {
    let prq = one_lane("on_lane_crash = \"restart\"\n[deadlines]\nidle_s = 600\n");
    let browser = prq.lane("alpha#1")["browser_pid"]
        .as_u64()
        .expect("browser_pid");
    let (_, r) = generating(&prq, "frozen\nsandbox: tokens=50 hang_at=3").await;
    let _thawed_at_the_end = Frozen(browser);
    signal(browser, Signal::SIGSTOP);
    // Far under the idle deadline: a request that waited for it fails the test here.
    let s = tokio::time::timeout(Duration::from_secs(60), Streamed::read(r))
        .await
        .expect("the request ends long before its idle deadline");
    let error = &s.error.as_ref().expect("an error")["error"];
    assert_eq!(error["type"], "lane_crashed", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("hung"), "{message}");
    // The policy: the lane restarts with a new browser and serves.
    assert!(
        wait_until(Duration::from_secs(60), || {
            let lane = prq.lane("alpha#1");
            lane["state"] == "idle" && lane["browser_pid"].as_u64() != Some(browser)
        }),
        "the lane came back: {}",
        prq.lane("alpha#1")
    );
    assert!(!is_alive(browser as u32), "the frozen browser is gone");
    let (status, body) = prq.chat("alpha-chat", "after\nsandbox: tokens=3").await;
    assert_eq!(status, 200, "{body}");
}

/// Lets a stopped browser go on and ends it, whatever the test did.
struct Frozen(u64);

impl Drop for Frozen {
    fn drop(&mut self) {
        if is_alive(self.0 as u32) {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
            let _ = nix::sys::signal::kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }
}

/// Nobody but the lane's own worker can drive its browser: no process of the lane (its
/// worker, its browser and the browser's helpers) listens on a TCP port that answers
/// another local user. The probe runs as `nobody` against every listening socket those
/// processes hold, after proving on a listener of the test's own that it would see one.
#[tokio::test(flavor = "multi_thread")]
async fn no_other_local_user_can_reach_the_browsers_devtools() {
    let control = answering_listener();
    assert!(
        listeners(&[std::process::id()]).contains(&control),
        "the scan finds a listener"
    );
    assert!(
        answers_as_nobody(control),
        "the probe sees a listener that answers"
    );

    let prq = one_lane("");
    let worker = prq.lane("alpha#1")["worker_pid"]
        .as_u64()
        .expect("worker_pid") as u32;
    let lane = prq::procinfo::group_members(worker);
    assert!(
        lane.len() > 2,
        "the worker, its browser and its helpers: {lane:?}"
    );
    // The lane works over whatever connection it has.
    let (status, body) = prq
        .chat("alpha-chat", "over the pipe\nsandbox: tokens=3")
        .await;
    assert_eq!(status, 200, "{body}");
    let open: Vec<_> = listeners(&lane)
        .into_iter()
        .filter(|&addr| answers_as_nobody(addr))
        .collect();
    assert!(
        open.is_empty(),
        "another user reaches the lane's processes at {open:?}"
    );
}

/// A loopback listener that answers every connection with a small HTTP response.
fn answering_listener() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        }
    });
    addr
}

/// Whether an HTTP request for `/json/version` at `addr`, made as user and group 65534
/// (`nobody`), gets any answer. Not run as root, the test cannot change users and asks
/// as itself, which no listener of the lane may answer either.
fn answers_as_nobody(addr: SocketAddr) -> bool {
    let url = format!("http://{addr}/json/version");
    let mut probe = match nix::unistd::geteuid().is_root() {
        true => {
            let mut setpriv = std::process::Command::new("setpriv");
            setpriv.args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl"]);
            setpriv
        }
        false => std::process::Command::new("curl"),
    };
    let out = probe
        .args(["--silent", "--max-time", "5", "--output", "/dev/null"])
        .args(["--write-out", "%{http_code}", &url])
        .output()
        .expect("setpriv and curl (scripts/install-deps.sh --test installs them)");
    let code = String::from_utf8_lossy(&out.stdout);
    eprintln!("probe {url} as nobody: {code} ({})", out.status);
    code.trim() != "000" && !code.trim().is_empty()
}

/// The addresses of the TCP sockets in LISTEN state that `pids` hold, from the socket
/// inodes of their descriptors and `/proc/net/tcp{,6}`.
fn listeners(pids: &[u32]) -> Vec<SocketAddr> {
    let inodes: HashSet<String> = pids
        .iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(&"0A"), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if inodes.contains(*inode) {
                found.push(proc_net_addr(local));
            }
        }
    }
    found
}

/// A `/proc/net/tcp{,6}` address (`0100007F:1F90`: the IP as hex of its bytes in host
/// order, the port big-endian hex). A wildcard address is probed on loopback.
fn proc_net_addr(field: &str) -> SocketAddr {
    let (ip, port) = field.split_once(':').expect("ip:port");
    let port = u16::from_str_radix(port, 16).expect("hex port");
    let bytes: Vec<u8> = (0..ip.len())
        .step_by(8)
        .flat_map(|i| {
            u32::from_str_radix(&ip[i..i + 8], 16)
                .expect("hex address")
                .to_ne_bytes()
        })
        .collect();
    let ip: IpAddr = match bytes.len() {
        4 => Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap()).into(),
        _ => Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap()).into(),
    };
    let ip = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, port)
}

/// The Stop-then-send of a SillyTavern user: a reading client's fast stream (5000 words,
/// no pause) stopped after 2 s, then three requests at once, one after another. Each is
/// answered in full and on time: the lane takes none of them before its page answers.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_stopped_fast_stream_the_next_requests_are_answered_in_full() {
    let prq = one_lane("");
    let r = prq
        .chat_request(
            "alpha-chat",
            "runaway\nsandbox: tokens=5000 delay_ms=0",
            true,
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = prq_tests::request_id(&r).expect("x-prq-request-id");
    let reading = tokio::spawn(Streamed::read(r));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = prq.post(&format!("/api/queue/{id}/stop")).await;
    let stopped_at = std::time::Instant::now();
    eprintln!("stop: {status} {body}");
    let s = reading.await.unwrap();
    eprintln!(
        "TIMING the stopped request ended {:?} after its stop ({:?}, {} answer bytes)",
        stopped_at.elapsed(),
        error_type(&s),
        s.answer.len()
    );
    eprintln!("{}", recovered(&prq));
    for i in 0..3 {
        let prompt = format!("next {i}\nsandbox: tokens=20 delay_ms=5");
        let started = std::time::Instant::now();
        let s = prq.chat_stream("alpha-chat", &prompt).await;
        let took = started.elapsed();
        eprintln!("TIMING request {i} took {took:?}: {:?}", s.error);
        let (_, want) = prq_protocol::script::expected(&prompt, false).unwrap();
        assert_eq!(
            s.answer,
            want,
            "request {i} answered in full: {:?}\n--- daemon log ---\n{}",
            s.error,
            prq.daemon_log()
        );
        assert!(took < Duration::from_secs(15), "request {i} took {took:?}");
    }
}

/// A page that hangs its main thread after a stop (`sandbox: busy_ms`, far longer than
/// a CDP deadline), with a request waiting behind it: the lane shows `recovering`, the
/// waiting request is sent only once the page answers again, and it is answered in
/// full; the lane is idle after and the runtime never stopped.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_hung_after_a_stop_is_recovered_before_the_next_request() {
    let prq = one_lane("");
    let (id, r) = generating(&prq, "hang\nsandbox: tokens=2000 delay_ms=20 busy_ms=60000").await;
    let waiting = "waiting\nsandbox: tokens=10 delay_ms=5";
    let behind = prq.chat_request("alpha-chat", waiting, true).await;
    assert_eq!(behind.status(), 200);
    let behind = tokio::spawn(Streamed::read(behind));
    let waiting_id = prq.first_live("pending").await;
    let (status, body) = prq.post(&format!("/api/queue/{id}/stop")).await;
    assert_eq!(status, 200, "{body}");
    let stopped = Streamed::read(r).await;
    assert_eq!(error_type(&stopped), Some("request_stopped"));
    let started = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || prq.lane("alpha#1")["state"]
            == "recovering"),
        "the lane shows recovering: {}",
        prq.lane("alpha#1")
    );
    assert!(
        prq.metrics_text()
            .await
            .contains("prq_lane_state{lane=\"alpha#1\",prefix=\"alpha\",state=\"recovering\"} 1"),
        "/metrics shows it too"
    );
    assert_eq!(
        prq.record(waiting_id).await["state"],
        "pending",
        "the request behind waits while the page is busy"
    );
    let s = tokio::time::timeout(Duration::from_secs(90), behind)
        .await
        .expect("the waiting request ends")
        .unwrap();
    eprintln!(
        "TIMING the waiting request ended {:?} after the stop",
        started.elapsed()
    );
    eprintln!("{}", recovered(&prq));
    let (_, want) = prq_protocol::script::expected(waiting, false).unwrap();
    assert_eq!(s.answer, want, "{:?}\n{}", s.error, prq.daemon_log());
    assert_eq!(prq.lane("alpha#1")["state"], "idle");
    assert_eq!(prq.status()["runtime"]["state"], "running");
}
