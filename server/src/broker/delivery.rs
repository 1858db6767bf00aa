//! QoS 1 delivery (`docs/PROTOCOL.md` §8.1–§8.2): each subscriber's copy of a message, written
//! with a delivery id and retried every `retry_interval` until acknowledged, at most
//! `max_retries` times; then a dead letter on `$dead/<topic>`.
//!
//! A copy is *queued* while it cannot be written (the client is away, or its outbound queue is
//! full) and *in flight* once written. Copies of persistent clients are mirrored in the store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use sealbus::protocol::{Codec, DeadLetter, Direct, Message, MessageRef, Qos, ServerFrame};

use super::by_did::ByDid;
use super::outbox::{AckShared, Outbound};
use super::session::{ClientEntry, ClientKey, State, encode};
use super::tracking::{Track, Tracker};
use crate::metrics::SessionMetrics;
use crate::store::{CopyRef, MessageKey, StoredMessage, Write};
use sealbus::protocol::CopyState;

/// Prefix of the dead-letter topics.
pub const DEAD_LETTER_PREFIX: &str = "$dead/";

/// What a copy is of.
#[derive(Debug, Clone)]
enum Of {
    /// A tracked message: its status line holds the message and its shared frame, so a copy
    /// costs one reference count instead of three (each an atomic operation when taken and
    /// again when dropped, often on another core).
    Tracked(Track),
    /// A message not tracked (a copy restored from the store whose message is not tracked).
    Plain(Arc<StoredMessage>),
}

/// One subscriber's copy of a QoS 1 message.
#[derive(Debug, Clone)]
pub(super) struct Copy {
    /// The message.
    of: Of,
    /// Times it was written so far (to any connection of the client).
    pub(super) attempts: u32,
    /// The publish_with_ack collection waiting for this subscriber (its ack id, cancel flag
    /// and the message's frame).
    pub(super) ack: Option<Arc<AckShared>>,
}

impl Copy {
    /// A copy not written yet of the message its status line `track` follows (or of
    /// `message`, untracked, without a line).
    pub(super) fn new(message: &Arc<StoredMessage>, track: Option<Track>) -> Self {
        Copy {
            of: match track {
                Some(track) => Of::Tracked(track),
                None => Of::Plain(message.clone()),
            },
            attempts: 0,
            ack: None,
        }
    }

    /// The message.
    pub(super) fn message(&self) -> &Arc<StoredMessage> {
        match &self.of {
            Of::Tracked(track) => track.message(),
            Of::Plain(message) => message,
        }
    }

    /// Its line in the session's delivery status.
    pub(super) fn track(&self) -> Option<&Track> {
        match &self.of {
            Of::Tracked(track) => Some(track),
            Of::Plain(_) => None,
        }
    }

    /// Gives an untracked copy its status line (copies restored from the store).
    pub(super) fn attach(&mut self, track: Option<Track>) {
        if let Some(track) = track {
            self.of = Of::Tracked(track);
        }
    }

    /// This copy as a queue item with its delivery id (and ack id, and `dup` when written
    /// before); the writer splices them into the shared frame.
    fn outbound(&self, did: u64, dup: bool) -> Option<Outbound> {
        if let Some(shared) = &self.ack {
            return Some(Outbound::AckCopy {
                shared: shared.clone(),
                did: Some(did),
                dup,
            });
        }
        let frame = match self.track().and_then(Track::frame) {
            Some(frame) => frame.clone(),
            // No shared frame (a copy restored from the store): encode the message once here.
            None => copy_text(self.message(), true)?,
        };
        Some(Outbound::Copy { frame, did, dup })
    }

    fn cancelled(&self) -> bool {
        self.ack
            .as_ref()
            .is_some_and(|shared| shared.cancelled.load(Ordering::Acquire))
    }
}

/// Retry queues shorter than this are never compacted (see
/// [`State::forget_settled_retries`]).
const COMPACT_RETRIES_FROM: usize = 4096;

/// A copy written and waiting for its `ack`.
#[derive(Debug)]
pub(super) struct Inflight {
    copy: Copy,
    due: Instant,
}

/// The QoS 1 copies a client holds.
#[derive(Debug, Default)]
pub(super) struct Copies {
    /// Written copies by delivery id.
    pub(super) inflight: ByDid<Inflight>,
    /// Copies waiting to be written, oldest first.
    pub(super) queued: VecDeque<Copy>,
}

