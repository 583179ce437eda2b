//! Checking what a reply holds: each call names a declared function and its arguments
//! validate against that function's JSON schema; a structured answer parses as JSON and
//! validates against the request's schema. What is wrong comes back in words a model
//! can act on, since it goes into the retry's prompt (and the `x-prq-tool-error`
//! header).

use jsonschema::Validator;
use serde_json::{json, Value};

use super::{Choice, Format, Plan};

/// Schema errors named per check; a model fixes a few at a time, and the header stays
/// short.
const ERRORS_NAMED: usize = 3;

/// A checked call, as the client gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// `call_` and 24 random hex digits.
    pub id: String,
    pub name: String,
    /// The arguments, as compact JSON text.
    pub arguments: String,
}

impl ToolCall {
    /// The call as `message.tool_calls[]` has it.
    pub fn to_openai(&self) -> Value {
        json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
    }
}

/// A fresh call ID. Clients send it back with the tool's result, and some keep one
/// table of IDs across a session, so it is random rather than counted.
fn call_id() -> String {
    let mut bytes = [0u8; 12];
    // Without the system's randomness (never seen on Linux) the IDs only repeat more
    // easily; the call itself is still fine.
    let _ = getrandom::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("call_{hex}")
}

/// Compiles a client's schema. Remote references are not fetched (the crate's HTTP
/// resolver is left out): such a schema is refused when the request is read.
pub fn compile(schema: &Value) -> Result<Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

/// `value` against `validator`: `Err` names the first few mismatches and where.
fn validate(validator: &Validator, value: &Value) -> Result<(), String> {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .take(ERRORS_NAMED)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("at {at}: {e}")
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// One call's text (what stood between the tags) checked against the plan.
pub fn call(plan: &Plan, raw: &str) -> Result<ToolCall, String> {
    let value: Value = serde_json::from_str(raw.trim()).map_err(|e| {
        format!(
            "a tool call is not valid JSON ({e}); write {{\"name\": ..., \"arguments\": {{...}}}}"
        )
    })?;
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a tool call has no \"name\"")?;
    let function = plan.function(name).ok_or_else(|| {
        let known: Vec<&str> = plan.functions.iter().map(|f| f.name.as_str()).collect();
        format!(
            "`{name}` is not one of the functions you may call ({})",
            known.join(", ")
        )
    })?;
    if let Choice::Named(wanted) = &plan.choice {
        if wanted != name {
            return Err(format!("you were asked to call `{wanted}`, not `{name}`"));
        }
    }
    // Some models write the arguments as a JSON string of the object, as the OpenAI API
    // itself carries them: that is read as the object it holds.
    let arguments = match value.get("arguments").or_else(|| value.get("parameters")) {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) => serde_json::from_str(s)
            .map_err(|e| format!("the arguments of `{name}` are not valid JSON ({e})"))?,
        Some(v) => v.clone(),
    };
    if !arguments.is_object() {
        return Err(format!("the arguments of `{name}` must be a JSON object"));
    }
    validate(&function.validator, &arguments)
        .map_err(|e| format!("the arguments of `{name}` do not match its parameters: {e}"))?;
    Ok(ToolCall {
        id: call_id(),
        name: name.to_string(),
        arguments: arguments.to_string(),
    })
}

/// A structured answer: the JSON text the client gets, or what is wrong with it.
/// Chat sites' models often fence JSON in a Markdown code block; the fence is taken
/// off.
pub fn json_answer(format: &Format, text: &str) -> Result<String, String> {
    let body = unfenced(text.trim());
    let value: Value = serde_json::from_str(body).map_err(|e| {
        format!("the answer is not valid JSON ({e}); reply with the JSON document only")
    })?;
    match format {
        Format::JsonSchema {
            validator, name, ..
        } => validate(validator, &value)
            .map_err(|e| format!("the answer does not match the schema `{name}`: {e}"))?,
        Format::JsonObject if !value.is_object() => {
            return Err("the answer must be a JSON object".into())
        }
        _ => {}
    }
    Ok(body.to_string())
}

/// `text` without a surrounding Markdown code fence (```json ... ```).
fn unfenced(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let Some(body) = rest.strip_suffix("```") else {
        return text;
    };
    // The fence's first line may name a language.
    body.split_once('\n').map_or(body, |(_, b)| b).trim()
}

#[cfg(test)]
mod tests {
    use super::super::tests::weather;
    use super::*;

    fn plan(choice: Option<Value>) -> Plan {
        Plan::parse(Some(vec![weather()]), choice, None, None)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_valid_call_gets_an_id_and_compact_arguments() {
        let c = call(
            &plan(None),
            r#" {"name": "get_weather", "arguments": {"city": "Paris"}} "#,
        )
        .unwrap();
        assert_eq!(
            (c.name.as_str(), c.arguments.as_str()),
            ("get_weather", r#"{"city":"Paris"}"#)
        );
        assert!(c.id.starts_with("call_") && c.id.len() == 29, "{}", c.id);
        let other = call(
            &plan(None),
            r#"{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}"#,
        )
        .unwrap();
        assert_eq!(other.arguments, r#"{"city":"Rome"}"#);
        assert_ne!(c.id, other.id);
    }

    #[test]
    fn what_is_wrong_is_said() {
        let p = plan(None);
        for (raw, needle) in [
            ("{nope", "not valid JSON"),
            (r#"{"arguments": {}}"#, "no \"name\""),
            (
                r#"{"name": "get_time", "arguments": {}}"#,
                "`get_time` is not one of",
            ),
            (
                r#"{"name": "get_weather", "arguments": {}}"#,
                "\"city\" is a required property",
            ),
            (
                r#"{"name": "get_weather", "arguments": {"city": ["Paris"]}}"#,
                "at /city",
            ),
            (
                r#"{"name": "get_weather", "arguments": [1]}"#,
                "must be a JSON object",
            ),
        ] {
            let e = call(&p, raw).unwrap_err();
            assert!(e.contains(needle), "{raw}: {e}");
        }
        let named = plan(Some(
            json!({"type": "function", "function": {"name": "get_weather"}}),
        ));
        assert!(call(
            &named,
            r#"{"name": "get_weather", "arguments": {"city": "x"}}"#
        )
        .is_ok());
    }

    #[test]
    fn json_answers_are_unfenced_and_checked() {
        let schema = Plan::parse(
            None,
            None,
            None,
            Some(json!({"type": "json_schema", "json_schema": {"name": "point", "strict": true,
                "schema": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "additionalProperties": false}}})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            json_answer(&schema.format, "```json\n{\"x\": 1}\n```").unwrap(),
            "{\"x\": 1}"
        );
        let e = json_answer(&schema.format, r#"{"x": "one"}"#).unwrap_err();
        assert!(e.contains("point") && e.contains("/x"), "{e}");
        assert!(json_answer(&Format::JsonObject, "[1]").is_err());
        assert!(json_answer(&Format::JsonObject, "sure! {}")
            .unwrap_err()
            .contains("not valid JSON"));
    }
}
