//! Tests of what only [`SqliteStore`] has: a file that outlives the process, the writer thread
//! and its group commit, the `Copy`/`DropCopy` pre-pass, and errors on open. The semantics
//! shared with `MemoryStore` are in `store::conformance`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::Connection;

use super::writer::{Job, Op, Writer, plan};
use super::{SqliteStore, SyncMode, load, schema};
use crate::store::conformance::{assert_same, message, record};
use crate::store::{
    CopyRef, MemoryStore, MessageKey, OnCommit, Retained, Store, StoreError, StoredClient, Write,
};

fn stream(offset: u64) -> Write {
    Write::Message(message(MessageKey::Stream(offset)))
}

fn copy(client: &str, key: MessageKey) -> Write {
    Write::Copy {
        client_id: client.into(),
        copy: CopyRef { key, attempts: 1 },
    }
}

fn drop_copy(client: &str, key: MessageKey) -> Write {
    Write::DropCopy {
        client_id: client.into(),
        key,
    }
}

fn open(path: &std::path::Path) -> SqliteStore {
    SqliteStore::open(path, SyncMode::Full).unwrap()
}

#[test]
fn data_survives_drop_and_reopen_and_drop_drains_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/store.db");
    let committed = Arc::new(AtomicUsize::new(0));
    {
        let store = open(&path);
        store.save_session(&record("s"));
        store.write("s", vec![Write::Stream { epoch: "e".into() }], None);
        for offset in 1..=500 {
            let committed = committed.clone();
            store.write(
                "s",
                vec![stream(offset)],
                Some(Box::new(move |result| {
                    assert!(result.is_ok());
                    committed.fetch_add(1, Ordering::SeqCst);
                })),
            );
        }
        // No flush: dropping the store commits the queue and runs every callback first.
    }
    assert_eq!(committed.load(Ordering::SeqCst), 500);
    assert!(path.exists(), "the parent directories were created");
    let store = open(&path);
    assert_eq!(store.sessions(), [record("s")]);
    let data = store.load("s").unwrap();
    assert_eq!(data.history.len(), 500);
    assert_eq!(data.stream.unwrap().last_offset, 500);
    assert_eq!(data.history[41], message(MessageKey::Stream(42)));
}

#[cfg(unix)]
#[test]
fn the_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open(&path);
    store.save_session(&record("s"));
    for name in ["store.db", "store.db-wal", "store.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} has mode {mode:o}");
    }
}

#[test]
fn on_commit_runs_once_a_fresh_connection_sees_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open(&path);
    let (seen, seen_rx) = mpsc::channel();
    for offset in 1..=50u64 {
        let path = path.clone();
        let seen = seen.clone();
        store.write(
            "s",
            vec![stream(offset)],
            Some(Box::new(move |result| {
                assert!(result.is_ok());
                let fresh = Connection::open(&path).unwrap();
                let count: i64 = fresh
                    .query_row(
                        "SELECT count(*) FROM messages WHERE session = 's' AND key = ?1",
                        [offset as i64],
                        |row| row.get(0),
                    )
                    .unwrap();
                seen.send((offset, count)).unwrap();
            })),
        );
    }
    drop(seen);
    let seen: Vec<_> = seen_rx.iter().collect();
    assert_eq!(seen.len(), 50);
    for (offset, count) in seen {
        assert_eq!(
            count, 1,
            "message {offset} is visible when its callback runs"
        );
    }
}

