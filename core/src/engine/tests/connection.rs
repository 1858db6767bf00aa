//! Connecting, authentication failure, reconnect with backoff, keep-alive, close.

use super::*;
use crate::protocol::ErrorCode;

#[test]
fn hello_carries_the_options_and_welcome_connects() {
    let mut cfg = config();
    cfg.persistent = true;
    let mut h = Harness::new(cfg);
    assert_eq!(states(&h.events()), [ConnectionState::Connecting]);
    assert_eq!(h.actions(), [ConnAction::Connect]);
    h.engine.handle_connected(h.now);
    let hello = h.sent();
    assert_eq!(
        hello,
        [
            json!({"type": "hello", "v": 1, "session": "demo", "auth": {"password": "pw"},
            "client_id": "me", "persistent": true, "batch": true})
        ]
    );
    h.feed(welcome("e1"));
    assert_eq!(states(&h.events()), [ConnectionState::Connected]);
    assert_eq!(h.engine.state(), &ConnectionState::Connected);
    assert_eq!(h.engine.limits().max_message_bytes, 1000);
    assert_eq!(h.engine.client_id(), Some("me"));
    assert_eq!(h.engine.epoch(), Some("e1"));
}

#[test]
fn wrong_credentials_close_with_auth_failed_and_no_retry() {
    let mut h = Harness::new(config());
    h.actions();
    h.engine.handle_connected(h.now);
    h.feed(json!({"type": "error", "code": 2001, "name": "auth_failed", "message": "nope"}));
    h.engine.handle_disconnected(
        Disconnect {
            close_code: Some(4101),
            reason: "auth_failed".into(),
        },
        h.now,
    );
    let events = h.events();
    let Some(ConnectionState::Closed { error: Some(err) }) = states(&events).last().cloned() else {
        panic!("not closed: {events:?}");
    };
    assert_eq!(err.code(), ErrorCode::AuthFailed);
    assert!(h.actions().is_empty());
    assert_eq!(h.engine.poll_timeout(), None);
    h.advance(60_000);
    assert!(h.actions().is_empty(), "retried after auth failure");
}

#[test]
fn auth_failed_close_code_alone_is_fatal_even_after_a_reconnect() {
    let mut cfg = config();
    cfg.reconnect.retry_initial_connect = true;
    let mut h = Harness::connected(cfg);
    h.drop_transport();
    let until = h.engine.poll_timeout().unwrap();
    h.advance_to(until);
    assert_eq!(h.actions(), [ConnAction::Connect]);
    h.engine.handle_connected(h.now);
    h.engine.handle_disconnected(
        Disconnect {
            close_code: Some(ErrorCode::TokenExpired.close_code()),
            reason: String::new(),
        },
        h.now,
    );
    let closed = states(&h.events()).pop();
    assert!(
        matches!(closed, Some(ConnectionState::Closed { error: Some(e) })
        if e.code() == ErrorCode::TokenExpired)
    );
}

#[test]
fn first_connection_failure_closes_unless_asked_to_retry() {
    let mut h = Harness::new(config());
    h.actions();
    h.drop_transport();
    assert!(matches!(
        h.engine.state(),
        ConnectionState::Closed {
            error: Some(Error::Disconnected(_))
        }
    ));

    let mut cfg = config();
    cfg.reconnect.retry_initial_connect = true;
    let mut h = Harness::new(cfg);
    h.actions();
    h.drop_transport();
    assert_eq!(
        h.engine.state(),
        &ConnectionState::Reconnecting { attempt: 1 }
    );
}

#[test]
fn reconnect_backoff_grows_with_full_jitter_and_gives_up_after_max_attempts() {
    let mut cfg = config();
    cfg.reconnect.max_attempts = Some(4);
    let mut h = Harness::connected(cfg);
    h.drop_transport();
    let events = h.events();
    assert!(matches!(
        states(&events)[..],
        [
            ConnectionState::Disconnected { .. },
            ConnectionState::Reconnecting { attempt: 1 }
        ]
    ));
    for attempt in 1..=4u32 {
        let start = h.now;
        let until = h.engine.poll_timeout().unwrap();
        let bound = 100u64 << (attempt - 1);
        assert!(
            until >= start && until <= start.plus(bound),
            "{attempt}: {until:?}"
        );
        // Nothing happens before the backoff expires.
        if until > start {
            h.advance_to(Millis(until.0 - 1));
            assert!(h.actions().is_empty());
        }
        h.advance_to(until);
        assert_eq!(h.actions(), [ConnAction::Connect]);
        h.engine.handle_connected(h.now);
        h.drop_transport();
    }
    let events = h.events();
    assert!(matches!(
        states(&events).last(),
        Some(ConnectionState::Closed { error: Some(_) })
    ));
}

#[test]
fn attempts_restart_after_a_successful_reconnect() {
    let mut h = Harness::connected(config());
    h.reconnect("e1");
    h.events();
    h.drop_transport();
    assert!(states(&h.events()).contains(&ConnectionState::Reconnecting { attempt: 1 }));
}

