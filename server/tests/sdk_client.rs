//! The Rust SDK (`sealbus::client::Client`) against a real server on 127.0.0.1 over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{WAIT, session, session_with, start};
use sealbus::client::{Client, ClientEvent, ClientOptions, handler};
use sealbus::crypto::{Key, Keyring};
use sealbus::engine::{AckFinish, ConnectionState, Data, Message, PublishOptions, ReconnectPolicy};
use sealbus::protocol::{CopyState, ErrorCode, Payload, Qos};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;

fn options(addr: std::net::SocketAddr, session: &str, id: &str) -> ClientOptions {
    ClientOptions::new(format!("ws://{addr}/ws"), session)
        .password(format!("pw-{session}"))
        .client_id(id)
}

async fn connect(addr: std::net::SocketAddr, session: &str, id: &str) -> Client {
    timeout(WAIT, Client::connect(options(addr, session, id)))
        .await
        .expect("connect timed out")
        .expect("connect failed")
}

/// Subscribes with a handler that forwards every message into a channel.
async fn collect(client: &Client, filter: &str) -> mpsc::UnboundedReceiver<Message> {
    let (tx, rx) = mpsc::unbounded_channel();
    client
        .subscribe(
            filter,
            handler(move |message: Message| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(message);
                    Ok(())
                }
            }),
        )
        .await
        .unwrap();
    rx
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    timeout(WAIT, rx.recv())
        .await
        .expect("no message")
        .expect("closed")
}

fn qos1() -> PublishOptions {
    PublishOptions {
        qos: Qos::AtLeastOnce,
        ..PublishOptions::default()
    }
}

