//! Several frames per WebSocket message (`hello.batch` / `welcome.batch`, PROTOCOL.md §1).

use super::*;

/// A welcome saying that the server reads batches.
fn welcome_joining(epoch: &str) -> Value {
    let mut welcome = welcome(epoch);
    welcome["batch"] = json!(true);
    welcome
}

/// Queues `count` QoS 0 publishes of `size`-character JSON strings.
fn publish_many(h: &mut Harness, count: usize, size: usize) {
    for _ in 0..count {
        h.engine
            .publish(
                "a/b",
                Data::Json(json!("x".repeat(size))),
                PublishOptions::default(),
                h.now,
            )
            .unwrap();
    }
}

/// Every message sent since the last call, as text.
fn messages(h: &mut Harness) -> Vec<String> {
    std::iter::from_fn(|| h.engine.poll_transmit()).collect()
}

#[test]
fn frames_are_joined_only_on_a_connection_whose_server_reads_batches() {
    let mut h = Harness::new(config());
    h.actions();
    h.engine.handle_connected(h.now);
    publish_many(&mut h, 3, 10);
    // Before `welcome`, `hello` travels alone (the publishes wait for the welcome).
    let before = messages(&mut h);
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].starts_with(r#"{"type":"hello""#));
    h.feed(welcome_joining("e1"));
    h.events();
    publish_many(&mut h, 3, 10);
    let joined = messages(&mut h);
    assert_eq!(joined.len(), 1, "{joined:?}");
    let frames: Vec<Value> = crate::protocol::split_frames(&joined[0])
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    assert_eq!(frames.len(), 6);
    assert!(frames.iter().all(|f| f["type"] == "publish"));

    // A server without `batch` in its welcome gets one frame per message.
    h.drop_transport();
    let until = h.engine.poll_timeout().unwrap();
    h.advance_to(until);
    h.connect("e1");
    h.events();
    publish_many(&mut h, 3, 10);
    let single = messages(&mut h);
    assert_eq!(single.len(), 3, "{single:?}");
    assert!(single.iter().all(|m| !m.contains('\n')));
}

#[test]
fn joined_messages_stay_within_the_servers_frame_limit() {
    // The test welcome's frame limit is 4 096 bytes: 20 frames of ~520 bytes need 3+ messages.
    let mut h = connected_joining();
    publish_many(&mut h, 20, 480);
    let sent = messages(&mut h);
    assert!(sent.len() >= 3, "{} messages", sent.len());
    assert!(
        sent.iter().all(|m| m.len() <= 4096),
        "a message over the limit"
    );
    let frames: usize = sent
        .iter()
        .map(|m| crate::protocol::split_frames(m).count())
        .sum();
    assert_eq!(frames, 20);
}

/// A connected engine whose server agreed to batches.
fn connected_joining() -> Harness {
    let mut h = Harness::new(config());
    h.actions();
    h.engine.handle_connected(h.now);
    h.sent();
    h.feed(welcome_joining("e1"));
    h.events();
    h
}

/// A `message` frame on `a/b` at `offset`.
fn message_frame(offset: u64) -> Value {
    json!({"type": "message", "topic": "a/b", "data": {"json": offset}, "from": "p",
        "ts": 1, "offset": offset, "qos": 0})
}

/// The offsets of the messages delivered among `events`.
fn delivered(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Deliver { message, .. } => message.offset,
            _ => None,
        })
        .collect()
}

#[test]
fn without_batches_a_message_is_one_frame_whatever_its_line_feeds() {
    let mut h = Harness::connected(config());
    h.subscribed("a/#", 1);
    // A server that did not agree to batches may pretty-print: line feeds are whitespace.
    let pretty = serde_json::to_string_pretty(&message_frame(2)).unwrap();
    assert!(pretty.contains('\n'));
    h.engine.handle_message(&pretty, h.now);
    let events = h.events();
    assert_eq!(delivered(&events), [2]);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Error(_))),
        "{events:?}"
    );
}

#[test]
fn a_welcome_agreeing_to_batches_may_carry_the_frames_queued_after_it() {
    let mut h = Harness::connected(config());
    h.subscribed("a/#", 1);
    h.drop_transport();
    let until = h.engine.poll_timeout().unwrap();
    h.advance_to(until);
    assert_eq!(h.engine.poll_connection(), Some(ConnAction::Connect));
    h.engine.handle_connected(h.now);
    h.sent();
    // A returning persistent client: the server joined its queued messages to the welcome.
    let text = format!(
        "{}\n{}\n{}",
        welcome_joining("e1"),
        message_frame(2),
        message_frame(3)
    );
    h.engine.handle_message(&text, h.now);
    let events = h.events();
    assert_eq!(delivered(&events), [2, 3], "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, Event::Error(_))));
}

#[test]
fn a_message_of_several_frames_is_handled_frame_by_frame_in_order() {
    let mut h = connected_joining();
    let handler = h.subscribed("a/#", 1);
    let message = |offset: u64| message_frame(offset).to_string();
    // Three messages, an undecodable frame between them and an empty line: each decodable
    // frame is delivered in order, the bad one is reported, nothing else is lost.
    let text = format!("{}\n{}\nnot json\n\n{}", message(2), message(3), message(4));
    h.engine.handle_message(&text, h.now);
    let events = h.events();
    let offsets: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Deliver {
                handlers, message, ..
            } => {
                assert_eq!(handlers, &[handler]);
                message.offset
            }
            _ => None,
        })
        .collect();
    assert_eq!(offsets, [2, 3, 4]);
    let errors = events
        .iter()
        .filter(|e| matches!(e, Event::Error(_)))
        .count();
    assert_eq!(errors, 1, "{events:?}");
}
