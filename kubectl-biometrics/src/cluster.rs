//! What the plugin asks of the Kubernetes API with the user's kubeconfig: the default
//! namespace, the `biometrics.io/capture-now` annotation and the capture's status, and a
//! port-forward to the operator's pod, where the capture browser listens.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use biometrics_crds::{CAPTURE_NOW_ANNOTATION, v1alpha1::ProfileCapture};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api, Client, Config,
    api::{ListParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use crate::{
    browser::{TunnelErrors, error_chain},
    error::{Error, Result},
};

/// The namespace a command acts in: `-n`, else the kubeconfig context's, else `default` —
/// as kubectl decides it.
pub fn namespace(flag: Option<&str>, kubeconfig: Option<&str>) -> String {
    flag.or(kubeconfig).filter(|ns| !ns.is_empty()).unwrap_or("default").to_owned()
}

/// The current (or `--context`) context's namespace in the kubeconfig, when there is a
/// readable one; for `--ui`, which needs no cluster, so a missing kubeconfig is no error.
pub fn kubeconfig_namespace(path: Option<&Path>, context: Option<&str>) -> Option<String> {
    let config = match path {
        Some(p) => Kubeconfig::read_from(p).ok()?,
        None => Kubeconfig::read().ok()?,
    };
    let wanted = context.map(str::to_owned).or_else(|| config.current_context.clone())?;
    config.contexts.iter().find(|c| c.name == wanted)?.context.as_ref()?.namespace.clone()
}

/// A client from `--kubeconfig`/`--context`, or from what kubectl would use (`KUBECONFIG`,
/// `~/.kube/config`, in-cluster).
pub async fn client(path: Option<&Path>, context: Option<&str>) -> Result<(Client, String)> {
    let options = KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
    let config = match (path, context) {
        (Some(p), _) => {
            let file = Kubeconfig::read_from(p).map_err(|e| Error::Kubeconfig(error_chain(&e)))?;
            Config::from_custom_kubeconfig(file, &options).await.map_err(|e| Error::Kubeconfig(error_chain(&e)))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await.map_err(|e| Error::Kubeconfig(error_chain(&e)))?,
        (None, None) => Config::infer().await.map_err(|e| Error::Kubeconfig(error_chain(&e)))?,
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(error_chain(&e)))?;
    Ok((client, namespace))
}

fn no_capture(namespace: &str, name: &str) -> impl FnOnce() -> String {
    let message = format!("no ProfileCapture {namespace}/{name}");
    move || message
}

/// The capture as the API server has it now.
pub async fn get_capture(client: &Client, namespace: &str, name: &str) -> Result<ProfileCapture> {
    Api::<ProfileCapture>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| Error::kube(format!("get ProfileCapture {namespace}/{name}"), e, no_capture(namespace, name)))
}

/// Gives `biometrics.io/capture-now` the value `value` (a merge patch of that one
/// annotation: nothing else of the object is sent, so no conflict with the operator).
pub async fn request_capture(client: &Client, namespace: &str, name: &str, value: &str) -> Result<ProfileCapture> {
    let patch = json!({"metadata": {"annotations": {CAPTURE_NOW_ANNOTATION: value}}});
    Api::<ProfileCapture>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube(format!("annotate ProfileCapture {namespace}/{name}"), e, no_capture(namespace, name)))
}

/// Reads the capture every `interval` until `done` says what to return, or `timeout` passes.
pub async fn poll<T>(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&ProfileCapture) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let pc = get_capture(client, namespace, name).await?;
        if let Some(found) = done(&pc) {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                what: what.to_owned(),
                timeout: format!("{}s", timeout.as_secs()),
            });
        }
        // Once a second, as `kubectl wait` would notice it: a run takes seconds at least.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The operator pod to forward to: running, ready and not being deleted; by name, so
/// repeated commands use the same one.
pub fn operator_pod(pods: &[Pod]) -> Option<String> {
    let mut ready: Vec<&str> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let status = p.status.as_ref();
            status.and_then(|s| s.phase.as_deref()) == Some("Running")
                && status
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    ready.sort_unstable();
    ready.first().map(|n| (*n).to_owned())
}

