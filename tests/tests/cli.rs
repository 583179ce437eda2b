//! The CLI contract on echo lanes (no browser): start, status, stop, homes, configs.

use std::time::Duration;

use prq_tests::{config, is_alive, wait_until, Prq};

fn echo_lanes() -> String {
    config("concurrent", &[("echo", "a", "x"), ("echo", "b", "y")])
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn start_prints_the_urls_and_a_second_start_says_already_running() {
    let prq = Prq::new(&echo_lanes());
    let cfg = prq.config_path.to_str().unwrap().to_string();
    let out = prq.cli(&["start", "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("/v1") && text.contains("Panel"), "{text}");
    let pid = prq.status()["pid"].as_u64().unwrap();

    let again = prq.cli(&["start", "--config", &cfg]);
    assert!(again.status.success());
    assert!(
        stdout(&again).contains("already running"),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        prq.status()["pid"].as_u64().unwrap(),
        pid,
        "no second daemon"
    );
}

#[test]
fn status_without_json_is_a_table_and_without_a_daemon_says_how_to_start() {
    let prq = Prq::new(&echo_lanes());
    let out = prq.cli(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("prq start"), "{}", stderr(&out));

    let prq = Prq::start(&echo_lanes());
    let out = prq.cli(&["status"]);
    let table = stdout(&out);
    assert!(
        table.contains("LANE") && table.contains("a#1") && table.contains("idle"),
        "{table}"
    );
}

#[test]
fn a_bad_config_is_refused_naming_the_key_and_line() {
    let prq =
        Prq::new("listen = \"127.0.0.1:0\"\n[[lanes]]\nprovider = \"echo\"\nflavour = \"mint\"\n");
    let out = prq.cli(&["start", "--config", prq.config_path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("flavour") && err.contains("line 4"), "{err}");
    assert!(prq.processes().is_empty(), "nothing was started");
}

#[test]
fn a_port_in_use_is_named_with_the_fix() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let prq = Prq::new(
        &echo_lanes().replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\"")),
    );
    let out = prq.cli(&["start", "--config", prq.config_path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&addr.to_string()) && err.contains("in use") && err.contains("`listen`"),
        "{err}"
    );
    assert!(prq.processes().is_empty(), "nothing was left running");
    // Tried again: the answer is about this attempt, not a repeat of the last one's log.
    let out = prq.cli(&["start", "--config", prq.config_path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(err.matches("in use").count(), 1, "{err}");
}

#[test]
fn two_homes_run_side_by_side() {
    let one = Prq::start(&echo_lanes());
    let two = Prq::start(&echo_lanes());
    let (s1, s2) = (one.status(), two.status());
    assert_ne!(s1["pid"], s2["pid"]);
    assert_ne!(s1["api_url"], s2["api_url"]);
    assert_eq!(s1["runtime"]["state"], "running");
    assert_eq!(s2["runtime"]["state"], "running");
}

#[test]
fn the_socket_directory_and_sockets_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let prq = Prq::start(&echo_lanes());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&prq.home().join("run")), 0o700);
    assert_eq!(mode(&prq.home().join("run/control.sock")), 0o600);
    assert_eq!(mode(&prq.home().join("run/lanes.sock")), 0o600);
}

#[test]
fn a_killed_daemon_leaves_nothing_and_the_next_start_replaces_its_files() {
    let prq = Prq::start(&echo_lanes());
    let status = prq.status();
    let daemon = status["pid"].as_u64().unwrap() as i32;
    let workers: Vec<u32> = status["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["worker_pid"].as_u64().unwrap() as u32)
        .collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !is_alive(
        daemon as u32
    )));
    // Its pid file and sockets are still there, stale.
    assert!(prq.home().join("prq.pid").exists());
    assert!(prq.home().join("run/control.sock").exists());
    // Workers notice the daemon is gone and exit by themselves.
    assert!(
        wait_until(Duration::from_secs(5), || workers
            .iter()
            .all(|&p| !is_alive(p))),
        "workers exit after the daemon is killed"
    );

    let out = prq.cli(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a stale socket is not a running daemon"
    );
    let out = prq.cli(&["start", "--config", prq.config_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = prq.status();
    assert_eq!(s["runtime"]["state"], "running");
    assert_ne!(s["pid"].as_u64().unwrap() as i32, daemon);
}

#[test]
fn start_foreground_stops_gracefully_on_sigterm() {
    let prq = Prq::new(&echo_lanes());
    let mut child = prq.start_foreground();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!prq.home().join("run/control.sock").exists());
    assert!(!prq.home().join("prq.pid").exists());
    assert!(prq.processes().is_empty(), "{:?}", prq.processes());
}

/// Several `prq start` at once on one home: one daemon, one "started", the others
/// "already running", all succeed.
#[test]
fn racing_starts_start_one_daemon_and_exactly_one_says_started() {
    let prq = Prq::new(&echo_lanes());
    let cfg = prq.config_path.to_str().unwrap().to_string();
    let outs: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| prq.cli(&["start", "--config", &cfg])))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let said: Vec<String> = outs
        .iter()
        .map(|o| format!("{}{}", stdout(o), stderr(o)))
        .collect();
    assert!(outs.iter().all(|o| o.status.success()), "{said:#?}");
    let started = said.iter().filter(|t| t.contains("prq started")).count();
    let already = said
        .iter()
        .filter(|t| t.contains("already running"))
        .count();
    assert_eq!((started, already), (1, 3), "{said:#?}");
}
