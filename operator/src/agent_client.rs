//! The operator's client of the agents: JSON over HTTP to `podIP:agentPort`, each request
//! with a freshly minted token for that pod, bounded by a timeout.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use biometrics_agent_api::{
    ErrorBody, ErrorCode,
    routes::{CALLER_HEADER, Route},
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

use crate::{leader::Fence, metrics::Metrics, signing::SigningKey};

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

/// Why an agent call failed: what the operator decides on (retry, fail, which reason) is
/// the variant and the agent's error code, never the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// No connection, or it broke before the whole answer arrived (refused, reset, closed).
    #[error("agent unreachable at {addr}: {reason}")]
    Unreachable {
        /// `ip:port`.
        addr: String,
        /// What the connection did.
        reason: String,
    },
    /// No answer within the client's timeout.
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The agent answered with an error status.
    #[error("agent answered {}: {message}", show_status(*.status))]
    Answered {
        /// The HTTP status.
        status: u16,
        /// What kind of failure, when the answer was an error body.
        code: Option<ErrorCode>,
        /// The agent's message (or its raw answer).
        message: String,
    },
    /// A success whose body is not what the route answers with (an agent of another version).
    #[error("unexpected answer from the agent: {0}")]
    BadAnswer(String),
    /// The request could not be made: no token, or a body that does not encode.
    #[error("cannot call the agent: {0}")]
    Request(String),
    /// This replica's lease has run out (it is about to stop): nothing was sent.
    #[error("not sent: this replica no longer holds the leader lease")]
    NotLeading,
}

fn show_status(status: u16) -> String {
    match hyper::StatusCode::from_u16(status) {
        Ok(s) => s.to_string(),
        Err(_) => status.to_string(),
    }
}

impl AgentError {
    /// The HTTP status, when the agent answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Answered { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// What kind of failure the agent reported, when it answered with an error body.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Answered { code, .. } => *code,
            _ => None,
        }
    }

    /// The agent does not know the thing asked about (e.g. it restarted since): 404, or 410.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound) || matches!(self.status(), Some(404 | 410))
    }

    /// Whether asking again later may succeed: no answer (unreachable, reset, timeout), or an
    /// answer that says "not now" (408, 429, any 5xx). Every other answer is the agent's
    /// considered refusal, and so is a body it should not have sent.
    pub fn is_transient(&self) -> bool {
        match self {
            // Asked again by whichever replica leads then.
            Self::Unreachable { .. } | Self::Timeout(_) | Self::NotLeading => true,
            Self::Answered { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Self::BadAnswer(_) | Self::Request(_) => false,
        }
    }
}

/// The agents' API as the controllers see it: each route of
/// [`biometrics_agent_api::routes`] called with its typed request, answering its typed
/// response. [`AgentClient`] is the real one; reconcile tests give the controllers a fake.
///
/// Generic rather than `dyn`: a method generic over the route's types cannot be called
/// through a trait object, and erasing them (JSON values, boxed futures) would give up the
/// typing the trait exists for. The controllers' contexts are generic over it instead.
pub trait AgentApi: Send + Sync + 'static {
    /// Calls `route` on `agent`: `id` fills the route's `{id}`, `body` is its JSON request.
    fn send<Req, Resp>(
        &self,
        agent: &AgentAddr,
        route: Route<Req, Resp>,
        id: Option<&str>,
        body: Option<&Req>,
    ) -> impl Future<Output = Result<Resp, AgentError>> + Send
    where
        Req: Serialize + Sync,
        Resp: DeserializeOwned + Send;
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

/// Why the agents' transport cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The CA bundle cannot be read or parsed.
    #[error("cannot read the agent CA bundle {}: {source}", path.display())]
    CaBundle {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// The CA bundle holds nothing to trust.
    #[error("the agent CA bundle {} holds no usable certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The name agent certificates must carry is not a valid server name.
    #[error("agent TLS server name {name:?}: {source}")]
    ServerName {
        /// The name.
        name: String,
        /// Why.
        source: rustls::pki_types::InvalidDnsNameError,
    },
}

/// Calls agents.
#[derive(Clone)]
pub struct AgentClient {
    http: Client<Connector, Full<Bytes>>,
    scheme: &'static str,
    key: SigningKey,
    timeout: Duration,
    metrics: Metrics,
    leader: Option<(hyper::header::HeaderValue, Fence)>,
}

