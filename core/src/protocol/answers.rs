//! Hand-written JSON for the frames a server sends most: `message`, `published`,
//! `ack_response`, `ack_done` and `ack_expect`; and [`with_delivery`], which adds a copy's own
//! fields to a `message` frame encoded once for all its subscribers.
//!
//! A publish_with_ack round trip with 10 subscribers sends 12 of them to its publisher; through
//! serde each cost a few hundred nanoseconds of generic machinery. These writers produce the
//! same bytes as serde_json (same field order and escaping; tested against it), so either may
//! encode any frame. `message`, `ack_response` and `ack_expect` are written from borrowed
//! fields ([`MessageRef`], [`AckResponseRef`], ids as `&str`), so that a server encodes them
//! from what it holds without copying it into a frame first.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::code::ErrorCode;
use super::payload::{Payload, Qos};
use super::server_frames::{AckDone, AckOutcome, AckResponse, Message, Published};

/// A `message` frame's fields, borrowed: a server that keeps its messages in its own type
/// encodes their frame from it ([`Codec::encode_message`](super::Codec::encode_message))
/// without first cloning topic, payload, sender and message id into a [`Message`].
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    /// The topic it was published to.
    pub topic: &'a str,
    /// The data.
    pub data: &'a Payload,
    /// Client id of the publisher.
    pub from: &'a str,
    /// Server time of publishing, milliseconds since the Unix epoch.
    pub ts: u64,
    /// Offset in the session stream.
    pub offset: Option<u64>,
    /// Message id.
    pub mid: Option<&'a str>,
    /// Quality of service of this copy.
    pub qos: Qos,
    /// Delivery id (QoS 1).
    pub did: Option<u64>,
    /// Ack id (publish_with_ack).
    pub aid: Option<u64>,
    /// The topic's retained message, sent on subscribe.
    pub retained: bool,
    /// Replayed from history.
    pub replay: bool,
    /// A redelivery.
    pub dup: bool,
}

impl<'a> From<&'a Message> for MessageRef<'a> {
    fn from(frame: &'a Message) -> Self {
        MessageRef {
            topic: &frame.topic,
            data: &frame.data,
            from: &frame.from,
            ts: frame.ts,
            offset: frame.offset,
            mid: frame.mid.as_deref(),
            qos: frame.qos,
            did: frame.did,
            aid: frame.aid,
            retained: frame.retained,
            replay: frame.replay,
            dup: frame.dup,
        }
    }
}

impl MessageRef<'_> {
    /// The owned frame.
    pub fn to_message(&self) -> Message {
        Message {
            topic: self.topic.to_owned(),
            data: self.data.clone(),
            from: self.from.to_owned(),
            ts: self.ts,
            offset: self.offset,
            mid: self.mid.map(str::to_owned),
            qos: self.qos,
            did: self.did,
            aid: self.aid,
            retained: self.retained,
            replay: self.replay,
            dup: self.dup,
        }
    }
}

