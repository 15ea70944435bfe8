//! Server-side printing: `meta.k8s.io/v1` Tables for `kubectl get`, with a CRD's
//! `additionalPrinterColumns` and the usual columns of the built-ins.

use serde_json::{Value, json};

use crate::registry::{PrinterColumn, ResourceType};

/// Whether the client asked for a Table (kubectl's server-side printing).
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

/// The value a simple JSONPath (`.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`) points at.
pub fn json_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}').trim_start_matches('$');
    let mut node = object;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            node = node.get(&after[..end])?;
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inner = &after[..end];
            rest = &after[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, value) = filter.split_once("==")?;
                let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
                node = node
                    .as_array()?
                    .iter()
                    .find(|item| item.get(field.trim()).and_then(Value::as_str) == Some(value))?;
            } else {
                node = node.get(inner.parse::<usize>().ok()?)?;
            }
        } else {
            return None;
        }
    }
    Some(node)
}

/// Kubernetes' human-readable duration (`45s`, `5m10s`, `3h`, `2d5h`, …).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 { format!("{m}m") } else { format!("{m}m{}s", s % 60) }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 { format!("{h}h") } else { format!("{h}h{}m", m % 60) }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 { format!("{d}d") } else { format!("{d}d{}h", h % 24) }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        let y = d / 365;
        if d % 365 == 0 { format!("{y}y") } else { format!("{y}y{}d", d % 365) }
    } else {
        format!("{}y", d / 365)
    }
}

fn age(timestamp: &str) -> Value {
    match timestamp.parse::<jiff::Timestamp>() {
        Ok(t) => json!(human_duration(jiff::Timestamp::now().duration_since(t).as_secs())),
        Err(_) => Value::Null,
    }
}

/// Pod columns kube-apiserver computes rather than reads from one field.
const POD_READY: &str = "<pod ready>";
const POD_STATUS: &str = "<pod status>";
const POD_RESTARTS: &str = "<pod restarts>";
const POD_READINESS_GATES: &str = "<pod readiness gates>";

/// `READY`, `STATUS` and `RESTARTS` of a pod.
#[derive(Debug, PartialEq, Eq)]
struct PodSummary {
    ready: String,
    status: String,
    restarts: String,
}

/// An init container that keeps running beside the app containers (a native sidecar).
fn restartable(container: Option<&Value>) -> bool {
    container.and_then(|c| c.get("restartPolicy")).and_then(Value::as_str) == Some("Always")
}

/// A container's `state` reason, or how it ended when it gave none (`Signal:N`,
/// `ExitCode:N`): `prefix` goes before either.
fn ended_reason(terminated: &Value, prefix: &str) -> String {
    match terminated.get("reason").and_then(Value::as_str).filter(|r| !r.is_empty()) {
        Some(reason) => format!("{prefix}{reason}"),
        None => match terminated.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
            Some(signal) => format!("{prefix}Signal:{signal}"),
            None => format!("{prefix}ExitCode:{}", terminated.get("exitCode").and_then(Value::as_i64).unwrap_or(0)),
        },
    }
}

/// Whether the object's condition of type `kind` is `True`.
fn condition_true(object: &Value, kind: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|conditions| conditions.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(kind)))
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

