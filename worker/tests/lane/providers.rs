//! Each provider's driver, in the real `prq-worker` with real Chromium, against its
//! replica (`replica`): the answer exactly, with and without thinking and each apart;
//! the site's rate limit, content filter and refused login; a stop in the page; a page
//! that shows a logged-out account; and a page whose prompt box changed, which fails
//! naming the selector, until a `[lanes.selectors]` override matches it again.

use prq_protocol::worker::{Failure, FailureKind, FinishReason, FromWorker, Thinking, ToWorker};

use crate::replica::{answer_pieces, reasoning_pieces, Kind, PromptBox, Replica};
use crate::support::{End, Lane, Setup, PROMPTLY};

/// Short, so that a changed page fails fast; still far above what a loopback page needs.
const ELEMENT_DEADLINE_MS: u64 = 3_000;

async fn lane_on(replica: &Replica, kind: Kind) -> Lane {
    let mut lane = Lane::start(Setup {
        cdp_timeout_ms: ELEMENT_DEADLINE_MS,
        ..Setup::site(kind.provider(), &replica.url)
    })
    .await;
    let (browser, logged_in) = lane.ready_logged_in().await;
    assert!(browser.is_some());
    assert_eq!(
        logged_in,
        Some(true),
        "{} shows a logged-in page",
        kind.provider()
    );
    lane
}

