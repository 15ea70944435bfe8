//! Defaulting of built-in kinds where clients read the defaults: the fields
//! kube-apiserver's `SetDefaults_*` fill in on every write, for the workloads, their pod
//! templates, Pods and Services. A field already set is never changed.

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// Sets `pointer` (under an existing or created parent) when it is absent.
fn default_at(object: &mut Value, pointer: &str, value: Value) {
    let (parent, field) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let mut node = object;
    for key in parent.split('/').filter(|k| !k.is_empty()) {
        if !node.is_object() {
            return;
        }
        node = node.as_object_mut().expect("checked").entry(key).or_insert_with(|| json!({}));
    }
    if let Some(map) = node.as_object_mut() {
        map.entry(field).or_insert(value);
    }
}

/// kube's pull policy default: `Always` for `:latest` or no tag, else `IfNotPresent`.
fn pull_policy(image: &str) -> &'static str {
    let after_slash = image.rsplit('/').next().unwrap_or(image);
    let untagged = !after_slash.contains(':') && !image.contains('@');
    if untagged || after_slash.ends_with(":latest") { "Always" } else { "IfNotPresent" }
}

fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default_at(spec, "/dnsPolicy", json!("ClusterFirst"));
    default_at(spec, "/restartPolicy", json!("Always"));
    default_at(spec, "/schedulerName", json!("default-scheduler"));
    default_at(spec, "/securityContext", json!({}));
    default_at(spec, "/terminationGracePeriodSeconds", json!(30));
    default_at(spec, "/enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        for container in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let image = container.get("image").and_then(Value::as_str).unwrap_or_default().to_owned();
            default_at(container, "/imagePullPolicy", json!(pull_policy(&image)));
            default_at(container, "/terminationMessagePath", json!("/dev/termination-log"));
            default_at(container, "/terminationMessagePolicy", json!("File"));
            for port in container.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                default_at(port, "/protocol", json!("TCP"));
            }
        }
    }
}

fn template(object: &mut Value) {
    if let Some(spec) = object.pointer_mut("/spec/template/spec") {
        pod_spec(spec);
    }
}

/// Fills in the defaults of `object`, of type `rt`.
pub fn apply(rt: &ResourceType, object: &mut Value) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => {
            if let Some(spec) = object.get_mut("spec") {
                pod_spec(spec);
            }
        }
        ("", "Service") => {
            default_at(object, "/spec/type", json!("ClusterIP"));
            default_at(object, "/spec/sessionAffinity", json!("None"));
            for port in object.pointer_mut("/spec/ports").and_then(Value::as_array_mut).into_iter().flatten() {
                default_at(port, "/protocol", json!("TCP"));
                if let Some(p) = port.get("port").cloned() {
                    default_at(port, "/targetPort", p);
                }
            }
        }
        ("apps", "Deployment") => {
            default_at(object, "/spec/replicas", json!(1));
            default_at(object, "/spec/strategy/type", json!("RollingUpdate"));
            if object.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                default_at(object, "/spec/strategy/rollingUpdate/maxUnavailable", json!("25%"));
                default_at(object, "/spec/strategy/rollingUpdate/maxSurge", json!("25%"));
            }
            default_at(object, "/spec/revisionHistoryLimit", json!(10));
            default_at(object, "/spec/progressDeadlineSeconds", json!(600));
            template(object);
        }
        ("apps", "ReplicaSet") => {
            default_at(object, "/spec/replicas", json!(1));
            template(object);
        }
        ("apps", "StatefulSet") => {
            default_at(object, "/spec/replicas", json!(1));
            default_at(object, "/spec/podManagementPolicy", json!("OrderedReady"));
            default_at(object, "/spec/updateStrategy/type", json!("RollingUpdate"));
            if object.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                default_at(object, "/spec/updateStrategy/rollingUpdate/partition", json!(0));
            }
            default_at(object, "/spec/revisionHistoryLimit", json!(10));
            default_at(object, "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted", json!("Retain"));
            default_at(object, "/spec/persistentVolumeClaimRetentionPolicy/whenScaled", json!("Retain"));
            template(object);
        }
        ("apps", "DaemonSet") => {
            default_at(object, "/spec/updateStrategy/type", json!("RollingUpdate"));
            if object.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                default_at(object, "/spec/updateStrategy/rollingUpdate/maxUnavailable", json!(1));
                default_at(object, "/spec/updateStrategy/rollingUpdate/maxSurge", json!(0));
            }
            default_at(object, "/spec/revisionHistoryLimit", json!(10));
            template(object);
        }
        ("batch", "Job") | ("", "ReplicationController") | ("", "PodTemplate") => template(object),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn defaulted(group: &str, plural: &str, mut object: Value) -> Value {
        let registry = Registry::default();
        apply(registry.get(group, "v1", plural).unwrap(), &mut object);
        object
    }

    #[test]
    fn a_stateful_set_gets_what_kubectl_rollout_reads() {
        let sts = defaulted(
            "apps",
            "statefulsets",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "db:1", "ports": [{"containerPort": 1}]}]}}}}),
        );
        assert_eq!(sts["spec"]["updateStrategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
        assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
        let c = &sts["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            (c["imagePullPolicy"].as_str(), c["ports"][0]["protocol"].as_str()),
            (Some("IfNotPresent"), Some("TCP"))
        );
    }

    #[test]
    fn what_is_set_stays() {
        let d = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}, "template": {"spec": {"containers": [{"name": "c", "image": "web"}]}}}}),
        );
        assert_eq!(d["spec"]["replicas"], 0);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "Always");
    }
}