impl AgentClient {
    /// A client signing with `key`.
    pub fn new(
        key: SigningKey,
        timeout: Duration,
        metrics: Metrics,
        transport: &Transport,
    ) -> Result<Self, TransportError> {
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
                    .map_err(|source| TransportError::CaBundle { path: ca_bundle.clone(), source })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TransportError::NoCertificate { path: ca_bundle.clone() });
                }
                let name = ServerName::try_from(server_name.clone())
                    .map_err(|source| TransportError::ServerName { name: server_name.clone(), source })?;
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
        Ok(Self { http, scheme, key, timeout, metrics, leader: None })
    }

    /// The leader's client: each request names `identity` (the agent logs it) and is sent only
    /// while `fence` holds, so a replica whose lease ran out calls no agent even before it
    /// has stopped.
    pub fn for_leader(mut self, identity: &str, fence: Fence) -> Self {
        let name = hyper::header::HeaderValue::from_str(identity)
            .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("invalid-identity"));
        self.leader = Some((name, fence));
        self
    }
}

impl AgentClient {
    /// One request to `agent`: the answer's body on success (at most `limit` bytes, within
    /// `timeout`), the agent's error code and message otherwise.
    async fn exchange(
        &self,
        agent: &AgentAddr,
        method: &str,
        path: &str,
        body: Vec<u8>,
        label: &str,
        (limit, timeout): (usize, Duration),
    ) -> Result<Bytes, AgentError> {
        if let Some((_, fence)) = &self.leader
            && !fence.holds()
        {
            return Err(AgentError::NotLeading);
        }
        let token = self.key.token_for(&agent.namespace, &agent.pod).map_err(|e| AgentError::Request(e.to_string()))?;
        let host = if agent.ip.contains(':') { format!("[{}]", agent.ip) } else { agent.ip.clone() };
        let addr = format!("{host}:{}", agent.port);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}://{addr}{path}", self.scheme))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        if let Some((caller, _)) = &self.leader {
            request = request.header(CALLER_HEADER, caller.clone());
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| AgentError::Request(e.to_string()))?;
        let started = Instant::now();
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| AgentError::Unreachable { addr: addr.clone(), reason: e.to_string() })?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| AgentError::Unreachable {
                    addr: addr.clone(),
                    reason: format!("reading the answer: {e}"),
                })?
                .to_bytes();
            if !status.is_success() {
                let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
                    Ok(e) => (Some(e.code), e.message),
                    Err(_) => (None, String::from_utf8_lossy(&body).into_owned()),
                };
                return Err(AgentError::Answered { status: status.as_u16(), code, message });
            }
            Ok(body)
        };
        let result = tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(AgentError::Timeout(timeout)));
        self.metrics.agent_calls.with_label_values(&[label]).observe(started.elapsed().as_secs_f64());
        result
    }

    /// GETs a JSON route whose path has several parameters (`{namespace}`, `{capture}`, …).
    pub async fn get_json<Req, Resp: DeserializeOwned>(
        &self,
        agent: &AgentAddr,
        route: Route<Req, Resp>,
        params: &[&str],
    ) -> Result<Resp, AgentError> {
        let body = self
            .exchange(
                agent,
                route.method.as_str(),
                &route.fill(params),
                Vec::new(),
                route.label,
                (MAX_JSON_BYTES, self.timeout),
            )
            .await?;
        serde_json::from_slice(&body).map_err(|e| AgentError::BadAnswer(e.to_string()))
    }

    /// GETs a route's bytes (a file): at most `limit` of them, within `timeout`.
    pub async fn get_bytes<Req, Resp>(
        &self,
        agent: &AgentAddr,
        route: Route<Req, Resp>,
        params: &[&str],
        limit: usize,
        timeout: Duration,
    ) -> Result<Bytes, AgentError> {
        self.exchange(agent, route.method.as_str(), &route.fill(params), Vec::new(), route.label, (limit, timeout))
            .await
    }
}

/// The largest JSON answer read from an agent.
const MAX_JSON_BYTES: usize = 16 << 20;

