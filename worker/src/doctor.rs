//! `prq doctor` on one lane: open the lane's chat page in a tab of its own, say what it
//! shows — per selector how many elements match, whether it looks logged in, the
//! thinking switch's state, its URL and title — and save its element outline and a
//! screenshot for the user to look at or send in. It loads the page and reads it;
//! nothing is clicked or sent to the site. With `--type-check` it also types a probe
//! text into the prompt box, reads back what the box holds, and clears it (no Enter is
//! pressed, Send is not clicked).
//!
//! A running lane does this in a second tab of its own browser when the supervisor asks
//! (`ToWorker::Doctor`), so a generation in the first goes on; with no daemon running,
//! `prq doctor` runs `prq-worker doctor` on each lane's profile (a profile can be open in
//! one browser at a time, and no other has it then).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prq_protocol::worker::{LaneSpec, PageReport};

use crate::browser::Browser;
use crate::driver::selectors::Selectors;
use crate::driver::web::WebDriver;
use crate::driver::Provider;
use crate::files;
use crate::tab::Tab;

/// The most lines of a page's outline (a chat page has a few hundred elements; a long
/// conversation in the sidebar many more).
pub const OUTLINE_LINES: u32 = 5_000;
/// The deepest nesting the outline follows.
pub const OUTLINE_DEPTH: u32 = 60;

/// Checks the page of the lane `spec` in a new tab of `browser`, saving files in `dir`.
pub async fn examine(
    browser: &Browser,
    spec: &LaneSpec,
    dir: PathBuf,
    type_check: bool,
) -> Result<PageReport, String> {
    let site = Provider::from_name(&spec.provider)
        .and_then(crate::driver::site)
        .ok_or_else(|| format!("the {} provider has no page to check", spec.provider))?;
    let url = spec
        .base_url
        .clone()
        .or(site.url.map(str::to_owned))
        .ok_or_else(|| format!("the {} lane has no base_url", spec.provider))?;
    let selectors = Selectors::new(&site.selectors, &spec.selectors)
        .map_err(|e| format!("[lanes.selectors]: {e}"))?;
    let cdp_timeout = Duration::from_millis(spec.cdp_timeout_ms);
    let tab = Tab::open(browser, &url, cdp_timeout)
        .await
        .map_err(|e| format!("opening {url}: {e}"))?;
    // The driver's own reading of the page: it waits for the prompt box or the
    // logged-out state, as a lane does when it starts.
    let driver = WebDriver::open(tab, site, selectors, spec)
        .await
        .map_err(|e| format!("reading {url}: {e}"))?;
    let mut report = driver.examine().await;
    report.release = Some(browser.release().clone());
    if type_check {
        report.typing = Some(driver.type_check().await);
    }
    let stem = format!("{}-{}", files::safe_name(&spec.lane_id), files::unix_ms());
    match driver.outline(OUTLINE_LINES, OUTLINE_DEPTH).await {
        Ok(outline) => {
            let saved = save(&dir, &format!("{stem}.outline.txt"), outline.as_bytes());
            keep(
                &mut report,
                saved,
                |r, p| r.outline = Some(p),
                "the outline",
            );
        }
        Err(e) => report.problems.push(format!("no outline: {e}")),
    }
    match driver.screenshot().await {
        Ok(png) => {
            let saved = save(&dir, &format!("{stem}.png"), &png);
            keep(
                &mut report,
                saved,
                |r, p| r.screenshot = Some(p),
                "the screenshot",
            );
        }
        Err(e) => report.problems.push(format!("no screenshot: {e}")),
    }
    driver.close().await;
    Ok(report)
}

fn save(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<std::path::PathBuf> {
    let (mut file, path) = files::create_private(dir, name)?;
    file.write_all(bytes)?;
    Ok(path)
}

fn keep(
    report: &mut PageReport,
    saved: std::io::Result<std::path::PathBuf>,
    set: impl FnOnce(&mut PageReport, std::path::PathBuf),
    what: &str,
) {
    match saved {
        Ok(path) => set(report, path),
        Err(e) => report.problems.push(format!("{what} not saved: {e}")),
    }
}
