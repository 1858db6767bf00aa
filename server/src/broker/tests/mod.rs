//! Broker tests without sockets: frames in through `Session::handle`, frames out of the queues.

use std::sync::Arc;

use sealbus::protocol::{ClientFrame, Codec};
use serde_json::{Value, json};

use super::{Broker, Inbox, LocalBackplane, Outbound, Outbox, QueueLimits, Session};
use crate::auth::Permissions;
use crate::config::SessionSettings;
use crate::store::{MemoryStore, SessionRecord};

mod backplane;

fn session() -> Arc<Session> {
    session_with(Arc::new(LocalBackplane))
}

/// A session `s` in memory whose broker hands local publishes to `backplane`.
fn session_with(backplane: Arc<dyn super::Backplane>) -> Arc<Session> {
    let broker = Broker::new(Arc::new(MemoryStore::new()), backplane);
    broker
        .create_session(SessionRecord {
            name: "s".into(),
            password_hash: None,
            token_secret: "t".into(),
            settings: SessionSettings::default(),
        })
        .unwrap()
}

fn limits(frames: usize) -> QueueLimits {
    QueueLimits {
        frames,
        bytes: 1 << 20,
        drop_tolerance: 8,
    }
}

fn join(session: &Session, id: &str) -> (u64, Inbox) {
    join_with(session, id, 64)
}

fn handle(session: &Arc<Session>, key: u64, frame: Value) {
    let frame: ClientFrame = Codec::default()
        .decode_client(frame.to_string().as_bytes())
        .unwrap();
    session.handle(key, frame);
}

fn frame(rx: &mut Inbox) -> Option<Value> {
    let item = rx.try_recv()?;
    let text = item.pieces().next()?.text()?;
    Some(serde_json::from_str(&text).unwrap())
}

#[tokio::test]
async fn a_qos0_message_is_encoded_once_for_all_subscribers() {
    let session = session();
    let (a, mut rx_a) = join(&session, "a");
    let (b, mut rx_b) = join(&session, "b");
    for key in [a, b] {
        handle(
            &session,
            key,
            json!({"type":"subscribe","id":1,"filter":"t"}),
        );
    }
    frame(&mut rx_a);
    frame(&mut rx_b);
    handle(
        &session,
        a,
        json!({"type":"publish","topic":"t","data":{"json":1}}),
    );
    let (Some(Outbound::Frame(x)), Some(Outbound::Frame(y))) = (rx_a.try_recv(), rx_b.try_recv())
    else {
        panic!("both subscribers get a frame");
    };
    assert_eq!(x.as_ptr(), y.as_ptr(), "one shared encoding");
}

#[tokio::test]
async fn cancelled_copies_are_withdrawn_from_the_queue() {
    let session = session();
    let (publisher, mut rx_p) = join(&session, "p");
    let (sub, mut rx_s) = join(&session, "s");
    handle(
        &session,
        sub,
        json!({"type":"subscribe","id":1,"filter":"t"}),
    );
    frame(&mut rx_s);
    handle(
        &session,
        publisher,
        json!({"type":"publish","id":2,"topic":"t","data":{"json":1},"ack":{"timeout_ms":60000}}),
    );
    let expect = frame(&mut rx_p).unwrap();
    assert_eq!(
        (expect["type"].clone(), expect["expected"].clone()),
        (json!("ack_expect"), json!(["s"]))
    );
    handle(
        &session,
        publisher,
        json!({"type":"ack_cancel","aid":expect["aid"]}),
    );
    assert_eq!(frame(&mut rx_p).unwrap()["outcome"], "cancelled");
    let queued = rx_s.try_recv().unwrap();
    assert!(
        queued.pieces().next().is_none(),
        "the queued copy is withdrawn"
    );
}

