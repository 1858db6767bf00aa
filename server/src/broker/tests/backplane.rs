//! The backplane seam: what the broker hands it, and what it brings in.

use std::sync::Arc;

use sealbus::protocol::{Codec, MessageRef};
use serde_json::{Value, json};

use super::{frame, handle, join, session, session_with};
use crate::broker::Backplane;

#[tokio::test]
async fn messages_from_the_backplane_reach_local_subscribers() {
    let session = session();
    let (sub, mut rx) = join(&session, "s");
    handle(
        &session,
        sub,
        json!({"type":"subscribe","id":1,"filter":"a/+"}),
    );
    frame(&mut rx);
    let message: sealbus::protocol::Message = serde_json::from_value(json!({
        "topic": "a/b", "data": {"json": 1}, "from": "elsewhere", "ts": 1, "offset": 9
    }))
    .unwrap();
    session.deliver_remote(&message);
    let got = frame(&mut rx).unwrap();
    assert_eq!(
        (got["from"].clone(), got["topic"].clone()),
        (json!("elsewhere"), json!("a/b"))
    );
}

/// A backplane that keeps the frames it is handed, as a forwarding one would send them.
#[derive(Debug, Default)]
struct Recording(std::sync::Mutex<Vec<(String, Value)>>);

impl Backplane for Recording {
    fn publish(&self, session: &str, message: &MessageRef<'_>) {
        let text = Codec::encode_message(message).unwrap();
        let frame = serde_json::from_str(&text).unwrap();
        self.0.lock().unwrap().push((session.to_owned(), frame));
    }
}

#[tokio::test]
async fn the_backplane_is_handed_every_publish_as_its_subscribers_see_it() {
    let backplane = Arc::new(Recording::default());
    let session = session_with(backplane.clone());
    let (sub, mut rx) = join(&session, "sub");
    handle(
        &session,
        sub,
        json!({"type":"subscribe","id":1,"filter":"t/#"}),
    );
    frame(&mut rx);
    let (publisher, _rx_p) = join(&session, "pub");
    handle(
        &session,
        publisher,
        json!({"type":"publish","topic":"t/0","data":{"json":0}}),
    );
    handle(
        &session,
        publisher,
        json!({"type":"publish","topic":"t/1","data":{"json":1},"qos":1,"mid":"m-1","id":2}),
    );
    let seen = backplane.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let delivered = frame(&mut rx).unwrap();
    assert_eq!(
        seen[0],
        ("s".to_owned(), delivered),
        "a QoS 0 copy, no message id"
    );
    assert_eq!(seen[0].1.get("mid"), None);
    let (name, qos1) = &seen[1];
    assert_eq!(name, "s");
    assert_eq!(
        (&qos1["topic"], &qos1["mid"], &qos1["qos"], &qos1["from"]),
        (&json!("t/1"), &json!("m-1"), &json!(1), &json!("pub"))
    );
    assert_eq!(
        qos1.get("did"),
        None,
        "a subscriber's own fields are not part of it"
    );
}
