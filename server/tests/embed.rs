//! Embedding: the router mounted in an application's own axum app, the in-process participant
//! API talking to remote raw clients, and the real `sealbus` binary as a child process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{Client, http, session};
use sealbus::protocol::{AckOutcome, Payload, Qos};
use sealbus_server::Server;
use sealbus_server::participant::PublishOptions;
use serde_json::json;

#[tokio::test]
async fn participant_api_in_a_mounted_router_talks_to_remote_clients() {
    let server = Server::builder()
        .session(session("s", "p"))
        .admin_token(common::ADMIN)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/app", get(|| async { "the host app" }))
        .merge(server.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    assert_eq!(
        http(addr, "GET", "/app", None, None).await.1,
        "the host app"
    );

    let inproc = server.participant("s", None).unwrap();
    assert_eq!(inproc.client_id(), "$server");
    let mut commands = inproc.subscribe("cmd/#").await.unwrap();
    let mut remote = Client::join(addr, "s", "p", "remote").await;
    remote.subscribe(1, "events/#").await;

    // Remote -> in-process.
    remote
        .send(json!({"type":"publish","topic":"cmd/restart","data":{"json":{"now":true}}}))
        .await;
    let delivery = tokio::time::timeout(common::WAIT, commands.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message.from, "remote");
    assert_eq!(delivery.message.data, Payload::Json(json!({"now": true})));

    // In-process -> remote, with the same answers a remote publisher gets.
    let published = inproc
        .publish(
            "events/a",
            Payload::Json(json!(1)),
            PublishOptions {
                qos: Qos::AtLeastOnce,
                retain: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(published.offset, Some(2));
    let message = remote.expect("message").await;
    assert_eq!(
        (message["from"].clone(), message["qos"].clone()),
        (json!("$server"), json!(1))
    );
    let err = inproc
        .publish("a/+", Payload::Json(json!(1)), PublishOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), sealbus::protocol::ErrorCode::InvalidTopic);

    // publish_with_ack from in-process, answered by the remote client.
    let mut handle = inproc
        .publish_with_ack(
            "events/job",
            Payload::Json(json!("work")),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(handle.expected, ["remote"]);
    let message = remote.expect("message").await;
    remote
        .send(json!({"type":"ack","aid":message["aid"],"ok":false,"code":6006,"error":"nope"}))
        .await;
    let first = handle.wait_any().await.unwrap();
    assert_eq!((first.from.as_str(), first.ok), ("remote", false));
    let result = handle.wait().await;
    assert_eq!(result.outcome, Some(AckOutcome::Complete));
    assert_eq!(result.responses.len(), 1);
    assert_eq!(result.responses[0].error.as_deref(), Some("nope"));

    // Cancel: the remote never answers; the wait ends with `cancelled`.
    let handle = inproc
        .publish_with_ack(
            "events/slow",
            Payload::Json(json!(0)),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    remote.expect("message").await;
    handle.cancel();
    let result = handle.wait().await;
    assert_eq!(result.outcome, Some(AckOutcome::Cancelled));
    assert!(result.responses.is_empty());

    // publish_to_id both ways.
    inproc
        .publish_to_id("remote", Payload::Json(json!("direct")))
        .await
        .unwrap();
    assert_eq!(remote.expect("direct").await["from"], "$server");
    let missing = inproc
        .publish_to_id("ghost", Payload::Json(json!(1)))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), sealbus::protocol::ErrorCode::NoSuchClient);
    let named = server.participant("s", Some("svc")).unwrap();
    remote
        .send(json!({"type":"send","to":"svc","data":{"json":"to svc"}}))
        .await;
    let direct = tokio::time::timeout(common::WAIT, named.recv_direct())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(direct.from, "remote");

    // A remote publish_with_ack reaches the in-process subscriber, which answers.
    remote
        .send(json!({"type":"publish","id":9,"topic":"cmd/x","data":{"json":1},"ack":{"timeout_ms":5000}}))
        .await;
    assert_eq!(
        remote.expect("ack_expect").await["expected"],
        json!(["$server"])
    );
    let delivery = tokio::time::timeout(common::WAIT, commands.recv())
        .await
        .unwrap()
        .unwrap();
    delivery.respond(Ok(()));
    let response = remote.expect("ack_response").await;
    assert_eq!(
        (response["from"].clone(), response["ok"].clone()),
        (json!("$server"), json!(true))
    );
    assert_eq!(remote.expect("ack_done").await["outcome"], "complete");

    // A participant whose id is taken over ends: its requests fail, its subscriptions finish.
    let _successor = server.participant("s", None).unwrap();
    let ended = tokio::time::timeout(common::WAIT, commands.recv())
        .await
        .unwrap();
    assert!(ended.is_none());
    let err = inproc
        .publish(
            "events/a",
            Payload::Json(json!(1)),
            PublishOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, sealbus_server::Error::Disconnected), "{err}");
}

/// Kills the child process when the test ends, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sealbus` with `args` and `envs`; returns the child and the banner lines' receiver.
fn spawn_sealbus(
    args: &[&str],
    envs: &[(&str, &str)],
) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sealbus"));
    command
        .args(args)
        .env_remove("SEALBUS_CONFIG")
        .env_remove("SEALBUS_ADMIN_TOKEN")
        .env_remove("SEALBUS_LISTEN")
        .env_remove("SEALBUS_STORE")
        .env_remove("SEALBUS_MEMORY")
        .env_remove("SEALBUS_SYNC")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = KillOnDrop(command.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (found, banner) = std::sync::mpsc::channel();
    // Read every line until the child exits, so its stdout never hits a closed pipe.
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { return };
            let _ = found.send(line);
        }
    });
    (child, banner)
}

