//! The page elements a browser driver works with: each site's defaults (in its module)
//! with the lane's `[lanes.selectors]` overrides on top. A selector is a list of
//! alternatives tried in order, each CSS, `text=...` or `role=...[name=...]`
//! ([`prq_protocol::selector`]); the page script `page/find.js` finds by them. Names are
//! the protocol's [`SELECTOR_NAMES`], so the supervisor checks a config against the same
//! list.

use std::collections::BTreeMap;

use prq_protocol::selector::Locator;
use prq_protocol::worker::SELECTOR_NAMES;
use serde::Serialize;

use super::controls::{ControlDefaults, ControlSelectors};

/// A site's own selectors, each a list of alternatives; empty where the site has no such
/// element.
#[derive(Debug)]
pub struct Defaults {
    pub prompt: &'static [&'static str],
    pub send: &'static [&'static str],
    pub stop: &'static [&'static str],
    pub thinking_toggle: &'static [&'static str],
    pub thinking_on: &'static [&'static str],
    pub logged_out: &'static [&'static str],
    /// The page's own controls (model picker, search, settings, delete, temporary).
    pub controls: ControlDefaults,
    pub attach: AttachDefaults,
}

/// A site's upload control (`driver/upload.rs`): its file input, the button that
/// reveals it, the "uploaded" marker and its error text.
#[derive(Debug)]
pub struct AttachDefaults {
    pub input: &'static [&'static str],
    pub button: &'static [&'static str],
    pub done: &'static [&'static str],
    pub error: &'static [&'static str],
}

impl AttachDefaults {
    /// For a site whose upload control prq has no public evidence for yet: a lane
    /// takes attachments only once its config names `attach_input` and `attach_done`.
    pub const UNKNOWN: Self = Self {
        input: &[],
        button: &[],
        done: &[],
        error: &[],
    };
}

/// The upload control as found by selector. Without an "uploaded" marker (`done`),
/// the driver knows a file is uploaded only by the send button becoming enabled.
#[derive(Debug)]
pub struct Attach {
    pub input: Selector,
    pub button: Option<Selector>,
    pub done: Option<Selector>,
    pub error: Option<Selector>,
}

/// One element to find: the name a config overrides it by (for messages that say what
/// to change), and its alternatives as written and as parsed for the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selector {
    pub name: &'static str,
    #[serde(skip)]
    pub written: Vec<String>,
    pub alternatives: Vec<Locator>,
}

