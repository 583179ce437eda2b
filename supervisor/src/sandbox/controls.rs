//! What the sandbox page sends along with a prompt from its own controls — the model
//! picked in its picker, its search switch, its temperature field, its temporary-chat
//! switch (`page.html` has them and their defaults) — and the header lines an answer
//! begins with under `sandbox: controls`, so that a test reads from the answer what the
//! page had set.

use serde::Deserialize;

/// The page's controls as it sends them with a prompt; a client other than the page
/// may leave them out.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct PageControls {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub search: bool,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub temporary: bool,
}

impl PageControls {
    /// The answer's header lines: `model: NAME`, `search: on|off`, `temperature: X`
    /// (`-` for what the request did not send).
    pub fn header_lines(&self) -> Vec<(&'static str, String)> {
        let on_off = |b: bool| if b { "on" } else { "off" };
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        vec![
            ("model", or_dash(self.model.clone())),
            ("search", on_off(self.search).into()),
            (
                "temperature",
                or_dash(self.temperature.map(|t| t.to_string())),
            ),
        ]
    }
}
