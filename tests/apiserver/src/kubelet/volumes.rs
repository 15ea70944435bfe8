//! A pod's volumes on the node: where each lives in the kubelet's state directory and, for
//! ConfigMap, Secret, downward-API and projected volumes, which files they hold. The
//! ServiceAccount volume every pod gets (unless it opts out) is a projected volume too: a
//! token bound to the pod, the cluster's CA and the namespace, as kube-apiserver's
//! ServiceAccount admission adds it.

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
    /// A token of the pod's ServiceAccount, bound to the pod, for `audience` (the API
    /// server's when empty), as the kubelet's token manager keeps it.
    fn service_account_token(&self, audience: &str, expiration_seconds: i64) -> Result<Vec<u8>, ConfigError>;
}

/// Where the ServiceAccount volume is mounted in every container.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The name of the ServiceAccount volume (kube-apiserver adds five random characters).
pub const SERVICE_ACCOUNT_VOLUME: &str = "kube-api-access";

/// The lifetime of the ServiceAccount volume's token (kube-apiserver's admission asks for
/// 3607 seconds, a value it recognises as its own).
const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 3607;

/// The ServiceAccount volume kube-apiserver's admission adds to a pod: `token`, `ca.crt`
/// and `namespace`.
pub fn service_account_volume() -> Value {
    serde_json::json!({"name": SERVICE_ACCOUNT_VOLUME, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": SERVICE_ACCOUNT_TOKEN_SECONDS, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}})
}

/// Whether the pod gets the ServiceAccount volume: the pod's
/// `automountServiceAccountToken` decides, else its ServiceAccount's, else yes.
pub fn automounts(pod: &Value, account: Option<&Value>) -> bool {
    let flag = |o: Option<&Value>, p: &str| o.and_then(|o| o.pointer(p)).and_then(Value::as_bool);
    flag(Some(pod), "/spec/automountServiceAccountToken")
        .or_else(|| flag(account, "/automountServiceAccountToken"))
        .unwrap_or(true)
}

/// A pod's ServiceAccount tokens, as the kubelet's token manager keeps them: one per
/// audience and lifetime, issued when first asked for and again once due.
#[derive(Debug, Default)]
pub struct TokenManager(std::sync::Mutex<std::collections::BTreeMap<(String, i64), CachedToken>>);

#[derive(Debug)]
struct CachedToken {
    token: Vec<u8>,
    issued: i64,
    expires: i64,
}

impl TokenManager {
    /// The token for `audience` and `expiration_seconds` at `now` (seconds): the one kept,
    /// or a new one from `issue` (the token and its expiry) when none is kept or it is due.
    pub fn get<E>(
        &self,
        audience: &str,
        expiration_seconds: i64,
        now: i64,
        issue: impl FnOnce() -> Result<(String, i64), E>,
    ) -> Result<Vec<u8>, E> {
        let mut tokens = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (audience.to_owned(), expiration_seconds);
        if let Some(kept) = tokens.get(&key)
            && !token_refresh_due(kept.issued, kept.expires, now)
        {
            return Ok(kept.token.clone());
        }
        let (token, expires) = issue()?;
        let token = token.into_bytes();
        tokens.insert(key, CachedToken { token: token.clone(), issued: now, expires });
        Ok(token)
    }
}

/// Whether a token issued at `issued` and expiring at `expires` (seconds) is due for a new
/// one at `now`: past 80 % of its lifetime or older than a day, as the kubelet's token
/// manager decides.
pub fn token_refresh_due(issued: i64, expires: i64, now: i64) -> bool {
    let lifetime = expires - issued;
    now >= issued + lifetime * 8 / 10 || now - issued > 24 * 60 * 60
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
        return Ok(VolumeSource::Files(downward_files(pod, d)));
    }
    if let Some(p) = volume.get("projected") {
        return projected(pod, p, objects).map(VolumeSource::Files);
    }
    Err(ConfigError(format!(
        "volume {:?}: only emptyDir, persistentVolumeClaim, configMap, secret, downwardAPI and projected run here",
        volume.get("name").and_then(Value::as_str).unwrap_or_default()
    )))
}

fn downward_files(pod: &Value, source: &Value) -> Vec<(String, Vec<u8>)> {
    source
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let path = item.get("path").and_then(Value::as_str)?;
            let value = item.pointer("/fieldRef/fieldPath").and_then(Value::as_str).and_then(|f| field(pod, f))?;
            Some((path.to_owned(), value.into_bytes()))
        })
        .collect()
}

