//! Counters per session and their Prometheus text rendering (written by hand: the format is
//! simple and this avoids a dependency).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one session; updated lock-free from connection tasks.
#[derive(Debug, Default)]
pub struct SessionMetrics {
    /// Connected clients now.
    pub connections: AtomicU64,
    /// Frames received from clients.
    pub messages_in: AtomicU64,
    /// Frames written to clients.
    pub messages_out: AtomicU64,
    /// Bytes received from clients.
    pub bytes_in: AtomicU64,
    /// Bytes of WebSocket text messages written to clients (frames, and the line feeds that join
    /// them for clients that read batches).
    pub bytes_out: AtomicU64,
    /// Messages published.
    pub published: AtomicU64,
    /// `ack` frames received.
    pub acks: AtomicU64,
    /// QoS 1 redeliveries.
    pub retries: AtomicU64,
    /// QoS 0 copies dropped for full outbound queues.
    pub drops: AtomicU64,
    /// QoS 1 copies that ran out of retries (or were pushed out of a full queue).
    pub dead_letters: AtomicU64,
    /// Failed authentications.
    pub auth_failures: AtomicU64,
    /// Times a connection's reader waited for the store to catch up before handling frames.
    pub store_waits: AtomicU64,
}

impl SessionMetrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn rows(&self) -> [(&'static str, &'static str, &'static str, u64); 12] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "sealbus_connections",
                "gauge",
                "Connected clients.",
                get(&self.connections),
            ),
            (
                "sealbus_messages_in_total",
                "counter",
                "Frames received from clients.",
                get(&self.messages_in),
            ),
            (
                "sealbus_messages_out_total",
                "counter",
                "Frames written to clients.",
                get(&self.messages_out),
            ),
            (
                "sealbus_bytes_in_total",
                "counter",
                "Bytes received from clients.",
                get(&self.bytes_in),
            ),
            (
                "sealbus_bytes_out_total",
                "counter",
                "Bytes written to clients.",
                get(&self.bytes_out),
            ),
            (
                "sealbus_published_total",
                "counter",
                "Messages published.",
                get(&self.published),
            ),
            (
                "sealbus_acks_total",
                "counter",
                "Ack frames received.",
                get(&self.acks),
            ),
            (
                "sealbus_retries_total",
                "counter",
                "QoS 1 redeliveries.",
                get(&self.retries),
            ),
            (
                "sealbus_drops_total",
                "counter",
                "QoS 0 copies dropped for full queues.",
                get(&self.drops),
            ),
            (
                "sealbus_dead_letters_total",
                "counter",
                "QoS 1 copies that became dead letters.",
                get(&self.dead_letters),
            ),
            (
                "sealbus_auth_failures_total",
                "counter",
                "Failed authentications.",
                get(&self.auth_failures),
            ),
            (
                "sealbus_store_waits_total",
                "counter",
                "Times a reader paused for the store's queue of writes to shrink.",
                get(&self.store_waits),
            ),
        ]
    }
}

/// Renders the counters of every session in the Prometheus text exposition format.
pub fn render<'a>(sessions: impl IntoIterator<Item = (&'a str, &'a SessionMetrics)>) -> String {
    let sessions: Vec<_> = sessions.into_iter().collect();
    let mut out = String::new();
    let names = SessionMetrics::default().rows();
    for (index, (name, kind, help, _)) in names.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (session, metrics) in &sessions {
            let value = metrics.rows()[index].3;
            let label = session.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "{name}{{session=\"{label}\"}} {value}");
        }
    }
    out
}
