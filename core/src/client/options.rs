//! [`ClientOptions`]: what [`Client::connect`](super::Client::connect) needs to know.

use std::time::Duration;

use crate::Error;
use crate::crypto::Keyring;
use crate::engine::{EngineConfig, ReconnectPolicy};
use crate::protocol::Auth;

/// Options for [`Client::connect`](super::Client::connect), built step by step.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub(crate) url: String,
    pub(crate) engine: EngineConfig,
    pub(crate) default_ack_timeout: Duration,
}

impl ClientOptions {
    /// Options for the server at `url` (for example `ws://127.0.0.1:7070/ws`, or
    /// `wss://bus.example.com/ws` through TLS, verified against the system's root certificates;
    /// `SSL_CERT_FILE` replaces them) and `session`.
    /// Set credentials with [`ClientOptions::password`] or [`ClientOptions::token`].
    pub fn new(url: impl Into<String>, session: impl Into<String>) -> ClientOptions {
        ClientOptions {
            url: url.into(),
            engine: EngineConfig::new(session, Auth::Password(String::new())),
            default_ack_timeout: Duration::from_secs(30),
        }
    }

    /// Authenticate with the session password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.engine.auth = Auth::Password(password.into());
        self
    }

    /// Authenticate with a client token signed for the session.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.engine.auth = Auth::Token(token.into());
        self
    }

    /// Ask for this client id (the server assigns one otherwise).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.engine.client_id = Some(client_id.into());
        self
    }

    /// Seal publishes with the keyring's primary key and open sealed messages with it.
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.engine.keyring = Some(keyring);
        self
    }

    /// How to reconnect after the connection drops.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.engine.reconnect = policy;
        self
    }

    /// Ping after `interval` without sending; reconnect when nothing arrives within `timeout`
    /// after a ping. The default is the server's `keepalive_ms` for both.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.engine.keepalive_ms = Some(millis(interval));
        self.engine.keepalive_timeout_ms = Some(millis(timeout));
        self
    }

    /// Publishes kept while disconnected (default 1000); one more fails with
    /// `offline_buffer_full`.
    pub fn offline_buffer(mut self, messages: usize) -> Self {
        self.engine.offline_buffer = messages;
        self
    }

    /// How long a request may wait for the server's answer (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.engine.request_timeout_ms = millis(timeout);
        self
    }

    /// Timeout of [`Client::publish_with_ack`](super::Client::publish_with_ack) when none is given (default 30 s).
    pub fn default_ack_timeout(mut self, timeout: Duration) -> Self {
        self.default_ack_timeout = timeout;
        self
    }

    /// Ask the server to keep subscriptions and QoS 1 messages while the client is away
    /// (needs a client id).
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.engine.persistent = persistent;
        self
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        self.url
            .as_str()
            .into_client_request()
            .map_err(|err| Error::InvalidOption(format!("bad server URL: {err}")))?;
        crate::protocol::validate_session_name(&self.engine.session)?;
        if let Some(id) = &self.engine.client_id {
            crate::protocol::validate_client_id(id)?;
        }
        if self.engine.persistent && self.engine.client_id.is_none() {
            return Err(Error::InvalidOption(
                "a persistent client needs a client id".into(),
            ));
        }
        Ok(())
    }
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
