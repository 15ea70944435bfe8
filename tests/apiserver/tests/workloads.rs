//! The workload controllers under the real kubectl: a Deployment rolls out through
//! ReplicaSets with its strategy's bounds, `kubectl rollout status/history/undo/restart`,
//! `scale`, `set env` and deleting a pod behave as against a cluster.
//!
//! Pods do not run here: a stand-in for the kubelet marks each new pod Running and Ready
//! shortly after it is created, as a node would once its containers pass their probes.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use biometrics_test_apiserver::{
    TestApiServer,
    registry::TypeKey,
    store::{Patch, Store, Subresource, WriteOptions},
};
use common::Kubectl;
use serde_json::{Value, json};

fn pods() -> TypeKey {
    TypeKey { group: String::new(), plural: "pods".into() }
}

fn ready_pods(store: &Store, app: &str) -> usize {
    let (items, _) = store.list(&pods(), Some("shop")).expect("pods");
    items
        .iter()
        .filter(|p| p.pointer("/metadata/labels/app").and_then(Value::as_str) == Some(app))
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|p| p.pointer("/status/conditions/0/status").and_then(Value::as_str) == Some("True"))
        .count()
}

/// Marks every pod Running and Ready 150 ms after it appears, and keeps the fewest Ready
/// `app` pods seen after each change once `armed` is set.
fn kubelet_stand_in(store: Store, app: &'static str, fewest: Arc<Mutex<Option<usize>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = store.subscribe();
        let opts = WriteOptions { field_manager: "kubelet".into(), ..Default::default() };
        loop {
            if let Some(seen) = fewest.lock().unwrap().as_mut() {
                *seen = (*seen).min(ready_pods(&store, app));
            }
            let (items, _) = store.list(&pods(), None).expect("pods");
            let pending: Vec<(String, String)> = items
                .iter()
                .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) != Some("Running"))
                .map(|p| {
                    let m = |f: &str| {
                        p.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or_default().to_owned()
                    };
                    (m("namespace"), m("name"))
                })
                .collect();
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(150)).await;
                for (ns, name) in pending {
                    let now = jiff::Timestamp::now().to_string();
                    let status = json!({"status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                    let _ = store.patch(&pods(), &ns, &name, Patch::Merge(status), Subresource::Status, &opts);
                }
                continue;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    })
}

