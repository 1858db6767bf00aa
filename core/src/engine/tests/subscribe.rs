//! Subscribe, unsubscribe, duplicate filters, resubscribe and recovery.

use super::*;
use crate::protocol::ErrorCode;

#[test]
fn subscribe_resolves_when_the_server_confirms() {
    let mut h = Harness::connected(config());
    let op = h.engine.subscribe("sensors/+/temp", h.now).unwrap();
    let sent = h.sent();
    assert_eq!(
        sent,
        [json!({"type": "subscribe", "id": sent[0]["id"], "filter": "sensors/+/temp"})]
    );
    assert!(completion(&h.events(), op).is_none());
    h.feed(
        json!({"type": "subscribed", "id": sent[0]["id"], "filter": "sensors/+/temp",
        "position": {"epoch": "e1", "offset": 42}}),
    );
    let done = completion(&h.events(), op);
    assert_eq!(
        done,
        Some(Ok(Outcome::Subscribed {
            filter: "sensors/+/temp".into()
        }))
    );
    assert_eq!(h.engine.is_recovered("sensors/+/temp"), Some(true));
}

#[test]
fn invalid_filter_fails_without_sending() {
    let mut h = Harness::connected(config());
    let err = h.engine.subscribe("a/#/b", h.now).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidFilter);
    assert!(h.sent().is_empty());
}

#[test]
fn server_refusal_fails_the_subscribe() {
    let mut h = Harness::connected(config());
    let op = h.engine.subscribe("secret/#", h.now).unwrap();
    let id = h.sent()[0]["id"].clone();
    h.feed(json!({"type": "error", "id": id, "code": 2003, "name": "forbidden", "message": "no"}));
    let done = completion(&h.events(), op).unwrap();
    assert_eq!(done.unwrap_err().code(), ErrorCode::Forbidden);
    assert_eq!(h.engine.is_recovered("secret/#"), None);
}

#[test]
fn same_filter_twice_is_one_server_subscription_with_both_handlers() {
    let mut h = Harness::connected(config());
    let first = h.engine.subscribe("a/+", h.now).unwrap();
    let second = h.engine.subscribe("a/+", h.now).unwrap();
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    h.feed(
        json!({"type": "subscribed", "id": sent[0]["id"], "filter": "a/+",
        "position": {"epoch": "e1", "offset": 1}}),
    );
    let events = h.events();
    assert!(completion(&events, first).unwrap().is_ok());
    assert!(completion(&events, second).unwrap().is_ok());
    // A third one on the confirmed filter resolves at once, still without a frame.
    let third = h.engine.subscribe("a/+", h.now).unwrap();
    assert!(h.sent().is_empty());
    assert!(completion(&h.events(), third).unwrap().is_ok());
    h.feed(
        json!({"type": "message", "topic": "a/x", "data": {"json": 1}, "from": "p",
        "ts": 5, "offset": 2}),
    );
    let events = h.events();
    let [
        Event::Deliver {
            handlers,
            token: None,
            ..
        },
    ] = &events[..]
    else {
        panic!("{events:?}");
    };
    assert_eq!(handlers, &[first, second, third]);
}

#[test]
fn one_message_matching_several_filters_is_dispatched_once_to_each_handler() {
    let mut h = Harness::connected(config());
    let plus = h.subscribed("a/+", 1);
    let hash = h.subscribed("a/#", 1);
    let other = h.subscribed("b/#", 1);
    h.feed(
        json!({"type": "message", "topic": "a/x", "data": {"bytes": "AQI="}, "from": "p",
        "ts": 5, "offset": 2}),
    );
    let events = h.events();
    let [
        Event::Deliver {
            handlers, message, ..
        },
    ] = &events[..]
    else {
        panic!("{events:?}");
    };
    assert_eq!(handlers, &[plus, hash]);
    assert!(!handlers.contains(&other));
    assert_eq!(message.data, Data::Bytes(vec![1, 2]));
    assert_eq!(
        (message.from.as_str(), message.ts, message.offset),
        ("p", 5, Some(2))
    );
}

