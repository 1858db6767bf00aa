//! Frames from the server.

use std::collections::VecDeque;

use crate::Error;
use crate::protocol::{
    AckCancel, AckDone, AckExpect, AckResponse, ClientFrame, Codec, DeliveryState, Direct,
    ErrorCode, ErrorFrame, Message as WireMessage, Payload, Published, Qos, Recovery, ServerFrame,
    Subscribed, Unsubscribed, Welcome,
};

use super::acks::{error_ack, ok_ack};
use super::payload::from_payload;
use super::types::{
    AckFinish, AckReply, ConnectionState, DeliveryReport, Event, Message, Millis, Outcome,
};
use super::{Conn, Engine, PARKED_BYTES, PARKED_MAX, Request};

/// The parts of a `message` or `direct` frame the delivery path needs.
pub(super) struct Incoming {
    topic: String,
    direct: bool,
    data: Payload,
    from: String,
    ts: u64,
    offset: Option<u64>,
    mid: Option<String>,
    qos: Qos,
    did: Option<u64>,
    aid: Option<u64>,
    retained: bool,
    replay: bool,
    dup: bool,
}

impl Engine {
    /// A WebSocket text message arrived from the server: one frame, or several separated by
    /// [`FRAME_SEPARATOR`](crate::protocol::FRAME_SEPARATOR) (the engine announces that it
    /// reads batches in `hello`). Frames are handled in order.
    pub fn handle_message(&mut self, text: &str, now: Millis) {
        if !self.server_joins {
            // Until a `welcome` agreed to batches, a message is one frame (a line feed in it is
            // JSON whitespace) — unless it starts with that welcome, which the server may have
            // joined with the frames it queued right after it (a returning persistent client's
            // messages).
            match text.split_once(crate::protocol::FRAME_SEPARATOR) {
                Some((first, rest)) if self.agrees_to_batches(first) => {
                    self.handle_frame(first, now);
                    self.handle_split(rest, now);
                }
                _ => self.handle_frame(text, now),
            }
            return;
        }
        self.handle_split(text, now);
    }

    fn handle_split(&mut self, text: &str, now: Millis) {
        for frame in crate::protocol::split_frames(text) {
            self.handle_frame(frame, now);
        }
    }

    /// Whether `text` is a `welcome` that agrees to batches.
    fn agrees_to_batches(&self, text: &str) -> bool {
        let codec = Codec::new(self.limits.max_frame_bytes as usize);
        matches!(codec.decode_server_text(text), Ok(ServerFrame::Welcome(w)) if w.batch)
    }

    /// One frame arrived from the server (drivers call [`handle_message`](Self::handle_message),
    /// which splits a message into its frames).
    pub fn handle_frame(&mut self, text: &str, now: Millis) {
        if matches!(
            self.conn,
            Conn::Closed | Conn::Backoff { .. } | Conn::Connecting { .. }
        ) {
            return;
        }
        self.ping_deadline = None;
        let codec = Codec::new(self.limits.max_frame_bytes as usize);
        let frame = match codec.decode_server_text(text) {
            Ok(frame) => frame,
            Err(err) => {
                if let Some(error) = unknown_error_code(text) {
                    // PROTOCOL.md §11: an unknown error number is a generic failure, still
                    // about its request.
                    self.on_error(error);
                } else {
                    tracing::warn!(%err, "undecodable frame from the server");
                    self.events.push_back(Event::Error(err.into()));
                }
                return;
            }
        };
        if let Conn::Handshaking { .. } = self.conn {
            match frame {
                ServerFrame::Welcome(welcome) => self.on_welcome(welcome, now),
                ServerFrame::Error(error) => self.on_error(error),
                other => tracing::debug!(frame = other.type_name(), "ignored before welcome"),
            }
            return;
        }
        match frame {
            ServerFrame::Welcome(_) => tracing::debug!("second welcome ignored"),
            ServerFrame::Subscribed(frame) => self.on_subscribed(frame, now),
            ServerFrame::Unsubscribed(frame) => self.on_unsubscribed(frame),
            ServerFrame::Published(frame) => self.on_published(frame),
            ServerFrame::Message(frame) => self.on_message(frame, now),
            ServerFrame::Direct(frame) => self.on_direct(frame, now),
            ServerFrame::AckExpect(frame) => self.on_ack_expect(frame, now),
            ServerFrame::AckResponse(frame) => self.on_ack_response(frame),
            ServerFrame::AckDone(frame) => self.on_ack_done(frame),
            ServerFrame::DeliveryState(frame) => self.on_delivery_state(frame),
            ServerFrame::AckState(_) | ServerFrame::Pong(_) => {}
            ServerFrame::DeadLetter(frame) => self.events.push_back(Event::DeadLetter {
                mid: frame.mid,
                topic: frame.topic,
                client: frame.client,
            }),
            ServerFrame::Error(error) => self.on_error(error),
        }
        if self.conn == Conn::Connected {
            // An answer may have freed room in the in-flight window.
            self.pump(now);
        }
    }

