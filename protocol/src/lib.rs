//! Everything that crosses a process boundary inside prq.
//!
//! - [`frame`]: the length-prefixed bincode frames and their size limit;
//! - [`worker`]: supervisor ↔ worker messages (one worker drives one lane);
//! - [`control`]: CLI ↔ daemon messages (`prq start | stop | status | queue ...`);
//! - [`handshake`]: the version check each connection opens with;
//! - [`prompt`]: how a chat conversation is flattened into the one prompt a site takes;
//! - [`script`]: the deterministic answer of the sandbox site and the echo lane.
//!
//! Both ends of every connection link this crate, so a message type exists once.

pub mod control;
pub mod frame;
pub mod handshake;
pub mod prompt;
pub mod script;
pub mod worker;

pub use frame::{FrameCodec, MAX_FRAME};

/// Bumped whenever a message changes shape. Peers with another version are refused
/// during the handshake, before any other message is read.
pub const PROTOCOL_VERSION: u32 = 2;

/// Why a connection had to be dropped.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("message does not decode: {0}")]
    Decode(String),
    #[error("message does not encode: {0}")]
    Encode(String),
    #[error("peer speaks protocol version {theirs}, this build speaks {ours}")]
    VersionMismatch { ours: u32, theirs: u32 },
    #[error("peer broke the handshake: {0}")]
    Handshake(String),
    #[error("peer closed the connection")]
    Closed,
    #[error("no answer from the peer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