#[test]
fn keepalive_pings_when_idle_and_reconnects_when_the_server_is_silent() {
    let mut cfg = config();
    cfg.keepalive_ms = Some(1_000);
    cfg.keepalive_timeout_ms = Some(500);
    let mut h = Harness::connected(cfg);
    h.sent();
    assert_eq!(h.engine.poll_timeout(), Some(h.now.plus(1_000)));
    h.advance(999);
    assert!(h.sent().is_empty());
    h.advance(1);
    assert_eq!(h.sent_of("ping").len(), 1);
    // Any frame clears the ping deadline.
    h.advance(400);
    h.feed(json!({"type": "pong"}));
    h.advance(200);
    assert!(h.actions().is_empty());
    // Idle again: ping, then silence past the timeout.
    h.advance(1_000);
    assert_eq!(h.sent_of("ping").len(), 1);
    h.advance(499);
    assert!(h.actions().is_empty());
    h.advance(1);
    let actions = h.actions();
    assert!(
        matches!(&actions[..], [ConnAction::Close { code: 4508, .. }]),
        "{actions:?}"
    );
    assert_eq!(
        h.engine.state(),
        &ConnectionState::Reconnecting { attempt: 1 }
    );
    // The driver's late report of the closed socket changes nothing.
    h.drop_transport();
    assert_eq!(
        h.engine.state(),
        &ConnectionState::Reconnecting { attempt: 1 }
    );
}

#[test]
fn sending_postpones_the_keepalive_ping() {
    let mut cfg = config();
    cfg.keepalive_ms = Some(1_000);
    let mut h = Harness::connected(cfg);
    h.advance(600);
    h.engine.subscribe("a", h.now).unwrap();
    h.sent();
    h.advance(600);
    assert!(h.sent().is_empty());
    h.advance(400);
    assert_eq!(h.sent_of("ping").len(), 1);
}

#[test]
fn handshake_without_welcome_times_out() {
    let mut cfg = config();
    cfg.reconnect.retry_initial_connect = true;
    let mut h = Harness::new(cfg);
    h.actions();
    h.engine.handle_connected(h.now);
    h.advance(5_000);
    assert!(matches!(&h.actions()[..], [ConnAction::Close { .. }]));
    assert_eq!(
        h.engine.state(),
        &ConnectionState::Reconnecting { attempt: 1 }
    );
}

#[test]
fn close_says_bye_fails_pending_work_and_refuses_new_commands() {
    let mut h = Harness::connected(config());
    let sub = h.engine.subscribe("a/b", h.now).unwrap();
    let publish = h
        .engine
        .publish("a", Data::Json(json!(1)), qos1(), h.now)
        .unwrap();
    h.sent();
    h.engine.close(false, h.now);
    assert_eq!(h.sent(), [json!({"type": "bye"})]);
    assert!(matches!(
        &h.actions()[..],
        [ConnAction::Close { code: 1000, .. }]
    ));
    let events = h.events();
    assert_eq!(completion(&events, sub), Some(Err(Error::Closed)));
    assert_eq!(completion(&events, publish), Some(Err(Error::Closed)));
    assert_eq!(
        states(&events).last(),
        Some(&ConnectionState::Closed { error: None })
    );
    assert_eq!(h.engine.subscribe("x", h.now), Err(Error::Closed));
    let err = h
        .engine
        .publish("x", Data::Bytes(vec![]), PublishOptions::default(), h.now);
    assert_eq!(err, Err(Error::Closed));
    h.engine.close(false, h.now);
    assert!(h.events().is_empty() && h.sent().is_empty());
}

#[test]
fn bye_can_discard_a_persistent_session() {
    let mut h = Harness::connected(config());
    h.engine.close(true, h.now);
    assert_eq!(h.sent(), [json!({"type": "bye", "discard": true})]);
}

#[test]
fn undecodable_frames_are_reported_and_the_connection_stays() {
    let mut h = Harness::connected(config());
    h.engine.handle_frame("not json", h.now);
    h.engine.handle_frame(r#"{"type":"nope"}"#, h.now);
    let events = h.events();
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Event::Error(Error::Protocol(_))))
    );
    assert_eq!(h.engine.state(), &ConnectionState::Connected);
}

#[test]
fn replaced_by_another_connection_is_fatal() {
    let mut h = Harness::connected(config());
    h.feed(json!({"type": "error", "code": 2006, "name": "replaced", "message": "taken over"}));
    h.drop_transport();
    assert!(matches!(
        h.engine.state(),
        ConnectionState::Closed { error: Some(e) } if e.code() == ErrorCode::Replaced
    ));
}

#[test]
fn debug_output_hides_credentials() {
    let mut cfg = config();
    cfg.auth = Auth::Token("secret-token".into());
    let mut engine = Engine::new(cfg.clone(), 1);
    engine.handle_connected(Millis(0));
    for text in [format!("{cfg:?}"), format!("{engine:?}")] {
        assert!(
            !text.contains("secret-token") && text.contains("hidden"),
            "{text}"
        );
    }
}

#[test]
fn frames_the_driver_had_not_taken_are_not_sent_on_the_next_connection() {
    let mut h = Harness::connected(config());
    h.engine
        .publish("a", Data::Bytes(vec![1]), PublishOptions::default(), h.now)
        .unwrap();
    let qos1_op = h
        .engine
        .publish("a", Data::Bytes(vec![2]), qos1(), h.now)
        .unwrap();
    // The transport dies before the driver took these frames.
    h.drop_transport();
    let until = h.engine.poll_timeout().unwrap();
    h.advance_to(until);
    // `connect` checks that `hello` is the first frame of the new connection.
    h.connect("e1");
    let sent = h.sent();
    assert_eq!(
        sent.len(),
        1,
        "only the QoS 1 publish is sent again: {sent:?}"
    );
    assert_eq!(sent[0]["type"], "publish");
    assert_eq!(sent[0]["qos"], 1);
    assert!(completion(&h.events(), qos1_op).is_none());
}
