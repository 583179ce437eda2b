//! Captures (`capture = true`) of each driver's replica stream, taken by a real lane in
//! real Chromium: the capture replays (`prq-worker replay`) to exactly what the lane
//! answered, and the checked-in fixture (`tests/captures/<provider>.jsonl`, replayed by
//! the worker's unit tests against its `expect` record) carries the same stream.
//!
//! When a replica's stream changes on purpose, refresh the fixtures with
//! `PRQ_REFRESH_CAPTURES=1 cargo test -p prq-worker --test lane -- captures`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use prq_protocol::worker::{FinishReason, Thinking};
use serde_json::{json, Value};

use crate::replica::{Kind, Replica};
use crate::support::{End, Lane, Setup};

const KINDS: [Kind; 7] = [
    Kind::DeepSeek,
    Kind::Glm,
    Kind::Moonshot,
    Kind::Qwen,
    Kind::Perplexity,
    Kind::HuggingChat,
    Kind::AiStudio,
];

fn fixture(kind: Kind) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/captures")
        .join(format!("{}.jsonl", kind.provider()))
}

/// A capture's body bytes, all pieces together (the format is in `capture.rs`).
fn body(capture: &str) -> Vec<u8> {
    capture
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .flat_map(|record| match (&record["text"], &record["base64"]) {
            (Value::String(text), _) => text.as_bytes().to_vec(),
            (_, Value::String(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
            _ => vec![],
        })
        .collect()
}

fn replay(file: &Path) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prq-worker"))
        .arg("replay")
        .arg(file)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn each_replica_stream_is_captured_and_replays_to_what_the_lane_answered() {
    let refresh = std::env::var_os("PRQ_REFRESH_CAPTURES").is_some();
    for kind in KINDS {
        let name = kind.provider();
        let replica = Replica::serve(kind).await;
        let captures = tempfile::tempdir().unwrap();
        let dir = captures.path().join("captures");
        let mut lane = Lane::start(Setup {
            capture_dir: Some(dir.clone()),
            ..Setup::site(name, &replica.url)
        })
        .await;
        lane.ready().await;
        lane.generate(
            1,
            "Say hello — in 日本語 too?\nreplica: words=5",
            Thinking::On,
        )
        .await;
        let got = lane.answer(1).await;
        assert_eq!(got.end, End::Finished(FinishReason::Completed), "{name}");
        drop(lane);

        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{name}: one stream, one capture: {files:?}");
        let replayed = replay(&files[0]);
        assert_eq!(replayed["provider"], name);
        assert_eq!(replayed["answer"], got.answer, "{name}");
        assert_eq!(replayed["reasoning"], got.reasoning, "{name}");
        assert_eq!(replayed["outcome"], "completed", "{name}: {replayed}");

        let captured = std::fs::read_to_string(&files[0]).unwrap();
        let header: Value = serde_json::from_str(captured.lines().next().unwrap()).unwrap();
        assert!(
            header["path"].as_str().unwrap().starts_with('/') && !captured.contains("Cookie"),
            "{name}: the path only, no headers: {header}"
        );
        if refresh {
            let expect = json!({"expect": {
                "answer": got.answer, "reasoning": got.reasoning, "outcome": "completed"
            }});
            std::fs::write(fixture(kind), format!("{captured}{expect}\n")).unwrap();
            continue;
        }
        let checked_in = std::fs::read_to_string(fixture(kind)).unwrap_or_default();
        assert!(
            body(&checked_in) == body(&captured),
            "{name}: tests/captures/{name}.jsonl no longer holds the replica's stream; refresh it with PRQ_REFRESH_CAPTURES=1 cargo test -p prq-worker --test lane -- captures"
        );
    }
}
