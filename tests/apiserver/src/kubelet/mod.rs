//! A kubelet that runs pods as local processes: it registers a Node, schedules every pod
//! without one onto it, and runs each pod's containers for real — each pod in its own
//! network namespace on a private bridge, each container in its own mount namespace over
//! the host's root with the pod's volumes at their mount paths — from an image → command
//! map. Deleting a pod stops it with SIGTERM, its grace period and SIGKILL before the
//! object goes, as on a node.
//!
//! It needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN (namespaces, mounts, links); without
//! them it refuses to start with a one-line reason.

mod container;
mod env;
mod hosts;
mod images;
mod network;
mod pod;
mod probe;
mod security;
mod volumes;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::sync::watch;

pub use self::images::{ImageMap, ImageMapError};
use self::{network::Network, pod::Stop};
use crate::{
    registry::TypeKey,
    store::{Patch, Store, Subresource, WriteOptions},
};

/// Why the kubelet could not start or run a pod.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The machine does not allow what the kubelet needs.
    #[error("the kubelet needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN to make namespaces: {0}")]
    Privileges(String),
    /// The pod network could not be set up.
    #[error("pod network: {0}")]
    Network(String),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A process could not be started.
    #[error("cannot start {0}")]
    Start(String),
    /// The image map could not be read.
    #[error(transparent)]
    Images(#[from] ImageMapError),
}

impl KubeletError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}

/// How the kubelet runs.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The Node's name.
    pub node_name: String,
    /// Where pods' volumes, container layers and logs live.
    pub state_dir: PathBuf,
    /// What each image runs.
    pub images: ImageMap,
    /// The first restart delay of a crashing container (kube's is 10 s), doubling to 5 min.
    pub restart_backoff: Duration,
    /// The API server, relayed to pods on the bridge's address.
    pub api: SocketAddr,
}

/// What pods need to reach the API server as their ServiceAccount: the signer of their
/// tokens. Without it (a server without HTTPS) pods get no ServiceAccount volume.
#[derive(Debug, Clone)]
pub struct ClusterAccess {
    /// Signs the tokens projected into pods.
    pub issuer: Arc<crate::serviceaccounts::Issuer>,
}

/// What every pod worker shares.
pub struct Context {
    store: Store,
    network: Network,
    images: ImageMap,
    state_dir: PathBuf,
    restart_backoff: Duration,
    gateway: Ipv4Addr,
    api_port: u16,
    /// Process groups of running containers, so that dropping the kubelet kills them all.
    groups: Mutex<std::collections::HashSet<u32>>,
    /// What Services resolve to in pods' hosts files.
    services: Mutex<Arc<Vec<hosts::ServiceAddresses>>>,
    /// How pods get their ServiceAccount tokens, when they do.
    access: Option<ClusterAccess>,
}

struct Worker {
    stop: watch::Sender<Stop>,
    handle: tokio::task::JoinHandle<()>,
}

/// A running kubelet; dropping it stops its pods and removes its network.
pub struct Kubelet {
    context: Arc<Context>,
    workers: Arc<Mutex<HashMap<String, Worker>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    state_dir: PathBuf,
}

fn key(group: &str, plural: &str) -> TypeKey {
    TypeKey { group: group.into(), plural: plural.into() }
}

fn check_privileges() -> Result<(), KubeletError> {
    let status = std::process::Command::new("unshare")
        .args(["--mount", "--net", "true"])
        .output()
        .map_err(|e| KubeletError::Privileges(format!("unshare: {e}")))?;
    if status.status.success() {
        Ok(())
    } else {
        Err(KubeletError::Privileges(String::from_utf8_lossy(&status.stderr).trim().to_owned()))
    }
}

/// What the API server needs of a running kubelet: where pods' logs are, and how to reach a
/// pod's own loopback (port-forward connects there, as a kubelet's runtime does).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Where pods' volumes, layers and logs live.
    pub state_dir: PathBuf,
    bridge: String,
}

impl NodeInfo {
    /// The network namespace of the pod with `uid`, bound under `/var/run/netns`.
    pub fn pod_netns(&self, uid: &str) -> PathBuf {
        Path::new("/var/run/netns").join(network::netns_name(&self.bridge, &uid[..uid.len().min(8)]))
    }
}

