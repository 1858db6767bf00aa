//! The client half of [`Session`]: connecting (with client id takeover), leaving, persistent
//! clients that stay while away (`docs/PROTOCOL.md` §8.3), and restoring them from the store.

use std::collections::HashMap;
use std::sync::Arc;

use sealbus::protocol::{
    DeliveryState, DeliveryStatus, ErrorCode, ProtocolError, ServerFrame, Welcome,
};

use super::acks::AckCollection;
use super::delivery::{Copy, Delivery};
use super::now_ms;
use super::outbox::{Kill, Outbox};
use super::session::{ClientEntry, ClientInfo, ClientKey, Connected, Session, State};
use super::tracking::Status;
use crate::auth::{self, Permissions};
use crate::error::{Error, Result};
use crate::metrics::SessionMetrics;
use crate::store::{MessageKey, SessionData, StoredMessage, Write};

impl Session {
    /// Registers a connection and queues its `welcome`. A connection already holding the
    /// client id is closed with `replaced`. A persistent client (`persistent` with a client id)
    /// gets back the subscriptions and queued QoS 1 copies it left, which are written after
    /// `welcome`. `batch`: the client announced that it reads and sends messages of several
    /// frames (`hello.batch`); its `welcome` says the server does too.
    pub fn connect(
        &self,
        client_id: Option<String>,
        persistent: bool,
        permissions: Permissions,
        outbox: Outbox,
        batch: bool,
    ) -> Result<Connected> {
        if persistent && client_id.is_none() {
            return Err(Error::protocol(
                ErrorCode::InvalidClientId,
                None,
                "a persistent client needs a client id",
            ));
        }
        let settings = self.settings();
        let mut d = self.delivery();
        let mut state = self.lock();
        let client_id: Arc<str> = match client_id {
            Some(id) => id.into(),
            None => format!("c-{}", auth::random_token::<9>()).into(),
        };
        let previous = state.by_id.get(&client_id).copied();
        if previous.is_none() && state.clients.len() >= settings.max_clients as usize {
            return Err(Error::protocol(
                ErrorCode::TooManyClients,
                None,
                "the session has its maximum number of clients",
            ));
        }
        let mut kept = None;
        if let Some(old) = previous {
            if let Some(old_outbox) = state.clients.get(&old).and_then(|c| c.outbox.as_ref()) {
                tracing::info!(session = %self.name(), client = %client_id, "client id taken over");
                old_outbox.kill_switch().kill(Kill {
                    code: ErrorCode::Replaced,
                    message: "another connection took this client id".into(),
                    drain: false,
                });
            }
            if persistent && state.clients.get(&old).is_some_and(|c| c.persistent) {
                self.detach(&mut state, old, &mut d);
                kept = take_entry(&mut state, old);
            } else {
                self.remove_client(&mut state, old, &mut d);
            }
        }
        state.next_key += 1;
        let key = state.next_key;
        let session_present = kept.is_some();
        let mut entry = kept.unwrap_or_else(|| {
            ClientEntry::new(client_id.clone(), None, permissions.clone(), persistent)
        });
        entry.outbox = Some(outbox);
        entry.outstanding = Default::default();
        entry.permissions = permissions;
        entry.expires_at = None;
        for filter in &entry.filters {
            if let Err(err) = state.index.insert(filter, key) {
                tracing::warn!(filter = %filter, %err, "stored filter no longer valid");
            }
        }
        if persistent {
            d.writes.push(Write::Client(entry.stored()));
        }
        state.by_id.insert(client_id.clone(), key);
        state.clients.insert(key, entry);
        SessionMetrics::add(&self.metrics.connections, 1);
        let welcome = ServerFrame::Welcome(Welcome {
            v: sealbus::protocol::PROTOCOL_VERSION,
            session: self.name().to_owned(),
            client_id: client_id.to_string(),
            epoch: self.epoch.clone(),
            session_present,
            limits: settings.limits(),
            server: concat!("sealbus/", env!("CARGO_PKG_VERSION")).into(),
            batch,
        });
        state.send(key, &welcome);
        state.flush_queue(key, &mut d);
        if state
            .clients
            .get(&key)
            .is_some_and(|c| !c.copies.queued.is_empty())
        {
            state.backlogged.insert(key);
        }
        self.commit(d.writes, None);
        Ok(Connected {
            key,
            client_id,
            session_present,
        })
    }

