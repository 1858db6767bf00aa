//! Commands from the application: subscribe, unsubscribe, publish, acks, deliveries.

use crate::Error;
use crate::protocol::{
    AckCancel, AckRequest, ClientFrame, Codec, DeliveryStatus, MAX_ACK_TIMEOUT_MS, Payload,
    Publish, Qos, Send, Subscribe, Unsubscribe, validate_client_id, validate_message_id,
};
use crate::topic::{validate_filter, validate_topic};

use super::acks::Collections;
use super::payload::to_payload;
use super::subscriptions::Added;
use super::types::{AckFinish, Data, DeliveryToken, Millis, OpId, Outcome};
use super::{Conn, Engine, Outgoing, Request};

/// How to publish one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOptions {
    /// Quality of service: QoS 0 completes when sent (or buffered), QoS 1 when the server
    /// stored it.
    pub qos: Qos,
    /// Keep as the topic's retained message (an empty payload clears it).
    pub retain: bool,
    /// Seal with the keyring's primary key when the client has a keyring (the default). Set to
    /// `false` to publish plain data explicitly.
    pub encrypt: bool,
    /// Ask the server for a [`Event::DeadLetter`](super::Event::DeadLetter) when a QoS 1 copy
    /// runs out of retries.
    pub notify_dead: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            qos: Qos::AtMostOnce,
            retain: false,
            encrypt: true,
            notify_dead: false,
        }
    }
}

