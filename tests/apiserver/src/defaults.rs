//! Defaulting of built-in kinds where clients read the defaults: the fields
//! kube-apiserver's `SetDefaults_*` fill in on every write, for the workloads, their pod
//! templates, Pods and Services.
//!
//! Two rules, as the Go types make them. A pointer field (`replicas`, `backoffLimit`,
//! `enableServiceLinks`) is defaulted only when absent, so a client's `0` or `false` stays.
//! A non-pointer field (strings, a probe's `periodSeconds`, a service port's `targetPort`)
//! cannot be absent in Go, so kube-apiserver defaults it when it holds its zero value; a
//! protobuf body carries such zeros for every field the client left alone.

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// Sets `pointer` (under an existing or created parent) when it is absent: the rule of a Go
/// pointer field.
fn default_at(object: &mut Value, pointer: &str, value: Value) {
    set_at(object, pointer, value, |_| false);
}

/// Sets `pointer` when it is absent or holds Go's zero value (`""`, `0`, `false`, null): the
/// rule of a Go non-pointer field, whose zero is what a client that left it alone sends.
fn default_zero_at(object: &mut Value, pointer: &str, value: Value) {
    set_at(object, pointer, value, |v| match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    });
}

fn set_at(object: &mut Value, pointer: &str, value: Value, unset: impl Fn(&Value) -> bool) {
    let (parent, field) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let mut node = object;
    for key in parent.split('/').filter(|k| !k.is_empty()) {
        if !node.is_object() {
            return;
        }
        node = node.as_object_mut().expect("checked").entry(key).or_insert_with(|| json!({}));
    }
    if let Some(map) = node.as_object_mut() {
        let slot = map.entry(field).or_insert(Value::Null);
        if slot.is_null() || unset(slot) {
            *slot = value;
        }
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
    default_zero_at(spec, "/dnsPolicy", json!("ClusterFirst"));
    default_zero_at(spec, "/restartPolicy", json!("Always"));
    default_zero_at(spec, "/schedulerName", json!("default-scheduler"));
    default_at(spec, "/securityContext", json!({}));
    default_at(spec, "/terminationGracePeriodSeconds", json!(30));
    default_at(spec, "/enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        for container in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let image = container.get("image").and_then(Value::as_str).unwrap_or_default().to_owned();
            default_zero_at(container, "/imagePullPolicy", json!(pull_policy(&image)));
            default_zero_at(container, "/terminationMessagePath", json!("/dev/termination-log"));
            default_zero_at(container, "/terminationMessagePolicy", json!("File"));
            for port in container.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                default_zero_at(port, "/protocol", json!("TCP"));
            }
            for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(probe) = container.get_mut(kind).filter(|p| p.is_object()) {
                    probe_defaults(probe);
                }
            }
        }
    }
}

/// `SetDefaults_Probe` and `SetDefaults_HTTPGetAction`: every one of these is a non-pointer
/// field in Go, defaulted when zero.
fn probe_defaults(probe: &mut Value) {
    default_zero_at(probe, "/timeoutSeconds", json!(1));
    default_zero_at(probe, "/periodSeconds", json!(10));
    default_zero_at(probe, "/successThreshold", json!(1));
    default_zero_at(probe, "/failureThreshold", json!(3));
    if let Some(get) = probe.get_mut("httpGet").filter(|g| g.is_object()) {
        default_zero_at(get, "/path", json!("/"));
        default_zero_at(get, "/scheme", json!("HTTP"));
    }
}

/// `SetDefaults_Job` on a Job's spec (every field here is a pointer in Go).
fn job_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    let absent = |spec: &Value, k: &str| spec.get(k).is_none_or(Value::is_null);
    if absent(spec, "completions") && absent(spec, "parallelism") {
        default_at(spec, "/completions", json!(1));
    }
    default_at(spec, "/parallelism", json!(1));
    let backoff = if absent(spec, "backoffLimitPerIndex") { 6 } else { i64::from(i32::MAX) };
    default_at(spec, "/backoffLimit", json!(backoff));
    default_at(spec, "/completionMode", json!("NonIndexed"));
    default_at(spec, "/suspend", json!(false));
    let replacement = if absent(spec, "podFailurePolicy") { "TerminatingOrFailed" } else { "Failed" };
    default_at(spec, "/podReplacementPolicy", json!(replacement));
    default_at(spec, "/manualSelector", json!(false));
    let rules = spec.pointer_mut("/podFailurePolicy/rules").and_then(Value::as_array_mut);
    for rule in rules.into_iter().flatten() {
        for pattern in rule.get_mut("onPodConditions").and_then(Value::as_array_mut).into_iter().flatten() {
            default_zero_at(pattern, "/status", json!("True"));
        }
    }
}

fn template(object: &mut Value) {
    if let Some(spec) = object.pointer_mut("/spec/template/spec") {
        pod_spec(spec);
    }
}

