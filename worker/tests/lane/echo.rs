//! The worker's protocol loop, through the echo lane (no browser): exact answers,
//! heartbeats, stop, faults, refusals, and every way the worker ends.

use std::time::Instant;

use crate::support::{End, Lane, Setup, PROMPTLY};
use prq_protocol::script::expected;
use prq_protocol::worker::{
    ChatMessage, FailureKind, FinishReason, FromWorker, Role, Thinking, ToWorker,
};

#[tokio::test]
async fn echo_answers_exactly_with_the_reasoning_apart() {
    let mut lane = Lane::start(Setup::echo()).await;
    assert_eq!(lane.ready().await, None, "no browser behind an echo lane");

    let prompt = "héllo — 日本語 🎉\nsandbox: tokens=7 delay_ms=0";
    lane.generate(1, prompt, Thinking::On).await;
    let got = lane.answer(1).await;
    let (reasoning, answer) = expected(prompt, true).unwrap();
    assert_eq!(got.end, End::Finished(FinishReason::Completed));
    assert_eq!(got.reasoning, reasoning);
    assert_eq!(got.answer, answer);

    // `Auto` takes the lane's default, which is off here.
    lane.generate(2, prompt, Thinking::Auto).await;
    let got = lane.answer(2).await;
    assert_eq!(got.reasoning, "");
    assert_eq!(got.answer, answer);
}

#[tokio::test]
async fn a_conversation_is_flattened_and_its_last_user_message_echoed() {
    let mut lane = Lane::start(Setup::echo()).await;
    lane.ready().await;
    let message = |role, content: &str| ChatMessage {
        role,
        content: content.into(),
    };
    let last = "and now?\nsandbox: tokens=3 delay_ms=0";
    let chat = vec![
        message(Role::User, "first question"),
        message(Role::Assistant, "first answer"),
        message(Role::System, "be brief"),
        message(Role::User, last),
    ];
    lane.generate_chat(1, chat, Thinking::Off).await;
    let got = lane.answer(1).await;
    assert_eq!(got.end, End::Finished(FinishReason::Completed));
    assert_eq!(got.answer, expected(last, false).unwrap().1);
}

#[tokio::test]
async fn heartbeats_keep_coming_while_it_generates() {
    let mut lane = Lane::start(Setup {
        heartbeat_ms: 50,
        ..Setup::echo()
    })
    .await;
    lane.ready().await;
    let before = lane.heartbeats;
    lane.generate(1, "slow\nsandbox: tokens=10 delay_ms=50", Thinking::Off)
        .await;
    let got = lane.answer(1).await;
    assert_eq!(got.end, End::Finished(FinishReason::Completed));
    // About 550 ms of generating at one beat per 50 ms.
    let beats = lane.heartbeats - before;
    assert!(beats >= 5, "only {beats} heartbeats during the generation");
}

#[tokio::test]
async fn stop_ends_a_hung_generation_at_once_and_the_lane_goes_on() {
    let mut lane = Lane::start(Setup::echo()).await;
    lane.ready().await;
    let prompt = "stall\nsandbox: tokens=5 hang_at=2 delay_ms=0";
    lane.generate(1, prompt, Thinking::Off).await;
    let head = lane
        .answer_until(1, prompt.len() + " lorem ipsum".len())
        .await;
    assert_eq!(head, format!("{prompt} lorem ipsum"));

    let stopped_at = Instant::now();
    lane.send(ToWorker::Stop { id: 1 }).await;
    assert_eq!(
        lane.recv().await,
        FromWorker::Finished {
            id: 1,
            reason: FinishReason::Stopped
        }
    );
    let took = stopped_at.elapsed();
    eprintln!("echo: Stop → Finished(Stopped) in {took:?}");
    assert!(took < PROMPTLY, "{took:?}");

    // A late Stop for it, or one for a request never seen, changes nothing.
    lane.send(ToWorker::Stop { id: 1 }).await;
    lane.send(ToWorker::Stop { id: 77 }).await;
    lane.generate(2, "again\nsandbox: tokens=2 delay_ms=0", Thinking::Off)
        .await;
    let got = lane.answer(2).await;
    assert_eq!(got.end, End::Finished(FinishReason::Completed));
    assert_eq!(
        got.answer,
        "again\nsandbox: tokens=2 delay_ms=0 lorem ipsum"
    );
}

