//! The page elements a browser driver works with, found by CSS selector: each site's
//! defaults (in its module) with the lane's `[lanes.selectors]` overrides on top. Names
//! are the protocol's [`SELECTOR_NAMES`], so the supervisor checks a config against the
//! same list.

use std::collections::BTreeMap;

use prq_protocol::worker::SELECTOR_NAMES;

/// A site's own selectors; `None` where the site has no such element.
#[derive(Debug)]
pub struct Defaults {
    pub prompt: &'static str,
    pub send: &'static str,
    pub stop: Option<&'static str>,
    pub thinking_toggle: Option<&'static str>,
    pub thinking_on: Option<&'static str>,
    pub logged_out: Option<&'static str>,
}

/// One selector, with the name a config overrides it by (for messages that say what to
/// change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: &'static str,
    pub css: String,
}

#[derive(Debug)]
pub struct Selectors {
    pub prompt: Selector,
    pub send: Selector,
    pub stop: Option<Selector>,
    /// The thinking switch, and what matches only while it is on: both or neither.
    pub thinking: Option<(Selector, Selector)>,
    pub logged_out: Option<Selector>,
}

impl Selectors {
    /// The site's defaults with the lane's overrides; an unknown name is refused with
    /// the known ones.
    pub fn new(defaults: &Defaults, overrides: &BTreeMap<String, String>) -> Result<Self, String> {
        if let Some(unknown) = overrides
            .keys()
            .find(|name| !SELECTOR_NAMES.contains(&name.as_str()))
        {
            return Err(format!(
                "unknown selector name `{unknown}` (known: {})",
                SELECTOR_NAMES.join(", ")
            ));
        }
        let pick = |name: &'static str, default: Option<&'static str>| {
            let css = overrides
                .get(name)
                .cloned()
                .or_else(|| default.map(str::to_owned));
            css.map(|css| Selector { name, css })
        };
        let thinking = match (
            pick("thinking_toggle", defaults.thinking_toggle),
            pick("thinking_on", defaults.thinking_on),
        ) {
            (Some(toggle), Some(on)) => Some((toggle, on)),
            (None, None) => None,
            (Some(only), None) | (None, Some(only)) => {
                return Err(format!(
                    "`{}` is set without its partner: thinking_toggle and thinking_on go together",
                    only.name
                ))
            }
        };
        Ok(Self {
            prompt: pick("prompt", Some(defaults.prompt)).expect("a default"),
            send: pick("send", Some(defaults.send)).expect("a default"),
            stop: pick("stop", defaults.stop),
            thinking,
            logged_out: pick("logged_out", defaults.logged_out),
        })
    }

    /// The selector whose CSS is `css`, to name it in a message.
    pub fn find(&self, css: &str) -> Option<&Selector> {
        let (toggle, on) = match &self.thinking {
            Some((toggle, on)) => (Some(toggle), Some(on)),
            None => (None, None),
        };
        [
            Some(&self.prompt),
            Some(&self.send),
            self.stop.as_ref(),
            toggle,
            on,
            self.logged_out.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find(|s| s.css == css)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults = Defaults {
        prompt: "textarea",
        send: "button.send",
        stop: None,
        thinking_toggle: Some("button.think"),
        thinking_on: Some("button.think.on"),
        logged_out: None,
    };

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_protocol_name_overrides_its_selector() {
        for name in SELECTOR_NAMES {
            let mut pairs = vec![(*name, "#new")];
            // The thinking pair goes together.
            match *name {
                "thinking_toggle" => pairs.push(("thinking_on", "#on")),
                "thinking_on" => pairs.push(("thinking_toggle", "#toggle")),
                _ => {}
            }
            let selectors = Selectors::new(&DEFAULTS, &overrides(&pairs)).unwrap();
            assert_eq!(selectors.find("#new").map(|s| s.name), Some(*name));
        }
    }

    #[test]
    fn defaults_stand_where_nothing_overrides_them() {
        let s = Selectors::new(&DEFAULTS, &overrides(&[("send", "button#go")])).unwrap();
        assert_eq!(s.prompt.css, "textarea");
        assert_eq!(s.send.css, "button#go");
        assert!(s.stop.is_none() && s.logged_out.is_none());
        assert_eq!(s.find("button.think.on").unwrap().name, "thinking_on");
    }

    #[test]
    fn an_unknown_name_or_half_a_pair_is_refused() {
        let e = Selectors::new(&DEFAULTS, &overrides(&[("prompt_box", "x")])).unwrap_err();
        assert!(e.contains("prompt_box") && e.contains("logged_out"), "{e}");
        let no_thinking = Defaults {
            thinking_toggle: None,
            thinking_on: None,
            ..DEFAULTS
        };
        let e = Selectors::new(&no_thinking, &overrides(&[("thinking_toggle", "x")])).unwrap_err();
        assert!(e.contains("thinking_on"), "{e}");
    }
}
