//! The tools for a site that changed under a user: lanes that capture the site's
//! streams (`capture = true`) and `prq replay`, end to end through the real prq on a
//! sandbox lane in real Chromium.

use std::os::unix::fs::PermissionsExt;

use prq_protocol::script;
use prq_tests::{config, Prq};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn a_capturing_lane_keeps_its_streams_and_replay_gives_the_answer_back() {
    let mut c = config("serial", &[("sandbox", "cap", "a")]);
    c.push_str("capture = true\n");
    let prq = Prq::start(&c);
    let prompt = "Keep this.\nsandbox: tokens=6 think_tokens=3 delay_ms=1";
    let s = prq.chat_stream("cap-reasoner", prompt).await;
    assert_eq!(s.status, 200);
    let (reasoning, answer) = script::expected(prompt, true).unwrap();
    assert_eq!((&s.reasoning, &s.answer), (&reasoning, &answer));

    let dir = prq.home().join("captures");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the captures directory is private");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = files[0].to_str().unwrap();
    let text = std::fs::read_to_string(file).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["provider"], "sandbox");
    assert_eq!(header["path"], "/api/chat");
    assert!(header["content_type"]
        .as_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(!text.contains("ookie"), "no cookies or headers: {header}");

    let out = prq.cli(&["replay", file, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(replayed["provider"], "sandbox");
    assert_eq!(replayed["answer"], answer.as_str());
    assert_eq!(replayed["reasoning"], reasoning.as_str());
    assert_eq!(replayed["outcome"], "completed");

    let out = prq.cli(&["replay", file]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("outcome: completed") && shown.contains(&answer),
        "{shown}"
    );

    // Not a capture: one line that says so.
    let out = prq.cli(&["replay", prq.config_path.to_str().unwrap()]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("not a capture header"), "{error}");
    assert_eq!(error.trim().lines().count(), 1, "{error}");
}

fn lane_json<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id)
        .unwrap_or_else(|| panic!("no lane {id} in {report}"))
}

fn found(lane: &Value, name: &str) -> u64 {
    let selector = lane["selectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no selector {name} in {lane}"));
    assert!(selector["selector"].is_string(), "{selector}");
    selector["found"].as_u64().unwrap()
}

