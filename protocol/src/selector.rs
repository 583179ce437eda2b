//! The selector syntax of the drivers and of `[lanes.selectors]`: how a page element is
//! found by what a person sees, not only by CSS. Parsed here so that the supervisor
//! refuses a bad selector at `prq start` with the same rules the worker finds by.
//!
//! | text | finds |
//! |---|---|
//! | `textarea#chat-input` | CSS |
//! | `div.toggle:has-text("DeepThink")` | CSS, only elements whose visible text contains the text (any case) |
//! | `text=DeepThink` | the innermost elements whose visible text contains it (any case) |
//! | `text="DeepThink"` | ... whose whole visible text is exactly it |
//! | `role=button[name="Send message"]` | elements of that ARIA role (given or implied by the tag) whose accessible name is exactly it |
//! | `role=switch[name=thinking]` | ... whose accessible name contains it (any case) |
//! | `role=textbox` | ... of that role, whatever their name |
//!
//! A selector in a config is one such text or a list of them, tried in order: the first
//! that matches an element is used (`send = ["button.send", "role=button[name=Send]"]`).

use serde::{Deserialize, Serialize};

/// One way to find an element; the page script (`worker/src/page/find.js`) reads it as
/// JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locator {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub css: Option<String>,
    /// With `css`: a filter on its matches; alone: the innermost elements holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<TextMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// With `role`: the accessible name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<TextMatch>,
}

/// Text to match: `exact` the whole text (whitespace collapsed), else a substring in any
/// case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextMatch {
    pub value: String,
    pub exact: bool,
}

const HAS_TEXT: &str = ":has-text(";

impl Locator {
    /// Reads one selector's text; the error says what is wrong and how it should look.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty selector".into());
        }
        let none = Locator {
            css: None,
            text: None,
            role: None,
            label: None,
        };
        if let Some(rest) = text.strip_prefix("text=") {
            let m = text_match(rest, true)
                .map_err(|e| format!("{e} in `{text}` (write text=Send or text=\"Send\")"))?;
            return Ok(Locator {
                text: Some(m),
                ..none
            });
        }
        if let Some(rest) = text.strip_prefix("role=") {
            return role(rest)
                .map(|(role, label)| Locator {
                    role: Some(role),
                    label,
                    ..none
                })
                .map_err(|e| {
                    format!("{e} in `{text}` (write role=button or role=button[name=\"Send\"])")
                });
        }
        if let Some(at) = text.rfind(HAS_TEXT).filter(|_| text.ends_with(')')) {
            let (css, inner) = (&text[..at], &text[at + HAS_TEXT.len()..text.len() - 1]);
            if css.trim().is_empty() {
                return Err(format!(
                    "`{text}` has no CSS before :has-text (write text=... to match by text alone)"
                ));
            }
            // Substring in any case, quoted or not, as `:has-text` is in other tools.
            let value = text_match(inner, false).map_err(|e| format!("{e} in `{text}`"))?;
            return Ok(Locator {
                css: Some(css.trim().to_owned()),
                text: Some(TextMatch {
                    exact: false,
                    ..value
                }),
                ..none
            });
        }
        Ok(Locator {
            css: Some(text.to_owned()),
            ..none
        })
    }
}

/// `role` or `role[name=...]`.
fn role(rest: &str) -> Result<(String, Option<TextMatch>), String> {
    let (role, attrs) = match rest.split_once('[') {
        Some((role, attrs)) => (role, Some(attrs)),
        None => (rest, None),
    };
    if role.is_empty() || !role.chars().all(|c| c.is_ascii_lowercase()) {
        return Err(format!("the role `{role}` is not a lowercase ARIA role"));
    }
    let label = match attrs {
        None => None,
        Some(attrs) => {
            let inner = attrs
                .strip_suffix(']')
                .ok_or("an unclosed `[`")?
                .trim()
                .strip_prefix("name")
                .map(str::trim_start)
                .and_then(|a| a.strip_prefix('='))
                .ok_or("only [name=...] may follow the role")?;
            Some(text_match(inner, true)?)
        }
    };
    Ok((role.to_owned(), label))
}

/// A quoted value is matched exactly (when `quoted_exact`); a bare one as a substring.
fn text_match(raw: &str, quoted_exact: bool) -> Result<TextMatch, String> {
    let raw = raw.trim();
    let quoted = ['"', '\'']
        .into_iter()
        .find(|&q| raw.len() >= 2 && raw.starts_with(q) && raw.ends_with(q));
    let (value, exact) = match quoted {
        Some(q) => (unescape(&raw[1..raw.len() - 1], q)?, quoted_exact),
        None => (raw.to_owned(), false),
    };
    if value.trim().is_empty() {
        return Err("no text to match".into());
    }
    Ok(TextMatch { value, exact })
}

fn unescape(inner: &str, quote: char) -> Result<String, String> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or("a `\\` at the end of a quoted text")?),
            c if c == quote => return Err(format!("an unescaped {quote} inside a quoted text")),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(value: &str) -> Option<TextMatch> {
        Some(TextMatch {
            value: value.into(),
            exact: false,
        })
    }

    fn exactly(value: &str) -> Option<TextMatch> {
        Some(TextMatch {
            value: value.into(),
            exact: true,
        })
    }

    #[test]
    fn css_text_and_roles() {
        let css = Locator::parse(" textarea#chat-input ").unwrap();
        assert_eq!(css.css.as_deref(), Some("textarea#chat-input"));
        assert!(css.text.is_none() && css.role.is_none());

        assert_eq!(
            Locator::parse("text=DeepThink").unwrap().text,
            contains("DeepThink")
        );
        assert_eq!(
            Locator::parse("text=\"深度思考\"").unwrap().text,
            exactly("深度思考")
        );
        assert_eq!(
            Locator::parse("text='it\\'s'").unwrap().text,
            exactly("it's")
        );

        let role = Locator::parse("role=button[name=\"Send message\"]").unwrap();
        assert_eq!(role.role.as_deref(), Some("button"));
        assert_eq!(role.label, exactly("Send message"));
        assert_eq!(
            Locator::parse("role=switch[ name = thinking ]")
                .unwrap()
                .label,
            contains("thinking")
        );
        assert_eq!(Locator::parse("role=textbox").unwrap().label, None);

        let has = Locator::parse(".ds-toggle-button:has-text(\"DeepThink\")").unwrap();
        assert_eq!(has.css.as_deref(), Some(".ds-toggle-button"));
        assert_eq!(
            has.text,
            contains("DeepThink"),
            "has-text is a substring, quoted or not"
        );
        // A :has-text inside CSS that does not end the selector is left to the page.
        let inner = Locator::parse("div:has-text(x) > b").unwrap();
        assert_eq!(inner.css.as_deref(), Some("div:has-text(x) > b"));
    }

    #[test]
    fn bad_selectors_say_how_they_should_look() {
        for (bad, says) in [
            ("", "empty"),
            ("text=", "no text"),
            ("text=\"\"", "no text"),
            ("role=", "role"),
            ("role=Button", "lowercase"),
            ("role=button[title=x]", "only [name=...]"),
            ("role=button[name=x", "unclosed"),
            ("role=button[name=\"a\"b\"]", "unescaped"),
            (":has-text(x)", "no CSS"),
        ] {
            let e = Locator::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
