//! Frames of the Connect protocol's streaming responses (connectrpc.com): each frame is
//! one flags byte, a 4-byte big-endian length and that many bytes of message; flag
//! `0x02` marks the end-of-stream frame, whose message is a JSON object with an `error`
//! when the call failed, and `0x01` a compressed message.

/// Frames longer than this are taken for a broken stream rather than buffered.
const MAX_FRAME: usize = 16 * 1024 * 1024;

const FLAG_COMPRESSED: u8 = 0x01;
const FLAG_END: u8 = 0x02;

#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// The end-of-stream frame.
    pub end: bool,
    pub compressed: bool,
    pub message: Vec<u8>,
}

/// Splits a byte stream into frames, however it is cut.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame; `Err` when the stream cannot be frames.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        let Some(header) = self.buf.get(..5) else {
            return Ok(None);
        };
        let flags = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_FRAME {
            return Err(format!(
                "a frame of {len} bytes (flags {flags:#04x}) is over {MAX_FRAME}"
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let message = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some(Frame {
            end: flags & FLAG_END != 0,
            compressed: flags & FLAG_COMPRESSED != 0,
            message,
        }))
    }

    /// Bytes of a frame that has not come whole.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Encodes one frame (for tests and replicas of Connect servers).
#[cfg(test)]
pub fn frame(end: bool, message: &[u8]) -> Vec<u8> {
    let mut out = vec![if end { FLAG_END } else { 0 }];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole_however_the_bytes_are_cut() {
        let mut body = frame(false, "{\"a\":\"日本\"}".as_bytes());
        body.extend(frame(false, b""));
        body.extend(frame(true, b"{}"));
        for cut in 0..=body.len() {
            let mut reader = FrameReader::default();
            let mut frames = Vec::new();
            for part in [&body[..cut], &body[cut..]] {
                reader.push(part);
                while let Some(f) = reader.next_frame().unwrap() {
                    frames.push(f);
                }
            }
            assert_eq!(frames.len(), 3, "cut at {cut}");
            assert_eq!(frames[0].message, "{\"a\":\"日本\"}".as_bytes());
            assert!(frames[1].message.is_empty() && !frames[1].end);
            assert!(frames[2].end && !frames[2].compressed);
            assert_eq!(reader.pending(), 0);
        }
    }

    #[test]
    fn an_absurd_length_is_an_error() {
        let mut reader = FrameReader::default();
        reader.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(reader.next_frame().is_err());
    }
}
