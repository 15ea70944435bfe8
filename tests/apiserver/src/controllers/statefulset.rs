//! The StatefulSet controller's decision: a ControllerRevision per template, pods named by
//! ordinal, created and removed in order (`OrderedReady`) or all at once (`Parallel`),
//! rolled from the highest ordinal down to `partition`, and the status (`currentRevision`,
//! `updateRevision`, counts) that `kubectl rollout status` and the operator read.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::workload::{active, available, controller_ref, int_at, meta_str, prune_empty, ready, template_hash};

/// The label a StatefulSet's pods carry their revision's name in.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// What one sync of a StatefulSet does.
#[derive(Debug, Default, PartialEq)]
pub struct StatefulSetPlan {
    /// A ControllerRevision for a template not seen before.
    pub create_revision: Option<Value>,
    /// Pods to create.
    pub create_pods: Vec<Value>,
    /// Names of pods to delete.
    pub delete_pods: Vec<String>,
    /// The status to write, when it changed.
    pub status: Option<Value>,
}

fn comparable(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    prune_empty(&mut t);
    t
}

fn revision_template(revision: &Value) -> Value {
    comparable(revision.pointer("/data/spec/template").unwrap_or(&Value::Null))
}

fn ordinal(set: &str, pod: &Value) -> Option<i64> {
    meta_str(pod, "name").strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn pod_revision(pod: &Value) -> &str {
    pod.pointer(&format!("/metadata/labels/{REVISION_LABEL}")).and_then(Value::as_str).unwrap_or_default()
}

/// The pod of ordinal `i` from `revision`.
fn pod(set: &Value, revision: &Value, i: i64) -> Value {
    let set_name = meta_str(set, "name");
    let name = format!("{set_name}-{i}");
    let template = revision.pointer("/data/spec/template").cloned().unwrap_or_else(|| json!({}));
    let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
    labels[REVISION_LABEL] = json!(meta_str(revision, "name"));
    labels["statefulset.kubernetes.io/pod-name"] = json!(name);
    labels["apps.kubernetes.io/pod-index"] = json!(i.to_string());
    let mut metadata = template.get("metadata").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(meta_str(set, "namespace"));
    metadata["labels"] = labels;
    metadata["ownerReferences"] = json!([controller_ref(set)]);
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["hostname"] = json!(name);
    if let Some(service) = set.pointer("/spec/serviceName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        spec["subdomain"] = json!(service);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// The ControllerRevision of the set's current template, numbered `number`.
fn new_revision(set: &Value, number: i64) -> Value {
    let template = comparable(set.pointer("/spec/template").unwrap_or(&Value::Null));
    let hash = template_hash(&template, int_at(set, "/status/collisionCount", 0));
    let mut data_template = set.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    data_template["$patch"] = json!("replace");
    let mut labels = set.pointer("/spec/selector/matchLabels").cloned().unwrap_or_else(|| json!({}));
    labels["controller.kubernetes.io/hash"] = json!(hash);
    json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": format!("{}-{hash}", meta_str(set, "name")),
            "namespace": meta_str(set, "namespace"),
            "labels": labels,
            "ownerReferences": [controller_ref(set)],
        },
        "data": {"spec": {"template": data_template}},
        "revision": number,
    })
}

