//! The Biometrics operator: reconciles ProfileCaptures by instructing the agents in the
//! pods they select, and reports everything in status, Events and metrics. One replica
//! acts at a time (a Lease); the agents trust it through the key it publishes.

pub mod agent_client;
pub mod cache;
pub mod capture;
pub mod config;
pub mod controller;
pub mod error;
pub mod guard;
pub mod leader;
pub mod metrics;
pub mod owners;
pub mod pods;
pub mod readiness;
pub mod reasons;
pub mod secrets;
pub mod signing;
#[cfg(test)]
mod spec_fields;
pub mod status;
#[cfg(test)]
mod testing;
pub mod throttle;
pub mod trust;
pub mod ui_access;
pub mod ui_backend;
pub mod workload;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, reflector, watcher},
};

use crate::{
    agent_client::{AgentClient, Transport},
    config::ConfigFile,
    error::{ConfigError, Result},
    metrics::Metrics,
    readiness::Readiness,
    signing::SigningKey,
};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "biometrics-operator";

/// The operator's configuration.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// The namespace to watch; all when `None`.
    pub watch_namespace: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// The Lease's namespace (the operator's own).
    pub namespace: String,
    /// The Lease's name.
    pub lease_name: String,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// The lease, renew deadline and retry period of leader election.
    pub lease_timing: leader::Timing,
    /// The Secret holding the signing key.
    pub signing_secret: String,
    /// The Role in `namespace` that owns the Lease and the signing-key Secret.
    pub owner_role: Option<String>,
    /// The role that owns the trust ConfigMaps (a Role in `watch_namespace` or a ClusterRole).
    pub trust_owner: Option<owners::OwnerRole>,
    /// The agents' port when a pod has no annotation.
    pub agent_port: u16,
    /// The label selector of the Pod watch: only pods it matches are seen at all (empty:
    /// every pod).
    pub agent_pod_selector: String,
    /// Cluster-wide defaults.
    pub defaults: ConfigFile,
    /// How agents are reached.
    pub agent_transport: Transport,
    /// Kubernetes API requests per second (0: no limit) and the burst above it.
    pub kube_api_qps: f64,
    /// The burst of `kube_api_qps`.
    pub kube_api_burst: u32,
    /// Where the capture browser listens (every replica serves it); `None`: nowhere.
    pub ui_addr: Option<SocketAddr>,
    /// Whether the browser asks for a bearer token (token mode) or trusts whoever reaches it.
    pub ui_auth: UiAuth,
    /// speedscope's release files, for the browser's flame graphs.
    pub ui_speedscope_dir: PathBuf,
}

/// Who may use the capture browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UiAuth {
    /// Whoever reaches it: it listens on the pod's loopback, so `kubectl port-forward` (RBAC
    /// on `pods/portforward`) is the gate.
    #[default]
    PortForward,
    /// A bearer token the cluster authenticates (TokenReview), and per namespace a
    /// SubjectAccessReview for `get profilecaptures`.
    Token,
}

async fn serve_metrics(addr: SocketAddr, metrics: Metrics, readiness: Readiness) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ConfigError::Listen { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                let state = readiness.state();
                let status = if state.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, state.describe())
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()).into_response()
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

