//! The Biometrics custom resources and the value types they carry.
//!
//! Shared by the operator and the agent: `v1alpha1` holds the `ProfileCapture` and
//! `CachePolicy` types (their schema, defaults and CEL rules are what the API server
//! enforces), the other modules the parsed value types both sides reason with.

pub mod duration;
pub mod profile;
pub mod reference;
pub mod run_id;
pub mod schedule;
pub mod selector;
pub mod threshold;
pub mod v1alpha1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every Biometrics resource.
pub const GROUP: &str = "biometrics.io";

/// The name of the sidecar container that marks a pod as served by Biometrics.
pub const AGENT_CONTAINER: &str = "biometrics-agent";

/// The label a pod with an agent carries, and the operator's default Pod watch selector:
/// pods without it are never seen.
pub const AGENT_POD_SELECTOR: &str = "biometrics.io/agent=true";

/// Pod annotation naming the agent's port when it is not [`DEFAULT_AGENT_PORT`].
pub const AGENT_PORT_ANNOTATION: &str = "biometrics.io/agent-port";

/// The agent's port unless a pod's annotation says otherwise.
pub const DEFAULT_AGENT_PORT: u16 = 9477;

/// ProfileCapture annotation: each new value starts one run.
pub const CAPTURE_NOW_ANNOTATION: &str = "biometrics.io/capture-now";

/// CachePolicy annotation: each new value runs every invalidation rule once.
pub const INVALIDATE_NOW_ANNOTATION: &str = "biometrics.io/invalidate-now";

/// Every CRD this crate defines, with the file name `crdgen` writes it to.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![("profilecapture.yaml", v1alpha1::ProfileCapture::crd()), ("cachepolicy.yaml", v1alpha1::CachePolicy::crd())]
}

/// A CRD as the YAML document committed under `crds/yaml/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(crd)
}

/// What the unit tests ask of a value type's schema.
#[cfg(test)]
pub(crate) mod schema_check {
    use biometrics_test_apiserver::schema::{CrdSchema, FieldValidation};
    use schemars::{JsonSchema, SchemaGenerator};

    /// The schema of `T` as one property of an object, admitted as the test API server
    /// admits a custom resource: pattern, lengths and CEL rules.
    pub struct Admits(CrdSchema);

    impl Admits {
        /// Prepares `T`'s schema.
        pub fn new<T: JsonSchema>() -> Self {
            let schema = T::json_schema(&mut SchemaGenerator::default()).to_value();
            Self(CrdSchema::new(serde_json::json!({"type": "object", "properties": {"value": schema}})))
        }

        /// Why the API server would refuse `value`, if it would.
        pub fn check(&self, value: &str) -> Result<(), String> {
            let mut object = serde_json::json!({ "value": value });
            self.0
                .admit(&mut object, None, FieldValidation::Strict)
                .map(drop)
                .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        }
    }
}
