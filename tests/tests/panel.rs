//! The Request Queue panel in real headless Chromium, against the real daemon with
//! sandbox lanes: cards follow requests live, the per-request and bulk buttons act on
//! the right requests, the banner says why the runtime stopped, the page reconnects
//! after a daemon restart, and it asks for the admin key when one is set. What the page
//! shows is checked against the queue API and the sandbox site's record.

#[path = "panel/browser.rs"]
mod browser;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use browser::{eval, until, Headless};
use chromiumoxide::Page;
use prq_tests::{config, eventually, request_id, stream_for, Prq};
use serde_json::{json, Value};

/// Long enough for a loaded two-core machine; the page is much faster.
const SHOW: Duration = Duration::from_secs(20);

fn two_lanes() -> String {
    config(
        "concurrent",
        &[("sandbox", "alpha", "a"), ("sandbox", "beta", "b")],
    )
}

/// A hanging prompt: the request stays processing (having streamed a little) until it
/// is stopped.
fn hang(head: &str) -> String {
    format!("{head}\nsandbox: hang_at=2 delay_ms=5")
}

/// The panel, open and live: connected, lanes listed.
async fn open_panel(prq: &Prq) -> (Headless, Page) {
    let browser = Headless::launch(1280, 900).await.expect("launch Chromium");
    let page = browser
        .open(&format!("{}/", prq.api))
        .await
        .expect("open the panel");
    until(
        &page,
        "document.querySelector('#connection').dataset.state === 'live' \
         && document.querySelectorAll('#lanes [data-lane-id]').length > 0",
        SHOW,
        "document.querySelector('#connection').textContent",
    )
    .await
    .expect("the panel connects");
    (browser, page)
}

/// Starts a streaming chat and returns its ID and its open response (dropping the
/// response would cancel or stop the request).
async fn start(prq: &Prq, model: &str, prompt: &str) -> (u64, reqwest::Response) {
    let r = prq.chat_request(model, prompt, true).await;
    assert_eq!(r.status(), 200);
    (request_id(&r).expect("x-prq-request-id"), r)
}

async fn record(prq: &Prq, id: u64) -> Value {
    prq.get_json(&format!("/api/queue/{id}")).await
}

async fn until_record(prq: &Prq, id: u64, state: &str) {
    eventually(SHOW, || async {
        let r = record(prq, id).await;
        r["state"] == state && (state != "processing" || r["chars"].as_u64() > Some(0))
    })
    .await
    .unwrap_or_else(|_| panic!("request {id} never reached {state}"));
}

fn card(id: u64) -> String {
    format!("document.querySelector('[data-request-id=\"{id}\"]')")
}

/// What the page shows of one request's card: its list, state, muted, and its texts.
async fn shown(page: &Page, id: u64) -> Value {
    let c = card(id);
    eval(
        page,
        &format!(
            "{c} && {{ list: {c}.parentElement.id, state: {c}.dataset.state, \
             muted: {c}.classList.contains('muted'), text: {c}.innerText }}"
        ),
    )
    .await
    .unwrap()
}

/// Waits until request `id`'s card is in `list` with `state`.
async fn until_card(page: &Page, id: u64, list: &str, state: &str) {
    let c = card(id);
    until(
        page,
        &format!("{c}?.parentElement.id === '{list}' && {c}.dataset.state === '{state}'"),
        SHOW,
        &format!("{c}?.outerHTML ?? 'no card {id}'"),
    )
    .await
    .unwrap();
}

async fn click(page: &Page, selector: &str) {
    let element = browser::cdp(&format!("finding {selector}"), page.find_element(selector))
        .await
        .unwrap();
    browser::cdp(&format!("clicking {selector}"), element.click())
        .await
        .unwrap();
}

