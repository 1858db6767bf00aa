//! A client's bounded outbound queue and its kill switch.
//!
//! The broker pushes encoded frames with `try_send` (never waiting, never under an `.await`), so a
//! slow client cannot slow the publisher or the other subscribers: QoS 0 copies are dropped when
//! the queue is full, and a client that keeps its queue full is disconnected as a slow consumer.
//! The queue is bounded both in frames and in bytes, so large messages cannot pile up either.
//! Answers to the client's own requests (`published`, relayed ack responses, errors, ...) may use
//! [`ANSWER_HEADROOM`] times the frame bound (the byte bound still applies): their number is set
//! by the client's own window of requests, and a publisher with many publish_with_ack in flight
//! gets a burst of them.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use sealbus::protocol::{AckResponseRef, Codec, ErrorCode};
use tokio::sync::{mpsc, watch};

use crate::config::SessionSettings;
use crate::metrics::SessionMetrics;

/// One item of an outbound queue: encoded JSON text, shared between subscribers when identical.
///
/// Kept at 48 bytes: the queue's channel allocates its slots 32 at a time, the first block when
/// the connection opens, so every byte here is 32 bytes of each idle connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A frame to write.
    Frame(Utf8Bytes),
    /// A QoS 1 copy of a message: the message's frame, encoded once for all its subscribers,
    /// and the copy's delivery id, spliced in by the connection's writer
    /// ([`sealbus::protocol::with_delivery`]) rather than under the session's lock.
    Copy {
        /// The message's frame without the copy's fields.
        frame: Utf8Bytes,
        /// Delivery id.
        did: u64,
        /// Written before (a redelivery).
        dup: bool,
    },
    /// A publish_with_ack copy, completed by the writer like [`Outbound::Copy`] and skipped if
    /// the publisher cancelled before it was written.
    AckCopy {
        /// What every copy of the message shares.
        shared: Arc<AckShared>,
        /// Delivery id (QoS 1 messages).
        did: Option<u64>,
        /// Written before (a redelivery).
        dup: bool,
    },
    /// Frames that must be written together and in order (a history replay), queued as one
    /// item so that a long replay cannot overflow the queue's frame bound.
    Batch(Vec<Utf8Bytes>),
    /// A subscriber's successful answer to a publish_with_ack, relayed to the publisher as an
    /// `ack_response`: encoded by the writer, straight into the message it is joining, rather
    /// than into a frame of its own under the session's lock (ten per message with ten
    /// subscribers). Failed answers carry an error text and are queued as frames.
    AckAnswer {
        /// Ack id.
        aid: u64,
        /// The answering subscriber's client id.
        from: Arc<str>,
    },
}

/// What the copies of one publish_with_ack message share: one allocation per message (each
/// copy used to box its own, with a reference to the frame and to the flag).
#[derive(Debug)]
pub struct AckShared {
    /// The message's frame without the copy's fields.
    pub frame: Utf8Bytes,
    /// Ack id.
    pub aid: u64,
    /// Set when the publisher cancelled (shared with the collection).
    pub cancelled: Arc<AtomicBool>,
}

/// Room counted for a copy's own fields in the queue's byte bound.
const COPY_FIELDS_BYTES: usize = 48;

/// An `ack_response` frame's length beside its subscriber's id (the id's escapes aside):
/// `{"type":"ack_response","aid":<up to 20 digits>,"from":"","ok":true}` is at most 70 bytes.
const ACK_ANSWER_BYTES: usize = 70;

/// One frame of an [`Outbound`] item.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// A complete frame.
    Text(&'a Utf8Bytes),
    /// A copy of a message still to be completed with its own fields.
    Copy {
        /// The message's frame.
        frame: &'a Utf8Bytes,
        /// Delivery id.
        did: Option<u64>,
        /// Ack id.
        aid: Option<u64>,
        /// A redelivery.
        dup: bool,
    },
    /// A successful `ack_response` still to be encoded.
    AckAnswer {
        /// Ack id.
        aid: u64,
        /// The answering subscriber's client id.
        from: &'a str,
    },
}

