//! Incoming messages: auto-ack, handler failures, sealed payloads, direct messages.

use super::*;
use crate::protocol::ErrorCode;

fn deliver(events: &[Event]) -> (Vec<OpId>, Option<DeliveryToken>, Message) {
    match events {
        [
            Event::Deliver {
                handlers,
                token,
                message,
            },
        ] => (handlers.clone(), *token, message.clone()),
        other => panic!("expected one delivery: {other:?}"),
    }
}

#[test]
fn every_handler_succeeding_sends_one_ok_ack() {
    let mut h = Harness::connected(config());
    h.subscribed("a/+", 1);
    h.subscribed("a/#", 1);
    h.feed(
        json!({"type": "message", "topic": "a/b", "data": {"json": "hi"}, "from": "p",
        "ts": 1, "offset": 2, "mid": "m1", "qos": 1, "did": 17, "aid": 9}),
    );
    let (handlers, token, message) = deliver(&h.events());
    assert_eq!(handlers.len(), 2);
    assert_eq!(message.qos, Qos::AtLeastOnce);
    assert_eq!(message.mid.as_deref(), Some("m1"));
    let token = token.unwrap();
    h.engine.complete_delivery(token, Ok(()), h.now);
    assert!(h.sent().is_empty(), "acked before every handler finished");
    h.engine.complete_delivery(token, Ok(()), h.now);
    assert_eq!(
        h.sent(),
        [json!({"type": "ack", "did": 17, "aid": 9, "ok": true})]
    );
    h.engine.complete_delivery(token, Ok(()), h.now);
    assert!(h.sent().is_empty(), "acked twice");
}

#[test]
fn a_failing_handler_sends_an_error_ack_with_its_message() {
    let mut h = Harness::connected(config());
    h.subscribed("a", 1);
    h.subscribed("a", 1);
    h.feed(
        json!({"type": "message", "topic": "a", "data": {"json": 1}, "from": "p",
        "ts": 1, "offset": 2, "aid": 9}),
    );
    let (_, token, _) = deliver(&h.events());
    let token = token.unwrap();
    h.engine
        .complete_delivery(token, Err("disk full".into()), h.now);
    h.engine.complete_delivery(token, Ok(()), h.now);
    assert_eq!(
        h.sent(),
        [json!({"type": "ack", "aid": 9, "ok": false, "code": 6006, "error": "disk full"})]
    );
}

#[test]
fn messages_without_delivery_or_ack_id_need_no_ack() {
    let mut h = Harness::connected(config());
    h.subscribed("a", 1);
    h.feed(
        json!({"type": "message", "topic": "a", "data": {"json": 1}, "from": "p",
        "ts": 1, "offset": 2, "retained": true}),
    );
    let (_, token, message) = deliver(&h.events());
    assert_eq!(token, None);
    assert!(message.retained);
}

