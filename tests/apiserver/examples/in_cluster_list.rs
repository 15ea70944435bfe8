//! Lists the pods of its own namespace with kube-rs's `Client::try_default()`, as a program
//! in a pod does: the in-cluster configuration (`KUBERNETES_SERVICE_HOST`/`PORT`, the
//! ServiceAccount's token and `ca.crt`), over HTTPS. The kubelet test runs it as a pod and
//! reads its log: `listed N pods in NS`, or `refused CODE: MESSAGE` (exit 3) when RBAC says
//! no.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};

const TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            println!("no in-cluster configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let namespace = client.default_namespace().to_owned();
    match Api::<Pod>::namespaced(client, &namespace).list(&ListParams::default()).await {
        Ok(pods) => {
            let token = std::fs::read_to_string(TOKEN).unwrap_or_default();
            println!("listed {} pods in {namespace} with a token of {} bytes", pods.items.len(), token.len());
            ExitCode::SUCCESS
        }
        Err(kube::Error::Api(e)) => {
            println!("refused {}: {}", e.code, e.message);
            ExitCode::from(3)
        }
        Err(e) => {
            println!("failed: {e}");
            ExitCode::FAILURE
        }
    }
}
