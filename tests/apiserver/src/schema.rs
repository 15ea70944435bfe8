//! What kube-apiserver does to a custom resource before storing it: prune fields the schema
//! does not declare, apply schema defaults, validate against the structural OpenAPI v3
//! schema, then evaluate the CEL `x-kubernetes-validations` (kube-cel).
//!
//! Errors read as kube-apiserver's do (`spec.target.port: Invalid value: 0: spec.target.port
//! in body should be greater than or equal to 1`), so a test can assert on them the way a
//! user reads them from `kubectl apply`.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{LazyLock, Mutex, PoisonError},
};

use kube_cel::{CompiledSchema, Validator};
use serde_json::{Map, Value};

/// What to do with fields the schema does not declare (the `fieldValidation` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and return a warning for each.
    #[default]
    Warn,
    /// Refuse the request.
    Strict,
}

/// The kinds of field error kube-apiserver reports (`field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required field is missing.
    Required,
    /// The value breaks a rule.
    Invalid,
    /// The value is not one of an enum's.
    NotSupported,
    /// A string is longer than allowed.
    TooLong,
    /// A list has more items than allowed.
    TooMany,
    /// A set or map-keyed list holds the same entry twice.
    Duplicate,
    /// A field the schema does not declare (strict field validation).
    Unknown,
    /// The value has the wrong JSON type.
    TypeInvalid,
    /// The change is not allowed.
    Forbidden,
}

impl FieldErrorKind {
    /// The `reason` of the `StatusCause` kube-apiserver returns.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Unknown => "FieldValueUnknown",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::Forbidden => "FieldValueForbidden",
        }
    }
}

