//! The sans-IO client engine: every decision of a Sealbus client, and no I/O at all.
//!
//! The [`Engine`] is a plain state machine in the style of quinn-proto and rustls. It owns no
//! socket, reads no clock, spawns nothing and compiles for `wasm32-unknown-unknown`. A driver
//! (the tokio transport, a browser event loop, a test) moves bytes and time in and out:
//!
//! * **commands** from the application: [`Engine::subscribe`], [`Engine::publish`],
//!   [`Engine::publish_with_ack`], [`Engine::cancel_ack`], [`Engine::complete_delivery`],
//!   [`Engine::close`], ... Each returns an [`OpId`] whose result arrives as an [`Event`];
//! * **inputs** from the connection: [`Engine::handle_connected`], [`Engine::handle_message`]
//!   (each WebSocket text message; it may carry several frames), [`Engine::handle_disconnected`]
//!   and [`Engine::handle_timeout`], each with the current [`Millis`];
//! * **outputs**: [`Engine::poll_transmit`] (text messages to send, in order),
//!   [`Engine::poll_connection`] (open or close the WebSocket), [`Engine::poll_event`] (for the
//!   application) and [`Engine::poll_timeout`] (when to call `handle_timeout` next).
//!
//! A driver loop: after every input or command, send every frame from `poll_transmit`, then act
//! on every [`ConnAction`], hand out every event, and arm a timer for `poll_timeout`.
//!
//! ```
//! use sealbus::engine::{ConnAction, Engine, EngineConfig, Millis};
//! use sealbus::protocol::Auth;
//!
//! let mut engine = Engine::new(EngineConfig::new("demo", Auth::Password("pw".into())), 1);
//! assert_eq!(engine.poll_connection(), Some(ConnAction::Connect));
//! engine.handle_connected(Millis(0));
//! let hello = engine.poll_transmit().unwrap();
//! assert!(hello.starts_with(r#"{"type":"hello""#));
//! ```

/// Largest message [`Engine::poll_transmit`] builds from several queued frames: a burst of acks
/// or publishes travels in a few messages instead of one per frame, while a frame queued behind
/// them never waits for a huge write.
pub const JOINED_BYTES: usize = 16 * 1024;

mod acks;
mod commands;
mod incoming;
mod payload;
mod reconnect;
mod subscriptions;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::Error;
use crate::crypto::Keyring;
use crate::protocol::{Auth, ClientFrame, Codec, ErrorCode, Limits};

pub use commands::PublishOptions;
pub use payload::{KIND_BYTES, KIND_JSON};
pub use reconnect::ReconnectPolicy;
pub use types::{
    AckFinish, AckReply, AckSnapshot, ConnAction, ConnectionState, Data, DeliveryReport,
    DeliveryToken, Disconnect, Event, Message, Millis, OpId, Outcome,
};

use acks::{Collections, Deliveries};
use reconnect::Rng;
use subscriptions::Subscriptions;

/// Everything the engine needs to know before it starts.
///
/// Its `Debug` output hides the password or token.
#[derive(Clone)]
pub struct EngineConfig {
    /// Session name.
    pub session: String,
    /// Credentials.
    pub auth: Auth,
    /// Requested client id; the server assigns one when `None`.
    pub client_id: Option<String>,
    /// Ask the server to keep subscriptions and QoS 1 messages while the client is away.
    pub persistent: bool,
    /// Keyring: when set, publishes are sealed with its primary key (unless a publish asks for
    /// plain data) and sealed messages are opened with it.
    pub keyring: Option<Keyring>,
    /// Reconnect policy.
    pub reconnect: ReconnectPolicy,
    /// Send a `ping` after this long without sending; `None`: the server's `keepalive_ms`.
    pub keepalive_ms: Option<u64>,
    /// How long to wait for any frame after a `ping`; `None`: the keep-alive interval.
    pub keepalive_timeout_ms: Option<u64>,
    /// Publishes kept while disconnected; one more fails with `offline_buffer_full`.
    pub offline_buffer: usize,
    /// How long a request (subscribe, QoS 1 publish, hello, ...) may wait for its answer.
    pub request_timeout_ms: u64,
}

