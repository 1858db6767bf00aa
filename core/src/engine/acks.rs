//! Acknowledgement bookkeeping on both sides.
//!
//! * Publisher side, [`Collections`]: one [`AckSnapshot`] per publish_with_ack, fed by
//!   `ack_expect`, `ack_response` and `ack_done`, finished locally by timeout, cancel or a
//!   dropped connection.
//! * Subscriber side, [`Deliveries`]: a message that carries `did`/`aid` waits until every local
//!   handler has reported, then gets one `ack`.

use std::collections::{BTreeMap, HashMap};

use crate::protocol::{Ack, ErrorCode, MAX_ERROR_TEXT_BYTES, truncate};

use super::types::{AckFinish, AckReply, AckSnapshot, DeliveryToken, Millis, OpId};

/// One publish_with_ack collection in progress.
#[derive(Debug)]
pub(crate) struct Collection {
    pub(crate) snapshot: AckSnapshot,
    /// The server's ack id, once `ack_expect` named it.
    pub(crate) aid: Option<u64>,
    /// When the collection times out locally.
    pub(crate) deadline: Millis,
    /// Cancelled before the server named the ack id: send `ack_cancel` when it does.
    pub(crate) cancel_on_expect: bool,
}

/// Every publish_with_ack collection that is not finished, by operation.
#[derive(Debug, Default)]
pub(crate) struct Collections {
    by_op: BTreeMap<OpId, Collection>,
    by_aid: HashMap<u64, OpId>,
}

impl Collections {
    pub(crate) fn start(&mut self, op: OpId, deadline: Millis) {
        let collection = Collection {
            snapshot: AckSnapshot::default(),
            aid: None,
            deadline,
            cancel_on_expect: false,
        };
        self.by_op.insert(op, collection);
    }

    pub(crate) fn get(&self, op: OpId) -> Option<&Collection> {
        self.by_op.get(&op)
    }

    pub(crate) fn get_mut(&mut self, op: OpId) -> Option<&mut Collection> {
        self.by_op.get_mut(&op)
    }

    pub(crate) fn op_of(&self, aid: u64) -> Option<OpId> {
        self.by_aid.get(&aid).copied()
    }

    /// Records `ack_expect`. Returns whether the collection is now complete (nobody to wait for).
    pub(crate) fn expect(&mut self, op: OpId, aid: u64, expected: Vec<String>) -> bool {
        let Some(collection) = self.by_op.get_mut(&op) else {
            return false;
        };
        collection.aid = Some(aid);
        self.by_aid.insert(aid, op);
        let empty = expected.is_empty();
        collection.snapshot.expected = Some(expected);
        empty
    }

    /// Records one response. Returns whether every expected subscriber has now answered.
    pub(crate) fn respond(&mut self, op: OpId, from: String, reply: AckReply) -> bool {
        let Some(collection) = self.by_op.get_mut(&op) else {
            return false;
        };
        let snapshot = &mut collection.snapshot;
        if snapshot.finished.is_some() || snapshot.responses.iter().any(|(id, _)| *id == from) {
            return false;
        }
        snapshot.responses.push((from, reply));
        match &snapshot.expected {
            Some(expected) => expected
                .iter()
                .all(|id| snapshot.responses.iter().any(|(from, _)| from == id)),
            None => false,
        }
    }

    /// Finishes the collection and forgets it; returns the final snapshot, or `None` when there
    /// was none or it had already finished (a cancel tombstone).
    pub(crate) fn finish(&mut self, op: OpId, finish: AckFinish) -> Option<AckSnapshot> {
        let mut collection = self.by_op.remove(&op)?;
        if let Some(aid) = collection.aid {
            self.by_aid.remove(&aid);
        }
        if collection.snapshot.finished.is_some() {
            return None;
        }
        collection.snapshot.finished = Some(finish);
        Some(collection.snapshot)
    }

    /// Operations whose local deadline has passed.
    pub(crate) fn expired(&self, now: Millis) -> Vec<OpId> {
        self.by_op
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(op, _)| *op)
            .collect()
    }

    pub(crate) fn earliest_deadline(&self) -> Option<Millis> {
        self.by_op.values().map(|c| c.deadline).min()
    }

    pub(crate) fn ops(&self) -> Vec<OpId> {
        self.by_op.keys().copied().collect()
    }
}

