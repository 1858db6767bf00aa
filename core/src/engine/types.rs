//! The plain data types that go into and come out of the engine.

use std::collections::BTreeMap;

use crate::Error;
use crate::protocol::{AckOutcome, CopyStatus, ErrorCode, Qos};

/// A point on a monotonic clock, in milliseconds, chosen by the driver (any origin).
///
/// The engine never reads a clock: every input carries `now`, and [`Engine::poll_timeout`]
/// answers in the same unit.
///
/// [`Engine::poll_timeout`]: super::Engine::poll_timeout
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// This point plus `ms` milliseconds (saturating).
    pub const fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}

/// Identifies one operation (a subscribe, publish, ...) from the command to its [`Event`].
///
/// The id of a `subscribe` also names the handler registration it created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Names one delivered message whose handlers must report back with
/// [`Engine::complete_delivery`](super::Engine::complete_delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryToken(pub u64);

/// Application data: what a publisher gives and a handler receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// A JSON value (strings, numbers, objects, ...).
    Json(serde_json::Value),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl From<serde_json::Value> for Data {
    fn from(value: serde_json::Value) -> Self {
        Data::Json(value)
    }
}

impl From<Vec<u8>> for Data {
    fn from(bytes: Vec<u8>) -> Self {
        Data::Bytes(bytes)
    }
}

impl From<&[u8]> for Data {
    fn from(bytes: &[u8]) -> Self {
        Data::Bytes(bytes.to_vec())
    }
}

impl From<&str> for Data {
    /// A JSON string.
    fn from(text: &str) -> Self {
        Data::Json(serde_json::Value::String(text.to_owned()))
    }
}

impl From<String> for Data {
    /// A JSON string.
    fn from(text: String) -> Self {
        Data::Json(serde_json::Value::String(text))
    }
}

impl Data {
    /// The JSON value, if this is JSON data.
    pub fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Data::Json(value) => Some(value),
            Data::Bytes(_) => None,
        }
    }

    /// The bytes, if this is raw bytes.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Data::Bytes(bytes) => Some(bytes),
            Data::Json(_) => None,
        }
    }

    /// Whether this is an empty payload (`null`, `""` or no bytes); an empty retained publish
    /// clears the topic's retained message.
    pub fn is_empty(&self) -> bool {
        match self {
            Data::Json(serde_json::Value::Null) => true,
            Data::Json(serde_json::Value::String(text)) => text.is_empty(),
            Data::Json(_) => false,
            Data::Bytes(bytes) => bytes.is_empty(),
        }
    }
}

/// A message handed to the application.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The topic it was published to; `@<own client id>` for a direct message.
    pub topic: String,
    /// The data, opened if it was sealed.
    pub data: Data,
    /// The publisher's client id.
    pub from: String,
    /// Server time of the publish, milliseconds since the Unix epoch.
    pub ts: u64,
    /// Offset in the session stream (absent for direct messages).
    pub offset: Option<u64>,
    /// The message id, when the publisher or server gave one.
    pub mid: Option<String>,
    /// Quality of service of this copy.
    pub qos: Qos,
    /// Whether the data arrived sealed (end-to-end encrypted) and was opened.
    pub encrypted: bool,
    /// Whether this is a direct message (publish_to_id) rather than a topic message.
    pub direct: bool,
    /// Sent because a filter matched the topic's retained message.
    pub retained: bool,
    /// Replayed from history while recovering after a reconnect.
    pub replay: bool,
    /// A redelivery of a QoS 1 copy the server did not see acknowledged.
    pub dup: bool,
}

/// The state of the connection, as the application observes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening the first connection.
    Connecting,
    /// Authenticated; requests flow.
    Connected,
    /// Waiting before (or making) reconnect attempt number `attempt` (1-based).
    Reconnecting {
        /// Which attempt.
        attempt: u32,
    },
    /// The connection dropped; a reconnect may follow.
    Disconnected {
        /// Why it dropped.
        reason: String,
    },
    /// The client is closed for good: by the application, or by a fatal error (`error`).
    Closed {
        /// The error that closed it; `None` when the application closed it.
        error: Option<Error>,
    },
}

/// What a completed operation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The subscription is active on the server.
    Subscribed {
        /// The filter.
        filter: String,
    },
    /// The handler (or filter) is unsubscribed.
    Unsubscribed,
    /// A publish or send was accepted: for QoS 1 stored by the server; for QoS 0 sent or buffered.
    Published {
        /// The message id (absent for a QoS 0 publish the server did not answer).
        mid: Option<String>,
        /// Stream offset, when the server answered with one.
        offset: Option<u64>,
        /// The server had seen this message id before and did not deliver it again.
        duplicate: bool,
        /// A direct message was queued for a persistent client that is away.
        queued: bool,
    },
    /// The answer to [`Engine::delivery_status`](super::Engine::delivery_status).
    Delivery(DeliveryReport),
}

