//! The async [`Client`]: the facade Rust users and every binding call (feature `native`).
//!
//! One driver task owns the [`Engine`](crate::engine::Engine) and the WebSocket; the client
//! handles talk to it over a channel. Every public type here is plain data or a handle without
//! generic parameters or lifetimes, so wasm-bindgen, uniffi and a C ABI can wrap it one to one.
//!
//! ```no_run
//! use sealbus::client::{Client, ClientOptions, handler};
//! use sealbus::engine::{Data, PublishOptions};
//!
//! # async fn demo() -> Result<(), sealbus::Error> {
//! let client = Client::connect(
//!     ClientOptions::new("ws://127.0.0.1:7070/ws", "demo").password("s3cret"),
//! )
//! .await?;
//! let _sub = client
//!     .subscribe("sensors/+/temp", handler(|message| async move {
//!         println!("{} from {}: {:?}", message.topic, message.from, message.data);
//!         Ok(())
//!     }))
//!     .await?;
//! client
//!     .publish("sensors/kitchen/temp", Data::Json(21.5.into()), PublishOptions::default())
//!     .await?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::Error;
use crate::crypto::Keyring;
use crate::engine::{
    AckFinish, AckReply, AckSnapshot, ConnectionState, Data, DeliveryToken, EngineConfig, Message,
    OpId, PublishOptions, ReconnectPolicy,
};
use crate::protocol::Auth;

/// A message handler: called once per message; `Ok` acknowledges it, `Err` (or a panic) sends
/// an error response with the message to a publisher waiting with publish_with_ack.
pub type Handler = Arc<dyn Fn(Message) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Makes a [`Handler`] from an async closure.
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move |message| Box::pin(f(message)))
}

/// Options for [`Client::connect`], built step by step.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub(crate) url: String,
    pub(crate) engine: EngineConfig,
    pub(crate) default_ack_timeout: Duration,
}

impl ClientOptions {
    /// Options for the server at `url` (for example `ws://127.0.0.1:7070/ws`) and `session`.
    /// Set credentials with [`ClientOptions::password`] or [`ClientOptions::token`].
    pub fn new(url: impl Into<String>, session: impl Into<String>) -> ClientOptions {
        ClientOptions {
            url: url.into(),
            engine: EngineConfig::new(session, Auth::Password(String::new())),
            default_ack_timeout: Duration::from_secs(30),
        }
    }

    /// Authenticate with the session password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.engine.auth = Auth::Password(password.into());
        self
    }

    /// Authenticate with a client token signed for the session.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.engine.auth = Auth::Token(token.into());
        self
    }

    /// Ask for this client id (the server assigns one otherwise).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.engine.client_id = Some(client_id.into());
        self
    }

    /// Seal publishes with the keyring's primary key and open sealed messages with it.
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.engine.keyring = Some(keyring);
        self
    }

    /// How to reconnect after the connection drops.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.engine.reconnect = policy;
        self
    }

    /// Ping after `interval` without sending; reconnect when nothing arrives within `timeout`
    /// after a ping. The default is the server's `keepalive_ms` for both.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.engine.keepalive_ms = Some(millis(interval));
        self.engine.keepalive_timeout_ms = Some(millis(timeout));
        self
    }

    /// Publishes kept while disconnected (default 1000); one more fails with
    /// `offline_buffer_full`.
    pub fn offline_buffer(mut self, messages: usize) -> Self {
        self.engine.offline_buffer = messages;
        self
    }

    /// How long a request may wait for the server's answer (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.engine.request_timeout_ms = millis(timeout);
        self
    }

    /// Timeout of [`Client::publish_with_ack`] when none is given (default 30 s).
    pub fn default_ack_timeout(mut self, timeout: Duration) -> Self {
        self.default_ack_timeout = timeout;
        self
    }

    /// Ask the server to keep subscriptions and QoS 1 messages while the client is away
    /// (needs a client id).
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.engine.persistent = persistent;
        self
    }

    fn check(&self) -> Result<(), Error> {
        crate::protocol::validate_session_name(&self.engine.session)?;
        if let Some(id) = &self.engine.client_id {
            crate::protocol::validate_client_id(id)?;
        }
        if self.engine.persistent && self.engine.client_id.is_none() {
            return Err(Error::InvalidOption(
                "a persistent client needs a client id".into(),
            ));
        }
        Ok(())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Something the application may want to know that is not the result of one call.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The connection state changed.
    State(ConnectionState),
    /// After a reconnect the server could not replay every message missed on `filter`.
    NotRecovered {
        /// The filter.
        filter: String,
    },
    /// A QoS 1 copy of a message published with `notify_dead` ran out of retries.
    DeadLetter {
        /// Message id.
        mid: String,
        /// Topic.
        topic: String,
        /// The subscriber that never acknowledged.
        client: String,
    },
    /// An error not tied to one call (for example a message that could not be opened).
    Error(Error),
}

