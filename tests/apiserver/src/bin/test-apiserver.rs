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
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let server = match biometrics_test_apiserver::TestApiServer::start_with(
        args.listen,
        biometrics_test_apiserver::Options { controllers: args.controllers, ..Default::default() },
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
    // The line a parent process waits for: the server is ready.
    println!("LISTEN {}", server.addr());
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
