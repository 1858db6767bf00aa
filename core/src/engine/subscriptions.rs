//! The subscription table: one server subscription per filter, any number of local handlers.

use std::collections::BTreeMap;

use crate::protocol::Position;
use crate::topic::matches;

use super::types::OpId;

/// One filter's state.
#[derive(Debug, Default)]
pub(crate) struct Sub {
    /// Handler registrations the server has confirmed (at least once).
    pub(crate) handlers: Vec<OpId>,
    /// Handler registrations whose `subscribe` waits for the server's first confirmation.
    pub(crate) waiting: Vec<OpId>,
    /// The last stream position seen for this filter: the subscribe position, then the offset
    /// of every message that matched. Sent as `since` when resubscribing.
    pub(crate) last: Option<Position>,
    /// `false` after a resubscribe the server could not fully recover.
    pub(crate) recovered: bool,
}

/// Filters and their handler registrations.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    subs: BTreeMap<String, Sub>,
}

/// What adding a handler means for the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Added {
    /// The filter is already confirmed: the new handler is active at once.
    Active,
    /// The filter's first `subscribe` is outstanding or queued: wait for it.
    Waiting,
    /// A new filter: a `subscribe` must be sent.
    New,
}

impl Subscriptions {
    /// Registers `op` as a handler of `filter`.
    pub(crate) fn add(&mut self, filter: &str, op: OpId) -> Added {
        match self.subs.get_mut(filter) {
            Some(sub) if !sub.handlers.is_empty() => {
                sub.handlers.push(op);
                Added::Active
            }
            Some(sub) => {
                sub.waiting.push(op);
                Added::Waiting
            }
            None => {
                let sub = Sub {
                    waiting: vec![op],
                    recovered: true,
                    ..Sub::default()
                };
                self.subs.insert(filter.to_owned(), sub);
                Added::New
            }
        }
    }

    /// Removes handler `op`. Returns its filter, whether the filter is now gone (so the server
    /// subscription should end) and whether `op` was still waiting for confirmation.
    pub(crate) fn remove_handler(&mut self, op: OpId) -> Option<(String, bool, bool)> {
        let (filter, sub) = self
            .subs
            .iter_mut()
            .find(|(_, sub)| sub.handlers.contains(&op) || sub.waiting.contains(&op))?;
        let was_waiting = sub.waiting.contains(&op);
        sub.handlers.retain(|h| *h != op);
        sub.waiting.retain(|h| *h != op);
        let gone = sub.handlers.is_empty() && sub.waiting.is_empty();
        let filter = filter.clone();
        if gone {
            self.subs.remove(&filter);
        }
        Some((filter, gone, was_waiting))
    }

    /// Removes `filter` with all its handlers; returns them (confirmed and waiting).
    pub(crate) fn remove_filter(&mut self, filter: &str) -> Option<Sub> {
        self.subs.remove(filter)
    }

    pub(crate) fn get_mut(&mut self, filter: &str) -> Option<&mut Sub> {
        self.subs.get_mut(filter)
    }

    pub(crate) fn get(&self, filter: &str) -> Option<&Sub> {
        self.subs.get(filter)
    }

    pub(crate) fn filters(&self) -> impl Iterator<Item = (&String, &Sub)> {
        self.subs.iter()
    }

    /// Every confirmed handler whose filter matches `topic`, each once, and advances the
    /// matching filters' last offset to `offset`.
    pub(crate) fn dispatch(&mut self, topic: &str, offset: Option<u64>) -> Vec<OpId> {
        let mut handlers = Vec::new();
        for (filter, sub) in &mut self.subs {
            if !matches(filter, topic) {
                continue;
            }
            handlers.extend(sub.handlers.iter().copied());
            if let (Some(offset), Some(last)) = (offset, sub.last.as_mut()) {
                last.offset = last.offset.max(offset);
            }
        }
        handlers.sort_unstable();
        handlers.dedup();
        handlers
    }

    /// Handlers of filter `filter` that are confirmed.
    pub(crate) fn handlers_of(&self, filter: &str) -> Vec<OpId> {
        self.subs
            .get(filter)
            .map(|sub| sub.handlers.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_filter_twice_is_one_subscription() {
        let mut subs = Subscriptions::default();
        assert_eq!(subs.add("a/+", OpId(1)), Added::New);
        assert_eq!(subs.add("a/+", OpId(2)), Added::Waiting);
        let sub = subs.get_mut("a/+").unwrap();
        sub.handlers.append(&mut sub.waiting);
        assert_eq!(subs.add("a/+", OpId(3)), Added::Active);
        assert_eq!(subs.handlers_of("a/+"), [OpId(1), OpId(2), OpId(3)]);
        assert_eq!(
            subs.remove_handler(OpId(1)),
            Some(("a/+".into(), false, false))
        );
        assert_eq!(
            subs.remove_handler(OpId(2)),
            Some(("a/+".into(), false, false))
        );
        assert_eq!(
            subs.remove_handler(OpId(3)),
            Some(("a/+".into(), true, false))
        );
        assert_eq!(subs.remove_handler(OpId(3)), None);
    }

    #[test]
    fn dispatch_collects_every_matching_handler_and_tracks_offsets() {
        let mut subs = Subscriptions::default();
        for (filter, op) in [("a/+", 1), ("a/#", 2), ("b", 3)] {
            subs.add(filter, OpId(op));
            let sub = subs.get_mut(filter).unwrap();
            sub.handlers.append(&mut sub.waiting);
            sub.last = Some(Position {
                epoch: "e".into(),
                offset: 5,
            });
        }
        assert_eq!(subs.dispatch("a/x", Some(9)), [OpId(1), OpId(2)]);
        assert_eq!(subs.get("a/+").unwrap().last.as_ref().unwrap().offset, 9);
        assert_eq!(subs.get("b").unwrap().last.as_ref().unwrap().offset, 5);
        assert_eq!(subs.dispatch("a/x", Some(3)), [OpId(1), OpId(2)]);
        assert_eq!(subs.get("a/#").unwrap().last.as_ref().unwrap().offset, 9);
        assert!(subs.dispatch("c", None).is_empty());
    }
}
