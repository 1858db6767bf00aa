//! Subscribe and unsubscribe, the routing half of [`Session`]: the subscription index, history
//! replay for `since` (recovery), retained messages, and delivery of other nodes' messages.

use std::collections::HashSet;

use axum::extract::ws::Utf8Bytes;
use sealbus::protocol::{
    ErrorCode, Message, Position, ProtocolError, Qos, Recovery, ServerFrame, Subscribe, Subscribed,
    Unsubscribe, Unsubscribed,
};
use sealbus::topic::matches;

use super::acks::AckCollection;
use super::history::Replay;
use super::outbox::Outbound;
use super::session::{ClientKey, Session, State, encode};
use crate::store::{MessageKey, StoredMessage, Write};

/// The error for a request from a connection that is already leaving the session.
pub(super) fn not_connected(id: Option<u64>) -> ProtocolError {
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
        let mut stored_client = None;
        if !client.filters.contains(&f.filter) {
            if client.filters.len() >= max {
                return Err(ProtocolError::new(
                    ErrorCode::TooManySubscriptions,
                    Some(f.id),
                    format!("at most {max} subscriptions per client"),
                ));
            }
            client.filters.insert(f.filter.clone());
            if client.persistent {
                stored_client = Some(client.stored());
            }
            state
                .index
                .insert(&f.filter, key)
                .map_err(|err| ProtocolError::new(err.code(), Some(f.id), err.to_string()))?;
        }
        let (recovery, replay) = self.recover(&state, key, &f);
        let position = Position {
            epoch: self.epoch.clone(),
            offset: state.last_offset,
        };
        let subscribed = ServerFrame::Subscribed(Subscribed {
            id: f.id,
            filter: f.filter.clone(),
            recovery,
            replayed: (recovery == Some(Recovery::Recovered)).then_some(replay.len() as u64),
            position,
        });
        state.send(key, &subscribed);
        if !replay.is_empty()
            && let Some(outbox) = state.clients.get(&key).and_then(|c| c.outbox.as_ref())
        {
            outbox.push(Outbound::Batch(replay));
        }
        if recovery != Some(Recovery::Recovered) {
            self.send_retained(&state, key, &f.filter);
        }
        if let Some(client) = stored_client {
            self.commit(vec![Write::Client(client)], None);
        }
        Ok(())
    }

    /// Whether a subscribe's `since` can be honoured, and the encoded replay (messages the
    /// client already holds a QoS 1 copy of are left out: that copy reaches it anyway).
    fn recover(
        &self,
        state: &State,
        key: ClientKey,
        f: &Subscribe,
    ) -> (Option<Recovery>, Vec<Utf8Bytes>) {
        let Some(since) = &f.since else {
            return (None, Vec::new());
        };
        if since.epoch != self.epoch {
            return (Some(Recovery::NotRecovered), Vec::new());
        }
        let messages = match state
            .history
            .replay(since.offset, state.last_offset, &f.filter)
        {
            Replay::Recovered(messages) => messages,
            Replay::NotRecovered => return (Some(Recovery::NotRecovered), Vec::new()),
        };
        let held: HashSet<MessageKey> = state
            .clients
            .get(&key)
            .map(|c| c.copies.keys().collect())
            .unwrap_or_default();
        let replay = messages
            .into_iter()
            .filter(|m| !held.contains(&m.key))
            .filter_map(|m| encode(&replay_frame(m)))
            .collect();
        (Some(Recovery::Recovered), replay)
    }

    /// Sends client `key` the retained messages matching `filter`.
    fn send_retained(&self, state: &State, key: ClientKey, filter: &str) {
        for retained in state
            .retained
            .values()
            .filter(|message| matches(filter, &message.topic))
        {
            let frame = ServerFrame::Message(Message {
                topic: retained.topic.clone(),
                data: retained.data.clone(),
                from: retained.from.clone(),
                ts: retained.ts,
                offset: Some(retained.offset),
                mid: Some(retained.mid.clone()),
                qos: Qos::AtMostOnce,
                did: None,
                aid: None,
                retained: true,
                replay: false,
                dup: false,
            });
            state.send(key, &frame);
        }
    }

    pub(super) fn unsubscribe(&self, key: ClientKey, f: Unsubscribe) -> Result<(), ProtocolError> {
        let mut state = self.lock();
        let client = state
            .clients
            .get_mut(&key)
            .ok_or_else(|| not_connected(Some(f.id)))?;
        if client.filters.remove(&f.filter) {
            if client.persistent {
                self.commit(vec![Write::Client(client.stored())], None);
            }
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
                    AckCollection::respond_disconnected(&mut state, aid, key);
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
                if let Some(outbox) = state.clients.get(key).and_then(|c| c.outbox.as_ref()) {
                    outbox.push_droppable(text.clone());
                }
            }
        }
    }
}

/// A history message as replayed: QoS 0, `replay: true` (it is not retried).
fn replay_frame(message: &StoredMessage) -> ServerFrame {
    let offset = match message.key {
        MessageKey::Stream(offset) => Some(offset),
        MessageKey::Direct(_) => None,
    };
    ServerFrame::Message(Message {
        topic: message.topic.clone(),
        data: message.data.clone(),
        from: message.from.to_string(),
        ts: message.ts,
        offset,
        mid: Some(message.mid.clone()),
        qos: Qos::AtMostOnce,
        did: None,
        aid: None,
        retained: false,
        replay: true,
        dup: false,
    })
}
