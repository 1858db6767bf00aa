//! Shared helpers of the integration tests: an in-process server on 127.0.0.1:0, a raw-frame
//! WebSocket client and a tiny HTTP client for the admin API.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sealbus_server::Server;
use sealbus_server::config::{Config, SessionConfig, SessionSettings};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const ADMIN: &str = "test-admin-token";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub server: Server,
    pub addr: SocketAddr,
}

pub fn session(name: &str, password: &str) -> SessionConfig {
    SessionConfig {
        name: name.into(),
        password: Some(password.into()),
        token_secret: Some(format!("secret-of-{name}")),
        ..SessionConfig::default()
    }
}

pub fn session_with(
    name: &str,
    password: &str,
    tweak: impl FnOnce(&mut SessionSettings),
) -> SessionConfig {
    let mut config = session(name, password);
    tweak(&mut config.settings);
    config
}

pub async fn start(sessions: Vec<SessionConfig>) -> TestServer {
    start_with(Config {
        sessions,
        ..Config::default()
    })
    .await
}

pub async fn start_with(mut config: Config) -> TestServer {
    config.admin_token = Some(ADMIN.into());
    let server = Server::builder().config(config).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await.unwrap() });
    TestServer { server, addr }
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Opens a WebSocket with the `sealbus.v1` subprotocol.
    pub async fn connect(addr: SocketAddr) -> Client {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "sealbus.v1".parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Client { ws }
    }

    /// Connects and sends `hello` with `auth`; returns the client and the first answer.
    pub async fn hello_raw(addr: SocketAddr, hello: Value) -> (Client, Value) {
        let mut client = Client::connect(addr).await;
        client.send(hello).await;
        let answer = client.recv().await;
        (client, answer)
    }

    /// Connects with a password and expects `welcome`.
    pub async fn join(addr: SocketAddr, session: &str, password: &str, id: &str) -> Client {
        let (client, welcome) = Client::hello_raw(
            addr,
            json!({"type":"hello","v":1,"session":session,"auth":{"password":password},"client_id":id}),
        )
        .await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["client_id"], id);
        client
    }

    /// Connects as a persistent client; returns it and its `welcome`.
    pub async fn join_persistent(
        addr: SocketAddr,
        session: &str,
        password: &str,
        id: &str,
    ) -> (Client, Value) {
        let (client, welcome) = Client::hello_raw(
            addr,
            json!({"type":"hello","v":1,"session":session,"auth":{"password":password},
                   "client_id":id,"persistent":true}),
        )
        .await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (client, welcome)
    }

    /// Closes the connection (without `bye`) and waits until the server has seen it end.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// Sends a WebSocket-level ping and waits for its pong (JSON frames are skipped).
    pub async fn ws_ping(&mut self, payload: &[u8]) {
        self.ws
            .send(Message::Ping(payload.to_vec().into()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a pong")
                .expect("connection ended")
                .expect("read error");
            match message {
                Message::Pong(data) => {
                    assert_eq!(&data[..], payload);
                    return;
                }
                Message::Close(close) => panic!("unexpected close: {close:?}"),
                _ => {}
            }
        }
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// The next frame (ping/pong skipped); panics on close or after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_message().await).unwrap()
    }

    /// The next text message as sent (it may carry several frames); panics on close or after
    /// [`WAIT`].
    pub async fn recv_message(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a message")
                .expect("connection ended")
                .expect("read error");
            match message {
                Message::Text(text) => return text.to_string(),
                Message::Close(close) => panic!("unexpected close: {close:?}"),
                _ => {}
            }
        }
    }

    /// Sends a frame; false once the connection is gone (instead of panicking).
    pub async fn try_send(&mut self, frame: Value) -> bool {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_ok()
    }

    /// The next text frame within `wait`: `Ok(None)` on timeout, `Err(())` once the connection
    /// ended (closed, reset or killed).
    pub async fn next_frame(&mut self, wait: Duration) -> Result<Option<Value>, ()> {
        loop {
            match tokio::time::timeout(wait, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Ok(Some(serde_json::from_str(&text).unwrap()));
                }
                Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => return Err(()),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The next frame, which must have `type`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["type"], kind, "expected {kind}, got {frame}");
        frame
    }

    /// Subscribes and waits for `subscribed`.
    pub async fn subscribe(&mut self, id: u64, filter: &str) -> Value {
        self.send(json!({"type":"subscribe","id":id,"filter":filter}))
            .await;
        let answer = self.expect("subscribed").await;
        assert_eq!(answer["id"], id);
        answer
    }

    /// Sends a ping and waits for its pong: every frame queued before is then read.
    pub async fn sync(&mut self) -> Vec<Value> {
        self.send(json!({"type":"ping","id":999_999})).await;
        let mut before = Vec::new();
        loop {
            let frame = self.recv().await;
            if frame["type"] == "pong" && frame["id"] == 999_999 {
                return before;
            }
            before.push(frame);
        }
    }

    /// Waits for the server to close; returns the error frames seen and the close code.
    /// Starts the WebSocket closing handshake; `Ok` once the server's close frame came back,
    /// the read error (or how the connection ended) otherwise.
    pub async fn close_first(&mut self) -> Result<(), String> {
        self.ws.close(None).await.map_err(|err| err.to_string())?;
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for the server's close frame");
            match next {
                Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.to_string()),
                None => return Err("the connection ended without a close frame".into()),
            }
        }
    }

    pub async fn expect_close(&mut self) -> (Vec<Value>, u16) {
        let mut errors = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match next {
                Some(Ok(Message::Text(text))) => errors.push(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(Some(frame)))) => return (errors, frame.code.into()),
                Some(Ok(Message::Close(None))) | None => return (errors, 1005),
                Some(Ok(_)) => {}
                Some(Err(err)) => panic!("read error before close: {err}"),
            }
        }
    }
}

impl Client {
    /// Reads until the connection ends; returns the frames seen and the close code, if a close
    /// frame arrived (a connection dropped without one gives `None`).
    pub async fn read_to_end(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut frames = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for the end");
            match next {
                Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(Some(frame)))) => return (frames, Some(frame.code.into())),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (frames, None),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// An HTTP/1.1 request; returns the status and the body parsed as JSON (or as a string).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (status, body)
}

/// Base64 of `n` bytes of zeros (a `bytes` payload of that size).
pub fn zeros_b64(n: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(vec![0u8; n])
}