    fn on_welcome(&mut self, welcome: Welcome, now: Millis) {
        self.conn = Conn::Connected;
        self.ever_connected = true;
        self.limits = welcome.limits;
        self.client_id = Some(welcome.client_id);
        self.epoch = Some(welcome.epoch);
        self.server_joins = welcome.batch;
        self.set_state(ConnectionState::Connected);
        for filter in std::mem::take(&mut self.pending_unsubs) {
            let id = self.start_request(Request::Unsubscribe { op: None }, now);
            let frame = crate::protocol::Unsubscribe { id, filter };
            self.send(ClientFrame::Unsubscribe(frame), now);
        }
        let filters: Vec<String> = self.subs.filters().map(|(f, _)| f.clone()).collect();
        for filter in filters {
            self.send_subscribe(&filter, now);
        }
        self.pump(now);
    }

    fn take_request(&mut self, id: u64) -> Option<Request> {
        self.requests.remove(&id).map(|(request, _)| request)
    }

    /// Keeps a copy that found no handler until a subscription that matches it is confirmed
    /// (or the connection ends: its delivery id dies with it). A redelivery replaces the copy
    /// with the same delivery id; past [`PARKED_MAX`] copies or [`PARKED_BYTES`] of payload,
    /// the server's redelivery is the only way back.
    fn park(&mut self, incoming: Incoming) {
        let same = |p: &Incoming| p.did.is_some() && p.did == incoming.did;
        if let Some(parked) = self.parked.iter_mut().find(|p| same(p)) {
            *parked = incoming;
            return;
        }
        let bytes: usize = self.parked.iter().map(|p| p.data.size()).sum();
        if self.parked.len() < PARKED_MAX && bytes + incoming.data.size() <= PARKED_BYTES {
            tracing::debug!(topic = %incoming.topic, "copy with no handler yet: kept for a subscription");
            self.parked.push_back(incoming);
        }
    }

    /// Delivers the parked copies that `filter` matches, in arrival order.
    fn unpark(&mut self, filter: &str, now: Millis) {
        if self.parked.is_empty() {
            return;
        }
        let (matching, rest): (VecDeque<Incoming>, VecDeque<Incoming>) =
            std::mem::take(&mut self.parked)
                .into_iter()
                .partition(|p| crate::topic::matches(filter, &p.topic));
        self.parked = rest;
        for incoming in matching {
            self.deliver(incoming, now);
        }
    }

    fn on_subscribed(&mut self, frame: Subscribed, now: Millis) {
        let Some(Request::Subscribe { filter }) = self.take_request(frame.id) else {
            return;
        };
        let Some(sub) = self.subs.get_mut(&filter) else {
            return;
        };
        let resubscribe = sub.last.is_some();
        let not_recovered = resubscribe && frame.recovery == Some(Recovery::NotRecovered);
        let same_epoch = sub
            .last
            .as_ref()
            .is_some_and(|last| last.epoch == frame.position.epoch);
        if not_recovered || !same_epoch {
            // Recovered: keep the last offset seen (the replay advances it). Otherwise the gap
            // is lost for good: continue from the server's position.
            sub.last = Some(frame.position.clone());
        }
        let waiting = std::mem::take(&mut sub.waiting);
        sub.handlers.extend(waiting.iter().copied());
        sub.recovered = !not_recovered;
        for op in waiting {
            self.complete(
                op,
                Ok(Outcome::Subscribed {
                    filter: filter.clone(),
                }),
            );
        }
        self.unpark(&filter, now);
        if not_recovered {
            let handlers = self.subs.handlers_of(&filter);
            self.events
                .push_back(Event::NotRecovered { filter, handlers });
        }
    }

