//! A session's history: the last messages of its stream, kept for recovery (`since`,
//! `docs/PROTOCOL.md` §8.4).

use std::collections::VecDeque;
use std::sync::Arc;

use sealbus::topic::matches;

use crate::store::{MessageKey, StoredMessage};

/// The last messages of a session's stream, oldest first, with contiguous offsets.
#[derive(Debug, Default)]
pub(super) struct History {
    messages: VecDeque<Arc<StoredMessage>>,
    /// The first offset the store was last told to keep.
    stored_from: u64,
}

/// The outcome of asking for the messages after an offset.
#[derive(Debug)]
pub(super) enum Replay<'a> {
    /// History reaches back far enough: these are the matching messages after the offset.
    Recovered(Vec<&'a Arc<StoredMessage>>),
    /// Some messages after the offset are no longer kept.
    NotRecovered,
}

impl History {
    /// Adds the newest stream message; keeps at most `max` messages.
    pub(super) fn push(&mut self, message: Arc<StoredMessage>, max: usize) {
        self.messages.push_back(message);
        while self.messages.len() > max {
            self.messages.pop_front();
        }
    }

    /// Restores stream messages loaded from the store (in offset order). The store may still
    /// hold older messages that copies refer to; only the newest run of consecutive offsets
    /// becomes history, so that history never has a gap.
    pub(super) fn restore(&mut self, messages: Vec<Arc<StoredMessage>>, max: usize) {
        let offset = |m: &Arc<StoredMessage>| match m.key {
            MessageKey::Stream(offset) => Some(offset),
            MessageKey::Direct(_) => None,
        };
        let mut start = messages.len();
        while start > 0 {
            let consecutive = match (messages.get(start - 1), messages.get(start)) {
                (Some(prev), Some(next)) => {
                    offset(prev).is_some_and(|p| offset(next) == Some(p + 1))
                }
                (Some(prev), None) => offset(prev).is_some(),
                _ => false,
            };
            if !consecutive {
                break;
            }
            start -= 1;
        }
        if let Some(first) = messages.get(start).and_then(offset) {
            self.stored_from = first;
        }
        for message in messages.into_iter().skip(start) {
            self.push(message, max);
        }
    }

    /// Forgets messages beyond `max` or older than `oldest_ts`. Returns the first offset to
    /// keep when the store should be told to trim (it changed since the last time).
    pub(super) fn trim(&mut self, max: usize, oldest_ts: u64, last_offset: u64) -> Option<u64> {
        while self.messages.len() > max || self.messages.front().is_some_and(|m| m.ts < oldest_ts) {
            self.messages.pop_front();
        }
        let keep_from = self.first_offset().unwrap_or(last_offset + 1);
        (keep_from > self.stored_from).then(|| {
            self.stored_from = keep_from;
            keep_from
        })
    }

    fn first_offset(&self) -> Option<u64> {
        match self.messages.front()?.key {
            MessageKey::Stream(offset) => Some(offset),
            MessageKey::Direct(_) => None,
        }
    }

    /// The messages matching `filter` with an offset above `since`, if history still holds
    /// every message after `since` (`last_offset` is the stream's newest offset).
    pub(super) fn replay(&self, since: u64, last_offset: u64, filter: &str) -> Replay<'_> {
        if since >= last_offset {
            return Replay::Recovered(Vec::new());
        }
        let first = self.first_offset().unwrap_or(last_offset + 1);
        if since + 1 < first {
            return Replay::NotRecovered;
        }
        let skip = usize::try_from(since + 1 - first).unwrap_or(usize::MAX);
        Replay::Recovered(
            self.messages
                .iter()
                .skip(skip)
                .filter(|m| matches(filter, &m.topic))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealbus::protocol::{Payload, Qos};

    fn message(offset: u64, topic: &str, ts: u64) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            key: MessageKey::Stream(offset),
            topic: topic.into(),
            data: Payload::Json(serde_json::json!(offset)),
            from: "p".into(),
            ts,
            mid: format!("m{offset}"),
            qos: Qos::AtMostOnce,
            notify_dead: false,
        })
    }

    fn offsets(replay: Replay<'_>) -> Option<Vec<u64>> {
        match replay {
            Replay::Recovered(messages) => Some(
                messages
                    .iter()
                    .map(|m| match m.key {
                        MessageKey::Stream(o) | MessageKey::Direct(o) => o,
                    })
                    .collect(),
            ),
            Replay::NotRecovered => None,
        }
    }

    #[test]
    fn replays_matching_messages_after_the_offset() {
        let mut history = History::default();
        for offset in 1..=6 {
            let topic = if offset % 2 == 0 { "a/x" } else { "b/x" };
            history.push(message(offset, topic, offset), 10);
        }
        assert_eq!(offsets(history.replay(1, 6, "a/+")), Some(vec![2, 4, 6]));
        assert_eq!(offsets(history.replay(4, 6, "#")), Some(vec![5, 6]));
        assert_eq!(offsets(history.replay(6, 6, "#")), Some(vec![]));
        assert_eq!(offsets(history.replay(0, 6, "b/#")), Some(vec![1, 3, 5]));
    }

    #[test]
    fn a_gap_is_not_recovered() {
        let mut history = History::default();
        for offset in 1..=6 {
            history.push(message(offset, "t", offset), 3);
        }
        assert_eq!(offsets(history.replay(3, 6, "t")), Some(vec![4, 5, 6]));
        assert!(
            offsets(history.replay(2, 6, "t")).is_none(),
            "4 is kept, 3 is not"
        );
    }

    #[test]
    fn restore_keeps_the_newest_run_without_gaps() {
        let mut history = History::default();
        let stored = [2, 4, 5, 6].map(|o| message(o, "t", o)).to_vec();
        history.restore(stored, 10);
        assert_eq!(offsets(history.replay(3, 6, "t")), Some(vec![4, 5, 6]));
        assert!(offsets(history.replay(1, 6, "t")).is_none());
    }

    #[test]
    fn trims_by_count_and_age_and_reports_changes_once() {
        let mut history = History::default();
        for offset in 1..=5 {
            history.push(message(offset, "t", offset * 10), 10);
        }
        assert_eq!(history.trim(10, 0, 5), Some(1));
        assert_eq!(history.trim(10, 0, 5), None, "nothing changed");
        assert_eq!(history.trim(4, 25, 5), Some(3), "ts 10 and 20 are too old");
        assert_eq!(
            history.trim(0, 0, 5),
            Some(6),
            "empty history keeps nothing"
        );
        assert!(offsets(history.replay(4, 5, "t")).is_none());
        assert_eq!(offsets(history.replay(5, 5, "t")), Some(vec![]));
    }
}