/// One reason an object is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// What kind of error.
    pub kind: FieldErrorKind,
    /// Where, as `spec.invalidations[0].name`.
    pub field: String,
    /// The offending value, when it is shown.
    pub value: Option<Value>,
    /// The explanation.
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
        match self.kind {
            FieldErrorKind::Required => write!(f, "{}: Required value", self.field)?,
            FieldErrorKind::Invalid | FieldErrorKind::TypeInvalid if self.value.is_none() => {
                write!(f, "{}: Invalid value", self.field)?
            }
            FieldErrorKind::Invalid | FieldErrorKind::TypeInvalid => {
                write!(f, "{}: Invalid value: {}", self.field, shown(&self.value))?;
            }
            FieldErrorKind::NotSupported => write!(f, "{}: Unsupported value: {}", self.field, shown(&self.value))?,
            FieldErrorKind::TooLong => write!(f, "{}: Too long", self.field)?,
            FieldErrorKind::TooMany => write!(f, "{}: Too many: {}", self.field, shown(&self.value))?,
            FieldErrorKind::Duplicate => write!(f, "{}: Duplicate value: {}", self.field, shown(&self.value))?,
            FieldErrorKind::Unknown => write!(f, "unknown field \"{}\"", self.field)?,
            FieldErrorKind::Forbidden => write!(f, "{}: Forbidden", self.field)?,
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// A CRD version's schema, ready to admit objects.
#[derive(Debug)]
pub struct CrdSchema {
    schema: Value,
    compiled: CompiledSchema,
    validator: Validator,
}

/// The result of admitting an object: warnings about pruned fields, or why it is refused.
pub type Admission = Result<Vec<String>, Vec<FieldError>>;

impl CrdSchema {
    /// Prepares `openapi_v3_schema` (a CRD version's `schema.openAPIV3Schema`).
    pub fn new(openapi_v3_schema: Value) -> Self {
        let compiled = kube_cel::compile_schema(&openapi_v3_schema);
        Self { schema: openapi_v3_schema, compiled, validator: Validator::new() }
    }

    /// The schema as given.
    pub fn raw(&self) -> &Value {
        &self.schema
    }

    /// Prunes, defaults and validates `object` in place, as kube-apiserver does on create
    /// and update (`old` is the stored object, for CEL transition rules and ratcheting: an
    /// update may leave a value that the schema now refuses as it was).
    pub fn admit(&self, object: &mut Value, old: Option<&Value>, mode: FieldValidation) -> Admission {
        let mut walk = Walk::default();
        if let Value::Object(root) = object {
            // apiVersion, kind and metadata are the API machinery's, never pruned here.
            let mut body: Map<String, Value> =
                root.iter().filter(|(k, _)| !is_meta_key(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            let mut body_value = Value::Object(std::mem::take(&mut body));
            walk.node(&self.schema, &mut body_value, "", true);
            root.retain(|k, _| is_meta_key(k));
            if let Value::Object(body) = body_value {
                root.extend(body);
            }
        } else {
            walk.errors.push(FieldError {
                kind: FieldErrorKind::TypeInvalid,
                field: String::new(),
                value: None,
                detail: "the object must be a JSON object".into(),
            });
        }
        if mode == FieldValidation::Strict && !walk.pruned.is_empty() {
            walk.errors.extend(walk.pruned.iter().map(|field| FieldError {
                kind: FieldErrorKind::Unknown,
                field: field.clone(),
                value: None,
                detail: String::new(),
            }));
        }
        walk.errors.retain(|e| !ratchets(e, object, old));
        // Like kube-apiserver, CEL rules run unless a value has the wrong type (they would
        // see nonsense); then one error says they were skipped.
        let blocking =
            walk.errors.iter().any(|e| matches!(e.kind, FieldErrorKind::TypeInvalid | FieldErrorKind::NotSupported));
        if blocking {
            walk.errors.push(FieldError {
                kind: FieldErrorKind::Invalid,
                field: "<nil>".into(),
                value: None,
                detail: "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
            });
        } else if let Err(errors) = self.validator.validate_compiled(&self.compiled, object, old) {
            // Transition rules (oldSelf) judge the change itself: they never ratchet.
            let ratcheted =
                |e: &kube_cel::ValidationError| !e.rule.contains("oldSelf") && unchanged(object, old, &e.field_path);
            walk.errors.extend(errors.into_vec().into_iter().filter(|e| !ratcheted(e)).map(|e| {
                let value = lookup(object, &e.field_path).map(|v| Value::String(type_name(v).into()));
                FieldError { kind: FieldErrorKind::Invalid, field: e.field_path, value, detail: e.message }
            }));
        }
        if walk.errors.is_empty() {
            Ok(match mode {
                FieldValidation::Warn => walk.pruned.iter().map(|f| format!("unknown field \"{f}\"")).collect(),
                FieldValidation::Ignore | FieldValidation::Strict => Vec::new(),
            })
        } else {
            Err(walk.errors)
        }
    }
}

/// `pattern` compiled, from a cache: a CRD has a few patterns and every object is checked
/// against them, and compiling a long one costs milliseconds.
fn compiled_pattern(pattern: &str) -> Result<regex::Regex, regex::Error> {
    static CACHE: LazyLock<Mutex<HashMap<String, regex::Regex>>> = LazyLock::new(Mutex::default);
    if let Some(re) = CACHE.lock().unwrap_or_else(PoisonError::into_inner).get(pattern) {
        return Ok(re.clone());
    }
    let re = regex::Regex::new(pattern)?;
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    // Bounded: CRDs come and go in a long-running demo.
    if cache.len() >= 1024 {
        cache.clear();
    }
    cache.insert(pattern.to_owned(), re.clone());
    Ok(re)
}

/// Whether an update leaves the value at `path` as it was. kube-apiserver's validation
/// ratcheting (on by default since 1.30, GA in 1.33) lets such a value stay even when the
/// schema now refuses it, so an object admitted before a CRD was tightened can still have
/// its metadata and status written. Lists are compared by position.
fn unchanged(object: &Value, old: Option<&Value>, path: &str) -> bool {
    old.is_some_and(|old| lookup(object, path).is_some_and(|now| lookup(old, path) == Some(now)))
}

/// Whether a structural error is about a value the update left unchanged: the value itself,
/// or for a missing required field the object that lacks it. Unknown fields are the
/// request's, never ratcheted.
fn ratchets(error: &FieldError, object: &Value, old: Option<&Value>) -> bool {
    match error.kind {
        FieldErrorKind::Unknown => false,
        FieldErrorKind::Required => {
            let parent = error.field.rsplit_once('.').map_or("", |(parent, _)| parent);
            !parent.is_empty() && unchanged(object, old, parent)
        }
        _ => !error.field.is_empty() && error.field != "<nil>" && unchanged(object, old, &error.field),
    }
}

fn is_meta_key(key: &str) -> bool {
    matches!(key, "apiVersion" | "kind" | "metadata")
}

/// The CEL type name kube-apiserver shows as the "value" of a failed rule.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::Bool(_) => "boolean",
        Value::Null => "null",
    }
}

/// Finds `spec.rules[2].name` in an object.
fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = object;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, indexes) = part.split_once('[').map_or((part, ""), |(n, rest)| (n, rest));
        if !name.is_empty() {
            current = current.get(name)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            current = current.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(current)
}

