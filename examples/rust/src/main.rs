//! Sensors publish end-to-end encrypted readings; a dashboard shows them and acknowledges each
//! one, and every sensor learns which dashboards handled its reading.
//!
//! Start a server with `cargo xtask serve` (session `demo`, password `demo`), then run
//! `cargo run -p sealbus-example-rust`. `SEALBUS_URL`, `SEALBUS_SESSION` and `SEALBUS_PASSWORD`
//! point it elsewhere.

use std::time::Duration;

use anyhow::Result;
use sealbus::client::{Client, ClientOptions, handler};
use sealbus::crypto::{Key, Keyring};
use sealbus::engine::{Data, Message, PublishOptions};
use serde_json::json;

fn options(client_id: &str, keyring: &Keyring) -> ClientOptions {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    ClientOptions::new(
        env("SEALBUS_URL", "ws://127.0.0.1:7070/ws"),
        env("SEALBUS_SESSION", "demo"),
    )
    .password(env("SEALBUS_PASSWORD", "demo"))
    .client_id(client_id)
    .keyring(keyring.clone())
}

#[tokio::main]
async fn main() -> Result<()> {
    // In real life the key is generated once (`sealbus keygen`) and shared out of band.
    let keyring = Keyring::with_key(Key::generate()?);

    let dashboard = Client::connect(options("dashboard", &keyring)).await?;
    dashboard
        .subscribe(
            "sensors/+/temperature",
            handler(|reading: Message| async move {
                let Data::Json(value) = &reading.data else {
                    return Err("expected a JSON reading".to_owned());
                };
                let celsius = value["celsius"].as_f64().ok_or("reading without celsius")?;
                println!(
                    "dashboard: {} says {celsius:.1} °C (sealed: {})",
                    reading.from, reading.encrypted
                );
                if celsius > 60.0 {
                    return Err(format!("{celsius} °C is out of range"));
                }
                Ok(())
            }),
        )
        .await?;

    for (sensor, celsius) in [("kitchen", 21.5), ("garage", 8.25), ("oven", 230.0)] {
        let client = Client::connect(options(&format!("sensor-{sensor}"), &keyring)).await?;
        let ack = client
            .publish_with_ack(
                &format!("sensors/{sensor}/temperature"),
                Data::Json(json!({ "celsius": celsius })),
                PublishOptions::default(),
                Some(Duration::from_secs(5)),
            )
            .await?;
        let result = ack.wait().await;
        for (who, reply) in &result.responses {
            match &reply.error {
                None => println!("sensor-{sensor}: {who} acknowledged"),
                Some(error) => println!("sensor-{sensor}: {who} rejected it: {error}"),
            }
        }
        client.close().await;
    }
    dashboard.close().await;
    Ok(())
}
