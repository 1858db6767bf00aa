//! `sealbus pub`, `sealbus sub` and `sealbus keygen`: the client side of the command line.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Result, bail};
use sealbus::client::{ClientEvent, handler};
use sealbus::crypto::Key;
use sealbus::engine::{AckFinish, PublishOptions};
use sealbus::protocol::Qos;
use serde_json::json;

use crate::conn::{ConnArgs, Format, data_for_humans, data_from_text, described, message_as_json};

/// Options of `sealbus pub`.
#[derive(clap::Args, Debug)]
pub(crate) struct PubArgs {
    /// Topic to publish to (no wildcards).
    topic: String,
    /// The message: JSON when it parses as JSON, else a string (see --format).
    message: String,
    #[command(flatten)]
    conn: ConnArgs,
    /// How MESSAGE becomes data.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    format: Format,
    /// Quality of service: 0 fire and forget, 1 stored and retried until acknowledged.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Keep as the topic's retained message (an empty message clears it).
    #[arg(long)]
    retain: bool,
    /// Wait for every subscriber's response and print it (publish_with_ack).
    #[arg(long)]
    ack: bool,
    /// How long --ack waits for responses, in seconds.
    #[arg(long, default_value_t = 5.0, requires = "ack")]
    timeout: f64,
    /// Send to this client id instead of the topic's subscribers (publish_to_id; TOPIC is ignored
    /// and may be `-`).
    #[arg(long)]
    to: Option<String>,
    /// Print results as JSON lines.
    #[arg(long)]
    json: bool,
}

/// Options of `sealbus sub`.
#[derive(clap::Args, Debug)]
pub(crate) struct SubArgs {
    /// Filters to subscribe to (`+` matches one level, `#` the rest).
    #[arg(required = true)]
    filters: Vec<String>,
    #[command(flatten)]
    conn: ConnArgs,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Print each message as one line of JSON.
    #[arg(long)]
    json: bool,
    /// Answer messages that ask for a response with this error instead of success.
    #[arg(long)]
    fail_with: Option<String>,
}

