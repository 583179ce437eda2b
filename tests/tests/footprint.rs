//! What a lane's browser costs, end to end with real Chromium: the processes a
//! `standard` and a `compact` lane's browser run, and `compact` and `lean` lanes
//! (Chromium's headless shell) answering, and crashing, like any other.

use nix::sys::signal::Signal;
use prq::procinfo::group_members;
use prq_protocol::script;
use prq_tests::{config, signal, Prq, Streamed};

/// Processes as a failure message names them.
fn listed<'a>(processes: impl IntoIterator<Item = &'a Process>) -> String {
    processes
        .into_iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One process of a lane's browser, from its command line.
#[derive(Debug)]
struct Process {
    pid: u32,
    /// Its `--type=` (`renderer`, `utility`, …); `browser` for the browser process.
    kind: String,
    /// The switches that say what a helper process is for (`--utility-sub-type=…`,
    /// `--top-chrome-webui`, `--extension-process`, …).
    role: Vec<String>,
}

impl Process {
    /// A renderer that shows the browser's own UI (a WebUI of the address bar, the tab
    /// strip, …) or an extension, not a page the lane opened.
    fn is_browser_ui_renderer(&self) -> bool {
        self.kind == "renderer" && !self.role.is_empty()
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.kind, self.pid)?;
        self.role.iter().try_for_each(|r| write!(f, " {r}"))
    }
}

/// The processes of a lane's browser (every member of the worker's process group but
/// the worker).
fn browser_processes(lane: &serde_json::Value) -> Vec<Process> {
    let worker = lane["worker_pid"].as_u64().expect("worker_pid") as u32;
    group_members(worker)
        .into_iter()
        .filter(|&p| p != worker)
        .filter_map(|pid| Some((pid, std::fs::read(format!("/proc/{pid}/cmdline")).ok()?)))
        .map(|(pid, cmdline)| {
            // Chromium rewrites its processes' command lines into one space-separated
            // string.
            let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
            let args: Vec<&str> = cmdline.split(['\0', ' ']).collect();
            let kind = args
                .iter()
                .find_map(|a| a.strip_prefix("--type="))
                .unwrap_or("browser")
                .to_string();
            let role = args
                .iter()
                .filter(|a| {
                    a.starts_with("--utility-sub-type=")
                        || a.starts_with("--top-chrome")
                        || a.starts_with("--extension-process")
                        || a.starts_with("--webui")
                })
                .map(|a| a.to_string())
                .collect();
            Process { pid, kind, role }
        })
        .collect()
}

/// A lane's browser runs one renderer, for the lane's own tab: no spare, no renderer of
/// a first tab nobody uses, and none for the browser's own UI, which a headless lane
/// never shows. When a Chromium update starts something new, the failure names it.
#[tokio::test(flavor = "multi_thread")]
async fn a_standard_lane_runs_one_renderer() {
    let prq = Prq::start(&config("serial", &[("sandbox", "alpha", "a")]));
    let prompt = "Small.\nsandbox: tokens=5 delay_ms=5";
    let (status, body) = prq.chat("alpha-chat", prompt).await;
    assert_eq!(status, 200, "{body}");
    let (_, expected) = script::expected(prompt, false).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], expected.as_str());

    let processes = browser_processes(&prq.lane("alpha#1"));
    let list = listed(&processes);
    eprintln!("alpha#1's browser: {list}");
    let ui: Vec<_> = processes
        .iter()
        .filter(|p| p.is_browser_ui_renderer())
        .collect();
    assert!(
        ui.is_empty(),
        "renderers for the browser's own UI, which a lane never shows (turn it off in \
         worker/src/footprint.rs): {}; all: {list}",
        listed(ui.iter().copied())
    );
    let pages = processes.iter().filter(|p| p.kind == "renderer").count();
    // Without `--no-startup-window` and the renderer limit there were four: the unused
    // first tab's, the lane's tab's, and a spare for each.
    assert_eq!(pages, 1, "renderers for pages, among: {list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lean_lane_runs_the_headless_shell_and_answers() {
    let cfg = config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    )
    .replace(
        "account = \"a\"\n",
        "account = \"a\"\nbrowser_profile = \"lean\"\n",
    );
    let prq = Prq::start(&cfg);
    let prompt = "Lean.\nsandbox: tokens=8 delay_ms=5";
    for model in ["alpha-chat", "beta-chat"] {
        let s = prq.chat_stream(model, prompt).await;
        let (_, expected) = script::expected(prompt, false).unwrap();
        assert_eq!(s.status, 200);
        assert!(s.error.is_none(), "{model}: {:?}", s.error);
        assert_eq!(s.answer, expected, "{model}");
    }
    let exe = |lane: &str| {
        let pid = prq.lane(lane)["browser_pid"].as_u64().expect("browser_pid");
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .expect("the browser's executable")
            .display()
            .to_string()
    };
    assert!(exe("alpha#1").contains("headless"), "{}", exe("alpha#1"));
    assert!(!exe("beta#1").contains("headless"), "{}", exe("beta#1"));
}

