//! The frame codec: a 4-byte big-endian length prefix, then a bincode body.
//!
//! bincode is used only here, so that swapping the body encoding is a change to this
//! one file. A frame longer than [`MAX_FRAME`] is refused before it is read into memory;
//! a body that does not decode into the expected message type is an error, not a panic.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder};

use crate::ProtocolError;

/// The largest frame either side accepts: prompts are bounded well below this by the
/// HTTP layer's body limit, so anything larger is a broken or hostile peer.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// Encodes one message into a frame body (without the length prefix).
pub fn encode_body<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    bincode::serde::encode_to_vec(msg, bincode_config())
        .map_err(|e| ProtocolError::Encode(e.to_string()))
}

/// Decodes one frame body. Trailing bytes are an error: a well-formed peer never sends them.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    let (msg, used) = bincode::serde::decode_from_slice(body, bincode_config())
        .map_err(|e| ProtocolError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(ProtocolError::Decode(format!(
            "{} trailing bytes after the message",
            body.len() - used
        )));
    }
    Ok(msg)
}

const PREFIX: usize = 4;

/// A `tokio_util` codec that reads `In` messages and writes `Out` messages.
pub struct FrameCodec<In, Out> {
    max: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::with_max(MAX_FRAME)
    }
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec with another maximum body size (tests use a small one to reach it cheaply).
    pub fn with_max(max: usize) -> Self {
        Self {
            max,
            _types: PhantomData,
        }
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, ProtocolError> {
        if src.len() < PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes(src[..PREFIX].try_into().expect("4 bytes")) as usize;
        // Refuse before buffering: a hostile length must not make us allocate.
        if len > self.max {
            return Err(ProtocolError::FrameTooLarge { len, max: self.max });
        }
        if src.len() < PREFIX + len {
            src.reserve(PREFIX + len - src.len());
            return Ok(None);
        }
        src.advance(PREFIX);
        let body = src.split_to(len);
        decode_body(&body).map(Some)
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = ProtocolError;

    fn encode(&mut self, msg: Out, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let body = encode_body(&msg)?;
        if body.len() > self.max {
            return Err(ProtocolError::FrameTooLarge {
                len: body.len(),
                max: self.max,
            });
        }
        dst.reserve(PREFIX + body.len());
        dst.put_u32(body.len() as u32);
        dst.extend_from_slice(&body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{DeltaKind, FromWorker, ToWorker};

    type WorkerSide = FrameCodec<ToWorker, FromWorker>;
    type SupervisorSide = FrameCodec<FromWorker, ToWorker>;

    #[test]
    fn messages_round_trip_and_split_frames_wait_for_the_rest() {
        let mut buf = BytesMut::new();
        let msg = FromWorker::Delta {
            id: 7,
            kind: DeltaKind::Answer,
            text: "héllo wörld".into(),
        };
        WorkerSide::default().encode(msg.clone(), &mut buf).unwrap();
        let whole = buf.clone();
        let mut dec = SupervisorSide::default();
        // Feed it a byte at a time: nothing comes out until the frame is complete.
        let mut partial = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            partial.put_u8(*b);
            let out = dec.decode(&mut partial).unwrap();
            if i + 1 < whole.len() {
                assert!(out.is_none());
            } else {
                assert_eq!(out, Some(msg.clone()));
            }
        }
    }

    #[test]
    fn bytes_that_do_not_decode_are_an_error() {
        let mut buf = BytesMut::new();
        buf.put_u32(3);
        buf.extend_from_slice(&[0xee, 0xee, 0xee]);
        let err = SupervisorSide::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtocolError::Decode(_)), "{err}");
    }

    #[test]
    fn trailing_bytes_in_a_frame_are_an_error() {
        let mut body = encode_body(&FromWorker::Heartbeat).unwrap();
        body.push(0);
        let err = decode_body::<FromWorker>(&body).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_from_its_prefix() {
        let mut buf = BytesMut::new();
        buf.put_u32(1025);
        let err = FrameCodec::<FromWorker, ToWorker>::with_max(1024)
            .decode(&mut buf)
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProtocolError::FrameTooLarge {
                    len: 1025,
                    max: 1024
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_oversized_message_is_not_sent() {
        let mut buf = BytesMut::new();
        let msg = FromWorker::Fatal {
            reason: "x".repeat(2048),
        };
        let err = FrameCodec::<ToWorker, FromWorker>::with_max(1024)
            .encode(msg, &mut buf)
            .unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { .. }));
        assert!(buf.is_empty());
    }
}
