//! The deterministic answer that the sandbox site and the echo lane both give.
//!
//! The answer begins with the last user message's text, verbatim, followed by
//! `tokens` words; with thinking on, `think_tokens` reasoning words come first. A line
//! `sandbox: key=value ...` in the last user message steers the length, the pace and
//! the faults. Keeping the script in one place lets tests compute the exact answer.

use std::time::Duration;

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
                "tokens" => d.tokens = number(value)? as usize,
                "delay_ms" => d.delay = Duration::from_millis(number(value)?),
                "think_tokens" => d.think_tokens = Some(number(value)? as usize),
                "fail_at" => d.fail_at = Some(number(value)? as usize),
                "hang_at" => d.hang_at = Some(number(value)? as usize),
                "crash" => d.crash = true,
                "busy_ms" => d.busy = Duration::from_millis(number(value)?),
                "trace" => d.trace = true,
                "limit_account" => match value {
                    Some(name) if !name.is_empty() => d.limit_account = Some(name.to_string()),
                    _ => return Err("sandbox directive `limit_account` needs an account name, e.g. limit_account=a".into()),
                },
                "limit_s" => d.limit_s = number(value)?,
                other => {
                    return Err(format!(
                        "unknown sandbox directive `{other}` (known: tokens, delay_ms, think_tokens, fail_at, hang_at, crash, busy_ms, trace, limit_account, limit_s)"
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
    fn the_answer_echoes_then_counts_words() {
        let (r, a) = expected("hi\nsandbox: tokens=3 think_tokens=2", false).unwrap();
        assert_eq!(r, "thought1 thought2");
        assert_eq!(a, "hi\nsandbox: tokens=3 think_tokens=2 lorem ipsum dolor");
    }
}
