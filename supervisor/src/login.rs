//! `prq login <prefix> [--account NAME] [--import-cookies FILE]`: logs a lane's account
//! in, once, in the lane's own browser profile (`PRQ_HOME/profiles/<provider>/<account>`),
//! where the lane's headless browser finds the login on every start. With a display, a
//! visible browser opens on the profile for a person to log in; on a server without
//! one, a cookie export from a logged-in browser is loaded into it. The browser work is
//! done by hidden `prq-worker` subcommands, so that this binary needs no browser code.
//! With `--panel`, it prints the URL of the running lane's login view instead
//! (`remote_login.rs`): a person on another machine logs in through the lane's own
//! browser.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::cli::{self, Client};
use prq_protocol::provider::Provider;

use crate::config::Config;
use crate::home::Home;
use crate::lanes::LaneTask;

/// Providers whose lanes have no account to log in.
const NO_LOGIN: [&str; 2] = [Provider::Echo.name(), Provider::Sandbox.name()];

/// Whose login: the profile of one (provider, account).
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub provider: String,
    pub account: String,
    /// The lane's chat page, when its config moves it.
    pub base_url: Option<String>,
}

/// `prq login`.
pub async fn login(
    home: &Home,
    config: Option<PathBuf>,
    prefix: &str,
    account: Option<&str>,
    import_cookies: Option<&Path>,
) -> anyhow::Result<()> {
    let config = match cli::resolve_config(home, config)? {
        Some(path) => Config::load(&path)?,
        None => Config::builtin(),
    };
    let target = target(&config, prefix, account)?;
    refuse_if_running(home, &target).await?;
    let profile = home.profile_dir(&target.provider, &target.account);
    let mut worker = Command::new(LaneTask::worker_exe());
    match import_cookies {
        Some(file) => {
            let file = std::path::absolute(file)?;
            worker.arg("import-cookies").arg("--file").arg(file);
        }
        None => {
            if !has_display() {
                bail!("{}", no_display(prefix, account));
            }
            worker
                .args(["login-window", "--provider", &target.provider])
                .args(target.base_url.iter().flat_map(|url| ["--url", url]));
        }
    }
    worker.arg("--profile").arg(&profile);
    if let Some(browser) = &config.browser {
        worker.arg("--browser").arg(browser);
    }
    let status = worker
        .status()
        .with_context(|| format!("cannot run {}", LaneTask::worker_exe().display()))?;
    if !status.success() {
        bail!("logging in to {} did not finish", target.provider);
    }
    println!(
        "Next: `prq start`; `prq status` then shows whether each lane's page is logged in (LOGGED-IN)."
    );
    Ok(())
}

/// `prq login PREFIX --panel`: the URL of the running lane's login view in the panel,
/// where a person on another machine logs the lane in through its own browser.
pub async fn panel(home: &Home, prefix: &str, account: Option<&str>) -> anyhow::Result<()> {
    let Some(mut client) = Client::connect(home).await? else {
        bail!("prq is not running: the login view is the running lane's page; run `prq start`, then this again");
    };
    let status = client.status().await?;
    let lanes: Vec<_> = status
        .lanes
        .iter()
        .filter(|l| l.prefix == prefix && account.is_none_or(|a| l.account == a))
        .collect();
    let lane = match lanes.as_slice() {
        [] => {
            let mut prefixes: Vec<&str> = status.lanes.iter().map(|l| l.prefix.as_str()).collect();
            prefixes.dedup();
            bail!(
                "no running lane has the prefix `{prefix}`{} (the lanes' prefixes: {})",
                account.map_or(String::new(), |a| format!(" and account `{a}`")),
                prefixes.join(", ")
            );
        }
        [lane] => lane,
        lanes => {
            let accounts: Vec<_> = lanes.iter().map(|l| l.account.as_str()).collect();
            bail!(
                "the lanes of `{prefix}` use several accounts ({}): say which with --account",
                accounts.join(", ")
            );
        }
    };
    if lane.provider == Provider::Echo.name() {
        bail!(
            "lane {} is an echo lane: it runs no browser, so there is nothing to log in to",
            lane.id
        );
    }
    println!(
        "{}",
        crate::remote_login::view_url(&status.panel_url, &lane.id)
    );
    eprintln!(
        "Open it in a browser that reaches this daemon: with an admin_key set, log in to the panel with it first; without one the panel answers loopback only (from another machine: `ssh -L {port}:127.0.0.1:{port} this-host`, then open it there). Lane {id} takes no requests while the view is open.",
        port = status.panel_url.rsplit(':').next().unwrap_or("8765").trim_end_matches('/'),
        id = lane.id,
    );
    Ok(())
}

