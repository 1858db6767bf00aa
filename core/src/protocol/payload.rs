//! Message payloads and quality of service.
//!
//! A payload is one of three kinds, written on the wire as a one-key JSON object:
//!
//! * `{"json": <any JSON value>}`: structured data, forwarded as the same JSON value (object key
//!   order included);
//! * `{"bytes": "<base64>"}`: raw bytes, standard base64 with padding;
//! * `{"sealed": "<base64>"}`: an end-to-end envelope (see `docs/SECURITY.md`); only the clients
//!   holding the key can open it, the server forwards it untouched.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The data carried by a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// Any JSON value.
    Json(serde_json::Value),
    /// Raw bytes (base64 on the wire).
    Bytes(#[serde(with = "base64_bytes")] Vec<u8>),
    /// An end-to-end encrypted envelope (base64 on the wire).
    Sealed(#[serde(with = "base64_bytes")] Vec<u8>),
}

impl Payload {
    /// The payload's size as the server counts it against `max_message_bytes`: the length of the
    /// JSON text for `json`, the number of decoded bytes for `bytes` and `sealed`.
    pub fn size(&self) -> usize {
        match self {
            Payload::Json(value) => json_text_len(value),
            Payload::Bytes(bytes) | Payload::Sealed(bytes) => bytes.len(),
        }
    }

    /// Whether the payload is empty (an empty retained payload clears the retained message).
    pub fn is_empty(&self) -> bool {
        match self {
            Payload::Json(serde_json::Value::Null) => true,
            Payload::Json(serde_json::Value::String(s)) => s.is_empty(),
            Payload::Json(_) => false,
            Payload::Bytes(bytes) | Payload::Sealed(bytes) => bytes.is_empty(),
        }
    }
}

fn json_text_len(value: &serde_json::Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` into an infallible writer cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Quality of service of a publish: `0` at most once, `1` at least once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Qos {
    /// Fire and forget: delivered to the subscribers connected now, never stored or retried.
    #[default]
    AtMostOnce,
    /// Stored by the server and retried until each subscriber acknowledges it.
    AtLeastOnce,
}

impl Qos {
    /// The numeric form used on the wire.
    pub const fn as_u8(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }

    /// Whether this is QoS 0 (used to omit the default on the wire).
    pub fn is_at_most_once(&self) -> bool {
        *self == Qos::AtMostOnce
    }
}

impl Serialize for Qos {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.as_u8())
    }
}

impl<'de> Deserialize<'de> for Qos {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match u8::deserialize(deserializer)? {
            0 => Ok(Qos::AtMostOnce),
            1 => Ok(Qos::AtLeastOnce),
            other => Err(de::Error::custom(format!(
                "qos must be 0 or 1, not {other}"
            ))),
        }
    }
}

/// Serde helpers that write bytes as standard base64 text.
pub(crate) mod base64_bytes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        // Streams the base64 text into the output instead of building a temporary string.
        serializer.collect_str(&base64::display::Base64Display::new(bytes, &BASE64))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct Base64Visitor;
        impl Visitor<'_> for Base64Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
                BASE64
                    .decode(text)
                    .map_err(|err| E::custom(format!("invalid base64: {err}")))
            }
        }
        deserializer.deserialize_str(Base64Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_kinds_have_their_wire_form() {
        let cases = [
            (
                Payload::Json(json!({"b": 1, "a": [true, null]})),
                r#"{"json":{"b":1,"a":[true,null]}}"#,
            ),
            (Payload::Bytes(vec![0, 255, 1]), r#"{"bytes":"AP8B"}"#),
            (Payload::Sealed(vec![1, 2, 3]), r#"{"sealed":"AQID"}"#),
        ];
        for (payload, text) in cases {
            assert_eq!(serde_json::to_string(&payload).unwrap(), text);
            assert_eq!(serde_json::from_str::<Payload>(text).unwrap(), payload);
        }
    }

    #[test]
    fn object_key_order_is_kept() {
        let text = r#"{"json":{"z":1,"a":2,"m":{"y":0,"b":0}}}"#;
        let payload: Payload = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&payload).unwrap(), text);
    }

    #[test]
    fn bad_base64_and_bad_qos_are_rejected() {
        assert!(serde_json::from_str::<Payload>(r#"{"bytes":"not base64!"}"#).is_err());
        assert!(serde_json::from_str::<Payload>(r#"{"other":"AA=="}"#).is_err());
        assert!(serde_json::from_str::<Qos>("2").is_err());
        assert!(serde_json::from_str::<Qos>("-1").is_err());
        assert_eq!(serde_json::from_str::<Qos>("1").unwrap(), Qos::AtLeastOnce);
    }

    #[test]
    fn size_and_emptiness() {
        assert_eq!(Payload::Json(json!("ab")).size(), 4);
        assert_eq!(Payload::Bytes(vec![0; 10]).size(), 10);
        assert!(Payload::Json(json!(null)).is_empty());
        assert!(Payload::Json(json!("")).is_empty());
        assert!(Payload::Bytes(vec![]).is_empty());
        assert!(!Payload::Json(json!(0)).is_empty());
    }
}
