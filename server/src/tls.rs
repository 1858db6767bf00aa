//! TLS for the server itself (`sealbus serve --tls-cert --tls-key`): a certificate chain and key
//! loaded from PEM files (and loaded again on demand, e.g. after a renewal), and a listener that
//! completes each TLS handshake in its own task, so a slow or silent peer never holds up the
//! connections accepted after it.
//!
//! The server can equally run behind a TLS-terminating proxy; this is for deployments without
//! one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::{Error, Result};

/// Time a peer has to complete its TLS handshake before its connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the HTTP server to take them.
const READY_BACKLOG: usize = 128;

/// A TLS acceptor for the certificate chain in `cert` and the private key in `key` (PEM files,
/// as written by certbot, OpenSSL or a cloud provider; the key in PKCS#8, PKCS#1 or SEC1 form).
///
/// Errors: [`Error::Config`] naming the file that is missing, unreadable, holds no certificate
/// or key, or whose key does not match the certificate.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|err| Error::Config(format!("TLS certificate {}: {err}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::Config(format!(
            "TLS certificate {}: no certificate in the file",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| Error::Config(format!("TLS key {}: {err}", key.display())))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|err| {
            Error::Config(format!(
                "TLS certificate {} and key {}: {err}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The server's certificate and key, from two PEM files that can be read again (after a
/// renewal) while the server runs: connections accepted after [`reload`](Self::reload) use the
/// new certificate, established ones keep theirs.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Loads `cert` and `key` (see [`acceptor`] for the files and errors).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certificates>> {
        Ok(Arc::new(Certificates {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(acceptor(cert, key)?),
        }))
    }

    /// Reads both files again; on error the current certificate stays in use.
    pub fn reload(&self) -> Result<()> {
        let fresh = acceptor(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A TCP listener whose connections come out TLS-handshaken, for
/// [`Server::serve_tls`](crate::server::Server::serve_tls).
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp` with the current one of `certificates`; each connection's
    /// handshake runs in its own task (at most [`HANDSHAKE_TIMEOUT`]). Must be called inside a
    /// tokio runtime.
    pub fn new(tcp: TcpListener, certificates: Arc<Certificates>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_BACKLOG);
        let accepting = tokio::spawn(accept_loop(tcp, certificates, tx));
        Ok(TlsListener {
            local,
            ready,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    certificates: Arc<Certificates>,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(%err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "could not set TCP_NODELAY");
        }
        let acceptor = certificates.acceptor();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/tls")
            .join(name)
    }

    fn config_error(cert: &Path, key: &Path) -> String {
        match acceptor(cert, key) {
            Err(Error::Config(message)) => message,
            Err(other) => panic!("expected a configuration error, got {other}"),
            Ok(_) => panic!("{} and {} were accepted", cert.display(), key.display()),
        }
    }

    #[test]
    fn the_test_certificate_and_key_load() {
        acceptor(&fixture("server.pem"), &fixture("server.key")).unwrap();
    }

    #[test]
    fn a_failed_reload_keeps_the_current_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::copy(fixture("server.pem"), &cert).unwrap();
        std::fs::copy(fixture("server.key"), &key).unwrap();
        let certificates = Certificates::load(&cert, &key).unwrap();
        let before = Arc::as_ptr(certificates.acceptor().config());
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(matches!(certificates.reload(), Err(Error::Config(_))));
        assert_eq!(Arc::as_ptr(certificates.acceptor().config()), before);
        std::fs::copy(fixture("renewed.pem"), &cert).unwrap();
        std::fs::copy(fixture("renewed.key"), &key).unwrap();
        certificates.reload().unwrap();
        assert_ne!(Arc::as_ptr(certificates.acceptor().config()), before);
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let missing = fixture("missing.pem");
        let text = config_error(&missing, &fixture("server.key"));
        assert!(text.contains("missing.pem"), "{text}");

        let text = config_error(&fixture("server.pem"), &fixture("server.pem"));
        assert!(
            text.starts_with("TLS key") && text.contains("server.pem"),
            "{text}"
        );

        let text = config_error(&fixture("README.md"), &fixture("server.key"));
        assert!(text.contains("no certificate"), "{text}");
    }
}
