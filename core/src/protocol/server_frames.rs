//! Frames the server sends to a client.
//!
//! Field names are the JSON names. See `docs/PROTOCOL.md` for the meaning of every field.

use serde::{Deserialize, Serialize};

use super::ErrorCode;
use super::client_frames::Position;
use super::payload::{Payload, Qos};

fn is_false(value: &bool) -> bool {
    !*value
}

/// The limits and settings of the session, announced in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame (UTF-8 bytes of the JSON text) the server accepts.
    pub max_frame_bytes: u32,
    /// Largest payload (see `Payload::size`) the server accepts.
    pub max_message_bytes: u32,
    /// Most subscriptions one client may hold.
    pub max_subscriptions: u32,
    /// Most requests one client may have outstanding.
    pub max_inflight: u32,
    /// The client should send a `ping` when it has sent nothing for this long; the server closes
    /// a connection it has heard nothing from for twice this long.
    pub keepalive_ms: u64,
    /// Interval between QoS 1 redeliveries.
    pub retry_interval_ms: u64,
    /// Redeliveries of a QoS 1 message before it becomes a dead letter.
    pub max_retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: super::DEFAULT_MAX_FRAME_BYTES,
            max_message_bytes: 256 * 1024,
            max_subscriptions: 1_000,
            max_inflight: 1_000,
            keepalive_ms: 30_000,
            retry_interval_ms: 5_000,
            max_retries: 100,
        }
    }
}

/// `welcome`: the answer to a successful `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version the server speaks on this connection; `1`.
    pub v: u32,
    /// Session name.
    pub session: String,
    /// The client's id (the requested one or one the server assigned).
    pub client_id: String,
    /// The epoch of the session's message stream (see `Position`).
    pub epoch: String,
    /// For a persistent client: the server still held its subscriptions from an earlier connection.
    #[serde(default, skip_serializing_if = "is_false")]
    pub session_present: bool,
    /// Limits and delivery settings of the session.
    pub limits: Limits,
    /// Server name and version, for diagnostics.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    /// The server agrees to batches with this client (asked for in `hello.batch`): it reads
    /// several frames from one WebSocket message (separated by `\n`; see
    /// [`split_frames`](super::split_frames)) and may write them so.
    #[serde(default, skip_serializing_if = "is_false")]
    pub batch: bool,
}

/// Outcome of a subscribe that asked for recovery with `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// Every matching message after `since` is replayed (`replayed` of them) before live ones.
    Recovered,
    /// History no longer reaches back to `since`, or the epoch changed: messages may be missing.
    NotRecovered,
}

/// `subscribed`: the subscription is active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// Request id of the `subscribe`.
    pub id: u64,
    /// The filter.
    pub filter: String,
    /// Present when the `subscribe` carried `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// Number of messages replayed after this frame (when recovering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<u64>,
    /// The stream position at the moment of subscribing.
    pub position: Position,
}

/// `unsubscribed`: the subscription is gone (also answered for unknown filters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribed {
    /// Request id of the `unsubscribe`.
    pub id: u64,
    /// The filter.
    pub filter: String,
}

/// `published`: a publish or send was accepted (QoS 1: stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// Request id of the `publish`/`send`.
    pub id: u64,
    /// The message id (the client's, or one the server assigned).
    pub mid: String,
    /// Offset of the message in the session stream (absent for direct messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The message id was seen before within the dedup window; it was not delivered again.
    #[serde(default, skip_serializing_if = "is_false")]
    pub duplicate: bool,
    /// A direct message to a persistent client that is away was queued for it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub queued: bool,
}

/// `message`: a message delivered to a subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The topic it was published to.
    pub topic: String,
    /// The data.
    pub data: Payload,
    /// Client id of the publisher (`$server` for in-process publishes, `$admin` for the admin API).
    pub from: String,
    /// Server time of publishing, milliseconds since the Unix epoch.
    pub ts: u64,
    /// Offset in the session stream (absent for retained messages published before a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// Quality of service of this copy.
    #[serde(default, skip_serializing_if = "Qos::is_at_most_once")]
    pub qos: Qos,
    /// Delivery id (QoS 1): answer with `ack` carrying it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did: Option<u64>,
    /// Ack id (publish_with_ack): answer with `ack` carrying it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aid: Option<u64>,
    /// This copy is the topic's retained message, sent on subscribe.
    #[serde(default, skip_serializing_if = "is_false")]
    pub retained: bool,
    /// This copy is replayed from history (recovery).
    #[serde(default, skip_serializing_if = "is_false")]
    pub replay: bool,
    /// This copy is a redelivery of a QoS 1 message.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dup: bool,
}

