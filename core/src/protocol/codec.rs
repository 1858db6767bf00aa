//! The JSON codec: frame size check, parsing with typed errors, and encoding.
//!
//! Decoding takes a fast path when `type` is the first key of the frame object (as every Sealbus
//! encoder writes it): the rest of the object is read straight into the frame's struct. Any other
//! key order is accepted too, through a slower path that buffers the object first.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{
    AckResponseRef, ClientFrame, ErrorCode, MessageRef, ProtocolError, ServerFrame, ack_text,
    answers,
};

/// A set of frames distinguished by their `type` tag; implemented by `frame_enum!`.
pub(crate) trait FrameSet: Sized {
    /// What the decoder expected, for error messages.
    const EXPECTING: &'static str;

    /// Reads the rest of `map` as the frame tagged `tag`; `None` when the tag is unknown (the map
    /// is then left for the caller to drain).
    fn from_map<'de, A: MapAccess<'de>>(tag: &str, map: A) -> Result<Option<Self>, A::Error>;

    /// Reads a buffered frame object as the frame tagged `tag`; `None` when the tag is unknown.
    fn from_value(tag: &str, value: serde_json::Value) -> Result<Option<Self>, serde_json::Error>;
}

/// Declares a frame enum: serialization tagged with `type`, and the `FrameSet` decoding glue.
macro_rules! frame_enum {
    ($(#[$meta:meta])* $name:ident { $( $(#[$vdoc:meta])* $variant:ident($ty:ty) = $tag:literal, )* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        #[serde(tag = "type")]
        pub enum $name {
            $( $(#[$vdoc])* #[serde(rename = $tag)] $variant($ty), )*
        }

        impl $name {
            /// Every frame type tag of this direction.
            pub const TYPES: &'static [&'static str] = &[ $( $tag, )* ];

            /// The frame's `type` tag.
            pub fn type_name(&self) -> &'static str {
                match self { $( $name::$variant(_) => $tag, )* }
            }
        }

        impl super::codec::FrameSet for $name {
            const EXPECTING: &'static str = concat!("a ", stringify!($name), " object");

            fn from_map<'de, A: serde::de::MapAccess<'de>>(
                tag: &str,
                map: A,
            ) -> Result<Option<Self>, A::Error> {
                use serde::Deserialize as _;
                let inner = serde::de::value::MapAccessDeserializer::new(map);
                Ok(Some(match tag {
                    $( $tag => $name::$variant(<$ty>::deserialize(inner)?), )*
                    _ => return Ok(None),
                }))
            }

            fn from_value(
                tag: &str,
                value: serde_json::Value,
            ) -> Result<Option<Self>, serde_json::Error> {
                use serde::Deserialize as _;
                Ok(Some(match tag {
                    $( $tag => $name::$variant(<$ty>::deserialize(value)?), )*
                    _ => return Ok(None),
                }))
            }
        }
    };
}
pub(crate) use frame_enum;

/// A decoded frame object: a known frame, or the tag of an unknown one.
enum Decoded<F> {
    Known(F),
    Unknown(String),
}

impl<'de, F: FrameSet> Deserialize<'de> for Decoded<F> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FrameVisitor(PhantomData))
    }
}

struct FrameVisitor<F>(PhantomData<F>);

impl<'de, F: FrameSet> Visitor<'de> for FrameVisitor<F> {
    type Value = Decoded<F>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(F::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Decoded<F>, A::Error> {
        let Some(first) = map.next_key::<Text<'de>>()? else {
            return Err(de::Error::missing_field("type"));
        };
        if first.0 == "type" {
            let tag = map.next_value::<Text<'de>>()?;
            return match F::from_map(&tag.0, &mut map)? {
                Some(frame) => Ok(Decoded::Known(frame)),
                None => {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(Decoded::Unknown(tag.0.into_owned()))
                }
            };
        }
        let mut object = serde_json::Map::new();
        object.insert(first.0.into_owned(), map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            if object.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!("duplicate field `{key}`")));
            }
        }
        let tag = match object.get("type") {
            Some(serde_json::Value::String(tag)) => tag.clone(),
            Some(_) => return Err(de::Error::custom("field `type` must be a string")),
            None => return Err(de::Error::missing_field("type")),
        };
        match F::from_value(&tag, serde_json::Value::Object(object)) {
            Ok(Some(frame)) => Ok(Decoded::Known(frame)),
            Ok(None) => Ok(Decoded::Unknown(tag)),
            Err(err) => Err(de::Error::custom(err)),
        }
    }
}

