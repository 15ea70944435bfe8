//! The pods a controller acts on, as plain data: selected, Running and Ready, carrying the
//! agent, with an address to reach it at.

use std::collections::BTreeMap;

use biometrics_crds::{AGENT_CONTAINER, AGENT_PORT_ANNOTATION, selector::PodSelector};
use std::borrow::Cow;

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{Pod, PodIP},
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use kube::{ResourceExt, runtime::reflector};
use serde::{Deserialize, Serialize};

use crate::agent_client::AgentAddr;

/// What the controller needs to know about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `status.podIP`.
    pub ip: Option<String>,
    /// Phase Running and condition Ready, not terminating.
    pub ready: bool,
    /// The agent's port, when the pod carries the agent container.
    pub agent_port: Option<u16>,
    /// The app containers (all but the agent), for what their spec says of memory limits.
    pub containers: Vec<ContainerInfo>,
}

/// What the controllers read of an app container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Name.
    pub name: String,
    /// The `containerPort`s it declares.
    pub ports: Vec<i32>,
    /// Whether it sets `resources.limits.memory`.
    pub memory_limit: bool,
}

/// Why the memory percentage of the app serving `port` is meaningless, if it is: without a
/// memory limit on that container, the limit the agent reads through the downward API is
/// the node's allocatable memory. The serving container is the one declaring the port, or
/// the only app container when none declares it.
pub fn memory_limit_missing(pod: &PodInfo, port: u16) -> Option<String> {
    let declaring: Vec<&ContainerInfo> = pod.containers.iter().filter(|c| c.ports.contains(&i32::from(port))).collect();
    let serving = match (declaring.as_slice(), pod.containers.as_slice()) {
        ([one], _) => *one,
        ([], [one]) => one,
        ([], _) => {
            return Some(format!(
                "no single container of the pod declares port {port}, so its memory limit is not known"
            ));
        }
        (_, _) => return Some(format!("several containers declare port {port}, so its memory limit is not known")),
    };
    (!serving.memory_limit).then(|| {
        format!(
            "container {:?} serving port {port} has no memory limit (the downward API then gives the node's allocatable memory)",
            serving.name
        )
    })
}

/// Reads a watched pod.
pub fn pod_info(pod: &WatchedPod, default_port: u16) -> PodInfo {
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready_condition = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    // The agent is an app container beside the app, or a native sidecar (an init container
    // that keeps running); an init container that runs to completion is not an agent.
    let has_agent = pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| c.name == AGENT_CONTAINER) || s.init_containers.iter().any(is_agent_sidecar)
    });
    let port = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(AGENT_PORT_ANNOTATION))
        .and_then(|p| p.parse().ok())
        .unwrap_or(default_port);
    PodInfo {
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        // The primary address, of whichever family the cluster gives first; agents listen on
        // both. `podIPs` stands in when `podIP` is missing.
        ip: status.and_then(|s| {
            s.pod_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .or_else(|| s.pod_ips.as_ref()?.iter().map(|p| p.ip.clone()).find(|ip| !ip.is_empty()))
        }),
        ready: running && ready_condition && pod.metadata.deletion_timestamp.is_none(),
        agent_port: has_agent.then_some(port),
        containers: pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .filter(|c| c.name != AGENT_CONTAINER)
            .map(|c| ContainerInfo {
                name: c.name.clone(),
                ports: c.ports.iter().flatten().map(|p| p.container_port).collect(),
                memory_limit: c.resources.as_ref().and_then(|r| r.limits.as_ref()).is_some_and(|l| l.memory.is_some()),
            })
            .collect(),
    }
}

/// The pods a run profiles: selected, Running and Ready, with an agent and an IP; by name,
/// at most `max_pods` (a stable pick).
pub fn eligible(pods: &[PodInfo], selector: &PodSelector, max_pods: Option<usize>) -> Vec<PodInfo> {
    let mut chosen: Vec<PodInfo> = pods
        .iter()
        .filter(|p| selector.matches(&p.labels) && p.ready && p.agent_port.is_some() && p.ip.is_some())
        .cloned()
        .collect();
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(max) = max_pods {
        chosen.truncate(max);
    }
    chosen
}

/// FNV-1a, for short stable ids.
pub(crate) fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Why a controller has no pod to act through.
pub const NO_ELIGIBLE_PODS: &str = "no selected pod is Running and Ready with a biometrics-agent container";

