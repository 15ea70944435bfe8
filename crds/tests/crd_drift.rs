//! The committed CRD YAML under `crds/yaml/` must be exactly what the Rust types generate.

use std::path::Path;

#[test]
fn committed_crd_yaml_matches_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("yaml");
    let mut drifted = Vec::new();
    for (file, crd) in biometrics_crds::crds() {
        let generated = biometrics_crds::crd_yaml(&crd).expect("CRD serialises");
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if committed != generated {
            drifted.push(file);
        }
    }
    assert!(
        drifted.is_empty(),
        "crds/yaml/{{{}}} differ from the Rust types; regenerate with `make crds` \
         (cargo run -p biometrics-crds --bin crdgen) and commit the result",
        drifted.join(",")
    );
}

#[test]
fn committed_yaml_parses_back_into_the_same_crd() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("yaml");
    for (file, crd) in biometrics_crds::crds() {
        let text = std::fs::read_to_string(dir.join(file)).expect("committed CRD file");
        let parsed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_saphyr::from_str(&text).expect("committed CRD parses");
        assert!(parsed == crd, "{file} does not read back as the CRD it was written from");
    }
}