/// A string that borrows from the input when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// Reads only the `id` of a frame that failed to decode, so the error can name the request.
#[derive(serde::Deserialize)]
struct IdProbe {
    #[serde(default)]
    id: Option<u64>,
}

/// Encodes and decodes frames, enforcing the frame size limit before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    max_frame_bytes: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new(super::DEFAULT_MAX_FRAME_BYTES as usize)
    }
}

impl Codec {
    /// A codec that rejects frames longer than `max_frame_bytes`.
    pub const fn new(max_frame_bytes: usize) -> Self {
        Codec { max_frame_bytes }
    }

    /// The frame size limit in bytes.
    pub const fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Decodes and validates a frame sent by a client.
    pub fn decode_client(&self, bytes: &[u8]) -> Result<ClientFrame, ProtocolError> {
        self.decode_client_text(self.check(bytes)?)
    }

    /// [`decode_client`](Self::decode_client) for text already known to be UTF-8 (one frame
    /// of a message, see [`split_frames`](super::split_frames)).
    pub fn decode_client_text(&self, text: &str) -> Result<ClientFrame, ProtocolError> {
        self.check_size(text.len())?;
        let frame = match ack_text::parse(text) {
            Some(ack) => ClientFrame::Ack(ack),
            None => decode_text(text)?,
        };
        frame.validate()?;
        Ok(frame)
    }

    /// Decodes and validates a frame sent by the server.
    pub fn decode_server(&self, bytes: &[u8]) -> Result<ServerFrame, ProtocolError> {
        self.decode_server_text(self.check(bytes)?)
    }

    /// [`decode_server`](Self::decode_server) for text already known to be UTF-8 (one frame
    /// of a message, see [`split_frames`](super::split_frames)).
    pub fn decode_server_text(&self, text: &str) -> Result<ServerFrame, ProtocolError> {
        self.check_size(text.len())?;
        decode_text(text)
    }

    /// Encodes a client frame as JSON text.
    pub fn encode_client(frame: &ClientFrame) -> Result<String, ProtocolError> {
        encode(frame)
    }

    /// Encodes a server frame as JSON text.
    pub fn encode_server(frame: &ServerFrame) -> Result<String, ProtocolError> {
        // The frames a server sends most have hand-written encoders (same bytes as serde's).
        match frame {
            ServerFrame::Message(message) => match answers::message(&message.into()) {
                Some(text) => Ok(text),
                None => encode(frame),
            },
            ServerFrame::Published(published) => Ok(answers::published(published)),
            ServerFrame::AckResponse(response) => Ok(answers::ack_response(&response.into())),
            ServerFrame::AckDone(done) => Ok(answers::ack_done(done)),
            ServerFrame::AckExpect(expect) => Ok(answers::ack_expect(
                expect.id,
                expect.aid,
                expect.expected.iter().map(String::as_str),
            )),
            other => encode(other),
        }
    }

    /// Encodes a `message` frame from borrowed fields: the same text as
    /// [`encode_server`](Self::encode_server) of the owned frame, without building it.
    pub fn encode_message(message: &MessageRef<'_>) -> Result<String, ProtocolError> {
        match answers::message(message) {
            Some(text) => Ok(text),
            None => encode(&ServerFrame::Message(message.to_message())),
        }
    }

    /// Encodes an `ack_response` frame from borrowed fields (the same text as
    /// [`encode_server`](Self::encode_server) of the owned frame).
    pub fn encode_ack_response(response: &AckResponseRef<'_>) -> String {
        answers::ack_response(response)
    }

    /// Encodes an `ack_expect` frame answering request `id` with ack id `aid`, the expected
    /// subscribers' client ids borrowed (the same text as [`encode_server`](Self::encode_server)
    /// of the owned frame).
    pub fn encode_ack_expect<'a, I>(id: u64, aid: u64, expected: I) -> String
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: Clone,
    {
        answers::ack_expect(id, aid, expected)
    }