/// The per-subscriber state of a QoS 1 message, as the server holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Message id.
    pub mid: String,
    /// The message's topic (`@client` for a direct message).
    pub topic: String,
    /// One entry per subscriber the message was routed to: its state and how many times it was
    /// written to that subscriber.
    pub copies: Vec<CopyStatus>,
}

/// One subscriber's response to a publish_with_ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckReply {
    /// Whether the subscriber's handler succeeded.
    pub ok: bool,
    /// The failure's code (`handler_failed`, `decrypt_failed`, `disconnected`, ...).
    pub code: Option<ErrorCode>,
    /// The failure's message.
    pub error: Option<String>,
}

/// Why a publish_with_ack stopped collecting responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckFinish {
    /// Every expected subscriber answered (or there were none).
    Complete,
    /// The timeout passed first.
    Timeout,
    /// The publisher cancelled.
    Cancelled,
    /// The publisher's connection dropped; the server drops the collection then, so the handle
    /// finishes with the responses that had arrived.
    Disconnected,
    /// The publish itself failed (for example an invalid topic or a full offline buffer).
    Failed(Error),
}

impl From<AckOutcome> for AckFinish {
    fn from(outcome: AckOutcome) -> Self {
        match outcome {
            AckOutcome::Complete => AckFinish::Complete,
            AckOutcome::Timeout => AckFinish::Timeout,
            AckOutcome::Cancelled => AckFinish::Cancelled,
        }
    }
}

/// A snapshot of one publish_with_ack collection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckSnapshot {
    /// The subscribers the server waits for; `None` until the server has said (`ack_expect`).
    pub expected: Option<Vec<String>>,
    /// Responses in arrival order.
    pub responses: Vec<(String, AckReply)>,
    /// Set once the collection is finished; nothing changes afterwards.
    pub finished: Option<AckFinish>,
}

impl AckSnapshot {
    /// Every expected client id mapped to whether its response has arrived.
    pub fn status(&self) -> BTreeMap<String, bool> {
        let mut status: BTreeMap<String, bool> = self
            .expected
            .iter()
            .flatten()
            .map(|id| (id.clone(), false))
            .collect();
        for (id, _) in &self.responses {
            status.insert(id.clone(), true);
        }
        status
    }

    /// Whether the collection is finished (all answered, timed out, cancelled or failed).
    pub fn is_complete(&self) -> bool {
        self.finished.is_some()
    }

    /// The responses as a map from client id to response.
    pub fn response_map(&self) -> BTreeMap<String, AckReply> {
        self.responses.iter().cloned().collect()
    }
}

/// Why the transport connection ended, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// The WebSocket close code, when a close frame arrived.
    pub close_code: Option<u16>,
    /// A description (close reason or I/O error).
    pub reason: String,
}

/// What the engine asks the driver to do with the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnAction {
    /// Open a new WebSocket now, then call `handle_connected` (or `handle_disconnected` if it
    /// fails).
    Connect,
    /// Close the current WebSocket with this close code and reason. The engine already counts
    /// the connection as gone: do not report its end with `handle_disconnected`.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

/// Something the application should learn about.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The connection state changed.
    State(ConnectionState),
    /// An operation finished.
    Completed {
        /// The operation.
        op: OpId,
        /// Its result.
        result: Result<Outcome, Error>,
    },
    /// A message for the listed handler registrations.
    ///
    /// When `token` is set, call [`Engine::complete_delivery`](super::Engine::complete_delivery)
    /// once per handler in `handlers`; the engine acknowledges the message when all have.
    Deliver {
        /// Handler registrations (subscribe op ids, or direct-message registrations).
        handlers: Vec<OpId>,
        /// Present when the server expects an `ack`.
        token: Option<DeliveryToken>,
        /// The message.
        message: Message,
    },
    /// A publish_with_ack collection changed: the server named the expected subscribers, a
    /// response arrived, or it finished (then `snapshot.finished` is set and this is the last
    /// event for `op`).
    AckUpdated {
        /// The publish_with_ack operation.
        op: OpId,
        /// Its state now.
        snapshot: AckSnapshot,
    },
    /// After a reconnect the server could not replay every message missed on this filter.
    NotRecovered {
        /// The filter.
        filter: String,
        /// Handler registrations on it.
        handlers: Vec<OpId>,
    },
    /// A QoS 1 copy of a message published with `notify_dead` ran out of retries.
    DeadLetter {
        /// Message id.
        mid: String,
        /// Topic.
        topic: String,
        /// The subscriber that never acknowledged.
        client: String,
    },
    /// An error not tied to one operation: a message that could not be opened, an error frame
    /// without a request id, a frame that could not be decoded.
    Error(Error),
}
