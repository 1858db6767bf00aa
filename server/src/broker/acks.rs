//! publish_with_ack collections: who is expected, who answered, and how it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sealbus::protocol::{
    Ack, AckCancel, AckDone, AckOutcome, AckResponseRef, AckState, AckStatus, Codec, ErrorCode,
    ProtocolError, ServerFrame,
};

use super::IdMap;
use super::delivery::Delivery;
use super::outbox::Outbound;
use super::session::{ClientKey, Session, State};
use crate::metrics::SessionMetrics;

/// How long a finished collection stays queryable with `ack_status`.
const FINISHED_RETENTION: Duration = Duration::from_secs(60);

/// Most finished collections a session keeps for `ack_status` (the oldest are forgotten first):
/// a minute of 20 000 publish_with_ack/s would otherwise be over a million collections.
pub(super) const FINISHED_KEPT: usize = 10_000;

/// Collections with more expected subscribers than this find a responder through a map;
/// smaller ones search their list (cheaper than hashing for a few entries).
const SEARCHED_UP_TO: usize = 32;

/// A subscriber's answer to a publish_with_ack message, relayed to its publisher.
#[derive(Debug, Clone, Copy)]
struct Answer<'a> {
    ok: bool,
    code: Option<ErrorCode>,
    error: Option<&'a str>,
}

/// A subscriber a collection waits for.
#[derive(Debug)]
struct Expected {
    id: Arc<str>,
    key: ClientKey,
    answered: bool,
}

/// One publish_with_ack in progress (or recently finished).
#[derive(Debug)]
pub(super) struct AckCollection {
    /// The publishing connection; `None` once it left.
    pub(super) publisher: Option<ClientKey>,
    /// The topic (`None` for a direct message).
    pub(super) topic: Option<String>,
    /// Everyone expected, in the order of `ack_expect`.
    expected: Box<[Expected]>,
    /// `expected`'s indexes by connection, for collections over [`SEARCHED_UP_TO`].
    by_key: Option<IdMap<ClientKey, usize>>,
    /// Indexes of `expected` in the order the answers came.
    answered: Vec<usize>,
    /// Expected subscribers that did not answer yet.
    open: usize,
    outcome: Option<AckOutcome>,
    finished_at: Option<Instant>,
    /// When the publisher stops waiting (a key of `State::ack_deadlines` until it finished).
    deadline: Instant,
    /// Shared with the queued copies: set on cancel so writers skip them.
    cancelled: Arc<AtomicBool>,
}

impl AckCollection {
    /// A collection waiting for `expected` until `deadline`.
    pub(super) fn new(
        publisher: ClientKey,
        topic: Option<String>,
        expected: &[(Arc<str>, ClientKey)],
        cancelled: Arc<AtomicBool>,
        deadline: Instant,
    ) -> Self {
        let by_key = (expected.len() > SEARCHED_UP_TO).then(|| {
            expected
                .iter()
                .enumerate()
                .map(|(index, (_, key))| (*key, index))
                .collect()
        });
        AckCollection {
            publisher: Some(publisher),
            topic,
            expected: expected
                .iter()
                .map(|(id, key)| Expected {
                    id: id.clone(),
                    key: *key,
                    answered: false,
                })
                .collect(),
            by_key,
            answered: Vec::with_capacity(expected.len()),
            open: expected.len(),
            outcome: None,
            finished_at: None,
            deadline,
            cancelled,
        }
    }

    /// Where connection `key` is in `expected`.
    fn position(&self, key: ClientKey) -> Option<usize> {
        match &self.by_key {
            Some(by_key) => by_key.get(&key).copied(),
            None => self.expected.iter().position(|e| e.key == key),
        }
    }

    /// Registers `collection` as `aid`; it ends with `timeout` at its deadline unless it
    /// finished before ([`Session::tick`] looks at deadlines: they have the tick's resolution).
    pub(super) fn insert(state: &mut State, aid: u64, collection: Self) {
        state.ack_deadlines.insert((collection.deadline, aid));
        state.acks.insert(aid, collection);
    }

