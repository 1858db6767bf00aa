//! Storage seam: the [`Store`] trait, what it stores, and its implementations.
//!
//! The broker keeps its routing state in memory and writes what must outlive a connection or the
//! process through a `Store`: session definitions, each session's message stream (epoch, offsets
//! and history), retained messages, persistent clients and their QoS 1 copies. At start the
//! broker reloads every session with [`Store::load`].
//!
//! Writes are asynchronous and ordered: [`Store::write`] queues a batch and calls its
//! [`OnCommit`] once the batch (and everything written before it) is durable. The broker
//! answers a QoS 1 `published` from that callback, so a confirmed message is on disk when the
//! publisher hears of it. Implementations commit many batches at once (group commit).
//!
//! Two implementations ship: [`SqliteStore`], one embedded SQLite file (the default of
//! `sealbus serve`), and [`MemoryStore`], which keeps nothing past the process. Both give the
//! same results for the same writes (the conformance tests check it).

mod backlog;
#[cfg(test)]
mod conformance;
mod memory;
mod sqlite;

pub use backlog::{BACKLOG_LIMIT, Backlog};
pub use memory::MemoryStore;
pub use sqlite::{SqliteStore, SyncMode};

use std::sync::Arc;

use sealbus::protocol::{Payload, Qos};
use serde::{Deserialize, Serialize};

use crate::config::SessionSettings;

/// A session definition as stored: name, credentials (hashed) and settings.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session name.
    pub name: String,
    /// Argon2 PHC hash of the password, if password login is enabled.
    pub password_hash: Option<String>,
    /// HS256 secret for client tokens.
    pub token_secret: String,
    /// Settings and limits.
    pub settings: SessionSettings,
}

/// Debug output never shows the password hash or the token secret.
impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("name", &self.name)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("token_secret", &"<redacted>")
            .field("settings", &self.settings)
            .finish()
    }
}

/// A retained message.
#[derive(Debug, Clone, PartialEq)]
pub struct Retained {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub data: Payload,
    /// Publisher's client id.
    pub from: String,
    /// Server time of the publish (ms since the epoch).
    pub ts: u64,
    /// Stream offset of the publish.
    pub offset: u64,
    /// Message id.
    pub mid: String,
}

/// Where a stored message lives: in the session's stream, or outside it (a direct message
/// kept only for the QoS 1 copy of an absent persistent client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageKey {
    /// A published message, by its stream offset (≥ 1).
    Stream(u64),
    /// A direct message, by a per-session sequence number (≥ 1).
    Direct(u64),
}

impl MessageKey {
    /// One signed integer for storage: offsets are positive, direct sequence numbers negative.
    pub fn to_i64(self) -> i64 {
        match self {
            MessageKey::Stream(offset) => i64::try_from(offset).unwrap_or(i64::MAX),
            MessageKey::Direct(seq) => -i64::try_from(seq).unwrap_or(i64::MAX),
        }
    }

    /// The inverse of [`MessageKey::to_i64`]; `None` for 0.
    pub fn from_i64(value: i64) -> Option<Self> {
        match value {
            0 => None,
            v if v > 0 => Some(MessageKey::Stream(v.unsigned_abs())),
            v => Some(MessageKey::Direct(v.unsigned_abs())),
        }
    }
}

/// A message as the store keeps it. The server never sees plaintext: sealed payloads are stored
/// as the envelope it received.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Its key.
    pub key: MessageKey,
    /// Topic, or `@<client id>` for a direct message.
    pub topic: String,
    /// Payload.
    pub data: Payload,
    /// Publisher's client id (shared with the publisher's connection: no copy per message).
    pub from: Arc<str>,
    /// Server time of the publish (ms since the epoch).
    pub ts: u64,
    /// Message id.
    pub mid: String,
    /// Quality of service of the publish.
    pub qos: Qos,
    /// The publisher asked for a `dead_letter` notice.
    pub notify_dead: bool,
}