#[derive(Default)]
struct Walk {
    errors: Vec<FieldError>,
    pruned: Vec<String>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

impl Walk {
    fn error(&mut self, kind: FieldErrorKind, field: &str, value: Option<&Value>, detail: impl Into<String>) {
        self.errors.push(FieldError { kind, field: field.to_owned(), value: value.cloned(), detail: detail.into() });
    }

    fn node(&mut self, schema: &Value, value: &mut Value, path: &str, root: bool) {
        if value.is_null() {
            if schema.get("nullable").and_then(Value::as_bool) != Some(true) && !root {
                self.error(
                    FieldErrorKind::TypeInvalid,
                    path,
                    Some(value),
                    format!("{path} in body must be of type {}", schema_type(schema)),
                );
            }
            return;
        }
        let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
        let preserve = schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
        let ty = schema.get("type").and_then(Value::as_str);
        if int_or_string {
            if !(value.is_string() || value.is_i64() || value.is_u64()) {
                self.error(
                    FieldErrorKind::TypeInvalid,
                    path,
                    Some(value),
                    format!("{path} in body must be of type integer or string"),
                );
                return;
            }
        } else if let Some(ty) = ty
            && !type_matches(ty, value)
        {
            self.error(
                FieldErrorKind::TypeInvalid,
                path,
                Some(&Value::String(type_name(value).into())),
                format!("{path} in body must be of type {ty}: {:?}", type_name(value)),
            );
            return;
        }
        match value {
            Value::Object(map) => self.object(schema, map, path, preserve),
            Value::Array(items) => self.array(schema, items, path),
            Value::String(s) => self.string(schema, s, path),
            Value::Number(_) => self.number(schema, value, path),
            Value::Bool(_) | Value::Null => {}
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            self.error(
                FieldErrorKind::NotSupported,
                path,
                Some(value),
                format!("supported values: {}", list.join(", ")),
            );
        }
    }

    fn object(&mut self, schema: &Value, map: &mut Map<String, Value>, path: &str, preserve: bool) {
        let empty = Map::new();
        let properties = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        // Defaults first: a field given null is defaulted too, when it is not nullable.
        for (key, prop) in properties {
            if let Some(default) = prop.get("default") {
                let missing = match map.get(key) {
                    None => true,
                    Some(Value::Null) => prop.get("nullable").and_then(Value::as_bool) != Some(true),
                    Some(_) => false,
                };
                if missing {
                    map.insert(key.clone(), default.clone());
                }
            }
        }
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            let child_path = join(path, &key);
            if let Some(prop) = properties.get(&key) {
                let child = map.get_mut(&key).expect("key listed from map");
                self.node(prop, child, &child_path, false);
            } else if let Some(additional) = additional {
                let child = map.get_mut(&key).expect("key listed from map");
                self.node(additional, child, &child_path, false);
            } else if !preserve {
                map.remove(&key);
                self.pruned.push(child_path);
            }
        }
        for required in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
        {
            if !map.contains_key(required) {
                self.error(FieldErrorKind::Required, &join(path, required), None, "");
            }
        }
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
            && map.len() as u64 > max
        {
            self.error(
                FieldErrorKind::TooMany,
                path,
                Some(&Value::from(map.len())),
                format!("must have at most {max} items"),
            );
        }
    }

