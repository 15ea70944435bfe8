//! What the capture browser asks of the cluster and the agents, answered by the operator:
//! ProfileCaptures read from the API server (every replica serves the browser, and only the
//! leader keeps caches), files listed and fetched from the agents of the capture's namespace
//! with short-lived tokens signed per request. Nothing secret reaches the browser.

use std::time::Duration;

use biometrics_agent_api::{CaptureFiles, routes};
use biometrics_crds::v1alpha1::ProfileCapture;
use biometrics_ui::{Backend, BackendError, FileRef, HeldFiles};
use bytes::Bytes;
use futures::{StreamExt, stream};
use kube::{Api, Client, ResourceExt, api::ListParams};

use crate::{
    agent_client::{AgentAddr, AgentClient, AgentError, Transport},
    metrics::Metrics,
    pods,
    signing::SigningKey,
};

/// Agents asked at once for a capture's files.
const CONCURRENT_AGENTS: usize = 16;
/// The largest file the browser fetches through the operator.
const MAX_FILE_BYTES: usize = 512 << 20;

/// How the browser's backend reaches the agents: with the operator's signing key, which
/// every replica reads (a follower serves the browser too) when the first call needs it.
#[derive(Clone)]
pub struct AgentAccess {
    /// The operator's namespace, where the key's Secret is.
    pub namespace: String,
    /// The key's Secret.
    pub secret: String,
    /// What owns the Secret if the browser is the first to need the key.
    pub owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    /// How long an agent may take to answer a listing.
    pub timeout: Duration,
    /// How agents are reached.
    pub transport: Transport,
    /// Where agent call durations are counted.
    pub metrics: Metrics,
}

/// The browser's view of the cluster.
pub struct UiBackend {
    client: Client,
    access: AgentAccess,
    agents: tokio::sync::OnceCell<AgentClient>,
    /// The namespace the operator watches, when it watches one.
    namespace: Option<String>,
    /// The agents' port where pods do not say.
    agent_port: u16,
}

impl UiBackend {
    /// A backend reading with `client` and calling agents as `access` says.
    pub fn new(client: Client, access: AgentAccess, namespace: Option<String>, agent_port: u16) -> Self {
        Self { client, access, agents: tokio::sync::OnceCell::new(), namespace, agent_port }
    }

    async fn agents(&self) -> Result<&AgentClient, BackendError> {
        self.agents
            .get_or_try_init(|| async {
                let a = &self.access;
                let key = SigningKey::load_or_create(self.client.clone(), &a.namespace, &a.secret, a.owner.as_ref())
                    .await
                    .map_err(|e| BackendError::Failed(format!("the operator's signing key: {e}")))?;
                AgentClient::new(key, a.timeout, a.metrics.clone(), &a.transport)
                    .map_err(|e| BackendError::Failed(e.to_string()))
            })
            .await
    }

    fn captures_api(&self, namespace: Option<&str>) -> Api<ProfileCapture> {
        match namespace.or(self.namespace.as_deref()) {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// The pods of `namespace` that carry an agent and have an address.
    async fn agent_pods(&self, namespace: &str) -> Result<Vec<AgentAddr>, BackendError> {
        let pods = Api::<pods::WatchedPod>::namespaced(self.client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_error(&e))?;
        let mut addrs: Vec<AgentAddr> = pods
            .items
            .iter()
            .filter_map(|pod| {
                let info = pods::pod_info(pod, self.agent_port);
                Some(AgentAddr {
                    namespace: namespace.to_owned(),
                    pod: info.name,
                    ip: info.ip?,
                    port: info.agent_port?,
                })
            })
            .collect();
        addrs.sort_by(|a, b| a.pod.cmp(&b.pod));
        Ok(addrs)
    }
}

fn kube_error(e: &kube::Error) -> BackendError {
    match e {
        kube::Error::Api(status) if status.code == 404 => BackendError::NotFound(status.message.clone()),
        kube::Error::Api(status) if status.code == 403 => BackendError::Forbidden(status.message.clone()),
        other => BackendError::Unreachable(format!("the Kubernetes API: {other}")),
    }
}

fn agent_error(pod: &str, e: &AgentError) -> BackendError {
    if e.is_not_found() {
        BackendError::NotFound(format!("the agent of {pod}: {e}"))
    } else {
        BackendError::Unreachable(format!("the agent of {pod}: {e}"))
    }
}

impl Backend for UiBackend {
    async fn captures(&self) -> Result<Vec<ProfileCapture>, BackendError> {
        Ok(self.captures_api(None).list(&ListParams::default()).await.map_err(|e| kube_error(&e))?.items)
    }

    async fn capture(&self, namespace: &str, name: &str) -> Result<Option<ProfileCapture>, BackendError> {
        if self.namespace.as_deref().is_some_and(|watched| watched != namespace) {
            return Ok(None);
        }
        self.captures_api(Some(namespace)).get_opt(name).await.map_err(|e| kube_error(&e))
    }

    async fn files(&self, capture: &ProfileCapture) -> Result<(Vec<HeldFiles>, Vec<String>), BackendError> {
        let namespace = capture.namespace().unwrap_or_default();
        let name = capture.name_any();
        let agents = self.agent_pods(&namespace).await?;
        let client = self.agents().await?;
        let answers: Vec<(String, Result<CaptureFiles, AgentError>)> = stream::iter(agents)
            .map(|agent| {
                let (namespace, name) = (namespace.clone(), name.clone());
                async move {
                    let listing = client.get_json(&agent, routes::CAPTURE_FILES, &[&namespace, &name]).await;
                    (agent.pod, listing)
                }
            })
            .buffer_unordered(CONCURRENT_AGENTS)
            .collect()
            .await;
        let (mut held, mut warnings) = (Vec::new(), Vec::new());
        for (pod, answer) in answers {
            match answer {
                Ok(listing) => {
                    warnings.extend(listing.skipped.iter().map(|s| format!("the agent of {pod} skipped {s}")));
                    held.push(HeldFiles { holder: pod, listing });
                }
                // No files of this capture on that pod's volume: nothing to show.
                Err(e) if e.is_not_found() => {}
                Err(e) => warnings.push(agent_error(&pod, &e).to_string()),
            }
        }
        held.sort_by(|a, b| a.holder.cmp(&b.holder));
        warnings.sort();
        Ok((held, warnings))
    }

    async fn fetch(&self, holder: &str, file: &FileRef) -> Result<Bytes, BackendError> {
        let agent = self
            .agent_pods(&file.namespace)
            .await?
            .into_iter()
            .find(|a| a.pod == holder)
            .ok_or_else(|| BackendError::NotFound(format!("the agent of {holder} is gone")))?;
        let params =
            [file.namespace.as_str(), file.capture.as_str(), file.run.as_str(), file.pod.as_str(), file.file.as_str()];
        self.agents()
            .await?
            .get_bytes(&agent, routes::CAPTURE_FILE, &params, MAX_FILE_BYTES, Duration::from_secs(120))
            .await
            .map_err(|e| agent_error(holder, &e))
    }
}

/// Serves the capture browser on `addr` until the process ends; with `access`, in token mode.
pub async fn serve(
    addr: std::net::SocketAddr,
    backend: UiBackend,
    options: biometrics_ui::UiOptions,
    access: Option<std::sync::Arc<dyn biometrics_ui::access::Access>>,
) -> crate::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::error::ConfigError::Listen { addr, source })?;
    tracing::info!(%addr, token_mode = access.is_some(), "capture browser serving");
    tokio::spawn(async move {
        let _ = axum::serve(listener, biometrics_ui::router_with_access(backend, options, access)).await;
    });
    Ok(())
}
