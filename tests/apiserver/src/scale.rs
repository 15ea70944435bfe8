//! The `scale` subresource: an `autoscaling/v1` Scale that reads and writes a workload's
//! replica count, as kube-apiserver serves it for Deployments, ReplicaSets, StatefulSets,
//! ReplicationControllers and custom resources that declare `subresources.scale`.

use serde_json::{Map, Value, json};

use crate::{
    error::ApiError,
    schema::{FieldError, FieldErrorKind},
};

/// Where a type keeps what its Scale shows (simple JSONPaths such as `.spec.replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// The desired replicas.
    pub spec_replicas: String,
    /// The observed replicas.
    pub status_replicas: String,
    /// Where the label selector is: a `LabelSelector` object or map for built-ins, a string
    /// for custom resources.
    pub label_selector: Option<String>,
}

impl ScalePaths {
    /// The paths of the built-in workloads.
    pub fn workload() -> Self {
        Self {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: Some(".spec.selector".into()),
        }
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.trim_start_matches('.').split('.').filter(|s| !s.is_empty())
}

fn at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    segments(path).try_fold(object, |node, key| node.get(key))
}

/// A label selector as its string form (`app=web,tier in (a,b)`), as `kubectl get` and an
/// HPA read it from `status.selector`.
pub fn selector_string(selector: &Value) -> String {
    match selector {
        Value::String(s) => s.clone(),
        Value::Object(map) if !map.contains_key("matchLabels") && !map.contains_key("matchExpressions") => {
            // A ReplicationController's selector is a plain map.
            map.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")
        }
        Value::Object(map) => {
            let mut terms: Vec<String> = map
                .get("matchLabels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            for expr in map.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
                let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
                let values: Vec<&str> = expr
                    .get("values")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                terms.push(match expr.get("operator").and_then(Value::as_str).unwrap_or_default() {
                    "In" => format!("{key} in ({})", values.join(",")),
                    "NotIn" => format!("{key} notin ({})", values.join(",")),
                    "Exists" => key.to_owned(),
                    _ => format!("!{key}"),
                });
            }
            terms.sort();
            terms.join(",")
        }
        _ => String::new(),
    }
}

/// The Scale of `object`.
pub fn scale_of(paths: &ScalePaths, object: &Value) -> Value {
    let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let keep = ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"];
    let metadata: Map<String, Value> = metadata
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut status = json!({"replicas": at(object, &paths.status_replicas).and_then(Value::as_i64).unwrap_or(0)});
    if let Some(selector) = paths.label_selector.as_deref().and_then(|p| at(object, p)) {
        status["selector"] = json!(selector_string(selector));
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": at(object, &paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0)},
        "status": status,
    })
}

/// The desired replicas a written Scale asks for, refused as kube-apiserver refuses it.
pub fn requested_replicas(scale: &Value, name: &str) -> Result<i64, ApiError> {
    let invalid = |value: Option<Value>, detail: &str| {
        ApiError::invalid(
            "Scale",
            "autoscaling",
            name,
            &[FieldError {
                kind: FieldErrorKind::Invalid,
                field: "spec.replicas".into(),
                value,
                detail: detail.into(),
            }],
        )
    };
    match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 0 => Ok(n),
            Some(_) => Err(invalid(Some(v.clone()), "must be greater than or equal to 0")),
            None => Err(invalid(Some(v.clone()), "must be an integer")),
        },
    }
}

/// The merge patch that sets the desired replicas on the scaled object.
pub fn replicas_patch(paths: &ScalePaths, replicas: i64) -> Value {
    let keys: Vec<&str> = segments(&paths.spec_replicas).collect();
    keys.iter().rev().fold(json!(replicas), |inner, key| json!({ *key: inner }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_reads_as_its_scale() {
        let deploy = json!({
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7", "labels": {"x": "y"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
            "status": {"replicas": 2},
        });
        let scale = scale_of(&ScalePaths::workload(), &deploy);
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["replicas"], 2);
        assert_eq!(scale["status"]["selector"], "app=web,tier in (a,b)");
        assert_eq!(scale["metadata"], json!({"name": "web", "namespace": "shop", "resourceVersion": "7"}));
    }

    #[test]
    fn writes_become_a_patch_of_the_replicas_path() {
        let paths = ScalePaths {
            spec_replicas: ".spec.size".into(),
            status_replicas: ".status.size".into(),
            label_selector: None,
        };
        assert_eq!(replicas_patch(&paths, 4), json!({"spec": {"size": 4}}));
        assert_eq!(requested_replicas(&json!({"spec": {"replicas": 5}}), "w").unwrap(), 5);
        let refused = requested_replicas(&json!({"spec": {"replicas": -1}}), "web").unwrap_err();
        assert_eq!(refused.code, 422);
        assert!(
            refused.message.contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
            "{}",
            refused.message
        );
    }
}
