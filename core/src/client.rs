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

mod handles;
mod options;

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use handles::{
    AckHandle, AckResult, ClientEvent, EventStream, PublishResult, Subscription, SubscriptionStream,
};
pub use options::ClientOptions;

use crate::Error;
use crate::engine::{
    ConnectionState, Data, DeliveryReport, DeliveryToken, Message, OpId, PublishOptions,
};
use options::millis;

/// A message handler: called once per message; `Ok` acknowledges it, `Err` (or a panic) sends
/// an error response with the message to a publisher waiting with publish_with_ack.
pub type Handler = Arc<dyn Fn(Message) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A handler that also receives its own [`Subscription`], to unsubscribe from inside.
pub type SubscriptionHandler =
    Arc<dyn Fn(Message, Subscription) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Makes a [`Handler`] from an async closure.
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move |message| Box::pin(f(message)))
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
    DeliveryStatus {
        mid: String,
        reply: oneshot::Sender<Result<DeliveryReport, Error>>,
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

    /// [`Client::subscribe`] with a handler that also gets its own [`Subscription`], so it can
    /// unsubscribe itself.
    pub async fn subscribe_with_handle(
        &self,
        filter: &str,
        handler: SubscriptionHandler,
    ) -> Result<Subscription, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (handle_tx, handle_rx) = oneshot::channel::<Subscription>();
        let commands = self.shared.commands.clone();
        tokio::spawn(async move {
            // No handle: the subscribe failed and no message will come.
            let Ok(subscription) = handle_rx.await else {
                return;
            };
            let bound: Handler = Arc::new(move |message| handler(message, subscription.clone()));
            run_handler(bound, rx, commands).await;
        });
        let subscription = self.subscribe_sink(filter, Sink::Handler(tx)).await?;
        // The worker only ends early when the client is gone.
        let _ = handle_tx.send(subscription.clone());
        Ok(subscription)
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
    /// timeout when `None`). Resolves once the server has said whom it waits for; with no
    /// subscribers the handle is complete at once and empty.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sealbus::client::Client;
    /// # use sealbus::engine::{Data, PublishOptions};
    /// # async fn demo(client: Client) -> Result<(), sealbus::Error> {
    /// let ack = client
    ///     .publish_with_ack(
    ///         "jobs/resize",
    ///         Data::Json(serde_json::json!({"image": 7})),
    ///         PublishOptions::default(),
    ///         Some(Duration::from_secs(5)),
    ///     )
    ///     .await?;
    /// if let Some((worker, reply)) = ack.wait_any().await {
    ///     println!("{worker} answered first: ok = {}", reply.ok);
    /// }
    /// let all = ack.wait().await; // everything that arrived, complete or not
    /// for (worker, reply) in &all.responses {
    ///     println!("{worker}: {:?}", reply.error);
    /// }
    /// println!("finished: {:?}; still waiting for {:?}", all.outcome, ack.status());
    /// # Ok(())
    /// # }
    /// ```
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

    /// The per-subscriber state (pending, delivered, acknowledged, dead) of a QoS 1 message this
    /// client published, while the server holds it; `mid` is the
    /// [`PublishResult::mid`] of the publish.
    ///
    /// Errors: [`Error::Server`] with `unknown_message_id` for a message the server does not
    /// hold (or that another client published), [`Error::Disconnected`] while not connected,
    /// [`Error::Timeout`].
    ///
    /// ```no_run
    /// # use sealbus::client::Client;
    /// # use sealbus::engine::{Data, PublishOptions};
    /// # use sealbus::protocol::Qos;
    /// # async fn demo(client: Client) -> Result<(), sealbus::Error> {
    /// let options = PublishOptions { qos: Qos::AtLeastOnce, ..PublishOptions::default() };
    /// let published = client.publish("orders/new", Data::Json(42.into()), options).await?;
    /// if let Some(mid) = published.mid {
    ///     for copy in client.delivery_status(&mid).await?.copies {
    ///         println!("{}: {:?} after {} attempts", copy.client, copy.state, copy.attempts);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delivery_status(&self, mid: &str) -> Result<DeliveryReport, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::DeliveryStatus {
            mid: mid.to_owned(),
            reply,
        })?;
        answer.await.map_err(|_| Error::Closed)?
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

#[cfg(test)]
mod tests;
