//! `sealbus serve`: load the configuration, start the server, stop gracefully on Ctrl-C.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use sealbus_server::Server;
use sealbus_server::config::{Config, SessionConfig};

/// Options of `sealbus serve`.
#[derive(clap::Args)]
#[command(
    after_help = "Logs go to stderr: RUST_LOG sets the level (e.g. RUST_LOG=debug), \
                  SEALBUS_LOG_FORMAT=json writes JSON lines.\n\nExamples:\n  \
                  sealbus serve --demo\n  \
                  sealbus serve --config sealbus.toml --listen 0.0.0.0:7070"
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
        print_banner(&server, addr, args.demo, args.console.is_some());
        tracing::info!(%addr, "listening");
        let stopper = server.clone();
        tokio::spawn(async move {
            stop_signal().await;
            tracing::info!("shutting down");
            stopper.shutdown();
        });
        let mut app = server.router();
        if let Some(dir) = args.console {
            app = app.merge(sealbus_server::console::routes(dir));
        }
        server.serve_router(listener, app).await?;
        Ok(())
    })
}

/// Prints where to connect on stdout (the first line names the bound address, for scripts).
/// A closed stdout must not stop the server, so write errors are ignored.
fn print_banner(server: &Server, addr: std::net::SocketAddr, demo: bool, console: bool) {
    let mut text = format!(
        "sealbus listening on {addr}\n  WebSocket: ws://{addr}/ws (subprotocol sealbus.v1)\n  \
         Admin API: http://{addr}/api (OpenAPI at /api/openapi.json)\n"
    );
    if console {
        text.push_str(&format!("  Web console: http://{addr}/console/\n"));
    }
    if server.admin_token_generated() {
        text.push_str(&format!(
            "  Admin token (generated, shown once): {}\n",
            server.admin_token()
        ));
    }
    if demo {
        text.push_str(&format!(
            "Demo session: name `demo`, password `demo`. Try:\n  \
             websocat --protocol sealbus.v1 ws://{addr}/ws\n  \
             {{\"type\":\"hello\",\"v\":1,\"session\":\"demo\",\"auth\":{{\"password\":\"demo\"}}}}\n  \
             {{\"type\":\"subscribe\",\"id\":1,\"filter\":\"#\"}}\n  \
             curl -H \"Authorization: Bearer {}\" -d '{{\"topic\":\"hello\",\"data\":{{\"json\":\"hi\"}}}}' \
             http://{addr}/api/sessions/demo/publish\n  \
             sealbus sub '#' --url ws://{addr}/ws --password demo    (and in another terminal)\n  \
             sealbus pub greetings/hi '\"hello\"' --url ws://{addr}/ws --password demo\n",
            if server.admin_token_generated() {
                server.admin_token()
            } else {
                "$SEALBUS_ADMIN_TOKEN"
            }
        ));
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Resolves on Ctrl-C, or on SIGTERM (what service managers and containers send) on Unix.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
