//! publish_with_ack over real sockets: expectations, relayed responses, disconnects, timeout,
//! status, cancel with withdrawal of queued copies, direct sends with ack, 500 subscribers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{ADMIN, Client, http, session, session_with, start, zeros_b64};
use serde_json::{Value, json};

fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn workers(addr: std::net::SocketAddr, names: &[&str]) -> Vec<Client> {
    let mut clients = Vec::new();
    for name in names {
        let mut client = Client::join(addr, "s", "p", name).await;
        client.subscribe(1, "jobs/#").await;
        clients.push(client);
    }
    clients
}

#[tokio::test]
async fn responses_are_relayed_and_complete_the_collection() {
    let t = start(vec![session("s", "p")]).await;
    let mut w = workers(t.addr, &["w1", "w2"]).await;
    let mut publisher = Client::join(t.addr, "s", "p", "pub").await;
    publisher
        .send(json!({"type":"publish","id":5,"topic":"jobs/a","data":{"json":"go"},"ack":{"timeout_ms":10000}}))
        .await;
    let expect = publisher.expect("ack_expect").await;
    assert_eq!(expect["id"], 5);
    assert_eq!(ids(&expect["expected"]), set(&["w1", "w2"]));
    let aid = expect["aid"].clone();
    let m1 = w[0].expect("message").await;
    let m2 = w[1].expect("message").await;
    assert_eq!(
        (m1["aid"].clone(), m2["aid"].clone()),
        (aid.clone(), aid.clone())
    );
    w[0].send(json!({"type":"ack","aid":aid,"ok":true})).await;
    let first = publisher.expect("ack_response").await;
    assert_eq!(
        (first["from"].clone(), first["ok"].clone()),
        (json!("w1"), json!(true))
    );
    w[1].send(json!({"type":"ack","aid":aid,"ok":false,"code":6006,"error":"disk full"}))
        .await;
    let second = publisher.expect("ack_response").await;
    assert_eq!(second["from"], "w2");
    assert_eq!(
        (second["code"].clone(), second["error"].clone()),
        (json!(6006), json!("disk full"))
    );
    let done = publisher.expect("ack_done").await;
    assert_eq!(
        (done["aid"].clone(), done["outcome"].clone()),
        (aid.clone(), json!("complete"))
    );

    // Status after the end, and someone else's aid is unknown.
    publisher
        .send(json!({"type":"ack_status","id":6,"aid":aid}))
        .await;
    let state = publisher.expect("ack_state").await;
    assert_eq!(ids(&state["answered"]), set(&["w1", "w2"]));
    assert_eq!(state["outcome"], "complete");
    w[0].send(json!({"type":"ack_status","id":7,"aid":aid}))
        .await;
    assert_eq!(w[0].expect("error").await["code"], 3005);

    // Nobody subscribed: empty expectation, done at once.
    publisher
        .send(json!({"type":"publish","id":8,"topic":"nobody/here","data":{"json":1},"ack":{"timeout_ms":1000}}))
        .await;
    let expect = publisher.expect("ack_expect").await;
    assert_eq!(expect["expected"], json!([]));
    assert_eq!(publisher.expect("ack_done").await["outcome"], "complete");
}

#[tokio::test]
async fn a_subscriber_that_leaves_answers_disconnected() {
    let t = start(vec![session("s", "p")]).await;
    let mut w = workers(t.addr, &["stay", "leave", "unsub"]).await;
    let mut publisher = Client::join(t.addr, "s", "p", "pub").await;
    publisher
        .send(json!({"type":"publish","id":1,"topic":"jobs/a","data":{"json":1},"ack":{"timeout_ms":10000}}))
        .await;
    let aid = publisher.expect("ack_expect").await["aid"].clone();
    for worker in &mut w {
        worker.expect("message").await;
    }
    let unsub = w.pop().unwrap();
    let leaving = w.pop().unwrap();
    drop(leaving);
    let gone = publisher.expect("ack_response").await;
    assert_eq!(gone["from"], "leave");
    assert_eq!(
        (gone["ok"].clone(), gone["code"].clone()),
        (json!(false), json!(6005))
    );
    assert_eq!(gone["error"], "disconnected");
    let mut unsub = unsub;
    unsub
        .send(json!({"type":"unsubscribe","id":2,"filter":"jobs/#"}))
        .await;
    let gone = publisher.expect("ack_response").await;
    assert_eq!(
        (gone["from"].clone(), gone["code"].clone()),
        (json!("unsub"), json!(6005))
    );
    w[0].send(json!({"type":"ack","aid":aid,"ok":true})).await;
    assert_eq!(publisher.expect("ack_response").await["from"], "stay");
    assert_eq!(publisher.expect("ack_done").await["outcome"], "complete");
}

#[tokio::test]
async fn timeout_finishes_with_what_arrived_and_ignores_late_answers() {
    let t = start(vec![session("s", "p")]).await;
    let mut w = workers(t.addr, &["fast", "slow"]).await;
    let mut publisher = Client::join(t.addr, "s", "p", "pub").await;
    publisher
        .send(json!({"type":"publish","id":1,"topic":"jobs/a","data":{"json":1},"ack":{"timeout_ms":300}}))
        .await;
    let aid = publisher.expect("ack_expect").await["aid"].clone();
    w[0].expect("message").await;
    w[1].expect("message").await;
    w[0].send(json!({"type":"ack","aid":aid,"ok":true})).await;
    assert_eq!(publisher.expect("ack_response").await["from"], "fast");
    publisher
        .send(json!({"type":"ack_status","id":2,"aid":aid}))
        .await;
    let state = publisher.expect("ack_state").await;
    assert_eq!(state["pending"], json!(["slow"]));
    assert_eq!(state["answered"], json!(["fast"]));
    assert!(state.get("outcome").is_none());
    let done = publisher.expect("ack_done").await;
    assert_eq!(done["outcome"], "timeout");
    // A late answer is ignored without an error, and nothing more reaches the publisher.
    w[1].send(json!({"type":"ack","aid":aid,"ok":true})).await;
    assert!(w[1].sync().await.is_empty());
    assert!(publisher.sync().await.is_empty());
    // Cancelling a finished collection is a no-op.
    publisher
        .send(json!({"type":"ack_cancel","id":3,"aid":aid}))
        .await;
    assert!(publisher.sync().await.is_empty());
}

