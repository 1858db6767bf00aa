//! Guaranteed delivery over real sockets with raw frames: QoS 1 retries and acks per
//! subscriber, dead letters, persistent clients, history recovery with `since`, idempotent
//! publishing, delivery status, and an in-process restart over the same store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ADMIN, Client, http, session_with, start_with};
use sealbus_server::Server;
use sealbus_server::config::Config;
use sealbus_server::store::{MemoryStore, Store};
use serde_json::{Value, json};

/// A session with a short retry interval so retries are observable in a test.
fn quick(name: &str, tweak: impl FnOnce(&mut sealbus_server::config::SessionSettings)) -> Config {
    Config {
        sessions: vec![session_with(name, "pw", |s| {
            s.retry_interval_ms = 150;
            tweak(s);
        })],
        ..Config::default()
    }
}

async fn publish_qos1(client: &mut Client, id: u64, topic: &str, data: Value) -> Value {
    client
        .send(json!({"type":"publish","id":id,"topic":topic,"data":{"json":data},"qos":1}))
        .await;
    let published = client.expect("published").await;
    assert_eq!(published["id"], id);
    published
}

#[tokio::test]
async fn an_unacknowledged_copy_is_redelivered_with_the_same_delivery_id_until_acked() {
    let server = start_with(quick("d", |_| {})).await;
    let mut publisher = Client::join(server.addr, "d", "pw", "pub").await;
    let mut subscriber = Client::join(server.addr, "d", "pw", "sub").await;
    subscriber.subscribe(1, "jobs/#").await;
    publish_qos1(&mut publisher, 1, "jobs/a", json!("work")).await;
    let first = subscriber.expect("message").await;
    assert_eq!(first["qos"], 1);
    assert!(first.get("dup").is_none(), "{first}");
    let did = first["did"].as_u64().unwrap();
    let second = subscriber.expect("message").await;
    assert_eq!(
        (second["did"].as_u64(), &second["dup"]),
        (Some(did), &json!(true))
    );
    let third = subscriber.expect("message").await;
    assert_eq!(third["did"].as_u64(), Some(did));
    subscriber
        .send(json!({"type":"ack","did":did,"ok":true}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_ack = subscriber.sync().await;
    assert!(
        after_ack.iter().all(|f| f["type"] != "message"),
        "no redelivery after the ack: {after_ack:?}"
    );
    subscriber
        .send(json!({"type":"ack","did":did,"ok":true}))
        .await;
    let unknown = subscriber.expect("error").await;
    assert_eq!(unknown["name"], "unknown_delivery_id");
}

#[tokio::test]
async fn one_subscribers_ack_never_settles_anothers_copy() {
    let server = start_with(quick("d", |_| {})).await;
    let mut publisher = Client::join(server.addr, "d", "pw", "pub").await;
    let mut quick_one = Client::join(server.addr, "d", "pw", "acks").await;
    let mut silent = Client::join(server.addr, "d", "pw", "silent").await;
    quick_one.subscribe(1, "t").await;
    silent.subscribe(1, "t").await;
    publisher
        .send(json!({"type":"publish","id":7,"mid":"m-7","topic":"t","data":{"json":1},"qos":1}))
        .await;
    publisher.expect("published").await;
    let copy = quick_one.expect("message").await;
    quick_one
        .send(json!({"type":"ack","did":copy["did"],"ok":true}))
        .await;
    let mut silent_copies = 0;
    for _ in 0..3 {
        let frame = silent.expect("message").await;
        assert_eq!(frame["mid"], "m-7");
        silent_copies += 1;
    }
    assert_eq!(silent_copies, 3);
    let quick_frames = quick_one.sync().await;
    assert!(quick_frames.is_empty(), "{quick_frames:?}");
    publisher
        .send(json!({"type":"delivery_status","id":8,"mid":"m-7"}))
        .await;
    let status = publisher.expect("delivery_state").await;
    let state_of = |client: &str| {
        status["copies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["client"] == client)
            .map(|c| c["state"].clone())
    };
    assert_eq!(state_of("acks"), Some(json!("acknowledged")));
    assert_eq!(state_of("silent"), Some(json!("delivered")));
    // Another client may not ask about pub's message; an unknown id is an error too.
    silent
        .send(json!({"type":"delivery_status","id":9,"mid":"m-7"}))
        .await;
    let mut frames = silent.sync().await;
    frames.retain(|f| f["type"] != "message");
    assert_eq!(frames[0]["name"], "unknown_message_id", "{frames:?}");
    // The admin API can ask about any message.
    let (status, body) = http(
        server.addr,
        "GET",
        "/api/sessions/d/messages/m-7",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["topic"], "t");
    assert_eq!(body["copies"].as_array().unwrap().len(), 2);
    let (status, _) = http(
        server.addr,
        "GET",
        "/api/sessions/d/messages/nope",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_copy_out_of_retries_goes_to_the_dead_letter_topic_and_the_publisher_is_told() {
    let server = start_with(quick("d", |s| s.max_retries = 2)).await;
    let mut publisher = Client::join(server.addr, "d", "pw", "pub").await;
    let mut watcher = Client::join(server.addr, "d", "pw", "watcher").await;
    let mut subscriber = Client::join(server.addr, "d", "pw", "sub").await;
    watcher.subscribe(1, "$dead/#").await;
    subscriber.subscribe(1, "orders/+").await;
    publisher
        .send(json!({"type":"publish","id":1,"mid":"o-1","topic":"orders/eu","data":{"json":{"n":1}},"qos":1,"notify_dead":true}))
        .await;
    publisher.expect("published").await;
    for attempt in 0..3 {
        let copy = subscriber.expect("message").await;
        assert_eq!(copy["dup"].as_bool().unwrap_or(false), attempt > 0);
    }
    let notice = publisher.expect("dead_letter").await;
    assert_eq!(
        notice,
        json!({"type":"dead_letter","mid":"o-1","topic":"orders/eu","client":"sub","attempts":3})
    );
    let dead = watcher.expect("message").await;
    assert_eq!(dead["topic"], "$dead/orders/eu");
    assert_eq!(dead["data"], json!({"json":{"n":1}}));
    assert_eq!(
        (&dead["from"], &dead["mid"]),
        (&json!("pub"), &json!("o-1"))
    );
    let (_, metrics) = http(server.addr, "GET", "/metrics", None, None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("sealbus_dead_letters_total{session=\"d\"} 1"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rest = subscriber.sync().await;
    assert!(rest.is_empty(), "a dead copy is not sent again: {rest:?}");
}

#[tokio::test]
async fn a_persistent_client_gets_what_it_missed_in_order_when_it_comes_back() {
    let server = start_with(quick("d", |s| s.retry_interval_ms = 60_000)).await;
    let mut publisher = Client::join(server.addr, "d", "pw", "pub").await;
    let (mut worker, welcome) = Client::join_persistent(server.addr, "d", "pw", "worker").await;
    assert!(welcome.get("session_present").is_none(), "{welcome}");
    worker.subscribe(1, "jobs/#").await;
    publish_qos1(&mut publisher, 1, "jobs/a", json!(0)).await;
    let unacked = worker.expect("message").await;
    worker.close().await;
    for n in 1..=3 {
        publish_qos1(&mut publisher, n + 1, "jobs/a", json!(n)).await;
    }
    publisher
        .send(json!({"type":"publish","topic":"jobs/a","data":{"json":"qos0"}}))
        .await;
    publisher
        .send(json!({"type":"send","id":9,"to":"worker","data":{"json":"direct"},"qos":1}))
        .await;
    let queued = publisher.expect("published").await;
    assert_eq!(queued["queued"], true, "{queued}");
    publisher
        .send(json!({"type":"send","id":10,"to":"worker","data":{"json":"direct0"}}))
        .await;
    assert_eq!(publisher.expect("error").await["name"], "no_such_client");
    let (_, clients) = http(
        server.addr,
        "GET",
        "/api/sessions/d/clients",
        Some(ADMIN),
        None,
    )
    .await;
    let away = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "worker")
        .unwrap()
        .clone();
    assert_eq!(
        (&away["connected"], &away["queued"]),
        (&json!(false), &json!(5))
    );

    let (mut worker, welcome) = Client::join_persistent(server.addr, "d", "pw", "worker").await;
    assert_eq!(welcome["session_present"], true);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let frame = worker.recv().await;
        let data = frame["data"]["json"].clone();
        seen.push(data);
        let ack = json!({"type":"ack","did":frame["did"],"ok":true});
        worker.send(ack).await;
        if frame["data"]["json"] == json!(0) {
            assert_eq!(frame["dup"], true, "written before the disconnect: {frame}");
            assert_ne!(
                frame["did"], unacked["did"],
                "a new delivery id on a new connection"
            );
        }
    }
    assert_eq!(
        seen,
        vec![json!(0), json!(1), json!(2), json!(3), json!("direct")]
    );
    let rest = worker.sync().await;
    assert!(
        rest.is_empty(),
        "QoS 0 is not queued, acked copies are not resent: {rest:?}"
    );
    // The subscription was kept: new messages arrive without subscribing again.
    publish_qos1(&mut publisher, 20, "jobs/b", json!("live")).await;
    assert_eq!(worker.expect("message").await["data"]["json"], "live");
}

#[tokio::test]
async fn a_full_offline_queue_drops_the_oldest_copy_as_dead() {
    let server = start_with(quick("d", |s| s.offline_queue_size = 2)).await;
    let mut publisher = Client::join(server.addr, "d", "pw", "pub").await;
    let mut watcher = Client::join(server.addr, "d", "pw", "watcher").await;
    watcher.subscribe(1, "$dead/#").await;
    let (mut worker, _) = Client::join_persistent(server.addr, "d", "pw", "w").await;
    worker.subscribe(1, "q").await;
    worker.close().await;
    for n in 1..=3 {
        publish_qos1(&mut publisher, n, "q", json!(n)).await;
    }
    let dead = watcher.expect("message").await;
    assert_eq!(
        (&dead["topic"], &dead["data"]["json"]),
        (&json!("$dead/q"), &json!(1))
    );
    let (mut worker, _) = Client::join_persistent(server.addr, "d", "pw", "w").await;
    let a = worker.expect("message").await;
    let b = worker.expect("message").await;
    assert_eq!(
        (a["data"]["json"].clone(), b["data"]["json"].clone()),
        (json!(2), json!(3))
    );
}

#[tokio::test]
async fn bye_with_discard_ends_the_persistent_state() {
    let server = start_with(quick("d", |_| {})).await;
    let (mut worker, _) = Client::join_persistent(server.addr, "d", "pw", "w").await;
    worker.subscribe(1, "q").await;
    worker.send(json!({"type":"bye","discard":true})).await;
    let (_, code) = worker.read_to_end().await;
    assert_eq!(code, Some(1000));
    let (mut worker, welcome) = Client::join_persistent(server.addr, "d", "pw", "w").await;
    assert!(welcome.get("session_present").is_none(), "{welcome}");
    let mut publisher = Client::join(server.addr, "d", "pw", "pub").await;
    publish_qos1(&mut publisher, 1, "q", json!(1)).await;
    let frames = worker.sync().await;
    assert!(frames.is_empty(), "the subscription is gone: {frames:?}");
    // A persistent hello without a client id is refused by the frame rules.
    let (_, answer) = Client::hello_raw(
        server.addr,
        json!({"type":"hello","v":1,"session":"d","auth":{"password":"pw"},"persistent":true}),
    )
    .await;
    assert_eq!(answer["name"], "invalid_field", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("client_id"));
}

#[tokio::test]
async fn resubscribing_with_since_replays_what_was_missed() {
    let server = start_with(quick("d", |s| s.history_size = 5)).await;
    let mut publisher = Client::join(server.addr, "d", "pw", "pub").await;
    let mut reader = Client::join(server.addr, "d", "pw", "reader").await;
    let subscribed = reader.subscribe(1, "news/+").await;
    let epoch = subscribed["position"]["epoch"].clone();
    publisher
        .send(json!({"type":"publish","topic":"news/a","data":{"json":"seen"}}))
        .await;
    let seen = reader.expect("message").await;
    let last = seen["offset"].as_u64().unwrap();
    reader.close().await;
    for (topic, n) in [("news/a", 1), ("other", 2), ("news/b", 3)] {
        publisher
            .send(json!({"type":"publish","topic":topic,"data":{"json":n}}))
            .await;
    }
    publisher.sync().await;

    let mut reader = Client::join(server.addr, "d", "pw", "reader").await;
    reader
        .send(json!({"type":"subscribe","id":2,"filter":"news/+","since":{"epoch":epoch,"offset":last}}))
        .await;
    let answer = reader.expect("subscribed").await;
    assert_eq!(
        (&answer["recovery"], &answer["replayed"]),
        (&json!("recovered"), &json!(2))
    );
    for n in [1, 3] {
        let replayed = reader.expect("message").await;
        assert_eq!(
            (&replayed["data"]["json"], &replayed["replay"]),
            (&json!(n), &json!(true))
        );
    }
    // Another epoch, or an offset history no longer reaches: not recovered, nothing replayed.
    reader
        .send(
            json!({"type":"subscribe","id":3,"filter":"x/#","since":{"epoch":"other","offset":1}}),
        )
        .await;
    assert_eq!(
        reader.expect("subscribed").await["recovery"],
        "not_recovered"
    );
    for n in 0..5 {
        publisher
            .send(json!({"type":"publish","topic":"filler","data":{"json":n}}))
            .await;
    }
    publisher.sync().await;
    reader
        .send(json!({"type":"subscribe","id":4,"filter":"news/#","since":{"epoch":epoch,"offset":last}}))
        .await;
    let answer = reader.expect("subscribed").await;
    assert_eq!(answer["recovery"], "not_recovered", "{answer}");
    let rest = reader.sync().await;
    assert!(rest.iter().all(|f| f["replay"] != true), "{rest:?}");
}

#[tokio::test]
async fn a_repeated_message_id_is_confirmed_again_but_delivered_once() {
    let server = start_with(quick("d", |_| {})).await;
    let mut publisher = Client::join(server.addr, "d", "pw", "pub").await;
    let mut subscriber = Client::join(server.addr, "d", "pw", "sub").await;
    subscriber.subscribe(1, "t").await;
    let publish = |id: u64| json!({"type":"publish","id":id,"mid":"once","topic":"t","data":{"json":1},"qos":1});
    publisher.send(publish(1)).await;
    let first = publisher.expect("published").await;
    publisher.send(publish(2)).await;
    let again = publisher.expect("published").await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["offset"], first["offset"]);
    let copy = subscriber.expect("message").await;
    subscriber
        .send(json!({"type":"ack","did":copy["did"],"ok":true}))
        .await;
    let rest = subscriber.sync().await;
    assert!(rest.is_empty(), "delivered once: {rest:?}");
}

/// Builds a server over `store` and serves it on 127.0.0.1:0.
async fn serve_on(store: Arc<dyn Store>, config: Config) -> (Server, std::net::SocketAddr) {
    let mut config = config;
    config.admin_token = Some(ADMIN.into());
    let server = Server::builder()
        .config(config)
        .store(store)
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    (server, addr)
}

#[tokio::test]
async fn a_server_rebuilt_over_the_same_store_keeps_persistent_clients_history_and_retained() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let config = quick("d", |_| {});
    let (first, addr) = serve_on(store.clone(), config.clone()).await;
    let (mut worker, _) = Client::join_persistent(addr, "d", "pw", "w").await;
    let subscribed = worker.subscribe(1, "jobs/#").await;
    let epoch = subscribed["position"]["epoch"].clone();
    worker.close().await;
    let mut publisher = Client::join(addr, "d", "pw", "pub").await;
    publish_qos1(&mut publisher, 1, "jobs/a", json!("kept")).await;
    publisher
        .send(json!({"type":"publish","id":2,"topic":"state","data":{"json":"on"},"retain":true}))
        .await;
    publisher.expect("published").await;
    first.shutdown();
    drop(publisher);
    drop(first);

    let (_second, addr) = serve_on(store, config).await;
    let (mut worker, welcome) = Client::join_persistent(addr, "d", "pw", "w").await;
    assert_eq!(welcome["session_present"], true);
    assert_eq!(welcome["epoch"], epoch, "the stream goes on");
    let copy = worker.expect("message").await;
    assert_eq!(copy["data"]["json"], "kept");
    worker
        .send(json!({"type":"ack","did":copy["did"],"ok":true}))
        .await;
    let mut reader = Client::join(addr, "d", "pw", "reader").await;
    reader.subscribe(1, "state").await;
    assert_eq!(reader.expect("message").await["retained"], true);
    reader
        .send(
            json!({"type":"subscribe","id":2,"filter":"jobs/#","since":{"epoch":epoch,"offset":0}}),
        )
        .await;
    let answer = reader.expect("subscribed").await;
    assert_eq!(answer["recovery"], "recovered", "{answer}");
    assert_eq!(reader.expect("message").await["data"]["json"], "kept");
}

#[tokio::test]
async fn a_publisher_faster_than_the_store_is_slowed_down_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = serve_on(store_of_one_write(&dir), quick("d", |_| {})).await;
    let mut subscriber = Client::join(addr, "d", "pw", "sub").await;
    subscriber.subscribe(1, "t").await;
    let mut publisher = Client::join(addr, "d", "pw", "pub").await;
    const N: u64 = 300;
    for n in 0..N {
        publisher
            .send(json!({"type":"publish","topic":"t","data":{"json":n}}))
            .await;
    }
    publish_qos1(&mut publisher, 1, "t", json!(N)).await;
    for n in 0..=N {
        assert_eq!(subscriber.expect("message").await["data"]["json"], n);
    }
    assert!(
        store_waits(addr).await > 0,
        "the publisher's reader waited for the store"
    );
}

/// A SQLite store in `dir` whose backlog takes one queued write: nearly every run of frames a
/// reader hands to the session must then wait for a commit.
fn store_of_one_write(dir: &tempfile::TempDir) -> Arc<sealbus_server::store::SqliteStore> {
    let store = Arc::new(
        sealbus_server::store::SqliteStore::open(
            &dir.path().join("store.db"),
            sealbus_server::store::SyncMode::Full,
        )
        .unwrap(),
    );
    store.backlog().unwrap().set_limit(1);
    store
}

/// `sealbus_store_waits_total` of session `d`.
async fn store_waits(addr: std::net::SocketAddr) -> u64 {
    let (_, metrics) = http(addr, "GET", "/metrics", None, None).await;
    metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("sealbus_store_waits_total{session=\"d\"} "))
        .and_then(|value| value.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_message_of_many_frames_waits_for_the_store_between_its_runs_of_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = serve_on(store_of_one_write(&dir), quick("d", |_| {})).await;
    let mut subscriber = Client::join(addr, "d", "pw", "sub").await;
    subscriber.subscribe(1, "t").await;
    let (mut publisher, welcome) = Client::hello_raw(
        addr,
        json!({"type":"hello","v":1,"session":"d","auth":{"password":"pw"},"client_id":"pub",
               "batch":true}),
    )
    .await;
    assert_eq!(welcome["batch"], true, "{welcome}");
    // One WebSocket message of ten runs of 32 frames (the most the reader hands over at once).
    const N: u64 = 320;
    let frames: Vec<String> = (0..N)
        .map(|n| json!({"type":"publish","topic":"t","data":{"json":n}}).to_string())
        .collect();
    publisher.send_text(frames.join("\n")).await;
    for n in 0..N {
        assert_eq!(subscriber.expect("message").await["data"]["json"], n);
    }
    let waits = store_waits(addr).await;
    assert!(waits >= 5, "{waits} pauses for ten runs of one message");
}