/// The pod's summary at `now`, as kube-apiserver's pod printer makes it: init containers
/// first (`Init:1/2`, `Init:CrashLoopBackOff`, `Init:Error`), whose restartable ones
/// (native sidecars) count among the containers once started; then the app containers,
/// the first one's reason winning; `Terminating` for a deleted pod not yet ended; and the
/// restarts with how long ago the latest was.
fn pod_summary(pod: &Value, now: jiff::Timestamp) -> PodSummary {
    let list = |pointer: &str| -> Vec<&Value> {
        pod.pointer(pointer).and_then(Value::as_array).into_iter().flatten().collect()
    };
    let text = |v: &Value, pointer: &str| v.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    let init_specs = list("/spec/initContainers");
    let init_spec =
        |name: &str| init_specs.iter().copied().find(|c| c.get("name").and_then(Value::as_str) == Some(name));
    let phase = text(pod, "/status/phase").unwrap_or_default();
    let mut reason = text(pod, "/status/reason").filter(|r| !r.is_empty()).unwrap_or_else(|| phase.clone());
    let scheduling_gated = list("/status/conditions").iter().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("PodScheduled")
            && c.get("reason").and_then(Value::as_str) == Some("SchedulingGated")
    });
    if scheduling_gated {
        reason = "SchedulingGated".into();
    }
    let total = list("/spec/containers").len() + init_specs.iter().filter(|c| restartable(Some(c))).count();
    let mut ready = 0;
    let restart_count = |c: &Value| c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
    let finished_at = |c: &Value| {
        c.pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    let (mut restarts, mut last_restart) = (0, None::<jiff::Timestamp>);
    let (mut sidecar_restarts, mut last_sidecar_restart) = (0, None::<jiff::Timestamp>);
    let mut initializing = false;
    let init_statuses = list("/status/initContainerStatuses");
    for (i, status) in init_statuses.iter().enumerate() {
        restarts += restart_count(status);
        last_restart = last_restart.max(finished_at(status));
        let spec = init_spec(status.get("name").and_then(Value::as_str).unwrap_or_default());
        if restartable(spec) {
            sidecar_restarts += restart_count(status);
            last_sidecar_restart = last_sidecar_restart.max(finished_at(status));
        }
        let terminated = status.pointer("/state/terminated");
        let waiting = text(status, "/state/waiting/reason").filter(|r| !r.is_empty() && r != "PodInitializing");
        if terminated.is_some_and(|t| t.get("exitCode").and_then(Value::as_i64).unwrap_or(0) == 0) {
            continue;
        }
        if restartable(spec) && status.get("started").and_then(Value::as_bool) == Some(true) {
            if status.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = match (terminated, waiting) {
            (Some(t), _) => ended_reason(t, "Init:"),
            (None, Some(w)) => format!("Init:{w}"),
            (None, None) => format!("Init:{i}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }
    if !initializing || condition_true(pod, "Initialized") {
        (restarts, last_restart) = (sidecar_restarts, last_sidecar_restart);
        let mut running = false;
        for status in list("/status/containerStatuses").iter().rev() {
            restarts += restart_count(status);
            last_restart = last_restart.max(finished_at(status));
            if let Some(w) = text(status, "/state/waiting/reason").filter(|r| !r.is_empty()) {
                reason = w;
            } else if let Some(t) = status.pointer("/state/terminated") {
                reason = ended_reason(t, "");
            } else if status.get("ready").and_then(Value::as_bool) == Some(true)
                && status.pointer("/state/running").is_some()
            {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            reason = if condition_true(pod, "Ready") { "Running" } else { "NotReady" }.into();
        }
    }
    let deleted = pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    if deleted && text(pod, "/status/reason").as_deref() == Some("NodeLost") {
        reason = "Unknown".into();
    } else if deleted && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    let restarts = match last_restart {
        Some(at) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now.duration_since(at).as_secs())),
        _ => restarts.to_string(),
    };
    PodSummary { ready: format!("{ready}/{total}"), status: reason, restarts }
}

/// `READINESS GATES` (`-o wide`): how many of the pod's gates are met.
fn readiness_gates(pod: &Value) -> Value {
    let gates: Vec<&str> = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("conditionType").and_then(Value::as_str))
        .collect();
    if gates.is_empty() {
        return json!("<none>");
    }
    let met = gates.iter().filter(|gate| condition_true(pod, gate)).count();
    json!(format!("{met}/{}", gates.len()))
}

/// Job columns kube-apiserver computes.
const JOB_STATUS: &str = "<job status>";
const JOB_COMPLETIONS: &str = "<job completions>";
const JOB_DURATION: &str = "<job duration>";
const JOB_CONTAINERS: &str = "<job containers>";
const JOB_IMAGES: &str = "<job images>";
const JOB_SELECTOR: &str = "<job selector>";

/// A Job's `STATUS`, `COMPLETIONS`, `DURATION` and (`-o wide`) `CONTAINERS`, `IMAGES` and
/// `SELECTOR`, as kube-apiserver's printer makes them.
fn job_cell(job: &Value, column: &str, now: jiff::Timestamp) -> Value {
    let int = |pointer: &str| job.pointer(pointer).and_then(Value::as_i64);
    let time =
        |pointer: &str| job.pointer(pointer).and_then(Value::as_str).and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let containers: Vec<&Value> =
        job.pointer("/spec/template/spec/containers").and_then(Value::as_array).into_iter().flatten().collect();
    let joined = |field: &str| {
        containers.iter().filter_map(|c| c.get(field).and_then(Value::as_str)).collect::<Vec<_>>().join(",")
    };
    json!(match column {
        JOB_STATUS => crate::controllers::job_status(job).to_owned(),
        JOB_COMPLETIONS => {
            let succeeded = int("/status/succeeded").unwrap_or(0);
            match (int("/spec/completions"), int("/spec/parallelism").unwrap_or(0)) {
                (Some(completions), _) => format!("{succeeded}/{completions}"),
                (None, parallelism) if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
                (None, _) => format!("{succeeded}/1"),
            }
        }
        JOB_DURATION => match (time("/status/startTime"), time("/status/completionTime")) {
            (None, _) => String::new(),
            (Some(start), None) => human_duration(now.duration_since(start).as_secs()),
            (Some(start), Some(end)) => human_duration(end.duration_since(start).as_secs()),
        },
        JOB_CONTAINERS => joined("name"),
        JOB_IMAGES => joined("image"),
        _ => label_selector(job.pointer("/spec/selector").unwrap_or(&Value::Null)),
    })
}

/// A label selector as `kubectl` prints one: its requirements sorted by key.
fn label_selector(selector: &Value) -> String {
    let mut requirements: Vec<(String, String)> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())))
        .collect();
    for e in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let mut values: Vec<&str> =
            e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        values.sort_unstable();
        let text = match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            _ => format!("!{key}"),
        };
        requirements.push((key.to_owned(), text));
    }
    requirements.sort();
    if requirements.is_empty() {
        return "<none>".into();
    }
    requirements.into_iter().map(|(_, text)| text).collect::<Vec<_>>().join(",")
}

