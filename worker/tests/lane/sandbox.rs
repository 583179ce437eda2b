//! The sandbox lane in real Chromium against the sandbox site served in-process:
//! exact answers, stop in the page, faults, a crashed tab, a killed browser, a
//! supervisor that goes away, and a browser that cannot start.

use std::time::Instant;

use crate::support::{alive, gone_within, now_ms, End, Lane, Setup, PROMPTLY, SOON};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prq_protocol::script::expected;
use prq_protocol::worker::{FailureKind, FinishReason, FromWorker, Thinking, ToWorker};

/// Starts a sandbox lane and waits until it is ready; returns it and its browser pid.
async fn ready_lane() -> (Lane, u32) {
    let started = Instant::now();
    let mut lane = Lane::start(Setup::sandbox()).await;
    let pid = lane.ready().await.expect("a browser pid");
    eprintln!("sandbox: configure → Ready in {:?}", started.elapsed());
    assert!(alive(pid));
    (lane, pid)
}

fn failure_of(end: End) -> prq_protocol::worker::Failure {
    match end {
        End::Failed(failure) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn the_sandbox_answer_arrives_exactly_with_the_reasoning_apart() {
    let (mut lane, _) = ready_lane().await;

    let prompt = "héllo — 日本語 🎉 \"quoted\" <b>\nsandbox: tokens=600 delay_ms=0";
    lane.generate(1, prompt, Thinking::On).await;
    let got = lane.answer(1).await;
    let (reasoning, answer) = expected(prompt, true).unwrap();
    assert_eq!(got.end, End::Finished(FinishReason::Completed));
    assert_eq!(got.reasoning, reasoning);
    assert_eq!(got.answer, answer);

    // The same page again, thinking off: the switch is turned back.
    let prompt = "second\nsandbox: tokens=3 delay_ms=1";
    lane.generate(2, prompt, Thinking::Off).await;
    let got = lane.answer(2).await;
    assert_eq!(got.end, End::Finished(FinishReason::Completed));
    assert_eq!(got.reasoning, "");
    assert_eq!(got.answer, expected(prompt, false).unwrap().1);

    let streams = lane.site().streams().await;
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[0]["thinking"], true);
    assert_eq!(streams[1]["thinking"], false);
    assert!(streams.iter().all(|s| s["outcome"] == "finished"));
}

#[tokio::test]
async fn stop_aborts_the_sites_stream_and_the_lane_serves_the_next() {
    let (mut lane, _) = ready_lane().await;
    let prompt = "slow\nsandbox: tokens=100 delay_ms=200";
    lane.generate(1, prompt, Thinking::Off).await;
    lane.answer_until(1, prompt.len() + 1).await;

    let stop_ms = now_ms();
    let stopped_at = Instant::now();
    lane.send(ToWorker::Stop { id: 1 }).await;
    // A word streamed before the stop reached the page may still be on its way.
    let end = lane.answer(1).await.end;
    assert_eq!(end, End::Finished(FinishReason::Stopped));
    let answered = stopped_at.elapsed();
    let stream = lane.site().last_stream_ended(PROMPTLY).await;
    assert_eq!(stream["outcome"], "aborted");
    let seen = stream["ended_ms"].as_u64().unwrap().saturating_sub(stop_ms);
    eprintln!(
        "sandbox: Stop → site saw the abort in ~{seen} ms, Finished(Stopped) in {answered:?}"
    );
    // The answer had 19 s to go: an abort seen this soon is the Stop's.
    assert!(
        seen < PROMPTLY.as_millis() as u64,
        "the site saw the abort {seen} ms after Stop"
    );

    let prompt = "next\nsandbox: tokens=4 delay_ms=0";
    lane.generate(2, prompt, Thinking::Off).await;
    let got = lane.answer(2).await;
    assert_eq!(got.end, End::Finished(FinishReason::Completed));
    assert_eq!(got.answer, expected(prompt, false).unwrap().1);
}

/// A page whose script spins after a stop (`sandbox: busy_ms`, far past the settle
/// check): the worker says `Recovering` before the stop's end and `Ready` once the page
/// answers again, and the next request, sent after that `Ready`, is answered in full.
#[tokio::test]
async fn a_page_busy_after_a_stop_is_recovered_before_the_next_request() {
    let (mut lane, _) = ready_lane().await;
    let prompt = "hang\nsandbox: tokens=2000 delay_ms=20 busy_ms=60000";
    lane.generate(1, prompt, Thinking::Off).await;
    lane.answer_until(1, prompt.len() + 1).await;
    lane.send(ToWorker::Stop { id: 1 }).await;
    let end = lane.answer(1).await.end;
    assert_eq!(end, End::Finished(FinishReason::Stopped));

    let prompt = "next\nsandbox: tokens=4 delay_ms=0";
    let asked = Instant::now();
    lane.generate(2, prompt, Thinking::Off).await;
    assert_eq!(lane.recoveries, 1, "the busy page was recovered first");
    eprintln!(
        "sandbox: Finished(Stopped) → Ready again in {:?}",
        asked.elapsed()
    );
    let got = lane.answer(2).await;
    assert_eq!(got.end, End::Finished(FinishReason::Completed));
    assert_eq!(got.answer, expected(prompt, false).unwrap().1);
}

#[tokio::test]
async fn a_stop_during_a_hang_is_seen_by_the_site() {
    let (mut lane, _) = ready_lane().await;
    let prompt = "stall\nsandbox: tokens=9 hang_at=2 delay_ms=0";
    lane.generate(1, prompt, Thinking::Off).await;
    lane.answer_until(1, format!("{prompt} lorem ipsum").len())
        .await;
    lane.send(ToWorker::Stop { id: 1 }).await;
    assert_eq!(
        lane.recv().await,
        FromWorker::Finished {
            id: 1,
            reason: FinishReason::Stopped
        }
    );
    let stream = lane.site().last_stream_ended(PROMPTLY).await;
    assert_eq!(stream["outcome"], "aborted");
    assert_eq!(stream["tokens_sent"], 2);
}

#[tokio::test]
async fn a_site_error_fails_the_request_after_the_words_before_it() {
    let (mut lane, _) = ready_lane().await;
    let prompt = "oops\nsandbox: tokens=5 fail_at=2 delay_ms=0";
    lane.generate(1, prompt, Thinking::Off).await;
    let got = lane.answer(1).await;
    assert_eq!(got.answer, format!("{prompt} lorem ipsum"));
    let failure = failure_of(got.end);
    assert_eq!(failure.kind, FailureKind::SiteError);
    assert_eq!(failure.message, "sandbox: failure injected after 2 words");
}

#[tokio::test]
async fn a_crashed_tab_fails_its_request_and_is_reloaded_for_the_next() {
    let (mut lane, browser) = ready_lane().await;
    lane.generate(1, "boom\nsandbox: crash delay_ms=0", Thinking::Off)
        .await;
    let failure = failure_of(lane.answer(1).await.end);
    assert_eq!(failure.kind, FailureKind::TabCrashed, "{}", failure.message);

    let prompt = "after the crash\nsandbox: tokens=3 delay_ms=0";
    lane.generate(2, prompt, Thinking::Off).await;
    let got = lane.answer(2).await;
    assert_eq!(got.end, End::Finished(FinishReason::Completed));
    assert_eq!(got.answer, expected(prompt, false).unwrap().1);
    assert!(alive(browser), "a tab crash does not take the browser down");
}

#[tokio::test]
async fn a_killed_browser_is_fatal_and_the_worker_exits() {
    let (mut lane, browser) = ready_lane().await;
    lane.generate(1, "stall\nsandbox: hang_at=1 delay_ms=0", Thinking::Off)
        .await;
    lane.answer_until(1, 1).await;

    let killed_at = Instant::now();
    kill(Pid::from_raw(browser as i32), Signal::SIGKILL).unwrap();
    let reason = loop {
        match lane.recv().await {
            FromWorker::Fatal { reason } => break reason,
            FromWorker::Delta { .. } => {}
            other => panic!("expected Fatal, got {other:?}"),
        }
    };
    let fatal = killed_at.elapsed();
    assert!(
        reason.contains("browser process exited (signal 9"),
        "{reason}"
    );
    let status = lane.exit_within(PROMPTLY).await;
    eprintln!(
        "sandbox: SIGKILL → Fatal in {fatal:?}, worker exit in {:?}",
        killed_at.elapsed()
    );
    assert_eq!(status.code(), Some(1));
    // Typically 40–80 ms; the bound leaves room for a loaded machine.
    assert!(fatal < PROMPTLY, "{fatal:?}");
}

#[tokio::test]
async fn when_the_supervisor_goes_away_the_worker_and_its_browser_go_too() {
    let (mut lane, browser) = ready_lane().await;
    lane.generate(1, "stall\nsandbox: hang_at=1 delay_ms=0", Thinking::Off)
        .await;
    lane.answer_until(1, 1).await;

    let closed_at = Instant::now();
    lane.hang_up();
    lane.exit_within(PROMPTLY).await;
    gone_within(browser, PROMPTLY).await;
    eprintln!(
        "sandbox: socket closed → worker and browser gone in {:?}",
        closed_at.elapsed()
    );
}

#[tokio::test]
async fn shutdown_closes_the_browser_and_exits_0() {
    let (mut lane, browser) = ready_lane().await;
    let asked_at = Instant::now();
    lane.send(ToWorker::Shutdown).await;
    let status = lane.exit_within(PROMPTLY).await;
    assert_eq!(status.code(), Some(0));
    assert!(!alive(browser), "the browser outlived its worker");
    eprintln!("sandbox: Shutdown → exit in {:?}", asked_at.elapsed());
    // The profile is the lane's own.
    assert!(lane.dir.path().join("profile").join("Default").is_dir());
}

#[tokio::test]
async fn a_worker_signalled_directly_still_closes_its_browser() {
    let (mut lane, browser) = ready_lane().await;
    kill(Pid::from_raw(lane.worker_pid as i32), Signal::SIGTERM).unwrap();
    let status = lane.exit_within(PROMPTLY).await;
    assert_eq!(status.code(), Some(0));
    assert!(!alive(browser), "the browser outlived its worker");
}

#[tokio::test]
async fn a_worker_killed_outright_takes_its_browser_with_it() {
    let (mut lane, browser) = ready_lane().await;
    // The worker alone, not its process group: the browser must go by itself.
    kill(Pid::from_raw(lane.worker_pid as i32), Signal::SIGKILL).unwrap();
    lane.exit_within(PROMPTLY).await;
    let took = gone_within(browser, PROMPTLY).await;
    eprintln!("sandbox: worker SIGKILL → browser gone in {took:?}");
}

#[tokio::test]
async fn a_browser_that_cannot_start_is_fatal_and_named() {
    let mut lane = Lane::start(Setup {
        browser: Some("/nonexistent/chromium".into()),
        ..Setup::sandbox()
    })
    .await;
    match lane.recv_within(SOON).await {
        Some(FromWorker::Fatal { reason }) => {
            assert!(reason.contains("/nonexistent/chromium"), "{reason}");
            assert!(reason.contains("does not exist"), "{reason}");
        }
        other => panic!("expected Fatal, got {other:?}"),
    }
    assert_eq!(lane.exit_within(PROMPTLY).await.code(), Some(1));

    // A file that is there but is no browser: Chromium's launch fails with its words.
    let mut lane = Lane::start(Setup {
        browser: Some("/bin/false".into()),
        ..Setup::sandbox()
    })
    .await;
    match lane.recv_within(SOON).await {
        Some(FromWorker::Fatal { reason }) => {
            assert!(
                reason.contains("/bin/false") && reason.contains("failed to start"),
                "{reason}"
            )
        }
        other => panic!("expected Fatal, got {other:?}"),
    }
    assert_eq!(lane.exit_within(PROMPTLY).await.code(), Some(1));
}
