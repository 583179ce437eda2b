//! Logs for a daemon that runs for months: files rotate by size with a bounded total and
//! no line lost or cut, `prq logs` reads them back in order (and follows them across a
//! rotation), `[logs] format = "json"` writes one object per line, and in the
//! foreground the lanes' lines go to standard error under their lane's name.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use prq_tests::{config, prq_bin, request_id, wait_until, Prq};
use serde_json::Value;

/// Small files, so that a few hundred requests rotate them several times.
const MAX_BYTES: u64 = 4096;
const KEEP: usize = 3;

fn rotating_config(format: &str) -> String {
    format!(
        "{}\n[logs]\nmax_bytes = {MAX_BYTES}\nkeep = {KEEP}\nformat = \"{format}\"\n",
        config("concurrent", &[("echo", "e", "a")])
    )
}

/// Starts prq with the worker's per-request lines (debug) on, so its lane log grows
/// with each request too.
fn start(format: &str) -> Prq {
    let prq = Prq::new(&rotating_config(format));
    let out = prq.cli_with_env(
        &["start", "--config", prq.config_path.to_str().unwrap()],
        &[("RUST_LOG", "info,prq_worker=debug")],
    );
    assert!(
        out.status.success(),
        "prq start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    prq.with_api()
}

/// Sends `n` echo requests one after another; their queue IDs in order.
async fn traffic(prq: &Prq, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = prq
            .chat_request("e-chat", "hello\nsandbox: tokens=3 delay_ms=0", false)
            .await;
        assert_eq!(r.status(), 200);
        ids.push(request_id(&r).expect("x-prq-request-id"));
        r.bytes().await.unwrap();
    }
    ids
}

