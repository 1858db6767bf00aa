//! Drivers that move bytes and time between a real connection and the [`Engine`].
//!
//! Each driver sits behind a cargo feature so that the core builds without its runtime:
//! `native` (tokio + tokio-tungstenite). A browser driver (web-sys WebSocket) belongs here too.
//!
//! [`Engine`]: crate::engine::Engine

#[cfg(feature = "native")]
pub(crate) mod native;
