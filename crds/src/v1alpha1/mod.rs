//! API version `biometrics.io/v1alpha1`.

mod cache_policy;
mod profile_capture;

pub use cache_policy::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
pub use profile_capture::*;
use schemars::{Schema, SchemaGenerator};

/// Conditions as a list keyed by `type` (KEP-1623), so server-side apply merges them by type
/// and two conditions of one type cannot coexist.
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("x-kubernetes-list-type".into(), "map".into());
        obj.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
        obj.insert("maxItems".into(), 16.into());
    }
    schema
}
