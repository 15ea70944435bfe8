//! The ReplicaSet controller's decision: which pods to create or delete so that the set has
//! `spec.replicas` active pods, and the status that reports them.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::workload::{active, available, controller_ref, int_at, meta_str, ready};

/// What one sync of a ReplicaSet does.
#[derive(Debug, Default, PartialEq)]
pub struct ReplicaSetPlan {
    /// Pods to create (bodies with `generateName`).
    pub create: Vec<Value>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// The status to write, if it changed.
    pub status: Option<Value>,
}

/// The rank kube-controller-manager deletes pods by: lowest first (unscheduled, pending,
/// not ready, newest).
fn deletion_rank(pod: &Value) -> (bool, u8, bool, std::cmp::Reverse<String>) {
    let scheduled = pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let phase = match pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending") {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    (scheduled, phase, ready(pod), std::cmp::Reverse(meta_str(pod, "creationTimestamp").to_owned()))
}

/// A pod of the set's template.
pub fn pod_from_template(owner: &Value) -> Value {
    let template = owner.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let mut metadata = template.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["generateName"] = json!(format!("{}-", meta_str(owner, "name")));
    metadata["namespace"] = json!(meta_str(owner, "namespace"));
    metadata["ownerReferences"] = json!([controller_ref(owner)]);
    if let Some(m) = metadata.as_object_mut() {
        m.remove("name");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template.get("spec").cloned().unwrap_or_else(|| json!({}))})
}

/// One sync of `rs`, given the pods of its namespace that it controls.
pub fn plan(rs: &Value, owned: &[&Value], now: Timestamp) -> ReplicaSetPlan {
    let desired = int_at(rs, "/spec/replicas", 1).max(0);
    let min_ready = int_at(rs, "/spec/minReadySeconds", 0);
    let mut live: Vec<&Value> = owned.iter().copied().filter(|p| active(p)).collect();
    let mut plan = ReplicaSetPlan::default();
    let count = i64::try_from(live.len()).unwrap_or(i64::MAX);
    if count < desired && !super::workload::terminating(rs) {
        plan.create = (count..desired).map(|_| pod_from_template(rs)).collect();
    } else if count > desired {
        live.sort_by_key(|p| deletion_rank(p));
        let surplus = usize::try_from(count - desired).unwrap_or(0);
        plan.delete = live[..surplus].iter().map(|p| meta_str(p, "name").to_owned()).collect();
    }
    let fully_labeled = live
        .iter()
        .filter(|p| {
            let template_labels = rs.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
            template_labels
                .is_none_or(|t| t.iter().all(|(k, v)| p.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v)))
        })
        .count();
    let status = json!({
        "replicas": live.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": live.iter().filter(|p| ready(p)).count(),
        "availableReplicas": live.iter().filter(|p| available(p, min_ready, now)).count(),
        "observedGeneration": int_at(rs, "/metadata/generation", 0),
    });
    let current = rs.get("status").cloned().unwrap_or_else(|| json!({}));
    let changed = ["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"]
        .iter()
        .any(|k| current.get(*k).and_then(Value::as_i64).unwrap_or(0) != status[*k].as_i64().unwrap_or(0));
    if changed {
        plan.status = Some(status);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-abc", "namespace": "shop", "uid": "u1", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        })
    }

    fn pod(name: &str, created: &str, is_ready: bool) -> Value {
        json!({
            "metadata": {"name": name, "creationTimestamp": created, "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if is_ready { "True" } else { "False" }}]},
        })
    }

    #[test]
    fn creates_what_is_missing_from_the_template() {
        let now = Timestamp::now();
        let plan = plan(&rs(2), &[], now);
        assert_eq!(plan.create.len(), 2);
        let p = &plan.create[0];
        assert_eq!(p["metadata"]["generateName"], "web-abc-");
        assert_eq!(p["metadata"]["labels"]["app"], "web");
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(p["spec"]["containers"][0]["image"], "i");
        assert_eq!(plan.status.unwrap()["replicas"], 0);
    }

    #[test]
    fn deletes_not_ready_then_newest_first() {
        let now = Timestamp::now();
        let (a, b, c) = (
            pod("a", "2026-01-01T00:00:01Z", true),
            pod("b", "2026-01-01T00:00:02Z", false),
            pod("c", "2026-01-01T00:00:03Z", true),
        );
        let plan = plan(&rs(1), &[&a, &b, &c], now);
        assert_eq!(plan.delete, vec!["b".to_owned(), "c".to_owned()]);
        let status = plan.status.unwrap();
        assert_eq!((status["replicas"].as_i64(), status["readyReplicas"].as_i64()), (Some(3), Some(2)));
    }

    #[test]
    fn an_unchanged_status_is_not_written_again() {
        let now = Timestamp::now();
        let mut set = rs(1);
        let a = pod("a", "2026-01-01T00:00:01Z", true);
        set["status"] = plan(&set, &[&a], now).status.unwrap();
        assert_eq!(plan(&set, &[&a], now), ReplicaSetPlan::default());
    }
}
