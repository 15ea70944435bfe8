//! The Biometrics agent: a sidecar beside an app that serves the operator an authenticated
//! HTTP API to capture the app's pprof profiles (fetched from the pod's loopback, written
//! atomically to the shared volume, summarised and drawn as flame graphs) and reports the
//! app's runtime metrics. It never talks to the Kubernetes API.

pub use biometrics_agent_api::{self as api, auth};
pub mod app_metrics;
pub mod budget;
pub mod cache;
pub mod captures;
pub mod fetch;
pub mod files;
pub mod listen;
pub mod metrics;
pub mod names;
pub mod requests;
pub mod runtime;
pub mod sampling;
pub mod selfprof;
pub mod server;
pub mod tls;
pub mod volume;

/// The pprof reader, under the name the agent's modules use for it.
pub use biometrics_pprof as profile;

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use crate::{
    api::RuntimeSample,
    captures::{Engine, EngineConfig, Limits},
    fetch::Fetcher,
    metrics::Metrics,
    server::{AppState, KeyLoader},
};

/// Everything the agent is configured with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Root of the shared profiles volume.
    pub profiles_dir: PathBuf,
    /// The operator's Ed25519 public key (PEM).
    pub operator_public_key: Option<PathBuf>,
    /// This pod's namespace.
    pub namespace: String,
    /// This pod's name.
    pub pod: String,
    /// The app's loopback address.
    pub target_host: IpAddr,
    /// The app's pprof port, for runtime sampling.
    pub target_port: Option<u16>,
    /// The app's pprof base path, for runtime sampling.
    pub target_base_path: String,
    /// The app container's memory limit.
    pub memory_limit_bytes: Option<u64>,
    /// How often the app's runtime metrics are sampled while asked for.
    pub sample_interval: Duration,
    /// How long sampling stays on after the operator last asked for a sample.
    pub sampling_lease: Duration,
    /// Capture limits.
    pub limits: Limits,
    /// Concurrent `/v1/` requests.
    pub max_concurrent_requests: usize,
    /// Largest request body.
    pub max_request_bytes: usize,
    /// Limits of Redis work.
    pub cache_limits: cache::CacheLimits,
    /// Serve the API over TLS with this certificate chain and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Bounds of the API listener's connections.
    pub connections: listen::ConnectionLimits,
    /// How long a request body may take to arrive; no request slot is held meanwhile.
    pub body_read_timeout: Duration,
    /// A listener of its own for `/healthz` and `/readyz`, so probes answer while the API's
    /// connection cap is reached.
    pub health_listen: Option<SocketAddr>,
    /// How long a shutdown waits for the captures in flight to finish before it cancels
    /// them: below the pod's termination grace period, so they end before the kubelet's
    /// SIGKILL.
    pub drain_timeout: Duration,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// The smallest analysis memory budget accepted: the decoder, its buffers and the call
/// tree of one analysis.
pub const MIN_ANALYSIS_MEMORY_BUDGET: u64 = 4 << 20;

/// Checks the configuration.
pub fn validate(config: &AgentConfig) -> Result<(), AgentError> {
    if !config.target_host.is_loopback() {
        return Err(AgentError::Config(format!(
            "--target-host {} is not a loopback address: the agent only reaches its own pod",
            config.target_host
        )));
    }
    names::dns_label("--pod-namespace", &config.namespace).map_err(|e| AgentError::Config(e.to_string()))?;
    names::dns_subdomain("--pod-name", &config.pod).map_err(|e| AgentError::Config(e.to_string()))?;
    names::base_path(&config.target_base_path).map_err(|e| AgentError::Config(e.to_string()))?;
    if config.limits.analysis_memory_budget < MIN_ANALYSIS_MEMORY_BUDGET {
        return Err(AgentError::Config(format!(
            "--analysis-memory-budget must be at least {MIN_ANALYSIS_MEMORY_BUDGET} bytes (4 MiB): less fits no profile"
        )));
    }
    if config.sample_interval < Duration::from_secs(1) {
        return Err(AgentError::Config("--sample-interval must be at least 1s".into()));
    }
    Ok(())
}

