//! OpenAPI v2 (`/openapi/v2`), which kubectl reads for client-side validation where the v3
//! document cannot answer (a `kind: List`): the built-ins' definitions from k8s-openapi,
//! each kind marked with `x-kubernetes-group-version-kind`, in JSON or in the protobuf form
//! client-go asks for (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, the
//! `openapi.v2.Document` message of gnostic).
//!
//! Paths are empty: kubectl finds the `fieldValidation` parameter in the v3 documents, and
//! custom resources are left out, so kubectl leaves their validation to the server.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use crate::{builtins::BUILTINS, error::ApiError, protobuf::wire};

/// The content type of the protobuf document as kube-apiserver labels it (the `@` of the
/// media type clients ask for is not valid in a Content-Type Go would parse).
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The v2 document in JSON.
pub fn document() -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    for builtin in BUILTINS {
        let reference = (builtin.schema)(&mut generator).to_value();
        if let Some(name) = reference.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()) {
            kinds.push((
                name.to_owned(),
                json!({"group": builtin.group, "version": builtin.version, "kind": builtin.kind}),
            ));
        }
    }
    let mut definitions: Map<String, Value> = crate::builtins::definitions();
    for schema in definitions.values_mut() {
        v2_references(schema);
    }
    for (name, gvk) in kinds {
        if let Some(schema) = definitions.get_mut(&name) {
            schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::MINOR_VERSION)},
        "paths": {},
        "definitions": definitions,
    })
}

/// `#/components/schemas/X` (v3) → `#/definitions/X` (v2), everywhere in a schema.
fn v2_references(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                *r = format!("#/definitions/{name}");
            }
            map.values_mut().for_each(v2_references);
        }
        Value::Array(items) => items.iter_mut().for_each(v2_references),
        _ => {}
    }
}

/// Answers `/openapi/v2`: protobuf when asked for (either spelling), JSON for JSON or any
/// type, and 406 for anything else, as kube-openapi's handler negotiates.
pub fn serve(accept: &str) -> Result<Response, ApiError> {
    let wants =
        |media: &str| accept.split(',').any(|clause| clause.split(';').next().is_some_and(|m| m.trim() == media));
    if wants("application/com.github.proto-openapi.spec.v2@v1.0+protobuf") || wants(PROTOBUF) {
        let doc = document();
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, PROTOBUF)], encode_document(&doc)).into_response());
    }
    if accept.trim().is_empty() || wants("application/json") || wants("*/*") || wants("application/*") {
        let doc = document();
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response());
    }
    Err(ApiError::not_acceptable(format!("only the following media types are accepted: application/json, {PROTOBUF}")))
}

/// The document as gnostic's `openapi.v2.Document`.
pub fn encode_document(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    put_text(&mut out, 1, doc.get("swagger"));
    if let Some(info) = doc.get("info") {
        let mut body = Vec::new();
        put_text(&mut body, 1, info.get("title"));
        put_text(&mut body, 2, info.get("version"));
        wire::put_bytes(&mut out, 2, &body);
    }
    wire::put_bytes(&mut out, 8, &[]);
    if let Some(Value::Object(definitions)) = doc.get("definitions") {
        let mut body = Vec::new();
        for (name, schema) in definitions {
            wire::put_bytes(&mut body, 1, &named(name, &encode_schema(schema)));
        }
        wire::put_bytes(&mut out, 9, &body);
    }
    out
}

fn put_text(out: &mut Vec<u8>, tag: u32, value: Option<&Value>) {
    if let Some(text) = value.and_then(Value::as_str) {
        wire::put_bytes(out, tag, text.as_bytes());
    }
}

/// A `Named*` pair: the name at 1, the value's message at 2.
fn named(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_bytes(&mut out, 1, name.as_bytes());
    wire::put_bytes(&mut out, 2, value);
    out
}

/// gnostic's `Any`: the value as YAML text (JSON is YAML).
fn any(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_bytes(&mut out, 2, value.to_string().as_bytes());
    out
}

