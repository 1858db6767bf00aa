//! Sealbus client core.
//!
//! This crate is the one implementation of Sealbus client semantics that the Rust SDK and every
//! language binding share:
//!
//! * [`protocol`]: the wire frames of protocol v1, their JSON codec and the stable error codes;
//! * [`topic`]: topic and filter validation, `+`/`#` matching and a subscription index;
//! * [`crypto`]: the end-to-end envelope (AES-256-CBC + HMAC-SHA-256), keys and keyrings;
//! * [`engine`]: the sans-IO client state machine every transport drives;
//! * [`Error`]: the one error type of client operations, with stable codes;
//! * `client` (feature `native`): the async `Client` over tokio and tokio-tungstenite.
//!
//! The wire contract is documented in `docs/PROTOCOL.md`, the envelope in `docs/SECURITY.md`.

#[cfg(feature = "native")]
pub mod client;
pub mod crypto;
pub mod engine;
mod error;
pub mod protocol;
pub mod topic;
mod transport;

pub use error::Error;

/// The README's Rust examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(all(doctest, feature = "native"))]
pub struct ReadmeDoctests;
