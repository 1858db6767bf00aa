//! `sealbus serve`: load the configuration, start the server, stop gracefully on Ctrl-C.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use sealbus_server::Server;
use sealbus_server::config::{Config, SessionConfig};

/// Options of `sealbus serve`.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  sealbus serve --demo\n  sealbus serve --config sealbus.toml --listen 0.0.0.0:7070"
)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (sessions, admin token, limits).
    #[arg(long, env = "SEALBUS_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the file); port 0 picks a free port.
    #[arg(long, env = "SEALBUS_LISTEN")]
    listen: Option<String>,
    /// Admin API token (overrides the file); generated and printed once when absent.
    #[arg(long, env = "SEALBUS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Create a session `demo` with password `demo` and print how to connect.
    #[arg(long)]
    demo: bool,
    /// Serve the web console at /console/ from this built JS package directory
    /// (bindings/wasm after `cargo xtask wasm`).
    #[arg(long, env = "SEALBUS_CONSOLE")]
    console: Option<PathBuf>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)
            .with_context(|| format!("reading configuration {}", path.display()))?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = Some(listen);
    }
    if let Some(token) = args.admin_token {
        config.admin_token = Some(token);
    }
    if args.demo && !config.sessions.iter().any(|s| s.name == "demo") {
        config.sessions.push(SessionConfig {
            name: "demo".into(),
            password: Some("demo".into()),
            ..SessionConfig::default()
        });
    }
    let listen = config
        .listen
        .clone()
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let server = Server::builder().config(config).build()?;
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "sealbus listening on {addr}")?;
        writeln!(out, "  WebSocket: ws://{addr}/ws (subprotocol sealbus.v1)")?;
        writeln!(out, "  Admin API: http://{addr}/api (OpenAPI at /api/openapi.json)")?;
        if args.console.is_some() {
            writeln!(out, "  Web console: http://{addr}/console/")?;
        }
        if server.admin_token_generated() {
            writeln!(out, "  Admin token (generated, shown once): {}", server.admin_token())?;
        }
        if args.demo {
            writeln!(out, "Demo session: name `demo`, password `demo`. Try:")?;
            writeln!(
                out,
                "  websocat -H 'Sec-WebSocket-Protocol: sealbus.v1' ws://{addr}/ws\n  \
                 {{\"type\":\"hello\",\"v\":1,\"session\":\"demo\",\"auth\":{{\"password\":\"demo\"}}}}\n  \
                 {{\"type\":\"subscribe\",\"id\":1,\"filter\":\"#\"}}"
            )?;
            writeln!(
                out,
                "  curl -H 'Authorization: Bearer {}' -d '{{\"topic\":\"hello\",\"data\":{{\"json\":\"hi\"}}}}' http://{addr}/api/sessions/demo/publish",
                server.admin_token()
            )?;
        }
        out.flush()?;
        drop(out);
        tracing::info!(%addr, "listening");
        let stopper = server.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("shutting down");
                stopper.shutdown();
            }
        });
        let mut app = server.router();
        if let Some(dir) = args.console {
            app = app.merge(sealbus_server::console::routes(dir));
        }
        server.serve_router(listener, app).await?;
        Ok(())
    })
}