impl AgentApi for AgentClient {
    async fn send<Req, Resp>(
        &self,
        agent: &AgentAddr,
        route: Route<Req, Resp>,
        id: Option<&str>,
        body: Option<&Req>,
    ) -> Result<Resp, AgentError>
    where
        Req: Serialize + Sync,
        Resp: DeserializeOwned + Send,
    {
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| AgentError::Request(e.to_string()))?,
            None => Vec::new(),
        };
        let path = route.path(id.unwrap_or_default());
        let answer = self
            .exchange(agent, route.method.as_str(), &path, bytes, route.label, (MAX_JSON_BYTES, self.timeout))
            .await?;
        serde_json::from_slice(&answer).map_err(|e| AgentError::BadAnswer(e.to_string()))
    }
}

/// A fake of the agents for reconcile tests: answers scripted per route, calls recorded.
#[cfg(test)]
pub mod fake {
    use std::{
        collections::HashMap,
        sync::{
            Mutex,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use serde_json::Value;

    use super::*;

    /// One call the controller made.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Call {
        /// The pod whose agent was called.
        pub pod: String,
        /// The route's label.
        pub route: &'static str,
        /// The path called.
        pub path: String,
        /// The request body.
        pub body: Option<Value>,
    }

    /// Answers each route with what the test set (by label); unset routes are unreachable.
    #[derive(Default)]
    pub struct FakeAgents {
        answers: Mutex<HashMap<&'static str, Result<Value, AgentError>>>,
        calls: Mutex<Vec<Call>>,
        latency: Mutex<Duration>,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    impl FakeAgents {
        /// From now on `route` answers `answer`.
        pub fn answer<Req, Resp: Serialize>(&self, route: Route<Req, Resp>, answer: Result<Resp, AgentError>) {
            let answer = answer.map(|r| serde_json::to_value(r).expect("encodes"));
            self.answers.lock().unwrap().insert(route.label, answer);
        }

        /// Every call so far.
        pub fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }

        /// From now on every answer takes this long.
        pub fn take(&self, latency: Duration) {
            *self.latency.lock().unwrap() = latency;
        }

        /// The most calls that were in flight at once.
        pub fn most_at_once(&self) -> usize {
            self.most_in_flight.load(Ordering::SeqCst)
        }
    }

    impl AgentApi for FakeAgents {
        async fn send<Req, Resp>(
            &self,
            agent: &AgentAddr,
            route: Route<Req, Resp>,
            id: Option<&str>,
            body: Option<&Req>,
        ) -> Result<Resp, AgentError>
        where
            Req: Serialize + Sync,
            Resp: DeserializeOwned + Send,
        {
            self.calls.lock().unwrap().push(Call {
                pod: agent.pod.clone(),
                route: route.label,
                path: route.path(id.unwrap_or_default()),
                body: body.map(|b| serde_json::to_value(b).expect("encodes")),
            });
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let latency = *self.latency.lock().unwrap();
            tokio::time::sleep(latency).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let answer = self.answers.lock().unwrap().get(route.label).cloned();
            match answer {
                Some(Ok(value)) => serde_json::from_value(value).map_err(|e| AgentError::BadAnswer(e.to_string())),
                Some(Err(e)) => Err(e),
                None => Err(AgentError::Unreachable { addr: agent.ip.clone(), reason: "no answer scripted".into() }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, code: Option<ErrorCode>) -> AgentError {
        AgentError::Answered { status, code, message: "m".into() }
    }

    #[test]
    fn what_is_worth_asking_again() {
        assert!(AgentError::Unreachable { addr: "a".into(), reason: "connection reset".into() }.is_transient());
        assert!(AgentError::Timeout(Duration::from_secs(5)).is_transient());
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(answered(status, None).is_transient(), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 410, 413] {
            assert!(!answered(status, None).is_transient(), "{status}");
        }
        assert!(!AgentError::BadAnswer("x".into()).is_transient());
        assert!(answered(404, Some(ErrorCode::NotFound)).is_not_found() && answered(410, None).is_not_found());
        assert!(!answered(429, Some(ErrorCode::TooManyRequests)).is_not_found());
    }

    #[test]
    fn messages_keep_their_shape() {
        assert_eq!(answered(404, Some(ErrorCode::NotFound)).to_string(), "agent answered 404 Not Found: m");
        assert_eq!(
            AgentError::Timeout(Duration::from_secs(5)).to_string(),
            "agent did not answer within 5s",
            "what operations.md tells people to look for"
        );
    }
}