#[test]
fn callbacks_run_in_write_order_across_concurrent_writers() {
    const THREADS: usize = 8;
    const BATCHES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir.path().join("store.db")));
    // Each write takes a ticket under the same lock as the call (as the broker writes under a
    // session's lock), so the tickets are the queue order.
    let ticket = Arc::new(Mutex::new(0usize));
    let order = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, ticket, order) = (store.clone(), ticket.clone(), order.clone());
            std::thread::spawn(move || {
                for b in 0..BATCHES {
                    let mut next = ticket.lock().unwrap();
                    let mine = *next;
                    *next += 1;
                    let order = order.clone();
                    let session = format!("s{t}");
                    let writes = vec![
                        stream(b as u64 + 1),
                        copy("c", MessageKey::Stream(b as u64 + 1)),
                    ];
                    store.write(
                        &session,
                        writes,
                        Some(Box::new(move |result| {
                            assert!(result.is_ok());
                            order.lock().unwrap().push(mine);
                        })),
                    );
                    drop(next);
                    if b % 50 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    store.flush().unwrap();
    let order = order.lock().unwrap();
    assert_eq!(*order, (0..THREADS * BATCHES).collect::<Vec<_>>());
    for t in 0..THREADS {
        let data = store.load(&format!("s{t}")).unwrap();
        assert_eq!(data.history.len(), BATCHES);
        assert_eq!(data.clients[0].1.len(), BATCHES);
    }
}

#[test]
fn the_backlog_counts_writes_until_their_group_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store.db"));
    store.save_session(&record("s"));
    let backlog = store.backlog().expect("the SQLite store queues its writes");
    backlog.set_limit(4);
    assert_eq!(backlog.queued(), 0);
    // Hold the writer inside a callback: what is written meanwhile stays queued.
    let (started, started_rx) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    store.write(
        "s",
        vec![Write::Stream { epoch: "e".into() }],
        Some(Box::new(move |_| {
            let _ = started.send(());
            let _ = release_rx.recv();
        })),
    );
    started_rx.recv().unwrap();
    store.write("s", vec![stream(1), stream(2)], None);
    assert!(!backlog.is_full(), "{} queued", backlog.queued());
    store.write("s", vec![stream(3), stream(4)], None);
    assert!(backlog.is_full(), "{} queued", backlog.queued());
    release.send(()).unwrap();
    store.flush().unwrap();
    assert_eq!(backlog.queued(), 0, "committed writes leave the backlog");
    assert!(
        MemoryStore::new().backlog().is_none(),
        "the memory store has none"
    );
}

#[test]
fn a_store_file_is_used_by_one_server_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.db");
    let first = open(&path);
    match SqliteStore::open(&path, SyncMode::Full) {
        Err(StoreError::Locked(locked)) => {
            assert_eq!(locked, path.display().to_string());
            let text = StoreError::Locked(locked).to_string();
            assert!(text.contains("in use by another sealbus server"), "{text}");
        }
        Ok(_) => panic!("a second store opened {}", path.display()),
        Err(other) => panic!("unexpected error {other}"),
    }
    first.write("s", vec![stream(1)], None);
    drop(first);
    let again = open(&path);
    assert_eq!(again.load("s").unwrap().history.len(), 1, "nothing lost");
}

#[test]
fn open_refuses_what_is_not_a_sealbus_store() {
    let dir = tempfile::tempdir().unwrap();
    let message = |path: &std::path::Path| match SqliteStore::open(path, SyncMode::Full) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(StoreError::Database(message)) => message,
        Err(other) => panic!("unexpected error {other}"),
    };

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let text = message(&garbage);
    assert!(text.contains("not a database"), "{text}");
    assert!(text.contains("garbage.db"), "names the file: {text}");
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        vec![0x5a; 8192],
        "left as it was"
    );

    let foreign = dir.path().join("foreign.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT)")
        .unwrap();
    let text = message(&foreign);
    assert!(text.contains("another application"), "{text}");

    let newer = dir.path().join("newer.db");
    drop(open(&newer));
    Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let text = message(&newer);
    assert!(text.contains("schema version 99"), "{text}");

    let text = message(dir.path());
    assert!(!text.is_empty(), "a directory is no store");
}