/// The command that runs `argv` in container `name` of `pod` as `kubectl exec` runs it: in
/// the container's mount and network namespaces, in its root, as its user, with its
/// process's environment and its working directory; or why it cannot run.
pub fn exec_command(
    state_dir: &Path,
    pod: &Value,
    name: &str,
    argv: &[String],
) -> Result<tokio::process::Command, String> {
    let not_found = || format!("unable to upgrade connection: container not found (\"{name}\")");
    let status = container_status(pod, name).ok_or_else(not_found)?;
    if status.pointer("/state/running").is_none() {
        return Err(not_found());
    }
    let pid: u32 = status
        .get("containerID")
        .and_then(Value::as_str)
        .and_then(|id| id.strip_prefix("process://"))
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(not_found)?;
    let spec = named(pod, ["/spec/initContainers", "/spec/containers"], name).ok_or_else(not_found)?;
    let identity = security::identity(pod, spec).map_err(|refusal| refusal.message)?;
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let root = container::container_dir(&state_dir.join("pods").join(uid), name).join("root");
    // The process is the container's once it has entered its root (until then it is still
    // setting the container up, and a reused pid is someone else's).
    if std::fs::read_link(format!("/proc/{pid}/root")).ok().as_deref() != Some(root.as_path()) {
        return Err(not_found());
    }
    // The container's environment is its process's, byte for byte.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).map_err(|_| not_found())?;
    let env = environ
        .split(|b| *b == 0)
        .filter(|v| v.contains(&b'='))
        .map(|v| <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(v).to_owned());
    let working_dir = spec.get("workingDir").and_then(Value::as_str).filter(|d| !d.is_empty()).unwrap_or("/");
    let mut command = tokio::process::Command::new("nsenter");
    command
        .args(["--target", &pid.to_string(), "--mount", "--net", "--", "chroot"])
        .arg(root)
        .args(container::setpriv(&identity))
        .args(["/usr/bin/env", "-i", "--"])
        .args(env)
        .args(["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", working_dir])
        .args(argv)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        // In the container's process group: it goes when the container is stopped.
        .process_group(i32::try_from(pid).unwrap_or(0));
    Ok(command)
}

/// The status of the pod's init or app container `name`.
pub fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    named(pod, ["/status/initContainerStatuses", "/status/containerStatuses"], name)
}

/// The entry called `name` in the pod's lists at `lists` (its init and app containers'
/// specs, or their statuses).
fn named<'a>(pod: &'a Value, lists: [&str; 2], name: &str) -> Option<&'a Value> {
    lists
        .into_iter()
        .filter_map(|list| pod.pointer(list).and_then(Value::as_array))
        .flatten()
        .find(|entry| entry.get("name").and_then(Value::as_str) == Some(name))
}

/// The log of a pod's container, for `kubectl logs`: the current run, or the one before.
pub fn log_file(state_dir: &Path, pod: &Value, container: &str, previous: bool) -> Option<PathBuf> {
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str)?;
    let restarts = container_status(pod, container)?
        .get("restartCount")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let run = if previous { restarts.checked_sub(1)? } else { restarts };
    Some(pod::log_path(&state_dir.join("pods").join(uid), container, run))
}

impl Kubelet {
    /// Registers the Node and starts running pods; with `access`, each pod gets its
    /// ServiceAccount's token, the CA and its namespace under
    /// `/var/run/secrets/kubernetes.io/serviceaccount` and may use projected tokens.
    pub async fn start(
        store: Store,
        config: KubeletConfig,
        access: Option<ClusterAccess>,
    ) -> Result<Self, KubeletError> {
        check_privileges()?;
        std::fs::create_dir_all(&config.state_dir).map_err(|e| KubeletError::io(&config.state_dir, e))?;
        let id = u32::from(config.api.port()) ^ std::process::id().rotate_left(16);
        let network = Network::create(id).await?;
        let gateway = network.gateway();
        // Pods reach the API server on the bridge's address.
        let relay_listener = match tokio::net::TcpListener::bind((gateway, 6443)).await {
            Ok(l) => l,
            Err(e) => {
                network.remove_now();
                return Err(KubeletError::Network(format!("relay to the API server on {gateway}:6443: {e}")));
            }
        };
        let api_port = 6443;
        let context = Arc::new(Context {
            store: store.clone(),
            network,
            images: config.images,
            state_dir: config.state_dir.clone(),
            restart_backoff: config.restart_backoff,
            gateway,
            api_port,
            groups: Mutex::default(),
            services: Mutex::default(),
            access,
        });
        store.set_graceful_pod_deletion(true);
        register_node(&store, &config.node_name, gateway);
        let api = config.api;
        let relay = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = relay_listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(api).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        let workers: Arc<Mutex<HashMap<String, Worker>>> = Arc::default();
        let sync = tokio::spawn(run(context.clone(), workers.clone(), config.node_name.clone()));
        Ok(Self { context, workers, tasks: vec![relay, sync], state_dir: config.state_dir })
    }

