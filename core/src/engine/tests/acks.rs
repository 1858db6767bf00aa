//! publish_with_ack: expected set, responses, completion, timeout, cancel, disconnect.

use super::*;
use crate::protocol::ErrorCode;

/// Publishes with ack and answers `ack_expect` with `expected` and ack id 9.
fn expecting(h: &mut Harness, expected: &[&str]) -> OpId {
    let op = h
        .engine
        .publish_with_ack(
            "jobs",
            Data::Json(json!(1)),
            PublishOptions::default(),
            2_000,
            h.now,
        )
        .unwrap();
    let sent = h.sent();
    assert_eq!(sent[0]["ack"], json!({"timeout_ms": 2000}));
    assert!(sent[0]["id"].is_u64() && sent[0]["mid"].is_string());
    h.feed(json!({"type": "ack_expect", "id": sent[0]["id"], "aid": 9, "expected": expected}));
    op
}

fn response(from: &str, ok: bool) -> Value {
    if ok {
        json!({"type": "ack_response", "aid": 9, "from": from, "ok": true})
    } else {
        json!({"type": "ack_response", "aid": 9, "from": from, "ok": false, "code": 6005,
            "error": "disconnected"})
    }
}

#[test]
fn completes_when_every_expected_subscriber_answered() {
    let mut h = Harness::connected(config());
    let op = expecting(&mut h, &["w1", "w2"]);
    let snap = last_snapshot(&h.events(), op).unwrap();
    assert_eq!(snap.expected, Some(vec!["w1".to_owned(), "w2".to_owned()]));
    assert!(!snap.is_complete());
    assert_eq!(
        snap.status().into_iter().collect::<Vec<_>>(),
        [("w1".to_owned(), false), ("w2".to_owned(), false)]
    );
    assert_eq!(h.engine.ack_snapshot(op), Some(snap));
    h.feed(response("w2", true));
    let snap = last_snapshot(&h.events(), op).unwrap();
    assert!(snap.status()["w2"]);
    assert_eq!(snap.responses.len(), 1);
    // A subscriber that left before answering: its response is an error "disconnected".
    h.feed(response("w1", false));
    let snap = last_snapshot(&h.events(), op).unwrap();
    assert_eq!(snap.finished, Some(AckFinish::Complete));
    let replies = snap.response_map();
    assert!(replies["w2"].ok);
    assert_eq!(replies["w1"].code, Some(ErrorCode::Disconnected));
    assert_eq!(replies["w1"].error.as_deref(), Some("disconnected"));
    assert_eq!(h.engine.ack_snapshot(op), None);
    // The server's ack_done after that changes nothing.
    h.feed(json!({"type": "ack_done", "aid": 9, "outcome": "complete"}));
    assert!(h.events().is_empty());
}

#[test]
fn no_subscribers_completes_at_once_and_empty() {
    let mut h = Harness::connected(config());
    let op = expecting(&mut h, &[]);
    let snap = last_snapshot(&h.events(), op).unwrap();
    assert_eq!(snap.finished, Some(AckFinish::Complete));
    assert_eq!(snap.expected, Some(vec![]));
    assert!(snap.responses.is_empty() && snap.status().is_empty());
}

#[test]
fn timeout_returns_what_arrived() {
    let mut h = Harness::connected(config());
    let op = expecting(&mut h, &["w1", "w2"]);
    h.feed(response("w1", true));
    h.events();
    assert_eq!(h.engine.poll_timeout(), Some(h.now.plus(2_000)));
    h.advance(1_999);
    assert!(last_snapshot(&h.events(), op).is_none());
    h.advance(1);
    let snap = last_snapshot(&h.events(), op).unwrap();
    assert_eq!(snap.finished, Some(AckFinish::Timeout));
    assert!(snap.status()["w1"]);
    assert!(!snap.status()["w2"]);
    h.feed(response("w2", true));
    assert!(h.events().is_empty(), "late response after timeout");
}

#[test]
fn server_ack_done_finishes_with_its_outcome() {
    let mut h = Harness::connected(config());
    let op = expecting(&mut h, &["w1"]);
    h.feed(json!({"type": "ack_done", "aid": 9, "outcome": "timeout"}));
    let snap = last_snapshot(&h.events(), op).unwrap();
    assert_eq!(snap.finished, Some(AckFinish::Timeout));
}

