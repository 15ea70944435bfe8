//! The Deployment controller's decision: the ReplicaSet of the current template (created
//! with the next revision), how far to scale it and the old ones under the strategy
//! (RollingUpdate's maxSurge / maxUnavailable, or Recreate), which old ReplicaSets fall out
//! of the history, and the status `kubectl rollout status` reads.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::workload::{
    POD_TEMPLATE_HASH, annotation, condition, controller_ref, int_at, int_or_percent, meta_str, status_condition,
    template_hash, without_hash,
};

/// The annotation a Deployment and its ReplicaSets carry the rollout revision in.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotations of a Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
];

/// A change to one existing ReplicaSet (a merge patch of its main resource).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSetChange {
    /// Its name.
    pub name: String,
    /// The merge patch.
    pub patch: Value,
}

/// What one sync of a Deployment does.
#[derive(Debug, Default, PartialEq)]
pub struct DeploymentPlan {
    /// The ReplicaSet of the current template, when there is none yet.
    pub create: Option<Value>,
    /// Scaling and revision changes of existing ReplicaSets.
    pub changes: Vec<ReplicaSetChange>,
    /// Old ReplicaSets beyond `revisionHistoryLimit`.
    pub delete: Vec<String>,
    /// The revision annotation of the Deployment, when it must change.
    pub revision: Option<String>,
    /// The status to write, when it changed.
    pub status: Option<Value>,
}

fn revision(rs: &Value) -> i64 {
    annotation(rs, REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn spec_replicas(rs: &Value) -> i64 {
    int_at(rs, "/spec/replicas", 1)
}

fn status_of(rs: &Value, field: &str) -> i64 {
    int_at(rs, &format!("/status/{field}"), 0)
}

fn scale(rs: &Value, replicas: i64) -> ReplicaSetChange {
    ReplicaSetChange { name: meta_str(rs, "name").to_owned(), patch: json!({"spec": {"replicas": replicas}}) }
}

/// The ReplicaSet of the Deployment's template with `replicas` and revision `revision`.
fn new_replica_set(deployment: &Value, replicas: i64, revision: i64, max_surge: i64) -> Value {
    let template = deployment.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let hash = template_hash(&without_hash(&template), int_at(deployment, "/status/collisionCount", 0));
    let mut template = template;
    template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
    let mut selector = deployment.pointer("/spec/selector").cloned().unwrap_or_else(|| json!({}));
    selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
    let mut annotations: Map<String, Value> = deployment
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let desired = int_at(deployment, "/spec/replicas", 1);
    annotations.insert(REVISION.into(), json!(revision.to_string()));
    annotations.insert("deployment.kubernetes.io/desired-replicas".into(), json!(desired.to_string()));
    annotations.insert("deployment.kubernetes.io/max-replicas".into(), json!((desired + max_surge).to_string()));
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", meta_str(deployment, "name")),
            "namespace": meta_str(deployment, "namespace"),
            "labels": template["metadata"]["labels"].clone(),
            "annotations": annotations,
            "ownerReferences": [controller_ref(deployment)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": int_at(deployment, "/spec/minReadySeconds", 0),
            "selector": selector,
            "template": template,
        },
    })
}

