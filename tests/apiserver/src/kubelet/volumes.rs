//! A pod's volumes on the node: where each lives in the kubelet's state directory and, for
//! ConfigMap, Secret and downward-API volumes, which files they hold.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use super::env::{ConfigError, field};

/// How a volume is provided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A directory kept for the pod's lifetime (`emptyDir`).
    Scratch,
    /// A directory per claim, shared by every pod that mounts it.
    Claim(String),
    /// Files written (and rewritten when their objects change) by the kubelet.
    Files(Vec<(String, Vec<u8>)>),
    /// Files of an object that does not exist but is `optional`: an empty directory.
    Empty,
}

/// What a volume of the pod reads from the API.
pub trait Objects {
    /// A ConfigMap of the pod's namespace.
    fn config_map(&self, name: &str) -> Option<Value>;
    /// A Secret of the pod's namespace.
    fn secret(&self, name: &str) -> Option<Value>;
}

fn items_or_all(data: Vec<(String, Vec<u8>)>, items: Option<&Value>) -> Vec<(String, Vec<u8>)> {
    let Some(items) = items.and_then(Value::as_array) else { return data };
    items
        .iter()
        .filter_map(|item| {
            let key = item.get("key").and_then(Value::as_str)?;
            let path = item.get("path").and_then(Value::as_str).unwrap_or(key);
            data.iter().find(|(k, _)| k == key).map(|(_, v)| (path.to_owned(), v.clone()))
        })
        .collect()
}

fn config_map_files(cm: &Value) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = cm
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().as_bytes().to_vec()))
        .collect();
    for (k, v) in cm.get("binaryData").and_then(Value::as_object).into_iter().flatten() {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()) {
            files.push((k.clone(), bytes));
        }
    }
    files
}

fn secret_files(secret: &Value) -> Vec<(String, Vec<u8>)> {
    secret
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .ok()
                .map(|b| (k.clone(), b))
        })
        .chain(
            secret
                .get("stringData")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().as_bytes().to_vec())),
        )
        .collect()
}

/// Resolves one entry of `spec.volumes`.
pub fn source(pod: &Value, volume: &Value, objects: &dyn Objects) -> Result<VolumeSource, ConfigError> {
    let optional = |v: &Value| v.get("optional").and_then(Value::as_bool) == Some(true);
    if volume.get("emptyDir").is_some() {
        return Ok(VolumeSource::Scratch);
    }
    if let Some(claim) = volume.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str) {
        return Ok(VolumeSource::Claim(claim.to_owned()));
    }
    if let Some(cm) = volume.get("configMap") {
        let name = cm.get("name").and_then(Value::as_str).unwrap_or_default();
        return match objects.config_map(name) {
            Some(object) => Ok(VolumeSource::Files(items_or_all(config_map_files(&object), cm.get("items")))),
            None if optional(cm) => Ok(VolumeSource::Empty),
            None => Err(ConfigError(format!("configmap \"{name}\" not found"))),
        };
    }
    if let Some(s) = volume.get("secret") {
        let name = s.get("secretName").and_then(Value::as_str).unwrap_or_default();
        return match objects.secret(name) {
            Some(object) => Ok(VolumeSource::Files(items_or_all(secret_files(&object), s.get("items")))),
            None if optional(s) => Ok(VolumeSource::Empty),
            None => Err(ConfigError(format!("secret \"{name}\" not found"))),
        };
    }
    if let Some(d) = volume.get("downwardAPI") {
        let files = d
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| {
                let path = item.get("path").and_then(Value::as_str)?;
                let value = item.pointer("/fieldRef/fieldPath").and_then(Value::as_str).and_then(|f| field(pod, f))?;
                Some((path.to_owned(), value.into_bytes()))
            })
            .collect();
        return Ok(VolumeSource::Files(files));
    }
    Err(ConfigError(format!(
        "volume {:?}: only emptyDir, persistentVolumeClaim, configMap, secret and downwardAPI run here",
        volume.get("name").and_then(Value::as_str).unwrap_or_default()
    )))
}

/// Where a volume lives on the node.
pub fn host_path(state: &Path, pod_dir: &Path, namespace: &str, volume: &str, source: &VolumeSource) -> PathBuf {
    match source {
        VolumeSource::Claim(claim) => state.join("claims").join(namespace).join(claim),
        _ => pod_dir.join("volumes").join(volume),
    }
}

/// A file name a volume may hold: relative, no `..`.
pub fn safe_relative(path: &str) -> bool {
    !path.is_empty() && !path.starts_with('/') && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Api;
    impl Objects for Api {
        fn config_map(&self, name: &str) -> Option<Value> {
            (name == "trust").then(|| json!({"data": {"key.pub": "PEM", "other": "x"}}))
        }
        fn secret(&self, name: &str) -> Option<Value> {
            (name == "tls").then(|| json!({"data": {"tls.crt": "Y2VydA=="}}))
        }
    }

    #[test]
    fn volumes_resolve_to_their_files() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "a"}}});
        let items = json!({"name": "t", "configMap": {"name": "trust", "items": [{"key": "key.pub", "path": "k"}]}});
        assert_eq!(source(&pod, &items, &Api).unwrap(), VolumeSource::Files(vec![("k".into(), b"PEM".to_vec())]));
        let secret = json!({"name": "s", "secret": {"secretName": "tls"}});
        assert_eq!(
            source(&pod, &secret, &Api).unwrap(),
            VolumeSource::Files(vec![("tls.crt".into(), b"cert".to_vec())])
        );
        let missing = json!({"name": "m", "configMap": {"name": "gone", "optional": true}});
        assert_eq!(source(&pod, &missing, &Api).unwrap(), VolumeSource::Empty);
        let required = json!({"name": "m", "configMap": {"name": "gone"}});
        assert!(source(&pod, &required, &Api).is_err());
        let downward = json!({"name": "d", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}});
        assert_eq!(source(&pod, &downward, &Api).unwrap(), VolumeSource::Files(vec![("name".into(), b"p".to_vec())]));
        assert!(!safe_relative("../x") && !safe_relative("/etc") && safe_relative("a/b"));
    }
}
