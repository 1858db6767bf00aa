//! Sealbus for JavaScript: the core client engine compiled to WebAssembly.
//!
//! This crate is the low layer of the npm package `sealbus`. It exports:
//!
//! * [`Driver`]: one client connection — the core [`Engine`] driven by
//!   a web-sys `WebSocket` and the host's timers (module `driver`). Its methods are the engine's
//!   commands; its results and messages arrive as plain objects through one callback;
//! * [`generate_key`], [`open_envelope`], [`seal_envelope`]: the end-to-end envelope helpers.
//!
//! The hand-written JS layer (`lib/sdk.js`, typed by `index.d.ts`) turns this into the
//! idiomatic API: `Client.connect`, Promises, handlers with auto-ack, async iterators, ack
//! handles and `SealbusError`. Neither layer makes a protocol decision: the engine does.

mod convert;
mod driver;

use std::rc::Rc;

use js_sys::Function;
use sealbus::Error;
use sealbus::crypto::{Key, Keyring};
use sealbus::engine::{DeliveryToken, Engine, OpId, PublishOptions};
use sealbus::protocol::Qos;
use wasm_bindgen::JsValue;
use wasm_bindgen::prelude::wasm_bindgen;

use crate::convert::{config_from_js, data_from_js, error_to_js, object};
use crate::driver::{Inner, Shared, with_engine};

/// A random 32-byte master key for end-to-end encryption, as standard base64.
///
/// # Errors
/// The host has no random source (`random_failed`).
#[wasm_bindgen(js_name = generateKey)]
pub fn generate_key() -> Result<String, JsValue> {
    Key::generate()
        .map(|key| key.to_base64())
        .map_err(|err| error_to_js(&err.into()))
}

fn keyring(key_base64: &str) -> Result<Keyring, JsValue> {
    Key::from_base64(key_base64)
        .map(Keyring::with_key)
        .map_err(|err| error_to_js(&err.into()))
}

/// Opens a sealed envelope (standard base64) for `topic` with the master key `key_base64`;
/// returns the plaintext bytes (for sealed client data, a content-kind byte comes first).
///
/// # Errors
/// `{ code, codeName, message }` with the envelope's error code (`decrypt_failed`,
/// `unknown_key_id`, `malformed_envelope`, `bad_base64`, `invalid_key`).
#[wasm_bindgen(js_name = openEnvelope)]
pub fn open_envelope(
    key_base64: &str,
    topic: &str,
    envelope_base64: &str,
) -> Result<Vec<u8>, JsValue> {
    keyring(key_base64)?
        .open_base64(topic, envelope_base64)
        .map_err(|err| error_to_js(&err.into()))
}

/// Seals `plaintext` for `topic` with the master key `key_base64` and a random IV; returns the
/// envelope as standard base64.
///
/// # Errors
/// An invalid key (`invalid_key`) or no random source.
#[wasm_bindgen(js_name = sealEnvelope)]
pub fn seal_envelope(key_base64: &str, topic: &str, plaintext: &[u8]) -> Result<String, JsValue> {
    keyring(key_base64)?
        .seal_to_base64(topic, plaintext)
        .map_err(|err| error_to_js(&err.into()))
}

/// One client connection: the engine, its WebSocket and its timer.
///
/// Every command returns an operation id (a number); its result arrives later through the
/// `onEvent` callback given to the constructor, as `{ type: "completed", op, outcome, error }`;
/// messages arrive through its `onDeliver` callback.
#[wasm_bindgen]
pub struct Driver {
    shared: Shared,
}

fn to_js(err: Error) -> JsValue {
    error_to_js(&err)
}

fn op_value(op: OpId) -> f64 {
    op.0 as f64
}

fn op_id(op: f64) -> OpId {
    OpId(op as u64)
}

fn publish_options(qos: u8, retain: bool, encrypt: bool) -> Result<PublishOptions, JsValue> {
    let qos = match qos {
        0 => Qos::AtMostOnce,
        1 => Qos::AtLeastOnce,
        _ => return Err(to_js(Error::InvalidOption("qos must be 0 or 1".into()))),
    };
    Ok(PublishOptions {
        qos,
        retain,
        encrypt,
        notify_dead: false,
    })
}

#[wasm_bindgen]
impl Driver {
    /// Starts a client with `options` (see `index.d.ts`, `ClientOptions`) that hands every
    /// message to `on_deliver` as `(handlers, token, topic, data, from, ts, offset, mid, qos,
    /// flags)` (`token`, `offset`, `mid` undefined when absent; `flags` bits: 1 encrypted,
    /// 2 direct, 4 retained, 8 replay, 16 dup) and every other event to `on_event`. It starts
    /// connecting at once.
    ///
    /// # Errors
    /// Invalid options (`invalid_field`, `invalid_key`, ...).
    #[wasm_bindgen(constructor)]
    pub fn new(
        options: JsValue,
        on_event: Function,
        on_deliver: Function,
    ) -> Result<Driver, JsValue> {
        let (url, config) = config_from_js(&options).map_err(to_js)?;
        let mut seed = [0u8; 8];
        // Without a random source the clock still separates clients well enough for jitter.
        if getrandom::getrandom(&mut seed).is_err() {
            seed = (js_sys::Date::now() as u64).to_le_bytes();
        }
        let engine = Engine::new(config, u64::from_le_bytes(seed));
        Ok(Driver {
            shared: Inner::start(url, engine, on_event, on_deliver),
        })
    }

    fn run<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> Result<R, JsValue> {
        with_engine(&Rc::downgrade(&self.shared), f).ok_or_else(|| {
            to_js(Error::InvalidOption(
                "the client was called from inside its own event dispatch".into(),
            ))
        })
    }

