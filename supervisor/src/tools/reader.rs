//! Reading a reply for tool calls as it streams: text outside a call goes on at once,
//! except a tail that may be the start of a call's opening tag (held until the next
//! piece settles it); a call is held until its closing tag. Pieces may be cut anywhere,
//! even inside a tag or a character's bytes' worth of text (pieces are whole `str`s).
//!
//! Text after the first call is not passed on: the prompt asks for the calls at the end
//! of the reply, and what a model writes between or after them is not an answer the
//! client can show next to its calls.

use prq_protocol::tool_call::{CLOSE, OPEN};

/// What a piece of reply gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Answer text before the calls.
    Text(String),
    /// What stood between a call's tags.
    Call(String),
}

#[derive(Debug, Default)]
pub struct Reader {
    /// Text not yet given out: a possible start of [`OPEN`], or a call's text so far.
    held: String,
    in_call: bool,
    /// A call has opened: text outside calls is dropped from here on.
    calls_began: bool,
}

/// A call was opened and never closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unclosed;

impl Reader {
    /// Takes the next piece of the reply; what it completes goes to `out`.
    pub fn push(&mut self, text: &str, out: &mut Vec<Piece>) {
        self.held.push_str(text);
        loop {
            if self.in_call {
                let Some(end) = self.held.find(CLOSE) else {
                    return;
                };
                let call = self.held[..end].to_string();
                self.held.drain(..end + CLOSE.len());
                self.in_call = false;
                out.push(Piece::Call(call));
                continue;
            }
            if let Some(start) = self.held.find(OPEN) {
                let before: String = self.held.drain(..start + OPEN.len()).collect();
                self.text(&before[..start], out);
                self.in_call = true;
                self.calls_began = true;
                continue;
            }
            let keep = partial_open_at_end(&self.held);
            let rest = self.held.split_off(self.held.len() - keep);
            let text = std::mem::replace(&mut self.held, rest);
            self.text(&text, out);
            return;
        }
    }

    /// The reply ended: the held tail is text, unless a call is still open.
    pub fn finish(&mut self, out: &mut Vec<Piece>) -> Result<(), Unclosed> {
        let held = std::mem::take(&mut self.held);
        if self.in_call {
            return Err(Unclosed);
        }
        self.text(&held, out);
        Ok(())
    }

    fn text(&self, text: &str, out: &mut Vec<Piece>) {
        if !text.is_empty() && !self.calls_began {
            out.push(Piece::Text(text.to_string()));
        }
    }
}

/// The length of the longest proper start of [`OPEN`] that `text` ends with.
fn partial_open_at_end(text: &str) -> usize {
    (1..OPEN.len().min(text.len() + 1))
        .rev()
        .find(|&k| text.ends_with(&OPEN[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pieces: &[&str]) -> (Vec<Piece>, Result<(), Unclosed>) {
        let mut reader = Reader::default();
        let mut out = Vec::new();
        for p in pieces {
            reader.push(p, &mut out);
        }
        let end = reader.finish(&mut out);
        (out, end)
    }

    #[test]
    fn text_then_calls_and_nothing_after() {
        let (out, end) = read(&[
            "Sure.\n<tool_",
            "call>{\"a\":1}</tool_call>\n<tool_call>x</tool_call> bye",
        ]);
        assert_eq!(end, Ok(()));
        assert_eq!(
            out,
            [
                Piece::Text("Sure.\n".into()),
                Piece::Call("{\"a\":1}".into()),
                Piece::Call("x".into())
            ]
        );
    }

    #[test]
    fn a_held_start_that_is_no_tag_is_text_and_an_open_call_is_unclosed() {
        let (out, end) = read(&["a <tool", "box> b <"]);
        assert_eq!(end, Ok(()));
        let text: String = out
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.as_str(),
                Piece::Call(_) => panic!("no call"),
            })
            .collect();
        assert_eq!(text, "a <toolbox> b <");
        assert_eq!(read(&["<tool_call>{\"a\":"]).1, Err(Unclosed));
    }

    #[test]
    fn only_what_may_start_a_tag_is_held() {
        let mut reader = Reader::default();
        let mut out = Vec::new();
        reader.push("Hello <to", &mut out);
        assert_eq!(out, [Piece::Text("Hello ".into())]);
        reader.push("day", &mut out);
        assert_eq!(out[1], Piece::Text("<today".into()));
    }
}
