//! The `client` scenario: the Rust SDK's own figures over a real socket.
//!
//! Unlike the other scenarios, which speak raw frames to measure the server, this one goes
//! through the public [`sealbus::client::Client`], 128-byte byte payloads, plain and sealed with
//! an end-to-end key:
//!
//! * **publish**: one client keeps a window of `publish` calls in flight (QoS 0 resolves when
//!   the frame is handed to the socket, QoS 1 when the server confirms) and counts completions.
//!   A QoS 0 run ends with one QoS 1 publish, so its time includes the server reading every frame.
//!   Nobody subscribes: the figure is the client plus the server's ingest.
//! * **receive**: one client subscribes with a handler that counts each message (opened, when
//!   sealed) and its latency from a timestamp inside the payload. A raw-frame publisher feeds it
//!   and stays at most a window of messages ahead of what the handler has counted, so the figure
//!   is the subscriber's pace, not an overflow; QoS 0 copies the server still drops for a full
//!   queue are read from its `/metrics` and reported, as are messages that never arrived.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use sealbus::client::{Client, ClientEvent, ClientOptions, handler};
use sealbus::crypto::{Key, Keyring};
use sealbus::engine::{ConnectionState, Data, KIND_BYTES, Message, PublishOptions};
use sealbus::protocol::{ClientFrame, Codec, Payload, Publish, Qos, ServerFrame};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::conn::{self, Rx, Target};
use super::scenarios::{PAYLOAD_BYTES, percentile, run_prefix};

/// One measured combination.
#[derive(Clone, Copy)]
struct Case {
    qos: Qos,
    sealed: bool,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let qos = match self.qos {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        };
        let form = if self.sealed { "sealed" } else { "plain" };
        write!(f, "QoS {qos} {form:<6}")
    }
}

/// Every combination, plain before sealed.
const CASES: [Case; 4] = [
    Case {
        qos: Qos::AtMostOnce,
        sealed: false,
    },
    Case {
        qos: Qos::AtMostOnce,
        sealed: true,
    },
    Case {
        qos: Qos::AtLeastOnce,
        sealed: false,
    },
    Case {
        qos: Qos::AtLeastOnce,
        sealed: true,
    },
];

/// Most unconfirmed QoS 1 publishes of the feeding publisher: below the server's default
/// `max_inflight` (1 000), so that the confirmation round trip does not limit the feed.
const FEED_UNCONFIRMED: u64 = 900;