#[test]
fn sealed_messages_are_opened_before_the_handler_sees_them() {
    let ring = keyring();
    let mut cfg = config();
    cfg.keyring = Some(ring.clone());
    let mut h = Harness::connected(cfg);
    h.subscribed("a", 1);
    let mut plain = vec![KIND_JSON];
    plain.extend_from_slice(br#"{"z":1,"a":2}"#);
    let envelope = ring.seal_to_base64("a", &plain).unwrap();
    h.feed(
        json!({"type": "message", "topic": "a", "data": {"sealed": envelope}, "from": "p",
        "ts": 1, "offset": 2}),
    );
    let (_, _, message) = deliver(&h.events());
    assert!(message.encrypted);
    assert_eq!(message.data, Data::Json(json!({"z": 1, "a": 2})));
    let Data::Json(value) = &message.data else {
        panic!("not JSON");
    };
    assert_eq!(value.to_string(), r#"{"z":1,"a":2}"#);
}

/// Opening failures: the handler is not called, an error event is raised and an error ack with
/// the failure's code is sent.
#[test]
fn undecryptable_messages_get_an_error_ack_and_an_error_event() {
    let ring = keyring();
    let other = Keyring::with_key(Key::from_bytes(&[9; 32]).unwrap());
    let sealed_for = |topic: &str, ring: &Keyring| {
        let mut plain = vec![KIND_BYTES];
        plain.push(1);
        ring.seal_to_base64(topic, &plain).unwrap()
    };
    let cases = [
        (
            Some(ring.clone()),
            sealed_for("other", &ring),
            ErrorCode::DecryptFailed,
        ),
        (
            Some(ring.clone()),
            sealed_for("a", &other),
            ErrorCode::UnknownKeyId,
        ),
        (
            Some(ring.clone()),
            "AQID".to_owned(),
            ErrorCode::MalformedEnvelope,
        ),
        (None, sealed_for("a", &ring), ErrorCode::NoKeyring),
    ];
    for (keyring, envelope, code) in cases {
        let mut cfg = config();
        cfg.keyring = keyring;
        let mut h = Harness::connected(cfg);
        h.subscribed("a", 1);
        h.feed(
            json!({"type": "message", "topic": "a", "data": {"sealed": envelope},
            "from": "p", "ts": 1, "offset": 2, "qos": 1, "mid": "m", "did": 4, "aid": 5}),
        );
        let events = h.events();
        assert!(
            !events.iter().any(|e| matches!(e, Event::Deliver { .. })),
            "{code}: handler called"
        );
        assert!(
            matches!(&events[..], [Event::Error(e)] if e.code() == code),
            "{code}: {events:?}"
        );
        let sent = h.sent();
        assert_eq!(sent.len(), 1, "{code}");
        assert_eq!(sent[0]["type"], "ack");
        assert_eq!(
            (sent[0]["did"].clone(), sent[0]["aid"].clone()),
            (json!(4), json!(5))
        );
        assert_eq!(sent[0]["ok"], false);
        assert_eq!(sent[0]["code"], code.number(), "{code}");
        assert!(sent[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

#[test]
fn direct_messages_reach_direct_handlers_opened_for_the_own_id() {
    let ring = keyring();
    let mut cfg = config();
    cfg.keyring = Some(ring.clone());
    let mut h = Harness::connected(cfg);
    let sub = h.subscribed("#", 1);
    let direct = h.engine.register_direct();
    let mut plain = vec![KIND_BYTES];
    plain.extend_from_slice(b"hey");
    let envelope = ring.seal_to_base64("@me", &plain).unwrap();
    h.feed(
        json!({"type": "direct", "data": {"sealed": envelope}, "from": "api-1", "ts": 4,
        "mid": "s-1", "qos": 1, "did": 18, "aid": 10}),
    );
    let (handlers, token, message) = deliver(&h.events());
    assert_eq!(handlers, [direct]);
    assert!(!handlers.contains(&sub));
    assert!(message.direct && message.encrypted);
    assert_eq!(message.topic, "@me");
    assert_eq!(message.data, Data::Bytes(b"hey".to_vec()));
    h.engine.complete_delivery(token.unwrap(), Ok(()), h.now);
    assert_eq!(
        h.sent(),
        [json!({"type": "ack", "did": 18, "aid": 10, "ok": true})]
    );
    let un = h.engine.unsubscribe(direct, h.now);
    assert_eq!(completion(&h.events(), un), Some(Ok(Outcome::Unsubscribed)));
}

#[test]
fn deliveries_from_before_a_reconnect_are_not_acked_on_the_new_connection() {
    let mut cfg = config();
    cfg.reconnect.retry_initial_connect = true;
    let mut h = Harness::connected(cfg);
    h.subscribed("a", 1);
    h.feed(
        json!({"type": "message", "topic": "a", "data": {"json": 1}, "from": "p",
        "ts": 1, "offset": 2, "qos": 1, "mid": "m", "did": 4}),
    );
    let (_, token, _) = deliver(&h.events());
    h.reconnect("e1");
    h.sent();
    h.engine.complete_delivery(token.unwrap(), Ok(()), h.now);
    assert!(h.sent().is_empty());
}

#[test]
fn direct_messages_without_a_direct_handler_get_an_error_ack() {
    let mut h = Harness::connected(config());
    h.feed(
        json!({"type": "direct", "data": {"json": 1}, "from": "api-1", "ts": 4,
        "aid": 10}),
    );
    assert!(h.events().is_empty());
    let sent = h.sent();
    assert_eq!(sent[0]["ok"], false);
    assert_eq!(sent[0]["code"], ErrorCode::HandlerFailed.number());
}

/// A QoS 1 copy on `topic` with delivery id `did`.
fn copy_on(topic: &str, did: u64) -> Value {
    json!({"type": "message", "topic": topic, "data": {"json": did}, "from": "p",
        "ts": 1, "offset": did, "mid": format!("m{did}"), "qos": 1, "did": did})
}

/// Subscribes to `filter` and confirms it, leaving the events (deliveries included) to the
/// caller.
fn subscribe_confirmed(h: &mut Harness, filter: &str) -> OpId {
    let op = h.engine.subscribe(filter, h.now).unwrap();
    let sent = h.sent_of("subscribe");
    h.feed(
        json!({"type": "subscribed", "id": sent[0]["id"], "filter": filter,
        "position": {"epoch": "e1", "offset": 1}}),
    );
    op
}

/// The delivery ids of the deliveries among `events`, with their tokens.
fn delivered(events: &[Event]) -> Vec<(u64, DeliveryToken)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Deliver { message, token, .. } => Some((message.offset?, (*token)?)),
            _ => None,
        })
        .collect()
}

/// A connected engine of a persistent client.
fn persistent_connected() -> Harness {
    let mut persistent = config();
    persistent.persistent = true;
    Harness::connected(persistent)
}

#[test]
fn a_copy_for_a_subscription_not_registered_yet_waits_for_it() {
    // A new process of a persistent client: the server still holds its subscription and sends
    // the queued copies right after `welcome`, before the application subscribed again.
    let mut h = persistent_connected();
    h.feed(copy_on("jobs/x", 7));
    h.feed(copy_on("other/y", 8));
    h.feed(copy_on("jobs/z", 9));
    h.feed(copy_on("jobs/x", 7));
    assert!(h.events().is_empty());
    assert!(h.sent().is_empty(), "acking would lose the messages");
    // Once the subscription is confirmed, its copies reach the handler in arrival order (the
    // redelivery of 7 replaced the first one); the copy of another filter keeps waiting.
    let handler = subscribe_confirmed(&mut h, "jobs/#");
    let events = h.events();
    let got = delivered(&events);
    assert_eq!(got.iter().map(|(did, _)| *did).collect::<Vec<_>>(), [7, 9]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Deliver { handlers, .. } if handlers == &[handler]))
    );
    for (_, token) in got {
        h.engine.complete_delivery(token, Ok(()), h.now);
    }
    assert_eq!(
        h.sent(),
        [
            json!({"type": "ack", "did": 7, "ok": true}),
            json!({"type": "ack", "did": 9, "ok": true})
        ]
    );
}

#[test]
fn parked_copies_end_with_their_connection() {
    let mut h = persistent_connected();
    h.feed(copy_on("jobs/x", 7));
    h.drop_transport();
    let until = h.engine.poll_timeout().unwrap();
    h.advance_to(until);
    h.connect("e1");
    h.events();
    subscribe_confirmed(&mut h, "jobs/#");
    assert!(
        delivered(&h.events()).is_empty(),
        "delivery id 7 belonged to the old connection: the server writes it again"
    );
}

#[test]
fn a_copy_on_its_way_when_its_filter_ended_is_acked() {
    let mut h = Harness::connected(config());
    let handler = h.subscribed("a/#", 1);
    h.engine.unsubscribe(handler, h.now);
    h.sent_of("unsubscribe");
    h.events();
    h.feed(copy_on("a/b", 9));
    assert!(h.events().is_empty());
    assert_eq!(h.sent(), [json!({"type": "ack", "did": 9, "ok": true})]);
    h.feed(copy_on("b/c", 10));
    assert!(h.sent().is_empty(), "b/c matches no ended filter");
}

#[test]
fn copies_kept_for_a_subscription_are_bounded_in_bytes() {
    let mut persistent = config();
    persistent.persistent = true;
    let mut h = Harness::new(persistent);
    h.actions();
    h.engine.handle_connected(h.now);
    h.sent();
    let mut welcome = welcome("e1");
    welcome["limits"]["max_frame_bytes"] = json!(4 << 20);
    h.feed(welcome);
    h.events();
    // Nine payloads of 2 MiB (a JSON string counts its quotes): the first eight fill the
    // 16 MiB kept for subscriptions.
    let big = "x".repeat((2 << 20) - 2);
    for did in 1..=9 {
        h.feed(
            json!({"type": "message", "topic": "jobs/x", "data": {"json": big}, "from": "p",
            "ts": 1, "offset": did, "qos": 1, "did": did}),
        );
    }
    assert!(h.sent().is_empty());
    subscribe_confirmed(&mut h, "jobs/#");
    let kept: Vec<u64> = delivered(&h.events()).iter().map(|(did, _)| *did).collect();
    assert_eq!(
        kept,
        (1..=8).collect::<Vec<_>>(),
        "the ninth is left to the server"
    );
}

#[test]
fn copies_kept_for_a_subscription_are_bounded_in_number() {
    let mut h = persistent_connected();
    for did in 1..=1030 {
        h.feed(copy_on("jobs/x", did));
    }
    subscribe_confirmed(&mut h, "jobs/#");
    let kept: Vec<u64> = delivered(&h.events()).iter().map(|(did, _)| *did).collect();
    assert_eq!(
        kept,
        (1..=1024).collect::<Vec<_>>(),
        "the rest is left to the server"
    );
}
