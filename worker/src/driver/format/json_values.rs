//! JSON objects and arrays sent one after another in one body — run together, or
//! separated by whitespace, commas or NUL padding — read one at a time as each one
//! completes. Two shapes of it: values at the top level of the body
//! ([`JsonValues::top_level`]), and the elements of one top-level array that a site
//! streams as it produces them ([`JsonValues::array_elements`]), optionally behind an
//! anti-XSSI prefix such as `)]}'`.
//!
//! Only object and array values are recognised: those are what sites stream, and a
//! scalar where one is expected is reported as an error rather than guessed at.

use serde_json::Value;

#[derive(Debug)]
pub struct JsonValues {
    buf: Vec<u8>,
    /// How far `buf` has been scanned.
    scanned: usize,
    /// Where the value being scanned starts, once its first byte has been seen.
    start: Option<usize>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The prefix still expected before anything else (consumed as it matches).
    prefix: &'static [u8],
    /// Values are the elements of one array: its `[` is still to come (`Opening`), has
    /// come (`Open`), or its `]` has come (`Closed`).
    array: Option<ArrayState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    Opening,
    Open,
    Closed,
}

impl JsonValues {
    /// Values one after another at the top level of the body.
    pub fn top_level() -> Self {
        Self::new(b"", None)
    }

    /// The elements of the one array the body holds, after `prefix` (which the body
    /// may also leave out).
    pub fn array_elements(prefix: &'static [u8]) -> Self {
        Self::new(prefix, Some(ArrayState::Opening))
    }

    fn new(prefix: &'static [u8], array: Option<ArrayState>) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            start: None,
            depth: 0,
            in_string: false,
            escaped: false,
            prefix,
            array,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether the array of [`array_elements`](JsonValues::array_elements) has closed.
    pub fn closed(&self) -> bool {
        self.array == Some(ArrayState::Closed)
    }

    /// Whether unread bytes remain that are more than separators (a value cut short).
    pub fn incomplete(&self) -> bool {
        self.start.is_some()
    }

    /// Takes `bytes` and hands each value now complete to `each`, in order; the first
    /// error stops it and is returned (the body is no longer what it should be).
    pub fn feed(&mut self, bytes: &[u8], mut each: impl FnMut(Value)) -> Result<(), String> {
        self.push(bytes);
        while let Some(value) = self.next_value()? {
            each(value);
        }
        Ok(())
    }

    /// The next complete value; `Err` when the body is not what it should be.
    pub fn next_value(&mut self) -> Result<Option<Value>, String> {
        self.skip_prefix()?;
        while self.scanned < self.buf.len() {
            let i = self.scanned;
            let byte = self.buf[i];
            self.scanned += 1;
            if self.start.is_none() {
                match (byte, self.array) {
                    (b' ' | b'\t' | b'\r' | b'\n' | b',' | 0, _) => continue,
                    (b'[', Some(ArrayState::Opening)) => {
                        self.array = Some(ArrayState::Open);
                        continue;
                    }
                    (b']', Some(ArrayState::Open)) => {
                        self.array = Some(ArrayState::Closed);
                        continue;
                    }
                    (_, Some(ArrayState::Opening)) => {
                        return Err(format!("expected `[`, found {:?}", byte as char));
                    }
                    (_, Some(ArrayState::Closed)) => {
                        return Err(format!("{:?} after the end of the array", byte as char));
                    }
                    (b'{' | b'[', _) => {
                        self.start = Some(i);
                        self.depth = 1;
                        continue;
                    }
                    _ => {
                        return Err(format!(
                            "expected an object or array, found {:?}",
                            byte as char
                        ))
                    }
                }
            }
            if self.in_string {
                match byte {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let start = self.start.take().expect("a value was started");
                        let value = serde_json::from_slice(&self.buf[start..=i])
                            .map_err(|e| format!("a value does not parse: {e}"));
                        self.buf.drain(..=i);
                        self.scanned = 0;
                        return value.map(Some);
                    }
                }
                _ => {}
            }
        }
        // Nothing complete: drop what was only separators.
        if self.start.is_none() {
            self.buf.clear();
            self.scanned = 0;
        }
        Ok(None)
    }

    fn skip_prefix(&mut self) -> Result<(), String> {
        while !self.prefix.is_empty() {
            let Some(&byte) = self.buf.first() else {
                return Ok(());
            };
            if byte != self.prefix[0] {
                if self.array == Some(ArrayState::Opening) && byte == b'[' {
                    // No prefix at all: the array starts right away.
                    self.prefix = b"";
                    return Ok(());
                }
                return Err(format!(
                    "the body does not start with {:?}",
                    String::from_utf8_lossy(self.prefix)
                ));
            }
            self.buf.remove(0);
            self.prefix = &self.prefix[1..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn all(reader: &mut JsonValues, body: &[u8], cut: usize) -> Vec<Value> {
        let mut values = Vec::new();
        for part in [&body[..cut], &body[cut..]] {
            reader.push(part);
            while let Some(v) = reader.next_value().unwrap() {
                values.push(v);
            }
        }
        values
    }

    #[test]
    fn values_run_together_come_out_one_by_one_at_any_cut() {
        let body = "{\"t\":\"a}\\\"[\"}\n{\"t\":\"日本\\u0000\"}\u{0}\u{0}[1,{\"b\":[]}] {\"x\":1}";
        let want = vec![
            json!({"t": "a}\"["}),
            json!({"t": "日本\u{0}"}),
            json!([1, {"b": []}]),
            json!({"x": 1}),
        ];
        for cut in 0..=body.len() {
            let mut reader = JsonValues::top_level();
            assert_eq!(all(&mut reader, body.as_bytes(), cut), want, "cut at {cut}");
            assert!(!reader.incomplete());
        }
    }

    #[test]
    fn array_elements_behind_a_prefix_and_the_arrays_end() {
        let body = ")]}'\n[[[\"a\"]]\n,[[\"é\"]],\n[]]";
        for cut in 0..=body.len() {
            let mut reader = JsonValues::array_elements(b")]}'");
            let values = all(&mut reader, body.as_bytes(), cut);
            assert_eq!(values, vec![json!([["a"]]), json!([["é"]]), json!([])]);
            assert!(reader.closed(), "cut at {cut}");
        }
        // Without the prefix, too.
        let mut reader = JsonValues::array_elements(b")]}'");
        assert_eq!(all(&mut reader, b"[[1]]", 2), vec![json!([1])]);
    }

    #[test]
    fn what_is_not_a_stream_of_values_is_an_error() {
        let mut reader = JsonValues::top_level();
        reader.push(b"data: {}");
        assert!(reader.next_value().is_err());
        let mut reader = JsonValues::array_elements(b")]}'");
        reader.push(b"<html>");
        assert!(reader.next_value().is_err());
    }

    #[test]
    fn a_value_cut_short_is_incomplete() {
        let mut reader = JsonValues::top_level();
        reader.push(b"{\"a\": [1, 2");
        assert_eq!(reader.next_value().unwrap(), None);
        assert!(reader.incomplete());
    }
}
