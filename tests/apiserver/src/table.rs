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

/// `READY`, `STATUS` and `RESTARTS` of a pod, as kube-apiserver's printer makes them.
fn pod_cell(pod: &Value, column: &str) -> Value {
    let statuses: Vec<&Value> =
        pod.pointer("/status/containerStatuses").and_then(Value::as_array).into_iter().flatten().collect();
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
    match column {
        POD_READY => {
            let ready = statuses.iter().filter(|s| s.get("ready").and_then(Value::as_bool) == Some(true)).count();
            json!(format!("{ready}/{containers}"))
        }
        POD_RESTARTS => json!(
            statuses.iter().filter_map(|s| s.get("restartCount").and_then(Value::as_i64)).sum::<i64>().to_string()
        ),
        _ => {
            if pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
                return json!("Terminating");
            }
            let reason = statuses.iter().rev().find_map(|s| {
                s.pointer("/state/waiting/reason")
                    .or_else(|| s.pointer("/state/terminated/reason"))
                    .and_then(Value::as_str)
                    .filter(|r| *r != "ContainerCreating" || pod.pointer("/spec/nodeName").is_some())
            });
            json!(reason.or_else(|| pod.pointer("/status/phase").and_then(Value::as_str)).unwrap_or("Pending"))
        }
    }
}

fn cell(object: &Value, column: &PrinterColumn) -> Value {
    if column.json_path.starts_with("<pod ") {
        return pod_cell(object, &column.json_path);
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
