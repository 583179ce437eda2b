//! The OpenAI wire format: requests as clients send them, responses and stream chunks
//! as SDKs expect them, and the error object. Only shapes live here; `api.rs` decides.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use prq_protocol::controls::Settings;
use prq_protocol::worker::{ChatMessage, Role};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::attachments;
use crate::tools::{self, check::ToolCall, Plan};

/// An API error: one OpenAI error object and its HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
    pub message: String,
    /// For a 429: the `Retry-After` header, in seconds.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: None,
            param: None,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_s = Some(secs);
        self
    }

    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    image_url: Option<ImageUrl>,
    #[serde(default)]
    file: Option<FilePart>,
}

/// An `image_url` part's image: `{"url": ...}` as the API defines it, or the bare URL
/// some clients send.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ImageUrl {
    Object { url: String },
    Bare(String),
}

#[derive(Debug, Deserialize)]
struct FilePart {
    #[serde(default)]
    file_data: Option<String>,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    file_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    /// An assistant message's calls, as prq (or another API) gave them.
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    /// A tool message: the call it answers.
    #[serde(default)]
    tool_call_id: Option<String>,
    /// A (legacy) function message: the function it answers.
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The fields prq acts on; every other field an SDK sends is accepted and ignored.
#[derive(Debug, Deserialize)]
struct RawChatRequest {
    model: Option<String>,
    messages: Option<Vec<InMessage>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop: Option<Prompt>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    response_format: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct RawCompletionRequest {
    model: Option<String>,
    prompt: Option<Prompt>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop: Option<Prompt>,
}

/// Which endpoint a request came in on; it decides the response shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub stream: bool,
    pub include_usage: bool,
    /// The `stop` strings (empty ones dropped): the answer ends before the first of them.
    pub stop: Vec<String>,
    /// Tools and the answer's format, when the request asks for either
    /// (`supervisor/src/tools/`); its instructions are already in `messages`.
    pub plan: Option<Arc<Plan>>,
    /// Sampling settings, for a page that has fields for them (`controls.rs`).
    pub settings: Settings,
    /// `tools` held a Google-search tool: turn the site's search on.
    pub search_tool: bool,
    /// The `image_url` and `file` parts, in order (`supervisor/src/attachments`).
    pub attachments: Vec<attachments::Part>,
    /// The index of the last user message: whose attachments go to the site by default.
    pub last_user: Option<usize>,
}

/// A JSON type a request parameter may have (`null` is always allowed: SDKs send it
/// for "not set").
#[derive(Debug, Clone, Copy)]
enum JsonType {
    Str,
    Bool,
    Int,
    Number,
    Array,
    Object,
    StrOrArray,
    StrOrObject,
}

impl JsonType {
    fn admits(self, v: &Value) -> bool {
        match self {
            JsonType::Str => v.is_string(),
            JsonType::Bool => v.is_boolean(),
            JsonType::Int => v.is_i64() || v.is_u64(),
            JsonType::Number => v.is_number(),
            JsonType::Array => v.is_array(),
            JsonType::Object => v.is_object(),
            JsonType::StrOrArray => v.is_string() || v.is_array(),
            JsonType::StrOrObject => v.is_string() || v.is_object(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::Str => "a string",
            JsonType::Bool => "true or false",
            JsonType::Int => "a whole number",
            JsonType::Number => "a number",
            JsonType::Array => "an array",
            JsonType::Object => "an object",
            JsonType::StrOrArray => "a string or an array",
            JsonType::StrOrObject => "a string or an object",
        }
    }
}

/// The OpenAI request parameters and their types. prq acts on a few of them; the
/// others (sampling: a chat site decides its own) are accepted and ignored, but a value
/// of the wrong type is still a mistake the client should hear about, by name.
const PARAMS: &[(&str, JsonType)] = &[
    ("model", JsonType::Str),
    ("messages", JsonType::Array),
    ("prompt", JsonType::StrOrArray),
    ("stream", JsonType::Bool),
    ("stream_options", JsonType::Object),
    ("n", JsonType::Int),
    ("max_tokens", JsonType::Int),
    ("max_completion_tokens", JsonType::Int),
    ("temperature", JsonType::Number),
    ("top_p", JsonType::Number),
    ("presence_penalty", JsonType::Number),
    ("frequency_penalty", JsonType::Number),
    ("seed", JsonType::Int),
    ("stop", JsonType::StrOrArray),
    ("logprobs", JsonType::Bool),
    ("top_logprobs", JsonType::Int),
    ("logit_bias", JsonType::Object),
    ("user", JsonType::Str),
    ("response_format", JsonType::Object),
    ("tools", JsonType::Array),
    ("tool_choice", JsonType::StrOrObject),
    ("parallel_tool_calls", JsonType::Bool),
    ("best_of", JsonType::Int),
    ("echo", JsonType::Bool),
    ("suffix", JsonType::Str),
];

fn json_type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A parameter of the wrong type: 400 naming it.
fn check_types(request: &Value) -> Result<(), ApiError> {
    let Some(fields) = request.as_object() else {
        return Ok(()); // the typed parse says what is wrong
    };
    for &(name, want) in PARAMS {
        match fields.get(name) {
            Some(v) if !v.is_null() && !want.admits(v) => {
                return Err(ApiError::invalid(format!(
                    "`{name}` must be {}, not {}",
                    want.name(),
                    json_type_of(v)
                ))
                .param(name))
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let invalid = |e: serde_json::Error| {
        ApiError::invalid(format!(
            "the request body is not valid JSON for this endpoint: {e}"
        ))
    };
    let value: Value = serde_json::from_slice(body).map_err(invalid)?;
    check_types(&value)?;
    serde_json::from_value(value).map_err(invalid)
}

fn check_n(n: Option<u64>) -> Result<(), ApiError> {
    match n {
        None | Some(1) => Ok(()),
        Some(n) => Err(ApiError::invalid(format!(
            "n = {n} is not supported: a chat site gives one answer per request; use n = 1"
        ))
        .param("n")),
    }
}

/// Chat sites decide their answer's length themselves; a token limit is accepted for
/// compatibility, but it must make sense.
fn check_max_tokens(param: &'static str, value: Option<i64>) -> Result<(), ApiError> {
    match value {
        Some(v) if !(1..=1_000_000).contains(&v) => Err(ApiError::invalid(format!(
            "{param} = {v} is out of range; use a whole number from 1 to 1000000, or leave it out"
        ))
        .param(param)),
        _ => Ok(()),
    }
}

/// The sampling settings a page may have fields for (their types and the token
/// limit's range are checked before).
fn settings(temperature: Option<f64>, top_p: Option<f64>, max_tokens: Option<i64>) -> Settings {
    Settings {
        temperature,
        top_p,
        max_output_tokens: max_tokens.and_then(|t| u64::try_from(t).ok()),
    }
}

fn required_model(model: Option<String>) -> Result<String, ApiError> {
    match model {
        Some(m) if !m.is_empty() => Ok(m),
        _ => Err(ApiError::invalid(
            "`model` is required, e.g. \"sandbox-chat\"; see GET /v1/models",
        )
        .param("model")),
    }
}

fn role(name: &str) -> Result<Role, ApiError> {
    Ok(match name {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" | "function" => Role::Tool,
        other => {
            return Err(ApiError::invalid(format!(
                "unknown message role {other:?}; use system, developer, user, assistant or tool"
            ))
            .param("messages"))
        }
    })
}

/// A message's text, and its attachments added to `files`. The text of a message
/// other than the last user message (`earlier`) says where each of its attachments
/// was, since the site may not get them again (`attachments.history`).
fn text_of(
    content: Option<Content>,
    message: usize,
    earlier: bool,
    files: &mut Vec<attachments::Part>,
) -> Result<String, ApiError> {
    let parts = match content {
        None => return Ok(String::new()),
        Some(Content::Text(t)) => return Ok(t),
        Some(Content::Parts(parts)) => parts,
    };
    let mut text = String::new();
    let mut add = |line: &str| {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(line);
    };
    for (i, part) in parts.into_iter().enumerate() {
        let at = format!("messages[{message}].content[{i}]");
        let invalid = |m: String| ApiError::invalid(format!("{at}: {m}")).param("messages");
        let source = match part.kind.as_str() {
            "text" => {
                let t = part
                    .text
                    .ok_or_else(|| invalid("a text content part needs `text`".into()))?;
                add(&t);
                continue;
            }
            "image_url" => {
                let url = match part.image_url {
                    Some(ImageUrl::Object { url } | ImageUrl::Bare(url)) => url,
                    None => {
                        return Err(invalid(
                            "an image_url part needs `image_url.url` (a data: URL or an https URL)"
                                .into(),
                        ))
                    }
                };
                if earlier {
                    add("[an image was attached here]");
                }
                if url.starts_with("data:") {
                    attachments::Source::DataUrl(url)
                } else {
                    attachments::Source::Url(url)
                }
            }
            "file" => {
                let file = part.file.ok_or_else(|| {
                    invalid("a file part needs `file` with `file_data` and `filename`".into())
                })?;
                let (Some(data), Some(filename)) = (file.file_data, file.filename) else {
                    let why = if file.file_id.is_some() {
                        "a `file_id` names a file uploaded to OpenAI, which prq cannot reach; send the file's bytes as `file_data` (base64) with its `filename`"
                    } else {
                        "a file part needs `file_data` (base64) and `filename`"
                    };
                    return Err(invalid(why.into()));
                };
                if earlier {
                    add(&format!("[the file {filename} was attached here]"));
                }
                attachments::Source::File { filename, data }
            }
            "input_audio" => {
                return Err(invalid(
                    "input_audio parts are not supported: the chat sites prq drives take no audio; send a transcript as text".into(),
                ))
            }
            other => {
                return Err(invalid(format!(
                    "content parts of type {other:?} are not supported; use \"text\", \"image_url\" or \"file\""
                )))
            }
        };
        files.push(attachments::Part {
            at,
            message,
            source,
        });
    }
    Ok(text)
}

/// A chat's messages as the site is to read them: an assistant's earlier tool calls
/// and the tools' results written in prq's tool-call format ([`tools::prompt`]).
fn conversation(
    messages: Vec<InMessage>,
    last_user: Option<usize>,
    files: &mut Vec<attachments::Part>,
) -> Result<Vec<ChatMessage>, ApiError> {
    // Which function each call ID called, for the results that name only the ID.
    let mut called: HashMap<String, String> = HashMap::new();
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = role(&m.role)?;
            let mut content = text_of(m.content, i, Some(i) != last_user, files)?;
            match role {
                Role::Assistant if m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) => {
                    let calls = m.tool_calls.unwrap_or_default();
                    let (text, ids) = tools::prompt::assistant_calls(&content, &calls)?;
                    called.extend(ids);
                    content = text;
                }
                Role::Tool => {
                    let name = m
                        .tool_call_id
                        .as_ref()
                        .and_then(|id| called.get(id))
                        .or(m.name.as_ref());
                    content = tools::prompt::tool_result(&content, name.map(String::as_str));
                }
                _ => {}
            }
            Ok(ChatMessage { role, content })
        })
        .collect()
}

/// A `stop` parameter's strings: one, or a list; empty strings stop nothing.
fn stop_strings(stop: Option<Prompt>) -> Vec<String> {
    let all = match stop {
        None => Vec::new(),
        Some(Prompt::One(s)) => vec![s],
        Some(Prompt::Many(v)) => v,
    };
    all.into_iter().filter(|s| !s.is_empty()).collect()
}

/// A request's `stop` strings applied to its answer as it arrives. A chat site knows
/// nothing of them, so prq ends the answer itself: text goes on to the client except a
/// tail that could be the start of a stop string, held until the next text settles it;
/// at the first stop string the answer ends, without it (OpenAI's `finish_reason` stays
/// `stop`), and the site's generation is stopped. Clients such as SillyTavern rely on
/// this to keep a model from writing the user's next turn.
#[derive(Debug, Default)]
pub struct StopScan {
    stops: Vec<String>,
    held: String,
    reached: bool,
}

impl StopScan {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            ..Self::default()
        }
    }

