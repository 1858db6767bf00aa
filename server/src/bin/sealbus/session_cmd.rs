//! `sealbus session create|list|show|delete|message`: the admin API from the command line.
//!
//! Talks HTTP/1.1 (`http://`, or `https://` through rustls with the system's roots) to the
//! server's admin API (`/api/...`) with the admin token; the tiny client here is enough for JSON
//! requests to a Sealbus server and avoids an HTTP client dependency.

use anyhow::{Context as _, Result, bail};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Options of `sealbus session`.
#[derive(clap::Args, Debug)]
pub(crate) struct SessionArgs {
    #[command(subcommand)]
    action: Action,
    /// Base URL of the server's HTTP side (admin API under /api).
    #[arg(
        long,
        env = "SEALBUS_ADMIN_URL",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    admin_url: String,
    /// Admin token (printed by `sealbus serve` when it generated one).
    #[arg(
        long,
        env = "SEALBUS_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    admin_token: Option<String>,
    /// Print the server's JSON answer as it is.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Create a session.
    Create {
        /// Session name (A-Z a-z 0-9 . _ -).
        name: String,
        /// Session password.
        #[arg(long, env = "SEALBUS_SESSION_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Secret for signing client tokens of this session.
        #[arg(long, hide_env_values = true)]
        token_secret: Option<String>,
        /// A session setting, e.g. `--set retry_interval_ms=2000` (repeatable; see `show`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// List the sessions.
    List,
    /// Show one session's settings and counters.
    Show {
        /// Session name.
        name: String,
    },
    /// Delete a session (its clients are disconnected with `session_deleted`).
    Delete {
        /// Session name.
        name: String,
    },
    /// Show where a QoS 1 message is: each subscriber's copy (pending, delivered,
    /// acknowledged, dead) and the deliveries made, while the server tracks it.
    Message {
        /// Session name.
        name: String,
        /// The message id (`sealbus pub --qos 1` prints it).
        mid: String,
    },
}

/// `sealbus session ...`.
pub(crate) fn run(args: SessionArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(execute(args))
}

async fn execute(args: SessionArgs) -> Result<()> {
    let token = args.admin_token.as_deref().context(
        "no admin token: pass --admin-token or set SEALBUS_ADMIN_TOKEN (sealbus serve prints it)",
    )?;
    let api = Api {
        base: args.admin_url.trim_end_matches('/').to_owned(),
        token: token.to_owned(),
    };
    let answer = match &args.action {
        Action::Create {
            name,
            password,
            token_secret,
            settings,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            if let Some(password) = password {
                body.insert("password".into(), json!(password));
            }
            if let Some(secret) = token_secret {
                body.insert("token_secret".into(), json!(secret));
            }
            for setting in settings {
                let (key, value) = setting
                    .split_once('=')
                    .with_context(|| format!("--set {setting}: expected KEY=VALUE"))?;
                let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
                body.insert(key.to_owned(), value);
            }
            api.call("POST", "/api/sessions", Some(Value::Object(body)))
                .await?
        }
        Action::List => api.call("GET", "/api/sessions", None).await?,
        Action::Show { name } => {
            api.call("GET", &format!("/api/sessions/{name}"), None)
                .await?
        }
        Action::Delete { name } => {
            api.call("DELETE", &format!("/api/sessions/{name}"), None)
                .await?
        }
        Action::Message { name, mid } => {
            api.call("GET", &format!("/api/sessions/{name}/messages/{mid}"), None)
                .await?
        }
    };
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    match &args.action {
        Action::Create { name, .. } => println!("session `{name}` created"),
        Action::Delete { name } => println!("session `{name}` deleted"),
        Action::List => {
            let sessions = answer["sessions"].as_array().cloned().unwrap_or_default();
            if sessions.is_empty() {
                println!("no sessions");
            }
            for session in sessions {
                let clients = session.get("clients").cloned().unwrap_or(Value::Null);
                println!(
                    "{}  clients: {clients}",
                    session["name"].as_str().unwrap_or("?")
                );
            }
        }
        Action::Show { .. } => println!("{}", serde_json::to_string_pretty(&answer)?),
        Action::Message { mid, .. } => print_copies(mid, &answer),
    }
    Ok(())
}

/// `mid on TOPIC from CLIENT`, then one line per subscriber's copy.
fn print_copies(mid: &str, answer: &Value) {
    let text = |field: &str| answer[field].as_str().unwrap_or("?").to_owned();
    println!("{mid} on {} from {}", text("topic"), text("from"));
    let copies = answer["copies"].as_array().cloned().unwrap_or_default();
    if copies.is_empty() {
        println!("  no subscriber matched");
    }
    for copy in copies {
        println!(
            "  {}: {} ({} deliveries)",
            copy["client"].as_str().unwrap_or("?"),
            copy["state"].as_str().unwrap_or("?"),
            copy["attempts"]
        );
    }
}

/// The admin API at `base` with its bearer token.
struct Api {
    base: String,
    token: String,
}

impl Api {
    /// Sends one request; a 4xx/5xx answer becomes an error naming the protocol's code.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let (tls, rest) = if let Some(rest) = self.base.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            (false, rest)
        } else {
            bail!(
                "admin URL {} must start with http:// or https://",
                self.base
            )
        };
        let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {prefix}{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        );
        let mut tcp = tokio::net::TcpStream::connect(host)
            .await
            .with_context(|| format!("connecting to {host}"))?;
        let raw = if tls {
            let name = host_name(host);
            let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
                .with_context(|| format!("`{name}` is not a valid TLS server name"))?;
            let mut stream = tls_connector()?
                .connect(server_name, tcp)
                .await
                .with_context(|| format!("TLS with {host}"))?;
            exchange(&mut stream, &request).await?
        } else {
            exchange(&mut tcp, &request).await?
        };
        let (status, body) = parse_response(&raw)?;
        let value: Value = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap_or(Value::String(body))
        };
        if !(200..300).contains(&status) {
            // The admin API answers `{"error": {"code", "name", "message"}}`.
            let error = value.get("error").unwrap_or(&value);
            let message = error["message"].as_str().unwrap_or("request failed");
            match (error["name"].as_str(), error["code"].as_u64()) {
                (Some(name), Some(code)) => {
                    bail!("{method} {path}: HTTP {status}: {message} [{name} {code}]")
                }
                _ => bail!("{method} {path}: HTTP {status}: {message}"),
            }
        }
        Ok(value)
    }
}

