//! Authentication over real sockets: passwords, tokens and their permissions, expiry, rate
//! limiting, client id takeover, the upgrade hook and the subprotocol requirement.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Client, session, start, start_with};
use sealbus_server::auth::{Claims, sign_token};
use sealbus_server::config::{Config, ServerOptions};
use serde_json::json;

fn hello(session: &str, auth: serde_json::Value) -> serde_json::Value {
    json!({"type":"hello","v":1,"session":session,"auth":auth})
}

fn token(session: &str, claims: &Claims) -> String {
    sign_token(claims, format!("secret-of-{session}").as_bytes()).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn password_ok_wrong_password_and_unknown_session() {
    let t = start(vec![session("s1", "pw")]).await;
    let (_ok, welcome) = Client::hello_raw(t.addr, hello("s1", json!({"password":"pw"}))).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["session"], "s1");
    assert!(welcome["client_id"].as_str().unwrap().starts_with("c-"));
    assert_eq!(welcome["limits"]["retry_interval_ms"], 5000);
    assert_eq!(welcome["limits"]["max_retries"], 100);

    let mut answers = Vec::new();
    for auth in [("s1", "nope"), ("missing", "pw")] {
        let (mut client, error) =
            Client::hello_raw(t.addr, hello(auth.0, json!({"password": auth.1}))).await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], 2001);
        let (_, close) = client.expect_close().await;
        assert_eq!(close, 4101);
        answers.push(error["message"].clone());
    }
    assert_eq!(
        answers[0], answers[1],
        "unknown session must look like a wrong password"
    );
}

#[tokio::test]
async fn token_grants_its_client_id_and_enforces_permissions() {
    let t = start(vec![session("s1", "pw")]).await;
    let claims = Claims {
        sub: "worker-1".into(),
        exp: now() + 600,
        publish: Some(vec!["jobs/#".into()]),
        sub_filters: Some(vec!["results/+".into()]),
    };
    let (mut client, welcome) =
        Client::hello_raw(t.addr, hello("s1", json!({"token": token("s1", &claims)}))).await;
    assert_eq!(welcome["client_id"], "worker-1");

    client.subscribe(1, "results/a").await;
    client
        .send(json!({"type":"subscribe","id":2,"filter":"results/#"}))
        .await;
    let denied = client.expect("error").await;
    assert_eq!(
        (denied["id"].clone(), denied["code"].clone()),
        (json!(2), json!(2003))
    );

    client
        .send(json!({"type":"publish","id":3,"topic":"other","data":{"json":1}}))
        .await;
    let denied = client.expect("error").await;
    assert_eq!(
        (denied["id"].clone(), denied["code"].clone()),
        (json!(3), json!(2003))
    );

    client
        .send(json!({"type":"publish","id":4,"topic":"jobs/x","data":{"json":1}}))
        .await;
    assert_eq!(client.expect("published").await["id"], 4);

    // A hello client_id different from the token's `sub` is refused.
    let mut other = hello("s1", json!({"token": token("s1", &claims)}));
    other["client_id"] = json!("someone-else");
    let (_, error) = Client::hello_raw(t.addr, other).await;
    assert_eq!(error["code"], 2001);

    // A token of another session does not open this one.
    let (_, error) =
        Client::hello_raw(t.addr, hello("s1", json!({"token": token("s2", &claims)}))).await;
    assert_eq!(error["code"], 2001);
}

