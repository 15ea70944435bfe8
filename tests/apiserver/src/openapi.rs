//! OpenAPI v3 for what the server serves: the root index of group versions, and per group
//! version a document with the custom resources' schemas (for `kubectl explain`) and paths
//! that declare the `fieldValidation` parameter (so kubectl leaves validation to us).

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::{error::ApiError, registry::ResourceType, server::AppState};

fn gv_path(rt: &ResourceType) -> String {
    if rt.group.is_empty() { format!("api/{}", rt.version) } else { format!("apis/{}/{}", rt.group, rt.version) }
}

/// `io.biometrics.v1alpha1.ProfileCapture`-style component names, as kube-apiserver builds them.
fn component_name(rt: &ResourceType) -> String {
    let reversed: Vec<&str> = rt.group.split('.').rev().collect();
    let prefix = if rt.group.is_empty() { "io.k8s.api.core".to_owned() } else { reversed.join(".") };
    format!("{prefix}.{}.{}", rt.version, rt.kind)
}

fn hash(text: &str) -> String {
    // FNV-1a: a stable content hash for the serverRelativeURL.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016X}")
}

fn parameter(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn operations(rt: &ResourceType, schema_ref: &Value) -> (Value, Value) {
    let gvk = gvk(rt);
    let write_params = json!([
        parameter("dryRun", "When present, indicates that modifications should not be persisted."),
        parameter(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes."
        ),
        parameter(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict."
        ),
    ]);
    let body = json!({"content": {"application/json": {"schema": schema_ref}}});
    let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}});
    let op = |verb: &str, with_body: bool| {
        let mut o = json!({
            "operationId": format!("{verb}{}", rt.kind),
            "parameters": write_params,
            "responses": ok,
            "x-kubernetes-action": verb,
            "x-kubernetes-group-version-kind": gvk,
        });
        if with_body {
            o["requestBody"] = body.clone();
        }
        o
    };
    let collection = json!({"get": op("list", false), "post": op("post", true)});
    let item = json!({"get": op("get", false), "put": op("put", true), "patch": op("patch", true), "delete": op("delete", false)});
    (collection, item)
}

fn gvk(rt: &ResourceType) -> Value {
    json!({"group": rt.group, "version": rt.version, "kind": rt.kind})
}

fn insert_paths(paths: &mut Map<String, Value>, rt: &ResourceType, collection: Value, item: Value) {
    let base = format!("/{}", gv_path(rt));
    let scope = if rt.namespaced { "/namespaces/{namespace}" } else { "" };
    paths.insert(format!("{base}{scope}/{}", rt.plural), collection);
    paths.insert(format!("{base}{scope}/{}/{{name}}", rt.plural), item.clone());
    if rt.status_subresource {
        paths.insert(format!("{base}{scope}/{}/{{name}}/status", rt.plural), item);
    }
}

/// The OpenAPI v3 document of one group version.
fn group_version_doc(types: &[&ResourceType]) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    // k8s-openapi's schemas, under kube-apiserver's component names.
    let mut generator = SchemaSettings::openapi3().into_generator();
    generator.subschema_for::<ObjectMeta>();
    let mut kinds = Vec::new();
    for rt in types {
        if let Some(schema_of) = rt.builtin_schema {
            let reference = schema_of(&mut generator).to_value();
            if let Some(name) = reference.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()) {
                kinds.push((name.to_owned(), gvk(rt)));
            }
            let (collection, item) = operations(rt, &reference);
            insert_paths(&mut paths, rt, collection, item);
            continue;
        }
        let name = component_name(rt);
        let schema_ref = json!({"$ref": format!("#/components/schemas/{name}")});
        let mut schema = rt.schema.as_ref().map_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            |s| s.raw().clone(),
        );
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            props.insert("metadata".into(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata."}));
        }
        schema["x-kubernetes-group-version-kind"] = json!([gvk(rt)]);
        schemas.insert(name, schema);
        let (collection, item) = operations(rt, &schema_ref);
        insert_paths(&mut paths, rt, collection, item);
    }
    schemas.extend(generator.take_definitions(true));
    for (name, gvk) in kinds {
        // How `kubectl explain` finds a kind's schema.
        if let Some(schema) = schemas.get_mut(&name) {
            schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::MINOR_VERSION)},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn json_ok(body: &Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Answers `/openapi/v3` and `/openapi/v3/<group-version path>`.
pub fn serve(state: &AppState, path: &str) -> Result<Response, ApiError> {
    let registry = state.store.registry();
    let types: Vec<&ResourceType> = registry.all().collect();
    if path == "/openapi/v3" || path == "/openapi/v3/" {
        let mut paths = Map::new();
        let mut gvs: Vec<String> = types.iter().map(|t| gv_path(t)).collect();
        gvs.sort();
        gvs.dedup();
        for gv in gvs {
            let members: Vec<&ResourceType> = types.iter().copied().filter(|t| gv_path(t) == gv).collect();
            let digest = hash(&group_version_doc(&members).to_string());
            paths.insert(gv.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={digest}")}));
        }
        return Ok(json_ok(&json!({"paths": paths})));
    }
    if let Some(gv) = path.strip_prefix("/openapi/v3/") {
        let members: Vec<&ResourceType> =
            types.iter().copied().filter(|t| gv_path(t) == gv.trim_end_matches('/')).collect();
        if members.is_empty() {
            return Err(ApiError::no_route(path));
        }
        return Ok(json_ok(&group_version_doc(&members)));
    }
    Err(ApiError::no_route(path))
}
