//! The WebSocket endpoint: upgrade on `/ws` with subprotocol `sealbus.v1`, `hello` and
//! authentication, then a reader loop feeding the broker and a writer task draining the
//! client's bounded outbound queue.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt as _, StreamExt};
use sealbus::protocol::{
    ClientFrame, Codec, ErrorCode, Hello, PROTOCOL_VERSION, ProtocolError, SUBPROTOCOL,
    ServerFrame, split_frames,
};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

use crate::broker::{Flow, Kill, Outbound, Outbox, QueueLimits, Session, now_ms};
use crate::error::Error;
use crate::metrics::SessionMetrics;
use crate::server::Server;

/// Read buffer per connection, allocated when the connection opens. Kept small because a server
/// holds many mostly idle connections (at 4 KiB it was a third of an idle connection's heap,
/// docs/PERFORMANCE.md); tungstenite grows it as needed for large frames, and 2 KiB still takes
/// about eight typical publish frames (128-byte payload) per read system call.
pub const READ_BUFFER_BYTES: usize = 2 * 1024;

/// Write buffer per connection: frames are flushed once this much is buffered (small for the
/// same reason as [`READ_BUFFER_BYTES`]).
pub const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// At most this many frames already read from one connection are handled under one hold of the
/// session's lock ([`Session::handle_all`]), so that one busy connection cannot keep the others
/// of its session waiting for long.
const MAX_BATCH: usize = 32;

/// How many times a reader lets its worker run other tasks while its session's lock is held
/// elsewhere, before it waits for the lock (blocking the worker). With two workers this gave
/// 6-12% more publish_with_ack round trips per second (docs/PERFORMANCE.md).
const LOCK_YIELDS: usize = 8;

/// Set once the missing-peer-address warning was logged.
static NO_PEER_WARNED: AtomicBool = AtomicBool::new(false);

/// How long a connection closed for an oversized frame stays open so the client can read the
/// close frame.
const OVERSIZE_LINGER: Duration = Duration::from_millis(500);

/// How long the reader waits for its writer to finish after the connection ended.
const WRITER_GRACE: Duration = Duration::from_secs(10);

/// `GET /ws`: checks the upgrade hook and the subprotocol, then upgrades.
pub(crate) async fn upgrade(State(server): State<Server>, request: Request<Body>) -> Response {
    let (mut parts, _body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    if peer.is_none() && !NO_PEER_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "peer addresses are unknown (serve with into_make_service_with_connect_info): \
             failed logins are not rate-limited"
        );
    }
    if server.inner.broker.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if let Some(hook) = &server.inner.hook
        && !hook(&parts.headers, parts.uri.query())
    {
        return (StatusCode::FORBIDDEN, "connection refused").into_response();
    }
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws.protocols([SUBPROTOCOL]),
        Err(rejection) => return rejection.into_response(),
    };
    if ws.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol `sealbus.v1` is required",
        )
            .into_response();
    }
    let max = server.inner.options.max_frame_bytes as usize;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| connection(server, socket, peer))
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

mod writer;

use writer::{Joiner, close_with, writer};

/// Counts a running connection for the shutdown drain.
struct Running(Server);

