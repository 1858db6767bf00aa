//! The web driver: the browser (and Node) twin of the core's tokio driver.
//!
//! It owns one [`Engine`] and moves bytes and time in and out of it, following
//! `docs/CLIENT.md`: a `WebSocket` (web-sys, subprotocol `sealbus.v1`) for frames, the host's
//! `setTimeout`/`clearTimeout` for [`Engine::poll_timeout`], and `performance.now()` for
//! [`Millis`]. After every input or command it sends every frame, acts on every
//! [`ConnAction`], converts every event (a message to the arguments of the delivery callback,
//! anything else to a plain JS object) and re-arms its one timer.
//!
//! Events reach the JS layer from a microtask, never from inside a call: a command returns its
//! operation id before the operation's result can arrive, and a handler that calls back into
//! the client cannot re-enter the engine while it is borrowed.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use js_sys::Function;
use sealbus::engine::{ConnAction, Disconnect, Engine, Millis};
use sealbus::protocol::SUBPROTOCOL;
use wasm_bindgen::prelude::{Closure, wasm_bindgen};
use wasm_bindgen::{JsCast as _, JsValue};
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::convert::{Converted, StringCache, convert_event};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &Function, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
    #[wasm_bindgen(js_name = queueMicrotask)]
    fn queue_microtask(callback: &Function);
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Longest delay `setTimeout` accepts (larger values fire at once).
const MAX_TIMER_MS: f64 = 2_147_483_647.0;

/// One open (or opening) WebSocket and the callbacks that keep it wired to the engine.
struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _on_error: Closure<dyn FnMut()>,
}

impl Socket {
    /// Detaches the callbacks (so this socket's end is never reported) and closes it.
    fn abandon(self, code: u16, reason: &str) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        // Closing an already closing socket, or with a code the host refuses, is harmless.
        if self.ws.close_with_code_and_reason(code, reason).is_err() {
            let _ = self.ws.close();
        }
    }
}

/// The driver's state, shared with its callbacks.
pub(crate) struct Inner {
    url: String,
    engine: Engine,
    origin: f64,
    socket: Option<Socket>,
    /// Counts sockets, so that callbacks of a replaced socket are ignored.
    generation: u64,
    /// The armed `setTimeout` and the engine deadline it was armed for.
    timer: Option<(JsValue, Millis)>,
    on_timer: Option<Closure<dyn FnMut()>>,
    on_dispatch: Option<Closure<dyn FnMut()>>,
    dispatch_scheduled: bool,
    /// Converted events waiting for the next dispatch.
    pending: VecDeque<Converted>,
    on_event: Function,
    on_deliver: Function,
    strings: StringCache,
}

/// A shared handle on the driver state.
pub(crate) type Shared = Rc<RefCell<Inner>>;

impl Inner {
    /// A driver for `engine` that connects to `url` and hands every message to `on_deliver`
    /// and every other event to `on_event`.
    pub(crate) fn start(
        url: String,
        engine: Engine,
        on_event: Function,
        on_deliver: Function,
    ) -> Shared {
        let shared = Rc::new(RefCell::new(Inner {
            url,
            engine,
            origin: performance_now(),
            socket: None,
            generation: 0,
            timer: None,
            on_timer: None,
            on_dispatch: None,
            dispatch_scheduled: false,
            pending: VecDeque::new(),
            on_event,
            on_deliver,
            strings: StringCache::default(),
        }));
        let weak = Rc::downgrade(&shared);
        let on_timer = Closure::<dyn FnMut()>::new(move || {
            with_engine(&weak, |inner| {
                inner.timer = None;
                let now = inner.now();
                inner.engine.handle_timeout(now);
            });
        });
        let weak = Rc::downgrade(&shared);
        let on_dispatch = Closure::<dyn FnMut()>::new(move || dispatch(&weak));
        {
            let mut inner = shared.borrow_mut();
            inner.on_timer = Some(on_timer);
            inner.on_dispatch = Some(on_dispatch);
        }
        pump(&shared);
        shared
    }

