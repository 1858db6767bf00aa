//! Routing state with no socket IO: sessions (virtual brokers), their clients, subscription
//! indexes, retained messages and publish_with_ack collections.
//!
//! Each [`Session`] sits behind its own lock; nothing crosses sessions. Connection tasks (the
//! WebSocket handler, in-process participants) register a client with an [`Outbox`] and hand
//! every decoded frame to [`Session::handle`]; answers and deliveries are pushed to the outboxes.

mod acks;
mod by_did;
mod clients;
mod dedup;
mod delivery;
mod history;
mod outbox;
mod publish;
mod routing;
mod session;
#[cfg(test)]
mod tests;
mod tracking;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

pub use delivery::DEAD_LETTER_PREFIX;
pub use outbox::{
    ANSWER_HEADROOM, AckShared, Inbox, Kill, KillSwitch, Outbound, Outbox, Piece, Pieces,
    QueueLimits,
};
pub use session::{ClientInfo, ClientKey, Connected, Flow, Session};
pub use tracking::Status as MessageStatus;

use sealbus::protocol::{ErrorCode, MessageRef};

use crate::error::{Error, Result};
use crate::store::{SessionRecord, Store};

/// A map keyed by numbers the server assigns (connection keys, delivery and ack ids, message
/// keys), hashed with foldhash rather than SipHash: clients cannot choose these keys, so
/// SipHash's resistance to flooding buys nothing here, and it was a few percent of the server's
/// time under QoS 1 load. Maps keyed by what clients send keep SipHash.
pub(crate) type IdMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A set of numbers the server assigns (see [`IdMap`]).
pub(crate) type IdSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Hands messages published on this node to other nodes (a future distributed engine).
///
/// The broker calls it after routing a publish locally. The in-process [`LocalBackplane`] does
/// nothing: a single node needs no backplane.
pub trait Backplane: Send + Sync + std::fmt::Debug {
    /// A message was published in `session` on this node (borrowed: a backplane that forwards
    /// it encodes it, e.g. with [`Codec::encode_message`](sealbus::protocol::Codec::encode_message)).
    fn publish(&self, session: &str, message: &MessageRef<'_>);
}

/// The single-node backplane: nothing to forward.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalBackplane;

impl Backplane for LocalBackplane {
    fn publish(&self, _session: &str, _message: &MessageRef<'_>) {}
}

/// All sessions of the server.
#[derive(Debug)]
pub struct Broker {
    sessions: RwLock<BTreeMap<String, Arc<Session>>>,
    store: Arc<dyn Store>,
    backplane: Arc<dyn Backplane>,
    shutting_down: AtomicBool,
}

impl Broker {
    /// A broker writing through `store` and forwarding through `backplane`.
    pub fn new(store: Arc<dyn Store>, backplane: Arc<dyn Backplane>) -> Self {
        Broker {
            sessions: RwLock::new(BTreeMap::new()),
            store,
            backplane,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Creates a session; `SessionExists` if the name is taken.
    pub fn create_session(&self, record: SessionRecord) -> Result<Arc<Session>> {
        sealbus::protocol::validate_session_name(&record.name)?;
        record.settings.validate()?;
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        if sessions.contains_key(&record.name) {
            return Err(Error::SessionExists(record.name));
        }
        self.store.save_session(&record);
        let session = Arc::new(Session::new(
            record,
            self.store.clone(),
            self.backplane.clone(),
        )?);
        sessions.insert(session.name().to_owned(), session.clone());
        Ok(session)
    }

    /// Replaces a session's credentials and settings (connected clients keep their limits until
    /// they reconnect, except the ones checked per request).
    pub fn update_session(&self, record: SessionRecord) -> Result<Arc<Session>> {
        record.settings.validate()?;
        let session = self.session(&record.name)?;
        self.store.save_session(&record);
        session.set_record(record);
        Ok(session)
    }

    /// Deletes a session and disconnects its clients with `session_deleted`.
    pub fn delete_session(&self, name: &str) -> Result<()> {
        let removed = self
            .sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let session = removed.ok_or_else(|| Error::NoSuchSession(name.to_owned()))?;
        self.store.delete_session(name);
        session.kill_all(Kill {
            code: ErrorCode::SessionDeleted,
            message: "the session was deleted".into(),
            drain: false,
        });
        Ok(())
    }

    /// Looks a session up.
    pub fn session(&self, name: &str) -> Result<Arc<Session>> {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchSession(name.to_owned()))
    }

    /// Every session, by name.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        sessions.values().cloned().collect()
    }

    /// Starts a graceful shutdown: new connections are refused, and every client's queue is
    /// drained before it is closed with `shutting_down`.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        for session in self.sessions() {
            session.kill_all(Kill {
                code: ErrorCode::ShuttingDown,
                message: "the server is shutting down".into(),
                drain: true,
            });
        }
    }

    /// Runs every session's timed work: QoS 1 redeliveries and dead letters, queued copies
    /// that now fit in their client's queue, expiry of persistent clients and of history.
    /// The server calls it every [`TICK`].
    pub fn tick(&self) {
        for session in self.sessions() {
            session.tick();
        }
    }

    /// Whether a shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// How often [`Broker::tick`] runs: the resolution of retry intervals.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(20);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
