//! The tokio driver: one task that owns the engine and the WebSocket (tokio-tungstenite).
//!
//! It moves frames between the socket and the [`Engine`], time from tokio's clock into
//! [`Millis`], commands from the [`Client`](crate::client::Client) handles into the engine, and
//! the engine's events out to handlers, waiting callers and watchers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Error;
use crate::client::{AckHandle, ClientEvent, ClientOptions, Command, PublishResult, Sink, Target};
use crate::engine::{
    AckFinish, AckSnapshot, ConnAction, ConnectionState, DeliveryReport, Disconnect, Engine, Event,
    Millis, OpId, Outcome,
};
use crate::protocol::SUBPROTOCOL;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Connecting = Pin<Box<dyn Future<Output = Result<Socket, Error>> + Send>>;

/// Most commands, or most frames already read, handled in one turn before the frames they
/// produce are written: one socket write per burst instead of one per publish or ack, while
/// timers and the other direction still get their turn.
const BURST: usize = 256;

/// The socket's read buffer. tungstenite zero-fills the free part of its read buffer before
/// every read, so its default (128 KiB) cost a 128 KiB `memset` per read system call; 16 KiB
/// still takes ~60 typical message frames per read.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Opens a WebSocket to `url` with the `sealbus.v1` subprotocol, Nagle's algorithm off (the
/// driver writes each burst once; holding it back for an ACK only adds latency).
pub(crate) async fn open(url: String) -> Result<Socket, Error> {
    let mut request = url
        .into_client_request()
        .map_err(|err| Error::InvalidOption(format!("bad server URL: {err}")))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let config =
        tungstenite::protocol::WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (socket, _response) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map_err(|err| Error::Transport(err.to_string()))?;
    Ok(socket)
}

/// What a call waits for.
enum Waiter {
    Subscribe(oneshot::Sender<Result<OpId, Error>>),
    Unsubscribe(oneshot::Sender<Result<(), Error>>),
    Publish(oneshot::Sender<Result<PublishResult, Error>>),
    Delivery(oneshot::Sender<Result<DeliveryReport, Error>>),
}

/// A publish_with_ack the driver tracks.
struct AckEntry {
    state: watch::Sender<AckSnapshot>,
    /// The caller of `publish_with_ack`, until the server named the expected subscribers.
    reply: Option<oneshot::Sender<Result<AckHandle, Error>>>,
}

/// The driver task's state.
pub(crate) struct Driver {
    url: String,
    engine: Engine,
    start: Instant,
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Sender<ConnectionState>,
    events: broadcast::Sender<ClientEvent>,
    client_id: Arc<Mutex<Option<String>>>,
    socket: Option<Socket>,
    connecting: Option<Connecting>,
    sinks: HashMap<OpId, Sink>,
    waiters: HashMap<OpId, Waiter>,
    acks: HashMap<OpId, AckEntry>,
    close_replies: Vec<oneshot::Sender<()>>,
}

impl Driver {
    pub(crate) fn new(
        options: &ClientOptions,
        commands: mpsc::UnboundedSender<Command>,
        state: watch::Sender<ConnectionState>,
        events: broadcast::Sender<ClientEvent>,
        client_id: Arc<Mutex<Option<String>>>,
    ) -> Driver {
        Driver {
            url: options.url.clone(),
            engine: Engine::new(options.engine.clone(), seed()),
            start: Instant::now(),
            commands,
            state,
            events,
            client_id,
            socket: None,
            connecting: None,
            sinks: HashMap::new(),
            waiters: HashMap::new(),
            acks: HashMap::new(),
            close_replies: Vec::new(),
        }
    }