fn pod_cell(pod: &Value, column: &str) -> Value {
    if column == POD_READINESS_GATES {
        return readiness_gates(pod);
    }
    let summary = pod_summary(pod, jiff::Timestamp::now());
    json!(match column {
        POD_READY => summary.ready,
        POD_RESTARTS => summary.restarts,
        _ => summary.status,
    })
}

fn cell(object: &Value, column: &PrinterColumn) -> Value {
    if column.json_path.starts_with("<pod ") {
        return pod_cell(object, &column.json_path);
    }
    if column.json_path.starts_with("<job ") {
        return job_cell(object, &column.json_path, jiff::Timestamp::now());
    }
    match json_path(object, &column.json_path) {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if column.column_type == "date" => age(s),
        Some(v) => v.clone(),
    }
}

fn name_column() -> Value {
    json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0})
}

fn columns(rt: &ResourceType) -> Vec<PrinterColumn> {
    let col = |name: &str, column_type: &str, json_path: &str| PrinterColumn {
        name: name.into(),
        column_type: column_type.into(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: json_path.into(),
    };
    if rt.schema.is_some() {
        return rt.printer_columns.clone();
    }
    match rt.kind.as_str() {
        "Pod" => {
            let wide = |name: &str, json_path: &str| PrinterColumn { priority: 1, ..col(name, "string", json_path) };
            vec![
                col("Ready", "string", POD_READY),
                col("Status", "string", POD_STATUS),
                col("Restarts", "string", POD_RESTARTS),
                col("Age", "date", ".metadata.creationTimestamp"),
                wide("IP", ".status.podIP"),
                wide("Node", ".spec.nodeName"),
                wide("Nominated Node", ".status.nominatedNodeName"),
                wide("Readiness Gates", POD_READINESS_GATES),
            ]
        }
        "Job" => {
            let wide = |name: &str, json_path: &str| PrinterColumn { priority: 1, ..col(name, "string", json_path) };
            vec![
                col("Status", "string", JOB_STATUS),
                col("Completions", "string", JOB_COMPLETIONS),
                col("Duration", "string", JOB_DURATION),
                col("Age", "date", ".metadata.creationTimestamp"),
                wide("Containers", JOB_CONTAINERS),
                wide("Images", JOB_IMAGES),
                wide("Selector", JOB_SELECTOR),
            ]
        }
        "Namespace" => {
            vec![col("Status", "string", ".status.phase"), col("Age", "date", ".metadata.creationTimestamp")]
        }
        "Deployment" => vec![
            col("Up-to-date", "integer", ".status.updatedReplicas"),
            col("Available", "integer", ".status.availableReplicas"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        "Lease" => {
            vec![col("Holder", "string", ".spec.holderIdentity"), col("Age", "date", ".metadata.creationTimestamp")]
        }
        _ => vec![col("Age", "date", ".metadata.creationTimestamp")],
    }
}

fn row(rt: &ResourceType, object: &Value) -> Value {
    let mut cells = vec![object.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
    cells.extend(columns(rt).iter().map(|c| cell(object, c)));
    let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "cells": cells,
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata},
    })
}

fn table(rt: &ResourceType, objects: &[Value], metadata: Value) -> Value {
    let mut definitions = vec![name_column()];
    definitions.extend(columns(rt).iter().map(|c| {
        json!({"name": c.name, "type": if c.column_type == "date" { "string" } else { c.column_type.as_str() }, "format": c.format, "description": c.description, "priority": c.priority})
    }));
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": objects.iter().map(|o| row(rt, o)).collect::<Vec<_>>(),
    })
}

