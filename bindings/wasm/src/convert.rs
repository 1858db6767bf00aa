//! Conversions between JavaScript values and the engine's types: data, errors, options, events.
//!
//! Data crosses as `Uint8Array` (bytes) or any JSON value, converted through JSON text
//! (`JSON.stringify`/`JSON.parse` on the JS side, `serde_json` with `preserve_order` on the Rust
//! side) so that object key order survives. Everything else crosses as plain objects that the
//! hand-written JS layer (`lib/sdk.js`) turns into its idiomatic API.

use js_sys::{Array, Function, JSON, Object, Reflect, Uint8Array};
use sealbus::Error;
use sealbus::crypto::{Key, Keyring};
use sealbus::engine::{
    AckFinish, AckReply, AckSnapshot, ConnectionState, Data, DeliveryToken, EngineConfig, Event,
    Message, OpId, Outcome,
};
use sealbus::protocol::{Auth, CopyState, ErrorCode};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast as _, JsValue};

/// A plain object built from `(key, value)` pairs.
pub(crate) fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let obj = Object::new();
    for (key, value) in fields {
        // Setting a property on a fresh plain object cannot fail.
        let _ = Reflect::set(&obj, &JsValue::from_str(key), value);
    }
    obj.into()
}

/// An optional string as a JS value (`null` when absent).
fn opt_str(value: Option<&str>) -> JsValue {
    value.map_or(JsValue::NULL, JsValue::from_str)
}

/// An optional number as a JS value (`null` when absent).
fn opt_num(value: Option<u64>) -> JsValue {
    value.map_or(JsValue::NULL, |n| JsValue::from_f64(n as f64))
}

/// Application data from a JS value: a `Uint8Array` is bytes, anything else must be JSON.
pub(crate) fn data_from_js(value: &JsValue) -> Result<Data, Error> {
    if let Some(bytes) = value.dyn_ref::<Uint8Array>() {
        return Ok(Data::Bytes(bytes.to_vec()));
    }
    if value.is_undefined() {
        return Err(Error::InvalidOption(
            "data is undefined: pass a JSON value or a Uint8Array".into(),
        ));
    }
    let text = JSON::stringify(value)
        .ok()
        .and_then(|text| text.as_string())
        .ok_or_else(|| Error::InvalidOption("data is not JSON-serializable".into()))?;
    serde_json::from_str(&text)
        .map(Data::Json)
        .map_err(|err| Error::InvalidOption(format!("data is not valid JSON: {err}")))
}

/// Application data as a JS value: bytes as `Uint8Array`, JSON through `JSON.parse`.
pub(crate) fn data_to_js(data: &Data) -> JsValue {
    match data {
        Data::Bytes(bytes) => Uint8Array::from(bytes.as_slice()).into(),
        Data::Json(value) => {
            // Serializing a `serde_json::Value` cannot fail, and its text is valid JSON.
            let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
            JSON::parse(&text).unwrap_or(JsValue::NULL)
        }
    }
}

/// An error as `{ code, codeName, message }`, which the JS layer turns into a `SealbusError`.
pub(crate) fn error_to_js(err: &Error) -> JsValue {
    code_error(err.code(), &err.to_string())
}

