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
