//! Model ID → lane prefix, thinking setting, site model and search.
//!
//! A model ID is `<prefix>-<body>[-search]`: the prefix names the lane set (by default
//! the provider's name); the body is `auto` (the lane's thinking setting), `chat`
//! (thinking off), `reasoner` (thinking on), or one of the lane's site models
//! (`supervisor/src/controls/models.rs` and `[lanes.models]`: picked in the page, with
//! the lane's thinking setting); `-search` turns the site's web search on.

use prq_protocol::worker::Thinking;

const SUFFIXES: [(&str, Thinking); 3] = [
    ("auto", Thinking::Auto),
    ("chat", Thinking::Off),
    ("reasoner", Thinking::On),
];

const SEARCH: &str = "-search";

/// What one prefix serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    pub prefix: String,
    /// Its site models: the ID's suffix, and the name the page's picker shows.
    pub models: Vec<(String, String)>,
    /// Whether `-search` IDs are served (lanes with a page; echo lanes have none).
    pub search: bool,
}

/// Where a model ID goes and what it sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed<'a> {
    pub prefix: &'a str,
    pub thinking: Thinking,
    /// The name to pick in the page's model picker.
    pub model: Option<&'a str>,
    pub search: bool,
}

/// Reads a model ID against the prefixes served; `None` when it routes nowhere.
pub fn route<'a>(model: &str, menus: &'a [Menu]) -> Option<Routed<'a>> {
    menus.iter().find_map(|menu| {
        let body = model
            .strip_prefix(menu.prefix.as_str())?
            .strip_prefix('-')?;
        let (body, search) = match body.strip_suffix(SEARCH) {
            Some(body) if menu.search => (body, true),
            _ => (body, false),
        };
        let routed = |thinking, model| Routed {
            prefix: &menu.prefix,
            thinking,
            model,
            search,
        };
        if let Some((_, thinking)) = SUFFIXES.iter().find(|(s, _)| *s == body) {
            return Some(routed(*thinking, None));
        }
        let (_, pick) = menu.models.iter().find(|(id, _)| id == body)?;
        Some(routed(Thinking::Auto, Some(pick.as_str())))
    })
}

/// Every model ID that [`route`] accepts for these prefixes, in a stable order.
pub fn model_ids(menus: &[Menu]) -> Vec<String> {
    let mut ids = Vec::new();
    for menu in menus {
        let bodies = SUFFIXES
            .iter()
            .map(|(s, _)| *s)
            .chain(menu.models.iter().map(|(id, _)| id.as_str()));
        for body in bodies {
            ids.push(format!("{}-{body}", menu.prefix));
            if menu.search {
                ids.push(format!("{}-{body}{SEARCH}", menu.prefix));
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn menus() -> Vec<Menu> {
        vec![
            Menu {
                prefix: "sandbox".into(),
                models: vec![
                    ("swift".into(), "Swift".into()),
                    ("gemini-2.5-pro".into(), "Gemini 2.5 Pro".into()),
                ],
                search: true,
            },
            Menu {
                prefix: "deep-seek".into(),
                models: Vec::new(),
                search: false,
            },
        ]
    }

    #[test]
    fn suffix_sets_thinking_model_and_search() {
        let menus = menus();
        let cases = [
            ("sandbox-chat", ("sandbox", Thinking::Off, None, false)),
            (
                "sandbox-reasoner-search",
                ("sandbox", Thinking::On, None, true),
            ),
            ("deep-seek-auto", ("deep-seek", Thinking::Auto, None, false)),
            (
                "sandbox-swift",
                ("sandbox", Thinking::Auto, Some("Swift"), false),
            ),
            (
                "sandbox-gemini-2.5-pro-search",
                ("sandbox", Thinking::Auto, Some("Gemini 2.5 Pro"), true),
            ),
        ];
        for (id, want) in cases {
            let r = route(id, &menus).unwrap();
            assert_eq!((r.prefix, r.thinking, r.model, r.search), want, "{id}");
        }
    }

    #[test]
    fn unknown_prefixes_suffixes_and_search_where_none_do_not_route() {
        let menus = menus();
        for id in [
            "sandbox",
            "sandbox-turbo",
            "gpt-4o-chat",
            "sandbox-search",
            "deep-seek-chat-search",
            "sandbox-swift-chat",
        ] {
            assert_eq!(route(id, &menus), None, "{id}");
        }
    }

    #[test]
    fn every_listed_id_routes() {
        let ids = model_ids(&menus());
        assert_eq!(ids.len(), 5 * 2 + 3);
        assert!(ids.iter().all(|id| route(id, &menus()).is_some()));
    }
}
