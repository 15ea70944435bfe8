//! `test-apiserver`: the test API server as a process, for end-to-end tests and `make demo`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::Parser;

/// A Kubernetes API server in memory, on loopback, for tests and the local demo.
#[derive(Debug, Parser)]
#[command(name = "test-apiserver", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "TEST_APISERVER_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write a kubeconfig for kubectl and kube-rs.
    #[arg(long, env = "TEST_APISERVER_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Manifests to create at start-up (CRDs first), e.g. crds/yaml/*.yaml.
    #[arg(long = "create", value_name = "FILE")]
    create: Vec<PathBuf>,
    /// Run the workload controllers (Deployment, ReplicaSet); `--controllers=false` for
    /// callers that create Pods and write workload status themselves.
    #[arg(long, env = "TEST_APISERVER_CONTROLLERS", default_value_t = true, action = clap::ArgAction::Set)]
    controllers: bool,
    /// Run pods as local processes with this image → command map (YAML); needs root.
    #[arg(long, value_name = "FILE")]
    kubelet_images: Option<PathBuf>,
    /// Where the kubelet keeps pods' volumes, layers and logs (default: a new temporary
    /// directory).
    #[arg(long, value_name = "DIR")]
    kubelet_state: Option<PathBuf>,
    /// The kubelet's Node name.
    #[arg(long, default_value = "local-1")]
    node_name: String,
    /// The first restart delay of a crashing container, in seconds (kube's is 10).
    #[arg(long, default_value_t = 10)]
    restart_backoff_seconds: u64,
    /// `RBAC` authenticates requests by `--token-auth-file` (the written kubeconfig is an
    /// admin) and authorizes them by RBAC; `AlwaysAllow` lets every request through.
    #[arg(long, default_value = "AlwaysAllow", value_parser = ["AlwaysAllow", "RBAC"])]
    authorization_mode: String,
    /// Users by bearer token, one `token,user,uid,"group1,group2"` per line (with
    /// `--authorization-mode RBAC`).
    #[arg(long, value_name = "FILE")]
    token_auth_file: Option<std::path::PathBuf>,
    /// Serve HTTPS with a CA of its own, written into the kubeconfig (on with
    /// `--authorization-mode RBAC`: kubectl sends tokens only over HTTPS).
    #[arg(long)]
    tls: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let tokens = match &args.token_auth_file {
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| biometrics_test_apiserver::rbac::Tokens::parse(&text))
        {
            Ok(tokens) => tokens,
            Err(e) => {
                eprintln!("test-apiserver: --token-auth-file {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => biometrics_test_apiserver::rbac::Tokens::default(),
    };
    let rbac = (args.authorization_mode == "RBAC").then_some(tokens);
    let tls = args.tls || rbac.is_some();
    let mut server = match biometrics_test_apiserver::TestApiServer::start_with(
        args.listen,
        biometrics_test_apiserver::Options { controllers: args.controllers, rbac, tls, ..Default::default() },
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("test-apiserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = server.create_from_files(&args.create) {
        eprintln!("test-apiserver: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(path) = &args.kubeconfig
        && let Err(e) = server.write_kubeconfig(path)
    {
        eprintln!("test-apiserver: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(images) = &args.kubelet_images {
        let started = async {
            let images = biometrics_test_apiserver::kubelet::ImageMap::load(images)?;
            let state_dir = args
                .kubelet_state
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join(format!("test-apiserver-kubelet-{}", std::process::id())));
            let config = biometrics_test_apiserver::kubelet::KubeletConfig {
                node_name: args.node_name.clone(),
                state_dir,
                images,
                restart_backoff: std::time::Duration::from_secs(args.restart_backoff_seconds),
                api: server.addr(),
            };
            server.start_kubelet(config).await
        };
        if let Err(e) = started.await {
            eprintln!("test-apiserver: kubelet: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The line a parent process waits for: the server is ready.
    println!("LISTEN {}", server.addr());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match terminate.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    server.stop_kubelet().await;
    ExitCode::SUCCESS
}