    fn now(&self) -> Millis {
        Millis(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Runs until the engine is closed.
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            self.flush().await;
            if matches!(self.engine.state(), ConnectionState::Closed { .. }) {
                break;
            }
            let deadline = self.engine.poll_timeout().and_then(|t| {
                self.start
                    .checked_add(std::time::Duration::from_millis(t.0))
            });
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => {
                        self.command(command);
                        // The commands queued behind it go out in the same write. A closed
                        // channel is seen by the next `recv`.
                        for _ in 1..BURST {
                            let Ok(command) = commands.try_recv() else {
                                break;
                            };
                            self.command(command);
                        }
                    }
                    None => self.engine.close(false, self.now()),
                },
                frame = next_frame(&mut self.socket) => {
                    self.incoming(frame);
                    // Frames already received are handled before answering, so that their
                    // acks go out in one write.
                    for _ in 1..BURST {
                        let Some(socket) = self.socket.as_mut() else {
                            break;
                        };
                        let Some(frame) = socket.next().now_or_never() else {
                            break;
                        };
                        self.incoming(frame);
                    }
                }
                opened = poll_connecting(&mut self.connecting) => {
                    self.connecting = None;
                    match opened {
                        Ok(socket) => {
                            self.socket = Some(socket);
                            self.engine.handle_connected(self.now());
                        }
                        Err(err) => self.engine.handle_disconnected(
                            Disconnect { close_code: None, reason: err.to_string() },
                            self.now(),
                        ),
                    }
                }
                () = sleep_until(deadline) => self.engine.handle_timeout(self.now()),
            }
        }
        if let Some(mut socket) = self.socket.take() {
            // Best effort: the peer may be gone already.
            let _ = socket.close(None).await;
        }
        for reply in self.close_replies.drain(..) {
            let _ = reply.send(());
        }
    }

    /// Sends pending frames, acts on connection requests and dispatches events.
    async fn flush(&mut self) {
        loop {
            let mut progressed = false;
            let mut written = false;
            while let Some(text) = self.engine.poll_transmit() {
                progressed = true;
                let Some(socket) = self.socket.as_mut() else {
                    break;
                };
                written = true;
                if let Err(err) = socket.feed(WsMessage::text(text)).await {
                    self.transport_failed(&err);
                }
            }
            if written
                && let Some(socket) = self.socket.as_mut()
                && let Err(err) = socket.flush().await
            {
                self.transport_failed(&err);
            }
            while let Some(action) = self.engine.poll_connection() {
                progressed = true;
                match action {
                    ConnAction::Connect => {
                        self.connecting = Some(Box::pin(open(self.url.clone())));
                    }
                    ConnAction::Close { code, reason } => {
                        self.connecting = None;
                        if let Some(mut socket) = self.socket.take() {
                            let frame = CloseFrame {
                                code: CloseCode::from(code),
                                reason: reason.into(),
                            };
                            // Best effort: the connection is being abandoned.
                            let _ = socket.close(Some(frame)).await;
                        }
                    }
                }
            }
            while let Some(event) = self.engine.poll_event() {
                progressed = true;
                self.event(event);
            }
            if !progressed {
                return;
            }
        }
    }

    /// Writing failed: the socket is gone.
    fn transport_failed(&mut self, err: &tungstenite::Error) {
        self.socket = None;
        let disconnect = Disconnect {
            close_code: None,
            reason: err.to_string(),
        };
        self.engine.handle_disconnected(disconnect, self.now());
    }

    fn incoming(&mut self, frame: Option<Result<WsMessage, tungstenite::Error>>) {
        let now = self.now();
        match frame {
            Some(Ok(WsMessage::Text(text))) => self.engine.handle_message(text.as_str(), now),
            Some(Ok(WsMessage::Close(close))) => {
                self.socket = None;
                let disconnect = Disconnect {
                    close_code: close.as_ref().map(|c| u16::from(c.code)),
                    reason: close.map(|c| c.reason.to_string()).unwrap_or_default(),
                };
                self.engine.handle_disconnected(disconnect, now);
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                self.socket = None;
                let disconnect = Disconnect {
                    close_code: None,
                    reason: err.to_string(),
                };
                self.engine.handle_disconnected(disconnect, now);
            }
            None => {
                self.socket = None;
                let disconnect = Disconnect {
                    close_code: None,
                    reason: "connection closed".into(),
                };
                self.engine.handle_disconnected(disconnect, now);
            }
        }
    }

    fn command(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::Subscribe {
                filter,
                sink,
                reply,
            } => match self.engine.subscribe(&filter, now) {
                Ok(op) => {
                    self.sinks.insert(op, sink);
                    self.waiters.insert(op, Waiter::Subscribe(reply));
                }
                Err(err) => {
                    let _ = reply.send(Err(err));
                }
            },
            Command::RegisterDirect { sink, reply } => {
                let op = self.engine.register_direct();
                self.sinks.insert(op, sink);
                let _ = reply.send(op);
            }
            Command::Unsubscribe { handler, reply } => {
                self.sinks.remove(&handler);
                let op = self.engine.unsubscribe(handler, now);
                self.waiters.insert(op, Waiter::Unsubscribe(reply));
            }
            Command::DeliveryStatus { mid, reply } => {
                match self.engine.delivery_status(&mid, now) {
                    Ok(op) => {
                        self.waiters.insert(op, Waiter::Delivery(reply));
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Command::UnsubscribeFilter { filter, reply } => {
                for handler in self.engine.handlers(&filter) {
                    self.sinks.remove(&handler);
                }
                let op = self.engine.unsubscribe_filter(&filter, now);
                self.waiters.insert(op, Waiter::Unsubscribe(reply));
            }
            Command::Publish {
                to,
                data,
                options,
                reply,
            } => {
                let result = match &to {
                    Target::Topic(topic) => self.engine.publish(topic, data, options, now),
                    Target::Client(id) => self.engine.publish_to_id(id, data, options, now),
                };
                match result {
                    Ok(op) => {
                        self.waiters.insert(op, Waiter::Publish(reply));
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Command::PublishWithAck {
                to,
                data,
                options,
                timeout_ms,
                reply,
            } => {
                let result = match &to {
                    Target::Topic(topic) => self
                        .engine
                        .publish_with_ack(topic, data, options, timeout_ms, now),
                    Target::Client(id) => self
                        .engine
                        .publish_to_id_with_ack(id, data, options, timeout_ms, now),
                };
                match result {
                    Ok(op) => {
                        let (state, _) = watch::channel(AckSnapshot::default());
                        let entry = AckEntry {
                            state,
                            reply: Some(reply),
                        };
                        self.acks.insert(op, entry);
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Command::CancelAck { op } => self.engine.cancel_ack(op, now),
            Command::CompleteDelivery { token, result } => {
                self.engine.complete_delivery(token, result, now);
            }
            Command::Close { discard, reply } => {
                self.close_replies.extend(reply);
                self.engine.close(discard, now);
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::State(state) => {
                if state == ConnectionState::Connected {
                    let id = self.engine.client_id().map(str::to_owned);
                    *self
                        .client_id
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = id;
                }
                self.state.send_replace(state.clone());
                self.broadcast(ClientEvent::State(state));
            }
            Event::Completed { op, result } => self.completed(op, result),
            Event::Deliver {
                handlers,
                token,
                message,
            } => {
                let now = self.now();
                let last = handlers.len().saturating_sub(1);
                let mut message = Some(message);
                for (index, handler) in handlers.into_iter().enumerate() {
                    // The last handler takes the message itself; the others get copies.
                    let copy = if index == last {
                        message.take()
                    } else {
                        message.clone()
                    };
                    let Some(copy) = copy else {
                        break;
                    };
                    let delivered = match self.sinks.get(&handler) {
                        Some(Sink::Handler(tx)) => tx.send((copy, token)).is_ok(),
                        Some(Sink::Stream(tx)) => {
                            if tx.send(copy).is_err() {
                                tracing::debug!("subscription stream dropped");
                            }
                            false
                        }
                        None => false,
                    };
                    if !delivered && let Some(token) = token {
                        self.engine.complete_delivery(token, Ok(()), now);
                    }
                }
            }
            Event::AckUpdated { op, snapshot } => self.ack_updated(op, snapshot),
            Event::NotRecovered { filter, .. } => {
                self.broadcast(ClientEvent::NotRecovered { filter });
            }
            Event::DeadLetter { mid, topic, client } => {
                self.broadcast(ClientEvent::DeadLetter { mid, topic, client });
            }
            Event::Error(err) => {
                tracing::warn!(%err, "client error");
                self.broadcast(ClientEvent::Error(err));
            }
        }
    }

    fn broadcast(&self, event: ClientEvent) {
        // No receiver is fine: nobody is listening.
        let _ = self.events.send(event);
    }

    fn completed(&mut self, op: OpId, result: Result<Outcome, Error>) {
        let Some(waiter) = self.waiters.remove(&op) else {
            return;
        };
        // A caller that stopped waiting dropped its receiver; nothing to tell then.
        match waiter {
            Waiter::Subscribe(reply) => {
                if result.is_err() {
                    self.sinks.remove(&op);
                }
                let _ = reply.send(result.map(|_| op));
            }
            Waiter::Unsubscribe(reply) => {
                let _ = reply.send(result.map(|_| ()));
            }
            Waiter::Delivery(reply) => {
                let report = result.and_then(|outcome| match outcome {
                    Outcome::Delivery(report) => Ok(report),
                    other => Err(Error::Transport(format!(
                        "unexpected answer to delivery_status: {other:?}"
                    ))),
                });
                let _ = reply.send(report);
            }
            Waiter::Publish(reply) => {
                let published = result.map(|outcome| match outcome {
                    Outcome::Published {
                        mid,
                        offset,
                        duplicate,
                        queued,
                    } => PublishResult {
                        mid,
                        offset,
                        duplicate,
                        queued,
                    },
                    _ => PublishResult {
                        mid: None,
                        offset: None,
                        duplicate: false,
                        queued: false,
                    },
                });
                let _ = reply.send(published);
            }
        }
    }

    fn ack_updated(&mut self, op: OpId, snapshot: AckSnapshot) {
        let finished = snapshot.is_complete();
        let Some(entry) = self.acks.get_mut(&op) else {
            return;
        };
        let known = snapshot.expected.is_some();
        let failure = match &snapshot.finished {
            Some(AckFinish::Failed(err)) if !known => Some(err.clone()),
            _ => None,
        };
        entry.state.send_replace(snapshot);
        if (known || finished)
            && let Some(reply) = entry.reply.take()
        {
            let answer = match failure {
                Some(err) => Err(err),
                None => Ok(AckHandle {
                    op,
                    state: entry.state.subscribe(),
                    commands: self.commands.clone(),
                }),
            };
            let _ = reply.send(answer);
        }
        if finished {
            self.acks.remove(&op);
        }
    }
}

async fn next_frame(socket: &mut Option<Socket>) -> Option<Result<WsMessage, tungstenite::Error>> {
    match socket {
        Some(socket) => socket.next().await,
        None => std::future::pending().await,
    }
}

async fn poll_connecting(connecting: &mut Option<Connecting>) -> Result<Socket, Error> {
    match connecting {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A seed for the engine's jitter and message ids from the operating system's random source
/// (falling back to the clock).
fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    nanos as u64 ^ u64::from(std::process::id())
}
