//! The first frame on every connection: who the peer is and which protocol version it
//! speaks. The version is the first field, so a peer whose other messages have changed
//! shape still gets a clear "version mismatch" rather than a decode error.
//!
//! The handshake reads and writes exactly one frame each way by hand, so the stream can
//! be wrapped in a [`Framed`] with the connection's message codec afterwards without
//! losing buffered bytes.

use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;

#[cfg(doc)]
use crate::frame::MAX_FRAME;
use crate::frame::{decode_body, encode_body, FrameCodec};
use crate::{ProtocolError, PROTOCOL_VERSION};

/// How long either side waits for the other's handshake frame.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest handshake frame either side reads. A hello is a few dozen bytes; a peer
/// that has not shaken hands yet may not make the other side hold more than this (the
/// [`MAX_FRAME`] limit applies only once it has).
pub const MAX_HELLO: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub peer: Peer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Peer {
    /// A lane worker, started by the supervisor with this lane ID.
    Worker { lane_id: String, pid: u32 },
    /// The `prq` CLI.
    Cli,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome { version: u32 },
    Refused { reason: String },
}

async fn write_frame<S: AsyncWrite + Unpin, T: Serialize>(
    io: &mut S,
    msg: &T,
) -> Result<(), ProtocolError> {
    let body = encode_body(msg)?;
    io.write_all(&(body.len() as u32).to_be_bytes()).await?;
    io.write_all(&body).await?;
    io.flush().await?;
    Ok(())
}

async fn read_frame<S: AsyncRead + Unpin>(io: &mut S) -> Result<Vec<u8>, ProtocolError> {
    let mut prefix = [0u8; 4];
    match io.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ProtocolError::Closed)
        }
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_HELLO {
        return Err(ProtocolError::FrameTooLarge {
            len,
            max: MAX_HELLO,
        });
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

async fn deadline<T>(
    fut: impl std::future::Future<Output = Result<T, ProtocolError>>,
) -> Result<T, ProtocolError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .map_err(|_| ProtocolError::Timeout(HANDSHAKE_TIMEOUT))?
}

fn decode_hello(body: &[u8]) -> Result<Hello, ProtocolError> {
    // The version first, on its own, so a mismatch is named as such.
    let (version, _): (u32, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| ProtocolError::Decode(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        });
    }
    decode_body(body)
}

/// Server side: read the peer's hello, answer it, and hand back the framed connection.
/// On any error the peer has been told why (when it could be) and should be dropped.
pub async fn accept<S, In, Out>(
    mut io: S,
) -> Result<(Peer, Framed<S, FrameCodec<In, Out>>), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    In: DeserializeOwned,
    Out: Serialize,
{
    let hello = deadline(async {
        let body = read_frame(&mut io).await?;
        decode_hello(&body)
    })
    .await;
    match hello {
        Ok(hello) => {
            let reply = HelloReply::Welcome {
                version: PROTOCOL_VERSION,
            };
            deadline(write_frame(&mut io, &reply)).await?;
            Ok((hello.peer, Framed::new(io, FrameCodec::default())))
        }
        Err(e) => {
            let reply = HelloReply::Refused {
                reason: e.to_string(),
            };
            // Best effort: the peer may already be gone.
            let _ = deadline(write_frame(&mut io, &reply)).await;
            Err(e)
        }
    }
}

/// Client side: say hello as `peer` and wait to be welcomed.
pub async fn connect<S, In, Out>(
    mut io: S,
    peer: Peer,
) -> Result<Framed<S, FrameCodec<In, Out>>, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    In: DeserializeOwned,
    Out: Serialize,
{
    let hello = Hello {
        version: PROTOCOL_VERSION,
        peer,
    };
    let reply: HelloReply = deadline(async {
        write_frame(&mut io, &hello).await?;
        decode_body(&read_frame(&mut io).await?)
    })
    .await?;
    match reply {
        HelloReply::Welcome { version } if version == PROTOCOL_VERSION => {
            Ok(Framed::new(io, FrameCodec::default()))
        }
        HelloReply::Welcome { version } => Err(ProtocolError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        }),
        HelloReply::Refused { reason } => Err(ProtocolError::Handshake(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ControlRequest, ControlResponse};
    use futures::{SinkExt, StreamExt};

    type ServerSide<S> = Framed<S, FrameCodec<ControlRequest, ControlResponse>>;

    #[tokio::test]
    async fn matching_versions_shake_hands_and_talk() {
        let (a, b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            let (peer, mut framed): (Peer, ServerSide<_>) = accept(a).await.unwrap();
            let req = framed.next().await.unwrap().unwrap();
            (peer, req)
        });
        let mut client: Framed<_, FrameCodec<ControlResponse, ControlRequest>> =
            connect(b, Peer::Cli).await.unwrap();
        client.send(ControlRequest::Status).await.unwrap();
        let (peer, req) = server.await.unwrap();
        assert_eq!(peer, Peer::Cli);
        assert_eq!(req, ControlRequest::Status);
    }

    #[tokio::test]
    async fn another_version_is_refused_with_a_clear_reason() {
        let (a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            accept::<_, ControlRequest, ControlResponse>(a)
                .await
                .map(|_| ())
        });
        let hello = Hello {
            version: PROTOCOL_VERSION + 7,
            peer: Peer::Cli,
        };
        write_frame(&mut b, &hello).await.unwrap();
        let reply: HelloReply = decode_body(&read_frame(&mut b).await.unwrap()).unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert!(
            matches!(err, ProtocolError::VersionMismatch { theirs, .. } if theirs == PROTOCOL_VERSION + 7)
        );
        match reply {
            HelloReply::Refused { reason } => assert!(reason.contains("version"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_instead_of_a_hello_is_refused() {
        let (a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            accept::<_, ControlRequest, ControlResponse>(a)
                .await
                .map(|_| ())
        });
        b.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert!(matches!(err, ProtocolError::Decode(_)), "{err}");
    }

    #[tokio::test]
    async fn an_oversized_hello_is_refused_before_it_is_read() {
        let (a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            accept::<_, ControlRequest, ControlResponse>(a)
                .await
                .map(|_| ())
        });
        b.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { .. }), "{err}");
    }

    /// 16 MiB is a frame a handshaken peer may send, not a stranger: the hello that
    /// announces it is refused from its prefix, nothing of it is buffered.
    #[tokio::test(start_paused = true)]
    async fn a_hello_over_the_small_handshake_limit_is_refused_from_its_prefix() {
        let (a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            accept::<_, ControlRequest, ControlResponse>(a)
                .await
                .map(|_| ())
        });
        b.write_all(&(crate::MAX_FRAME as u32).to_be_bytes())
            .await
            .unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert!(
            matches!(err, ProtocolError::FrameTooLarge { max: MAX_HELLO, .. }),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let (a, _b) = tokio::io::duplex(1024);
        let err = accept::<_, ControlRequest, ControlResponse>(a)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(err, ProtocolError::Timeout(_)), "{err}");
    }
}