/// A receiver of [`ClientEvent`]s, from [`Client::events`].
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<ClientEvent>,
}

impl EventStream {
    /// The next event; `None` once the client is gone. Events that arrive faster than they are
    /// read are dropped beyond a buffer of 256.
    pub async fn next(&mut self) -> Option<ClientEvent> {
        loop {
            match self.rx.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The result of a successful publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishResult {
    /// The message id (absent for QoS 0).
    pub mid: Option<String>,
    /// Stream offset (QoS 1 topic publishes).
    pub offset: Option<u64>,
    /// The server had already stored this message id; it was not delivered again.
    pub duplicate: bool,
    /// A direct message was queued for a persistent client that is away.
    pub queued: bool,
}

/// Where handler calls for one registration go.
pub(crate) enum Sink {
    /// Run a handler, one message at a time, in order.
    Handler(mpsc::UnboundedSender<(Message, Option<DeliveryToken>)>),
    /// Push into a [`SubscriptionStream`]; acknowledged once queued.
    Stream(mpsc::UnboundedSender<Message>),
}

/// What the application asks of the driver.
pub(crate) enum Command {
    Subscribe {
        filter: String,
        sink: Sink,
        reply: oneshot::Sender<Result<OpId, Error>>,
    },
    RegisterDirect {
        sink: Sink,
        reply: oneshot::Sender<OpId>,
    },
    Unsubscribe {
        handler: OpId,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    UnsubscribeFilter {
        filter: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Publish {
        to: Target,
        data: Data,
        options: PublishOptions,
        reply: oneshot::Sender<Result<PublishResult, Error>>,
    },
    PublishWithAck {
        to: Target,
        data: Data,
        options: PublishOptions,
        timeout_ms: u64,
        reply: oneshot::Sender<Result<AckHandle, Error>>,
    },
    CancelAck {
        op: OpId,
    },
    CompleteDelivery {
        token: DeliveryToken,
        result: Result<(), String>,
    },
    Close {
        discard: bool,
        reply: Option<oneshot::Sender<()>>,
    },
}

/// A publish's destination.
pub(crate) enum Target {
    Topic(String),
    Client(String),
}

/// State shared by every clone of a [`Client`]; dropping the last one closes the connection.
struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ConnectionState>,
    events: broadcast::Sender<ClientEvent>,
    client_id: Arc<Mutex<Option<String>>>,
    default_ack_timeout: Duration,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let close = Command::Close {
            discard: false,
            reply: None,
        };
        // The driver may be gone already; then there is nothing to close.
        let _ = self.commands.send(close);
    }
}

/// A Sealbus client: cheap to clone, `Send + Sync`; dropping the last clone closes it cleanly.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id())
            .field("state", &self.state())
            .finish()
    }
}

impl Client {
    /// Connects and authenticates; resolves once the server has welcomed the client.
    ///
    /// Wrong credentials fail with the server's error (`auth_failed`, ...) and no retry. Must
    /// be called inside a tokio runtime, which runs the client's driver task.
    pub async fn connect(options: ClientOptions) -> Result<Client, Error> {
        options.check()?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (state_tx, mut state) = watch::channel(ConnectionState::Connecting);
        let (events, _) = broadcast::channel(256);
        let client_id = Arc::new(Mutex::new(None));
        let driver = crate::transport::native::Driver::new(
            &options,
            commands.clone(),
            state_tx,
            events.clone(),
            client_id.clone(),
        );
        tokio::spawn(driver.run(command_rx));
        let client = Client {
            shared: Arc::new(Shared {
                commands,
                state: state.clone(),
                events,
                client_id,
                default_ack_timeout: options.default_ack_timeout,
            }),
        };
        let reached = state
            .wait_for(|s| {
                matches!(
                    s,
                    ConnectionState::Connected | ConnectionState::Closed { .. }
                )
            })
            .await
            .map(|s| s.clone());
        match reached {
            Ok(ConnectionState::Connected) => Ok(client),
            Ok(ConnectionState::Closed { error: Some(err) }) => Err(err),
            _ => Err(Error::Closed),
        }
    }

    /// The connection state now.
    pub fn state(&self) -> ConnectionState {
        self.shared.state.borrow().clone()
    }

    /// Waits until the connection state differs from `current` and returns the new state;
    /// [`ConnectionState::Closed`] stays final.
    pub async fn state_change(&self, current: &ConnectionState) -> ConnectionState {
        let mut state = self.shared.state.clone();
        let changed = state.wait_for(|s| s != current).await.map(|s| s.clone());
        changed.unwrap_or(ConnectionState::Closed { error: None })
    }

    /// A stream of connection state changes, recovery gaps, dead letters and errors.
    pub fn events(&self) -> EventStream {
        EventStream {
            rx: self.shared.events.subscribe(),
        }
    }