#[tokio::test]
async fn expired_token_closes_with_token_expired() {
    let t = start(vec![session("s1", "pw")]).await;
    let claims = Claims {
        sub: "late".into(),
        exp: now() - 10,
        publish: None,
        sub_filters: None,
    };
    let (mut client, error) =
        Client::hello_raw(t.addr, hello("s1", json!({"token": token("s1", &claims)}))).await;
    assert_eq!(error["code"], 2002);
    assert_eq!(client.expect_close().await.1, 4102);
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_peer() {
    let t = start_with(Config {
        sessions: vec![session("s1", "pw")],
        server: ServerOptions {
            auth_failures: 3,
            ..ServerOptions::default()
        },
        ..Config::default()
    })
    .await;
    for _ in 0..3 {
        let (_, error) = Client::hello_raw(t.addr, hello("s1", json!({"password":"bad"}))).await;
        assert_eq!(error["code"], 2001);
    }
    // Even the right password is refused now.
    let (mut client, error) =
        Client::hello_raw(t.addr, hello("s1", json!({"password":"pw"}))).await;
    assert_eq!(error["code"], 2004);
    assert_eq!(client.expect_close().await.1, 4104);
}

#[tokio::test]
async fn second_connection_with_same_client_id_replaces_the_first() {
    let t = start(vec![session("s1", "pw")]).await;
    let mut first = Client::join(t.addr, "s1", "pw", "dup").await;
    first.subscribe(1, "t").await;
    let mut second = Client::join(t.addr, "s1", "pw", "dup").await;
    let (errors, close) = first.expect_close().await;
    assert_eq!(close, 4106);
    assert_eq!(errors.last().unwrap()["code"], 2006);
    // The new connection starts clean and works.
    second.subscribe(1, "t").await;
    second
        .send(json!({"type":"publish","topic":"t","data":{"json":"x"}}))
        .await;
    assert_eq!(second.expect("message").await["data"]["json"], "x");
}

#[tokio::test]
async fn frames_before_hello_and_bad_versions_close() {
    let t = start(vec![session("s1", "pw")]).await;
    let mut client = Client::connect(t.addr).await;
    client.send(json!({"type":"ping","id":1})).await;
    let (errors, close) = client.expect_close().await;
    assert_eq!(errors[0]["code"], 1006);
    assert_eq!(close, 4006);

    let mut v2 = hello("s1", json!({"password":"pw"}));
    v2["v"] = json!(2);
    let (mut client, error) = Client::hello_raw(t.addr, v2).await;
    assert_eq!(error["code"], 1005);
    client.expect_close().await;

    let mut client = Client::join(t.addr, "s1", "pw", "a").await;
    client.send(hello("s1", json!({"password":"pw"}))).await;
    assert_eq!(client.expect("error").await["code"], 1007);
    client.send(json!({"type":"bye"})).await;
    assert_eq!(client.expect_close().await.1, 1000);
}

#[tokio::test]
async fn upgrade_needs_the_subprotocol_and_passes_the_hook() {
    use sealbus_server::Server;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let server = Server::builder()
        .session(session("s1", "pw"))
        .upgrade_hook(|_headers, query| query.is_some_and(|q| q.contains("key=let-me-in")))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await });

    let with_protocol = |query: &str| {
        let mut request = format!("ws://{addr}/ws{query}")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "sealbus.v1".parse().unwrap());
        request
    };
    assert!(
        tokio_tungstenite::connect_async(with_protocol(""))
            .await
            .is_err()
    );
    assert!(
        tokio_tungstenite::connect_async(with_protocol("?key=let-me-in"))
            .await
            .is_ok()
    );
    let no_protocol = format!("ws://{addr}/ws?key=let-me-in");
    assert!(tokio_tungstenite::connect_async(no_protocol).await.is_err());
}

#[tokio::test]
async fn full_sessions_and_missing_hello_close_the_connection() {
    let t = start_with(Config {
        sessions: vec![common::session_with("s1", "pw", |s| s.max_clients = 1)],
        server: ServerOptions {
            hello_timeout_ms: 200,
            ..ServerOptions::default()
        },
        ..Config::default()
    })
    .await;
    let _first = Client::join(t.addr, "s1", "pw", "one").await;
    let (mut second, error) = Client::hello_raw(
        t.addr,
        json!({"type":"hello","v":1,"session":"s1","auth":{"password":"pw"},"client_id":"two"}),
    )
    .await;
    assert_eq!(error["code"], 4002);
    assert_eq!(second.expect_close().await.1, 4302);
    // Taking over an id already connected is not an extra client.
    let _again = Client::join(t.addr, "s1", "pw", "one").await;

    let mut mute = Client::connect(t.addr).await;
    let (errors, close) = mute.expect_close().await;
    assert_eq!(errors[0]["code"], 1006);
    assert_eq!(close, 4006);
}

#[tokio::test]
async fn a_configured_argon2_hash_is_accepted() {
    let mut config = session("hashed", "unused");
    config.password = None;
    config.password_hash = Some(sealbus_server::auth::hash_password("from-hash").unwrap());
    let t = start(vec![config]).await;
    let _client = Client::join(t.addr, "hashed", "from-hash", "h").await;
    let (_, error) = Client::hello_raw(t.addr, hello("hashed", json!({"password":"unused"}))).await;
    assert_eq!(error["code"], 2001);
}
