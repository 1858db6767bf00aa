//! Deterministic engine tests: a simulated clock and scripted server frames, no sockets.

mod acks;
mod batches;
mod connection;
mod delivery;
mod props;
mod publish;
mod status;
mod subscribe;

use serde_json::{Value, json};

use super::*;
use crate::crypto::{Key, Keyring};
use crate::protocol::Qos;

/// An engine plus a hand-driven clock.
pub(super) struct Harness {
    pub(super) engine: Engine,
    pub(super) now: Millis,
}

pub(super) fn config() -> EngineConfig {
    let mut config = EngineConfig::new("demo", Auth::Password("pw".into()));
    config.client_id = Some("me".into());
    config.reconnect.initial_delay_ms = 100;
    config.reconnect.max_delay_ms = 1_000;
    config.request_timeout_ms = 5_000;
    config
}

pub(super) fn welcome(epoch: &str) -> Value {
    json!({"type": "welcome", "v": 1, "session": "demo", "client_id": "me", "epoch": epoch,
        "limits": {"max_frame_bytes": 4096, "max_message_bytes": 1000, "max_subscriptions": 10,
            "max_inflight": 10, "keepalive_ms": 30_000, "retry_interval_ms": 5000,
            "max_retries": 3}})
}

pub(super) fn keyring() -> Keyring {
    Keyring::with_key(Key::from_bytes(&[7; 32]).unwrap())
}

pub(super) fn qos1() -> PublishOptions {
    PublishOptions {
        qos: Qos::AtLeastOnce,
        ..PublishOptions::default()
    }
}

impl Harness {
    /// A fresh engine that has not connected yet.
    pub(super) fn new(config: EngineConfig) -> Harness {
        Harness {
            engine: Engine::new(config, 1),
            now: Millis(1_000),
        }
    }

    /// A connected engine with its connection events drained.
    pub(super) fn connected(config: EngineConfig) -> Harness {
        let mut h = Harness::new(config);
        h.connect("e1");
        h.events();
        h
    }

    /// Opens the transport (expecting the engine to ask for it), checks `hello`, answers
    /// `welcome`.
    pub(super) fn connect(&mut self, epoch: &str) {
        assert_eq!(self.engine.poll_connection(), Some(ConnAction::Connect));
        self.engine.handle_connected(self.now);
        let sent = self.sent();
        assert_eq!(sent[0]["type"], "hello", "{sent:?}");
        self.feed(welcome(epoch));
    }

    /// Drops the transport as the driver would report it.
    pub(super) fn drop_transport(&mut self) {
        let disconnect = Disconnect {
            close_code: None,
            reason: "reset".into(),
        };
        self.engine.handle_disconnected(disconnect, self.now);
    }

    /// Drops and reconnects: waits out the backoff, then connects with `epoch`.
    pub(super) fn reconnect(&mut self, epoch: &str) {
        self.drop_transport();
        let until = self.engine.poll_timeout().unwrap();
        self.advance_to(until);
        self.connect(epoch);
    }

    pub(super) fn feed(&mut self, frame: Value) {
        self.engine.handle_frame(&frame.to_string(), self.now);
    }

    /// Every frame sent since the last call, as JSON.
    pub(super) fn sent(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.engine.poll_transmit())
            .map(|text| serde_json::from_str(&text).unwrap())
            .collect()
    }

    /// Frames of type `kind` sent since the last call (others are dropped).
    pub(super) fn sent_of(&mut self, kind: &str) -> Vec<Value> {
        self.sent()
            .into_iter()
            .filter(|f| f["type"] == kind)
            .collect()
    }

    pub(super) fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.engine.poll_event()).collect()
    }

    pub(super) fn actions(&mut self) -> Vec<ConnAction> {
        std::iter::from_fn(|| self.engine.poll_connection()).collect()
    }

    pub(super) fn advance(&mut self, ms: u64) {
        self.advance_to(self.now.plus(ms));
    }

    pub(super) fn advance_to(&mut self, to: Millis) {
        self.now = self.now.max(to);
        self.engine.handle_timeout(self.now);
    }

    /// Subscribes `filter` and confirms it at offset `offset`; returns the handler id.
    pub(super) fn subscribed(&mut self, filter: &str, offset: u64) -> OpId {
        let op = self.engine.subscribe(filter, self.now).unwrap();
        let sent = self.sent_of("subscribe");
        if let Some(frame) = sent.first() {
            self.feed(
                json!({"type": "subscribed", "id": frame["id"], "filter": filter,
                "position": {"epoch": "e1", "offset": offset}}),
            );
        }
        self.events();
        op
    }
}

/// The result of operation `op` among `events`.
pub(super) fn completion(events: &[Event], op: OpId) -> Option<Result<Outcome, Error>> {
    events.iter().find_map(|e| match e {
        Event::Completed { op: o, result } if *o == op => Some(result.clone()),
        _ => None,
    })
}

/// The last snapshot of publish_with_ack `op` among `events`.
pub(super) fn last_snapshot(events: &[Event], op: OpId) -> Option<AckSnapshot> {
    events.iter().rev().find_map(|e| match e {
        Event::AckUpdated { op: o, snapshot } if *o == op => Some(snapshot.clone()),
        _ => None,
    })
}

/// The connection states announced among `events`.
pub(super) fn states(events: &[Event]) -> Vec<ConnectionState> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::State(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}