    /// A connection ended (it closed or was closed). A persistent client stays, away; any
    /// other client is removed. Its pending ack responses become `disconnected`, and the
    /// collections it published are dropped.
    pub fn disconnect(&self, key: ClientKey) {
        let mut d = self.delivery();
        let mut state = self.lock();
        match state.clients.get(&key) {
            None => return,
            Some(client) if client.persistent => self.detach(&mut state, key, &mut d),
            Some(_) => {
                self.remove_client(&mut state, key, &mut d);
            }
        }
        self.commit(d.writes, None);
    }

    /// `bye` with `discard`: the client's persistent state ends with this connection.
    pub(super) fn discard_on_leave(&self, key: ClientKey) {
        let mut state = self.lock();
        if let Some(client) = state.clients.get_mut(&key)
            && client.persistent
        {
            client.persistent = false;
            let drop = Write::DropClient {
                client_id: client.id.to_string(),
            };
            self.commit(vec![drop], None);
        }
    }

    /// Marks a persistent client away: its copies in flight go back to its queue (to be
    /// written again on its next connection) and its state expires after the session expiry.
    fn detach(&self, state: &mut State, key: ClientKey, d: &mut Delivery<'_>) {
        let expiry = self.settings().session_expiry_secs.saturating_mul(1000);
        let Some(entry) = state.clients.get_mut(&key) else {
            return;
        };
        if entry.outbox.take().is_none() {
            return;
        }
        entry.expires_at = Some(now_ms().saturating_add(expiry));
        entry.copies.requeue_inflight();
        let pending: Vec<u64> = entry.pending_aids.drain().collect();
        d.writes.push(Write::Client(entry.stored()));
        for aid in pending {
            AckCollection::respond_disconnected(state, aid, key);
        }
        AckCollection::drop_publisher(state, key);
        state.backlogged.remove(&key);
        self.metrics
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Removes a client and everything it holds; its copies are abandoned.
    fn remove_client(
        &self,
        state: &mut State,
        key: ClientKey,
        d: &mut Delivery<'_>,
    ) -> Option<ClientEntry> {
        let mut entry = take_entry(state, key)?;
        if entry.outbox.is_some() {
            for aid in &entry.pending_aids {
                AckCollection::respond_disconnected(state, *aid, key);
            }
            AckCollection::drop_publisher(state, key);
            self.metrics
                .connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        for copy in entry.copies.drain() {
            state.tracker.abandon(copy.track());
        }
        if entry.persistent {
            d.writes.push(Write::DropClient {
                client_id: entry.id.to_string(),
            });
        }
        Some(entry)
    }

    /// Removes persistent clients that stayed away past the session expiry; their queued
    /// copies become dead letters.
    pub(super) fn expire_away(&self, state: &mut State, now_ms: u64, d: &mut Delivery<'_>) {
        let expired: Vec<ClientKey> = state
            .clients
            .iter()
            .filter(|(_, c)| c.outbox.is_none() && c.expires_at.is_some_and(|at| at <= now_ms))
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            let Some(mut entry) = take_entry(state, key) else {
                continue;
            };
            tracing::info!(session = %self.name(), client = %entry.id, "persistent client expired");
            d.writes.push(Write::DropClient {
                client_id: entry.id.to_string(),
            });
            for copy in entry.copies.drain() {
                state.dead_letter(&entry.id, false, copy, d);
            }
        }
    }

    /// Ends every connection of the session for `kill`.
    pub fn kill_all(&self, kill: Kill) {
        let state = self.lock();
        for outbox in state.clients.values().filter_map(|c| c.outbox.as_ref()) {
            outbox.kill_switch().kill(kill.clone());
        }
    }

    /// The session's clients (persistent ones while away too), by client id.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let state = self.lock();
        let mut clients: Vec<ClientInfo> = state
            .clients
            .values()
            .map(|client| ClientInfo {
                client_id: client.id.to_string(),
                connected: client.outbox.is_some(),
                persistent: client.persistent,
                subscriptions: client.filters.iter().cloned().collect(),
                queue_depth: client.outbox.as_ref().map_or(0, Outbox::depth),
                in_flight: client.copies.inflight.len(),
                queued: client.copies.queued.len(),
            })
            .collect();
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        clients
    }

