//! The deterministic answer that the sandbox site and the echo lane both give.
//!
//! The answer begins with the last user message's text, verbatim, followed by
//! `tokens` words; with thinking on, `think_tokens` reasoning words come first. A line
//! `sandbox: key=value ...` in the last user message steers the length, the pace and
//! the faults. Keeping the script in one place lets tests compute the exact answer.
//!
//! The site also plays a model that follows prq's tool-call format
//! ([`crate::tool_call`]): `call=NAME:JSON` answers with that call, `call_bad=NAME:JSON`
//! with one that breaks its schema until prq asks again, `json=JSON` with that JSON
//! ([`reply`]); after a tool's result it answers from the result, as a model would.

use std::time::Duration;

use crate::prompt::{last_user_text, turns};
use crate::tool_call;
use crate::worker::Role;

const WORDS: [&str; 12] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
];

/// The steering keys of a `sandbox:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// Answer words after the echo.
    pub tokens: usize,
    /// Pause before each word (reasoning and answer).
    pub delay: Duration,
    /// Reasoning words; `None` means the default for the thinking setting.
    pub think_tokens: Option<usize>,
    /// Fail (the site shows an error) after this many answer words.
    pub fail_at: Option<usize>,
    /// Stall forever after this many answer words.
    pub hang_at: Option<usize>,
    /// Crash the tab.
    pub crash: bool,
    /// After a stop, the page's script spins this long: a page whose main thread hangs
    /// (the sandbox page does; the echo lane has no page).
    pub busy: Duration,
    /// Record when each answer piece is sent (the sandbox's `/stats` `emitted_us`), for
    /// measuring the relay from the site to the client.
    pub trace: bool,
    /// Rate-limit this account: the sandbox answers its pages HTTP 429 with
    /// `Retry-After: limit_s`, on this request and on any from it for `limit_s` seconds
    /// (requests from other accounts are answered as usual).
    pub limit_account: Option<String>,
    /// How long `limit_account` stays limited, in seconds.
    pub limit_s: u64,
    /// `call=` / `call_bad=`: the tool calls to answer with, in order.
    pub calls: Vec<ScriptedCall>,
    /// `json=`: the JSON text to answer with.
    pub json: Option<String>,
    /// `controls`: the answer begins with the page's header lines ([`header`]: the
    /// model picked, search, temperature) before the echo.
    pub controls: bool,
    /// `delete_fails`: the site refuses to delete the chat this request makes.
    pub delete_fails: bool,
    /// `reject_upload=1`: the sandbox refuses the request's uploads with an error text
    /// its page shows (its server reads the directive from the draft the page sends
    /// with each upload).
    pub reject_upload: bool,
    /// `upload_delay_ms=N`: the sandbox takes this long to answer each upload (an
    /// upload that is still going when a test stops or crashes the lane).
    pub upload_delay: Duration,
    /// Whether `tokens` was given: a scripted answer has words before its calls only
    /// then.
    tokens_given: bool,
}

/// A tool call the site answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedCall {
    pub name: String,
    /// A JSON object's text, as given.
    pub arguments: String,
    /// `call_bad`: the first answer breaks the schema (each top-level value wrapped in
    /// a list; an empty object becomes `[]`); the answer after prq's correction is valid.
    pub bad: bool,
}

impl ScriptedCall {
    fn parse(key: &str, value: Option<&str>, bad: bool) -> Result<Self, String> {
        let usage = || {
            format!("sandbox directive `{key}` needs NAME:JSON, e.g. {key}=get_weather:{{\"city\":\"Paris\"}} (JSON without spaces)")
        };
        let (name, arguments) = value.and_then(|v| v.split_once(':')).ok_or_else(usage)?;
        if !tool_call::valid_name(name) {
            return Err(format!("sandbox directive `{key}`: `{name}` is not a function name (letters, digits, _ and -)"));
        }
        match serde_json::from_str::<serde_json::Value>(arguments) {
            Ok(v) if v.is_object() => Ok(Self {
                name: name.to_string(),
                arguments: arguments.to_string(),
                bad,
            }),
            _ => Err(format!(
                "sandbox directive `{key}`: `{arguments}` is not a JSON object"
            )),
        }
    }

