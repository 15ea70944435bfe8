//! The Biometrics operator: reconciles ProfileCaptures by instructing the agents in the
//! pods they select, and reports everything in status, Events and metrics. One replica
//! acts at a time (a Lease); the agents trust it through the key it publishes.

pub mod agent_client;
pub mod capture;
pub mod config;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod signing;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, runtime::reflector};

use crate::{
    agent_client::AgentClient,
    capture::reconcile::{Context, Settings},
    config::ConfigFile,
    error::{Error, Result},
    metrics::Metrics,
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
    /// How long a lease lasts without renewal.
    pub lease_duration: Duration,
    /// The Secret holding the signing key.
    pub signing_secret: String,
    /// The agents' port when a pod has no annotation.
    pub agent_port: u16,
    /// Cluster-wide defaults.
    pub defaults: ConfigFile,
}

async fn serve_metrics(addr: SocketAddr, metrics: Metrics) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    let app = Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(|| async { "ok" })).route(
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

/// Runs the operator until `shutdown` completes (Ok) or leadership is lost (Err).
pub async fn run(config: OperatorConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    install_crypto();
    let client = Client::try_default().await?;
    let metrics = Metrics::default();
    serve_metrics(config.metrics_addr, metrics.clone()).await?;
    let elector = leader::Elector::new(
        client.clone(),
        &config.namespace,
        &config.lease_name,
        &config.identity,
        config.lease_duration,
    );
    tracing::info!(identity = %config.identity, lease = %config.lease_name, "waiting for leadership");
    tokio::pin!(shutdown);
    tokio::select! {
        acquired = elector.acquire() => acquired?,
        () = &mut shutdown => return Ok(()),
    }
    tracing::info!(identity = %config.identity, "leading");
    let key = SigningKey::load_or_create(client.clone(), &config.namespace, &config.signing_secret).await?;
    let agent_timeout = config.defaults.performance.profiling.agent_timeout.as_std();
    let agents = AgentClient::new(key.clone(), agent_timeout, metrics.clone());
    let (pod_reader, pod_writer) = reflector::store::<Pod>();
    let settings = Settings {
        default_agent_port: config.agent_port,
        metrics_interval: config.defaults.performance.metrics.interval.as_std(),
        default_max_pods: config.defaults.performance.profiling.max_pods.and_then(|m| usize::try_from(m).ok()),
        poll_interval: Duration::from_secs(1),
    };
    let ctx = Arc::new(Context::new(client.clone(), pod_reader, agents, key, metrics, settings, &config.identity));
    let (captures, pods) = match &config.watch_namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::<Pod>::namespaced(client.clone(), ns)),
        None => (Api::all(client.clone()), Api::<Pod>::all(client.clone())),
    };
    tokio::select! {
        () = capture::run(ctx, captures, pods, pod_writer) => Ok(()),
        lost = elector.hold() => Err(lost),
        () = &mut shutdown => Ok(()),
    }
}
