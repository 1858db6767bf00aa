//! Routing over real sockets: isolation between sessions, wildcards, one copy per client,
//! retained messages, direct sends, QoS 1 delivery ids, and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Client, session, session_with, start, zeros_b64};
use serde_json::json;

#[tokio::test]
async fn sessions_are_isolated_even_with_same_topics_and_client_ids() {
    let t = start(vec![session("a", "pa"), session("b", "pb")]).await;
    let mut a_sub = Client::join(t.addr, "a", "pa", "same").await;
    let mut b_sub = Client::join(t.addr, "b", "pb", "same").await;
    a_sub.subscribe(1, "t/#").await;
    b_sub.subscribe(1, "t/#").await;
    // Same client id in the other session is not a takeover.
    let mut a_pub = Client::join(t.addr, "a", "pa", "pub").await;
    a_pub
        .send(json!({"type":"publish","topic":"t/x","data":{"json":"for a"},"retain":true}))
        .await;
    assert_eq!(a_sub.expect("message").await["data"]["json"], "for a");
    assert!(b_sub.sync().await.is_empty(), "session b saw a's message");
    // Retained messages do not cross either.
    let mut b_late = Client::join(t.addr, "b", "pb", "late").await;
    b_late.subscribe(1, "t/#").await;
    assert!(b_late.sync().await.is_empty());
    // Nor do direct messages.
    a_pub
        .send(json!({"type":"send","id":5,"to":"late","data":{"json":1}}))
        .await;
    assert_eq!(a_pub.expect("error").await["code"], 3004);
}

#[tokio::test]
async fn wildcards_match_and_one_copy_per_client() {
    let t = start(vec![session("s", "p")]).await;
    let mut sub = Client::join(t.addr, "s", "p", "sub").await;
    for (id, filter) in [(1, "sensors/+/temp"), (2, "sensors/#"), (3, "#")] {
        let answer = sub.subscribe(id, filter).await;
        assert_eq!(answer["position"]["offset"], 0);
        assert!(answer["position"]["epoch"].is_string());
    }
    let mut publisher = Client::join(t.addr, "s", "p", "pub").await;
    for topic in ["sensors/kitchen/temp", "sensors/x", "other", "$sys/x"] {
        publisher
            .send(json!({"type":"publish","topic":topic,"data":{"json":topic}}))
            .await;
    }
    let error = publisher.expect("error").await;
    assert_eq!(error["code"], 2003, "publishing to `$sys/x` is forbidden");
    publisher
        .send(json!({"type":"publish","id":9,"topic":"sensors","data":{"json":"sensors"}}))
        .await;
    let published = publisher.expect("published").await;
    assert_eq!(published["offset"], 4);
    let frames = sub.sync().await;
    let topics: Vec<_> = frames
        .iter()
        .map(|f| f["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        topics,
        ["sensors/kitchen/temp", "sensors/x", "other", "sensors"],
        "one copy each, `$` topics refused, order kept"
    );
    assert_eq!(frames[0]["from"], "pub");
    assert_eq!(frames[0]["offset"], 1);

    // After unsubscribing two of three filters, still exactly one copy.
    sub.send(json!({"type":"unsubscribe","id":4,"filter":"#"}))
        .await;
    assert_eq!(sub.expect("unsubscribed").await["id"], 4);
    sub.send(json!({"type":"unsubscribe","id":5,"filter":"sensors/#"}))
        .await;
    sub.expect("unsubscribed").await;
    sub.send(json!({"type":"unsubscribe","id":6,"filter":"never/held"}))
        .await;
    sub.expect("unsubscribed").await;
    publisher
        .send(json!({"type":"publish","topic":"sensors/k/temp","data":{"json":1}}))
        .await;
    publisher
        .send(json!({"type":"publish","topic":"other","data":{"json":2}}))
        .await;
    let frames = sub.sync().await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["topic"], "sensors/k/temp");
}

