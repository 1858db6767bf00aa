//! The in-process participant API: an embedding application joins a session as a client,
//! without a socket, with the same semantics as a remote client (its frames go through the same
//! broker code and its deliveries through the same bounded outbound queue).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealbus::protocol::{
    Ack, AckCancel, AckOutcome, AckRequest, AckResponse, ClientFrame, Codec, Direct, ErrorCode,
    Message, Payload, ProtocolError, Publish, Published, Qos, Send, ServerFrame, Subscribe,
    Unsubscribe,
};
use sealbus::topic::matches;
use tokio::sync::{mpsc, oneshot};

use crate::auth::Permissions;
use crate::broker::{ClientKey, Inbox, KillSwitch, Outbox, QueueLimits, Session};
use crate::error::{Error, Result};

/// Client id of the default in-process participant (`from` of its messages).
pub const SERVER_ID: &str = "$server";

/// Answer to a request, with the response stream of a publish_with_ack.
struct Reply {
    frame: ServerFrame,
    acks: Option<mpsc::UnboundedReceiver<ServerFrame>>,
}

#[derive(Default)]
struct Routes {
    /// The connection ended: requests fail at once instead of waiting forever.
    closed: bool,
    requests: HashMap<u64, oneshot::Sender<Reply>>,
    subscriptions: Vec<(String, mpsc::Sender<Delivery>)>,
    acks: HashMap<u64, mpsc::UnboundedSender<ServerFrame>>,
}

/// A client of a session living in the server process.
pub struct Participant {
    session: Arc<Session>,
    key: ClientKey,
    client_id: String,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
    directs: tokio::sync::Mutex<mpsc::Receiver<Direct>>,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant")
            .field("session", &self.session.name())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A message delivered to a participant's subscription.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message as a remote client receives it.
    pub message: Message,
    session: Arc<Session>,
    key: ClientKey,
}

impl Delivery {
    /// Answers a message that carries an `aid` or `did` (publish_with_ack / QoS 1): `Ok` for
    /// success, `Err(text)` for a handler failure.
    pub fn respond(&self, result: std::result::Result<(), String>) {
        if self.message.aid.is_none() && self.message.did.is_none() {
            return;
        }
        let (ok, error) = match result {
            Ok(()) => (true, None),
            Err(text) => (false, Some(text)),
        };
        let ack = ClientFrame::Ack(Ack {
            did: self.message.did,
            aid: self.message.aid,
            ok,
            code: (!ok).then_some(ErrorCode::HandlerFailed),
            error,
        });
        self.session.handle(self.key, ack);
    }
}

/// The messages of one subscription.
#[derive(Debug)]
pub struct Subscription {
    /// The filter.
    pub filter: String,
    rx: mpsc::Receiver<Delivery>,
}

impl Subscription {
    /// The next message; `None` once the participant left.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
}

/// A publish_with_ack in progress.
#[derive(Debug)]
pub struct AckHandle {
    /// The ack id.
    pub aid: u64,
    /// The client ids the server waits for.
    pub expected: Vec<String>,
    rx: mpsc::UnboundedReceiver<ServerFrame>,
    responses: Vec<AckResponse>,
    outcome: Option<AckOutcome>,
    session: Arc<Session>,
    key: ClientKey,
}

/// Every response a publish_with_ack collected, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckResult {
    /// Responses in arrival order.
    pub responses: Vec<AckResponse>,
    /// Why it finished (`None` if the participant left first).
    pub outcome: Option<AckOutcome>,
}

impl AckHandle {
    /// The next response; `None` once the collection finished (complete, timeout, cancelled).
    pub async fn wait_any(&mut self) -> Option<AckResponse> {
        if self.outcome.is_some() {
            return None;
        }
        while let Some(frame) = self.rx.recv().await {
            match frame {
                ServerFrame::AckResponse(response) => {
                    self.responses.push(response.clone());
                    return Some(response);
                }
                ServerFrame::AckDone(done) => {
                    self.outcome = Some(done.outcome);
                    return None;
                }
                _ => {}
            }
        }
        None
    }

    /// Waits until every expected subscriber answered, the timeout passed or it was cancelled;
    /// returns every response (also those already seen through [`wait_any`](Self::wait_any)).
    pub async fn wait(mut self) -> AckResult {
        while self.wait_any().await.is_some() {}
        AckResult {
            responses: self.responses,
            outcome: self.outcome,
        }
    }

    /// How the collection ended, once [`wait_any`](Self::wait_any) has seen the end.
    pub fn outcome(&self) -> Option<AckOutcome> {
        self.outcome
    }

    /// Stops collecting; copies not yet written to subscribers are withdrawn.
    pub fn cancel(&self) {
        let cancel = ClientFrame::AckCancel(AckCancel {
            id: None,
            aid: self.aid,
        });
        self.session.handle(self.key, cancel);
    }
}