/// `direct`: a message sent to this client by id (publish_to_id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Direct {
    /// The data.
    pub data: Payload,
    /// Client id of the sender.
    pub from: String,
    /// Server time of sending, milliseconds since the Unix epoch.
    pub ts: u64,
    /// Message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// Quality of service of this copy.
    #[serde(default, skip_serializing_if = "Qos::is_at_most_once")]
    pub qos: Qos,
    /// Delivery id (QoS 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did: Option<u64>,
    /// Ack id (the sender waits for a response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aid: Option<u64>,
    /// This copy is a redelivery.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dup: bool,
}

/// `ack_expect`: the subscribers a publish_with_ack waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckExpect {
    /// Request id of the `publish`/`send`.
    pub id: u64,
    /// Ack id: names this collection in `ack_response`, `ack_done`, `ack_status`, `ack_cancel`.
    pub aid: u64,
    /// Client ids of the subscribers the server waits for (may be empty).
    pub expected: Vec<String>,
}

/// `ack_response`: one subscriber's response, relayed to the publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckResponse {
    /// Ack id.
    pub aid: u64,
    /// The subscriber's client id.
    pub from: String,
    /// Whether the subscriber's handler succeeded.
    pub ok: bool,
    /// Error code when `ok` is false (`disconnected` when the subscriber left before answering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Error message when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a publish_with_ack finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckOutcome {
    /// Every expected subscriber answered.
    Complete,
    /// The publisher's timeout passed first.
    Timeout,
    /// The publisher cancelled.
    Cancelled,
}

/// `ack_done`: the server stops collecting responses; no `ack_response` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckDone {
    /// Ack id.
    pub aid: u64,
    /// Why it finished.
    pub outcome: AckOutcome,
}

/// `ack_state`: the answer to `ack_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckState {
    /// Request id of the `ack_status`.
    pub id: u64,
    /// Ack id.
    pub aid: u64,
    /// Subscribers that have not answered yet.
    pub pending: Vec<String>,
    /// Subscribers that have answered.
    pub answered: Vec<String>,
    /// Set once the collection has finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AckOutcome>,
}

/// Delivery state of one subscriber's copy of a QoS 1 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyState {
    /// Stored, not yet written to the subscriber (it may be away).
    Pending,
    /// Written to the subscriber, not yet acknowledged.
    Delivered,
    /// Acknowledged by the subscriber.
    Acknowledged,
    /// Retries ran out; moved to the dead-letter topic.
    Dead,
}

/// One subscriber's entry in `delivery_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyStatus {
    /// Subscriber client id.
    pub client: String,
    /// State of its copy.
    pub state: CopyState,
    /// Deliveries made so far (first delivery included).
    pub attempts: u32,
}

/// `delivery_state`: the answer to `delivery_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Request id of the `delivery_status`.
    pub id: u64,
    /// Message id.
    pub mid: String,
    /// The message's topic (or `@client` for a direct message).
    pub topic: String,
    /// State per subscriber.
    pub copies: Vec<CopyStatus>,
}

/// `dead_letter`: tells a publisher that asked (`notify_dead`) that a copy ran out of retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Message id.
    pub mid: String,
    /// The message's topic.
    pub topic: String,
    /// The subscriber that never acknowledged.
    pub client: String,
    /// Deliveries made.
    pub attempts: u32,
}

/// `pong`: the answer to `ping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pong {
    /// The `ping`'s `id`, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

/// `error`: a request failed, or the connection is about to close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// Request id of the failed request, when it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Numeric error code.
    pub code: ErrorCode,
    /// Symbolic error code (informative; `code` is authoritative).
    #[serde(default)]
    pub name: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ErrorFrame {
    /// An error frame for `code` with a message, about request `id`.
    pub fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorFrame {
            id,
            code,
            name: code.name().to_owned(),
            message: message.into(),
        }
    }
}

super::frame_enum! {
    /// A frame sent by the server.
    ServerFrame {
        /// Authenticated.
        Welcome(Welcome) = "welcome",
        /// Subscription active.
        Subscribed(Subscribed) = "subscribed",
        /// Subscription gone.
        Unsubscribed(Unsubscribed) = "unsubscribed",
        /// Publish accepted.
        Published(Published) = "published",
        /// A message for a subscription.
        Message(Message) = "message",
        /// A direct message.
        Direct(Direct) = "direct",
        /// Subscribers a publish_with_ack waits for.
        AckExpect(AckExpect) = "ack_expect",
        /// One subscriber's response.
        AckResponse(AckResponse) = "ack_response",
        /// Collection finished.
        AckDone(AckDone) = "ack_done",
        /// Answer to `ack_status`.
        AckState(AckState) = "ack_state",
        /// Answer to `delivery_status`.
        DeliveryState(DeliveryState) = "delivery_state",
        /// A copy became a dead letter.
        DeadLetter(DeadLetter) = "dead_letter",
        /// Keep-alive answer.
        Pong(Pong) = "pong",
        /// An error.
        Error(ErrorFrame) = "error",
    }
}
