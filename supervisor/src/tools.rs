//! Tool calling and structured output over any chat site, in OpenAI terms.
//!
//! A chat site takes text and gives text back, so prq does here, once for every site,
//! what an API with native tools does in its model server: the declared functions and a
//! strict reply format go into the prompt ([`prompt`]), the reply is read as it streams
//! and its calls are held back until complete ([`reader`]), each call is checked against
//! its function's JSON schema ([`check`]), and a reply that breaks the format is asked
//! for again once, saying what was wrong ([`turn`]). `response_format` goes through the
//! same machinery: the instructions, then the answer checked as JSON (and against the
//! schema), with the same one retry.
//!
//! This file holds what the client asked for ([`Plan`]), read from the request by
//! `openai.rs`; `api.rs` reads the answer through a [`turn::Turn`].

pub mod check;
pub mod prompt;
pub mod reader;
pub mod turn;

use jsonschema::Validator;
use prq_protocol::tool_call;
use serde_json::Value;

use crate::openai::ApiError;

/// One declared function.
pub struct Function {
    pub name: String,
    pub description: Option<String>,
    /// Its JSON schema, as the client gave it.
    pub parameters: Value,
    validator: Validator,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The model decides (the default with tools).
    Auto,
    /// No call: the declarations are not sent.
    None,
    /// At least one call.
    Required,
    /// A call of this function.
    Named(String),
}

/// `response_format`.
#[derive(Debug)]
pub enum Format {
    Text,
    /// Any JSON document.
    JsonObject,
    /// JSON that validates against the schema.
    JsonSchema {
        name: String,
        schema: Value,
        validator: Box<Validator>,
    },
}

/// What a chat request asked for beyond text: its functions, the tool choice, whether
/// calls may come several at once, and the answer's format.
#[derive(Debug)]
pub struct Plan {
    pub functions: Vec<Function>,
    pub choice: Choice,
    pub parallel: bool,
    pub format: Format,
}

/// What a reply is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Text and tool calls: text streams as it comes, calls are held back.
    Calls,
    /// One JSON document: held back until it is whole and checked.
    Json,
}

impl Plan {
    /// Reads `tools`, `tool_choice`, `parallel_tool_calls` and `response_format`; `None`
    /// when they ask for nothing beyond text. Every mistake is a 400 naming the
    /// parameter.
    pub fn parse(
        tools: Option<Vec<Value>>,
        choice: Option<Value>,
        parallel: Option<bool>,
        format: Option<Value>,
    ) -> Result<Option<Self>, ApiError> {
        let functions = tools
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, tool)| function(i, tool))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, f) in functions.iter().enumerate() {
            if functions[..i].iter().any(|g| g.name == f.name) {
                return Err(ApiError::invalid(format!(
                    "two tools are named `{}`; each function needs a name of its own",
                    f.name
                ))
                .param("tools"));
            }
        }
        let choice = parse_choice(choice, &functions)?;
        let format = parse_format(format)?;
        let plan = Self {
            functions,
            choice,
            parallel: parallel.unwrap_or(true),
            format,
        };
        Ok(plan.mode().is_some().then_some(plan))
    }

    /// What the reply is read for; `None`: plain text.
    pub fn mode(&self) -> Option<Mode> {
        if !self.functions.is_empty() && self.choice != Choice::None {
            return Some(Mode::Calls);
        }
        match self.format {
            Format::Text => None,
            Format::JsonObject | Format::JsonSchema { .. } => Some(Mode::Json),
        }
    }

    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }
}

fn function(i: usize, tool: &Value) -> Result<Function, ApiError> {
    let bad = |what: String| ApiError::invalid(format!("tools[{i}]: {what}")).param("tools");
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(bad(format!(
                "tools of type {other:?} are not supported; only \"function\""
            )))
        }
        None => return Err(bad("needs `\"type\": \"function\"`".into())),
    }
    let f = tool
        .get("function")
        .filter(|f| f.is_object())
        .ok_or_else(|| bad("needs a `function` object with its `name`".into()))?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("`function.name` is required".into()))?;
    if !tool_call::valid_name(name) {
        return Err(bad(format!(
            "`{name}` is not a valid function name: use letters, digits, _ and -, at most 64"
        )));
    }
    let description = match f.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => return Err(bad("`function.description` must be a string".into())),
    };
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
        Some(p) if p.is_object() => p.clone(),
        Some(_) => {
            return Err(bad(
                "`function.parameters` must be a JSON schema object".into()
            ))
        }
    };
    let validator = check::compile(&parameters).map_err(|e| {
        bad(format!(
            "the parameters of `{name}` are not a usable JSON schema: {e}"
        ))
    })?;
    Ok(Function {
        name: name.to_string(),
        description,
        parameters,
        validator,
    })
}

