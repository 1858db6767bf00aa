//! Wire protocol v1: frames, payloads, the JSON codec and the stable error codes.
//!
//! A Sealbus connection is a WebSocket with the subprotocol [`SUBPROTOCOL`] carrying one JSON
//! object per text message, or several separated by [`FRAME_SEPARATOR`] between peers that
//! announced batches ([`split_frames`]). `docs/PROTOCOL.md` is the contract; these types are its
//! code.
//!
//! ```
//! use sealbus::protocol::{ClientFrame, Codec, Payload, Publish, Qos};
//!
//! let frame = ClientFrame::Publish(Publish {
//!     id: Some(1),
//!     mid: None,
//!     topic: "sensors/kitchen/temp".into(),
//!     data: Payload::Json(serde_json::json!({"celsius": 21.5})),
//!     qos: Qos::AtLeastOnce,
//!     retain: false,
//!     ack: None,
//!     notify_dead: false,
//! });
//! let text = Codec::encode_client(&frame)?;
//! assert_eq!(Codec::default().decode_client(text.as_bytes())?, frame);
//! # Ok::<(), sealbus::protocol::ProtocolError>(())
//! ```

mod ack_text;
mod answers;
mod client_frames;
mod code;
mod codec;
mod error;
mod payload;
mod server_frames;
mod validate;

pub(crate) use codec::frame_enum;

pub use answers::{
    AckResponseRef, MessageRef, push_ack_response, push_with_delivery, with_delivery,
};
pub use client_frames::{
    Ack, AckCancel, AckRequest, AckStatus, Auth, Bye, ClientFrame, DeliveryStatus, Hello, Ping,
    Position, Publish, Send, Subscribe, Unsubscribe,
};
pub use code::ErrorCode;
pub use codec::Codec;
pub use error::ProtocolError;
pub use payload::{Payload, Qos};
pub use server_frames::{
    AckDone, AckExpect, AckOutcome, AckResponse, AckState, CopyState, CopyStatus, DeadLetter,
    DeliveryState, Direct, ErrorFrame, Limits, Message, Pong, Published, Recovery, ServerFrame,
    Subscribed, Unsubscribed, Welcome,
};
pub use validate::{validate_client_id, validate_message_id, validate_session_name};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol of protocol v1.
pub const SUBPROTOCOL: &str = "sealbus.v1";

/// Default frame size limit (1 MiB); sessions may announce a different one in `welcome`.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 1024 * 1024;

/// Largest request id, delivery id, ack id or offset: 2^53 - 1, so every language's JSON numbers
/// carry it exactly.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// Longest client id in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;

/// Longest message id in bytes.
pub const MAX_MESSAGE_ID_BYTES: usize = 64;

/// Longest session name in bytes.
pub const MAX_SESSION_NAME_BYTES: usize = 64;

/// Longest error text in an `ack` (longer texts are rejected; clients truncate before sending).
pub const MAX_ERROR_TEXT_BYTES: usize = 1024;

/// Longest password or token in bytes.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;

/// Longest publish_with_ack timeout: one hour.
pub const MAX_ACK_TIMEOUT_MS: u64 = 3_600_000;

/// Separates the frames of one WebSocket message, between peers that announced they read
/// batches (`hello.batch`, `welcome.batch`). Compact JSON never contains a raw line feed.
pub const FRAME_SEPARATOR: char = '\n';

/// The frames of one WebSocket text message, in order: the text split at
/// [`FRAME_SEPARATOR`], empty pieces skipped. A message of one frame yields that frame.
///
/// ```
/// let frames: Vec<&str> = sealbus::protocol::split_frames("{\"type\":\"ping\",\"id\":1}\n{\"type\":\"ping\",\"id\":2}").collect();
/// assert_eq!(frames, ["{\"type\":\"ping\",\"id\":1}", "{\"type\":\"ping\",\"id\":2}"]);
/// ```
pub fn split_frames(text: &str) -> impl Iterator<Item = &str> {
    text.split(FRAME_SEPARATOR)
        .filter(|frame| !frame.is_empty())
}

/// Appends `frame` to `message`, a message of several frames being built, after a
/// [`FRAME_SEPARATOR`], unless that would make it longer than `limit` bytes. An empty message
/// takes any frame. Returns whether `frame` was added ([`split_frames`] undoes it).
///
/// ```
/// use sealbus::protocol::join_frame;
/// let mut message = String::new();
/// assert!(join_frame(&mut message, "{\"a\":1}", 16));
/// assert!(join_frame(&mut message, "{\"b\":2}", 16));
/// assert!(!join_frame(&mut message, "{\"c\":3}", 16), "over the limit");
/// assert_eq!(message, "{\"a\":1}\n{\"b\":2}");
/// ```
pub fn join_frame(message: &mut String, frame: &str, limit: usize) -> bool {
    if message.is_empty() {
        message.push_str(frame);
        return true;
    }
    if message.len() + 1 + frame.len() > limit {
        return false;
    }
    message.push(FRAME_SEPARATOR);
    message.push_str(frame);
    true
}

/// Cuts `text` to at most `max` bytes on a character boundary, for error messages.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