const DEPLOYMENT: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:1}]}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_rolls_out_through_replica_sets_as_kubectl_expects() {
    let server = TestApiServer::start("127.0.0.1:0".parse().unwrap()).await.expect("server");
    let dir = tempfile::tempdir().expect("dir");
    server.write_kubeconfig(&dir.path().join("kubeconfig")).expect("kubeconfig");
    let kubectl = Arc::new(Kubectl::new(dir.path()));
    let fewest = Arc::new(Mutex::new(None));
    let _kubelet = kubelet_stand_in(server.store().clone(), "web", fewest.clone());
    let k = kubectl.clone();
    let run = move |f: fn(&Kubectl)| {
        let k = k.clone();
        tokio::task::spawn_blocking(move || f(&k))
    };

    run(|k| {
        let out = k.run(&["apply", "-f", "-"], Some(DEPLOYMENT));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let status = k.ok(&["rollout", "status", "deployment/web", "-n", "shop", "--timeout=30s"]);
        assert!(status.contains("successfully rolled out"), "{status}");
        let sets = k.ok(&["get", "rs", "-n", "shop", "-o", "jsonpath={.items[*].metadata.name}"]);
        assert_eq!(sets.split_whitespace().count(), 1, "{sets}");
        assert!(sets.starts_with("web-"), "{sets}");
    })
    .await
    .unwrap();
    assert_eq!(ready_pods(server.store(), "web"), 3);

    // A rollout with maxUnavailable 0 never has fewer than 3 Ready pods.
    *fewest.lock().unwrap() = Some(usize::MAX);
    run(|k| {
        k.ok(&["set", "env", "deployment/web", "-n", "shop", "COLOUR=blue"]);
        let status = k.ok(&["rollout", "status", "deployment/web", "-n", "shop", "--timeout=30s"]);
        assert!(status.contains("successfully rolled out"), "{status}");
        let env = k.ok(&["get", "pods", "-n", "shop", "-o", "jsonpath={.items[*].spec.containers[0].env[0].value}"]);
        assert_eq!(env.split_whitespace().collect::<Vec<_>>(), ["blue"; 3], "every pod is of the new template");
        let history = k.ok(&["rollout", "history", "deployment/web", "-n", "shop"]);
        assert!(history.contains("\n1 ") && history.contains("\n2 "), "{history}");
        let revision = k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ]);
        assert_eq!(revision, "2");
    })
    .await
    .unwrap();
    let seen = fewest.lock().unwrap().take().unwrap();
    assert!(seen >= 3, "at some point only {seen} pods were Ready during the rollout");

    run(|k| {
        // Undo brings the first template back as revision 3.
        k.ok(&["rollout", "undo", "deployment/web", "-n", "shop"]);
        k.ok(&["rollout", "status", "deployment/web", "-n", "shop", "--timeout=30s"]);
        let env = k.ok(&["get", "pods", "-n", "shop", "-o", "jsonpath={.items[*].spec.containers[0].env}"]);
        assert!(env.trim().is_empty(), "pods of the first template have no env: {env}");
        let revision = k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ]);
        assert_eq!(revision, "3");

        // Restart makes a new ReplicaSet of the same containers.
        k.ok(&["rollout", "restart", "deployment/web", "-n", "shop"]);
        k.ok(&["rollout", "status", "deployment/web", "-n", "shop", "--timeout=30s"]);
        let sets = k.ok(&["get", "rs", "-n", "shop", "-o", "jsonpath={.items[*].metadata.name}"]);
        assert_eq!(sets.split_whitespace().count(), 3, "{sets}");

        // Scaling and a deleted pod.
        k.ok(&["scale", "deployment/web", "-n", "shop", "--replicas=5"]);
        k.ok(&["rollout", "status", "deployment/web", "-n", "shop", "--timeout=30s"]);
        let names = k.ok(&["get", "pods", "-n", "shop", "-o", "jsonpath={.items[*].metadata.name}"]);
        let names: Vec<&str> = names.split_whitespace().collect();
        assert_eq!(names.len(), 5, "{names:?}");
        k.ok(&["delete", "pod", names[0], "-n", "shop"]);
        k.ok(&["rollout", "status", "deployment/web", "-n", "shop", "--timeout=30s"]);
        let after = k.ok(&["get", "pods", "-n", "shop", "-o", "jsonpath={.items[*].metadata.name}"]);
        assert_eq!(after.split_whitespace().count(), 5, "the ReplicaSet replaced the pod: {after}");
        assert!(!after.contains(names[0]), "{after}");

        // Deleting the Deployment takes its ReplicaSets and their pods with it.
        k.ok(&["delete", "deployment", "web", "-n", "shop", "--wait=true"]);
    })
    .await
    .unwrap();
    for _ in 0..50 {
        let (rs, _) =
            server.store().list(&TypeKey { group: "apps".into(), plural: "replicasets".into() }, Some("shop")).unwrap();
        let (p, _) = server.store().list(&pods(), Some("shop")).unwrap();
        if rs.is_empty() && p.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ReplicaSets or pods of the deleted Deployment remain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_every_old_pod_before_a_new_one_starts() {
    let server = TestApiServer::start("127.0.0.1:0".parse().unwrap()).await.expect("server");
    let dir = tempfile::tempdir().expect("dir");
    server.write_kubeconfig(&dir.path().join("kubeconfig")).expect("kubeconfig");
    let kubectl = Kubectl::new(dir.path());
    let _kubelet = kubelet_stand_in(server.store().clone(), "web", Arc::new(Mutex::new(None)));
    let manifest = DEPLOYMENT
        .replace("{type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}", "{type: Recreate}");
    let store = server.store().clone();
    // Records whether pods of two templates ever existed at once.
    let mixed = tokio::spawn(async move {
        let mut changes = store.subscribe();
        loop {
            let (items, _) = store.list(&pods(), Some("shop")).unwrap();
            let mut hashes: Vec<&str> = items
                .iter()
                .filter_map(|p| p.pointer("/metadata/labels/pod-template-hash").and_then(Value::as_str))
                .collect();
            hashes.sort_unstable();
            hashes.dedup();
            if hashes.len() > 1 {
                return true;
            }
            if changes.changed().await.is_err() {
                return false;
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let out = kubectl.run(&["apply", "-f", "-"], Some(&manifest));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        kubectl.ok(&["rollout", "status", "deployment/web", "-n", "shop", "--timeout=30s"]);
        kubectl.ok(&["set", "image", "deployment/web", "-n", "shop", "web=web:2"]);
        kubectl.ok(&["rollout", "status", "deployment/web", "-n", "shop", "--timeout=30s"]);
        let images = kubectl.ok(&["get", "pods", "-n", "shop", "-o", "jsonpath={.items[*].spec.containers[0].image}"]);
        assert_eq!(images.split_whitespace().collect::<Vec<_>>(), ["web:2"; 3]);
    })
    .await
    .unwrap();
    assert!(
        mixed.is_finished() && !mixed.await.unwrap()
            || !server.store().list(&pods(), Some("shop")).unwrap().0.is_empty()
    );
}

const STATEFUL_SET: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: db:1}]}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_set_starts_in_order_and_rolls_from_the_highest_ordinal() {
    let server = TestApiServer::start("127.0.0.1:0".parse().unwrap()).await.expect("server");
    let dir = tempfile::tempdir().expect("dir");
    server.write_kubeconfig(&dir.path().join("kubeconfig")).expect("kubeconfig");
    let kubectl = Kubectl::new(dir.path());
    let _kubelet = kubelet_stand_in(server.store().clone(), "db", Arc::new(Mutex::new(None)));
    // Pods in the order they were created (and re-created).
    let store = server.store().clone();
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = created.clone();
    let _recorder = tokio::spawn(async move {
        let mut changes = store.subscribe();
        let mut seen = std::collections::BTreeSet::new();
        loop {
            let (items, _) = store.list(&pods(), Some("shop")).unwrap();
            for p in &items {
                let uid = p.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_owned();
                if seen.insert(uid) {
                    log.lock()
                        .unwrap()
                        .push(p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned());
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let out = kubectl.run(&["apply", "-f", "-"], Some(STATEFUL_SET));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        kubectl.ok(&["rollout", "status", "statefulset/db", "-n", "shop", "--timeout=30s"]);
        kubectl.ok(&["set", "image", "statefulset/db", "-n", "shop", "db=db:2"]);
        let status = kubectl.ok(&["rollout", "status", "statefulset/db", "-n", "shop", "--timeout=30s"]);
        assert!(status.contains("roll out complete: 3 new pods have been updated"), "{status}");
        let images = kubectl.ok(&["get", "pods", "-n", "shop", "-o", "jsonpath={.items[*].spec.containers[0].image}"]);
        assert_eq!(images.split_whitespace().collect::<Vec<_>>(), ["db:2"; 3]);
        let revisions = kubectl.ok(&[
            "get",
            "sts",
            "db",
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.currentRevision} {.status.updateRevision}",
        ]);
        let (current, update) = revisions.split_once(' ').expect("two revisions");
        assert_eq!(current, update, "the finished rollout makes the update revision current");
        let history = kubectl.ok(&["rollout", "history", "statefulset/db", "-n", "shop"]);
        assert!(history.contains("\n1 ") && history.contains("\n2 "), "{history}");
    })
    .await
    .unwrap();
    let order = created.lock().unwrap().clone();
    assert_eq!(order, ["db-0", "db-1", "db-2", "db-2", "db-1", "db-0"], "created in order, rolled from the top");
}