    /// The call as the site writes it; `again`: after prq asked again.
    fn render(&self, again: bool) -> String {
        if !self.bad || again {
            return tool_call::render(&self.name, &self.arguments);
        }
        let broken = match serde_json::from_str::<serde_json::Value>(&self.arguments) {
            Ok(serde_json::Value::Object(fields)) if !fields.is_empty() => {
                serde_json::Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::Value::Array(vec![v])))
                        .collect(),
                )
            }
            _ => serde_json::Value::Array(Vec::new()),
        };
        tool_call::render(&self.name, &broken.to_string())
    }
}

impl Default for Directives {
    fn default() -> Self {
        Self {
            tokens: 40,
            delay: Duration::from_millis(20),
            think_tokens: None,
            fail_at: None,
            hang_at: None,
            crash: false,
            busy: Duration::ZERO,
            trace: false,
            limit_account: None,
            limit_s: 60,
            calls: Vec::new(),
            json: None,
            controls: false,
            delete_fails: false,
            reject_upload: false,
            upload_delay: Duration::ZERO,
            tokens_given: false,
        }
    }
}

/// Reasoning words when thinking is on and `think_tokens` is not given.
pub const DEFAULT_THINK_TOKENS: usize = 10;

impl Directives {
    /// Reads the first line of `text` that starts with `sandbox:`; no such line gives
    /// the defaults. An unknown key or a bad value is an error that names it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut d = Directives::default();
        let Some(line) = text
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("sandbox:"))
        else {
            return Ok(d);
        };
        for item in line.split_whitespace() {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            let number = |v: Option<&str>| -> Result<u64, String> {
                v.ok_or_else(|| format!("sandbox directive `{key}` needs a value, e.g. {key}=10"))?
                    .parse::<u64>()
                    .map_err(|_| {
                        format!(
                            "sandbox directive `{key}` needs a whole number, got `{}`",
                            v.unwrap_or("")
                        )
                    })
            };
            match key {
                "tokens" => {
                    d.tokens = number(value)? as usize;
                    d.tokens_given = true;
                }
                "delay_ms" => d.delay = Duration::from_millis(number(value)?),
                "think_tokens" => d.think_tokens = Some(number(value)? as usize),
                "fail_at" => d.fail_at = Some(number(value)? as usize),
                "hang_at" => d.hang_at = Some(number(value)? as usize),
                "crash" => d.crash = true,
                "busy_ms" => d.busy = Duration::from_millis(number(value)?),
                "trace" => d.trace = true,
                "controls" => d.controls = true,
                "delete_fails" => d.delete_fails = true,
                "limit_account" => match value {
                    Some(name) if !name.is_empty() => d.limit_account = Some(name.to_string()),
                    _ => return Err("sandbox directive `limit_account` needs an account name, e.g. limit_account=a".into()),
                },
                "limit_s" => d.limit_s = number(value)?,
                "reject_upload" => d.reject_upload = number(value.or(Some("1")))? != 0,
                "upload_delay_ms" => d.upload_delay = Duration::from_millis(number(value)?),
                "call" => d.calls.push(ScriptedCall::parse(key, value, false)?),
                "call_bad" => d.calls.push(ScriptedCall::parse(key, value, true)?),
                "json" => match value.map(serde_json::from_str::<serde_json::Value>) {
                    Some(Ok(_)) => d.json = value.map(str::to_string),
                    _ => return Err("sandbox directive `json` needs JSON without spaces, e.g. json={\"ok\":true}".into()),
                },
                other => {
                    return Err(format!(
                        "unknown sandbox directive `{other}` (known: tokens, delay_ms, think_tokens, fail_at, hang_at, crash, busy_ms, trace, limit_account, limit_s, call, call_bad, json, controls, delete_fails, reject_upload, upload_delay_ms)"
                    ))
                }
            }
        }
        Ok(d)
    }

    pub fn think_tokens(&self, thinking: bool) -> usize {
        self.think_tokens
            .unwrap_or(if thinking { DEFAULT_THINK_TOKENS } else { 0 })
    }

    /// The whole answer of `call`/`call_bad`/`json` (no echo): `tokens` words when
    /// given, then the calls, or the JSON alone; `again`: after prq's correction.
    pub fn scripted(&self, again: bool) -> Option<String> {
        if let Some(json) = &self.json {
            return Some(json.clone());
        }
        if self.calls.is_empty() {
            return None;
        }
        let lead = if self.tokens_given { self.tokens } else { 0 };
        let mut text: String = (0..lead).map(answer_piece).collect();
        for call in &self.calls {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&call.render(again));
        }
        Some(text)
    }
}

