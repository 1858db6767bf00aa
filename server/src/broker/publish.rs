//! Publish and send, the publishing half of [`Session`]: offsets, history, retained messages,
//! fan-out of QoS 0 frames and QoS 1 copies, publish_with_ack collections, and the `published`
//! answer, sent once the store holds the message.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealbus::protocol::{
    Codec, ErrorCode, ErrorFrame, Payload, ProtocolError, Publish, Published, Qos, Send,
    ServerFrame,
};
use sealbus::topic::is_reserved;

use super::acks::AckCollection;
use super::delivery::{Copy, Delivery, copy_text, message_ref};
use super::now_ms;
use super::outbox::{AckShared, Outbound, Outbox};
use super::routing::not_connected;
use super::session::{ClientKey, Session, State, encode};
use crate::metrics::SessionMetrics;
use crate::store::{MessageKey, OnCommit, Retained, StoredMessage, Write};

/// Largest list of a publish's targets kept for the next publish (bytes: eight per target); a
/// publish to more subscribers allocates its own.
const KEPT_TARGETS: usize = 4096;

/// Client id shown as `from` for messages published through the admin API.
pub(crate) const ADMIN_ID: &str = "$admin";

/// The connection that published, to answer it.
struct Publisher {
    key: ClientKey,
    answer: Option<Answer>,
}

/// Where a request's answer goes once the store committed it: the connection's queue, and its
/// set of outstanding request ids.
#[derive(Debug, Clone)]
pub(super) struct Answer {
    pub(super) outbox: Outbox,
    pub(super) outstanding: Outstanding,
}

/// The ids of a connection's requests waiting for the store (shared with commit callbacks).
pub(super) type Outstanding = Arc<Mutex<HashSet<u64>>>;

fn lock(outstanding: &Outstanding) -> std::sync::MutexGuard<'_, HashSet<u64>> {
    outstanding.lock().unwrap_or_else(|e| e.into_inner())
}

/// Refuses a request whose id is still outstanding, or one too many.
fn admit(outstanding: &Outstanding, id: u64, max: u32) -> Result<(), ProtocolError> {
    let outstanding = lock(outstanding);
    if outstanding.contains(&id) {
        return Err(ProtocolError::new(
            ErrorCode::DuplicateRequestId,
            Some(id),
            format!("request {id} is still outstanding"),
        ));
    }
    if outstanding.len() >= max as usize {
        return Err(ProtocolError::new(
            ErrorCode::TooManyRequests,
            Some(id),
            format!("at most {max} requests may wait for the store at once"),
        ));
    }
    Ok(())
}

/// Who asked for a publish_with_ack collection, and about what.
struct AckSpec {
    publisher: ClientKey,
    id: u64,
    topic: Option<String>,
    /// When the publisher stops waiting.
    deadline: Instant,
}

/// Sends `published` once the store committed the publish (or an `internal` error if it
/// could not); the request is outstanding until then.
fn confirm(answer: Option<Answer>, published: Published) -> Option<OnCommit> {
    let Answer {
        outbox,
        outstanding,
    } = answer?;
    let id = published.id;
    let text = encode(&ServerFrame::Published(published))?;
    lock(&outstanding).insert(id);
    Some(Box::new(move |result| {
        lock(&outstanding).remove(&id);
        match result {
            Ok(()) => outbox.push_answer(Outbound::Frame(text)),
            Err(err) => {
                let error = ErrorFrame::new(Some(id), ErrorCode::Internal, err.to_string());
                if let Some(text) = encode(&ServerFrame::Error(error)) {
                    outbox.push_answer(Outbound::Frame(text));
                }
            }
        }
    }))
}

/// A direct message kept for a persistent client's copy must be in the store before the copy.
fn store_direct(state: &State, target: ClientKey, message: &Arc<StoredMessage>, d: &mut Delivery) {
    if matches!(message.key, MessageKey::Direct(_))
        && message.qos == Qos::AtLeastOnce
        && state.clients.get(&target).is_some_and(|c| c.persistent)
    {
        d.writes.push(Write::Message(message.clone()));
    }
}