#[test]
fn a_failed_group_fails_its_callbacks_rolls_back_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut conn = Connection::open(&path).unwrap();
    schema::prepare_writer(&mut conn, SyncMode::Full).unwrap();
    let mut writer = Writer::new(conn, Arc::default());
    // Another connection removes a table under the writer: writes to it now fail.
    Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE retained")
        .unwrap();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let job = |writes: Vec<Write>, tag: &'static str| {
        let outcomes = outcomes.clone();
        let done: OnCommit = Box::new(move |result| {
            outcomes
                .lock()
                .unwrap()
                .push((tag, result.map_err(|e| e.to_string())));
        });
        Job {
            op: Op::Write {
                session: "s".into(),
                writes,
            },
            done: Some(done),
        }
    };
    let retain = Write::Retained {
        topic: "t".into(),
        message: Some(Retained {
            topic: "t".into(),
            data: sealbus::protocol::Payload::Json(serde_json::json!(1)),
            from: "p".into(),
            ts: 1,
            offset: 1,
            mid: "m".into(),
        }),
    };
    let group = vec![job(vec![stream(1)], "a"), job(vec![retain], "b")];
    let result = writer.commit(&group);
    assert!(result.is_err());
    super::writer::finish(group, &result);
    let group = vec![job(vec![stream(2)], "c")];
    let result = writer.commit(&group);
    assert!(result.is_ok());
    super::writer::finish(group, &result);

    let outcomes = outcomes.lock().unwrap();
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0].0, "a");
    assert!(outcomes[0].1.as_ref().unwrap_err().contains("retained"));
    assert!(outcomes[1].1.is_err());
    assert_eq!(outcomes[2], ("c", Ok(())));
    let mut reader = Connection::open(&path).unwrap();
    let data = load::session(&mut reader, "s");
    // Reading fails too (no retained table), so look at the messages directly.
    assert!(data.is_err());
    let keys: Vec<i64> = reader
        .prepare("SELECT key FROM messages ORDER BY key")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(keys, [2], "the failed group's message 1 was rolled back");
}

#[test]
fn a_stopped_writer_fails_callbacks_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir.path().join("store.db"));
    drop(store.jobs.take());
    let (tx, rx) = mpsc::channel();
    store.write(
        "s",
        vec![stream(1)],
        Some(Box::new(move |result| {
            tx.send(matches!(result, Err(StoreError::Stopped))).unwrap();
        })),
    );
    assert!(rx.recv().unwrap());
    assert!(matches!(store.flush(), Err(StoreError::Stopped)));
}

