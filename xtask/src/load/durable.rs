//! The QoS 1 scenario: confirmed publishes per second with acknowledging subscribers.
//!
//! One publisher keeps a window of QoS 1 publishes in flight and counts the `published`
//! confirmations (sent by the server once its store holds the message); each subscriber
//! acknowledges every copy by its delivery id. The figure is confirmed publishes per second, and
//! the run checks that every subscriber received every confirmed message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use sealbus::protocol::{Payload, Publish, Qos, ServerFrame};

use super::acker::Ackers;
use super::conn::{self, PublishTemplate, Target};
use super::scenarios::{PAYLOAD_BYTES, percentile, run_prefix};

/// QoS 1 publishes with `window` in flight to `subscribers` acknowledging subscribers for
/// `duration`; prints confirmed publishes/s, confirmation latency and whether every copy
/// arrived, and returns the confirmed publishes/s. A confirmed message that a subscriber did not
/// receive is an error (after the figures are printed).
pub(crate) async fn qos1(
    target: &Target,
    label: &str,
    subscribers: usize,
    duration: Duration,
) -> Result<f64> {
    let window = super::load_window(256);
    let prefix = run_prefix();
    let topic = format!("{prefix}/q1");
    let ackers = Ackers::start(target, &format!("{prefix}-q1-sub"), &topic, subscribers).await?;
    let (mut tx, mut rx) = conn::connect(target, &format!("{prefix}-q1-pub")).await?;
    let template = PublishTemplate::new(Publish {
        id: None,
        mid: None,
        topic: topic.clone(),
        data: Payload::Bytes(vec![7; PAYLOAD_BYTES]),
        qos: Qos::AtLeastOnce,
        retain: false,
        ack: None,
        notify_dead: false,
    })?;
    let began = Instant::now();
    let deadline = began + duration;
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let (mut next_id, mut confirmed) = (1u64, 0u64);
    let mut latencies = Vec::new();
    let mut publishes = conn::Joined::new(rx.server_joins);
    while Instant::now() < deadline || !sent_at.is_empty() {
        while (sent_at.len() as u64) < window && Instant::now() < deadline {
            publishes.push(&mut tx, &template.with_id(next_id)).await?;
            sent_at.insert(next_id, Instant::now());
            next_id += 1;
        }
        publishes.flush(&mut tx).await?;
        // Every confirmation that arrived together is counted before the window is refilled,
        // so that the refill goes out as one write, as a client's would.
        let first = tokio::time::timeout(Duration::from_secs(15), conn::recv(&mut rx)).await;
        let mut frame = match first {
            Err(_) => bail!("no confirmation for 15 s ({} in flight)", sent_at.len()),
            Ok(frame) => Some(frame?),
        };
        while let Some(got) = frame {
            match got {
                ServerFrame::Published(published) => {
                    if let Some(at) = sent_at.remove(&published.id) {
                        latencies.push(at.elapsed().as_nanos() as u64);
                        confirmed += 1;
                    }
                }
                ServerFrame::Error(err) => bail!("QoS 1 publish failed: {}", err.message),
                _ => {}
            }
            frame = conn::ready(&mut rx).transpose()?;
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    // Let the last copies arrive before counting: with the generator on the same cores its
    // subscribers can trail the server by a few hundred milliseconds of socket buffers (one run
    // with a single-threaded generator counted copies still in flight after 1 s). Less than the
    // retry interval, so a redelivery cannot hide a loss.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut copies, mut duplicates, mut short) = (0u64, 0u64, 0usize);
    for received in ackers.stop().await? {
        copies += received.copies;
        duplicates += received.duplicates;
        short += usize::from(received.copies - received.duplicates < confirmed);
    }
    latencies.sort_unstable();
    println!(
        "qos1 [{label}] 1 -> {subscribers} acking subscribers, {window} in flight: {confirmed} \
         confirmed ({:.0}/s), {copies} copies delivered ({:.0}/s, {duplicates} redeliveries), \
         {short} subscribers missing messages; confirm latency p50 {:.2} ms, p99 {:.2} ms",
        confirmed as f64 / elapsed,
        copies as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );
    if short > 0 {
        bail!("{short} of {subscribers} subscribers did not receive every confirmed message");
    }
    Ok(confirmed as f64 / elapsed)
}
