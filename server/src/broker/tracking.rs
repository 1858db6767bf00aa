//! Delivery status by message id (`docs/PROTOCOL.md` §8.8): the state of every subscriber's
//! copy of a QoS 1 message — pending, delivered, acknowledged, dead.
//!
//! A message is tracked while any copy is unsettled; settled messages are kept for the last
//! `keep` settled ones (the session's history size), so a status can be asked for a while after
//! the last ack.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use sealbus::protocol::{CopyState, CopyStatus};

use super::IdMap;
use crate::store::{MessageKey, StoredMessage};

/// The copies of one message. Shared by the tracker and the copies themselves (through their
/// [`Track`]), so that a delivery or an ack updates its line without a lookup. Everything is
/// changed under the session's lock; the atomics only make the sharing `Sync`.
#[derive(Debug)]
struct Tracked {
    message: Arc<StoredMessage>,
    /// The message's frame for its subscribers, encoded once (see `delivery::Copy`).
    frame: Option<Utf8Bytes>,
    copies: Box<[TrackedCopy]>,
    open: AtomicUsize,
}

/// One subscriber's line.
#[derive(Debug)]
struct TrackedCopy {
    client: Arc<str>,
    state: AtomicU8,
    attempts: AtomicU32,
}

/// A copy's line in the tracker.
#[derive(Debug, Clone)]
pub(super) struct Track {
    tracked: Arc<Tracked>,
    slot: usize,
}

impl Track {
    /// The message.
    pub(super) fn message(&self) -> &Arc<StoredMessage> {
        &self.tracked.message
    }

    /// The message's frame shared by its subscribers, if it was encoded.
    pub(super) fn frame(&self) -> Option<&Utf8Bytes> {
        self.tracked.frame.as_ref()
    }
}

/// The lines of a message's copies, in the order [`Tracker::start`] was given the clients.
#[derive(Debug)]
pub(super) struct Lines {
    tracked: Arc<Tracked>,
    next: usize,
    end: usize,
}

impl Iterator for Lines {
    type Item = Track;

    fn next(&mut self) -> Option<Track> {
        if self.next == self.end {
            return None;
        }
        self.next += 1;
        Some(Track {
            tracked: self.tracked.clone(),
            slot: self.next - 1,
        })
    }
}

/// Status of a tracked message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The message's topic (`@<client id>` for a direct message).
    pub topic: String,
    /// The publisher's client id.
    pub from: String,
    /// Each subscriber's copy.
    pub copies: Vec<CopyStatus>,
}

/// Every tracked QoS 1 message of a session.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    by_key: IdMap<MessageKey, Arc<Tracked>>,
    /// Message ids, by their keyed hash ([`Tracker::mid_hash`]): a map keyed by a copy of each
    /// id cost an allocation per message, and its removal (the history size of messages later,
    /// from memory long gone cold) was a third of the tracker's time under QoS 1 load. Clients
    /// choose message ids but not the hash key, so they cannot make ids collide on purpose; an
    /// accidental collision of two 64-bit hashes leaves the older message's status unknown
    /// (lookups check the id).
    by_mid: IdMap<u64, MessageKey>,
    mid_hash: RandomState,
    settled: VecDeque<MessageKey>,
    keep: usize,
    /// The message settled last: its frame is dropped when the next one settles (by then its
    /// last copy is gone). A settled message is kept for its status only, and freeing its frame
    /// the history size of messages later, from memory gone cold, cost 4% of the server's time
    /// under QoS 1 load.
    unframed_next: Option<MessageKey>,
}

const STATES: [CopyState; 4] = [
    CopyState::Pending,
    CopyState::Delivered,
    CopyState::Acknowledged,
    CopyState::Dead,
];

fn encode_state(state: CopyState) -> u8 {
    STATES.iter().position(|s| *s == state).unwrap_or(0) as u8
}

fn decode_state(code: u8) -> CopyState {
    STATES
        .get(usize::from(code))
        .copied()
        .unwrap_or(CopyState::Pending)
}

fn is_open(state: CopyState) -> bool {
    matches!(state, CopyState::Pending | CopyState::Delivered)
}

impl Tracker {
    /// Keeps the last `keep` settled messages.
    pub(super) fn set_keep(&mut self, keep: usize) {
        self.keep = keep;
    }