/// The profile `prefix` (and `account`) name: a configured lane's, or, for a prefix that
/// no lane has yet, the provider of that name's (so that one can log in before
/// configuring the lane).
pub fn target(config: &Config, prefix: &str, account: Option<&str>) -> anyhow::Result<Target> {
    let lanes: Vec<_> = config
        .lanes()
        .into_iter()
        .filter(|l| l.prefix == prefix)
        .collect();
    let target = match (lanes.as_slice(), account) {
        ([], _) if Provider::from_name(prefix).is_some() => Target {
            provider: prefix.to_owned(),
            account: account.unwrap_or("default").to_owned(),
            base_url: None,
        },
        ([], _) => {
            let mut prefixes: Vec<String> = Vec::new();
            for lane in config.lanes() {
                if !prefixes.contains(&lane.prefix) {
                    prefixes.push(lane.prefix);
                }
            }
            bail!(
                "no lane has the prefix `{prefix}` (the config's prefixes: {}), and it names no provider (providers: {})",
                prefixes.join(", "),
                Provider::names()
            );
        }
        ([lane], None) => Target {
            provider: lane.provider.clone(),
            account: lane.account.clone(),
            base_url: lane.base_url.clone(),
        },
        (lanes, None) => {
            let accounts: Vec<_> = lanes.iter().map(|l| l.account.as_str()).collect();
            bail!(
                "the lanes of `{prefix}` use several accounts ({}): say which with --account",
                accounts.join(", ")
            );
        }
        (lanes, Some(account)) => {
            let lane = lanes
                .iter()
                .find(|l| l.account == account)
                .unwrap_or(&lanes[0]);
            Target {
                provider: lane.provider.clone(),
                account: account.to_owned(),
                base_url: lane.base_url.clone(),
            }
        }
    };
    if NO_LOGIN.contains(&target.provider.as_str()) {
        bail!("the {} provider has no account to log in", target.provider);
    }
    Ok(target)
}

/// A running lane holds its profile (a profile opens in one browser at a time).
async fn refuse_if_running(home: &Home, target: &Target) -> anyhow::Result<()> {
    let Some(mut client) = Client::connect(home).await? else {
        return Ok(());
    };
    let status = client.status().await?;
    if let Some(lane) = status.lanes.iter().find(|l| {
        l.provider == target.provider && l.account == target.account && l.worker_pid.is_some()
    }) {
        bail!(
            "prq's lane {} is running on this account's browser profile, which one browser at a time can use: run `prq stop`, then log in, then `prq start`",
            lane.id
        );
    }
    Ok(())
}

fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
}

/// What to do without a display.
fn no_display(prefix: &str, account: Option<&str>) -> String {
    let account = account.map_or(String::new(), |a| format!(" --account {a}"));
    format!(
        "there is no display here to open a browser window on (neither DISPLAY nor WAYLAND_DISPLAY is set). Either:\n  - export the site's cookies from a browser where you are logged in (a cookie-export browser extension, as JSON) and run `prq login {prefix}{account} --import-cookies FILE`; or\n  - run `prq login {prefix}{account}` where there is a display: a desktop session, or over SSH with X forwarding (`ssh -X`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    const TWO_ACCOUNTS: &str = r#"
[[lanes]]
provider = "deepseek"
prefix = "ds"
account = "work"
base_url = "https://chat.example/"

[[lanes]]
provider = "deepseek"
prefix = "ds"
account = "home"

[[lanes]]
provider = "sandbox"
"#;

    #[test]
    fn a_lane_by_its_prefix_and_account() {
        let c = config(TWO_ACCOUNTS);
        let work = target(&c, "ds", Some("work")).unwrap();
        assert_eq!(
            work,
            Target {
                provider: "deepseek".into(),
                account: "work".into(),
                base_url: Some("https://chat.example/".into()),
            }
        );
        let e = target(&c, "ds", None).unwrap_err().to_string();
        assert!(e.contains("--account") && e.contains("work, home"), "{e}");
        // A new account for the provider the prefix's lanes use.
        assert_eq!(target(&c, "ds", Some("third")).unwrap().account, "third");
    }

    #[test]
    fn a_provider_before_any_lane_of_it() {
        let c = config(TWO_ACCOUNTS);
        let t = target(&c, "qwen", None).unwrap();
        assert_eq!(
            (t.provider.as_str(), t.account.as_str()),
            ("qwen", "default")
        );
        let e = target(&c, "nope", None).unwrap_err().to_string();
        assert!(
            e.contains("prefixes: ds, sandbox") && e.contains("aistudio"),
            "{e}"
        );
    }

    #[test]
    fn lanes_without_accounts_have_nothing_to_log_in() {
        let e = target(&config(TWO_ACCOUNTS), "sandbox", None).unwrap_err();
        assert!(e.to_string().contains("no account"), "{e}");
    }

    #[test]
    fn without_a_display_it_says_what_to_do() {
        let text = no_display("ds", Some("work"));
        assert!(
            text.contains("prq login ds --account work --import-cookies FILE"),
            "{text}"
        );
        assert!(text.contains("ssh -X"), "{text}");
    }
}
