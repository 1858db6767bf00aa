//! Subscribe, unsubscribe, publish and send: the routing half of [`Session`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use sealbus::protocol::{
    AckExpect, Direct, ErrorCode, Message, Payload, Position, ProtocolError, Publish, Published,
    Qos, Recovery, Send, ServerFrame, Subscribe, Subscribed, Unsubscribe, Unsubscribed,
};
use sealbus::topic::{is_reserved, matches};

use super::acks::AckCollection;
use super::now_ms;
use super::outbox::Outbound;
use super::session::{ClientKey, Session, State, encode};
use crate::metrics::SessionMetrics;
use crate::store::{Retained, Write};

/// Client id shown as `from` for messages published through the admin API.
pub(crate) const ADMIN_ID: &str = "$admin";

/// Who asked for a publish_with_ack collection, and about what.
struct AckSpec {
    publisher: ClientKey,
    id: u64,
    topic: Option<String>,
    qos: Qos,
}

/// Answers a publish whose message id was seen within the dedup window: not delivered again.
fn answer_duplicate(
    state: &State,
    publisher: Option<ClientKey>,
    id: Option<u64>,
    mid: &str,
    offset: Option<u64>,
) {
    if let (Some(publisher), Some(id)) = (publisher, id) {
        let published = ServerFrame::Published(Published {
            id,
            mid: mid.to_owned(),
            offset,
            duplicate: true,
            queued: false,
        });
        state.send(publisher, &published);
    }
}

fn not_connected(id: Option<u64>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Disconnected, id, "connection is closing")
}