    /// Starts tracking `message` (with its subscribers' `frame`, if encoded) with a pending
    /// copy for each of `clients`; returns their lines, in the same order.
    pub(super) fn start(
        &mut self,
        message: &Arc<StoredMessage>,
        frame: Option<Utf8Bytes>,
        clients: impl IntoIterator<Item = Arc<str>>,
    ) -> Lines {
        let key = message.key;
        let clients = clients.into_iter();
        // Sized by the iterator's upper bound (the targets routing found): collecting a
        // filtering iterator grew the vector from 4 and shrank it again, four allocator calls
        // per publish (3% of the server's samples under QoS 1 load).
        let (least, most) = clients.size_hint();
        let mut copies = Vec::with_capacity(most.unwrap_or(least));
        copies.extend(clients.map(|client| TrackedCopy {
            client,
            state: AtomicU8::new(encode_state(CopyState::Pending)),
            attempts: AtomicU32::new(0),
        }));
        let copies = copies.into_boxed_slice();
        let open = copies.len();
        let tracked = Arc::new(Tracked {
            message: message.clone(),
            frame,
            copies,
            open: AtomicUsize::new(open),
        });
        if let Some(replaced) = self.by_key.insert(key, tracked.clone()) {
            self.forget_mid(&replaced.message);
        }
        self.by_mid
            .insert(self.mid_hash.hash_one(&message.mid), key);
        if open == 0 {
            self.settle(key);
        }
        Lines {
            tracked,
            next: 0,
            end: open,
        }
    }

    /// The line of `client`'s copy of message `key` (for copies restored from the store).
    pub(super) fn track(&self, key: MessageKey, client: &str) -> Option<Track> {
        let tracked = self.by_key.get(&key)?;
        let slot = tracked.copies.iter().position(|c| &*c.client == client)?;
        Some(Track {
            tracked: tracked.clone(),
            slot,
        })
    }

    /// Records a copy's new state.
    pub(super) fn update(&mut self, track: Option<&Track>, state: CopyState, attempts: u32) {
        let Some(Track { tracked, slot }) = track else {
            return;
        };
        let Some(copy) = tracked.copies.get(*slot) else {
            return;
        };
        let was_open = is_open(decode_state(copy.state.load(Ordering::Relaxed)));
        copy.state.store(encode_state(state), Ordering::Relaxed);
        copy.attempts.store(attempts, Ordering::Relaxed);
        if was_open && !is_open(state) {
            self.close(tracked);
        }
    }

    /// A client's copy will never be settled (it left without persistence): it stops counting
    /// as open, its last state stays visible.
    pub(super) fn abandon(&mut self, track: Option<&Track>) {
        let Some(Track { tracked, slot }) = track else {
            return;
        };
        if tracked
            .copies
            .get(*slot)
            .is_some_and(|c| is_open(decode_state(c.state.load(Ordering::Relaxed))))
        {
            self.close(tracked);
        }
    }