async fn notice(page: &Page) -> String {
    eval(page, "document.querySelector('#notice').textContent")
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits for the footer notice to mention every one of `ids`: it is written when the
/// action's answer arrives, which may be after the queue event moved the cards.
async fn until_notice(page: &Page, ids: &[u64]) {
    let names_all = |said: &str| ids.iter().all(|id| said.contains(&format!("#{id}")));
    let found = eventually(SHOW, || async { names_all(&notice(page).await) }).await;
    assert!(
        found.is_ok(),
        "the notice never named {ids:?}: {:?}",
        notice(page).await
    );
}

async fn sandbox_outcome(prq: &Prq, head: &str, outcome: &str) {
    eventually(SHOW, || async {
        let streams = prq.sandbox_streams().await;
        stream_for(&streams, head).is_ok_and(|s| s["outcome"] == outcome)
    })
    .await
    .unwrap_or_else(|_| panic!("the site never saw {head:?} end {outcome}"));
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_its_assets_are_served_by_the_daemon() {
    let prq = Prq::start(&two_lanes());
    for (path, kind) in [
        ("/", "text/html"),
        ("/panel", "text/html"),
        ("/panel/panel.css", "text/css"),
        ("/panel/panel.js", "text/javascript"),
    ] {
        let r = prq
            .http()
            .get(format!("{}{path}", prq.api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(!r.text().await.unwrap().is_empty(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cards_follow_requests_live_and_finished_ones_are_muted() {
    let prq = Prq::start(&two_lanes());
    let (browser, page) = open_panel(&prq).await;

    let (running, _r1) = start(&prq, "alpha-chat", &hang("pl1 running")).await;
    until_record(&prq, running, "processing").await;
    // A text completion, not streamed, waits behind it; then a chat behind that.
    let waiting = tokio::spawn({
        let (http, api) = (prq.http().clone(), prq.api.clone());
        async move {
            http.post(format!("{api}/v1/completions"))
                .json(&json!({"model": "alpha-chat", "prompt": "pl2 waiting\nsandbox: tokens=3 delay_ms=5"}))
                .send()
                .await
                .unwrap()
        }
    });
    let waiting_id = prq.first_live("pending").await;
    let (behind, _r3) = start(&prq, "alpha-chat", "pl3 behind\nsandbox: tokens=2").await;

    until_card(&page, running, "processing", "processing").await;
    until_card(&page, waiting_id, "pending", "pending").await;
    until_card(&page, behind, "pending", "pending").await;
    let c = shown(&page, running).await;
    let text = c["text"].as_str().unwrap();
    let client = record(&prq, running).await["client"]
        .as_str()
        .unwrap()
        .to_string();
    for part in [
        &format!("#{running}"),
        "alpha-chat",
        "on alpha#1",
        "chat",
        "1 message",
        "streaming",
        &client,
    ] {
        assert!(text.contains(part), "{part:?} in {text:?}");
    }
    let text = shown(&page, waiting_id).await["text"]
        .as_str()
        .unwrap()
        .to_string();
    for part in [
        "next",
        "text completion",
        "chars",
        "whole",
        "waiting for alpha",
    ] {
        assert!(text.contains(part), "{part:?} in {text:?}");
    }
    assert!(shown(&page, behind).await["text"]
        .as_str()
        .unwrap()
        .contains("2nd in line"));
    // Characters streamed so far, and an age that ticks.
    until(
        &page,
        &format!(
            "/[1-9][0-9]* chars/.test({c}.querySelector('.f-chars').textContent)",
            c = card(running)
        ),
        SHOW,
        &card(running),
    )
    .await
    .unwrap();
    let age = format!("{}.querySelector('.f-age').textContent", card(running));
    let before = eval(&page, &age).await.unwrap();
    until(
        &page,
        &format!("{age} !== {before}"),
        Duration::from_secs(3),
        &age,
    )
    .await
    .unwrap();
    // The lane shows what it is generating.
    until(
        &page,
        &format!("document.querySelector('#lanes [data-lane-id=\"alpha#1\"]').textContent.includes('#{running}')"),
        SHOW,
        "document.querySelector('#lanes').innerText",
    )
    .await
    .unwrap();

    // A change in the daemon reaches the page through its event stream: the card
    // changes in place (the observer installed here survives: no reload). How soon is
    // `prq_bench -- panel`'s figure; the page stamps it here for the log.
    browser::stamp_when(
        &page,
        &format!("{}?.dataset.state === 'cancelled'", card(behind)),
    )
    .await
    .unwrap();
    let asked = unix_ms();
    let r = prq
        .http()
        .post(format!("{}/api/queue/{behind}/cancel", prq.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    until_card(&page, behind, "finished", "cancelled").await;
    let changed_at = browser::changed_at(&page).await.unwrap().unwrap();
    eprintln!(
        "cancel via the API → card changed: {} ms",
        changed_at.saturating_sub(asked)
    );
    // And no polling loop: with nothing changing in the daemon (one request hangs),
    // the page fetches nothing. (A status event makes it read `/api/status` once, for
    // the browsers' memory; let the cancel's settle first: on a loaded machine it may take
    // more than a second.)
    let fetches = "performance.getEntriesByType('resource').length";
    let mut fetched_before = eval(&page, fetches).await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let now = eval(&page, fetches).await.unwrap();
        if now == fetched_before {
            break;
        }
        fetched_before = now;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        eval(&page, fetches).await.unwrap(),
        fetched_before,
        "{}",
        eval(
            &page,
            "performance.getEntriesByType('resource').map(e => e.name).join(' ')"
        )
        .await
        .unwrap()
    );

    // Stopping the running request lets the completion run and finish.
    prq.http()
        .post(format!("{}/api/queue/{running}/stop", prq.api))
        .send()
        .await
        .unwrap();
    until_card(&page, running, "finished", "stopped").await;
    until_card(&page, waiting_id, "finished", "completed").await;
    assert_eq!(waiting.await.unwrap().status(), 200);
    for id in [running, waiting_id, behind] {
        assert_eq!(
            shown(&page, id).await["muted"],
            true,
            "finished card {id} is muted"
        );
    }
    assert!(shown(&page, waiting_id).await["text"]
        .as_str()
        .unwrap()
        .contains("took"));
    assert_eq!(
        eval(
            &page,
            "document.querySelectorAll('#processing > *, #pending > *').length"
        )
        .await
        .unwrap(),
        0
    );
    // Nothing came from anywhere but the daemon.
    assert_eq!(
        eval(&page, "performance.getEntriesByType('resource').every(e => e.name.startsWith(location.origin))")
            .await
            .unwrap(),
        true
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_stop_act_on_their_own_request() {
    let prq = Prq::start(&two_lanes());
    let (browser, page) = open_panel(&prq).await;
    let (a1, _r1) = start(&prq, "alpha-chat", &hang("pa1 alpha")).await;
    let (b1, _r2) = start(&prq, "beta-chat", &hang("pb1 beta")).await;
    let (a2, _r3) = start(&prq, "alpha-chat", &hang("pa2 next")).await;
    let (a3, _r4) = start(&prq, "alpha-chat", "pa3 last\nsandbox: tokens=2").await;
    until_record(&prq, a1, "processing").await;
    until_record(&prq, b1, "processing").await;
    until_card(&page, a3, "pending", "pending").await;

    let cancel = format!("[data-request-id=\"{a3}\"] [data-action=\"cancel\"]");
    assert_eq!(
        eval(
            &page,
            &format!("document.querySelector('{cancel}').getAttribute('aria-label')")
        )
        .await
        .unwrap(),
        format!("Cancel request {a3}")
    );
    click(&page, &cancel).await;
    until_record(&prq, a3, "cancelled").await;
    assert_eq!(
        record(&prq, a2).await["state"],
        "pending",
        "only its own request"
    );
    until_card(&page, a3, "finished", "cancelled").await;
    until_notice(&page, &[a3]).await;

    until_card(&page, a1, "processing", "processing").await;
    let stop = format!("[data-request-id=\"{a1}\"] [data-action=\"stop\"]");
    assert_eq!(
        eval(
            &page,
            &format!("document.querySelector('{stop}').getAttribute('aria-label')")
        )
        .await
        .unwrap(),
        format!("Stop request {a1}")
    );
    click(&page, &stop).await;
    until_record(&prq, a1, "stopped").await;
    sandbox_outcome(&prq, "pa1 alpha", "aborted").await;
    assert_eq!(
        record(&prq, b1).await["state"],
        "processing",
        "only its own request"
    );
    // The lane is free: the next request on it runs.
    until_record(&prq, a2, "processing").await;
    until_card(&page, a1, "finished", "stopped").await;
    until_card(&page, a2, "processing", "processing").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_all_and_clear_queue_ask_first_then_act_on_every_request() {
    let prq = Prq::start(&two_lanes());
    let (browser, page) = open_panel(&prq).await;
    let (a1, _r1) = start(&prq, "alpha-chat", &hang("pba1")).await;
    let (b1, _r2) = start(&prq, "beta-chat", &hang("pbb1")).await;
    let (a2, _r3) = start(&prq, "alpha-chat", "pba2\nsandbox: tokens=2").await;
    let (b2, _r4) = start(&prq, "beta-chat", "pbb2\nsandbox: tokens=2").await;
    until_record(&prq, a1, "processing").await;
    until_record(&prq, b1, "processing").await;
    for id in [a2, b2] {
        until_card(&page, id, "pending", "pending").await;
    }
    let dialog_open = "document.querySelector('#confirm').open";

    // Clear queue asks first; keeping the requests changes nothing.
    click(&page, "[data-action=\"clear\"]").await;
    until(&page, dialog_open, SHOW, dialog_open).await.unwrap();
    let title = eval(
        &page,
        "document.querySelector('#confirm-title').textContent",
    )
    .await
    .unwrap();
    assert!(title.as_str().unwrap().contains("2 pending"), "{title}");
    click(&page, "#confirm button[value=\"keep\"]").await;
    until(&page, &format!("!{dialog_open}"), SHOW, dialog_open)
        .await
        .unwrap();
    assert_eq!(record(&prq, a2).await["state"], "pending");
    assert_eq!(record(&prq, b2).await["state"], "pending");

    click(&page, "[data-action=\"clear\"]").await;
    until(&page, dialog_open, SHOW, dialog_open).await.unwrap();
    click(&page, "#confirm [data-action=\"confirm\"]").await;
    until_record(&prq, a2, "cancelled").await;
    until_record(&prq, b2, "cancelled").await;
    assert_eq!(
        record(&prq, a1).await["state"],
        "processing",
        "clear leaves processing requests"
    );
    until_card(&page, b2, "finished", "cancelled").await;
    until_notice(&page, &[a2, b2]).await;

    click(&page, "[data-action=\"stop-all\"]").await;
    until(&page, dialog_open, SHOW, dialog_open).await.unwrap();
    click(&page, "#confirm [data-action=\"confirm\"]").await;
    until_record(&prq, a1, "stopped").await;
    until_record(&prq, b1, "stopped").await;
    sandbox_outcome(&prq, "pba1", "aborted").await;
    sandbox_outcome(&prq, "pbb1", "aborted").await;
    for id in [a1, b1] {
        until_card(&page, id, "finished", "stopped").await;
    }
    // With nothing left, the bulk buttons rest.
    until(
        &page,
        "document.querySelector('[data-action=\"stop-all\"]').disabled \
         && document.querySelector('[data-action=\"clear\"]').disabled",
        SHOW,
        "document.querySelector('footer').outerHTML",
    )
    .await
    .unwrap();
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_banner_says_why_the_runtime_stopped_after_a_browser_is_killed() {
    let prq = Prq::start(&two_lanes());
    let (browser, page) = open_panel(&prq).await;
    let banner_hidden = "document.querySelector('#runtime-banner').hidden";
    assert_eq!(eval(&page, banner_hidden).await.unwrap(), true);
    let alpha = "document.querySelector('#lanes [data-lane-id=\"alpha#1\"]')";
    // Each lane shows its browser's memory.
    until(
        &page,
        &format!(
            "/browser [0-9,]+ MiB/.test({alpha}.textContent) && {alpha}.dataset.state === 'idle'"
        ),
        SHOW,
        &format!("{alpha}.innerText"),
    )
    .await
    .unwrap();

    let status = prq.status();
    let lane = status["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "alpha#1")
        .expect("lane alpha#1");
    let pid = lane["browser_pid"].as_u64().expect("a browser pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let banner = "document.querySelector('#runtime-banner').innerText";
    until(&page, &format!("!{banner_hidden}"), SHOW, banner)
        .await
        .unwrap();
    let text = eval(&page, banner).await.unwrap();
    let text = text.as_str().unwrap();
    assert!(
        text.contains("alpha#1") && text.contains("prq start"),
        "{text}"
    );
    until(
        &page,
        &format!("{alpha}.dataset.state === 'crashed'"),
        SHOW,
        &format!("{alpha}.outerHTML"),
    )
    .await
    .unwrap();
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_reconnects_by_itself_after_the_daemon_restarts() {
    // A fixed port, so that the restarted daemon is where the page looks for it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prq = Prq::start(&two_lanes().replace("127.0.0.1:0", &format!("127.0.0.1:{port}")));
    let (browser, page) = open_panel(&prq).await;
    let connection = "document.querySelector('#connection').dataset.state";

    prq.stop();
    until(
        &page,
        &format!("{connection} === 'reconnecting'"),
        SHOW,
        connection,
    )
    .await
    .unwrap();
    let out = prq.cli(&["start", "--config", prq.config_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until(&page, &format!("{connection} === 'live'"), SHOW, connection)
        .await
        .unwrap();
    // Live again: a new request shows up, and the runtime is running.
    let (id, _r) = start(&prq, "beta-chat", &hang("pr1 after restart")).await;
    until_card(&page, id, "processing", "processing").await;
    assert_eq!(
        eval(
            &page,
            "document.querySelector('#runtime-state').dataset.state"
        )
        .await
        .unwrap(),
        "running"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_an_admin_key_the_panel_asks_for_it_first() {
    let prq = Prq::start(&two_lanes().replace(
        "start_timeout_s = 60\n",
        "start_timeout_s = 60\nadmin_key = \"panel-test-key\"\n",
    ));
    let browser = Headless::launch(1280, 900).await.expect("launch Chromium");
    let page = browser.open(&format!("{}/", prq.api)).await.unwrap();
    let login = "document.querySelector('#login')";
    until(
        &page,
        &format!("!{login}.hidden"),
        SHOW,
        "document.body.innerText",
    )
    .await
    .unwrap();

    for (key, shows) in [
        ("not-the-key", "'.login-error'"),
        ("panel-test-key", "'#lanes [data-lane-id]'"),
    ] {
        let input = browser::cdp("finding the key input", page.find_element("#admin-key"))
            .await
            .unwrap();
        browser::cdp("typing the key", input.click()).await.unwrap();
        browser::cdp("typing the key", input.type_str(key))
            .await
            .unwrap();
        browser::cdp("submitting", input.press_key("Enter"))
            .await
            .unwrap();
        until(
            &page,
            &format!("document.querySelector({shows})?.textContent.length > 0"),
            SHOW,
            "document.body.innerText",
        )
        .await
        .unwrap();
    }
    until(
        &page,
        &format!(
            "{login}.hidden && document.querySelector('#connection').dataset.state === 'live'"
        ),
        SHOW,
        "document.querySelector('#connection').textContent",
    )
    .await
    .unwrap();
    // Logged in, the page follows the queue and its buttons work (the session cookie).
    let (id, _r) = start(&prq, "alpha-chat", &hang("pk1 logged in")).await;
    until_card(&page, id, "processing", "processing").await;
    click(
        &page,
        &format!("[data-request-id=\"{id}\"] [data-action=\"stop\"]"),
    )
    .await;
    until_card(&page, id, "finished", "stopped").await;
    browser.close().await;
}