impl Copies {
    /// The messages the client holds a copy of.
    pub(super) fn keys(&self) -> impl Iterator<Item = MessageKey> + '_ {
        self.queued
            .iter()
            .map(|c| c.message().key)
            .chain(self.inflight.values().map(|i| i.copy.message().key))
    }

    /// Moves every in-flight copy back to the front of the queue, in message order, so that it
    /// is written again (with a new delivery id) on the client's next connection. The client
    /// left its ack collections (they got a `disconnected` response), so the copies no longer
    /// belong to one; copies of cancelled collections are dropped.
    pub(super) fn requeue_inflight(&mut self) {
        let mut inflight = self.take_inflight();
        inflight.sort_by_key(|c| c.message().key);
        for copy in inflight.into_iter().rev() {
            self.queued.push_front(copy);
        }
        self.queued.retain(|copy| !copy.cancelled());
        for copy in &mut self.queued {
            copy.ack = None;
        }
    }

    /// Every copy, in flight first.
    pub(super) fn drain(&mut self) -> Vec<Copy> {
        let mut copies = self.take_inflight();
        copies.extend(self.queued.drain(..));
        copies
    }

    /// Every copy in flight, taken out.
    fn take_inflight(&mut self) -> Vec<Copy> {
        let inflight = self.inflight.drain().into_iter();
        inflight.map(|(_, i)| i.copy).collect()
    }
}

/// Settings and side effects of one delivery operation.
#[derive(Debug)]
pub(super) struct Delivery<'a> {
    /// Now.
    pub(super) now: Instant,
    /// Redelivery interval.
    pub(super) retry: Duration,
    /// Redeliveries before a copy is dead.
    pub(super) max_retries: u32,
    /// Most copies queued per client.
    pub(super) queue_limit: usize,
    /// Store writes to commit after the operation.
    pub(super) writes: Vec<Write>,
    /// The session's counters.
    pub(super) metrics: &'a SessionMetrics,
}

/// The frame of a copy without the copy's own fields (the writer splices in `did`, `aid` and
/// `dup`): `message` for a stream message, encoded from the stored message without cloning it
/// into a frame first, or `direct` for a direct message. `show_mid: false` leaves the message id
/// out (a QoS 0 publish that did not name one). `None` only if encoding failed (logged).
pub(super) fn copy_text(message: &StoredMessage, show_mid: bool) -> Option<Utf8Bytes> {
    match message.key {
        MessageKey::Stream(offset) => {
            let view = message_ref(message, offset, show_mid);
            match Codec::encode_message(&view) {
                Ok(text) => Some(Utf8Bytes::from(text)),
                Err(err) => {
                    tracing::error!(error = %err, "could not encode a message frame");
                    None
                }
            }
        }
        MessageKey::Direct(_) => encode(&ServerFrame::Direct(Direct {
            data: message.data.clone(),
            from: message.from.to_string(),
            ts: message.ts,
            mid: show_mid.then(|| message.mid.clone()),
            qos: message.qos,
            did: None,
            aid: None,
            dup: false,
        })),
    }
}

/// The `message` frame of stream message `message` at `offset`, borrowed, without a copy's own
/// fields (and without the message id unless `show_mid`).
pub(super) fn message_ref(message: &StoredMessage, offset: u64, show_mid: bool) -> MessageRef<'_> {
    MessageRef {
        topic: &message.topic,
        data: &message.data,
        from: &message.from,
        ts: message.ts,
        offset: Some(offset),
        mid: show_mid.then_some(message.mid.as_str()),
        qos: message.qos,
        did: None,
        aid: None,
        retained: false,
        replay: false,
        dup: false,
    }
}

/// Writes `copy` to `client` with a new delivery id if its outbound queue takes it; gives it
/// back otherwise.
fn try_write(
    client: &mut ClientEntry,
    key: ClientKey,
    mut copy: Copy,
    d: &mut Delivery<'_>,
    retries: &mut VecDeque<(Instant, ClientKey, u64)>,
    tracker: &mut Tracker,
) -> Result<(), Copy> {
    let Some(outbox) = &client.outbox else {
        return Err(copy);
    };
    let did = client.next_did + 1;
    // The message's frame is encoded once for all its subscribers; only the copy's own fields
    // are added, by the writer (encoding the whole frame per copy was 15% of the server under
    // QoS 1 load, and splicing under the session's lock another 6%).
    let Some(item) = copy.outbound(did, copy.attempts > 0) else {
        return Ok(());
    };
    if !outbox.offer(item) {
        return Err(copy);
    }
    client.next_did = did;
    copy.attempts += 1;
    tracker.update(copy.track(), CopyState::Delivered, copy.attempts);
    if client.persistent {
        d.writes.push(Write::Copy {
            client_id: client.id.to_string(),
            copy: CopyRef {
                key: copy.message().key,
                attempts: copy.attempts,
            },
        });
    }
    let due = d.now + d.retry;
    retries.push_back((due, key, did));
    client.copies.inflight.insert(did, Inflight { copy, due });
    Ok(())
}

