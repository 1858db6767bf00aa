//! [`Session`]: one virtual broker, its clients and its lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use sealbus::protocol::{Auth, ClientFrame, Codec, ErrorCode, ProtocolError, ServerFrame};
use sealbus::topic::SubscriptionIndex;
use sha2::{Digest as _, Sha256};

use super::acks::AckCollection;
use super::dedup::Dedup;
use super::delivery::{Copies, Delivery};
use super::history::History;
use super::outbox::{Outbound, Outbox};
use super::publish::{Answer, Outstanding};
use super::tracking::Tracker;
use super::{Backplane, IdMap, IdSet};
use crate::auth::{self, Permissions};
use crate::config::SessionSettings;
use crate::error::{Error, Result};
use crate::metrics::SessionMetrics;
use crate::store::{OnCommit, Retained, SessionRecord, Store, StoredClient, Write};

/// Identifies one connection of a session (a client id may be reused by a later connection; a
/// persistent client gets a new key each time it comes back).
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
    /// A persistent client found its earlier state (subscriptions and queued messages).
    pub session_present: bool,
}

/// A client as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientInfo {
    /// Client id.
    pub client_id: String,
    /// Whether it is connected now (a persistent client may be away).
    pub connected: bool,
    /// Whether its state outlives its connection.
    pub persistent: bool,
    /// Filters it holds.
    pub subscriptions: Vec<String>,
    /// Frames waiting in its outbound queue.
    pub queue_depth: usize,
    /// QoS 1 copies written and not yet acknowledged.
    pub in_flight: usize,
    /// QoS 1 copies waiting to be written.
    pub queued: usize,
}

/// One client inside the session state.
#[derive(Debug)]
pub(super) struct ClientEntry {
    pub(super) id: Arc<str>,
    /// The connection's queue; `None` while a persistent client is away.
    pub(super) outbox: Option<Outbox>,
    pub(super) permissions: Permissions,
    pub(super) filters: BTreeSet<String>,
    pub(super) next_did: u64,
    /// QoS 1 copies held for this client.
    pub(super) copies: Copies,
    /// Ack ids this client is expected to answer.
    pub(super) pending_aids: IdSet<u64>,
    /// Its subscriptions and copies outlive the connection (and are stored).
    pub(super) persistent: bool,
    /// While a persistent client is away: when its state expires (ms since the Unix epoch).
    pub(super) expires_at: Option<u64>,
    /// Ids of the connection's requests waiting for the store to commit.
    pub(super) outstanding: Outstanding,
}

impl ClientEntry {
    pub(super) fn new(
        id: Arc<str>,
        outbox: Option<Outbox>,
        permissions: Permissions,
        persistent: bool,
    ) -> Self {
        ClientEntry {
            id,
            outbox,
            permissions,
            filters: BTreeSet::new(),
            next_did: 0,
            copies: Copies::default(),
            pending_aids: IdSet::default(),
            persistent,
            expires_at: None,
            outstanding: Outstanding::default(),
        }
    }

    /// Where answers sent after a store commit go; `None` while away.
    pub(super) fn answer(&self) -> Option<Answer> {
        Some(Answer {
            outbox: self.outbox.clone()?,
            outstanding: self.outstanding.clone(),
        })
    }

    /// The stored form of a persistent client.
    pub(super) fn stored(&self) -> StoredClient {
        StoredClient {
            client_id: self.id.to_string(),
            filters: self.filters.iter().cloned().collect(),
            expires_at: self.expires_at,
        }
    }
}

/// The mutable state of a session, behind its lock.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) clients: IdMap<ClientKey, ClientEntry>,
    pub(super) by_id: HashMap<Arc<str>, ClientKey>,
    pub(super) index: SubscriptionIndex<ClientKey>,
    pub(super) next_key: ClientKey,
    pub(super) last_offset: u64,
    /// Sequence number of the last direct message kept for a QoS 1 copy.
    pub(super) next_direct: u64,
    pub(super) next_aid: u64,
    pub(super) acks: IdMap<u64, AckCollection>,
    /// Deadlines of the unfinished collections, earliest first.
    pub(super) ack_deadlines: BTreeSet<(Instant, u64)>,
    /// Finished collections in the order they finished, so expiring them costs nothing per publish.
    pub(super) finished_acks: VecDeque<(Instant, u64)>,
    pub(super) dedup: Dedup,
    /// Retained messages by topic.
    pub(super) retained: BTreeMap<String, Retained>,
    /// The last messages of the stream.
    pub(super) history: History,
    /// When in-flight QoS 1 copies are due for redelivery: (due, client, delivery id), in
    /// time order (entries of settled copies are skipped when they come up, and dropped
    /// earlier by `forget_settled_retries`).
    pub(super) retries: VecDeque<(Instant, ClientKey, u64)>,
    /// The longest the retry queue was since its capacity was last checked (once a second).
    pub(super) retries_peak: usize,
    /// Clients whose queued copies wait for room in their outbound queue.
    pub(super) backlogged: IdSet<ClientKey>,
    /// Delivery status of QoS 1 messages.
    pub(super) tracker: Tracker,
    /// When the once-a-second work (expiry, history trim) last ran.
    pub(super) housekept: Option<Instant>,
    /// The previous publish's list of targets, reused by the next (see `Session::route`).
    pub(super) targets: Vec<ClientKey>,
}