/// What kube-apiserver's storage adds to a new object of type `rt` beyond defaults: a
/// Job without `manualSelector` gets the selector on its own uid, and its template the
/// labels that select it (`job-name` and `controller-uid`, plain and under
/// `batch.kubernetes.io/`), where the user has not set them.
pub fn prepare_for_create(rt: &ResourceType, object: &mut Value) {
    if (rt.group.as_str(), rt.kind.as_str()) != ("batch", "Job")
        || object.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true)
        || object.pointer("/spec/template").is_none()
    {
        return;
    }
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (name, uid) = (text("/metadata/name"), text("/metadata/uid"));
    let labels = [
        ("job-name", &name),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("batch.kubernetes.io/controller-uid", &uid),
    ];
    // (`default_at` takes no escaped pointers, and these keys hold a `/`.)
    default_at(object, "/spec/template/metadata/labels", json!({}));
    if let Some(map) = object.pointer_mut("/spec/template/metadata/labels").and_then(Value::as_object_mut) {
        for (label, value) in labels {
            map.entry(label).or_insert_with(|| json!(value));
        }
    }
    default_at(object, "/spec/selector/matchLabels", json!({}));
    if let Some(map) = object.pointer_mut("/spec/selector/matchLabels").and_then(Value::as_object_mut) {
        map.entry("batch.kubernetes.io/controller-uid").or_insert_with(|| json!(uid));
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
            default_zero_at(object, "/spec/type", json!("ClusterIP"));
            default_zero_at(object, "/spec/sessionAffinity", json!("None"));
            for port in object.pointer_mut("/spec/ports").and_then(Value::as_array_mut).into_iter().flatten() {
                default_zero_at(port, "/protocol", json!("TCP"));
                // targetPort is an IntOrString value, not a pointer: 0 and "" mean unset.
                if let Some(p) = port.get("port").cloned() {
                    default_zero_at(port, "/targetPort", p);
                }
            }
        }
        ("apps", "Deployment") => {
            default_at(object, "/spec/replicas", json!(1));
            default_zero_at(object, "/spec/strategy/type", json!("RollingUpdate"));
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
            default_zero_at(object, "/spec/podManagementPolicy", json!("OrderedReady"));
            default_zero_at(object, "/spec/updateStrategy/type", json!("RollingUpdate"));
            if object.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                default_at(object, "/spec/updateStrategy/rollingUpdate/partition", json!(0));
            }
            default_at(object, "/spec/revisionHistoryLimit", json!(10));
            default_zero_at(object, "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted", json!("Retain"));
            default_zero_at(object, "/spec/persistentVolumeClaimRetentionPolicy/whenScaled", json!("Retain"));
            template(object);
        }
        ("apps", "DaemonSet") => {
            default_zero_at(object, "/spec/updateStrategy/type", json!("RollingUpdate"));
            if object.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                default_at(object, "/spec/updateStrategy/rollingUpdate/maxUnavailable", json!(1));
                default_at(object, "/spec/updateStrategy/rollingUpdate/maxSurge", json!(0));
            }
            default_at(object, "/spec/revisionHistoryLimit", json!(10));
            template(object);
        }
        ("batch", "Job") => {
            if let Some(spec) = object.get_mut("spec") {
                job_spec(spec);
            }
            template(object);
        }
        ("batch", "CronJob") => {
            default_zero_at(object, "/spec/concurrencyPolicy", json!("Allow"));
            default_at(object, "/spec/suspend", json!(false));
            default_at(object, "/spec/successfulJobsHistoryLimit", json!(3));
            default_at(object, "/spec/failedJobsHistoryLimit", json!(1));
            if let Some(spec) = object.pointer_mut("/spec/jobTemplate/spec/template/spec") {
                pod_spec(spec);
            }
        }
        ("", "ReplicationController") | ("", "PodTemplate") => template(object),
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

    #[test]
    fn a_non_pointer_zero_is_defaulted_and_a_pointer_zero_stays() {
        let probe = json!({"timeoutSeconds": 0, "periodSeconds": 5, "successThreshold": 0, "failureThreshold": 0, "httpGet": {"path": "", "port": 80}});
        let pod = defaulted(
            "",
            "pods",
            json!({"spec": {"terminationGracePeriodSeconds": 0, "enableServiceLinks": false, "restartPolicy": "", "containers": [{"name": "c", "image": "web:1", "readinessProbe": probe}]}}),
        );
        assert_eq!(
            (&pod["spec"]["terminationGracePeriodSeconds"], &pod["spec"]["enableServiceLinks"]),
            (&json!(0), &json!(false))
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][0]["readinessProbe"],
            json!({"timeoutSeconds": 1, "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 3, "httpGet": {"path": "/", "port": 80, "scheme": "HTTP"}})
        );
        let job = defaulted(
            "batch",
            "jobs",
            json!({"spec": {"backoffLimit": 0, "parallelism": 2, "template": {"spec": {}}}}),
        );
        assert_eq!((&job["spec"]["backoffLimit"], &job["spec"]["parallelism"]), (&json!(0), &json!(2)));
        assert_eq!(job["spec"].get("completions"), None, "only when both are unset");
        let indexed = defaulted("batch", "jobs", json!({"spec": {"backoffLimitPerIndex": 1}}));
        assert_eq!(indexed["spec"]["backoffLimit"], i32::MAX);
    }

    #[test]
    fn a_new_job_selects_its_pods_by_its_uid() {
        let registry = Registry::default();
        let jobs = registry.get("batch", "v1", "jobs").unwrap();
        let mut job = json!({"metadata": {"name": "batch", "uid": "u1"},
            "spec": {"template": {"metadata": {"labels": {"app": "batch", "job-name": "mine"}}, "spec": {}}}});
        prepare_for_create(jobs, &mut job);
        assert_eq!(job["spec"]["selector"], json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}));
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"],
            json!({"app": "batch", "job-name": "mine", "batch.kubernetes.io/job-name": "batch",
                "controller-uid": "u1", "batch.kubernetes.io/controller-uid": "u1"}),
            "a label the user set is kept"
        );
        let mut manual = json!({"metadata": {"name": "batch", "uid": "u1"},
            "spec": {"manualSelector": true, "selector": {"matchLabels": {"app": "batch"}}, "template": {"spec": {}}}});
        let before = manual.clone();
        prepare_for_create(jobs, &mut manual);
        assert_eq!(manual, before);
    }
}