    fn on_unsubscribed(&mut self, frame: Unsubscribed) {
        if let Some(Request::Unsubscribe { op: Some(op) }) = self.take_request(frame.id) {
            self.complete(op, Ok(Outcome::Unsubscribed));
        }
    }

    fn on_published(&mut self, frame: Published) {
        let Some(Request::Publish { op }) = self.requests.get(&frame.id).map(|(r, _)| r.clone())
        else {
            return;
        };
        let with_ack = self.outgoing.get(&op).is_some_and(|o| o.with_ack);
        if with_ack {
            // The answer that matters is `ack_expect`; keep waiting for it.
            return;
        }
        self.requests.remove(&frame.id);
        self.outgoing.remove(&op);
        let outcome = Outcome::Published {
            mid: Some(frame.mid),
            offset: frame.offset,
            duplicate: frame.duplicate,
            queued: frame.queued,
        };
        self.complete(op, Ok(outcome));
    }

    fn on_delivery_state(&mut self, frame: DeliveryState) {
        if let Some(Request::DeliveryStatus { op }) = self.take_request(frame.id) {
            let report = DeliveryReport {
                mid: frame.mid,
                topic: frame.topic,
                copies: frame.copies,
            };
            self.complete(op, Ok(Outcome::Delivery(report)));
        }
    }

    fn on_ack_expect(&mut self, frame: AckExpect, now: Millis) {
        let Some(Request::Publish { op }) = self.take_request(frame.id) else {
            return;
        };
        self.outgoing.remove(&op);
        let cancelled = self.collections.get(op).is_some_and(|c| c.cancel_on_expect);
        let nobody = self.collections.expect(op, frame.aid, frame.expected);
        if cancelled {
            let cancel = AckCancel {
                id: None,
                aid: frame.aid,
            };
            self.send(ClientFrame::AckCancel(cancel), now);
            self.collections.finish(op, AckFinish::Cancelled);
        } else if nobody {
            self.finish_ack(op, AckFinish::Complete);
        } else {
            self.ack_updated(op);
        }
    }

    fn on_ack_response(&mut self, frame: AckResponse) {
        let Some(op) = self.collections.op_of(frame.aid) else {
            return;
        };
        let reply = AckReply {
            ok: frame.ok,
            code: frame.code,
            error: frame.error,
        };
        if self.collections.respond(op, frame.from, reply) {
            self.finish_ack(op, AckFinish::Complete);
        } else {
            self.ack_updated(op);
        }
    }

    fn on_ack_done(&mut self, frame: AckDone) {
        if let Some(op) = self.collections.op_of(frame.aid) {
            self.finish_ack(op, frame.outcome.into());
        }
    }

    fn on_error(&mut self, frame: ErrorFrame) {
        let error = Error::Server {
            code: frame.code,
            message: frame.message,
        };
        let request = frame.id.and_then(|id| self.take_request(id));
        match request {
            Some(request) => self.fail_request(request, error),
            None => {
                let handshaking = matches!(self.conn, Conn::Handshaking { .. });
                if handshaking || error.is_fatal() {
                    // The server closes the connection next; close the client with this error
                    // instead of retrying.
                    self.fatal = Some(error.clone());
                }
                self.events.push_back(Event::Error(error));
            }
        }
    }

    fn on_message(&mut self, frame: WireMessage, now: Millis) {
        let incoming = Incoming {
            topic: frame.topic,
            direct: false,
            data: frame.data,
            from: frame.from,
            ts: frame.ts,
            offset: frame.offset,
            mid: frame.mid,
            qos: frame.qos,
            did: frame.did,
            aid: frame.aid,
            retained: frame.retained,
            replay: frame.replay,
            dup: frame.dup,
        };
        self.deliver(incoming, now);
    }

    fn on_direct(&mut self, frame: Direct, now: Millis) {
        let incoming = Incoming {
            topic: format!("@{}", self.client_id().unwrap_or_default()),
            direct: true,
            data: frame.data,
            from: frame.from,
            ts: frame.ts,
            offset: None,
            mid: frame.mid,
            qos: frame.qos,
            did: frame.did,
            aid: frame.aid,
            retained: false,
            replay: false,
            dup: frame.dup,
        };
        self.deliver(incoming, now);
    }

