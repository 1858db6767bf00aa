//! `sealbus serve`: load the configuration, start the server, stop gracefully on Ctrl-C.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use sealbus_server::Server;
use sealbus_server::config::{Config, SessionConfig, TlsConfig};
use sealbus_server::store::{MemoryStore, SqliteStore, Store, SyncMode};
use sealbus_server::tls::Certificates;

/// Options of `sealbus serve`.
#[derive(clap::Args)]
#[command(
    after_help = "State (sessions, history, retained messages, persistent clients) lives in an \
                  SQLite file, sealbus.db in the working directory unless --store or the \
                  config's [store] says otherwise; --memory keeps nothing past the process.\n\n\
                  Logs go to stderr: RUST_LOG sets the level (e.g. RUST_LOG=debug), \
                  SEALBUS_LOG_FORMAT=json writes JSON lines.\n\nExamples:\n  \
                  sealbus serve --demo\n  \
                  sealbus serve --demo --memory\n  \
                  sealbus serve --demo --tls-cert fullchain.pem --tls-key privkey.pem --listen 0.0.0.0:443\n  \
                  sealbus serve --config sealbus.toml --listen 0.0.0.0:7070 --store /var/lib/sealbus/sealbus.db"
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
    /// SQLite file of the server's state, created if missing (overrides the file's
    /// `[store] path`; default `sealbus.db` in the working directory).
    #[arg(long, env = "SEALBUS_STORE", value_name = "PATH")]
    store: Option<PathBuf>,
    /// Keep the state in memory instead of a file (takes precedence over --store): nothing
    /// survives a restart.
    #[arg(long, env = "SEALBUS_MEMORY")]
    memory: bool,
    /// When SQLite commits reach the disk: `full` syncs every commit (survives power loss),
    /// `normal` survives a crash or kill of the process, not of the machine (default `full`).
    #[arg(long, env = "SEALBUS_SYNC", value_name = "MODE")]
    sync: Option<SyncArg>,
    /// Serve TLS (wss://, https://) with this certificate chain (PEM; overrides the file's
    /// `[tls]`); needs --tls-key. SIGHUP reads both files again (after a renewal).
    #[arg(
        long,
        env = "SEALBUS_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "SEALBUS_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
}

/// `--sync` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SyncArg {
    /// fsync at every commit.
    Full,
    /// fsync at checkpoints only.
    Normal,
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
    if args.memory {
        config.store.memory = true;
    } else if let Some(path) = args.store {
        config.store.memory = false;
        config.store.path = path;
    }
    if let Some(sync) = args.sync {
        config.store.sync = match sync {
            SyncArg::Full => SyncMode::Full,
            SyncArg::Normal => SyncMode::Normal,
        };
    }
    let listen = config
        .listen
        .clone()
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let (store, store_line) = open_store(&config)?;
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(TlsConfig { cert, key });
    }
    let tls = match &config.tls {
        Some(files) => Some(Certificates::load(&files.cert, &files.key)?),
        None => None,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let server = Server::builder()
            .config(config)
            .store(store.clone())
            .build()?;
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        print_banner(
            &server,
            addr,
            &store_line,
            args.demo,
            args.console.is_some(),
            tls.is_some(),
        );
        tracing::info!(%addr, "listening");
        let stopper = server.clone();
        tokio::spawn(async move {
            stop_signal().await;
            stopper.shutdown();
            tracing::info!("shutting down");
        });
        let mut app = server.router();
        if let Some(dir) = args.console {
            app = app.merge(sealbus_server::console::routes(dir));
        }
        match tls {
            Some(certificates) => {
                tokio::spawn(reload_on_hangup(certificates.clone()));
                server.serve_tls(listener, certificates, app).await?
            }
            None => server.serve_router(listener, app).await?,
        }
        // Every confirmed write is committed already; this commits the rest before exit.
        if let Err(err) = store.flush() {
            tracing::error!(error = %err, "the store could not commit its last writes");
        }
        Ok(())
    })
}

/// Opens the configured store; returns it and the banner line that names it.
fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, String)> {
    let options = &config.store;
    if options.memory {
        let line = "  Store: in memory (nothing survives a restart)\n".to_owned();
        return Ok((Arc::new(MemoryStore::new()), line));
    }
    let store = SqliteStore::open(&options.path, options.sync)
        .context("opening the store (--memory runs without one)")?;
    let line = format!(
        "  Store: SQLite {} (sync {})\n",
        absolute(&options.path).display(),
        options.sync
    );
    Ok((Arc::new(store), line))
}

/// `path` made absolute (symbolic links resolved when it exists).
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Prints where to connect on stdout (the first line names the bound address, for scripts).
/// A closed stdout must not stop the server, so write errors are ignored.
fn print_banner(
    server: &Server,
    addr: std::net::SocketAddr,
    store: &str,
    demo: bool,
    console: bool,
    tls: bool,
) {
    let (ws, http) = if tls {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    let mut text = format!(
        "sealbus listening on {addr}\n  WebSocket: {ws}://{addr}/ws (subprotocol sealbus.v1)\n  \
         Admin API: {http}://{addr}/api (OpenAPI at /api/openapi.json)\n{store}"
    );
    if console {
        text.push_str(&format!("  Web console: {http}://{addr}/console/\n"));
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
             websocat --protocol sealbus.v1 {ws}://{addr}/ws\n  \
             {{\"type\":\"hello\",\"v\":1,\"session\":\"demo\",\"auth\":{{\"password\":\"demo\"}}}}\n  \
             {{\"type\":\"subscribe\",\"id\":1,\"filter\":\"#\"}}\n  \
             curl -H \"Authorization: Bearer {}\" -d '{{\"topic\":\"hello\",\"data\":{{\"json\":\"hi\"}}}}' \
             {http}://{addr}/api/sessions/demo/publish\n  \
             sealbus sub '#' --url {ws}://{addr}/ws --password demo    (and in another terminal)\n  \
             sealbus pub greetings/hi '\"hello\"' --url {ws}://{addr}/ws --password demo\n",
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

/// Reads the TLS certificate and key again on each SIGHUP (after a renewal); a file that does
/// not load is logged and the current certificate stays.
async fn reload_on_hangup(certificates: Arc<Certificates>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be handled: TLS certificates reload only on restart");
            return;
        };
        while hangups.recv().await.is_some() {
            match certificates.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(err) => {
                    tracing::error!(error = %err, "TLS certificate not reloaded; the current one stays")
                }
            }
        }
    }
    #[cfg(not(unix))]
    drop(certificates);
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