#[test]
fn the_last_handle_may_drop_inside_a_callback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store: Arc<dyn Store> = Arc::new(open(&path));
    let (tx, rx) = mpsc::channel();
    let held = store.clone();
    store.write(
        "s",
        vec![stream(1)],
        Some(Box::new(move |result| {
            assert!(result.is_ok());
            // Waiting methods called on the writer thread queue without waiting.
            held.save_session(&record("from-callback"));
            held.write("s", vec![stream(2)], None);
            drop(held);
            tx.send(()).unwrap();
        })),
    );
    drop(store);
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the callback ran");
    // The writer finishes on its own once its queue is empty; the file then has both writes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let store = open(&path);
        let data = store.load("s").unwrap();
        if data.history.len() == 2 {
            assert_eq!(store.sessions(), [record("from-callback")]);
            break;
        }
        drop(store);
        assert!(
            std::time::Instant::now() < deadline,
            "the second write landed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_pre_pass_cancels_only_unobserved_copy_drop_pairs() {
    let job = |session: &str, writes: Vec<Write>| Job {
        op: Op::Write {
            session: session.into(),
            writes,
        },
        done: None,
    };
    let s1 = MessageKey::Stream(1);
    let d1 = MessageKey::Direct(1);
    let cancelled = |group: &[Job]| {
        let plan = plan(group);
        assert_eq!(plan.skip_copy.len(), plan.paired_drop.len());
        let mut pairs: Vec<_> = plan.skip_copy.into_iter().collect();
        pairs.sort_unstable();
        pairs
    };

    // The QoS 1 pattern: a message, copies for three clients, then their acks.
    let group = vec![
        job(
            "s",
            vec![stream(1), copy("a", s1), copy("b", s1), copy("c", s1)],
        ),
        job("s", vec![drop_copy("b", s1)]),
        job("s", vec![drop_copy("a", s1)]),
    ];
    assert_eq!(cancelled(&group), [(0, 1), (0, 2)]);

    // Another session's, another client's, another key's drops do not pair.
    let group = vec![
        job("s", vec![copy("a", s1)]),
        job("t", vec![drop_copy("a", s1)]),
        job(
            "s",
            vec![drop_copy("b", s1), drop_copy("a", MessageKey::Stream(2))],
        ),
    ];
    assert!(cancelled(&group).is_empty());

    // A trim sees stream copies; a dropped client sees its own copies.
    let group = vec![
        job("s", vec![copy("a", s1), copy("b", s1)]),
        job("s", vec![Write::TrimHistory { offset: 5 }]),
        job("s", vec![drop_copy("a", s1)]),
    ];
    assert!(cancelled(&group).is_empty());
    let group = vec![
        job("s", vec![copy("a", s1), copy("b", s1)]),
        job(
            "s",
            vec![Write::DropClient {
                client_id: "a".into(),
            }],
        ),
        job("s", vec![drop_copy("a", s1), drop_copy("b", s1)]),
    ];
    assert_eq!(cancelled(&group), [(0, 1)], "b's pair is unobserved");

    // Direct copies: another client's drop of the key, or any dropped client, observes them.
    let group = vec![
        job("s", vec![copy("a", d1), copy("b", d1)]),
        job("s", vec![drop_copy("b", d1)]),
        job("s", vec![drop_copy("a", d1)]),
    ];
    assert_eq!(cancelled(&group), [(0, 1)], "a's copy was seen by b's drop");
    let group = vec![
        job("s", vec![copy("a", d1)]),
        job(
            "s",
            vec![Write::DropClient {
                client_id: "z".into(),
            }],
        ),
        job("s", vec![drop_copy("a", d1)]),
    ];
    assert!(cancelled(&group).is_empty());
    let group = vec![
        job("s", vec![copy("a", d1), Write::TrimHistory { offset: 9 }]),
        job("s", vec![drop_copy("a", d1)]),
    ];
    assert_eq!(
        cancelled(&group),
        [(0, 0)],
        "a trim leaves direct copies alone"
    );

    // Deleting the session makes its pending copies real (and moot).
    let group = vec![
        job("s", vec![copy("a", s1)]),
        Job {
            op: Op::DeleteSession("s".into()),
            done: None,
        },
        job("s", vec![drop_copy("a", s1)]),
    ];
    assert!(cancelled(&group).is_empty());
}

/// A small deterministic generator (xorshift64*), so that failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn random_write(rng: &mut Rng) -> Write {
    let clients = ["a", "b", "c"];
    let key = |rng: &mut Rng| {
        if rng.below(2) == 0 {
            MessageKey::Stream(1 + rng.below(6))
        } else {
            MessageKey::Direct(1 + rng.below(3))
        }
    };
    match rng.below(100) {
        0..=2 => Write::Stream {
            epoch: format!("e{}", rng.below(1000)),
        },
        3..=14 => Write::Message(message(key(rng))),
        15..=19 => Write::TrimHistory {
            offset: rng.below(8),
        },
        20..=22 => Write::Retained {
            topic: rng.pick(&["x", "y"]).into(),
            message: (rng.below(2) == 0).then(|| Retained {
                topic: "x".into(),
                data: sealbus::protocol::Payload::Bytes(vec![rng.below(255) as u8]),
                from: "p".into(),
                ts: rng.next(),
                offset: rng.next(),
                mid: "m".into(),
            }),
        },
        23..=26 => Write::Client(StoredClient {
            client_id: rng.pick(&clients).into(),
            filters: vec![format!("f{}", rng.below(3))],
            expires_at: (rng.below(2) == 0).then(|| rng.next()),
        }),
        27..=29 => Write::DropClient {
            client_id: rng.pick(&clients).into(),
        },
        30..=64 => Write::Copy {
            client_id: rng.pick(&clients).into(),
            copy: CopyRef {
                key: key(rng),
                attempts: rng.below(5) as u32,
            },
        },
        _ => drop_copy(rng.pick(&clients), key(rng)),
    }
}