/// Runs the agent until `shutdown` completes; then it drains: new captures and jobs are
/// refused (503, `ShuttingDown`), the captures in flight finish while their status is
/// still served, those still running after `drain_timeout` are cancelled (marked failed,
/// partial files removed), and the server stops.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), AgentError> {
    validate(&config)?;
    // TLS to Redis uses rustls with ring; installing twice (tests in one process) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let volume = Arc::new(volume::Volume::open(&config.profiles_dir).map_err(|e| {
        AgentError::Config(format!("cannot open --profiles-dir {}: {e}", config.profiles_dir.display()))
    })?);
    let hashes = files::Hashes::default();
    let metrics = Metrics::default();
    let engine = Engine::new(
        EngineConfig {
            volume: volume.clone(),
            hashes: hashes.clone(),
            pod: config.pod.clone(),
            namespace: config.namespace.clone(),
            target_host: config.target_host,
            limits: config.limits.clone(),
            top_n: 10,
        },
        metrics.clone(),
    );
    let runtime = sampling::Sampling::new(config.sampling_lease);
    let requests_signals = requests::RequestSignals::new(
        config.sampling_lease,
        requests::ScrapeLimits::default(),
        metrics.app_metrics_reads.clone(),
    );
    let state = AppState {
        engine: engine.clone(),
        metrics,
        keys: Arc::new(KeyLoader::new(
            config.operator_public_key.clone(),
            config.namespace.clone(),
            config.pod.clone(),
        )),
        runtime: runtime.clone(),
        requests_signals: requests_signals.clone(),
        self_profile: Arc::default(),
        requests: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests.max(1))),
        max_request_bytes: config.max_request_bytes,
        body_read_timeout: config.body_read_timeout,
        cache: cache::CacheService::new(config.cache_limits.clone(), config.pod.clone()),
        files: files::Files::new(volume, config.namespace.clone(), hashes),
    };
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::server_config(cert, key).map_err(AgentError::Config)?),
        None => None,
    };
    let listener = listen::bind(config.listen).map_err(|source| AgentError::Bind { addr: config.listen, source })?;
    let sampler = tokio::spawn(sample_forever(config.clone(), runtime, requests_signals));
    let pool = state.cache.pool.clone();
    let sweeper = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(pool.sweep_interval());
        loop {
            ticker.tick().await;
            pool.expire_idle();
        }
    });
    tracing::info!(
        listen = %config.listen,
        tls = tls.is_some(),
        pod = %format!("{}/{}", config.namespace, config.pod),
        "agent serving"
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (drain, config_drain) = (engine.clone(), config.drain_timeout);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!(drain_timeout = ?config_drain, "shutting down: no new work; finishing the captures in flight");
        drain.drain(config_drain).await;
        let _ = stop_tx.send(());
    });
    let app = server::router(state);
    let stopped = async move {
        let _ = stop_rx.await;
    };
    let (health_stop, health_stopped) = tokio::sync::oneshot::channel::<()>();
    let health = match config.health_listen {
        Some(addr) => {
            let listener = listen::bind(addr).map_err(|source| AgentError::Bind { addr, source })?;
            let limits = listen::ConnectionLimits { max_connections: HEALTH_CONNECTIONS, ..config.connections };
            let stopped = async move {
                let _ = health_stopped.await;
            };
            Some(tokio::spawn(listen::serve(listener, server::health_router::<()>(), limits, stopped)))
        }
        None => None,
    };
    let connections = listen::ConnectionLimits {
        max_connections: listen::fit_to_file_limit(config.connections.max_connections),
        ..config.connections
    };
    if connections.max_connections < config.connections.max_connections {
        tracing::warn!(
            wanted = config.connections.max_connections,
            serving = connections.max_connections,
            "--max-connections lowered to fit the open-file limit"
        );
    }
    match tls {
        Some(config) => {
            let listener = tls::TlsListener::new(listener, config).map_err(AgentError::Serve)?;
            listen::serve(listener, app, connections, stopped).await;
        }
        None => listen::serve(listener, app, connections, stopped).await,
    }
    let _ = health_stop.send(());
    if let Some(task) = health {
        let _ = task.await;
    }
    sampler.abort();
    sweeper.abort();
    Ok(())
}

/// Connections the health listener serves at once: probes, nothing else.
const HEALTH_CONNECTIONS: usize = 8;

/// Samples the app's runtime metrics every interval.
/// Samples the app's runtime metrics every interval while the operator asks for them.
async fn sample_forever(config: AgentConfig, sampling: sampling::Sampling, signals: requests::RequestSignals) {
    let fetcher = Fetcher::default();
    let previous: Arc<tokio::sync::Mutex<Option<runtime::Previous>>> = Arc::default();
    let config = Arc::new(config);
    sampling
        .run(config.sample_interval, || {
            let (fetcher, config, previous, signals) =
                (fetcher.clone(), config.clone(), previous.clone(), signals.clone());
            async move {
                // The request signals are read on the same beat, whether or not the
                // runtime endpoints answer.
                signals.read_all(&fetcher, config.target_host).await;
                match config.target_port {
                    None => RuntimeSample {
                        error: Some("runtime metrics are off: the agent has no --target-port".into()),
                        ..Default::default()
                    },
                    Some(port) => take_sample(&fetcher, &config, port, &mut *previous.lock().await).await,
                }
            }
        })
        .await;
}

async fn take_sample(
    fetcher: &Fetcher,
    config: &AgentConfig,
    port: u16,
    previous: &mut Option<runtime::Previous>,
) -> RuntimeSample {
    let base = format!("http://{}{}", SocketAddr::new(config.target_host, port), config.target_base_path);
    let timeout = Duration::from_secs(10);
    let sampled_at = jiff::Timestamp::now().round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default();
    let failed = |error: String| RuntimeSample {
        sampled_at: Some(sampled_at.clone()),
        error: Some(error),
        memory_limit_bytes: config.memory_limit_bytes,
        ..Default::default()
    };
    let heap = match fetcher.text(&format!("{base}/heap?debug=1"), 64 << 20, timeout).await {
        Ok(t) => t,
        Err(e) => return failed(e.to_string()),
    };
    let goroutine = match fetcher.text(&format!("{base}/goroutine?debug=1"), 64 << 20, timeout).await {
        Ok(t) => t,
        Err(e) => return failed(e.to_string()),
    };
    let parsed = runtime::parse_memstats(&heap).and_then(|m| runtime::parse_goroutines(&goroutine).map(|g| (m, g)));
    match parsed {
        Ok((mem, goroutines)) => {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let sample = runtime::sample(mem, goroutines, at, *previous, config.memory_limit_bytes, sampled_at);
            *previous = Some(runtime::Previous { num_gc: mem.num_gc, at });
            sample
        }
        Err(e) => failed(e.to_string()),
    }
}