/// Publisher `p` and subscriber `s` (of `t`) joined; `p` has published on `t` with an ack
/// timeout of `timeout_ms`. Returns both keys and queues; `p`'s `ack_expect` is still queued.
fn waiting_for_one(session: &Arc<Session>, timeout_ms: u64) -> (u64, Inbox, u64, Inbox) {
    let (publisher, rx_p) = join(session, "p");
    let (sub, rx_s) = join(session, "s");
    handle(
        session,
        sub,
        json!({"type":"subscribe","id":1,"filter":"t"}),
    );
    handle(
        session,
        publisher,
        json!({"type":"publish","id":2,"topic":"t","data":{"json":1},"ack":{"timeout_ms":timeout_ms}}),
    );
    (publisher, rx_p, sub, rx_s)
}

#[tokio::test]
async fn leaving_answers_disconnected_and_takeover_kills_the_old_connection() {
    let session = session();
    let (_publisher, mut rx_p, sub, _rx_s) = waiting_for_one(&session, 60_000);
    frame(&mut rx_p);
    let (outbox, _rx) = Outbox::new(limits(8), session.metrics().clone());
    let old_kill = {
        let state = session.lock();
        state.clients[&sub]
            .outbox
            .as_ref()
            .unwrap()
            .kill_switch()
            .clone()
    };
    session
        .connect(
            Some("s".into()),
            false,
            Permissions::default(),
            outbox,
            false,
        )
        .unwrap();
    assert_eq!(
        old_kill.reason().map(|k| k.code),
        Some(sealbus::protocol::ErrorCode::Replaced)
    );
    let response = frame(&mut rx_p).unwrap();
    assert_eq!(
        (response["from"].clone(), response["code"].clone()),
        (json!("s"), json!(6005))
    );
    assert_eq!(frame(&mut rx_p).unwrap()["outcome"], "complete");
}

#[test]
fn the_queue_is_bounded_in_bytes_too() {
    let metrics = std::sync::Arc::new(crate::metrics::SessionMetrics::default());
    let limits = QueueLimits {
        frames: 100,
        bytes: 10,
        drop_tolerance: 1,
    };
    let (outbox, mut inbox) = Outbox::new(limits, metrics.clone());
    outbox.push_droppable("123456".into());
    outbox.push_droppable("123456".into());
    assert_eq!(
        outbox.depth(),
        1,
        "the second copy would pass the byte bound"
    );
    assert!(outbox.kill_switch().reason().is_none());
    outbox.push_droppable("123456".into());
    assert!(
        outbox.kill_switch().reason().is_some(),
        "too many drops in a row"
    );
    assert!(inbox.try_recv().is_some());
    outbox.push_droppable("1234567890123".into());
    assert_eq!(outbox.depth(), 1, "one oversized frame fits an empty queue");
}

#[tokio::test]
async fn qos1_copies_wait_for_room_instead_of_disconnecting_a_slow_subscriber() {
    let session = session();
    let (publisher, mut rx_p) = join(&session, "p");
    let (outbox, mut rx_s) = Outbox::new(limits(4), session.metrics().clone());
    let sub = session
        .connect(
            Some("s".into()),
            false,
            Permissions::default(),
            outbox.clone(),
            false,
        )
        .unwrap()
        .key;
    frame(&mut rx_s);
    handle(
        &session,
        sub,
        json!({"type":"subscribe","id":1,"filter":"t"}),
    );
    frame(&mut rx_s);
    for n in 0..10 {
        handle(
            &session,
            publisher,
            json!({"type":"publish","id":n,"topic":"t","data":{"json":n},"qos":1}),
        );
    }
    assert!(
        outbox.kill_switch().reason().is_none(),
        "not a slow consumer"
    );
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let before = seen.len();
        while let Some(copy) = frame(&mut rx_s) {
            handle(
                &session,
                sub,
                json!({"type":"ack","did":copy["did"],"ok":true}),
            );
            seen.push(copy["data"]["json"].as_u64().unwrap());
        }
        assert!(seen.len() > before, "every tick writes what fits: {seen:?}");
        session.tick();
    }
    assert_eq!(seen, (0..10).collect::<Vec<_>>(), "in order");
    let confirmed = std::iter::from_fn(|| frame(&mut rx_p))
        .filter(|f| f["type"] == "published")
        .count();
    assert_eq!(confirmed, 10);
    let status = session.clients();
    let s = status.iter().find(|c| c.client_id == "s").unwrap();
    assert_eq!((s.in_flight, s.queued), (0, 0));
}