    /// Takes the next piece of the answer; returns what may go to the client now, and
    /// whether a stop string has ended the answer (nothing after it is passed on).
    /// Without stop strings the piece is handed back as it is: the relay's common case
    /// copies nothing.
    pub fn push(&mut self, text: String) -> (String, bool) {
        if self.reached {
            return (String::new(), true);
        }
        if self.stops.is_empty() {
            return (text, false);
        }
        self.held.push_str(&text);
        let first = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min();
        if let Some(at) = first {
            self.held.truncate(at);
            self.reached = true;
            return (std::mem::take(&mut self.held), true);
        }
        let keep = self
            .stops
            .iter()
            .map(|stop| partial_at_end(&self.held, stop))
            .max()
            .unwrap_or(0);
        let rest = self.held.split_off(self.held.len() - keep);
        (std::mem::replace(&mut self.held, rest), false)
    }

    /// The answer ended without a stop string: the text held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The length of the longest proper start of `stop` that `text` ends with.
fn partial_at_end(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&k| stop.is_char_boundary(k) && text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

impl Request {
    pub fn parse_chat(body: &[u8]) -> Result<Self, ApiError> {
        let raw: RawChatRequest = parse_json(body)?;
        check_n(raw.n)?;
        check_max_tokens("max_tokens", raw.max_tokens)?;
        check_max_tokens("max_completion_tokens", raw.max_completion_tokens)?;
        let model = required_model(raw.model)?;
        let messages = match raw.messages {
            None => return Err(ApiError::invalid("`messages` is required").param("messages")),
            Some(m) if m.is_empty() => {
                return Err(ApiError::invalid("`messages` must not be empty").param("messages"))
            }
            Some(m) => m,
        };
        let last_user = messages.iter().rposition(|m| m.role == "user");
        let mut attachments = Vec::new();
        let mut messages = conversation(messages, last_user, &mut attachments)?;
        if !messages.iter().any(|m| m.role == Role::User) {
            return Err(
                ApiError::invalid("`messages` needs at least one user message").param("messages"),
            );
        }
        let mut tools = raw.tools;
        let search_tool = crate::controls::take_search_tool(&mut tools);
        let plan = Plan::parse(
            tools,
            raw.tool_choice,
            raw.parallel_tool_calls,
            raw.response_format,
        )?;
        if let Some(plan) = &plan {
            tools::prompt::apply(plan, &mut messages);
        }
        Ok(Self {
            kind: Kind::Chat,
            model,
            messages,
            stream: raw.stream.unwrap_or(false),
            include_usage: raw.stream_options.is_some_and(|o| o.include_usage),
            stop: stop_strings(raw.stop),
            plan: plan.map(Arc::new),
            settings: settings(
                raw.temperature,
                raw.top_p,
                raw.max_completion_tokens.or(raw.max_tokens),
            ),
            search_tool,
            attachments,
            last_user,
        })
    }

    pub fn parse_completion(body: &[u8]) -> Result<Self, ApiError> {
        let raw: RawCompletionRequest = parse_json(body)?;
        check_n(raw.n)?;
        check_max_tokens("max_tokens", raw.max_tokens)?;
        let model = required_model(raw.model)?;
        let prompt = match raw.prompt {
            Some(Prompt::One(p)) => p,
            Some(Prompt::Many(mut ps)) if ps.len() == 1 => ps.remove(0),
            Some(Prompt::Many(_)) => {
                return Err(ApiError::invalid("send one prompt per request").param("prompt"))
            }
            None => return Err(ApiError::invalid("`prompt` is required").param("prompt")),
        };
        if prompt.is_empty() {
            return Err(ApiError::invalid("`prompt` must not be empty").param("prompt"));
        }
        Ok(Self {
            kind: Kind::Completion,
            model,
            messages: vec![ChatMessage {
                role: Role::User,
                content: prompt,
            }],
            stream: raw.stream.unwrap_or(false),
            include_usage: raw.stream_options.is_some_and(|o| o.include_usage),
            stop: stop_strings(raw.stop),
            plan: None,
            settings: settings(raw.temperature, raw.top_p, raw.max_tokens),
            search_tool: false,
            attachments: Vec::new(),
            last_user: Some(0),
        })
    }

    /// Characters of prompt, for the usage estimate.
    pub fn prompt_chars(&self) -> usize {
        self.messages
            .iter()
            .map(|m| m.content.chars().count())
            .sum()
    }
}

/// Token counts are estimated (about four characters a token): the sites do not say.
pub fn usage(prompt_chars: usize, completion_chars: usize) -> Value {
    let p = prompt_chars.div_ceil(4);
    let c = completion_chars.div_ceil(4);
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

/// The field of a stream's last chunk that says why a reply was passed on as text
/// although tools or a format were asked for (the `x-prq-tool-error` header of a
/// non-streaming answer).
pub const TOOL_ERROR_FIELD: &str = "x_prq_tool_error";

fn finish_reason(called: bool) -> &'static str {
    if called {
        "tool_calls"
    } else {
        "stop"
    }
}

/// Builds response objects for one request.
pub struct Shape<'a> {
    pub kind: Kind,
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
}

impl Shape<'_> {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The first chunk of a chat stream names the role.
    pub fn role_chunk(&self) -> Option<Value> {
        (self.kind == Kind::Chat).then(|| {
            self.envelope(
                true,
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
            )
        })
    }