/// A JSON schema as gnostic's `Schema` message.
pub fn encode_schema(schema: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let Value::Object(map) = schema else { return out };
    let number = |out: &mut Vec<u8>, tag: u32, v: &Value| {
        if let Some(f) = v.as_f64() {
            wire::put_key(out, tag, wire::FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
    };
    let integer = |out: &mut Vec<u8>, tag: u32, v: &Value| {
        if let Some(n) = v.as_i64() {
            wire::put_key(out, tag, wire::VARINT);
            wire::put_varint(out, n as u64);
        }
    };
    let boolean = |out: &mut Vec<u8>, tag: u32, v: &Value| {
        if let Some(b) = v.as_bool() {
            wire::put_key(out, tag, wire::VARINT);
            wire::put_varint(out, u64::from(b));
        }
    };
    let strings = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    };
    // Fields in tag order, as protobuf writers emit them.
    let fields: [(&str, u32); 27] = [
        ("$ref", 1),
        ("format", 2),
        ("title", 3),
        ("description", 4),
        ("default", 5),
        ("multipleOf", 6),
        ("maximum", 7),
        ("exclusiveMaximum", 8),
        ("minimum", 9),
        ("exclusiveMinimum", 10),
        ("maxLength", 11),
        ("minLength", 12),
        ("pattern", 13),
        ("maxItems", 14),
        ("minItems", 15),
        ("uniqueItems", 16),
        ("maxProperties", 17),
        ("minProperties", 18),
        ("required", 19),
        ("enum", 20),
        ("additionalProperties", 21),
        ("type", 22),
        ("items", 23),
        ("allOf", 24),
        ("properties", 25),
        ("discriminator", 26),
        ("readOnly", 27),
    ];
    for (key, tag) in fields {
        let Some(v) = map.get(key) else { continue };
        match tag {
            1..=4 | 13 | 26 => put_text(&mut out, tag, Some(v)),
            5 => wire::put_bytes(&mut out, tag, &any(v)),
            6 | 7 | 9 => number(&mut out, tag, v),
            8 | 10 | 16 | 27 => boolean(&mut out, tag, v),
            11 | 12 | 14 | 15 | 17 | 18 => integer(&mut out, tag, v),
            19 => strings(v).iter().for_each(|s| wire::put_bytes(&mut out, tag, s.as_bytes())),
            20 => v.as_array().into_iter().flatten().for_each(|e| wire::put_bytes(&mut out, tag, &any(e))),
            21 => {
                let mut item = Vec::new();
                match v {
                    Value::Bool(b) => {
                        wire::put_key(&mut item, 2, wire::VARINT);
                        wire::put_varint(&mut item, u64::from(*b));
                    }
                    other => wire::put_bytes(&mut item, 1, &encode_schema(other)),
                }
                wire::put_bytes(&mut out, tag, &item);
            }
            22 => {
                let mut item = Vec::new();
                strings(v).iter().for_each(|s| wire::put_bytes(&mut item, 1, s.as_bytes()));
                wire::put_bytes(&mut out, tag, &item);
            }
            23 => {
                let mut item = Vec::new();
                match v {
                    Value::Array(schemas) => {
                        schemas.iter().for_each(|s| wire::put_bytes(&mut item, 1, &encode_schema(s)));
                    }
                    other => wire::put_bytes(&mut item, 1, &encode_schema(other)),
                }
                wire::put_bytes(&mut out, tag, &item);
            }
            24 => v.as_array().into_iter().flatten().for_each(|s| wire::put_bytes(&mut out, tag, &encode_schema(s))),
            25 => {
                let mut item = Vec::new();
                for (name, s) in v.as_object().into_iter().flatten() {
                    wire::put_bytes(&mut item, 1, &named(name, &encode_schema(s)));
                }
                wire::put_bytes(&mut out, tag, &item);
            }
            _ => {}
        }
    }
    if let Some(example) = map.get("example") {
        wire::put_bytes(&mut out, 30, &any(example));
    }
    for (key, value) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
        wire::put_bytes(&mut out, 31, &named(key, &any(value)));
    }
    out
}