/// A store whose commits wait until the test releases them, as a slow disk would.
#[derive(Default)]
struct HeldStore {
    inner: MemoryStore,
    held: std::sync::Mutex<Vec<crate::store::OnCommit>>,
}

impl std::fmt::Debug for HeldStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldStore")
    }
}

impl HeldStore {
    fn release(&self) {
        let held: Vec<_> = self.held.lock().unwrap().drain(..).collect();
        for on_commit in held {
            on_commit(Ok(()));
        }
    }
}

impl crate::store::Store for HeldStore {
    fn save_session(&self, record: &SessionRecord) {
        self.inner.save_session(record);
    }
    fn delete_session(&self, name: &str) {
        self.inner.delete_session(name);
    }
    fn sessions(&self) -> Vec<SessionRecord> {
        self.inner.sessions()
    }
    fn load(&self, session: &str) -> Result<crate::store::SessionData, crate::store::StoreError> {
        self.inner.load(session)
    }
    fn write(
        &self,
        session: &str,
        writes: Vec<crate::store::Write>,
        on_commit: Option<crate::store::OnCommit>,
    ) {
        self.inner.write(session, writes, None);
        self.held.lock().unwrap().extend(on_commit);
    }
    fn flush(&self) -> Result<(), crate::store::StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn requests_waiting_for_the_store_are_bounded_and_their_ids_unique() {
    let store = Arc::new(HeldStore::default());
    let broker = Broker::new(store.clone(), Arc::new(LocalBackplane));
    let session = broker
        .create_session(SessionRecord {
            name: "s".into(),
            password_hash: None,
            token_secret: "t".into(),
            settings: SessionSettings {
                max_inflight: 2,
                ..SessionSettings::default()
            },
        })
        .unwrap();
    let (publisher, mut rx) = join(&session, "p");
    let publish =
        |id: u64| json!({"type":"publish","id":id,"topic":"t","data":{"json":id},"qos":1});
    handle(&session, publisher, publish(1));
    assert!(frame(&mut rx).is_none(), "not confirmed before the commit");
    handle(&session, publisher, publish(1));
    assert_eq!(frame(&mut rx).unwrap()["name"], "duplicate_request_id");
    handle(&session, publisher, publish(2));
    handle(&session, publisher, publish(3));
    let refused = frame(&mut rx).unwrap();
    assert_eq!(
        (&refused["name"], &refused["id"]),
        (&json!("too_many_requests"), &json!(3))
    );
    store.release();
    let confirmed: Vec<_> = std::iter::from_fn(|| frame(&mut rx))
        .map(|f| f["id"].clone())
        .collect();
    assert_eq!(confirmed, [json!(1), json!(2)]);
    handle(&session, publisher, publish(1));
    store.release();
    assert_eq!(
        frame(&mut rx).unwrap()["type"],
        "published",
        "the id is free again"
    );
}

#[test]
fn answers_may_use_the_headroom_that_copies_may_not() {
    let metrics = std::sync::Arc::new(crate::metrics::SessionMetrics::default());
    let limits = QueueLimits {
        frames: 2,
        bytes: 1 << 20,
        drop_tolerance: 100,
    };
    let (outbox, mut inbox) = Outbox::new(limits, metrics);
    assert!(outbox.offer(Outbound::Frame("copy".into())));
    assert!(outbox.offer(Outbound::Frame("copy".into())));
    assert!(
        !outbox.offer(Outbound::Frame("copy".into())),
        "copies stop at the frame bound"
    );
    outbox.push_droppable("qos0".into());
    assert_eq!(
        outbox.depth(),
        2,
        "a QoS 0 copy is dropped at the frame bound"
    );
    let headroom = 2 * crate::broker::ANSWER_HEADROOM;
    for _ in 2..headroom {
        outbox.push_answer(Outbound::Frame("answer".into()));
    }
    assert_eq!(outbox.depth(), headroom);
    assert!(
        outbox.kill_switch().reason().is_none(),
        "answers fit the headroom"
    );
    outbox.push_answer(Outbound::Frame("answer".into()));
    assert_eq!(
        outbox.kill_switch().reason().map(|k| k.code),
        Some(sealbus::protocol::ErrorCode::SlowConsumer),
        "a client that never reads its answers is still a slow consumer"
    );
    assert!(inbox.try_recv().is_some());
}

fn join_with(session: &Session, id: &str, frames: usize) -> (u64, Inbox) {
    let (outbox, mut rx) = Outbox::new(limits(frames), session.metrics().clone());
    let connected = session
        .connect(
            Some(id.into()),
            false,
            Permissions::default(),
            outbox,
            false,
        )
        .unwrap();
    assert!(matches!(frame(&mut rx), Some(v) if v["type"] == "welcome"));
    (connected.key, rx)
}

fn decode(frame: Value) -> ClientFrame {
    Codec::default()
        .decode_client(frame.to_string().as_bytes())
        .unwrap()
}

#[tokio::test]
async fn frames_handled_together_are_answered_in_order_and_stop_at_bye() {
    let session = session();
    let (key, mut rx) = join(&session, "c");
    let frames = [
        json!({"type":"ack","did":5,"ok":true}),
        json!({"type":"ping","id":2}),
        json!({"type":"ack","did":6,"ok":true}),
        json!({"type":"bye"}),
        json!({"type":"ping","id":3}),
    ];
    let flow = session.handle_all(key, frames.into_iter().map(decode));
    assert_eq!(flow, super::Flow::Close);
    let answers: Vec<Value> = std::iter::from_fn(|| frame(&mut rx)).collect();
    let shape: Vec<(Value, Value)> = answers
        .iter()
        .map(|a| (a["type"].clone(), a["code"].clone()))
        .collect();
    assert_eq!(
        shape,
        [
            (json!("error"), json!(3006)),
            (json!("pong"), Value::Null),
            (json!("error"), json!(3006)),
        ],
        "{answers:?}"
    );
    assert!(answers[0]["message"].as_str().unwrap().contains('5'));
    assert!(answers[2]["message"].as_str().unwrap().contains('6'));
}

#[tokio::test]
async fn finished_collections_are_kept_up_to_a_bound() {
    let session = session();
    let (publisher, mut rx) = join(&session, "p");
    let mut aids = Vec::new();
    for id in 1..=super::acks::FINISHED_KEPT as u64 + 1 {
        handle(
            &session,
            publisher,
            json!({"type":"publish","id":id,"topic":"nobody","data":{"json":1},"ack":{"timeout_ms":60000}}),
        );
        let expect = frame(&mut rx).unwrap();
        assert_eq!(frame(&mut rx).unwrap()["outcome"], "complete");
        aids.push(expect["aid"].clone());
    }
    let status = |aid: &Value, rx: &mut Inbox| {
        handle(
            &session,
            publisher,
            json!({"type":"ack_status","id":7,"aid":aid}),
        );
        frame(rx).unwrap()
    };
    assert_eq!(
        status(&aids[0], &mut rx)["code"],
        3005,
        "the oldest is forgotten"
    );
    let last = status(aids.last().unwrap(), &mut rx);
    assert_eq!(
        (last["type"].clone(), last["outcome"].clone()),
        (json!("ack_state"), json!("complete"))
    );
    assert_eq!(session.lock().acks.len(), super::acks::FINISHED_KEPT);
}

#[tokio::test]
async fn a_publish_with_ack_times_out_at_the_first_tick_after_its_deadline() {
    let session = session();
    let (_publisher, mut rx_p, _sub, _rx_s) = waiting_for_one(&session, 30);
    assert_eq!(frame(&mut rx_p).unwrap()["type"], "ack_expect");
    session.tick();
    assert!(frame(&mut rx_p).is_none(), "not before the deadline");
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    session.tick();
    let done = frame(&mut rx_p).unwrap();
    assert_eq!(
        (done["type"].clone(), done["outcome"].clone()),
        (json!("ack_done"), json!("timeout"))
    );
    assert!(session.lock().ack_deadlines.is_empty());
}

#[tokio::test]
async fn a_publisher_that_leaves_takes_its_collections_and_their_deadlines() {
    let session = session();
    let (publisher, _rx_p, _sub, _rx_s) = waiting_for_one(&session, 60_000);
    assert_eq!(session.lock().ack_deadlines.len(), 1);
    session.disconnect(publisher);
    let state = session.lock();
    assert!(state.acks.is_empty() && state.ack_deadlines.is_empty());
}

#[tokio::test]
async fn acknowledged_copies_leave_the_retry_queue_before_their_time() {
    let session = session();
    let (publisher, mut rx_p) = join_with(&session, "p", 8192);
    let (sub, mut rx_s) = join_with(&session, "s", 8192);
    handle(
        &session,
        sub,
        json!({"type":"subscribe","id":1,"filter":"t"}),
    );
    frame(&mut rx_s);
    let count = 5000;
    for id in 0..count {
        handle(
            &session,
            publisher,
            json!({"type":"publish","id":id,"topic":"t","data":{"json":id},"qos":1}),
        );
        while frame(&mut rx_p).is_some() {}
    }
    let copies: Vec<Value> = std::iter::from_fn(|| frame(&mut rx_s)).collect();
    assert_eq!(copies.len(), count as usize);
    assert_eq!(session.lock().retries.len(), copies.len());
    // All but the first are acknowledged: that one keeps its place at the front, the others'
    // entries are compacted away (they are more than half of the queue).
    for copy in &copies[1..] {
        handle(
            &session,
            sub,
            json!({"type":"ack","did":copy["did"],"ok":true}),
        );
    }
    session.tick();
    assert_eq!(session.lock().retries.len(), 1);
    handle(
        &session,
        sub,
        json!({"type":"ack","did":copies[0]["did"],"ok":true}),
    );
    session.tick();
    assert!(session.lock().retries.is_empty());
    assert!(frame(&mut rx_s).is_none(), "nothing was redelivered");
}

#[test]
fn every_session_of_a_store_waits_on_the_same_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        crate::store::SqliteStore::open(&dir.path().join("s.db"), crate::store::SyncMode::Normal)
            .unwrap();
    let broker = Broker::new(Arc::new(store), Arc::new(LocalBackplane));
    let [a, b] = ["a", "b"].map(|name| {
        broker
            .create_session(SessionRecord {
                name: name.into(),
                password_hash: None,
                token_secret: "t".into(),
                settings: SessionSettings::default(),
            })
            .unwrap()
    });
    let (a, b) = (a.store_backlog().unwrap(), b.store_backlog().unwrap());
    assert!(
        std::ptr::eq(a, b),
        "one disk, one queue: its limit pauses both"
    );
}

#[test]
fn the_retry_queue_keeps_its_room_while_busy_and_gives_it_back_when_quiet() {
    let session = session();
    let mut state = session.lock();
    state.retries.reserve(100_000);
    let room = state.retries.capacity();
    // A busy second: the queue held up to 30 000 entries between ticks.
    state.retries_peak = 30_000;
    state.shrink_retries();
    assert_eq!(
        state.retries.capacity(),
        room,
        "room for the recent peak is kept"
    );
    // A quiet second: nothing queued since.
    state.shrink_retries();
    assert!(
        state.retries.capacity() < 1000,
        "{}",
        state.retries.capacity()
    );
}

#[test]
fn outbound_items_stay_small() {
    // The outbound channel allocates its slots 32 at a time when a connection opens: a larger
    // item costs every idle connection 32 times the difference (docs/PERFORMANCE.md).
    assert!(
        std::mem::size_of::<Outbound>() <= 48,
        "{}",
        std::mem::size_of::<Outbound>()
    );
}
