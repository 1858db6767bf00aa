//! Connection options shared by the client subcommands (`pub`, `sub`), read from flags and the
//! environment, and the conversions between command-line text and message data.

use std::time::Duration;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sealbus::client::{Client, ClientOptions};
use sealbus::crypto::{Key, Keyring};
use sealbus::engine::{Data, Message, ReconnectPolicy};
use serde_json::{Value, json};

/// How to reach and join a session.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ConnArgs {
    /// WebSocket URL of the server.
    #[arg(long, env = "SEALBUS_URL", default_value = "ws://127.0.0.1:7070/ws")]
    pub(crate) url: String,
    /// Session (virtual broker) to join.
    #[arg(long, env = "SEALBUS_SESSION", default_value = "demo")]
    pub(crate) session: String,
    /// Session password (or use --token).
    #[arg(long, env = "SEALBUS_PASSWORD", hide_env_values = true)]
    pub(crate) password: Option<String>,
    /// Client token minted by `sealbus token` or the admin API.
    #[arg(
        long,
        env = "SEALBUS_TOKEN",
        hide_env_values = true,
        conflicts_with = "password"
    )]
    pub(crate) token: Option<String>,
    /// Client id to use (the server assigns one when absent).
    #[arg(long, env = "SEALBUS_CLIENT_ID")]
    pub(crate) client_id: Option<String>,
    /// End-to-end key (base64, from `sealbus keygen`): seal what is published, open what arrives.
    #[arg(long, env = "SEALBUS_KEY", hide_env_values = true)]
    pub(crate) key: Option<String>,
}

impl ConnArgs {
    /// Connects, failing fast instead of retrying when the server is not there.
    pub(crate) async fn connect(&self) -> Result<Client> {
        let mut options = ClientOptions::new(&self.url, &self.session).reconnect(ReconnectPolicy {
            retry_initial_connect: false,
            ..ReconnectPolicy::default()
        });
        options = match (&self.password, &self.token) {
            (_, Some(token)) => options.token(token),
            (Some(password), None) => options.password(password),
            (None, None) => anyhow::bail!(
                "no credentials: pass --password or --token (or set SEALBUS_PASSWORD / SEALBUS_TOKEN)"
            ),
        };
        if let Some(client_id) = &self.client_id {
            options = options.client_id(client_id);
        }
        if let Some(key) = &self.key {
            let key = Key::from_base64(key)
                .map_err(|err| anyhow::anyhow!("--key: {err} [{}]", err.code().name()))?;
            options = options.keyring(Keyring::with_key(key));
        }
        let connecting = Client::connect(options);
        tokio::time::timeout(Duration::from_secs(15), connecting)
            .await
            .with_context(|| format!("no answer from {} within 15 s", self.url))?
            .map_err(|err| described(&err))
            .with_context(|| format!("connecting to {} (session `{}`)", self.url, self.session))
    }
}

/// An SDK error as a message that names its stable code.
pub(crate) fn described(err: &sealbus::Error) -> anyhow::Error {
    let code = err.code();
    anyhow::anyhow!("{err} [{} {}]", code.name(), code.number())
}

/// How a MESSAGE argument becomes data.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default)]
pub(crate) enum Format {
    /// JSON when the text is valid JSON (`42`, `{"a":1}`, `"x"`), a JSON string otherwise.
    #[default]
    Auto,
    /// Always a JSON string.
    String,
    /// The text's UTF-8 bytes as raw bytes.
    Bytes,
}

/// Turns command-line text into message data.
pub(crate) fn data_from_text(text: &str, format: Format) -> Data {
    match format {
        Format::Auto => serde_json::from_str(text)
            .map(Data::Json)
            .unwrap_or_else(|_| Data::Json(Value::String(text.to_owned()))),
        Format::String => Data::Json(Value::String(text.to_owned())),
        Format::Bytes => Data::Bytes(text.as_bytes().to_vec()),
    }
}

/// Data as a human reads it: JSON as compact JSON text, bytes as UTF-8 when they are, else base64.
pub(crate) fn data_for_humans(data: &Data) -> String {
    match data {
        Data::Json(value) => value.to_string(),
        Data::Bytes(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => format!("bytes {text:?}"),
            Err(_) => format!("bytes base64:{}", BASE64.encode(bytes)),
        },
    }
}

/// Data in the protocol's payload form, for `--json` output.
pub(crate) fn data_as_json(data: &Data) -> Value {
    match data {
        Data::Json(value) => json!({ "json": value }),
        Data::Bytes(bytes) => json!({ "bytes": BASE64.encode(bytes) }),
    }
}

/// A received message as one line of JSON.
pub(crate) fn message_as_json(message: &Message) -> Value {
    json!({
        "topic": message.topic,
        "from": message.from,
        "ts": message.ts,
        "offset": message.offset,
        "mid": message.mid,
        "qos": message.qos.as_u8(),
        "encrypted": message.encrypted,
        "direct": message.direct,
        "retained": message.retained,
        "replay": message.replay,
        "data": data_as_json(&message.data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_text_becomes_json_when_it_is_json() {
        assert_eq!(data_from_text("42", Format::Auto), Data::Json(json!(42)));
        assert_eq!(
            data_from_text(r#"{"a":[1]}"#, Format::Auto),
            Data::Json(json!({"a": [1]}))
        );
        assert_eq!(
            data_from_text("hello", Format::Auto),
            Data::Json(json!("hello"))
        );
        assert_eq!(
            data_from_text("42", Format::String),
            Data::Json(json!("42"))
        );
        assert_eq!(
            data_from_text("hi", Format::Bytes),
            Data::Bytes(b"hi".to_vec())
        );
    }

    #[test]
    fn bytes_print_as_text_or_base64() {
        assert_eq!(
            data_for_humans(&Data::Bytes(b"ok".to_vec())),
            "bytes \"ok\""
        );
        assert_eq!(
            data_for_humans(&Data::Bytes(vec![0xff])),
            "bytes base64:/w=="
        );
        assert_eq!(
            data_as_json(&Data::Bytes(vec![0xff])),
            json!({"bytes": "/w=="})
        );
    }
}
