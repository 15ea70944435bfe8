//! The CRD reference pages under `docs/reference/` must be exactly what the CRD schema
//! generates. With `BIOMETRICS_WRITE_DOCS=1` the test writes them instead.

use std::path::Path;

use biometrics_crds::reference;

#[test]
fn committed_reference_pages_match_the_crds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference");
    let write = std::env::var("BIOMETRICS_WRITE_DOCS").is_ok_and(|v| v == "1");
    let mut drifted = Vec::new();
    for (file, generated) in reference::pages() {
        let path = dir.join(&file);
        if write {
            std::fs::create_dir_all(&dir).expect("create docs/reference");
            std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(generated.as_str()) {
            drifted.push(file);
        }
    }
    assert!(
        drifted.is_empty(),
        "docs/reference/{{{}}} differ from the CRD schema; regenerate with `{}` and commit the result",
        drifted.join(","),
        reference::REGENERATE
    );
}
