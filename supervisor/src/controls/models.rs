//! The models each site's picker offers, as far as public sources show them: a lane
//! serves `<prefix>-<id>` for each (and `[lanes.models]` adds more), and a request for
//! one picks `pick`, the name the page shows, before it sends. A name the page does not
//! show fails the request with `model_unavailable` and the names it does show, so a
//! list that went stale is one config line to fix (`[lanes.models]`), not a release.
//!
//! - DeepSeek: the composer's mode switch has two radio buttons, "Instant" (快速模式)
//!   and "Expert" (专家模式) (foxhui/WebAI2API `src/backend/adapter/deepseek_text.js`,
//!   which finds them by role `radio` and name; its `-pro` models are Expert).
//! - Google AI Studio: the page shows the picked model's name at
//!   `[data-test-id="model-name"]` and switches models per request
//!   (CJackHwang/AIstudioProxyAPI `config/selectors.py`, `browser_utils/models/
//!   switcher.py`). The display names below are the public Gemini models' names as AI
//!   Studio writes them (its custom model list, `config/custom_models.json`, shows the
//!   form "Gemini 2.5 Pro …"): a guess as to which the picker lists today.
//! - Sandbox: its page's picker (`supervisor/src/sandbox/page.html`), which also offers
//!   "Vision" for tests of `[lanes.models]`.
//! - GLM, Kimi, Qwen, Perplexity, HuggingChat: no public source found that names their
//!   pickers' entries and elements; `[lanes.models]` with `[lanes.selectors]` adds them.

use prq_protocol::provider::Provider;

/// One model a site's picker offers: the model ID's suffix, and what the page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteModel {
    pub id: &'static str,
    pub pick: &'static str,
}

const fn m(id: &'static str, pick: &'static str) -> SiteModel {
    SiteModel { id, pick }
}

const SANDBOX: [SiteModel; 2] = [m("swift", "Swift"), m("deep", "Deep")];
const DEEPSEEK: [SiteModel; 2] = [m("instant", "Instant"), m("expert", "Expert")];
const AISTUDIO: [SiteModel; 3] = [
    m("gemini-2.5-pro", "Gemini 2.5 Pro"),
    m("gemini-2.5-flash", "Gemini 2.5 Flash"),
    m("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite"),
];

/// The models a provider's driver knows.
pub fn known(provider: Provider) -> &'static [SiteModel] {
    match provider {
        Provider::Sandbox => &SANDBOX,
        Provider::DeepSeek => &DEEPSEEK,
        Provider::AiStudio => &AISTUDIO,
        Provider::Echo
        | Provider::Glm
        | Provider::Moonshot
        | Provider::Qwen
        | Provider::Perplexity
        | Provider::HuggingChat => &[],
    }
}

/// Suffixes a site model's ID cannot have: they mean something of their own.
pub const RESERVED: [&str; 4] = ["auto", "chat", "reasoner", "search"];

/// Whether `id` may name a site model in a model ID (`[lanes.models]` keys): lowercase
/// letters, digits, `-`, `.` and `_`, not reserved, not ending in `-search`.
pub fn check_id(id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c);
    if id.is_empty() || !id.chars().all(allowed) || id.starts_with('-') || id.ends_with('-') {
        return Err(format!(
            "`{id}` cannot be a model ID's suffix: use lowercase letters, digits, `-`, `.` and `_`, e.g. \"gemini-2.5-pro\""
        ));
    }
    if RESERVED.contains(&id) || id.ends_with("-search") {
        return Err(format!(
            "`{id}` is taken: `auto`, `chat`, `reasoner` and a `-search` ending have meanings of their own"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids_are_valid_and_distinct() {
        for provider in Provider::ALL {
            let models = known(provider);
            for (i, model) in models.iter().enumerate() {
                check_id(model.id).unwrap();
                assert!(models[..i].iter().all(|o| o.id != model.id));
            }
        }
    }

    #[test]
    fn bad_and_reserved_ids_are_refused_saying_why() {
        for bad in ["", "Pro", "a b", "-x", "chat", "fast-search", "x/y"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        assert!(check_id("search").unwrap_err().contains("taken"));
        check_id("gpt-4.1_mini").unwrap();
    }
}
