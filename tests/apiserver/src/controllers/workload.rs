//! What the workload controllers read off objects: owners, readiness, availability, the
//! template hash and `IntOrString` bounds, as kube-controller-manager reads them.

use jiff::Timestamp;
use serde_json::{Value, json};

/// A string field of `metadata`.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or_default()
}

/// An annotation's value.
pub fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str)
}

/// An integer at a JSON pointer, or `default`.
pub fn int_at(object: &Value, pointer: &str, default: i64) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(default)
}

/// Whether `object`'s controller (the owner reference with `controller: true`) has `uid`.
pub fn controlled_by(object: &Value, uid: &str) -> bool {
    object.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|refs| {
        refs.iter().any(|r| {
            r.get("controller").and_then(Value::as_bool) == Some(true)
                && r.get("uid").and_then(Value::as_str) == Some(uid)
        })
    })
}

/// The owner reference a controller puts on what it creates.
pub fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": owner.get("kind").cloned().unwrap_or(Value::Null),
        "name": meta_str(owner, "name"),
        "uid": meta_str(owner, "uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether the object is being deleted.
pub fn terminating(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// A pod that counts towards replicas: not being deleted, not finished.
pub fn active(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    !terminating(pod) && phase != "Succeeded" && phase != "Failed"
}

/// The condition of type `kind` in the object's status.
pub fn status_condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// The `Ready` condition of a pod and when it last changed.
fn ready_since(pod: &Value) -> Option<Timestamp> {
    let ready = status_condition(pod, "Ready")?;
    if ready.get("status").and_then(Value::as_str) != Some("True") {
        return None;
    }
    // A Ready condition without a time counts as ready since forever, as kube's does.
    Some(
        ready
            .get("lastTransitionTime")
            .and_then(Value::as_str)
            .and_then(|t| t.parse().ok())
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// Whether the pod is Ready.
pub fn ready(pod: &Value) -> bool {
    active(pod) && ready_since(pod).is_some()
}

/// Whether the pod has been Ready for `min_ready_seconds` at `now`.
pub fn available(pod: &Value, min_ready_seconds: i64, now: Timestamp) -> bool {
    active(pod)
        && ready_since(pod)
            .is_some_and(|since| min_ready_seconds <= 0 || now.duration_since(since).as_secs() >= min_ready_seconds)
}

/// `maxSurge`/`maxUnavailable`: an integer, or a percentage of `total` rounded up or down.
pub fn int_or_percent(value: Option<&Value>, total: i64, default: &str, round_up: bool) -> i64 {
    let default = Value::String(default.into());
    match value.unwrap_or(&default) {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(percent) if round_up => (percent * total + 99) / 100,
            Some(percent) => percent * total / 100,
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// The hash kube-controller-manager labels a template with (`pod-template-hash`): FNV-32a
/// of the template, written in its alphabet without vowels.
pub fn template_hash(template: &Value, collisions: i64) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let text = template.to_string();
    for b in text.bytes().chain(if collisions > 0 { collisions.to_string().into_bytes() } else { Vec::new() }) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char).collect()
}

/// Drops what decodes to nothing (`null`, `{}`, `[]`): kubectl writes a template back with
/// `creationTimestamp: null` and `resources: {}`, which kube-apiserver's typed objects do
/// not tell from absent fields.
pub fn prune_empty(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.values_mut().for_each(prune_empty);
            map.retain(|_, v| {
                !(v.is_null()
                    || v.as_object().is_some_and(|m| m.is_empty())
                    || v.as_array().is_some_and(|a| a.is_empty()))
            });
        }
        Value::Array(items) => items.iter_mut().for_each(prune_empty),
        _ => {}
    }
}

/// A template as kube-controller-manager compares it: without the label its hash is kept
/// in, and without empty fields.
pub fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    prune_empty(&mut t);
    if let Some(labels) = t.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty()
            && let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.remove("labels");
        }
    }
    t
}

/// The label a ReplicaSet and its pods carry.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// A condition as the controllers write it, keeping the old times when nothing changed so
/// that a resync writes nothing.
pub fn condition(
    previous: Option<&Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
    with_update_time: bool,
) -> Value {
    let same = |field: &str, value: &str| previous.and_then(|p| p.get(field)).and_then(Value::as_str) == Some(value);
    let unchanged = same("status", status) && same("reason", reason) && same("message", message);
    let now = now.to_string();
    let transition = if same("status", status) {
        previous.and_then(|p| p.get("lastTransitionTime")).cloned().unwrap_or_else(|| json!(now))
    } else {
        json!(now)
    };
    let mut c =
        json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": transition});
    if with_update_time {
        c["lastUpdateTime"] = if unchanged {
            previous.and_then(|p| p.get("lastUpdateTime")).cloned().unwrap_or_else(|| json!(now))
        } else {
            json!(now)
        };
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        assert_eq!(int_or_percent(Some(&json!("25%")), 3, "25%", true), 1);
        assert_eq!(int_or_percent(Some(&json!("25%")), 3, "25%", false), 0);
        assert_eq!(int_or_percent(None, 10, "25%", true), 3);
        assert_eq!(int_or_percent(Some(&json!(2)), 10, "25%", false), 2);
    }

    #[test]
    fn the_hash_ignores_nothing_but_is_stable() {
        let a =
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let b =
            json!({"spec": {"containers": [{"image": "i:1", "name": "c"}]}, "metadata": {"labels": {"app": "web"}}});
        assert_eq!(template_hash(&a, 0), template_hash(&b, 0));
        let c =
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i:2"}]}});
        assert_ne!(template_hash(&a, 0), template_hash(&c, 0));
        assert!(template_hash(&a, 0).bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
    }

    #[test]
    fn templates_compare_as_typed_objects_do() {
        let stored = json!({"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}}, "spec": {"containers": [{"name": "c"}]}});
        let written_back = json!({"metadata": {"creationTimestamp": null, "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "resources": {}, "env": []}]}});
        assert_eq!(without_hash(&stored), without_hash(&written_back));
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let pod = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}]}});
        assert!(ready(&pod));
        assert!(available(&pod, 5, now));
        assert!(!available(&pod, 6, now));
        let terminating =
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:09Z"}, "status": pod["status"].clone()});
        assert!(!ready(&terminating));
    }
}