    /// The client id the server confirmed.
    pub fn client_id(&self) -> Option<String> {
        self.shared
            .client_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Subscribes `handler` to `filter`; resolves when the server confirms.
    ///
    /// The handler runs once per message, one message at a time, in arrival order. Subscribing
    /// the same filter twice keeps one server subscription and runs both handlers.
    pub async fn subscribe(&self, filter: &str, handler: Handler) -> Result<Subscription, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_handler(handler, rx, self.shared.commands.clone()));
        self.subscribe_sink(filter, Sink::Handler(tx)).await
    }

    /// Subscribes to `filter` and returns the messages as a stream. Each message is
    /// acknowledged as soon as it is queued for the stream.
    pub async fn subscribe_stream(&self, filter: &str) -> Result<SubscriptionStream, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let subscription = self.subscribe_sink(filter, Sink::Stream(tx)).await?;
        Ok(SubscriptionStream { subscription, rx })
    }

    /// Runs `handler` for every direct message (publish_to_id) sent to this client.
    pub async fn on_direct(&self, handler: Handler) -> Result<Subscription, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_handler(handler, rx, self.shared.commands.clone()));
        let (reply, answer) = oneshot::channel();
        self.send(Command::RegisterDirect {
            sink: Sink::Handler(tx),
            reply,
        })?;
        let handler = answer.await.map_err(|_| Error::Closed)?;
        Ok(self.subscription(handler, "@direct"))
    }

    /// Unsubscribes every handler of `filter`; a filter not held is a no-op success.
    pub async fn unsubscribe(&self, filter: &str) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::UnsubscribeFilter {
            filter: filter.to_owned(),
            reply,
        })?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Publishes `data` to `topic`. QoS 0 resolves when sent (or buffered while offline),
    /// QoS 1 when the server has stored the message.
    pub async fn publish(
        &self,
        topic: &str,
        data: Data,
        options: PublishOptions,
    ) -> Result<PublishResult, Error> {
        self.publish_to(Target::Topic(topic.to_owned()), data, options)
            .await
    }

    /// Sends `data` to the client `client_id` of the same session.
    pub async fn publish_to_id(
        &self,
        client_id: &str,
        data: Data,
        options: PublishOptions,
    ) -> Result<PublishResult, Error> {
        self.publish_to(Target::Client(client_id.to_owned()), data, options)
            .await
    }

    /// Publishes and collects every subscriber's response for up to `timeout` (the default ack
    /// timeout when `None`). Resolves once the server has said whom it waits for.
    pub async fn publish_with_ack(
        &self,
        topic: &str,
        data: Data,
        options: PublishOptions,
        timeout: Option<Duration>,
    ) -> Result<AckHandle, Error> {
        self.publish_ack(Target::Topic(topic.to_owned()), data, options, timeout)
            .await
    }

    /// [`Client::publish_to_id`] collecting the recipient's response.
    pub async fn publish_to_id_with_ack(
        &self,
        client_id: &str,
        data: Data,
        options: PublishOptions,
        timeout: Option<Duration>,
    ) -> Result<AckHandle, Error> {
        self.publish_ack(Target::Client(client_id.to_owned()), data, options, timeout)
            .await
    }

    /// Closes the connection (the server keeps a persistent client's state) and waits until
    /// the driver has finished. Every clone is closed.
    pub async fn close(&self) {
        self.close_with(false).await;
    }

    /// Closes and, for a persistent client, tells the server to drop its stored subscriptions
    /// and queued messages.
    pub async fn close_and_discard(&self) {
        self.close_with(true).await;
    }

    async fn close_with(&self, discard: bool) {
        let (reply, answer) = oneshot::channel();
        if self
            .send(Command::Close {
                discard,
                reply: Some(reply),
            })
            .is_ok()
        {
            // An error means the driver is gone: closed already.
            let _ = answer.await;
        }
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        self.shared
            .commands
            .send(command)
            .map_err(|_| Error::Closed)
    }

    fn subscription(&self, handler: OpId, filter: &str) -> Subscription {
        Subscription {
            handler,
            filter: filter.to_owned(),
            commands: self.shared.commands.clone(),
        }
    }

    async fn subscribe_sink(&self, filter: &str, sink: Sink) -> Result<Subscription, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Subscribe {
            filter: filter.to_owned(),
            sink,
            reply,
        })?;
        let handler = answer.await.map_err(|_| Error::Closed)??;
        Ok(self.subscription(handler, filter))
    }

    async fn publish_to(
        &self,
        to: Target,
        data: Data,
        options: PublishOptions,
    ) -> Result<PublishResult, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Publish {
            to,
            data,
            options,
            reply,
        })?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn publish_ack(
        &self,
        to: Target,
        data: Data,
        options: PublishOptions,
        timeout: Option<Duration>,
    ) -> Result<AckHandle, Error> {
        let timeout = timeout.unwrap_or(self.shared.default_ack_timeout);
        let (reply, answer) = oneshot::channel();
        self.send(Command::PublishWithAck {
            to,
            data,
            options,
            timeout_ms: millis(timeout),
            reply,
        })?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

/// Runs `handler` for each queued message, catching errors and panics, and reports each result.
async fn run_handler(
    handler: Handler,
    mut rx: mpsc::UnboundedReceiver<(Message, Option<DeliveryToken>)>,
    commands: mpsc::UnboundedSender<Command>,
) {
    use futures_util::FutureExt as _;
    use std::panic::AssertUnwindSafe;

    while let Some((message, token)) = rx.recv().await {
        let call = std::panic::catch_unwind(AssertUnwindSafe(|| handler(message)));
        let result = match call {
            Ok(future) => match AssertUnwindSafe(future).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => Err(panic_message(panic.as_ref())),
            },
            Err(panic) => Err(panic_message(panic.as_ref())),
        };
        if let Err(error) = &result {
            tracing::debug!(%error, "handler failed");
        }
        if let Some(token) = token {
            // The driver may be gone (client closed); then nobody waits for the result.
            let _ = commands.send(Command::CompleteDelivery { token, result });
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    format!("handler panicked: {text}")
}

/// A handler registration; [`Subscription::unsubscribe`] removes it. Dropping it keeps the
/// subscription (it lives as long as the client).
#[derive(Debug, Clone)]
pub struct Subscription {
    handler: OpId,
    filter: String,
    commands: mpsc::UnboundedSender<Command>,
}

impl Subscription {
    /// The filter (`@direct` for a direct-message handler).
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// Removes this handler; when it was the filter's last one, the server subscription ends
    /// too (resolves when the server confirms).
    pub async fn unsubscribe(&self) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Unsubscribe {
                handler: self.handler,
                reply,
            })
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

/// A subscription whose messages are read with [`SubscriptionStream::next`].
#[derive(Debug)]
pub struct SubscriptionStream {
    subscription: Subscription,
    rx: mpsc::UnboundedReceiver<Message>,
}

impl SubscriptionStream {
    /// The next message; `None` after unsubscribing or closing.
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The subscription, to unsubscribe.
    pub fn subscription(&self) -> &Subscription {
        &self.subscription
    }
}

/// What a finished publish_with_ack collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckResult {
    /// The subscribers the server waited for (empty when it never said).
    pub expected: Vec<String>,
    /// Responses that arrived, by client id.
    pub responses: BTreeMap<String, AckReply>,
    /// Why it finished.
    pub outcome: AckFinish,
}

/// A publish_with_ack in progress: wait for responses, look at them, or cancel.
#[derive(Debug, Clone)]
pub struct AckHandle {
    pub(crate) op: OpId,
    pub(crate) state: watch::Receiver<AckSnapshot>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

impl AckHandle {
    /// Waits until every expected response arrived, the timeout passed or the handle was
    /// cancelled, and returns what arrived.
    pub async fn wait(&self) -> AckResult {
        let mut state = self.state.clone();
        let snapshot = match state.wait_for(AckSnapshot::is_complete).await {
            Ok(snapshot) => snapshot.clone(),
            Err(_) => self.state.borrow().clone(),
        };
        AckResult {
            expected: snapshot.expected.clone().unwrap_or_default(),
            responses: snapshot.response_map(),
            outcome: snapshot
                .finished
                .unwrap_or(AckFinish::Failed(Error::Closed)),
        }
    }

    /// Waits for the first response; `None` when the collection finished without any.
    pub async fn wait_any(&self) -> Option<(String, AckReply)> {
        let mut state = self.state.clone();
        let snapshot = match state
            .wait_for(|s| !s.responses.is_empty() || s.is_complete())
            .await
        {
            Ok(snapshot) => snapshot.clone(),
            Err(_) => self.state.borrow().clone(),
        };
        snapshot.responses.into_iter().next()
    }

    /// Every expected client id mapped to whether its response has arrived.
    pub fn status(&self) -> BTreeMap<String, bool> {
        self.state.borrow().status()
    }

    /// Whether the collection has finished.
    pub fn is_complete(&self) -> bool {
        self.state.borrow().is_complete()
    }

    /// The collection's state now.
    pub fn snapshot(&self) -> AckSnapshot {
        self.state.borrow().clone()
    }

    /// Stops collecting: waiters wake now with what arrived, later responses are ignored.
    /// Idempotent.
    pub fn cancel(&self) {
        // Nothing to cancel when the driver is gone: the handle finished when it stopped.
        let _ = self.commands.send(Command::CancelAck { op: self.op });
    }
}

#[cfg(test)]
mod tests;
