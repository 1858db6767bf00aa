//! Frames a client sends to the server.
//!
//! Field names are the JSON names. Optional fields may be omitted; `false`, `0` and empty defaults
//! are omitted when encoding. See `docs/PROTOCOL.md` for the meaning of every field.

use serde::{Deserialize, Serialize};

use super::payload::{Payload, Qos};

fn is_false(value: &bool) -> bool {
    !*value
}

/// How a client proves it may join a session: `{"password": ...}` or `{"token": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "AuthFields")]
pub enum Auth {
    /// The session password.
    Password(String),
    /// A client token signed for the session (HS256 JWT).
    Token(String),
}

/// The wire shape of [`Auth`], read leniently so that "both" and "neither" get a clear error.
#[derive(Deserialize)]
struct AuthFields {
    password: Option<String>,
    token: Option<String>,
}

impl TryFrom<AuthFields> for Auth {
    type Error = &'static str;

    fn try_from(fields: AuthFields) -> Result<Self, Self::Error> {
        match (fields.password, fields.token) {
            (Some(password), None) => Ok(Auth::Password(password)),
            (None, Some(token)) => Ok(Auth::Token(token)),
            (Some(_), Some(_)) => Err("`auth` must hold either `password` or `token`, not both"),
            (None, None) => Err("`auth` must hold `password` or `token`"),
        }
    }
}

/// A position in a session's message stream: the stream's epoch and an offset in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The stream's epoch; it changes when the stream's history is lost or reset.
    pub epoch: String,
    /// The offset of the last message seen.
    pub offset: u64,
}

/// `hello`: the first frame of every connection; authenticates and joins a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the client speaks; `1`.
    pub v: u32,
    /// Session (virtual broker) name.
    pub session: String,
    /// Credentials.
    pub auth: Auth,
    /// Requested client id; the server assigns one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Keep subscriptions and QoS 1 messages while the client is away (needs `client_id`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub persistent: bool,
    /// The client asks for batches: it reads several frames from one WebSocket message
    /// (separated by `\n`; see [`split_frames`](super::split_frames)) and, once the server
    /// agrees (`welcome.batch`), writes them so too. Without it, a message is one frame.
    #[serde(default, skip_serializing_if = "is_false")]
    pub batch: bool,
}

/// `subscribe`: start receiving messages whose topic matches `filter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    /// Request id.
    pub id: u64,
    /// Topic filter, may contain `+` and `#`.
    pub filter: String,
    /// Replay the matching messages published after this position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Position>,
}

/// `unsubscribe`: stop receiving messages for `filter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// Request id.
    pub id: u64,
    /// The filter given to `subscribe`.
    pub filter: String,
}

/// Asks the server to collect every subscriber's response to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRequest {
    /// How long the server waits for responses, in milliseconds.
    pub timeout_ms: u64,
}

/// `publish`: send a message to every subscriber whose filter matches `topic`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    /// Request id; required for QoS 1 and for `ack`, optional for QoS 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Message id for idempotent publishing (repeats within the dedup window are not delivered
    /// twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// Topic name (no wildcards).
    pub topic: String,
    /// The data.
    pub data: Payload,
    /// Quality of service.
    #[serde(default, skip_serializing_if = "Qos::is_at_most_once")]
    pub qos: Qos,
    /// Keep as the topic's retained message (an empty payload clears it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub retain: bool,
    /// Collect every subscriber's response (publish_with_ack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<AckRequest>,
    /// Tell the publisher with a `dead_letter` frame when a QoS 1 copy runs out of retries.
    #[serde(default, skip_serializing_if = "is_false")]
    pub notify_dead: bool,
}

/// `send`: a direct message to one client of the same session (publish_to_id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Send {
    /// Request id; required for QoS 1 and for `ack`, optional for QoS 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Message id for idempotent publishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// Recipient client id.
    pub to: String,
    /// The data.
    pub data: Payload,
    /// Quality of service.
    #[serde(default, skip_serializing_if = "Qos::is_at_most_once")]
    pub qos: Qos,
    /// Collect the recipient's response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<AckRequest>,
}

/// `ack`: a subscriber's response to a delivered message.
///
/// It settles the QoS 1 delivery `did` (no more retries) and, when the message carried an `aid`,
/// is relayed to the publisher as this subscriber's response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// Delivery id from the `message`/`direct` frame (QoS 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did: Option<u64>,
    /// Ack id from the `message`/`direct` frame (publish_with_ack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aid: Option<u64>,
    /// Whether the handler succeeded.
    pub ok: bool,
    /// Error code when `ok` is false (`handler_failed`, `decrypt_failed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<super::ErrorCode>,
    /// Error message when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `ack_status`: ask which subscribers have answered a publish_with_ack so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckStatus {
    /// Request id.
    pub id: u64,
    /// Ack id from `ack_expect`.
    pub aid: u64,
}

/// `ack_cancel`: stop collecting responses; copies not yet written to subscribers are withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckCancel {
    /// Request id (optional; errors are reported with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Ack id from `ack_expect`.
    pub aid: u64,
}

/// `delivery_status`: ask for the per-subscriber state of a QoS 1 message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStatus {
    /// Request id.
    pub id: u64,
    /// Message id given at publish.
    pub mid: String,
}

/// `ping`: keep-alive; the server answers `pong`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ping {
    /// Optional value echoed in the `pong`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

/// `bye`: the client is leaving on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bye {
    /// For a persistent client: drop the stored subscriptions and queued messages too.
    #[serde(default, skip_serializing_if = "is_false")]
    pub discard: bool,
}

super::frame_enum! {
    /// A frame sent by a client.
    ClientFrame {
        /// Authenticate and join a session.
        Hello(Hello) = "hello",
        /// Subscribe to a filter.
        Subscribe(Subscribe) = "subscribe",
        /// Unsubscribe from a filter.
        Unsubscribe(Unsubscribe) = "unsubscribe",
        /// Publish to a topic.
        Publish(Publish) = "publish",
        /// Send directly to one client.
        Send(Send) = "send",
        /// Respond to a delivered message.
        Ack(Ack) = "ack",
        /// Query a publish_with_ack.
        AckStatus(AckStatus) = "ack_status",
        /// Cancel a publish_with_ack.
        AckCancel(AckCancel) = "ack_cancel",
        /// Query a QoS 1 message's delivery state.
        DeliveryStatus(DeliveryStatus) = "delivery_status",
        /// Keep-alive.
        Ping(Ping) = "ping",
        /// Leave.
        Bye(Bye) = "bye",
    }
}

impl ClientFrame {
    /// The request id the frame carries, if any (errors about the frame are reported with it).
    pub fn request_id(&self) -> Option<u64> {
        match self {
            ClientFrame::Hello(_) | ClientFrame::Ack(_) | ClientFrame::Bye(_) => None,
            ClientFrame::Subscribe(f) => Some(f.id),
            ClientFrame::Unsubscribe(f) => Some(f.id),
            ClientFrame::Publish(f) => f.id,
            ClientFrame::Send(f) => f.id,
            ClientFrame::AckStatus(f) => Some(f.id),
            ClientFrame::AckCancel(f) => f.id,
            ClientFrame::DeliveryStatus(f) => Some(f.id),
            ClientFrame::Ping(f) => f.id,
        }
    }
}
