//! `biometrics-agent`: the sidecar process, and `biometrics-agent top FILE` to print a pprof
//! file's top functions.

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use biometrics_agent::{AgentConfig, captures::Limits, profile};
use clap::{Parser, Subcommand};

/// The Biometrics agent: captures its pod's app profiles for the Biometrics operator.
#[derive(Debug, Parser)]
#[command(name = "biometrics-agent", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the top functions of a pprof file, as `go tool pprof -top` counts them.
    Top {
        /// A pprof profile (gzip-compressed or plain protobuf).
        file: PathBuf,
        /// How many functions to print.
        #[arg(short = 'n', default_value_t = 10)]
        n: usize,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address of the agent API.
    #[arg(long, env = "BIOMETRICS_AGENT_LISTEN", default_value = "[::]:9477")]
    listen: SocketAddr,
    /// Root of the shared profiles volume.
    #[arg(long, env = "BIOMETRICS_PROFILES_DIR", default_value = "/profiles")]
    profiles_dir: PathBuf,
    /// Serve the API over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "BIOMETRICS_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long, env = "BIOMETRICS_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File with the operator's Ed25519 public key (PEM), e.g. the biometrics-trust ConfigMap.
    #[arg(long, env = "BIOMETRICS_OPERATOR_PUBLIC_KEY")]
    operator_public_key: Option<PathBuf>,
    /// This pod's name (downward API).
    #[arg(long, env = "POD_NAME", default_value = "")]
    pod_name: String,
    /// This pod's namespace (downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pod_namespace: String,
    /// The app's pprof port, for runtime metrics.
    #[arg(long, env = "BIOMETRICS_TARGET_PORT")]
    target_port: Option<u16>,
    /// The app's loopback address (127.0.0.1 in a pod).
    #[arg(long, env = "BIOMETRICS_TARGET_HOST", default_value = "127.0.0.1")]
    target_host: std::net::IpAddr,
    /// The app's pprof base path, for runtime metrics.
    #[arg(long, env = "BIOMETRICS_TARGET_BASE_PATH", default_value = "/debug/pprof")]
    target_base_path: String,
    /// The app container's memory limit in bytes (downward API), for memory percent.
    #[arg(long, env = "BIOMETRICS_MEMORY_LIMIT")]
    memory_limit_bytes: Option<u64>,
    /// How often to sample the app's runtime metrics.
    #[arg(long, env = "BIOMETRICS_SAMPLE_INTERVAL", default_value = "10s")]
    sample_interval: biometrics_crds::duration::Duration,
    /// How long runtime sampling stays on after the operator last asked for a sample (it
    /// asks while a ProfileCapture selects this pod); without asks the app is never read.
    #[arg(long, env = "BIOMETRICS_SAMPLING_LEASE", default_value = "2m")]
    sampling_lease: biometrics_crds::duration::Duration,
    /// Largest profile response accepted from the app.
    #[arg(long, env = "BIOMETRICS_MAX_PROFILE_BYTES", default_value_t = 256 << 20)]
    max_profile_bytes: u64,
    /// Largest size a profile may decompress to.
    #[arg(long, env = "BIOMETRICS_MAX_DECOMPRESSED_BYTES", default_value_t = 256 << 20)]
    max_decompressed_bytes: u64,
    /// Memory all profile analyses together may hold (tables, call trees), in bytes;
    /// analyses wait for it in turn.
    #[arg(long, env = "BIOMETRICS_ANALYSIS_MEMORY_BUDGET", default_value_t = 64 << 20)]
    analysis_memory_budget: u64,
    /// Profile analyses that may wait for memory at once; more fail with the reason.
    #[arg(long, env = "BIOMETRICS_MAX_QUEUED_ANALYSES", default_value_t = 16)]
    max_queued_analyses: usize,
    /// Captures kept for polling (finished ones at least an hour).
    #[arg(long, env = "BIOMETRICS_MAX_CAPTURES", default_value_t = 1000)]
    max_captures: usize,
    /// Seconds of cpu/trace profiling queued or running at most (more get 429).
    #[arg(long, env = "BIOMETRICS_MAX_QUEUED_CAPTURE_SECONDS", default_value_t = 900)]
    max_queued_capture_seconds: u64,
    /// Concurrent API requests.
    #[arg(long, env = "BIOMETRICS_MAX_CONCURRENT_REQUESTS", default_value_t = 32)]
    max_concurrent_requests: usize,
    /// Largest API request body.
    #[arg(long, env = "BIOMETRICS_MAX_REQUEST_BYTES", default_value_t = 64 << 10)]
    max_request_bytes: usize,
    /// API connections served at once (lowered to fit the open-file limit); more wait in
    /// the listen backlog.
    #[arg(long, env = "BIOMETRICS_MAX_CONNECTIONS", default_value_t = 256)]
    max_connections: usize,
    /// How long a client may take to send a request's headers, or keep a connection idle.
    #[arg(long, env = "BIOMETRICS_HEADER_READ_TIMEOUT", default_value = "5s")]
    header_read_timeout: biometrics_crds::duration::Duration,
    /// How long a request body may take to arrive.
    #[arg(long, env = "BIOMETRICS_BODY_READ_TIMEOUT", default_value = "10s")]
    body_read_timeout: biometrics_crds::duration::Duration,
    /// A separate listener for /healthz and /readyz (probes answer while the API is at its
    /// connection cap); they are served on --listen as well.
    #[arg(long, env = "BIOMETRICS_HEALTH_LISTEN")]
    health_listen: Option<std::net::SocketAddr>,
    /// On SIGTERM, how long the captures in flight may take to finish (new ones are
    /// refused meanwhile) before they are cancelled; keep it below the pod's
    /// terminationGracePeriodSeconds (30 s by default).
    #[arg(long, env = "BIOMETRICS_DRAIN_TIMEOUT", default_value = "25s")]
    drain_timeout: biometrics_crds::duration::Duration,
    /// Connections to all Redis targets together (each target gets up to its poolSize).
    #[arg(long, env = "BIOMETRICS_MAX_REDIS_CONNECTIONS", default_value_t = 64)]
    max_redis_connections: usize,
    /// A Redis connection unused this long is closed.
    #[arg(long, env = "BIOMETRICS_REDIS_IDLE_TIMEOUT", default_value = "5m")]
    redis_idle_timeout: biometrics_crds::duration::Duration,
    /// Ceiling on Redis keys deleted or examined per second, per job.
    #[arg(long, env = "BIOMETRICS_REDIS_MAX_OPS_PER_SECOND", default_value_t = 1_000_000)]
    redis_max_ops_per_second: u64,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BIOMETRICS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

fn top(file: &PathBuf, n: usize) -> ExitCode {
    // A file of one's own, summarised by hand: no memory budget, a generous size bound.
    let options = profile::Options { max_decompressed_bytes: 4 << 30, top_n: n, flame: false, mergeable: false };
    let analysis = std::fs::File::open(file).map_err(|e| e.to_string()).and_then(|f| {
        profile::analyse(f, &options, &mut profile::memory::Allowance::unlimited()).map_err(|e| e.to_string())
    });
    match analysis {
        Ok(a) => {
            print!("{}", profile::render_top(&a.summary));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("biometrics-agent top: {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Top { file, n }) = &cli.command {
        return top(file, *n);
    }
    init_logging();
    let a = cli.serve;
    let config = AgentConfig {
        listen: a.listen,
        profiles_dir: a.profiles_dir,
        tls: a.tls_cert.zip(a.tls_key),
        operator_public_key: a.operator_public_key,
        namespace: a.pod_namespace,
        pod: a.pod_name,
        target_host: a.target_host,
        target_port: a.target_port,
        target_base_path: a.target_base_path,
        memory_limit_bytes: a.memory_limit_bytes,
        sample_interval: a.sample_interval.as_std(),
        sampling_lease: a.sampling_lease.as_std(),
        limits: Limits {
            max_profile_bytes: a.max_profile_bytes,
            max_decompressed_bytes: a.max_decompressed_bytes,
            analysis_memory_budget: a.analysis_memory_budget,
            max_queued_analyses: a.max_queued_analyses,
            max_captures: a.max_captures,
            max_queued_timed_seconds: a.max_queued_capture_seconds,
            ..Limits::default()
        },
        max_concurrent_requests: a.max_concurrent_requests,
        max_request_bytes: a.max_request_bytes,
        connections: biometrics_agent::listen::ConnectionLimits {
            max_connections: a.max_connections,
            header_read_timeout: a.header_read_timeout.as_std(),
        },
        body_read_timeout: a.body_read_timeout.as_std(),
        health_listen: a.health_listen,
        drain_timeout: a.drain_timeout.as_std(),
        cache_limits: biometrics_agent::cache::CacheLimits {
            max_ops_per_second: a.redis_max_ops_per_second,
            pool: biometrics_agent::cache::conn::PoolLimits {
                max_connections: a.max_redis_connections.max(1),
                idle_expiry: a.redis_idle_timeout.as_std(),
            },
            ..Default::default()
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("biometrics-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(biometrics_agent::run(config, shutdown_signal()));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "agent stopped");
            eprintln!("biometrics-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
