//! Transport mechanics of the native client against a tiny scripted WebSocket peer.
//!
//! These are not integration tests: the peer is a few lines of script, not a Sealbus server.
//! They check that the driver moves frames, time, handler results and close both ways.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::*;
use crate::engine::{AckFinish, ReconnectPolicy};
use crate::protocol::{ErrorCode, Qos};
use futures_util::{SinkExt as _, StreamExt as _};

const WAIT: Duration = Duration::from_secs(5);

struct Peer {
    ws: WebSocketStream<TcpStream>,
}

async fn listen() -> (TcpListener, ClientOptions) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let options = ClientOptions::new(url, "demo")
        .password("pw")
        .client_id("me");
    (listener, options)
}

impl Peer {
    async fn accept(listener: &TcpListener) -> Peer {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        // The callback's signature is tungstenite's; its error type is large by design.
        #[allow(clippy::result_large_err)]
        let callback = |req: &Request, mut res: Response| {
            assert_eq!(
                req.headers()["Sec-WebSocket-Protocol"],
                crate::protocol::SUBPROTOCOL
            );
            res.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(crate::protocol::SUBPROTOCOL),
            );
            Ok(res)
        };
        let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
            .await
            .unwrap();
        Peer { ws }
    }

    /// Accepts, reads `hello`, answers `welcome`.
    async fn welcome(listener: &TcpListener) -> (Peer, Value) {
        let mut peer = Peer::accept(listener).await;
        let hello = peer.recv().await.unwrap();
        peer.send(
            json!({"type": "welcome", "v": 1, "session": "demo", "client_id": "me",
            "epoch": "e1", "limits": {"max_frame_bytes": 65536, "max_message_bytes": 1000,
            "max_subscriptions": 10, "max_inflight": 10, "keepalive_ms": 30000,
            "retry_interval_ms": 5000, "max_retries": 3}}),
        )
        .await;
        (peer, hello)
    }

    /// The next text frame as JSON; `None` when the connection closed.
    async fn recv(&mut self) -> Option<Value> {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await.unwrap();
            match next {
                Some(Ok(WsMessage::Text(text))) => {
                    return Some(serde_json::from_str(text.as_str()).unwrap());
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(WsMessage::text(frame.to_string()))
            .await
            .unwrap();
    }

    /// Reads a `subscribe` and confirms it.
    async fn confirm_subscribe(&mut self, offset: u64) -> Value {
        let sub = self.recv().await.unwrap();
        assert_eq!(sub["type"], "subscribe");
        self.send(
            json!({"type": "subscribed", "id": sub["id"], "filter": sub["filter"],
            "position": {"epoch": "e1", "offset": offset}}),
        )
        .await;
        sub
    }
}

#[test]
fn client_and_handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Client>();
    check::<Subscription>();
    check::<AckHandle>();
}

