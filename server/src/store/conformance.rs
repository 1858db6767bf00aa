//! Conformance scenarios every [`Store`] must pass, run against [`MemoryStore`] and
//! [`SqliteStore`] alike: each write's semantics, history trimming, the lifetime of direct
//! messages, stream restarts, session definitions and `delete_session`, and callback order.
//!
//! A scenario gets a [`Subject`]: it makes fresh stores and "reopens" one (the same object for
//! `MemoryStore`; for `SqliteStore`, drop it and open the file again), and checks what `load`
//! returns before and after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use sealbus::protocol::{Payload, Qos};

use super::{
    CopyRef, MemoryStore, MessageKey, Retained, SessionData, SessionRecord, SqliteStore, Store,
    StoredClient, StoredMessage, StreamState, SyncMode, Write,
};
use crate::config::SessionSettings;

/// What a scenario runs on.
pub(crate) trait Subject {
    /// A new, empty store.
    fn fresh(&self) -> Arc<dyn Store>;
    /// The store `store` as a restarted process would find it (the last one `fresh` made).
    fn reopen(&self, store: Arc<dyn Store>) -> Arc<dyn Store>;
}

/// [`MemoryStore`]: reopening keeps the same object.
pub(crate) struct Memory;

impl Subject for Memory {
    fn fresh(&self) -> Arc<dyn Store> {
        Arc::new(MemoryStore::new())
    }

    fn reopen(&self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        store
    }
}

/// [`SqliteStore`] in a temporary directory: each fresh store is a new file.
pub(crate) struct Sqlite {
    dir: tempfile::TempDir,
    sync: SyncMode,
    files: Mutex<u32>,
}

impl Sqlite {
    pub(crate) fn new(sync: SyncMode) -> Self {
        Sqlite {
            dir: tempfile::tempdir().unwrap(),
            sync,
            files: Mutex::new(0),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        let files = *self.files.lock().unwrap();
        self.dir.path().join(format!("store-{files}.db"))
    }
}

impl Subject for Sqlite {
    fn fresh(&self) -> Arc<dyn Store> {
        *self.files.lock().unwrap() += 1;
        Arc::new(SqliteStore::open(&self.path(), self.sync).unwrap())
    }

    fn reopen(&self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "the scenario still holds the store"
        );
        drop(store);
        Arc::new(SqliteStore::open(&self.path(), self.sync).unwrap())
    }
}

