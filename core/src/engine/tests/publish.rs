//! Publishing: QoS 0/1, limits, sealing, direct messages, the offline buffer.

use super::*;
use crate::protocol::ErrorCode;

fn json_data(value: Value) -> Data {
    Data::Json(value)
}

#[test]
fn qos0_is_sent_without_id_and_completes_at_once() {
    let mut h = Harness::connected(config());
    let op = h
        .engine
        .publish(
            "a/b",
            json_data(json!({"x": 1})),
            PublishOptions::default(),
            h.now,
        )
        .unwrap();
    assert_eq!(
        h.sent(),
        [json!({"type": "publish", "topic": "a/b", "data": {"json": {"x": 1}}})]
    );
    assert!(matches!(
        completion(&h.events(), op),
        Some(Ok(Outcome::Published { mid: None, .. }))
    ));
}

#[test]
fn qos1_carries_id_and_mid_and_resolves_on_published() {
    let mut h = Harness::connected(config());
    let options = PublishOptions {
        retain: true,
        notify_dead: true,
        ..qos1()
    };
    let op = h
        .engine
        .publish("a", Data::Bytes(vec![0, 1]), options, h.now)
        .unwrap();
    let sent = h.sent();
    let frame = &sent[0];
    assert_eq!(frame["qos"], 1);
    assert_eq!(frame["retain"], true);
    assert_eq!(frame["notify_dead"], true);
    assert_eq!(frame["data"], json!({"bytes": "AAE="}));
    let mid = frame["mid"].as_str().unwrap().to_owned();
    assert!(!mid.is_empty() && mid.len() <= 64);
    assert!(completion(&h.events(), op).is_none());
    h.feed(json!({"type": "published", "id": frame["id"], "mid": mid, "offset": 43}));
    assert_eq!(
        completion(&h.events(), op),
        Some(Ok(Outcome::Published {
            mid: Some(mid),
            offset: Some(43),
            duplicate: false,
            queued: false
        }))
    );
}

#[test]
fn message_ids_differ_between_publishes_and_between_clients() {
    let mut a = Harness::connected(config());
    let mut b = Harness {
        engine: Engine::new(config(), 2),
        now: Millis(0),
    };
    b.connect("e1");
    let mut mids = Vec::new();
    for h in [&mut a, &mut b] {
        for _ in 0..2 {
            h.engine
                .publish("a", json_data(json!(1)), qos1(), h.now)
                .unwrap();
        }
        mids.extend(h.sent_of("publish").into_iter().map(|f| f["mid"].clone()));
    }
    let unique: std::collections::HashSet<String> = mids.iter().map(|m| m.to_string()).collect();
    assert_eq!(unique.len(), 4, "{mids:?}");
}

#[test]
fn wildcard_topics_and_oversize_payloads_fail_before_sending() {
    let mut h = Harness::connected(config());
    let err = h
        .engine
        .publish("a/+", json_data(json!(1)), PublishOptions::default(), h.now)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidTopic);
    // The welcome said max_message_bytes = 1000.
    let err = h
        .engine
        .publish(
            "a",
            Data::Bytes(vec![0; 1001]),
            PublishOptions::default(),
            h.now,
        )
        .unwrap_err();
    assert_eq!(
        err,
        Error::MessageTooLarge {
            size: 1001,
            max: 1000
        }
    );
    assert_eq!(err.code(), ErrorCode::MessageTooLarge);
    assert!(
        h.engine
            .publish(
                "a",
                Data::Bytes(vec![0; 1000]),
                PublishOptions::default(),
                h.now
            )
            .is_ok()
    );
    // JSON data counts its compact text: "xx...x" with quotes.
    let err = h
        .engine
        .publish(
            "a",
            json_data(json!("x".repeat(999))),
            PublishOptions::default(),
            h.now,
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::MessageTooLarge);
}

#[test]
fn frames_over_max_frame_bytes_fail_before_sending() {
    let mut h = Harness::new(config());
    h.actions();
    h.engine.handle_connected(h.now);
    let mut welcome = welcome("e1");
    welcome["limits"]["max_frame_bytes"] = json!(1200);
    h.feed(welcome);
    h.sent();
    // 1000 bytes fit the message limit, but not as base64 in a 1200-byte frame.
    let err = h
        .engine
        .publish(
            "a",
            Data::Bytes(vec![0; 1000]),
            PublishOptions::default(),
            h.now,
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FrameTooLarge);
    assert!(h.sent().is_empty());
}