/// What the site answers to a flattened prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The directives in force (their pace and faults apply to either answer).
    pub directives: Directives,
    /// The text an unscripted answer begins with: the last user message's, or the
    /// tool result's when the prompt ends with one.
    pub echo: &'a str,
    /// The whole answer when the directives script one ([`Directives::scripted`]).
    pub scripted: Option<String>,
}

/// What the site answers to `prompt`. A prompt that ends with a tool's result is
/// answered from it (echoed, then words), since the call was made; one that ends with
/// prq's correction answers the directives of the user message before it, the way they
/// go when asked again.
pub fn reply(prompt: &str) -> Result<Reply<'_>, String> {
    let turns = turns(prompt);
    match turns.last() {
        Some(&(Role::Tool, result)) => {
            let mut directives = Directives::parse(last_user_text(prompt))?;
            directives.calls.clear();
            directives.json = None;
            Ok(Reply {
                directives,
                echo: result,
                scripted: None,
            })
        }
        Some(&(Role::User, text)) if text.starts_with(tool_call::CORRECTION) => {
            let asked = turns
                .iter()
                .rev()
                .find(|(role, text)| {
                    *role == Role::User && !text.starts_with(tool_call::CORRECTION)
                })
                .map_or(text, |&(_, asked)| asked);
            let directives = Directives::parse(asked)?;
            let scripted = directives.scripted(true);
            Ok(Reply {
                directives,
                echo: asked,
                scripted,
            })
        }
        _ => {
            let echo = last_user_text(prompt);
            let directives = Directives::parse(echo)?;
            let scripted = directives.scripted(false);
            Ok(Reply {
                directives,
                echo,
                scripted,
            })
        }
    }
}

/// Characters per piece a scripted answer streams in, so that a call arrives cut across
/// pieces as a site's would.
pub const SCRIPTED_PIECE_CHARS: usize = 8;

/// A scripted answer's pieces, in order.
pub fn scripted_pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(SCRIPTED_PIECE_CHARS)
        .map(|c| c.iter().collect())
        .collect()
}

/// The header lines a sandbox answer begins with (`sandbox: controls`, and whatever
/// else the page reports about the request): one `key: value` line each, in order, so
/// that a test reads what the page did from the answer's first lines.
pub fn header(lines: &[(&str, String)]) -> String {
    lines
        .iter()
        .map(|(key, value)| format!("{key}: {value}\n"))
        .collect()
}

/// The `i`-th reasoning piece (0-based); pieces concatenate into the reasoning text.
pub fn reasoning_piece(i: usize) -> String {
    let sep = if i == 0 { "" } else { " " };
    format!("{sep}thought{}", i + 1)
}

/// The `i`-th answer word (0-based) that follows the echo.
pub fn answer_piece(i: usize) -> String {
    format!(" {}", WORDS[i % WORDS.len()])
}

