//! Workload controllers run inside the server, as kube-controller-manager runs beside
//! kube-apiserver: Deployments make ReplicaSets, ReplicaSets, StatefulSets and Jobs make
//! Pods, and the garbage collector deletes what lost its owners. Each is a pure
//! decision (`plan`) over the objects as stored; this module lists what a decision needs and
//! writes what it decided through the same store the API serves, so every change is seen by
//! watches, admission and `kubectl` exactly as a controller's request would be.
//!
//! Level-triggered: every change to the store (and a 1 s tick, for `minReadySeconds` and
//! progress deadlines) runs one sync of every workload; a sync that finds nothing to do
//! writes nothing.

mod deployment;
mod garbage;
mod job;
mod replicaset;
mod statefulset;
mod workload;

use std::{collections::HashMap, sync::Arc, time::Duration};

use jiff::Timestamp;
use serde_json::{Value, json};

use self::workload::{active, controlled_by, meta_str};
pub use self::{deployment::REVISION, job::printed_status as job_status};
use crate::{
    error::ApiError,
    registry::TypeKey,
    store::{Patch, Store, Subresource, WriteOptions},
};

fn key(group: &str, plural: &str) -> TypeKey {
    TypeKey { group: group.into(), plural: plural.into() }
}

/// Runs the controllers until the task is dropped.
pub fn spawn(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = store.subscribe();
        let (mut swept, mut suspects) = (std::time::Instant::now(), std::collections::HashSet::new());
        loop {
            sync_all(&store, Timestamp::now());
            // Every object is looked at: once a second is enough, as orphans are rare.
            if swept.elapsed() >= Duration::from_secs(1) {
                garbage::sweep(&store, &mut suspects);
                swept = std::time::Instant::now();
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            // Let a burst of writes land before the next pass.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

fn options(manager: &str) -> WriteOptions {
    WriteOptions { field_manager: manager.into(), ..Default::default() }
}

/// A write that another writer overtook, or an object already gone, is retried by the next
/// sync; anything else is a fault of the server worth seeing.
fn report(what: &str, result: Result<impl Sized, ApiError>) {
    if let Err(e) = result
        && e.code != 404
        && e.code != 409
    {
        eprintln!("test-apiserver: {what}: {}", e.message);
    }
}

/// Groups objects by (namespace, controller uid).
fn by_controller(objects: &[Arc<Value>]) -> HashMap<(String, String), Vec<&Value>> {
    let mut map: HashMap<(String, String), Vec<&Value>> = HashMap::new();
    for o in objects {
        if let Some(owner) = o
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| refs.iter().find(|r| r.get("controller").and_then(Value::as_bool) == Some(true)))
        {
            let uid = owner.get("uid").and_then(Value::as_str).unwrap_or_default().to_owned();
            map.entry((meta_str(o, "namespace").to_owned(), uid)).or_default().push(o.as_ref());
        }
    }
    map
}

/// What `owner` controls, from a [`by_controller`] map.
fn owned<'a>(map: &HashMap<(String, String), Vec<&'a Value>>, owner: &Value) -> Vec<&'a Value> {
    map.get(&(meta_str(owner, "namespace").to_owned(), meta_str(owner, "uid").to_owned())).cloned().unwrap_or_default()
}

/// One pass over every Deployment, StatefulSet and ReplicaSet.
pub fn sync_all(store: &Store, now: Timestamp) {
    let (deployments, replica_sets, pods) = (key("apps", "deployments"), key("apps", "replicasets"), key("", "pods"));
    let Ok((deploys, _)) = store.list_shared(&deployments, None) else { return };
    let Ok((sets, _)) = store.list_shared(&replica_sets, None) else { return };
    let Ok((all_pods, _)) = store.list_shared(&pods, None) else { return };
    let sets_by_owner = by_controller(&sets);
    let pods_by_owner = by_controller(&all_pods);

    for d in deploys.iter().filter(|d| !workload::terminating(d)) {
        let ns = meta_str(d, "namespace");
        let name = meta_str(d, "name");
        let sets = owned(&sets_by_owner, d);
        let template = workload::without_hash(d.pointer("/spec/template").unwrap_or(&Value::Null));
        let old_pods = sets
            .iter()
            .filter(|rs| workload::without_hash(rs.pointer("/spec/template").unwrap_or(&Value::Null)) != template)
            .flat_map(|rs| owned(&pods_by_owner, rs))
            .filter(|p| active(p))
            .count();
        let plan = deployment::plan(d, &sets, old_pods, now);
        let opts = options("deployment-controller");
        if let Some(rs) = plan.create {
            report("create ReplicaSet", store.create(&replica_sets, ns, rs, &opts));
        }
        for change in plan.changes {
            report(
                "scale ReplicaSet",
                store.patch(&replica_sets, ns, &change.name, Patch::Merge(change.patch), Subresource::Main, &opts),
            );
        }
        for old in plan.delete {
            report("delete ReplicaSet", store.delete(&replica_sets, ns, &old, false, None));
        }
        if let Some(revision) = plan.revision {
            let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
            report(
                "annotate Deployment",
                store.patch(&deployments, ns, name, Patch::Merge(patch), Subresource::Main, &opts),
            );
        }
        if let Some(status) = plan.status {
            let patch = Patch::Merge(json!({"status": status}));
            report("Deployment status", store.patch(&deployments, ns, name, patch, Subresource::Status, &opts));
        }
    }

    sync_stateful_sets(store, &pods_by_owner, now);
    sync_jobs(store, &pods_by_owner, now);

    for rs in &sets {
        let ns = meta_str(rs, "namespace");
        let uid = meta_str(rs, "uid");
        let pods: Vec<&Value> = owned(&pods_by_owner, rs).into_iter().filter(|p| controlled_by(p, uid)).collect();
        let plan = replicaset::plan(rs, &pods, now);
        let opts = options("replicaset-controller");
        for pod in plan.create {
            report("create Pod", store.create(&pods_key(), ns, pod, &opts));
        }
        for name in plan.delete {
            // As kube-controller-manager deletes: the kubelet stops the pod within its grace period.
            report("delete Pod", store.delete_gracefully(&pods_key(), ns, &name, false, None, None));
        }
        if let Some(status) = plan.status {
            let patch = Patch::Merge(json!({"status": status}));
            report(
                "ReplicaSet status",
                store.patch(&replica_sets, ns, meta_str(rs, "name"), patch, Subresource::Status, &opts),
            );
        }
    }
}