#[test]
fn server_errors_fail_the_publish_with_their_code() {
    let mut h = Harness::connected(config());
    let op = h
        .engine
        .publish("$sys/x", json_data(json!(1)), qos1(), h.now)
        .unwrap();
    let id = h.sent()[0]["id"].clone();
    h.feed(json!({"type": "error", "id": id, "code": 2003, "name": "forbidden", "message": "$"}));
    let err = completion(&h.events(), op).unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
}

#[test]
fn qos1_without_answer_times_out() {
    let mut h = Harness::connected(config());
    let op = h
        .engine
        .publish("a", json_data(json!(1)), qos1(), h.now)
        .unwrap();
    h.advance(5_000);
    assert_eq!(completion(&h.events(), op), Some(Err(Error::Timeout)));
}

#[test]
fn with_a_keyring_publishes_are_sealed_unless_asked_not_to() {
    let ring = keyring();
    let mut cfg = config();
    cfg.keyring = Some(ring.clone());
    let mut h = Harness::connected(cfg);
    h.engine
        .publish(
            "a/b",
            json_data(json!({"k": [1, 2]})),
            PublishOptions::default(),
            h.now,
        )
        .unwrap();
    let plain = PublishOptions {
        encrypt: false,
        ..PublishOptions::default()
    };
    h.engine
        .publish("a/b", json_data(json!(5)), plain, h.now)
        .unwrap();
    let sent = h.sent();
    let sealed = sent[0]["data"]["sealed"].as_str().unwrap();
    let opened = ring.open_base64("a/b", sealed).unwrap();
    assert_eq!(opened[0], KIND_JSON);
    assert_eq!(&opened[1..], br#"{"k":[1,2]}"#);
    assert!(ring.open_base64("a/c", sealed).is_err());
    assert_eq!(sent[1]["data"], json!({"json": 5}));
}

#[test]
fn publish_to_id_sends_a_direct_message_bound_to_the_recipient() {
    let ring = keyring();
    let mut cfg = config();
    cfg.keyring = Some(ring.clone());
    let mut h = Harness::connected(cfg);
    let op = h
        .engine
        .publish_to_id("worker-7", Data::Bytes(b"job".to_vec()), qos1(), h.now)
        .unwrap();
    let sent = h.sent();
    assert_eq!(sent[0]["type"], "send");
    assert_eq!(sent[0]["to"], "worker-7");
    let opened = ring
        .open_base64("@worker-7", sent[0]["data"]["sealed"].as_str().unwrap())
        .unwrap();
    assert_eq!(opened, b"\x00job");
    h.feed(
        json!({"type": "error", "id": sent[0]["id"], "code": 3004, "name": "no_such_client",
        "message": "worker-7 is not connected"}),
    );
    let err = completion(&h.events(), op).unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::NoSuchClient);
    let err = h
        .engine
        .publish_to_id("$bad", Data::Bytes(vec![]), qos1(), h.now)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidClientId);
}

#[test]
fn queued_direct_message_to_an_away_persistent_client() {
    let mut h = Harness::connected(config());
    let op = h
        .engine
        .publish_to_id("away", json_data(json!(1)), qos1(), h.now)
        .unwrap();
    let sent = h.sent();
    h.feed(
        json!({"type": "published", "id": sent[0]["id"], "mid": sent[0]["mid"],
        "queued": true}),
    );
    assert!(matches!(
        completion(&h.events(), op),
        Some(Ok(Outcome::Published {
            queued: true,
            offset: None,
            ..
        }))
    ));
}