    /// Where pods' files are.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The node's address on the pod network, where pods reach the API server.
    pub fn gateway(&self) -> Ipv4Addr {
        self.context.gateway
    }

    /// What the API server needs of this kubelet.
    pub fn node_info(&self) -> NodeInfo {
        NodeInfo { state_dir: self.state_dir.clone(), bridge: self.context.network.bridge.clone() }
    }

    /// Kills every pod now and removes the network.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let workers: Vec<Worker> = self.workers.lock().expect("lock").drain().map(|(_, w)| w).collect();
        for w in &workers {
            let _ = w.stop.send(Stop::Now);
        }
        for w in workers {
            let _ = w.handle.await;
        }
        self.context.network.remove_now();
    }
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("state_dir", &self.state_dir)
            .field("bridge", &self.context.network.bridge)
            .finish()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for (_, w) in self.workers.lock().expect("lock").drain() {
            let _ = w.stop.send(Stop::Now);
            w.handle.abort();
        }
        for group in self.context.groups.lock().expect("lock").drain() {
            container::signal(group, rustix::process::Signal::KILL);
        }
        self.context.network.remove_now();
    }
}

fn register_node(store: &Store, node: &str, address: Ipv4Addr) {
    let opts = WriteOptions { field_manager: "kubelet".into(), ..Default::default() };
    let nodes = key("", "nodes");
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let object = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node, "labels": {
            "kubernetes.io/hostname": node, "kubernetes.io/os": "linux", "kubernetes.io/arch": std::env::consts::ARCH,
        }},
    });
    let _ = store.create(&nodes, "", object, &opts);
    let now = jiff::Timestamp::now().to_string();
    let capacity = json!({"cpu": cpus.to_string(), "memory": "8Gi", "pods": "250"});
    let status = json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": address.to_string()}, {"type": "Hostname", "address": node}],
        "nodeInfo": {"kubeletVersion": crate::discovery::git_version(), "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
                     "containerRuntimeVersion": "process://local", "osImage": "local processes", "kernelVersion": "", "kubeProxyVersion": "",
                     "machineID": "", "systemUUID": "", "bootID": ""},
    }});
    let _ = store.patch(&nodes, "", node, Patch::Merge(status), Subresource::Status, &opts);
}

fn meta<'a>(object: &'a Value, field: &str) -> &'a str {
    object.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or_default()
}

/// Schedules, starts and stops pods on every change.
async fn run(context: Arc<Context>, workers: Arc<Mutex<HashMap<String, Worker>>>, node: String) {
    let mut changes = context.store.subscribe();
    let pods = key("", "pods");
    let opts = WriteOptions { field_manager: "kubelet".into(), ..Default::default() };
    loop {
        let Ok((items, _)) = context.store.list_shared(&pods, None) else { return };
        if let Ok((services, _)) = context.store.list_shared(&key("", "services"), None) {
            *context.services.lock().expect("lock") = Arc::new(hosts::service_addresses(&services, &items));
        }
        let mut present = std::collections::HashSet::new();
        for p in &items {
            let uid = meta(p, "uid").to_owned();
            present.insert(uid.clone());
            let terminating = p.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
            let assigned = p.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
            if assigned.is_empty() && !terminating {
                // The scheduler's binding: one node, so every pod fits it.
                let bind = Patch::Merge(json!({"spec": {"nodeName": node}}));
                let _ =
                    context.store.patch(&pods, meta(p, "namespace"), meta(p, "name"), bind, Subresource::Main, &opts);
                continue;
            }
            if assigned != node {
                continue;
            }
            let mut workers = workers.lock().expect("lock");
            match workers.get(&uid) {
                Some(w) if terminating => {
                    let grace = p.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(30);
                    let _ = w.stop.send(Stop::Graceful(Duration::from_secs(grace)));
                }
                Some(_) => {}
                None if terminating => {
                    let _ = context.store.delete(&pods, meta(p, "namespace"), meta(p, "name"), false, Some(&uid));
                }
                None => {
                    let phase = p.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
                    if phase == "Succeeded" || phase == "Failed" {
                        continue;
                    }
                    let (stop, receiver) = watch::channel(Stop::No);
                    let handle = tokio::spawn(pod::run(context.clone(), Value::clone(p), receiver));
                    workers.insert(uid, Worker { stop, handle });
                }
            }
        }
        {
            let mut workers = workers.lock().expect("lock");
            for (uid, w) in workers.iter() {
                if !present.contains(uid) {
                    let _ = w.stop.send(Stop::Now);
                }
            }
            workers.retain(|uid, w| present.contains(uid) || !w.handle.is_finished());
            workers.retain(|_, w| !w.handle.is_finished());
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
