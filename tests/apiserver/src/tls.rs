//! HTTPS for the server, as a cluster's API server serves it: a CA of its own (made at start,
//! kept in memory, written into the kubeconfig as `certificate-authority-data`) and a serving
//! certificate it signs for `localhost`, `127.0.0.1`, the listen address and the names pods use
//! (`kubernetes.default.svc`), and the kubelet's relay address once a kubelet runs. kubectl
//! sends a bearer token only over HTTPS.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::ResolvesServerCert,
    sign::CertifiedKey,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// How long a client has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The CA and the TLS configuration signed by it.
#[derive(Clone)]
pub struct ServingCerts {
    /// The CA certificate (PEM), for clients to trust.
    pub ca_pem: String,
    config: Arc<rustls::ServerConfig>,
    serving: Arc<ServingCert>,
}

impl std::fmt::Debug for ServingCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCerts").finish_non_exhaustive()
    }
}

/// The serving certificate, signed again by the CA when the server gains an address (the
/// kubelet's relay, where pods reach it).
struct ServingCert {
    ca: Issuer<'static, KeyPair>,
    names: Mutex<Vec<String>>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert").field("names", &self.names).finish_non_exhaustive()
    }
}

fn sign_serving(ca: &Issuer<'static, KeyPair>, names: &[String]) -> Result<Arc<CertifiedKey>, String> {
    let err = |e: rcgen::Error| format!("making the serving certificate: {e}");
    let server_key = KeyPair::generate().map_err(err)?;
    let mut server = CertificateParams::new(names.to_vec()).map_err(err)?;
    server.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, ca).map_err(err)?;
    let chain = vec![CertificateDer::from(server_cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map(Arc::new)
        .map_err(|e| format!("the serving certificate: {e}"))
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

impl ServingCerts {
    /// A new CA, and a serving certificate for `addr` and the usual names.
    pub fn generate(addr: SocketAddr) -> Result<Self, String> {
        let err = |e: rcgen::Error| format!("making the server's certificates: {e}");
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "biometrics-test-apiserver-ca");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let names: Vec<String> =
            ["localhost", "127.0.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
                .into_iter()
                .map(str::to_owned)
                .chain(std::iter::once(addr.ip().to_string()))
                .collect();
        let issuer = Issuer::new(ca, ca_key);
        let current = sign_serving(&issuer, &names)?;
        let serving = Arc::new(ServingCert { ca: issuer, names: Mutex::new(names), current: RwLock::new(current) });
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_cert_resolver(serving.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { ca_pem: ca_cert.pem(), config: Arc::new(config), serving })
    }

    /// Adds `ip` to the serving certificate's names (signing a new one), so clients that
    /// reach the server there verify it: pods, through the kubelet's relay.
    pub fn add_address(&self, ip: IpAddr) -> Result<(), String> {
        let mut names = self.serving.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if names.contains(&ip.to_string()) {
            return Ok(());
        }
        names.push(ip.to_string());
        let signed = sign_serving(&self.serving.ca, &names)?;
        *self.serving.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = signed;
        Ok(())
    }
}

/// A listener handing axum finished TLS streams; a client that fails or stalls its handshake
/// is dropped.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    /// TLS on `tcp` with `certs`.
    pub fn new(tcp: TcpListener, certs: &ServingCerts) -> Self {
        Self { tcp, acceptor: TlsAcceptor::from(certs.config.clone()) }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
