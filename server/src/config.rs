//! Configuration: the TOML file, the server options and each session's settings.
//!
//! ```toml
//! listen = "127.0.0.1:7070"
//! admin_token = "change-me"
//!
//! [[sessions]]
//! name = "demo"
//! password = "demo"            # or password_hash = "$argon2id$..."
//! token_secret = "a long random secret for HS256 client tokens"
//! retry_interval_ms = 5000
//! max_retries = 100
//!
//! [store]
//! path = "sealbus.db"          # SQLite file; or `memory = true`
//! sync = "full"                # or "normal"
//!
//! [tls]                        # optional: serve wss:// and https://
//! cert = "/etc/sealbus/fullchain.pem"
//! key = "/etc/sealbus/privkey.pem"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{MemoryStore, SqliteStore, Store, StoreError, SyncMode};

/// The whole configuration file.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on, e.g. `127.0.0.1:7070`.
    pub listen: Option<String>,
    /// Bearer token of the admin API; generated at start when absent.
    pub admin_token: Option<String>,
    /// Server-wide limits and policies.
    pub server: ServerOptions,
    /// Sessions created at start.
    pub sessions: Vec<SessionConfig>,
    /// Where `sealbus serve` keeps its state.
    pub store: StoreConfig,
    /// TLS of `sealbus serve` (plain HTTP and WebSocket when absent).
    pub tls: Option<TlsConfig>,
}

/// The `[tls]` table: the PEM files `sealbus serve` serves TLS with (see
/// [`tls::acceptor`](crate::tls::acceptor)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf certificate.
    pub key: PathBuf,
}

/// Debug output never shows the admin token.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("server", &self.server)
            .field("sessions", &self.sessions)
            .field("store", &self.store)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Config {
    /// Reads and parses a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Self::from_toml(&text)
    }

    /// Parses a TOML configuration text.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|err| Error::Config(err.to_string()))
    }
}

/// The `[store]` table: where the server keeps sessions, history, retained messages and
/// persistent clients.
///
/// `sealbus serve` opens it; an embedding application passes [`StoreConfig::open`]'s store to
/// [`ServerBuilder::store`](crate::ServerBuilder::store) (the builder's default is a
/// [`MemoryStore`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file (created with its directory if missing). A relative path is taken from
    /// the working directory.
    pub path: PathBuf,
    /// Keep everything in memory instead: nothing survives a restart.
    pub memory: bool,
    /// When SQLite commits reach the disk.
    pub sync: SyncMode,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("sealbus.db"),
            memory: false,
            sync: SyncMode::default(),
        }
    }
}

impl StoreConfig {
    /// Opens the configured store: an [`SqliteStore`] at `path`, or a [`MemoryStore`].
    pub fn open(&self) -> std::result::Result<Arc<dyn Store>, StoreError> {
        if self.memory {
            return Ok(Arc::new(MemoryStore::new()));
        }
        Ok(Arc::new(SqliteStore::open(&self.path, self.sync)?))
    }
}

/// Server-wide options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerOptions {
    /// Largest WebSocket message accepted on any connection, enforced by the WebSocket layer
    /// before a frame is buffered (sessions may announce a smaller `max_frame_bytes`).
    pub max_frame_bytes: u32,
    /// Milliseconds a new connection has to send `hello`.
    pub hello_timeout_ms: u64,
    /// Failed authentications allowed per peer address within `auth_window_secs`.
    pub auth_failures: u32,
    /// Window of the failed-authentication rate limit, in seconds.
    pub auth_window_secs: u64,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_frame_bytes: sealbus::protocol::DEFAULT_MAX_FRAME_BYTES,
            hello_timeout_ms: 10_000,
            auth_failures: 10,
            auth_window_secs: 60,
        }
    }
}

/// One session (virtual broker) in the configuration file.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SessionConfig {
    /// Session name.
    pub name: String,
    /// Plain-text password (hashed with Argon2 at start, never stored or logged as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Argon2 PHC hash of the password (alternative to `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Secret for HS256 client tokens; a random one is generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// Delivery settings and limits.
    #[serde(flatten)]
    pub settings: SessionSettings,
}

/// Debug output never shows the password, its hash or the token secret.
impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "<none>" };
        f.debug_struct("SessionConfig")
            .field("name", &self.name)
            .field("password", &redacted(self.password.is_some()))
            .field("password_hash", &redacted(self.password_hash.is_some()))
            .field("token_secret", &redacted(self.token_secret.is_some()))
            .field("settings", &self.settings)
            .finish()
    }
}

