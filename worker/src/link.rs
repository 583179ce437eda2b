//! The worker's end of its supervisor connection: connecting to the lane socket, the
//! version handshake, and the one writer task. Everything the worker says goes through
//! the writer's channel, and the writer adds the heartbeats itself, so heartbeats flow
//! while a generation streams and frames never interleave. What the supervisor says
//! comes through [`Inbound`].

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::{prelude::*, Stream};
use interprocess::local_socket::GenericFilePath;
use prq_protocol::handshake::{self, Peer};
use prq_protocol::worker::{FromWorker, ToWorker};
use prq_protocol::{until_hang_up, FrameCodec, ProtocolError};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

/// Connecting to the supervisor's socket.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages waiting for the writer; a full channel slows the driver down rather than
/// letting memory grow when the supervisor reads slowly.
const OUTBOX_CAPACITY: usize = 256;

/// How long the writer gets to deliver the last messages (a `Fatal`) before exit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

type Connection = Framed<Stream, FrameCodec<ToWorker, FromWorker>>;
type Sink = SplitSink<Connection, FromWorker>;

/// What the supervisor says, in order. SIGTERM and SIGINT read as `Shutdown`, so that
/// a worker signalled directly still closes its browser instead of orphaning it.
pub struct Inbound {
    frames: SplitStream<Connection>,
    terminate: Signal,
    interrupt: Signal,
}

impl Inbound {
    /// The next message; `None` once the supervisor has gone away, whether its socket
    /// ended or was reset. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<ToWorker, ProtocolError>> {
        tokio::select! {
            msg = self.frames.next() => until_hang_up(msg),
            _ = self.terminate.recv() => {
                tracing::info!("SIGTERM: shutting down");
                Some(Ok(ToWorker::Shutdown))
            }
            _ = self.interrupt.recv() => {
                tracing::info!("SIGINT: shutting down");
                Some(Ok(ToWorker::Shutdown))
            }
        }
    }
}

/// Connects to the supervisor and introduces this worker as `lane_id`.
pub async fn connect(socket: &Path, lane_id: &str) -> anyhow::Result<(Sink, Inbound)> {
    let name = socket
        .to_fs_name::<GenericFilePath>()
        .with_context(|| format!("{} is not a socket path", socket.display()))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, Stream::connect(name))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("connecting to the supervisor at {}", socket.display()))?;
    let peer = Peer::Worker {
        lane_id: lane_id.to_owned(),
        pid: std::process::id(),
    };
    let framed: Connection = handshake::connect(stream, peer)
        .await
        .context("handshake with the supervisor")?;
    let (sink, frames) = framed.split();
    let inbound = Inbound {
        frames,
        terminate: signal(SignalKind::terminate()).context("watching for SIGTERM")?,
        interrupt: signal(SignalKind::interrupt()).context("watching for SIGINT")?,
    };
    Ok((sink, inbound))
}

/// The sending side of the writer; clones share the one connection.
#[derive(Clone)]
pub struct Outbox(mpsc::Sender<FromWorker>);

impl Outbox {
    /// Queues a message. When the writer has stopped, the connection is gone and the
    /// lane's reader sees that too, so the message is dropped here without a word.
    pub async fn send(&self, msg: FromWorker) {
        let _ = self.0.send(msg).await;
    }
}

pub struct Writer(JoinHandle<()>);

impl Writer {
    /// Starts the writer, heartbeating every `heartbeat`.
    pub fn start(sink: Sink, heartbeat: Duration) -> (Outbox, Writer) {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let task = tokio::spawn(async move {
            match write(sink, rx, heartbeat).await {
                Ok(()) => {}
                // The reader sees it too, and the lane ends as the supervisor said.
                Err(e) if e.is_hang_up() => tracing::debug!("the supervisor hung up: {e}"),
                Err(e) => tracing::warn!("writing to the supervisor failed: {e}"),
            }
        });
        (Outbox(tx), Writer(task))
    }

    /// Waits (bounded) until everything queued is written. Every [`Outbox`] must have
    /// been dropped, or this waits the whole bound.
    pub async fn finish(self) {
        if tokio::time::timeout(FLUSH_TIMEOUT, self.0).await.is_err() {
            tracing::warn!("the supervisor did not take the last messages in time");
        }
    }
}

async fn write(
    mut sink: Sink,
    mut rx: mpsc::Receiver<FromWorker>,
    heartbeat: Duration,
) -> Result<(), ProtocolError> {
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // The heartbeat first: a flood of deltas must not starve it.
            biased;
            _ = beat.tick() => sink.send(FromWorker::Heartbeat).await?,
            msg = rx.recv() => {
                let Some(msg) = msg else {
                    return sink.close().await;
                };
                // Whatever else is already queued goes out in the same flush.
                sink.feed(msg).await?;
                while let Ok(msg) = rx.try_recv() {
                    sink.feed(msg).await?;
                }
                sink.flush().await?;
            }
        }
    }
}
