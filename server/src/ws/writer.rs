//! A connection's writer task: drains the client's outbound queue to the socket, joining
//! queued frames into one message for clients that read batches, and closes the connection
//! with the kill switch's reason.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{FutureExt as _, SinkExt};
use sealbus::protocol::{Codec, ErrorFrame, FRAME_SEPARATOR, ServerFrame};

use super::Sink;
use crate::broker::{Inbox, KillSwitch, Piece};
use crate::metrics::SessionMetrics;

/// How long the writer may take to send the final `error` + close frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

async fn send_text(sink: &mut Sink, frame: &ServerFrame) {
    if let Ok(text) = Codec::encode_server(frame) {
        let _ = sink.send(Message::Text(text.into())).await;
    }
}

/// Sends an `error` frame and closes with the error's close code.
pub(super) async fn close_with(sink: &mut Sink, error: ErrorFrame) {
    let code = error.code.close_code();
    let reason = Utf8Bytes::from(error.code.name());
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        send_text(sink, &ServerFrame::Error(error)).await;
        send_close(sink, CloseFrame { code, reason }).await;
    })
    .await;
}

/// Sends `frame` to close the connection. When the client closed first, tungstenite has
/// queued the reply to its close frame and refuses another: `close` flushes that reply.
/// Without it the client saw the connection end without a closing handshake (1006 in
/// browsers).
async fn send_close(sink: &mut Sink, frame: CloseFrame) {
    if sink.send(Message::Close(Some(frame))).await.is_err() {
        let _ = sink.close().await;
    }
}

/// Largest message the writer builds from several queued frames for a client that reads
/// batches (`hello.batch`). Small enough for any client's read buffer and to keep a burst's
/// first frames from waiting on its last; a frame larger than this goes alone.
const JOINED_BYTES: usize = 16 * 1024;

/// Joins queued frames into one WebSocket message for clients that read batches: one message
/// (header, tungstenite's per-message work, the client's per-message work) per burst instead of
/// one per frame. Frames of other clients pass through one by one. Copies of messages get their
/// own fields here ([`Piece`]), written straight into the message being built.
pub(super) struct Joiner {
    /// The client reads batches.
    enabled: bool,
    /// The first frame of the message being built, kept as is while it is alone.
    first: Option<Utf8Bytes>,
    /// The message being built, once it has two frames or a copy.
    joined: String,
}

impl Joiner {
    pub(super) fn new(enabled: bool) -> Self {
        Joiner {
            enabled,
            first: None,
            joined: String::new(),
        }
    }

    /// Adds a frame; returns a message to write first when the frame does not fit (or, for a
    /// client that does not read batches, the frame itself).
    fn push(&mut self, piece: Piece<'_>) -> Option<Utf8Bytes> {
        if !self.enabled {
            return piece.text();
        }
        let pending = self.joined.len() + self.first.as_ref().map_or(0, |t| t.len());
        let full = if pending > 0 && pending + 1 + piece.max_len() > JOINED_BYTES {
            self.take()
        } else {
            None
        };
        match piece {
            Piece::Text(text) if self.first.is_none() && self.joined.is_empty() => {
                self.first = Some(text.clone());
            }
            piece => {
                if let Some(first) = self.first.take() {
                    self.joined.push_str(first.as_str());
                }
                let mark = self.joined.len();
                if mark > 0 {
                    self.joined.push(FRAME_SEPARATOR);
                }
                if !piece.push_to(&mut self.joined) {
                    self.joined.truncate(mark);
                }
            }
        }
        full
    }

    /// The message built so far, if any.
    fn take(&mut self) -> Option<Utf8Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        (!self.joined.is_empty()).then(|| Utf8Bytes::from(std::mem::take(&mut self.joined)))
    }
}

/// Counts a message about to be written, and the frames taken so far (a frame still waiting in
/// the joiner is counted with the message that carries it or a later one).
fn count_out(metrics: &SessionMetrics, uncounted: &mut u64, message: &str) {
    SessionMetrics::add(&metrics.messages_out, std::mem::take(uncounted));
    SessionMetrics::add(&metrics.bytes_out, message.len() as u64);
}

