//! Delivery status: asking the server about a QoS 1 message's copies.

use super::*;
use crate::protocol::{CopyState, CopyStatus, ErrorCode};

#[test]
fn delivery_status_sends_the_request_and_completes_with_each_copy() {
    let mut h = Harness::connected(config());
    let op = h.engine.delivery_status("m-1", h.now).unwrap();
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["type"], "delivery_status");
    assert_eq!(sent[0]["mid"], "m-1");
    assert!(completion(&h.events(), op).is_none());
    h.feed(
        json!({"type": "delivery_state", "id": sent[0]["id"], "mid": "m-1", "topic": "a/b",
        "copies": [{"client": "x", "state": "acknowledged", "attempts": 1},
                   {"client": "y", "state": "pending", "attempts": 0}]}),
    );
    let expected = DeliveryReport {
        mid: "m-1".into(),
        topic: "a/b".into(),
        copies: vec![
            CopyStatus {
                client: "x".into(),
                state: CopyState::Acknowledged,
                attempts: 1,
            },
            CopyStatus {
                client: "y".into(),
                state: CopyState::Pending,
                attempts: 0,
            },
        ],
    };
    assert_eq!(
        completion(&h.events(), op),
        Some(Ok(Outcome::Delivery(expected)))
    );
}

#[test]
fn an_unknown_message_id_fails_with_the_servers_code() {
    let mut h = Harness::connected(config());
    let op = h.engine.delivery_status("m-9", h.now).unwrap();
    let id = h.sent()[0]["id"].clone();
    h.feed(
        json!({"type": "error", "id": id, "code": 3007, "name": "unknown_message_id",
        "message": "no message m-9"}),
    );
    match completion(&h.events(), op) {
        Some(Err(Error::Server { code, .. })) => assert_eq!(code, ErrorCode::UnknownMessageId),
        other => panic!("expected unknown_message_id, got {other:?}"),
    }
}

#[test]
fn an_invalid_mid_or_no_connection_is_refused_at_once() {
    let mut h = Harness::connected(config());
    assert!(matches!(
        h.engine.delivery_status("", h.now),
        Err(Error::Protocol(_))
    ));
    assert!(h.sent().is_empty());
    h.drop_transport();
    assert!(matches!(
        h.engine.delivery_status("m-1", h.now),
        Err(Error::Disconnected(_))
    ));
}

#[test]
fn a_question_in_flight_fails_when_the_connection_drops_or_times_out() {
    let mut h = Harness::connected(config());
    let dropped = h.engine.delivery_status("m-1", h.now).unwrap();
    h.drop_transport();
    assert!(matches!(
        completion(&h.events(), dropped),
        Some(Err(Error::Disconnected(_)))
    ));
    let until = h.engine.poll_timeout().unwrap();
    h.advance_to(until);
    h.connect("e1");
    h.events();
    let late = h.engine.delivery_status("m-1", h.now).unwrap();
    h.advance(5_001);
    assert_eq!(completion(&h.events(), late), Some(Err(Error::Timeout)));
}
