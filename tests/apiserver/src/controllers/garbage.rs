//! The garbage collector's sweep for dependents whose owners are all gone: objects created
//! after their owner was deleted (a controller's create racing the deletion) or naming an
//! owner that never existed. Deleting an owner takes its dependents at once (the store's
//! cascade); this catches the rest, as kube-controller-manager's collector does when it
//! finds an owner reference it cannot resolve.

use std::{collections::HashSet, sync::Arc};

use serde_json::Value;

use super::{report, workload::meta_str};
use crate::{registry::TypeKey, store::Store};

/// The uids an object's `ownerReferences` name.
fn owner_uids(object: &Value) -> Vec<&str> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid").and_then(Value::as_str))
        .collect()
}

/// The objects to delete: those with owner references, none of which names a stored
/// object, and not already being deleted.
pub fn orphans<'a>(objects: &[(TypeKey, &'a Value)]) -> Vec<(TypeKey, &'a Value)> {
    let present: HashSet<&str> = objects.iter().map(|(_, o)| meta_str(o, "uid")).collect();
    objects
        .iter()
        .filter(|(_, o)| {
            let owners = owner_uids(o);
            !owners.is_empty()
                && owners.iter().all(|uid| !present.contains(uid))
                && o.pointer("/metadata/deletionTimestamp").is_none()
        })
        .cloned()
        .collect()
}

/// One sweep over every stored object. Each type is listed on its own, so an owner and a
/// dependent created between two listings can look like an orphan once: only what the
/// previous sweep also found orphaned (`suspects`, by uid) is deleted, as the collector
/// looks an owner up again before it acts.
pub fn sweep(store: &Store, suspects: &mut HashSet<String>) {
    let registry = store.registry();
    let lists: Vec<(TypeKey, Vec<Arc<Value>>)> =
        registry.all().filter_map(|rt| Some((rt.key(), store.list_shared(&rt.key(), None).ok()?.0))).collect();
    let objects: Vec<(TypeKey, &Value)> =
        lists.iter().flat_map(|(key, items)| items.iter().map(move |o| (key.clone(), o.as_ref()))).collect();
    let mut found = HashSet::new();
    for (key, orphan) in orphans(&objects) {
        let (ns, name, uid) = (meta_str(orphan, "namespace"), meta_str(orphan, "name"), meta_str(orphan, "uid"));
        if suspects.contains(uid) {
            report("collect an orphan", store.delete_gracefully(&key, ns, name, false, Some(uid), None));
        } else {
            found.insert(uid.to_owned());
        }
    }
    *suspects = found;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_dependents_with_every_owner_gone_are_collected() {
        let key = TypeKey { group: String::new(), plural: "configmaps".into() };
        let owner = json!({"metadata": {"name": "owner", "uid": "u-owner"}});
        let owned = json!({"metadata": {"name": "kept", "uid": "u1", "ownerReferences": [{"uid": "u-owner"}]}});
        let one_left = json!({"metadata": {"name": "kept-too", "uid": "u2", "ownerReferences": [{"uid": "gone"}, {"uid": "u-owner"}]}});
        let orphan = json!({"metadata": {"name": "orphan", "uid": "u3", "ownerReferences": [{"uid": "gone"}]}});
        let going = json!({"metadata": {"name": "going", "uid": "u4", "deletionTimestamp": "2026-01-01T00:00:00Z", "ownerReferences": [{"uid": "gone"}]}});
        let free = json!({"metadata": {"name": "free", "uid": "u5"}});
        let all: Vec<(TypeKey, &Value)> =
            [&owner, &owned, &one_left, &orphan, &going, &free].into_iter().map(|o| (key.clone(), o)).collect();
        let names: Vec<&str> = orphans(&all).iter().map(|(_, o)| meta_str(o, "name")).collect();
        assert_eq!(names, ["orphan"]);
    }
}
