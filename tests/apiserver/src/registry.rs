//! The resource types the server knows: every built-in (see [`crate::builtins`]) and every
//! registered CRD.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::{Value, json};

use crate::{
    builtins::{ALL_VERBS, BUILTINS},
    scale::ScalePaths,
    schema::CrdSchema,
};

/// A column of `kubectl get`, from a CRD's `additionalPrinterColumns`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub column_type: String,
    /// Optional `format`.
    pub format: String,
    /// Description shown by `kubectl get -o wide` docs.
    pub description: String,
    /// 0 for the default view, higher for `-o wide`.
    pub priority: i64,
    /// The JSONPath of the value.
    pub json_path: String,
}

/// One resource type, in the single version it is served in.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group, `""` for core.
    pub group: String,
    /// The served version.
    pub version: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Lower-case plural, the URL segment.
    pub plural: String,
    /// Lower-case singular.
    pub singular: String,
    /// `kubectl` short names.
    pub short_names: Vec<String>,
    /// Categories (`kubectl get all`, `kubectl get biometrics`).
    pub categories: Vec<String>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether `/status` is a subresource (status then moves only through it).
    pub status_subresource: bool,
    /// Whether `metadata.generation` is kept (bumped on changes outside metadata/status).
    pub tracks_generation: bool,
    /// Whether an update without `resourceVersion` is allowed.
    pub allow_unconditional_update: bool,
    /// The schema objects are admitted against (custom resources only).
    pub schema: Option<Arc<CrdSchema>>,
    /// `kubectl get` columns beyond the name (custom resources only).
    pub printer_columns: Vec<PrinterColumn>,
    /// The CRD that defines this type, if any.
    pub crd_name: Option<String>,
    /// The verbs served.
    pub verbs: &'static [&'static str],
    /// Where `/scale` reads and writes, when the type has that subresource.
    pub scale: Option<ScalePaths>,
    /// The schema of a built-in type, from k8s-openapi (custom resources carry `schema`).
    pub builtin_schema: Option<fn(&mut schemars::SchemaGenerator) -> schemars::Schema>,
}

impl ResourceType {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `plural.group`, the name kube-apiserver uses in messages (`pods`, `deployments.apps`).
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// The key objects of this type are stored under.
    pub fn key(&self) -> TypeKey {
        TypeKey { group: self.group.clone(), plural: self.plural.clone() }
    }

    /// The verbs discovery lists for it.
    pub fn verbs(&self) -> &'static [&'static str] {
        self.verbs
    }

    /// Whether `verb` is served for this type.
    pub fn serves(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }
}

/// Identifies a resource type independently of version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypeKey {
    /// API group.
    pub group: String,
    /// Plural name.
    pub plural: String,
}

/// All resource types, by group and plural.
#[derive(Debug, Clone)]
pub struct Registry {
    types: BTreeMap<TypeKey, ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        let types = BUILTINS
            .iter()
            .map(|b| ResourceType {
                group: b.group.into(),
                version: b.version.into(),
                kind: b.kind.into(),
                plural: b.plural.into(),
                singular: b.kind.to_lowercase(),
                short_names: b.extra.short_names.iter().map(|s| (*s).to_owned()).collect(),
                categories: b.extra.categories.iter().map(|s| (*s).to_owned()).collect(),
                namespaced: b.namespaced,
                status_subresource: b.extra.status,
                tracks_generation: b.extra.generation,
                allow_unconditional_update: true,
                schema: None,
                printer_columns: Vec::new(),
                crd_name: None,
                verbs: b.extra.verbs,
                scale: b.extra.scale.then(ScalePaths::workload),
                builtin_schema: Some(b.schema),
            })
            .map(|t| (t.key(), t))
            .collect();
        Self { types }
    }
}

/// Why a CRD cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CrdError(pub String);