fn bound_address(banner: &std::sync::mpsc::Receiver<String>) -> SocketAddr {
    loop {
        let line = banner
            .recv_timeout(common::WAIT)
            .expect("the banner is printed");
        if let Some(rest) = line.strip_prefix("sealbus listening on ") {
            return rest.parse().unwrap();
        }
    }
}

#[tokio::test]
async fn the_binary_serves_a_demo_session() {
    let (_child, banner) = spawn_sealbus(
        &["serve", "--demo", "--memory", "--listen", "127.0.0.1:0"],
        &[],
    );
    let addr = bound_address(&banner);
    let token = loop {
        let line = banner
            .recv_timeout(common::WAIT)
            .expect("the admin token is printed");
        if let Some(rest) = line
            .trim()
            .strip_prefix("Admin token (generated, shown once): ")
        {
            break rest.to_owned();
        }
    };
    let mut sub = Client::join(addr, "demo", "demo", "viewer").await;
    sub.subscribe(1, "#").await;
    let (status, _) = http(
        addr,
        "POST",
        "/api/sessions/demo/publish",
        Some(&token),
        Some(json!({"topic":"hello","data":{"json":"hi"}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sub.expect("message").await["data"]["json"], "hi");
}

#[tokio::test]
async fn the_binary_reads_its_config_from_the_environment_and_mints_tokens() {
    let path = std::env::temp_dir().join(format!("sealbus-test-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:1\"\n[[sessions]]\nname = \"cfg\"\npassword = \"pw\"\n\
         token_secret = \"cfg-secret\"\nmax_retries = 9\n",
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state").join("env.db");
    let (_child, banner) = spawn_sealbus(
        &["serve"],
        &[
            ("SEALBUS_CONFIG", config),
            ("SEALBUS_LISTEN", "127.0.0.1:0"),
            ("SEALBUS_ADMIN_TOKEN", "env-token"),
            ("SEALBUS_STORE", store.to_str().unwrap()),
            ("SEALBUS_SYNC", "normal"),
        ],
    );
    let addr = bound_address(&banner);
    // After the address: the WebSocket URL, the admin API, then the store.
    let lines: Vec<String> = (0..3)
        .map(|_| banner.recv_timeout(common::WAIT).unwrap())
        .collect();
    let absolute = store.canonicalize().unwrap();
    assert_eq!(
        lines[2].trim(),
        format!("Store: SQLite {} (sync normal)", absolute.display())
    );
    let (status, session) = http(addr, "GET", "/api/sessions/cfg", Some("env-token"), None).await;
    assert_eq!(status, 200);
    assert_eq!(session["settings"]["max_retries"], 9);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sealbus"))
        .args([
            "token",
            "--config",
            config,
            "--session",
            "cfg",
            "--client-id",
            "cli-1",
            "--pub",
            "a/#",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let (mut client, welcome) = Client::hello_raw(
        addr,
        json!({"type":"hello","v":1,"session":"cfg","auth":{"token":token}}),
    )
    .await;
    assert_eq!(welcome["client_id"], "cli-1");
    client
        .send(json!({"type":"publish","id":1,"topic":"b","data":{"json":1}}))
        .await;
    assert_eq!(client.expect("error").await["code"], 2003);
    let _ = std::fs::remove_file(&path);
}

/// Sessions created through the admin API are in the store once the API answers: a server
/// killed with SIGKILL and started again on the same file still has them, and a session the
/// configuration names takes the configuration's settings but keeps its token secret.
#[tokio::test]
async fn the_binary_keeps_its_sessions_in_the_store_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("sealbus.db");
    let config = dir.path().join("sealbus.toml");
    std::fs::write(&config, "[[sessions]]\nname = \"cfg\"\nmax_retries = 1\n").unwrap();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-token",
        "t0ken",
        "--store",
        store.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let (mut child, banner) = spawn_sealbus(&args, &[]);
    let addr = bound_address(&banner);
    let (status, _) = http(
        addr,
        "POST",
        "/api/sessions",
        Some("t0ken"),
        Some(json!({"name": "kept", "password": "pw", "max_retries": 5})),
    )
    .await;
    assert_eq!(status, 201);
    let first_secret = stored_secret(&store, "cfg");
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    std::fs::write(&config, "[[sessions]]\nname = \"cfg\"\nmax_retries = 2\n").unwrap();
    let (_child, banner) = spawn_sealbus(&args, &[]);
    let addr = bound_address(&banner);
    let (status, kept) = http(addr, "GET", "/api/sessions/kept", Some("t0ken"), None).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["settings"]["max_retries"], 5);
    let (_client, welcome) = Client::hello_raw(
        addr,
        json!({"type":"hello","v":1,"session":"kept","auth":{"password":"pw"}}),
    )
    .await;
    assert_eq!(welcome["type"], "welcome");
    let (status, cfg) = http(addr, "GET", "/api/sessions/cfg", Some("t0ken"), None).await;
    assert_eq!(status, 200);
    assert_eq!(cfg["settings"]["max_retries"], 2, "the configuration wins");
    assert_eq!(
        stored_secret(&store, "cfg"),
        first_secret,
        "the generated token secret is kept"
    );
}

/// What a QoS 1 `published` confirms is in the SQLite file: after a SIGKILL, the restarted
/// binary gives a persistent client the copy it had not acknowledged, keeps the stream's epoch
/// (history replays with `since`) and the retained message.
#[tokio::test]
async fn after_a_kill_the_binary_recovers_its_state_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("sealbus.db");
    let args = [
        "serve",
        "--demo",
        "--listen",
        "127.0.0.1:0",
        "--store",
        store.to_str().unwrap(),
    ];
    let (mut child, banner) = spawn_sealbus(&args, &[]);
    let addr = bound_address(&banner);
    let (mut worker, _) = Client::join_persistent(addr, "demo", "demo", "worker").await;
    let epoch = worker.subscribe(1, "jobs/#").await["position"]["epoch"].clone();
    worker.close().await;
    let mut publisher = Client::join(addr, "demo", "demo", "publisher").await;
    for (id, topic, data, retain) in [(1, "jobs/a", "kept", false), (2, "state", "on", true)] {
        publisher
            .send(
                json!({"type":"publish","id":id,"topic":topic,"data":{"json":data},
                         "qos":1,"retain":retain}),
            )
            .await;
        assert_eq!(publisher.expect("published").await["id"], id);
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let (_child, banner) = spawn_sealbus(&args, &[]);
    let addr = bound_address(&banner);
    let (mut worker, welcome) = Client::join_persistent(addr, "demo", "demo", "worker").await;
    assert_eq!(welcome["session_present"], true);
    assert_eq!(welcome["epoch"], epoch, "the stream goes on");
    let copy = worker.expect("message").await;
    assert_eq!(copy["data"]["json"], "kept");
    let mut reader = Client::join(addr, "demo", "demo", "reader").await;
    reader.subscribe(1, "state").await;
    let retained = reader.expect("message").await;
    assert_eq!(
        (
            retained["retained"].clone(),
            retained["data"]["json"].clone()
        ),
        (json!(true), json!("on"))
    );
    reader
        .send(json!({"type":"subscribe","id":2,"filter":"jobs/#",
                     "since":{"epoch":epoch,"offset":0}}))
        .await;
    assert_eq!(reader.expect("subscribed").await["recovery"], "recovered");
    assert_eq!(reader.expect("message").await["data"]["json"], "kept");
}

/// The stored token secret of `session`, read beside the running server (WAL lets another
/// connection read while the server writes).
fn stored_secret(store: &std::path::Path, session: &str) -> String {
    let db = rusqlite::Connection::open(store).unwrap();
    let record: String = db
        .query_row(
            "SELECT record FROM sessions WHERE name = ?1",
            [session],
            |row| row.get(0),
        )
        .unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    record["token_secret"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_binary_closes_clients_with_shutting_down_on_sigterm() {
    let (child, banner) = spawn_sealbus(
        &["serve", "--demo", "--memory", "--listen", "127.0.0.1:0"],
        &[],
    );
    let addr = bound_address(&banner);
    let mut client = Client::join(addr, "demo", "demo", "bye").await;
    client.subscribe(1, "t").await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (errors, close) = client.expect_close().await;
    assert_eq!(errors.last().unwrap()["code"], 6002);
    assert_eq!(close, 4502);
}