/// `text` as a JSON string, escaped as serde_json escapes it.
fn push_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..at]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = at + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// Appends `n` in decimal.
fn push_number(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// Appends `,"key":n`.
fn push_field(out: &mut String, key: &str, n: u64) {
    out.push_str(key);
    push_number(out, n);
}

/// Adds a subscriber's own fields (`did`, `aid`, `dup`) to a `message` frame's JSON text
/// encoded once for every subscriber. The frame is a JSON object and field order carries no
/// meaning, so they go in before its closing brace; this spares encoding the whole message
/// (payload included) once per subscriber. `None` if `frame` does not end with `}`.
pub fn with_delivery(frame: &str, did: Option<u64>, aid: Option<u64>, dup: bool) -> Option<String> {
    let mut out = String::with_capacity(frame.len() + 64);
    push_with_delivery(&mut out, frame, did, aid, dup).then_some(out)
}

/// [`with_delivery`] appending to `out` (a message being built of several frames); `false`, and
/// `out` unchanged, if `frame` does not end with `}`.
pub fn push_with_delivery(
    out: &mut String,
    frame: &str,
    did: Option<u64>,
    aid: Option<u64>,
    dup: bool,
) -> bool {
    let Some(body) = frame.strip_suffix('}') else {
        return false;
    };
    out.push_str(body);
    if let Some(did) = did {
        push_field(out, ",\"did\":", did);
    }
    if let Some(aid) = aid {
        push_field(out, ",\"aid\":", aid);
    }
    if dup {
        out.push_str(",\"dup\":true");
    }
    out.push('}');
    true
}

/// A `message` frame (encoded once per publish, under the session's lock: through serde it was
/// 6% of the server's samples under QoS 1 load). `None` only if a JSON payload fails to
/// serialize, which serde_json's values never do; the caller then falls back to serde.
pub(super) fn message(frame: &MessageRef<'_>) -> Option<String> {
    let payload = match frame.data {
        Payload::Json(value) => Some(serde_json::to_string(value).ok()?),
        Payload::Bytes(_) | Payload::Sealed(_) => None,
    };
    let data_len = match (frame.data, &payload) {
        (_, Some(text)) => text.len(),
        (Payload::Bytes(bytes) | Payload::Sealed(bytes), None) => bytes.len().div_ceil(3) * 4,
        (Payload::Json(_), None) => 0,
    };
    let mid_len = frame.mid.map_or(0, str::len);
    let mut out =
        String::with_capacity(160 + frame.topic.len() + frame.from.len() + mid_len + data_len);
    out.push_str("{\"type\":\"message\",\"topic\":");
    push_string(&mut out, frame.topic);
    match (frame.data, payload) {
        (_, Some(text)) => {
            out.push_str(",\"data\":{\"json\":");
            out.push_str(&text);
        }
        (Payload::Bytes(bytes), None) => {
            out.push_str(",\"data\":{\"bytes\":\"");
            BASE64.encode_string(bytes, &mut out);
            out.push('"');
        }
        (Payload::Sealed(bytes), None) => {
            out.push_str(",\"data\":{\"sealed\":\"");
            BASE64.encode_string(bytes, &mut out);
            out.push('"');
        }
        (Payload::Json(_), None) => return None,
    }
    out.push_str("},\"from\":");
    push_string(&mut out, frame.from);
    push_field(&mut out, ",\"ts\":", frame.ts);
    if let Some(offset) = frame.offset {
        push_field(&mut out, ",\"offset\":", offset);
    }
    if let Some(mid) = frame.mid {
        out.push_str(",\"mid\":");
        push_string(&mut out, mid);
    }
    if frame.qos != Qos::AtMostOnce {
        push_field(&mut out, ",\"qos\":", u64::from(frame.qos.as_u8()));
    }
    if let Some(did) = frame.did {
        push_field(&mut out, ",\"did\":", did);
    }
    if let Some(aid) = frame.aid {
        push_field(&mut out, ",\"aid\":", aid);
    }
    for (set, field) in [
        (frame.retained, ",\"retained\":true"),
        (frame.replay, ",\"replay\":true"),
        (frame.dup, ",\"dup\":true"),
    ] {
        if set {
            out.push_str(field);
        }
    }
    out.push('}');
    Some(out)
}

pub(super) fn published(frame: &Published) -> String {
    let mut out = String::with_capacity(64 + frame.mid.len());
    out.push_str("{\"type\":\"published\"");
    push_field(&mut out, ",\"id\":", frame.id);
    out.push_str(",\"mid\":");
    push_string(&mut out, &frame.mid);
    if let Some(offset) = frame.offset {
        push_field(&mut out, ",\"offset\":", offset);
    }
    if frame.duplicate {
        out.push_str(",\"duplicate\":true");
    }
    if frame.queued {
        out.push_str(",\"queued\":true");
    }
    out.push('}');
    out
}

/// An `ack_response` frame's fields, borrowed: a server relays each subscriber's answer without
/// first copying the subscriber's id into an [`AckResponse`].
#[derive(Debug, Clone, Copy)]
pub struct AckResponseRef<'a> {
    /// Ack id.
    pub aid: u64,
    /// The answering subscriber's client id.
    pub from: &'a str,
    /// Whether its handler succeeded.
    pub ok: bool,
    /// Error code when it did not.
    pub code: Option<ErrorCode>,
    /// Error text when it did not.
    pub error: Option<&'a str>,
}

