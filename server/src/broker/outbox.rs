//! A client's bounded outbound queue and its kill switch.
//!
//! The broker pushes encoded frames with `try_send` (never waiting, never under an `.await`), so a
//! slow client cannot slow the publisher or the other subscribers: QoS 0 copies are dropped when
//! the queue is full, and a client that keeps its queue full is disconnected as a slow consumer.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use sealbus::protocol::ErrorCode;
use tokio::sync::{mpsc, watch};

use crate::metrics::SessionMetrics;

/// One item of an outbound queue: encoded JSON text, shared between subscribers when identical.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A frame to write.
    Frame(Utf8Bytes),
    /// A publish_with_ack copy, skipped by the writer if its collection was cancelled before it
    /// reached the socket.
    Withdrawable {
        /// The frame.
        text: Utf8Bytes,
        /// Set when the publisher cancelled.
        cancelled: Arc<AtomicBool>,
    },
}

impl Outbound {
    /// The frame text, or `None` if it was withdrawn.
    pub fn text(&self) -> Option<&Utf8Bytes> {
        match self {
            Outbound::Frame(text) => Some(text),
            Outbound::Withdrawable { text, cancelled } => {
                (!cancelled.load(Ordering::Acquire)).then_some(text)
            }
        }
    }
}

/// Why a connection is being ended by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    /// The error code sent in the final `error` frame and mapped to the close code.
    pub code: ErrorCode,
    /// Explanation for the `error` frame.
    pub message: String,
    /// Write what is already queued before closing (graceful shutdown).
    pub drain: bool,
}

/// Signals a connection's tasks to end; the first reason wins.
#[derive(Debug)]
pub struct KillSwitch {
    reason: OnceLock<Kill>,
    signal: watch::Sender<bool>,
}

impl KillSwitch {
    fn new() -> Self {
        KillSwitch {
            reason: OnceLock::new(),
            signal: watch::Sender::new(false),
        }
    }

    /// Ends the connection for `kill` (ignored if it is already ending).
    pub fn kill(&self, kill: Kill) {
        if self.reason.set(kill).is_ok() {
            self.signal.send_replace(true);
        }
    }

    /// The reason, once killed.
    pub fn reason(&self) -> Option<&Kill> {
        self.reason.get()
    }

    /// A receiver that changes to `true` when the connection is killed.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.signal.subscribe()
    }
}

/// The sending side of a client's queue, held by the broker.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    kill: Arc<KillSwitch>,
    drops_in_a_row: Arc<AtomicU32>,
    drop_tolerance: u32,
    metrics: Arc<SessionMetrics>,
}

impl Outbox {
    /// A queue of `capacity` frames; returns the broker's side and the writer's receiver.
    pub fn new(
        capacity: usize,
        drop_tolerance: u32,
        metrics: Arc<SessionMetrics>,
    ) -> (Outbox, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let outbox = Outbox {
            tx,
            kill: Arc::new(KillSwitch::new()),
            drops_in_a_row: Arc::new(AtomicU32::new(0)),
            drop_tolerance,
            metrics,
        };
        (outbox, rx)
    }

    /// The connection's kill switch.
    pub fn kill_switch(&self) -> &Arc<KillSwitch> {
        &self.kill
    }

    /// Frames waiting in the queue.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues a frame that must not be lost (answers, QoS 1 and ack copies); a full queue
    /// disconnects the client as a slow consumer.
    pub fn push(&self, item: Outbound) {
        match self.tx.try_send(item) {
            Ok(()) => self.drops_in_a_row.store(0, Ordering::Relaxed),
            Err(mpsc::error::TrySendError::Full(_)) => self.slow_consumer(),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Queues a QoS 0 copy; a full queue drops it, and too many drops in a row disconnect the
    /// client as a slow consumer.
    pub fn push_droppable(&self, text: Utf8Bytes) {
        match self.tx.try_send(Outbound::Frame(text)) {
            Ok(()) => self.drops_in_a_row.store(0, Ordering::Relaxed),
            Err(mpsc::error::TrySendError::Full(_)) => {
                SessionMetrics::add(&self.metrics.drops, 1);
                let drops = self.drops_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if drops > self.drop_tolerance {
                    self.slow_consumer();
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn slow_consumer(&self) {
        self.kill.kill(Kill {
            code: ErrorCode::SlowConsumer,
            message: "outbound queue overflowed".into(),
            drain: false,
        });
    }
}
