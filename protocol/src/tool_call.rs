//! prq's tool-call reply format: how a chat site's model calls a function in the text
//! of its reply, as the supervisor's prompt asks for it (`supervisor/src/tools/`) and
//! as the sandbox site plays a model that follows it ([`crate::script`]).
//!
//! A call is one JSON object, its function's name and arguments, between tags on lines
//! of their own — the format of NousResearch's Hermes function-calling models and of
//! Qwen's chat template (README "Tool calling" says why this one):
//!
//! ```text
//! <tool_call>
//! {"name": "get_weather", "arguments": {"city": "Paris"}}
//! </tool_call>
//! ```

/// Opens a call in a reply.
pub const OPEN: &str = "<tool_call>";
/// Closes a call.
pub const CLOSE: &str = "</tool_call>";

/// How the message that asks a model to try again begins; the sandbox site recognises
/// a retry by it, as a model reads it.
pub const CORRECTION: &str = "Your last reply did not follow the required format:";

/// Whether `name` may name a function: OpenAI's rule (letters, digits, `_` and `-`, at
/// most 64), which also makes it safe to put between JSON quotes as it is.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One call as a reply writes it; `arguments` is a JSON object's text and `name` a
/// [`valid_name`].
pub fn render(name: &str, arguments: &str) -> String {
    format!("{OPEN}\n{{\"name\": \"{name}\", \"arguments\": {arguments}}}\n{CLOSE}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_json_between_tags_on_lines_of_their_own() {
        assert_eq!(
            render("get_weather", r#"{"city":"Paris"}"#),
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call>"
        );
        assert!(valid_name("get_weather-2"));
        assert!(!valid_name("get weather") && !valid_name("") && !valid_name("a\"b"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