impl Selector {
    pub fn new(name: &'static str, written: Vec<String>) -> Result<Self, String> {
        let alternatives = written
            .iter()
            .map(|text| Locator::parse(text).map_err(|e| format!("{name}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name,
            written,
            alternatives,
        })
    }

    /// The alternatives as a person wrote them, for messages.
    pub fn shown(&self) -> String {
        self.written
            .iter()
            .map(|w| format!("`{w}`"))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

#[derive(Debug)]
pub struct Selectors {
    pub prompt: Selector,
    pub send: Selector,
    pub stop: Option<Selector>,
    /// The thinking switch, and what matches only while it is on: both or neither.
    pub thinking: Option<(Selector, Selector)>,
    pub logged_out: Option<Selector>,
    /// The upload control; `None`: the lane takes no attachments.
    pub attach: Option<Attach>,
    pub controls: ControlSelectors,
}

/// The selector `name`: the lane's override, else the site's default; `None` when
/// neither gives one.
pub(super) fn chosen(
    name: &'static str,
    default: &[&str],
    overrides: &BTreeMap<String, Vec<String>>,
) -> Result<Option<Selector>, String> {
    let written: Vec<String> = match overrides.get(name) {
        Some(list) => list.clone(),
        None => default.iter().map(|s| s.to_string()).collect(),
    };
    if written.is_empty() {
        return Ok(None);
    }
    Selector::new(name, written).map(Some)
}

/// A switch and what matches only while it is on: both, or neither.
pub(super) fn switch_pair(
    toggle: Option<Selector>,
    on: Option<Selector>,
) -> Result<Option<(Selector, Selector)>, String> {
    match (toggle, on) {
        (Some(toggle), Some(on)) => Ok(Some((toggle, on))),
        (None, None) => Ok(None),
        (Some(only), None) => Err(format!(
            "`{}` is set without its partner: {} and {} go together",
            only.name,
            only.name,
            only.name.replace("_toggle", "_on")
        )),
        (None, Some(only)) => Err(format!(
            "`{}` is set without its partner: {} and {} go together",
            only.name,
            only.name.replace("_on", "_toggle"),
            only.name
        )),
    }
}

impl Selectors {
    /// The site's defaults with the lane's overrides; an unknown name, a bad selector or
    /// a missing one is refused saying which.
    pub fn new(
        defaults: &Defaults,
        overrides: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, String> {
        if let Some(unknown) = overrides
            .keys()
            .find(|name| !SELECTOR_NAMES.contains(&name.as_str()))
        {
            return Err(format!(
                "unknown selector name `{unknown}` (known: {})",
                SELECTOR_NAMES.join(", ")
            ));
        }
        let pick = |name: &'static str, default: &[&str]| chosen(name, default, overrides);
        let required = |name: &'static str, default: &[&str]| {
            pick(name, default)?.ok_or_else(|| format!("no `{name}` selector"))
        };
        let thinking = switch_pair(
            pick("thinking_toggle", defaults.thinking_toggle)?,
            pick("thinking_on", defaults.thinking_on)?,
        )?;
        let attach = match pick("attach_input", defaults.attach.input)? {
            Some(input) => Some(Attach {
                input,
                button: pick("attach_button", defaults.attach.button)?,
                done: pick("attach_done", defaults.attach.done)?,
                error: pick("attach_error", defaults.attach.error)?,
            }),
            None => match ["attach_button", "attach_done", "attach_error"]
                .into_iter()
                .find(|name| overrides.contains_key(*name))
            {
                Some(name) => {
                    return Err(format!(
                        "`{name}` is set without `attach_input`, the file input it belongs to"
                    ))
                }
                None => None,
            },
        };
        Ok(Self {
            attach,
            prompt: required("prompt", defaults.prompt)?,
            send: required("send", defaults.send)?,
            stop: pick("stop", defaults.stop)?,
            thinking,
            logged_out: pick("logged_out", defaults.logged_out)?,
            controls: ControlSelectors::new(&defaults.controls, overrides)?,
        })
    }

    /// Every selector, in the order of [`SELECTOR_NAMES`].
    pub fn all(&self) -> Vec<&Selector> {
        let (toggle, on) = match &self.thinking {
            Some((toggle, on)) => (Some(toggle), Some(on)),
            None => (None, None),
        };
        let attach = self.attach.as_ref();
        [
            Some(&self.prompt),
            Some(&self.send),
            self.stop.as_ref(),
            toggle,
            on,
            self.logged_out.as_ref(),
            attach.map(|a| &a.input),
            attach.and_then(|a| a.button.as_ref()),
            attach.and_then(|a| a.done.as_ref()),
            attach.and_then(|a| a.error.as_ref()),
        ]
        .into_iter()
        .flatten()
        .chain(self.controls.all())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults = Defaults {
        prompt: &["textarea"],
        send: &["button.send"],
        stop: &[],
        thinking_toggle: &["button.think"],
        thinking_on: &["button.think.on"],
        logged_out: &[],
        controls: ControlDefaults::NONE,
        attach: AttachDefaults::UNKNOWN,
    };

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect()
    }

    fn named<'s>(selectors: &'s Selectors, written: &str) -> Option<&'s Selector> {
        selectors.all().into_iter().find(|s| s.written == [written])
    }

    #[test]
    fn every_protocol_name_overrides_its_selector() {
        for name in SELECTOR_NAMES {
            // What goes together: a switch's pair, the picker's parts, a delete's first step.
            let partners: Vec<String> =
                match (name.strip_suffix("_toggle"), name.strip_suffix("_on")) {
                    (Some(switch), _) => vec![format!("{switch}_on")],
                    (_, Some(switch)) => vec![format!("{switch}_toggle")],
                    _ if name.starts_with("model_") => ["model_current", "model_option"]
                        .iter()
                        .filter(|n| *n != name)
                        .map(|n| n.to_string())
                        .collect(),
                    _ if name.starts_with("delete_") && *name != "delete_chat" => {
                        vec!["delete_chat".to_string()]
                    }
                    _ => Vec::new(),
                };
            let mut pairs = vec![(*name, "#new")];
            pairs.extend(partners.iter().map(|p| (p.as_str(), "#partner")));
            // An upload control's parts go with its file input.
            if matches!(*name, "attach_done" | "attach_button" | "attach_error") {
                pairs.push(("attach_input", "#input"));
            }
            let selectors = Selectors::new(&DEFAULTS, &overrides(&pairs)).unwrap();
            assert_eq!(named(&selectors, "#new").map(|s| s.name), Some(*name));
        }
    }

    #[test]
    fn defaults_stand_where_nothing_overrides_them() {
        let s = Selectors::new(&DEFAULTS, &overrides(&[("send", "button#go")])).unwrap();
        assert_eq!(s.prompt.written, ["textarea"]);
        assert_eq!(s.send.written, ["button#go"]);
        assert!(s.stop.is_none() && s.logged_out.is_none());
        assert_eq!(named(&s, "button.think.on").unwrap().name, "thinking_on");
    }

    #[test]
    fn an_unknown_name_or_half_a_pair_is_refused() {
        let e = Selectors::new(&DEFAULTS, &overrides(&[("prompt_box", "x")])).unwrap_err();
        assert!(e.contains("prompt_box") && e.contains("logged_out"), "{e}");
        let no_thinking = Defaults {
            thinking_toggle: &[],
            thinking_on: &[],
            ..DEFAULTS
        };
        let e = Selectors::new(&no_thinking, &overrides(&[("thinking_toggle", "x")])).unwrap_err();
        assert!(e.contains("thinking_on"), "{e}");
        let e = Selectors::new(&DEFAULTS, &overrides(&[("send", "role=")])).unwrap_err();
        assert!(e.starts_with("send:"), "{e}");
    }

    #[test]
    fn a_list_keeps_its_order_and_parses_each_alternative() {
        let mut lists = overrides(&[]);
        lists.insert(
            "send".into(),
            vec!["button.send".into(), "role=button[name=\"Send\"]".into()],
        );
        let s = Selectors::new(&DEFAULTS, &lists).unwrap();
        assert_eq!(s.send.alternatives.len(), 2);
        assert_eq!(s.send.alternatives[1].role.as_deref(), Some("button"));
        assert_eq!(
            s.send.shown(),
            "`button.send` or `role=button[name=\"Send\"]`"
        );
        let json = serde_json::to_value(&s.send).unwrap();
        assert_eq!(json["name"], "send");
        assert_eq!(json["alternatives"][0]["css"], "button.send");
    }
}
