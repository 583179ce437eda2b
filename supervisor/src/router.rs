//! Model ID → lane prefix and thinking setting.
//!
//! A model ID is `<prefix>-<suffix>`: the prefix names the lane set (by default the
//! provider's name), the suffix the behaviour: `-auto` (the lane's setting), `-chat`
//! (thinking off), `-reasoner` (thinking on).

use prq_protocol::worker::Thinking;

const SUFFIXES: [(&str, Thinking); 3] = [
    ("-auto", Thinking::Auto),
    ("-chat", Thinking::Off),
    ("-reasoner", Thinking::On),
];

/// Splits a model ID into the prefix it routes to and its thinking setting, if the
/// prefix is one of `served`.
pub fn route<'a>(model: &'a str, served: &[String]) -> Option<(&'a str, Thinking)> {
    SUFFIXES.iter().find_map(|(suffix, thinking)| {
        let prefix = model.strip_suffix(suffix)?;
        served
            .iter()
            .any(|p| p == prefix)
            .then_some((prefix, *thinking))
    })
}

/// Every model ID that [`route`] accepts for these prefixes, in a stable order.
pub fn model_ids(served: &[String]) -> Vec<String> {
    served
        .iter()
        .flat_map(|p| SUFFIXES.iter().map(move |(s, _)| format!("{p}{s}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Vec<String> {
        vec!["sandbox".into(), "deep-seek".into()]
    }

    #[test]
    fn suffix_sets_thinking() {
        assert_eq!(
            route("sandbox-chat", &served()),
            Some(("sandbox", Thinking::Off))
        );
        assert_eq!(
            route("sandbox-reasoner", &served()),
            Some(("sandbox", Thinking::On))
        );
        assert_eq!(
            route("deep-seek-auto", &served()),
            Some(("deep-seek", Thinking::Auto))
        );
    }

    #[test]
    fn unknown_prefixes_and_suffixes_do_not_route() {
        assert_eq!(route("sandbox", &served()), None);
        assert_eq!(route("sandbox-turbo", &served()), None);
        assert_eq!(route("gpt-4o-chat", &served()), None);
    }

    #[test]
    fn every_listed_id_routes() {
        let ids = model_ids(&served());
        assert_eq!(ids.len(), 6);
        assert!(ids.iter().all(|id| route(id, &served()).is_some()));
    }
}
