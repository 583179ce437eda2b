//! What tool calling adds (`supervisor/src/tools/`): the prompt characters each declared
//! function costs, what reading a reply for calls costs per reply, and what one request
//! with tools costs end to end on an echo lane against the same request without.
//!
//! The functions are those of a coding agent: twenty, with nested schemas (objects in
//! arrays, enums, `$defs` references), as an agent sends with every request of a
//! session.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Result};
use prq::openai::Request;
use prq::runtime::{End, ReqEvent};
use prq::tools::turn::{Event, Reading};
use prq::tools::Plan;
use prq_protocol::tool_call;
use prq_protocol::worker::DeltaKind;
use prq_tests::{config, Prq};
use serde_json::{json, Value};

use crate::stats::{median, Percentiles};
use crate::table::{ms, Table, Target};

/// Functions declared: an agent's toolbox.
const TOOLS: usize = 20;
/// Replies read per timing.
const REPLIES: usize = 2_000;
/// Requests per kind through an echo lane.
const REQUESTS: usize = 300;

/// The `i`-th function of the toolbox: a few parameters, one of them an array of
/// objects, one an enum, one a `$defs` reference.
fn tool(i: usize) -> Value {
    json!({"type": "function", "function": {
        "name": format!("tool_{i:02}"),
        "description": format!("Tool number {i} of the agent: edits, searches or runs something in the workspace."),
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "A path inside the workspace"},
                "mode": {"type": "string", "enum": ["read", "write", "append"]},
                "edits": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "line": {"type": "integer", "minimum": 1},
                        "text": {"type": "string"},
                        "range": {"$ref": "#/$defs/range"},
                    },
                    "required": ["line", "text"],
                    "additionalProperties": false,
                }},
            },
            "required": ["path", "mode"],
            "additionalProperties": false,
            "$defs": {"range": {"type": "object", "properties": {
                "start": {"type": "integer"}, "end": {"type": "integer"}}}},
        },
    }})
}

/// A call's arguments; without spaces, as the sandbox's `call=` directive takes them.
fn arguments(i: usize) -> Value {
    json!({"path": format!("src/module_{i}.rs"), "mode": "write",
        "edits": [{"line": 12, "text": "let_x=1;", "range": {"start": 12, "end": 14}},
                  {"line": 40, "text": "return_x;"}]})
}

