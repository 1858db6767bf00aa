//! The server's one error type, with the stable protocol code of every failure.

use sealbus::protocol::{ErrorCode, ErrorFrame, ProtocolError};

/// Everything that can go wrong in the server library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A protocol rule was broken; carries its code and request id.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The configuration file or a setting is not valid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The session does not exist.
    #[error("session `{0}` does not exist")]
    NoSuchSession(String),
    /// A session with this name already exists.
    #[error("session `{0}` already exists")]
    SessionExists(String),
    /// Hashing a password or signing a token failed.
    #[error("crypto failure: {0}")]
    Crypto(String),
    /// Reading a file or binding a socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The connection or in-process participant ended (closed by the peer, replaced, shut
    /// down, slow consumer, ...).
    #[error("the connection ended")]
    Disconnected,
}

impl Error {
    /// Shorthand for a protocol error with a code, request id and message.
    pub fn protocol(code: ErrorCode, id: Option<u64>, message: impl Into<String>) -> Self {
        Error::Protocol(ProtocolError::new(code, id, message))
    }

    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Protocol(err) => err.code,
            Error::Config(_) | Error::SessionExists(_) => ErrorCode::InvalidField,
            Error::NoSuchSession(_) => ErrorCode::NoSuchSession,
            Error::Io(_) | Error::Crypto(_) | Error::Store(_) => ErrorCode::Internal,
            Error::Disconnected => ErrorCode::Disconnected,
        }
    }

    /// The `error` frame reporting this error.
    pub fn to_frame(&self) -> ErrorFrame {
        match self {
            Error::Protocol(err) => err.to_frame(),
            other => ErrorFrame::new(None, other.code(), other.to_string()),
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
