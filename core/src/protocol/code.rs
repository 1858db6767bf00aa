//! Stable error codes shared by the wire protocol, the server, the client and every binding.
//!
//! Each code has a number and a symbolic name. Both travel in `error` frames and both are stable:
//! a code is never renumbered or renamed, only added. `docs/PROTOCOL.md` holds the same table.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $name:literal; )*) => {
        /// A stable error code: a number and a symbolic name (see `docs/PROTOCOL.md`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The numeric form of the code.
            pub const fn number(self) -> u16 {
                match self { $( ErrorCode::$variant => $num, )* }
            }

            /// The symbolic form of the code, for example `"invalid_topic"`.
            pub const fn name(self) -> &'static str {
                match self { $( ErrorCode::$variant => $name, )* }
            }

            /// Looks a code up by its number.
            pub fn from_number(number: u16) -> Option<ErrorCode> {
                match number { $( $num => Some(ErrorCode::$variant), )* _ => None }
            }

            /// Looks a code up by its symbolic name.
            pub fn from_name(name: &str) -> Option<ErrorCode> {
                match name { $( $name => Some(ErrorCode::$variant), )* _ => None }
            }
        }
    };
}

error_codes! {
    /// The frame is not valid JSON, not a JSON object, or not valid UTF-8.
    MalformedFrame = 1001, "malformed_frame";
    /// The frame's `type` is not one this protocol version knows.
    UnknownFrameType = 1002, "unknown_frame_type";
    /// A field is missing, has the wrong JSON type or a value out of range.
    InvalidField = 1003, "invalid_field";
    /// The frame is larger than the announced `max_frame_bytes`.
    FrameTooLarge = 1004, "frame_too_large";
    /// The client asked for a protocol version the server does not speak.
    UnsupportedVersion = 1005, "unsupported_version";
    /// A frame other than `hello` arrived before the connection was authenticated.
    NotAuthenticated = 1006, "not_authenticated";
    /// A second `hello` arrived on an authenticated connection.
    AlreadyAuthenticated = 1007, "already_authenticated";
    /// A request reused the id of a request that is still outstanding.
    DuplicateRequestId = 1008, "duplicate_request_id";
    /// A binary WebSocket message arrived; protocol v1 uses text frames only.
    BinaryFrame = 1009, "binary_frame";

    /// The session name, password or token was not accepted.
    AuthFailed = 2001, "auth_failed";
    /// The token has expired.
    TokenExpired = 2002, "token_expired";
    /// The credentials are valid but do not allow this topic or operation.
    Forbidden = 2003, "forbidden";
    /// Too many failed attempts from this peer; try again later.
    RateLimited = 2004, "rate_limited";
    /// The session does not exist.
    NoSuchSession = 2005, "no_such_session";
    /// Another connection took over this client id.
    Replaced = 2006, "replaced";
    /// The client id is not acceptable (empty, too long, or reserved).
    InvalidClientId = 2007, "invalid_client_id";

    /// The topic is not a valid topic name.
    InvalidTopic = 3001, "invalid_topic";
    /// The filter is not a valid subscription filter.
    InvalidFilter = 3002, "invalid_filter";
    /// The message payload is larger than the session's `max_message_bytes`.
    MessageTooLarge = 3003, "message_too_large";
    /// `publish_to_id` named a client that is not connected (and not persistent).
    NoSuchClient = 3004, "no_such_client";
    /// The ack id is not one that is waiting for a response.
    UnknownAckId = 3005, "unknown_ack_id";
    /// The delivery id is not one this client has outstanding.
    UnknownDeliveryId = 3006, "unknown_delivery_id";
    /// The message id is not held by the server (never seen, or already expired).
    UnknownMessageId = 3007, "unknown_message_id";
    /// The message id is not acceptable (empty or too long).
    InvalidMessageId = 3008, "invalid_message_id";

    /// The client already holds the session's maximum number of subscriptions.
    TooManySubscriptions = 4001, "too_many_subscriptions";
    /// The session already has its maximum number of connected clients.
    TooManyClients = 4002, "too_many_clients";
    /// A queue (offline queue, in-flight window) is full.
    QueueFull = 4003, "queue_full";
    /// The client did not read its messages fast enough and was disconnected.
    SlowConsumer = 4004, "slow_consumer";
    /// The client's offline publish buffer is full.
    OfflineBufferFull = 4005, "offline_buffer_full";
    /// Too many requests are outstanding on this connection.
    TooManyRequests = 4006, "too_many_requests";

    /// The envelope's authentication tag did not verify (wrong key or tampered data).
    DecryptFailed = 5001, "decrypt_failed";
    /// The envelope names a key id the keyring does not hold.
    UnknownKeyId = 5002, "unknown_key_id";
    /// The envelope is truncated, of an unknown version, or otherwise not an envelope.
    MalformedEnvelope = 5003, "malformed_envelope";
    /// The key is not 32 bytes.
    InvalidKey = 5004, "invalid_key";
    /// Text that should be base64 is not.
    BadBase64 = 5005, "bad_base64";
    /// The message is sealed but the client holds no keyring.
    NoKeyring = 5006, "no_keyring";

    /// The server failed in a way that is not the client's fault.
    Internal = 6001, "internal";
    /// The server is shutting down.
    ShuttingDown = 6002, "shutting_down";
    /// The operation did not complete in time.
    Timeout = 6003, "timeout";
    /// The operation was cancelled.
    Cancelled = 6004, "cancelled";
    /// The peer disconnected before answering.
    Disconnected = 6005, "disconnected";
    /// The subscriber's handler failed; the response carries its message.
    HandlerFailed = 6006, "handler_failed";
    /// The client is closed.
    Closed = 6007, "closed";
    /// The peer did not answer keep-alive pings in time.
    KeepaliveTimeout = 6008, "keepalive_timeout";
    /// The session was deleted while the client was connected.
    SessionDeleted = 6009, "session_deleted";
}