/// The whole text a complete, unfailed generation produces: (reasoning, answer).
pub fn expected(last_user: &str, thinking: bool) -> Result<(String, String), String> {
    let d = Directives::parse(last_user)?;
    let reasoning = (0..d.think_tokens(thinking)).map(reasoning_piece).collect();
    if let Some(scripted) = d.scripted(false) {
        return Ok((reasoning, scripted));
    }
    let mut answer = last_user.to_string();
    answer.extend((0..d.tokens).map(answer_piece));
    Ok((reasoning, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_a_directive_line() {
        assert_eq!(Directives::parse("hello").unwrap(), Directives::default());
    }

    #[test]
    fn directives_are_read_from_their_line() {
        let d =
            Directives::parse("hi\nsandbox: tokens=3 delay_ms=0 hang_at=2 crash busy_ms=70\nbye")
                .unwrap();
        assert_eq!(d.tokens, 3);
        assert_eq!(d.busy, Duration::from_millis(70));
        assert_eq!(d.delay, Duration::ZERO);
        assert_eq!(d.hang_at, Some(2));
        assert!(d.crash);
        assert_eq!(d.think_tokens(true), DEFAULT_THINK_TOKENS);
        assert_eq!(d.think_tokens(false), 0);
    }

    #[test]
    fn trace_is_a_flag_that_leaves_the_answer_alone() {
        let d = Directives::parse("sandbox: trace tokens=2").unwrap();
        assert!(d.trace);
        assert_eq!(d.tokens, 2);
        assert!(!Directives::parse("hi").unwrap().trace);
        let (_, a) = expected("x\nsandbox: trace tokens=2", false).unwrap();
        assert_eq!(a, "x\nsandbox: trace tokens=2 lorem ipsum");
    }

    #[test]
    fn limit_account_names_an_account_and_a_time() {
        let d = Directives::parse("sandbox: limit_account=b limit_s=7").unwrap();
        assert_eq!((d.limit_account.as_deref(), d.limit_s), (Some("b"), 7));
        assert_eq!(
            Directives::parse("sandbox: limit_account=b")
                .unwrap()
                .limit_s,
            60
        );
        let e = Directives::parse("sandbox: limit_account=").unwrap_err();
        assert!(e.contains("limit_account"), "{e}");
    }

    #[test]
    fn bad_directives_are_named() {
        let e = Directives::parse("sandbox: tokens=many").unwrap_err();
        assert!(e.contains("tokens") && e.contains("many"), "{e}");
        let e = Directives::parse("sandbox: explode=1").unwrap_err();
        assert!(e.contains("explode"), "{e}");
    }

    #[test]
    fn calls_and_json_script_the_whole_answer() {
        let d = Directives::parse(r#"sandbox: call=a:{"x":1} call_bad=b:{"y":"z"} delay_ms=0"#)
            .unwrap();
        assert_eq!(d.calls.len(), 2);
        assert_eq!(
            d.scripted(false).unwrap(),
            "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\":1}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"y\":[\"z\"]}}\n</tool_call>"
        );
        assert!(d.scripted(true).unwrap().ends_with(
            r#"{"y":"z"}}
</tool_call>"#
        ));
        let lead = Directives::parse(r#"sandbox: tokens=2 call=a:{}"#).unwrap();
        assert!(lead
            .scripted(false)
            .unwrap()
            .starts_with(" lorem ipsum\n<tool_call>"));
        let json = Directives::parse(r#"sandbox: json={"ok":true}"#).unwrap();
        assert_eq!(json.scripted(false).unwrap(), r#"{"ok":true}"#);
        assert_eq!(expected(r#"sandbox: json=[1]"#, false).unwrap().1, "[1]");
        for bad in [
            "call=a",
            "call=a b:{}",
            "call=a:[1]",
            "json={",
            "call_bad=x:nope",
        ] {
            let e = Directives::parse(&format!("sandbox: {bad}")).unwrap_err();
            assert!(e.contains(bad.split('=').next().unwrap()), "{e}");
        }
    }

    #[test]
    fn a_reply_follows_the_turn_it_answers() {
        let first = "System: tools\n\nUser: go\nsandbox: call_bad=f:{\"a\":1}";
        let r = reply(first).unwrap();
        assert!(r.scripted.unwrap().contains(r#"{"a":[1]}"#));
        let again = format!(
            "{first}\n\nAssistant: bad\n\nUser: {} wrong",
            tool_call::CORRECTION
        );
        let r = reply(&again).unwrap();
        assert!(r.scripted.unwrap().contains(r#"{"a":1}"#));
        let result = format!("{first}\n\nAssistant: call\n\nTool: 22 C");
        let r = reply(&result).unwrap();
        assert_eq!((r.echo, r.scripted), ("22 C", None));
        let plain = reply("hi").unwrap();
        assert_eq!((plain.echo, plain.scripted), ("hi", None));
        assert_eq!(scripted_pieces("abcdefghij"), ["abcdefgh", "ij"]);
    }

    #[test]
    fn header_lines_come_one_per_key() {
        let d = Directives::parse("hi\nsandbox: controls delete_fails").unwrap();
        assert!(d.controls && d.delete_fails);
        let lines = [("model", "Swift".to_string()), ("search", "on".to_string())];
        assert_eq!(header(&lines), "model: Swift\nsearch: on\n");
        assert_eq!(header(&[]), "");
    }

    #[test]
    fn the_answer_echoes_then_counts_words() {
        let (r, a) = expected("hi\nsandbox: tokens=3 think_tokens=2", false).unwrap();
        assert_eq!(r, "thought1 thought2");
        assert_eq!(a, "hi\nsandbox: tokens=3 think_tokens=2 lorem ipsum dolor");
    }
}