/// One sync of `deployment`, given the ReplicaSets it controls and how many active pods the
/// ReplicaSets of older templates still have.
pub fn plan(deployment: &Value, owned: &[&Value], old_pods: usize, now: Timestamp) -> DeploymentPlan {
    let mut plan = DeploymentPlan::default();
    let replicas = int_at(deployment, "/spec/replicas", 1).max(0);
    let template = without_hash(deployment.pointer("/spec/template").unwrap_or(&Value::Null));
    let new =
        owned.iter().copied().find(|rs| without_hash(rs.pointer("/spec/template").unwrap_or(&Value::Null)) == template);
    let mut old: Vec<&Value> = owned.iter().copied().filter(|rs| Some(*rs) != new).collect();
    old.sort_by_key(|rs| (revision(rs), meta_str(rs, "creationTimestamp").to_owned()));
    let rolling = deployment.pointer("/spec/strategy/type").and_then(Value::as_str) != Some("Recreate");
    let rolling_update = deployment.pointer("/spec/strategy/rollingUpdate");
    let (surge, unavailable) = if rolling {
        let surge = int_or_percent(rolling_update.and_then(|r| r.get("maxSurge")), replicas, "25%", true);
        let unavailable = int_or_percent(rolling_update.and_then(|r| r.get("maxUnavailable")), replicas, "25%", false);
        // Both zero would block every rollout; kube-controller-manager allows one unavailable.
        (surge, if surge == 0 && unavailable == 0 { 1 } else { unavailable })
    } else {
        (0, 0)
    };
    let paused = deployment.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let max_old_revision = old.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    let mut progressed = false;

    if let Some(new) = new {
        let current = if revision(new) <= max_old_revision { max_old_revision + 1 } else { revision(new) };
        if current != revision(new) {
            // A template seen before (rollout undo) becomes the newest revision again.
            plan.changes.push(ReplicaSetChange {
                name: meta_str(new, "name").to_owned(),
                patch: json!({"metadata": {"annotations": {REVISION: current.to_string()}}}),
            });
        }
        if annotation(deployment, REVISION) != Some(current.to_string().as_str()) {
            plan.revision = Some(current.to_string());
        }
    }

    if !paused {
        let old_replicas: i64 = old.iter().map(|rs| spec_replicas(rs)).sum();
        match new {
            None if !rolling && old_replicas > 0 => {
                plan.changes.extend(old.iter().filter(|rs| spec_replicas(rs) > 0).map(|rs| scale(rs, 0)))
            }
            None if !rolling && old_pods > 0 => {}
            None => {
                let initial = if rolling { (replicas + surge - old_replicas).clamp(0, replicas) } else { replicas };
                let revision = max_old_revision + 1;
                plan.create = Some(new_replica_set(deployment, initial, revision, surge));
                plan.revision = Some(revision.to_string());
            }
            Some(new) if !rolling => {
                if old_replicas > 0 {
                    plan.changes.extend(old.iter().filter(|rs| spec_replicas(rs) > 0).map(|rs| scale(rs, 0)));
                } else if old_pods == 0 && spec_replicas(new) != replicas {
                    plan.changes.push(scale(new, replicas));
                }
            }
            Some(new) => plan.changes.extend(roll(new, &old, replicas, surge, unavailable)),
        }
        progressed = plan.create.is_some() || plan.changes.iter().any(|c| c.patch.get("spec").is_some());
        plan.delete = history_beyond_limit(deployment, &old);
    }
    plan.status = status(deployment, new, &old, replicas, unavailable, paused, progressed, now);
    plan
}

/// RollingUpdate: scale the new ReplicaSet up within maxSurge, else the old ones down
/// within maxUnavailable (unhealthy replicas first), as kube-controller-manager does.
fn roll(new: &Value, old: &[&Value], replicas: i64, surge: i64, unavailable: i64) -> Vec<ReplicaSetChange> {
    let new_replicas = spec_replicas(new);
    let all: i64 = new_replicas + old.iter().map(|rs| spec_replicas(rs)).sum::<i64>();
    if new_replicas > replicas {
        return vec![scale(new, replicas)];
    }
    if new_replicas < replicas {
        let allowed = replicas + surge - all;
        if allowed > 0 {
            return vec![scale(new, (new_replicas + allowed).min(replicas))];
        }
    }
    let min_available = replicas - unavailable;
    let new_unavailable = (new_replicas - status_of(new, "availableReplicas")).max(0);
    let max_scaled_down = all - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut targets: Vec<(&Value, i64)> = old.iter().map(|rs| (*rs, spec_replicas(rs))).collect();
    // Unhealthy old replicas go first: removing them costs no availability.
    let mut cleaned = 0;
    for (rs, target) in &mut targets {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = (*target - status_of(rs, "availableReplicas")).max(0);
        let down = unhealthy.min(max_scaled_down - cleaned);
        *target -= down;
        cleaned += down;
    }
    let available: i64 =
        status_of(new, "availableReplicas") + old.iter().map(|rs| status_of(rs, "availableReplicas")).sum::<i64>();
    let mut budget = (available - min_available).max(0);
    for (_, target) in &mut targets {
        let down = (*target).min(budget);
        *target -= down;
        budget -= down;
    }
    targets
        .into_iter()
        .filter(|(rs, target)| spec_replicas(rs) != *target)
        .map(|(rs, target)| scale(rs, target))
        .collect()
}

