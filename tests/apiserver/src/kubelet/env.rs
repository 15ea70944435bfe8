//! A container's environment and downward-API values, resolved from the pod and the
//! ConfigMaps and Secrets of its namespace as the kubelet resolves them.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;

/// What a value may be read from.
pub trait Sources {
    /// A ConfigMap's key.
    fn config_map(&self, name: &str, key: &str) -> Option<String>;
    /// A Secret's key, decoded.
    fn secret(&self, name: &str, key: &str) -> Option<String>;
}

/// Why a container cannot start (`CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A `fieldRef` of the pod (`metadata.name`, `metadata.labels['app']`, `status.podIP`, …).
pub fn field(pod: &Value, path: &str) -> Option<String> {
    let text = |p: &str| pod.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let map = |p: &str| {
        pod.pointer(p).and_then(Value::as_object).map(|m| {
            let mut lines: Vec<String> =
                m.iter().map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or_default())).collect();
            lines.sort();
            lines.join("\n")
        })
    };
    if let Some(key) = path.strip_prefix("metadata.labels['").and_then(|k| k.strip_suffix("']")) {
        return text(&format!("/metadata/labels/{}", key.replace('~', "~0").replace('/', "~1")));
    }
    if let Some(key) = path.strip_prefix("metadata.annotations['").and_then(|k| k.strip_suffix("']")) {
        return text(&format!("/metadata/annotations/{}", key.replace('~', "~0").replace('/', "~1")));
    }
    match path {
        "metadata.name" => text("/metadata/name"),
        "metadata.namespace" => text("/metadata/namespace"),
        "metadata.uid" => text("/metadata/uid"),
        "metadata.labels" => map("/metadata/labels"),
        "metadata.annotations" => map("/metadata/annotations"),
        "spec.nodeName" => text("/spec/nodeName"),
        "spec.serviceAccountName" => text("/spec/serviceAccountName").or_else(|| Some("default".into())),
        "status.podIP" => text("/status/podIP"),
        "status.hostIP" => text("/status/hostIP"),
        _ => None,
    }
}

/// A quantity in the divisor's units, rounded up as the kubelet does (`limits.memory` with
/// divisor `1Mi`, `requests.cpu` with `1m`, …).
fn resource_field(container: &Value, resource: &str, divisor: Option<&str>) -> Option<String> {
    let (section, name) = resource.split_once('.')?;
    let quantity = container.pointer(&format!("/resources/{section}/{name}")).and_then(Value::as_str);
    let value = match quantity {
        Some(q) => parse_quantity(q)?,
        // Without a limit the kubelet reports the node's allocatable; without a request, 0.
        None if section == "limits" => {
            if name == "cpu" {
                2.0
            } else {
                8.0 * 1024.0 * 1024.0 * 1024.0
            }
        }
        None => 0.0,
    };
    let divisor = divisor.and_then(parse_quantity).filter(|d| *d > 0.0).unwrap_or(1.0);
    Some(format!("{}", (value / divisor).ceil()))
}

/// A Kubernetes quantity (`128Mi`, `1G`, `500m`, `2`).
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        _ => return None,
    };
    Some(n * scale)
}

/// The value of one `valueFrom`.
fn value_from(
    pod: &Value,
    container: &Value,
    from: &Value,
    sources: &dyn Sources,
) -> Result<Option<String>, ConfigError> {
    let optional = |r: &Value| r.get("optional").and_then(Value::as_bool) == Some(true);
    let name_key = |r: &Value| {
        (
            r.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            r.get("key").and_then(Value::as_str).unwrap_or_default().to_owned(),
        )
    };
    if let Some(r) = from.get("fieldRef") {
        let path = r.get("fieldPath").and_then(Value::as_str).unwrap_or_default();
        return Ok(field(pod, path));
    }
    if let Some(r) = from.get("resourceFieldRef") {
        let resource = r.get("resource").and_then(Value::as_str).unwrap_or_default();
        return Ok(resource_field(container, resource, r.get("divisor").and_then(Value::as_str)));
    }
    if let Some(r) = from.get("configMapKeyRef") {
        let (name, key) = name_key(r);
        return match sources.config_map(&name, &key) {
            Some(v) => Ok(Some(v)),
            None if optional(r) => Ok(None),
            None => Err(ConfigError(format!("couldn't find key {key} in ConfigMap {name}"))),
        };
    }
    if let Some(r) = from.get("secretKeyRef") {
        let (name, key) = name_key(r);
        return match sources.secret(&name, &key) {
            Some(v) => Ok(Some(v)),
            None if optional(r) => Ok(None),
            None => Err(ConfigError(format!("couldn't find key {key} in Secret {name}"))),
        };
    }
    Ok(None)
}

/// Expands `$(VAR)` references to variables defined before, as the kubelet does; `$$` is a
/// literal `$`.
pub fn expand(text: &str, defined: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(').and_then(|a| a.find(')').map(|end| &a[..end])) {
            match defined.get(inner) {
                Some(v) => out.push_str(v),
                None => out.push_str(&format!("$({inner})")),
            }
            rest = &after[inner.len() + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment, in order.
pub fn environment(
    pod: &Value,
    container: &Value,
    sources: &dyn Sources,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut env = BTreeMap::new();
    for var in container.get("env").and_then(Value::as_array).into_iter().flatten() {
        let name = var.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let value = match (var.get("value").and_then(Value::as_str), var.get("valueFrom")) {
            (Some(v), _) => Some(expand(v, &env)),
            (None, Some(from)) => value_from(pod, container, from, sources)?,
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            env.insert(name, v);
        }
    }
    Ok(env)
}

/// A Secret's `data` value, decoded (or its `stringData`, which the server keeps as given).
pub fn secret_value(secret: &Value, key: &str) -> Option<String> {
    if let Some(encoded) = secret.pointer(&format!("/data/{key}")).and_then(Value::as_str) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
        return String::from_utf8(bytes).ok();
    }
    secret.pointer(&format!("/stringData/{key}")).and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Fixed;
    impl Sources for Fixed {
        fn config_map(&self, name: &str, key: &str) -> Option<String> {
            (name == "cfg" && key == "mode").then(|| "fast".into())
        }
        fn secret(&self, name: &str, key: &str) -> Option<String> {
            (name == "redis" && key == "password").then(|| "s3cret".into())
        }
    }

    #[test]
    fn every_source_resolves() {
        let pod = json!({"metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}}, "status": {"podIP": "10.0.0.9"}});
        let container = json!({"resources": {"limits": {"memory": "64Mi"}}, "env": [
            {"name": "A", "value": "x"},
            {"name": "B", "value": "$(A)-$(MISSING)-$$"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "none", "key": "k", "optional": true}}},
        ]});
        let env = environment(&pod, &container, &Fixed).unwrap();
        assert_eq!(env["B"], "x-$(MISSING)-$");
        assert_eq!((env["POD"].as_str(), env["APP"].as_str(), env["IP"].as_str()), ("web-1", "web", "10.0.0.9"));
        assert_eq!((env["MEM"].as_str(), env["MODE"].as_str(), env["PW"].as_str()), ("64", "fast", "s3cret"));
        assert!(!env.contains_key("OPT"));
        let missing = json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]});
        assert_eq!(environment(&pod, &missing, &Fixed).unwrap_err().0, "couldn't find key k in ConfigMap gone");
    }
}
