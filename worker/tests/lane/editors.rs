//! The prompt typed into real editors: the GLM replica's prompt box `#chat-input` as a
//! textarea, a Lexical plain-text editor (`lexical` with `@lexical/plain-text`) and a
//! TipTap editor (`@tiptap/core` with `@tiptap/starter-kit`), each sending on Enter. The
//! prompt the site receives is what the editor holds at Send (the page reads it through
//! the editor's own API); it must be the prompt exactly, sent once. `prq doctor
//! --type-check` reads each kind of box back exactly and sends nothing.
//!
//! The editor libraries are not kept in the repository: `scripts/install-deps.sh --test`
//! installs them with esbuild into a cache directory (or `PRQ_EDITORS` names one), and
//! the test bundles `tests/editors/<editor>.js` with them.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use prq_protocol::worker::{FinishReason, FromWorker, Thinking, ToWorker};

use crate::replica::{answer_pieces, Kind, PromptBox, Replica};
use crate::support::{End, Lane, Setup, PROMPTLY};

/// The cache directory's version tag; `scripts/install-deps.sh` names the same.
const EDITORS_VERSION: &str = "lexical-0.53.0-tiptap-3.35.0";

/// Where the editor libraries and esbuild are: `PRQ_EDITORS`, else where install-deps
/// puts them.
fn editors_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PRQ_EDITORS") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join(format!("prq-test/editors-{EDITORS_VERSION}"))
}

/// `tests/editors/<name>.js` bundled with its libraries into one page script.
fn bundle(name: &str) -> Arc<str> {
    let dir = editors_dir();
    let modules = dir.join("node_modules");
    let entry = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/editors/{name}.js"));
    let out = Command::new(modules.join(".bin/esbuild"))
        .arg(&entry)
        .args(["--bundle", "--format=iife", "--minify", "--log-level=warning"])
        .arg("--define:process.env.NODE_ENV=\"production\"")
        .env("NODE_PATH", &modules)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "esbuild is not in {} ({e}): run `bash scripts/install-deps.sh --test`, or set PRQ_EDITORS",
                dir.display()
            )
        });
    assert!(
        out.status.success(),
        "bundling {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().into()
}

/// Prompts that editors are known to change: blank lines, leading spaces and tabs,
/// markdown with a code fence and tags, unicode, and a flattened conversation.
fn prompts() -> Vec<String> {
    let conversation = [
        "System: You are Lin, a tea-house keeper in Chengdu.\n\n",
        "User: 你好，林老板！今天有什么茶？\n\n",
        "Assistant: *wipes the counter*  \"Good morning!\" 今天有新到的竹叶青。\n\n",
        "User: <ooc>keep it short</ooc>\n  Two cups, please.\n\n",
    ]
    .concat();
    vec![
        "one line".to_owned(),
        "first\n\n\nafter two blank lines\n".to_owned(),
        "  two leading spaces\n\ta tab\n    four spaces\tand a tab inside".to_owned(),
        "```rust\nfn main() {\n    println!(\"<hi>\");\n}\n```\n<tag attr=\"x\">text</tag> & &amp; <br>".to_owned(),
        "é 日本語 👩‍👩‍👧‍👦 🎉 שָׁלוֹם مرحبا — “quotes”".to_owned(),
        format!("{conversation}Assistant:"),
        // Long enough that an editor typed into in pieces would show the cuts.
        format!("{}Assistant:", conversation.repeat(60)),
    ]
}

async fn every_prompt_exact(prompt_box: PromptBox, what: &str) {
    let replica = Replica::serve(Kind::Glm).await;
    replica.set_prompt_box(prompt_box);
    let mut lane = Lane::start(Setup::site("glm", &replica.url)).await;
    assert_eq!(lane.ready_logged_in().await.1, Some(true), "{what}");

    // `prq doctor --type-check`: the probe is typed and read back exactly, and nothing
    // is sent.
    let dir = tempfile::tempdir().unwrap();
    lane.send(ToWorker::Doctor {
        dir: dir.path().to_owned(),
        type_check: true,
    })
    .await;
    let report = match lane.recv().await {
        FromWorker::Doctor { report } => report.expect("the page is checked"),
        other => panic!("{what}: expected the doctor's report, got {other:?}"),
    };
    let typing = report.typing.expect("a type check");
    assert!(typing.exact, "{what}: {}", typing.detail);
    assert!(
        replica.served().is_empty(),
        "{what}: the type check sent nothing"
    );

    for (id, prompt) in (1..).zip(prompts()) {
        let prompt = format!("{prompt}\nreplica: words=1");
        lane.generate(id, &prompt, Thinking::Off).await;
        let got = lane.answer(id).await;
        assert_eq!(got.end, End::Finished(FinishReason::Completed), "{what}");
        assert_eq!(got.answer, answer_pieces(1).concat(), "{what}");
        let served = replica.served();
        assert_eq!(served.len(), id as usize, "{what}: one send per prompt");
        let last = &served[id as usize - 1];
        assert_eq!(last.editor, what != "textarea", "{what}: the page's editor");
        assert_eq!(last.prompt, prompt, "{what}");
    }
    lane.send(ToWorker::Shutdown).await;
    assert_eq!(lane.exit_within(PROMPTLY).await.code(), Some(0));
}

#[tokio::test]
async fn a_textarea_holds_the_prompt_exactly_at_send() {
    every_prompt_exact(PromptBox::Textarea, "textarea").await;
}

#[tokio::test]
async fn a_lexical_editor_holds_the_prompt_exactly_at_send() {
    every_prompt_exact(PromptBox::Editor(bundle("lexical")), "lexical").await;
}

#[tokio::test]
async fn a_tiptap_editor_holds_the_prompt_exactly_at_send() {
    every_prompt_exact(PromptBox::Editor(bundle("tiptap")), "tiptap").await;
}
