//! Property tests: every frame survives encode then decode unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use sealbus::protocol::{
    Ack, AckRequest, ClientFrame, Codec, ErrorCode, Message, Payload, Publish, Qos, ServerFrame,
    Subscribe,
};
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((".{0,8}", inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        json_value().prop_map(Payload::Json),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Payload::Bytes),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Payload::Sealed),
    ]
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9é_ $-]{0,6}", 1..6)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("non-empty", |t| !t.is_empty())
}

fn id() -> impl Strategy<Value = u64> {
    0..=sealbus::protocol::MAX_ID
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (
            id(),
            topic(),
            payload(),
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(1..=3_600_000u64)
        )
            .prop_map(|(id, topic, data, qos1, retain, ack)| {
                ClientFrame::Publish(Publish {
                    id: Some(id),
                    mid: Some(format!("m{id}")),
                    topic,
                    data,
                    qos: if qos1 {
                        Qos::AtLeastOnce
                    } else {
                        Qos::AtMostOnce
                    },
                    retain,
                    ack: ack.map(|timeout_ms| AckRequest { timeout_ms }),
                    notify_dead: retain,
                })
            }),
        (id(), topic()).prop_map(|(id, filter)| ClientFrame::Subscribe(Subscribe {
            id,
            filter,
            since: None
        })),
        (
            proptest::option::of(id()),
            id(),
            any::<bool>(),
            proptest::option::of(".{0,40}")
        )
            .prop_map(|(did, aid, ok, error)| ClientFrame::Ack(Ack {
                did,
                aid: Some(aid),
                ok,
                code: (!ok).then_some(ErrorCode::HandlerFailed),
                error,
            })),
    ]
}

proptest! {
    #[test]
    fn client_frames_round_trip(frame in client_frame()) {
        let text = Codec::encode_client(&frame).unwrap();
        let decoded = Codec::new(usize::MAX).decode_client(text.as_bytes()).unwrap();
        prop_assert_eq!(decoded, frame);
    }

    #[test]
    fn message_frames_round_trip(
        topic in topic(),
        data in payload(),
        from in "[a-z0-9-]{1,12}",
        ts in any::<u64>(),
        offset in proptest::option::of(id()),
        did in proptest::option::of(id()),
        flags in any::<(bool, bool, bool)>(),
    ) {
        let frame = ServerFrame::Message(Message {
            topic, data, from, ts, offset, mid: None,
            qos: if did.is_some() { Qos::AtLeastOnce } else { Qos::AtMostOnce },
            did, aid: None, retained: flags.0, replay: flags.1, dup: flags.2,
        });
        let text = Codec::encode_server(&frame).unwrap();
        let decoded = Codec::new(usize::MAX).decode_server(text.as_bytes()).unwrap();
        prop_assert_eq!(decoded, frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let codec = Codec::new(150);
        let _ = codec.decode_client(&bytes);
        let _ = codec.decode_server(&bytes);
    }

    #[test]
    fn arbitrary_json_objects_never_panic_the_decoder(value in json_value(), tag in "[a-z_]{0,12}") {
        let mut object = serde_json::Map::new();
        object.insert("type".into(), Value::String(tag));
        if let Value::Object(rest) = value { object.extend(rest); }
        let text = serde_json::to_string(&Value::Object(object)).unwrap();
        let _ = Codec::default().decode_client(text.as_bytes());
    }
}