impl ErrorCode {
    /// The WebSocket close code used when a connection is closed for this reason.
    ///
    /// Close codes are `4000 + 100 * (thousands - 1) + rest`: the error number `N0MM` maps to the
    /// close code `4(N-1)MM`, e.g. `auth_failed` (2001) closes with 4101, `slow_consumer` (4004)
    /// with 4304 and `shutting_down` (6002) with 4502. Every close code stays in 4000..=4999, the
    /// range RFC 6455 leaves to applications.
    pub const fn close_code(self) -> u16 {
        let n = self.number();
        4000 + (n % 1000) + 100 * (n / 1000 - 1)
    }

    /// The error code that a WebSocket close code stands for, if it is one of ours.
    pub fn from_close_code(close: u16) -> Option<ErrorCode> {
        if !(4000..5000).contains(&close) {
            return None;
        }
        let rest = close - 4000;
        let number = (rest / 100 + 1) * 1000 + rest % 100;
        ErrorCode::from_number(number)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.number())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.number())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = u16::deserialize(deserializer)?;
        ErrorCode::from_number(number)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {number}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_unique_and_round_trip() {
        let mut numbers = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(
                numbers.insert(code.number()),
                "duplicate number {}",
                code.number()
            );
            assert!(names.insert(code.name()), "duplicate name {}", code.name());
            assert_eq!(ErrorCode::from_number(code.number()), Some(code));
            assert_eq!(ErrorCode::from_name(code.name()), Some(code));
        }
        assert_eq!(ErrorCode::from_number(9999), None);
        assert_eq!(ErrorCode::from_name("nope"), None);
    }

    #[test]
    fn close_codes_round_trip_and_stay_in_the_private_range() {
        for &code in ErrorCode::ALL {
            let close = code.close_code();
            assert!((4000..5000).contains(&close), "{code} -> {close}");
            assert_eq!(ErrorCode::from_close_code(close), Some(code));
        }
        assert_eq!(ErrorCode::AuthFailed.close_code(), 4101);
        assert_eq!(ErrorCode::SlowConsumer.close_code(), 4304);
        assert_eq!(ErrorCode::from_close_code(1000), None);
    }
}