/// Options of a publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// Quality of service.
    pub qos: Qos,
    /// Keep as the topic's retained message.
    pub retain: bool,
}

impl Participant {
    pub(crate) fn join(session: Arc<Session>, client_id: Option<&str>) -> Result<Self> {
        let client_id = match client_id {
            Some(id) => {
                sealbus::protocol::validate_client_id(id)?;
                id.to_owned()
            }
            None => SERVER_ID.to_owned(),
        };
        let settings = session.settings();
        let (outbox, rx) = Outbox::new(QueueLimits::from(&settings), session.metrics().clone());
        let kill = outbox.kill_switch().clone();
        let connected = session.connect(
            Some(client_id.clone()),
            false,
            Permissions::default(),
            outbox,
            false,
        )?;
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (direct_tx, direct_rx) = mpsc::channel(settings.outbound_queue as usize);
        tokio::spawn(dispatch(
            rx,
            routes.clone(),
            direct_tx,
            session.clone(),
            connected.key,
            kill,
        ));
        Ok(Participant {
            session,
            key: connected.key,
            client_id,
            routes,
            next_id: AtomicU64::new(1),
            directs: tokio::sync::Mutex::new(direct_rx),
        })
    }

    /// The participant's client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn request(&self, make: impl FnOnce(u64) -> ClientFrame) -> Result<Reply> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = make(id);
        // The same checks the codec applies to a remote client's frames.
        frame.validate()?;
        let (tx, rx) = oneshot::channel();
        {
            let mut routes = self.routes();
            if routes.closed {
                return Err(Error::Disconnected);
            }
            routes.requests.insert(id, tx);
        }
        self.session.handle(self.key, frame);
        let reply = rx.await.map_err(|_| Error::Disconnected)?;
        match reply.frame {
            ServerFrame::Error(err) => Err(Error::Protocol(ProtocolError::new(
                err.code,
                err.id,
                err.message,
            ))),
            _ => Ok(reply),
        }
    }

    /// Subscribes to `filter`; resolves when the broker confirmed.
    pub async fn subscribe(&self, filter: &str) -> Result<Subscription> {
        let capacity = self.session.settings().outbound_queue as usize;
        let (tx, rx) = mpsc::channel(capacity);
        self.routes().subscriptions.push((filter.to_owned(), tx));
        let result = self
            .request(|id| {
                ClientFrame::Subscribe(Subscribe {
                    id,
                    filter: filter.to_owned(),
                    since: None,
                })
            })
            .await;
        if let Err(err) = result {
            self.routes().subscriptions.retain(|(f, _)| f != filter);
            return Err(err);
        }
        Ok(Subscription {
            filter: filter.to_owned(),
            rx,
        })
    }

    /// Unsubscribes from `filter` (every local subscription with this filter ends).
    pub async fn unsubscribe(&self, filter: &str) -> Result<()> {
        self.request(|id| {
            ClientFrame::Unsubscribe(Unsubscribe {
                id,
                filter: filter.to_owned(),
            })
        })
        .await?;
        self.routes().subscriptions.retain(|(f, _)| f != filter);
        Ok(())
    }

    /// Publishes; resolves with the server's `published` answer.
    pub async fn publish(
        &self,
        topic: &str,
        data: Payload,
        options: PublishOptions,
    ) -> Result<Published> {
        let reply = self
            .request(|id| ClientFrame::Publish(publish(id, topic, data, options, None)))
            .await?;
        match reply.frame {
            ServerFrame::Published(published) => Ok(published),
            _ => Err(unexpected()),
        }
    }

    /// Publishes and collects every subscriber's response (publish_with_ack).
    pub async fn publish_with_ack(
        &self,
        topic: &str,
        data: Payload,
        timeout: Duration,
    ) -> Result<AckHandle> {
        let ack = Some(ack_request(timeout));
        let reply = self
            .request(|id| {
                ClientFrame::Publish(publish(id, topic, data, PublishOptions::default(), ack))
            })
            .await?;
        self.ack_handle(reply)
    }

    /// Sends a direct message to the client `to` of the same session (publish_to_id).
    pub async fn publish_to_id(&self, to: &str, data: Payload) -> Result<()> {
        self.request(|id| ClientFrame::Send(send(id, to, data, None)))
            .await
            .map(|_| ())
    }

    /// Sends a direct message and waits for the recipient's response.
    pub async fn publish_to_id_with_ack(
        &self,
        to: &str,
        data: Payload,
        timeout: Duration,
    ) -> Result<AckHandle> {
        let ack = Some(ack_request(timeout));
        let reply = self
            .request(|id| ClientFrame::Send(send(id, to, data, ack)))
            .await?;
        self.ack_handle(reply)
    }

    /// The next direct message sent to this participant.
    pub async fn recv_direct(&self) -> Option<Direct> {
        self.directs.lock().await.recv().await
    }

    fn ack_handle(&self, reply: Reply) -> Result<AckHandle> {
        match (reply.frame, reply.acks) {
            (ServerFrame::AckExpect(expect), Some(rx)) => Ok(AckHandle {
                aid: expect.aid,
                expected: expect.expected,
                rx,
                responses: Vec::new(),
                outcome: None,
                session: self.session.clone(),
                key: self.key,
            }),
            _ => Err(unexpected()),
        }
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.session.disconnect(self.key);
    }
}