    fn check<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, ProtocolError> {
        self.check_size(bytes.len())?;
        std::str::from_utf8(bytes).map_err(|err| {
            ProtocolError::new(
                ErrorCode::MalformedFrame,
                None,
                format!("frame is not valid UTF-8: {err}"),
            )
        })
    }

    /// Checks a WebSocket message of `len` bytes against the frame size limit (which bounds a
    /// whole message, however many frames it carries): `frame_too_large` when over it.
    pub fn check_size(&self, len: usize) -> Result<(), ProtocolError> {
        if len > self.max_frame_bytes {
            return Err(ProtocolError::new(
                ErrorCode::FrameTooLarge,
                None,
                format!(
                    "frame of {len} bytes exceeds the limit of {} bytes",
                    self.max_frame_bytes
                ),
            ));
        }
        Ok(())
    }
}

pub(super) fn decode_text<F: FrameSet>(text: &str) -> Result<F, ProtocolError> {
    if !text.trim_start().starts_with('{') {
        return Err(ProtocolError::new(
            ErrorCode::MalformedFrame,
            None,
            "a frame must be a JSON object",
        ));
    }
    match serde_json::from_str::<Decoded<F>>(text) {
        Ok(Decoded::Known(frame)) => Ok(frame),
        Ok(Decoded::Unknown(tag)) => Err(ProtocolError::new(
            ErrorCode::UnknownFrameType,
            probe_id(text),
            format!("unknown frame type `{}`", super::truncate(&tag, 64)),
        )),
        Err(err) => {
            let code = match err.classify() {
                serde_json::error::Category::Data => ErrorCode::InvalidField,
                _ => ErrorCode::MalformedFrame,
            };
            let id = if code == ErrorCode::InvalidField {
                probe_id(text)
            } else {
                None
            };
            Err(ProtocolError::new(code, id, err.to_string()))
        }
    }
}

fn probe_id(text: &str) -> Option<u64> {
    serde_json::from_str::<IdProbe>(text)
        .ok()
        .and_then(|probe| probe.id)
}

fn encode<T: serde::Serialize>(frame: &T) -> Result<String, ProtocolError> {
    serde_json::to_string(frame).map_err(|err| {
        ProtocolError::new(
            ErrorCode::Internal,
            None,
            format!("frame could not be encoded: {err}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Payload, Publish, Qos};

    #[test]
    fn invalid_utf8_is_a_malformed_frame() {
        let err = Codec::default()
            .decode_client(b"{\"type\":\"ping\",\"x\":\"\xff\"}")
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedFrame);
        assert!(err.message.contains("UTF-8"), "{err}");
    }

    #[test]
    fn size_is_checked_before_parsing() {
        // Not JSON at all: only the size check can explain the error.
        let err = Codec::new(8).decode_client(&[b'x'; 9]).unwrap_err();
        assert_eq!(err.code, ErrorCode::FrameTooLarge);
        assert!(Codec::new(16).decode_client(br#"{"type":"ping"}"#).is_ok());
    }

    #[test]
    fn any_key_order_decodes_to_the_same_frame() {
        let first = br#"{"type":"publish","id":3,"topic":"a/b","data":{"json":[1]},"qos":1}"#;
        let last = br#"{"qos":1,"data":{"json":[1]},"topic":"a/b","id":3,"type":"publish"}"#;
        let codec = Codec::default();
        let expected = ClientFrame::Publish(Publish {
            id: Some(3),
            mid: None,
            topic: "a/b".into(),
            data: Payload::Json(serde_json::json!([1])),
            qos: Qos::AtLeastOnce,
            retain: false,
            ack: None,
            notify_dead: false,
        });
        assert_eq!(codec.decode_client(first).unwrap(), expected);
        assert_eq!(codec.decode_client(last).unwrap(), expected);
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let text = br#"{"type":"ping","id":4,"future":{"x":1}}"#;
        assert_eq!(
            Codec::default().decode_client(text).unwrap(),
            ClientFrame::Ping(crate::protocol::Ping { id: Some(4) })
        );
    }

    #[test]
    fn escaped_type_tags_decode() {
        let text = br#"{"type":"p\u0069ng"}"#;
        assert!(Codec::default().decode_client(text).is_ok());
    }
}