/// A persistent client as stored: it keeps its subscriptions while away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredClient {
    /// Client id.
    pub client_id: String,
    /// Its subscriptions.
    pub filters: Vec<String>,
    /// When its state expires (ms since the epoch) if it stays away; `None` while connected.
    pub expires_at: Option<u64>,
}

/// A persistent client's copy of a QoS 1 message, not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyRef {
    /// The message.
    pub key: MessageKey,
    /// Times it was written to the client so far.
    pub attempts: u32,
}

/// A session's stream position as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// Epoch of the stream.
    pub epoch: String,
    /// Largest offset ever written (history may be shorter).
    pub last_offset: u64,
}

/// One change to the stored state of a session.
#[derive(Debug, Clone)]
pub enum Write {
    /// Starts (or restarts) the session's stream with a new epoch.
    Stream {
        /// The epoch.
        epoch: String,
    },
    /// Stores a message: a stream message enters history (and raises the stored last offset);
    /// a direct message is kept while a copy refers to it.
    Message(Arc<StoredMessage>),
    /// Forgets stream messages with an offset below `offset` that no copy refers to.
    TrimHistory {
        /// The first offset to keep.
        offset: u64,
    },
    /// Sets (`Some`) or clears (`None`) the retained message of a topic.
    Retained {
        /// Topic.
        topic: String,
        /// The message, or `None` to clear.
        message: Option<Retained>,
    },
    /// Creates or updates a persistent client.
    Client(StoredClient),
    /// Forgets a persistent client and all its copies.
    DropClient {
        /// Client id.
        client_id: String,
    },
    /// Creates or updates a persistent client's copy of a message.
    Copy {
        /// Client id.
        client_id: String,
        /// The copy.
        copy: CopyRef,
    },
    /// Forgets a copy (acknowledged or dead); a direct message with no copy left is forgotten.
    DropCopy {
        /// Client id.
        client_id: String,
        /// The message.
        key: MessageKey,
    },
}

/// Everything stored for one session, as [`Store::load`] returns it.
#[derive(Debug, Clone, Default)]
pub struct SessionData {
    /// The stream, if one was started.
    pub stream: Option<StreamState>,
    /// Stream messages in offset order.
    pub history: Vec<Arc<StoredMessage>>,
    /// Direct messages still referred to by a copy.
    pub directs: Vec<Arc<StoredMessage>>,
    /// Retained messages, in topic order.
    pub retained: Vec<Retained>,
    /// Persistent clients, each with its copies in key order (stream before direct).
    pub clients: Vec<(StoredClient, Vec<CopyRef>)>,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("store: {0}")]
    Database(String),
    /// The store's writer has stopped (an earlier error, or shutdown).
    #[error("store: the writer has stopped")]
    Stopped,
    /// Another server (or another store in this process) has the file open: two brokers on one
    /// file would each believe they own its messages.
    #[error("store: {0} is in use by another sealbus server (it holds the lock file {0}.lock)")]
    Locked(String),
}

/// Called once a batch is durable (`Ok`) or could not be written (`Err`).
pub type OnCommit = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// Persistent state of the server.
///
/// Every method is cheap for the caller: the broker calls them under a session's lock, so that
/// a session's writes reach the store in the order they happened.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Saves (creates or replaces) a session definition.
    fn save_session(&self, record: &SessionRecord);
    /// Deletes a session and everything stored for it.
    fn delete_session(&self, name: &str);
    /// Every stored session.
    fn sessions(&self) -> Vec<SessionRecord>;
    /// Everything stored for `session` (empty for an unknown session).
    fn load(&self, session: &str) -> Result<SessionData, StoreError>;
    /// Queues `writes` for `session`, in order after every earlier write; `on_commit` runs once
    /// they are durable (it may run on another thread, or before `write` returns).
    fn write(&self, session: &str, writes: Vec<Write>, on_commit: Option<OnCommit>);
    /// Waits until everything written so far is durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// The writes queued and not yet durable, for stores that queue them (`None`: `write`
    /// applies them at once).
    fn backlog(&self) -> Option<&Backlog> {
        None
    }
}