#[tokio::test]
async fn connects_subscribes_delivers_acks_and_publishes() {
    let (listener, options) = listen().await;
    let server = tokio::spawn(async move {
        let (mut peer, hello) = Peer::welcome(&listener).await;
        assert_eq!(hello["auth"], json!({"password": "pw"}));
        peer.confirm_subscribe(1).await;
        peer.send(
            json!({"type": "message", "topic": "a/b", "data": {"json": {"n": 1}},
            "from": "p", "ts": 7, "offset": 2, "qos": 1, "mid": "m", "did": 3}),
        )
        .await;
        let ack = peer.recv().await.unwrap();
        assert_eq!(ack, json!({"type": "ack", "did": 3, "ok": true}));
        let publish = peer.recv().await.unwrap();
        assert_eq!(publish["qos"], 1);
        peer.send(
            json!({"type": "published", "id": publish["id"], "mid": publish["mid"],
            "offset": 9}),
        )
        .await;
        assert_eq!(peer.recv().await.unwrap(), json!({"type": "bye"}));
        assert!(peer.recv().await.is_none());
    });
    let client = Client::connect(options).await.unwrap();
    assert_eq!(client.state(), ConnectionState::Connected);
    assert_eq!(client.client_id().as_deref(), Some("me"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = client
        .subscribe(
            "a/+",
            handler(move |message| {
                let tx = tx.clone();
                async move {
                    tx.send(message).map_err(|e| e.to_string())?;
                    Ok(())
                }
            }),
        )
        .await
        .unwrap();
    let message = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.data, Data::Json(json!({"n": 1})));
    assert_eq!((message.from.as_str(), message.ts), ("p", 7));
    let options = PublishOptions {
        qos: Qos::AtLeastOnce,
        ..PublishOptions::default()
    };
    let published = client
        .publish("a/c", Data::Bytes(vec![1]), options)
        .await
        .unwrap();
    assert_eq!(published.offset, Some(9));
    client.close().await;
    assert!(matches!(
        client.state(),
        ConnectionState::Closed { error: None }
    ));
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn handler_errors_and_panics_become_error_acks() {
    let (listener, options) = listen().await;
    let server = tokio::spawn(async move {
        let (mut peer, _) = Peer::welcome(&listener).await;
        peer.confirm_subscribe(1).await;
        peer.send(
            json!({"type": "message", "topic": "boom", "data": {"json": 1},
            "from": "p", "ts": 1, "offset": 2, "aid": 5}),
        )
        .await;
        let ack = peer.recv().await.unwrap();
        assert_eq!(ack["ok"], false);
        assert_eq!(ack["code"], ErrorCode::HandlerFailed.number());
        assert!(ack["error"].as_str().unwrap().contains("kaboom"), "{ack}");
        peer.send(
            json!({"type": "message", "topic": "fail", "data": {"json": 1},
            "from": "p", "ts": 1, "offset": 3, "aid": 6}),
        )
        .await;
        let ack = peer.recv().await.unwrap();
        assert_eq!(
            ack,
            json!({"type": "ack", "aid": 6, "ok": false, "code": 6006, "error": "nope"})
        );
    });
    let client = Client::connect(options).await.unwrap();
    let _sub = client
        .subscribe(
            "#",
            handler(|message| async move {
                if message.topic == "boom" {
                    panic!("kaboom");
                }
                Err("nope".to_owned())
            }),
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn wrong_credentials_fail_connect_with_the_servers_code() {
    let (listener, options) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = Peer::accept(&listener).await;
        peer.recv().await.unwrap();
        peer.send(json!({"type": "error", "code": 2001, "name": "auth_failed",
            "message": "bad password"}))
            .await;
        let close = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 4101.into(),
            reason: "auth_failed".into(),
        };
        let _ = peer.ws.close(Some(close)).await;
        // No second attempt arrives.
        let again = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
        assert!(again.is_err(), "the client retried after auth_failed");
    });
    let err = Client::connect(options).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthFailed);
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn dropping_the_last_clone_says_bye_and_closes() {
    let (listener, options) = listen().await;
    let server = tokio::spawn(async move {
        let (mut peer, _) = Peer::welcome(&listener).await;
        assert_eq!(peer.recv().await.unwrap(), json!({"type": "bye"}));
        assert!(peer.recv().await.is_none());
    });
    let client = Client::connect(options).await.unwrap();
    let clone = client.clone();
    drop(client);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(clone.state(), ConnectionState::Connected);
    drop(clone);
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn ack_handle_waits_and_cancels() {
    let (listener, options) = listen().await;
    let server = tokio::spawn(async move {
        let (mut peer, _) = Peer::welcome(&listener).await;
        let publish = peer.recv().await.unwrap();
        assert_eq!(publish["ack"], json!({"timeout_ms": 1000}));
        peer.send(json!({"type": "ack_expect", "id": publish["id"], "aid": 9,
            "expected": ["w1", "w2"]}))
            .await;
        peer.send(json!({"type": "ack_response", "aid": 9, "from": "w1", "ok": true}))
            .await;
        assert_eq!(
            peer.recv().await.unwrap(),
            json!({"type": "ack_cancel", "aid": 9})
        );
        peer.send(json!({"type": "ack_response", "aid": 9, "from": "w2", "ok": true}))
            .await;
        let publish = peer.recv().await.unwrap();
        peer.send(json!({"type": "ack_expect", "id": publish["id"], "aid": 10, "expected": []}))
            .await;
        peer.recv().await;
    });
    let client = Client::connect(options).await.unwrap();
    let ack = client
        .publish_with_ack(
            "jobs",
            Data::Json(json!(1)),
            PublishOptions::default(),
            Some(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, ack.wait_any()).await.unwrap();
    assert_eq!(
        first.map(|(id, reply)| (id, reply.ok)),
        Some(("w1".into(), true))
    );
    assert!(!ack.is_complete());
    assert!(ack.status()["w1"]);
    assert!(!ack.status()["w2"]);
    ack.cancel();
    ack.cancel();
    let result = tokio::time::timeout(WAIT, ack.wait()).await.unwrap();
    assert_eq!(result.outcome, AckFinish::Cancelled);
    assert_eq!(result.responses.len(), 1);
    assert_eq!(result.expected, ["w1", "w2"]);

    let nobody = client
        .publish_with_ack(
            "jobs",
            Data::Json(json!(2)),
            PublishOptions::default(),
            None,
        )
        .await
        .unwrap();
    assert!(nobody.is_complete());
    let result = nobody.wait().await;
    assert_eq!(result.outcome, AckFinish::Complete);
    assert!(result.responses.is_empty());
    assert_eq!(nobody.wait_any().await, None);
    client.close().await;
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn stream_subscriptions_and_reconnect_with_recovery() {
    let (listener, options) = listen().await;
    let options = options.reconnect(ReconnectPolicy {
        initial_delay_ms: 10,
        max_delay_ms: 20,
        ..ReconnectPolicy::default()
    });
    let server = tokio::spawn(async move {
        let (mut peer, _) = Peer::welcome(&listener).await;
        peer.confirm_subscribe(4).await;
        peer.send(
            json!({"type": "message", "topic": "s", "data": {"json": "one"},
            "from": "p", "ts": 1, "offset": 5}),
        )
        .await;
        drop(peer);
        let (mut peer, _) = Peer::welcome(&listener).await;
        let sub = peer.recv().await.unwrap();
        assert_eq!(sub["since"], json!({"epoch": "e1", "offset": 5}));
        peer.send(json!({"type": "subscribed", "id": sub["id"], "filter": "s",
            "recovery": "not_recovered", "position": {"epoch": "e1", "offset": 8}}))
            .await;
        peer.send(
            json!({"type": "message", "topic": "s", "data": {"json": "two"},
            "from": "p", "ts": 2, "offset": 9}),
        )
        .await;
        peer.recv().await;
    });
    let client = Client::connect(options).await.unwrap();
    let mut events = client.events();
    let mut stream = client.subscribe_stream("s").await.unwrap();
    let one = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.data, Data::Json(json!("one")));
    let two = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(two.data, Data::Json(json!("two")));
    let mut seen = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(200), events.next()).await
    {
        seen.push(event);
    }
    assert!(
        seen.contains(&ClientEvent::NotRecovered { filter: "s".into() }),
        "{seen:?}"
    );
    assert!(
        seen.contains(&ClientEvent::State(ConnectionState::Reconnecting {
            attempt: 1
        }))
    );
    assert!(seen.contains(&ClientEvent::State(ConnectionState::Connected)));
    stream.subscription().unsubscribe().await.ok();
    client.close().await;
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn local_errors_do_not_touch_the_network() {
    let (listener, options) = listen().await;
    let server = tokio::spawn(async move {
        let (mut peer, _) = Peer::welcome(&listener).await;
        assert_eq!(peer.recv().await.unwrap(), json!({"type": "bye"}));
    });
    let client = Client::connect(options).await.unwrap();
    let err = client
        .publish("a/+", Data::Json(json!(1)), PublishOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidTopic);
    let err = client
        .publish("a", Data::Bytes(vec![0; 2000]), PublishOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::MessageTooLarge);
    let err = client.subscribe_stream("a/#/b").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidFilter);
    client.close().await;
    let err = client
        .publish("a", Data::Json(json!(1)), PublishOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Closed);
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn unreachable_server_fails_connect_without_retrying_by_default() {
    let (listener, options) = listen().await;
    drop(listener);
    let err = tokio::time::timeout(WAIT, Client::connect(options))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Disconnected);
    assert!(err.to_string().contains("refused"), "{err}");
}

#[tokio::test]
async fn invalid_options_fail_before_connecting() {
    let options = ClientOptions::new("ws://127.0.0.1:1/ws", "bad session!").password("pw");
    let err = Client::connect(options).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidField);
    let options = ClientOptions::new("not a url", "demo").password("pw");
    let err = Client::connect(options).await.unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err:?}");
    let options = ClientOptions::new("ws://127.0.0.1:1/ws", "demo").persistent(true);
    let err = Client::connect(options).await.unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)));
}