impl Registry {
    /// The type served at `group`/`version`/`plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types.get(&TypeKey { group: group.into(), plural: plural.into() }).filter(|t| t.version == version)
    }

    /// The type by key.
    pub fn by_key(&self, key: &TypeKey) -> Option<&ResourceType> {
        self.types.get(key)
    }

    /// The type of an object with this apiVersion and kind.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        self.types.values().find(|t| t.api_version() == api_version && t.kind == kind)
    }

    /// Every type.
    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }

    /// Serves the custom resource a CRD object defines (its storage version).
    pub fn register_crd(&mut self, crd: &Value) -> Result<ResourceType, CrdError> {
        let resource = resource_type_from_crd(crd)?;
        if let Some(existing) = self.types.get(&resource.key())
            && existing.crd_name != resource.crd_name
        {
            return Err(CrdError(format!("{} is already served", resource.qualified_name())));
        }
        self.types.insert(resource.key(), resource.clone());
        Ok(resource)
    }

    /// Stops serving what the CRD named `crd_name` defined; returns its key.
    pub fn unregister_crd(&mut self, crd_name: &str) -> Option<TypeKey> {
        let key = self.types.values().find(|t| t.crd_name.as_deref() == Some(crd_name))?.key();
        self.types.remove(&key);
        Some(key)
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn strings(v: &Value, pointer: &str) -> Vec<String> {
    crate::strings(v.pointer(pointer))
}

fn resource_type_from_crd(crd: &Value) -> Result<ResourceType, CrdError> {
    let err = |m: &str| CrdError(m.to_owned());
    let name = text(crd, "/metadata/name").ok_or_else(|| err("metadata.name: Required value"))?;
    let group = text(crd, "/spec/group").ok_or_else(|| err("spec.group: Required value"))?;
    let plural = text(crd, "/spec/names/plural").ok_or_else(|| err("spec.names.plural: Required value"))?;
    let kind = text(crd, "/spec/names/kind").ok_or_else(|| err("spec.names.kind: Required value"))?;
    if name != format!("{plural}.{group}") {
        return Err(CrdError(format!(
            "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
        )));
    }
    let versions =
        crd.pointer("/spec/versions").and_then(Value::as_array).ok_or_else(|| err("spec.versions: Required value"))?;
    let version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .or_else(|| versions.first())
        .ok_or_else(|| err("spec.versions: Invalid value: must have exactly one storage version"))?;
    let schema = version
        .pointer("/schema/openAPIV3Schema")
        .cloned()
        .ok_or_else(|| err("spec.versions[0].schema.openAPIV3Schema: Required value"))?;
    let printer_columns = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .map(|c| PrinterColumn {
                    name: c.get("name").and_then(Value::as_str).unwrap_or_default().into(),
                    column_type: c.get("type").and_then(Value::as_str).unwrap_or("string").into(),
                    format: c.get("format").and_then(Value::as_str).unwrap_or_default().into(),
                    description: c.get("description").and_then(Value::as_str).unwrap_or_default().into(),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    json_path: c.get("jsonPath").and_then(Value::as_str).unwrap_or_default().into(),
                })
                .collect()
        })
        .unwrap_or_else(|| {
            vec![PrinterColumn {
                name: "Age".into(),
                column_type: "date".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".metadata.creationTimestamp".into(),
            }]
        });
    Ok(ResourceType {
        group: group.into(),
        version: version.get("name").and_then(Value::as_str).unwrap_or("v1").into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: text(crd, "/spec/names/singular").map_or_else(|| kind.to_lowercase(), str::to_owned),
        short_names: strings(crd, "/spec/names/shortNames"),
        categories: strings(crd, "/spec/names/categories"),
        namespaced: text(crd, "/spec/scope") != Some("Cluster"),
        status_subresource: version.pointer("/subresources/status").is_some(),
        tracks_generation: true,
        allow_unconditional_update: false,
        schema: Some(Arc::new(CrdSchema::new(schema))),
        printer_columns,
        crd_name: Some(name.into()),
        verbs: ALL_VERBS,
        scale: version.pointer("/subresources/scale").map(|s| ScalePaths {
            spec_replicas: text(s, "/specReplicasPath").unwrap_or(".spec.replicas").into(),
            status_replicas: text(s, "/statusReplicasPath").unwrap_or(".status.replicas").into(),
            label_selector: text(s, "/labelSelectorPath").map(str::to_owned),
        }),
        builtin_schema: None,
    })
}

/// The status a served CRD reports (`Established`, `NamesAccepted`).
pub fn crd_status(crd: &Value, now: &str) -> Value {
    let names = crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
    let condition = |t: &str, reason: &str, message: &str| json!({"type": t, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now});
    json!({
        "acceptedNames": names,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": crd.pointer("/spec/versions").and_then(Value::as_array).map(|vs| {
            vs.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).filter_map(|v| v.get("name").cloned()).collect::<Vec<_>>()
        }).unwrap_or_default(),
    })
}
