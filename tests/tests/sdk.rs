//! The official OpenAI Python SDK works against prq unchanged (base URL pointed at it).
//! The README's test command installs the `openai` package.

use prq_protocol::script;
use prq_tests::{config, Prq};
use serde_json::Value;

#[test]
fn the_openai_python_sdk_works_unchanged() {
    let prq = Prq::start(&config(
        "concurrent",
        &[("echo", "a", "x"), ("echo", "b", "y")],
    ));
    let script_path = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/openai_client.py");
    let out = std::process::Command::new("python3")
        .args([script_path, &format!("{}/v1", prq.api), "a-chat"])
        .output()
        .expect("python3 runs (the README's test command installs it with the openai package)");
    assert!(
        out.status.success(),
        "the SDK script failed (is the `openai` package installed? `pip install openai`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON line");
    let prompt = "sdk check\nsandbox: tokens=4 delay_ms=0";
    let expected = script::expected(prompt, false).unwrap().1;
    assert_eq!(seen["whole"], expected.as_str());
    assert_eq!(seen["finish"], "stop");
    assert_eq!(seen["streamed"], expected.as_str());
    assert_eq!(seen["completion"], expected.as_str());
    assert!(seen["usage"][0].as_u64().unwrap() > 0);
    assert_eq!(seen["not_found"], 404);
    assert_eq!(seen["models"].as_array().unwrap().len(), 6);
}

/// What both SDKs must have seen of `tests/sdk/openai_tools.*` (the same scenes).
fn check_tool_scenes(sdk: &str, seen: &Value) {
    let first = &seen["first"];
    assert_eq!(first["finish"], "tool_calls", "{sdk}: {seen}");
    assert_eq!(first["name"], "get_weather", "{sdk}");
    assert_eq!(
        first["arguments"],
        serde_json::json!({"city": "Paris"}),
        "{sdk}"
    );
    assert!(first["id"].as_str().unwrap().starts_with("call_"), "{sdk}");
    // The sandbox answers a tool's result by echoing what it read: the result, named.
    assert_eq!(seen["final"]["finish"], "stop", "{sdk}");
    let content = seen["final"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("<tool_response name=\"get_weather\">\n22 C\n</tool_response>"),
        "{sdk}: {content}"
    );
    let streamed = &seen["streamed"];
    assert_eq!(streamed["finish"], "tool_calls", "{sdk}");
    let calls = streamed["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{sdk}: {streamed}");
    assert_eq!(calls[0]["name"], "get_weather");
    assert_eq!(calls[0]["arguments"], r#"{"city":"Oslo"}"#);
    assert_eq!(calls[1]["name"], "get_time");
    assert_eq!(calls[1]["arguments"], r#"{"zone":"CET"}"#);
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert_eq!(seen["retried"], r#"{"city":"Rome"}"#, "{sdk}");
    assert_eq!(
        seen["none"]["content"], "Just talk\nsandbox: tokens=1 delay_ms=0 lorem",
        "{sdk}"
    );
    assert_eq!(seen["none"]["tool_calls"], Value::Null, "{sdk}");
    assert_eq!(seen["named"], "get_time", "{sdk}");
    assert_eq!(seen["required"]["status"], 502, "{sdk}");
    assert_eq!(seen["required"]["code"], "tool_call_missing", "{sdk}");
    assert_eq!(
        seen["json"],
        serde_json::json!({"x": 3, "label": "three"}),
        "{sdk}"
    );
}

/// Runs an SDK script; its JSON line.
fn run_sdk_script(program: &str, args: &[&str], what: &str) -> Value {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs ({what}): {e}"));
    assert!(
        out.status.success(),
        "the {what} script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script's JSON line")
}

fn sandbox_lane() -> Prq {
    Prq::start(&config("serial", &[("sandbox", "sandbox", "a")]))
}

#[test]
fn tool_calls_work_with_the_openai_python_sdk() {
    let prq = sandbox_lane();
    let script_path = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/openai_tools.py");
    let base = format!("{}/v1", prq.api);
    let seen = run_sdk_script(
        "python3",
        &[script_path, &base, "sandbox-chat"],
        "OpenAI Python SDK (`pip install openai`)",
    );
    check_tool_scenes("python", &seen);
}

/// The official Node SDK (npm `openai`), which `scripts/install-deps.sh --test` keeps in
/// a cache directory outside the repository (or `PRQ_OPENAI_NODE`).
#[test]
fn tool_calls_work_with_the_openai_node_sdk() {
    let dir = std::env::var("PRQ_OPENAI_NODE").unwrap_or_else(|_| {
        let cache = std::env::var("XDG_CACHE_HOME")
            .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap_or_default()));
        format!("{cache}/prq-test/openai-node-{OPENAI_NODE_VERSION}")
    });
    assert!(
        std::path::Path::new(&dir)
            .join("node_modules/openai")
            .is_dir(),
        "the OpenAI Node SDK is not in {dir}: run `bash scripts/install-deps.sh --test`"
    );
    let prq = sandbox_lane();
    let script_path = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/openai_tools.cjs");
    let base = format!("{}/v1", prq.api);
    let seen = run_sdk_script(
        "node",
        &[script_path, &dir, &base, "sandbox-chat"],
        "OpenAI Node SDK",
    );
    check_tool_scenes("node", &seen);
}

/// The Node SDK's version `scripts/install-deps.sh --test` installs (the newest 6.x:
/// 7.x asks for Node 22, Debian's is older).
const OPENAI_NODE_VERSION: &str = "6.49.0";
