//! Field ownership for server-side apply: field sets in the `FieldsV1` encoding of
//! `metadata.managedFields`, extracted from objects with the list semantics of their schema,
//! and the apply merge (conflicts, removal of fields a manager stops applying).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// How a list merges under server-side apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole; owned as one field.
    Atomic,
    /// Scalars merged by value.
    Set,
    /// Objects merged by these keys.
    Map(Vec<String>),
}

/// Where a list's merge semantics come from: a CRD schema or the built-in table.
pub trait ListSemantics {
    /// The list type of the list at `path` (field names from the root; list items as `[]`).
    fn list_type(&self, path: &[String]) -> ListType;
}

/// List semantics read from a CRD's OpenAPI schema (`x-kubernetes-list-type`).
pub struct SchemaSemantics<'a>(pub &'a Value);

impl ListSemantics for SchemaSemantics<'_> {
    fn list_type(&self, path: &[String]) -> ListType {
        let mut node = self.0;
        for part in path {
            let next = if part == "[]" {
                node.get("items")
            } else {
                node.pointer(&format!("/properties/{part}")).or_else(|| node.get("additionalProperties"))
            };
            match next {
                Some(n) => node = n,
                None => return ListType::Atomic,
            }
        }
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                node.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default(),
            ),
            _ => ListType::Atomic,
        }
    }
}

/// The merge keys of the built-in types' lists (their `patchMergeKey`s), by field name.
pub struct BuiltinSemantics;

impl ListSemantics for BuiltinSemantics {
    fn list_type(&self, path: &[String]) -> ListType {
        let field = path.last().map(String::as_str).unwrap_or_default();
        let parent = path.iter().rev().nth(2).map(String::as_str).unwrap_or_default();
        let keys: &[&str] = match (parent, field) {
            (_, "finalizers") => return ListType::Set,
            (_, "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets") => {
                &["name"]
            }
            ("containers" | "initContainers", "ports") => &["containerPort", "protocol"],
            (_, "ports") => &["port", "protocol"],
            (_, "volumeMounts") => &["mountPath"],
            (_, "conditions") => &["type"],
            (_, "ownerReferences") => &["uid"],
            _ => return ListType::Atomic,
        };
        ListType::Map(keys.iter().map(|k| (*k).to_owned()).collect())
    }
}

/// One step of a field path, as `FieldsV1` spells it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Element {
    /// `f:<name>`: a field of an object.
    Field(String),
    /// `k:<json>`: the item of a map-list with these key values.
    Key(String),
    /// `v:<json>`: the item of a set-list with this value.
    Value(String),
}

impl Element {
    fn encode(&self) -> String {
        match self {
            Self::Field(n) => format!("f:{n}"),
            Self::Key(k) => format!("k:{k}"),
            Self::Value(v) => format!("v:{v}"),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        let (prefix, rest) = s.split_at_checked(2)?;
        match prefix {
            "f:" => Some(Self::Field(rest.into())),
            "k:" => Some(Self::Key(rest.into())),
            "v:" => Some(Self::Value(rest.into())),
            _ => None,
        }
    }
}

/// A set of field paths, as a tree; `owned` marks the node itself as a member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    owned: bool,
    children: BTreeMap<Element, FieldSet>,
}

