//! The `sealbus` binary end to end: a `serve --demo` child process on 127.0.0.1, driven by the
//! client subcommands (`keygen`, `sub`, `pub`, `session`) run as further child processes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sealbus");

/// A `sealbus serve --demo --memory` child, killed on drop.
struct Served {
    child: Child,
    url: String,
    http: String,
    admin_token: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    serve_with(&["--memory"])
}

/// `sealbus serve --demo` with `args` (`--memory`, or `--store PATH`; `--tls-cert`, ...).
fn serve_with(args: &[&str]) -> Served {
    serve_with_env(args, &[])
}

/// [`serve_with`] with `env` added to a clean environment of the server's own variables.
fn serve_with_env(args: &[&str], env: &[(&str, &str)]) -> Served {
    let mut child = Command::new(BIN)
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("SEALBUS_ADMIN_TOKEN")
        .env_remove("MIMALLOC_PURGE_DELAY")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut token) = (None, None);
    while url.is_none() || token.is_none() {
        let line = lines.next().expect("serve exited early").unwrap();
        if let Some(rest) = line.trim_start().strip_prefix("WebSocket: ") {
            url = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.contains("Admin token") {
            token = line.rsplit(' ').next().map(str::to_owned);
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let url = url.unwrap();
    let http = url
        .replacen("ws", "http", 1)
        .trim_end_matches("/ws")
        .to_owned();
    Served {
        child,
        url,
        http,
        admin_token: token.unwrap(),
    }
}

fn sealbus(served: &Served, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("SEALBUS_URL", &served.url)
        .env("SEALBUS_SESSION", "demo")
        .env("SEALBUS_PASSWORD", "demo")
        .env("SEALBUS_ADMIN_URL", &served.http)
        .env("SEALBUS_ADMIN_TOKEN", &served.admin_token)
        .env("RUST_LOG", "warn");
    command
}

fn run(served: &Served, args: &[&str]) -> Output {
    sealbus(served, args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Starts `sealbus sub ...` and waits until it has subscribed (it says so on stderr).
fn start_sub(served: &Served, args: &[&str]) -> Child {
    start_sub_with(sealbus(served, args))
}

/// [`start_sub`] with a prepared command.
fn start_sub_with(mut command: Command) -> Child {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !line.contains("subscribed to") {
        line.clear();
        assert!(Instant::now() < deadline, "sub never subscribed");
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "sub exited: {line}"
        );
    }
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
    });
    child
}

fn finish(mut child: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "process did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

/// The variables the server process runs with (Linux: `/proc/PID/environ`).
#[cfg(target_os = "linux")]
fn environment_of(served: &Served) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{}/environ", served.child.id())).unwrap();
    raw.split(|byte| *byte == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn serve_runs_with_a_longer_allocator_purge_delay_unless_one_is_given() {
    let served = serve();
    assert!(
        environment_of(&served).contains(&"MIMALLOC_PURGE_DELAY=10000".to_owned()),
        "serve restarts itself with mimalloc's purge delay at 10 s"
    );
    let output = run(&served, &["pub", "t", "still serving"]);
    assert!(output.status.success(), "{output:?}");
    let given = serve_with_env(&["--memory"], &[("MIMALLOC_PURGE_DELAY", "250")]);
    let environment = environment_of(&given);
    assert!(environment.contains(&"MIMALLOC_PURGE_DELAY=250".to_owned()));
    assert!(!environment.contains(&"MIMALLOC_PURGE_DELAY=10000".to_owned()));
}

#[cfg(unix)]
#[test]
fn serve_stops_on_sigterm_even_when_its_output_pipes_are_closed() {
    let mut child = Command::new(BIN)
        .args(["serve", "--demo", "--memory", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while !lines
        .next()
        .expect("serve exited early")
        .unwrap()
        .contains("WebSocket: ")
    {}
    drop(lines);
    drop(child.stderr.take());
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not stop within 10 s of SIGTERM once its log pipe was closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a graceful shutdown, not {status:?}");
}

#[test]
fn sub_ends_quietly_when_its_reader_stops_reading() {
    let served = serve();
    let mut sub = start_sub(&served, &["sub", "news/#"]);
    assert!(
        run(&served, &["pub", "news/1", "\"first\""])
            .status
            .success()
    );
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("first"));
    drop(lines);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        assert!(
            run(&served, &["pub", "news/2", "\"more\""])
                .status
                .success()
        );
        if let Some(status) = sub.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sub kept running with nobody reading"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "ends like `head` expects, not a panic: {status:?}"
    );
}

#[test]
fn keygen_pub_sub_with_encryption_and_acks_end_to_end() {
    let served = serve();
    let key = stdout(&run(&served, &["keygen"])).trim().to_owned();
    assert_eq!(key.len(), 44, "key text: {key}");

    let sub = start_sub(
        &served,
        &[
            "sub",
            "cli/#",
            "--key",
            &key,
            "--json",
            "--count",
            "1",
            "--client-id",
            "reader",
        ],
    );
    let published = run(
        &served,
        &[
            "pub",
            "cli/greeting",
            r#"{"hello":"world"}"#,
            "--key",
            &key,
            "--qos",
            "1",
        ],
    );
    assert!(published.status.success(), "{published:?}");
    let stored = stdout(&published);
    assert!(stored.contains("stored at offset"), "{stored}");
    let mid = stored
        .trim()
        .rsplit("(mid ")
        .next()
        .and_then(|rest| rest.strip_suffix(')'))
        .expect("pub prints the message id")
        .to_owned();
    let line: Value = serde_json::from_str(finish(sub).trim()).unwrap();
    // The reader acknowledged on its way out; the admin API tracks the copy.
    let status = run(&served, &["session", "message", "demo", &mid]);
    let status = stdout(&status);
    assert!(
        status.contains(&format!("{mid} on cli/greeting from")),
        "{status}"
    );
    assert!(status.contains("reader: "), "{status}");
    let unknown = run(&served, &["session", "message", "demo", "no-such-mid"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("unknown_message_id"),
        "{unknown:?}"
    );
    assert_eq!(line["topic"], "cli/greeting");
    assert_eq!(line["encrypted"], true);
    assert_eq!(
        line["data"],
        serde_json::json!({"json": {"hello": "world"}})
    );

    // publish_with_ack: one subscriber succeeds, one answers with an error.
    let good = start_sub(
        &served,
        &["sub", "jobs", "--client-id", "good", "--count", "1"],
    );
    let bad = start_sub(
        &served,
        &[
            "sub",
            "jobs",
            "--client-id",
            "bad",
            "--count",
            "1",
            "--fail-with",
            "no space left",
        ],
    );
    let acked = run(
        &served,
        &["pub", "jobs", "resize", "--ack", "--timeout", "5"],
    );
    let text = stdout(&acked);
    assert!(text.contains("good: ok"), "{text}");
    assert!(
        text.contains("bad: error [handler_failed] no space left"),
        "{text}"
    );
    assert!(
        text.contains("complete: 2 of 2 subscribers answered"),
        "{text}"
    );
    assert!(
        !acked.status.success(),
        "an error response must fail the command"
    );
    finish(good);
    finish(bad);
}

#[test]
fn a_second_server_on_the_same_store_file_is_refused_in_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.db");
    let store = path.to_str().unwrap();
    let _first = serve_with(&["--store", store]);
    let second = Command::new(BIN)
        .args([
            "serve",
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--store",
            store,
        ])
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("sealbus: error: ") && err.contains("is in use by another sealbus server"),
        "{err}"
    );
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
}

#[test]
fn errors_name_their_protocol_code() {
    let served = serve();
    let wrong = sealbus(&served, &["pub", "a", "1"])
        .env("SEALBUS_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("auth_failed"), "{err}");

    let wildcard = run(&served, &["pub", "a/+", "1"]);
    assert!(!wildcard.status.success());
    assert!(String::from_utf8_lossy(&wildcard.stderr).contains("invalid_topic"));

    let bad_key = run(&served, &["pub", "a", "1", "--key", "not-a-key"]);
    assert!(!bad_key.status.success());
    assert!(String::from_utf8_lossy(&bad_key.stderr).contains("bad_base64"));
}

#[test]
fn session_commands_drive_the_admin_api() {
    let served = serve();
    let created = run(
        &served,
        &[
            "session",
            "create",
            "tenant-a",
            "--password",
            "pw",
            "--set",
            "retry_interval_ms=2000",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    let list = stdout(&run(&served, &["session", "list"]));
    assert!(list.contains("tenant-a") && list.contains("demo"), "{list}");
    let shown: Value = serde_json::from_str(&stdout(&run(
        &served,
        &["session", "show", "tenant-a", "--json"],
    )))
    .unwrap();
    assert_eq!(shown["name"], "tenant-a");
    let again = run(
        &served,
        &["session", "create", "tenant-a", "--password", "pw"],
    );
    assert!(!again.status.success());
    assert!(
        run(&served, &["session", "delete", "tenant-a"])
            .status
            .success()
    );
    let gone = run(&served, &["session", "show", "tenant-a"]);
    assert!(!gone.status.success());
    let gone = String::from_utf8_lossy(&gone.stderr);
    assert!(
        gone.contains("HTTP 404") && gone.contains("[no_such_session 2005]"),
        "{gone}"
    );

    let unauthorised = sealbus(&served, &["session", "list"])
        .env("SEALBUS_ADMIN_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!unauthorised.status.success());
    assert!(String::from_utf8_lossy(&unauthorised.stderr).contains("401"));
}

/// The test certificates: a test CA, and its leaf for `localhost` and 127.0.0.1 (tests/tls).
const TLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls");

#[test]
fn over_tls_the_server_client_and_admin_commands_check_the_certificate() {
    let (cert, key) = (format!("{TLS}/server.pem"), format!("{TLS}/server.key"));
    // The server reads copies, replaced by a renewed certificate at the end.
    let dir = tempfile::tempdir().unwrap();
    let (live_cert, live_key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let served = serve_with(&[
        "--memory",
        "--tls-cert",
        live_cert.to_str().unwrap(),
        "--tls-key",
        live_key.to_str().unwrap(),
    ]);
    assert!(served.url.starts_with("wss://127.0.0.1:"), "{}", served.url);
    assert!(served.http.starts_with("https://"), "{}", served.http);
    // By name as well as by address: the certificate names both.
    let port = served
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/ws");
    let wss = format!("wss://localhost:{port}/ws");
    let ca = format!("{TLS}/ca.pem");
    let https = served.http.clone();
    let over_tls = |args: &[&str]| {
        let mut command = sealbus(&served, args);
        command
            .env("SEALBUS_URL", &wss)
            .env("SEALBUS_ADMIN_URL", &https)
            .env("SSL_CERT_FILE", &ca);
        command
    };

    // A peer that connects and never starts its handshake does not keep others out.
    let silent = std::net::TcpStream::connect(
        served
            .url
            .trim_start_matches("wss://")
            .trim_end_matches("/ws"),
    )
    .unwrap();
    let sub = start_sub_with(over_tls(&["sub", "tls/#", "--count", "1"]));
    let published = over_tls(&["pub", "tls/hello", "over TLS", "--qos", "1"])
        .output()
        .unwrap();
    assert!(published.status.success(), "{published:?}");
    let line = finish(sub);
    assert!(
        line.contains("tls/hello") && line.contains("over TLS"),
        "{line}"
    );
    drop(silent);
    let sessions = over_tls(&["session", "list"]).output().unwrap();
    assert!(sessions.status.success(), "{sessions:?}");
    assert!(stdout(&sessions).contains("demo"), "{sessions:?}");

    // Without the test CA the certificate is not trusted, and the error says so.
    let untrusted = sealbus(&served, &["pub", "tls/hello", "x"])
        .env("SEALBUS_URL", &wss)
        .env("SSL_CERT_FILE", "/nonexistent/ca.pem")
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    let err = String::from_utf8_lossy(&untrusted.stderr).to_lowercase();
    assert!(err.contains("certificate"), "{err}");
    let untrusted_admin = sealbus(&served, &["session", "list"])
        .env("SEALBUS_ADMIN_URL", &https)
        .env("SSL_CERT_FILE", &cert)
        .output()
        .unwrap();
    assert!(!untrusted_admin.status.success());
    let err = String::from_utf8_lossy(&untrusted_admin.stderr).to_lowercase();
    assert!(err.contains("tls with 127.0.0.1"), "{err}");

    // A plain-text client gets nowhere, and the server goes on.
    let plain = sealbus(&served, &["pub", "tls/hello", "x"])
        .env("SEALBUS_URL", served.url.replacen("wss", "ws", 1))
        .output()
        .unwrap();
    assert!(!plain.status.success());
    let again = over_tls(&["pub", "tls/hello", "still up"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{again:?}");

    // A renewal: new files, SIGHUP, and new connections get the new certificate.
    let renewed_ca = format!("{TLS}/renewed-ca.pem");
    let trusting_renewed = || {
        sealbus(&served, &["pub", "tls/hello", "renewed"])
            .env("SEALBUS_URL", &wss)
            .env("SSL_CERT_FILE", &renewed_ca)
            .output()
            .unwrap()
    };
    assert!(!trusting_renewed().status.success(), "not renewed yet");
    std::fs::copy(format!("{TLS}/renewed.pem"), &live_cert).unwrap();
    std::fs::copy(format!("{TLS}/renewed.key"), &live_key).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = trusting_renewed();
        if attempt.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "never renewed: {attempt:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !over_tls(&["pub", "tls/hello", "old CA"])
            .output()
            .unwrap()
            .status
            .success(),
        "the old certificate is gone"
    );
}