/// Random writes, cut into random batches and random groups, give the same loads from the
/// SQLite writer (with its pre-pass) as from `MemoryStore` applying them one by one.
#[test]
fn random_groups_match_the_memory_store() {
    let sessions = ["s1", "s2"];
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut conn = Connection::open(&path).unwrap();
        schema::prepare_writer(&mut conn, SyncMode::Normal).unwrap();
        let mut writer = Writer::new(conn, Arc::default());
        let mut reader = Connection::open(&path).unwrap();
        let memory = MemoryStore::new();
        let mut cancelled = 0;
        for round in 0..120 {
            let mut group = Vec::new();
            for _ in 0..1 + rng.below(12) {
                let session = rng.pick(&sessions);
                let op = match rng.below(60) {
                    0 => Op::DeleteSession(session.into()),
                    1 => Op::SaveSession(Box::new(record(session))),
                    _ => {
                        let writes = (0..1 + rng.below(6))
                            .map(|_| random_write(&mut rng))
                            .collect();
                        Op::Write {
                            session: session.into(),
                            writes,
                        }
                    }
                };
                match &op {
                    Op::Write { session, writes } => memory.write(session, writes.clone(), None),
                    Op::DeleteSession(name) => memory.delete_session(name),
                    Op::SaveSession(record) => memory.save_session(record),
                    Op::Barrier => {}
                }
                group.push(Job { op, done: None });
            }
            cancelled += plan(&group).skip_copy.len();
            writer.commit(&group).unwrap();
            for session in sessions {
                let expected = memory.load(session).unwrap();
                let actual = load::session(&mut reader, session).unwrap();
                assert_same(&expected, &actual, &format!("seed {seed}, round {round}"));
            }
            assert_eq!(load::sessions(&reader).unwrap(), memory.sessions());
        }
        assert!(
            cancelled > 0,
            "seed {seed}: the pre-pass cancelled some pairs"
        );
    }
}

/// A server built over a reopened store gets back the sessions created at runtime.
#[test]
fn a_server_gets_its_sessions_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let config = crate::config::SessionConfig {
        name: "runtime".into(),
        password: Some("pw".into()),
        ..Default::default()
    };
    {
        let server = crate::Server::builder()
            .store(Arc::new(open(&path)))
            .build()
            .unwrap();
        server.create_session(&config).unwrap();
    }
    let server = crate::Server::builder()
        .store(Arc::new(open(&path)))
        .build()
        .unwrap();
    let session = server.broker().session("runtime").unwrap();
    let record = session.record();
    assert!(crate::auth::verify_password(
        "pw",
        record.password_hash.as_deref().unwrap()
    ));
}

/// A configured session already in the store takes the configured password and settings; an
/// unchanged password keeps its stored hash, and a generated token secret is kept.
#[test]
fn configured_sessions_take_effect_over_stored_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let configured = |password: &str, max_retries: u32| crate::config::SessionConfig {
        name: "cfg".into(),
        password: Some(password.into()),
        settings: crate::config::SessionSettings {
            max_retries,
            ..Default::default()
        },
        ..Default::default()
    };
    let start = |config: crate::config::SessionConfig| {
        let server = crate::Server::builder()
            .store(Arc::new(open(&path)))
            .session(config)
            .build()
            .unwrap();
        server.broker().session("cfg").unwrap().record()
    };
    let first = start(configured("a", 1));
    let same = start(configured("a", 1));
    assert_eq!(same, first, "nothing changed, nothing rehashed");
    let changed = start(configured("b", 2));
    assert!(crate::auth::verify_password(
        "b",
        changed.password_hash.as_deref().unwrap()
    ));
    assert_eq!(changed.settings.max_retries, 2);
    assert_eq!(changed.token_secret, first.token_secret);
}