    /// A chunk carrying answer text, or reasoning (`reasoning = true`; chat only).
    pub fn text_chunk(&self, text: &str, reasoning: bool) -> Option<Value> {
        match self.kind {
            Kind::Chat => {
                let delta = if reasoning {
                    json!({"reasoning_content": text})
                } else {
                    json!({"content": text})
                };
                Some(self.envelope(
                    true,
                    json!([{"index": 0, "delta": delta, "finish_reason": null}]),
                ))
            }
            Kind::Completion if !reasoning => Some(self.envelope(
                true,
                json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": null}]),
            )),
            Kind::Completion => None,
        }
    }

    /// The chunks of a reply's tool calls: per call, its ID and name, then its
    /// arguments.
    pub fn tool_call_chunks(&self, calls: &[ToolCall]) -> Vec<Value> {
        let delta = |call: Value| {
            self.envelope(
                true,
                json!([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}]),
            )
        };
        calls
            .iter()
            .enumerate()
            .flat_map(|(index, call)| {
                [
                    delta(json!({"index": index, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": ""}})),
                    delta(json!({"index": index, "function": {"arguments": call.arguments}})),
                ]
            })
            .collect()
    }

    /// The last chunk with a choice: `tool_calls` after calls, else `stop`; a reply
    /// that broke the tool format carries why (`x_prq_tool_error`).
    pub fn finish_chunk(&self, called: bool, tool_error: Option<&str>) -> Value {
        let reason = finish_reason(called);
        let choice = match self.kind {
            Kind::Chat => json!({"index": 0, "delta": {}, "finish_reason": reason}),
            Kind::Completion => {
                json!({"index": 0, "text": "", "logprobs": null, "finish_reason": reason})
            }
        };
        let mut v = self.envelope(true, json!([choice]));
        if let Some(e) = tool_error {
            v[TOOL_ERROR_FIELD] = json!(e);
        }
        v
    }

    pub fn usage_chunk(&self, usage: Value) -> Value {
        let mut v = self.envelope(true, json!([]));
        v["usage"] = usage;
        v
    }

    /// The whole response of a non-streaming request; with calls, `content` is the
    /// text before them, or null.
    pub fn complete(
        &self,
        reasoning: &str,
        answer: &str,
        calls: &[ToolCall],
        usage: Value,
    ) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut message = json!({"role": "assistant", "content": answer});
                if !reasoning.is_empty() {
                    message["reasoning_content"] = json!(reasoning);
                }
                if !calls.is_empty() {
                    if answer.is_empty() {
                        message["content"] = Value::Null;
                    }
                    message["tool_calls"] = calls.iter().map(ToolCall::to_openai).collect();
                }
                let reason = finish_reason(!calls.is_empty());
                json!({"index": 0, "message": message, "logprobs": null, "finish_reason": reason})
            }
            Kind::Completion => {
                json!({"index": 0, "text": answer, "logprobs": null, "finish_reason": "stop"})
            }
        };
        let mut v = self.envelope(false, json!([choice]));
        v["usage"] = usage;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_may_be_text_parts() {
        let r = Request::parse_chat(
            br#"{"model":"m-chat","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        )
        .unwrap();
        assert_eq!(r.messages[0].content, "a\nb");
        assert!(!r.stream);
    }

    #[test]
    fn bad_requests_are_named() {
        let e = Request::parse_chat(b"{not json").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = Request::parse_chat(br#"{"model":"m-chat"}"#).unwrap_err();
        assert!(e.message.contains("messages"));
        let e = Request::parse_chat(br#"{"model":"m-chat","messages":[]}"#).unwrap_err();
        assert!(e.message.contains("empty"));
        let e = Request::parse_chat(
            br#"{"model":"m-chat","messages":[{"role":"wizard","content":"x"}]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("wizard"));
        let e = Request::parse_chat(
            br#"{"model":"m-chat","n":3,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param, Some("n"));
        let e =
            Request::parse_chat(br#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert_eq!(e.param, Some("model"));
        let e = Request::parse_chat(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("image_url"));
    }

    #[test]
    fn parameters_of_the_wrong_type_are_named() {
        let user = r#""messages":[{"role":"user","content":"x"}]"#;
        for (param, bad) in [
            ("temperature", r#""hot""#),
            ("top_p", "[]"),
            ("seed", "1.5"),
            ("stop", "7"),
            ("stream", r#""yes""#),
            ("model", "5"),
        ] {
            let body = format!(r#"{{"model":"m-chat",{user},"{param}":{bad}}}"#);
            let e = Request::parse_chat(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.param, Some(param), "{}", e.message);
            assert!(e.message.contains(param), "{}", e.message);
        }
        // Right types (and null) pass, and are ignored.
        let body = format!(
            r#"{{"model":"m-chat",{user},"temperature":0.7,"top_p":1,"seed":3,"stop":["x"],"user":null}}"#
        );
        Request::parse_chat(body.as_bytes()).unwrap();
        let e = Request::parse_completion(br#"{"model":"m","prompt":"x","temperature":"hot"}"#)
            .unwrap_err();
        assert_eq!(e.param, Some("temperature"));
    }

    #[test]
    fn earlier_calls_and_results_are_written_into_the_conversation() {
        let r = Request::parse_chat(
            br#"{"model":"m-chat","tools":[{"type":"function","function":{"name":"f"}}],"messages":[
                {"role":"user","content":"go"},
                {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"call_1","content":"done"}]}"#,
        )
        .unwrap();
        assert!(r.plan.is_some());
        assert_eq!(
            r.messages[0].role,
            Role::System,
            "the declarations come first"
        );
        assert!(r.messages[0].content.contains("<tools>\n{\"name\":\"f\""));
        assert_eq!(
            r.messages[2].content,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>"
        );
        assert_eq!(
            r.messages[3].content,
            "<tool_response name=\"f\">\ndone\n</tool_response>"
        );
        // Without tools, the history is still written; nothing is declared.
        let r = Request::parse_chat(
            br#"{"model":"m-chat","messages":[{"role":"user","content":"go"},{"role":"tool","tool_call_id":"x","content":"r"}]}"#,
        )
        .unwrap();
        assert!(r.plan.is_none());
        assert_eq!(r.messages.len(), 2);
        assert_eq!(
            r.messages[1].content,
            "<tool_response>\nr\n</tool_response>"
        );
    }

    #[test]
    fn completion_prompt_becomes_one_user_message() {
        let r = Request::parse_completion(br#"{"model":"m-chat","prompt":"hi","stream":true}"#)
            .unwrap();
        assert_eq!(r.kind, Kind::Completion);
        assert_eq!(r.messages.len(), 1);
        assert!(r.stream);
    }

    #[test]
    fn chunks_have_the_sdk_shapes() {
        let s = Shape {
            kind: Kind::Chat,
            id: "chatcmpl-1",
            created: 5,
            model: "m-chat",
        };
        let c = s.text_chunk("hi", true).unwrap();
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["reasoning_content"], "hi");
        let done = s.complete("r", "a", &[], usage(8, 4));
        assert_eq!(done["choices"][0]["message"]["content"], "a");
        assert_eq!(done["usage"]["total_tokens"], 3);
    }

    /// Feeds `pieces` through a scan for `stops`; returns what the client got and
    /// whether a stop string ended it.
    fn scanned(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut scan = StopScan::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for piece in pieces {
            let (text, reached) = scan.push(piece.to_string());
            out.push_str(&text);
            if reached {
                return (out, true);
            }
        }
        out.push_str(&scan.finish());
        (out, false)
    }

    #[test]
    fn stop_strings_end_the_answer_before_them_even_when_split_across_pieces() {
        assert_eq!(scanned(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(
            scanned(&["\nUser:"], &["Hi.", "\nUs", "er: no"]),
            ("Hi.".into(), true)
        );
        assert_eq!(
            scanned(&["END"], &["abcEN", "D", "more"]),
            ("abc".into(), true)
        );
        // The earliest of several wins, wherever it is in the list.
        assert_eq!(scanned(&["zz", "b"], &["abczz"]), ("a".into(), true));
        // A held start that does not become a stop string is passed on whole.
        assert_eq!(scanned(&["END"], &["abcEN", "x"]), ("abcENx".into(), false));
        assert_eq!(scanned(&["END"], &["E", "N"]), ("EN".into(), false));
        // Multi-byte text: holding back never cuts a character.
        assert_eq!(
            scanned(&["é!"], &["caf", "é", "?"]),
            ("café?".into(), false)
        );
        assert_eq!(scanned(&["é!"], &["caf", "é", "!x"]), ("caf".into(), true));
        // The stop string at the very start leaves an empty answer.
        assert_eq!(scanned(&["A"], &["ABC"]), ("".into(), true));
    }

    #[test]
    fn text_that_may_start_a_stop_string_is_held_only_as_long_as_it_may() {
        let mut scan = StopScan::new(vec!["\nUser:".into()]);
        assert_eq!(scan.push("Hello\n".into()), ("Hello".into(), false));
        assert_eq!(scan.push("Use".into()), ("".into(), false));
        assert_eq!(scan.push("d it.".into()), ("\nUsed it.".into(), false));
        assert_eq!(scan.finish(), "");
    }

    #[test]
    fn stop_is_a_string_or_a_list_and_empty_ones_stop_nothing() {
        let chat = |stop: &str| {
            let body = format!(
                r#"{{"model":"m-chat","messages":[{{"role":"user","content":"hi"}}],"stop":{stop}}}"#
            );
            Request::parse_chat(body.as_bytes()).map(|r| r.stop)
        };
        assert_eq!(chat(r#""\nUser:""#).unwrap(), vec!["\nUser:".to_string()]);
        assert_eq!(
            chat(r#"["a","","b"]"#).unwrap(),
            vec!["a".to_string(), "b".into()]
        );
        assert_eq!(chat("null").unwrap(), Vec::<String>::new());
        assert!(chat("7").is_err());
        let completion =
            Request::parse_completion(br#"{"model":"m-chat","prompt":"hi","stop":"x"}"#);
        assert_eq!(completion.unwrap().stop, vec!["x".to_string()]);
    }
}
