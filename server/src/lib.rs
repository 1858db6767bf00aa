//! Sealbus reference server: virtual brokers (sessions) over WebSocket, an admin REST API and an
//! in-process participant API for embedding.
//!
//! ```no_run
//! # async fn run() -> Result<(), sealbus_server::Error> {
//! use sealbus_server::{Server, config::Config};
//!
//! let server = Server::builder().config(Config::default()).build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
//! server.serve(listener).await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod auth;
pub mod broker;
pub mod config;
pub mod console;
pub mod error;
pub mod metrics;
pub mod participant;
pub mod server;
pub mod store;
pub mod tls;
pub mod ws;

pub use error::{Error, Result};
pub use participant::Participant;
pub use server::{Server, ServerBuilder, UpgradeHook};
