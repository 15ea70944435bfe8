//! `biometrics-operator`: the operator process.

use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use biometrics_operator::{OperatorConfig, UiAuth, agent_client::Transport, config::ConfigFile, error::ConfigError};
use clap::Parser;

/// The Biometrics operator.
#[derive(Debug, Parser)]
#[command(name = "biometrics-operator", version)]
struct Args {
    /// Watch only this namespace (default: all).
    #[arg(long, env = "BIOMETRICS_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "BIOMETRICS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// The operator's namespace: its Lease and signing-key Secret live there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "biometrics-system")]
    namespace: String,
    /// The leader-election Lease.
    #[arg(long, env = "BIOMETRICS_LEASE_NAME", default_value = "biometrics-operator")]
    lease_name: String,
    /// This replica's identity (its pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a lease whose record stops changing keeps other replicas away.
    #[arg(long, env = "BIOMETRICS_LEASE_DURATION", default_value = "15s")]
    lease_duration: biometrics_crds::duration::Duration,
    /// How long the leader keeps acting without a successful renewal; below the lease
    /// duration (default: two thirds of it, 10s of 15s).
    #[arg(long, env = "BIOMETRICS_RENEW_DEADLINE")]
    renew_deadline: Option<biometrics_crds::duration::Duration>,
    /// How often replicas try to take the lease and the leader renews it; below the renew
    /// deadline (default: 2/15 of the lease duration, 2s of 15s).
    #[arg(long, env = "BIOMETRICS_RETRY_PERIOD")]
    retry_period: Option<biometrics_crds::duration::Duration>,
    /// The Secret holding the Ed25519 signing key (created if missing).
    #[arg(long, env = "BIOMETRICS_SIGNING_SECRET", default_value = "biometrics-operator-signing-key")]
    signing_secret: String,
    /// The Role in the operator's namespace that owns its Lease and signing-key Secret, so
    /// that deleting the Role (uninstalling the chart) deletes them.
    #[arg(long, env = "BIOMETRICS_OWNER_ROLE")]
    owner_role: Option<String>,
    /// The role that owns the trust ConfigMaps: `ClusterRole/NAME`, or `Role/NAME` in the
    /// watched namespace.
    #[arg(long, env = "BIOMETRICS_TRUST_OWNER")]
    trust_owner: Option<biometrics_operator::owners::OwnerRole>,
    /// The label selector of the pods the operator watches: pods with an agent must match it
    /// (the chart passes its agent.podLabels); empty watches every pod.
    #[arg(long, env = "BIOMETRICS_AGENT_POD_SELECTOR", default_value = biometrics_crds::AGENT_POD_SELECTOR)]
    agent_pod_selector: String,
    /// The agents' port when a pod has no biometrics.io/agent-port annotation.
    #[arg(long, env = "BIOMETRICS_AGENT_PORT", default_value_t = biometrics_crds::DEFAULT_AGENT_PORT)]
    agent_port: u16,
    /// How the operator reaches agents: `http`, or `https` (then only https, verified against
    /// --agent-ca-bundle).
    #[arg(long, env = "BIOMETRICS_AGENT_SCHEME", default_value = "http", value_parser = ["http", "https"])]
    agent_scheme: String,
    /// PEM file of the CAs that sign agent certificates (with --agent-scheme https).
    #[arg(long, env = "BIOMETRICS_AGENT_CA_BUNDLE", required_if_eq("agent_scheme", "https"))]
    agent_ca_bundle: Option<PathBuf>,
    /// The DNS name agent certificates carry (pods are dialled by IP).
    #[arg(long, env = "BIOMETRICS_AGENT_TLS_SERVER_NAME", default_value = "biometrics-agent")]
    agent_tls_server_name: String,
    /// Kubernetes API requests per second (0: no limit).
    #[arg(long, env = "BIOMETRICS_KUBE_API_QPS", default_value_t = 0.0)]
    kube_api_qps: f64,
    /// Requests allowed in a burst above --kube-api-qps.
    #[arg(long, env = "BIOMETRICS_KUBE_API_BURST", default_value_t = 100)]
    kube_api_burst: u32,
    /// Where the capture browser listens, or `off`. Default: the pod's loopback
    /// (127.0.0.1:9478), so `kubectl port-forward` to the operator's pod (RBAC on
    /// pods/portforward) is the way in; with `--ui-auth token`, every address (0.0.0.0:9478).
    #[arg(long, env = "BIOMETRICS_UI_ADDR")]
    ui_addr: Option<String>,
    /// Who may use the browser: `port-forward` (whoever reaches it) or `token` (a bearer token
    /// checked with TokenReview, and a SubjectAccessReview for `get profilecaptures` in each
    /// namespace shown).
    #[arg(long, env = "BIOMETRICS_UI_AUTH", default_value = "port-forward", value_parser = ["port-forward", "token"])]
    ui_auth: String,
    /// speedscope's release files, for the browser's flame graphs.
    #[arg(long, env = "BIOMETRICS_UI_SPEEDSCOPE_DIR", default_value = "/usr/share/biometrics/speedscope")]
    ui_speedscope_dir: PathBuf,
    /// A YAML file of cluster-wide defaults (performance: profiling / metrics / alerting).
    #[arg(long, env = "BIOMETRICS_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("BIOMETRICS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
    let defaults = match &args.config {
        None => ConfigFile::default(),
        Some(path) => match read_config(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("biometrics-operator: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let ui_auth = if args.ui_auth == "token" { UiAuth::Token } else { UiAuth::PortForward };
    let default_ui_addr = if ui_auth == UiAuth::Token { "0.0.0.0:9478" } else { "127.0.0.1:9478" };
    let ui_addr = match args.ui_addr.as_deref().unwrap_or(default_ui_addr) {
        "off" => None,
        addr => match addr.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(e) => {
                eprintln!("biometrics-operator: --ui-addr {addr:?}: {e} (an address:port, or off)");
                return ExitCode::from(2);
            }
        },
    };
    let lease_timing = match biometrics_operator::leader::Timing::new(
        args.lease_duration.as_std(),
        args.renew_deadline.map(|d| d.as_std()),
        args.retry_period.map(|d| d.as_std()),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("biometrics-operator: {e}");
            return ExitCode::from(2);
        }
    };
    let identity = args.identity.unwrap_or_else(|| format!("biometrics-operator-{}", std::process::id()));
    let config = OperatorConfig {
        watch_namespace: args.watch_namespace,
        metrics_addr: args.metrics_addr,
        namespace: args.namespace,
        lease_name: args.lease_name,
        identity,
        lease_timing,
        signing_secret: args.signing_secret,
        owner_role: args.owner_role,
        trust_owner: args.trust_owner,
        agent_port: args.agent_port,
        agent_pod_selector: args.agent_pod_selector,
        defaults,
        agent_transport: match args.agent_ca_bundle {
            Some(ca_bundle) if args.agent_scheme == "https" => {
                Transport::Https { ca_bundle, server_name: args.agent_tls_server_name }
            }
            _ => Transport::Http,
        },
        kube_api_qps: args.kube_api_qps,
        kube_api_burst: args.kube_api_burst,
        ui_addr,
        ui_auth,
        ui_speedscope_dir: args.ui_speedscope_dir,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("biometrics-operator: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(biometrics_operator::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            eprintln!("biometrics-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_config(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
    ConfigFile::parse(&text).map_err(|source| ConfigError::ParseFile { path: path.to_owned(), source })
}

async fn shutdown_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