/// A `compact` lane runs the full browser with its network service in the browser
/// process: no network-service process of its own, and it answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_compact_lane_runs_fewer_processes_and_answers() {
    let cfg = config("serial", &[("sandbox", "alpha", "a")]).replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\nbrowser_profile = \"compact\"\n",
    );
    let prq = Prq::start(&cfg);
    let prompt = "Compact.\nsandbox: tokens=8 delay_ms=5";
    let s = prq.chat_stream("alpha-chat", prompt).await;
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(s.answer, script::expected(prompt, false).unwrap().1);
    let processes = browser_processes(&prq.lane("alpha#1"));
    let list = listed(&processes);
    assert!(
        !processes
            .iter()
            .any(|p| p.role.iter().any(|r| r.contains("NetworkService"))),
        "{list}"
    );
    assert_eq!(
        processes.iter().filter(|p| p.kind == "renderer").count(),
        1,
        "{list}"
    );
}

/// A smaller browser is still a browser of its own: when one lane's browser is killed,
/// its request fails with `lane_crashed` and the other lane streams its answer to the
/// end.
async fn a_killed_browser_ends_only_its_own_request(profile: &str) {
    let cfg = config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    )
    .replace(
        "start_timeout_s = 60\n",
        &format!(
            "start_timeout_s = 60\nbrowser_profile = \"{profile}\"\nheartbeat_timeout_ms = 60000\n"
        ),
    );
    let prq = Prq::start(&cfg);
    let long = "beta goes on\nsandbox: tokens=60 delay_ms=30";
    let beta = prq.chat_request("beta-chat", long, true).await;
    let alpha = prq
        .chat_request("alpha-chat", "alpha dies\nsandbox: hang_at=1", true)
        .await;
    let alpha_id = prq_tests::request_id(&alpha).unwrap();
    prq.until_state(alpha_id, "processing").await;
    let browser = prq.lane("alpha#1")["browser_pid"]
        .as_u64()
        .expect("browser_pid");
    signal(browser, Signal::SIGKILL);

    let a = Streamed::read(alpha).await;
    let error = a.error.expect("alpha's request fails");
    assert_eq!(error["error"]["type"], "lane_crashed", "{profile}: {error}");
    let b = Streamed::read(beta).await;
    assert!(b.error.is_none(), "{profile}: {:?}", b.error);
    assert_eq!(b.answer, script::expected(long, false).unwrap().1);
    assert_eq!(prq.lane("alpha#1")["state"], "crashed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_lean_browser_ends_only_its_own_request() {
    a_killed_browser_ends_only_its_own_request("lean").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_compact_browser_ends_only_its_own_request() {
    a_killed_browser_ends_only_its_own_request("compact").await;
}
