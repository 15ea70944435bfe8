//! Strategic merge patch for the built-in types, as kubectl sends it (`kubectl patch`,
//! client-side `kubectl apply`): maps merge, lists with a merge key merge item by item,
//! and the `$patch`, `$retainKeys`, `$deleteFromPrimitiveList` and `$setElementOrder`
//! directives are honoured.

use serde_json::Value;

use crate::fields::{ListSemantics, ListType};

/// Merges `patch` into `target`; `path` is the field path of `target`.
pub fn merge(target: &mut Value, patch: &Value, path: &[String], semantics: &dyn ListSemantics) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        replacement.as_object_mut().map(|m| m.remove("$patch"));
        *target = replacement;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Some(keep) = patch_map.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        if let Some(m) = target.as_object_mut() {
            m.retain(|k, _| keep.contains(&k.as_str()));
        }
    }
    for (key, value) in patch_map {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
            continue;
        }
        let target_map = target.as_object_mut().expect("made an object above");
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) = (target_map.get_mut(field), value.as_array()) {
                items.retain(|i| !remove.contains(i));
            }
            continue;
        }
        let mut child_path = path.to_vec();
        child_path.push(key.clone());
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(_) => {
                let slot = target_map.entry(key.clone()).or_insert(Value::Null);
                merge(slot, value, &child_path, semantics);
            }
            Value::Array(items) => {
                let slot = target_map.entry(key.clone()).or_insert_with(|| Value::Array(Vec::new()));
                merge_list(slot, items, &child_path, semantics);
            }
            scalar => {
                target_map.insert(key.clone(), scalar.clone());
            }
        }
    }
}

fn merge_list(target: &mut Value, items: &[Value], path: &[String], semantics: &dyn ListSemantics) {
    match semantics.list_type(path) {
        ListType::Atomic => *target = Value::Array(items.to_vec()),
        ListType::Set => {
            let list = target.as_array_mut().expect("list slot");
            for item in items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        ListType::Map(keys) => {
            if !target.is_array() {
                *target = Value::Array(Vec::new());
            }
            let mut item_path = path.to_vec();
            item_path.push("[]".into());
            let list = target.as_array_mut().expect("list slot");
            let same = |a: &Value, b: &Value| {
                keys.iter().all(|k| a.get(k) == b.get(k)) && keys.iter().any(|k| b.get(k).is_some())
            };
            for item in items {
                if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                    list.retain(|existing| !same(existing, item));
                    continue;
                }
                match list.iter_mut().find(|existing| same(existing, item)) {
                    Some(existing) => merge(existing, item, &item_path, semantics),
                    None => list.push(item.clone()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fields::BuiltinSemantics;

    #[test]
    fn containers_merge_by_name() {
        let mut pod = json!({"spec": {"containers": [{"name": "app", "image": "a:1"}, {"name": "agent", "image": "b:1"}]}, "metadata": {"labels": {"x": "1", "y": "2"}}});
        let patch = json!({"spec": {"containers": [{"name": "app", "image": "a:2"}]}, "metadata": {"labels": {"y": null, "z": "3"}}});
        merge(&mut pod, &patch, &[], &BuiltinSemantics);
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "app", "image": "a:2"}, {"name": "agent", "image": "b:1"}])
        );
        assert_eq!(pod["metadata"]["labels"], json!({"x": "1", "z": "3"}));
    }

    #[test]
    fn directives() {
        let mut obj =
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "metadata": {"finalizers": ["f1", "f2"]}});
        merge(
            &mut obj,
            &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}, "metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}}),
            &[],
            &BuiltinSemantics,
        );
        assert_eq!(obj["spec"]["containers"], json!([{"name": "b"}]));
        assert_eq!(obj["metadata"]["finalizers"], json!(["f2"]));
        merge(&mut obj, &json!({"spec": {"$patch": "replace", "replicas": 2}}), &[], &BuiltinSemantics);
        assert_eq!(obj["spec"], json!({"replicas": 2}));
    }
}