/// A Pod as the watch keeps it: name, labels, annotations, container names, ports and
/// memory limits, phase, Ready, IP, deletion. The watch cache holds every agent pod of the
/// cluster; decoded into k8s-openapi's `Pod`, even a pod stripped of everything else costs
/// about 7 KiB (its spec and each container are large structs of empty options), 34 MiB at
/// 5,000 pods. Decoding only these fields skips the rest of a real pod (managed fields,
/// env, volumes, …) before it is ever held.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchedPod {
    /// The pod's metadata (managed fields, owners and all but `biometrics.io/` annotations
    /// dropped by [`WatchedPod::slim`]).
    pub metadata: ObjectMeta,
    /// `spec`, as far as read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<WatchedSpec>,
    /// `status`, as far as read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WatchedStatus>,
}

/// What is read of a pod's spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedSpec {
    /// `containers`.
    #[serde(default)]
    pub containers: Vec<WatchedContainer>,
    /// `initContainers`: the agent may be one, as a native sidecar.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<WatchedContainer>,
    /// `terminationGracePeriodSeconds`: a rollout's baseline capture ends within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
}

/// What is read of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedContainer {
    /// `name`.
    pub name: String,
    /// `ports[].containerPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<WatchedPort>>,
    /// `resources.limits.memory`, as far as read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<WatchedResources>,
    /// `restartPolicy`: `Always` makes an init container a native sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
}

/// A declared container port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedPort {
    /// `containerPort`.
    pub container_port: i32,
}

/// A container's `resources`, as far as read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchedResources {
    /// `limits`, as far as read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<WatchedLimits>,
}

/// A container's limits, as far as read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchedLimits {
    /// `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// What is read of a pod's status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedStatus {
    /// `phase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `podIP`.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// `podIPs`.
    #[serde(default, rename = "podIPs", skip_serializing_if = "Option::is_none")]
    pub pod_ips: Option<Vec<PodIP>>,
    /// `conditions` (type and status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<WatchedCondition>>,
}

/// A pod condition's type and status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchedCondition {
    /// `type`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `status`.
    pub status: String,
}

impl kube::Resource for WatchedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind((): &()) -> Cow<'_, str> {
        <Pod as kube::Resource>::kind(&())
    }
    fn group((): &()) -> Cow<'_, str> {
        <Pod as kube::Resource>::group(&())
    }
    fn version((): &()) -> Cow<'_, str> {
        <Pod as kube::Resource>::version(&())
    }
    fn plural((): &()) -> Cow<'_, str> {
        <Pod as kube::Resource>::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl WatchedPod {
    /// Drops what the decoding kept of the metadata but no controller reads.
    pub fn slim(&mut self) {
        let meta = &mut self.metadata;
        meta.managed_fields = None;
        meta.owner_references = None;
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.retain(|k, _| k.starts_with("biometrics.io/"));
        }
        if let Some(conditions) = self.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            conditions.retain(|c| c.type_ == "Ready");
        }
        if let Some(spec) = self.spec.as_mut() {
            spec.init_containers.retain(is_agent_sidecar);
            for c in &mut spec.init_containers {
                (c.ports, c.resources) = (None, None);
            }
        }
    }
}

/// The agent as a native sidecar: an init container of its name that keeps running.
fn is_agent_sidecar(c: &WatchedContainer) -> bool {
    c.name == AGENT_CONTAINER && c.restart_policy.as_deref() == Some("Always")
}

/// The pods of a namespace that a selector selects (all with `None`), from the watch. Only
/// those are read into `PodInfo`: with thousands of pods, a reconcile must not copy them all.
pub fn pods_in(
    store: &reflector::Store<WatchedPod>,
    namespace: &str,
    selector: Option<&PodSelector>,
    default_port: u16,
) -> Vec<PodInfo> {
    store
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace))
        .filter(|p| selector.is_none_or(|s| s.matches(p.labels())))
        .map(|p| pod_info(p, default_port))
        .collect()
}

/// One pod of a namespace by name, from the watch.
pub fn pod_named(
    store: &reflector::Store<WatchedPod>,
    namespace: &str,
    name: &str,
    default_port: u16,
) -> Option<PodInfo> {
    let key = reflector::ObjectRef::<WatchedPod>::new(name).within(namespace);
    store.get(&key).map(|p| pod_info(&p, default_port))
}

/// Resolves once the watch caches a reconcile reads are filled. Any number of reconciles may
/// wait on clones of it (a store's own `wait_until_ready` wakes only the last of several
/// concurrent waiters).
pub type CachesReady = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// The `CachesReady` of these stores.
pub fn caches_ready(waits: Vec<futures::future::BoxFuture<'static, ()>>) -> CachesReady {
    use futures::FutureExt;
    futures::future::join_all(waits).map(|_| ()).boxed().shared()
}