impl EngineConfig {
    /// A configuration with default settings for `session` and `auth`.
    pub fn new(session: impl Into<String>, auth: Auth) -> EngineConfig {
        EngineConfig {
            session: session.into(),
            auth,
            client_id: None,
            persistent: false,
            keyring: None,
            reconnect: ReconnectPolicy::default(),
            keepalive_ms: None,
            keepalive_timeout_ms: None,
            offline_buffer: 1_000,
            request_timeout_ms: 10_000,
        }
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match self.auth {
            Auth::Password(_) => "password (hidden)",
            Auth::Token(_) => "token (hidden)",
        };
        f.debug_struct("EngineConfig")
            .field("session", &self.session)
            .field("auth", &auth)
            .field("client_id", &self.client_id)
            .field("persistent", &self.persistent)
            .field("keyring", &self.keyring)
            .field("reconnect", &self.reconnect)
            .field("keepalive_ms", &self.keepalive_ms)
            .field("keepalive_timeout_ms", &self.keepalive_timeout_ms)
            .field("offline_buffer", &self.offline_buffer)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// `ConnAction::Connect` was issued; waiting for `handle_connected`.
    Connecting { attempt: u32 },
    /// `hello` sent; waiting for `welcome` until `deadline`.
    Handshaking { attempt: u32, deadline: Millis },
    /// Authenticated.
    Connected,
    /// Waiting to reconnect.
    Backoff { attempt: u32, until: Millis },
    /// Closed for good.
    Closed,
}

/// What a request in flight is waiting for.
#[derive(Debug, Clone)]
enum Request {
    Subscribe { filter: String },
    Unsubscribe { op: Option<OpId> },
    Publish { op: OpId },
    DeliveryStatus { op: OpId },
}

/// A publish that waits for an answer (QoS 1 or publish_with_ack) or for a connection.
#[derive(Debug, Clone)]
struct Outgoing {
    frame: ClientFrame,
    /// Whether the server answers it (QoS 1 or ack); QoS 0 entries only wait for a connection.
    answered: bool,
    /// Whether it is a publish_with_ack.
    with_ack: bool,
    /// Request id of the copy sent on the current connection; `None` while unsent.
    request: Option<u64>,
}

/// Most filters remembered as ended by this engine (see `Engine::ended_filters`).
const ENDED_FILTERS_KEPT: usize = 256;

/// Most copies kept for a subscription not registered yet (see `Engine::parked`).
const PARKED_MAX: usize = 1024;

/// Most payload bytes kept for a subscription not registered yet (as `Payload::size` counts).
const PARKED_BYTES: usize = 16 * 1024 * 1024;

/// The Sealbus client state machine. See the [module documentation](self).
///
/// Its `Debug` output shows the connection and counts, never queued frames (the `hello` holds
/// the credentials).
pub struct Engine {
    config: EngineConfig,
    rng: Rng,
    mid_prefix: String,
    next_op: u64,
    next_request: u64,
    next_mid: u64,
    conn: Conn,
    state: ConnectionState,
    ever_connected: bool,
    /// A fatal error announced by the server; the connection's end closes the client with it.
    fatal: Option<Error>,
    limits: Limits,
    client_id: Option<String>,
    epoch: Option<String>,
    last_sent: Millis,
    ping_deadline: Option<Millis>,
    transmits: VecDeque<String>,
    /// The server reads several frames per message (`welcome.batch` of this connection).
    server_joins: bool,
    actions: VecDeque<ConnAction>,
    events: VecDeque<Event>,
    requests: HashMap<u64, (Request, Millis)>,
    subs: Subscriptions,
    directs: Vec<OpId>,
    /// Filters unsubscribed while away, for a persistent client's next connection.
    pending_unsubs: Vec<String>,
    /// Filters whose server subscription this engine ended, the most recent
    /// [`ENDED_FILTERS_KEPT`]: a copy on its way when one ended finds no handler and is acked.
    /// Any other copy without a handler belongs to a persistent client's subscription that the
    /// application has not registered again yet (a new process gets its queued messages right
    /// after `welcome`, before it can subscribe): it is kept in `parked`, unacknowledged.
    ended_filters: VecDeque<String>,
    /// Copies that found no handler and no ended filter, waiting for a matching subscription
    /// to be confirmed (see `Engine::park`); dropped with the connection.
    parked: VecDeque<incoming::Incoming>,
    outgoing: BTreeMap<OpId, Outgoing>,
    /// Some publish in `outgoing` may be unsent (false: every one has its request in flight).
    maybe_unsent: bool,
    collections: Collections,
    deliveries: Deliveries,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("conn", &self.conn)
            .field("state", &self.state)
            .field("client_id", &self.client_id)
            .field("epoch", &self.epoch)
            .field("queued_frames", &self.transmits.len())
            .field("requests", &self.requests.len())
            .field("outgoing", &self.outgoing.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A new engine; it asks to connect at once ([`Engine::poll_connection`]).
    ///
    /// `seed` seeds the generator used for reconnect jitter and message ids: give each client a
    /// different one (for example from the operating system's random source).
    pub fn new(config: EngineConfig, seed: u64) -> Engine {
        let mut rng = Rng::new(seed);
        let mid_prefix = format!("{:016x}", rng.next_u64());
        let mut engine = Engine {
            config,
            rng,
            mid_prefix,
            next_op: 0,
            next_request: 0,
            next_mid: 0,
            conn: Conn::Connecting { attempt: 0 },
            state: ConnectionState::Connecting,
            ever_connected: false,
            fatal: None,
            limits: Limits::default(),
            client_id: None,
            epoch: None,
            last_sent: Millis(0),
            ping_deadline: None,
            transmits: VecDeque::new(),
            server_joins: false,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            requests: HashMap::new(),
            subs: Subscriptions::default(),
            directs: Vec::new(),
            pending_unsubs: Vec::new(),
            ended_filters: VecDeque::new(),
            parked: VecDeque::new(),
            outgoing: BTreeMap::new(),
            maybe_unsent: false,
            collections: Collections::default(),
            deliveries: Deliveries::default(),
        };
        engine.actions.push_back(ConnAction::Connect);
        engine
            .events
            .push_back(Event::State(ConnectionState::Connecting));
        engine
    }

    /// The next WebSocket text message to send, in order: one frame, or, once the server said
    /// it reads batches (`welcome.batch`), the frames queued so far joined by
    /// [`FRAME_SEPARATOR`](crate::protocol::FRAME_SEPARATOR) up to [`JOINED_BYTES`] (never
    /// more than the server's frame limit).
    pub fn poll_transmit(&mut self) -> Option<String> {
        let mut text = self.transmits.pop_front()?;
        if self.server_joins {
            let limit = JOINED_BYTES.min(self.limits.max_frame_bytes as usize);
            while let Some(next) = self.transmits.front() {
                if !crate::protocol::join_frame(&mut text, next, limit) {
                    break;
                }
                self.transmits.pop_front();
            }
        }
        Some(text)
    }

    /// The next thing to do with the connection. Send every pending frame first.
    pub fn poll_connection(&mut self) -> Option<ConnAction> {
        self.actions.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Engine::handle_timeout`] should be called next, if anything waits on time.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        let mut consider = |t: Millis| next = Some(next.map_or(t, |n| n.min(t)));
        match self.conn {
            Conn::Handshaking { deadline, .. } => consider(deadline),
            Conn::Backoff { until, .. } => consider(until),
            Conn::Connected => match self.ping_deadline {
                Some(deadline) => consider(deadline),
                None => consider(self.last_sent.plus(self.keepalive_ms())),
            },
            Conn::Connecting { .. } | Conn::Closed => {}
        }
        if let Some(t) = self.requests.values().map(|(_, t)| *t).min() {
            consider(t);
        }
        if let Some(t) = self.collections.earliest_deadline() {
            consider(t);
        }
        next
    }

    /// The connection state as last announced.
    pub fn state(&self) -> &ConnectionState {
        &self.state
    }

    /// The client id the server confirmed in `welcome` (or the requested one before that).
    pub fn client_id(&self) -> Option<&str> {
        self.client_id
            .as_deref()
            .or(self.config.client_id.as_deref())
    }

    /// The epoch of the session's message stream, from the last `welcome`.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The session's limits (from the last `welcome`; defaults before the first one).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the last resubscribe of `filter` recovered every missed message (`None` for a
    /// filter that is not subscribed).
    pub fn is_recovered(&self, filter: &str) -> Option<bool> {
        self.subs.get(filter).map(|sub| sub.recovered)
    }

    /// The handler registrations of `filter` (confirmed and waiting), for example to release
    /// their closures before [`Engine::unsubscribe_filter`].
    pub fn handlers(&self, filter: &str) -> Vec<OpId> {
        self.subs
            .get(filter)
            .map(|sub| sub.handlers.iter().chain(&sub.waiting).copied().collect())
            .unwrap_or_default()
    }

    /// The state of a publish_with_ack that is still collecting (finished ones were handed out
    /// with their last [`Event::AckUpdated`]).
    pub fn ack_snapshot(&self, op: OpId) -> Option<AckSnapshot> {
        self.collections.get(op).map(|c| c.snapshot.clone())
    }

    /// The transport is open: the engine sends `hello`.
    pub fn handle_connected(&mut self, now: Millis) {
        let Conn::Connecting { attempt } = self.conn else {
            tracing::debug!(conn = ?self.conn, "handle_connected ignored");
            return;
        };
        self.conn = Conn::Handshaking {
            attempt,
            deadline: now.plus(self.config.request_timeout_ms),
        };
        let hello = crate::protocol::Hello {
            v: crate::protocol::PROTOCOL_VERSION,
            session: self.config.session.clone(),
            auth: self.config.auth.clone(),
            client_id: self.config.client_id.clone(),
            persistent: self.config.persistent,
            batch: true,
        };
        self.send(ClientFrame::Hello(hello), now);
    }

    /// The transport ended (or could not be opened). Ignored when the engine already counts the
    /// connection as gone.
    pub fn handle_disconnected(&mut self, disconnect: Disconnect, now: Millis) {
        if matches!(self.conn, Conn::Closed | Conn::Backoff { .. }) {
            return;
        }
        let close_error = disconnect
            .close_code
            .and_then(ErrorCode::from_close_code)
            .map(|code| Error::Server {
                code,
                message: disconnect.reason.clone(),
            });
        let error = self
            .fatal
            .take()
            .or(close_error)
            .unwrap_or_else(|| Error::Disconnected(disconnect.reason.clone()));
        self.connection_lost(error, now);
    }

    /// Time has passed: keep-alive, reconnect backoff, request and ack timeouts.
    pub fn handle_timeout(&mut self, now: Millis) {
        match self.conn {
            Conn::Backoff { attempt, until } if until <= now => {
                self.conn = Conn::Connecting { attempt };
                self.actions.push_back(ConnAction::Connect);
            }
            Conn::Handshaking { deadline, .. } if deadline <= now => {
                self.drop_connection(Error::Timeout, now);
            }
            Conn::Connected => match self.ping_deadline {
                Some(deadline) if deadline <= now => {
                    self.drop_connection(Error::KeepaliveTimeout, now);
                }
                None if self.last_sent.plus(self.keepalive_ms()) <= now => {
                    self.send(ClientFrame::Ping(crate::protocol::Ping { id: None }), now);
                    let timeout = self
                        .config
                        .keepalive_timeout_ms
                        .unwrap_or_else(|| self.keepalive_ms());
                    self.ping_deadline = Some(now.plus(timeout));
                }
                _ => {}
            },
            _ => {}
        }
        self.expire_requests(now);
        if self.conn == Conn::Connected {
            self.pump(now);
        }
        for op in self.collections.expired(now) {
            self.outgoing.remove(&op);
            self.finish_ack(op, AckFinish::Timeout);
        }
    }

    /// Closes the client: sends `bye` (with `discard` for a persistent client that wants its
    /// stored state dropped), asks to close the socket and fails everything outstanding with
    /// [`Error::Closed`]. Idempotent.
    pub fn close(&mut self, discard: bool, now: Millis) {
        match self.conn {
            Conn::Closed => return,
            Conn::Connected => {
                self.send(ClientFrame::Bye(crate::protocol::Bye { discard }), now);
                self.close_socket(1000, "client closed");
            }
            Conn::Connecting { .. } | Conn::Handshaking { .. } => {
                self.close_socket(1000, "client closed");
            }
            Conn::Backoff { .. } => {}
        }
        self.shut_down(None);
    }

    fn keepalive_ms(&self) -> u64 {
        self.config
            .keepalive_ms
            .unwrap_or(self.limits.keepalive_ms)
            .max(1)
    }

    /// Encodes and queues `frame`.
    fn send(&mut self, frame: ClientFrame, now: Millis) {
        match Codec::encode_client(&frame) {
            Ok(text) => {
                self.transmits.push_back(text);
                self.last_sent = now;
            }
            Err(err) => self.events.push_back(Event::Error(err.into())),
        }
    }

    fn next_op(&mut self) -> OpId {
        self.next_op += 1;
        OpId(self.next_op)
    }

    /// Queues `request` with a fresh request id and a deadline; returns the id.
    fn start_request(&mut self, request: Request, now: Millis) -> u64 {
        self.next_request += 1;
        let deadline = now.plus(self.config.request_timeout_ms);
        self.requests.insert(self.next_request, (request, deadline));
        self.next_request
    }

    fn set_state(&mut self, state: ConnectionState) {
        self.state = state.clone();
        self.events.push_back(Event::State(state));
    }

    fn complete(&mut self, op: OpId, result: Result<Outcome, Error>) {
        self.events.push_back(Event::Completed { op, result });
    }

    fn finish_ack(&mut self, op: OpId, finish: AckFinish) {
        if let Some(snapshot) = self.collections.finish(op, finish) {
            self.events.push_back(Event::AckUpdated { op, snapshot });
        }
    }

    fn ack_updated(&mut self, op: OpId) {
        if let Some(collection) = self.collections.get(op) {
            let snapshot = collection.snapshot.clone();
            self.events.push_back(Event::AckUpdated { op, snapshot });
        }
    }

    fn close_socket(&mut self, code: u16, reason: &str) {
        self.actions.push_back(ConnAction::Close {
            code,
            reason: reason.to_owned(),
        });
    }

    /// The engine itself gives up the current connection (keep-alive or handshake timeout).
    fn drop_connection(&mut self, error: Error, now: Millis) {
        let code = error.code().close_code();
        self.close_socket(code, &error.to_string());
        self.connection_lost(error, now);
    }

    /// The connection is gone: settle what depended on it, then reconnect or close.
    fn connection_lost(&mut self, error: Error, now: Millis) {
        let attempt = match self.conn {
            Conn::Connecting { attempt } | Conn::Handshaking { attempt, .. } => attempt,
            Conn::Connected => 0,
            Conn::Backoff { .. } | Conn::Closed => return,
        };
        tracing::debug!(%error, attempt, "connection lost");
        // Frames not yet taken by the driver were meant for the dead connection (a stale `ack`,
        // a request whose answer can no longer come); none may precede the next `hello`.
        // QoS 1 publishes stay in `outgoing` and are sent again after the reconnect.
        self.transmits.clear();
        self.server_joins = false;
        self.ping_deadline = None;
        self.deliveries.clear();
        self.parked.clear();
        for (_, (request, _)) in std::mem::take(&mut self.requests) {
            // Subscriptions are resent after the reconnect and QoS 1 publishes stay in
            // `outgoing`; an unsubscribe is done: the server drops a non-persistent client's
            // subscriptions with its connection.
            match request {
                Request::Unsubscribe { op: Some(op) } => {
                    self.complete(op, Ok(Outcome::Unsubscribed));
                }
                // A question about the present: asked again by the application if it wants.
                Request::DeliveryStatus { op } => {
                    self.complete(op, Err(Error::Disconnected(error.to_string())));
                }
                _ => {}
            }
        }
        // Publishes sent on this connection: QoS 1 ones are resent (same mid) after the
        // reconnect; a publish_with_ack's collection is dropped by the server with the
        // publisher's connection, so its handle finishes with the responses that arrived.
        let sent: Vec<OpId> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.request.is_some())
            .map(|(op, _)| *op)
            .collect();
        for op in sent {
            let with_ack = self.outgoing.get(&op).is_some_and(|o| o.with_ack);
            if with_ack {
                self.outgoing.remove(&op);
                self.finish_ack(op, AckFinish::Disconnected);
            } else if let Some(o) = self.outgoing.get_mut(&op) {
                o.request = None;
                self.maybe_unsent = true;
            }
        }
        for op in self.collections.ops() {
            if self.collections.get(op).is_some_and(|c| c.aid.is_some()) {
                self.finish_ack(op, AckFinish::Disconnected);
            }
        }
        self.set_state(ConnectionState::Disconnected {
            reason: error.to_string(),
        });
        if error.is_fatal() {
            self.shut_down(Some(error));
            return;
        }
        if !self.ever_connected && !self.config.reconnect.retry_initial_connect {
            self.shut_down(Some(error));
            return;
        }
        let attempt = attempt + 1;
        if !self.config.reconnect.allows(attempt) {
            self.shut_down(Some(error));
            return;
        }
        let delay = self.config.reconnect.delay(attempt, &mut self.rng);
        self.conn = Conn::Backoff {
            attempt,
            until: now.plus(delay),
        };
        self.set_state(ConnectionState::Reconnecting { attempt });
    }

    /// Closed for good: fail everything outstanding.
    fn shut_down(&mut self, error: Option<Error>) {
        self.conn = Conn::Closed;
        self.requests.clear();
        self.deliveries.clear();
        self.parked.clear();
        let fail = error.clone().unwrap_or(Error::Closed);
        let subs: Vec<String> = self.subs.filters().map(|(f, _)| f.clone()).collect();
        for filter in subs {
            if let Some(sub) = self.subs.remove_filter(&filter) {
                for op in sub.waiting {
                    self.complete(op, Err(fail.clone()));
                }
            }
        }
        for (op, outgoing) in std::mem::take(&mut self.outgoing) {
            if outgoing.with_ack {
                self.finish_ack(op, AckFinish::Failed(fail.clone()));
            } else if outgoing.answered {
                self.complete(op, Err(fail.clone()));
            }
        }
        for op in self.collections.ops() {
            self.finish_ack(op, AckFinish::Failed(fail.clone()));
        }
        self.set_state(ConnectionState::Closed { error });
    }
}
