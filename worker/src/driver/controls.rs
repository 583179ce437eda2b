//! A chat page's own controls, as the driver uses them for one request: its model
//! picker, its web-search switch, its settings fields (temperature, top_p, the output
//! limit), its temporary-chat switch, and deleting the chat a request made. Each site
//! names its elements in its module ([`ControlDefaults`], with the public evidence for
//! each); `[lanes.selectors]` overrides or adds any of them. What a request asks of a
//! control the page does not have is ignored and logged once per lane, but a model the
//! request names must be picked: a page without a picker, or whose picker does not
//! offer it, fails the request (`model_unavailable` names what the page offers).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use prq_protocol::controls::{AfterReply, PageControls};
use prq_protocol::worker::{Failure, FailureKind};
use serde::Deserialize;
use serde_json::json;

use super::failure;
use super::selectors::{chosen, switch_pair, Selector};
use crate::tab::{PageError, Tab};

/// A site's selectors for its controls, each a list of alternatives; empty where the
/// site has no such element (or none is known).
#[derive(Debug)]
pub struct ControlDefaults {
    pub model_menu: &'static [&'static str],
    pub model_current: &'static [&'static str],
    pub model_option: &'static [&'static str],
    pub search_toggle: &'static [&'static str],
    pub search_on: &'static [&'static str],
    pub temperature: &'static [&'static str],
    pub top_p: &'static [&'static str],
    pub max_output_tokens: &'static [&'static str],
    pub delete_chat: &'static [&'static str],
    pub delete_item: &'static [&'static str],
    pub delete_confirm: &'static [&'static str],
    pub temporary_toggle: &'static [&'static str],
    pub temporary_on: &'static [&'static str],
}

impl ControlDefaults {
    /// A site with none of them known.
    pub const NONE: Self = Self {
        model_menu: &[],
        model_current: &[],
        model_option: &[],
        search_toggle: &[],
        search_on: &[],
        temperature: &[],
        top_p: &[],
        max_output_tokens: &[],
        delete_chat: &[],
        delete_item: &[],
        delete_confirm: &[],
        temporary_toggle: &[],
        temporary_on: &[],
    };
}

/// A model picker: what shows the model picked and its options, and what opens it
/// (pickers that show their options all the time, as radio buttons, have no menu).
#[derive(Debug)]
pub struct Picker {
    pub menu: Option<Selector>,
    pub current: Selector,
    pub option: Selector,
}

/// The controls' selectors for one lane: the site's with the lane's overrides.
#[derive(Debug)]
pub struct ControlSelectors {
    pub picker: Option<Picker>,
    pub search: Option<(Selector, Selector)>,
    /// The settings' fields, by the setting's name.
    pub fields: Vec<Selector>,
    /// What is clicked, in order, to delete the chat the page shows.
    pub delete: Vec<Selector>,
    pub temporary: Option<(Selector, Selector)>,
}

impl ControlSelectors {
    pub fn new(
        defaults: &ControlDefaults,
        overrides: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, String> {
        let pick = |name: &'static str, default: &[&str]| chosen(name, default, overrides);
        let picker = match (
            pick("model_menu", defaults.model_menu)?,
            pick("model_current", defaults.model_current)?,
            pick("model_option", defaults.model_option)?,
        ) {
            (menu, Some(current), Some(option)) => Some(Picker {
                menu,
                current,
                option,
            }),
            (None, None, None) => None,
            _ => {
                return Err(
                    "a model picker needs both `model_current` and `model_option` (and `model_menu` when its options show only once it is opened)"
                        .into(),
                )
            }
        };
        let fields = [
            ("temperature", defaults.temperature),
            ("top_p", defaults.top_p),
            ("max_output_tokens", defaults.max_output_tokens),
        ];
        let delete = [
            ("delete_chat", defaults.delete_chat),
            ("delete_item", defaults.delete_item),
            ("delete_confirm", defaults.delete_confirm),
        ];
        let some = |list: &[(&'static str, &[&'static str])]| -> Result<Vec<Selector>, String> {
            let found: Result<Vec<_>, _> = list.iter().map(|(n, d)| pick(n, d)).collect();
            Ok(found?.into_iter().flatten().collect())
        };
        let delete = some(&delete)?;
        if !delete.is_empty() && delete[0].name != "delete_chat" {
            return Err(
                "`delete_item` and `delete_confirm` follow a `delete_chat` selector: set it too"
                    .into(),
            );
        }
        Ok(Self {
            picker,
            search: switch_pair(
                pick("search_toggle", defaults.search_toggle)?,
                pick("search_on", defaults.search_on)?,
            )?,
            fields: some(&fields)?,
            delete,
            temporary: switch_pair(
                pick("temporary_toggle", defaults.temporary_toggle)?,
                pick("temporary_on", defaults.temporary_on)?,
            )?,
        })
    }

