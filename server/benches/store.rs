//! Store throughput for the writes of QoS 1 traffic: per publish, one batch of 1 `Message` (a
//! 128-byte payload) + 10 `Copy` (ten persistent subscribers), then 10 batches of 1 `DropCopy`
//! as their acks come back; every 100 publishes a `TrimHistory` keeps 1 000 messages of history.
//! Criterion's throughput is in writes ("elem/s" = writes/s, 21 per publish).
//!
//! * `pipelined`: acks trail their publish by 64 publishes and nothing waits, as when many
//!   publishes are in flight; the writer thread commits whatever is queued in one transaction
//!   (many `Copy`/`DropCopy` pairs then cancel out inside a group). Timed until `flush` returns.
//! * `separate_groups`: all the publishes, `flush`, then all the acks, `flush`: every copy is
//!   written and then deleted, the pre-pass has nothing to cancel.
//! * `one_at_a_time`: each publish waits for its batch's commit, then its acks for theirs: two
//!   commits (two `fsync`s with `full`) per publish, the latency-bound worst case.
//!
//! For SQLite with `full` and `normal` sync, and the in-memory store as a reference:
//! `cargo bench -p sealbus-server --bench store -- --warm-up-time 1 --measurement-time 3`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sealbus::protocol::{Payload, Qos};
use sealbus_server::store::{
    CopyRef, MemoryStore, MessageKey, SqliteStore, Store, StoredMessage, SyncMode, Write,
};

const SUBSCRIBERS: usize = 10;
const IN_FLIGHT: u64 = 64;
const HISTORY: u64 = 1_000;
const WRITES_PER_PUBLISH: u64 = 1 + 2 * SUBSCRIBERS as u64;

/// Writes of the `offset`th publish.
fn publish(offset: u64) -> Vec<Write> {
    let mut writes = Vec::with_capacity(SUBSCRIBERS + 2);
    writes.push(Write::Message(Arc::new(StoredMessage {
        key: MessageKey::Stream(offset),
        topic: "sensors/room-1/temperature".into(),
        data: Payload::Bytes(vec![0x42; 128]),
        from: "publisher-1".into(),
        ts: 1_700_000_000_000 + offset,
        mid: format!("m-{offset}"),
        qos: Qos::AtLeastOnce,
        notify_dead: false,
    })));
    for subscriber in 0..SUBSCRIBERS {
        writes.push(Write::Copy {
            client_id: format!("subscriber-{subscriber}"),
            copy: CopyRef {
                key: MessageKey::Stream(offset),
                attempts: 1,
            },
        });
    }
    if offset.is_multiple_of(100) && offset > HISTORY {
        writes.push(Write::TrimHistory {
            offset: offset - HISTORY,
        });
    }
    writes
}

fn ack(subscriber: usize, offset: u64) -> Vec<Write> {
    vec![Write::DropCopy {
        client_id: format!("subscriber-{subscriber}"),
        key: MessageKey::Stream(offset),
    }]
}

/// Queues `count` publishes and their acks (trailing by `IN_FLIGHT`), then waits for all.
fn pipelined(store: &dyn Store, next: &mut u64, count: u64) -> Duration {
    let start = Instant::now();
    let first = *next;
    for offset in first..first + count {
        store.write("bench", publish(offset), None);
        if offset >= first + IN_FLIGHT {
            for subscriber in 0..SUBSCRIBERS {
                store.write("bench", ack(subscriber, offset - IN_FLIGHT), None);
            }
        }
    }
    for offset in (first + count).saturating_sub(IN_FLIGHT).max(first)..first + count {
        for subscriber in 0..SUBSCRIBERS {
            store.write("bench", ack(subscriber, offset), None);
        }
    }
    store.flush().unwrap();
    *next += count;
    start.elapsed()
}

/// Queues `count` publishes and waits for them, then their acks and waits again.
fn separate_groups(store: &dyn Store, next: &mut u64, count: u64) -> Duration {
    let start = Instant::now();
    let first = *next;
    for offset in first..first + count {
        store.write("bench", publish(offset), None);
    }
    store.flush().unwrap();
    for offset in first..first + count {
        for subscriber in 0..SUBSCRIBERS {
            store.write("bench", ack(subscriber, offset), None);
        }
    }
    store.flush().unwrap();
    *next += count;
    start.elapsed()
}

/// Writes and waits for each publish, then for its acks.
fn one_at_a_time(store: &dyn Store, next: &mut u64, count: u64) -> Duration {
    let start = Instant::now();
    for offset in *next..*next + count {
        let (tx, rx) = mpsc::sync_channel(1);
        let done = tx.clone();
        store.write(
            "bench",
            publish(offset),
            Some(Box::new(move |r| done.send(r.is_ok()).unwrap())),
        );
        assert!(rx.recv().unwrap());
        for subscriber in 0..SUBSCRIBERS {
            let on_commit = (subscriber + 1 == SUBSCRIBERS).then(|| {
                let done = tx.clone();
                Box::new(move |r: Result<(), &_>| done.send(r.is_ok()).unwrap()) as _
            });
            store.write("bench", ack(subscriber, offset), on_commit);
        }
        assert!(rx.recv().unwrap());
    }
    *next += count;
    start.elapsed()
}

/// A new store of the given kind (SQLite files go in `dir`).
fn open(kind: &str, dir: &Path) -> Box<dyn Store> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static FILES: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        "{kind}-{}.db",
        FILES.fetch_add(1, Ordering::Relaxed)
    ));
    match kind {
        "sqlite_full" => Box::new(SqliteStore::open(&path, SyncMode::Full).unwrap()),
        "sqlite_normal" => Box::new(SqliteStore::open(&path, SyncMode::Normal).unwrap()),
        _ => Box::new(MemoryStore::new()),
    }
}

fn stores(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("store_qos1");
    group.throughput(Throughput::Elements(WRITES_PER_PUBLISH));
    group.sample_size(10);
    for kind in ["sqlite_full", "sqlite_normal", "memory"] {
        let store = open(kind, dir.path());
        let mut next = 1;
        group.bench_function(format!("{kind}/pipelined"), |b| {
            b.iter_custom(|iters| pipelined(store.as_ref(), &mut next, iters))
        });
        drop(store);
        let store = open(kind, dir.path());
        let mut next = 1;
        group.bench_function(format!("{kind}/separate_groups"), |b| {
            b.iter_custom(|iters| separate_groups(store.as_ref(), &mut next, iters))
        });
        drop(store);
        let store = open(kind, dir.path());
        let mut next = 1;
        group.bench_function(format!("{kind}/one_at_a_time"), |b| {
            b.iter_custom(|iters| one_at_a_time(store.as_ref(), &mut next, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, stores);
criterion_main!(benches);