#[tokio::test]
async fn injected_faults_fail_like_the_sandbox_site() {
    let mut lane = Lane::start(Setup::echo()).await;
    lane.ready().await;

    let prompt = "oops\nsandbox: tokens=5 fail_at=2 delay_ms=0";
    lane.generate(1, prompt, Thinking::Off).await;
    let got = lane.answer(1).await;
    assert_eq!(got.answer, format!("{prompt} lorem ipsum"));
    let End::Failed(failure) = got.end else {
        panic!("expected a failure, got {:?}", got.end)
    };
    assert_eq!(failure.kind, FailureKind::SiteError);
    assert_eq!(failure.message, "sandbox: failure injected after 2 words");

    lane.generate(2, "hi\nsandbox: tokens=lots", Thinking::Off)
        .await;
    let End::Failed(failure) = lane.answer(2).await.end else {
        panic!("a bad directive fails")
    };
    assert_eq!(failure.kind, FailureKind::SiteError);
    assert!(failure.message.contains("lots"), "{}", failure.message);
}

#[tokio::test]
async fn a_second_generate_while_one_runs_is_refused() {
    let mut lane = Lane::start(Setup::echo()).await;
    lane.ready().await;
    lane.generate(1, "a\nsandbox: hang_at=0 delay_ms=0", Thinking::Off)
        .await;
    lane.generate(2, "b", Thinking::Off).await;
    loop {
        match lane.recv().await {
            FromWorker::Delta { id: 1, .. } => {}
            FromWorker::Failed { id: 2, failure } => {
                assert_eq!(failure.kind, FailureKind::Internal);
                assert!(failure.message.contains("request 1"), "{}", failure.message);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    lane.send(ToWorker::Stop { id: 1 }).await;
    loop {
        match lane.recv().await {
            // The echo may still be on its way.
            FromWorker::Delta { id: 1, .. } => {}
            msg => {
                assert_eq!(
                    msg,
                    FromWorker::Finished {
                        id: 1,
                        reason: FinishReason::Stopped
                    }
                );
                break;
            }
        }
    }
}

#[tokio::test]
async fn an_unknown_provider_is_fatal_with_exit_code_2() {
    let mut lane = Lane::start(Setup {
        provider: "nosuchsite",
        ..Setup::echo()
    })
    .await;
    match lane.recv().await {
        FromWorker::Fatal { reason } => {
            assert!(reason.contains("unknown provider `nosuchsite`"), "{reason}")
        }
        other => panic!("expected Fatal, got {other:?}"),
    }
    let status = lane.exit_within(PROMPTLY).await;
    assert_eq!(status.code(), Some(2));
}

/// A ready echo lane in the middle of a generation that never ends by itself.
async fn generating() -> Lane {
    let mut lane = Lane::start(Setup::echo()).await;
    lane.ready().await;
    lane.generate(1, "x\nsandbox: hang_at=0 delay_ms=0", Thinking::Off)
        .await;
    lane
}

#[tokio::test]
async fn shutdown_exits_0_even_while_generating() {
    let mut lane = generating().await;
    lane.send(ToWorker::Shutdown).await;
    assert_eq!(lane.exit_within(PROMPTLY).await.code(), Some(0));
}

#[tokio::test]
async fn the_supervisor_going_away_ends_the_worker() {
    let mut lane = generating().await;
    lane.hang_up();
    assert_eq!(lane.exit_within(PROMPTLY).await.code(), Some(0));
}

/// A supervisor that dies with the worker's messages unread resets the socket; that is
/// the supervisor going away too, not a bad message.
#[tokio::test]
async fn the_supervisor_going_away_with_messages_unread_ends_the_worker_cleanly() {
    let mut lane = generating().await;
    lane.hang_up_unread().await;
    assert_eq!(lane.exit_within(PROMPTLY).await.code(), Some(0));
}
