//! The `sealbus` command-line tool: `sealbus serve` runs the server; `pub`, `sub` and `keygen`
//! are a client for scripts and people; `session` drives the admin API; `token` mints a client
//! token from a configuration file.

mod allocator;
mod conn;
mod pubsub;
mod serve;
mod session_cmd;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sealbus: real-time pub/sub over WebSocket with virtual brokers (sessions).
#[derive(Parser)]
#[command(name = "sealbus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Publish one message (optionally waiting for every subscriber's response).
    Pub(pubsub::PubArgs),
    /// Subscribe and print messages as they arrive.
    Sub(pubsub::SubArgs),
    /// Generate an end-to-end encryption key (base64).
    Keygen(pubsub::KeygenArgs),
    /// Manage sessions through the admin API.
    Session(session_cmd::SessionArgs),
    /// Mint a client token (HS256 JWT) for a session defined in a configuration file.
    Token(token::TokenArgs),
}

/// Errors are printed as one line with their causes (`sealbus: error: ...: ...`), without a
/// backtrace even when `RUST_BACKTRACE` is set: they are the user's to read, not a crash.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let rerun_failed = match cli.command {
        Command::Serve(_) => allocator::rerun_with_purge_delay(),
        _ => None,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // When stderr is gone (a closed pipe), the default reports each failed write with
        // `eprintln!`, which panics on that same stderr: a task that logged then died, the
        // shutdown on SIGTERM included. Logs that cannot be written are dropped instead.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("SEALBUS_LOG_FORMAT").is_ok_and(|format| format == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    if let Some(err) = rerun_failed {
        tracing::warn!(
            %err,
            "could not restart with {}={}; running with the allocator's default",
            allocator::PURGE_DELAY_VARIABLE,
            allocator::SERVE_PURGE_DELAY_MS
        );
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Pub(args) => pubsub::run_pub(args),
        Command::Sub(args) => pubsub::run_sub(args),
        Command::Keygen(args) => pubsub::run_keygen(args),
        Command::Session(args) => session_cmd::run(args),
        Command::Token(args) => token::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sealbus: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
