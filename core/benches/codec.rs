//! Codec throughput: encode + decode of a publish frame with a 128-byte payload.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sealbus::protocol::{ClientFrame, Codec, Message, Payload, Publish, Qos, ServerFrame};
use std::hint::black_box;

fn publish_frame() -> ClientFrame {
    ClientFrame::Publish(Publish {
        id: Some(123_456),
        mid: Some("m-000123456".into()),
        topic: "tenant-7/sensors/kitchen/temp".into(),
        data: Payload::Bytes((0..128u8).collect()),
        qos: Qos::AtLeastOnce,
        retain: false,
        ack: None,
        notify_dead: false,
    })
}

fn codec(c: &mut Criterion) {
    let codec = Codec::default();
    let frame = publish_frame();
    let text = Codec::encode_client(&frame).unwrap();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("publish_128B/encode+decode", |b| {
        b.iter(|| {
            let text = Codec::encode_client(black_box(&frame)).unwrap();
            black_box(codec.decode_client(text.as_bytes()).unwrap())
        })
    });
    group.bench_function("publish_128B/decode", |b| {
        b.iter(|| black_box(codec.decode_client(black_box(text.as_bytes())).unwrap()))
    });
    // The same frame with `type` last: the decoder's buffered fallback path.
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).unwrap();
    let tag = object.shift_remove("type").unwrap();
    object.insert("type".into(), tag);
    let type_last = serde_json::to_string(&object).unwrap();
    group.bench_function("publish_128B/decode_type_last", |b| {
        b.iter(|| {
            black_box(
                codec
                    .decode_client(black_box(type_last.as_bytes()))
                    .unwrap(),
            )
        })
    });
    group.bench_function("publish_128B/encode", |b| {
        b.iter(|| black_box(Codec::encode_client(black_box(&frame)).unwrap()))
    });
    let json = ClientFrame::Publish(Publish {
        data: Payload::Json(
            serde_json::json!({"celsius": 21.5, "room": "kitchen", "seq": 1234567, "ok": true, "note": "0123456789012345678901234567890123456789012345678"}),
        ),
        ..match publish_frame() {
            ClientFrame::Publish(p) => p,
            _ => unreachable!(),
        }
    });
    group.bench_function("publish_json_128B/encode+decode", |b| {
        b.iter(|| {
            let text = Codec::encode_client(black_box(&json)).unwrap();
            black_box(codec.decode_client(text.as_bytes()).unwrap())
        })
    });
    let message = ServerFrame::Message(Message {
        topic: "tenant-7/sensors/kitchen/temp".into(),
        data: Payload::Bytes((0..128u8).collect()),
        from: "sensor-12".into(),
        ts: 1_795_000_000_000,
        offset: Some(987_654),
        mid: Some("m-000123456".into()),
        qos: Qos::AtLeastOnce,
        did: Some(55),
        aid: None,
        retained: false,
        replay: false,
        dup: false,
    });
    group.bench_function("message_128B/encode+decode", |b| {
        b.iter(|| {
            let text = Codec::encode_server(black_box(&message)).unwrap();
            black_box(codec.decode_server(text.as_bytes()).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