    fn array(&mut self, schema: &Value, items: &mut [Value], path: &str) {
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter_mut().enumerate() {
                self.node(item_schema, item, &format!("{path}[{i}]"), false);
            }
        }
        let len = items.len() as u64;
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && len > max
        {
            self.error(
                FieldErrorKind::TooMany,
                path,
                Some(&Value::from(len)),
                format!("must have at most {max} items"),
            );
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && len < min
        {
            self.error(
                FieldErrorKind::Invalid,
                path,
                Some(&Value::from(len)),
                format!("{path} in body should have at least {min} items"),
            );
        }
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => {
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    if !seen.insert(item.to_string()) {
                        self.error(FieldErrorKind::Duplicate, &format!("{path}[{i}]"), Some(item), "");
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    let key: Map<String, Value> =
                        keys.iter().filter_map(|k| item.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect();
                    if !seen.insert(Value::Object(key.clone()).to_string()) {
                        self.error(FieldErrorKind::Duplicate, &format!("{path}[{i}]"), Some(&Value::Object(key)), "");
                    }
                }
            }
            _ => {}
        }
    }

    fn string(&mut self, schema: &Value, s: &str, path: &str) {
        let chars = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && chars > max
        {
            self.error(FieldErrorKind::TooLong, path, None, format!("may not be more than {max} bytes"));
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && chars < min
        {
            self.error(
                FieldErrorKind::Invalid,
                path,
                Some(&Value::String(s.into())),
                format!("{path} in body should be at least {min} chars long"),
            );
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match compiled_pattern(pattern) {
                Ok(re) if re.is_match(s) => {}
                Ok(_) => self.error(
                    FieldErrorKind::Invalid,
                    path,
                    Some(&Value::String(s.into())),
                    format!("{path} in body should match '{pattern}'"),
                ),
                Err(e) => self.error(
                    FieldErrorKind::Invalid,
                    path,
                    None,
                    format!("the schema's pattern does not compile: {e}"),
                ),
            }
        }
        if let Some(format) = schema.get("format").and_then(Value::as_str)
            && let Some(problem) = check_format(format, s)
        {
            self.error(
                FieldErrorKind::Invalid,
                path,
                Some(&Value::String(s.into())),
                format!("{path} in body must be of type {format}: {problem}"),
            );
        }
    }

    fn number(&mut self, schema: &Value, value: &Value, path: &str) {
        let Some(n) = value.as_f64() else { return };
        let exclusive = |key| schema.get(key).and_then(Value::as_bool) == Some(true);
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if exclusive("exclusiveMinimum") && n <= min {
                self.error(
                    FieldErrorKind::Invalid,
                    path,
                    Some(value),
                    format!("{path} in body should be greater than {min}"),
                );
            } else if n < min {
                self.error(
                    FieldErrorKind::Invalid,
                    path,
                    Some(value),
                    format!("{path} in body should be greater than or equal to {min}"),
                );
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if exclusive("exclusiveMaximum") && n >= max {
                self.error(
                    FieldErrorKind::Invalid,
                    path,
                    Some(value),
                    format!("{path} in body should be less than {max}"),
                );
            } else if n > max {
                self.error(
                    FieldErrorKind::Invalid,
                    path,
                    Some(value),
                    format!("{path} in body should be less than or equal to {max}"),
                );
            }
        }
        if let Some(format) = schema.get("format").and_then(Value::as_str) {
            let fits = match format {
                "int32" => value.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                "int64" => value.as_i64().is_some(),
                _ => true,
            };
            if !fits {
                self.error(
                    FieldErrorKind::Invalid,
                    path,
                    Some(value),
                    format!("{path} in body must be of type {format}"),
                );
            }
        }
    }
}

fn schema_type(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("object")
}

fn type_matches(ty: &str, value: &Value) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

/// The string formats kube-apiserver checks that our CRDs use.
fn check_format(format: &str, s: &str) -> Option<String> {
    match format {
        "date-time" => s.parse::<jiff::Timestamp>().err().map(|e| e.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> CrdSchema {
        CrdSchema::new(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["port"],
                    "properties": {
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
                        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2, "x-kubernetes-list-type": "set"},
                        "size": {"x-kubernetes-int-or-string": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "name": {"type": "string", "pattern": "^[a-z]+$"}
                    },
                    "x-kubernetes-validations": [{"rule": "self.port != 22", "message": "not ssh"}]
                }
            }
        }))
    }

    fn admit(object: &mut Value, mode: FieldValidation) -> Admission {
        schema().admit(object, None, mode)
    }

    #[test]
    fn prunes_defaults_and_accepts() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"}, "spec": {"port": 80, "junk": 1, "free": {"any": {"thing": 1}}}, "extra": true});
        let warnings = admit(&mut obj, FieldValidation::Warn).unwrap();
        assert_eq!(warnings, vec!["unknown field \"extra\"", "unknown field \"spec.junk\""]);
        assert_eq!(obj["spec"], json!({"port": 80, "mode": "A", "free": {"any": {"thing": 1}}}));
        assert_eq!(obj["metadata"], json!({"name": "a"}), "metadata is never pruned");
        assert!(obj.get("extra").is_none());
    }

    #[test]
    fn strict_refuses_unknown_fields() {
        let mut obj = json!({"spec": {"port": 80, "junk": 1}});
        let errors = admit(&mut obj, FieldValidation::Strict).unwrap_err();
        assert_eq!(errors[0].to_string(), "unknown field \"spec.junk\"");
    }

    #[test]
    fn structural_errors_read_like_kube_apiserver() {
        let mut obj = json!({"spec": {"port": 0, "mode": "C", "tags": ["a", "a", "long"], "size": 1.5, "name": "X1"}});
        let errors: Vec<String> =
            admit(&mut obj, FieldValidation::Warn).unwrap_err().iter().map(ToString::to_string).collect();
        for expected in [
            "spec.port: Invalid value: 0: spec.port in body should be greater than or equal to 1",
            "spec.mode: Unsupported value: \"C\": supported values: \"A\", \"B\"",
            "spec.tags[1]: Duplicate value: \"a\"",
            "spec.tags[2]: Too long: may not be more than 3 bytes",
            "spec.tags: Too many: 3: must have at most 2 items",
            "spec.size: Invalid value: 1.5: spec.size in body must be of type integer or string",
            "spec.name: Invalid value: \"X1\": spec.name in body should match '^[a-z]+$'",
        ] {
            assert!(errors.iter().any(|e| e == expected), "missing {expected:?} in {errors:#?}");
        }
        let mut obj = json!({"spec": {}});
        let errors = admit(&mut obj, FieldValidation::Warn).unwrap_err();
        assert_eq!(errors[0].to_string(), "spec.port: Required value");
        let mut obj = json!({"spec": {"port": "80"}});
        let errors = admit(&mut obj, FieldValidation::Warn).unwrap_err();
        assert!(
            errors[0]
                .to_string()
                .starts_with("spec.port: Invalid value: \"string\": spec.port in body must be of type integer"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn an_update_may_keep_a_value_the_schema_now_refuses() {
        // Stored before the schema was tightened: port 0 and a name the pattern refuses.
        let old = json!({"metadata": {"name": "a"}, "spec": {"port": 0, "mode": "A", "name": "X1"}});
        let mut update = old.clone();
        update["metadata"]["finalizers"] = json!(["f"]);
        assert_eq!(schema().admit(&mut update, Some(&old), FieldValidation::Strict), Ok(Vec::new()));
        // Changing one of them is judged in full; the other still ratchets.
        let mut changed = old.clone();
        changed["spec"]["name"] = json!("Y2");
        let errors = schema().admit(&mut changed, Some(&old), FieldValidation::Strict).unwrap_err();
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors, ["spec.name: Invalid value: \"Y2\": spec.name in body should match '^[a-z]+$'"]);
        // A CEL rule on an unchanged value ratchets too; on create nothing does.
        let old = json!({"spec": {"port": 22, "mode": "A"}});
        assert_eq!(schema().admit(&mut old.clone(), Some(&old), FieldValidation::Strict), Ok(Vec::new()));
        assert!(schema().admit(&mut old.clone(), None, FieldValidation::Strict).is_err());
    }

    #[test]
    fn cel_rules_run_after_structure_passes() {
        let mut obj = json!({"spec": {"port": 22}});
        let errors = admit(&mut obj, FieldValidation::Warn).unwrap_err();
        assert_eq!(errors[0].to_string(), "spec: Invalid value: \"object\": not ssh");
        assert_eq!(errors[0].kind.reason(), "FieldValueInvalid");
    }
}
