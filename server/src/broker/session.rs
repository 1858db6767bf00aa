//! [`Session`]: one virtual broker, its clients and its lock.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use axum::extract::ws::Utf8Bytes;
use sealbus::protocol::{Auth, ClientFrame, Codec, ErrorCode, ProtocolError, ServerFrame, Welcome};
use sealbus::topic::SubscriptionIndex;
use sha2::{Digest as _, Sha256};

use super::Backplane;
use super::acks::AckCollection;
use super::dedup::Dedup;
use super::outbox::{Kill, Outbound, Outbox};
use crate::auth::{self, Permissions};
use crate::config::SessionSettings;
use crate::error::{Error, Result};
use crate::metrics::SessionMetrics;
use crate::store::{SessionRecord, Store};

/// Identifies one connection of a session (a client id may be reused by a later connection).
pub type ClientKey = u64;

/// What the connection should do after a frame was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// The client said `bye`: close normally.
    Close,
}

/// A registered connection.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The connection's key in the session.
    pub key: ClientKey,
    /// The client id it got.
    pub client_id: Arc<str>,
}

/// A connected client as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientInfo {
    /// Client id.
    pub client_id: String,
    /// Filters it holds.
    pub subscriptions: Vec<String>,
    /// Frames waiting in its outbound queue.
    pub queue_depth: usize,
}

/// One connected client inside the session state.
#[derive(Debug)]
pub(super) struct ClientEntry {
    pub(super) id: Arc<str>,
    pub(super) outbox: Outbox,
    pub(super) permissions: Permissions,
    pub(super) filters: BTreeSet<String>,
    pub(super) next_did: u64,
    pub(super) outstanding_dids: HashSet<u64>,
    /// Ack ids this client is expected to answer.
    pub(super) pending_aids: HashSet<u64>,
}

/// The mutable state of a session, behind its lock.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) clients: HashMap<ClientKey, ClientEntry>,
    pub(super) by_id: HashMap<Arc<str>, ClientKey>,
    pub(super) index: SubscriptionIndex<ClientKey>,
    pub(super) next_key: ClientKey,
    pub(super) last_offset: u64,
    pub(super) next_aid: u64,
    pub(super) acks: HashMap<u64, AckCollection>,
    /// Finished collections in the order they finished, so expiring them costs nothing per publish.
    pub(super) finished_acks: std::collections::VecDeque<(std::time::Instant, u64)>,
    pub(super) dedup: Dedup,
    /// Retained messages by topic.
    pub(super) retained: std::collections::BTreeMap<String, crate::store::Retained>,
}

impl State {
    /// Encodes `frame` and queues it for `key` as a frame that must not be dropped.
    pub(super) fn send(&self, key: ClientKey, frame: &ServerFrame) {
        if let Some(client) = self.clients.get(&key)
            && let Some(text) = encode(frame)
        {
            client.outbox.push(Outbound::Frame(text));
        }
    }

    /// Queues an error about request `id` for `key`.
    pub(super) fn send_error(&self, key: ClientKey, err: &ProtocolError) {
        self.send(key, &ServerFrame::Error(err.to_frame()));
    }
}

/// Encodes a server frame; encoding our own frames cannot fail short of a bug, which is logged.
pub(super) fn encode(frame: &ServerFrame) -> Option<Utf8Bytes> {
    match Codec::encode_server(frame) {
        Ok(text) => Some(Utf8Bytes::from(text)),
        Err(err) => {
            tracing::error!(error = %err, "could not encode a server frame");
            None
        }
    }
}

/// One virtual broker.
#[derive(Debug)]
pub struct Session {
    name: String,
    pub(super) epoch: String,
    record: RwLock<SessionRecord>,
    /// SHA-256 of the password last verified with Argon2, so that reconnect storms do not pay
    /// for Argon2 each time; cleared when the password changes.
    verified: Mutex<Option<[u8; 32]>>,
    pub(super) state: Mutex<State>,
    pub(super) metrics: Arc<SessionMetrics>,
    pub(super) store: Arc<dyn Store>,
    pub(super) backplane: Arc<dyn Backplane>,
}

impl Session {
    pub(super) fn new(
        record: SessionRecord,
        store: Arc<dyn Store>,
        backplane: Arc<dyn Backplane>,
    ) -> Self {
        Session {
            name: record.name.clone(),
            epoch: auth::random_token::<6>(),
            record: RwLock::new(record),
            verified: Mutex::new(None),
            state: Mutex::new(State::default()),
            metrics: Arc::new(SessionMetrics::default()),
            store,
            backplane,
        }
    }

    /// The session name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The epoch of the session's message stream.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The session's counters.
    pub fn metrics(&self) -> &Arc<SessionMetrics> {
        &self.metrics
    }

