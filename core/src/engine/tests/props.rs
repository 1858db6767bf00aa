//! Property test: any interleaving of commands, server frames, drops and time never panics,
//! completes an operation at most once and finishes a publish_with_ack at most once.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Step {
    Subscribe(u8),
    Unsubscribe(u8),
    Publish { qos1: bool, ack: bool, direct: bool },
    Cancel(u8),
    Complete(u8, bool),
    Frame(u8, u8, u8),
    Advance(u16),
    Drop,
    Close,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..4).prop_map(Step::Subscribe),
        (0u8..8).prop_map(Step::Unsubscribe),
        (any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(qos1, ack, direct)| Step::Publish { qos1, ack, direct }),
        (0u8..8).prop_map(Step::Cancel),
        (0u8..8, any::<bool>()).prop_map(|(t, ok)| Step::Complete(t, ok)),
        (0u8..12, 0u8..16, 0u8..4).prop_map(|(k, id, aid)| Step::Frame(k, id, aid)),
        any::<u16>().prop_map(Step::Advance),
        Just(Step::Drop),
        Just(Step::Close),
    ]
}

const FILTERS: [&str; 4] = ["a/+", "a/#", "b", "a/+"];

/// A server frame of kind `kind` about request `id` / ack id `aid`.
fn frame(kind: u8, id: u8, aid: u8) -> Value {
    let (id, aid) = (u64::from(id), u64::from(aid));
    match kind {
        0 => json!({"type": "subscribed", "id": id, "filter": "a/+",
            "position": {"epoch": "e1", "offset": id}}),
        1 => json!({"type": "subscribed", "id": id, "filter": "b", "recovery": "not_recovered",
            "position": {"epoch": "e2", "offset": 1}}),
        2 => json!({"type": "unsubscribed", "id": id, "filter": "b"}),
        3 => json!({"type": "published", "id": id, "mid": "m", "offset": id}),
        4 => json!({"type": "ack_expect", "id": id, "aid": aid, "expected": ["w1", "w2"]}),
        5 => json!({"type": "ack_response", "aid": aid, "from": "w1", "ok": true}),
        6 => json!({"type": "ack_done", "aid": aid, "outcome": "complete"}),
        7 => json!({"type": "message", "topic": "a/x", "data": {"json": 1}, "from": "p",
            "ts": 1, "offset": id, "qos": 1, "mid": "m", "did": id, "aid": aid}),
        8 => json!({"type": "direct", "data": {"sealed": "AQID"}, "from": "p", "ts": 1,
            "aid": aid}),
        9 => json!({"type": "error", "id": id, "code": 2003, "name": "forbidden",
            "message": "no"}),
        10 => json!({"type": "pong"}),
        _ => welcome("e1"),
    }
}

fn run(steps: Vec<Step>) {
    let mut cfg = config();
    cfg.reconnect.retry_initial_connect = true;
    cfg.offline_buffer = 3;
    let mut h = Harness::connected(cfg);
    let mut handlers = Vec::new();
    let mut acks = Vec::new();
    let mut tokens = Vec::new();
    let mut completed = HashSet::new();
    let mut finished = HashSet::new();
    for step in steps {
        match step {
            Step::Subscribe(f) => {
                if let Ok(op) = h.engine.subscribe(FILTERS[usize::from(f)], h.now) {
                    handlers.push(op);
                }
            }
            Step::Unsubscribe(i) => {
                if let Some(op) = handlers.get(usize::from(i)).copied() {
                    h.engine.unsubscribe(op, h.now);
                }
            }
            Step::Publish { qos1, ack, direct } => {
                let options = if qos1 {
                    super::qos1()
                } else {
                    PublishOptions::default()
                };
                let data = Data::Json(json!(1));
                let result = match (ack, direct) {
                    (true, false) => h.engine.publish_with_ack("a/b", data, options, 500, h.now),
                    (true, true) => h
                        .engine
                        .publish_to_id_with_ack("w", data, options, 500, h.now),
                    (false, false) => h.engine.publish("a/b", data, options, h.now),
                    (false, true) => h.engine.publish_to_id("w", data, options, h.now),
                };
                if let (Ok(op), true) = (result, ack) {
                    acks.push(op);
                }
            }
            Step::Cancel(i) => {
                if let Some(op) = acks.get(usize::from(i)).copied() {
                    h.engine.cancel_ack(op, h.now);
                }
            }
            Step::Complete(i, ok) => {
                if let Some(token) = tokens.get(usize::from(i)).copied() {
                    let result = if ok { Ok(()) } else { Err("x".to_owned()) };
                    h.engine.complete_delivery(token, result, h.now);
                }
            }
            Step::Frame(kind, id, aid) => h.feed(frame(kind, id, aid)),
            Step::Advance(ms) => h.advance(u64::from(ms)),
            Step::Drop => h.drop_transport(),
            Step::Close => h.engine.close(false, h.now),
        }
        if h.actions().contains(&ConnAction::Connect) {
            h.engine.handle_connected(h.now);
            h.feed(welcome("e1"));
        }
        h.sent();
        for event in h.events() {
            match event {
                Event::Completed { op, .. } => {
                    assert!(completed.insert(op), "{op:?} completed twice");
                }
                Event::AckUpdated { op, snapshot } if snapshot.is_complete() => {
                    assert!(finished.insert(op), "{op:?} finished twice");
                }
                Event::Deliver { token: Some(t), .. } => tokens.push(t),
                _ => {}
            }
        }
        if h.engine.state() == &ConnectionState::Connected {
            assert!(
                h.engine.poll_timeout().is_some(),
                "connected without keep-alive timer"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_interleaving_is_handled(steps in proptest::collection::vec(step(), 0..60)) {
        run(steps);
    }
}