#[tokio::test]
async fn silent_server_is_pinged_then_dropped_and_reconnected() {
    let (listener, options) = listen().await;
    let options = options
        .keepalive(Duration::from_millis(100), Duration::from_millis(100))
        .reconnect(ReconnectPolicy {
            initial_delay_ms: 10,
            max_delay_ms: 20,
            ..ReconnectPolicy::default()
        });
    let server = tokio::spawn(async move {
        let (mut peer, _) = Peer::welcome(&listener).await;
        assert_eq!(peer.recv().await.unwrap(), json!({"type": "ping"}));
        // No answer: the client gives the connection up and comes back.
        assert!(peer.recv().await.is_none());
        let (mut peer, _) = Peer::welcome(&listener).await;
        assert_eq!(peer.recv().await.unwrap(), json!({"type": "bye"}));
    });
    let client = Client::connect(options).await.unwrap();
    let mut events = client.events();
    let state = client.state_change(&ConnectionState::Connected).await;
    assert!(
        matches!(
            state,
            ConnectionState::Disconnected { .. } | ConnectionState::Reconnecting { attempt: 1 }
        ),
        "{state:?}"
    );
    loop {
        match tokio::time::timeout(WAIT, events.next()).await.unwrap() {
            Some(ClientEvent::State(ConnectionState::Connected)) => break,
            Some(_) => {}
            None => panic!("client gone"),
        }
    }
    client.close().await;
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_handler_can_unsubscribe_itself() {
    let (listener, options) = listen().await;
    let server = tokio::spawn(async move {
        let (mut peer, _) = Peer::welcome(&listener).await;
        peer.confirm_subscribe(1).await;
        peer.send(
            json!({"type": "message", "topic": "once", "data": {"json": 1},
            "from": "p", "ts": 1, "offset": 2}),
        )
        .await;
        let unsub = peer.recv().await.unwrap();
        assert_eq!(unsub["type"], "unsubscribe");
        assert_eq!(unsub["filter"], "once");
        peer.send(json!({"type": "unsubscribed", "id": unsub["id"], "filter": "once"}))
            .await;
        assert_eq!(peer.recv().await.unwrap(), json!({"type": "bye"}));
    });
    let client = Client::connect(options).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let once: SubscriptionHandler = Arc::new(move |message, subscription| {
        let tx = tx.clone();
        Box::pin(async move {
            subscription
                .unsubscribe()
                .await
                .map_err(|e| e.to_string())?;
            tx.send(message.topic).map_err(|e| e.to_string())
        })
    });
    client.subscribe_with_handle("once", once).await.unwrap();
    let topic = tokio::time::timeout(WAIT, rx.recv()).await.unwrap();
    assert_eq!(topic.as_deref(), Some("once"));
    client.close().await;
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}
