//! Several frames in one WebSocket message (`hello.batch`, `welcome.batch`; PROTOCOL.md §1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use common::{Client, session, session_with, start, zeros_b64};
use serde_json::{Value, json};

/// Joins with `batch` in `hello` as asked; returns the client and its `welcome`.
async fn join(addr: SocketAddr, id: &str, batch: bool) -> (Client, Value) {
    let (client, welcome) = Client::hello_raw(
        addr,
        json!({"type":"hello","v":1,"session":"s","auth":{"password":"p"},"client_id":id,
               "batch":batch}),
    )
    .await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

/// Publishes `count` QoS 0 messages of `bytes` bytes to `topic` in one WebSocket message.
async fn publish_burst(publisher: &mut Client, topic: &str, count: usize, bytes: usize) {
    let data = zeros_b64(bytes);
    let frames: Vec<String> = (0..count)
        .map(|_| json!({"type":"publish","topic":topic,"data":{"bytes":data}}).to_string())
        .collect();
    publisher.send_text(frames.join("\n")).await;
}

/// Reads messages until `count` frames arrived; returns the messages.
async fn read_frames(client: &mut Client, count: usize) -> Vec<String> {
    let mut messages = Vec::new();
    let mut frames = 0;
    while frames < count {
        let message = client.recv_message().await;
        frames += message.split('\n').count();
        messages.push(message);
    }
    messages
}

/// The `offset` of every frame of `messages`, in order.
fn offsets(messages: &[String]) -> Vec<u64> {
    messages
        .iter()
        .flat_map(|m| m.split('\n'))
        .map(|f| {
            let frame: Value = serde_json::from_str(f).expect("each piece is one frame");
            assert_eq!(frame["type"], "message", "{frame}");
            frame["offset"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn the_frames_of_one_message_are_handled_in_order_each_with_its_answer() {
    let t = start(vec![session("s", "p")]).await;
    // A client that announces batches may send them: the server says so in `welcome`.
    let (mut client, welcome) = join(t.addr, "c", true).await;
    assert_eq!(welcome["batch"], true);
    client
        .send_text(
            [
                r#"{"type":"subscribe","id":1,"filter":"a/#"}"#,
                r#"{"type":"ping","id":2}"#,
                "not json",
                "",
                r#"{"type":"subscribe","id":3,"filter":"a/+/+/+/#/x"}"#,
                r#"{"type":"ping","id":4}"#,
            ]
            .join("\n"),
        )
        .await;
    // The answers may come joined too (this client reads batches).
    let answers: Vec<Value> = read_frames(&mut client, 5)
        .await
        .iter()
        .flat_map(|m| m.split('\n'))
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let summary: Vec<(&str, Option<u64>)> = answers
        .iter()
        .map(|a| (a["type"].as_str().unwrap(), a["id"].as_u64()))
        .collect();
    assert_eq!(
        summary,
        [
            ("subscribed", Some(1)),
            ("pong", Some(2)),
            ("error", None),
            ("error", Some(3)),
            ("pong", Some(4)),
        ]
    );
    assert_eq!(answers[2]["name"], "malformed_frame", "{}", answers[2]);
    assert_eq!(answers[3]["name"], "invalid_filter", "{}", answers[3]);
}

#[tokio::test]
async fn a_client_without_batches_may_send_a_frame_with_line_feeds_as_json_whitespace() {
    let t = start(vec![session("s", "p")]).await;
    let (mut client, welcome) = join(t.addr, "c", false).await;
    assert_eq!(welcome.get("batch"), None, "{welcome}");
    client
        .send_text("{\n  \"type\": \"ping\",\n  \"id\": 5\n}".to_owned())
        .await;
    assert_eq!(client.expect("pong").await["id"], 5);
}

#[tokio::test]
async fn a_client_that_reads_batches_gets_a_burst_in_fewer_messages_in_order() {
    let t = start(vec![session("s", "p")]).await;
    let (mut joined, _) = join(t.addr, "joined", true).await;
    joined.subscribe(1, "t").await;
    let (mut single, _) = join(t.addr, "single", false).await;
    single.subscribe(1, "t").await;
    let (mut publisher, _) = join(t.addr, "pub", true).await;
    const N: usize = 200;
    // 1 KiB payloads: 200 frames of ~1.5 KiB cannot fit in one 16 KiB message.
    publish_burst(&mut publisher, "t", N, 1024).await;

    let messages = read_frames(&mut joined, N).await;
    let expected: Vec<u64> = (1..=N as u64).collect();
    assert_eq!(offsets(&messages), expected);
    assert!(
        messages.len() < N,
        "every frame came alone ({} messages)",
        messages.len()
    );
    assert!(
        messages.len() >= N * 1_400 / (16 * 1024),
        "{} messages",
        messages.len()
    );
    for message in &messages {
        assert!(
            message.len() <= 16 * 1024,
            "a message of {} bytes",
            message.len()
        );
    }

    // Without `hello.batch`, one frame per message.
    let messages = read_frames(&mut single, N).await;
    assert_eq!(messages.len(), N);
    assert_eq!(offsets(&messages), expected);
}

#[tokio::test]
async fn a_message_over_the_frame_limit_closes_with_frame_too_large_though_each_frame_fits() {
    let t = start(vec![session_with("s", "p", |s| {
        s.max_frame_bytes = 4096;
        s.max_message_bytes = 2048;
    })])
    .await;
    let (mut client, _) = join(t.addr, "c", true).await;
    let frame = json!({"type":"publish","topic":"t","data":{"bytes":zeros_b64(1500)}}).to_string();
    assert!(frame.len() < 4096);
    client.send_text([frame.as_str(); 3].join("\n")).await;
    let (errors, close) = client.expect_close().await;
    assert_eq!(errors.last().unwrap()["name"], "frame_too_large");
    assert_eq!(close, 4004);
}

/// The value of `counter` for session `s` in the server's `/metrics`.
async fn metric(addr: SocketAddr, counter: &str) -> u64 {
    let (status, metrics) = common::http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let row = format!("{counter}{{session=\"s\"}} ");
    metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(&row))
        .unwrap_or_else(|| panic!("no {row}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_frames_and_the_bytes_of_joined_messages() {
    let t = start(vec![session("s", "p")]).await;
    // The session's only client: everything the server writes in it comes to this client.
    let (mut client, welcome) = join(t.addr, "c", true).await;
    client
        .send(json!({"type":"subscribe","id":1,"filter":"t"}))
        .await;
    const N: usize = 100;
    let subscribed = read_frames(&mut client, 1).await;
    publish_burst(&mut client, "t", N, 200).await;
    let copies = read_frames(&mut client, N).await;
    assert!(copies.len() < N, "the copies came joined");
    let frames = 2 + N as u64; // welcome, subscribed, the copies
    let bytes = welcome.to_string().len()
        + subscribed
            .iter()
            .chain(&copies)
            .map(String::len)
            .sum::<usize>();
    assert_eq!(metric(t.addr, "sealbus_messages_out_total").await, frames);
    assert_eq!(
        metric(t.addr, "sealbus_bytes_out_total").await,
        bytes as u64
    );
}