#[tokio::test]
async fn send_with_ack_waits_for_the_recipient() {
    let t = start(vec![session("s", "p")]).await;
    let mut worker = Client::join(t.addr, "s", "p", "worker").await;
    let mut api = Client::join(t.addr, "s", "p", "api").await;
    api.send(
        json!({"type":"send","id":1,"to":"worker","data":{"json":"do"},"ack":{"timeout_ms":5000}}),
    )
    .await;
    let expect = api.expect("ack_expect").await;
    assert_eq!(expect["expected"], json!(["worker"]));
    let direct = worker.expect("direct").await;
    assert_eq!(direct["aid"], expect["aid"]);
    worker
        .send(json!({"type":"ack","aid":direct["aid"],"ok":true}))
        .await;
    assert_eq!(api.expect("ack_response").await["ok"], true);
    assert_eq!(api.expect("ack_done").await["outcome"], "complete");
}

#[tokio::test]
async fn cancel_withdraws_copies_still_queued() {
    let t = start(vec![session_with("s", "p", |s| {
        s.outbound_queue = 10_000;
        s.slow_consumer_drops = 100_000;
    })])
    .await;
    let mut stuck = Client::join(t.addr, "s", "p", "stuck").await;
    stuck.subscribe(1, "big/#").await;
    let mut publisher = Client::join(t.addr, "s", "p", "pub").await;
    // Fill the socket buffers until frames back up in the stuck client's queue (it reads
    // nothing meanwhile).
    let filler = zeros_b64(200_000);
    let mut fillers = 0;
    loop {
        publisher
            .send(json!({"type":"publish","topic":"big/fill","data":{"bytes":filler}}))
            .await;
        fillers += 1;
        let (_, clients) = http(t.addr, "GET", "/api/sessions/s/clients", Some(ADMIN), None).await;
        let depth = clients["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["client_id"] == "stuck")
            .unwrap()["queue_depth"]
            .as_u64()
            .unwrap();
        if depth >= 2 {
            break;
        }
        assert!(fillers < 2_000, "the queue never backed up");
    }
    for id in 1..=3 {
        publisher
            .send(json!({"type":"publish","id":id,"topic":"big/ack","data":{"json":id},"ack":{"timeout_ms":60000}}))
            .await;
    }
    let mut aids = Vec::new();
    for _ in 1..=3 {
        let expect = publisher.expect("ack_expect").await;
        assert_eq!(expect["expected"], json!(["stuck"]));
        aids.push(expect["aid"].clone());
    }
    publisher
        .send(json!({"type":"ack_cancel","id":10,"aid":aids[1]}))
        .await;
    let done = publisher.expect("ack_done").await;
    assert_eq!(
        (done["aid"].clone(), done["outcome"].clone()),
        (aids[1].clone(), json!("cancelled"))
    );
    // Now read everything: the cancelled copy never arrives, the others do.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let frame = stuck.recv().await;
        if frame["topic"] == "big/ack" {
            seen.push(frame["aid"].clone());
        }
    }
    assert_eq!(seen, vec![aids[0].clone(), aids[2].clone()]);
    assert!(stuck.sync().await.iter().all(|f| f["topic"] != "big/ack"));
    // Answering the withdrawn copy's aid is not an error for the subscriber but not relayed.
    stuck
        .send(json!({"type":"ack","aid":aids[1],"ok":true}))
        .await;
    stuck
        .send(json!({"type":"ack","aid":aids[0],"ok":true}))
        .await;
    let response = publisher.expect("ack_response").await;
    assert_eq!(response["aid"], aids[0]);
    assert_eq!(publisher.expect("ack_done").await["aid"], aids[0]);
}

#[tokio::test]
async fn five_hundred_subscribers_all_answer() {
    const N: usize = 500;
    let t = start(vec![session("s", "p")]).await;
    let mut subscribers = Vec::with_capacity(N);
    for i in 0..N {
        let mut client = Client::join(t.addr, "s", "p", &format!("w{i}")).await;
        client.subscribe(1, "fan/+").await;
        subscribers.push(client);
    }
    let mut publisher = Client::join(t.addr, "s", "p", "pub").await;
    publisher
        .send(json!({"type":"publish","id":1,"topic":"fan/out","data":{"json":"all"},"ack":{"timeout_ms":120000}}))
        .await;
    let expect = publisher.expect("ack_expect").await;
    assert_eq!(expect["expected"].as_array().unwrap().len(), N);
    let answering = tokio::spawn(async move {
        for client in &mut subscribers {
            let message = client.expect("message").await;
            client
                .send(json!({"type":"ack","aid":message["aid"],"ok":true}))
                .await;
        }
        subscribers
    });
    let mut from = BTreeSet::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), publisher.recv())
            .await
            .unwrap();
        match frame["type"].as_str().unwrap() {
            "ack_response" => {
                assert_eq!(frame["ok"], true);
                assert!(from.insert(frame["from"].as_str().unwrap().to_owned()));
            }
            "ack_done" => {
                assert_eq!(frame["outcome"], "complete");
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(from.len(), N);
    answering.await.unwrap();
}