/// How often expiry of persistent clients and history trimming run.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

impl State {
    /// Encodes `frame` and queues it for `key` as an answer to one of its own requests (welcome,
    /// subscribed and the retained messages, relayed ack responses, errors, ...): it must not be
    /// dropped, and it may use the queue's answer headroom.
    pub(super) fn send(&self, key: ClientKey, frame: &ServerFrame) {
        if self.clients.get(&key).is_some_and(|c| c.outbox.is_some()) {
            self.send_text(key, encode(frame));
        }
    }

    /// [`send`](Self::send) of a frame already encoded (nothing if encoding failed).
    pub(super) fn send_text(&self, key: ClientKey, text: Option<Utf8Bytes>) {
        if let Some(text) = text {
            self.send_answer(key, Outbound::Frame(text));
        }
    }

    /// Queues an answer to `key`'s own requests (see
    /// [`Outbox::push_answer`](super::outbox::Outbox::push_answer)).
    pub(super) fn send_answer(&self, key: ClientKey, item: Outbound) {
        if let Some(outbox) = self.clients.get(&key).and_then(|c| c.outbox.as_ref()) {
            outbox.push_answer(item);
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
    /// A session with what `store` holds for it: its stream (or a new one), history, retained
    /// messages, persistent clients and their copies.
    pub(super) fn new(
        record: SessionRecord,
        store: Arc<dyn Store>,
        backplane: Arc<dyn Backplane>,
    ) -> Result<Self> {
        let data = store.load(&record.name)?;
        let mut state = State::default();
        let epoch = match &data.stream {
            Some(stream) => stream.epoch.clone(),
            None => {
                let epoch = auth::random_token::<6>();
                let start = Write::Stream {
                    epoch: epoch.clone(),
                };
                store.write(&record.name, vec![start], None);
                epoch
            }
        };
        let metrics = Arc::new(SessionMetrics::default());
        let session = Session {
            name: record.name.clone(),
            epoch,
            record: RwLock::new(record),
            verified: Mutex::new(None),
            state: Mutex::new(State::default()),
            metrics,
            store,
            backplane,
        };
        session.restore(&mut state, data);
        *session.lock() = state;
        Ok(session)
    }

    /// The session name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The epoch of the session's message stream.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The store's queue of writes not yet durable, if it has one (readers wait while it is
    /// full).
    pub fn store_backlog(&self) -> Option<&crate::store::Backlog> {
        self.store.backlog()
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
        self.lock()
            .tracker
            .set_keep(record.settings.history_size as usize);
        *self.record.write().unwrap_or_else(|e| e.into_inner()) = record;
    }

    /// The settings of QoS 1 delivery for an operation starting now.
    pub(super) fn delivery(&self) -> Delivery<'_> {
        let settings = self.settings();
        Delivery {
            now: Instant::now(),
            retry: Duration::from_millis(settings.retry_interval_ms),
            max_retries: settings.max_retries,
            queue_limit: settings.offline_queue_size.max(1) as usize,
            writes: Vec::new(),
            metrics: &self.metrics,
        }
    }

    /// Hands an operation's store writes to the store (in order, under the session's lock);
    /// `on_commit` runs once they are durable.
    pub(super) fn commit(&self, writes: Vec<Write>, on_commit: Option<OnCommit>) {
        if writes.is_empty() && on_commit.is_none() {
            return;
        }
        self.store.write(&self.name, writes, on_commit);
    }

    /// Whether another thread holds the session's lock right now.
    pub fn is_busy(&self) -> bool {
        matches!(
            self.state.try_lock(),
            Err(std::sync::TryLockError::WouldBlock)
        )
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

    /// Timed work (see [`Broker::tick`](super::Broker::tick)).
    pub fn tick(&self) {
        let settings = self.settings();
        let mut d = self.delivery();
        let mut state = self.lock();
        state.retry_due(&mut d);
        state.forget_settled_retries();
        AckCollection::time_out(&mut state, d.now);
        let backlogged: Vec<ClientKey> = state.backlogged.iter().copied().collect();
        for key in backlogged {
            state.flush_queue(key, &mut d);
            if state
                .clients
                .get(&key)
                .is_none_or(|c| c.copies.queued.is_empty() || c.outbox.is_none())
            {
                state.backlogged.remove(&key);
            }
        }
        if state
            .housekept
            .is_none_or(|at| d.now.duration_since(at) >= HOUSEKEEPING)
        {
            state.housekept = Some(d.now);
            state.shrink_retries();
            let now = super::now_ms();
            self.expire_away(&mut state, now, &mut d);
            let oldest = now.saturating_sub(settings.history_secs.saturating_mul(1000));
            let last_offset = state.last_offset;
            if let Some(offset) =
                state
                    .history
                    .trim(settings.history_size as usize, oldest, last_offset)
            {
                d.writes.push(Write::TrimHistory { offset });
            }
        }
        self.commit(d.writes, None);
    }

    /// Handles one frame from connection `key`: routes it and queues the answers (errors
    /// included) to the connection's outbox.
    pub fn handle(self: &Arc<Self>, key: ClientKey, frame: ClientFrame) -> Flow {
        self.handle_all(key, [frame])
    }

    /// Handles frames of connection `key` in order, as [`Session::handle`] would one by one, but
    /// takes the session's lock once for a run of `publish` and `ack` frames: under load a
    /// connection's reader finds several frames at once, and handing the lock between the
    /// workers once per frame was a sixth of the server's time.
    pub fn handle_all(
        self: &Arc<Self>,
        key: ClientKey,
        frames: impl IntoIterator<Item = ClientFrame>,
    ) -> Flow {
        let mut locked: Option<(Delivery<'_>, MutexGuard<'_, State>)> = None;
        let mut flow = Flow::Continue;
        for frame in frames {
            let id = frame.request_id();
            let result = match frame {
                ClientFrame::Publish(f) => {
                    let (d, state) = self.relock(&mut locked);
                    self.publish(state, d, key, f)
                }
                ClientFrame::Ack(f) => {
                    let (d, state) = self.relock(&mut locked);
                    self.ack(state, d, key, f)
                }
                other => {
                    locked = None;
                    match self.handle_other(key, other) {
                        Ok(Flow::Close) => {
                            flow = Flow::Close;
                            break;
                        }
                        result => result.map(drop),
                    }
                }
            };
            if let Err(mut err) = result {
                if err.id.is_none() {
                    err.id = id;
                }
                self.relock(&mut locked).1.send_error(key, &err);
            }
        }
        flow
    }

    /// The lock and delivery settings held across [`Session::handle_all`]'s run of frames,
    /// taken when the first frame needs them. `now` is read then, once for the run (at most
    /// `MAX_BATCH` frames of one connection, well under the 20 ms resolution of retry and
    /// deadline checks): reading the clock for every frame was 1.6% of the server's samples.
    fn relock<'a, 'b>(
        &'a self,
        locked: &'b mut Option<(Delivery<'a>, MutexGuard<'a, State>)>,
    ) -> (&'b mut Delivery<'a>, &'b mut State) {
        let (d, state) = locked.get_or_insert_with(|| {
            let state = self.lock();
            (self.delivery(), state)
        });
        (d, &mut **state)
    }

    /// Every frame but `publish` and `ack`; each takes the lock itself.
    fn handle_other(
        self: &Arc<Self>,
        key: ClientKey,
        frame: ClientFrame,
    ) -> std::result::Result<Flow, ProtocolError> {
        match frame {
            ClientFrame::Hello(_) => Err(ProtocolError::new(
                ErrorCode::AlreadyAuthenticated,
                None,
                "this connection is already authenticated",
            )),
            ClientFrame::Bye(bye) => {
                if bye.discard {
                    self.discard_on_leave(key);
                }
                Ok(Flow::Close)
            }
            ClientFrame::Ping(ping) => {
                let state = self.lock();
                state.send(
                    key,
                    &ServerFrame::Pong(sealbus::protocol::Pong { id: ping.id }),
                );
                Ok(Flow::Continue)
            }
            ClientFrame::Subscribe(f) => self.subscribe(key, f).map(|()| Flow::Continue),
            ClientFrame::Unsubscribe(f) => self.unsubscribe(key, f).map(|()| Flow::Continue),
            ClientFrame::Send(f) => self.send_direct(key, f).map(|()| Flow::Continue),
            ClientFrame::AckStatus(f) => self.ack_status(key, f).map(|()| Flow::Continue),
            ClientFrame::AckCancel(f) => self.ack_cancel(key, f).map(|()| Flow::Continue),
            ClientFrame::DeliveryStatus(f) => self.delivery_status(key, f).map(|()| Flow::Continue),
            // `handle_all` routes these itself, under the lock it holds; not reached from there.
            ClientFrame::Publish(_) | ClientFrame::Ack(_) => Ok(self.handle_all(key, [frame])),
        }
    }
}