#[test]
fn unsubscribing_the_last_handler_ends_the_server_subscription() {
    let mut h = Harness::connected(config());
    let first = h.subscribed("a", 1);
    let second = h.subscribed("a", 1);
    let op = h.engine.unsubscribe(first, h.now);
    assert!(h.sent().is_empty());
    assert_eq!(completion(&h.events(), op), Some(Ok(Outcome::Unsubscribed)));
    let op = h.engine.unsubscribe(second, h.now);
    let sent = h.sent();
    assert_eq!(
        sent,
        [json!({"type": "unsubscribe", "id": sent[0]["id"], "filter": "a"})]
    );
    assert!(completion(&h.events(), op).is_none());
    h.feed(json!({"type": "unsubscribed", "id": sent[0]["id"], "filter": "a"}));
    assert_eq!(completion(&h.events(), op), Some(Ok(Outcome::Unsubscribed)));
    // A QoS 1 copy still on its way is acknowledged without a handler.
    h.feed(
        json!({"type": "message", "topic": "a", "data": {"json": 1}, "from": "p",
        "ts": 5, "offset": 2, "qos": 1, "mid": "m", "did": 3}),
    );
    assert!(h.events().is_empty());
    assert_eq!(h.sent(), [json!({"type": "ack", "did": 3, "ok": true})]);
}

#[test]
fn unsubscribe_filter_removes_every_handler() {
    let mut h = Harness::connected(config());
    let first = h.subscribed("a", 1);
    let second = h.subscribed("a", 1);
    assert_eq!(h.engine.handlers("a"), [first, second]);
    let op = h.engine.unsubscribe_filter("a", h.now);
    assert!(h.engine.handlers("a").is_empty());
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    h.feed(json!({"type": "unsubscribed", "id": sent[0]["id"], "filter": "a"}));
    assert_eq!(completion(&h.events(), op), Some(Ok(Outcome::Unsubscribed)));
    assert_eq!(h.engine.is_recovered("a"), None);
}

#[test]
fn unknown_filter_or_handler_unsubscribes_as_a_no_op() {
    let mut h = Harness::connected(config());
    let op = h.engine.unsubscribe_filter("never/subscribed", h.now);
    let op2 = h.engine.unsubscribe(OpId(999), h.now);
    assert!(h.sent().is_empty());
    let events = h.events();
    assert_eq!(completion(&events, op), Some(Ok(Outcome::Unsubscribed)));
    assert_eq!(completion(&events, op2), Some(Ok(Outcome::Unsubscribed)));
}

#[test]
fn subscribe_while_disconnected_is_sent_on_connect() {
    let mut h = Harness::new(config());
    let op = h.engine.subscribe("a", h.now).unwrap();
    assert!(h.sent().is_empty());
    h.connect("e1");
    let sent = h.sent_of("subscribe");
    assert_eq!(sent.len(), 1);
    assert!(sent[0].get("since").is_none());
    h.feed(
        json!({"type": "subscribed", "id": sent[0]["id"], "filter": "a",
        "position": {"epoch": "e1", "offset": 0}}),
    );
    assert!(completion(&h.events(), op).unwrap().is_ok());
}

#[test]
fn subscribe_without_answer_times_out() {
    let mut h = Harness::connected(config());
    let op = h.engine.subscribe("a", h.now).unwrap();
    h.sent();
    h.advance(4_999);
    assert!(completion(&h.events(), op).is_none());
    h.advance(1);
    assert_eq!(completion(&h.events(), op), Some(Err(Error::Timeout)));
}