    /// Forgets collections that finished more than `FINISHED_RETENTION` ago, and the oldest
    /// beyond `FINISHED_KEPT`.
    fn expire_finished(state: &mut State) {
        let now = Instant::now();
        while let Some(&(finished_at, aid)) = state.finished_acks.front() {
            if state.finished_acks.len() <= FINISHED_KEPT
                && now.duration_since(finished_at) < FINISHED_RETENTION
            {
                break;
            }
            state.finished_acks.pop_front();
            state.acks.remove(&aid);
        }
    }

    /// The publisher `key` left: its collections (and their deadlines) are dropped.
    pub(super) fn drop_publisher(state: &mut State, key: ClientKey) {
        let State {
            acks,
            ack_deadlines,
            ..
        } = state;
        acks.retain(|aid, collection| {
            let mine = collection.publisher == Some(key);
            if mine {
                ack_deadlines.remove(&(collection.deadline, *aid));
            }
            !mine
        });
    }

    /// Ends every collection whose deadline passed with `timeout`, and forgets finished ones
    /// past their retention.
    pub(super) fn time_out(state: &mut State, now: Instant) {
        Self::expire_finished(state);
        while state
            .ack_deadlines
            .first()
            .is_some_and(|&(deadline, _)| deadline <= now)
        {
            if let Some((_, aid)) = state.ack_deadlines.pop_first() {
                Self::finish(state, aid, AckOutcome::Timeout);
            }
        }
    }

    /// Records the answer of connection `from` and relays it as an `ack_response`; finishes the
    /// collection when nobody is left. Returns false when `from` was not expected to answer (or
    /// already did).
    fn respond(state: &mut State, aid: u64, from: ClientKey, answer: Answer<'_>) -> bool {
        let Some(collection) = state.acks.get_mut(&aid) else {
            return false;
        };
        if collection.outcome.is_some() {
            return true;
        }
        let Some(index) = collection.position(from) else {
            return false;
        };
        let Some(expected) = collection.expected.get_mut(index).filter(|e| !e.answered) else {
            return false;
        };
        expected.answered = true;
        // A success is encoded by the publisher's writer (the item shares the subscriber's id);
        // a failure now, with the subscriber's id borrowed.
        let relayed = collection.publisher.map(|publisher| {
            let item = if answer.ok && answer.code.is_none() && answer.error.is_none() {
                Outbound::AckAnswer {
                    aid,
                    from: expected.id.clone(),
                }
            } else {
                let response = AckResponseRef {
                    aid,
                    from: &expected.id,
                    ok: answer.ok,
                    code: answer.code,
                    error: answer.error,
                };
                Outbound::Frame(Codec::encode_ack_response(&response).into())
            };
            (publisher, item)
        });
        collection.answered.push(index);
        collection.open -= 1;
        let done = collection.open == 0;
        if let Some((publisher, item)) = relayed {
            state.send_answer(publisher, item);
        }
        if done {
            Self::finish(state, aid, AckOutcome::Complete);
        }
        true
    }

    /// Subscriber `from` (connection key) left (or unsubscribed) before answering.
    pub(super) fn respond_disconnected(state: &mut State, aid: u64, from: ClientKey) {
        let answer = Answer {
            ok: false,
            code: Some(ErrorCode::Disconnected),
            error: Some("disconnected"),
        };
        Self::respond(state, aid, from, answer);
    }