/// One sync of `set`, given the pods and ControllerRevisions it controls.
pub fn plan(set: &Value, pods: &[&Value], revisions: &[&Value], now: Timestamp) -> StatefulSetPlan {
    let mut plan = StatefulSetPlan::default();
    let name = meta_str(set, "name");
    let template = comparable(set.pointer("/spec/template").unwrap_or(&Value::Null));
    let Some(update) = revisions.iter().copied().find(|r| revision_template(r) == template) else {
        let number = revisions.iter().map(|r| int_at(r, "/revision", 0)).max().unwrap_or(0) + 1;
        plan.create_revision = Some(new_revision(set, number));
        return plan;
    };
    let update_name = meta_str(update, "name");
    let current = set
        .pointer("/status/currentRevision")
        .and_then(Value::as_str)
        .and_then(|c| revisions.iter().copied().find(|r| meta_str(r, "name") == c))
        .unwrap_or(update);
    let replicas = int_at(set, "/spec/replicas", 1).max(0);
    let min_ready = int_at(set, "/spec/minReadySeconds", 0);
    let parallel = set.pointer("/spec/podManagementPolicy").and_then(Value::as_str) == Some("Parallel");
    let on_delete = set.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("OnDelete");
    let partition = if on_delete { 0 } else { int_at(set, "/spec/updateStrategy/rollingUpdate/partition", 0) };
    let live: Vec<&Value> = pods.iter().copied().filter(|p| active(p) && ordinal(name, p).is_some()).collect();
    let at = |i: i64| live.iter().copied().find(|p| ordinal(name, p) == Some(i));
    let all_ready = live.iter().all(|p| ready(p));
    // Pods below the partition stay at the current revision.
    let revision_for = |i: i64| if i < partition { current } else { update };
    let terminating = pods.iter().any(|p| !active(p));

    if !terminating {
        for i in 0..replicas {
            match at(i) {
                Some(p) if parallel || ready(p) => continue,
                Some(_) => break,
                None => {
                    plan.create_pods.push(pod(set, revision_for(i), i));
                    if !parallel {
                        break;
                    }
                }
            }
        }
        if plan.create_pods.is_empty() {
            let mut condemned: Vec<&Value> =
                live.iter().copied().filter(|p| ordinal(name, p).is_some_and(|i| i >= replicas)).collect();
            condemned.sort_by_key(|p| std::cmp::Reverse(ordinal(name, p)));
            if parallel {
                plan.delete_pods = condemned.iter().map(|p| meta_str(p, "name").to_owned()).collect();
            } else if let Some(highest) = condemned.first().filter(|_| all_ready) {
                plan.delete_pods.push(meta_str(highest, "name").to_owned());
            }
        }
        if plan.create_pods.is_empty() && plan.delete_pods.is_empty() && !on_delete && all_ready {
            // One pod at a time, from the highest ordinal down to the partition.
            if let Some(stale) = (partition..replicas).rev().filter_map(at).find(|p| pod_revision(p) != update_name) {
                plan.delete_pods.push(meta_str(stale, "name").to_owned());
            }
        }
    }

    let count = |f: &dyn Fn(&Value) -> bool| live.iter().filter(|p| f(p)).count();
    let updated = count(&|p| pod_revision(p) == update_name);
    let complete = i64::try_from(updated).unwrap_or(0) == replicas
        && all_ready
        && i64::try_from(live.len()).unwrap_or(0) == replicas;
    let current_name = if complete { update_name } else { meta_str(current, "name") };
    let status = json!({
        "observedGeneration": int_at(set, "/metadata/generation", 0),
        "replicas": live.len(),
        "readyReplicas": count(&|p| ready(p)),
        "availableReplicas": count(&|p| available(p, min_ready, now)),
        "currentReplicas": count(&|p| pod_revision(p) == current_name),
        "updatedReplicas": updated,
        "currentRevision": current_name,
        "updateRevision": update_name,
        "collisionCount": int_at(set, "/status/collisionCount", 0),
    });
    let previous = set.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut merged = previous.clone();
    json_patch::merge(&mut merged, &status);
    if merged != previous {
        plan.status = Some(status);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "shop", "uid": "s1", "generation": 1},
            "spec": {"replicas": replicas, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": image}]}}},
        })
    }

    fn running(mut pod: Value) -> Value {
        pod["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        pod
    }

    #[test]
    fn pods_start_in_order_and_roll_from_the_top() {
        let now = Timestamp::now();
        let v1 = set(2, "db:1");
        let revision = plan(&v1, &[], &[], now).create_revision.unwrap();
        assert_eq!(revision["revision"], 1);
        // Ordinal 0 first; ordinal 1 only once 0 is Ready.
        let p = plan(&v1, &[], &[&revision], now);
        assert_eq!(p.create_pods.len(), 1);
        let pod0 = p.create_pods[0].clone();
        assert_eq!(pod0["metadata"]["name"], "db-0");
        assert_eq!(pod0["metadata"]["labels"][REVISION_LABEL], revision["metadata"]["name"]);
        assert_eq!(pod0["spec"]["subdomain"], "db");
        assert!(plan(&v1, &[&pod0], &[&revision], now).create_pods.is_empty());
        let pod0 = running(pod0);
        let pod1 = running(plan(&v1, &[&pod0], &[&revision], now).create_pods[0].clone());
        assert_eq!(pod1["metadata"]["name"], "db-1");

        // A new template: a second revision, then the highest ordinal goes first.
        let mut v2 = set(2, "db:2");
        v2["status"] = json!({"currentRevision": revision["metadata"]["name"]});
        let second = plan(&v2, &[&pod0, &pod1], &[&revision], now).create_revision.unwrap();
        assert_eq!(second["revision"], 2);
        let p = plan(&v2, &[&pod0, &pod1], &[&revision, &second], now);
        assert_eq!(p.delete_pods, vec!["db-1".to_owned()]);
        let status = p.status.unwrap();
        assert_eq!(status["updateRevision"], second["metadata"]["name"]);
        assert_eq!(status["currentRevision"], revision["metadata"]["name"]);

        // With partition 1, ordinal 0 keeps the old revision.
        v2["spec"]["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}});
        let new1 = running(pod(&v2, &second, 1));
        assert!(plan(&v2, &[&pod0, &new1], &[&revision, &second], now).delete_pods.is_empty());
    }
}
