//! The in-memory object store and the semantics of every write: names, uids, generations,
//! resourceVersions and conflicts, status isolation, finalizers and deletion, owner and
//! namespace cascades, managed fields, and the event log watches read from.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use serde_json::{Map, Value, json};

use crate::{
    error::ApiError,
    fields::{self, BuiltinSemantics, FieldSet, ListSemantics, SchemaSemantics},
    registry::{Registry, ResourceType, TypeKey, crd_status},
    schema::FieldValidation,
};

/// How many events the log keeps for watches unless told otherwise; a watch from an older
/// resourceVersion gets 410 Gone.
pub const DEFAULT_EVENT_LOG_CAPACITY: usize = 50_000;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watches deliver it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// The type of the object.
    pub type_key: TypeKey,
    /// What happened.
    pub event_type: EventType,
    /// The object after the change (for a deletion: its last state), shared with the
    /// store while it is the current version.
    pub object: Arc<Value>,
    /// The object before the change, for modifications.
    pub previous: Option<Arc<Value>>,
}

/// Options every write takes from its query string.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `fieldManager`, or a default derived from the user agent.
    pub field_manager: String,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `force` for server-side apply.
    pub force: bool,
}

/// The body of a patch, by content type.
#[derive(Debug, Clone)]
pub enum Patch {
    /// `application/merge-patch+json`.
    Merge(Value),
    /// `application/json-patch+json`.
    Json(Value),
    /// `application/strategic-merge-patch+json`.
    Strategic(Value),
    /// `application/apply-patch+yaml`.
    Apply(Value),
}

/// Whether a write addresses the main resource or its `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself.
    Main,
    /// `/status`.
    Status,
}

/// Objects by namespace and name; each version is shared with the event log, which keeps
/// the versions watches may still be sent.
type Objects = BTreeMap<(String, String), Arc<Value>>;

/// The server's state behind one lock.
#[derive(Debug, Default)]
pub struct State {
    rv: u64,
    registry: Registry,
    objects: BTreeMap<TypeKey, Objects>,
    log: VecDeque<Event>,
    /// Everything at or below this resourceVersion is no longer in the log.
    compacted: u64,
    capacity: usize,
    /// Whether a kubelet runs pods, so that deleting a scheduled pod waits for it to stop.
    graceful_pods: bool,
}

/// The store: state plus a signal watches wait on.
#[derive(Debug, Clone)]
pub struct Store {
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new(DEFAULT_EVENT_LOG_CAPACITY)
    }
}

impl Store {
    /// A store with the built-in namespaces whose event log keeps `capacity` events.
    pub fn new(capacity: usize) -> Self {
        let state = State { capacity: capacity.max(1), ..State::default() };
        let store = Self { state: Arc::new(Mutex::new(state)), changed: Arc::new(tokio::sync::watch::channel(0).0) };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            store
                .create(
                    &TypeKey { group: String::new(), plural: "namespaces".into() },
                    "",
                    body,
                    &WriteOptions::default(),
                )
                .expect("built-in namespaces are valid");
        }
        store
    }
}

/// The current time as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now().round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default()
}

fn meta(object: &Value, field: &str) -> Option<String> {
    object.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).map(str::to_owned)
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("metadata is an object")
}

/// Whether deleting `object` (of type `rt`) only marks it, for the kubelet running it to
/// stop it within its grace period: a pod scheduled and not finished, while kubelets run
/// (`graceful_pods`).
fn kubelet_stops(graceful_pods: bool, rt: &ResourceType, object: &Value) -> bool {
    let scheduled = object.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let phase = object.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    graceful_pods && rt.group.is_empty() && rt.kind == "Pod" && scheduled && phase != "Succeeded" && phase != "Failed"
}

fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// How kube-apiserver validates a kind's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameRule {
    /// A DNS-1123 subdomain (most kinds).
    Subdomain,
    /// A DNS-1123 label (Namespaces).
    Label,
    /// Any path segment (RBAC's kinds: `system:aggregate-to-view`).
    PathSegment,
}

fn name_rule(rt: &ResourceType) -> NameRule {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => NameRule::Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

fn check_name_by(name: &str, rule: NameRule) -> Result<(), String> {
    if rule != NameRule::PathSegment {
        return check_name(name, rule == NameRule::Label);
    }
    if name == "." || name == ".." {
        return Err(format!("may not be '{name}'"));
    }
    match ['/', '%'].into_iter().find(|c| name.contains(*c)) {
        Some(c) => Err(format!("may not contain '{c}'")),
        None => Ok(()),
    }
}

/// DNS-1123 subdomain (most names) or label (namespaces).
fn check_name(name: &str, label_only: bool) -> Result<(), String> {
    let max = if label_only { 63 } else { 253 };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = name.len() <= max && if label_only { label_ok(name) } else { name.split('.').all(label_ok) };
    if ok {
        Ok(())
    } else if label_only {
        Err(String::from(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ))
    } else {
        Err(String::from(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ))
    }
}

fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes.iter().take(len).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// The part of an object whose change bumps `metadata.generation`.
fn generation_relevant(object: &Value, status_subresource: bool) -> Value {
    let mut v = object.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        if status_subresource {
            m.remove("status");
        }
    }
    v
}