impl FieldSet {
    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        !self.owned && self.children.values().all(FieldSet::is_empty)
    }

    /// Every member path.
    pub fn paths(&self) -> Vec<Vec<Element>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<Element>, out: &mut Vec<Vec<Element>>) {
        if self.owned {
            out.push(prefix.clone());
        }
        for (e, child) in &self.children {
            prefix.push(e.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// Adds a path.
    pub fn insert(&mut self, path: &[Element]) {
        match path.split_first() {
            None => self.owned = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether a path is a member.
    pub fn contains(&self, path: &[Element]) -> bool {
        match path.split_first() {
            None => self.owned,
            Some((first, rest)) => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// Removes a path and everything under it.
    pub fn remove_subtree(&mut self, path: &[Element]) {
        match path.split_first() {
            None => *self = Self::default(),
            Some((first, rest)) => {
                if let Some(child) = self.children.get_mut(first) {
                    child.remove_subtree(rest);
                    if child.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// The `FieldsV1` JSON.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.owned && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (e, child) in &self.children {
            if !child.is_empty() {
                map.insert(e.encode(), child.to_fields_v1());
            }
        }
        Value::Object(map)
    }

    /// Reads `FieldsV1` JSON.
    pub fn from_fields_v1(v: &Value) -> Self {
        let mut set = Self::default();
        let Some(map) = v.as_object() else { return set };
        if map.is_empty() {
            set.owned = true;
        }
        for (k, child) in map {
            if k == "." {
                set.owned = true;
            } else if let Some(e) = Element::decode(k) {
                set.children.insert(e, Self::from_fields_v1(child));
            }
        }
        set
    }
}

/// The fields an object sets, under the given list semantics: leaves (scalars, atomic lists,
/// empty objects) and map-list items are members.
pub fn fields_of(object: &Value, semantics: &dyn ListSemantics) -> FieldSet {
    let mut set = FieldSet::default();
    if let Some(map) = object.as_object() {
        for (k, v) in map {
            if matches!(k.as_str(), "apiVersion" | "kind") {
                continue;
            }
            if k == "metadata" {
                let mut meta = FieldSet::default();
                for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(child) = v.get(field) {
                        let path = vec!["metadata".to_owned(), field.to_owned()];
                        meta.children.insert(Element::Field(field.into()), walk(child, &path, semantics));
                    }
                }
                if !meta.is_empty() {
                    set.children.insert(Element::Field(k.clone()), meta);
                }
                continue;
            }
            set.children.insert(Element::Field(k.clone()), walk(v, std::slice::from_ref(k), semantics));
        }
    }
    set
}

fn walk(value: &Value, path: &[String], semantics: &dyn ListSemantics) -> FieldSet {
    let mut set = FieldSet::default();
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let mut child_path = path.to_vec();
                child_path.push(k.clone());
                set.children.insert(Element::Field(k.clone()), walk(v, &child_path, semantics));
            }
        }
        Value::Array(items) => match semantics.list_type(path) {
            ListType::Atomic => set.owned = true,
            ListType::Set => {
                for item in items {
                    set.children
                        .insert(Element::Value(item.to_string()), FieldSet { owned: true, children: BTreeMap::new() });
                }
            }
            ListType::Map(keys) => {
                let mut item_path = path.to_vec();
                item_path.push("[]".into());
                for item in items {
                    let mut child = walk(item, &item_path, semantics);
                    child.owned = true;
                    set.children.insert(Element::Key(item_key(item, &keys)), child);
                }
            }
        },
        _ => set.owned = true,
    }
    set
}

/// The `k:` key of a map-list item: its key fields as compact JSON, in key order.
fn item_key(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    Value::Object(m).to_string()
}

/// The value at a field path, if present.
pub fn get_at<'a>(object: &'a Value, path: &[Element]) -> Option<&'a Value> {
    let mut node = object;
    for e in path {
        node = match e {
            Element::Field(n) => node.get(n)?,
            Element::Key(k) => {
                let keys: Map<String, Value> = serde_json::from_str(k).ok()?;
                node.as_array()?.iter().find(|item| keys.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))?
            }
            Element::Value(v) => {
                let value: Value = serde_json::from_str(v).ok()?;
                node.as_array()?.iter().find(|item| **item == value)?
            }
        };
    }
    Some(node)
}

/// Removes the value at a field path; true if something was removed.
pub fn remove_at(object: &mut Value, path: &[Element]) -> bool {
    let Some((last, parent_path)) = path.split_last() else { return false };
    let mut node = object;
    for e in parent_path {
        let next = match e {
            Element::Field(n) => node.get_mut(n),
            Element::Key(k) => {
                let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                node.as_array_mut()
                    .and_then(|a| a.iter_mut().find(|item| keys.iter().all(|(kk, kv)| item.get(kk) == Some(kv))))
            }
            Element::Value(v) => {
                let value: Value = serde_json::from_str(v).unwrap_or(Value::Null);
                node.as_array_mut().and_then(|a| a.iter_mut().find(|item| **item == value))
            }
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match last {
        Element::Field(n) => node.as_object_mut().is_some_and(|m| m.remove(n).is_some()),
        Element::Key(k) => {
            let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            node.as_array_mut().is_some_and(|a| {
                let before = a.len();
                a.retain(|item| !keys.iter().all(|(kk, kv)| item.get(kk) == Some(kv)));
                a.len() != before
            })
        }
        Element::Value(v) => {
            let value: Value = serde_json::from_str(v).unwrap_or(Value::Null);
            node.as_array_mut().is_some_and(|a| {
                let before = a.len();
                a.retain(|item| *item != value);
                a.len() != before
            })
        }
    }
}

/// Merges an applied configuration into a live object: objects field by field, set-lists
/// by value, map-lists by key, everything else replaced.
pub fn merge_applied(live: &mut Value, applied: &Value, path: &[String], semantics: &dyn ListSemantics) {
    match (live, applied) {
        (Value::Object(live_map), Value::Object(applied_map)) => {
            for (k, v) in applied_map {
                let mut child_path = path.to_vec();
                child_path.push(k.clone());
                match live_map.get_mut(k) {
                    Some(existing)
                        if (existing.is_object() && v.is_object()) || (existing.is_array() && v.is_array()) =>
                    {
                        merge_applied(existing, v, &child_path, semantics);
                    }
                    _ => {
                        live_map.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(live_items), Value::Array(applied_items)) => match semantics.list_type(path) {
            ListType::Atomic => *live_items = applied_items.clone(),
            ListType::Set => {
                for item in applied_items {
                    if !live_items.contains(item) {
                        live_items.push(item.clone());
                    }
                }
            }
            ListType::Map(keys) => {
                let mut item_path = path.to_vec();
                item_path.push("[]".into());
                for item in applied_items {
                    let key = item_key(item, &keys);
                    match live_items.iter_mut().find(|l| item_key(l, &keys) == key) {
                        Some(existing) => merge_applied(existing, item, &item_path, semantics),
                        None => live_items.push(item.clone()),
                    }
                }
            }
        },
        (live, applied) => *live = applied.clone(),
    }
}

/// The fields whose values differ between two objects (set, changed or removed), as the
/// ownership an `Update` takes.
pub fn changed_fields(old: &Value, new: &Value, semantics: &dyn ListSemantics) -> FieldSet {
    let (old_set, new_set) = (fields_of(old, semantics), fields_of(new, semantics));
    let mut changed = FieldSet::default();
    for path in new_set.paths() {
        if get_at(old, &path) != get_at(new, &path) || !old_set.contains(&path) {
            changed.insert(&path);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "rules": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object"}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set"},
            "args": {"type": "array"}
        }}}})
    }

    #[test]
    fn fields_v1_round_trips_and_keys_list_items() {
        let s = schema();
        let obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "labels": {"app": "x"}},
            "spec": {"rules": [{"name": "r1", "prefix": "p"}], "tags": ["t"], "args": [1, 2], "size": 3}});
        let set = fields_of(&obj, &SchemaSemantics(&s));
        let v1 = set.to_fields_v1();
        assert_eq!(
            v1,
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:args": {},
                    "f:rules": {"k:{\"name\":\"r1\"}": {".": {}, "f:name": {}, "f:prefix": {}}},
                    "f:size": {},
                    "f:tags": {"v:\"t\"": {}}
                }
            })
        );
        assert_eq!(FieldSet::from_fields_v1(&v1), set);
    }

    #[test]
    fn merge_and_remove_by_semantics() {
        let s = schema();
        let sem = SchemaSemantics(&s);
        let mut live = json!({"spec": {"rules": [{"name": "r1", "prefix": "p"}], "tags": ["a"], "args": [1]}});
        merge_applied(
            &mut live,
            &json!({"spec": {"rules": [{"name": "r2", "pattern": "x"}], "tags": ["b"], "args": [9]}}),
            &[],
            &sem,
        );
        assert_eq!(
            live,
            json!({"spec": {"rules": [{"name": "r1", "prefix": "p"}, {"name": "r2", "pattern": "x"}], "tags": ["a", "b"], "args": [9]}})
        );
        let path = vec![
            Element::Field("spec".into()),
            Element::Field("rules".into()),
            Element::Key("{\"name\":\"r1\"}".into()),
        ];
        assert!(remove_at(&mut live, &path));
        assert_eq!(live["spec"]["rules"], json!([{"name": "r2", "pattern": "x"}]));
    }
}