    /// Opens the message and hands it to every matching handler, or answers it at once.
    fn deliver(&mut self, incoming: Incoming, now: Millis) {
        let needs_ack = incoming.did.is_some() || incoming.aid.is_some();
        let handlers = if incoming.direct {
            self.directs.clone()
        } else {
            self.subs.dispatch(&incoming.topic, incoming.offset)
        };
        if handlers.is_empty() {
            if !needs_ack {
                return;
            }
            let ack = if incoming.direct {
                // Nobody here handles direct messages: the sender must not read success.
                let text = "no handler for direct messages is registered";
                error_ack(incoming.did, incoming.aid, ErrorCode::HandlerFailed, text)
            } else if self
                .ended_filters
                .iter()
                .any(|filter| crate::topic::matches(filter, &incoming.topic))
            {
                // Unsubscribed while the copy was on its way: settle it.
                ok_ack(incoming.did, incoming.aid)
            } else {
                // A subscription the server holds for this persistent client and the
                // application has not registered (again) yet: acking would lose the message.
                // It waits here for a matching subscription (or for the server's redelivery).
                self.park(incoming);
                return;
            };
            self.send(ClientFrame::Ack(ack), now);
            return;
        }
        let keyring = self.config.keyring.clone();
        let (data, encrypted) = match from_payload(incoming.data, &incoming.topic, keyring.as_ref())
        {
            Ok(opened) => opened,
            Err(error) => {
                tracing::warn!(topic = %incoming.topic, from = %incoming.from, %error,
                    "message could not be opened; handlers not called");
                if needs_ack {
                    let code = error.code();
                    let code = if code == ErrorCode::BadBase64 {
                        ErrorCode::MalformedEnvelope
                    } else {
                        code
                    };
                    let ack = error_ack(incoming.did, incoming.aid, code, &error.to_string());
                    self.send(ClientFrame::Ack(ack), now);
                }
                self.events.push_back(Event::Error(error));
                return;
            }
        };
        let token = needs_ack.then(|| {
            self.deliveries
                .start(incoming.did, incoming.aid, handlers.len())
        });
        let message = Message {
            topic: incoming.topic,
            data,
            from: incoming.from,
            ts: incoming.ts,
            offset: incoming.offset,
            mid: incoming.mid,
            qos: incoming.qos,
            encrypted,
            direct: incoming.direct,
            retained: incoming.retained,
            replay: incoming.replay,
            dup: incoming.dup,
        };
        self.events.push_back(Event::Deliver {
            handlers,
            token,
            message,
        });
    }

    /// Fails requests whose answer is overdue with [`Error::Timeout`].
    pub(super) fn expire_requests(&mut self, now: Millis) {
        let overdue: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            let Some(request) = self.take_request(id) else {
                continue;
            };
            self.fail_request(request, Error::Timeout);
        }
    }

    /// Fails an outstanding request with `error` (a server `error` frame, or a timeout).
    fn fail_request(&mut self, request: Request, error: Error) {
        match request {
            Request::Subscribe { filter } => {
                if let Some(sub) = self.subs.get_mut(&filter) {
                    let waiting = std::mem::take(&mut sub.waiting);
                    let confirmed = !sub.handlers.is_empty();
                    if !confirmed {
                        self.subs.remove_filter(&filter);
                    }
                    for op in waiting {
                        self.complete(op, Err(error.clone()));
                    }
                    if confirmed {
                        // A resubscribe after a reconnect failed or got no answer: the handlers
                        // stay registered but receive nothing until the next reconnect; tell
                        // the application.
                        tracing::warn!(%filter, %error, "resubscribe failed");
                        self.events.push_back(Event::Error(error));
                    }
                }
            }
            Request::Unsubscribe { op } => {
                if let Some(op) = op {
                    self.complete(op, Err(error));
                }
            }
            Request::DeliveryStatus { op } => self.complete(op, Err(error)),
            Request::Publish { op } => {
                let with_ack = self.outgoing.remove(&op).is_some_and(|o| o.with_ack);
                if with_ack {
                    self.finish_ack(op, AckFinish::Failed(error));
                } else {
                    self.complete(op, Err(error));
                }
            }
        }
    }
}

/// An `error` frame whose code this version does not know, read as `internal` with the number
/// kept in the message.
fn unknown_error_code(text: &str) -> Option<ErrorFrame> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    if value.get("type")?.as_str()? != "error" {
        return None;
    }
    let number = value.get("code")?.as_u64()?;
    let message = value.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let id = value.get("id").and_then(|id| id.as_u64());
    Some(ErrorFrame::new(
        id,
        ErrorCode::Internal,
        format!("error {number}: {message}"),
    ))
}
