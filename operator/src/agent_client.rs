//! The operator's client of the agents: JSON over HTTP to `podIP:agentPort`, each request
//! with a freshly minted token for that pod, bounded by a timeout.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{metrics::Metrics, signing::SigningKey};

/// How long an idle connection to an agent is kept for reuse; below the agents' default
/// header-read timeout.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where an agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAddr {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's IP.
    pub ip: String,
    /// The agent's port.
    pub port: u16,
}

/// Why an agent call failed: the agent's HTTP status and error code when it answered, and
/// the reason (the agent's own message when it gave one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentError {
    /// The HTTP status, when the agent answered.
    pub status: Option<u16>,
    /// What kind of failure the agent reported, when it answered with an error body.
    pub code: Option<biometrics_agent_api::ErrorCode>,
    /// The reason.
    pub message: String,
}

impl AgentError {
    fn other(message: impl Into<String>) -> Self {
        Self { status: None, code: None, message: message.into() }
    }

    /// The agent does not know the thing asked about (e.g. it restarted since).
    pub fn is_not_found(&self) -> bool {
        self.code == Some(biometrics_agent_api::ErrorCode::NotFound) || self.status == Some(404)
    }
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<AgentError> for String {
    fn from(e: AgentError) -> Self {
        e.message
    }
}

/// How the operator reaches agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP.
    Http,
    /// HTTPS only: agents present a certificate for `server_name` signed by a CA in
    /// `ca_bundle`. Nothing, a Redis password least of all, is sent in clear.
    Https {
        /// PEM file of the CAs that sign agent certificates.
        ca_bundle: PathBuf,
        /// The name every agent certificate carries (pods are dialled by IP).
        server_name: String,
    },
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Calls agents.
#[derive(Clone)]
pub struct AgentClient {
    http: Client<Connector, Full<Bytes>>,
    scheme: &'static str,
    key: SigningKey,
    timeout: Duration,
    metrics: Metrics,
}

impl AgentClient {
    /// A client signing with `key`.
    pub fn new(key: SigningKey, timeout: Duration, metrics: Metrics, transport: &Transport) -> Result<Self, String> {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(timeout));
        tcp.enforce_http(false);
        let (connector, scheme) = match transport {
            Transport::Http => {
                // Never used for https (the scheme is http), but the type is shared.
                let tls = rustls::ClientConfig::builder()
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth();
                (
                    HttpsConnectorBuilder::new()
                        .with_tls_config(tls)
                        .https_or_http()
                        .enable_http1()
                        .wrap_connector(tcp),
                    "http",
                )
            }
            Transport::Https { ca_bundle, server_name } => {
                let mut roots = RootCertStore::empty();
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_bundle)
                    .and_then(Iterator::collect)
                    .map_err(|e| format!("cannot read the agent CA bundle {}: {e}", ca_bundle.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("the agent CA bundle {} holds no usable certificate", ca_bundle.display()));
                }
                let name = ServerName::try_from(server_name.clone())
                    .map_err(|e| format!("agent TLS server name {server_name:?}: {e}"))?;
                let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
                let connector = HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_only()
                    .with_server_name_resolver(FixedServerNameResolver::new(name))
                    .enable_http1()
                    .wrap_connector(tcp);
                (connector, "https")
            }
        };
        let http = Client::builder(TokioExecutor::new())
            // Agents close connections idle for their header-read timeout (5 s by default):
            // letting go sooner keeps a request from racing the agent's close.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Ok(Self { http, scheme, key, timeout, metrics })
    }

    /// `method path` with an optional JSON body; the decoded answer, or the reason it failed
    /// (the agent's own `error` when it gave one).
    pub async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        agent: &AgentAddr,
        method: &str,
        path: &str,
        body: Option<&B>,
        label: &str,
    ) -> Result<R, AgentError> {
        let token = self.key.token_for(&agent.namespace, &agent.pod).map_err(|e| AgentError::other(e.to_string()))?;
        let host = if agent.ip.contains(':') { format!("[{}]", agent.ip) } else { agent.ip.clone() };
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| AgentError::other(e.to_string()))?,
            None => Vec::new(),
        };
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}://{host}:{}{path}", self.scheme, agent.port))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| AgentError::other(e.to_string()))?;
        let started = Instant::now();
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| AgentError::other(format!("agent unreachable at {host}:{}: {e}", agent.port)))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| AgentError::other(format!("reading the agent's answer: {e}")))?
                .to_bytes();
            if !status.is_success() {
                let (code, reason) = match serde_json::from_slice::<biometrics_agent_api::ErrorBody>(&body) {
                    Ok(e) => (Some(e.code), e.message),
                    Err(_) => (None, String::from_utf8_lossy(&body).into_owned()),
                };
                return Err(AgentError {
                    status: Some(status.as_u16()),
                    code,
                    message: format!("agent answered {status}: {reason}"),
                });
            }
            serde_json::from_slice(&body)
                .map_err(|e| AgentError::other(format!("unexpected answer from the agent: {e}")))
        };
        let result = tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(AgentError::other(format!("agent did not answer within {:?}", self.timeout))));
        self.metrics.agent_calls.with_label_values(&[label]).observe(started.elapsed().as_secs_f64());
        result
    }
}