fn logs(prq: &Prq, args: &[&str]) -> String {
    let out = prq.cli(&[&["logs"], args].concat());
    assert!(
        out.status.success(),
        "prq logs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The queue IDs of the "request ended" lines, in the order shown.
fn ended_ids(text: &str) -> Vec<u64> {
    text.lines()
        .filter(|l| l.contains("request ended"))
        .map(|l| {
            let at = l.find("request=").expect("request=") + "request=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// Every file of one log: the current one and at most KEEP rotated ones, each within
/// the bound and ending on a whole line.
fn check_bounded(logs_dir: &Path, file: &str) -> usize {
    let mut rotations = 0;
    for n in 1..=KEEP + 1 {
        if logs_dir.join(format!("{file}.{n}")).exists() {
            rotations = n;
        }
    }
    assert!(
        !logs_dir.join(format!("{file}.{}", KEEP + 1)).exists(),
        "more than {KEEP} rotated files of {file}"
    );
    let mut names = vec![file.to_string()];
    names.extend((1..=rotations).map(|n| format!("{file}.{n}")));
    for name in names {
        let text = std::fs::read_to_string(logs_dir.join(&name)).unwrap();
        assert!(
            text.len() as u64 <= MAX_BYTES,
            "{name} has {} bytes",
            text.len()
        );
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends mid-line"
        );
    }
    rotations
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_rotate_within_their_bound_and_read_back_whole_and_in_order() {
    let prq = start("text");
    let ids = traffic(&prq, 150).await;
    let dir = prq.home().join("logs");
    assert_eq!(
        check_bounded(&dir, "daemon.log"),
        KEEP,
        "the daemon log rotated"
    );
    assert_eq!(check_bounded(&dir, "e-1.log"), KEEP, "the lane log rotated");

    // What is kept is the newest lines: the last requests' lines, each once, in order,
    // none missing between the oldest kept and the last.
    let shown = logs(&prq, &[]);
    let ended = ended_ids(&shown);
    assert!(ended.len() > 10, "{shown}");
    assert_eq!(ended.last(), ids.last());
    let first = ids.iter().position(|id| *id == ended[0]).unwrap();
    assert_eq!(ended, ids[first..], "lines lost, doubled or out of order");
    for line in shown.lines() {
        assert!(
            line.starts_with("20") && line.contains('Z'),
            "a line not whole: {line:?}"
        );
    }

    // -n, a lane by prefix and by ID, one request's lines.
    let last = *ids.last().unwrap();
    assert_eq!(ended_ids(&logs(&prq, &["-n", "1"])), [last]);
    let lane = logs(&prq, &["e"]);
    assert_eq!(lane, logs(&prq, &["e#1"]));
    assert!(lane.contains(&format!("request={last}")), "{lane}");
    let about = logs(&prq, &["all", "--request", &last.to_string()]);
    assert!(
        about.contains("[daemon]") && about.contains("[e#1]"),
        "{about}"
    );
    assert!(
        about.lines().all(|l| l.contains(&last.to_string())),
        "{about}"
    );
    let unknown = prq.cli(&["logs", "nope"]);
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("e#1") && err.contains("nope"), "{err}");

    // With the daemon stopped, the logs still read, with the worker's last line.
    prq.stop();
    assert!(logs(&prq, &["--since", "1h"]).contains("daemon stopped"));
    let lane = logs(&prq, &["e", "-n", "3"]);
    assert!(lane.contains("prq_worker: exit"), "{lane}");
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_goes_on_across_a_rotation_without_losing_a_line() {
    let prq = start("text");
    let first = traffic(&prq, 1).await;
    // `-n 1` shows the last line (the first request's end) and then follows: once that
    // line is read, the follower is following.
    let mut follow = Command::new(prq_bin())
        .args(["logs", "-f", "-n", "1"])
        .env("PRQ_HOME", prq.home())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (following, started) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            text.push_str(&line);
            text.push('\n');
            let _ = following.send(());
        }
        text
    });
    started
        .recv_timeout(Duration::from_secs(30))
        .expect("prq logs -f printed the last line");
    assert!(!prq.home().join("logs/daemon.log.1").exists());
    let ids = traffic(&prq, 80).await;
    assert!(
        prq.home().join("logs/daemon.log.2").exists(),
        "the daemon log rotated (more than once) while followed"
    );
    let last = format!("request={}", ids.last().unwrap());
    let log = prq.home().join("logs/daemon.log");
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&last))
    }));
    // The follower looks every quarter second; give it a few looks, then end it.
    std::thread::sleep(Duration::from_secs(2));
    follow.kill().unwrap();
    follow.wait().unwrap();
    let text = reader.join().unwrap();
    assert_eq!(
        ended_ids(&text),
        [first, ids].concat(),
        "every request's line, once, in order"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line_with_lane_and_request() {
    let prq = start("json");
    let ids = traffic(&prq, 20).await;
    prq.stop();
    let dir = prq.home().join("logs");
    let mut ended = Vec::new();
    let mut lane_lines = 0;
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    // Oldest first: rotated files by falling number, then the current one.
    files.sort_by_key(|f| {
        let n: i64 = f.rsplit('.').next().unwrap().parse().unwrap_or(0);
        (!f.starts_with("daemon"), -n)
    });
    for file in &files {
        let file = file.as_str();
        for line in std::fs::read_to_string(dir.join(file)).unwrap().lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{file}: not one JSON object ({e}): {line}"));
            for key in [
                "time", "level", "target", "lane", "request", "message", "fields",
            ] {
                assert!(v.get(key).is_some(), "{file}: no {key:?} in {line}");
            }
            if v["message"] == "request ended" {
                assert_eq!(v["lane"], "e#1");
                ended.push(v["request"].as_u64().unwrap());
            }
            if file.starts_with("e-1.log") && v["request"].is_u64() {
                assert_eq!(v["lane"], "e#1", "{line}");
                lane_lines += 1;
            }
        }
    }
    assert_eq!(ended, ids);
    assert!(
        lane_lines >= ids.len(),
        "the worker's lines name lane and request"
    );
    // `prq logs` reads the JSON lines too.
    let last = ids.last().unwrap();
    let about: Vec<Value> = logs(&prq, &["--request", &last.to_string()])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!about.is_empty() && about.iter().all(|v| v["request"] == *last));
}

#[test]
fn in_the_foreground_lane_lines_go_to_stderr_under_the_lane_name() {
    let prq = Prq::new(&config("concurrent", &[("echo", "e", "a")]));
    let mut child = Command::new(prq_bin())
        .args([
            "start",
            "--foreground",
            "--config",
            prq.config_path.to_str().unwrap(),
        ])
        .env("PRQ_HOME", prq.home())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    assert!(wait_until(Duration::from_secs(30), || {
        let out = prq.cli(&["status", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .is_ok_and(|s| s["runtime"]["state"] == "running")
    }));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let text = reader.join().unwrap();
    assert!(text.contains("daemon up"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("[e#1] ") && l.contains("ready")),
        "{text}"
    );
    let files: Vec<_> = std::fs::read_dir(prq.home().join("logs"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        files.is_empty(),
        "no log files in the foreground: {files:?}"
    );
}
