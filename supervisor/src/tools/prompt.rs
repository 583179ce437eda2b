//! What prq types into the site for tools and structured output: the declarations and
//! the reply format (a system message), a conversation's earlier calls and results in
//! the same format, and the message that asks again after a reply broke it.
//!
//! The format is prq's tool-call format ([`prq_protocol::tool_call`]): the functions as
//! JSON inside `<tools></tools>`, each call as JSON inside `<tool_call></tool_call>`,
//! each result inside `<tool_response></tool_response>`. This is the layout that
//! NousResearch's Hermes function-calling models are trained on
//! (NousResearch/Hermes-Function-Calling `prompt_assets/sys_prompt.yml`) and that Qwen's
//! chat template uses for its tool calls (Ollama's Qwen 2.5 template, quoted in
//! monodyle/blog `content/notes/250329-llm-tool-calling.md`), so the models behind chat
//! sites have met it; README "Tool calling and structured output" says more. The
//! wording of the instructions is prq's own.

use prq_protocol::tool_call;
use prq_protocol::worker::{ChatMessage, Role};
use serde_json::{json, Value};

use super::{Choice, Format, Mode, Plan};
use crate::openai::ApiError;

/// The system message that declares `plan`'s functions (or its answer format) and the
/// reply format; `None` when the plan sends nothing (`tool_choice: none`, no format).
pub fn instructions(plan: &Plan) -> Option<String> {
    match plan.mode()? {
        Mode::Calls => Some(declarations(plan)),
        Mode::Json => Some(json_instructions(&plan.format)),
    }
}

fn declarations(plan: &Plan) -> String {
    let mut text = String::from(
        "# Tools\n\nYou can call functions to help with the user's request. Their signatures, \
         with their parameters as JSON Schema, are within <tools></tools>:\n<tools>\n",
    );
    for f in &plan.functions {
        // Written by hand so that the name comes first, as models read it.
        text.push_str(&format!("{{\"name\":{}", json!(f.name)));
        if let Some(d) = &f.description {
            text.push_str(&format!(",\"description\":{}", json!(d)));
        }
        text.push_str(&format!(",\"parameters\":{}}}\n", f.parameters));
    }
    text.push_str("</tools>\n\nTo call a function, write its name and arguments as one JSON object between tags, each on a line of its own, exactly like this:\n");
    text.push_str(&tool_call::render(
        "function_name",
        r#"{"argument": "value"}"#,
    ));
    text.push_str(
        "\n\nRules:\n\
         - Call only the functions above, with arguments that match their parameters. Do not invent results.\n\
         - You may write a short text before the calls. Put the calls at the end of your reply and write nothing after them.\n\
         - Write the tags as they are: not in a code block, not quoted.\n\
         - Results come back in the next message, each within <tool_response></tool_response>.\n",
    );
    text.push_str(if plan.parallel {
        "- You may make several calls in one reply, one <tool_call> block each.\n"
    } else {
        "- Make at most one call per reply.\n"
    });
    text.push_str(&match &plan.choice {
        Choice::Required => "- In this reply you must call at least one function.".to_string(),
        Choice::Named(name) => format!("- In this reply you must call the function `{name}`."),
        Choice::Auto | Choice::None => {
            "- Call a function only when it helps; otherwise answer normally, without tags."
                .to_string()
        }
    });
    text
}

fn json_instructions(format: &Format) -> String {
    let mut text = String::from(
        "# Answer format\n\nAnswer with one JSON document and nothing else: no text before or after it, no code block.",
    );
    match format {
        Format::JsonSchema { name, schema, .. } => {
            text.push_str(&format!(
                " It must validate against this JSON Schema (named `{name}`):\n<schema>\n{schema}\n</schema>"
            ));
        }
        Format::JsonObject => text.push_str(" It must be a JSON object."),
        Format::Text => {}
    }
    text
}

/// `messages` with `plan`'s instructions added as the last system message (a flattened
/// prompt puts system messages first, so they follow the client's own).
pub fn apply(plan: &Plan, messages: &mut Vec<ChatMessage>) {
    if let Some(content) = instructions(plan) {
        let at = messages
            .iter()
            .rposition(|m| m.role == Role::System)
            .map_or(0, |i| i + 1);
        messages.insert(
            at,
            ChatMessage {
                role: Role::System,
                content,
            },
        );
    }
}

/// An assistant message that made calls, as the model would have written it: its text,
/// then each call in the format. `calls` are `message.tool_calls` as clients send them
/// back; returns the text and each call's (id, name), for the results that follow.
pub fn assistant_calls(
    content: &str,
    calls: &[Value],
) -> Result<(String, Vec<(String, String)>), ApiError> {
    let bad = |what: &str| {
        ApiError::invalid(format!("an assistant message's tool_calls: {what}")).param("messages")
    };
    let mut text = content.to_string();
    let mut ids = Vec::new();
    for call in calls {
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .filter(|n| tool_call::valid_name(n))
            .ok_or_else(|| bad("each needs `function.name`, a function's name"))?;
        // Arguments come back as the JSON text prq sent; anything else is passed on
        // as a JSON string, for the model to read.
        let arguments = match call.pointer("/function/arguments") {
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v) => v.to_string(),
                Err(_) => Value::String(s.clone()).to_string(),
            },
            None | Some(Value::Null) => "{}".to_string(),
            Some(v) => v.to_string(),
        };
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&tool_call::render(name, &arguments));
        let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
        ids.push((id.to_string(), name.to_string()));
    }
    Ok((text, ids))
}

/// A tool's result (`role: "tool"`), named by the function it answers when the call
/// is in the conversation.
pub fn tool_result(content: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("<tool_response name=\"{name}\">\n{content}\n</tool_response>"),
        None => format!("<tool_response>\n{content}\n</tool_response>"),
    }
}

/// The message that asks again, saying what was wrong.
pub fn correction(problem: &str) -> String {
    format!(
        "{} {problem}. Reply again to my previous message, following the format exactly.",
        tool_call::CORRECTION
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::weather;
    use super::*;

    #[test]
    fn declarations_name_each_function_and_the_format() {
        let plan = Plan::parse(
            Some(vec![weather()]),
            Some(json!("required")),
            Some(false),
            None,
        )
        .unwrap()
        .unwrap();
        let text = instructions(&plan).unwrap();
        assert!(text.contains(
            r#"{"name":"get_weather","description":"The weather in a city","parameters":{"#
        ));
        assert!(text.contains("<tool_call>\n{\"name\": \"function_name\""));
        assert!(text.contains("at most one call"));
        assert!(text.contains("must call at least one"));
        let mut messages = vec![
            ChatMessage {
                role: Role::System,
                content: "be brief".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "hi".into(),
            },
        ];
        apply(&plan, &mut messages);
        assert_eq!(messages[1].role, Role::System);
        assert_eq!(messages[1].content, text);
    }

    #[test]
    fn history_is_written_in_the_format() {
        let calls = [json!({"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}})];
        let (text, ids) = assistant_calls("Checking.", &calls).unwrap();
        assert_eq!(
            text,
            "Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call>"
        );
        assert_eq!(ids, [("call_1".to_string(), "get_weather".to_string())]);
        assert!(assistant_calls("", &[json!({"id": "x"})]).is_err());
        assert_eq!(
            tool_result("22 C", Some("get_weather")),
            "<tool_response name=\"get_weather\">\n22 C\n</tool_response>"
        );
        assert!(correction("`x` is not one of").starts_with(tool_call::CORRECTION));
    }
}