/// The files of a projected volume, every source into one directory.
fn projected(pod: &Value, volume: &Value, objects: &dyn Objects) -> Result<Vec<(String, Vec<u8>)>, ConfigError> {
    let optional = |v: &Value| v.get("optional").and_then(Value::as_bool) == Some(true);
    let mut files = Vec::new();
    for source in volume.get("sources").and_then(Value::as_array).into_iter().flatten() {
        if let Some(t) = source.get("serviceAccountToken") {
            let audience = t.get("audience").and_then(Value::as_str).unwrap_or_default();
            let seconds = t.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(3600);
            let path = t.get("path").and_then(Value::as_str).unwrap_or("token");
            files.push((path.to_owned(), objects.service_account_token(audience, seconds)?));
        } else if let Some(cm) = source.get("configMap") {
            let name = cm.get("name").and_then(Value::as_str).unwrap_or_default();
            match objects.config_map(name) {
                Some(object) => files.extend(items_or_all(config_map_files(&object), cm.get("items"))),
                None if optional(cm) => {}
                None => return Err(ConfigError(format!("configmap \"{name}\" not found"))),
            }
        } else if let Some(secret) = source.get("secret") {
            let name = secret.get("name").and_then(Value::as_str).unwrap_or_default();
            match objects.secret(name) {
                Some(object) => files.extend(items_or_all(secret_files(&object), secret.get("items"))),
                None if optional(secret) => {}
                None => return Err(ConfigError(format!("secret \"{name}\" not found"))),
            }
        } else if let Some(d) = source.get("downwardAPI") {
            files.extend(downward_files(pod, d));
        }
    }
    Ok(files)
}

