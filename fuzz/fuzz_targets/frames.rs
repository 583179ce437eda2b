//! Fuzzes the frame decoder with every message type a peer can send: arbitrary bytes,
//! fed in arbitrary pieces, must decode into messages or a clean error — never a panic,
//! an allocation past the frame limit, or a hang. Messages that do decode must encode
//! back to bytes that decode to the same message.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use prq_protocol::control::{ControlRequest, ControlResponse};
use prq_protocol::frame::{decode_body, encode_body, FrameCodec};
use prq_protocol::handshake::{Hello, HelloReply};
use prq_protocol::worker::{FromWorker, ToWorker};
use tokio_util::codec::Decoder;

fn frames<T>(data: &[u8], split: usize)
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let mut codec = FrameCodec::<T, T>::with_max(64 * 1024);
    let mut buf = BytesMut::new();
    for piece in data.chunks(split.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(msg)) => {
                    let again: T = decode_body(&encode_body(&msg).expect("encodes")).expect("decodes");
                    assert_eq!(again, msg);
                }
                Ok(None) => break,
                // A peer that sends this is dropped; nothing more to read.
                Err(_) => return,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let split = usize::from(selector >> 3) + 1;
    match selector & 7 {
        0 => frames::<FromWorker>(rest, split),
        1 => frames::<ToWorker>(rest, split),
        2 => frames::<ControlRequest>(rest, split),
        3 => frames::<ControlResponse>(rest, split),
        4 => frames::<Hello>(rest, split),
        _ => frames::<HelloReply>(rest, split),
    }
});