fn unexpected() -> Error {
    Error::protocol(
        ErrorCode::Internal,
        None,
        "unexpected answer from the broker",
    )
}

fn ack_request(timeout: Duration) -> AckRequest {
    AckRequest {
        timeout_ms: u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, sealbus::protocol::MAX_ACK_TIMEOUT_MS),
    }
}

fn publish(
    id: u64,
    topic: &str,
    data: Payload,
    options: PublishOptions,
    ack: Option<AckRequest>,
) -> Publish {
    Publish {
        id: Some(id),
        mid: None,
        topic: topic.to_owned(),
        data,
        qos: options.qos,
        retain: options.retain,
        ack,
        notify_dead: false,
    }
}

fn send(id: u64, to: &str, data: Payload, ack: Option<AckRequest>) -> Send {
    Send {
        id: Some(id),
        mid: None,
        to: to.to_owned(),
        data,
        qos: Qos::AtMostOnce,
        ack,
    }
}

/// Reads the participant's outbound queue and routes each frame to its waiter.
async fn dispatch(
    mut rx: Inbox,
    routes: Arc<Mutex<Routes>>,
    directs: mpsc::Sender<Direct>,
    session: Arc<Session>,
    key: ClientKey,
    kill: Arc<KillSwitch>,
) {
    let codec = Codec::new(usize::MAX);
    let mut killed = kill.subscribe();
    loop {
        let item = tokio::select! {
            _ = killed.wait_for(|k| *k) => break,
            item = rx.recv() => item,
        };
        let Some(item) = item else { break };
        for piece in item.pieces() {
            let Some(frame) = piece
                .text()
                .and_then(|text| codec.decode_server(text.as_bytes()).ok())
            else {
                continue;
            };
            match frame {
                ServerFrame::Message(message) => {
                    let targets: Vec<mpsc::Sender<Delivery>> = {
                        let routes = routes.lock().unwrap_or_else(|e| e.into_inner());
                        routes
                            .subscriptions
                            .iter()
                            .filter(|(filter, _)| matches(filter, &message.topic))
                            .map(|(_, tx)| tx.clone())
                            .collect()
                    };
                    for tx in targets {
                        let delivery = Delivery {
                            message: message.clone(),
                            session: session.clone(),
                            key,
                        };
                        let _ = tx.send(delivery).await;
                    }
                }
                ServerFrame::Direct(direct) => {
                    let _ = directs.send(direct).await;
                }
                ServerFrame::AckResponse(ref r) => {
                    forward_ack(&routes, r.aid, frame.clone(), false)
                }
                ServerFrame::AckDone(ref d) => forward_ack(&routes, d.aid, frame.clone(), true),
                frame => answer(&routes, frame),
            }
        }
    }
    session.disconnect(key);
    // Waiters see the end: pending requests fail, subscriptions and ack streams finish.
    let mut routes = routes.lock().unwrap_or_else(|e| e.into_inner());
    routes.closed = true;
    routes.requests.clear();
    routes.subscriptions.clear();
    routes.acks.clear();
}

fn forward_ack(routes: &Mutex<Routes>, aid: u64, frame: ServerFrame, last: bool) {
    let mut routes = routes.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = routes.acks.get(&aid) {
        let _ = tx.send(frame);
    }
    if last {
        routes.acks.remove(&aid);
    }
}

fn answer(routes: &Mutex<Routes>, frame: ServerFrame) {
    let id = match &frame {
        ServerFrame::Subscribed(f) => Some(f.id),
        ServerFrame::Unsubscribed(f) => Some(f.id),
        ServerFrame::Published(f) => Some(f.id),
        ServerFrame::AckExpect(f) => Some(f.id),
        ServerFrame::AckState(f) => Some(f.id),
        ServerFrame::Pong(f) => f.id,
        ServerFrame::Error(f) => f.id,
        _ => None,
    };
    let Some(id) = id else { return };
    let mut routes = routes.lock().unwrap_or_else(|e| e.into_inner());
    let acks = match &frame {
        ServerFrame::AckExpect(expect) => {
            let (tx, rx) = mpsc::unbounded_channel();
            routes.acks.insert(expect.aid, tx);
            Some(rx)
        }
        _ => None,
    };
    if let Some(waiter) = routes.requests.remove(&id) {
        let _ = waiter.send(Reply { frame, acks });
    }
}