/// One pass over every StatefulSet.
fn sync_stateful_sets(store: &Store, pods_by_owner: &HashMap<(String, String), Vec<&Value>>, now: Timestamp) {
    let (sets_key, revisions_key) = (key("apps", "statefulsets"), key("apps", "controllerrevisions"));
    let Ok((sets, _)) = store.list_shared(&sets_key, None) else { return };
    if sets.is_empty() {
        return;
    }
    let Ok((revisions, _)) = store.list_shared(&revisions_key, None) else { return };
    let revisions_by_owner = by_controller(&revisions);
    let opts = options("statefulset-controller");
    for set in sets.iter().filter(|s| !workload::terminating(s)) {
        let ns = meta_str(set, "namespace");
        let plan = statefulset::plan(set, &owned(pods_by_owner, set), &owned(&revisions_by_owner, set), now);
        if let Some(revision) = plan.create_revision {
            report("create ControllerRevision", store.create(&revisions_key, ns, revision, &opts));
        }
        for pod in plan.create_pods {
            report("create Pod", store.create(&pods_key(), ns, pod, &opts));
        }
        for name in plan.delete_pods {
            // As kube-controller-manager deletes: the kubelet stops the pod within its grace period.
            report("delete Pod", store.delete_gracefully(&pods_key(), ns, &name, false, None, None));
        }
        if let Some(status) = plan.status {
            let patch = Patch::Merge(json!({"status": status}));
            report(
                "StatefulSet status",
                store.patch(&sets_key, ns, meta_str(set, "name"), patch, Subresource::Status, &opts),
            );
        }
    }
}

/// One pass over every Job; then the tracking finalizer comes off the pods of Jobs that
/// are gone or being deleted, as kube-controller-manager releases orphans.
fn sync_jobs(store: &Store, pods_by_owner: &HashMap<(String, String), Vec<&Value>>, now: Timestamp) {
    let jobs_key = key("batch", "jobs");
    let Ok((jobs, _)) = store.list_shared(&jobs_key, None) else { return };
    let opts = options("job-controller");
    // Whole seconds, as the API writes its times.
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let release = |ns: &str, pod: &Value| {
        let kept: Vec<&Value> = pod
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|f| *f != job::TRACKING)
            .collect();
        // (None left: the field goes, as an empty list does from kube-apiserver's JSON.)
        let kept = if kept.is_empty() { Value::Null } else { json!(kept) };
        let patch = Patch::Merge(json!({"metadata": {"finalizers": kept}}));
        report("release Pod", store.patch(&pods_key(), ns, meta_str(pod, "name"), patch, Subresource::Main, &opts));
    };
    let mut live = std::collections::HashSet::new();
    for job in jobs.iter().filter(|j| !workload::terminating(j)) {
        let ns = meta_str(job, "namespace");
        live.insert((ns.to_owned(), meta_str(job, "uid").to_owned()));
        let pods = owned(pods_by_owner, job);
        let plan = job::plan(job, &pods, now);
        // The status first: a pod is released only once its end is written down.
        let recorded = plan.status.is_none_or(|status| {
            let patch = Patch::Merge(json!({"status": status}));
            let written = store.patch(&jobs_key, ns, meta_str(job, "name"), patch, Subresource::Status, &opts);
            let ok = written.is_ok();
            report("Job status", written);
            ok
        });
        for pod in pods.iter().filter(|p| recorded && plan.release.iter().any(|n| n == meta_str(p, "name"))) {
            release(ns, pod);
        }
        for pod in plan.create {
            report("create Pod", store.create(&pods_key(), ns, pod, &opts));
        }
        for name in plan.delete {
            // As kube-controller-manager deletes: the kubelet stops the pod within its grace period.
            report("delete Pod", store.delete_gracefully(&pods_key(), ns, &name, false, None, None));
        }
    }
    for ((ns, owner), pods) in pods_by_owner {
        if !live.contains(&(ns.clone(), owner.clone())) {
            for pod in pods.iter().filter(|p| job::tracked(p)) {
                release(ns, pod);
            }
        }
    }
}

fn pods_key() -> TypeKey {
    key("", "pods")
}
