//! The acknowledging subscriber of the `ack` and `qos1` scenarios.
//!
//! It reads only what an ack needs from each `message` frame (`did`, `aid`, `dup`) instead of
//! decoding the whole frame, writes the acks of every frame already readable in one go, and so
//! leaves the shared cores to the server under test.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::task::JoinHandle;

use super::conn::{self, Joined, Rx, Target, Tx};

/// What one subscriber saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// QoS 1 copies received (redeliveries included).
    pub(crate) copies: u64,
    /// Redeliveries (`dup`).
    pub(crate) duplicates: u64,
    /// Messages that asked for an ack (a `did` or an `aid`), and were answered.
    pub(crate) acked: u64,
}

/// The fields the server writes after a copy's payload, in the order it writes them.
const LAST_FIELDS: [&str; 5] = [
    "\"did\":",
    "\"aid\":",
    "\"retained\":",
    "\"replay\":",
    "\"dup\":",
];

/// The `did` and `aid` of a `message` frame. The server writes them after the payload, followed
/// only by flags, so the frame is read from its end up to the first other field: the tool's cost
/// per copy does not grow with the payload, and a copy without an `aid` is not searched through.
fn ack_ids(text: &str) -> (Option<u64>, Option<u64>) {
    let (mut did, mut aid) = (None, None);
    for field in text.strip_suffix('}').unwrap_or(text).rsplit(',') {
        if let Some(number) = field.strip_prefix(LAST_FIELDS[0]) {
            did = number.parse().ok();
        } else if let Some(number) = field.strip_prefix(LAST_FIELDS[1]) {
            aid = number.parse().ok();
        } else if !LAST_FIELDS.iter().any(|key| field.starts_with(key)) {
            break;
        }
    }
    (did, aid)
}

/// Writes into `ack` the `ack` frame for a `message` frame's text; `false` if it asks for none.
fn ack_for(text: &str, received: &mut Received, ack: &mut String) -> bool {
    if !text.starts_with("{\"type\":\"message\"") {
        return false;
    }
    let (did, aid) = ack_ids(text);
    if did.is_some() {
        received.copies += 1;
        received.duplicates += u64::from(text.ends_with(",\"dup\":true}"));
    }
    ack.clear();
    ack.push_str("{\"type\":\"ack\"");
    // Writing into a String cannot fail.
    let _ = match (did, aid) {
        (None, None) => return false,
        (Some(did), Some(aid)) => write!(ack, ",\"did\":{did},\"aid\":{aid}"),
        (Some(did), None) => write!(ack, ",\"did\":{did}"),
        (None, Some(aid)) => write!(ack, ",\"aid\":{aid}"),
    };
    ack.push_str(",\"ok\":true}");
    received.acked += 1;
    true
}

/// Acknowledging subscribers of one topic, started and stopped together.
pub(crate) struct Ackers {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Result<Received>>>,
}

impl Ackers {
    /// Connects `count` subscribers (client ids `{name}-{i}`) to `topic`, each acknowledging
    /// what it receives from then on.
    pub(crate) async fn start(
        target: &Target,
        name: &str,
        topic: &str,
        count: usize,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::with_capacity(count);
        for i in 0..count {
            let (mut tx, mut rx) = conn::connect(target, &format!("{name}-{i}")).await?;
            conn::subscribe(&mut tx, &mut rx, topic).await?;
            tasks.push(tokio::spawn(acking_subscriber(tx, rx, stop.clone())));
        }
        Ok(Ackers { stop, tasks })
    }

    /// Stops every subscriber; returns what each received.
    pub(crate) async fn stop(self) -> Result<Vec<Received>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut received = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            received.push(task.await??);
        }
        Ok(received)
    }
}

/// Acknowledges every message that asks for it until `stop`; acks of the frames that are
/// already readable go out in one write (one message when the server reads batches). Returns
/// what arrived.
async fn acking_subscriber(mut tx: Tx, mut rx: Rx, stop: Arc<AtomicBool>) -> Result<Received> {
    let mut received = Received::default();
    let mut acks = Joined::new(rx.server_joins);
    let mut ack = String::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(next) = tokio::time::timeout(Duration::from_millis(100), rx.next()).await else {
            continue;
        };
        let mut next = Some(next);
        while let Some(read) = next {
            let text = read.context("subscriber connection failed")?;
            if ack_for(text.as_str(), &mut received, &mut ack) {
                acks.push(&mut tx, &ack).await?;
            }
            next = rx.ready();
        }
        acks.flush(&mut tx).await?;
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealbus::protocol::{ClientFrame, Codec, Message, Payload, Qos, ServerFrame};

    /// A `message` frame as the server writes a copy: its fields, then `did`/`aid` and the
    /// flags (all three set with `dup`, the longest tail a copy can have).
    fn copy(did: Option<u64>, aid: Option<u64>, dup: bool) -> String {
        let frame = ServerFrame::Message(Message {
            topic: "run/q1".into(),
            data: Payload::Bytes(vec![7; 128]),
            from: "run-q1-pub".into(),
            ts: 1,
            offset: Some(12),
            mid: Some("e-12".into()),
            qos: Qos::AtLeastOnce,
            retained: dup,
            replay: dup,
            did,
            aid,
            dup,
        });
        Codec::encode_server(&frame).expect("encodes")
    }

    #[test]
    fn answers_what_the_copy_asks_for_with_a_frame_the_server_reads() {
        let mut received = Received::default();
        let codec = Codec::new(usize::MAX);
        for (did, aid, dup) in [
            (Some(17), None, false),
            (Some(18), Some(9), true),
            (None, Some(10), false),
            (Some((1 << 53) - 1), Some((1 << 53) - 1), true),
        ] {
            let mut ack = String::new();
            assert!(ack_for(&copy(did, aid, dup), &mut received, &mut ack));
            let ClientFrame::Ack(ack) = codec.decode_client(ack.as_bytes()).expect("decodes")
            else {
                panic!("not an ack: {ack}");
            };
            assert_eq!((ack.did, ack.aid, ack.ok), (did, aid, true));
        }
        assert_eq!(
            received,
            Received {
                copies: 3,
                duplicates: 2,
                acked: 4
            }
        );
        let mut ack = String::new();
        assert!(!ack_for(&copy(None, None, false), &mut received, &mut ack));
        assert!(!ack_for(
            "{\"type\":\"pong\",\"id\":3}",
            &mut received,
            &mut ack
        ));
    }
}