/// With prq running, each lane's worker checks its page in a second tab: the report
/// names every selector with what it finds, the page's URL, the thinking switch, and
/// the files it saved; the site sees no request for it.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_checks_each_running_lanes_page_and_saves_what_it_saw() {
    let prq = Prq::start(&config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    ));
    let out = prq.cli(&["doctor", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["lanes"].as_array().unwrap().len(), 2, "{report}");
    let alpha = lane_json(&report, "alpha#1");
    assert_eq!(alpha["provider"], "sandbox");
    assert!(
        alpha["url"]
            .as_str()
            .unwrap()
            .starts_with(&prq.sandbox_url()),
        "{alpha}"
    );
    assert_eq!(found(alpha, "prompt"), 1);
    assert_eq!(found(alpha, "send"), 1);
    // The upload control: the file input and its button; no file is shown uploaded.
    assert_eq!(found(alpha, "attach_input"), 1);
    assert_eq!(found(alpha, "attach_button"), 1);
    assert_eq!(found(alpha, "attach_done"), 0);
    assert_eq!(alpha["thinking"], false, "the switch is found, and off");
    assert!(alpha["logged_in"].is_null(), "the sandbox has no login");
    let diagnostics = prq.home().join("diagnostics");
    let mode = std::fs::metadata(&diagnostics)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    let screenshot = alpha["screenshot"].as_str().unwrap();
    assert!(std::fs::read(screenshot).unwrap().starts_with(b"\x89PNG"));
    let outline = std::fs::read_to_string(alpha["outline"].as_str().unwrap()).unwrap();
    assert!(outline.contains("textarea#prompt"), "{outline}");
    assert!(
        prq.sandbox_streams().await.is_empty(),
        "nothing was sent to the site"
    );

    // One prefix; the human form names each selector and says where the files are.
    let out = prq.cli(&["doctor", "beta"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("beta#1") && !shown.contains("alpha#1"),
        "{shown}"
    );
    assert!(
        shown.contains("prompt") && shown.contains("screenshot"),
        "{shown}"
    );

    // With --type-check, a probe is typed into the prompt box and read back exactly,
    // the box is emptied, and still nothing is sent.
    let out = prq.cli(&["doctor", "beta", "--type-check"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("typing     exact"), "{shown}");
    assert!(
        prq.sandbox_streams().await.is_empty(),
        "the type check sent nothing to the site"
    );

    // The lane still serves.
    let (status, _) = prq.chat("alpha-chat", "After the doctor").await;
    assert_eq!(status, 200);

    let out = prq.cli(&["doctor", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no lane has the prefix `nope`"));
}

/// With no daemon, the config's lanes are checked on their profiles by a short-lived
/// worker each; a page whose prompt box is not where the selector says shows as 0.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_without_a_daemon_checks_the_configs_lanes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, prq::sandbox::router()).await.unwrap();
    });
    let lanes = format!(
        "listen = \"127.0.0.1:0\"\n\
         [[lanes]]\nprovider = \"sandbox\"\nprefix = \"here\"\naccount = \"a\"\nbase_url = \"{site}\"\n\
         [[lanes]]\nprovider = \"sandbox\"\nprefix = \"moved\"\naccount = \"b\"\nbase_url = \"{site}\"\n\
         [lanes.selectors]\nprompt = [\"textarea#gone\", \"text=nowhere at all\"]\n"
    );
    let prq = Prq::new(&lanes);
    let config = prq.config_path.to_str().unwrap().to_owned();
    let out = prq.cli(&["doctor", "--json", "--config", &config]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let here = lane_json(&report, "here#1");
    assert_eq!(found(here, "prompt"), 1, "{here}");
    assert!(here["error"].is_null(), "{here}");
    let moved = lane_json(&report, "moved#1");
    assert_eq!(found(moved, "prompt"), 0, "{moved}");
    assert_eq!(
        moved["selectors"][0]["alternatives"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(out.status.success(), "every lane was checked");
    assert!(
        prq.processes().is_empty(),
        "no worker or browser is left running"
    );
    server.abort();
}

/// The Chromium on this machine, as `chromium --version` says it (`Chromium
/// 156.0.8078.129 built on Debian …`): its dotted number.
fn installed_chromium() -> String {
    let browser = std::env::var("PRQ_BROWSER").unwrap_or_else(|_| "chromium".into());
    let out = std::process::Command::new(browser)
        .arg("--version")
        .output()
        .expect("chromium --version");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.contains('.') && w.starts_with(|c: char| c.is_ascii_digit()))
        .expect("a version")
        .to_string()
}

/// A lane says which Chromium it runs (`prq status`, `prq doctor`). When the browser's
/// major version changed under its profile (a host's `apt upgrade`), the lane still
/// starts, logs the change once, and `prq doctor` reports it.
#[tokio::test(flavor = "multi_thread")]
async fn a_lane_names_its_browser_and_a_new_major_version_under_its_profile() {
    let prq = Prq::start(&config("serial", &[("sandbox", "alpha", "a")]));
    let installed = installed_chromium();
    let lane = prq.lane("alpha#1");
    assert_eq!(lane["presence"]["browser_version"], installed.as_str());
    assert_eq!(lane["presence"]["browser_updated_from"], Value::Null);
    let text = String::from_utf8(prq.cli(&["status"]).stdout).unwrap();
    assert!(text.contains(&format!("Chromium {installed}")), "{text}");

    // The profile last ran an older major version.
    assert!(prq.stop().status.success());
    let note = prq
        .home()
        .join("profiles/sandbox/a/prq-browser-release.json");
    let written: Value = serde_json::from_slice(&std::fs::read(&note).unwrap()).unwrap();
    assert_eq!(written["version"], installed.as_str());
    std::fs::write(&note, r#"{"version":"100.0.4896.1"}"#).unwrap();
    prq.restart_runtime();
    // A new daemon, on a new port.
    let prq = prq.with_api();
    let lane = prq.lane("alpha#1");
    assert_eq!(lane["presence"]["browser_version"], installed.as_str());
    assert_eq!(lane["presence"]["browser_updated_from"], "100.0.4896.1");
    let (status, body) = prq.chat("alpha-chat", "still answers").await;
    assert_eq!(status, 200, "{body}");

    let out = prq.cli(&["doctor", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let browser = &report["lanes"][0]["browser"];
    assert_eq!(browser["version"], installed.as_str(), "{report}");
    assert_eq!(browser["updated_from"][0], "100.0.4896.1", "{report}");
    let text = String::from_utf8(prq.cli(&["doctor"]).stdout).unwrap();
    assert!(
        text.contains("updated    from Chromium 100.0.4896.1"),
        "{text}"
    );

    // Started again on the same release: the change is not logged a second time.
    assert!(prq.stop().status.success());
    prq.restart_runtime();
    let logs = String::from_utf8(prq.cli(&["logs", "alpha#1", "-n", "100000"]).stdout).unwrap();
    let said = logs.matches("major version changed").count();
    assert_eq!(said, 1, "{logs}");
}