/// A session's settings and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionSettings {
    /// QoS 1 redelivery interval in milliseconds.
    pub retry_interval_ms: u64,
    /// QoS 1 redeliveries before a copy becomes a dead letter.
    pub max_retries: u32,
    /// Largest payload in bytes.
    pub max_message_bytes: u32,
    /// Largest frame in bytes (at most the server's `max_frame_bytes`).
    pub max_frame_bytes: u32,
    /// Most connected clients.
    pub max_clients: u32,
    /// Most subscriptions per client.
    pub max_subscriptions: u32,
    /// Most outstanding requests per client.
    pub max_inflight: u32,
    /// Most messages kept in the session's history for recovery (`since`).
    pub history_size: u32,
    /// Seconds a message stays in the session's history.
    pub history_secs: u64,
    /// QoS 1 copies queued for an absent persistent client.
    pub offline_queue_size: u32,
    /// Seconds a persistent client's state is kept while it is away.
    pub session_expiry_secs: u64,
    /// Keep-alive interval in milliseconds (dead peers are closed after twice this).
    pub keepalive_ms: u64,
    /// Capacity of each client's outbound queue, in frames.
    pub outbound_queue: u32,
    /// Capacity of each client's outbound queue, in bytes.
    pub outbound_queue_bytes: u64,
    /// QoS 0 copies dropped in a row for a full queue before the client is disconnected as a
    /// slow consumer.
    pub slow_consumer_drops: u32,
}

impl Default for SessionSettings {
    fn default() -> Self {
        let limits = sealbus::protocol::Limits::default();
        SessionSettings {
            retry_interval_ms: 5_000,
            max_retries: 100,
            max_message_bytes: limits.max_message_bytes,
            max_frame_bytes: limits.max_frame_bytes,
            max_clients: 10_000,
            max_subscriptions: limits.max_subscriptions,
            max_inflight: limits.max_inflight,
            history_size: 10_000,
            history_secs: 3_600,
            offline_queue_size: 10_000,
            session_expiry_secs: 3_600,
            keepalive_ms: limits.keepalive_ms,
            outbound_queue: 1_024,
            outbound_queue_bytes: 16 * 1024 * 1024,
            slow_consumer_drops: 256,
        }
    }
}

impl SessionSettings {
    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("retry_interval_ms", self.retry_interval_ms),
            ("max_message_bytes", u64::from(self.max_message_bytes)),
            ("max_frame_bytes", u64::from(self.max_frame_bytes)),
            ("max_clients", u64::from(self.max_clients)),
            ("max_subscriptions", u64::from(self.max_subscriptions)),
            ("max_inflight", u64::from(self.max_inflight)),
            ("keepalive_ms", self.keepalive_ms),
            ("outbound_queue", u64::from(self.outbound_queue)),
            ("outbound_queue_bytes", self.outbound_queue_bytes),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("`{name}` must be greater than 0")));
            }
        }
        if self.max_message_bytes > self.max_frame_bytes {
            return Err(Error::Config(
                "`max_message_bytes` must not exceed `max_frame_bytes`".into(),
            ));
        }
        Ok(())
    }

    /// The limits announced in `welcome`.
    pub fn limits(&self) -> sealbus::protocol::Limits {
        sealbus::protocol::Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_message_bytes: self.max_message_bytes,
            max_subscriptions: self.max_subscriptions,
            max_inflight: self.max_inflight,
            keepalive_ms: self.keepalive_ms,
            retry_interval_ms: self.retry_interval_ms,
            max_retries: self.max_retries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let config = Config::from_toml(
            "admin_token = \"adm1n\"\n[[sessions]]\nname = \"a\"\npassword = \"hunter2\"\ntoken_secret = \"s3\"\n",
        )
        .unwrap();
        let text = format!("{config:?}");
        for secret in ["hunter2", "s3\"", "adm1n"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn parses_sessions_with_defaults() {
        let config = Config::from_toml(
            "admin_token = \"adm1n\"\n[[sessions]]\nname = \"a\"\npassword = \"p\"\nmax_retries = 3\n",
        )
        .unwrap();
        assert_eq!(config.sessions[0].settings.max_retries, 3);
        assert_eq!(config.sessions[0].settings.retry_interval_ms, 5_000);
        assert!(Config::from_toml("bogus = 1").is_err());
    }

    #[test]
    fn the_store_defaults_to_sqlite_in_the_working_directory() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.store.path, PathBuf::from("sealbus.db"));
        assert!(!config.store.memory);
        assert_eq!(config.store.sync, SyncMode::Full);
        let config =
            Config::from_toml("[store]\npath = \"/var/lib/sealbus/x.db\"\nsync = \"normal\"\n")
                .unwrap();
        assert_eq!(config.store.path, PathBuf::from("/var/lib/sealbus/x.db"));
        assert_eq!(config.store.sync, SyncMode::Normal);
        assert!(
            Config::from_toml("[store]\nmemory = true\n")
                .unwrap()
                .store
                .memory
        );
        assert!(Config::from_toml("[store]\nsync = \"sometimes\"\n").is_err());
        assert!(Config::from_toml("[store]\nfile = \"x.db\"\n").is_err());
    }

    #[test]
    fn tls_needs_both_files() {
        assert_eq!(Config::from_toml("").unwrap().tls, None);
        let config = Config::from_toml("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n").unwrap();
        assert_eq!(
            config.tls,
            Some(TlsConfig {
                cert: PathBuf::from("c.pem"),
                key: PathBuf::from("k.pem"),
            })
        );
        assert!(Config::from_toml("[tls]\ncert = \"c.pem\"\n").is_err());
    }
}