#[tokio::test]
async fn json_and_bytes_round_trip_exactly_through_wildcards() {
    let server = start(vec![session("s1", "pw-s1")]).await;
    let sub = connect(server.addr, "s1", "sub").await;
    let publisher = connect(server.addr, "s1", "pub").await;
    let mut plus = collect(&sub, "sensors/+/temp").await;
    let mut hash = collect(&sub, "sensors/#").await;

    let value = json!({"z": 1, "a": [1.5, "x", null, {"k": true}], "m": 12345678901234u64});
    publisher
        .publish("sensors/kitchen/temp", Data::Json(value.clone()), qos1())
        .await
        .unwrap();
    for rx in [&mut plus, &mut hash] {
        let got = next(rx).await;
        assert_eq!(got.topic, "sensors/kitchen/temp");
        assert_eq!(got.from, "pub");
        assert_eq!(got.data, Data::Json(value.clone()));
        // Key order survives the server and the SDK.
        let Data::Json(got_value) = got.data else {
            unreachable!()
        };
        assert_eq!(got_value.to_string(), value.to_string());
    }
    let bytes: Vec<u8> = (0..=255).collect();
    publisher
        .publish(
            "sensors/hall/humidity",
            Data::Bytes(bytes.clone()),
            PublishOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut hash).await.data, Data::Bytes(bytes));
    // The `+` filter does not match the humidity topic: nothing more arrives there.
    assert!(
        timeout(Duration::from_millis(300), plus.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn sessions_are_isolated_with_the_same_topics_and_client_ids() {
    let server = start(vec![session("s1", "pw-s1"), session("s2", "pw-s2")]).await;
    let a_sub = connect(server.addr, "s1", "same-id").await;
    let b_sub = connect(server.addr, "s2", "same-id").await;
    let mut a_rx = collect(&a_sub, "#").await;
    let mut b_rx = collect(&b_sub, "#").await;
    let a_pub = connect(server.addr, "s1", "publisher").await;
    a_pub
        .publish("shared/topic", Data::Json(json!("only s1")), qos1())
        .await
        .unwrap();
    assert_eq!(next(&mut a_rx).await.data, Data::Json(json!("only s1")));
    assert!(
        timeout(Duration::from_millis(300), b_rx.recv())
            .await
            .is_err()
    );
    // The same client id is connected in both sessions at once: no takeover across sessions.
    assert_eq!(a_sub.state(), ConnectionState::Connected);
    assert_eq!(b_sub.state(), ConnectionState::Connected);
}

#[tokio::test]
async fn end_to_end_encryption_interoperates_and_the_server_sees_only_ciphertext() {
    let server = start(vec![session("s1", "pw-s1")]).await;
    let key = Key::generate().unwrap();
    let secret = "the launch code is 0000";
    let sealed_client = |id: &'static str, key: Key| {
        let opts = options(server.addr, "s1", id).keyring(Keyring::with_key(key));
        async move { Client::connect(opts).await.unwrap() }
    };
    let alice = sealed_client("alice", key.clone()).await;
    let bob = sealed_client("bob", key).await;
    let mallory = sealed_client("mallory", Key::generate().unwrap()).await;
    let mut bob_rx = collect(&bob, "secret/#").await;
    let mallory_calls = Arc::new(AtomicUsize::new(0));
    let calls = mallory_calls.clone();
    let mut mallory_events = mallory.events();
    mallory
        .subscribe(
            "secret/#",
            handler(move |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            }),
        )
        .await
        .unwrap();
    // The server's own in-process participant sees what the server routes.
    let spy = server.server.participant("s1", Some("spy")).unwrap();
    let mut spy_sub = spy.subscribe("secret/#").await.unwrap();

    let ack = alice
        .publish_with_ack(
            "secret/plans",
            Data::Json(json!(secret)),
            PublishOptions::default(),
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();

    let got = next(&mut bob_rx).await;
    assert_eq!(got.data, Data::Json(json!(secret)));
    assert!(got.encrypted);

    let seen = timeout(WAIT, spy_sub.recv()).await.unwrap().unwrap();
    let Payload::Sealed(envelope) = &seen.message.data else {
        panic!(
            "the server routed a non-sealed payload: {:?}",
            seen.message.data
        );
    };
    let needle = secret.as_bytes();
    assert!(!envelope.windows(needle.len()).any(|w| w == needle));
    seen.respond(Ok(()));

    // Mallory's wrong key: an error event, an error response, and her handler never runs.
    let event = timeout(WAIT, async {
        loop {
            if let Some(ClientEvent::Error(err)) = mallory_events.next().await {
                return err;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(event.code(), ErrorCode::UnknownKeyId);
    let result = ack.wait().await;
    assert_eq!(result.outcome, AckFinish::Complete);
    assert!(result.responses["bob"].ok);
    assert!(result.responses["spy"].ok);
    let mallory_reply = &result.responses["mallory"];
    assert!(!mallory_reply.ok);
    assert_eq!(mallory_reply.code, Some(ErrorCode::UnknownKeyId));
    assert_eq!(mallory_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn publish_with_ack_wait_any_status_cancel_timeout_and_no_subscribers() {
    let server = start(vec![session("s1", "pw-s1")]).await;
    let publisher = connect(server.addr, "s1", "pub").await;

    let empty = publisher
        .publish_with_ack(
            "nobody/here",
            Data::Json(json!(1)),
            PublishOptions::default(),
            None,
        )
        .await
        .unwrap();
    assert!(empty.is_complete());
    let result = empty.wait().await;
    assert!(result.responses.is_empty());
    assert_eq!(result.outcome, AckFinish::Complete);

    let fast = connect(server.addr, "s1", "fast").await;
    fast.subscribe("jobs", handler(|_| async { Ok(()) }))
        .await
        .unwrap();
    let failing = connect(server.addr, "s1", "failing").await;
    failing
        .subscribe("jobs", handler(|_| async { Err("disk full".to_owned()) }))
        .await
        .unwrap();
    let panicking = connect(server.addr, "s1", "panicking").await;
    panicking
        .subscribe(
            "jobs",
            handler(|_| async {
                panic!("handler exploded");
            }),
        )
        .await
        .unwrap();
    let slow = connect(server.addr, "s1", "slow").await;
    slow.subscribe(
        "jobs",
        handler(|_| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        }),
    )
    .await
    .unwrap();

    let ack = publisher
        .publish_with_ack(
            "jobs",
            Data::Json(json!({"n": 1})),
            PublishOptions::default(),
            Some(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    let expected: Vec<String> = ack.status().keys().cloned().collect();
    assert_eq!(expected, ["failing", "fast", "panicking", "slow"]);
    let (first, _) = timeout(WAIT, ack.wait_any())
        .await
        .unwrap()
        .expect("a first response");
    assert!(["fast", "failing", "panicking"].contains(&first.as_str()));
    let result = timeout(WAIT, ack.wait()).await.unwrap();
    assert_eq!(result.outcome, AckFinish::Timeout);
    assert!(result.responses["fast"].ok);
    assert_eq!(
        result.responses["failing"].error.as_deref(),
        Some("disk full")
    );
    assert_eq!(
        result.responses["failing"].code,
        Some(ErrorCode::HandlerFailed)
    );
    let panic_reply = &result.responses["panicking"];
    assert!(!panic_reply.ok);
    assert!(
        panic_reply
            .error
            .as_deref()
            .unwrap_or("")
            .contains("handler exploded")
    );
    assert!(!result.responses.contains_key("slow"));
    assert_eq!(ack.status().get("slow"), Some(&false));

    let cancelled = publisher
        .publish_with_ack(
            "jobs",
            Data::Json(json!(2)),
            PublishOptions::default(),
            Some(WAIT),
        )
        .await
        .unwrap();
    cancelled.cancel();
    cancelled.cancel();
    let result = timeout(Duration::from_secs(2), cancelled.wait())
        .await
        .unwrap();
    assert_eq!(result.outcome, AckFinish::Cancelled);
    assert!(cancelled.is_complete());
}

#[tokio::test]
async fn publish_to_id_reaches_one_client_and_unknown_ids_fail() {
    let server = start(vec![session("s1", "pw-s1")]).await;
    let worker = connect(server.addr, "s1", "worker-7").await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    worker
        .on_direct(handler(move |message: Message| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(message);
                Ok(())
            }
        }))
        .await
        .unwrap();
    let api = connect(server.addr, "s1", "api").await;
    let ack = api
        .publish_to_id_with_ack(
            "worker-7",
            Data::Json(json!("resize")),
            PublishOptions::default(),
            None,
        )
        .await
        .unwrap();
    let got = next(&mut rx).await;
    assert!(got.direct);
    assert_eq!(got.from, "api");
    assert_eq!(got.data, Data::Json(json!("resize")));
    let result = timeout(WAIT, ack.wait()).await.unwrap();
    assert_eq!(result.outcome, AckFinish::Complete);
    assert!(result.responses["worker-7"].ok);

    let err = api
        .publish_to_id("nobody", Data::Json(json!(1)), qos1())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NoSuchClient);
}

#[tokio::test]
async fn delivery_status_reports_each_subscribers_copy_to_the_publisher_only() {
    let server = start(vec![session("s1", "pw-s1")]).await;
    let sub = connect(server.addr, "s1", "acker").await;
    let publisher = connect(server.addr, "s1", "pub").await;
    let other = connect(server.addr, "s1", "other").await;
    let mut rx = collect(&sub, "orders/#").await;

    let published = publisher
        .publish("orders/new", Data::Json(json!(7)), qos1())
        .await
        .unwrap();
    let mid = published.mid.expect("a QoS 1 publish has a message id");
    next(&mut rx).await;
    // The handler returned, so the client acknowledges; the server settles the copy.
    let report = timeout(WAIT, async {
        loop {
            let report = publisher.delivery_status(&mid).await.unwrap();
            if report
                .copies
                .iter()
                .all(|c| c.state == CopyState::Acknowledged)
            {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the copy was never acknowledged");
    assert_eq!(report.mid, mid);
    assert_eq!(report.topic, "orders/new");
    assert_eq!(report.copies.len(), 1, "{report:?}");
    assert_eq!(report.copies[0].client, "acker");
    assert_eq!(report.copies[0].attempts, 1);

    for (client, asked) in [(&other, mid.as_str()), (&publisher, "never-published")] {
        match client.delivery_status(asked).await {
            Err(sealbus::Error::Server { code, .. }) => {
                assert_eq!(code, ErrorCode::UnknownMessageId)
            }
            other => panic!("expected unknown_message_id for {asked}, got {other:?}"),
        }
    }
    assert!(matches!(
        publisher.delivery_status("").await,
        Err(sealbus::Error::Protocol(_))
    ));
}

#[tokio::test]
async fn wrong_password_is_a_typed_error_without_a_retry_loop() {
    let server = start(vec![session("s1", "pw-s1")]).await;
    let started = std::time::Instant::now();
    let err = Client::connect(
        ClientOptions::new(format!("ws://{}/ws", server.addr), "s1").password("wrong"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthFailed);
    assert!(started.elapsed() < WAIT, "auth failure must not retry");
}

#[tokio::test]
async fn after_a_server_restart_the_client_reconnects_resubscribes_and_flushes_its_buffer() {
    let first = start(vec![session("s1", "pw-s1")]).await;
    let addr = first.addr;
    let policy = ReconnectPolicy {
        initial_delay_ms: 50,
        max_delay_ms: 200,
        max_attempts: None,
        ..ReconnectPolicy::default()
    };
    let sub = Client::connect(options(addr, "s1", "sub").reconnect(policy))
        .await
        .unwrap();
    // The publisher's URL carries `?role=pub` so the restarted server can hold it back.
    let publisher_options = ClientOptions::new(format!("ws://{addr}/ws?role=pub"), "s1")
        .password("pw-s1")
        .client_id("pub")
        .reconnect(policy);
    let publisher = Client::connect(publisher_options).await.unwrap();
    let mut rx = collect(&sub, "live/#").await;
    let mut events = sub.events();
    publisher
        .publish("live/a", Data::Json(json!("before")), qos1())
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.data, Data::Json(json!("before")));

    first.server.shutdown();
    timeout(WAIT, async {
        while publisher.state() == ConnectionState::Connected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("publisher never noticed the shutdown");
    // Published while the server is down: buffered by the client, flushed on reconnect.
    let offline = publisher.clone();
    let during = tokio::spawn(async move {
        offline
            .publish("live/b", Data::Json(json!("during")), qos1())
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    // The restarted server has a fresh store, so a new epoch: a message flushed before the
    // subscriber is back could not be recovered, so the server refuses the publisher until the
    // subscriber has resubscribed (the next test restarts over the same store instead).
    let publisher_allowed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let allowed = publisher_allowed.clone();
    let second = sealbus_server::Server::builder()
        .config(sealbus_server::config::Config {
            sessions: vec![session("s1", "pw-s1")],
            admin_token: Some(common::ADMIN.into()),
            ..Default::default()
        })
        .upgrade_hook(move |_, query| query != Some("role=pub") || allowed.load(Ordering::SeqCst))
        .build()
        .unwrap();
    let serving = second.clone();
    tokio::spawn(async move { serving.serve(listener).await.unwrap() });

    // The new server's stream has a new epoch: the subscription is flagged, not silently gappy.
    let flagged = timeout(WAIT, async {
        loop {
            match events.next().await {
                Some(ClientEvent::NotRecovered { filter }) => return filter,
                Some(_) => continue,
                None => panic!("events ended"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(flagged, "live/#");
    publisher_allowed.store(true, Ordering::SeqCst);
    timeout(WAIT, during).await.unwrap().unwrap().unwrap();
    assert_eq!(next(&mut rx).await.data, Data::Json(json!("during")));
    publisher
        .publish("live/c", Data::Json(json!("after")), qos1())
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.data, Data::Json(json!("after")));
}

/// Serves a server over `store` at `addr` (retrying the bind while the old one lets go).
async fn serve_over(
    store: Arc<dyn sealbus_server::store::Store>,
    addr: Option<std::net::SocketAddr>,
    admit_sub: Arc<std::sync::atomic::AtomicBool>,
) -> (sealbus_server::Server, std::net::SocketAddr) {
    let listener = loop {
        match tokio::net::TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into())).await {
            Ok(listener) => break listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let addr = listener.local_addr().unwrap();
    let server = sealbus_server::Server::builder()
        .config(sealbus_server::config::Config {
            sessions: vec![session("s1", "pw-s1")],
            admin_token: Some(common::ADMIN.into()),
            ..Default::default()
        })
        .store(store)
        .upgrade_hook(move |_, query| query != Some("role=sub") || admit_sub.load(Ordering::SeqCst))
        .build()
        .unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await.unwrap() });
    (server, addr)
}

#[tokio::test]
async fn after_a_restart_over_the_same_store_the_client_recovers_what_it_missed() {
    let store = Arc::new(sealbus_server::store::MemoryStore::new());
    let admit_sub = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (first, addr) = serve_over(store.clone(), None, admit_sub.clone()).await;
    let policy = ReconnectPolicy {
        initial_delay_ms: 50,
        max_delay_ms: 200,
        max_attempts: None,
        ..ReconnectPolicy::default()
    };
    // The subscriber's URL carries `?role=sub` so the restarted server can keep it away until
    // everything was published: what it gets then can only come from history.
    let sub_options = ClientOptions::new(format!("ws://{addr}/ws?role=sub"), "s1")
        .password("pw-s1")
        .client_id("sub")
        .reconnect(policy);
    let sub = Client::connect(sub_options).await.unwrap();
    let publisher = Client::connect(options(addr, "s1", "pub").reconnect(policy))
        .await
        .unwrap();
    let mut rx = collect(&sub, "live/#").await;
    let mut events = sub.events();
    publisher
        .publish("live/a", Data::Json(json!("before")), qos1())
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.data, Data::Json(json!("before")));

    first.shutdown();
    timeout(WAIT, async {
        while publisher.state() == ConnectionState::Connected
            || sub.state() == ConnectionState::Connected
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the clients never noticed the shutdown");
    drop(first);
    // Published while the server is down: buffered by the client, flushed on reconnect.
    let offline = publisher.clone();
    let during = tokio::spawn(async move {
        offline
            .publish("live/b", Data::Json(json!("during")), qos1())
            .await
    });
    admit_sub.store(false, Ordering::SeqCst);
    let (_second, _) = serve_over(store, Some(addr), admit_sub.clone()).await;
    timeout(WAIT, during).await.unwrap().unwrap().unwrap();
    publisher
        .publish("live/c", Data::Json(json!("after")), qos1())
        .await
        .unwrap();
    admit_sub.store(true, Ordering::SeqCst);
    let during = next(&mut rx).await;
    let after = next(&mut rx).await;
    assert_eq!(
        (during.data, during.replay),
        (Data::Json(json!("during")), true)
    );
    assert_eq!(
        (after.data, after.replay),
        (Data::Json(json!("after")), true)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "each message once");
    while let Ok(Some(event)) = timeout(Duration::from_millis(50), events.next()).await {
        assert!(
            !matches!(event, ClientEvent::NotRecovered { .. }),
            "the epoch survives a restart over the same store"
        );
    }
}

#[tokio::test]
async fn a_new_process_of_a_persistent_client_gets_what_was_queued_while_it_was_away() {
    // Redeliveries only after a minute: what arrives within `WAIT` came with the welcome.
    let server = start(vec![session_with("s", "pw-s", |s| {
        s.retry_interval_ms = 60_000
    })])
    .await;
    let addr = server.addr;
    let worker_options = || options(addr, "s", "worker").persistent(true);
    let worker = connect_with(worker_options()).await;
    let mut before = collect(&worker, "jobs/#").await;
    worker.close().await;
    drop(worker);
    drop(before.try_recv());

    let boss = connect(addr, "s", "boss").await;
    for n in 0..5 {
        boss.publish("jobs/resize", Data::Json(json!(n)), qos1())
            .await
            .unwrap();
    }
    // A new process: its queued messages arrive right after `welcome`, before it subscribes.
    // The engine keeps them (unacknowledged) for the subscription that comes next.
    let worker = connect_with(worker_options()).await;
    let mut jobs = collect(&worker, "jobs/#").await;
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(next(&mut jobs).await.data);
    }
    let expected: Vec<Data> = (0..5).map(|n| Data::Json(json!(n))).collect();
    assert_eq!(got, expected);
}

async fn connect_with(options: ClientOptions) -> Client {
    timeout(WAIT, Client::connect(options))
        .await
        .expect("connect timed out")
        .expect("connect failed")
}