/// A named scenario.
type Scenario = (&'static str, fn(&dyn Subject));

/// Runs every scenario on `subject`.
pub(crate) fn run_all(subject: &dyn Subject) {
    let scenarios: &[Scenario] = &[
        ("unknown_session_is_empty", unknown_session_is_empty),
        ("every_write", every_write),
        (
            "stream_messages_raise_last_offset",
            stream_messages_raise_last_offset,
        ),
        (
            "a_reset_in_the_same_batch_sets_the_offset_back",
            a_reset_in_the_same_batch_sets_the_offset_back,
        ),
        (
            "a_message_replaces_one_with_its_key",
            a_message_replaces_one_with_its_key,
        ),
        (
            "trim_keeps_what_copies_refer_to",
            trim_keeps_what_copies_refer_to,
        ),
        ("direct_message_lifetime", direct_message_lifetime),
        (
            "copies_create_clients_and_update",
            copies_create_clients_and_update,
        ),
        (
            "drop_client_forgets_its_copies",
            drop_client_forgets_its_copies,
        ),
        ("stream_restart", stream_restart),
        ("retained_set_replace_clear", retained_set_replace_clear),
        ("session_records", session_records),
        (
            "delete_session_removes_everything",
            delete_session_removes_everything,
        ),
        ("callbacks_run_in_order", callbacks_run_in_order),
        ("copy_then_drop_in_one_batch", copy_then_drop_in_one_batch),
    ];
    for (name, scenario) in scenarios {
        eprintln!("conformance: {name}");
        scenario(subject);
    }
}

/// A message with `key` on topic `t`.
pub(crate) fn message(key: MessageKey) -> Arc<StoredMessage> {
    let (topic, data) = match key {
        MessageKey::Stream(offset) => (
            "t/a".to_owned(),
            Payload::Json(serde_json::json!({"z": offset, "a": [1.5, "x", null]})),
        ),
        MessageKey::Direct(seq) => (format!("@c{seq}"), Payload::Sealed(vec![seq as u8; 40])),
    };
    Arc::new(StoredMessage {
        key,
        topic,
        data,
        from: "publisher".into(),
        ts: 1_700_000_000_000 + key.to_i64().unsigned_abs(),
        mid: format!("mid-{key:?}"),
        qos: Qos::AtLeastOnce,
        notify_dead: matches!(key, MessageKey::Direct(_)),
    })
}

fn stream(offset: u64) -> Write {
    Write::Message(message(MessageKey::Stream(offset)))
}

fn direct(seq: u64) -> Write {
    Write::Message(message(MessageKey::Direct(seq)))
}

fn copy(client: &str, key: MessageKey, attempts: u32) -> Write {
    Write::Copy {
        client_id: client.into(),
        copy: CopyRef { key, attempts },
    }
}

fn drop_copy(client: &str, key: MessageKey) -> Write {
    Write::DropCopy {
        client_id: client.into(),
        key,
    }
}

fn client(id: &str, filters: &[&str], expires_at: Option<u64>) -> StoredClient {
    StoredClient {
        client_id: id.into(),
        filters: filters.iter().map(|f| (*f).to_owned()).collect(),
        expires_at,
    }
}

fn retained(topic: &str, offset: u64) -> Retained {
    Retained {
        topic: topic.into(),
        data: Payload::Bytes(vec![1, 2, 3]),
        from: "p".into(),
        ts: u64::MAX - 1,
        offset,
        mid: format!("r{offset}"),
    }
}

pub(crate) fn record(name: &str) -> SessionRecord {
    SessionRecord {
        name: name.into(),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        token_secret: format!("secret of {name}"),
        settings: SessionSettings {
            max_retries: 7,
            ..SessionSettings::default()
        },
    }
}

fn keys(messages: &[Arc<StoredMessage>]) -> Vec<MessageKey> {
    messages.iter().map(|m| m.key).collect()
}

fn offsets(data: &SessionData) -> Vec<u64> {
    data.history
        .iter()
        .map(|m| match m.key {
            MessageKey::Stream(offset) => offset,
            MessageKey::Direct(_) => panic!("a direct message in history"),
        })
        .collect()
}

/// Asserts that two loads are the same, field by field.
pub(crate) fn assert_same(a: &SessionData, b: &SessionData, context: &str) {
    assert_eq!(a.stream, b.stream, "{context}: stream");
    assert_eq!(a.history, b.history, "{context}: history");
    assert_eq!(a.directs, b.directs, "{context}: directs");
    assert_eq!(a.retained, b.retained, "{context}: retained");
    assert_eq!(a.clients, b.clients, "{context}: clients");
}

/// Loads `session`, reopens the store, loads again: both loads must be the same.
fn load_across_reopen(
    subject: &dyn Subject,
    store: Arc<dyn Store>,
    session: &str,
) -> (Arc<dyn Store>, SessionData) {
    let before = store.load(session).unwrap();
    let store = subject.reopen(store);
    let after = store.load(session).unwrap();
    assert_same(&before, &after, "across a reopen");
    (store, after)
}

fn unknown_session_is_empty(subject: &dyn Subject) {
    let store = subject.fresh();
    let data = store.load("nobody").unwrap();
    assert_same(&data, &SessionData::default(), "unknown session");
    assert!(store.sessions().is_empty());
    store.flush().unwrap();
}

fn every_write(subject: &dyn Subject) {
    let store = subject.fresh();
    let writes = vec![
        Write::Stream { epoch: "e1".into() },
        stream(1),
        stream(2),
        stream(3),
        direct(1),
        Write::Retained {
            topic: "b".into(),
            message: Some(retained("b", 2)),
        },
        Write::Retained {
            topic: "a".into(),
            message: Some(retained("a", 1)),
        },
        Write::Client(client("zed", &["x/#", "y"], Some(42))),
        Write::Client(client("amy", &[], None)),
        copy("zed", MessageKey::Direct(1), 0),
        copy("zed", MessageKey::Stream(1), 1),
        copy("amy", MessageKey::Stream(3), 2),
        copy("amy", MessageKey::Stream(2), 0),
        drop_copy("amy", MessageKey::Stream(2)),
        Write::TrimHistory { offset: 3 },
    ];
    store.write("s", writes, None);
    let (store, data) = load_across_reopen(subject, store, "s");
    assert_eq!(
        data.stream,
        Some(StreamState {
            epoch: "e1".into(),
            last_offset: 3
        })
    );
    assert_eq!(offsets(&data), [1, 3], "2 had no copy left, 1 is zed's");
    assert_eq!(data.history[0], message(MessageKey::Stream(1)));
    assert_eq!(keys(&data.directs), [MessageKey::Direct(1)]);
    assert_eq!(data.directs[0], message(MessageKey::Direct(1)));
    assert_eq!(data.retained, [retained("a", 1), retained("b", 2)]);
    assert_eq!(
        data.clients,
        [
            (
                client("amy", &[], None),
                vec![CopyRef {
                    key: MessageKey::Stream(3),
                    attempts: 2
                }]
            ),
            (
                client("zed", &["x/#", "y"], Some(42)),
                vec![
                    CopyRef {
                        key: MessageKey::Stream(1),
                        attempts: 1
                    },
                    CopyRef {
                        key: MessageKey::Direct(1),
                        attempts: 0
                    }
                ]
            ),
        ]
    );
    assert!(store.load("other").unwrap().history.is_empty());
}

fn stream_messages_raise_last_offset(subject: &dyn Subject) {
    let store = subject.fresh();
    // Without a stream, messages are kept but there is no offset to raise.
    store.write("s", vec![stream(4)], None);
    let data = store.load("s").unwrap();
    assert_eq!(data.stream, None);
    assert_eq!(offsets(&data), [4]);
    store.write(
        "s",
        vec![
            Write::Stream { epoch: "e".into() },
            stream(5),
            stream(9),
            stream(7),
            direct(100),
        ],
        None,
    );
    let (_store, data) = load_across_reopen(subject, store, "s");
    assert_eq!(
        data.stream.as_ref().unwrap().last_offset,
        9,
        "the largest, not the last"
    );
    assert_eq!(offsets(&data), [5, 7, 9], "the restart dropped 4");
    // History may be trimmed to nothing: the last offset stays.
}

fn a_reset_in_the_same_batch_sets_the_offset_back(subject: &dyn Subject) {
    let store = subject.fresh();
    store.write(
        "s",
        vec![
            Write::Stream { epoch: "e".into() },
            stream(5),
            stream(9),
            Write::Stream { epoch: "e2".into() },
            stream(2),
            stream(3),
        ],
        None,
    );
    let (store, data) = load_across_reopen(subject, store, "s");
    assert_eq!(
        data.stream,
        Some(StreamState {
            epoch: "e2".into(),
            last_offset: 3
        }),
        "the offsets of the old stream do not outlive its reset"
    );
    assert_eq!(offsets(&data), [2, 3]);
    store.write(
        "s",
        vec![stream(4), Write::Stream { epoch: "e3".into() }],
        None,
    );
    let data = store.load("s").unwrap();
    assert_eq!(data.stream.map(|s| s.last_offset), Some(0));
    assert!(data.history.is_empty());
}

fn a_message_replaces_one_with_its_key(subject: &dyn Subject) {
    let store = subject.fresh();
    let mut replacement = (*message(MessageKey::Stream(1))).clone();
    replacement.topic = "other".into();
    replacement.qos = Qos::AtMostOnce;
    replacement.data = Payload::Bytes(Vec::new());
    store.write(
        "s",
        vec![stream(1), Write::Message(Arc::new(replacement.clone()))],
        None,
    );
    let (_store, data) = load_across_reopen(subject, store, "s");
    assert_eq!(data.history, [Arc::new(replacement)]);
}

fn trim_keeps_what_copies_refer_to(subject: &dyn Subject) {
    let store = subject.fresh();
    let mut writes = vec![Write::Stream { epoch: "e".into() }];
    writes.extend((1..=6).map(stream));
    writes.push(copy("c", MessageKey::Stream(2), 1));
    writes.push(copy("d", MessageKey::Stream(2), 1));
    writes.push(direct(1));
    writes.push(Write::TrimHistory { offset: 5 });
    store.write("s", writes, None);
    let data = store.load("s").unwrap();
    assert_eq!(offsets(&data), [2, 5, 6], "offset 2 is still referred to");
    assert_eq!(
        data.directs.len(),
        1,
        "trimming leaves direct messages alone"
    );
    assert_eq!(data.stream.as_ref().unwrap().last_offset, 6);

    // A dropped copy does not take a stream message with it; the next trim does, once no copy
    // is left.
    store.write("s", vec![drop_copy("c", MessageKey::Stream(2))], None);
    store.write("s", vec![Write::TrimHistory { offset: 5 }], None);
    assert_eq!(
        offsets(&store.load("s").unwrap()),
        [2, 5, 6],
        "d still has it"
    );
    store.write(
        "s",
        vec![
            drop_copy("d", MessageKey::Stream(2)),
            Write::TrimHistory { offset: 3 },
        ],
        None,
    );
    let (store, data) = load_across_reopen(subject, store, "s");
    assert_eq!(offsets(&data), [5, 6]);
    store.write("s", vec![Write::TrimHistory { offset: 100 }], None);
    let data = store.load("s").unwrap();
    assert!(data.history.is_empty());
    assert_eq!(
        data.stream.unwrap().last_offset,
        6,
        "trimming keeps the offset"
    );
}

fn direct_message_lifetime(subject: &dyn Subject) {
    let store = subject.fresh();
    let key = MessageKey::Direct(1);
    store.write(
        "s",
        vec![direct(1), copy("a", key, 0), copy("b", key, 0), direct(2)],
        None,
    );
    store.write("s", vec![drop_copy("a", key)], None);
    let (store, data) = load_across_reopen(subject, store, "s");
    assert_eq!(
        keys(&data.directs),
        [MessageKey::Direct(1), MessageKey::Direct(2)]
    );
    // Dropping a copy that does not exist forgets nothing, not even an unreferred message.
    store.write("s", vec![drop_copy("a", MessageKey::Direct(2))], None);
    store.write("s", vec![drop_copy("nobody", key)], None);
    assert_eq!(store.load("s").unwrap().directs.len(), 2);
    // The last copy takes the message with it.
    store.write(
        "s",
        vec![Write::DropClient {
            client_id: "b".into(),
        }],
        None,
    );
    let (store, data) = load_across_reopen(subject, store, "s");
    assert_eq!(
        keys(&data.directs),
        [MessageKey::Direct(2)],
        "2 never had a copy"
    );
    assert_eq!(data.clients.len(), 1, "client a stays, without copies");
    assert!(data.clients[0].1.is_empty());
    // Direct messages come in sequence order.
    store.write("s", vec![direct(10), direct(3)], None);
    assert_eq!(
        keys(&store.load("s").unwrap().directs),
        [2, 3, 10].map(MessageKey::Direct)
    );
}

fn copies_create_clients_and_update(subject: &dyn Subject) {
    let store = subject.fresh();
    store.write(
        "s",
        vec![
            copy("bare", MessageKey::Stream(1), 1),
            copy("bare", MessageKey::Stream(1), 3),
            copy("bare", MessageKey::Direct(2), 0),
            copy("bare", MessageKey::Direct(1), 0),
            copy("bare", MessageKey::Stream(10), 0),
        ],
        None,
    );
    let data = store.load("s").unwrap();
    assert_eq!(data.clients.len(), 1);
    assert_eq!(data.clients[0].0, client("bare", &[], None));
    assert_eq!(
        data.clients[0].1,
        [
            CopyRef {
                key: MessageKey::Stream(1),
                attempts: 3
            },
            CopyRef {
                key: MessageKey::Stream(10),
                attempts: 0
            },
            CopyRef {
                key: MessageKey::Direct(1),
                attempts: 0
            },
            CopyRef {
                key: MessageKey::Direct(2),
                attempts: 0
            },
        ],
        "stream before direct, ascending in each"
    );
    // Updating the client keeps its copies; a copy does not reset the client.
    store.write(
        "s",
        vec![
            Write::Client(client("bare", &["a"], Some(5))),
            copy("bare", MessageKey::Stream(2), 0),
        ],
        None,
    );
    let (_store, data) = load_across_reopen(subject, store, "s");
    assert_eq!(data.clients[0].0, client("bare", &["a"], Some(5)));
    assert_eq!(data.clients[0].1.len(), 5);
    // Clients come in id order.
}

fn drop_client_forgets_its_copies(subject: &dyn Subject) {
    let store = subject.fresh();
    store.write(
        "s",
        vec![
            Write::Stream { epoch: "e".into() },
            stream(1),
            direct(1),
            direct(2),
            Write::Client(client("a", &["#"], None)),
            Write::Client(client("b", &["#"], None)),
            copy("a", MessageKey::Stream(1), 0),
            copy("a", MessageKey::Direct(1), 0),
            copy("a", MessageKey::Direct(2), 0),
            copy("b", MessageKey::Direct(2), 0),
            Write::DropClient {
                client_id: "a".into(),
            },
            Write::DropClient {
                client_id: "never-was".into(),
            },
        ],
        None,
    );
    let (store, data) = load_across_reopen(subject, store, "s");
    assert_eq!(
        keys(&data.directs),
        [MessageKey::Direct(2)],
        "b still has 2"
    );
    assert_eq!(offsets(&data), [1], "stream messages stay until trimmed");
    assert_eq!(data.clients.len(), 1);
    assert_eq!(data.clients[0].0.client_id, "b");
    store.write("s", vec![Write::TrimHistory { offset: 2 }], None);
    assert!(store.load("s").unwrap().history.is_empty());
}

fn stream_restart(subject: &dyn Subject) {
    let store = subject.fresh();
    store.write(
        "s",
        vec![
            Write::Stream { epoch: "e1".into() },
            stream(1),
            stream(2),
            direct(1),
            copy("c", MessageKey::Stream(2), 0),
            copy("c", MessageKey::Direct(1), 0),
        ],
        None,
    );
    store.write("s", vec![Write::Stream { epoch: "e2".into() }], None);
    let (store, data) = load_across_reopen(subject, store, "s");
    assert_eq!(
        data.stream,
        Some(StreamState {
            epoch: "e2".into(),
            last_offset: 0
        })
    );
    assert!(data.history.is_empty(), "the old stream's messages go");
    assert_eq!(keys(&data.directs), [MessageKey::Direct(1)], "directs stay");
    assert_eq!(data.clients[0].1.len(), 2, "copies stay");
    // The new stream counts again from its own offsets; the old copy of offset 2 still keeps
    // a message at that offset from being trimmed.
    store.write(
        "s",
        vec![stream(1), stream(2), Write::TrimHistory { offset: 3 }],
        None,
    );
    let data = store.load("s").unwrap();
    assert_eq!(data.stream.as_ref().unwrap().last_offset, 2);
    assert_eq!(offsets(&data), [2]);
}

fn retained_set_replace_clear(subject: &dyn Subject) {
    let store = subject.fresh();
    let retain = |topic: &str, message: Option<Retained>| Write::Retained {
        topic: topic.into(),
        message,
    };
    store.write(
        "s",
        vec![
            retain("z", Some(retained("z", 1))),
            retain("a/b", Some(retained("a/b", 2))),
            retain("a", Some(retained("a", 3))),
            retain("a", Some(retained("a", 4))),
            retain("gone", Some(retained("gone", 5))),
            retain("gone", None),
            retain("never", None),
        ],
        None,
    );
    let (_store, data) = load_across_reopen(subject, store, "s");
    assert_eq!(
        data.retained,
        [retained("a", 4), retained("a/b", 2), retained("z", 1)]
    );
}

fn session_records(subject: &dyn Subject) {
    let store = subject.fresh();
    store.save_session(&record("b"));
    store.save_session(&record("a"));
    let mut changed = record("b");
    changed.password_hash = None;
    changed.settings.history_size = 3;
    store.save_session(&changed);
    let store = subject.reopen(store);
    assert_eq!(store.sessions(), [record("a"), changed]);
}

fn delete_session_removes_everything(subject: &dyn Subject) {
    let store = subject.fresh();
    let everything = || {
        vec![
            Write::Stream { epoch: "e".into() },
            stream(1),
            direct(1),
            Write::Retained {
                topic: "t".into(),
                message: Some(retained("t", 1)),
            },
            Write::Client(client("c", &["#"], None)),
            copy("c", MessageKey::Stream(1), 0),
            copy("c", MessageKey::Direct(1), 0),
        ]
    };
    for name in ["doomed", "kept"] {
        store.save_session(&record(name));
        store.write(name, everything(), None);
    }
    store.delete_session("doomed");
    let (store, data) = load_across_reopen(subject, store, "doomed");
    assert_same(&data, &SessionData::default(), "deleted session");
    assert_eq!(store.sessions(), [record("kept")]);
    let kept = store.load("kept").unwrap();
    assert_eq!(kept.history.len(), 1);
    assert_eq!(kept.directs.len(), 1);
    assert_eq!(kept.retained.len(), 1);
    assert_eq!(kept.clients[0].1.len(), 2);
    // The name can be used again, from nothing.
    store.write("doomed", vec![stream(7)], None);
    let data = store.load("doomed").unwrap();
    assert_eq!(offsets(&data), [7]);
    assert!(data.stream.is_none());
}

fn callbacks_run_in_order(subject: &dyn Subject) {
    let store = subject.fresh();
    let order = Arc::new(Mutex::new(Vec::new()));
    for i in 0..200 {
        let order = order.clone();
        let writes = if i % 3 == 0 {
            Vec::new()
        } else {
            vec![stream(i)]
        };
        store.write(
            if i % 2 == 0 { "even" } else { "odd" },
            writes,
            Some(Box::new(move |result| {
                assert!(result.is_ok());
                order.lock().unwrap().push(i);
            })),
        );
    }
    store.write("odd", vec![stream(1000)], None);
    store.flush().unwrap();
    assert_eq!(*order.lock().unwrap(), (0..200).collect::<Vec<_>>());
    assert_eq!(store.load("odd").unwrap().history.len(), 68);
}

fn copy_then_drop_in_one_batch(subject: &dyn Subject) {
    let store = subject.fresh();
    let mut writes = vec![Write::Stream { epoch: "e".into() }, stream(1), direct(1)];
    for c in ["a", "b", "c"] {
        writes.push(copy(c, MessageKey::Stream(1), 0));
        writes.push(copy(c, MessageKey::Direct(1), 0));
    }
    for c in ["a", "b"] {
        writes.push(drop_copy(c, MessageKey::Stream(1)));
        writes.push(drop_copy(c, MessageKey::Direct(1)));
    }
    store.write("s", writes, None);
    let data = store.load("s").unwrap();
    assert_eq!(data.directs.len(), 1, "c still has it");
    assert_eq!(data.clients.len(), 3, "copies leave their clients behind");
    assert_eq!(data.clients[2].1.len(), 2);
    store.write(
        "s",
        vec![
            drop_copy("c", MessageKey::Direct(1)),
            drop_copy("c", MessageKey::Stream(1)),
        ],
        None,
    );
    let (_store, data) = load_across_reopen(subject, store, "s");
    assert!(data.directs.is_empty());
    assert_eq!(offsets(&data), [1], "stream messages wait for a trim");
}

#[test]
fn memory_store_conforms() {
    run_all(&Memory);
}

#[test]
fn sqlite_store_conforms_with_full_sync() {
    run_all(&Sqlite::new(SyncMode::Full));
}

#[test]
fn sqlite_store_conforms_with_normal_sync() {
    run_all(&Sqlite::new(SyncMode::Normal));
}
