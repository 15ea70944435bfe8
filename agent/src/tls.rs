//! Serving the agent API over TLS: a listener whose handshakes run in their own tasks (a
//! slow or silent client delays nobody else) and hands axum finished TLS streams.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// How long a client has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Completed handshakes waiting for the server to take them.
const BACKLOG: usize = 128;

/// How often the certificate files are checked for a new version.
const RELOAD_CHECK: Duration = Duration::from_secs(30);

/// A certificate chain and key read from PEM files.
fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read the key {}: {e}", key.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("the key is not one TLS can sign with: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| format!("the certificate and key do not belong together: {e}"))?;
    Ok(Arc::new(certified))
}

/// The files' modification times: a new certificate (cert-manager renews the mounted
/// Secret in place) shows as a new time.
fn modified(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((at(cert)?, at(key)?))
}

/// Serves the certificate in the files, reading them again when they change (checked at
/// most every 30 s, on a handshake): a renewed certificate is used without a restart. A
/// renewal that cannot be read keeps the previous certificate, and says so.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    check_every: Duration,
    loaded: Mutex<Loaded>,
}

/// What `ReloadingCert` serves, and from which version of the files.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    files: Option<(SystemTime, SystemTime)>,
    checked: Instant,
}

impl ReloadingCert {
    fn new(cert: &Path, key: &Path, check_every: Duration) -> Result<Self, String> {
        let loaded = Loaded { key: certified_key(cert, key)?, files: modified(cert, key), checked: Instant::now() };
        Ok(Self { cert: cert.to_owned(), key: key.to_owned(), check_every, loaded: Mutex::new(loaded) })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if loaded.checked.elapsed() >= self.check_every {
            loaded.checked = Instant::now();
            let files = modified(&self.cert, &self.key);
            if files.is_some() && files != loaded.files {
                match certified_key(&self.cert, &self.key) {
                    Ok(fresh) => {
                        tracing::info!(cert = %self.cert.display(), "serving the renewed TLS certificate");
                        loaded.key = fresh;
                        loaded.files = files;
                    }
                    Err(e) => tracing::warn!(error = %e, "keeping the previous TLS certificate"),
                }
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server configuration from a PEM certificate chain and private key, reloaded when
/// the files change.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let resolver = ReloadingCert::new(cert, key, RELOAD_CHECK)?;
    Ok(Arc::new(ServerConfig::builder().with_no_client_auth().with_cert_resolver(Arc::new(resolver))))
}

/// The peer of a connection, plain or TLS (what `ConnectInfo` gives handlers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// A TLS listener for `axum::serve`.
pub struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `tcp`, completing handshakes with `config`.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(BACKLOG);
        let acceptor = TlsAcceptor::from(config);
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, ready, acceptor_task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task only ends with the listener.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_renewal_is_not() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        biometrics_test_support::tls_material(dir.path(), "DNS:biometrics-agent");
        let resolver = ReloadingCert::new(&cert, &key, Duration::ZERO).unwrap();
        let first = resolver.current().cert[0].clone();
        assert_eq!(resolver.current().cert[0], first, "unchanged files, same certificate");
        std::thread::sleep(Duration::from_millis(20));
        biometrics_test_support::tls_material(dir.path(), "DNS:biometrics-agent");
        let renewed = resolver.current().cert[0].clone();
        assert_ne!(renewed, first, "the renewal is served");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&key, "not a key").unwrap();
        assert_eq!(resolver.current().cert[0], renewed, "a broken renewal keeps the previous certificate");
        assert!(server_config(&cert, &key).unwrap_err().contains("cannot read the key"));
    }
}