impl Running {
    fn new(server: &Server) -> Self {
        server.inner.connections.send_modify(|count| *count += 1);
        Running(server.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0
            .inner
            .connections
            .send_modify(|count| *count = count.saturating_sub(1));
    }
}

async fn connection(server: Server, socket: WebSocket, peer: Option<IpAddr>) {
    let _running = Running::new(&server);
    let (mut sink, mut stream) = socket.split();
    let (session, admitted) = match handshake(&server, &mut stream, peer).await {
        Ok(joined) => joined,
        Err(Error::Disconnected) => return,
        Err(err) => {
            match err.code() {
                ErrorCode::AuthFailed | ErrorCode::TokenExpired | ErrorCode::RateLimited => {
                    tracing::info!(peer = ?peer, code = err.code().name(), "login refused");
                }
                code => tracing::debug!(peer = ?peer, code = code.name(), "connection refused"),
            }
            close_with(&mut sink, err.to_frame()).await;
            if err.code() == ErrorCode::FrameTooLarge {
                tokio::time::sleep(OVERSIZE_LINGER).await;
            }
            return;
        }
    };
    let settings = session.settings();
    let admitted_batch = admitted.batch;
    let (outbox, rx) = Outbox::new(QueueLimits::from(&settings), session.metrics().clone());
    let connected = match session.connect(
        admitted.client_id,
        admitted.persistent,
        admitted.permissions,
        outbox.clone(),
        admitted_batch,
    ) {
        Ok(connected) => connected,
        Err(err) => {
            close_with(&mut sink, err.to_frame()).await;
            return;
        }
    };
    tracing::info!(session = %session.name(), client = %connected.client_id, peer = ?peer, "client connected");
    let kill = outbox.kill_switch().clone();
    let joiner = Joiner::new(admitted_batch);
    let writer = tokio::spawn(writer(
        sink,
        rx,
        joiner,
        kill.clone(),
        session.metrics().clone(),
    ));
    let keepalive = Duration::from_millis(settings.keepalive_ms.saturating_mul(2));
    let codec = Codec::new(settings.max_frame_bytes as usize);
    read_loop(
        &session,
        connected.key,
        &outbox,
        &mut stream,
        codec,
        keepalive,
        admitted_batch,
    )
    .await;
    session.disconnect(connected.key);
    drop(outbox);
    let _ = tokio::time::timeout(WRITER_GRACE, writer).await;
    if kill
        .reason()
        .is_some_and(|k| k.code == ErrorCode::FrameTooLarge)
    {
        // The rest of the oversized frame is still unread; closing now would reset the TCP
        // connection and could destroy the close frame before the client reads it.
        tokio::time::sleep(OVERSIZE_LINGER).await;
    }
    drop(stream);
    tracing::info!(
        session = %session.name(),
        client = %connected.client_id,
        reason = kill.reason().map(|k| k.code.name()).unwrap_or("closed"),
        "client disconnected"
    );
}

/// What an accepted `hello` grants the connection.
struct Admitted {
    /// The client id to use (from the token, or as asked; `None`: the server assigns one).
    client_id: Option<String>,
    /// The connection's permissions.
    permissions: crate::auth::Permissions,
    /// The client asked to be persistent.
    persistent: bool,
    /// The client reads several frames from one message (`hello.batch`).
    batch: bool,
}

/// Waits for `hello` and authenticates it; returns the session and what the connection gets.
async fn handshake(
    server: &Server,
    stream: &mut Stream,
    peer: Option<IpAddr>,
) -> Result<(Arc<Session>, Admitted), Error> {
    let deadline = Duration::from_millis(server.inner.options.hello_timeout_ms);
    let codec = Codec::new(server.inner.options.max_frame_bytes as usize);
    let hello: Hello = loop {
        let message = match tokio::time::timeout(deadline, stream.next()).await {
            Err(_) => {
                return Err(Error::protocol(
                    ErrorCode::NotAuthenticated,
                    None,
                    "no `hello` in time",
                ));
            }
            Ok(Some(Err(err))) if is_capacity_error(&err) => {
                return Err(Error::Protocol(ProtocolError::new(
                    ErrorCode::FrameTooLarge,
                    None,
                    "frame exceeds the server's frame size limit",
                )));
            }
            Ok(None) | Ok(Some(Err(_))) => return Err(Error::Disconnected),
            Ok(Some(Ok(message))) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return Err(Error::protocol(
                    ErrorCode::BinaryFrame,
                    None,
                    "binary frames are not accepted",
                ));
            }
            Message::Close(_) => return Err(Error::Disconnected),
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match codec.decode_client(text.as_bytes())? {
            ClientFrame::Hello(hello) => break hello,
            other => {
                return Err(Error::protocol(
                    ErrorCode::NotAuthenticated,
                    other.request_id(),
                    "the first frame must be `hello`",
                ));
            }
        }
    };
    if hello.v != PROTOCOL_VERSION {
        return Err(Error::protocol(
            ErrorCode::UnsupportedVersion,
            None,
            "protocol version 1 only",
        ));
    }
    let limiter = &server.inner.limiter;
    if peer.is_some_and(|peer| limiter.is_limited(peer)) {
        return Err(Error::protocol(
            ErrorCode::RateLimited,
            None,
            "too many failed logins",
        ));
    }
    let failed = || Error::protocol(ErrorCode::AuthFailed, None, "authentication failed");
    // Argon2 costs ~19 MiB and tens of milliseconds per check: bound how many run at once so a
    // login storm cannot exhaust memory or the blocking thread pool.
    let _permit = server
        .inner
        .auth_permits
        .acquire()
        .await
        .map_err(|_| failed())?;
    let Ok(session) = server.inner.broker.session(&hello.session) else {
        if let Some(peer) = peer {
            limiter.record_failure(peer);
        }
        if let sealbus::protocol::Auth::Password(password) = hello.auth {
            let _ = tokio::task::spawn_blocking(move || {
                crate::auth::verify_against_dummy(&password);
            })
            .await;
        }
        return Err(failed());
    };
    let checked = {
        let session = session.clone();
        let hello = hello.clone();
        tokio::task::spawn_blocking(move || {
            session.check_credentials(&hello.auth, hello.client_id.as_deref(), now_ms() / 1000)
        })
        .await
        .map_err(|_| failed())?
    };
    match checked {
        Ok((client_id, permissions)) => Ok((
            session,
            Admitted {
                client_id,
                permissions,
                persistent: hello.persistent,
                batch: hello.batch,
            },
        )),
        Err(err) => {
            if let Some(peer) = peer {
                limiter.record_failure(peer);
            }
            SessionMetrics::add(&session.metrics().auth_failures, 1);
            Err(err)
        }
    }
}

async fn read_loop(
    session: &Arc<Session>,
    key: u64,
    outbox: &Outbox,
    stream: &mut Stream,
    codec: Codec,
    keepalive: Duration,
    batches: bool,
) {
    let kill = outbox.kill_switch().clone();
    let mut killed = kill.subscribe();
    let metrics = session.metrics().clone();
    // Both waits are created once and polled again on every frame: re-creating a kill waiter and
    // a keep-alive timer per frame was a tenth of the server's time under load. The timer is
    // only re-armed when it fires before the keep-alive has really run out.
    let kill_signal = killed.wait_for(|k| *k);
    tokio::pin!(kill_signal);
    let silence = tokio::time::sleep(keepalive);
    tokio::pin!(silence);
    let mut last_received = Instant::now();
    loop {
        let next = tokio::select! {
            _ = &mut kill_signal => return,
            () = &mut silence => {
                let due = last_received + keepalive;
                if due > Instant::now() {
                    silence.as_mut().reset(due);
                    continue;
                }
                kill.kill(Kill {
                    code: ErrorCode::KeepaliveTimeout,
                    message: "nothing received within the keep-alive timeout".into(),
                    drain: false,
                });
                return;
            }
            next = stream.next() => next,
        };
        last_received = Instant::now();
        let mut next = Some(next);
        // The frames already readable are handled together (one hold of the session's lock).
        // A new vector each time: a kept one would hold its largest batch on idle connections.
        let mut batch = Vec::new();
        while let Some(read) = next.take() {
            let message = match read {
                None => return finish(session, key, &mut batch),
                Some(Err(err)) => {
                    if is_capacity_error(&err) {
                        kill.kill(frame_too_large());
                    }
                    return finish(session, key, &mut batch);
                }
                Some(Ok(message)) => message,
            };
            match message {
                Message::Text(text) => {
                    SessionMetrics::add(&metrics.bytes_in, text.len() as u64);
                    if let Err(err) = codec.check_size(text.len()) {
                        kill.kill(Kill {
                            code: err.code,
                            message: err.message,
                            drain: false,
                        });
                        return finish(session, key, &mut batch);
                    }
                    // Counted once per message: the session's counters are shared by every
                    // connection.
                    let mut frames = 0;
                    let mut closed = false;
                    for piece in frames_of(text.as_str(), batches) {
                        frames += 1;
                        match codec.decode_client_text(piece) {
                            Ok(frame) => batch.push(frame),
                            Err(err) => {
                                if handle_batch(session, key, &mut batch) == Flow::Close {
                                    closed = true;
                                    break;
                                }
                                push_error(outbox, &err);
                            }
                        }
                        // A message may hold many frames: the session's lock is still taken
                        // for at most `MAX_BATCH` of them at a time, and the store's backlog is
                        // respected between them as between messages.
                        if batch.len() >= MAX_BATCH
                            && (handle_batch(session, key, &mut batch) == Flow::Close
                                || !wait_for_store(session, &metrics, &mut kill_signal).await)
                        {
                            closed = true;
                            break;
                        }
                    }
                    SessionMetrics::add(&metrics.messages_in, frames);
                    if closed {
                        return;
                    }
                }
                Message::Binary(_) => {
                    if handle_batch(session, key, &mut batch) == Flow::Close {
                        return;
                    }
                    push_error(
                        outbox,
                        &ProtocolError::new(
                            ErrorCode::BinaryFrame,
                            None,
                            "binary frames are not accepted",
                        ),
                    );
                }
                Message::Close(_) => return finish(session, key, &mut batch),
                Message::Ping(_) | Message::Pong(_) => {}
            }
            if batch.len() < MAX_BATCH {
                next = stream.next().now_or_never();
            }
        }
        if !wait_for_store(session, &metrics, &mut kill_signal).await {
            return finish(session, key, &mut batch);
        }
        // The session's lock is a blocking mutex: a worker that waits for it sleeps, although
        // it could write other connections' frames meanwhile. Let it run other tasks first.
        for _ in 0..LOCK_YIELDS {
            if !session.is_busy() {
                break;
            }
            tokio::task::yield_now().await;
        }
        if handle_batch(session, key, &mut batch) == Flow::Close {
            return;
        }
    }
}

/// While the store is behind, the reader stops taking frames: TCP then slows the client down
/// instead of its writes piling up in memory (`store::Backlog`). False if the connection was
/// killed meanwhile.
async fn wait_for_store<F: Future + Unpin>(
    session: &Session,
    metrics: &SessionMetrics,
    kill_signal: &mut F,
) -> bool {
    let Some(backlog) = session.store_backlog() else {
        return true;
    };
    if !backlog.is_full() {
        return true;
    }
    tracing::debug!(
        queued = backlog.queued(),
        "store backlog full: reader waits"
    );
    SessionMetrics::add(&metrics.store_waits, 1);
    tokio::select! {
        _ = kill_signal => false,
        () = backlog.room() => true,
    }
}

/// The frames of a text message: split at line feeds for a client that announced batches, the
/// whole text otherwise (another client's single frame may hold line feeds as JSON whitespace).
fn frames_of(text: &str, batches: bool) -> impl Iterator<Item = &str> {
    let (whole, split) = if batches {
        (None, Some(split_frames(text)))
    } else {
        (Some(text), None)
    };
    whole.into_iter().chain(split.into_iter().flatten())
}

/// Hands the gathered frames to the session (emptying `batch`).
fn handle_batch(session: &Arc<Session>, key: u64, batch: &mut Vec<ClientFrame>) -> Flow {
    if batch.is_empty() {
        return Flow::Continue;
    }
    session.handle_all(key, batch.drain(..))
}

/// Handles the frames read before the connection ended.
fn finish(session: &Arc<Session>, key: u64, batch: &mut Vec<ClientFrame>) {
    handle_batch(session, key, batch);
}

/// Whether a read failed because the frame is over the WebSocket layer's size limit.
fn is_capacity_error(err: &axum::Error) -> bool {
    matches!(
        std::error::Error::source(err).and_then(|e| e.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

fn frame_too_large() -> Kill {
    Kill {
        code: ErrorCode::FrameTooLarge,
        message: "frame exceeds the server's frame size limit".into(),
        drain: false,
    }
}

fn push_error(outbox: &Outbox, err: &ProtocolError) {
    if let Ok(text) = Codec::encode_server(&ServerFrame::Error(err.to_frame())) {
        outbox.push_answer(Outbound::Frame(text.into()));
    }
}
