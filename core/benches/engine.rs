//! Engine cost per message: an incoming QoS 1 `message` frame (128-byte payload, plain and
//! sealed) through `handle_frame`, the `Deliver` event, `complete_delivery` and the `ack` it
//! transmits; and an outgoing QoS 0 publish through `publish` and `poll_transmit`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sealbus::crypto::{Key, Keyring};
use sealbus::engine::{ConnAction, Data, Engine, EngineConfig, Event, Millis, PublishOptions};
use sealbus::protocol::{Auth, Codec, Message, Payload, Qos, ServerFrame};
use std::hint::black_box;

const NOW: Millis = Millis(1_000);

fn connected(keyring: Option<Keyring>) -> Engine {
    let mut config = EngineConfig::new("demo", Auth::Password("pw".into()));
    config.client_id = Some("me".into());
    config.keyring = keyring;
    let mut engine = Engine::new(config, 1);
    assert_eq!(engine.poll_connection(), Some(ConnAction::Connect));
    engine.handle_connected(NOW);
    while engine.poll_transmit().is_some() {}
    engine.handle_frame(
        r#"{"type":"welcome","v":1,"session":"demo","client_id":"me","epoch":"e1","limits":{"max_frame_bytes":1048576,"max_message_bytes":262144,"max_subscriptions":100,"max_inflight":1000,"keepalive_ms":30000,"retry_interval_ms":5000,"max_retries":3}}"#,
        NOW,
    );
    engine.subscribe("sensors/#", NOW).unwrap();
    let subscribe = engine.poll_transmit().unwrap();
    let id: serde_json::Value = serde_json::from_str(&subscribe).unwrap();
    engine.handle_frame(
        &format!(
            r#"{{"type":"subscribed","id":{},"filter":"sensors/#","position":{{"epoch":"e1","offset":0}}}}"#,
            id["id"]
        ),
        NOW,
    );
    while engine.poll_event().is_some() {}
    engine
}

fn message_frame(data: Payload) -> String {
    Codec::encode_server(&ServerFrame::Message(Message {
        topic: "sensors/kitchen/temp".into(),
        data,
        from: "sensor-1".into(),
        ts: 1_795_000_000_000,
        offset: Some(1),
        mid: Some("m1".into()),
        qos: Qos::AtLeastOnce,
        did: Some(1),
        aid: None,
        retained: false,
        replay: false,
        dup: false,
    }))
    .unwrap()
}

fn receive(engine: &mut Engine, frame: &str) {
    engine.handle_frame(frame, NOW);
    while let Some(event) = engine.poll_event() {
        if let Event::Deliver {
            token: Some(token),
            message,
            ..
        } = event
        {
            black_box(&message);
            engine.complete_delivery(token, Ok(()), NOW);
        }
    }
    while let Some(ack) = engine.poll_transmit() {
        black_box(ack);
    }
}

fn bench(c: &mut Criterion) {
    let key = Key::from_bytes(&[7; 32]).unwrap();
    let keyring = Keyring::with_key(key);
    let mut sealed_plaintext = vec![0x00];
    sealed_plaintext.extend_from_slice(&[42; 128]);
    let plain = message_frame(Payload::Bytes(vec![42; 128]));
    let sealed = message_frame(Payload::Sealed(
        keyring
            .seal("sensors/kitchen/temp", &sealed_plaintext)
            .unwrap(),
    ));

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    let mut engine = connected(None);
    group.bench_function("receive_qos1_128B_plain", |b| {
        b.iter(|| receive(&mut engine, &plain))
    });
    let mut engine = connected(Some(keyring.clone()));
    group.bench_function("receive_qos1_128B_sealed", |b| {
        b.iter(|| receive(&mut engine, &sealed))
    });
    for (name, keyring, encrypt) in [
        ("publish_qos0_128B_plain", None, false),
        ("publish_qos0_128B_sealed", Some(keyring), true),
    ] {
        let mut engine = connected(keyring);
        let options = PublishOptions {
            encrypt,
            ..PublishOptions::default()
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                engine
                    .publish(
                        "sensors/kitchen/temp",
                        Data::Bytes(vec![42; 128]),
                        options,
                        NOW,
                    )
                    .unwrap();
                while let Some(frame) = engine.poll_transmit() {
                    black_box(frame);
                }
                while engine.poll_event().is_some() {}
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
