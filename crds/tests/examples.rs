//! Every manifest in `examples/` is admitted by the generated CRD schema exactly as the API
//! server would admit it, and reads into the Rust types; every manifest in
//! `tests/fixtures/invalid/` is refused for the reason its header states.

use std::path::{Path, PathBuf};

use biometrics_crds::v1alpha1::{CachePolicy, ProfileCapture};
use biometrics_test_apiserver::schema::{CrdSchema, FieldValidation};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("crds/ has a parent").to_path_buf()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("readable manifest");
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The schema of our CRD for `kind`, or None for a built-in kind.
fn schema_for(kind: &str) -> Option<CrdSchema> {
    biometrics_crds::crds().into_iter().find(|(_, crd)| crd.spec.names.kind == kind).map(|(_, crd)| {
        let version = &crd.spec.versions[0];
        let schema = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("CRD has a schema");
        CrdSchema::new(serde_json::to_value(schema).expect("schema serialises"))
    })
}

/// The spec as serde reads it (Rust defaults), written back out: what the operator sees.
fn typed_spec(kind: &str, object: &Value) -> Value {
    let spec = match kind {
        "ProfileCapture" => {
            serde_json::from_value::<ProfileCapture>(object.clone()).and_then(|o| serde_json::to_value(o.spec))
        }
        "CachePolicy" => {
            serde_json::from_value::<CachePolicy>(object.clone()).and_then(|o| serde_json::to_value(o.spec))
        }
        other => panic!("no Rust type for {other}"),
    };
    spec.unwrap_or_else(|e| panic!("{kind} does not read into the Rust type: {e}"))
}

/// JSON with every number as a float: YAML's `70` and Rust's `70.0` are the same threshold.
fn numbers_as_floats(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
        Value::Array(items) => items.iter().map(numbers_as_floats).collect(),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), numbers_as_floats(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn every_example_is_admitted_and_reads_into_the_types() {
    let files = yaml_files(&repo_root().join("examples"));
    assert!(files.len() >= 4, "examples/ holds the sample manifests");
    let mut ours = 0;
    for path in files {
        for raw in documents(&path) {
            let kind = raw["kind"].as_str().expect("every manifest has a kind").to_owned();
            let Some(schema) = schema_for(&kind) else {
                // Built-in kinds: they must at least read into their k8s-openapi types.
                let read = match kind.as_str() {
                    "Deployment" => {
                        serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(raw.clone()).map(drop)
                    }
                    "Pod" => serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(raw.clone()).map(drop),
                    "Secret" => serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(raw.clone()).map(drop),
                    "Service" => serde_json::from_value::<k8s_openapi::api::core::v1::Service>(raw.clone()).map(drop),
                    "PersistentVolumeClaim" => {
                        serde_json::from_value::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(raw.clone())
                            .map(drop)
                    }
                    other => panic!("{}: unexpected kind {other}", path.display()),
                };
                read.unwrap_or_else(|e| panic!("{}: {kind}: {e}", path.display()));
                continue;
            };
            let mut admitted = raw.clone();
            let warnings = schema
                .admit(&mut admitted, None, FieldValidation::Strict)
                .unwrap_or_else(|errors| panic!("{} refused: {errors:#?}", path.display()));
            assert!(warnings.is_empty(), "{}: {warnings:?}", path.display());
            // The schema's defaults and the Rust defaults must agree: the object the API
            // server stores reads the same as the raw manifest read with serde defaults.
            assert_eq!(
                typed_spec(&kind, &admitted),
                typed_spec(&kind, &raw),
                "{}: schema defaults and Rust defaults disagree",
                path.display()
            );
            // And what the API server stores is exactly what the types write back.
            let typed = typed_spec(&kind, &admitted);
            assert!(
                numbers_as_floats(&typed) == numbers_as_floats(&admitted["spec"]),
                "{}: the stored spec does not round-trip:\n{}\n{}",
                path.display(),
                serde_json::to_string(&typed).unwrap(),
                admitted["spec"]
            );
            ours += 1;
        }
    }
    assert!(ours >= 4, "at least four of our resources among the examples, found {ours}");
}

#[test]
fn every_invalid_fixture_is_refused_for_its_stated_reason() {
    let files = yaml_files(&repo_root().join("tests/fixtures/invalid"));
    assert!(files.len() >= 20, "the invalid fixtures are there");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable fixture");
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .unwrap_or_else(|| panic!("{} has no '# {key}:' line", path.display()))
                .to_owned()
        };
        let (expect, _why) = (header("expect"), header("why"));
        let mut object: Value = serde_saphyr::from_str(&text).expect("fixture parses as YAML");
        let kind = object["kind"].as_str().expect("fixture has a kind").to_owned();
        let schema = schema_for(&kind).expect("fixtures are our kinds");
        let errors = match schema.admit(&mut object, None, FieldValidation::Strict) {
            Ok(_) => panic!("{} was admitted; it must be refused with {expect:?}", path.display()),
            Err(errors) => errors,
        };
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            messages.iter().any(|m| m.contains(&expect)),
            "{} was refused, but not with {expect:?}: {messages:#?}",
            path.display()
        );
    }
}

#[test]
fn a_valid_manifest_passes_before_each_fixture_breaks_it() {
    // Guards the fixtures' meaning: the base shape they are built from is itself valid, so
    // each refusal is caused by the one thing the fixture changes.
    for (kind, base) in [
        (
            "ProfileCapture",
            "apiVersion: biometrics.io/v1alpha1\nkind: ProfileCapture\nmetadata: {name: base, namespace: shop}\nspec:\n  selector: {matchLabels: {app: api}}\n  target: {port: 6060}\n",
        ),
        (
            "CachePolicy",
            "apiVersion: biometrics.io/v1alpha1\nkind: CachePolicy\nmetadata: {name: base, namespace: shop}\nspec:\n  selector: {matchLabels: {app: users}}\n  redis: {address: \"redis:6379\"}\n  keyPrefix: \"users:\"\n  strategy: {type: LRU}\n",
        ),
    ] {
        let mut object: Value = serde_saphyr::from_str(base).unwrap();
        let schema = schema_for(kind).unwrap();
        schema
            .admit(&mut object, None, FieldValidation::Strict)
            .unwrap_or_else(|e| panic!("{kind} base refused: {e:#?}"));
    }
}