/// Writes `request` and reads the whole answer (the server closes after it: `Connection: close`).
async fn exchange<S>(stream: &mut S, request: &str) -> Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw).await {
        Ok(_) => Ok(raw),
        // Some TLS terminators close without `close_notify`; the answer is complete anyway
        // (`parse_response` checks its framing).
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(err) => Err(err.into()),
    }
}

/// The host name of `host[:port]` (an IPv6 address without its brackets).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// A TLS connector trusting the system's root certificates (`SSL_CERT_FILE`
/// replaces them), as the WebSocket client does.
fn tls_connector() -> Result<tokio_rustls::TlsConnector> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        bail!(
            "no root certificates to verify the admin API's TLS certificate ({}); set SSL_CERT_FILE",
            errors.join("; ")
        );
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// Splits an HTTP/1.1 response into its status and body (de-chunked when needed).
fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    if !chunked {
        return Ok((status, body.to_owned()));
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if size == 0 {
            break;
        }
        out.push_str(after.get(..size).context("truncated chunk")?);
        rest = after.get(size + 2..).unwrap_or("");
    }
    Ok((status, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_and_without_chunking() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (201, "{}".to_owned()));
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (200, "{\"a\":1}".to_owned())
        );
        assert!(parse_response(b"garbage").is_err());
    }
}