/// RFC 6902 as kube-apiserver applies it: like its json-patch library, a `test` of `null`
/// against a path that does not exist succeeds (kube-rs' finalizer helper relies on it).
fn apply_json_patch(doc: &mut Value, ops: &json_patch::Patch) -> Result<(), json_patch::PatchError> {
    let mut staged = doc.clone();
    for op in &ops.0 {
        if let json_patch::PatchOperation::Test(t) = op
            && t.value.is_null()
            && staged.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(&mut staged, std::slice::from_ref(op))?;
    }
    *doc = staged;
    Ok(())
}

/// What kube-apiserver does to built-in objects on every write that clients rely on: a
/// Secret's `stringData` is merged into `data` (base64) and never stored.
fn normalize(kind: &str, object: &mut Value) {
    if kind != "Secret" {
        return;
    }
    use base64::Engine as _;
    let Some(map) = object.as_object_mut() else { return };
    if let Some(Value::Object(string_data)) = map.remove("stringData") {
        let data = map.entry("data").or_insert_with(|| json!({}));
        if let Some(data) = data.as_object_mut() {
            for (k, v) in string_data {
                let text = v.as_str().unwrap_or_default().to_owned();
                data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(text)));
            }
        }
    }
    map.entry("type").or_insert_with(|| json!("Opaque"));
}

/// An object without the fields the server maintains, to tell whether a write changed anything.
fn without_server_fields(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    v
}

fn semantics_for(rt: &ResourceType) -> Box<dyn ListSemantics + '_> {
    match &rt.schema {
        Some(schema) => Box::new(SchemaSemantics(schema.raw())),
        None => Box::new(BuiltinSemantics),
    }
}

/// `managedFields` as entries of (manager, operation, subresource, api version, time, set).
#[derive(Debug, Clone)]
struct ManagedEntry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: String,
    set: FieldSet,
}