#[test]
fn cancel_wakes_now_tells_the_server_ignores_late_responses_and_is_idempotent() {
    let mut h = Harness::connected(config());
    let op = expecting(&mut h, &["w1", "w2"]);
    h.feed(response("w1", true));
    h.events();
    h.engine.cancel_ack(op, h.now);
    assert_eq!(h.sent(), [json!({"type": "ack_cancel", "aid": 9})]);
    let snap = last_snapshot(&h.events(), op).unwrap();
    assert_eq!(snap.finished, Some(AckFinish::Cancelled));
    assert_eq!(snap.responses.len(), 1);
    h.feed(response("w2", true));
    h.feed(json!({"type": "ack_done", "aid": 9, "outcome": "cancelled"}));
    h.engine.cancel_ack(op, h.now);
    assert!(h.events().is_empty());
    assert!(h.sent().is_empty());
}

#[test]
fn cancel_before_the_expected_set_is_known_cancels_once_it_is() {
    let mut h = Harness::connected(config());
    let op = h
        .engine
        .publish_with_ack("jobs", Data::Json(json!(1)), qos1(), 2_000, h.now)
        .unwrap();
    let id = h.sent()[0]["id"].clone();
    h.engine.cancel_ack(op, h.now);
    assert!(h.sent().is_empty());
    let snap = last_snapshot(&h.events(), op).unwrap();
    assert_eq!(snap.finished, Some(AckFinish::Cancelled));
    h.engine.cancel_ack(op, h.now);
    h.feed(json!({"type": "published", "id": id, "mid": "m", "offset": 1}));
    h.feed(json!({"type": "ack_expect", "id": id, "aid": 4, "expected": ["w"]}));
    assert_eq!(h.sent(), [json!({"type": "ack_cancel", "aid": 4})]);
    h.feed(json!({"type": "ack_response", "aid": 4, "from": "w", "ok": true}));
    assert!(h.events().is_empty());
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now.plus(30_000)),
        "only keep-alive left"
    );
}

#[test]
fn cancel_while_buffered_offline_drops_the_publish() {
    let mut cfg = config();
    cfg.reconnect.retry_initial_connect = true;
    let mut h = Harness::connected(cfg);
    h.drop_transport();
    let op = h
        .engine
        .publish_with_ack(
            "jobs",
            Data::Json(json!(1)),
            PublishOptions::default(),
            60_000,
            h.now,
        )
        .unwrap();
    h.engine.cancel_ack(op, h.now);
    let snap = last_snapshot(&h.events(), op).unwrap();
    assert_eq!(snap.finished, Some(AckFinish::Cancelled));
    let until = h.engine.poll_timeout().unwrap();
    h.advance_to(until);
    h.connect("e1");
    assert!(h.sent_of("publish").is_empty());
}

#[test]
fn dropped_connection_finishes_pending_acks_with_what_arrived() {
    let mut cfg = config();
    cfg.reconnect.retry_initial_connect = true;
    let mut h = Harness::connected(cfg);
    let op = expecting(&mut h, &["w1", "w2"]);
    h.feed(response("w1", true));
    h.events();
    h.drop_transport();
    let snap = last_snapshot(&h.events(), op).unwrap();
    assert_eq!(snap.finished, Some(AckFinish::Disconnected));
    assert_eq!(snap.responses.len(), 1);
    // Not resent after the reconnect: the server dropped the collection with the connection.
    let until = h.engine.poll_timeout().unwrap();
    h.advance_to(until);
    h.connect("e1");
    assert!(h.sent_of("publish").is_empty());
}

#[test]
fn failed_publish_finishes_the_ack_with_the_error() {
    let mut h = Harness::connected(config());
    let op = h
        .engine
        .publish_to_id_with_ack("gone", Data::Json(json!(1)), qos1(), 1_000, h.now)
        .unwrap();
    let sent = h.sent();
    assert_eq!(sent[0]["type"], "send");
    assert_eq!(sent[0]["ack"], json!({"timeout_ms": 1000}));
    h.feed(
        json!({"type": "error", "id": sent[0]["id"], "code": 3004, "name": "no_such_client",
        "message": "gone"}),
    );
    let snap = last_snapshot(&h.events(), op).unwrap();
    assert!(
        matches!(snap.finished, Some(AckFinish::Failed(e)) if e.code() == ErrorCode::NoSuchClient)
    );
}

#[test]
fn ack_timeout_must_be_in_range() {
    let mut h = Harness::connected(config());
    for timeout in [0, 3_600_001] {
        let err = h
            .engine
            .publish_with_ack("a", Data::Json(json!(1)), qos1(), timeout, h.now)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidField);
    }
}