    /// The client id the server confirmed (or the requested one), if any yet.
    #[wasm_bindgen(js_name = clientId)]
    pub fn client_id(&self) -> Option<String> {
        self.run(|inner| inner.engine().client_id().map(str::to_owned))
            .ok()
            .flatten()
    }

    /// Whether the last resubscribe of `filter` recovered every missed message (`undefined`
    /// when the filter is not subscribed).
    #[wasm_bindgen(js_name = isRecovered)]
    pub fn is_recovered(&self, filter: &str) -> Option<bool> {
        self.run(|inner| inner.engine().is_recovered(filter))
            .ok()
            .flatten()
    }

    /// Subscribes a new handler registration to `filter`; returns its id.
    ///
    /// # Errors
    /// An invalid filter, a closed client.
    pub fn subscribe(&self, filter: &str) -> Result<f64, JsValue> {
        self.run(|inner| {
            let now = inner.now();
            inner.engine().subscribe(filter, now)
        })?
        .map(op_value)
        .map_err(to_js)
    }

    /// Registers a handler for direct messages; returns its id.
    #[wasm_bindgen(js_name = registerDirect)]
    pub fn register_direct(&self) -> Result<f64, JsValue> {
        self.run(|inner| inner.engine().register_direct())
            .map(op_value)
    }

    /// Removes handler registration `handler`; returns the unsubscribe's operation id.
    pub fn unsubscribe(&self, handler: f64) -> Result<f64, JsValue> {
        self.run(|inner| {
            let now = inner.now();
            inner.engine().unsubscribe(op_id(handler), now)
        })
        .map(op_value)
    }

    /// The handler registrations of `filter`.
    pub fn handlers(&self, filter: &str) -> Result<Vec<f64>, JsValue> {
        self.run(|inner| {
            inner
                .engine()
                .handlers(filter)
                .into_iter()
                .map(op_value)
                .collect()
        })
    }

    /// Asks the server for the per-subscriber state of the QoS 1 message `mid`; returns the
    /// operation id (its result: `{mid, topic, copies: [{client, state, attempts}]}`).
    ///
    /// # Errors
    /// An invalid message id, not connected, a closed client.
    #[wasm_bindgen(js_name = deliveryStatus)]
    pub fn delivery_status(&self, mid: &str) -> Result<f64, JsValue> {
        self.run(|inner| {
            let now = inner.now();
            inner.engine().delivery_status(mid, now)
        })?
        .map(op_value)
        .map_err(to_js)
    }

    /// Removes every handler of `filter`; returns the operation id.
    #[wasm_bindgen(js_name = unsubscribeFilter)]
    pub fn unsubscribe_filter(&self, filter: &str) -> Result<f64, JsValue> {
        self.run(|inner| {
            let now = inner.now();
            inner.engine().unsubscribe_filter(filter, now)
        })
        .map(op_value)
    }

    /// Publishes `data` to `topic` (or, with `direct`, to the client id `topic`), collecting
    /// responses for `ack_timeout_ms` when given; returns the operation id.
    ///
    /// # Errors
    /// Invalid data or topic, a message too large, a full offline buffer, a closed client.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &self,
        topic: &str,
        data: JsValue,
        qos: u8,
        retain: bool,
        encrypt: bool,
        direct: bool,
        ack_timeout_ms: Option<f64>,
    ) -> Result<f64, JsValue> {
        let data = data_from_js(&data).map_err(to_js)?;
        let options = publish_options(qos, retain, encrypt)?;
        let timeout = ack_timeout_ms.map(|ms| ms.max(0.0) as u64);
        self.run(|inner| {
            let now = inner.now();
            let engine = inner.engine();
            match (direct, timeout) {
                (false, None) => engine.publish(topic, data, options, now),
                (true, None) => engine.publish_to_id(topic, data, options, now),
                (false, Some(ms)) => engine.publish_with_ack(topic, data, options, ms, now),
                (true, Some(ms)) => engine.publish_to_id_with_ack(topic, data, options, ms, now),
            }
        })?
        .map(op_value)
        .map_err(to_js)
    }

    /// Cancels publish_with_ack `op`. Idempotent.
    #[wasm_bindgen(js_name = cancelAck)]
    pub fn cancel_ack(&self, op: f64) -> Result<(), JsValue> {
        self.run(|inner| {
            let now = inner.now();
            inner.engine().cancel_ack(op_id(op), now);
        })
    }

    /// One handler of delivery `token` finished: `error` is `undefined` on success, else the
    /// handler's error message.
    #[wasm_bindgen(js_name = completeDelivery)]
    pub fn complete_delivery(&self, token: f64, error: Option<String>) -> Result<(), JsValue> {
        let result = error.map_or(Ok(()), Err);
        self.run(|inner| {
            let now = inner.now();
            inner
                .engine()
                .complete_delivery(DeliveryToken(token as u64), result, now);
        })
    }

    /// Closes the client (`discard`: a persistent client's stored state is dropped).
    pub fn close(&self, discard: bool) -> Result<(), JsValue> {
        self.run(|inner| {
            let now = inner.now();
            inner.engine().close(discard, now);
        })
    }

    /// The session's limits from the last `welcome`, as `{ maxMessageBytes, maxFrameBytes }`.
    pub fn limits(&self) -> Result<JsValue, JsValue> {
        self.run(|inner| {
            let limits = inner.engine().limits();
            object(&[
                (
                    "maxMessageBytes",
                    JsValue::from_f64(limits.max_message_bytes as f64),
                ),
                (
                    "maxFrameBytes",
                    JsValue::from_f64(limits.max_frame_bytes as f64),
                ),
            ])
        })
    }
}
