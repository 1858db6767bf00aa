//! Delivery status by message id (`docs/PROTOCOL.md` §8.8): the state of every subscriber's
//! copy of a QoS 1 message — pending, delivered, acknowledged, dead.
//!
//! A message is tracked while any copy is unsettled; settled messages are kept for the last
//! `keep` settled ones (the session's history size), so a status can be asked for a while after
//! the last ack.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use sealbus::protocol::{CopyState, CopyStatus};

use super::IdMap;
use crate::store::{MessageKey, StoredMessage};

/// The copies of one message.
#[derive(Debug)]
struct Tracked {
    message: Arc<StoredMessage>,
    copies: Vec<(Arc<str>, CopyState, u32)>,
    open: usize,
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
    by_key: IdMap<MessageKey, Tracked>,
    by_mid: HashMap<String, MessageKey>,
    settled: VecDeque<MessageKey>,
    keep: usize,
}

fn is_open(state: CopyState) -> bool {
    matches!(state, CopyState::Pending | CopyState::Delivered)
}

impl Tracker {
    /// Keeps the last `keep` settled messages.
    pub(super) fn set_keep(&mut self, keep: usize) {
        self.keep = keep;
    }

    /// Starts tracking `message` with a pending copy for each of `clients`.
    pub(super) fn start(&mut self, message: &Arc<StoredMessage>, clients: Vec<Arc<str>>) {
        let open = clients.len();
        let key = message.key;
        let tracked = Tracked {
            message: message.clone(),
            copies: clients
                .into_iter()
                .map(|c| (c, CopyState::Pending, 0))
                .collect(),
            open,
        };
        if let Some(replaced) = self.by_key.insert(key, tracked) {
            self.by_mid.remove(&replaced.message.mid);
        }
        self.by_mid.insert(message.mid.clone(), key);
        if open == 0 {
            self.settle(key);
        }
    }

    /// Records a copy's new state.
    pub(super) fn update(
        &mut self,
        key: MessageKey,
        client: &Arc<str>,
        state: CopyState,
        attempts: u32,
    ) {
        let Some(tracked) = self.by_key.get_mut(&key) else {
            return;
        };
        // The copies hold the clients' own `Arc`s: comparing pointers first spares a string
        // comparison per copy on every delivery and ack.
        let position = tracked
            .copies
            .iter()
            .position(|(c, ..)| Arc::ptr_eq(c, client))
            .or_else(|| tracked.copies.iter().position(|(c, ..)| c == client));
        let Some(copy) = position.map(|i| &mut tracked.copies[i]) else {
            return;
        };
        let was_open = is_open(copy.1);
        copy.1 = state;
        copy.2 = attempts;
        if was_open && !is_open(state) {
            tracked.open -= 1;
            if tracked.open == 0 {
                self.settle(key);
            }
        }
    }

    /// A client's copy will never be settled (it left without persistence): it stops counting
    /// as open, its last state stays visible.
    pub(super) fn abandon(&mut self, key: MessageKey, client: &str) {
        let Some(tracked) = self.by_key.get_mut(&key) else {
            return;
        };
        if tracked
            .copies
            .iter()
            .any(|(c, state, _)| &**c == client && is_open(*state))
        {
            tracked.open -= 1;
            if tracked.open == 0 {
                self.settle(key);
            }
        }
    }

    fn settle(&mut self, key: MessageKey) {
        self.settled.push_back(key);
        while self.settled.len() > self.keep {
            if let Some(old) = self.settled.pop_front()
                && self.by_key.get(&old).is_some_and(|t| t.open == 0)
                && let Some(gone) = self.by_key.remove(&old)
            {
                self.by_mid.remove(&gone.message.mid);
            }
        }
    }

    /// The status of message `mid`, if tracked.
    pub(super) fn status(&self, mid: &str) -> Option<Status> {
        let tracked = self.by_key.get(self.by_mid.get(mid)?)?;
        Some(Status {
            topic: tracked.message.topic.clone(),
            from: tracked.message.from.clone(),
            copies: tracked
                .copies
                .iter()
                .map(|(client, state, attempts)| CopyStatus {
                    client: client.to_string(),
                    state: *state,
                    attempts: *attempts,
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
        tracker.start(&m1, vec!["a".into(), "b".into()]);
        tracker.update(m1.key, &"a".into(), CopyState::Delivered, 1);
        tracker.update(m1.key, &"a".into(), CopyState::Acknowledged, 1);
        let status = tracker.status("m1").unwrap();
        assert_eq!(status.copies[0].state, CopyState::Acknowledged);
        assert_eq!(status.copies[1].state, CopyState::Pending);
        tracker.update(m1.key, &"b".into(), CopyState::Dead, 101);
        assert_eq!(tracker.status("m1").unwrap().copies[1].attempts, 101);
        tracker.start(&m2, vec![]);
        assert!(
            tracker.status("m1").is_none(),
            "only the last settled one is kept"
        );
        assert!(tracker.status("m2").unwrap().copies.is_empty());
    }

    #[test]
    fn an_open_message_is_never_forgotten() {
        let mut tracker = Tracker::default();
        tracker.set_keep(0);
        let (m1, m2) = (message(1), message(2));
        tracker.start(&m1, vec!["a".into()]);
        tracker.start(&m2, vec![]);
        assert!(tracker.status("m1").is_some());
        tracker.abandon(m1.key, "a");
        assert!(tracker.status("m1").is_none());
    }
}
