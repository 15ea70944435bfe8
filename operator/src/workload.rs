//! Deployments and StatefulSets as the operator reads them: which revision a workload is at
//! and whether its rollout to it has completed (what `onRolloutOf` means for caches and
//! captures alike), and which revision each of its pods runs.

use std::collections::BTreeMap;

use biometrics_crds::v1alpha1::WorkloadKind;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};

/// A workload's revision, as its own controller numbers it, and whether its rollout to it is
/// complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The revision the workload's controller gave its latest pod template: a Deployment's
    /// `deployment.kubernetes.io/revision`, a StatefulSet's `status.updateRevision`. `None`
    /// until the controller has recorded one. Never derived from the template itself, whose
    /// serialised form changes with client libraries and server-side defaulting.
    pub revision: Option<String>,
    /// Every replica runs the template and is available, and the controller has seen the
    /// latest spec (`kubectl rollout status` would say "successfully rolled out").
    pub complete: bool,
}

/// The annotation the Deployment controller sets to the revision of the newest ReplicaSet.
pub const DEPLOYMENT_REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// A Deployment's rollout.
pub fn deployment_rollout(d: &Deployment) -> Rollout {
    let revision = d.metadata.annotations.as_ref().and_then(|a| a.get(DEPLOYMENT_REVISION_ANNOTATION)).cloned();
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let complete = d.status.as_ref().is_some_and(|s| {
        s.observed_generation >= d.metadata.generation
            && s.updated_replicas.unwrap_or(0) >= wanted
            && s.replicas.unwrap_or(0) == s.updated_replicas.unwrap_or(0)
            && s.available_replicas.unwrap_or(0) >= s.updated_replicas.unwrap_or(0)
    });
    Rollout { revision, complete }
}

/// A StatefulSet's rollout.
pub fn statefulset_rollout(s: &StatefulSet) -> Rollout {
    let revision = s.status.as_ref().and_then(|st| st.update_revision.clone());
    let wanted = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let complete = s.status.as_ref().is_some_and(|st| {
        st.observed_generation >= s.metadata.generation
            && st.updated_replicas.unwrap_or(0) >= wanted
            && st.replicas == st.updated_replicas.unwrap_or(0)
            && st.available_replicas.unwrap_or(0) >= wanted
            && (st.update_revision.is_none() || st.current_revision == st.update_revision)
    });
    Rollout { revision, complete }
}

/// Whether a Deployment is paused (`kubectl rollout pause`): its rollout does not progress
/// until resumed.
pub fn deployment_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

/// Whether a Deployment replaces its pods all at once (`strategy.type: Recreate`): its old
/// pods are gone before the new ones start.
pub fn deployment_recreates(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// The label the Deployment controller puts on a ReplicaSet's pods: its template's hash.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The label the StatefulSet controller puts on its pods: the revision they run.
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// The label telling a `kind`'s pods apart by revision.
pub fn revision_label(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => POD_TEMPLATE_HASH_LABEL,
        WorkloadKind::StatefulSet => CONTROLLER_REVISION_HASH_LABEL,
    }
}

/// The pod-template hash of each revision of the Deployment named `deployment`, from its
/// ReplicaSets (those it controls: an owner reference of kind Deployment with its name).
/// A `rollout undo` moves an old ReplicaSet to a new revision number, so a hash appears
/// once, at its latest revision.
pub fn deployment_revision_hashes(deployment: &str, replicasets: &[ReplicaSet]) -> BTreeMap<String, String> {
    let mut hashes = BTreeMap::new();
    for rs in replicasets {
        let owned = rs.metadata.owner_references.as_ref().is_some_and(|o| {
            o.iter().any(|r| r.kind == "Deployment" && r.name == deployment && r.controller == Some(true))
        });
        let revision = rs.metadata.annotations.as_ref().and_then(|a| a.get(DEPLOYMENT_REVISION_ANNOTATION));
        let hash = rs.metadata.labels.as_ref().and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL));
        if let (true, Some(revision), Some(hash)) = (owned, revision, hash) {
            hashes.insert(revision.clone(), hash.clone());
        }
    }
    hashes
}

/// The pod-template hash of a StatefulSet's revision: its pods' `controller-revision-hash`
/// is the revision's name itself.
pub fn statefulset_revision_hash(revision: &str) -> String {
    revision.to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn replicaset(owner: &str, revision: &str, hash: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{owner}-{hash}"),
                "annotations": {DEPLOYMENT_REVISION_ANNOTATION: revision},
                "labels": {POD_TEMPLATE_HASH_LABEL: hash},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": owner, "uid": "u", "controller": true}]},
            "spec": {"selector": {}}
        }))
        .unwrap()
    }

    #[test]
    fn a_deployment_s_revisions_map_to_its_replicasets_hashes() {
        let sets = [
            replicaset("app", "6", "5d8f7c9b4"),
            replicaset("app", "7", "6c4b8d7f5"),
            replicaset("other", "7", "aaaa"),
        ];
        let hashes = deployment_revision_hashes("app", &sets);
        assert_eq!(hashes.get("6").map(String::as_str), Some("5d8f7c9b4"));
        assert_eq!(
            hashes.get("7").map(String::as_str),
            Some("6c4b8d7f5"),
            "another Deployment's ReplicaSet is not counted"
        );
        assert_eq!(hashes.len(), 2);
        // `rollout undo` to revision 6: its ReplicaSet is revision 8 now, and 6 is gone.
        let undone = [replicaset("app", "8", "5d8f7c9b4"), replicaset("app", "7", "6c4b8d7f5")];
        let hashes = deployment_revision_hashes("app", &undone);
        assert_eq!(hashes.get("8").map(String::as_str), Some("5d8f7c9b4"));
        assert!(!hashes.contains_key("6"));
    }

    #[test]
    fn paused_and_recreate_deployments_are_told_apart() {
        let d = |spec: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({"metadata": {"name": "app"}, "spec": spec})).unwrap()
        };
        let rolling = d(json!({"selector": {}, "template": {}}));
        assert!(!deployment_paused(&rolling) && !deployment_recreates(&rolling));
        assert!(deployment_paused(&d(json!({"selector": {}, "template": {}, "paused": true}))));
        assert!(deployment_recreates(&d(json!({"selector": {}, "template": {}, "strategy": {"type": "Recreate"}}))));
        assert_eq!(revision_label(WorkloadKind::StatefulSet), "controller-revision-hash");
        assert_eq!(statefulset_revision_hash("db-6c4b8d7f5"), "db-6c4b8d7f5");
    }
}