/// `{ code, codeName, message }` for a code and a message.
fn code_error(code: ErrorCode, message: &str) -> JsValue {
    object(&[
        ("code", JsValue::from_f64(f64::from(code.number()))),
        ("codeName", JsValue::from_str(code.name())),
        ("message", JsValue::from_str(message)),
    ])
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn get_str(obj: &JsValue, key: &str) -> Result<Option<String>, Error> {
    let value = get(obj, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value
        .as_string()
        .map(Some)
        .ok_or_else(|| Error::InvalidOption(format!("option `{key}` must be a string")))
}

fn get_u64(obj: &JsValue, key: &str) -> Result<Option<u64>, Error> {
    let value = get(obj, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    match value.as_f64() {
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 => {
            Ok(Some(n as u64))
        }
        _ => Err(Error::InvalidOption(format!(
            "option `{key}` must be a non-negative integer"
        ))),
    }
}

fn get_bool(obj: &JsValue, key: &str) -> Result<Option<bool>, Error> {
    let value = get(obj, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value
        .as_bool()
        .map(Some)
        .ok_or_else(|| Error::InvalidOption(format!("option `{key}` must be a boolean")))
}

/// The server URL and engine configuration from the JS options object.
pub(crate) fn config_from_js(options: &JsValue) -> Result<(String, EngineConfig), Error> {
    if !options.is_object() {
        return Err(Error::InvalidOption("options must be an object".into()));
    }
    let required = |key: &str| {
        get_str(options, key)?
            .ok_or_else(|| Error::InvalidOption(format!("option `{key}` is required")))
    };
    let url = required("url")?;
    let session = required("session")?;
    let auth = match (get_str(options, "password")?, get_str(options, "token")?) {
        (Some(password), None) => Auth::Password(password),
        (None, Some(token)) => Auth::Token(token),
        _ => {
            return Err(Error::InvalidOption(
                "give exactly one of the options `password` and `token`".into(),
            ));
        }
    };
    let mut config = EngineConfig::new(session, auth);
    config.client_id = get_str(options, "clientId")?;
    config.persistent = get_bool(options, "persistent")?.unwrap_or(false);
    if let Some(key) = get_str(options, "key")? {
        config.keyring = Some(Keyring::with_key(Key::from_base64(&key)?));
    }
    config.keepalive_ms = get_u64(options, "keepaliveMs")?;
    config.keepalive_timeout_ms = get_u64(options, "keepaliveTimeoutMs")?;
    if let Some(n) = get_u64(options, "offlineBuffer")? {
        config.offline_buffer = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(ms) = get_u64(options, "requestTimeoutMs")? {
        config.request_timeout_ms = ms;
    }
    let reconnect = get(options, "reconnect");
    if reconnect.is_object() {
        let policy = &mut config.reconnect;
        if let Some(ms) = get_u64(&reconnect, "initialDelayMs")? {
            policy.initial_delay_ms = ms;
        }
        if let Some(ms) = get_u64(&reconnect, "maxDelayMs")? {
            policy.max_delay_ms = ms;
        }
        if let Some(n) = get_u64(&reconnect, "maxAttempts")? {
            policy.max_attempts = Some(u32::try_from(n).unwrap_or(u32::MAX));
        }
        if let Some(retry) = get_bool(&reconnect, "retryInitialConnect")? {
            policy.retry_initial_connect = retry;
        }
    }
    Ok((url, config))
}

fn state_to_js(state: &ConnectionState, client_id: Option<&str>) -> JsValue {
    let (name, extra): (&str, (&str, JsValue)) = match state {
        ConnectionState::Connecting => ("connecting", ("clientId", opt_str(client_id))),
        ConnectionState::Connected => ("connected", ("clientId", opt_str(client_id))),
        ConnectionState::Reconnecting { attempt } => {
            ("reconnecting", ("attempt", JsValue::from(*attempt)))
        }
        ConnectionState::Disconnected { reason } => {
            ("disconnected", ("reason", JsValue::from_str(reason)))
        }
        ConnectionState::Closed { error } => (
            "closed",
            ("error", error.as_ref().map_or(JsValue::NULL, error_to_js)),
        ),
    };
    object(&[
        ("type", JsValue::from_str("state")),
        ("state", JsValue::from_str(name)),
        extra,
    ])
}

fn outcome_to_js(outcome: &Outcome) -> JsValue {
    match outcome {
        Outcome::Subscribed { filter } => object(&[("filter", JsValue::from_str(filter))]),
        Outcome::Unsubscribed => object(&[]),
        Outcome::Published {
            mid,
            offset,
            duplicate,
            queued,
        } => object(&[
            ("mid", opt_str(mid.as_deref())),
            ("offset", opt_num(*offset)),
            ("duplicate", JsValue::from_bool(*duplicate)),
            ("queued", JsValue::from_bool(*queued)),
        ]),
        Outcome::Delivery(report) => {
            let copies: Array = report
                .copies
                .iter()
                .map(|copy| {
                    let state = match copy.state {
                        CopyState::Pending => "pending",
                        CopyState::Delivered => "delivered",
                        CopyState::Acknowledged => "acknowledged",
                        CopyState::Dead => "dead",
                    };
                    object(&[
                        ("client", JsValue::from_str(&copy.client)),
                        ("state", JsValue::from_str(state)),
                        ("attempts", JsValue::from_f64(f64::from(copy.attempts))),
                    ])
                })
                .collect();
            object(&[
                ("mid", JsValue::from_str(&report.mid)),
                ("topic", JsValue::from_str(&report.topic)),
                ("copies", copies.into()),
            ])
        }
    }
}

/// Bits of the `flags` argument of a delivery (see [`Delivery`]).
const FLAG_ENCRYPTED: u8 = 1;
const FLAG_DIRECT: u8 = 2;
const FLAG_RETAINED: u8 = 4;
const FLAG_REPLAY: u8 = 8;
const FLAG_DUP: u8 = 16;

/// A message converted for the JS layer's delivery function: the values that are not plain
/// numbers are JS values already, the booleans one bit each.
///
/// Deliveries are the hot path, so they do not become an event object built here property by
/// property (one boundary crossing and one key string per field); the driver calls the JS
/// layer's delivery function once with these arguments and the message object is built there
/// as a literal.
pub(crate) struct Delivery {
    handlers: Vec<f64>,
    token: Option<f64>,
    topic: JsValue,
    data: JsValue,
    from: JsValue,
    ts: f64,
    offset: Option<f64>,
    mid: Option<String>,
    qos: u8,
    flags: u8,
}

#[wasm_bindgen]
extern "C" {
    /// The JS layer's delivery function (the second callback of `new Driver`, `lib/sdk.js`).
    type DeliverFn;

    /// Calls it as `deliver(handlers, token, topic, data, from, ts, offset, mid, qos, flags)`.
    #[wasm_bindgen(method, catch, js_name = call)]
    #[allow(clippy::too_many_arguments)]
    fn call_deliver(
        this: &DeliverFn,
        this_arg: &JsValue,
        handlers: Vec<f64>,
        token: Option<f64>,
        topic: &JsValue,
        data: &JsValue,
        from: &JsValue,
        ts: f64,
        offset: Option<f64>,
        mid: Option<String>,
        qos: u8,
        flags: u8,
    ) -> Result<(), JsValue>;
}

impl Delivery {
    /// Hands the delivery to the JS layer's delivery function `deliver`.
    pub(crate) fn call(self, deliver: &Function) -> Result<(), JsValue> {
        deliver.unchecked_ref::<DeliverFn>().call_deliver(
            &JsValue::NULL,
            self.handlers,
            self.token,
            &self.topic,
            &self.data,
            &self.from,
            self.ts,
            self.offset,
            self.mid,
            self.qos,
            self.flags,
        )
    }
}

/// Recently seen strings and their JS values: topics and client ids repeat from message to
/// message, and decoding a string into JS costs more than comparing it.
#[derive(Default)]
pub(crate) struct StringCache {
    entries: Vec<(String, JsValue)>,
    next: usize,
}

impl StringCache {
    /// Strings longer than this are not cached.
    const MAX_LEN: usize = 256;
    /// Entries kept (replaced round-robin).
    const CAPACITY: usize = 16;

    /// The JS string for `text`, from the cache when it holds it.
    pub(crate) fn get(&mut self, text: &str) -> JsValue {
        if let Some((_, value)) = self.entries.iter().find(|(t, _)| t == text) {
            return value.clone();
        }
        let value = JsValue::from_str(text);
        if text.len() <= Self::MAX_LEN {
            let entry = (text.to_owned(), value.clone());
            if self.entries.len() < Self::CAPACITY {
                self.entries.push(entry);
            } else {
                self.entries[self.next] = entry;
                self.next = (self.next + 1) % Self::CAPACITY;
            }
        }
        value
    }
}

/// A delivery event's message and handler registrations, converted for [`Delivery::call`].
pub(crate) fn delivery(
    handlers: &[OpId],
    token: Option<DeliveryToken>,
    message: &Message,
    strings: &mut StringCache,
) -> Delivery {
    let flag = |set: bool, bit: u8| if set { bit } else { 0 };
    Delivery {
        handlers: handlers.iter().map(|op| op.0 as f64).collect(),
        token: token.map(|t| t.0 as f64),
        topic: strings.get(&message.topic),
        data: data_to_js(&message.data),
        from: strings.get(&message.from),
        ts: message.ts as f64,
        offset: message.offset.map(|o| o as f64),
        mid: message.mid.clone(),
        qos: message.qos.as_u8(),
        flags: flag(message.encrypted, FLAG_ENCRYPTED)
            | flag(message.direct, FLAG_DIRECT)
            | flag(message.retained, FLAG_RETAINED)
            | flag(message.replay, FLAG_REPLAY)
            | flag(message.dup, FLAG_DUP),
    }
}

fn reply_to_js(client: &str, reply: &AckReply) -> JsValue {
    object(&[
        ("clientId", JsValue::from_str(client)),
        ("ok", JsValue::from_bool(reply.ok)),
        (
            "code",
            reply
                .code
                .map_or(JsValue::NULL, |c| JsValue::from(c.number())),
        ),
        ("codeName", opt_str(reply.code.map(|c| c.name()))),
        ("error", opt_str(reply.error.as_deref())),
    ])
}

fn snapshot_to_js(snapshot: &AckSnapshot) -> JsValue {
    let expected = snapshot.expected.as_ref().map_or(JsValue::NULL, |ids| {
        ids.iter()
            .map(|id| JsValue::from_str(id))
            .collect::<Array>()
            .into()
    });
    let responses: Array = snapshot
        .responses
        .iter()
        .map(|(client, reply)| reply_to_js(client, reply))
        .collect();
    let (finished, error) = match &snapshot.finished {
        None => (JsValue::NULL, JsValue::NULL),
        Some(AckFinish::Complete) => (JsValue::from_str("complete"), JsValue::NULL),
        Some(AckFinish::Timeout) => (JsValue::from_str("timeout"), JsValue::NULL),
        Some(AckFinish::Cancelled) => (JsValue::from_str("cancelled"), JsValue::NULL),
        Some(AckFinish::Disconnected) => (JsValue::from_str("disconnected"), JsValue::NULL),
        Some(AckFinish::Failed(err)) => (JsValue::from_str("failed"), error_to_js(err)),
    };
    object(&[
        ("expected", expected),
        ("responses", responses.into()),
        ("finished", finished),
        ("error", error),
    ])
}

fn ops(ops: &[OpId]) -> JsValue {
    ops.iter()
        .map(|op| JsValue::from_f64(op.0 as f64))
        .collect::<Array>()
        .into()
}

/// An engine event converted for the JS layer.
pub(crate) enum Converted {
    /// A plain object with a `type` field, for the event callback (see `lib/sdk.js`).
    Event(JsValue),
    /// A message, for the delivery function.
    Deliver(Delivery),
}

/// Converts an engine event for the JS layer.
pub(crate) fn convert_event(
    event: &Event,
    client_id: Option<&str>,
    strings: &mut StringCache,
) -> Converted {
    let kind = |name: &str| ("type", JsValue::from_str(name));
    Converted::Event(match event {
        Event::State(state) => state_to_js(state, client_id),
        Event::Completed { op, result } => {
            let (outcome, error) = match result {
                Ok(outcome) => (outcome_to_js(outcome), JsValue::NULL),
                Err(err) => (JsValue::NULL, error_to_js(err)),
            };
            object(&[
                kind("completed"),
                ("op", JsValue::from_f64(op.0 as f64)),
                ("outcome", outcome),
                ("error", error),
            ])
        }
        Event::Deliver {
            handlers,
            token,
            message,
        } => return Converted::Deliver(delivery(handlers, *token, message, strings)),
        Event::AckUpdated { op, snapshot } => object(&[
            kind("ack"),
            ("op", JsValue::from_f64(op.0 as f64)),
            ("snapshot", snapshot_to_js(snapshot)),
        ]),
        Event::NotRecovered { filter, handlers } => object(&[
            kind("notRecovered"),
            ("filter", JsValue::from_str(filter)),
            ("handlers", ops(handlers)),
        ]),
        Event::DeadLetter { mid, topic, client } => object(&[
            kind("deadLetter"),
            ("mid", JsValue::from_str(mid)),
            ("topic", JsValue::from_str(topic)),
            ("clientId", JsValue::from_str(client)),
        ]),
        Event::Error(err) => object(&[kind("error"), ("error", error_to_js(err))]),
    })
}
