//! The control socket: the daemon's side of `prq start | stop | status | reload | queue`.
//!
//! Each CLI connection shakes hands, then sends requests and reads one response each.
//! A peer that fails the handshake or sends a bad frame is dropped with a log line.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::{prelude::*, Listener};
use interprocess::local_socket::traits::StreamCommon;
use prq_protocol::control::{ControlRequest, ControlResponse, QueueCommand};
use prq_protocol::handshake::{self, Peer};
use prq_protocol::until_hang_up;
use tokio_util::sync::CancellationToken;

use crate::accept::AcceptErrors;
use crate::queue::ActionError;
use crate::runtime::{DrainCause, Runtime, StartReply};

pub async fn serve(listener: Listener, runtime: Arc<Runtime>, stop: CancellationToken) {
    let mut errors = AcceptErrors::new("control socket");
    loop {
        let stream = errors.accept(|| listener.accept()).await;
        // The socket is 0600 in a 0700 directory; check the peer's user as well, so
        // a loosened mode or a shared directory does not open the daemon to others.
        let uid = stream.peer_creds().ok().and_then(|c| c.euid());
        if uid != Some(nix::unistd::geteuid().as_raw()) {
            tracing::warn!(?uid, "control connection from another user; dropped");
            continue;
        }
        let runtime = runtime.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut conn =
                match handshake::accept::<_, ControlRequest, ControlResponse>(stream).await {
                    Ok((Peer::Cli, conn)) => conn,
                    Ok((peer, _)) => {
                        tracing::warn!(?peer, "non-CLI peer on the control socket; dropped");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("control handshake failed: {e}");
                        return;
                    }
                };
            while let Some(request) = until_hang_up(conn.next().await) {
                let request = match request {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("bad control frame: {e}; dropped the connection");
                        return;
                    }
                };
                let response = handle(&runtime, &stop, request).await;
                if conn.send(response).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn handle(
    runtime: &Arc<Runtime>,
    stop: &CancellationToken,
    request: ControlRequest,
) -> ControlResponse {
    match request {
        ControlRequest::Status => ControlResponse::Status(runtime.status()),
        ControlRequest::Start { config } => match runtime.start(config).await {
            StartReply::Started(how) => ControlResponse::Started {
                how,
                status: runtime.status(),
            },
            StartReply::Failed(message) => ControlResponse::StartFailed {
                message,
                status: runtime.status(),
            },
        },
        ControlRequest::Reload { config } => match runtime.reload(config) {
            Ok(report) => ControlResponse::Reloaded(report),
            Err(message) => ControlResponse::Error { message },
        },
        ControlRequest::Shutdown => {
            stop.cancel();
            ControlResponse::ShuttingDown
        }
        ControlRequest::Queue(command) => queue(runtime, command),
        ControlRequest::Drain { wait } => match runtime.drain(DrainCause::Cli) {
            Ok(_) => {
                if wait {
                    runtime.drained().await;
                }
                ControlResponse::Draining {
                    status: runtime.status(),
                }
            }
            Err(e) => ControlResponse::Error {
                message: e.to_string(),
            },
        },
        ControlRequest::Doctor {
            prefix,
            dir,
            type_check,
        } => ControlResponse::Doctor(runtime.doctor(prefix.as_deref(), &dir, type_check).await),
    }
}

fn queue(runtime: &Runtime, command: QueueCommand) -> ControlResponse {
    let acted = |r: Result<(), ActionError>, id| match r {
        Ok(()) => ControlResponse::Acted { ids: vec![id] },
        Err(e) => ControlResponse::Error {
            message: e.to_string(),
        },
    };
    match command {
        QueueCommand::List => {
            ControlResponse::Queue(Box::new(runtime.queue_view(crate::api::FINISHED_LISTED)))
        }
        QueueCommand::Cancel { id } => acted(runtime.cancel(id), id),
        QueueCommand::Stop { id } => acted(runtime.stop(id), id),
        QueueCommand::StopAll => ControlResponse::Acted {
            ids: runtime.stop_all(),
        },
        QueueCommand::Clear => ControlResponse::Acted {
            ids: runtime.clear(),
        },
    }
}