impl Piece<'_> {
    /// The `ack_response` of an [`Piece::AckAnswer`].
    fn ack_response(aid: u64, from: &str) -> AckResponseRef<'_> {
        AckResponseRef {
            aid,
            from,
            ok: true,
            code: None,
            error: None,
        }
    }

    /// The frame's text (`None` for a copy whose frame is not a JSON object: never written).
    pub fn text(&self) -> Option<Utf8Bytes> {
        match *self {
            Piece::Text(text) => Some(text.clone()),
            Piece::Copy {
                frame,
                did,
                aid,
                dup,
            } => {
                sealbus::protocol::with_delivery(frame.as_str(), did, aid, dup).map(Utf8Bytes::from)
            }
            Piece::AckAnswer { aid, from } => Some(Utf8Bytes::from(Codec::encode_ack_response(
                &Self::ack_response(aid, from),
            ))),
        }
    }

    /// Appends the frame's text to `out` (a message being built of several frames); `false`,
    /// and `out` unchanged, when [`text`](Self::text) would be `None`.
    pub fn push_to(&self, out: &mut String) -> bool {
        match *self {
            Piece::Text(text) => {
                out.push_str(text.as_str());
                true
            }
            Piece::Copy {
                frame,
                did,
                aid,
                dup,
            } => sealbus::protocol::push_with_delivery(out, frame.as_str(), did, aid, dup),
            Piece::AckAnswer { aid, from } => {
                sealbus::protocol::push_ack_response(out, &Self::ack_response(aid, from));
                true
            }
        }
    }

    /// The frame's length in bytes, at most (exact for a complete frame).
    pub fn max_len(&self) -> usize {
        match self {
            Piece::Text(text) => text.len(),
            Piece::Copy { frame, .. } => frame.len() + COPY_FIELDS_BYTES,
            Piece::AckAnswer { from, .. } => answer_len(from),
        }
    }
}

/// The length of an `ack_response` from `from`, at most: client ids have no control characters
/// (`sealbus::protocol` validates them), so escaping at most doubles one (`"` and `\`).
fn answer_len(from: &str) -> usize {
    ACK_ANSWER_BYTES + 2 * from.len()
}

/// The frames of an [`Outbound`] item, in order (none for a withdrawn copy).
#[derive(Debug)]
pub struct Pieces<'a> {
    item: &'a Outbound,
    next: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        let at = self.next;
        self.next += 1;
        match self.item {
            Outbound::Frame(text) => (at == 0).then_some(Piece::Text(text)),
            Outbound::Copy { frame, did, dup } => (at == 0).then_some(Piece::Copy {
                frame,
                did: Some(*did),
                aid: None,
                dup: *dup,
            }),
            Outbound::AckCopy { shared, did, dup } => {
                let withdrawn = shared.cancelled.load(Ordering::Acquire);
                (at == 0 && !withdrawn).then_some(Piece::Copy {
                    frame: &shared.frame,
                    did: *did,
                    aid: Some(shared.aid),
                    dup: *dup,
                })
            }
            Outbound::Batch(texts) => texts.get(at).map(Piece::Text),
            Outbound::AckAnswer { aid, from } => {
                (at == 0).then_some(Piece::AckAnswer { aid: *aid, from })
            }
        }
    }
}

impl Outbound {
    /// The frames to write, in order (none if the item was withdrawn).
    pub fn pieces(&self) -> Pieces<'_> {
        Pieces {
            item: self,
            next: 0,
        }
    }

    fn len(&self) -> usize {
        match self {
            Outbound::Frame(text) => text.len(),
            Outbound::Copy { frame, .. } => frame.len() + COPY_FIELDS_BYTES,
            Outbound::AckCopy { shared, .. } => shared.frame.len() + COPY_FIELDS_BYTES,
            Outbound::Batch(texts) => texts.iter().map(|text| text.len()).sum(),
            Outbound::AckAnswer { from, .. } => answer_len(from),
        }
    }
}

/// How many times the frame bound answers may fill the queue before the client counts as a slow
/// consumer. A publisher with its whole window of requests in flight (`max_inflight`, 1 000 by
/// default) as publish_with_ack to 10 subscribers has up to 12 000 answers coming; with the
/// default 1 024 frames this allows 65 536. Memory stays bounded by the queue's byte bound
/// (16 MiB by default), which applies to answers as to everything else; the channel allocates
/// its slots as they fill, not up front.
pub const ANSWER_HEADROOM: usize = 64;

