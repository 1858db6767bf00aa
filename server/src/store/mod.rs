//! Storage seam: the [`Store`] trait and its in-memory implementation.
//!
//! The broker keeps its routing state in memory and writes what must outlive a connection
//! (session definitions and retained messages) through a `Store`. The SQLite store of a later
//! release implements the same trait.

mod memory;

pub use memory::MemoryStore;

use sealbus::protocol::Payload;
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

/// Persistent state of the server.
///
/// Calls are synchronous and short; the broker calls them under a session's lock, so that
/// retained messages change in publish order.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Saves (creates or replaces) a session definition.
    fn save_session(&self, record: &SessionRecord);
    /// Deletes a session and everything stored for it.
    fn delete_session(&self, name: &str);
    /// Every stored session.
    fn sessions(&self) -> Vec<SessionRecord>;
    /// Sets (`Some`) or clears (`None`) the retained message of `topic` in `session`.
    fn set_retained(&self, session: &str, topic: &str, message: Option<Retained>);
    /// The retained messages of `session` whose topic matches `filter`, in topic order.
    fn retained_matching(&self, session: &str, filter: &str) -> Vec<Retained>;
}