impl State {
    /// Gives client `key` a copy: written now when nothing is queued before it and its queue
    /// takes it, queued otherwise (the oldest queued copy becomes a dead letter past the limit).
    pub(super) fn give(&mut self, key: ClientKey, copy: Copy, d: &mut Delivery<'_>) {
        let State {
            clients,
            retries,
            tracker,
            backlogged,
            ..
        } = self;
        let Some(client) = clients.get_mut(&key) else {
            return;
        };
        let copy = if client.copies.queued.is_empty() {
            match try_write(client, key, copy, d, retries, tracker) {
                Ok(()) => return,
                Err(copy) => copy,
            }
        } else {
            copy
        };
        if client.persistent {
            d.writes.push(Write::Copy {
                client_id: client.id.to_string(),
                copy: CopyRef {
                    key: copy.message().key,
                    attempts: copy.attempts,
                },
            });
        }
        client.copies.queued.push_back(copy);
        if client.outbox.is_some() {
            backlogged.insert(key);
        }
        if client.copies.queued.len() > d.queue_limit
            && let Some(oldest) = client.copies.queued.pop_front()
        {
            let client_id = client.id.clone();
            let persistent = client.persistent;
            self.dead_letter(&client_id, persistent, oldest, d);
        }
    }

    /// Writes client `key`'s queued copies while its outbound queue takes them.
    pub(super) fn flush_queue(&mut self, key: ClientKey, d: &mut Delivery<'_>) {
        let State {
            clients,
            retries,
            tracker,
            ..
        } = self;
        let Some(client) = clients.get_mut(&key) else {
            return;
        };
        while let Some(copy) = client.copies.queued.pop_front() {
            if copy.cancelled() {
                continue;
            }
            if let Err(copy) = try_write(client, key, copy, d, retries, tracker) {
                client.copies.queued.push_front(copy);
                break;
            }
        }
    }

    /// Settles client `key`'s copy `did` (its `ack` arrived); false if it is not in flight.
    pub(super) fn settle(&mut self, key: ClientKey, did: u64, d: &mut Delivery<'_>) -> bool {
        let Some(client) = self.clients.get_mut(&key) else {
            return false;
        };
        let Some(inflight) = client.copies.inflight.remove(did) else {
            return false;
        };
        let copy = inflight.copy;
        self.tracker
            .update(copy.track(), CopyState::Acknowledged, copy.attempts);
        if client.persistent {
            d.writes.push(Write::DropCopy {
                client_id: client.id.to_string(),
                key: copy.message().key,
            });
        }
        true
    }

    /// Forgets retry entries of copies that were acknowledged (or left) before their time came.
    ///
    /// Without this the queue held an entry per copy for a whole retry interval after its ack:
    /// 5 s of 400 000 copies/s is 2 million entries (64 MB), and growing it was a tenth of the
    /// server's time under QoS 1 load. The entries at the front are dropped while they are
    /// settled; when an old unacknowledged copy stops that, and settled entries are more than
    /// half the queue, the whole queue is compacted (amortised: it at least halves).
    pub(super) fn forget_settled_retries(&mut self) {
        let State {
            clients,
            retries,
            retries_peak,
            ..
        } = self;
        let open = |&(due, key, did): &(Instant, ClientKey, u64)| {
            clients
                .get(&key)
                .and_then(|c| c.copies.inflight.get(did))
                .is_some_and(|inflight| inflight.due == due)
        };
        *retries_peak = (*retries_peak).max(retries.len());
        while retries.front().is_some_and(|entry| !open(entry)) {
            retries.pop_front();
        }
        if retries.len() >= COMPACT_RETRIES_FROM {
            let in_flight: usize = clients.values().map(|c| c.copies.inflight.len()).sum();
            if retries.len() > 2 * in_flight {
                retries.retain(open);
            }
        }
    }