/// A list as a Table.
pub fn list_table(rt: &ResourceType, list: &Value) -> Value {
    let items = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    table(rt, &items, list.get("metadata").cloned().unwrap_or_else(|| json!({})))
}

/// One object as a Table (`kubectl get NAME`, and each watch event).
pub fn object_table(rt: &ResourceType, object: &Value) -> Value {
    let rv = object.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
    table(rt, std::slice::from_ref(object), json!({"resourceVersion": rv}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths() {
        let obj = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "list": [1, 2]}});
        assert_eq!(json_path(&obj, ".status.phase"), Some(&json!("Running")));
        assert_eq!(json_path(&obj, ".status.conditions[?(@.type==\"Ready\")].status"), Some(&json!("True")));
        assert_eq!(json_path(&obj, ".status.list[1]"), Some(&json!(2)));
        assert_eq!(json_path(&obj, ".status.missing"), None);
    }

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).unwrap()
    }

    fn summary(pod: &Value) -> (String, String, String) {
        let s = pod_summary(pod, at(1_000));
        (s.ready, s.status, s.restarts)
    }

    fn strings(ready: &str, status: &str, restarts: &str) -> (String, String, String) {
        (ready.into(), status.into(), restarts.into())
    }

    #[test]
    fn pods_print_as_kube_apiserver_prints_them() {
        let running = json!({"state": {"running": {}}, "ready": true, "restartCount": 0});
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [running, running]}});
        assert_eq!(summary(&two), strings("2/2", "Running", "0"));

        // The first container's reason wins, and a restart says how long ago it was.
        let mut failing = two.clone();
        failing["status"]["containerStatuses"] = json!([
            {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 3,
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "1970-01-01T00:16:30Z"}}},
            {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}, "restartCount": 1}]);
        assert_eq!(summary(&failing), strings("0/2", "CrashLoopBackOff", "4 (10s ago)"));

        // One container done, one still serving: Running, or NotReady without the Ready condition.
        let mut half = two.clone();
        half["status"]["containerStatuses"][1] =
            json!({"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        assert_eq!(summary(&half).1, "Running");
        half["status"]["conditions"] = json!([]);
        assert_eq!(summary(&half).1, "NotReady");
        half["status"]["containerStatuses"][1] = json!({"state": {"terminated": {"exitCode": 0, "signal": 9}}});
        assert_eq!(summary(&half).1, "Signal:9");

        // Deleted: Terminating until the pod has ended.
        let mut deleted = two.clone();
        deleted["metadata"] = json!({"deletionTimestamp": "1970-01-01T00:16:00Z"});
        assert_eq!(summary(&deleted).1, "Terminating");
        deleted["status"]["phase"] = json!("Succeeded");
        assert_eq!(summary(&deleted).1, "Succeeded");
    }

    #[test]
    fn init_containers_and_native_sidecars_print_as_kube_apiserver_prints_them() {
        let spec = json!({"initContainers": [{"name": "setup"}, {"name": "agent", "restartPolicy": "Always"}],
            "containers": [{"name": "app"}]});
        let pod = |init: Value, app: Value, initialized: bool| {
            let phase = if initialized { "Running" } else { "Pending" };
            let condition = if initialized { "True" } else { "False" };
            json!({"spec": spec, "status": {"phase": phase,
                "conditions": [{"type": "Initialized", "status": condition}, {"type": "Ready", "status": condition}],
                "initContainerStatuses": init, "containerStatuses": [app]}})
        };
        let creating = json!({"state": {"waiting": {"reason": "PodInitializing"}}, "restartCount": 0});
        let waiting = json!({"name": "agent", "state": {"waiting": {"reason": "PodInitializing"}}, "started": false});
        let setup_running = json!({"name": "setup", "state": {"running": {}}});
        assert_eq!(
            summary(&pod(json!([setup_running, waiting]), creating.clone(), false)),
            strings("0/2", "Init:0/2", "0")
        );
        let setup_crashing = json!({"name": "setup", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 2,
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": "1970-01-01T00:16:00Z"}}});
        assert_eq!(
            summary(&pod(json!([setup_crashing, waiting]), creating.clone(), false)),
            strings("0/2", "Init:CrashLoopBackOff", "2 (40s ago)")
        );
        let setup_failed = json!({"name": "setup", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}});
        assert_eq!(summary(&pod(json!([setup_failed, waiting]), creating.clone(), false)).1, "Init:Error");
        let setup_done = json!({"name": "setup", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}, "restartCount": 1});
        assert_eq!(summary(&pod(json!([setup_done, waiting]), creating.clone(), false)).1, "Init:1/2");
        // The sidecar counts once started, and its restarts only, not the finished init
        // container's, once the pod is initialized.
        let agent =
            json!({"name": "agent", "state": {"running": {}}, "started": true, "ready": true, "restartCount": 2});
        let app = json!({"state": {"running": {}}, "ready": true, "restartCount": 0});
        assert_eq!(summary(&pod(json!([setup_done, agent]), app, true)), strings("2/2", "Running", "2"));
    }

    #[test]
    fn jobs_print_as_kube_apiserver_prints_them() {
        let job = json!({"spec": {"completions": 3, "parallelism": 2,
                "selector": {"matchLabels": {"z": "1", "batch.kubernetes.io/controller-uid": "u1"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]},
                "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "log", "image": "log:2"}]}}},
            "status": {"succeeded": 1, "startTime": "1970-01-01T00:10:00Z"}});
        let cell = |job: &Value, column: &str| job_cell(job, column, at(1_000)).as_str().unwrap().to_owned();
        assert_eq!(cell(&job, JOB_STATUS), "Running");
        assert_eq!(cell(&job, JOB_COMPLETIONS), "1/3");
        assert_eq!(cell(&job, JOB_DURATION), "6m40s");
        assert_eq!((cell(&job, JOB_CONTAINERS), cell(&job, JOB_IMAGES)), ("app,log".into(), "app:1,log:2".into()));
        assert_eq!(cell(&job, JOB_SELECTOR), "batch.kubernetes.io/controller-uid=u1,tier in (api,web),z=1");
        let mut done = job.clone();
        done["status"]["completionTime"] = json!("1970-01-01T00:10:30Z");
        done["status"]["conditions"] = json!([{"type": "Complete", "status": "True"}]);
        assert_eq!((cell(&done, JOB_STATUS), cell(&done, JOB_DURATION)), ("Complete".into(), "30s".into()));
        let selectors = [
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "DoesNotExist"}]}),
                "a,!b",
            ),
            (json!({}), "<none>"),
            (Value::Null, "<none>"),
        ];
        for (selector, printed) in selectors {
            assert_eq!(label_selector(&selector), printed, "{selector}");
        }
        let queue = json!({"spec": {"parallelism": 4}, "status": {}});
        assert_eq!((cell(&queue, JOB_COMPLETIONS), cell(&queue, JOB_DURATION)), ("0/1 of 4".into(), String::new()));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(4 * 3600 + 120), "4h2m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86_400 + 3600), "3d1h");
        assert_eq!(human_duration(40 * 86_400), "40d");
    }
}
