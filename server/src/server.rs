//! [`Server`] and its builder: the broker, the admin token and the axum [`Router`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::serve::{Listener, ListenerExt as _, TapIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{self, RateLimiter};
use crate::broker::{Backplane, Broker, LocalBackplane, Session};
use crate::config::{Config, ServerOptions, SessionConfig, SessionSettings};
use crate::error::{Error, Result};
use crate::participant::Participant;
use crate::store::{MemoryStore, SessionRecord, Store};
use crate::tls::{Certificates, TlsListener};

/// How long [`Server::serve`] waits for connections to drain after a shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Decides from the upgrade request's headers and query string whether a WebSocket may connect
/// (an embedding application's own authentication, for example a cookie check).
pub type UpgradeHook = Arc<dyn Fn(&HeaderMap, Option<&str>) -> bool + Send + Sync>;

/// Builds a [`Server`].
#[derive(Default)]
pub struct ServerBuilder {
    config: Config,
    store: Option<Arc<dyn Store>>,
    backplane: Option<Arc<dyn Backplane>>,
    hook: Option<UpgradeHook>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder").finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Uses `config` (sessions, admin token, server options).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Adds a session to create at start.
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.config.sessions.push(session);
        self
    }

    /// Sets the admin API token (otherwise the config's, otherwise a generated one).
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.config.admin_token = Some(token.into());
        self
    }

    /// Uses `store` instead of a fresh [`MemoryStore`].
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Uses `backplane` instead of the single-node [`LocalBackplane`].
    pub fn backplane(mut self, backplane: Arc<dyn Backplane>) -> Self {
        self.backplane = Some(backplane);
        self
    }

    /// Accepts or rejects WebSocket upgrades from their headers and query string.
    pub fn upgrade_hook(
        mut self,
        hook: impl Fn(&HeaderMap, Option<&str>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Creates the broker and the configured sessions.
    pub fn build(self) -> Result<Server> {
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let backplane = self.backplane.unwrap_or_else(|| Arc::new(LocalBackplane));
        let broker = Broker::new(store.clone(), backplane);
        for record in store.sessions() {
            broker.create_session(record)?;
        }
        // The configuration names the sessions it wants: one already in the store takes the
        // configured credentials and settings (keeping its token secret when none is
        // configured), so that editing the file and restarting takes effect.
        for session in &self.config.sessions {
            check_frame_limit(&self.config.server, &session.settings)?;
            match broker.session(&session.name) {
                Ok(stored) => {
                    let stored = stored.record();
                    let record = configured_over_stored(session, &stored)?;
                    if record != stored {
                        broker.update_session(record)?;
                    }
                }
                Err(_) => {
                    broker.create_session(session_record(session)?)?;
                }
            }
        }
        let (admin_token, generated) = match self.config.admin_token {
            Some(token) if !token.is_empty() => (token, false),
            _ => (auth::random_token::<24>(), true),
        };
        let options = self.config.server;
        let limiter = RateLimiter::new(
            options.auth_failures,
            Duration::from_secs(options.auth_window_secs),
        );
        let server = Server {
            inner: Arc::new(Inner {
                broker,
                options,
                admin_token,
                admin_token_generated: generated,
                limiter,
                hook: self.hook,
                auth_permits: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
                ),
                connections: watch::Sender::new(0),
                shutdown: watch::Sender::new(false),
                ticker: std::sync::OnceLock::new(),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            server.start_ticker();
        }
        Ok(server)
    }
}

/// A session may not announce a frame limit above the one the WebSocket layer enforces for
/// every connection.
fn check_frame_limit(options: &ServerOptions, settings: &SessionSettings) -> Result<()> {
    if settings.max_frame_bytes > options.max_frame_bytes {
        return Err(Error::Config(format!(
            "`max_frame_bytes` {} exceeds the server's limit of {}",
            settings.max_frame_bytes, options.max_frame_bytes
        )));
    }
    Ok(())
}

/// Builds the stored form of a configured session: hashes a plain password, generates a token
/// secret when none is given.
pub fn session_record(config: &SessionConfig) -> Result<SessionRecord> {
    let password_hash = match (&config.password, &config.password_hash) {
        (Some(password), _) => Some(auth::hash_password(password)?),
        (None, Some(hash)) => Some(hash.clone()),
        (None, None) => None,
    };
    Ok(SessionRecord {
        name: config.name.clone(),
        password_hash,
        token_secret: config
            .token_secret
            .clone()
            .unwrap_or_else(auth::random_token::<32>),
        settings: config.settings.clone(),
    })
}

/// The record of a configured session that the store already holds: the configured password
/// (the stored hash is kept while it still verifies it, rather than hashed anew at every
/// start), the configured token secret or else the stored one, the configured settings.
fn configured_over_stored(config: &SessionConfig, stored: &SessionRecord) -> Result<SessionRecord> {
    let password_hash = match (&config.password, &config.password_hash) {
        (Some(password), _) => match &stored.password_hash {
            Some(hash) if auth::verify_password(password, hash) => Some(hash.clone()),
            _ => Some(auth::hash_password(password)?),
        },
        (None, Some(hash)) => Some(hash.clone()),
        (None, None) => None,
    };
    Ok(SessionRecord {
        name: config.name.clone(),
        password_hash,
        token_secret: config
            .token_secret
            .clone()
            .unwrap_or_else(|| stored.token_secret.clone()),
        settings: config.settings.clone(),
    })
}

pub(crate) struct Inner {
    pub(crate) broker: Broker,
    pub(crate) options: ServerOptions,
    pub(crate) admin_token: String,
    pub(crate) admin_token_generated: bool,
    pub(crate) limiter: RateLimiter,
    pub(crate) hook: Option<UpgradeHook>,
    /// Credential checks allowed to run at once.
    pub(crate) auth_permits: tokio::sync::Semaphore,
    /// WebSocket connections still running (their tasks outlive axum's graceful shutdown).
    pub(crate) connections: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
    /// Set once the task driving the broker's timed work runs.
    ticker: std::sync::OnceLock<()>,
}

/// A Sealbus server: cheap to clone, all clones share one broker.
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("sessions", &self.inner.broker.sessions().len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A builder with default settings and no sessions.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The routes: `/ws`, the admin API under `/api`, `/healthz`, `/readyz` and `/metrics`.
    ///
    /// Mount it in an existing axum application with `merge` (or `nest`); serve that
    /// application with `into_make_service_with_connect_info::<SocketAddr>()` so that failed
    /// logins are rate-limited per peer address (without peer addresses there is no login rate
    /// limit).
    pub fn router(&self) -> Router {
        self.start_ticker();
        Router::new()
            .route("/ws", axum::routing::get(crate::ws::upgrade))
            .merge(crate::admin::routes())
            .with_state(self.clone())
    }

    /// The broker (sessions and their state).
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// The admin API token.
    pub fn admin_token(&self) -> &str {
        &self.inner.admin_token
    }

    /// Whether the admin token was generated at start (and should be shown to the operator).
    pub fn admin_token_generated(&self) -> bool {
        self.inner.admin_token_generated
    }

    /// Creates a session at runtime.
    pub fn create_session(&self, config: &SessionConfig) -> Result<Arc<Session>> {
        check_frame_limit(&self.inner.options, &config.settings)?;
        self.inner.broker.create_session(session_record(config)?)
    }

    /// Changes a session's credentials and settings at runtime.
    pub fn update_session(&self, record: SessionRecord) -> Result<Arc<Session>> {
        check_frame_limit(&self.inner.options, &record.settings)?;
        self.inner.broker.update_session(record)
    }

    /// Joins `session` in-process as a participant with the given client id (`$server` when
    /// `None`), with the same semantics as a remote client. Call it inside a Tokio runtime (it
    /// spawns the task that reads the participant's queue).
    pub fn participant(&self, session: &str, client_id: Option<&str>) -> Result<Participant> {
        self.start_ticker();
        let session = self.inner.broker.session(session)?;
        Participant::join(session, client_id)
    }

    /// Starts (once) the task that runs the broker's timed work every [`TICK`]: QoS 1
    /// redeliveries, dead letters, expiry. It ends when the last handle to the server is
    /// dropped. Needs a tokio runtime: `build` starts it when called inside one, `router`,
    /// `serve` and `participant` otherwise.
    ///
    /// [`TICK`]: crate::broker::TICK
    fn start_ticker(&self) {
        self.inner.ticker.get_or_init(|| {
            let inner = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(crate::broker::TICK);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let Some(inner) = inner.upgrade() else { break };
                    inner.broker.tick();
                }
            });
        });
    }

    /// Starts a graceful shutdown: queues drain, clients are closed with `shutting_down`, and
    /// [`serve`](Self::serve) returns.
    pub fn shutdown(&self) {
        self.inner.broker.shutdown();
        self.inner.shutdown.send_replace(true);
    }

    /// Serves the router on `listener` until [`shutdown`](Self::shutdown).
    pub async fn serve(&self, listener: TcpListener) -> Result<()> {
        self.serve_router(listener, self.router()).await
    }

    /// Serves `app` (this server's [`router`](Self::router) with more routes merged in, such
    /// as the [web console](crate::console)) on `listener` until [`shutdown`](Self::shutdown).
    pub async fn serve_router(&self, listener: TcpListener, app: Router) -> Result<()> {
        // Frames are small and latency matters: without TCP_NODELAY, Nagle's algorithm and the
        // peer's delayed ACKs hold small writes back for tens of milliseconds.
        let listener = listener.tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "could not set TCP_NODELAY");
            }
        });
        self.serve_on(listener, app).await
    }

    /// [`serve_router`](Self::serve_router) over TLS: every connection on `listener` is
    /// handshaken with the current one of `certificates` (see
    /// [`Certificates::load`](crate::tls::Certificates::load) and `reload`) before HTTP, so
    /// clients connect to `wss://` and `https://`.
    pub async fn serve_tls(
        &self,
        listener: TcpListener,
        certificates: Arc<Certificates>,
        app: Router,
    ) -> Result<()> {
        // `tap_io` gives the listener axum's peer-address plumbing (`ConnectInfo`); TCP_NODELAY
        // is set before the handshake.
        let listener = TlsListener::new(listener, certificates)
            .map_err(Error::Io)?
            .tap_io(|_| {});
        self.serve_on(listener, app).await
    }

    /// Serves `app` on `listener` with each connection's peer address, until
    /// [`shutdown`](Self::shutdown); then gives upgraded WebSocket connections (which axum
    /// does not await) time to write their queues and close with `shutting_down`.
    async fn serve_on<L, F>(&self, listener: TapIo<L, F>, app: Router) -> Result<()>
    where
        L: Listener<Addr = SocketAddr>,
        F: FnMut(&mut L::Io) + Send + 'static,
    {
        let mut stop = self.inner.shutdown.subscribe();
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
            .await
            .map_err(Error::Io)?;
        let mut connections = self.inner.connections.subscribe();
        let _ =
            tokio::time::timeout(DRAIN_TIMEOUT, connections.wait_for(|count| *count == 0)).await;
        Ok(())
    }
}