    /// Gives back the retry queue's memory when it is much larger than the queue has been over
    /// the last second. Called once a second: shrinking at every tick, to twice the length
    /// left after acknowledged entries were dropped, made the queue grow again from almost
    /// nothing, one reallocation per doubling, during every 20 ms of steady load.
    pub(super) fn shrink_retries(&mut self) {
        let peak = std::mem::replace(&mut self.retries_peak, self.retries.len());
        let peak = peak.max(self.retries.len());
        if self.retries.capacity() >= COMPACT_RETRIES_FROM && self.retries.capacity() > 4 * peak {
            self.retries.shrink_to(2 * peak);
        }
    }

    /// Redelivers the copies whose retry time has come; those out of retries become dead
    /// letters. Returns the clients with queued copies to write.
    pub(super) fn retry_due(&mut self, d: &mut Delivery<'_>) {
        let mut dead = Vec::new();
        while let Some(&(due, key, did)) = self.retries.front() {
            if due > d.now {
                break;
            }
            self.retries.pop_front();
            let Some(client) = self.clients.get_mut(&key) else {
                continue;
            };
            let Some(inflight) = client.copies.inflight.get_mut(did) else {
                continue;
            };
            if inflight.due != due {
                continue;
            }
            if inflight.copy.cancelled() {
                client.copies.inflight.remove(did);
                continue;
            }
            if inflight.copy.attempts > d.max_retries {
                if let Some(gone) = client.copies.inflight.remove(did) {
                    dead.push((client.id.clone(), client.persistent, gone.copy));
                }
                continue;
            }
            let written = client.outbox.as_ref().is_some_and(|outbox| {
                inflight
                    .copy
                    .outbound(did, true)
                    .is_some_and(|item| outbox.offer(item))
            });
            let next = d.now + d.retry;
            inflight.due = next;
            self.retries.push_back((next, key, did));
            if !written {
                continue;
            }
            inflight.copy.attempts += 1;
            SessionMetrics::add(&d.metrics.retries, 1);
            let copy = &inflight.copy;
            self.tracker
                .update(copy.track(), CopyState::Delivered, copy.attempts);
            if client.persistent {
                d.writes.push(Write::Copy {
                    client_id: client.id.to_string(),
                    copy: CopyRef {
                        key: copy.message().key,
                        attempts: copy.attempts,
                    },
                });
            }
        }
        for (client_id, persistent, copy) in dead {
            self.dead_letter(&client_id, persistent, copy, d);
        }
    }

    /// `copy` of client `client_id` is dead: publishes it on `$dead/<topic>` as QoS 0 and tells
    /// its publisher if it asked.
    pub(super) fn dead_letter(
        &mut self,
        client_id: &Arc<str>,
        persistent: bool,
        copy: Copy,
        d: &mut Delivery<'_>,
    ) {
        SessionMetrics::add(&d.metrics.dead_letters, 1);
        let message = copy.message();
        tracing::debug!(client = %client_id, mid = %message.mid, attempts = copy.attempts, "dead letter");
        self.tracker
            .update(copy.track(), CopyState::Dead, copy.attempts);
        if persistent {
            d.writes.push(Write::DropCopy {
                client_id: client_id.to_string(),
                key: message.key,
            });
        }
        let topic = format!("{DEAD_LETTER_PREFIX}{}", message.topic);
        let frame = ServerFrame::Message(Message {
            topic: topic.clone(),
            data: message.data.clone(),
            from: message.from.to_string(),
            ts: message.ts,
            offset: None,
            mid: Some(message.mid.clone()),
            qos: Qos::AtMostOnce,
            did: None,
            aid: None,
            retained: false,
            replay: false,
            dup: false,
        });
        let mut targets = Vec::new();
        self.index.for_each_match(&topic, |k| targets.push(*k));
        targets.sort_unstable();
        targets.dedup();
        if !targets.is_empty()
            && let Some(text) = encode(&frame)
        {
            for key in targets {
                if let Some(outbox) = self.clients.get(&key).and_then(|c| c.outbox.as_ref()) {
                    outbox.push_droppable(text.clone());
                }
            }
        }
        if message.notify_dead
            && let Some(&publisher) = self.by_id.get(&*message.from)
        {
            let notice = ServerFrame::DeadLetter(DeadLetter {
                mid: message.mid.clone(),
                topic: message.topic.clone(),
                client: client_id.to_string(),
                attempts: copy.attempts,
            });
            self.send(publisher, &notice);
        }
    }
}