fn read_managed(object: &Value) -> Vec<ManagedEntry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| ManagedEntry {
                    manager: e.get("manager").and_then(Value::as_str).unwrap_or_default().into(),
                    operation: e.get("operation").and_then(Value::as_str).unwrap_or("Update").into(),
                    subresource: e.get("subresource").and_then(Value::as_str).unwrap_or_default().into(),
                    api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or_default().into(),
                    time: e.get("time").and_then(Value::as_str).unwrap_or_default().into(),
                    set: e.get("fieldsV1").map(FieldSet::from_fields_v1).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_managed(object: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": e.set.to_fields_v1(),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    let meta = meta_mut(object);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

fn subresource_name(sub: Subresource) -> &'static str {
    match sub {
        Subresource::Main => "",
        Subresource::Status => "status",
    }
}

/// Records that `manager` changed `changed` with an Update: it owns them, nobody else does.
fn record_update(
    entries: &mut Vec<ManagedEntry>,
    manager: &str,
    sub: Subresource,
    api_version: &str,
    changed: &FieldSet,
) {
    if changed.is_empty() {
        return;
    }
    let paths = changed.paths();
    for e in entries.iter_mut() {
        for p in &paths {
            e.set.remove_subtree(p);
        }
    }
    let subresource = subresource_name(sub);
    let idx =
        entries.iter().position(|e| e.manager == manager && e.operation == "Update" && e.subresource == subresource);
    let entry = match idx {
        Some(i) => &mut entries[i],
        None => {
            entries.push(ManagedEntry {
                manager: manager.into(),
                operation: "Update".into(),
                subresource: subresource.into(),
                api_version: api_version.into(),
                time: String::new(),
                set: FieldSet::default(),
            });
            entries.last_mut().expect("just pushed")
        }
    };
    for p in &paths {
        entry.set.insert(p);
    }
    entry.time = now();
    entries.retain(|e| !e.set.is_empty());
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A snapshot of the registry.
    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// A receiver that changes whenever the store does.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn resource(state: &State, key: &TypeKey) -> Result<ResourceType, ApiError> {
        state.registry.by_key(key).cloned().ok_or_else(|| ApiError::no_route(&format!("{}/{}", key.group, key.plural)))
    }

    fn record(
        &self,
        state: &mut State,
        type_key: &TypeKey,
        event_type: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        state.log.push_back(Event { rv: state.rv, type_key: type_key.clone(), event_type, object, previous });
        while state.log.len() > state.capacity {
            if let Some(e) = state.log.pop_front() {
                state.compacted = e.rv;
            }
        }
        self.changed.send_replace(state.rv);
    }

    /// Stores `object` (a new version of it, or a new one) and records the change; the
    /// version it replaces is the event's `previous`.
    fn put(
        &self,
        state: &mut State,
        key: &TypeKey,
        namespace: String,
        name: String,
        object: Value,
        event_type: EventType,
    ) -> Arc<Value> {
        let shared = Arc::new(object);
        let replaced = state.objects.entry(key.clone()).or_default().insert((namespace, name), shared.clone());
        let previous = if event_type == EventType::Modified { replaced } else { None };
        self.record(state, key, event_type, shared.clone(), previous);
        shared
    }

    /// Events after `rv` (exclusive), or 410 if they are no longer kept.
    pub fn events_since(&self, rv: u64) -> Result<(Vec<Event>, u64), ApiError> {
        let state = self.lock();
        if rv < state.compacted {
            return Err(ApiError::gone(format!("too old resource version: {rv} ({})", state.compacted + 1)));
        }
        let start = state.log.partition_point(|e| e.rv <= rv);
        Ok((state.log.range(start..).cloned().collect(), state.rv))
    }

    /// The stored object, or 404.
    fn stored(state: &State, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        state
            .objects
            .get(&rt.key())
            .and_then(|o| o.get(&(namespace.to_owned(), name.to_owned())))
            .map(|v| Value::clone(v))
            .ok_or_else(|| ApiError::not_found(&rt.qualified_name(), name))
    }

    /// One object.
    pub fn get(&self, key: &TypeKey, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let state = self.lock();
        let rt = Self::resource(&state, key)?;
        Self::stored(&state, &rt, namespace, name)
    }

    /// Every object of a type (in one namespace, or all), sorted by namespace and name,
    /// with the resourceVersion of the snapshot.
    pub fn list(&self, key: &TypeKey, namespace: Option<&str>) -> Result<(Vec<Value>, u64), ApiError> {
        let (items, rv) = self.list_shared(key, namespace)?;
        Ok((items.into_iter().map(Arc::unwrap_or_clone).collect(), rv))
    }

    /// [`Store::list`] without copying: the stored versions themselves, for readers that
    /// only look (the controllers and the kubelet list every pod on every pass).
    pub fn list_shared(&self, key: &TypeKey, namespace: Option<&str>) -> Result<(Vec<Arc<Value>>, u64), ApiError> {
        let state = self.lock();
        Self::resource(&state, key)?;
        let items = state
            .objects
            .get(key)
            .map(|objs| {
                objs.iter().filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns)).map(|(_, v)| v.clone()).collect()
            })
            .unwrap_or_default();
        Ok((items, state.rv))
    }

    /// Creates an object.
    pub fn create(
        &self,
        key: &TypeKey,
        namespace: &str,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let mut state = self.lock();
        let rt = Self::resource(&state, key)?;
        if !body.is_object() {
            return Err(ApiError::bad_request("the body of the request was in an unknown format"));
        }
        body["apiVersion"] = json!(rt.api_version());
        body["kind"] = json!(rt.kind);
        let name = match (meta(&body, "name"), meta(&body, "generateName")) {
            (Some(n), _) if !n.is_empty() => n,
            (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", random_suffix(5)),
            _ => {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &rt.group,
                    "",
                    &[crate::schema::FieldError {
                        kind: crate::schema::FieldErrorKind::Required,
                        field: "metadata.name".into(),
                        value: None,
                        detail: "name or generateName is required".into(),
                    }],
                ));
            }
        };
        if let Err(detail) = check_name_by(&name, name_rule(&rt)) {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                &name,
                &[crate::schema::FieldError {
                    kind: crate::schema::FieldErrorKind::Invalid,
                    field: "metadata.name".into(),
                    value: Some(json!(name)),
                    detail,
                }],
            ));
        }
        let namespace = if rt.namespaced {
            if let Some(body_ns) = meta(&body, "namespace").filter(|n| !n.is_empty() && n != namespace) {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({namespace})"
                )));
            }
            let ns_key = TypeKey { group: String::new(), plural: "namespaces".into() };
            let exists =
                state.objects.get(&ns_key).is_some_and(|o| o.contains_key(&(String::new(), namespace.to_owned())));
            if !exists {
                return Err(ApiError::not_found("namespaces", namespace));
            }
            namespace.to_owned()
        } else {
            String::new()
        };
        if state.objects.get(key).is_some_and(|o| o.contains_key(&(namespace.clone(), name.clone()))) {
            return Err(ApiError::already_exists(&rt.qualified_name(), &name));
        }
        {
            let m = meta_mut(&mut body);
            m.insert("name".into(), json!(name));
            if rt.namespaced {
                m.insert("namespace".into(), json!(namespace));
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now()));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("managedFields");
            if rt.tracks_generation {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        if rt.status_subresource
            && let Some(obj) = body.as_object_mut()
        {
            obj.remove("status");
            match rt.kind.as_str() {
                "Pod" => {
                    obj.insert("status".into(), json!({"phase": "Pending"}));
                }
                "Namespace" => {
                    obj.insert("status".into(), json!({"phase": "Active"}));
                }
                _ => {}
            }
        }
        normalize(&rt.kind, &mut body);
        let warnings = Self::admit(&rt, &mut body, None, &name, opts)?;
        if rt.kind == "CustomResourceDefinition" {
            // A CRD that cannot be served is refused before it is stored.
            let mut registry = state.registry.clone();
            registry.register_crd(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            body["status"] = crd_status(&body, &now());
            if !opts.dry_run {
                state.registry = registry;
            }
        }
        let semantics = semantics_for(&rt);
        let mut managed = Vec::new();
        record_update(
            &mut managed,
            &opts.field_manager,
            Subresource::Main,
            &rt.api_version(),
            &fields::fields_of(&body, semantics.as_ref()),
        );
        write_managed(&mut body, &managed);
        if opts.dry_run {
            return Ok((body, warnings));
        }
        state.rv += 1;
        let rv = state.rv;
        meta_mut(&mut body).insert("resourceVersion".into(), json!(rv.to_string()));
        let stored = self.put(&mut state, key, namespace, name, body, EventType::Added);
        Ok((Value::clone(&stored), warnings))
    }

    /// Admission: a custom resource is pruned, defaulted and validated (with CEL); a
    /// built-in is defaulted.
    fn admit(
        rt: &ResourceType,
        body: &mut Value,
        old: Option<&Value>,
        name: &str,
        opts: &WriteOptions,
    ) -> Result<Vec<String>, ApiError> {
        match &rt.schema {
            Some(schema) => schema
                .admit(body, old, opts.field_validation)
                .map_err(|errors| ApiError::invalid(&rt.kind, &rt.group, name, &errors)),
            None => {
                if old.is_none() {
                    crate::defaults::prepare_for_create(rt, body);
                }
                crate::defaults::apply(rt, body);
                Ok(Vec::new())
            }
        }
    }

    /// Replaces an object (PUT) or its status.
    pub fn update(
        &self,
        key: &TypeKey,
        namespace: &str,
        name: &str,
        body: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let mut state = self.lock();
        let rt = Self::resource(&state, key)?;
        let old = Self::stored(&state, &rt, namespace, name)?;
        if !body.is_object() {
            return Err(ApiError::bad_request("the body of the request was in an unknown format"));
        }
        if let Some(body_name) = meta(&body, "name").filter(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        match meta(&body, "resourceVersion") {
            Some(rv) if Some(&rv) != meta(&old, "resourceVersion").as_ref() => {
                return Err(ApiError::conflict(&rt.qualified_name(), name));
            }
            None if !rt.allow_unconditional_update => {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &rt.group,
                    name,
                    &[crate::schema::FieldError {
                        kind: crate::schema::FieldErrorKind::Invalid,
                        field: "metadata.resourceVersion".into(),
                        value: Some(json!("0x0")),
                        detail: "must be specified for an update".into(),
                    }],
                ));
            }
            _ => {}
        }
        self.commit(&mut state, &rt, &old, body, sub, opts, None)
    }

    /// The common end of every write to an existing object.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        state: &mut State,
        rt: &ResourceType,
        old: &Value,
        mut new: Value,
        sub: Subresource,
        opts: &WriteOptions,
        managed_override: Option<Value>,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let key = rt.key();
        let name = meta(old, "name").unwrap_or_default();
        let namespace = meta(old, "namespace").unwrap_or_default();
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        match sub {
            Subresource::Status => {
                // Only status moves through /status; everything else stays as stored.
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        new.as_object_mut().map(|m| m.remove("status"));
                    }
                }
            }
            Subresource::Main if rt.status_subresource => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
            },
            Subresource::Main => {}
        }
        {
            // Fields the server owns cannot be changed by a write.
            let old_meta = old.get("metadata").cloned().unwrap_or_default();
            let m = meta_mut(&mut new);
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(field) {
                    Some(v) => m.insert(field.into(), v.clone()),
                    None => m.remove(field),
                };
            }
            m.remove("resourceVersion");
        }
        if sub == Subresource::Main && old.pointer("/metadata/deletionTimestamp").is_some() {
            // A terminating object takes no new finalizers.
            let before = finalizers(old);
            if finalizers(&new).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &rt.group,
                    &name,
                    &[crate::schema::FieldError {
                        kind: crate::schema::FieldErrorKind::Forbidden,
                        field: "metadata.finalizers".into(),
                        value: None,
                        detail: "no new finalizers can be added if the object is being deleted".into(),
                    }],
                ));
            }
        }
        normalize(&rt.kind, &mut new);
        let warnings = Self::admit(rt, &mut new, Some(old), &name, opts)?;
        if rt.tracks_generation
            && generation_relevant(&new, rt.status_subresource) != generation_relevant(old, rt.status_subresource)
        {
            let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            meta_mut(&mut new).insert("generation".into(), json!(generation));
        }
        match managed_override {
            Some(managed) => {
                meta_mut(&mut new).insert("managedFields".into(), managed);
            }
            None => {
                let semantics = semantics_for(rt);
                let mut managed = read_managed(old);
                let mut stripped_old = old.clone();
                let mut stripped_new = new.clone();
                for v in [&mut stripped_old, &mut stripped_new] {
                    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.retain(|k, _| {
                            matches!(k.as_str(), "labels" | "annotations" | "finalizers" | "ownerReferences")
                        });
                    }
                }
                let changed = fields::changed_fields(&stripped_old, &stripped_new, semantics.as_ref());
                // Fields that disappeared are nobody's any more.
                let gone: Vec<_> = fields::fields_of(&stripped_old, semantics.as_ref())
                    .paths()
                    .into_iter()
                    .filter(|p| fields::get_at(&stripped_new, p).is_none())
                    .collect();
                for e in &mut managed {
                    for p in &gone {
                        e.set.remove_subtree(p);
                    }
                }
                record_update(&mut managed, &opts.field_manager, sub, &rt.api_version(), &changed);
                write_managed(&mut new, &managed);
            }
        }
        if without_server_fields(&new) == without_server_fields(old) && managed_unchanged(old, &new) {
            // Nothing changed: no new resourceVersion, no event (controllers must not wake).
            return Ok((old.clone(), warnings));
        }
        if rt.kind == "CustomResourceDefinition" {
            let mut registry = state.registry.clone();
            registry.register_crd(&new).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if !opts.dry_run {
                state.registry = registry;
            }
        }
        if opts.dry_run {
            return Ok((new, warnings));
        }
        if new.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&new).is_empty() {
            // The last finalizer is gone: the deletion completes.
            let removed = self.remove(state, rt, &namespace, &name, Some(new))?;
            return Ok((removed, warnings));
        }
        state.rv += 1;
        let rv = state.rv;
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        let stored = self.put(state, &key, namespace, name, new, EventType::Modified);
        Ok((Value::clone(&stored), warnings))
    }

    /// Applies a patch to an object or its status; an apply patch creates a missing object.
    pub fn patch(
        &self,
        key: &TypeKey,
        namespace: &str,
        name: &str,
        patch: Patch,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let mut state = self.lock();
        let rt = Self::resource(&state, key)?;
        let existing = state
            .objects
            .get(key)
            .and_then(|o| o.get(&(namespace.to_owned(), name.to_owned())))
            .map(|v| Value::clone(v));
        let Some(old) = existing else {
            if let Patch::Apply(applied) = patch {
                if sub == Subresource::Status {
                    return Err(ApiError::not_found(&rt.qualified_name(), name));
                }
                drop(state);
                return self.apply_create(&rt, namespace, name, applied, opts);
            }
            return Err(ApiError::not_found(&rt.qualified_name(), name));
        };
        let (new, managed) = match patch {
            Patch::Merge(p) => {
                let mut new = old.clone();
                json_patch::merge(&mut new, &p);
                (new, None)
            }
            Patch::Json(p) => {
                let ops: json_patch::Patch =
                    serde_json::from_value(p).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                let mut new = old.clone();
                apply_json_patch(&mut new, &ops).map_err(|e| {
                    ApiError::invalid(
                        &rt.kind,
                        &rt.group,
                        name,
                        &[crate::schema::FieldError {
                            kind: crate::schema::FieldErrorKind::Invalid,
                            field: String::new(),
                            value: None,
                            detail: format!("the JSON patch could not be applied: {e}"),
                        }],
                    )
                })?;
                (new, None)
            }
            Patch::Strategic(p) => {
                if rt.schema.is_some() {
                    return Err(ApiError::unsupported_media_type(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    ));
                }
                let mut new = old.clone();
                crate::strategic::merge(&mut new, &p, &[], &BuiltinSemantics);
                (new, None)
            }
            Patch::Apply(applied) => {
                let (new, managed) = self.apply_to(&rt, &old, &applied, sub, opts)?;
                (new, Some(managed))
            }
        };
        // A patch carrying a resourceVersion is a precondition, as with update.
        if let Some(rv) = meta(&new, "resourceVersion")
            && Some(&rv) != meta(&old, "resourceVersion").as_ref()
        {
            return Err(ApiError::conflict(&rt.qualified_name(), name));
        }
        self.commit(&mut state, &rt, &old, new, sub, opts, managed)
    }

    /// Server-side apply to an existing object: the merged object and its managed fields.
    fn apply_to(
        &self,
        rt: &ResourceType,
        old: &Value,
        applied: &Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<(Value, Value), ApiError> {
        if opts.field_manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests",
            ));
        }
        let semantics = semantics_for(rt);
        let mut scoped = applied.clone();
        if let Some(m) = scoped.as_object_mut() {
            match sub {
                Subresource::Status => m.retain(|k, _| k == "status"),
                Subresource::Main if rt.status_subresource => {
                    m.remove("status");
                }
                Subresource::Main => {}
            }
        }
        let new_set = fields::fields_of(&scoped, semantics.as_ref());
        let mut managed = read_managed(old);
        let subresource = subresource_name(sub);
        let api_version = rt.api_version();
        // Conflicts: fields this apply changes that another manager owns.
        let mut conflicts: Vec<(String, Vec<fields::Element>)> = Vec::new();
        for path in new_set.paths() {
            if fields::get_at(old, &path) == fields::get_at(&scoped, &path) {
                continue;
            }
            for e in &managed {
                if e.manager != opts.field_manager && e.set.contains(&path) {
                    conflicts.push((e.manager.clone(), path.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !opts.force {
            let describe = |p: &[fields::Element]| {
                p.iter()
                    .map(|e| match e {
                        fields::Element::Field(n) => format!(".{n}"),
                        fields::Element::Key(k) => format!("[{k}]"),
                        fields::Element::Value(v) => format!("[={v}]"),
                    })
                    .collect::<String>()
            };
            let lines: Vec<String> = conflicts
                .iter()
                .map(|(m, p)| format!("conflict with \"{m}\" using {api_version}: {}", describe(p)))
                .collect();
            let message = if lines.len() == 1 {
                format!("Apply failed with 1 conflict: {}", lines[0])
            } else {
                format!("Apply failed with {} conflicts: {}", lines.len(), lines.join("\n"))
            };
            let causes = conflicts.iter().map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {api_version}"), "field": describe(p)})).collect();
            return Err(ApiError::apply_conflict(message, causes));
        }
        for (_, path) in &conflicts {
            for e in &mut managed {
                if e.manager != opts.field_manager {
                    e.set.remove_subtree(path);
                }
            }
        }
        let mut new = old.clone();
        // Fields this manager applied before and no longer does, and nobody else owns, go.
        let previous = managed
            .iter()
            .find(|e| e.manager == opts.field_manager && e.operation == "Apply" && e.subresource == subresource)
            .map(|e| e.set.clone())
            .unwrap_or_default();
        for path in previous.paths() {
            let still_applied = new_set.contains(&path);
            let owned_elsewhere = managed.iter().any(|e| {
                !(e.manager == opts.field_manager && e.operation == "Apply" && e.subresource == subresource)
                    && e.set.contains(&path)
            });
            if !still_applied && !owned_elsewhere {
                fields::remove_at(&mut new, &path);
            }
        }
        fields::merge_applied(&mut new, &scoped, &[], semantics.as_ref());
        managed
            .retain(|e| !(e.manager == opts.field_manager && e.operation == "Apply" && e.subresource == subresource));
        // The applier takes the fields over from its own Update entries too.
        for e in &mut managed {
            if e.manager == opts.field_manager {
                for p in new_set.paths() {
                    e.set.remove_subtree(&p);
                }
            }
        }
        managed.push(ManagedEntry {
            manager: opts.field_manager.clone(),
            operation: "Apply".into(),
            subresource: subresource.into(),
            api_version,
            time: now(),
            set: new_set,
        });
        let mut holder = json!({});
        write_managed(&mut holder, &managed);
        let list = holder.pointer("/metadata/managedFields").cloned().unwrap_or_else(|| json!([]));
        Ok((new, list))
    }

    /// Server-side apply creating the object.
    fn apply_create(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        applied: Value,
        opts: &WriteOptions,
    ) -> Result<(Value, Vec<String>), ApiError> {
        if opts.field_manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests",
            ));
        }
        let mut body = applied.clone();
        meta_mut(&mut body).insert("name".into(), json!(name));
        let (created, warnings) = self.create(&rt.key(), namespace, body, opts)?;
        if opts.dry_run {
            return Ok((created, warnings));
        }
        // Re-label the creator's ownership as an Apply.
        let mut state = self.lock();
        let semantics = semantics_for(rt);
        let mut scoped = applied;
        if rt.status_subresource {
            scoped.as_object_mut().map(|m| m.remove("status"));
        }
        let entry = ManagedEntry {
            manager: opts.field_manager.clone(),
            operation: "Apply".into(),
            subresource: String::new(),
            api_version: rt.api_version(),
            time: now(),
            set: fields::fields_of(&scoped, semantics.as_ref()),
        };
        let key = (meta(&created, "namespace").unwrap_or_default(), name.to_owned());
        let mut stored = created;
        write_managed(&mut stored, &[entry]);
        if let Some(slot) = state.objects.get_mut(&rt.key()).and_then(|o| o.get_mut(&key)) {
            Arc::make_mut(slot)["metadata"]["managedFields"] = stored["metadata"]["managedFields"].clone();
            let slot = slot.clone();
            // Keep the ADDED event consistent with what is stored.
            if let Some(last) = state.log.back_mut() {
                last.object = slot;
            }
        }
        Ok((stored, warnings))
    }

    /// Deletes an object: marks it terminating while it has finalizers, removes it otherwise.
    pub fn delete(
        &self,
        key: &TypeKey,
        namespace: &str,
        name: &str,
        orphan: bool,
        precondition_uid: Option<&str>,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let rt = Self::resource(&state, key)?;
        let old = Self::stored(&state, &rt, namespace, name)?;
        if let Some(uid) = precondition_uid
            && Some(uid) != meta(&old, "uid").as_deref()
        {
            return Err(ApiError::conflict(&rt.qualified_name(), name));
        }
        if !finalizers(&old).is_empty() {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut new = old.clone();
            {
                let m = meta_mut(&mut new);
                m.insert("deletionTimestamp".into(), json!(now()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                if rt.tracks_generation {
                    let g = m.get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
                    m.insert("generation".into(), json!(g));
                }
            }
            return Ok(self.store_marked(&mut state, key, namespace, name, new));
        }
        let removed = self.remove(&mut state, &rt, namespace, name, None)?;
        if !orphan {
            self.cascade(&mut state, &removed);
        }
        Ok(removed)
    }

    /// Whether deleting a scheduled, unfinished pod only marks it (a kubelet finishes it).
    pub fn set_graceful_pod_deletion(&self, on: bool) {
        self.lock().graceful_pods = on;
    }

    /// DELETE as kube-apiserver answers it: a scheduled pod that has not finished is marked
    /// with `deletionTimestamp` and its grace period (`grace`, else its
    /// `terminationGracePeriodSeconds`) for its kubelet to stop, unless the grace is 0 or no
    /// kubelet runs; anything else is deleted as [`Store::delete`] does.
    pub fn delete_gracefully(
        &self,
        key: &TypeKey,
        namespace: &str,
        name: &str,
        orphan: bool,
        precondition_uid: Option<&str>,
        grace: Option<i64>,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let rt = Self::resource(&state, key)?;
        let old = Self::stored(&state, &rt, namespace, name)?;
        if grace == Some(0) || !kubelet_stops(state.graceful_pods, &rt, &old) {
            drop(state);
            return self.delete(key, namespace, name, orphan, precondition_uid);
        }
        if let Some(uid) = precondition_uid
            && Some(uid) != meta(&old, "uid").as_deref()
        {
            return Err(ApiError::conflict(&rt.qualified_name(), name));
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(old);
        }
        Ok(self.mark_for_the_kubelet(&mut state, key, namespace, name, Value::clone(&old), grace))
    }

    /// Marks a running pod for its kubelet to stop: `deletionTimestamp` its grace period
    /// (`grace`, else its `terminationGracePeriodSeconds`, else 30 s) from now.
    fn mark_for_the_kubelet(
        &self,
        state: &mut State,
        key: &TypeKey,
        namespace: &str,
        name: &str,
        mut pod: Value,
        grace: Option<i64>,
    ) -> Value {
        let grace = grace
            .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
            .unwrap_or(30)
            .max(1);
        let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
        {
            let m = meta_mut(&mut pod);
            m.insert(
                "deletionTimestamp".into(),
                json!(at.round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default()),
            );
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        self.store_marked(state, key, namespace, name, pod)
    }

    /// Stores an object marked for deletion (a new resourceVersion) and records the change.
    fn store_marked(&self, state: &mut State, key: &TypeKey, namespace: &str, name: &str, mut new: Value) -> Value {
        state.rv += 1;
        let rv = state.rv;
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        Value::clone(&self.put(state, key, namespace.to_owned(), name.to_owned(), new, EventType::Modified))
    }

    /// Removes an object now and records the deletion.
    fn remove(
        &self,
        state: &mut State,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        last: Option<Value>,
    ) -> Result<Value, ApiError> {
        let key = rt.key();
        let removed = state
            .objects
            .get_mut(&key)
            .and_then(|o| o.remove(&(namespace.to_owned(), name.to_owned())))
            .ok_or_else(|| ApiError::not_found(&rt.qualified_name(), name))?;
        let mut object = last.unwrap_or_else(|| Arc::unwrap_or_clone(removed));
        state.rv += 1;
        let rv = state.rv;
        meta_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        self.record(state, &key, EventType::Deleted, Arc::new(object.clone()), None);
        if rt.kind == "CustomResourceDefinition"
            && let Some(gone) = state.registry.unregister_crd(name)
        {
            let names: Vec<(String, String)> =
                state.objects.get(&gone).map(|o| o.keys().cloned().collect()).unwrap_or_default();
            for (ns, n) in names {
                if let Some(obj) = state.objects.get_mut(&gone).and_then(|o| o.remove(&(ns, n))) {
                    let mut obj = Arc::unwrap_or_clone(obj);
                    state.rv += 1;
                    let rv = state.rv;
                    meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
                    self.record(state, &gone, EventType::Deleted, Arc::new(obj), None);
                }
            }
        }
        if rt.kind == "Namespace" {
            let keys: Vec<TypeKey> = state.objects.keys().cloned().collect();
            for k in keys {
                let names: Vec<(String, String)> = state
                    .objects
                    .get(&k)
                    .map(|o| o.keys().filter(|(ns, _)| ns == name).cloned().collect())
                    .unwrap_or_default();
                for (ns, n) in names {
                    if let Some(obj) = state.objects.get_mut(&k).and_then(|o| o.remove(&(ns, n))) {
                        let mut obj = Arc::unwrap_or_clone(obj);
                        state.rv += 1;
                        let rv = state.rv;
                        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
                        self.record(state, &k, EventType::Deleted, Arc::new(obj), None);
                    }
                }
            }
        }
        Ok(object)
    }

    /// Deletes the dependents of a removed owner (background propagation).
    fn cascade(&self, state: &mut State, owner: &Value) {
        let Some(uid) = meta(owner, "uid") else { return };
        let mut dependents = Vec::new();
        for (key, objects) in &state.objects {
            for ((ns, n), obj) in objects {
                let owned = obj.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|refs| {
                    refs.iter().any(|r| r.get("uid").and_then(Value::as_str) == Some(uid.as_str()))
                });
                if owned {
                    dependents.push((key.clone(), ns.clone(), n.clone()));
                }
            }
        }
        for (key, ns, n) in dependents {
            let Ok(rt) = Self::resource(state, &key) else { continue };
            let Some(obj) = state.objects.get(&key).and_then(|o| o.get(&(ns.clone(), n.clone()))).cloned() else {
                continue;
            };
            // The garbage collector deletes as any client does: a running pod is stopped by
            // its kubelet within its grace period.
            if kubelet_stops(state.graceful_pods, &rt, &obj) {
                if obj.pointer("/metadata/deletionTimestamp").is_none() {
                    self.mark_for_the_kubelet(state, &key, &ns, &n, Value::clone(&obj), None);
                }
            } else if finalizers(&obj).is_empty() {
                if let Ok(removed) = self.remove(state, &rt, &ns, &n, None) {
                    self.cascade(state, &removed);
                }
            } else if obj.pointer("/metadata/deletionTimestamp").is_none() {
                let mut new = Value::clone(&obj);
                meta_mut(&mut new).insert("deletionTimestamp".into(), json!(now()));
                state.rv += 1;
                let rv = state.rv;
                meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
                self.put(state, &key, ns, n, new, EventType::Modified);
            }
        }
    }
}

fn managed_unchanged(old: &Value, new: &Value) -> bool {
    // Ownership entries compare without their timestamps.
    let strip = |v: &Value| {
        v.pointer("/metadata/managedFields").and_then(Value::as_array).map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    e.as_object_mut().map(|m| m.remove("time"));
                    e
                })
                .collect::<Vec<_>>()
        })
    };
    strip(old) == strip(new)
}
