//! The client's error type: one enum for every failure a client operation can report.

use crate::crypto::CryptoError;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::topic::TopicError;

/// A failed client operation.
///
/// Every variant maps to a stable [`ErrorCode`] through [`Error::code`], the same code that the
/// server and every language binding use (see `docs/PROTOCOL.md` §9).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame could not be encoded or decoded, or broke a protocol rule.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// An envelope could not be sealed or opened.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A topic or filter is not valid.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The server answered a request with an `error` frame, or closed the connection for a reason.
    #[error("server error {code}: {message}")]
    Server {
        /// The stable code from the server.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The payload is larger than the session's `max_message_bytes`; nothing was sent.
    #[error("message of {size} bytes is larger than the limit of {max} bytes")]
    MessageTooLarge {
        /// Size of the payload as the server counts it.
        size: usize,
        /// The session's limit.
        max: usize,
    },
    /// The frame is larger than the session's `max_frame_bytes`; nothing was sent.
    #[error("frame of {size} bytes is larger than the limit of {max} bytes")]
    FrameTooLarge {
        /// Size of the encoded frame.
        size: usize,
        /// The session's limit.
        max: usize,
    },
    /// The client is disconnected and its offline publish buffer is full.
    #[error("the offline publish buffer is full ({limit} messages)")]
    OfflineBufferFull {
        /// The buffer's capacity.
        limit: usize,
    },
    /// A message arrived sealed but the client has no keyring to open it.
    #[error("the message is sealed but the client has no keyring")]
    NoKeyring,
    /// The request got no answer in time.
    #[error("the request timed out")]
    Timeout,
    /// The operation was cancelled.
    #[error("the operation was cancelled")]
    Cancelled,
    /// The connection dropped before the operation completed.
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// The server sent nothing within the keep-alive timeout after a ping.
    #[error("no answer from the server within the keep-alive timeout")]
    KeepaliveTimeout,
    /// The client is closed.
    #[error("the client is closed")]
    Closed,
    /// A message handler failed, returned an error or panicked.
    #[error("handler failed: {0}")]
    Handler(String),
    /// The WebSocket could not be opened or failed (network, TLS, handshake).
    #[error("transport error: {0}")]
    Transport(String),
    /// An option given to the client is not valid.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

impl Error {
    /// The stable error code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Protocol(err) => err.code,
            Error::Crypto(err) => err.code(),
            Error::Topic(err) => err.code(),
            Error::Server { code, .. } => *code,
            Error::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            Error::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Error::OfflineBufferFull { .. } => ErrorCode::OfflineBufferFull,
            Error::NoKeyring => ErrorCode::NoKeyring,
            Error::Timeout => ErrorCode::Timeout,
            Error::Cancelled => ErrorCode::Cancelled,
            Error::Disconnected(_) | Error::Transport(_) => ErrorCode::Disconnected,
            Error::KeepaliveTimeout => ErrorCode::KeepaliveTimeout,
            Error::Closed => ErrorCode::Closed,
            Error::Handler(_) => ErrorCode::HandlerFailed,
            Error::InvalidOption(_) => ErrorCode::InvalidField,
        }
    }

    /// Whether this error means retrying the connection cannot help (wrong credentials, an
    /// expired token, a deleted session, another connection taking over the client id, ...).
    pub fn is_fatal(&self) -> bool {
        is_fatal_code(self.code())
    }
}

/// Codes that end a connection for good: reconnecting with the same options would fail the same
/// way (or, for `replaced`, fight the connection that took over the client id).
pub(crate) fn is_fatal_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::AuthFailed
            | ErrorCode::TokenExpired
            | ErrorCode::RateLimited
            | ErrorCode::Replaced
            | ErrorCode::InvalidClientId
            | ErrorCode::UnsupportedVersion
            | ErrorCode::SessionDeleted
            | ErrorCode::NoSuchSession
            | ErrorCode::InvalidField
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_code() {
        let cases = [
            (
                Error::Protocol(ProtocolError::new(ErrorCode::MalformedFrame, None, "x")),
                ErrorCode::MalformedFrame,
            ),
            (
                Error::Crypto(CryptoError::DecryptFailed),
                ErrorCode::DecryptFailed,
            ),
            (
                Error::Topic(crate::topic::validate_topic("a/+").unwrap_err()),
                ErrorCode::InvalidTopic,
            ),
            (
                Error::Server {
                    code: ErrorCode::Forbidden,
                    message: "no".into(),
                },
                ErrorCode::Forbidden,
            ),
            (
                Error::MessageTooLarge { size: 2, max: 1 },
                ErrorCode::MessageTooLarge,
            ),
            (
                Error::FrameTooLarge { size: 2, max: 1 },
                ErrorCode::FrameTooLarge,
            ),
            (
                Error::OfflineBufferFull { limit: 1 },
                ErrorCode::OfflineBufferFull,
            ),
            (Error::NoKeyring, ErrorCode::NoKeyring),
            (Error::Timeout, ErrorCode::Timeout),
            (Error::Cancelled, ErrorCode::Cancelled),
            (Error::Disconnected("x".into()), ErrorCode::Disconnected),
            (Error::Transport("x".into()), ErrorCode::Disconnected),
            (Error::KeepaliveTimeout, ErrorCode::KeepaliveTimeout),
            (Error::Closed, ErrorCode::Closed),
            (Error::Handler("x".into()), ErrorCode::HandlerFailed),
            (Error::InvalidOption("x".into()), ErrorCode::InvalidField),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn auth_failures_are_fatal_and_network_errors_are_not() {
        let auth = Error::Server {
            code: ErrorCode::AuthFailed,
            message: "bad password".into(),
        };
        assert!(auth.is_fatal());
        assert!(!Error::Disconnected("reset".into()).is_fatal());
        assert!(!Error::KeepaliveTimeout.is_fatal());
    }
}