#[tokio::test]
async fn retained_messages_are_sent_on_subscribe_and_cleared_by_empty_payload() {
    let t = start(vec![session("s", "p")]).await;
    let mut publisher = Client::join(t.addr, "s", "p", "pub").await;
    publisher
        .send(
            json!({"type":"publish","id":1,"topic":"cfg/a","data":{"json":{"v":1}},"retain":true}),
        )
        .await;
    publisher.expect("published").await;
    publisher
        .send(
            json!({"type":"publish","id":2,"topic":"cfg/b","data":{"bytes":"AAE="},"retain":true}),
        )
        .await;
    publisher.expect("published").await;

    let mut sub = Client::join(t.addr, "s", "p", "sub").await;
    sub.subscribe(1, "cfg/+").await;
    let first = sub.expect("message").await;
    assert_eq!(
        (first["topic"].clone(), first["retained"].clone()),
        (json!("cfg/a"), json!(true))
    );
    assert_eq!(first["data"], json!({"json":{"v":1}}));
    assert_eq!(sub.expect("message").await["data"], json!({"bytes":"AAE="}));

    publisher
        .send(json!({"type":"publish","id":3,"topic":"cfg/a","data":{"json":null},"retain":true}))
        .await;
    publisher.expect("published").await;
    // Live subscribers still get the clearing publish itself.
    assert_eq!(sub.expect("message").await["data"], json!({"json":null}));

    let mut late = Client::join(t.addr, "s", "p", "late").await;
    late.subscribe(1, "cfg/#").await;
    let frames = late.sync().await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["topic"], "cfg/b");
}

#[tokio::test]
async fn send_reaches_the_client_by_id_or_answers_no_such_client() {
    let t = start(vec![session("s", "p")]).await;
    let mut worker = Client::join(t.addr, "s", "p", "worker-7").await;
    let mut api = Client::join(t.addr, "s", "p", "api-1").await;
    api.send(json!({"type":"send","id":6,"to":"worker-7","data":{"json":"hello"}}))
        .await;
    let published = api.expect("published").await;
    assert_eq!(published["id"], 6);
    let direct = worker.expect("direct").await;
    assert_eq!(direct["from"], "api-1");
    assert_eq!(direct["data"]["json"], "hello");

    api.send(json!({"type":"send","id":7,"to":"nobody","data":{"json":1}}))
        .await;
    let error = api.expect("error").await;
    assert_eq!(
        (error["id"].clone(), error["code"].clone()),
        (json!(7), json!(3004))
    );
    api.send(json!({"type":"send","id":8,"to":"$bad","data":{"json":1}}))
        .await;
    assert_eq!(api.expect("error").await["code"], 2007);
    api.sync().await;
}