/// A Deployment's `matchLabels` as a label selector (`matchExpressions` are not needed for
/// the chart's Deployment, and left out).
pub fn selector(deployment: &Deployment) -> Option<String> {
    let labels = deployment.spec.as_ref()?.selector.match_labels.as_ref()?;
    (!labels.is_empty()).then(|| labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
}

/// Why a port-forward could not start, as the user should read it: an API server without
/// the subresource (404/405, or an answer that is not an upgrade) is not a failure of ours.
fn forward_error(pod: &str, e: kube::Error) -> Error {
    match &e {
        kube::Error::Api(status) if matches!(status.code, 404 | 405) => Error::PortForwardUnsupported,
        kube::Error::Api(status) if status.code == 403 => Error::Forbidden(status.message.clone()),
        kube::Error::UpgradeConnection(kube::client::UpgradeConnectionError::ProtocolSwitch(code))
            if matches!(code.as_u16(), 200 | 404 | 405) =>
        {
            Error::PortForwardUnsupported
        }
        _ => Error::PortForward { pod: pod.to_owned(), reason: error_chain(&e) },
    }
}

/// A local listener whose every connection is forwarded to `port` of the operator's pod.
pub struct Tunnel {
    /// Where to connect.
    pub local: SocketAddr,
    /// The pod forwarded to.
    pub pod: String,
    /// Why the last forwarded connection failed, if one did.
    pub errors: TunnelErrors,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the operator runs, for the port-forward.
#[derive(Debug, Clone)]
pub struct Operator<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its Deployment.
    pub deployment: &'a str,
    /// The browser's port in its pod.
    pub port: u16,
}

/// Finds a ready pod of the operator's Deployment and forwards `127.0.0.1:local_port` (0:
/// any free port) to the browser's port in it. The first forward is opened before this
/// returns, so an API server that cannot forward is reported here, as one line.
pub async fn open_tunnel(client: &Client, operator: &Operator<'_>, local_port: u16) -> Result<Tunnel> {
    let (namespace, name) = (operator.namespace, operator.deployment);
    let no_operator = || Error::NoOperator { namespace: namespace.to_owned(), name: name.to_owned() };
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace).get(name).await.map_err(|e| {
        match Error::kube(format!("get Deployment {namespace}/{name}"), e, String::new) {
            Error::NotFound(_) => no_operator(),
            other => other,
        }
    })?;
    let no_pod = || Error::NoOperatorPod { namespace: namespace.to_owned(), name: name.to_owned() };
    let labels = selector(&deployment).ok_or_else(no_pod)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&labels))
        .await
        .map_err(|e| Error::kube(format!("list pods {labels} in {namespace}"), e, String::new))?;
    let pod = operator_pod(&listed.items).ok_or_else(no_pod)?;
    let port = operator.port;
    let first = pods.portforward(&pod, &[port]).await.map_err(|e| forward_error(&pod, e))?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, local_port))
        .await
        .map_err(|source| Error::Io { path: format!("127.0.0.1:{local_port}").into(), source })?;
    let local = listener.local_addr().map_err(|source| Error::Io { path: "127.0.0.1".into(), source })?;
    let errors = TunnelErrors::default();
    let task = tokio::spawn(forward_connections(listener, pods, pod.clone(), port, first, errors.clone()));
    Ok(Tunnel { local, pod, errors, task })
}

async fn forward_connections(
    listener: tokio::net::TcpListener,
    pods: Api<Pod>,
    pod: String,
    port: u16,
    first: kube::api::Portforwarder,
    errors: TunnelErrors,
) {
    let mut ready = Some(first);
    loop {
        let Ok((mut connection, _)) = listener.accept().await else {
            // Out of file descriptors, say: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Each connection gets its own forward (kube's port-forward carries one stream per
        // port); the first reuses the one opened to check that forwarding works.
        let forward = match ready.take() {
            Some(f) => Ok(f),
            None => pods.portforward(&pod, &[port]).await,
        };
        let errors = errors.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            let record = |why: String| {
                if let Ok(mut e) = errors.lock() {
                    *e = Some((pod.clone(), why));
                }
            };
            let mut forward = match forward {
                Ok(f) => f,
                Err(e) => return record(forward_error(&pod, e).to_string()),
            };
            let Some(mut upstream) = forward.take_stream(port) else {
                return record(format!("no stream for port {port}"));
            };
            let error = forward.take_error(port);
            let copied = tokio::io::copy_bidirectional(&mut connection, &mut upstream).await;
            // The pod's side says why it ended (nothing listens on the port, …), when it does,
            // even where the copy itself ended cleanly.
            let said = match error {
                Some(said) => tokio::time::timeout(Duration::from_secs(1), said).await.ok().flatten(),
                None => None,
            };
            match (said, copied) {
                (Some(said), _) => record(said),
                (None, Err(e)) => record(e.to_string()),
                (None, Ok(_)) => {}
            }
            drop(upstream);
            let _ = forward.join().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_as_kubectl_decides_it() {
        assert_eq!(namespace(Some("shop"), Some("ctx")), "shop");
        assert_eq!(namespace(None, Some("ctx")), "ctx");
        assert_eq!(namespace(None, None), "default");
        assert_eq!(namespace(None, Some("")), "default");
    }

    fn pod(name: &str, phase: &str, ready: &str, deleting: bool) -> Pod {
        let mut value = json!({
            "metadata": {"name": name},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}
        });
        if deleting {
            value["metadata"]["deletionTimestamp"] = json!("2026-11-29T10:00:00Z");
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_running_ready_pod_by_name() {
        let pods = [
            pod("biometrics-c", "Running", "True", false),
            pod("biometrics-a", "Running", "False", false),
            pod("biometrics-b", "Pending", "True", false),
            pod("biometrics-0", "Running", "True", true),
            pod("biometrics-d", "Running", "True", false),
        ];
        assert_eq!(operator_pod(&pods).as_deref(), Some("biometrics-c"));
        assert_eq!(operator_pod(&pods[1..4]), None);
    }

    #[test]
    fn the_deployments_selector() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "biometrics"},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "biometrics", "app.kubernetes.io/component": "operator"}},
                     "template": {}}
        }))
        .unwrap();
        assert_eq!(
            selector(&d).as_deref(),
            Some("app.kubernetes.io/component=operator,app.kubernetes.io/name=biometrics")
        );
    }

    #[test]
    fn unsupported_port_forward_is_its_own_line() {
        let status = |code| {
            kube::Error::Api(
                kube::core::Status::failure("the server could not find", "NotFound").with_code(code).boxed(),
            )
        };
        assert_eq!(
            forward_error("p", status(404)).to_string(),
            "the API server does not support port-forward; pass --ui URL"
        );
        assert!(matches!(forward_error("p", status(405)), Error::PortForwardUnsupported));
        assert!(matches!(forward_error("p", status(403)), Error::Forbidden(_)));
        assert!(matches!(forward_error("p", status(500)), Error::PortForward { .. }));
    }
}
