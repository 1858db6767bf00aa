//! The load scenarios against an in-process server on 127.0.0.1 (real sockets): each runs to
//! its end and finds what it sent delivered. The figures themselves depend on the machine and
//! are not asserted.

use std::time::Duration;

use sealbus_server::Server;
use sealbus_server::config::{Config, SessionConfig};

use super::conn::{self, Target};
use super::{durable, scenarios, tenants};

const ADMIN_TOKEN: &str = "load-test-admin";

/// Starts a server with one session on a free loopback port; returns where to reach it.
async fn start_server() -> Target {
    let config = Config {
        admin_token: Some(ADMIN_TOKEN.into()),
        sessions: vec![SessionConfig {
            name: "load".into(),
            password: Some("load-password".into()),
            ..SessionConfig::default()
        }],
        ..Config::default()
    };
    let server = Server::builder().config(config).build().expect("server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { server.serve(listener).await });
    Target {
        url: format!("ws://{addr}/ws"),
        session: "load".into(),
        password: "load-password".into(),
        admin_token: Some(ADMIN_TOKEN.into()),
    }
}

/// A short run of each scenario.
const RUN: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_confirms_and_every_subscriber_receives_every_confirmed_message() {
    let target = start_server().await;
    // An error if a subscriber missed a confirmed message.
    let rate = durable::qos1(&target, "test", 3, RUN).await.expect("qos1");
    assert!(rate > 0.0, "no publish was confirmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_ack_round_trips_complete() {
    let target = start_server().await;
    // An error if a round trip timed out or was cancelled.
    let rate = scenarios::acks(&target, 3, RUN).await.expect("acks");
    assert!(rate > 0.0, "no round trip completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_at_a_low_rate_delivers_every_message_to_every_subscriber() {
    let target = start_server().await;
    let figures = scenarios::fanout(&target, 2, 5, RUN, 200.0)
        .await
        .expect("fanout");
    assert!(figures.lossless, "a delivery was lost or a subscriber cut");
    assert!(figures.publish_rate > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_scenario_loads_its_own_sessions_and_deletes_them_afterwards() {
    let target = start_server().await;
    tenants::sessions(&target, RUN).await.expect("sessions");
    let (status, body) = conn::http(&target, "GET", "/api/sessions", Some(ADMIN_TOKEN), None)
        .await
        .expect("list sessions");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let names: Vec<&str> = list["sessions"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|session| session["name"].as_str())
        .collect();
    assert_eq!(names, ["load"], "{body}");
}