/// Drains the outbound queue to the socket; on kill, writes the reason and closes.
pub(super) async fn writer(
    mut sink: Sink,
    mut rx: Inbox,
    mut joiner: Joiner,
    kill: Arc<KillSwitch>,
    metrics: Arc<SessionMetrics>,
) {
    let mut killed = kill.subscribe();
    // One kill waiter for the task's life, polled again at each wait (see `read_loop`).
    let kill_signal = killed.wait_for(|k| *k);
    tokio::pin!(kill_signal);
    // Frames are buffered while more are queued and flushed when the queue runs dry: one write
    // system call per burst instead of one per frame.
    let mut unflushed = false;
    // Frames taken from the queue and not counted yet: the session's counters are shared by
    // every connection's reader and writer, so they are added to once per message written
    // rather than once per frame.
    let mut uncounted = 0;
    'frames: loop {
        if rx.is_empty() {
            if let Some(message) = joiner.take() {
                count_out(&metrics, &mut uncounted, &message);
                let mut feed = sink.feed(Message::Text(message));
                let sent = tokio::select! {
                    biased;
                    _ = &mut kill_signal => break 'frames,
                    sent = &mut feed => sent,
                };
                if sent.is_err() {
                    return;
                }
                unflushed = true;
            }
            if unflushed && rx.is_empty() {
                tokio::select! {
                    biased;
                    _ = &mut kill_signal => break 'frames,
                    flushed = sink.flush() => if flushed.is_err() { return },
                }
                unflushed = false;
            }
        }
        // Polling the kill waiter for every frame was ~3% of the server under load: while
        // frames are queued, a look at the kill switch's flag does.
        if kill.reason().is_some() {
            break 'frames;
        }
        let item = match rx.try_recv() {
            Some(item) => Some(item),
            None => tokio::select! {
                biased;
                _ = &mut kill_signal => break 'frames,
                item = rx.recv() => item,
            },
        };
        let Some(item) = item else {
            let normal = CloseFrame {
                code: 1000,
                reason: Utf8Bytes::from_static(""),
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                if let Some(message) = joiner.take() {
                    count_out(&metrics, &mut uncounted, &message);
                    let _ = sink.send(Message::Text(message)).await;
                }
                send_close(&mut sink, normal).await;
            })
            .await;
            return;
        };
        for piece in item.pieces() {
            uncounted += 1;
            let Some(message) = joiner.push(piece) else {
                continue;
            };
            count_out(&metrics, &mut uncounted, &message);
            let mut feed = sink.feed(Message::Text(message));
            let sent = match (&mut feed).now_or_never() {
                Some(sent) => sent,
                // The socket is not taking more: wait for it, or for the kill switch.
                None => tokio::select! {
                    biased;
                    _ = &mut kill_signal => break 'frames,
                    sent = feed => sent,
                },
            };
            if sent.is_err() {
                return;
            }
            unflushed = true;
        }
    }
    let Some(reason) = kill.reason().cloned() else {
        return;
    };
    if reason.drain {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(item) = rx.try_recv() {
                for piece in item.pieces() {
                    if let Some(message) = joiner.push(piece)
                        && sink.send(Message::Text(message)).await.is_err()
                    {
                        return;
                    }
                }
            }
            if let Some(message) = joiner.take() {
                let _ = sink.send(Message::Text(message)).await;
            }
        })
        .await;
    }
    close_with(
        &mut sink,
        ErrorFrame::new(None, reason.code, reason.message),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Outbound;
    use sealbus::protocol::{AckResponse, Codec, ServerFrame};

    fn copy(frame: &Utf8Bytes, did: u64) -> Piece<'_> {
        Piece::Copy {
            frame,
            did: Some(did),
            aid: None,
            dup: false,
        }
    }

    #[test]
    fn a_client_without_batches_gets_every_frame_alone() {
        let mut joiner = Joiner::new(false);
        let text = Utf8Bytes::from_static(r#"{"type":"pong","id":1}"#);
        assert_eq!(
            joiner.push(Piece::Text(&text)).as_deref(),
            Some(text.as_str())
        );
        let frame = Utf8Bytes::from_static(r#"{"type":"message"}"#);
        assert_eq!(
            joiner.push(copy(&frame, 7)).as_deref(),
            Some(r#"{"type":"message","did":7}"#)
        );
        assert_eq!(joiner.take(), None);
    }

    #[test]
    fn frames_are_joined_in_order_and_a_lone_frame_is_not_copied() {
        let mut joiner = Joiner::new(true);
        let text = Utf8Bytes::from(String::from(r#"{"type":"pong","id":1}"#));
        assert_eq!(joiner.push(Piece::Text(&text)), None);
        let alone = joiner.take().expect("the frame");
        assert_eq!(alone.as_str().as_ptr(), text.as_str().as_ptr(), "copied");
        let frame = Utf8Bytes::from_static(r#"{"type":"message"}"#);
        let not_an_object = Utf8Bytes::from_static("[]");
        assert_eq!(joiner.push(Piece::Text(&text)), None);
        assert_eq!(joiner.push(copy(&frame, 8)), None);
        assert_eq!(joiner.push(copy(&not_an_object, 9)), None);
        assert_eq!(joiner.push(copy(&frame, 10)), None);
        assert_eq!(
            joiner.take().as_deref(),
            Some(
                "{\"type\":\"pong\",\"id\":1}\n{\"type\":\"message\",\"did\":8}\n\
                 {\"type\":\"message\",\"did\":10}"
            )
        );
        assert_eq!(joiner.take(), None);
    }

    #[test]
    fn a_relayed_answer_is_the_ack_response_frame_alone_or_joined() {
        let item = Outbound::AckAnswer {
            aid: 42,
            from: "sub \"one\" \\".into(),
        };
        let expected = Codec::encode_server(&ServerFrame::AckResponse(AckResponse {
            aid: 42,
            from: "sub \"one\" \\".into(),
            ok: true,
            code: None,
            error: None,
        }))
        .expect("encodes");
        let piece = item.pieces().next().expect("one piece");
        assert!(piece.max_len() >= expected.len(), "counted short");
        assert_eq!(
            Joiner::new(false).push(piece).as_deref(),
            Some(expected.as_str())
        );
        let mut joiner = Joiner::new(true);
        let text = Utf8Bytes::from_static(r#"{"type":"pong","id":1}"#);
        assert_eq!(joiner.push(Piece::Text(&text)), None);
        assert_eq!(joiner.push(piece), None);
        assert_eq!(
            joiner.take().as_deref(),
            Some(format!("{text}\n{expected}").as_str())
        );
        let longest = Outbound::AckAnswer {
            aid: u64::MAX,
            from: "x".into(),
        };
        let piece = longest.pieces().next().expect("one piece");
        let text = piece.text().expect("encoded");
        assert_eq!(
            piece.max_len(),
            text.len() + 1,
            "the bound is tight: {text}"
        );
    }

    #[test]
    fn a_message_never_grows_past_the_bound_unless_one_frame_is_larger() {
        let mut joiner = Joiner::new(true);
        let small = Utf8Bytes::from(format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000)));
        let large = Utf8Bytes::from(format!(r#"{{"pad":"{}"}}"#, "x".repeat(JOINED_BYTES)));
        let mut messages = Vec::new();
        for piece in [&small, &small, &large, &small]
            .into_iter()
            .chain(std::iter::repeat_n(&small, 40))
        {
            messages.extend(joiner.push(Piece::Text(piece)));
        }
        messages.extend(joiner.take());
        let lengths: Vec<usize> = messages.iter().map(|m| m.len()).collect();
        assert_eq!(
            lengths[1],
            large.len(),
            "the large frame went alone: {lengths:?}"
        );
        assert!(
            lengths
                .iter()
                .enumerate()
                .all(|(i, &n)| i == 1 || n <= JOINED_BYTES),
            "{lengths:?}"
        );
        let frames: usize = messages.iter().map(|m| m.split('\n').count()).sum();
        assert_eq!(frames, 44);
    }
}