    /// Ends the collection with `outcome` and sends the one `ack_done`.
    pub(super) fn finish(state: &mut State, aid: u64, outcome: AckOutcome) {
        let Some(collection) = state.acks.get_mut(&aid) else {
            return;
        };
        if collection.outcome.is_some() {
            return;
        }
        let now = Instant::now();
        collection.outcome = Some(outcome);
        collection.finished_at = Some(now);
        state.ack_deadlines.remove(&(collection.deadline, aid));
        state.finished_acks.push_back((now, aid));
        if outcome == AckOutcome::Cancelled {
            collection.cancelled.store(true, Ordering::Release);
        }
        let publisher = collection.publisher;
        let waiting: Vec<ClientKey> = collection
            .expected
            .iter()
            .filter(|e| !e.answered)
            .map(|e| e.key)
            .collect();
        for key in waiting {
            if let Some(client) = state.clients.get_mut(&key) {
                client.pending_aids.remove(&aid);
            }
        }
        if let Some(publisher) = publisher {
            state.send(publisher, &ServerFrame::AckDone(AckDone { aid, outcome }));
        }
        Self::expire_finished(state);
    }
}

impl Session {
    /// Handles an `ack` from connection `key` with the session locked by the caller.
    pub(super) fn ack(
        &self,
        state: &mut State,
        d: &mut Delivery<'_>,
        key: ClientKey,
        f: Ack,
    ) -> Result<(), ProtocolError> {
        SessionMetrics::add(&self.metrics.acks, 1);
        if !state.clients.contains_key(&key) {
            return Err(ProtocolError::new(ErrorCode::Disconnected, None, "closing"));
        }
        if let Some(did) = f.did {
            let settled = state.settle(key, did, d);
            self.commit(std::mem::take(&mut d.writes), None);
            if !settled {
                return Err(ProtocolError::new(
                    ErrorCode::UnknownDeliveryId,
                    None,
                    format!("delivery id {did} is not outstanding"),
                ));
            }
        }
        let Some(client) = state.clients.get_mut(&key) else {
            return Ok(());
        };
        let Some(aid) = f.aid else { return Ok(()) };
        if !client.pending_aids.remove(&aid) {
            // Late answers to a finished collection are ignored; anything else is unknown.
            let from = client.id.clone();
            return match state.acks.get(&aid) {
                Some(c) if c.outcome.is_some() && c.expected.iter().any(|e| e.id == from) => Ok(()),
                _ => Err(unknown_aid(None, aid)),
            };
        }
        let answer = Answer {
            ok: f.ok,
            code: if f.ok {
                None
            } else {
                f.code.or(Some(ErrorCode::HandlerFailed))
            },
            error: if f.ok { None } else { f.error.as_deref() },
        };
        AckCollection::respond(state, aid, key, answer);
        Ok(())
    }

    pub(super) fn ack_status(&self, key: ClientKey, f: AckStatus) -> Result<(), ProtocolError> {
        let state = self.lock();
        let collection = state
            .acks
            .get(&f.aid)
            .filter(|c| c.publisher == Some(key))
            .ok_or_else(|| unknown_aid(Some(f.id), f.aid))?;
        let answered: Vec<String> = collection
            .answered
            .iter()
            .filter_map(|&index| collection.expected.get(index))
            .map(|e| e.id.to_string())
            .collect();
        let pending = collection
            .expected
            .iter()
            .filter(|e| !e.answered)
            .map(|e| e.id.to_string())
            .collect();
        let frame = ServerFrame::AckState(AckState {
            id: f.id,
            aid: f.aid,
            pending,
            answered,
            outcome: collection.outcome,
        });
        state.send(key, &frame);
        Ok(())
    }

    pub(super) fn ack_cancel(&self, key: ClientKey, f: AckCancel) -> Result<(), ProtocolError> {
        let mut state = self.lock();
        if state
            .acks
            .get(&f.aid)
            .is_none_or(|c| c.publisher != Some(key))
        {
            return Err(unknown_aid(f.id, f.aid));
        }
        AckCollection::finish(&mut state, f.aid, AckOutcome::Cancelled);
        Ok(())
    }
}

fn unknown_aid(id: Option<u64>, aid: u64) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::UnknownAckId,
        id,
        format!("ack id {aid} is not one of this connection's collections"),
    )
}