impl<'a> From<&'a AckResponse> for AckResponseRef<'a> {
    fn from(frame: &'a AckResponse) -> Self {
        AckResponseRef {
            aid: frame.aid,
            from: &frame.from,
            ok: frame.ok,
            code: frame.code,
            error: frame.error.as_deref(),
        }
    }
}

pub(super) fn ack_response(frame: &AckResponseRef<'_>) -> String {
    let extra = frame.error.map_or(0, str::len);
    let mut out = String::with_capacity(64 + frame.from.len() + extra);
    push_ack_response(&mut out, frame);
    out
}

/// Appends the `ack_response` frame [`Codec::encode_ack_response`](super::Codec::encode_ack_response)
/// returns to `out`: a server's writer builds it straight into the message it is joining,
/// without a frame of its own per answer.
pub fn push_ack_response(out: &mut String, frame: &AckResponseRef<'_>) {
    out.push_str("{\"type\":\"ack_response\"");
    push_field(out, ",\"aid\":", frame.aid);
    out.push_str(",\"from\":");
    push_string(out, frame.from);
    out.push_str(if frame.ok {
        ",\"ok\":true"
    } else {
        ",\"ok\":false"
    });
    if let Some(code) = frame.code {
        push_field(out, ",\"code\":", u64::from(code.number()));
    }
    if let Some(error) = frame.error {
        out.push_str(",\"error\":");
        push_string(out, error);
    }
    out.push('}');
}

pub(super) fn ack_done(frame: &AckDone) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("{\"type\":\"ack_done\"");
    push_field(&mut out, ",\"aid\":", frame.aid);
    out.push_str(match frame.outcome {
        AckOutcome::Complete => ",\"outcome\":\"complete\"}",
        AckOutcome::Timeout => ",\"outcome\":\"timeout\"}",
        AckOutcome::Cancelled => ",\"outcome\":\"cancelled\"}",
    });
    out
}

