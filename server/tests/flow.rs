//! Flow control over real sockets: slow consumers, keep-alive, graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{ADMIN, Client, http, session_with, start, zeros_b64};
use serde_json::json;

#[tokio::test]
async fn slow_consumer_is_dropped_without_slowing_the_others() {
    let t = start(vec![session_with("s", "p", |s| {
        s.outbound_queue = 16;
        s.slow_consumer_drops = 8;
    })])
    .await;
    let mut stuck = Client::join(t.addr, "s", "p", "stuck").await;
    stuck.subscribe(1, "load").await;
    let mut fast = Client::join(t.addr, "s", "p", "fast").await;
    fast.subscribe(1, "load").await;
    let mut publisher = Client::join(t.addr, "s", "p", "pub").await;
    let payload = zeros_b64(50_000);
    const N: u64 = 400;
    let reading = tokio::spawn(async move {
        let mut received = Vec::new();
        while received.len() < N as usize {
            received.push(fast.expect("message").await["offset"].as_u64().unwrap());
        }
        (received, fast)
    });
    for _ in 0..N {
        publisher
            .send(json!({"type":"publish","topic":"load","data":{"bytes":payload}}))
            .await;
    }
    let (received, _fast) = reading.await.unwrap();
    assert_eq!(
        received,
        (1..=N).collect::<Vec<_>>(),
        "the fast subscriber got everything, in order"
    );

    // The stuck client was cut off; it is gone from the session and drops were counted.
    let (_, clients) = http(t.addr, "GET", "/api/sessions/s/clients", Some(ADMIN), None).await;
    let ids: Vec<_> = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["fast", "pub"]);
    let (_, metrics) = http(t.addr, "GET", "/metrics", None, None).await;
    let drops = metrics
        .as_str()
        .unwrap()
        .lines()
        .find(|l| l.starts_with("sealbus_drops_total{session=\"s\"}"))
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(drops > 8, "drops: {drops}");
    let (frames, close) = stuck.read_to_end().await;
    assert!(frames.len() < N as usize);
    assert!(close.is_none() || close == Some(4304), "close {close:?}");
}

#[tokio::test]
async fn silent_connections_are_closed_after_twice_the_keepalive() {
    let t = start(vec![session_with("s", "p", |s| s.keepalive_ms = 200)]).await;
    let mut chatty = Client::join(t.addr, "s", "p", "chatty").await;
    let mut silent = Client::join(t.addr, "s", "p", "silent").await;
    let mut ws_pinger = Client::join(t.addr, "s", "p", "ws-pinger").await;
    for id in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        chatty.send(json!({"type":"ping","id":id})).await;
        assert_eq!(chatty.expect("pong").await["id"], id);
        ws_pinger.ws_ping(&[id]).await;
    }
    let (errors, close) = silent.expect_close().await;
    assert_eq!(errors.last().unwrap()["code"], 6008);
    assert_eq!(close, 4508);
}

#[tokio::test]
async fn graceful_shutdown_drains_queues_and_closes_with_shutting_down() {
    let t = start(vec![session_with("s", "p", |_| {})]).await;
    let mut sub = Client::join(t.addr, "s", "p", "sub").await;
    sub.subscribe(1, "t").await;
    let mut publisher = Client::join(t.addr, "s", "p", "pub").await;
    for i in 0..20 {
        publisher
            .send(json!({"type":"publish","topic":"t","data":{"json":i}}))
            .await;
    }
    publisher.sync().await;
    t.server.shutdown();
    let (frames, close) = sub.expect_close().await;
    let messages = frames.iter().filter(|f| f["type"] == "message").count();
    assert_eq!(messages, 20, "queued messages are delivered before closing");
    assert_eq!(frames.last().unwrap()["code"], 6002);
    assert_eq!(close, 4502);
    assert_eq!(publisher.expect_close().await.1, 4502);
}

#[tokio::test]
async fn a_client_that_closes_first_gets_the_servers_close_frame_back() {
    let t = start(vec![session_with("s", "p", |_| {})]).await;
    for id in ["idle", "busy"] {
        let mut client = Client::join(t.addr, "s", "p", id).await;
        if id == "busy" {
            client.subscribe(1, "t").await;
            client
                .send(json!({"type":"publish","id":2,"topic":"t","data":{"json":1},"qos":1}))
                .await;
        }
        assert_eq!(
            client.close_first().await,
            Ok(()),
            "{id}: a clean closing handshake"
        );
    }
}
