//! The handles and plain data the [`Client`](super::Client) hands out.

use std::collections::BTreeMap;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::Command;
use crate::Error;
use crate::engine::{AckFinish, AckReply, AckSnapshot, ConnectionState, Message, OpId};

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

/// A receiver of [`ClientEvent`]s, from [`Client::events`](super::Client::events).
#[derive(Debug)]
pub struct EventStream {
    pub(crate) rx: broadcast::Receiver<ClientEvent>,
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
/// A handler registration; [`Subscription::unsubscribe`] removes it. Dropping it keeps the
/// subscription (it lives as long as the client).
#[derive(Debug, Clone)]
pub struct Subscription {
    pub(crate) handler: OpId,
    pub(crate) filter: String,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
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
    pub(crate) subscription: Subscription,
    pub(crate) rx: mpsc::UnboundedReceiver<Message>,
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
