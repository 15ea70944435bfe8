//! Writes the CRD YAML under `crds/yaml/` (or the directory given) from the Rust types.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("yaml"), PathBuf::from);
    for (file, crd) in biometrics_crds::crds() {
        let path = dir.join(file);
        let written = biometrics_crds::crd_yaml(&crd)
            .map_err(|e| e.to_string())
            .and_then(|yaml| std::fs::write(&path, yaml).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