#[tokio::test]
async fn qos1_gets_published_after_storing_and_a_delivery_id_to_ack() {
    let t = start(vec![session("s", "p")]).await;
    let mut sub = Client::join(t.addr, "s", "p", "sub").await;
    sub.subscribe(1, "jobs/#").await;
    let mut publisher = Client::join(t.addr, "s", "p", "pub").await;
    publisher
        .send(
            json!({"type":"publish","id":4,"mid":"m-1","topic":"jobs/a","data":{"json":1},"qos":1}),
        )
        .await;
    let published = publisher.expect("published").await;
    assert_eq!(
        (published["mid"].clone(), published["offset"].clone()),
        (json!("m-1"), json!(1))
    );
    let message = sub.expect("message").await;
    assert_eq!(message["qos"], 1);
    assert_eq!(message["mid"], "m-1");
    let did = message["did"].as_u64().unwrap();
    sub.send(json!({"type":"ack","did":did,"ok":true})).await;
    sub.send(json!({"type":"ack","did":did,"ok":true})).await;
    assert_eq!(
        sub.expect("error").await["code"],
        3006,
        "second ack is unknown"
    );
    sub.send(json!({"type":"ack","aid":77,"ok":true})).await;
    assert_eq!(sub.expect("error").await["code"], 3005);
    sub.send(json!({"type":"delivery_status","id":3,"mid":"m-1"}))
        .await;
    assert_eq!(sub.expect("error").await["id"], 3);
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays() {
    let t = start(vec![session_with("s", "p", |s| {
        s.max_frame_bytes = 4096;
        s.max_message_bytes = 1024;
        s.max_subscriptions = 2;
    })])
    .await;
    let mut client = Client::join(t.addr, "s", "p", "c").await;
    let cases = [
        ("not json".to_owned(), None, 1001),
        ("[1,2]".to_owned(), None, 1001),
        (r#"{"type":"teleport","id":3}"#.to_owned(), Some(3), 1002),
        (r#"{"type":"subscribe","id":4}"#.to_owned(), Some(4), 1003),
        (
            r#"{"type":"subscribe","id":5,"filter":"a/#/b"}"#.to_owned(),
            Some(5),
            3002,
        ),
        (
            r#"{"type":"publish","id":6,"topic":"a/+","data":{"json":1}}"#.to_owned(),
            Some(6),
            3001,
        ),
        (
            format!(
                r#"{{"type":"publish","id":7,"topic":"a","data":{{"bytes":"{}"}}}}"#,
                zeros_b64(2000)
            ),
            Some(7),
            3003,
        ),
        (
            r#"{"type":"ack_status","id":8,"aid":1}"#.to_owned(),
            Some(8),
            3005,
        ),
    ];
    for (text, id, code) in cases {
        client.send_text(text.clone()).await;
        let error = client.expect("error").await;
        assert_eq!(error["code"], code, "{text}");
        assert_eq!(
            error["id"],
            id.map_or(json!(null), |id| json!(id)),
            "{text}"
        );
        assert!(!error["name"].as_str().unwrap().is_empty());
    }
    client.send_binary(vec![1, 2, 3]).await;
    assert_eq!(client.expect("error").await["code"], 1009);
    client.subscribe(10, "x").await;
    client.subscribe(11, "y").await;
    client.subscribe(11, "y").await;
    client
        .send(json!({"type":"subscribe","id":12,"filter":"z"}))
        .await;
    assert_eq!(client.expect("error").await["code"], 4001);
    client.send(json!({"type":"ping","id":13})).await;
    assert_eq!(client.expect("pong").await["id"], 13);

    // A frame over the session's limit closes with frame_too_large.
    client
        .send_text(format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(5000)))
        .await;
    let (errors, close) = client.expect_close().await;
    assert_eq!(errors.last().unwrap()["code"], 1004);
    assert_eq!(close, 4004);
}

#[tokio::test]
async fn frame_over_the_server_limit_is_refused_by_the_websocket_layer() {
    let t = common::start_with(sealbus_server::config::Config {
        sessions: vec![session_with("s", "p", |s| {
            s.max_frame_bytes = 4096;
            s.max_message_bytes = 1024;
        })],
        server: sealbus_server::config::ServerOptions {
            max_frame_bytes: 8192,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut client = Client::join(t.addr, "s", "p", "c").await;
    client
        .send_text(format!(
            r#"{{"type":"ping","pad":"{}"}}"#,
            "x".repeat(20_000)
        ))
        .await;
    let (errors, close) = client.expect_close().await;
    assert_eq!(errors.last().unwrap()["code"], 1004);
    assert_eq!(close, 4004);
    // The same before `hello`.
    let mut early = Client::connect(t.addr).await;
    early
        .send_text(format!(
            r#"{{"type":"hello","pad":"{}"}}"#,
            "x".repeat(20_000)
        ))
        .await;
    let (errors, close) = early.expect_close().await;
    assert_eq!(errors.last().unwrap()["code"], 1004);
    assert_eq!(close, 4004);
}

#[tokio::test]
async fn a_repeated_message_id_is_answered_duplicate_and_not_delivered_again() {
    let t = start(vec![session("s", "p")]).await;
    let mut sub = Client::join(t.addr, "s", "p", "sub").await;
    sub.subscribe(1, "t").await;
    let mut publisher = Client::join(t.addr, "s", "p", "pub").await;
    for _ in 0..2 {
        publisher
            .send(
                json!({"type":"publish","id":1,"mid":"once","topic":"t","data":{"json":1},"qos":1}),
            )
            .await;
    }
    let first = publisher.expect("published").await;
    assert!(first.get("duplicate").is_none());
    let second = publisher.expect("published").await;
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["offset"], first["offset"]);
    sub.expect("message").await;
    assert!(sub.sync().await.is_empty());
}