/// The bounds of an outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most frames queued.
    pub frames: usize,
    /// Most bytes queued (a single larger frame is still accepted into an empty queue).
    pub bytes: usize,
    /// QoS 0 copies dropped in a row before the client is disconnected as a slow consumer.
    pub drop_tolerance: u32,
}

impl From<&SessionSettings> for QueueLimits {
    fn from(settings: &SessionSettings) -> Self {
        QueueLimits {
            frames: settings.outbound_queue as usize,
            bytes: usize::try_from(settings.outbound_queue_bytes).unwrap_or(usize::MAX),
            drop_tolerance: settings.slow_consumer_drops,
        }
    }
}

/// The receiving side of a client's queue, read by its writer.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Outbound>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Inbox {
    /// The next queued frame; `None` once the client left the session.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let item = self.rx.recv().await?;
        self.queued_bytes.fetch_sub(item.len(), Ordering::Relaxed);
        Some(item)
    }

    /// Whether nothing is queued right now (the writer flushes the socket then).
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The next queued frame if one is waiting.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let item = self.rx.try_recv().ok()?;
        self.queued_bytes.fetch_sub(item.len(), Ordering::Relaxed);
        Some(item)
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
    queued_bytes: Arc<AtomicUsize>,
    limits: QueueLimits,
    metrics: Arc<SessionMetrics>,
}

impl Outbox {
    /// A queue with `limits`; returns the broker's side and the writer's side.
    pub fn new(limits: QueueLimits, metrics: Arc<SessionMetrics>) -> (Outbox, Inbox) {
        let (tx, rx) = mpsc::channel(limits.frames.max(1).saturating_mul(ANSWER_HEADROOM));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let outbox = Outbox {
            tx,
            kill: Arc::new(KillSwitch::new()),
            drops_in_a_row: Arc::new(AtomicU32::new(0)),
            queued_bytes: queued_bytes.clone(),
            limits,
            metrics,
        };
        (outbox, Inbox { rx, queued_bytes })
    }

    /// The connection's kill switch.
    pub fn kill_switch(&self) -> &Arc<KillSwitch> {
        &self.kill
    }

    /// Frames waiting in the queue.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues `item` unless the queue holds `frames` frames or is full in bytes; gives it back
    /// when full.
    fn try_push(&self, item: Outbound, frames: usize) -> Result<(), Option<Outbound>> {
        let len = item.len();
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        if queued > 0 && queued.saturating_add(len) > self.limits.bytes {
            return Err(Some(item));
        }
        if self.depth() >= frames {
            return Err(Some(item));
        }
        match self.tx.try_send(item) {
            Ok(()) => {
                self.queued_bytes.fetch_add(len, Ordering::Relaxed);
                self.drops_in_a_row.store(0, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(item)) => Err(Some(item)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(None),
        }
    }

    /// Queues `item` if the queue has room; false when it is full or closed (the caller keeps
    /// the item, e.g. a QoS 1 copy that waits in the client's delivery queue).
    pub fn offer(&self, item: Outbound) -> bool {
        self.try_push(item, self.limits.frames).is_ok()
    }

    /// Queues a frame that must not be lost (ack copies, replays, retained messages); a full
    /// queue disconnects the client as a slow consumer.
    pub fn push(&self, item: Outbound) {
        if let Err(Some(_)) = self.try_push(item, self.limits.frames) {
            self.slow_consumer();
        }
    }

    /// Queues an answer to one of the client's own requests: like [`push`](Self::push), with
    /// [`ANSWER_HEADROOM`] times the frame bound.
    pub fn push_answer(&self, item: Outbound) {
        let frames = self.limits.frames.saturating_mul(ANSWER_HEADROOM);
        if let Err(Some(_)) = self.try_push(item, frames) {
            self.slow_consumer();
        }
    }

    /// Queues a QoS 0 copy; a full queue drops it, and too many drops in a row disconnect the
    /// client as a slow consumer.
    pub fn push_droppable(&self, text: Utf8Bytes) {
        if let Err(Some(_)) = self.try_push(Outbound::Frame(text), self.limits.frames) {
            SessionMetrics::add(&self.metrics.drops, 1);
            let drops = self.drops_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
            if drops > self.limits.drop_tolerance {
                self.slow_consumer();
            }
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
