//! How a chat conversation becomes the one prompt a chat site takes.
//!
//! The format, documented in the README:
//! - a conversation of one user message is sent as that message's text, unchanged;
//! - otherwise system messages come first, then the rest in order, each as
//!   `System: …`, `User: …`, `Assistant: …` or `Tool: …`, separated by a blank line.

use crate::worker::{ChatMessage, Role};

const SEPARATOR: &str = "\n\n";

fn label(role: Role) -> &'static str {
    match role {
        Role::System => "System",
        Role::User => "User",
        Role::Assistant => "Assistant",
        Role::Tool => "Tool",
    }
}

pub fn flatten(messages: &[ChatMessage]) -> String {
    if let [only] = messages {
        if only.role == Role::User {
            return only.content.clone();
        }
    }
    let system = messages.iter().filter(|m| m.role == Role::System);
    let rest = messages.iter().filter(|m| m.role != Role::System);
    system
        .chain(rest)
        .map(|m| format!("{}: {}", label(m.role), m.content))
        .collect::<Vec<_>>()
        .join(SEPARATOR)
}

/// The last user message's text in a flattened prompt (the whole prompt when it was a
/// single user message). The sandbox site uses this to echo what it was asked.
pub fn last_user_text(prompt: &str) -> &str {
    let labelled = ["System: ", "User: ", "Assistant: ", "Tool: "]
        .iter()
        .any(|l| prompt.starts_with(l));
    if !labelled {
        return prompt;
    }
    let marker = "\n\nUser: ";
    let start = match prompt.rfind(marker) {
        Some(i) => i + marker.len(),
        None if prompt.starts_with("User: ") => "User: ".len(),
        None => return prompt,
    };
    let tail = &prompt[start..];
    // A user turn ends where the next labelled turn begins.
    let end = ["\n\nAssistant: ", "\n\nTool: ", "\n\nSystem: "]
        .iter()
        .filter_map(|m| tail.find(m))
        .min()
        .unwrap_or(tail.len());
    &tail[..end]
}

/// The turns of a flattened prompt, in order, with their roles; a prompt that was a
/// single user message is one user turn. Text inside a turn that looks like the start
/// of another (a blank line, then `User: `) is taken as one: the sandbox site reads
/// prompts this way, and its tests write none such.
pub fn turns(prompt: &str) -> Vec<(Role, &str)> {
    const LABELS: [(&str, Role); 4] = [
        ("System: ", Role::System),
        ("User: ", Role::User),
        ("Assistant: ", Role::Assistant),
        ("Tool: ", Role::Tool),
    ];
    let label_at = |text: &str| {
        LABELS
            .iter()
            .find(|(label, _)| text.starts_with(label))
            .map(|&(label, role)| (label.len(), role))
    };
    let Some((mut skip, mut role)) = label_at(prompt) else {
        return vec![(Role::User, prompt)];
    };
    let mut turns = Vec::new();
    let mut start = 0;
    let mut from = 0;
    while let Some(at) = prompt[from..].find(SEPARATOR).map(|i| from + i) {
        let next = at + SEPARATOR.len();
        if let Some((len, next_role)) = label_at(&prompt[next..]) {
            turns.push((role, &prompt[start + skip..at]));
            (start, skip, role) = (next, len, next_role);
        }
        from = next;
    }
    turns.push((role, &prompt[start + skip..]));
    turns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn one_user_message_is_sent_verbatim() {
        let p = flatten(&[msg(Role::User, "User: tricky")]);
        assert_eq!(p, "User: tricky");
    }

    #[test]
    fn system_prompt_goes_first_and_turns_are_labelled() {
        let p = flatten(&[
            msg(Role::User, "hi"),
            msg(Role::System, "be brief"),
            msg(Role::Assistant, "hello"),
            msg(Role::User, "again"),
        ]);
        assert_eq!(
            p,
            "System: be brief\n\nUser: hi\n\nAssistant: hello\n\nUser: again"
        );
        assert_eq!(last_user_text(&p), "again");
    }

    #[test]
    fn last_user_text_stops_at_the_next_turn() {
        let p = flatten(&[
            msg(Role::System, "s"),
            msg(Role::User, "question\nwith lines"),
            msg(Role::Assistant, "answer"),
        ]);
        assert_eq!(last_user_text(&p), "question\nwith lines");
        assert_eq!(last_user_text("plain prompt"), "plain prompt");
    }

    #[test]
    fn turns_come_back_with_their_roles() {
        let p = flatten(&[
            msg(Role::System, "s"),
            msg(Role::User, "q\n\nmore"),
            msg(Role::Assistant, "a"),
            msg(Role::Tool, "r"),
        ]);
        assert_eq!(
            turns(&p),
            vec![
                (Role::System, "s"),
                (Role::User, "q\n\nmore"),
                (Role::Assistant, "a"),
                (Role::Tool, "r"),
            ]
        );
        assert_eq!(
            turns("plain\n\nUser: x"),
            vec![(Role::User, "plain\n\nUser: x")]
        );
    }
}