#[test]
fn offline_publishes_are_buffered_up_to_the_limit_and_flushed_in_order() {
    let mut cfg = config();
    cfg.offline_buffer = 3;
    cfg.reconnect.retry_initial_connect = true;
    let mut h = Harness::connected(cfg);
    h.drop_transport();
    let q0 = h
        .engine
        .publish("a", json_data(json!(0)), PublishOptions::default(), h.now)
        .unwrap();
    let q1 = h
        .engine
        .publish("a", json_data(json!(1)), qos1(), h.now)
        .unwrap();
    let q2 = h
        .engine
        .publish_to_id("w", json_data(json!(2)), qos1(), h.now)
        .unwrap();
    let err = h
        .engine
        .publish("a", json_data(json!(3)), PublishOptions::default(), h.now)
        .unwrap_err();
    assert_eq!(err, Error::OfflineBufferFull { limit: 3 });
    assert_eq!(err.code(), ErrorCode::OfflineBufferFull);
    assert!(h.sent().is_empty());
    let events = h.events();
    assert!(
        completion(&events, q0).unwrap().is_ok(),
        "QoS 0 completes when buffered"
    );
    assert!(completion(&events, q1).is_none());
    let until = h.engine.poll_timeout().unwrap();
    h.advance_to(until);
    h.connect("e1");
    let sent = h.sent();
    let data: Vec<Value> = sent.iter().map(|f| f["data"]["json"].clone()).collect();
    assert_eq!(data, [json!(0), json!(1), json!(2)]);
    for frame in &sent[1..] {
        h.feed(json!({"type": "published", "id": frame["id"], "mid": frame["mid"]}));
    }
    let events = h.events();
    assert!(completion(&events, q1).unwrap().is_ok());
    assert!(completion(&events, q2).unwrap().is_ok());
}

#[test]
fn unconfirmed_qos1_is_resent_with_the_same_mid_after_reconnect() {
    let mut cfg = config();
    cfg.reconnect.retry_initial_connect = true;
    let mut h = Harness::connected(cfg);
    let op = h
        .engine
        .publish("a", json_data(json!(1)), qos1(), h.now)
        .unwrap();
    let first = h.sent().remove(0);
    h.reconnect("e1");
    let again = h.sent_of("publish");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["mid"], first["mid"]);
    h.feed(
        json!({"type": "published", "id": again[0]["id"], "mid": first["mid"],
        "offset": 3, "duplicate": true}),
    );
    assert!(matches!(
        completion(&h.events(), op),
        Some(Ok(Outcome::Published {
            duplicate: true,
            ..
        }))
    ));
    // An answer to the old request id is ignored.
    h.feed(json!({"type": "published", "id": first["id"], "mid": first["mid"]}));
    assert!(h.events().is_empty());
}

#[test]
fn an_empty_retained_publish_is_sent_plain_so_it_clears() {
    let mut cfg = config();
    cfg.keyring = Some(keyring());
    let mut h = Harness::connected(cfg);
    let retain = PublishOptions {
        retain: true,
        ..PublishOptions::default()
    };
    h.engine
        .publish("a", Data::Bytes(vec![]), retain, h.now)
        .unwrap();
    h.engine
        .publish("a", Data::Bytes(vec![1]), retain, h.now)
        .unwrap();
    let sent = h.sent();
    assert_eq!(sent[0]["data"], json!({"bytes": ""}));
    assert!(sent[1]["data"]["sealed"].is_string());
}

#[test]
fn requests_beyond_max_inflight_wait_for_room_and_keep_their_order() {
    let mut h = Harness::new(config());
    h.actions();
    h.engine.handle_connected(h.now);
    let mut welcome = welcome("e1");
    welcome["limits"]["max_inflight"] = json!(2);
    h.feed(welcome);
    h.sent();
    for n in 0..3 {
        h.engine
            .publish("a", json_data(json!(n)), qos1(), h.now)
            .unwrap();
    }
    let q0 = h
        .engine
        .publish("a", json_data(json!(3)), PublishOptions::default(), h.now)
        .unwrap();
    assert!(completion(&h.events(), q0).unwrap().is_ok());
    let sent = h.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    h.feed(json!({"type": "published", "id": sent[0]["id"], "mid": sent[0]["mid"]}));
    let rest = h.sent();
    let data: Vec<Value> = rest.iter().map(|f| f["data"]["json"].clone()).collect();
    assert_eq!(
        data,
        [json!(2), json!(3)],
        "QoS 0 waits behind queued QoS 1"
    );
}

#[test]
fn data_converts_from_common_types() {
    assert_eq!(Data::from("hi"), Data::Json(json!("hi")));
    assert_eq!(
        Data::from(json!({"a": 1})).as_json(),
        Some(&json!({"a": 1}))
    );
    assert_eq!(Data::from(vec![1u8, 2]).as_bytes(), Some(&[1u8, 2][..]));
    assert_eq!(Data::from(&b"x"[..]).as_json(), None);
    assert!(Data::from("").is_empty() && Data::Json(Value::Null).is_empty());
}