    /// The stored definition (with the password hash and token secret).
    pub fn record(&self) -> SessionRecord {
        self.record
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current settings.
    pub fn settings(&self) -> SessionSettings {
        self.record
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .settings
            .clone()
    }

    pub(super) fn set_record(&self, record: SessionRecord) {
        *self.verified.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.record.write().unwrap_or_else(|e| e.into_inner()) = record;
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks credentials (CPU-heavy for passwords: call from a blocking thread). Returns the
    /// client id the connection must use (from the token) and its permissions.
    pub fn check_credentials(
        &self,
        auth: &Auth,
        requested_id: Option<&str>,
        now_secs: u64,
    ) -> Result<(Option<String>, Permissions)> {
        let failed = || Error::protocol(ErrorCode::AuthFailed, None, "authentication failed");
        let record = self.record();
        match auth {
            Auth::Password(password) => {
                let hash = record.password_hash.as_deref().ok_or_else(failed)?;
                let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                let cached = *self.verified.lock().unwrap_or_else(|e| e.into_inner());
                let ok = cached.is_some_and(|known| {
                    subtle::ConstantTimeEq::ct_eq(&known[..], &digest[..]).into()
                }) || auth::verify_password(password, hash);
                if !ok {
                    return Err(failed());
                }
                *self.verified.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
                Ok((requested_id.map(str::to_owned), Permissions::default()))
            }
            Auth::Token(token) => {
                let claims = auth::verify_token(token, record.token_secret.as_bytes(), now_secs)?;
                if requested_id.is_some_and(|id| id != claims.sub)
                    || sealbus::protocol::validate_client_id(&claims.sub).is_err()
                {
                    return Err(failed());
                }
                Ok((Some(claims.sub.clone()), Permissions::from_claims(&claims)))
            }
        }
    }

    /// Registers a connection and queues its `welcome`. A connection already holding the
    /// client id is closed with `replaced`.
    pub fn connect(
        &self,
        client_id: Option<String>,
        permissions: Permissions,
        outbox: Outbox,
    ) -> Result<Connected> {
        let settings = self.settings();
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
        if let Some(old) = previous
            && let Some(entry) = self.remove_client(&mut state, old)
        {
            tracing::info!(session = %self.name, client = %client_id, "client id taken over");
            entry.outbox.kill_switch().kill(Kill {
                code: ErrorCode::Replaced,
                message: "another connection took this client id".into(),
                drain: false,
            });
        }
        state.next_key += 1;
        let key = state.next_key;
        state.by_id.insert(client_id.clone(), key);
        state.clients.insert(
            key,
            ClientEntry {
                id: client_id.clone(),
                outbox,
                permissions,
                filters: BTreeSet::new(),
                next_did: 0,
                outstanding_dids: HashSet::new(),
                pending_aids: HashSet::new(),
            },
        );
        crate::metrics::SessionMetrics::add(&self.metrics.connections, 1);
        let welcome = ServerFrame::Welcome(Welcome {
            v: sealbus::protocol::PROTOCOL_VERSION,
            session: self.name.clone(),
            client_id: client_id.to_string(),
            epoch: self.epoch.clone(),
            session_present: false,
            limits: settings.limits(),
            server: concat!("sealbus/", env!("CARGO_PKG_VERSION")).into(),
        });
        state.send(key, &welcome);
        Ok(Connected { key, client_id })
    }

    /// Removes a connection (it closed or was closed); its pending ack responses become
    /// `disconnected`, and the collections it published are dropped.
    pub fn disconnect(&self, key: ClientKey) {
        let mut state = self.lock();
        self.remove_client(&mut state, key);
    }

    fn remove_client(&self, state: &mut State, key: ClientKey) -> Option<ClientEntry> {
        let entry = state.clients.remove(&key)?;
        if state.by_id.get(&entry.id) == Some(&key) {
            state.by_id.remove(&entry.id);
        }
        for filter in &entry.filters {
            state.index.remove(filter, &key);
        }
        for aid in &entry.pending_aids {
            AckCollection::respond_disconnected(state, *aid, &entry.id);
        }
        state
            .acks
            .retain(|_, collection| collection.publisher != Some(key));
        self.metrics
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Some(entry)
    }

    /// Ends every connection of the session for `kill`.
    pub fn kill_all(&self, kill: Kill) {
        let state = self.lock();
        for client in state.clients.values() {
            client.outbox.kill_switch().kill(kill.clone());
        }
    }

    /// The connected clients, their subscriptions and queue depths.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let state = self.lock();
        let mut clients: Vec<ClientInfo> = state
            .clients
            .values()
            .map(|client| ClientInfo {
                client_id: client.id.to_string(),
                subscriptions: client.filters.iter().cloned().collect(),
                queue_depth: client.outbox.depth(),
            })
            .collect();
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        clients
    }

    /// Handles one frame from connection `key`: routes it and queues the answers (errors
    /// included) to the connection's outbox.
    pub fn handle(self: &Arc<Self>, key: ClientKey, frame: ClientFrame) -> Flow {
        let id = frame.request_id();
        let result = match frame {
            ClientFrame::Hello(_) => Err(ProtocolError::new(
                ErrorCode::AlreadyAuthenticated,
                None,
                "this connection is already authenticated",
            )),
            ClientFrame::Bye(_) => return Flow::Close,
            ClientFrame::Ping(ping) => {
                let state = self.lock();
                state.send(
                    key,
                    &ServerFrame::Pong(sealbus::protocol::Pong { id: ping.id }),
                );
                Ok(())
            }
            ClientFrame::Subscribe(f) => self.subscribe(key, f),
            ClientFrame::Unsubscribe(f) => self.unsubscribe(key, f),
            ClientFrame::Publish(f) => self.publish(key, f),
            ClientFrame::Send(f) => self.send_direct(key, f),
            ClientFrame::Ack(f) => self.ack(key, f),
            ClientFrame::AckStatus(f) => self.ack_status(key, f),
            ClientFrame::AckCancel(f) => self.ack_cancel(key, f),
            ClientFrame::DeliveryStatus(f) => Err(ProtocolError::new(
                ErrorCode::UnknownMessageId,
                Some(f.id),
                "the server holds no stored QoS 1 message with this id",
            )),
        };
        if let Err(mut err) = result {
            if err.id.is_none() {
                err.id = id;
            }
            self.lock().send_error(key, &err);
        }
        Flow::Continue
    }
}