#[test]
fn reconnect_resubscribes_with_the_last_offset_seen_and_recovers() {
    let mut h = Harness::connected(config());
    let op = h.subscribed("a/#", 10);
    h.subscribed("b", 20);
    h.feed(
        json!({"type": "message", "topic": "a/x", "data": {"json": 1}, "from": "p",
        "ts": 5, "offset": 15}),
    );
    h.events();
    h.reconnect("e1");
    let mut sent = h.sent_of("subscribe");
    sent.sort_by_key(|f| f["filter"].as_str().map(str::to_owned));
    assert_eq!(sent[0]["since"], json!({"epoch": "e1", "offset": 15}));
    assert_eq!(sent[1]["since"], json!({"epoch": "e1", "offset": 20}));
    h.feed(
        json!({"type": "subscribed", "id": sent[0]["id"], "filter": "a/#",
        "recovery": "recovered", "replayed": 1, "position": {"epoch": "e1", "offset": 30}}),
    );
    h.feed(
        json!({"type": "message", "topic": "a/y", "data": {"json": 2}, "from": "p",
        "ts": 6, "offset": 16, "replay": true}),
    );
    let events = h.events();
    let delivered: Vec<&Message> = events
        .iter()
        .filter_map(|e| match e {
            Event::Deliver {
                message, handlers, ..
            } if handlers == &[op] => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].replay);
    assert_eq!(h.engine.is_recovered("a/#"), Some(true));
    // The next reconnect continues after the replayed message.
    h.reconnect("e1");
    let sent = h.sent_of("subscribe");
    let a = sent.iter().find(|f| f["filter"] == "a/#").unwrap();
    assert_eq!(a["since"]["offset"], 16);
}

#[test]
fn not_recovered_flags_the_subscription() {
    let mut h = Harness::connected(config());
    let op = h.subscribed("a", 10);
    h.reconnect("e2");
    let sent = h.sent_of("subscribe");
    assert_eq!(sent[0]["since"], json!({"epoch": "e1", "offset": 10}));
    h.feed(
        json!({"type": "subscribed", "id": sent[0]["id"], "filter": "a",
        "recovery": "not_recovered", "position": {"epoch": "e2", "offset": 3}}),
    );
    let events = h.events();
    assert!(events.contains(&Event::NotRecovered {
        filter: "a".into(),
        handlers: vec![op],
    }));
    assert_eq!(h.engine.is_recovered("a"), Some(false));
    // Later resubscribes continue from the new epoch's position.
    h.reconnect("e2");
    assert_eq!(
        h.sent_of("subscribe")[0]["since"],
        json!({"epoch": "e2", "offset": 3})
    );
}

#[test]
fn unsubscribe_while_away_is_local_or_replayed_for_a_persistent_client() {
    let mut cfg = config();
    cfg.persistent = true;
    cfg.reconnect.retry_initial_connect = true;
    let mut h = Harness::connected(cfg);
    let op = h.subscribed("a", 1);
    h.drop_transport();
    let un = h.engine.unsubscribe(op, h.now);
    assert_eq!(completion(&h.events(), un), Some(Ok(Outcome::Unsubscribed)));
    let until = h.engine.poll_timeout().unwrap();
    h.advance_to(until);
    h.connect("e1");
    let sent = h.sent();
    assert!(
        sent.iter()
            .any(|f| f["type"] == "unsubscribe" && f["filter"] == "a")
    );
    assert!(!sent.iter().any(|f| f["type"] == "subscribe"));
}

#[test]
fn unsubscribing_a_waiting_handler_cancels_its_subscribe() {
    let mut h = Harness::connected(config());
    let op = h.engine.subscribe("a", h.now).unwrap();
    h.sent();
    let un = h.engine.unsubscribe(op, h.now);
    assert_eq!(h.sent_of("unsubscribe").len(), 1);
    assert_eq!(completion(&h.events(), op), Some(Err(Error::Cancelled)));
    assert!(completion(&h.events(), un).is_none());
}

#[test]
fn an_unknown_error_number_fails_its_request_as_a_generic_failure() {
    let mut h = Harness::connected(config());
    let op = h.engine.subscribe("a", h.now).unwrap();
    let id = h.sent()[0]["id"].clone();
    h.feed(
        json!({"type": "error", "id": id, "code": 7777, "name": "from_the_future",
        "message": "new"}),
    );
    let err = completion(&h.events(), op).unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    assert!(err.to_string().contains("7777"), "{err}");
}
