//! What a request asks of a chat page's own controls beyond the thinking switch: the
//! site's model to pick, its web-search switch, the settings it lets a user set
//! (temperature, top_p, an output limit), and what becomes of the chat prq made once
//! its answer is complete. The supervisor decides them from the model ID, the macros in
//! the last user message and the request's parameters (`supervisor/src/controls/`); the
//! worker's driver applies what its page offers (`worker/src/driver/controls.rs`).

use serde::{Deserialize, Serialize};

/// The page controls one request sets before its prompt is sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageControls {
    /// The name the site's model picker shows for the model to pick (`Expert`, `Gemini
    /// 2.5 Pro`); `None`: the model the page has.
    pub model: Option<String>,
    /// The site's web search switch: on, or off. A page without one ignores it (and the
    /// worker logs once that it asked for search).
    pub search: bool,
    /// The settings, each `None` for the site's own default (restored if an earlier
    /// request changed it).
    pub settings: Settings,
}

/// Sampling settings a page may offer a field for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// The longest answer, in tokens (`max_tokens` / `max_completion_tokens`).
    pub max_output_tokens: Option<u64>,
}

impl Settings {
    /// Each setting by the name of its page field's selector, with the value to set.
    pub fn by_field(&self) -> [(&'static str, Option<f64>); 3] {
        [
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            (
                "max_output_tokens",
                self.max_output_tokens.map(|t| t as f64),
            ),
        ]
    }
}

/// `after_reply` of a lane: what becomes of the chat a request made on the site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterReply {
    /// Left in the account's chat list, as a person's chat would be.
    #[default]
    Keep,
    /// Deleted once its answer is complete (finished, stopped or failed), through the
    /// page's own controls.
    Delete,
    /// Sent in the site's temporary-chat mode, which keeps no chat.
    Temporary,
}

impl AfterReply {
    pub fn as_str(self) -> &'static str {
        match self {
            AfterReply::Keep => "keep",
            AfterReply::Delete => "delete",
            AfterReply::Temporary => "temporary",
        }
    }
}