fn body(tools: usize) -> Vec<u8> {
    let mut b = json!({"model": "echo-chat", "messages": [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": "Fix the bug in module 3."}]});
    if tools > 0 {
        b["tools"] = (0..tools).map(tool).collect();
    }
    b.to_string().into_bytes()
}

fn prompt_chars(tools: usize) -> Result<usize> {
    let req = Request::parse_chat(&body(tools)).map_err(|e| anyhow::anyhow!(e.message))?;
    Ok(req.prompt_chars())
}

/// A reply with text, then two calls, in pieces of `piece` characters.
fn reply_pieces(piece: usize) -> Vec<String> {
    let mut text = String::from("I will read the module, then write the fix. ").repeat(6);
    for i in [3, 4] {
        text.push_str(&tool_call::render(
            &format!("tool_{i:02}"),
            &arguments(i).to_string(),
        ));
        text.push('\n');
    }
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(piece).map(|c| c.iter().collect()).collect()
}

/// Microseconds to read one reply (its pieces, then its end) with `plan`, per run.
fn read_reply_us(plan: &Arc<Plan>, pieces: &[String]) -> Result<Percentiles> {
    let mut samples = Vec::with_capacity(REPLIES);
    for _ in 0..REPLIES {
        let started = Instant::now();
        let mut reading = Reading::new(plan.clone()).expect("a plan with tools");
        let mut out = std::collections::VecDeque::new();
        for p in pieces {
            let event = ReqEvent::Delta {
                kind: DeltaKind::Answer,
                text: p.clone(),
            };
            ensure!(
                reading.take(event, &mut out).is_none(),
                "no problem mid-reply"
            );
        }
        let problem = reading.take(ReqEvent::End(End::Completed), &mut out);
        samples.push(started.elapsed().as_secs_f64() * 1e6);
        ensure!(problem.is_none(), "the reply checks: {problem:?}");
        ensure!(
            out.iter()
                .any(|e| matches!(e, Event::Calls(c) if c.len() == 2)),
            "two calls read"
        );
    }
    Ok(Percentiles::of(samples))
}

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("tools: what tool calling adds");
    let plain = prompt_chars(0)?;
    let one = prompt_chars(1)?;
    let all = prompt_chars(TOOLS)?;
    let per_tool = (all - one) as f64 / (TOOLS - 1) as f64;
    let schema_chars = tool(1)["function"]["parameters"]
        .to_string()
        .chars()
        .count()
        + tool(1)["function"]["description"]
            .as_str()
            .unwrap_or("")
            .chars()
            .count();
    table.info(
        "prompt characters of the instructions (format and rules, one tool's worth taken out)",
        format!("{:.0}", (one - plain) as f64 - per_tool),
    );
    table.check(
        format!("prompt characters per declared tool, beyond its own schema and description ({schema_chars} here)"),
        format!("{:.0}", per_tool - schema_chars as f64),
        per_tool - schema_chars as f64,
        Target::Below(60.0, "chars"),
    );
    table.info(
        format!("prompt of a two-message request: no tools / {TOOLS} tools"),
        format!("{plain} / {all} chars"),
    );

    let mut parses = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        Request::parse_chat(&body(TOOLS)).map_err(|e| anyhow::anyhow!(e.message))?;
        parses.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut plain_parses = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        Request::parse_chat(&body(0)).map_err(|e| anyhow::anyhow!(e.message))?;
        plain_parses.push(t.elapsed().as_secs_f64() * 1e3);
    }
    table.info(
        format!(
            "reading a request: {TOOLS} tools (schemas compiled, prompt written) / none, median"
        ),
        format!("{} / {}", ms(median(&parses)), ms(median(&plain_parses))),
    );

    let plan = Arc::new(
        Plan::parse(Some((0..TOOLS).map(tool).collect()), None, None, None)
            .map_err(|e| anyhow::anyhow!(e.message))?
            .expect("tools in play"),
    );
    for piece in [8, 64] {
        let pieces = reply_pieces(piece);
        let p = read_reply_us(&plan, &pieces)?;
        table.check(
            format!(
                "parse overhead per reply: text + 2 calls, {} pieces of {piece} chars (p50, p99 of {})",
                pieces.len(),
                p.n
            ),
            format!("{:.0} µs, {:.0} µs", p.p50, p.p99),
            p.p50,
            Target::Below(1000.0, "µs"),
        );
    }

    end_to_end(table).await
}

/// One echo lane: a request with the toolbox whose reply is two calls, against the same
/// request without tools answering about as many characters, in turns.
async fn end_to_end(table: &mut Table) -> Result<()> {
    let prq = Prq::start(&config("serial", &[("echo", "echo", "a")]));
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", prq.api);
    let calls = format!(
        "sandbox: delay_ms=0 call=tool_03:{} call=tool_04:{}",
        arguments(3),
        arguments(4)
    );
    let with_tools = {
        let mut b: Value = serde_json::from_slice(&body(TOOLS))?;
        b["messages"][1]["content"] = json!(calls);
        b
    };
    let without = json!({"model": "echo-chat", "messages": [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": "sandbox: delay_ms=0 tokens=40"}]});
    let (mut tooled, mut plain) = (Vec::new(), Vec::new());
    for i in 0..REQUESTS * 2 + 20 {
        let (b, into) = if i % 2 == 0 {
            (&with_tools, &mut tooled)
        } else {
            (&without, &mut plain)
        };
        let t = Instant::now();
        let v: Value = client.post(&url).json(b).send().await?.json().await?;
        let elapsed = t.elapsed().as_secs_f64() * 1e3;
        if i >= 20 {
            into.push(elapsed);
        }
        if b == &with_tools {
            ensure!(
                v["choices"][0]["finish_reason"] == "tool_calls",
                "the echo lane called: {v}"
            );
        }
    }
    let (t, p) = (Percentiles::of(tooled), Percentiles::of(plain));
    table.check(
        format!(
            "echo lane, one request: {TOOLS} tools and 2 calls / plain text (p50, {} each)",
            t.n
        ),
        format!("{} / {} (+{})", ms(t.p50), ms(p.p50), ms(t.p50 - p.p50)),
        t.p50 - p.p50,
        Target::Below(5.0, "ms"),
    );
    prq.stop();
    Ok(())
}
