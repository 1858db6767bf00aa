//! Drivers that move bytes and time between a real connection and the [`Engine`].
//!
//! Each driver sits behind a cargo feature so that the core builds without its runtime:
//! `native` (tokio + tokio-tungstenite). The browser driver (web-sys WebSocket) lives in the
//! binding crate `bindings/wasm` so that the core does not depend on wasm-bindgen.
//!
//! [`Engine`]: crate::engine::Engine

#[cfg(feature = "native")]
pub(crate) mod native;