/// Where a publish goes.
enum Target<'a> {
    Topic(&'a str),
    Client(&'a str),
}

impl Engine {
    /// Subscribes a new handler registration to `filter`; its id is the returned [`OpId`].
    ///
    /// Completes with [`Outcome::Subscribed`] when the server confirms (at once when the filter
    /// is already held: a filter subscribed twice is one server subscription with two handlers).
    /// Errors: an invalid filter ([`Error::Topic`]), [`Error::Closed`].
    pub fn subscribe(&mut self, filter: &str, now: Millis) -> Result<OpId, Error> {
        validate_filter(filter)?;
        self.ensure_open()?;
        let op = self.next_op();
        match self.subs.add(filter, op) {
            Added::Active => self.complete(
                op,
                Ok(Outcome::Subscribed {
                    filter: filter.to_owned(),
                }),
            ),
            Added::Waiting => {}
            Added::New => {
                self.ended_filters.retain(|f| f != filter);
                if self.conn == Conn::Connected {
                    self.send_subscribe(filter, now);
                }
            }
        }
        Ok(op)
    }

    /// Registers a handler for direct messages (publish_to_id) sent to this client; no server
    /// request is involved. Remove it with [`Engine::unsubscribe`].
    pub fn register_direct(&mut self) -> OpId {
        let op = self.next_op();
        self.directs.push(op);
        op
    }

    /// Removes handler registration `handler` (from [`Engine::subscribe`] or
    /// [`Engine::register_direct`]). When it was the filter's last handler the server
    /// subscription ends too. Completes with [`Outcome::Unsubscribed`]; an unknown handler is a
    /// no-op success.
    pub fn unsubscribe(&mut self, handler: OpId, now: Millis) -> OpId {
        let op = self.next_op();
        if let Some(pos) = self.directs.iter().position(|h| *h == handler) {
            self.directs.remove(pos);
            self.complete(op, Ok(Outcome::Unsubscribed));
            return op;
        }
        match self.subs.remove_handler(handler) {
            Some((filter, gone, was_waiting)) => {
                if was_waiting {
                    self.complete(handler, Err(Error::Cancelled));
                }
                if gone {
                    self.end_server_subscription(filter, op, now);
                } else {
                    self.complete(op, Ok(Outcome::Unsubscribed));
                }
            }
            None => self.complete(op, Ok(Outcome::Unsubscribed)),
        }
        op
    }

    /// Removes every handler of `filter` and ends its server subscription. Completes with
    /// [`Outcome::Unsubscribed`]; a filter not held is a no-op success.
    pub fn unsubscribe_filter(&mut self, filter: &str, now: Millis) -> OpId {
        let op = self.next_op();
        match self.subs.remove_filter(filter) {
            Some(sub) => {
                for waiting in sub.waiting {
                    self.complete(waiting, Err(Error::Cancelled));
                }
                self.end_server_subscription(filter.to_owned(), op, now);
            }
            None => self.complete(op, Ok(Outcome::Unsubscribed)),
        }
        op
    }

    /// Publishes `data` to `topic`.
    ///
    /// Errors before anything is sent: a topic with wildcards ([`Error::Topic`]), a payload over
    /// the session's `max_message_bytes` ([`Error::MessageTooLarge`]), a full offline buffer
    /// while disconnected ([`Error::OfflineBufferFull`]), sealing failures, [`Error::Closed`].
    pub fn publish(
        &mut self,
        topic: &str,
        data: Data,
        options: PublishOptions,
        now: Millis,
    ) -> Result<OpId, Error> {
        self.publish_to(Target::Topic(topic), data, options, None, now)
    }

    /// Sends `data` directly to client `to` of the same session (publish_to_id). A sealed direct
    /// message binds the topic `@<to>`.
    pub fn publish_to_id(
        &mut self,
        to: &str,
        data: Data,
        options: PublishOptions,
        now: Millis,
    ) -> Result<OpId, Error> {
        self.publish_to(Target::Client(to), data, options, None, now)
    }

    /// Publishes and collects every subscriber's response for up to `timeout_ms`.
    ///
    /// Progress arrives as [`Event::AckUpdated`](super::Event::AckUpdated) for the returned op.
    pub fn publish_with_ack(
        &mut self,
        topic: &str,
        data: Data,
        options: PublishOptions,
        timeout_ms: u64,
        now: Millis,
    ) -> Result<OpId, Error> {
        self.publish_to(Target::Topic(topic), data, options, Some(timeout_ms), now)
    }

    /// [`Engine::publish_to_id`] collecting the recipient's response, like
    /// [`Engine::publish_with_ack`].
    pub fn publish_to_id_with_ack(
        &mut self,
        to: &str,
        data: Data,
        options: PublishOptions,
        timeout_ms: u64,
        now: Millis,
    ) -> Result<OpId, Error> {
        self.publish_to(Target::Client(to), data, options, Some(timeout_ms), now)
    }

    /// Cancels a publish_with_ack: it finishes now with the responses that arrived, the server
    /// is told (`ack_cancel`) and later responses are ignored. Idempotent.
    pub fn cancel_ack(&mut self, op: OpId, now: Millis) {
        let Some(collection) = self.collections.get(op) else {
            return;
        };
        if collection.snapshot.finished.is_some() {
            return;
        }
        if let Some(aid) = collection.aid {
            if self.conn == Conn::Connected {
                self.send(ClientFrame::AckCancel(AckCancel { id: None, aid }), now);
            }
            self.finish_ack(op, AckFinish::Cancelled);
            return;
        }
        let unsent = self.outgoing.get(&op).is_none_or(|o| o.request.is_none());
        if unsent {
            self.outgoing.remove(&op);
            self.finish_ack(op, AckFinish::Cancelled);
            return;
        }
        // Sent, but the server has not named the ack id yet: finish now for the application and
        // keep a tombstone so that the `ack_expect` still on its way gets an `ack_cancel`.
        if let Some(collection) = self.collections.get_mut(op) {
            collection.cancel_on_expect = true;
            collection.snapshot.finished = Some(AckFinish::Cancelled);
            let snapshot = collection.snapshot.clone();
            self.events
                .push_back(super::Event::AckUpdated { op, snapshot });
        }
    }

    /// One handler of delivery `token` finished with `result` (`Err` with the handler's error
    /// or panic message). When the last handler has finished, the engine sends one `ack`: ok,
    /// or not ok with code `handler_failed` and the first error message. Unknown tokens (for
    /// example from before a reconnect) are ignored.
    pub fn complete_delivery(
        &mut self,
        token: DeliveryToken,
        result: Result<(), String>,
        now: Millis,
    ) {
        if let Some(ack) = self.deliveries.complete(token, result)
            && self.conn == Conn::Connected
        {
            self.send(ClientFrame::Ack(ack), now);
        }
    }

    /// Asks the server for the per-subscriber state of the QoS 1 message `mid` (pending,
    /// delivered, acknowledged, dead) while the server holds it; a client may ask about the
    /// messages it published. Completes with [`Outcome::Delivery`].
    ///
    /// Errors: an invalid message id ([`Error::Protocol`]); not connected
    /// ([`Error::Disconnected`]: the question is about the present, so it is not buffered);
    /// later, as the completion: the server's `unknown_message_id` ([`Error::Server`]) for a
    /// message it does not hold or that this client did not publish, [`Error::Timeout`].
    pub fn delivery_status(&mut self, mid: &str, now: Millis) -> Result<OpId, Error> {
        self.ensure_open()?;
        validate_message_id(mid)?;
        if self.conn != Conn::Connected {
            return Err(Error::Disconnected("not connected".into()));
        }
        let op = self.next_op();
        let id = self.start_request(Request::DeliveryStatus { op }, now);
        self.send(
            ClientFrame::DeliveryStatus(DeliveryStatus {
                id,
                mid: mid.to_owned(),
            }),
            now,
        );
        Ok(op)
    }

    fn ensure_open(&self) -> Result<(), Error> {
        if self.conn == Conn::Closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub(super) fn send_subscribe(&mut self, filter: &str, now: Millis) {
        let since = self.subs.get(filter).and_then(|sub| sub.last.clone());
        let id = self.start_request(
            Request::Subscribe {
                filter: filter.to_owned(),
            },
            now,
        );
        let frame = Subscribe {
            id,
            filter: filter.to_owned(),
            since,
        };
        self.send(ClientFrame::Subscribe(frame), now);
    }

    fn end_server_subscription(&mut self, filter: String, op: OpId, now: Millis) {
        self.ended_filters.retain(|f| *f != filter);
        if self.ended_filters.len() == super::ENDED_FILTERS_KEPT {
            self.ended_filters.pop_front();
        }
        self.ended_filters.push_back(filter.clone());
        if self.conn == Conn::Connected {
            let id = self.start_request(Request::Unsubscribe { op: Some(op) }, now);
            self.send(ClientFrame::Unsubscribe(Unsubscribe { id, filter }), now);
        } else {
            if self.config.persistent {
                self.pending_unsubs.push(filter);
            }
            self.complete(op, Ok(Outcome::Unsubscribed));
        }
    }

    fn publish_to(
        &mut self,
        target: Target<'_>,
        data: Data,
        options: PublishOptions,
        ack_timeout_ms: Option<u64>,
        now: Millis,
    ) -> Result<OpId, Error> {
        let topic = match target {
            Target::Topic(topic) => {
                validate_topic(topic)?;
                topic.to_owned()
            }
            Target::Client(to) => {
                validate_client_id(to)?;
                format!("@{to}")
            }
        };
        if let Some(ms) = ack_timeout_ms
            && !(1..=MAX_ACK_TIMEOUT_MS).contains(&ms)
        {
            return Err(Error::InvalidOption(format!(
                "ack timeout must be 1..={MAX_ACK_TIMEOUT_MS} ms, not {ms}"
            )));
        }
        self.ensure_open()?;
        // An empty retained publish clears the topic's retained message; the server can only
        // see that it is empty when it is not sealed.
        let clears_retained = options.retain && data.is_empty();
        let keyring = self
            .config
            .keyring
            .as_ref()
            .filter(|_| options.encrypt && !clears_retained);
        let payload = to_payload(data, &topic, keyring)?;
        let max = self.limits.max_message_bytes as usize;
        let size = payload.size();
        if size > max {
            return Err(Error::MessageTooLarge { size, max });
        }
        let answered = options.qos == Qos::AtLeastOnce || ack_timeout_ms.is_some();
        let connected = self.conn == Conn::Connected;
        if !connected {
            let buffered = self
                .outgoing
                .values()
                .filter(|o| o.request.is_none())
                .count();
            if buffered >= self.config.offline_buffer {
                return Err(Error::OfflineBufferFull {
                    limit: self.config.offline_buffer,
                });
            }
        }
        let mid = answered.then(|| self.next_mid());
        let ack = ack_timeout_ms.map(|timeout_ms| AckRequest { timeout_ms });
        let frame = build_frame(target, mid, payload, options, ack);
        self.check_frame_size(&frame, size, topic.len())?;
        let op = self.next_op();
        if let Some(ms) = ack_timeout_ms {
            Collections::start(&mut self.collections, op, now.plus(ms));
        }
        let outgoing = Outgoing {
            frame,
            answered,
            with_ack: ack_timeout_ms.is_some(),
            request: None,
        };
        let queue_empty = !self.maybe_unsent || self.outgoing.values().all(|o| o.request.is_some());
        if connected && !answered && queue_empty {
            self.send(outgoing.frame, now);
            self.complete(op, Ok(published(None)));
            return Ok(op);
        }
        self.outgoing.insert(op, outgoing);
        self.maybe_unsent = true;
        if !answered {
            // QoS 0 completes once handed over (queued behind earlier publishes, or offline).
            self.complete(op, Ok(published(None)));
        }
        if connected {
            self.pump(now);
        }
        Ok(op)
    }

    /// Sends queued publishes in order while the server's `max_inflight` window has room.
    /// A QoS 0 publish queued behind answered ones waits its turn, so order is kept.
    pub(super) fn pump(&mut self, now: Millis) {
        // Called after every frame from the server: without unsent publishes there is nothing
        // to walk (the walk over every publish in flight was ~3% of a busy client).
        if !self.maybe_unsent {
            return;
        }
        let window = self.limits.max_inflight.max(1) as usize;
        let unsent: Vec<(OpId, bool)> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.request.is_none())
            .map(|(op, o)| (*op, o.answered))
            .collect();
        for (op, answered) in unsent {
            if answered && self.requests.len() >= window {
                return;
            }
            self.send_outgoing(op, now);
        }
        self.maybe_unsent = false;
    }

    /// Sends (or resends) outgoing publish `op` with a fresh request id when it is answered.
    pub(super) fn send_outgoing(&mut self, op: OpId, now: Millis) {
        let Some(outgoing) = self.outgoing.get(&op) else {
            return;
        };
        if !outgoing.answered {
            if let Some(outgoing) = self.outgoing.remove(&op) {
                self.send(outgoing.frame, now);
            }
            return;
        }
        let id = self.start_request(Request::Publish { op }, now);
        let Some(outgoing) = self.outgoing.get_mut(&op) else {
            return;
        };
        outgoing.request = Some(id);
        match &mut outgoing.frame {
            ClientFrame::Publish(publish) => publish.id = Some(id),
            ClientFrame::Send(send) => send.id = Some(id),
            _ => {}
        }
        let frame = outgoing.frame.clone();
        self.send(frame, now);
    }

    fn next_mid(&mut self) -> String {
        self.next_mid += 1;
        format!("{}-{}", self.mid_prefix, self.next_mid)
    }

    /// Fails with [`Error::FrameTooLarge`] when `frame` would not fit `max_frame_bytes`.
    fn check_frame_size(
        &self,
        frame: &ClientFrame,
        payload_size: usize,
        name_len: usize,
    ) -> Result<(), Error> {
        let max = self.limits.max_frame_bytes as usize;
        // An upper bound without encoding: base64 (or JSON) data, a topic or recipient escaped
        // at worst 6 bytes per byte, and the fixed fields.
        let bound = payload_size.saturating_mul(4) / 3 + 4 + name_len.saturating_mul(6) + 512;
        if bound <= max {
            return Ok(());
        }
        let size = Codec::encode_client(frame)?.len();
        // Room for the request id the frame gets when it is sent.
        let size = size + 24;
        if size > max {
            return Err(Error::FrameTooLarge { size, max });
        }
        Ok(())
    }
}

fn published(mid: Option<String>) -> Outcome {
    Outcome::Published {
        mid,
        offset: None,
        duplicate: false,
        queued: false,
    }
}

fn build_frame(
    target: Target<'_>,
    mid: Option<String>,
    data: Payload,
    options: PublishOptions,
    ack: Option<AckRequest>,
) -> ClientFrame {
    match target {
        Target::Topic(topic) => ClientFrame::Publish(Publish {
            id: None,
            mid,
            topic: topic.to_owned(),
            data,
            qos: options.qos,
            retain: options.retain,
            ack,
            notify_dead: options.notify_dead,
        }),
        Target::Client(to) => ClientFrame::Send(Send {
            id: None,
            mid,
            to: to.to_owned(),
            data,
            qos: options.qos,
            ack,
        }),
    }
}