    /// The delivery status of QoS 1 message `mid`, while the session tracks it.
    pub fn message_status(&self, mid: &str) -> Option<Status> {
        self.lock().tracker.status(mid)
    }

    /// `delivery_status`: a client may ask about the messages it published.
    pub(super) fn delivery_status(
        &self,
        key: ClientKey,
        f: DeliveryStatus,
    ) -> Result<(), ProtocolError> {
        let state = self.lock();
        let asker = state.clients.get(&key).map(|c| c.id.clone());
        let status = state
            .tracker
            .status(&f.mid)
            .filter(|status| asker.as_deref() == Some(status.from.as_str()))
            .ok_or_else(|| {
                ProtocolError::new(
                    ErrorCode::UnknownMessageId,
                    Some(f.id),
                    "no QoS 1 message of yours with this id is tracked",
                )
            })?;
        let frame = ServerFrame::DeliveryState(DeliveryState {
            id: f.id,
            mid: f.mid,
            topic: status.topic,
            copies: status.copies,
        });
        state.send(key, &frame);
        Ok(())
    }

    /// Rebuilds the state the store holds: stream position, history, dedup window, retained
    /// messages, persistent clients (away) with their copies.
    pub(super) fn restore(&self, state: &mut State, data: SessionData) {
        let settings = self.settings();
        let history_size = settings.history_size as usize;
        state.tracker.set_keep(history_size);
        let stored_last = data.stream.as_ref().map_or(0, |s| s.last_offset);
        let mut messages: HashMap<MessageKey, Arc<StoredMessage>> = HashMap::new();
        for message in data.history.iter().chain(&data.directs) {
            messages.insert(message.key, message.clone());
            match message.key {
                MessageKey::Stream(offset) => {
                    state.last_offset = state.last_offset.max(offset);
                    state.dedup.record(&message.mid, Some(offset));
                }
                MessageKey::Direct(seq) => state.next_direct = state.next_direct.max(seq),
            }
        }
        state.last_offset = state.last_offset.max(stored_last);
        state.history.restore(data.history, history_size);
        state.retained = data
            .retained
            .into_iter()
            .map(|r| (r.topic.clone(), r))
            .collect();
        let expiry = settings.session_expiry_secs.saturating_mul(1000);
        let mut holders: HashMap<MessageKey, Vec<Arc<str>>> = HashMap::new();
        for (stored, copies) in data.clients {
            state.next_key += 1;
            let key = state.next_key;
            let id: Arc<str> = stored.client_id.as_str().into();
            let mut entry = ClientEntry::new(id.clone(), None, Permissions::default(), true);
            entry.expires_at = Some(
                stored
                    .expires_at
                    .unwrap_or_else(|| now_ms().saturating_add(expiry)),
            );
            for filter in stored.filters {
                if state.index.insert(&filter, key).is_ok() {
                    entry.filters.insert(filter);
                }
            }
            for copy in copies {
                let Some(message) = messages.get(&copy.key) else {
                    tracing::warn!(client = %id, key = ?copy.key, "stored copy without its message");
                    continue;
                };
                holders.entry(copy.key).or_default().push(id.clone());
                let mut restored = Copy::new(message, None);
                restored.attempts = copy.attempts;
                entry.copies.queued.push_back(restored);
            }
            state.by_id.insert(id, key);
            state.clients.insert(key, entry);
        }
        for (key, clients) in holders {
            if let Some(message) = messages.get(&key) {
                state.tracker.start(message, None, clients);
            }
        }
        let State {
            clients, tracker, ..
        } = state;
        for entry in clients.values_mut() {
            for copy in &mut entry.copies.queued {
                copy.attach(tracker.track(copy.message().key, &entry.id));
            }
        }
    }
}

/// Takes a client out of the session's maps and index.
fn take_entry(state: &mut State, key: ClientKey) -> Option<ClientEntry> {
    let entry = state.clients.remove(&key)?;
    if state.by_id.get(&entry.id) == Some(&key) {
        state.by_id.remove(&entry.id);
    }
    for filter in &entry.filters {
        state.index.remove(filter, &key);
    }
    state.backlogged.remove(&key);
    Some(entry)
}