fn parse_choice(choice: Option<Value>, functions: &[Function]) -> Result<Choice, ApiError> {
    let bad = |what: String| ApiError::invalid(what).param("tool_choice");
    let choice = match choice {
        None | Some(Value::Null) => return Ok(Choice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Choice::Auto,
            "none" => Choice::None,
            "required" => Choice::Required,
            other => {
                return Err(bad(format!(
                    "unknown tool_choice {other:?}; use \"auto\", \"none\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                )))
            }
        },
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    bad("a tool_choice object needs {\"type\": \"function\", \"function\": {\"name\": ...}}".into())
                })?;
            if !functions.iter().any(|f| f.name == name) {
                return Err(bad(format!(
                    "tool_choice names `{name}`, which is not among the declared tools"
                )));
            }
            Choice::Named(name.to_string())
        }
    };
    if functions.is_empty() && matches!(choice, Choice::Required | Choice::Named(_)) {
        return Err(bad(
            "tool_choice asks for a call, but no tools are declared".into(),
        ));
    }
    Ok(choice)
}

fn parse_format(format: Option<Value>) -> Result<Format, ApiError> {
    let bad = |what: String| ApiError::invalid(what).param("response_format");
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(Format::Text);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(Format::Text),
        Some("json_object") => Ok(Format::JsonObject),
        Some("json_schema") => {
            let spec = format
                .get("json_schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    bad("json_schema needs a `json_schema` object with `name` and `schema`".into())
                })?;
            let name = spec
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("answer")
                .to_string();
            let schema = spec
                .get("schema")
                .filter(|s| s.is_object())
                .cloned()
                .ok_or_else(|| bad("json_schema needs a `schema` object".into()))?;
            let validator = check::compile(&schema).map_err(|e| {
                bad(format!(
                    "the schema of `{name}` is not a usable JSON schema: {e}"
                ))
            })?;
            Ok(Format::JsonSchema {
                name,
                schema,
                validator: Box::new(validator),
            })
        }
        other => Err(bad(format!(
            "unknown response_format type {:?}; use \"text\", \"json_object\" or \"json_schema\"",
            other.unwrap_or("")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn weather() -> Value {
        json!({"type": "function", "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }})
    }

    #[test]
    fn tools_and_choices_are_read() {
        let plan = Plan::parse(Some(vec![weather()]), None, None, None)
            .unwrap()
            .unwrap();
        assert_eq!(plan.choice, Choice::Auto);
        assert!(plan.parallel);
        assert_eq!(plan.mode(), Some(Mode::Calls));
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let plan = Plan::parse(Some(vec![weather()]), Some(named), Some(false), None)
            .unwrap()
            .unwrap();
        assert_eq!(plan.choice, Choice::Named("get_weather".into()));
        assert!(!plan.parallel);
        // `none` with no response_format: nothing to read for.
        let none = Plan::parse(Some(vec![weather()]), Some(json!("none")), None, None).unwrap();
        assert!(none.is_none());
        assert!(Plan::parse(None, None, None, None).unwrap().is_none());
        let json = Plan::parse(None, None, None, Some(json!({"type": "json_object"})))
            .unwrap()
            .unwrap();
        assert_eq!(json.mode(), Some(Mode::Json));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                Some(vec![json!({"type": "retrieval"})]),
                None,
                None,
                "retrieval",
            ),
            (
                Some(vec![
                    json!({"type": "function", "function": {"name": "a b"}}),
                ]),
                None,
                None,
                "a b",
            ),
            (Some(vec![weather(), weather()]), None, None, "two tools"),
            (Some(vec![weather()]), Some(json!("always")), None, "always"),
            (
                Some(vec![weather()]),
                Some(json!({"type": "function", "function": {"name": "nope"}})),
                None,
                "nope",
            ),
            (None, Some(json!("required")), None, "no tools"),
            (None, None, Some(json!({"type": "yaml"})), "yaml"),
            (
                None,
                None,
                Some(json!({"type": "json_schema", "json_schema": {"name": "x"}})),
                "schema",
            ),
            (
                Some(vec![
                    json!({"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}),
                ]),
                None,
                None,
                "usable JSON schema",
            ),
        ];
        for (tools, choice, format, needle) in cases {
            let e = Plan::parse(tools, choice, None, format).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.message.contains(needle), "{needle}: {}", e.message);
        }
    }
}
