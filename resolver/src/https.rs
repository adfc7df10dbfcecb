//! The HTTP listeners over TLS: `[http]` and `[admin]` with `tls_cert_file`
//! and `tls_key_file` serve HTTPS (rustls).
//!
//! * Handshakes run in their own tasks, each bounded by
//!   [`HANDSHAKE_TIMEOUT`], so a client that stalls its handshake delays no
//!   other; connections reach axum once their handshake is done.
//! * The certificate is read again on reload (SIGHUP, `anycastctl reload`):
//!   new connections get the new one; a file that does not load is logged
//!   and the old certificate stays in service.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Longest a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for axum, at most.
const READY_QUEUE: usize = 128;

/// A certificate chain and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Loads the chain and the key, checking that they belong together.
    pub fn load(&self) -> Result<CertifiedKey, String> {
        let named = |path: &Path, e: &dyn fmt::Display| format!("{}: {e}", path.display());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| named(&self.cert, &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| named(&self.cert, &e))?;
        if chain.is_empty() {
            return Err(named(&self.cert, &"holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| named(&self.key, &e))?;
        CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| format!("{} and {}: {e}", self.cert.display(), self.key.display()))
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The certificate in service, replaced on reload.
pub struct Certificate {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    pub fn load(files: &TlsFiles) -> Result<Arc<Certificate>, String> {
        Ok(Arc::new(Certificate {
            current: RwLock::new(Arc::new(files.load()?)),
            files: files.clone(),
        }))
    }

    /// Reads the files again; on failure the certificate in service stays.
    pub fn reload(&self, listener: &str) {
        match self.files.load() {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                tracing::info!(listener, cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::error!(listener, %error, "TLS certificate not reloaded; the one in service stays");
            }
        }
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// TLS connections, handshaken, for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// Accepts on `tcp` and handshakes with `certificate` until `shutdown`.
pub fn listen(
    tcp: TcpListener,
    certificate: Arc<Certificate>,
    name: &'static str,
    shutdown: CancellationToken,
) -> Result<TlsListener, String> {
    let local = tcp.local_addr().map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    // The listeners speak HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, ready) = mpsc::channel(READY_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(listener = name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(listener = name, %peer, %error, "TLS handshake failed");
                    }
                    Err(_) => {
                        tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    Ok(TlsListener { ready, local })
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop stopped (shutdown): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
