//! One request's events on their way from its lane task to its HTTP handler, with a
//! bound on the answer text the client has not taken yet.
//!
//! A lane writes answer text as fast as its site streams it; a client that does not
//! read stops its handler from taking events, and an unbounded channel then grows with
//! everything the site sends (measured: 10 such clients took the daemon from 8 MB to
//! 1.2 GB in 30 s). Here each piece of text counts against the request's budget
//! (`limits.client_buffer_bytes`) until the handler takes it; a piece that would go
//! over it is refused, and the lane task then stops the request (`client_too_slow`).
//! Past the handler, hyper buffers a bounded amount per connection (about 400 KiB)
//! before it stops taking more, so the budget bounds the request's memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prq_protocol::worker::DeltaKind;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::runtime::ReqEvent;

/// What one queued piece of text costs beyond its bytes (the event around it).
const PER_PIECE: usize = 64;

/// A channel for one request's events whose text may hold at most `budget` bytes
/// (plus [`PER_PIECE`] each) not yet received.
pub fn channel(budget: usize) -> (Sender, Receiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let unread = Arc::new(AtomicUsize::new(0));
    (
        Sender {
            tx,
            unread: unread.clone(),
            budget,
        },
        Receiver { rx, unread },
    )
}

#[derive(Clone)]
pub struct Sender {
    tx: mpsc::UnboundedSender<ReqEvent>,
    unread: Arc<AtomicUsize>,
    budget: usize,
}

/// The client is this far behind: the piece was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooFarBehind {
    pub unread: usize,
}

impl Sender {
    /// Sends an event that is not answer text (started, ended): never refused.
    pub fn send(&self, event: ReqEvent) {
        // A receiver that is gone is a client that went away; its guard handles that.
        let _ = self.tx.send(event);
    }

    /// Sends a piece of answer text unless the client's unread text would go over the
    /// budget.
    pub fn send_text(&self, kind: DeltaKind, text: String) -> Result<(), TooFarBehind> {
        let cost = text.len() + PER_PIECE;
        let before = self.unread.fetch_add(cost, Ordering::AcqRel);
        if before + cost > self.budget {
            self.unread.fetch_sub(cost, Ordering::AcqRel);
            return Err(TooFarBehind { unread: before });
        }
        let _ = self.tx.send(ReqEvent::Delta { kind, text });
        Ok(())
    }
}

pub struct Receiver {
    rx: mpsc::UnboundedReceiver<ReqEvent>,
    unread: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn recv(&mut self) -> Option<ReqEvent> {
        let event = self.rx.recv().await;
        self.taken(event.as_ref());
        event
    }

    pub fn try_recv(&mut self) -> Result<ReqEvent, TryRecvError> {
        let event = self.rx.try_recv();
        self.taken(event.as_ref().ok());
        event
    }

    fn taken(&self, event: Option<&ReqEvent>) {
        if let Some(ReqEvent::Delta { text, .. }) = event {
            self.unread
                .fetch_sub(text.len() + PER_PIECE, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> String {
        "x".repeat(n)
    }

    #[tokio::test]
    async fn text_past_the_budget_is_refused_until_the_client_reads() {
        let (tx, mut rx) = channel(1000);
        tx.send_text(DeltaKind::Answer, text(400)).unwrap();
        tx.send_text(DeltaKind::Answer, text(400)).unwrap();
        let refused = tx.send_text(DeltaKind::Answer, text(400)).unwrap_err();
        assert_eq!(refused.unread, 2 * (400 + PER_PIECE));
        // Events that are not text always go through.
        tx.send(ReqEvent::Started { lane: "a#1".into() });
        // Reading frees the budget again.
        assert!(matches!(rx.recv().await, Some(ReqEvent::Delta { .. })));
        tx.send_text(DeltaKind::Answer, text(400)).unwrap();
        assert!(matches!(rx.try_recv(), Ok(ReqEvent::Delta { .. })));
        assert!(matches!(rx.try_recv(), Ok(ReqEvent::Started { .. })));
        assert!(matches!(rx.try_recv(), Ok(ReqEvent::Delta { .. })));
        assert_eq!(rx.unread.load(Ordering::Acquire), 0);
    }
}