impl Session {
    /// Handles a `publish` from connection `key` with the session locked by the caller.
    pub(super) fn publish(
        &self,
        state: &mut State,
        d: &mut Delivery<'_>,
        key: ClientKey,
        f: Publish,
    ) -> Result<(), ProtocolError> {
        let client = state.clients.get(&key).ok_or_else(|| not_connected(f.id))?;
        if is_reserved(&f.topic) || !client.permissions.may_publish(&f.topic) {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                f.id,
                "publishing to this topic is not allowed",
            ));
        }
        let from = client.id.clone();
        let answer = client.answer();
        if let (Some(id), None, Some(answer)) = (f.id, &f.ack, &answer) {
            admit(&answer.outstanding, id, self.settings().max_inflight)?;
        }
        let publisher = Publisher { key, answer };
        let on_commit = self.route(state, &from, Some(publisher), f, d)?;
        self.commit(std::mem::take(&mut d.writes), on_commit);
        Ok(())
    }

    /// Publishes through the admin API (`from` is `$admin`); returns the offset and message id
    /// once the store holds the message.
    pub async fn publish_as_admin(
        &self,
        topic: String,
        data: Payload,
        qos: Qos,
        retain: bool,
    ) -> Result<(u64, String), ProtocolError> {
        let publish = Publish {
            id: None,
            mid: None,
            topic,
            data,
            qos,
            retain,
            ack: None,
            notify_dead: false,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let offset = {
            let mut d = self.delivery();
            let mut state = self.lock();
            self.route(&mut state, &Arc::from(ADMIN_ID), None, publish, &mut d)?;
            let stored: OnCommit = Box::new(move |result| {
                let _ = tx.send(result.map_err(|err| err.to_string()));
            });
            self.commit(std::mem::take(&mut d.writes), Some(stored));
            state.last_offset
        };
        match rx.await {
            Ok(Ok(())) => Ok((offset, self.server_mid(offset))),
            Ok(Err(err)) => Err(ProtocolError::new(ErrorCode::Internal, None, err)),
            Err(_) => Err(ProtocolError::new(
                ErrorCode::Internal,
                None,
                "the store stopped",
            )),
        }
    }

    /// Routes a validated publish: offset, history, retained, fan-out. Returns the ack id of a
    /// publish_with_ack, and the `published` answer to send once the store has the message.
    fn route(
        &self,
        state: &mut State,
        from: &Arc<str>,
        publisher: Option<Publisher>,
        f: Publish,
        d: &mut Delivery<'_>,
    ) -> Result<Option<OnCommit>, ProtocolError> {
        self.check_size(&f.data, f.id)?;
        let answer_to = |publisher: Option<Publisher>| publisher.and_then(|p| p.answer);
        if let Some(mid) = &f.mid
            && let Some(offset) = state.dedup.seen(mid)
        {
            let on_commit = f.id.and_then(|id| {
                let published = Published {
                    id,
                    mid: mid.clone(),
                    offset,
                    duplicate: true,
                    queued: false,
                };
                confirm(answer_to(publisher), published)
            });
            return Ok(on_commit);
        }
        state.last_offset += 1;
        let offset = state.last_offset;
        let mid_given = f.mid.is_some();
        if let Some(mid) = &f.mid {
            state.dedup.record(mid, Some(offset));
        }
        let ts = now_ms();
        let mid = f.mid.unwrap_or_else(|| self.server_mid(offset));
        if f.retain {
            let retained = (!f.data.is_empty()).then(|| Retained {
                topic: f.topic.clone(),
                data: f.data.clone(),
                from: from.to_string(),
                ts,
                offset,
                mid: mid.clone(),
            });
            match &retained {
                Some(message) => state.retained.insert(f.topic.clone(), message.clone()),
                None => state.retained.remove(&f.topic),
            };
            d.writes.push(Write::Retained {
                topic: f.topic.clone(),
                message: retained,
            });
        }
        let message = Arc::new(StoredMessage {
            key: MessageKey::Stream(offset),
            topic: f.topic,
            data: f.data,
            from: from.clone(),
            ts,
            mid,
            qos: f.qos,
            notify_dead: f.notify_dead,
        });
        let history_size = self.settings().history_size as usize;
        state.history.push(message.clone(), history_size);
        d.writes.push(Write::Message(message.clone()));
        // The vector of the previous publish, emptied: growing a new one to the subscriber
        // count cost three allocator calls per publish.
        let mut targets = std::mem::take(&mut state.targets);
        targets.clear();
        state
            .index
            .for_each_match(&message.topic, |k| targets.push(*k));
        targets.sort_unstable();
        targets.dedup();
        SessionMetrics::add(&self.metrics.published, 1);
        // A QoS 0 publish that did not name a message id is delivered without one.
        let show_mid = f.qos != Qos::AtMostOnce || mid_given;
        let on_commit = match (f.ack, publisher, f.id) {
            (Some(ack), Some(publisher), Some(id)) => {
                let spec = AckSpec {
                    publisher: publisher.key,
                    id,
                    topic: Some(message.topic.clone()),
                    deadline: d.now + Duration::from_millis(ack.timeout_ms),
                };
                self.fan_out_with_ack(state, spec, &targets, &message, d);
                None
            }
            (_, publisher, id) => {
                if f.qos == Qos::AtMostOnce {
                    if let Some(text) = copy_text(&message, show_mid) {
                        for key in &targets {
                            if let Some(outbox) =
                                state.clients.get(key).and_then(|c| c.outbox.as_ref())
                            {
                                outbox.push_droppable(text.clone());
                            }
                        }
                    }
                } else {
                    targets.retain(|k| state.clients.contains_key(k));
                    let holders = targets.iter().filter_map(|k| state.clients.get(k));
                    let holders = holders.map(|c| c.id.clone());
                    let tracks =
                        state
                            .tracker
                            .start(&message, copy_text(&message, show_mid), holders);
                    for (&key, track) in targets.iter().zip(tracks) {
                        let copy = Copy::new(&message, Some(track));
                        state.give(key, copy, d);
                    }
                }
                id.and_then(|id| {
                    let published = Published {
                        id,
                        mid: message.mid.clone(),
                        offset: Some(offset),
                        duplicate: false,
                        queued: false,
                    };
                    confirm(answer_to(publisher), published)
                })
            }
        };
        if targets.capacity() <= KEPT_TARGETS {
            state.targets = targets;
        }
        self.backplane
            .publish(self.name(), &message_ref(&message, offset, show_mid));
        Ok(on_commit)
    }

    /// Creates an ack collection for the connected `targets`, answers `ack_expect` and gives
    /// each a copy that carries the ack id (withdrawn if the publisher cancels before it is
    /// written). Persistent clients that are away get a plain QoS 1 copy.
    fn fan_out_with_ack(
        &self,
        state: &mut State,
        spec: AckSpec,
        targets: &[ClientKey],
        message: &Arc<StoredMessage>,
        d: &mut Delivery<'_>,
    ) {
        let AckSpec {
            publisher,
            id,
            topic,
            deadline,
        } = spec;
        state.next_aid += 1;
        let aid = state.next_aid;
        let cancelled = Arc::new(AtomicBool::new(false));
        let mut expected = Vec::with_capacity(targets.len());
        let mut away = Vec::new();
        for key in targets {
            match state.clients.get(key) {
                Some(client) if client.outbox.is_some() => expected.push((client.id.clone(), *key)),
                Some(client) => away.push((client.id.clone(), *key)),
                None => {}
            }
        }
        let ids = expected.iter().map(|(id, _)| &**id);
        state.send_text(
            publisher,
            Some(Codec::encode_ack_expect(id, aid, ids).into()),
        );
        let collection =
            AckCollection::new(publisher, topic, &expected, cancelled.clone(), deadline);
        AckCollection::insert(state, aid, collection);
        let qos1 = message.qos == Qos::AtLeastOnce;
        let frame = copy_text(message, true);
        let mut tracks = qos1
            .then(|| {
                let holders = expected.iter().chain(&away).map(|(id, _)| id.clone());
                state.tracker.start(message, frame.clone(), holders)
            })
            .into_iter()
            .flatten();
        // Without its frame (it could not be encoded, which is logged) no copy can be written.
        let shared = frame.map(|frame| {
            Arc::new(AckShared {
                frame,
                aid,
                cancelled,
            })
        });
        for (_, key) in &expected {
            let track = tracks.next();
            let (Some(client), Some(shared)) = (state.clients.get_mut(key), &shared) else {
                continue;
            };
            client.pending_aids.insert(aid);
            if qos1 {
                store_direct(state, *key, message, d);
                let mut copy = Copy::new(message, track);
                copy.ack = Some(shared.clone());
                state.give(*key, copy, d);
            } else if let Some(outbox) = &client.outbox {
                outbox.push(Outbound::AckCopy {
                    shared: shared.clone(),
                    did: None,
                    dup: false,
                });
            }
        }
        if qos1 {
            for ((_, key), track) in away.iter().zip(tracks) {
                store_direct(state, *key, message, d);
                let copy = Copy::new(message, Some(track));
                state.give(*key, copy, d);
            }
        }
        if expected.is_empty() {
            AckCollection::finish(state, aid, sealbus::protocol::AckOutcome::Complete);
        }
    }

    pub(super) fn send_direct(
        self: &Arc<Self>,
        key: ClientKey,
        f: Send,
    ) -> Result<(), ProtocolError> {
        self.check_size(&f.data, f.id)?;
        let mut d = self.delivery();
        let mut state = self.lock();
        let sender = state.clients.get(&key).ok_or_else(|| not_connected(f.id))?;
        let from = sender.id.clone();
        let sender_answer = sender.answer();
        if let (Some(id), None, Some(answer)) = (f.id, &f.ack, &sender_answer) {
            admit(&answer.outstanding, id, self.settings().max_inflight)?;
        }
        let target = state.by_id.get(f.to.as_str()).copied();
        let online =
            target.is_some_and(|t| state.clients.get(&t).is_some_and(|c| c.outbox.is_some()));
        let queueable = f.qos == Qos::AtLeastOnce && f.ack.is_none();
        let Some(target) = target.filter(|_| online || queueable) else {
            return Err(ProtocolError::new(
                ErrorCode::NoSuchClient,
                f.id,
                format!("client `{}` is not connected", f.to),
            ));
        };
        if let Some(mid) = &f.mid {
            if let Some(offset) = state.dedup.seen(mid) {
                let on_commit = f.id.and_then(|id| {
                    let published = Published {
                        id,
                        mid: mid.clone(),
                        offset,
                        duplicate: true,
                        queued: false,
                    };
                    confirm(sender_answer.clone(), published)
                });
                self.commit(Vec::new(), on_commit);
                return Ok(());
            }
            state.dedup.record(mid, None);
        }
        state.next_direct += 1;
        let message = Arc::new(StoredMessage {
            key: MessageKey::Direct(state.next_direct),
            mid: f
                .mid
                .unwrap_or_else(|| format!("s-{}", crate::auth::random_token::<9>())),
            topic: format!("@{}", f.to),
            data: f.data,
            from,
            ts: now_ms(),
            qos: f.qos,
            notify_dead: false,
        });
        SessionMetrics::add(&self.metrics.published, 1);
        match (f.ack, f.id) {
            (Some(ack), Some(id)) => {
                let spec = AckSpec {
                    publisher: key,
                    id,
                    topic: None,
                    deadline: d.now + Duration::from_millis(ack.timeout_ms),
                };
                self.fan_out_with_ack(&mut state, spec, &[target], &message, &mut d);
                self.commit(std::mem::take(&mut d.writes), None);
            }
            (_, id) => {
                if f.qos == Qos::AtLeastOnce {
                    store_direct(&state, target, &message, &mut d);
                    let holder = Arc::<str>::from(f.to.as_str());
                    let track = state.tracker.start(&message, None, [holder]).next();
                    state.give(target, Copy::new(&message, track), &mut d);
                } else {
                    state.send_text(target, copy_text(&message, true));
                }
                let on_commit = id.and_then(|id| {
                    let published = Published {
                        id,
                        mid: message.mid.clone(),
                        offset: None,
                        duplicate: false,
                        queued: !online,
                    };
                    confirm(sender_answer, published)
                });
                self.commit(std::mem::take(&mut d.writes), on_commit);
            }
        }
        Ok(())
    }

    /// The message id the server gives a publish that came without one: unique per epoch.
    fn server_mid(&self, offset: u64) -> String {
        format!("{}-{offset}", self.epoch)
    }

    fn check_size(&self, data: &Payload, id: Option<u64>) -> Result<(), ProtocolError> {
        let max = self.settings().max_message_bytes as usize;
        let size = data.size();
        if size > max {
            return Err(ProtocolError::new(
                ErrorCode::MessageTooLarge,
                id,
                format!("payload of {size} bytes exceeds the limit of {max} bytes"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_id_is_reserved() {
        assert!(sealbus::protocol::validate_client_id(ADMIN_ID).is_err());
    }
}
