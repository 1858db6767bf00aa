//! A raw protocol connection for the load tool: WebSocket, `hello`, frames as text.
//!
//! The load tool speaks the wire protocol directly (not through the SDK) so that it measures the
//! server, and so that its own cost per message stays small.

use std::collections::VecDeque;
use std::ops::Range;

use anyhow::{Context, Result, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt as _, SinkExt, StreamExt};
use sealbus::protocol::{
    Auth, ClientFrame, Codec, Hello, Publish, ServerFrame, Subscribe, join_frame, split_frames,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The sending half of a connection.
pub(crate) type Tx = SplitSink<Ws, WsMessage>;

/// Largest message the tool builds from several frames (well under the server's frame limit).
const JOINED_BYTES: usize = 16 * 1024;

/// Whether the tool's connections announce and use batches (several frames per WebSocket
/// message, docs/PROTOCOL.md §1): on unless `LOAD_BATCH=0`.
pub(crate) fn batches_wanted() -> bool {
    std::env::var("LOAD_BATCH").map_or(true, |v| v != "0")
}

/// The receiving half of a connection: yields frames, splitting messages that carry several.
pub(crate) struct Rx {
    stream: SplitStream<Ws>,
    /// The message being split, and where its frames not yet taken lie in it.
    current: Option<(Utf8Bytes, VecDeque<Range<usize>>)>,
    /// The server reads several frames per message from this connection (`welcome.batch`).
    pub(crate) server_joins: bool,
}

/// One frame's text, a slice of the message it came in.
pub(crate) struct Text {
    message: Utf8Bytes,
    range: Range<usize>,
}

impl Text {
    /// The frame.
    pub(crate) fn as_str(&self) -> &str {
        &self.message.as_str()[self.range.clone()]
    }
}

impl Rx {
    /// The next frame of the message being split, if any.
    fn split_next(&mut self) -> Option<Text> {
        let (message, ranges) = self.current.as_mut()?;
        match ranges.pop_front() {
            Some(range) => Some(Text {
                message: message.clone(),
                range,
            }),
            None => {
                self.current = None;
                None
            }
        }
    }

    /// Takes a message read from the socket: a text becomes the message being split.
    fn take(&mut self, read: Option<Result<WsMessage, WsError>>) -> Result<()> {
        match read {
            Some(Ok(WsMessage::Text(text))) => {
                let base = text.as_str().as_ptr() as usize;
                let ranges = split_frames(text.as_str())
                    .map(|frame| {
                        let start = frame.as_ptr() as usize - base;
                        start..start + frame.len()
                    })
                    .collect();
                self.current = Some((text, ranges));
                Ok(())
            }
            Some(Ok(WsMessage::Close(close))) => bail!("server closed the connection: {close:?}"),
            Some(Ok(_)) => Ok(()),
            Some(Err(err)) => Err(err.into()),
            None => bail!("connection ended"),
        }
    }

    /// The next frame: an error when the connection failed, ended or was closed.
    pub(crate) async fn next(&mut self) -> Result<Text> {
        loop {
            if let Some(text) = self.split_next() {
                return Ok(text);
            }
            let read = self.stream.next().await;
            self.take(read)?;
        }
    }

    /// The next frame if one is already at hand (read, or readable without waiting).
    pub(crate) fn ready(&mut self) -> Option<Result<Text>> {
        loop {
            if let Some(text) = self.split_next() {
                return Some(Ok(text));
            }
            let read = self.stream.next().now_or_never()?;
            if let Err(err) = self.take(read) {
                return Some(Err(err));
            }
        }
    }
}

/// Frames gathered into as few messages as the server allows (one per frame when it does not
/// read batches).
pub(crate) struct Joined {
    joins: bool,
    text: String,
}

impl Joined {
    /// Joins frames if `joins` (the server's `welcome.batch`).
    pub(crate) fn new(joins: bool) -> Self {
        Joined {
            joins,
            text: String::new(),
        }
    }

    /// Adds a frame, feeding `tx` what is ready to go.
    pub(crate) async fn push(&mut self, tx: &mut Tx, frame: &str) -> Result<()> {
        if !self.joins {
            tx.feed(WsMessage::text(frame)).await?;
            return Ok(());
        }
        if !join_frame(&mut self.text, frame, JOINED_BYTES) {
            self.feed(tx).await?;
            self.text.push_str(frame);
        }
        Ok(())
    }

    /// Feeds what was gathered (not flushed).
    pub(crate) async fn feed(&mut self, tx: &mut Tx) -> Result<()> {
        if !self.text.is_empty() {
            tx.feed(WsMessage::text(std::mem::take(&mut self.text)))
                .await?;
        }
        Ok(())
    }

    /// Feeds what was gathered and flushes.
    pub(crate) async fn flush(&mut self, tx: &mut Tx) -> Result<()> {
        self.feed(tx).await?;
        tx.flush().await?;
        Ok(())
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// WebSocket URL, e.g. `ws://127.0.0.1:7070/ws`.
    pub(crate) url: String,
    /// Session name.
    pub(crate) session: String,
    /// Session password.
    pub(crate) password: String,
    /// The server's admin API token, when known (the `sessions` scenario creates sessions).
    pub(crate) admin_token: Option<String>,
}

/// Opens a connection, authenticates as `client_id` and returns both halves.
pub(crate) async fn connect(target: &Target, client_id: &str) -> Result<(Tx, Rx)> {
    let mut request = target.url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(sealbus::protocol::SUBPROTOCOL),
    );
    // tungstenite zero-fills its whole free read buffer before each read (128 KiB by default).
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .with_context(|| format!("connecting to {}", target.url))?;
    let (mut tx, stream) = ws.split();
    let mut rx = Rx {
        stream,
        current: None,
        server_joins: false,
    };
    let batch = batches_wanted();
    let hello = ClientFrame::Hello(Hello {
        v: sealbus::protocol::PROTOCOL_VERSION,
        session: target.session.clone(),
        auth: Auth::Password(target.password.clone()),
        client_id: Some(client_id.to_owned()),
        persistent: false,
        batch,
    });
    send(&mut tx, &hello).await?;
    match recv(&mut rx).await? {
        ServerFrame::Welcome(welcome) => {
            rx.server_joins = batch && welcome.batch;
            Ok((tx, rx))
        }
        other => bail!("expected welcome, got {other:?}"),
    }
}

/// Sends one frame.
pub(crate) async fn send(tx: &mut Tx, frame: &ClientFrame) -> Result<()> {
    tx.send(WsMessage::text(Codec::encode_client(frame)?))
        .await?;
    Ok(())
}

/// Receives the next protocol frame, skipping WebSocket control frames.
pub(crate) async fn recv(rx: &mut Rx) -> Result<ServerFrame> {
    let text = rx.next().await?;
    decode(&text)
}

/// Like [`recv`] for a frame already at hand (read, or readable without waiting): `None` when
/// there is none, so that a loop can handle every frame that arrived together before it writes
/// again.
pub(crate) fn ready(rx: &mut Rx) -> Option<Result<ServerFrame>> {
    Some(rx.ready()?.and_then(|text| decode(&text)))
}

/// The frame `text` decoded.
fn decode(text: &Text) -> Result<ServerFrame> {
    Ok(Codec::new(usize::MAX).decode_server_text(text.as_str())?)
}

/// A `publish` frame encoded once; each publish splices its request id in.
pub(crate) struct PublishTemplate(String);

impl PublishTemplate {
    /// The id the template is encoded with.
    const ID_ZERO: &str = "\"id\":0,";

    /// Encodes `publish` (its `id` is replaced).
    pub(crate) fn new(publish: Publish) -> Result<Self> {
        let frame = ClientFrame::Publish(Publish {
            id: Some(0),
            ..publish
        });
        let text = Codec::encode_client(&frame)?;
        if !text.contains(Self::ID_ZERO) {
            bail!("unexpected publish frame: {text}");
        }
        Ok(PublishTemplate(text))
    }

    /// The frame with request id `id`.
    pub(crate) fn with_id(&self, id: u64) -> String {
        self.0.replacen(Self::ID_ZERO, &format!("\"id\":{id},"), 1)
    }
}

/// Subscribes to `filter` and waits for the confirmation.
pub(crate) async fn subscribe(tx: &mut Tx, rx: &mut Rx, filter: &str) -> Result<()> {
    let frame = ClientFrame::Subscribe(Subscribe {
        id: 1,
        filter: filter.to_owned(),
        since: None,
    });
    send(tx, &frame).await?;
    loop {
        match recv(rx).await? {
            ServerFrame::Subscribed(_) => return Ok(()),
            ServerFrame::Error(err) => bail!("subscribe {filter}: {}", err.message),
            _ => continue,
        }
    }
}

/// One HTTP/1.1 request to the WebSocket URL's host and port (the server's admin API and
/// `/metrics` share it), with `token` as a bearer token; returns the status code and the body.
pub(crate) async fn http(
    target: &Target,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = target
        .url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .with_context(|| {
            format!(
                "HTTP requests go over ws:// URLs' hosts, not {}",
                target.url
            )
        })?;
    let mut stream = TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{authorization}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("{method} {path}: not an HTTP answer"))?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}