impl Session {
    pub(super) fn subscribe(&self, key: ClientKey, f: Subscribe) -> Result<(), ProtocolError> {
        let max = self.settings().max_subscriptions as usize;
        let mut state = self.lock();
        let client = state
            .clients
            .get_mut(&key)
            .ok_or_else(|| not_connected(Some(f.id)))?;
        if !client.permissions.may_subscribe(&f.filter) {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                Some(f.id),
                "the token does not allow subscribing to this filter",
            ));
        }
        if !client.filters.contains(&f.filter) {
            if client.filters.len() >= max {
                return Err(ProtocolError::new(
                    ErrorCode::TooManySubscriptions,
                    Some(f.id),
                    format!("at most {max} subscriptions per client"),
                ));
            }
            client.filters.insert(f.filter.clone());
            state
                .index
                .insert(&f.filter, key)
                .map_err(|err| ProtocolError::new(err.code(), Some(f.id), err.to_string()))?;
        }
        let subscribed = ServerFrame::Subscribed(Subscribed {
            id: f.id,
            filter: f.filter.clone(),
            // History replay comes with the history store; until then nothing is recovered.
            recovery: f.since.as_ref().map(|_| Recovery::NotRecovered),
            replayed: None,
            position: Position {
                epoch: self.epoch.clone(),
                offset: state.last_offset,
            },
        });
        state.send(key, &subscribed);
        let retained: Vec<Retained> = state
            .retained
            .values()
            .filter(|message| matches(&f.filter, &message.topic))
            .cloned()
            .collect();
        for retained in retained {
            let frame = ServerFrame::Message(Message {
                topic: retained.topic,
                data: retained.data,
                from: retained.from,
                ts: retained.ts,
                offset: Some(retained.offset),
                mid: Some(retained.mid),
                qos: Qos::AtMostOnce,
                did: None,
                aid: None,
                retained: true,
                replay: false,
                dup: false,
            });
            state.send(key, &frame);
        }
        Ok(())
    }

    pub(super) fn unsubscribe(&self, key: ClientKey, f: Unsubscribe) -> Result<(), ProtocolError> {
        let mut state = self.lock();
        let client = state
            .clients
            .get_mut(&key)
            .ok_or_else(|| not_connected(Some(f.id)))?;
        if client.filters.remove(&f.filter) {
            let id = client.id.clone();
            let filters: Vec<String> = client.filters.iter().cloned().collect();
            let pending: Vec<u64> = client.pending_aids.iter().copied().collect();
            state.index.remove(&f.filter, &key);
            // A subscriber that no longer subscribes to an awaited message's topic will not
            // answer it: report it as disconnected.
            for aid in pending {
                let topic = state.acks.get(&aid).and_then(|c| c.topic.clone());
                if let Some(topic) = topic
                    && !filters.iter().any(|filter| matches(filter, &topic))
                {
                    AckCollection::respond_disconnected(&mut state, aid, &id);
                    if let Some(client) = state.clients.get_mut(&key) {
                        client.pending_aids.remove(&aid);
                    }
                }
            }
        }
        let answer = ServerFrame::Unsubscribed(Unsubscribed {
            id: f.id,
            filter: f.filter,
        });
        state.send(key, &answer);
        Ok(())
    }

    pub(super) fn publish(
        self: &Arc<Self>,
        key: ClientKey,
        f: Publish,
    ) -> Result<(), ProtocolError> {
        let timeout = f.ack.map(|ack| ack.timeout_ms);
        let mut state = self.lock();
        let client = state.clients.get(&key).ok_or_else(|| not_connected(f.id))?;
        if is_reserved(&f.topic) || !client.permissions.may_publish(&f.topic) {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                f.id,
                "publishing to this topic is not allowed",
            ));
        }
        let from = client.id.clone();
        let aid = self.route(&mut state, &from, Some(key), f)?;
        drop(state);
        if let (Some(aid), Some(timeout)) = (aid, timeout) {
            self.start_ack_timer(aid, timeout);
        }
        Ok(())
    }

    /// Publishes through the admin API (`from` is `$admin`); returns the offset and message id.
    pub fn publish_as_admin(
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
        let mut state = self.lock();
        self.route(&mut state, &Arc::from(ADMIN_ID), None, publish)?;
        let offset = state.last_offset;
        Ok((offset, self.server_mid(offset)))
    }

    /// Delivers a message that another node published (handed over by a [`Backplane`]) to this
    /// node's matching subscribers, as QoS 0 copies; it is not handed back to the backplane.
    ///
    /// [`Backplane`]: super::Backplane
    pub fn deliver_remote(&self, message: &Message) {
        let state = self.lock();
        let mut targets = Vec::new();
        state
            .index
            .for_each_match(&message.topic, |k| targets.push(*k));
        targets.sort_unstable();
        targets.dedup();
        let copy = Message {
            did: None,
            aid: None,
            ..message.clone()
        };
        if let Some(text) = encode(&ServerFrame::Message(copy)) {
            for key in &targets {
                if let Some(client) = state.clients.get(key) {
                    client.outbox.push_droppable(text.clone());
                }
            }
        }
    }

    /// Routes a validated publish: offset, retained, fan-out, answers. Returns the ack id of a
    /// publish_with_ack.
    fn route(
        &self,
        state: &mut State,
        from: &Arc<str>,
        publisher: Option<ClientKey>,
        f: Publish,
    ) -> Result<Option<u64>, ProtocolError> {
        self.check_size(&f.data, f.id)?;
        if let Some(mid) = &f.mid
            && let Some(offset) = state.dedup.seen(mid)
        {
            answer_duplicate(state, publisher, f.id, mid, offset);
            return Ok(None);
        }
        state.last_offset += 1;
        let offset = state.last_offset;
        if let Some(mid) = &f.mid {
            state.dedup.record(mid, Some(offset));
        }
        let ts = now_ms();
        let mid_given = f.mid.is_some();
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
            self.store.write(
                self.name(),
                vec![Write::Retained {
                    topic: f.topic.clone(),
                    message: retained,
                }],
                None,
            );
        }
        let mut targets = Vec::new();
        state.index.for_each_match(&f.topic, |k| targets.push(*k));
        targets.sort_unstable();
        targets.dedup();
        let mut message = Message {
            topic: f.topic,
            data: f.data,
            from: from.to_string(),
            ts,
            offset: Some(offset),
            mid: (mid_given || f.qos == Qos::AtLeastOnce).then(|| mid.clone()),
            qos: f.qos,
            did: None,
            aid: None,
            retained: false,
            replay: false,
            dup: false,
        };
        SessionMetrics::add(&self.metrics.published, 1);
        let aid = match (f.ack, publisher, f.id) {
            (Some(_), Some(publisher), Some(id)) => {
                let topic = message.topic.clone();
                Some(self.fan_out_with_ack(
                    state,
                    AckSpec {
                        publisher,
                        id,
                        topic: Some(topic),
                        qos: f.qos,
                    },
                    &targets,
                    |aid, did| {
                        message.aid = Some(aid);
                        message.did = did;
                        ServerFrame::Message(message.clone())
                    },
                ))
            }
            _ => {
                if f.qos == Qos::AtMostOnce {
                    if let Some(text) = encode(&ServerFrame::Message(message.clone())) {
                        for key in &targets {
                            if let Some(client) = state.clients.get(key) {
                                client.outbox.push_droppable(text.clone());
                            }
                        }
                    }
                } else {
                    for key in &targets {
                        let Some(client) = state.clients.get_mut(key) else {
                            continue;
                        };
                        client.next_did += 1;
                        client.outstanding_dids.insert(client.next_did);
                        message.did = Some(client.next_did);
                        if let Some(text) = encode(&ServerFrame::Message(message.clone())) {
                            client.outbox.push(Outbound::Frame(text));
                        }
                    }
                    message.did = None;
                }
                if let (Some(id), Some(publisher)) = (f.id, publisher) {
                    let published = ServerFrame::Published(Published {
                        id,
                        mid,
                        offset: Some(offset),
                        duplicate: false,
                        queued: false,
                    });
                    state.send(publisher, &published);
                }
                None
            }
        };
        message.aid = None;
        message.did = None;
        self.backplane.publish(self.name(), &message);
        Ok(aid)
    }

    /// Creates an ack collection for `targets`, answers `ack_expect` and queues one
    /// withdrawable copy per target (built by `frame(aid, did)`).
    fn fan_out_with_ack(
        &self,
        state: &mut State,
        spec: AckSpec,
        targets: &[ClientKey],
        mut frame: impl FnMut(u64, Option<u64>) -> ServerFrame,
    ) -> u64 {
        let AckSpec {
            publisher,
            id,
            topic,
            qos,
        } = spec;
        state.next_aid += 1;
        let aid = state.next_aid;
        let cancelled = Arc::new(AtomicBool::new(false));
        let mut expected = Vec::with_capacity(targets.len());
        for key in targets {
            if let Some(client) = state.clients.get(key) {
                expected.push((client.id.clone(), *key));
            }
        }
        let expect = ServerFrame::AckExpect(AckExpect {
            id,
            aid,
            expected: expected.iter().map(|(id, _)| id.to_string()).collect(),
        });
        state.send(publisher, &expect);
        AckCollection::insert(state, aid, publisher, topic, &expected, cancelled.clone());
        for (_, key) in &expected {
            let Some(client) = state.clients.get_mut(key) else {
                continue;
            };
            client.pending_aids.insert(aid);
            let did = (qos == Qos::AtLeastOnce).then(|| {
                client.next_did += 1;
                client.outstanding_dids.insert(client.next_did);
                client.next_did
            });
            if let Some(text) = encode(&frame(aid, did)) {
                client.outbox.push(Outbound::Withdrawable {
                    text,
                    cancelled: cancelled.clone(),
                });
            }
        }
        if expected.is_empty() {
            AckCollection::finish(state, aid, sealbus::protocol::AckOutcome::Complete);
        }
        aid
    }

    pub(super) fn send_direct(
        self: &Arc<Self>,
        key: ClientKey,
        f: Send,
    ) -> Result<(), ProtocolError> {
        self.check_size(&f.data, f.id)?;
        let mut state = self.lock();
        let from = state
            .clients
            .get(&key)
            .map(|c| c.id.clone())
            .ok_or_else(|| not_connected(f.id))?;
        let Some(target) = state.by_id.get(f.to.as_str()).copied() else {
            return Err(ProtocolError::new(
                ErrorCode::NoSuchClient,
                f.id,
                format!("client `{}` is not connected", f.to),
            ));
        };
        if let Some(mid) = &f.mid {
            if let Some(offset) = state.dedup.seen(mid) {
                answer_duplicate(&state, Some(key), f.id, mid, offset);
                return Ok(());
            }
            state.dedup.record(mid, None);
        }
        let mid = f
            .mid
            .unwrap_or_else(|| format!("s-{}", crate::auth::random_token::<9>()));
        let mut direct = Direct {
            data: f.data,
            from: from.to_string(),
            ts: now_ms(),
            mid: Some(mid.clone()),
            qos: f.qos,
            did: None,
            aid: None,
            dup: false,
        };
        SessionMetrics::add(&self.metrics.published, 1);
        match (f.ack, f.id) {
            (Some(ack), Some(id)) => {
                let aid = self.fan_out_with_ack(
                    &mut state,
                    AckSpec {
                        publisher: key,
                        id,
                        topic: None,
                        qos: f.qos,
                    },
                    &[target],
                    |aid, did| {
                        direct.aid = Some(aid);
                        direct.did = did;
                        ServerFrame::Direct(direct.clone())
                    },
                );
                drop(state);
                self.start_ack_timer(aid, ack.timeout_ms);
            }
            _ => {
                if let Some(client) = state.clients.get_mut(&target) {
                    if f.qos == Qos::AtLeastOnce {
                        client.next_did += 1;
                        client.outstanding_dids.insert(client.next_did);
                        direct.did = Some(client.next_did);
                    }
                    if let Some(text) = encode(&ServerFrame::Direct(direct)) {
                        client.outbox.push(Outbound::Frame(text));
                    }
                }
                if let Some(id) = f.id {
                    let published = ServerFrame::Published(Published {
                        id,
                        mid,
                        offset: None,
                        duplicate: false,
                        queued: false,
                    });
                    state.send(key, &published);
                }
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

    fn start_ack_timer(self: &Arc<Self>, aid: u64, timeout_ms: u64) {
        let session = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
            if let Some(session) = session.upgrade() {
                session.ack_timeout(aid);
            }
        });
    }
}
