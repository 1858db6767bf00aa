//! A raw protocol connection for the load tool: WebSocket, `hello`, frames as text.
//!
//! The load tool speaks the wire protocol directly (not through the SDK) so that it measures the
//! server, and so that its own cost per message stays small.

use anyhow::{Context, Result, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sealbus::protocol::{Auth, ClientFrame, Codec, Hello, Publish, ServerFrame, Subscribe};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The sending half of a connection.
pub(crate) type Tx = SplitSink<Ws, WsMessage>;
/// The receiving half of a connection.
pub(crate) type Rx = SplitStream<Ws>;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// WebSocket URL, e.g. `ws://127.0.0.1:7070/ws`.
    pub(crate) url: String,
    /// Session name.
    pub(crate) session: String,
    /// Session password.
    pub(crate) password: String,
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
    let (mut tx, mut rx) = ws.split();
    let hello = ClientFrame::Hello(Hello {
        v: sealbus::protocol::PROTOCOL_VERSION,
        session: target.session.clone(),
        auth: Auth::Password(target.password.clone()),
        client_id: Some(client_id.to_owned()),
        persistent: false,
    });
    send(&mut tx, &hello).await?;
    match recv(&mut rx).await? {
        ServerFrame::Welcome(_) => Ok((tx, rx)),
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
    recv_skipping(rx, &[]).await
}

/// Receives the next protocol frame whose type is not in `skipped` (those are dropped unread,
/// which spares the tool decoding frames it does not count).
pub(crate) async fn recv_skipping(rx: &mut Rx, skipped: &[&str]) -> Result<ServerFrame> {
    loop {
        match rx.next().await {
            Some(Ok(WsMessage::Text(text))) => {
                let unread = text
                    .as_str()
                    .strip_prefix("{\"type\":\"")
                    .and_then(|rest| rest.split_once('"'))
                    .is_some_and(|(kind, _)| skipped.contains(&kind));
                if !unread {
                    return Ok(Codec::new(usize::MAX).decode_server(text.as_bytes())?);
                }
            }
            Some(Ok(WsMessage::Close(close))) => bail!("server closed the connection: {close:?}"),
            Some(Ok(_)) => continue,
            Some(Err(err)) => return Err(err.into()),
            None => bail!("connection ended"),
        }
    }
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
    pub(crate) fn with_id(&self, id: u64) -> WsMessage {
        WsMessage::text(self.0.replacen(Self::ID_ZERO, &format!("\"id\":{id},"), 1))
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