    /// Every selector, in the order of the protocol's `SELECTOR_NAMES`.
    pub fn all(&self) -> Vec<&Selector> {
        let mut all = Vec::new();
        if let Some(p) = &self.picker {
            all.extend(p.menu.iter().chain([&p.current, &p.option]));
        }
        all.extend(self.search.iter().flat_map(|(a, b)| [a, b]));
        all.extend(&self.fields);
        all.extend(&self.delete);
        all.extend(self.temporary.iter().flat_map(|(a, b)| [a, b]));
        all
    }
}

/// How long a delete gets to show that it took (the chat's entry leaving the page):
/// a site answers a delete in well under a second; one that has not taken by then has
/// failed, and the lane should not wait its whole element deadline for the next request.
const DELETE_DEADLINE: Duration = Duration::from_secs(3);

/// What a lane's page controls remember between requests.
#[derive(Debug, Default)]
pub struct Memory {
    /// Each settings field's value before prq first changed it: the site's default,
    /// set back for a request that gives none.
    site_defaults: Mutex<HashMap<&'static str, String>>,
    /// What was asked of a control the page does not have, logged once each.
    told: Mutex<HashSet<&'static str>>,
}

impl Memory {
    /// Logs, once per lane, that the page has no `control` for what a request asked.
    pub fn ignored(&self, site: &str, control: &'static str, fix: &str) {
        let first = self
            .told
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(control);
        if first {
            tracing::warn!(
                "{site}: a request asked for {control}, but the page has no such control: ignored (logged once per lane; {fix})"
            );
        }
    }
}

/// The controls of one page at work: its tab, selectors and memory.
pub struct Page<'a> {
    pub tab: &'a Tab,
    pub site: &'static str,
    pub selectors: &'a ControlSelectors,
    pub memory: &'a Memory,
    /// How long an element gets to appear, and a control to take.
    pub deadline: Duration,
}

/// What the page script's `pick` found.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Picked {
    Done { done: String },
    Missing { missing: String },
    Offered { offered: Vec<String> },
}