/// One summary row.
struct Row {
    what: String,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs the publish and receive measurements, `duration` each, and prints a summary.
pub(crate) async fn run(target: &Target, duration: Duration) -> Result<()> {
    let window = super::load_window(256) as usize;
    let key = Key::generate().context("generating the end-to-end key")?;
    let mut rows = Vec::new();
    for case in CASES {
        rows.push(publishing(target, case, &key, window, duration).await?);
    }
    for case in CASES {
        rows.push(receiving(target, case, &key, window, duration).await?);
    }
    println!("client: summary (one sealbus::Client, 128-byte payloads, {window} in flight/ahead)");
    for row in rows {
        println!(
            "client:   {:<26} {:>9.0} msg/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            row.what, row.rate, row.p50_ms, row.p99_ms
        );
    }
    Ok(())
}

/// Connects an SDK client, with the key when `sealed`.
async fn sdk_client(target: &Target, id: &str, sealed: bool, key: &Key) -> Result<Client> {
    let mut options = ClientOptions::new(&target.url, &target.session)
        .password(&target.password)
        .client_id(id);
    if sealed {
        options = options.keyring(Keyring::with_key(key.clone()));
    }
    Client::connect(options)
        .await
        .with_context(|| format!("connecting the SDK client {id}"))
}

/// One client publishing with `window` calls in flight for `duration`.
async fn publishing(
    target: &Target,
    case: Case,
    key: &Key,
    window: usize,
    duration: Duration,
) -> Result<Row> {
    println!("client: publish {case} for {} s ...", duration.as_secs());
    let prefix = run_prefix();
    let client = sdk_client(target, &format!("{prefix}-pub"), case.sealed, key).await?;
    let topic = format!("{prefix}/pub");
    let payload = vec![7u8; PAYLOAD_BYTES];
    let options = PublishOptions {
        qos: case.qos,
        ..PublishOptions::default()
    };
    let publish = || {
        let (client, topic) = (&client, topic.as_str());
        let data = Data::Bytes(payload.clone());
        let called = Instant::now();
        async move {
            let result = client.publish(topic, data, options).await;
            (result, called.elapsed())
        }
    };
    let began = Instant::now();
    let deadline = began + duration;
    let mut in_flight = FuturesUnordered::new();
    let (mut done, mut failed) = (0u64, 0u64);
    let mut first_error = None;
    let mut latencies = Vec::new();
    loop {
        let open = Instant::now() < deadline;
        while open && in_flight.len() < window {
            in_flight.push(publish());
        }
        let Some((result, took)) = in_flight.next().await else {
            break;
        };
        match result {
            Ok(_) => {
                done += 1;
                latencies.push(took.as_nanos() as u64);
            }
            Err(err) => {
                failed += 1;
                first_error.get_or_insert(err);
            }
        }
    }
    if case.qos == Qos::AtMostOnce {
        // QoS 0 resolves once written; a confirmed publish behind them ends when the server has
        // read them all.
        let barrier = PublishOptions {
            qos: Qos::AtLeastOnce,
            ..options
        };
        client
            .publish(&topic, Data::Bytes(payload.clone()), barrier)
            .await
            .context("the closing QoS 1 publish")?;
    }
    let elapsed = began.elapsed().as_secs_f64();
    client.close().await;
    latencies.sort_unstable();
    let rate = done as f64 / elapsed;
    let resolved = match case.qos {
        Qos::AtMostOnce => "call to sent",
        Qos::AtLeastOnce => "call to confirmed",
    };
    println!(
        "client: publish {case}: {done} in {elapsed:.2} s = {rate:.0}/s, {failed} failed{}; \
         {resolved} p50 {:.2} ms, p99 {:.2} ms",
        first_error
            .map(|err| format!(" (first: {err})"))
            .unwrap_or_default(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );
    Ok(Row {
        what: format!("publish {case}"),
        rate,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    })
}

/// What the subscriber's handler counted.
#[derive(Default)]
struct Counted {
    received: AtomicU64,
    /// Messages that arrived sealed and were opened.
    opened: AtomicU64,
    /// Nanoseconds from the publisher's stamp to the handler.
    latencies: Mutex<Vec<u64>>,
    /// The feeding publisher's QoS 1 publishes the server confirmed.
    confirmed: AtomicU64,
    /// Wakes the publisher when it may send more (a message handled or a publish confirmed).
    progress: Notify,
}

impl Counted {
    fn record(&self, message: &Message, start: Instant) {
        let now = start.elapsed().as_nanos() as u64;
        let stamp = message
            .data
            .as_bytes()
            .and_then(|bytes| bytes.get(..8))
            .and_then(|head| head.try_into().ok())
            .map(u64::from_le_bytes);
        if let Some(sent) = stamp {
            let mut latencies = self
                .latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            latencies.push(now.saturating_sub(sent));
        }
        self.opened
            .fetch_add(u64::from(message.encrypted), Ordering::Relaxed);
        self.received.fetch_add(1, Ordering::Relaxed);
        self.progress.notify_one();
    }
}

/// Reconnects and errors the subscribing client reported.
#[derive(Default)]
struct Trouble {
    reconnects: AtomicU64,
    errors: AtomicU64,
}

/// One subscribing client fed by a raw publisher that keeps `window` messages ahead of it.
async fn receiving(
    target: &Target,
    case: Case,
    key: &Key,
    window: usize,
    duration: Duration,
) -> Result<Row> {
    println!("client: receive {case} for {} s ...", duration.as_secs());
    let prefix = run_prefix();
    let topic = format!("{prefix}/recv");
    let start = Instant::now();
    let counted = Arc::new(Counted::default());
    let client = sdk_client(target, &format!("{prefix}-sub"), case.sealed, key).await?;
    let trouble = Arc::new(Trouble::default());
    let mut events = client.events();
    let watcher = {
        let trouble = trouble.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    ClientEvent::State(ConnectionState::Reconnecting { .. }) => {
                        trouble.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ClientEvent::Error(_) => {
                        trouble.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        })
    };
    let on_message = counted.clone();
    let _subscription = client
        .subscribe(
            &topic,
            handler(move |message| {
                on_message.record(&message, start);
                async { Ok(()) }
            }),
        )
        .await?;
    let drops_before = server_drops(target).await;
    let (mut tx, rx) = conn::connect(target, &format!("{prefix}-feed")).await?;
    let reader = tokio::spawn(read_answers(rx, counted.clone()));
    let keyring = case.sealed.then(|| Keyring::with_key(key.clone()));
    let window = window as u64;
    let began = Instant::now();
    let deadline = began + duration;
    let mut sent = 0u64;
    while Instant::now() < deadline {
        let received = counted.received.load(Ordering::Relaxed);
        let unconfirmed = match case.qos {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => sent - counted.confirmed.load(Ordering::Relaxed),
        };
        let ahead = sent.saturating_sub(received);
        if ahead >= window || unconfirmed + 64 > FEED_UNCONFIRMED {
            // A timeout only re-checks the deadline (the subscriber may have stalled).
            let _ =
                tokio::time::timeout(Duration::from_millis(100), counted.progress.notified()).await;
            continue;
        }
        for _ in 0..(window - ahead).min(64) {
            sent += 1;
            let frame = feed_frame(&topic, case.qos, sent, start, keyring.as_ref())?;
            tx.feed(WsMessage::text(Codec::encode_client(&frame)?))
                .await?;
        }
        tx.flush().await?;
    }
    let in_time = counted.received.load(Ordering::Relaxed);
    let elapsed = began.elapsed().as_secs_f64();
    // Let what is on its way arrive, then count the rest as lost.
    let settle = Instant::now() + Duration::from_secs(3);
    while counted.received.load(Ordering::Relaxed) < sent && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drops_after = server_drops(target).await;
    let received = counted.received.load(Ordering::Relaxed);
    let opened = counted.opened.load(Ordering::Relaxed);
    let _ = tx.close().await;
    if reader.is_finished() {
        reader.await??;
    } else {
        reader.abort();
    }
    client.close().await;
    // The event stream ends only with the last clone of the client; stop watching instead.
    watcher.abort();
    let mut latencies = std::mem::take(
        &mut *counted
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    latencies.sort_unstable();
    let rate = in_time as f64 / elapsed;
    let dropped = match (drops_before, drops_after) {
        (Some(before), Some(after)) => format!("{}", after.saturating_sub(before)),
        _ => "unknown (no /metrics)".to_owned(),
    };
    println!(
        "client: receive {case}: {in_time} handled in {elapsed:.2} s = {rate:.0}/s ({opened} of \
         {received} opened); {sent} sent, {} never arrived, server dropped {dropped}, \
         {} reconnects, {} client errors; latency p50 {:.2} ms, p99 {:.2} ms",
        sent.saturating_sub(received),
        trouble.reconnects.load(Ordering::Relaxed),
        trouble.errors.load(Ordering::Relaxed),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );
    if case.sealed && opened != received {
        bail!("{} sealed messages arrived unopened", received - opened);
    }
    Ok(Row {
        what: format!("receive {case}"),
        rate,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    })
}

/// Publish frame number `id` with a stamped 128-byte payload, sealed with `keyring` if given.
fn feed_frame(
    topic: &str,
    qos: Qos,
    id: u64,
    start: Instant,
    keyring: Option<&Keyring>,
) -> Result<ClientFrame> {
    let mut data = vec![0u8; PAYLOAD_BYTES];
    data[..8].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_le_bytes());
    let data = match keyring {
        None => Payload::Bytes(data),
        Some(keyring) => {
            let mut plain = Vec::with_capacity(PAYLOAD_BYTES + 1);
            plain.push(KIND_BYTES);
            plain.extend_from_slice(&data);
            Payload::Sealed(keyring.seal(topic, &plain)?)
        }
    };
    Ok(ClientFrame::Publish(Publish {
        id: (qos == Qos::AtLeastOnce).then_some(id),
        mid: None,
        topic: topic.to_owned(),
        data,
        qos,
        retain: false,
        ack: None,
        notify_dead: false,
    }))
}

/// Reads the feeding connection's answers (so its queue never fills), counting confirmations.
async fn read_answers(mut rx: Rx, counted: Arc<Counted>) -> Result<()> {
    loop {
        match conn::recv(&mut rx).await? {
            ServerFrame::Published(_) => {
                counted.confirmed.fetch_add(1, Ordering::Relaxed);
                counted.progress.notify_one();
            }
            ServerFrame::Error(err) => bail!("feeding publish failed: {}", err.message),
            _ => {}
        }
    }
}

/// The server's count of dropped QoS 0 copies in the target session, from `/metrics` on the
/// WebSocket's host and port; `None` when it cannot be read.
async fn server_drops(target: &Target) -> Option<u64> {
    let (_, text) = conn::http(target, "GET", "/metrics", None, None)
        .await
        .ok()?;
    let row = format!("sealbus_drops_total{{session=\"{}\"}} ", target.session);
    text.lines()
        .find_map(|line| line.strip_prefix(&row))
        .and_then(|value| value.trim().parse().ok())
}