/// A wait for one store, for `caches_ready`.
pub fn store_ready<K>(store: &reflector::Store<K>) -> futures::future::BoxFuture<'static, ()>
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    use futures::FutureExt;
    let store = store.clone();
    async move {
        let _ = store.wait_until_ready().await;
    }
    .boxed()
}

/// Where a pod's agent listens, when it has an IP and an agent.
pub fn agent_of(namespace: &str, pod: &PodInfo) -> Option<AgentAddr> {
    Some(AgentAddr { namespace: namespace.into(), pod: pod.name.clone(), ip: pod.ip.clone()?, port: pod.agent_port? })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, labels: &[(&str, &str)], ready: bool, agent: bool, ip: Option<&str>) -> PodInfo {
        PodInfo {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            ip: ip.map(Into::into),
            ready,
            agent_port: agent.then_some(9477),
            containers: Vec::new(),
        }
    }

    fn container(name: &str, ports: &[i32], memory_limit: bool) -> ContainerInfo {
        ContainerInfo { name: name.into(), ports: ports.to_vec(), memory_limit }
    }

    #[test]
    fn memory_is_judged_only_against_the_serving_containers_limit() {
        let with = |containers: Vec<ContainerInfo>| PodInfo { containers, ..pod("api-0", &[], true, true, None) };
        let limited = with(vec![container("app", &[6060], true), container("proxy", &[80], false)]);
        assert_eq!(memory_limit_missing(&limited, 6060), None);
        let unlimited = with(vec![container("app", &[6060], false), container("proxy", &[80], true)]);
        let reason = memory_limit_missing(&unlimited, 6060).expect("unknown");
        assert!(reason.contains("\"app\"") && reason.contains("no memory limit"), "{reason}");
        assert_eq!(
            memory_limit_missing(&with(vec![container("app", &[], true)]), 6060),
            None,
            "the only app container"
        );
        assert!(memory_limit_missing(&with(vec![container("app", &[], false)]), 6060).is_some());
        let unclear = with(vec![container("a", &[], true), container("b", &[], true)]);
        assert!(memory_limit_missing(&unclear, 6060).unwrap().contains("no single container"));
    }

    #[tokio::test]
    async fn every_waiter_wakes_when_the_caches_are_filled() {
        let (store, mut writer) = reflector::store::<WatchedPod>();
        let ready = caches_ready(vec![store_ready(&store)]);
        // As many waiters as reconciles start before the pod list is in.
        let waiters: Vec<_> = (0..40).map(|_| tokio::spawn(ready.clone())).collect();
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("every waiter wakes").unwrap();
        }
    }

    #[test]
    fn a_watched_pod_keeps_only_what_the_controllers_read() {
        let full = json!({
            "metadata": {"name": "api-0", "namespace": "shop", "labels": {"app": "api"},
                "annotations": {"biometrics.io/agent-port": "9999", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-1", "uid": "u"}]},
            "spec": {"containers": [{"name": "app", "image": "api", "env": [{"name": "A", "value": "b"}],
                    "ports": [{"containerPort": 6060, "name": "pprof", "protocol": "TCP"}],
                    "resources": {"limits": {"memory": "256Mi", "cpu": "1"}, "requests": {"memory": "128Mi"}}},
                    {"name": "sidecar", "resources": {"limits": {"cpu": "1"}}},
                    {"name": "biometrics-agent", "image": "agent"}],
                "volumes": [{"name": "profiles", "emptyDir": {}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "hostIP": "10.1.0.1",
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}
        });
        let mut pod: WatchedPod = serde_json::from_value(full.clone()).unwrap();
        pod.slim();
        let info = pod_info(&pod, 9477);
        assert_eq!(info.name, "api-0");
        assert_eq!(info.ip.as_deref(), Some("10.0.0.1"));
        assert!(info.ready);
        assert_eq!(info.agent_port, Some(9999));
        assert_eq!(
            info.containers,
            [container("app", &[6060], true), container("sidecar", &[], false)],
            "ports and the memory limit survive, a cpu limit is no memory limit"
        );
        let kept = serde_json::to_value(&pod).unwrap();
        assert_eq!(
            kept,
            json!({
                "metadata": {"name": "api-0", "namespace": "shop", "labels": {"app": "api"},
                    "annotations": {"biometrics.io/agent-port": "9999"}},
                "spec": {"containers": [
                    {"name": "app", "ports": [{"containerPort": 6060}], "resources": {"limits": {"memory": "256Mi"}}},
                    {"name": "sidecar", "resources": {"limits": {}}},
                    {"name": "biometrics-agent"}]},
                "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
            })
        );
        let held = |v: &serde_json::Value| v.to_string().len();
        assert!(held(&kept) * 2 < held(&full), "{} of {} bytes", held(&kept), held(&full));
    }

    #[test]
    fn an_agent_running_as_a_native_sidecar_is_the_pods_agent() {
        let pod = |init: serde_json::Value| {
            let mut pod: WatchedPod = serde_json::from_value(json!({
                "metadata": {"name": "api-0", "namespace": "shop"},
                "spec": {"initContainers": init, "containers": [{"name": "app", "ports": [{"containerPort": 6060}]}]},
                "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap();
            pod.slim();
            pod
        };
        let sidecar = pod(json!([{"name": "migrate", "image": "m"},
            {"name": "biometrics-agent", "restartPolicy": "Always", "ports": [{"containerPort": 9477}]}]));
        let info = pod_info(&sidecar, 9477);
        assert_eq!(info.agent_port, Some(9477));
        assert_eq!(info.containers, [container("app", &[6060], false)], "init containers serve no target port");
        assert_eq!(
            serde_json::to_value(&sidecar).unwrap()["spec"]["initContainers"],
            json!([{"name": "biometrics-agent", "restartPolicy": "Always"}]),
            "only the agent's name and policy are kept"
        );
        // An init container that runs to completion is gone by the time anything is profiled.
        let once = pod(json!([{"name": "biometrics-agent"}]));
        assert_eq!(pod_info(&once, 9477).agent_port, None);
    }

    #[test]
    fn a_terminating_or_unready_pod_is_not_ready() {
        let pod = |phase: &str, ready: &str, deleting: bool| {
            let deletion = deleting.then_some("2026-01-01T00:00:00Z");
            let pod: WatchedPod = serde_json::from_value(json!({
                "metadata": {"name": "api-0", "namespace": "shop", "deletionTimestamp": deletion},
                "spec": {"containers": [{"name": "app"}, {"name": "biometrics-agent"}]},
                "status": {"phase": phase, "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": ready}]}
            }))
            .unwrap();
            pod_info(&pod, 9477).ready
        };
        assert!(pod("Running", "True", false));
        assert!(!pod("Running", "True", true), "terminating");
        assert!(!pod("Running", "False", false));
        assert!(!pod("Pending", "True", false));
    }

    #[test]
    fn an_ipv6_only_pod_is_dialled_at_its_address() {
        let mut pod: WatchedPod = serde_json::from_value(json!({
            "metadata": {"name": "api-0", "namespace": "shop"},
            "spec": {"containers": [{"name": "app"}, {"name": "biometrics-agent"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "fd00::12"}, {"ip": "10.0.0.12"}],
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        pod.slim();
        assert_eq!(pod_info(&pod, 9477).ip.as_deref(), Some("fd00::12"), "podIPs when podIP is missing");
        pod.status.as_mut().unwrap().pod_ip = Some("fd00::12".into());
        assert_eq!(pod_info(&pod, 9477).ip.as_deref(), Some("fd00::12"));
    }

    #[test]
    fn eligible_pods_are_selected_ready_with_an_agent_and_picked_stably() {
        let selector =
            PodSelector::new(&serde_json::from_value(json!({"matchLabels": {"app": "api"}})).unwrap()).unwrap();
        let pods = vec![
            pod("api-c", &[("app", "api")], true, true, Some("10.0.0.3")),
            pod("api-a", &[("app", "api")], true, true, Some("10.0.0.1")),
            pod("api-b", &[("app", "api")], false, true, Some("10.0.0.2")),
            pod("api-d", &[("app", "api")], true, false, Some("10.0.0.4")),
            pod("api-e", &[("app", "api")], true, true, None),
            pod("web-a", &[("app", "web")], true, true, Some("10.0.0.9")),
            pod("api-f", &[("app", "api")], true, true, Some("10.0.0.6")),
        ];
        let names = |v: Vec<PodInfo>| v.into_iter().map(|p| p.name).collect::<Vec<_>>();
        assert_eq!(names(eligible(&pods, &selector, None)), ["api-a", "api-c", "api-f"]);
        assert_eq!(names(eligible(&pods, &selector, Some(2))), ["api-a", "api-c"], "the same two every time");
    }
}