impl Page<'_> {
    /// Sets what `want` asks before the prompt is typed: the model, search, each
    /// setting (or the site's default back), and the temporary-chat mode for
    /// `after_reply = "temporary"` (off otherwise, where the page has the switch).
    pub async fn apply(
        &self,
        want: &PageControls,
        after_reply: AfterReply,
    ) -> Result<(), PageFailure> {
        if let Some(model) = &want.model {
            self.pick_model(model).await?;
        }
        match &self.selectors.search {
            Some((toggle, on)) => {
                self.switch_if_shown("search", toggle, on, want.search)
                    .await?
            }
            None if want.search => self.memory.ignored(
                self.site,
                "web search",
                "set search_toggle and search_on under [lanes.selectors] if the site has one",
            ),
            None => {}
        }
        for (name, value) in want.settings.by_field() {
            self.set_field(name, value).await?;
        }
        let temporary = after_reply == AfterReply::Temporary;
        match &self.selectors.temporary {
            Some((toggle, on)) => {
                self.switch_if_shown("temporary chat", toggle, on, temporary)
                    .await?
            }
            None if temporary => self.memory.ignored(
                self.site,
                "a temporary chat (after_reply = \"temporary\")",
                "its chats are kept; set temporary_toggle and temporary_on under [lanes.selectors] if the site has the mode",
            ),
            None => {}
        }
        Ok(())
    }

    async fn pick_model(&self, model: &str) -> Result<(), PageFailure> {
        let Some(picker) = &self.selectors.picker else {
            return Err(PageFailure::Failed(failure(
                FailureKind::SiteChanged,
                format!(
                    "{}: the request names the model \"{model}\", but no model picker is known for this page: set model_current and model_option (and model_menu) under [lanes.selectors]",
                    self.site
                ),
            )));
        };
        let ms = self.deadline.as_millis() as u64;
        let args = json!({
            "menu": picker.menu,
            "current": picker.current,
            "option": picker.option,
            "want": model,
            "ms": ms,
        });
        // Opening the menu, the options appearing and the switch taking: three waits.
        let picked: Picked = self.tab.page_op("pick", args, self.deadline * 3).await?;
        match picked {
            Picked::Done { done } if done == "stuck" => Err(PageFailure::Failed(failure(
                FailureKind::SiteChanged,
                format!(
                    "{}: the model \"{model}\" was clicked in the picker, but `model_current` ({}) did not show it within {} s; the site may have changed: fix the selectors under [lanes.selectors]",
                    self.site,
                    picker.current.shown(),
                    self.deadline.as_secs_f32()
                ),
            ))),
            Picked::Done { done } => {
                tracing::debug!(model, how = %done, "model picked");
                Ok(())
            }
            Picked::Missing { missing } => {
                let selector = [picker.menu.as_ref(), Some(&picker.option)]
                    .into_iter()
                    .flatten()
                    .find(|s| s.name == missing)
                    .unwrap_or(&picker.option);
                Err(PageFailure::Page(PageError::Missing {
                    name: selector.name.to_owned(),
                    selector: selector.shown(),
                    within: self.deadline,
                }))
            }
            Picked::Offered { offered } => Err(PageFailure::Failed(failure(
                FailureKind::ModelUnavailable,
                format!(
                    "{}: the page's model picker does not offer \"{model}\"; it offers: {}. Map a model ID to one of them under [lanes.models]",
                    self.site,
                    offered
                        .iter()
                        .map(|o| format!("\"{o}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))),
        }
    }

    /// [`switch`](Self::switch), where a switch the page does not show counts as off:
    /// a page may show a switch only in some of its states, and wanting it off then asks
    /// nothing of the page. Wanting it on still needs it.
    async fn switch_if_shown(
        &self,
        what: &str,
        toggle: &Selector,
        on: &Selector,
        want: bool,
    ) -> Result<(), PageFailure> {
        match self.switch(what, toggle, on, want).await {
            Err(PageFailure::Page(PageError::Missing { .. })) if !want => Ok(()),
            other => other,
        }
    }

    /// Sets a switch to `want` and checks that it took.
    pub async fn switch(
        &self,
        what: &str,
        toggle: &Selector,
        on: &Selector,
        want: bool,
    ) -> Result<(), PageFailure> {
        let ms = self.deadline.as_millis() as u64;
        let args = json!({ "toggle": toggle, "on": on, "want": want, "ms": ms });
        let result: String = self.tab.page_op("switch", args, self.deadline).await?;
        match result.as_str() {
            "ok" => Ok(()),
            "missing" => Err(PageFailure::Page(PageError::Missing {
                name: toggle.name.to_owned(),
                selector: toggle.shown(),
                within: Duration::ZERO,
            })),
            _ => Err(PageFailure::Failed(failure(
                FailureKind::SiteChanged,
                format!(
                    "{}: clicking the {what} switch ({}) did not turn it {}: `{}` ({}) no longer tells its state; the site may have changed: fix the selectors under [lanes.selectors]",
                    self.site,
                    toggle.shown(),
                    if want { "on" } else { "off" },
                    on.name,
                    on.shown(),
                ),
            ))),
        }
    }

    /// Sets the field of setting `name` to `value`, or back to the site's default
    /// when `value` is `None` and prq changed it before.
    async fn set_field(&self, name: &'static str, value: Option<f64>) -> Result<(), PageFailure> {
        let Some(field) = self.selectors.fields.iter().find(|f| f.name == name) else {
            if value.is_some() {
                self.memory.ignored(self.site, name, "the site decides it");
            }
            return Ok(());
        };
        let remembered = self.remembered(name);
        let target = match (value, &remembered) {
            (Some(v), _) => Some(v.to_string()),
            (None, Some(default)) => Some(default.clone()),
            // Never changed by prq: the page has its own default already.
            (None, None) => return Ok(()),
        };
        let args = json!({ "field": field, "value": target });
        let before: Option<String> = self.tab.page_op("field", args, Duration::ZERO).await?;
        let Some(before) = before else {
            return Err(PageFailure::Page(PageError::Missing {
                name: field.name.to_owned(),
                selector: field.shown(),
                within: Duration::ZERO,
            }));
        };
        if remembered.is_none() {
            self.memory
                .site_defaults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name, before);
        }
        Ok(())
    }

    fn remembered(&self, name: &'static str) -> Option<String> {
        let defaults = self
            .memory
            .site_defaults
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        defaults.get(name).cloned()
    }

    /// Deletes the chat the page shows (the one the request made) through the page's
    /// own controls; `Err` says why it is still there.
    pub async fn delete_chat(&self) -> Result<(), String> {
        if self.selectors.delete.is_empty() {
            return Err(format!(
                "no control to delete a chat is known for {}: set delete_chat (and delete_item, delete_confirm) under [lanes.selectors]",
                self.site
            ));
        }
        let ms = self.deadline.min(DELETE_DEADLINE).as_millis() as u64;
        let args = json!({ "steps": self.selectors.delete, "ms": ms });
        let steps = self.selectors.delete.len() as u32 + 1;
        let how: String = self
            .tab
            .page_op("remove", args, self.deadline.min(DELETE_DEADLINE) * steps)
            .await
            .map_err(|e| e.to_string())?;
        match how.as_str() {
            "removed" => Ok(()),
            "kept" => Err(format!(
                "the site kept the chat: its entry ({}) was still on the page {} s after the delete",
                self.selectors.delete[0].shown(),
                ms / 1000
            )),
            other => {
                let name = other.strip_prefix("missing:").unwrap_or(other);
                let shown = self
                    .selectors
                    .delete
                    .iter()
                    .find(|s| s.name == name)
                    .map_or_else(String::new, Selector::shown);
                Err(format!("the page has no `{name}` element ({shown}) to delete the chat with"))
            }
        }
    }
}

/// Why a control could not be set: a page operation's error (the driver words it, with
/// the selector to fix), or a failure already worded.
#[derive(Debug)]
pub enum PageFailure {
    Page(PageError),
    Failed(Failure),
}

impl From<PageError> for PageFailure {
    fn from(e: PageError) -> Self {
        PageFailure::Page(e)
    }
}
