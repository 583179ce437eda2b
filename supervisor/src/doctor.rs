//! `prq doctor [PREFIX] [--json]`: what each lane's chat page shows — per selector how
//! many elements match, whether it looks logged in, the thinking switch's state, its
//! URL and title — with an outline of its elements and a screenshot saved under
//! `PRQ_HOME/diagnostics/`. It loads the page and reads it; nothing is sent to the site.
//!
//! With a daemon running, each running lane's worker checks in a second tab of its own
//! browser (a lane's profile is open in its browser, and a profile can be open in one
//! browser at a time), so a generation in progress goes on. With none running, the
//! config's lanes are checked one after another, each by a short-lived `prq-worker
//! doctor` on the lane's profile.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use prq_protocol::control::{ControlRequest, ControlResponse, LaneDoctor};
use prq_protocol::worker::{BrowserRelease, PageReport, SelectorFound, TypeCheck};
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;

use crate::cli::{resolve_config, Client};
use crate::config::Config;
use crate::home::Home;
use crate::lanes::LaneTask;

/// How long one lane's check may take without a daemon: a browser launch, the page's
/// load, its elements' deadline and the screenshot, with room to spare.
const CHECK_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `prq doctor`; `Ok(false)` when a lane could not be checked.
pub async fn doctor(
    home: &Home,
    config: Option<PathBuf>,
    prefix: Option<&str>,
    json: bool,
    type_check: bool,
) -> anyhow::Result<bool> {
    let dir = home.diagnostics_dir();
    let lanes = match Client::connect(home).await? {
        Some(mut client) => {
            let request = ControlRequest::Doctor {
                prefix: prefix.map(str::to_owned),
                dir: dir.clone(),
                type_check,
            };
            match client.request(request).await? {
                ControlResponse::Doctor(lanes) => lanes,
                other => bail!("unexpected answer from the daemon: {other:?}"),
            }
        }
        None => {
            let config = match resolve_config(home, config)? {
                Some(path) => Config::load(&path)?,
                None => Config::builtin(),
            };
            without_daemon(home, &config, prefix, &dir, type_check).await?
        }
    };
    if lanes.is_empty() {
        bail!(
            "no lane has the prefix `{}`; `prq status` lists the lanes",
            prefix.unwrap_or_default()
        );
    }
    if json {
        let view = Report {
            lanes: lanes.iter().map(LaneView::from).collect(),
        };
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", render(&lanes));
    }
    Ok(lanes.iter().all(|l| l.report.is_ok()))
}

/// Checks the config's lanes (of `prefix`) one after another, each by a worker of its
/// own on the lane's profile.
async fn without_daemon(
    home: &Home,
    config: &Config,
    prefix: Option<&str>,
    dir: &Path,
    type_check: bool,
) -> anyhow::Result<Vec<LaneDoctor>> {
    let mut checked = Vec::new();
    for lane in config.lanes() {
        if prefix.is_some_and(|p| p != lane.prefix) {
            continue;
        }
        let report = match lane.provider.as_str() {
            "echo" => Err("an echo lane has no page to check".to_owned()),
            "sandbox" if lane.base_url.is_none() => {
                Err("the sandbox site runs inside prq: `prq start`, then `prq doctor`".to_owned())
            }
            _ => check(&lane.spec(config, home, None), dir, type_check).await,
        };
        checked.push(LaneDoctor {
            id: lane.id,
            provider: lane.provider,
            prefix: lane.prefix,
            account: lane.account,
            report,
        });
    }
    Ok(checked)
}

/// One lane's check by `prq-worker doctor`: the spec in on stdin, the report out on
/// stdout, a one-line error on stderr.
async fn check(
    spec: &prq_protocol::worker::LaneSpec,
    dir: &Path,
    type_check: bool,
) -> Result<PageReport, String> {
    let run = async {
        let exe = LaneTask::worker_exe();
        let mut worker = tokio::process::Command::new(&exe)
            .arg("doctor")
            .arg("--dir")
            .arg(dir)
            .args(type_check.then_some("--type-check"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        let mut stdin = worker.stdin.take().context("the worker's stdin")?;
        stdin.write_all(&serde_json::to_vec(spec)?).await?;
        drop(stdin);
        let out = worker.wait_with_output().await?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            bail!(
                "{}",
                last.unwrap_or("the check failed")
                    .trim_start_matches("error: ")
            );
        }
        let report: Result<PageReport, String> =
            serde_json::from_slice(&out.stdout).context("the worker's report does not parse")?;
        Ok::<_, anyhow::Error>(report)
    };
    match tokio::time::timeout(CHECK_DEADLINE, run).await {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("no answer within {} s", CHECK_DEADLINE.as_secs())),
    }
}