fn failure_of(end: End) -> Failure {
    match end {
        End::Failed(failure) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Whitespace aside: a contenteditable prompt box turns line ends into its own markup.
fn same_text(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// Sends a Stop for `id` and returns what ends it, past the text still arriving.
async fn stop(lane: &mut Lane, id: u64) -> FromWorker {
    lane.send(ToWorker::Stop { id }).await;
    tokio::time::timeout(PROMPTLY, async {
        loop {
            match lane.recv().await {
                FromWorker::Delta { .. } => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the stop is reported")
}

async fn every_state(kind: Kind) {
    let name = kind.provider();
    let replica = Replica::serve(kind).await;
    let mut lane = lane_on(&replica, kind).await;

    // Thinking on: the reasoning and the answer, exactly and apart.
    let prompt = "Say hello — in 日本語 too?\nreplica: words=5";
    lane.generate(1, prompt, Thinking::On).await;
    let got = lane.answer(1).await;
    assert_eq!(got.end, End::Finished(FinishReason::Completed), "{name}");
    assert_eq!(got.reasoning, reasoning_pieces().concat(), "{name}");
    assert_eq!(got.answer, answer_pieces(5).concat(), "{name}");
    let served = replica.served().pop().unwrap();
    assert!(served.thinking, "{name}: the site was asked to think");
    assert!(
        same_text(&served.prompt, prompt),
        "{name}: {:?}",
        served.prompt
    );

    // Byte-exact whatever the content type says and whatever the timing: with and
    // without a charset, the whole body at once (complete before the worker reads its
    // head) and slowly.
    let mut id = 100;
    for charset in ["yes", "no"] {
        for pace in ["at_once", "delay_ms=15"] {
            id += 1;
            let prompt = format!("Exact?\nreplica: words=2 charset={charset} {pace}");
            lane.generate(id, &prompt, Thinking::On).await;
            let got = lane.answer(id).await;
            let case = format!("{name}, charset={charset} {pace}");
            assert_eq!(got.end, End::Finished(FinishReason::Completed), "{case}");
            assert_eq!(got.reasoning, reasoning_pieces().concat(), "{case}");
            assert_eq!(got.answer, answer_pieces(2).concat(), "{case}");
        }
    }

    // Thinking off: the switch is turned back (a site without one thinks as its model does).
    lane.generate(2, "Again\nreplica: words=1", Thinking::Off)
        .await;
    let got = lane.answer(2).await;
    assert_eq!(got.end, End::Finished(FinishReason::Completed), "{name}");
    assert_eq!(got.answer, answer_pieces(1).concat(), "{name}");
    let served = replica.served().pop().unwrap();
    assert_eq!(served.thinking, !kind.has_thinking_switch(), "{name}");
    let reasoning = if kind.has_thinking_switch() {
        String::new()
    } else {
        reasoning_pieces().concat()
    };
    assert_eq!(got.reasoning, reasoning, "{name}");

    let failed = |end: End, kind: FailureKind| {
        let failure = failure_of(end);
        assert_eq!(failure.kind, kind, "{name}: {}", failure.message);
        assert!(
            failure.message.contains(name),
            "{name}: {}",
            failure.message
        );
        failure.message
    };

    let mut id = 3;
    let mut ask = async |lane: &mut Lane, prompt: &str| {
        id += 1;
        lane.generate(id, prompt, Thinking::Off).await;
        lane.answer(id).await
    };
    let message = failed(
        ask(&mut lane, "replica: rate_limit").await.end,
        FailureKind::RateLimited,
    );
    assert!(message.contains("wait"), "{name}: {message}");

    let got = ask(&mut lane, "replica: filter").await;
    assert_eq!(
        got.answer,
        answer_pieces(0)[..2].concat(),
        "{name}: the words before the filter"
    );
    failed(got.end, FailureKind::ContentFiltered);

    // A stream that runs its course without answer text is a changed site, not an
    // empty answer.
    let message = failed(
        ask(&mut lane, "replica: empty").await.end,
        FailureKind::SiteChanged,
    );
    assert!(
        message.contains("the site's stream ended without an answer"),
        "{name}: {message}"
    );

    let message = failed(
        ask(&mut lane, "replica: login").await.end,
        FailureKind::NotLoggedIn,
    );
    assert!(
        message.contains(&format!("prq login {name}")),
        "{name}: {message}"
    );

    // A stop in the page: the site sees its stream end, and the lane goes on.
    lane.generate(10, "replica: hang delay_ms=5", Thinking::Off)
        .await;
    lane.answer_until(10, "Héllo".len()).await;
    let stopped = stop(&mut lane, 10).await;
    assert_eq!(
        stopped,
        FromWorker::Finished {
            id: 10,
            reason: FinishReason::Stopped
        },
        "{name}"
    );
    let stream = replica.last_stream_ended(PROMPTLY).await;
    assert_eq!(stream.outcome, "aborted", "{name}");
    let got = ask(&mut lane, "After the stop").await;
    assert_eq!(got.end, End::Finished(FinishReason::Completed), "{name}");

    // The page shows a logged-out account.
    replica.set_logged_out(true);
    let message = failed(ask(&mut lane, "Hello?").await.end, FailureKind::NotLoggedIn);
    assert!(message.contains("--import-cookies"), "{name}: {message}");
    replica.set_logged_out(false);

    // The site changed its prompt box.
    replica.set_changed(true);
    let message = failed(ask(&mut lane, "Hello?").await.end, FailureKind::SiteChanged);
    assert!(
        message.contains("`prompt`") && message.contains("[lanes.selectors]"),
        "{name}: {message}"
    );
    eprintln!("{name}: {message}");

    lane.send(ToWorker::Shutdown).await;
    assert_eq!(lane.exit_within(PROMPTLY).await.code(), Some(0));
}

#[tokio::test]
async fn deepseek_in_every_state() {
    every_state(Kind::DeepSeek).await;
}

#[tokio::test]
async fn glm_in_every_state() {
    every_state(Kind::Glm).await;
}

#[tokio::test]
async fn moonshot_in_every_state() {
    every_state(Kind::Moonshot).await;
}

#[tokio::test]
async fn qwen_in_every_state() {
    every_state(Kind::Qwen).await;
}

#[tokio::test]
async fn perplexity_in_every_state() {
    every_state(Kind::Perplexity).await;
}

#[tokio::test]
async fn huggingchat_in_every_state() {
    every_state(Kind::HuggingChat).await;
}

#[tokio::test]
async fn aistudio_in_every_state() {
    every_state(Kind::AiStudio).await;
}

#[tokio::test]
async fn a_captcha_demand_is_its_own_failure_not_a_lost_login() {
    let replica = Replica::serve(Kind::Glm).await;
    let mut lane = Lane::start(Setup::site("glm", &replica.url)).await;
    assert_eq!(lane.ready_logged_in().await.1, Some(true));
    lane.generate(1, "replica: captcha", Thinking::Off).await;
    let failure = failure_of(lane.answer(1).await.end);
    assert_eq!(failure.kind, FailureKind::Captcha, "{}", failure.message);
    assert!(
        failure.message.contains("captcha") && failure.message.contains("prq login glm"),
        "{}",
        failure.message
    );
    // The lane goes on.
    lane.generate(2, "Hello", Thinking::On).await;
    assert_eq!(
        lane.answer(2).await.end,
        End::Finished(FinishReason::Completed)
    );
}

#[tokio::test]
async fn selector_overrides_by_list_text_and_role_fit_the_driver_to_a_changed_page() {
    let replica = Replica::serve(Kind::Glm).await;
    replica.set_changed(true);
    let mut lane = Lane::start(Setup {
        selectors: [
            // A list: the first alternative is gone from the changed page.
            (
                "prompt",
                &["textarea#chat-input", ".replica-changed-prompt"][..],
            ),
            // By what a person sees: a role and an accessible name, a visible label.
            ("send", &["role=button[name=\"Send\"]"]),
            ("thinking_toggle", &["text=Deep Think"]),
            (
                "thinking_on",
                &["[aria-pressed=\"true\"]:has-text(\"deep think\")"],
            ),
        ]
        .map(|(name, list)| {
            (
                name.to_owned(),
                list.iter().map(|s| s.to_string()).collect(),
            )
        })
        .into(),
        ..Setup::site("glm", &replica.url)
    })
    .await;
    assert_eq!(lane.ready_logged_in().await.1, Some(true));
    lane.generate(1, "Changed?\nreplica: words=2", Thinking::On)
        .await;
    let got = lane.answer(1).await;
    assert_eq!(got.end, End::Finished(FinishReason::Completed));
    assert_eq!(got.answer, answer_pieces(2).concat());
    assert_eq!(got.reasoning, reasoning_pieces().concat());
}

#[tokio::test]
async fn an_unknown_selector_name_is_fatal_and_lists_the_known_ones() {
    let replica = Replica::serve(Kind::Qwen).await;
    let mut lane = Lane::start(Setup {
        selectors: [("prompt_box".to_owned(), vec!["textarea".to_owned()])].into(),
        ..Setup::site("qwen", &replica.url)
    })
    .await;
    match lane.recv().await {
        FromWorker::Fatal { reason } => {
            assert!(
                reason.contains("prompt_box") && reason.contains("thinking_toggle"),
                "{reason}"
            )
        }
        other => panic!("expected Fatal, got {other:?}"),
    }
    assert_eq!(lane.exit_within(PROMPTLY).await.code(), Some(2));
}

/// A stop ends the answer's request however the page sent it: DeepSeek's page streams
/// over XMLHttpRequest, and with its stop button doing nothing, the worker's abort
/// fallback must reach the XHR itself. The replica sees its stream aborted.
#[tokio::test]
async fn a_stop_aborts_an_xhr_stream_when_the_stop_button_does_nothing() {
    let replica = Replica::serve(Kind::DeepSeek).await;
    replica.set_stop_inert(true);
    let mut lane = lane_on(&replica, Kind::DeepSeek).await;
    lane.generate(1, "replica: hang delay_ms=5", Thinking::Off)
        .await;
    lane.answer_until(1, "Héllo".len()).await;
    assert_eq!(
        replica.served()[0].transport,
        "xhr",
        "the page sends with XHR"
    );
    let stopped = stop(&mut lane, 1).await;
    assert_eq!(
        stopped,
        FromWorker::Finished {
            id: 1,
            reason: FinishReason::Stopped
        }
    );
    let stream = replica.last_stream_ended(PROMPTLY).await;
    assert_eq!(stream.outcome, "aborted", "the XHR was aborted: {stream:?}");
    // The lane goes on.
    lane.generate(2, "After the stop", Thinking::Off).await;
    assert_eq!(
        lane.answer(2).await.end,
        End::Finished(FinishReason::Completed)
    );
}

/// Open WebUI's prompt box, `#chat-input`, is a rich editor unless the user turned rich
/// text off: the GLM and Qwen drivers find it and type into it either way.
#[tokio::test]
async fn glm_and_qwen_type_into_a_rich_prompt_box() {
    for kind in [Kind::Glm, Kind::Qwen] {
        let name = kind.provider();
        let replica = Replica::serve(kind).await;
        replica.set_prompt_box(PromptBox::ContentEditable);
        let mut lane = lane_on(&replica, kind).await;
        let prompt = "Rich?\n\n  indented 日本語 🎉\nreplica: words=2";
        lane.generate(1, prompt, Thinking::On).await;
        let got = lane.answer(1).await;
        assert_eq!(got.end, End::Finished(FinishReason::Completed), "{name}");
        assert_eq!(got.answer, answer_pieces(2).concat(), "{name}");
        let served = replica.served().pop().unwrap();
        assert!(
            same_text(&served.prompt, prompt),
            "{name}: {:?}",
            served.prompt
        );
        lane.send(ToWorker::Shutdown).await;
        assert_eq!(lane.exit_within(PROMPTLY).await.code(), Some(0));
    }
}