/// A delivered message waiting for its handlers.
#[derive(Debug)]
struct Pending {
    did: Option<u64>,
    aid: Option<u64>,
    remaining: usize,
    first_error: Option<String>,
}

/// Messages waiting for their handlers before the `ack` goes out.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    next: u64,
    pending: HashMap<u64, Pending>,
}

impl Deliveries {
    /// Starts waiting for `handlers` handlers of a message with `did`/`aid`.
    pub(crate) fn start(
        &mut self,
        did: Option<u64>,
        aid: Option<u64>,
        handlers: usize,
    ) -> DeliveryToken {
        self.next += 1;
        let pending = Pending {
            did,
            aid,
            remaining: handlers,
            first_error: None,
        };
        self.pending.insert(self.next, pending);
        DeliveryToken(self.next)
    }

    /// One handler finished. Returns the `ack` to send once the last one has.
    pub(crate) fn complete(
        &mut self,
        token: DeliveryToken,
        result: Result<(), String>,
    ) -> Option<Ack> {
        let pending = self.pending.get_mut(&token.0)?;
        if let Err(message) = result {
            pending.first_error.get_or_insert(message);
        }
        pending.remaining = pending.remaining.saturating_sub(1);
        if pending.remaining > 0 {
            return None;
        }
        let pending = self.pending.remove(&token.0)?;
        Some(match pending.first_error {
            None => ok_ack(pending.did, pending.aid),
            Some(message) => {
                error_ack(pending.did, pending.aid, ErrorCode::HandlerFailed, &message)
            }
        })
    }

    /// Forgets every pending delivery (its ids are void after the connection dropped).
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }
}

/// A positive `ack`.
pub(crate) fn ok_ack(did: Option<u64>, aid: Option<u64>) -> Ack {
    Ack {
        did,
        aid,
        ok: true,
        code: None,
        error: None,
    }
}

/// A negative `ack` with a code and a message cut to the protocol's limit.
pub(crate) fn error_ack(did: Option<u64>, aid: Option<u64>, code: ErrorCode, message: &str) -> Ack {
    Ack {
        did,
        aid,
        ok: false,
        code: Some(code),
        error: Some(truncate(message, MAX_ERROR_TEXT_BYTES).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> AckReply {
        AckReply {
            ok: true,
            code: None,
            error: None,
        }
    }

    #[test]
    fn collection_completes_when_every_expected_id_answered() {
        let mut c = Collections::default();
        c.start(OpId(1), Millis(100));
        assert!(!c.respond(OpId(1), "early".into(), ok()));
        assert!(!c.expect(OpId(1), 9, vec!["a".into(), "b".into()]));
        assert_eq!(c.op_of(9), Some(OpId(1)));
        assert!(!c.respond(OpId(1), "a".into(), ok()));
        assert!(!c.respond(OpId(1), "a".into(), ok()));
        assert!(c.respond(OpId(1), "b".into(), ok()));
        let snap = c.finish(OpId(1), AckFinish::Complete).unwrap();
        assert_eq!(snap.responses.len(), 3);
        assert_eq!(c.op_of(9), None);
        assert!(c.finish(OpId(1), AckFinish::Complete).is_none());
    }

    #[test]
    fn delivery_acks_once_after_the_last_handler_with_the_first_error() {
        let mut d = Deliveries::default();
        let token = d.start(Some(1), Some(2), 3);
        assert_eq!(d.complete(token, Ok(())), None);
        assert_eq!(d.complete(token, Err("first".into())), None);
        let ack = d.complete(token, Err("second".into())).unwrap();
        assert_eq!(
            ack,
            error_ack(Some(1), Some(2), ErrorCode::HandlerFailed, "first")
        );
        assert_eq!(d.complete(token, Ok(())), None);
    }

    #[test]
    fn long_error_messages_are_cut() {
        let ack = error_ack(None, Some(1), ErrorCode::HandlerFailed, &"é".repeat(1000));
        let text = ack.error.unwrap();
        assert!(text.len() <= MAX_ERROR_TEXT_BYTES && text.len() >= MAX_ERROR_TEXT_BYTES - 1);
    }
}