/// `prq doctor --json` (its keys are a contract).
#[derive(Serialize)]
struct Report<'a> {
    lanes: Vec<LaneView<'a>>,
}

#[derive(Serialize)]
struct LaneView<'a> {
    id: &'a str,
    provider: &'a str,
    prefix: &'a str,
    account: &'a str,
    url: Option<&'a str>,
    title: Option<&'a str>,
    logged_in: Option<bool>,
    thinking: Option<bool>,
    selectors: &'a [SelectorFound],
    outline: Option<&'a Path>,
    screenshot: Option<&'a Path>,
    problems: &'a [String],
    browser: Option<&'a BrowserRelease>,
    typing: Option<&'a TypeCheck>,
    /// Why the lane could not be checked at all.
    error: Option<&'a str>,
}

impl<'a> From<&'a LaneDoctor> for LaneView<'a> {
    fn from(lane: &'a LaneDoctor) -> Self {
        let report = lane.report.as_ref().ok();
        LaneView {
            id: &lane.id,
            provider: &lane.provider,
            prefix: &lane.prefix,
            account: &lane.account,
            url: report.map(|r| r.url.as_str()),
            title: report.map(|r| r.title.as_str()),
            logged_in: report.and_then(|r| r.logged_in),
            thinking: report.and_then(|r| r.thinking),
            selectors: report.map_or(&[], |r| &r.selectors),
            outline: report.and_then(|r| r.outline.as_deref()),
            screenshot: report.and_then(|r| r.screenshot.as_deref()),
            problems: report.map_or(&[], |r| &r.problems),
            browser: report.and_then(|r| r.release.as_ref()),
            typing: report.and_then(|r| r.typing.as_ref()),
            error: lane.report.as_ref().err().map(String::as_str),
        }
    }
}

fn yes_no(value: Option<bool>, yes: &str, no: &str) -> String {
    match value {
        Some(true) => yes.into(),
        Some(false) => no.into(),
        None => "-".into(),
    }
}

/// The report for a person: per lane, the page and each selector, with what to do.
pub fn render(lanes: &[LaneDoctor]) -> String {
    let mut out = String::new();
    for lane in lanes {
        out += &format!(
            "{} ({}, account {})\n",
            lane.id, lane.provider, lane.account
        );
        let report = match &lane.report {
            Ok(report) => report,
            Err(e) => {
                out += &format!("  not checked: {e}\n\n");
                continue;
            }
        };
        out += &format!("  page       {} — {:?}\n", report.url, report.title);
        out += &format!(
            "  logged in  {}\n",
            yes_no(report.logged_in, "yes", "NO: log in with `prq login`")
        );
        out += &format!("  thinking   {}\n", yes_no(report.thinking, "on", "off"));
        if let Some(release) = &report.release {
            out += &format!("  browser    Chromium {}\n", release.version);
            if let Some((from, at)) = &release.updated_from {
                let days = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |now| now.as_secs().saturating_sub(*at) / 86_400);
                out += &format!(
                    "  updated    from Chromium {from}, {days} day(s) ago: a new major version \
                     under this profile; if the site misbehaves since, check the selectors below\n"
                );
            }
        }
        for s in &report.selectors {
            let more = match s.alternatives.len() {
                1 => String::new(),
                n => format!(" (of {n} alternatives)"),
            };
            let flag = if s.found == 0 { "  <- none found" } else { "" };
            out += &format!(
                "  {:<16} {:>3}  {}{more}{flag}\n",
                s.name, s.found, s.selector
            );
        }
        for (what, path) in [
            ("outline", &report.outline),
            ("screenshot", &report.screenshot),
        ] {
            if let Some(path) = path {
                out += &format!("  {what:<10} {}\n", path.display());
            }
        }
        if let Some(typing) = &report.typing {
            let verdict = if typing.exact { "exact" } else { "DIFFERS" };
            out += &format!("  typing     {verdict}: {}\n", typing.detail);
        }
        for problem in &report.problems {
            out += &format!("  problem    {problem}\n");
        }
        out.push('\n');
    }
    out += "A selector that finds nothing is set under [lanes.selectors] (see the README); `logged_out` finds nothing on a logged-in page, as it should.\n";
    out
}
