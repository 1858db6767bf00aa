//! A Rust peer for the cross-language end-to-end tests (the JS binding's tests spawn it).
//!
//! ```text
//! e2e_peer URL KEY publish TOPIC JSON   publish JSON sealed with KEY (QoS 1), then exit
//! e2e_peer URL KEY echo FILTER          print `ready`, then re-publish the first message on
//!                                       FILTER to `<topic>/echo` sealed again, then exit
//! ```
//!
//! Connects to session `demo` with password `demo` (as started by `sealbus serve --demo`).

use std::time::Duration;

use sealbus::client::{Client, ClientOptions, handler};
use sealbus::crypto::{Key, Keyring};
use sealbus::engine::{Data, PublishOptions};
use sealbus::protocol::Qos;
use tokio::sync::mpsc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, key, mode, target, rest @ ..] = args.as_slice() else {
        return Err("usage: e2e_peer URL KEY (publish TOPIC JSON | echo FILTER)".into());
    };
    let options = ClientOptions::new(url.as_str(), "demo")
        .password("demo")
        .keyring(Keyring::with_key(Key::from_base64(key)?));
    let client = Client::connect(options).await?;
    let qos1 = PublishOptions {
        qos: Qos::AtLeastOnce,
        ..PublishOptions::default()
    };
    match mode.as_str() {
        "publish" => {
            let json = rest.first().ok_or("publish needs JSON")?;
            let data = Data::Json(serde_json::from_str(json)?);
            client.publish(target, data, qos1).await?;
            println!("published");
        }
        "echo" => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let _sub = client
                .subscribe(
                    target,
                    handler(move |message| {
                        let tx = tx.clone();
                        async move {
                            let _ = tx.send(message);
                            Ok(())
                        }
                    }),
                )
                .await?;
            println!("ready");
            let message = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await?
                .ok_or("no message")?;
            let kind = match &message.data {
                Data::Bytes(_) => "bytes",
                Data::Json(_) => "json",
            };
            let topic = format!("{}/echo", message.topic);
            client.publish(&topic, message.data, qos1).await?;
            println!("echoed {kind} encrypted={}", message.encrypted);
        }
        other => return Err(format!("unknown mode {other}").into()),
    }
    client.close().await;
    Ok(())
}