    /// Milliseconds since the driver started, from `performance.now()`.
    pub(crate) fn now(&self) -> Millis {
        let elapsed = (performance_now() - self.origin).max(0.0);
        Millis(elapsed as u64)
    }

    /// The engine.
    pub(crate) fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Sends frames, acts on connection requests, converts events and re-arms the timer, until
    /// the engine has nothing more to say.
    fn flush(&mut self, weak: &Weak<RefCell<Inner>>) {
        loop {
            let mut progressed = false;
            while let Some(text) = self.engine.poll_transmit() {
                progressed = true;
                let Some(socket) = &self.socket else {
                    continue;
                };
                if let Err(err) = socket.ws.send_with_str(&text) {
                    self.lost(None, describe(&err));
                }
            }
            while let Some(action) = self.engine.poll_connection() {
                progressed = true;
                match action {
                    ConnAction::Connect => self.open(weak),
                    ConnAction::Close { code, reason } => {
                        if let Some(socket) = self.socket.take() {
                            socket.abandon(code, &reason);
                        }
                    }
                }
            }
            while let Some(event) = self.engine.poll_event() {
                progressed = true;
                let client_id = self.engine.client_id();
                let converted = convert_event(&event, client_id, &mut self.strings);
                self.pending.push_back(converted);
            }
            if !progressed {
                break;
            }
        }
        self.arm_timer();
    }

    /// The socket failed or ended: forget it and tell the engine.
    fn lost(&mut self, close_code: Option<u16>, reason: String) {
        if let Some(socket) = self.socket.take() {
            socket.abandon(1000, "");
        }
        let now = self.now();
        self.engine
            .handle_disconnected(Disconnect { close_code, reason }, now);
    }

    /// Opens a new WebSocket with the `sealbus.v1` subprotocol.
    fn open(&mut self, weak: &Weak<RefCell<Inner>>) {
        if let Some(old) = self.socket.take() {
            old.abandon(1000, "");
        }
        self.generation += 1;
        let generation = self.generation;
        let ws = match WebSocket::new_with_str(&self.url, SUBPROTOCOL) {
            Ok(ws) => ws,
            Err(err) => {
                let now = self.now();
                let disconnect = Disconnect {
                    close_code: None,
                    reason: format!("cannot open {}: {}", self.url, describe(&err)),
                };
                self.engine.handle_disconnected(disconnect, now);
                return;
            }
        };
        ws.set_binary_type(BinaryType::Arraybuffer);
        let w = weak.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || {
            with_socket(&w, generation, |inner| {
                let now = inner.now();
                inner.engine.handle_connected(now);
            });
        });
        let w = weak.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            // The protocol is text frames only; binary frames are ignored like the native driver.
            if let Some(text) = event.data().as_string() {
                with_socket(&w, generation, |inner| {
                    let now = inner.now();
                    inner.engine.handle_message(&text, now);
                });
            }
        });
        let w = weak.clone();
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            with_socket(&w, generation, |inner| {
                // 1005/1006: no close frame arrived (the host's stand-ins for "none").
                let code = event.code();
                let close_code = (code != 1005 && code != 1006).then_some(code);
                let mut reason = event.reason();
                if reason.is_empty() {
                    reason = format!("connection closed ({code})");
                }
                inner.lost(close_code, reason);
            });
        });
        // Some hosts (Node 20's WebSocket) report a failed connect with `error` and no `close`;
        // browsers send `close` after `error`. The first of the two ends the socket.
        let w = weak.clone();
        let on_error = Closure::<dyn FnMut()>::new(move || {
            with_socket(&w, generation, |inner| {
                inner.lost(None, "WebSocket error".into());
            });
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        self.socket = Some(Socket {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
            _on_error: on_error,
        });
    }

    /// Arms the one timer for the engine's next deadline (or clears it).
    ///
    /// A timer already armed for the same or an earlier deadline is kept: the engine ignores a
    /// timeout that comes early, and the timer is armed again for the real deadline when it
    /// fires. So a stream of messages, each of which moves the keep-alive deadline a little,
    /// does not cost a `clearTimeout` and a `setTimeout` per message.
    fn arm_timer(&mut self) {
        let deadline = self.engine.poll_timeout();
        if let (Some(deadline), Some((_, armed))) = (deadline, &self.timer)
            && *armed <= deadline
        {
            return;
        }
        if let Some((id, _)) = self.timer.take() {
            clear_timeout(&id);
        }
        let (Some(deadline), Some(callback)) = (deadline, &self.on_timer) else {
            return;
        };
        let delay = deadline.0.saturating_sub(self.now().0) as f64;
        let id = set_timeout(callback.as_ref().unchecked_ref(), delay.min(MAX_TIMER_MS));
        self.timer = Some((id, deadline));
    }

    /// Releases the socket and the timer once the engine is closed.
    fn release_if_closed(&mut self) {
        if matches!(
            self.engine.state(),
            sealbus::engine::ConnectionState::Closed { .. }
        ) {
            if let Some(socket) = self.socket.take() {
                socket.abandon(1000, "client closed");
            }
            if let Some((id, _)) = self.timer.take() {
                clear_timeout(&id);
            }
        }
    }
}

