//! A headless Chromium that looks at the panel, for the panel's tests and its
//! screenshot tool (`src/bin/panel_screenshot.rs` includes this file): launched on a
//! temp profile, its DevTools handler on a task of its own, every call under a
//! deadline, and the browser closed — or killed — at the end.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures::StreamExt;
use serde_json::Value;
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// Deadline for each DevTools call: chromiumoxide's own does not fire once the browser
/// is gone (seen with chromiumoxide 0.9.1).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Chromium switches, without the `--` (chromiumoxide adds it).
const ARGS: [&str; 5] = [
    "disable-gpu",
    "disable-background-networking",
    "disable-component-update",
    "disable-sync",
    "no-first-run",
];

/// Runs one DevTools call under [`CALL_TIMEOUT`].
pub async fn cdp<T>(
    what: &str,
    call: impl Future<Output = chromiumoxide::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.with_context(|| format!("{what} failed")),
        Err(_) => bail!("{what}: no answer from the browser within {CALL_TIMEOUT:?}"),
    }
}

pub struct Headless {
    browser: Browser,
    handler: JoinHandle<()>,
    /// Kept for the browser's lifetime; removed on drop.
    _profile: TempDir,
}

impl Headless {
    /// Launches `PRQ_BROWSER`, else `/usr/bin/chromium`, with a `width`×`height`
    /// viewport.
    pub async fn launch(width: u32, height: u32) -> anyhow::Result<Self> {
        let executable = std::env::var_os("PRQ_BROWSER")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
        let profile = tempfile::Builder::new()
            .prefix("prq-panel-browser-")
            .tempdir()?;
        let mut config = BrowserConfig::builder()
            .chrome_executable(&executable)
            .user_data_dir(profile.path())
            .window_size(width, height)
            .viewport(Viewport {
                width,
                height,
                device_scale_factor: Some(1.0),
                ..Viewport::default()
            })
            .args(ARGS);
        // Chromium refuses to run as root with its sandbox on.
        if nix::unistd::geteuid().is_root() {
            config = config.no_sandbox();
        }
        let config = config.build().map_err(|e| anyhow!(e))?;
        let (browser, mut handler) = cdp(
            &format!("launching {}", executable.display()),
            Browser::launch(config),
        )
        .await?;
        // The handler must be polled for any call to get an answer.
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Ok(Self {
            browser,
            handler,
            _profile: profile,
        })
    }

    pub async fn open(&self, url: &str) -> anyhow::Result<Page> {
        cdp(&format!("opening {url}"), self.browser.new_page(url)).await
    }

    /// Closes the browser and waits for it to exit; kills it if it does not.
    pub async fn close(mut self) {
        let closed = tokio::time::timeout(CALL_TIMEOUT, async {
            let _ = self.browser.close().await;
            let _ = self.browser.wait().await;
        })
        .await;
        if closed.is_err() {
            let _ = self.browser.kill().await;
        }
    }
}

impl Drop for Headless {
    fn drop(&mut self) {
        // A test that panicked never reached `close`: chromiumoxide spawned the browser
        // with kill-on-drop, so dropping it (after this) kills the process.
        self.handler.abort();
    }
}

/// Evaluates `expr` in the page and returns its value as JSON (`null` for undefined).
pub async fn eval(page: &Page, expr: &str) -> anyhow::Result<Value> {
    let wrapped = format!("JSON.stringify({{ v: ({expr}) }})");
    let text: String = cdp(&format!("evaluating {expr}"), page.evaluate(wrapped))
        .await?
        .into_value()?;
    let mut v: Value = serde_json::from_str(&text)?;
    Ok(v["v"].take())
}

/// Polls the page every 20 ms until `expr` is true; fails after `limit` with the last
/// value of `show` (an expression that says what the page shows).
pub async fn until(page: &Page, expr: &str, limit: Duration, show: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if eval(page, expr).await? == Value::Bool(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let shown = eval(page, show).await?;
            bail!("the page never showed `{expr}` within {limit:?}; it shows {shown}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes the page stamp `window.changedAt` (its clock, in ms) the first time `expr`
/// holds after a change to the DOM; read it with [`changed_at`]. (The screenshot tool
/// includes this file and uses neither.)
#[allow(dead_code)]
pub async fn stamp_when(page: &Page, expr: &str) -> anyhow::Result<()> {
    let script = format!(
        "(window.changedAt = null, new MutationObserver((_, o) => {{ \
           if ({expr}) {{ window.changedAt = Date.now(); o.disconnect(); }} \
         }}).observe(document.body, {{ subtree: true, childList: true, attributes: true }}), true)"
    );
    eval(page, &script).await.map(drop)
}

/// When [`stamp_when`]'s condition first held, if it has.
#[allow(dead_code)]
pub async fn changed_at(page: &Page) -> anyhow::Result<Option<u64>> {
    Ok(eval(page, "window.changedAt").await?.as_u64())
}
