//! The admin REST API over real HTTP: token check, sessions CRUD, compatibility route, clients,
//! publish, client tokens, metrics, health and the OpenAPI document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN, Client, http, session, start};
use serde_json::json;

#[tokio::test]
async fn every_api_route_needs_the_admin_token() {
    let t = start(vec![session("s", "p")]).await;
    for (method, path) in [
        ("GET", "/api/sessions"),
        ("POST", "/api/sessions"),
        ("GET", "/api/sessions/s"),
        ("DELETE", "/api/sessions/s"),
        ("GET", "/api/sessions/s/clients"),
        ("POST", "/api/sessions/s/publish"),
        ("POST", "/api/sessions/s/tokens"),
        ("POST", "/api/createSession"),
    ] {
        for token in [None, Some("wrong")] {
            let (status, body) = http(t.addr, method, path, token, Some(json!({}))).await;
            assert_eq!(status, 401, "{method} {path}");
            assert_eq!(body["error"]["code"], 2001);
            assert_eq!(body["error"]["name"], "auth_failed");
        }
    }
    let (status, _) = http(t.addr, "GET", "/api/sessions/s", Some(ADMIN), None).await;
    assert_eq!(status, 200, "the session survived");
}

#[tokio::test]
async fn sessions_crud_changes_what_clients_see() {
    let t = start(vec![]).await;
    let (status, created) = http(
        t.addr,
        "POST",
        "/api/sessions",
        Some(ADMIN),
        Some(json!({"name":"n1","password":"pw","max_retries":3})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["settings"]["max_retries"], 3);
    assert_eq!(created["password"], true);
    assert!(
        created.to_string().find("argon2").is_none(),
        "no hash in answers"
    );

    let (_, list) = http(t.addr, "GET", "/api/sessions", Some(ADMIN), None).await;
    assert_eq!(list["sessions"][0]["name"], "n1");

    let (status, body) = http(
        t.addr,
        "POST",
        "/api/sessions",
        Some(ADMIN),
        Some(json!({"name":"n1"})),
    )
    .await;
    assert_eq!((status, body["error"]["code"].clone()), (409, json!(1003)));
    for bad in [
        json!({"name":"bad name!"}),
        json!({"name":"x","colour":"red"}),
        json!({"name":"y","max_clients":0}),
        json!([1]),
    ] {
        let (status, body) = http(
            t.addr,
            "POST",
            "/api/sessions",
            Some(ADMIN),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"]["code"].is_u64(), "{body}");
    }

    let mut old = Client::join(t.addr, "n1", "pw", "old").await;
    let (status, updated) = http(
        t.addr,
        "PUT",
        "/api/sessions/n1",
        Some(ADMIN),
        Some(json!({"password":"new","max_retries":7})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["settings"]["max_retries"], 7);
    assert_eq!(
        updated["settings"]["retry_interval_ms"], 5000,
        "unchanged fields kept"
    );
    let (_, refused) = Client::hello_raw(
        t.addr,
        json!({"type":"hello","v":1,"session":"n1","auth":{"password":"pw"}}),
    )
    .await;
    assert_eq!(refused["code"], 2001);
    let mut fresh = Client::connect(t.addr).await;
    fresh
        .send(json!({"type":"hello","v":1,"session":"n1","auth":{"password":"new"}}))
        .await;
    assert_eq!(fresh.expect("welcome").await["limits"]["max_retries"], 7);

    let (status, _) = http(t.addr, "DELETE", "/api/sessions/n1", Some(ADMIN), None).await;
    assert_eq!(status, 204);
    let (errors, close) = old.expect_close().await;
    assert_eq!(errors.last().unwrap()["code"], 6009);
    assert_eq!(close, 4509);
    let (status, body) = http(t.addr, "GET", "/api/sessions/n1", Some(ADMIN), None).await;
    assert_eq!((status, body["error"]["code"].clone()), (404, json!(2005)));
    let (status, _) = http(t.addr, "DELETE", "/api/sessions/n1", Some(ADMIN), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn create_session_compat_route_takes_fastport_names() {
    let t = start(vec![]).await;
    let (status, body) = http(
        t.addr,
        "POST",
        "/api/createSession",
        Some(ADMIN),
        Some(
            json!({"sessionName":"legacy","password":"pw","retryInterval":2000,"maxRetryLimit":5}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut client = Client::connect(t.addr).await;
    client
        .send(json!({"type":"hello","v":1,"session":"legacy","auth":{"password":"pw"}}))
        .await;
    let welcome = client.expect("welcome").await;
    assert_eq!(welcome["limits"]["retry_interval_ms"], 2000);
    assert_eq!(welcome["limits"]["max_retries"], 5);
    let (status, _) = http(
        t.addr,
        "POST",
        "/api/createSession",
        Some(ADMIN),
        Some(json!({"password":"x"})),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn publish_over_http_clients_list_tokens_and_metrics() {
    let t = start(vec![session("s", "p")]).await;
    let mut sub = Client::join(t.addr, "s", "p", "sub").await;
    sub.subscribe(1, "news/#").await;

    let (status, body) = http(
        t.addr,
        "POST",
        "/api/sessions/s/publish",
        Some(ADMIN),
        Some(json!({"topic":"news/today","data":{"json":{"headline":"hi"}}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offset"], 1);
    let message = sub.expect("message").await;
    assert_eq!(message["from"], "$admin");
    assert_eq!(message["data"]["json"]["headline"], "hi");
    let (status, _) = http(
        t.addr,
        "POST",
        "/api/sessions/s/publish",
        Some(ADMIN),
        Some(json!({"topic":"news/q","data":{"json":2},"qos":1})),
    )
    .await;
    assert_eq!(status, 200);
    let message = sub.expect("message").await;
    assert_eq!(message["qos"], 1);
    sub.send(json!({"type":"ack","did":message["did"],"ok":true}))
        .await;
    assert!(sub.sync().await.is_empty(), "the ack settled the delivery");
    for (topic, status, code) in [("a/+", 400, 3001), ("$sys/x", 403, 2003)] {
        let (got, body) = http(
            t.addr,
            "POST",
            "/api/sessions/s/publish",
            Some(ADMIN),
            Some(json!({"topic":topic,"data":{"json":1}})),
        )
        .await;
        assert_eq!((got, body["error"]["code"].clone()), (status, json!(code)));
    }
    let (status, _) = http(
        t.addr,
        "POST",
        "/api/sessions/none/publish",
        Some(ADMIN),
        Some(json!({"topic":"a","data":{"json":1}})),
    )
    .await;
    assert_eq!(status, 404);

    let (_, clients) = http(t.addr, "GET", "/api/sessions/s/clients", Some(ADMIN), None).await;
    assert_eq!(clients["clients"][0]["client_id"], "sub");
    assert_eq!(clients["clients"][0]["subscriptions"], json!(["news/#"]));
    assert!(clients["clients"][0]["queue_depth"].is_u64());

    let (status, issued) = http(
        t.addr,
        "POST",
        "/api/sessions/s/tokens",
        Some(ADMIN),
        Some(json!({"client_id":"tok-1","pub":["news/#"]})),
    )
    .await;
    assert_eq!(status, 200, "{issued}");
    let (mut holder, welcome) = Client::hello_raw(
        t.addr,
        json!({"type":"hello","v":1,"session":"s","auth":{"token":issued["token"]}}),
    )
    .await;
    assert_eq!(welcome["client_id"], "tok-1");
    holder
        .send(json!({"type":"publish","id":1,"topic":"other","data":{"json":1}}))
        .await;
    assert_eq!(holder.expect("error").await["code"], 2003);
    let (status, _) = http(
        t.addr,
        "POST",
        "/api/sessions/s/tokens",
        Some(ADMIN),
        Some(json!({"client_id":"$x"})),
    )
    .await;
    assert_eq!(status, 400);

    let (status, metrics) = http(t.addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap();
    for counter in [
        "sealbus_connections{session=\"s\"} 2",
        "sealbus_messages_in_total{session=\"s\"}",
        "sealbus_messages_out_total{session=\"s\"}",
        "sealbus_bytes_in_total{session=\"s\"}",
        "sealbus_bytes_out_total{session=\"s\"}",
        "sealbus_acks_total{session=\"s\"}",
        "sealbus_retries_total{session=\"s\"}",
        "sealbus_drops_total{session=\"s\"}",
        "# TYPE sealbus_published_total counter",
    ] {
        assert!(text.contains(counter), "missing {counter} in\n{text}");
    }
}

#[tokio::test]
async fn health_readiness_and_openapi() {
    let t = start(vec![]).await;
    assert_eq!(http(t.addr, "GET", "/healthz", None, None).await.0, 200);
    assert_eq!(http(t.addr, "GET", "/readyz", None, None).await.0, 200);
    let (status, doc) = http(t.addr, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/sessions",
        "/api/sessions/{name}",
        "/api/createSession",
        "/api/sessions/{name}/publish",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path}");
    }
}
