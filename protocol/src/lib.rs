//! Everything that crosses a process boundary inside prq.
//!
//! - [`frame`]: the length-prefixed bincode frames and their size limit;
//! - [`worker`]: supervisor ↔ worker messages (one worker drives one lane);
//! - [`control`]: CLI ↔ daemon messages (`prq start | stop | status | queue ...`);
//! - [`controls`]: a chat page's own controls a request sets (model, search, settings)
//!   and what becomes of the chat it made;
//! - [`handshake`]: the version check each connection opens with;
//! - [`provider`]: the providers prq has drivers for, by name;
//! - [`proxy`]: a lane's proxy URL, as the config gives it and the worker uses it;
//! - [`prompt`]: how a chat conversation is flattened into the one prompt a site takes;
//! - [`script`]: the deterministic answer of the sandbox site and the echo lane;
//! - [`tool_call`]: how a reply calls a function (prq's tool-call format);
//! - [`log_format`]: the log line formats (text, JSON) the daemon and workers share;
//! - [`selector`]: the selector syntax of the drivers and `[lanes.selectors]`;
//! - [`view`]: the queue as prq shows it (a request, a listing);
//! - [`screen`]: the panel's login view of a lane's page (frames out, input in).
//!
//! Both ends of every connection link this crate, so a message type exists once.

pub mod control;
pub mod controls;
pub mod frame;
pub mod handshake;
pub mod log_format;
pub mod prompt;
pub mod provider;
pub mod proxy;
pub mod screen;
pub mod script;
pub mod selector;
pub mod tool_call;
pub mod view;
pub mod worker;

pub use frame::{FrameCodec, MAX_FRAME};

/// Bumped whenever a message changes shape. Peers with another version are refused
/// during the handshake, before any other message is read.
pub const PROTOCOL_VERSION: u32 = 10;

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

impl ProtocolError {
    /// Whether the peer went away rather than said something wrong. A Unix socket
    /// closed with bytes still unread in it resets the connection, so a peer that exits
    /// while a message to it is in flight reads as a reset here, not as end of stream.
    pub fn is_hang_up(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            ProtocolError::Closed => true,
            ProtocolError::Io(e) => matches!(
                e.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// A read from a framed connection with the peer's going away, however the socket
/// reported it, as the end of the stream (`None`).
pub fn until_hang_up<T>(
    read: Option<Result<T, ProtocolError>>,
) -> Option<Result<T, ProtocolError>> {
    match read {
        Some(Err(e)) if e.is_hang_up() => None,
        read => read,
    }
}

#[cfg(test)]
mod tests {
    use futures::{SinkExt, StreamExt};
    use tokio::net::UnixStream;
    use tokio_util::codec::Framed;

    use super::*;
    use crate::worker::{FromWorker, ToWorker};

    /// A peer that closes with a message to it still unread resets the socket; the
    /// other side reads that as the end, as it reads a plain close.
    #[tokio::test]
    async fn a_peer_closing_with_bytes_unread_is_the_end_of_the_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut worker = Framed::new(a, FrameCodec::<ToWorker, FromWorker>::default());
        let supervisor = Framed::new(b, FrameCodec::<FromWorker, ToWorker>::default());
        worker.send(FromWorker::Heartbeat).await.unwrap();
        drop(supervisor);
        let read = worker.next().await;
        assert!(
            matches!(&read, Some(Err(e)) if e.is_hang_up()),
            "the raw read is a reset: {read:?}"
        );
        assert!(until_hang_up(read).is_none());
    }

    #[test]
    fn a_bad_message_is_not_a_hang_up() {
        let read: Option<Result<(), _>> = Some(Err(ProtocolError::Decode("bad".into())));
        assert!(matches!(until_hang_up(read), Some(Err(_))));
    }
}