fn describe(err: &JsValue) -> String {
    err.as_string()
        .or_else(|| {
            js_sys::Reflect::get(err, &JsValue::from_str("message"))
                .ok()
                .and_then(|m| m.as_string())
        })
        .unwrap_or_else(|| "WebSocket error".into())
}

/// Runs `f` on the engine, then flushes and schedules a dispatch.
pub(crate) fn with_engine<R>(
    weak: &Weak<RefCell<Inner>>,
    f: impl FnOnce(&mut Inner) -> R,
) -> Option<R> {
    let shared = weak.upgrade()?;
    let result = {
        let Ok(mut inner) = shared.try_borrow_mut() else {
            return None;
        };
        f(&mut inner)
    };
    pump(&shared);
    Some(result)
}

/// Like [`with_engine`], only for callbacks of the socket of `generation`.
fn with_socket(weak: &Weak<RefCell<Inner>>, generation: u64, f: impl FnOnce(&mut Inner)) {
    with_engine(weak, |inner| {
        if inner.generation == generation && inner.socket.is_some() {
            f(inner);
        }
    });
}

/// Flushes the engine and schedules a dispatch of its events in a microtask.
pub(crate) fn pump(shared: &Shared) {
    let Ok(mut inner) = shared.try_borrow_mut() else {
        return;
    };
    inner.flush(&Rc::downgrade(shared));
    inner.release_if_closed();
    if !inner.pending.is_empty()
        && !inner.dispatch_scheduled
        && let Some(callback) = &inner.on_dispatch
    {
        queue_microtask(callback.as_ref().unchecked_ref());
        inner.dispatch_scheduled = true;
    }
}

/// Hands the waiting events to the JS layer, one at a time, without holding the borrow.
fn dispatch(weak: &Weak<RefCell<Inner>>) {
    let Some(shared) = weak.upgrade() else {
        return;
    };
    if let Ok(mut inner) = shared.try_borrow_mut() {
        inner.dispatch_scheduled = false;
    }
    loop {
        let next = match shared.try_borrow_mut() {
            Ok(mut inner) => inner.pending.pop_front().map(|event| {
                let target = match &event {
                    Converted::Event(_) => inner.on_event.clone(),
                    Converted::Deliver(_) => inner.on_deliver.clone(),
                };
                (event, target)
            }),
            Err(_) => None,
        };
        let Some((event, target)) = next else {
            break;
        };
        // A throwing listener must not stop the other events; the JS layer reports its own.
        let _ = match event {
            Converted::Event(event) => target.call1(&JsValue::NULL, &event).map(drop),
            Converted::Deliver(delivery) => delivery.call(&target),
        };
    }
}