/// The mode volume `volume` declares for its file `path` (the item's `mode`, else the
/// volume's `defaultMode`; none when it says nothing), and whether that file is a
/// ServiceAccount token.
pub fn declared_mode(volume: &Value, path: &str) -> (Option<u32>, bool) {
    let mode = |v: &Value, field: &str| v.get(field).and_then(Value::as_u64).and_then(|m| u32::try_from(m).ok());
    let item_mode = |source: &Value| {
        source
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|item| item.get("path").and_then(Value::as_str) == Some(path))
            .and_then(|item| mode(item, "mode"))
    };
    const FILE_SOURCES: [&str; 3] = ["configMap", "secret", "downwardAPI"];
    if let Some(source) = FILE_SOURCES.iter().find_map(|kind| volume.get(*kind)) {
        return (item_mode(source).or_else(|| mode(source, "defaultMode")), false);
    }
    let Some(projected) = volume.get("projected") else { return (None, false) };
    for source in projected.get("sources").and_then(Value::as_array).into_iter().flatten() {
        if let Some(token) = source.get("serviceAccountToken")
            && token.get("path").and_then(Value::as_str).unwrap_or("token") == path
        {
            return (mode(projected, "defaultMode"), true);
        }
        if let Some(m) = FILE_SOURCES.iter().filter_map(|kind| source.get(*kind)).find_map(item_mode) {
            return (Some(m), false);
        }
    }
    (mode(projected, "defaultMode"), false)
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
        fn service_account_token(&self, audience: &str, seconds: i64) -> Result<Vec<u8>, ConfigError> {
            Ok(format!("token-for-{audience}-{seconds}").into_bytes())
        }
    }

    #[test]
    fn a_projected_volume_gathers_its_sources() {
        let pod = json!({"metadata": {"name": "p", "namespace": "shop"}});
        let volume = json!({"name": "all", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "ui", "expirationSeconds": 600, "path": "ui-token"}},
            {"configMap": {"name": "trust", "items": [{"key": "key.pub", "path": "trust/key.pub"}]}},
            {"secret": {"name": "tls"}},
            {"secret": {"name": "gone", "optional": true}},
            {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}});
        let files = |v: VolumeSource| match v {
            VolumeSource::Files(f) => {
                f.into_iter().map(|(p, b)| (p, String::from_utf8(b).unwrap())).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            files(source(&pod, &volume, &Api).unwrap()),
            [
                ("ui-token".into(), "token-for-ui-600".into()),
                ("trust/key.pub".into(), "PEM".into()),
                ("tls.crt".into(), "cert".into()),
                ("ns".into(), "shop".into())
            ]
        );
        let missing = json!({"name": "m", "projected": {"sources": [{"configMap": {"name": "gone"}}]}});
        assert!(source(&pod, &missing, &Api).is_err());
        // The ServiceAccount volume needs the namespace's kube-root-ca.crt, as the kubelet does.
        let account = service_account_volume();
        assert_eq!(source(&pod, &account, &Api).unwrap_err().0, "configmap \"kube-root-ca.crt\" not found");
    }

    #[test]
    fn the_service_account_volume_follows_the_pod_then_the_account() {
        let pod = |flag: Option<bool>| json!({"spec": {"automountServiceAccountToken": flag}});
        let account = |flag: bool| json!({"automountServiceAccountToken": flag});
        assert!(automounts(&pod(None), None));
        assert!(!automounts(&pod(None), Some(&account(false))));
        assert!(automounts(&pod(Some(true)), Some(&account(false))));
        assert!(!automounts(&pod(Some(false)), None));
    }

    #[test]
    fn the_token_manager_keeps_a_token_until_it_is_due() {
        let manager = TokenManager::default();
        let issued = std::cell::Cell::new(0);
        let issue = |now: i64| {
            issued.set(issued.get() + 1);
            Ok::<_, ConfigError>((format!("token-{}", issued.get()), now + 600))
        };
        assert_eq!(manager.get("", 600, 1000, || issue(1000)).unwrap(), b"token-1");
        assert_eq!(manager.get("", 600, 1479, || issue(1479)).unwrap(), b"token-1", "kept before 80 %");
        assert_eq!(manager.get("ui", 600, 1479, || issue(1479)).unwrap(), b"token-2", "one per audience");
        assert_eq!(manager.get("", 600, 1480, || issue(1480)).unwrap(), b"token-3", "renewed at 80 %");
        assert_eq!(manager.get("", 600, 1900, || issue(1900)).unwrap(), b"token-3", "the renewal is kept");
        let failed = manager.get("other", 600, 1900, || Err(ConfigError("serviceaccounts \"x\" not found".into())));
        assert!(failed.is_err());
        assert_eq!(issued.get(), 3);
    }

    #[test]
    fn tokens_are_renewed_at_eighty_percent_of_their_life_or_after_a_day() {
        assert!(!token_refresh_due(1000, 4600, 3879));
        assert!(token_refresh_due(1000, 4600, 3880));
        assert!(!token_refresh_due(0, 10 * 86_400, 86_400));
        assert!(token_refresh_due(0, 10 * 86_400, 86_401));
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

    #[test]
    fn a_file_takes_its_items_mode_else_the_volumes() {
        let secret = json!({"secret": {"secretName": "tls", "defaultMode": 0o400, "items": [{"key": "k", "path": "key", "mode": 0o600}]}});
        assert_eq!(declared_mode(&secret, "key"), (Some(0o600), false));
        assert_eq!(declared_mode(&secret, "other"), (Some(0o400), false));
        assert_eq!(declared_mode(&json!({"configMap": {"name": "c"}}), "x"), (None, false));
        assert_eq!(declared_mode(&service_account_volume(), "token"), (Some(0o644), true));
        assert_eq!(declared_mode(&service_account_volume(), "ca.crt"), (Some(0o644), false));
        let projected = json!({"projected": {"sources": [{"secret": {"name": "s", "items": [{"key": "a", "path": "a", "mode": 0o440}]}}]}});
        assert_eq!(declared_mode(&projected, "a"), (Some(0o440), false));
        assert_eq!(declared_mode(&json!({"emptyDir": {}}), "a"), (None, false));
    }
}