pub(super) fn ack_expect<'a, I>(id: u64, aid: u64, expected: I) -> String
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    let expected = expected.into_iter();
    let names: usize = expected.clone().map(|id| id.len() + 3).sum();
    let mut out = String::with_capacity(64 + names);
    out.push_str("{\"type\":\"ack_expect\"");
    push_field(&mut out, ",\"id\":", id);
    push_field(&mut out, ",\"aid\":", aid);
    out.push_str(",\"expected\":[");
    for (index, id) in expected.enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_string(&mut out, id);
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{AckExpect, Codec, ServerFrame};
    use super::*;

    fn serde_text(frame: &ServerFrame) -> String {
        serde_json::to_string(frame).unwrap_or_default()
    }

    fn outcome() -> impl Strategy<Value = AckOutcome> {
        prop_oneof![
            Just(AckOutcome::Complete),
            Just(AckOutcome::Timeout),
            Just(AckOutcome::Cancelled)
        ]
    }

    /// Payloads of each kind; JSON ones with nesting, escapes and numbers of every sort.
    fn payload() -> impl Strategy<Value = Payload> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            text().prop_map(serde_json::Value::from),
        ];
        let json = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::vec((text(), inner), 0..4)
                    .prop_map(|pairs| serde_json::Value::Object(pairs.into_iter().collect())),
            ]
        });
        let bytes = prop::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            json.prop_map(Payload::Json),
            bytes.clone().prop_map(Payload::Bytes),
            bytes.prop_map(Payload::Sealed),
        ]
    }

    /// Any text, with a good share of quotes, backslashes and control characters.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é€😀/]{0,12}"]
    }

    proptest! {
        #[test]
        fn a_copy_is_its_message_with_its_own_fields(
            topic in "[a-z/]{1,12}", from in text(), mid in prop::option::of(text()),
            data in prop::collection::vec(any::<u8>(), 0..40), offset in any::<Option<u64>>(),
            did in prop::option::of(0u64..1 << 53), aid in prop::option::of(0u64..1 << 53),
            dup in any::<bool>(),
        ) {
            let message = Message {
                topic, data: Payload::Bytes(data), from, ts: 1, offset, mid,
                qos: Qos::AtLeastOnce, did: None, aid: None, retained: false, replay: false,
                dup: false,
            };
            let shared = serde_text(&ServerFrame::Message(message.clone()));
            let copy = with_delivery(&shared, did, aid, dup).unwrap_or_default();
            let decoded = Codec::new(usize::MAX).decode_server(copy.as_bytes());
            let expected = ServerFrame::Message(Message { did, aid, dup, ..message });
            prop_assert_eq!(decoded.ok(), Some(expected));
        }

        #[test]
        fn message_is_what_serde_writes(
            topic in text(), from in text(), mid in prop::option::of(text()),
            data in payload(), ts in any::<u64>(), offset in any::<Option<u64>>(),
            qos in prop::sample::select(vec![Qos::AtMostOnce, Qos::AtLeastOnce]),
            did in any::<Option<u64>>(), aid in any::<Option<u64>>(),
            flags in any::<(bool, bool, bool)>(),
        ) {
            let (retained, replay, dup) = flags;
            let frame = Message {
                topic, data, from, ts, offset, mid, qos, did, aid, retained, replay, dup,
            };
            let view = MessageRef::from(&frame);
            prop_assert_eq!(view.to_message(), frame.clone(), "the view owns what it borrows");
            prop_assert_eq!(message(&view), Some(serde_text(&ServerFrame::Message(frame))));
        }

        #[test]
        fn published_is_what_serde_writes(
            id in any::<u64>(), mid in text(), offset in any::<Option<u64>>(),
            duplicate in any::<bool>(), queued in any::<bool>(),
        ) {
            let frame = Published { id, mid, offset, duplicate, queued };
            prop_assert_eq!(published(&frame), serde_text(&ServerFrame::Published(frame)));
        }

        #[test]
        fn ack_response_is_what_serde_writes(
            aid in any::<u64>(), from in text(), ok in any::<bool>(),
            code in prop::option::of(prop::sample::select(vec![
                ErrorCode::Disconnected, ErrorCode::HandlerFailed, ErrorCode::Internal,
            ])),
            error in prop::option::of(text()),
        ) {
            let frame = AckResponse { aid, from, ok, code, error };
            let text = ack_response(&AckResponseRef::from(&frame));
            let mut joined = String::from("{}\n");
            push_ack_response(&mut joined, &AckResponseRef::from(&frame));
            prop_assert_eq!(joined, format!("{{}}\n{text}"), "appended as encoded");
            prop_assert_eq!(text, serde_text(&ServerFrame::AckResponse(frame)));
        }

        #[test]
        fn ack_done_and_ack_expect_are_what_serde_writes(
            id in any::<u64>(), aid in any::<u64>(), outcome in outcome(),
            expected in prop::collection::vec(text(), 0..5),
        ) {
            let done = AckDone { aid, outcome };
            prop_assert_eq!(ack_done(&done), serde_text(&ServerFrame::AckDone(done)));
            let expect = AckExpect { id, aid, expected };
            prop_assert_eq!(
                ack_expect(id, aid, expect.expected.iter().map(String::as_str)),
                serde_text(&ServerFrame::AckExpect(expect))
            );
        }
    }

    #[test]
    fn only_an_object_takes_delivery_fields() {
        assert_eq!(with_delivery("[]", Some(1), None, false), None);
        assert_eq!(
            with_delivery("{\"type\":\"message\"}", Some(7), Some(3), true).as_deref(),
            Some("{\"type\":\"message\",\"did\":7,\"aid\":3,\"dup\":true}")
        );
    }

    #[test]
    fn pushing_delivery_fields_appends_what_with_delivery_returns() {
        let mut out = String::from("{\"type\":\"pong\",\"id\":1}\n");
        assert!(!push_with_delivery(&mut out, "[]", Some(1), None, false));
        assert_eq!(
            out, "{\"type\":\"pong\",\"id\":1}\n",
            "unchanged after a refusal"
        );
        let frame = "{\"type\":\"message\",\"topic\":\"t\"}";
        assert!(push_with_delivery(&mut out, frame, Some(8), None, true));
        assert_eq!(
            out,
            format!(
                "{{\"type\":\"pong\",\"id\":1}}\n{}",
                with_delivery(frame, Some(8), None, true).unwrap()
            )
        );
    }
}
