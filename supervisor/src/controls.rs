//! A request's page controls, decided from what a client can send: the model ID's site
//! model and `-search` suffix (`router.rs` reads the ID), the macros in the last user
//! message ([`macros`]), and the request's sampling parameters. What each site's picker
//! offers, as far as public sources show it, is in [`models`]. The worker's driver
//! applies the result in the page (`worker/src/driver/controls.rs`).

pub mod macros;
pub mod models;

use prq_protocol::controls::{PageControls, Settings};
use prq_protocol::worker::{ChatMessage, Thinking};
use serde_json::Value;

use crate::router::Routed;

/// Takes a Google-search tool out of a request's `tools` and says whether there was
/// one: the built-in tool of Gemini's API (`{"google_search": {}}`, `{"googleSearch":
/// {}}`, `{"type": "google_search"}`) or a function of that name, as clients written for
/// Gemini send it (AIStudioProxyAPI turns AI Studio's grounding on for one). It turns
/// the site's search switch on; it is no function for the model to call.
pub fn take_search_tool(tools: &mut Option<Vec<Value>>) -> bool {
    const NAMES: [&str; 3] = ["google_search", "googleSearch", "google_search_retrieval"];
    let is_search = |tool: &Value| {
        NAMES.iter().any(|n| tool.get(n).is_some())
            || tool
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| NAMES.contains(&t))
            || tool
                .pointer("/function/name")
                .and_then(Value::as_str)
                .is_some_and(|t| NAMES.contains(&t))
    };
    let Some(list) = tools else { return false };
    let before = list.len();
    list.retain(|tool| !is_search(tool));
    let found = list.len() < before;
    if list.is_empty() {
        *tools = None;
    }
    found
}

/// The page controls and thinking setting of one request: the model ID's (and a
/// search tool's), with the last user message's macros over them (the macros are
/// taken out of the message).
pub fn decide(
    routed: &Routed<'_>,
    messages: &mut [ChatMessage],
    settings: Settings,
    search_tool: bool,
) -> (Thinking, PageControls) {
    let said = macros::take(messages);
    let thinking = match said.think {
        Some(true) => Thinking::On,
        Some(false) => Thinking::Off,
        None => routed.thinking,
    };
    let controls = PageControls {
        model: routed.model.map(str::to_owned),
        search: said.search.unwrap_or(routed.search || search_tool),
        settings,
    };
    (thinking, controls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_google_search_tool_is_taken_out_and_functions_stay() {
        let f = json!({"type": "function", "function": {"name": "get_weather"}});
        for search in [
            json!({"google_search": {}}),
            json!({"googleSearch": {}}),
            json!({"type": "google_search"}),
            json!({"type": "function", "function": {"name": "googleSearch"}}),
        ] {
            let mut tools = Some(vec![search.clone(), f.clone()]);
            assert!(take_search_tool(&mut tools), "{search}");
            assert_eq!(tools, Some(vec![f.clone()]));
            let mut alone = Some(vec![search]);
            assert!(take_search_tool(&mut alone));
            assert_eq!(alone, None, "no tools left: no tool prompt");
        }
        let mut none = Some(vec![f.clone()]);
        assert!(!take_search_tool(&mut none));
        assert!(!take_search_tool(&mut None));
    }
}
