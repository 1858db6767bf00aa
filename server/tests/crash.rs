//! The crash test: a `sealbus serve` child process with the SQLite store receives a stream of
//! QoS 1 publishes and is killed with SIGKILL mid-stream, then restarted on the same file. Every
//! message confirmed before the kill must reach every (persistent) subscriber afterwards; a
//! session created at runtime and a retained message must survive too. Duplicates (copies
//! redelivered because their ack was not yet stored) are reported as a figure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, http};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_sealbus");
const ADMIN: &str = "crash-admin-token";
const SUBSCRIBERS: [&str; 2] = ["archiver", "indexer"];

/// A `sealbus serve` child on the SQLite file in `dir`, killed (SIGKILL) on drop.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Served {
    let config = dir.join("sealbus.toml");
    std::fs::write(
        &config,
        format!(
            "admin_token = \"{ADMIN}\"\n\n[[sessions]]\nname = \"c\"\npassword = \"pw\"\n\
             retry_interval_ms = 300\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--store")
        .arg(dir.join("sealbus.db"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .env_remove("SEALBUS_STORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("serve exited early").unwrap();
        if let Some(at) = line.find("ws://") {
            break line[at..].split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .parse()
        .unwrap();
    Served { child, addr }
}

/// Receives and acknowledges copies until every id of `want` arrived (`None`: until the
/// connection ends) or `deadline` passes; returns every message id received, duplicates included.
async fn receive(
    mut client: Client,
    want: Option<BTreeSet<String>>,
    deadline: Instant,
) -> Vec<String> {
    let mut got = Vec::new();
    let waiting = |got: &Vec<String>| {
        want.as_ref()
            .is_none_or(|want| want.iter().any(|mid| !got.contains(mid)))
    };
    while waiting(&got) && Instant::now() < deadline {
        let frame = match client.next_frame(Duration::from_millis(200)).await {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(()) => break,
        };
        if frame["type"] != "message" {
            continue;
        }
        got.push(frame["mid"].as_str().unwrap().to_owned());
        if !frame["did"].is_null()
            && !client
                .try_send(json!({"type":"ack","did":frame["did"],"ok":true}))
                .await
        {
            break;
        }
    }
    got
}

#[tokio::test]
async fn nothing_confirmed_is_lost_when_the_server_is_killed_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let first = serve(dir.path());

    // State that must survive besides the messages: a session created at runtime, a retained
    // message, persistent subscriptions.
    let (status, body) = http(
        first.addr,
        "POST",
        "/api/sessions",
        Some(ADMIN),
        Some(json!({"name": "made-at-runtime", "password": "pw2"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut publisher = Client::join(first.addr, "c", "pw", "publisher").await;
    publisher
        .send(json!({"type":"publish","id":1,"topic":"crash/state","data":{"json":"kept"},"retain":true,"qos":1}))
        .await;
    publisher.expect("published").await;
    let mut subscribers = Vec::new();
    for id in SUBSCRIBERS {
        let (mut client, _) = Client::join_persistent(first.addr, "c", "pw", id).await;
        client.subscribe(1, "crash/stream/#").await;
        let forever = Instant::now() + Duration::from_secs(600);
        subscribers.push(tokio::spawn(receive(client, None, forever)));
    }

    // A stream of QoS 1 publishes, 32 in flight, while the subscribers acknowledge as they go.
    let mut confirmed = BTreeSet::new();
    let (mut next, mut in_flight) = (0u64, 0u64);
    while confirmed.len() < 400 {
        while in_flight < 32 {
            next += 1;
            publisher
                .send(json!({"type":"publish","id":next + 1,"mid":format!("m-{next}"),
                             "topic":format!("crash/stream/{}", next % 7),"data":{"json":next},"qos":1}))
                .await;
            in_flight += 1;
        }
        let frame = publisher.recv().await;
        if frame["type"] == "published" {
            confirmed.insert(frame["mid"].as_str().unwrap().to_owned());
            in_flight -= 1;
        }
    }
    // Mid-stream: publishes are in flight and copies unacknowledged when the process dies.
    drop(first);
    let published = next;
    let mut received: HashMap<&str, Vec<String>> = HashMap::new();
    for (id, task) in SUBSCRIBERS.into_iter().zip(subscribers) {
        received.insert(id, task.await.unwrap());
    }
    drop(publisher);

    let second = serve(dir.path());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut duplicates = 0;
    for id in SUBSCRIBERS {
        let (client, welcome) = Client::join_persistent(second.addr, "c", "pw", id).await;
        assert_eq!(welcome["session_present"], true, "{id}: {welcome}");
        let got = received.entry(id).or_default();
        let before: BTreeSet<String> = got.iter().cloned().collect();
        let want = confirmed.difference(&before).cloned().collect();
        got.extend(receive(client, Some(want), deadline).await);
        let unique: BTreeSet<&String> = got.iter().collect();
        let missing: Vec<&String> = confirmed.iter().filter(|m| !unique.contains(m)).collect();
        assert!(
            missing.is_empty(),
            "{id} lost {} confirmed messages, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        duplicates += got.len() - unique.len();
    }
    println!(
        "crash test: {published} published, {} confirmed before SIGKILL, all delivered to {} \
         subscribers after the restart; {duplicates} duplicate deliveries",
        confirmed.len(),
        SUBSCRIBERS.len()
    );

    let mut reader = Client::join(second.addr, "c", "pw", "reader").await;
    reader.subscribe(1, "crash/state").await;
    let retained = reader.expect("message").await;
    assert_eq!(
        (&retained["data"], &retained["retained"]),
        (&json!({"json":"kept"}), &json!(true))
    );
    let (_, welcome) = Client::hello_raw(
        second.addr,
        json!({"type":"hello","v":1,"session":"made-at-runtime","auth":{"password":"pw2"}}),
    )
    .await;
    assert_eq!(
        welcome["type"], "welcome",
        "the runtime session survived: {welcome}"
    );
}