/// Selects rustls' ring provider for TLS to the API server (idempotent).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the operator until `shutdown` completes (Ok) or leadership is lost (Err). Once
/// `shutdown` completes the controllers start no new reconcile, and those in flight finish
/// (their status writes with them) before this returns.
pub async fn run(config: OperatorConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    install_crypto();
    let kube_config = kube::Config::infer().await.map_err(ConfigError::Kubeconfig)?;
    // Leader election has a client of its own: renewals never wait behind the controllers'
    // requests in the throttle.
    let lease_client = Client::try_from(kube_config.clone()).map_err(ConfigError::Client)?;
    let client = kube::client::ClientBuilder::try_from(kube_config)
        .map_err(ConfigError::Client)?
        .with_layer(&throttle::ThrottleLayer::new(config.kube_api_qps, config.kube_api_burst))
        .build();
    let metrics = Metrics::default();
    let readiness = Readiness::default();
    serve_metrics(config.metrics_addr, metrics.clone(), readiness.clone()).await?;
    let owners = owners::Owners::resolve(
        &lease_client,
        &config.namespace,
        config.owner_role.as_deref(),
        config.trust_owner.as_ref(),
        config.watch_namespace.as_deref(),
    )
    .await?;
    if let Some(addr) = config.ui_addr {
        let access = ui_backend::AgentAccess {
            namespace: config.namespace.clone(),
            secret: config.signing_secret.clone(),
            owner: owners.runtime.clone(),
            timeout: config.defaults.performance.profiling.agent_timeout.as_std(),
            transport: config.agent_transport.clone(),
            metrics: metrics.clone(),
        };
        let backend =
            ui_backend::UiBackend::new(client.clone(), access, config.watch_namespace.clone(), config.agent_port);
        let options = biometrics_ui::UiOptions { speedscope_dir: Some(config.ui_speedscope_dir.clone()) };
        let access: Option<std::sync::Arc<dyn biometrics_ui::access::Access>> = match config.ui_auth {
            UiAuth::PortForward => None,
            UiAuth::Token => Some(std::sync::Arc::new(ui_access::ClusterAccess::new(client.clone()))),
        };
        ui_backend::serve(addr, backend, options, access).await?;
    }
    let elector = leader::Elector::new(
        lease_client,
        &config.namespace,
        &config.lease_name,
        &config.identity,
        config.lease_timing,
    )
    .owned_by(owners.runtime.clone());
    tracing::info!(identity = %config.identity, lease = %config.lease_name, "waiting for leadership");
    tokio::pin!(shutdown);
    tokio::select! {
        () = elector.acquire(&readiness) => {}
        () = &mut shutdown => return Ok(()),
    }
    tracing::info!(identity = %config.identity, "leading");
    let key =
        SigningKey::load_or_create(client.clone(), &config.namespace, &config.signing_secret, owners.runtime.as_ref())
            .await?
            .with_trust_owner(owners.trust);
    let agent_timeout = config.defaults.performance.profiling.agent_timeout.as_std();
    // Every agent request names this replica and is made only while its lease holds.
    let agents = AgentClient::new(key.clone(), agent_timeout, metrics.clone(), &config.agent_transport)
        .map_err(ConfigError::Transport)?
        .for_leader(&config.identity, elector.fence());
    let poll_interval = Duration::from_secs(1);
    let metrics_interval = config.defaults.performance.metrics.interval.as_std();
    let api = |client: &Client| Scoped { client: client.clone(), namespace: config.watch_namespace.clone() };

    // Graceful shutdown: resolved once `shutdown` does, it stops the controllers taking new
    // work; they end when the reconciles in flight have.
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let stopping = async move {
        let _ = stopping.await;
    }
    .boxed()
    .shared();

    // One watch of Pods feeds both controllers: only the pods labelled as carrying an agent,
    // so the API server sends none of the cluster's other pods.
    let (pod_reader, pod_writer) = reflector::store::<pods::WatchedPod>();
    let pod_watch = match config.agent_pod_selector.as_str() {
        "" => watcher::Config::default(),
        selector => watcher::Config::default().labels(selector),
    };
    let pod_events = watcher(api(&client).of::<pods::WatchedPod>(), pod_watch)
        .default_backoff()
        .modify(pods::WatchedPod::slim)
        .reflect(pod_writer)
        .touched_objects();
    let (to_captures, for_captures) = tokio::sync::mpsc::channel::<Arc<pods::WatchedPod>>(1024);
    let (to_policies, for_policies) = tokio::sync::mpsc::channel::<Arc<pods::WatchedPod>>(1024);
    let fan_out = broadcast(pod_events.take_until(stopping.clone()), vec![to_captures, to_policies], "pod watch");

    // The workloads whose rollouts both controllers follow: one watch each, fanned out as
    // the pods are; ReplicaSets (metadata only) tell a Deployment's revisions' pods apart.
    let (deployment_reader, deployment_writer) = reflector::store::<Deployment>();
    let (statefulset_reader, statefulset_writer) = reflector::store::<StatefulSet>();
    let (replicaset_reader, replicaset_writer) = reflector::store::<ReplicaSet>();
    let deployments = watcher(api(&client).of::<Deployment>(), watcher::Config::default())
        .default_backoff()
        .modify(|d: &mut Deployment| d.metadata.managed_fields = None)
        .reflect(deployment_writer)
        .touched_objects();
    let statefulsets = watcher(api(&client).of::<StatefulSet>(), watcher::Config::default())
        .default_backoff()
        .modify(|s: &mut StatefulSet| s.metadata.managed_fields = None)
        .reflect(statefulset_writer)
        .touched_objects();
    let replicasets = watcher(api(&client).of::<ReplicaSet>(), watcher::Config::default())
        .default_backoff()
        .modify(|r: &mut ReplicaSet| {
            r.metadata.managed_fields = None;
            r.spec = None;
            r.status = None;
        })
        .reflect(replicaset_writer)
        .touched_objects();
    let (deployments_to_captures, deployments_for_captures) = tokio::sync::mpsc::channel(256);
    let (deployments_to_policies, deployments_for_policies) = tokio::sync::mpsc::channel(256);
    let (statefulsets_to_captures, statefulsets_for_captures) = tokio::sync::mpsc::channel(256);
    let (statefulsets_to_policies, statefulsets_for_policies) = tokio::sync::mpsc::channel(256);
    let (replicasets_to_captures, replicasets_for_captures) = tokio::sync::mpsc::channel(256);
    let workload_fan_out = futures::future::join3(
        broadcast(
            deployments.take_until(stopping.clone()),
            vec![deployments_to_captures, deployments_to_policies],
            "deployment watch",
        ),
        broadcast(
            statefulsets.take_until(stopping.clone()),
            vec![statefulsets_to_captures, statefulsets_to_policies],
            "statefulset watch",
        ),
        broadcast(replicasets.take_until(stopping.clone()), vec![replicasets_to_captures], "replicaset watch"),
    );
    let (capture_reader, capture_writer) = reflector::store();
    let capture_ctx = Arc::new(capture::reconcile::Context::new(
        client.clone(),
        pod_reader.clone(),
        capture_reader.clone(),
        capture::reconcile::Workloads {
            deployments: deployment_reader.clone(),
            statefulsets: statefulset_reader.clone(),
            replicasets: replicaset_reader,
        },
        agents.clone(),
        key.clone(),
        metrics.clone(),
        capture::reconcile::Settings {
            default_agent_port: config.agent_port,
            metrics_interval,
            default_max_pods: usize::try_from(config.defaults.performance.profiling.max_pods.min(1000)).ok(),
            poll_interval,
            alerting: config.defaults.performance.alerting.clone(),
            unreachable_grace: config.defaults.performance.profiling.unreachable_grace.as_std(),
        },
        &config.identity,
    ));
    let cache_ctx = Arc::new(cache::reconcile::Context::new(
        client.clone(),
        pod_reader,
        deployment_reader,
        statefulset_reader,
        agents,
        key.clone(),
        metrics,
        cache::reconcile::Settings {
            default_agent_port: config.agent_port,
            stats_interval: metrics_interval,
            enforce_interval: config.defaults.performance.cache.enforce_interval.as_std(),
            poll_interval,
        },
        &config.identity,
    ));
    // Ready to lead once every watch cache the reconciles read has its first list.
    let (policy_reader, policy_writer) = reflector::store();
    let synced = futures::future::join4(
        capture_ctx.caches_ready.clone(),
        cache_ctx.caches_ready.clone(),
        pods::store_ready(&capture_reader),
        pods::store_ready(&policy_reader),
    )
    .map({
        let readiness = readiness.clone();
        move |_| {
            tracing::info!("watch caches synced");
            readiness.synced();
        }
    });
    let trust = trust::keep_published(client.clone(), key.clone(), config.watch_namespace.clone(), stopping.clone());
    let controllers = futures::future::join5(
        futures::future::join(fan_out, workload_fan_out),
        synced,
        trust,
        capture::reconcile::run(
            capture_ctx,
            api(&client).of(),
            (capture_reader, capture_writer),
            receiver_stream(for_captures),
            capture::reconcile::WorkloadEvents {
                deployments: receiver_stream(deployments_for_captures),
                statefulsets: receiver_stream(statefulsets_for_captures),
                replicasets: receiver_stream(replicasets_for_captures),
            },
            stopping.clone(),
        ),
        cache::reconcile::run(
            cache_ctx,
            api(&client).of(),
            (policy_reader, policy_writer),
            receiver_stream(for_policies),
            receiver_stream(deployments_for_policies),
            receiver_stream(statefulsets_for_policies),
            stopping,
        ),
    );
    tokio::pin!(controllers);
    let hold = elector.hold(&readiness);
    tokio::pin!(hold);
    tokio::select! {
        _ = &mut controllers => return Ok(()),
        lost = &mut hold => return Err(lost.into()),
        () = &mut shutdown => {}
    }
    tracing::info!("shutting down: the reconciles in flight finish first");
    let _ = stop.send(());
    // Still the leader while they finish: keep renewing.
    let lost = tokio::select! {
        _ = &mut controllers => None,
        lost = &mut hold => Some(lost),
    };
    match lost {
        Some(lost) => Err(lost.into()),
        None => {
            elector.release().await;
            Ok(())
        }
    }
}

/// An `Api` of any namespaced kind, in the watched namespace or all.
struct Scoped {
    client: Client,
    namespace: Option<String>,
}

impl Scoped {
    fn of<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

/// Sends each object a watch delivers to every controller following it; a watch error is
/// logged (the watcher retries with its backoff).
async fn broadcast<K: Send + Sync + 'static>(
    events: impl futures::Stream<Item = Result<K, watcher::Error>>,
    to: Vec<tokio::sync::mpsc::Sender<Arc<K>>>,
    what: &'static str,
) {
    events
        .for_each(|event| {
            let to = to.clone();
            async move {
                match event {
                    Ok(object) => {
                        let object = Arc::new(object);
                        for sender in &to {
                            let _ = sender.send(object.clone()).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "{what}"),
                }
            }
        })
        .await;
}

fn receiver_stream<T>(receiver: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(receiver, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}