/// Options of `sealbus keygen`.
#[derive(clap::Args, Debug)]
pub(crate) struct KeygenArgs {
    /// Print `{"key": ..., "key_id": ...}` instead of the bare key.
    #[arg(long)]
    json: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `sealbus pub`.
pub(crate) fn run_pub(args: PubArgs) -> Result<()> {
    runtime()?.block_on(publish(args))
}

async fn publish(args: PubArgs) -> Result<()> {
    let client = args.conn.connect().await?;
    let data = data_from_text(&args.message, args.format);
    let options = PublishOptions {
        qos: if args.qos == 1 {
            Qos::AtLeastOnce
        } else {
            Qos::AtMostOnce
        },
        retain: args.retain,
        ..PublishOptions::default()
    };
    if !args.ack {
        let result = match &args.to {
            Some(to) => client.publish_to_id(to, data, options).await,
            None => client.publish(&args.topic, data, options).await,
        }
        .map_err(|err| described(&err))?;
        if args.json {
            println!(
                "{}",
                json!({"published": true, "mid": result.mid, "offset": result.offset})
            );
        } else if args.qos == 1 {
            let offset = result
                .offset
                .map(|o| format!(" at offset {o}"))
                .unwrap_or_default();
            println!("stored{offset} (mid {})", result.mid.unwrap_or_default());
        }
        client.close().await;
        return Ok(());
    }
    let timeout = Some(Duration::from_secs_f64(args.timeout.max(0.001)));
    let handle = match &args.to {
        Some(to) => {
            client
                .publish_to_id_with_ack(to, data, options, timeout)
                .await
        }
        None => {
            client
                .publish_with_ack(&args.topic, data, options, timeout)
                .await
        }
    }
    .map_err(|err| described(&err))?;
    let result = handle.wait().await;
    let mut all_ok = matches!(result.outcome, AckFinish::Complete);
    for client_id in &result.expected {
        let reply = result.responses.get(client_id);
        all_ok &= reply.is_some_and(|r| r.ok);
        if args.json {
            let line = match reply {
                Some(r) => json!({"client": client_id, "ok": r.ok,
                    "code": r.code.map(|c| c.name()), "error": r.error}),
                None => json!({"client": client_id, "ok": null, "error": "no response"}),
            };
            println!("{line}");
        } else {
            match reply {
                Some(r) if r.ok => println!("{client_id}: ok"),
                Some(r) => println!(
                    "{client_id}: error [{}] {}",
                    r.code.map(|c| c.name()).unwrap_or("error"),
                    r.error.as_deref().unwrap_or("")
                ),
                None => println!("{client_id}: no response"),
            }
        }
    }
    let outcome = match &result.outcome {
        AckFinish::Complete => "complete".to_owned(),
        AckFinish::Timeout => "timeout".to_owned(),
        AckFinish::Cancelled => "cancelled".to_owned(),
        AckFinish::Disconnected => "disconnected".to_owned(),
        AckFinish::Failed(err) => return Err(described(err)),
    };
    if args.json {
        println!(
            "{}",
            json!({"outcome": outcome, "expected": result.expected.len(),
            "answered": result.responses.len()})
        );
    } else {
        println!(
            "{outcome}: {} of {} subscribers answered",
            result.responses.len(),
            result.expected.len()
        );
    }
    client.close().await;
    if !all_ok {
        bail!("not every subscriber answered with success ({outcome})");
    }
    Ok(())
}

/// `sealbus sub`.
pub(crate) fn run_sub(args: SubArgs) -> Result<()> {
    runtime()?.block_on(subscribe(args))
}

async fn subscribe(args: SubArgs) -> Result<()> {
    let client = args.conn.connect().await?;
    let mut events = client.events();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut subscriptions = Vec::new();
    for filter in &args.filters {
        let tx = tx.clone();
        let answer = args.fail_with.clone();
        let on_message = handler(move |message| {
            let _ = tx.send(message);
            let answer = answer.clone();
            async move { answer.map_or(Ok(()), Err) }
        });
        let subscription = client
            .subscribe(filter, on_message)
            .await
            .map_err(|err| described(&err))?;
        subscriptions.push(subscription);
    }
    drop(tx);
    // One message reaches every handler whose filter matches; print it once.
    let mut recent = std::collections::VecDeque::with_capacity(RECENT_OFFSETS);
    eprintln!("subscribed to {}; Ctrl-C to stop", args.filters.join(", "));
    let mut seen = 0u64;
    loop {
        tokio::select! {
            message = rx.recv() => {
                let Some(message) = message else { break };
                if let Some(offset) = message.offset {
                    if recent.contains(&offset) {
                        continue;
                    }
                    if recent.len() == RECENT_OFFSETS {
                        recent.pop_front();
                    }
                    recent.push_back(offset);
                }
                let line = if args.json {
                    message_as_json(&message).to_string()
                } else {
                    let lock = if message.encrypted { " (sealed)" } else { "" };
                    let offset = message.offset.map(|o| format!(" #{o}")).unwrap_or_default();
                    format!("{}{offset} from {}{lock}: {}", message.topic, message.from,
                        data_for_humans(&message.data))
                };
                // Whoever reads the output may stop (`| head -3`): then the subscription ends
                // quietly, as other command-line tools do, instead of a panic in `println!`.
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
                    break;
                }
                seen += 1;
                if args.count.is_some_and(|count| seen >= count) {
                    break;
                }
            }
            event = events.next() => match event {
                Some(ClientEvent::Error(err)) => eprintln!("warning: {}", described(&err)),
                Some(ClientEvent::State(state)) => eprintln!("connection: {state:?}"),
                Some(ClientEvent::NotRecovered { filter }) => {
                    eprintln!("warning: messages on {filter} may have been missed while disconnected");
                }
                Some(ClientEvent::DeadLetter { .. }) | None => {}
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(subscriptions);
    client.close().await;
    Ok(())
}

/// How many recent offsets `sub` remembers to print a message matched by several filters once.
const RECENT_OFFSETS: usize = 1024;

/// `sealbus keygen`.
pub(crate) fn run_keygen(args: KeygenArgs) -> Result<()> {
    let key = Key::generate().map_err(|err| anyhow::anyhow!("{err}"))?;
    if args.json {
        println!(
            "{}",
            json!({"key": key.to_base64(), "key_id": key.id().to_string()})
        );
    } else {
        println!("{}", key.to_base64());
        eprintln!(
            "key id {}: share the key with your peers over a confidential channel",
            key.id()
        );
    }
    Ok(())
}