fn history_beyond_limit(deployment: &Value, old: &[&Value]) -> Vec<String> {
    let limit = usize::try_from(int_at(deployment, "/spec/revisionHistoryLimit", 10).max(0)).unwrap_or(0);
    let idle: Vec<&&Value> = old
        .iter()
        .filter(|rs| {
            spec_replicas(rs) == 0 && status_of(rs, "replicas") == 0 && super::workload::terminating(rs).eq(&false)
        })
        .collect();
    idle.iter().take(idle.len().saturating_sub(limit)).map(|rs| meta_str(rs, "name").to_owned()).collect()
}

#[allow(clippy::too_many_arguments)]
fn status(
    deployment: &Value,
    new: Option<&Value>,
    old: &[&Value],
    replicas: i64,
    max_unavailable: i64,
    paused: bool,
    progressed: bool,
    now: Timestamp,
) -> Option<Value> {
    let all: Vec<&Value> = new.into_iter().chain(old.iter().copied()).collect();
    let sum = |field: &str| all.iter().map(|rs| status_of(rs, field)).sum::<i64>();
    let total_spec: i64 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let available = sum("availableReplicas");
    let updated = new.map_or(0, |rs| status_of(rs, "replicas"));
    let previous = deployment.get("status").cloned().unwrap_or_else(|| json!({}));
    let previous_condition = |kind: &str| status_condition(deployment, kind);
    let mut status = json!({
        "observedGeneration": int_at(deployment, "/metadata/generation", 0),
        "replicas": sum("replicas"),
        "updatedReplicas": updated,
        "readyReplicas": sum("readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": (total_spec - available).max(0),
    });
    if let Some(c) = previous.get("collisionCount") {
        status["collisionCount"] = c.clone();
    }
    let counts_moved = ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"]
        .iter()
        .any(|k| previous.get(*k).and_then(Value::as_i64).unwrap_or(0) != status[*k].as_i64().unwrap_or(0));
    let available_condition = if available >= replicas - max_unavailable {
        condition(
            previous_condition("Available"),
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
            true,
        )
    } else {
        condition(
            previous_condition("Available"),
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
            true,
        )
    };
    let rs_name = new.map(|rs| meta_str(rs, "name").to_owned()).unwrap_or_default();
    let complete = new.is_some() && updated == replicas && available >= replicas && sum("replicas") == replicas;
    let progressing_before = previous_condition("Progressing");
    let deadline = int_at(deployment, "/spec/progressDeadlineSeconds", 600);
    let last_progress = progressing_before
        .and_then(|c| c.get("lastUpdateTime"))
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok());
    let timed_out_before =
        progressing_before.and_then(|c| c.get("reason")).and_then(Value::as_str) == Some("ProgressDeadlineExceeded");
    let progressing = if paused {
        condition(progressing_before, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", now, true)
    } else if complete {
        condition(
            progressing_before,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            now,
            true,
        )
    } else if progressed || counts_moved && !timed_out_before {
        let mut c = condition(
            progressing_before,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs_name}\" is progressing."),
            now,
            true,
        );
        c["lastUpdateTime"] = json!(now.to_string());
        c
    } else if last_progress.is_some_and(|t| now.duration_since(t).as_secs() > deadline) || timed_out_before {
        condition(
            progressing_before,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            now,
            true,
        )
    } else {
        match progressing_before {
            Some(c) => c.clone(),
            None => condition(
                None,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{rs_name}\" is progressing."),
                now,
                true,
            ),
        }
    };
    status["conditions"] = json!([available_condition, progressing]);
    // Fields someone else keeps in status are left alone, and do not make every sync write.
    let mut merged = previous.clone();
    json_patch::merge(&mut merged, &status);
    (merged != previous).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "d1", "generation": 1, "annotations": {"kubernetes.io/change-cause": "v1"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}},
        })
    }

    /// The ReplicaSet `plan` would create, with its pods all available.
    fn settled(d: &Value, replicas: i64, available: i64) -> Value {
        let mut rs = plan(d, &[], 0, Timestamp::now()).create.unwrap();
        rs["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        rs["spec"]["replicas"] = json!(replicas);
        rs["status"] = json!({"replicas": replicas, "readyReplicas": available, "availableReplicas": available});
        rs
    }

    #[test]
    fn the_first_replica_set_carries_revision_one_and_the_hash() {
        let d = deployment(3, "web:1");
        let plan = plan(&d, &[], 0, Timestamp::now());
        let rs = plan.create.unwrap();
        let hash = rs["metadata"]["labels"][POD_TEMPLATE_HASH].as_str().unwrap().to_owned();
        assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(rs["spec"]["selector"]["matchLabels"][POD_TEMPLATE_HASH], hash);
        assert_eq!(rs["spec"]["template"]["metadata"]["labels"][POD_TEMPLATE_HASH], hash);
        assert_eq!(rs["spec"]["replicas"], 3);
        assert_eq!(rs["metadata"]["annotations"][REVISION], "1");
        assert_eq!(rs["metadata"]["annotations"]["kubernetes.io/change-cause"], "v1");
        assert_eq!(plan.revision.as_deref(), Some("1"));
    }

    #[test]
    fn a_rolling_update_never_goes_below_replicas_with_max_unavailable_zero() {
        let v1 = deployment(3, "web:1");
        let old = settled(&v1, 3, 3);
        let v2 = deployment(3, "web:2");
        // The new set starts at the surge: one pod.
        let p = plan(&v2, &[&old], 3, Timestamp::now());
        let mut new = p.create.unwrap();
        assert_eq!(new["spec"]["replicas"], 1);
        assert_eq!(new["metadata"]["annotations"][REVISION], "2");
        new["status"] = json!({"replicas": 1, "availableReplicas": 0});
        // Nothing old goes while the new pod is not available.
        let p = plan(&v2, &[&old, &new], 3, Timestamp::now());
        assert!(p.changes.is_empty(), "{:?}", p.changes);
        // Once it is, one old pod goes.
        new["status"]["availableReplicas"] = json!(1);
        let p = plan(&v2, &[&old, &new], 3, Timestamp::now());
        assert_eq!(
            p.changes,
            vec![ReplicaSetChange { name: meta_str(&old, "name").into(), patch: json!({"spec": {"replicas": 2}}) }]
        );
    }

    #[test]
    fn recreate_empties_the_old_set_before_the_new_one_exists() {
        let mut v1 = deployment(2, "web:1");
        v1["spec"]["strategy"] = json!({"type": "Recreate"});
        let old = settled(&v1, 2, 2);
        let mut v2 = v1.clone();
        v2["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
        let p = plan(&v2, &[&old], 2, Timestamp::now());
        assert!(p.create.is_none());
        assert_eq!(p.changes[0].patch, json!({"spec": {"replicas": 0}}));
        let mut emptied = old.clone();
        emptied["spec"]["replicas"] = json!(0);
        assert!(plan(&v2, &[&emptied], 1, Timestamp::now()).create.is_none(), "waits for the old pods to go");
        assert_eq!(plan(&v2, &[&emptied], 0, Timestamp::now()).create.unwrap()["spec"]["replicas"], 2);
    }

    #[test]
    fn a_complete_rollout_reads_as_kubectl_rollout_status_expects() {
        let mut d = deployment(2, "web:1");
        let rs = settled(&d, 2, 2);
        let now = Timestamp::now();
        let status = plan(&d, &[&rs], 0, now).status.unwrap();
        assert_eq!((status["updatedReplicas"].as_i64(), status["availableReplicas"].as_i64()), (Some(2), Some(2)));
        assert_eq!(status["conditions"][1]["reason"], "NewReplicaSetAvailable");
        d["status"] = status;
        assert_eq!(plan(&d, &[&rs], 0, now).status, None, "a settled Deployment writes nothing");
    }

    #[test]
    fn undo_makes_the_old_template_the_newest_revision() {
        let v1 = deployment(1, "web:1");
        let mut first = settled(&v1, 0, 0);
        first["status"] = json!({});
        let v2 = deployment(1, "web:2");
        let mut second = settled(&v2, 1, 1);
        second["metadata"]["annotations"][REVISION] = json!("2");
        let p = plan(&v1, &[&first, &second], 1, Timestamp::now());
        assert_eq!(p.changes[0].patch, json!({"metadata": {"annotations": {REVISION: "3"}}}));
        assert_eq!(p.revision.as_deref(), Some("3"));
    }
}
