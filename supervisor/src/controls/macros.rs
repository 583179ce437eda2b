//! Per-message switches for clients that can change only the model ID and the text
//! (SillyTavern): `[[search]]`, `[[nosearch]]`, `[[think]]` and `[[nothink]]` in the
//! last user message turn the site's search or thinking on or off for that request,
//! over what the model ID says. They are taken out of the message before it is typed,
//! so the site never sees them. The same macros as IntenseRP's per-message ones.

use prq_protocol::worker::{ChatMessage, Role};

/// What the macros of a message asked for; `None` where none spoke.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Said {
    pub search: Option<bool>,
    pub think: Option<bool>,
}

const MACROS: [(&str, Switch, bool); 4] = [
    ("[[search]]", Switch::Search, true),
    ("[[nosearch]]", Switch::Search, false),
    ("[[think]]", Switch::Think, true),
    ("[[nothink]]", Switch::Think, false),
];

#[derive(Debug, Clone, Copy)]
enum Switch {
    Search,
    Think,
}

/// Reads and removes the macros of the last user message (the last one written wins
/// when two disagree); a message left empty by them keeps its place in the prompt.
pub fn take(messages: &mut [ChatMessage]) -> Said {
    let mut said = Said::default();
    let Some(last) = messages.iter_mut().rev().find(|m| m.role == Role::User) else {
        return said;
    };
    if !last.content.contains("[[") {
        return said;
    }
    let mut found: Vec<(usize, Switch, bool)> = Vec::new();
    for (text, switch, on) in MACROS {
        found.extend(
            last.content
                .match_indices(text)
                .map(|(at, _)| (at, switch, on)),
        );
    }
    if found.is_empty() {
        return said;
    }
    found.sort_by_key(|f| f.0);
    for (_, switch, on) in found {
        match switch {
            Switch::Search => said.search = Some(on),
            Switch::Think => said.think = Some(on),
        }
    }
    for (text, _, _) in MACROS {
        last.content = last.content.replace(text, "");
    }
    // A macro on a line of its own leaves the line empty: drop what it left at the ends.
    last.content = last.content.trim().to_owned();
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> ChatMessage {
        ChatMessage {
            role: Role::User,
            content: text.into(),
        }
    }

    #[test]
    fn macros_switch_and_leave_the_message() {
        let mut messages = vec![
            user("[[search]] old"),
            user("[[search]]\nWhat is new?\n[[nothink]]"),
        ];
        let said = take(&mut messages);
        assert_eq!(
            said,
            Said {
                search: Some(true),
                think: Some(false)
            }
        );
        assert_eq!(messages[1].content, "What is new?");
        assert_eq!(
            messages[0].content, "[[search]] old",
            "only the last user message"
        );
    }

    #[test]
    fn the_last_macro_written_wins_and_plain_text_is_untouched() {
        let mut messages = vec![user("[[think]] a [[nothink]] b [[nosearch]]")];
        let said = take(&mut messages);
        assert_eq!((said.think, said.search), (Some(false), Some(false)));
        assert_eq!(messages[0].content, "a  b");
        let mut plain = vec![user("a [[link]] b")];
        assert_eq!(take(&mut plain), Said::default());
        assert_eq!(plain[0].content, "a [[link]] b");
    }
}