    /// One of `tracked`'s copies stopped being open.
    fn close(&mut self, tracked: &Tracked) {
        if tracked.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.settle(tracked.message.key);
        }
    }

    fn settle(&mut self, key: MessageKey) {
        if let Some(previous) = self.unframed_next.replace(key)
            && let Some(tracked) = self.by_key.get_mut(&previous).and_then(Arc::get_mut)
        {
            tracked.frame = None;
        }
        self.settled.push_back(key);
        while self.settled.len() > self.keep {
            let Some(old) = self.settled.pop_front() else {
                break;
            };
            if let Entry::Occupied(entry) = self.by_key.entry(old)
                && entry.get().open.load(Ordering::Relaxed) == 0
            {
                let gone = entry.remove();
                self.forget_mid(&gone.message);
            }
        }
    }

    /// Forgets `message`'s id, unless it now names a newer message.
    fn forget_mid(&mut self, message: &StoredMessage) {
        if let Entry::Occupied(entry) = self.by_mid.entry(self.mid_hash.hash_one(&message.mid))
            && *entry.get() == message.key
        {
            entry.remove();
        }
    }

    /// The status of message `mid`, if tracked.
    pub(super) fn status(&self, mid: &str) -> Option<Status> {
        let key = self.by_mid.get(&self.mid_hash.hash_one(mid))?;
        let tracked = self.by_key.get(key).filter(|t| t.message.mid == mid)?;
        Some(Status {
            topic: tracked.message.topic.clone(),
            from: tracked.message.from.to_string(),
            copies: tracked
                .copies
                .iter()
                .map(|copy| CopyStatus {
                    client: copy.client.to_string(),
                    state: decode_state(copy.state.load(Ordering::Relaxed)),
                    attempts: copy.attempts.load(Ordering::Relaxed),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealbus::protocol::{Payload, Qos};

    fn message(offset: u64) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            key: MessageKey::Stream(offset),
            topic: "t".into(),
            data: Payload::Json(serde_json::json!(offset)),
            from: "p".into(),
            ts: 1,
            mid: format!("m{offset}"),
            qos: Qos::AtLeastOnce,
            notify_dead: false,
        })
    }

    #[test]
    fn follows_each_copy_and_forgets_old_settled_messages() {
        let mut tracker = Tracker::default();
        tracker.set_keep(1);
        let (m1, m2) = (message(1), message(2));
        let lines: Vec<Track> = tracker.start(&m1, None, ["a".into(), "b".into()]).collect();
        tracker.update(lines.first(), CopyState::Delivered, 1);
        tracker.update(lines.first(), CopyState::Acknowledged, 1);
        let status = tracker.status("m1").unwrap();
        assert_eq!(status.copies[0].state, CopyState::Acknowledged);
        assert_eq!(status.copies[1].state, CopyState::Pending);
        tracker.update(lines.get(1), CopyState::Dead, 101);
        assert_eq!(tracker.status("m1").unwrap().copies[1].attempts, 101);
        tracker.start(&m2, None, []);
        assert!(
            tracker.status("m1").is_none(),
            "only the last settled one is kept"
        );
        assert!(tracker.status("m2").unwrap().copies.is_empty());
    }

    #[test]
    fn a_reused_message_id_names_the_newer_message_after_the_older_is_forgotten() {
        let mut tracker = Tracker::default();
        tracker.set_keep(1);
        let with_mid = |offset: u64| {
            let mut message = (*message(offset)).clone();
            message.mid = "same".into();
            Arc::new(message)
        };
        let (older, newer) = (with_mid(1), with_mid(2));
        let older_line = tracker.start(&older, None, ["a".into()]).next();
        let newer_line = tracker.start(&newer, None, ["b".into()]).next();
        tracker.update(older_line.as_ref(), CopyState::Acknowledged, 1);
        tracker.update(newer_line.as_ref(), CopyState::Acknowledged, 1);
        let status = tracker
            .status("same")
            .expect("the newer message is still kept");
        assert_eq!(status.copies[0].client, "b");
        assert_eq!(status.copies[0].state, CopyState::Acknowledged);
        assert!(tracker.status("m1").is_none() && tracker.status("other").is_none());
    }

    #[test]
    fn a_settled_message_lets_its_frame_go_once_its_last_copy_is_gone() {
        let mut tracker = Tracker::default();
        tracker.set_keep(10);
        let (m1, m2) = (message(1), message(2));
        let frame = || Some(Utf8Bytes::from("{}"));
        let line = tracker.start(&m1, frame(), ["a".into()]).next();
        tracker.update(line.as_ref(), CopyState::Acknowledged, 1);
        drop(line);
        let frame_of = |tracker: &Tracker, key| tracker.by_key[&key].frame.is_some();
        assert!(
            frame_of(&tracker, m1.key),
            "kept until the next message settles"
        );
        let kept = tracker.start(&m2, frame(), ["b".into()]).next();
        assert!(frame_of(&tracker, m1.key), "m2 is not settled yet");
        tracker.update(kept.as_ref(), CopyState::Acknowledged, 1);
        assert!(
            !frame_of(&tracker, m1.key),
            "m1's frame went when m2 settled"
        );
        assert!(
            frame_of(&tracker, m2.key),
            "a copy of m2 still refers to it"
        );
        assert_eq!(
            tracker.status("m1").unwrap().copies[0].state,
            CopyState::Acknowledged,
            "the status stays"
        );
    }

    #[test]
    fn an_open_message_is_never_forgotten() {
        let mut tracker = Tracker::default();
        tracker.set_keep(0);
        let (m1, m2) = (message(1), message(2));
        tracker.start(&m1, None, ["a".into()]);
        tracker.start(&m2, None, []);
        assert!(tracker.status("m1").is_some());
        let line = tracker.track(m1.key, "a");
        assert!(line.is_some() && tracker.track(m1.key, "b").is_none());
        tracker.abandon(line.as_ref());
        assert!(tracker.status("m1").is_none());
    }
}
