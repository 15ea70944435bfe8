//! Validation of every name that becomes a path component, and the layout of the profiles
//! directory: `<root>/<namespace>/<capture>/<run>/<pod>/<file>`.

use std::path::{Path, PathBuf};

/// Why a name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value:?} is invalid: {reason}")]
pub struct NameError {
    /// Which field.
    pub field: &'static str,
    /// The value (shown escaped by `{:?}`).
    pub value: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters. Namespaces,
/// run ids and pod names... well, pod names are subdomains: see [`dns_subdomain`].
pub fn dns_label(field: &'static str, value: &str) -> Result<(), NameError> {
    let err = |reason| Err(NameError { field, value: value.to_owned(), reason });
    if value.is_empty() {
        return err("must not be empty");
    }
    if value.len() > 63 {
        return err("must be at most 63 characters");
    }
    if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return err("must consist of lower-case letters, digits and '-'");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return err("must start and end with a letter or digit");
    }
    Ok(())
}

/// A run-id suffix: 8 lower-case hex digits (the first of a capture's uid).
pub fn run_suffix(field: &'static str, value: &str) -> Result<(), NameError> {
    if biometrics_crds::run_id::is_suffix(value) {
        return Ok(());
    }
    Err(NameError { field, value: value.to_owned(), reason: "must be 8 lower-case hex digits" })
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters (object names).
pub fn dns_subdomain(field: &'static str, value: &str) -> Result<(), NameError> {
    if value.len() > 253 {
        return Err(NameError { field, value: value.to_owned(), reason: "must be at most 253 characters" });
    }
    if value.is_empty() {
        return Err(NameError { field, value: value.to_owned(), reason: "must not be empty" });
    }
    for label in value.split('.') {
        dns_label(field, label).map_err(|e| NameError {
            reason: if label.is_empty() { "must not contain empty labels ('..')" } else { e.reason },
            ..e
        })?;
    }
    Ok(())
}

/// A capture id: 1 to 128 of `[a-z0-9-]`.
pub fn capture_id(value: &str) -> Result<(), NameError> {
    let err = |reason| Err(NameError { field: "id", value: value.to_owned(), reason });
    if value.is_empty() || value.len() > 128 {
        return err("must be 1 to 128 characters");
    }
    if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return err("must consist of lower-case letters, digits and '-'");
    }
    Ok(())
}

/// A pprof base path: `/`-separated segments of `[A-Za-z0-9_.~-]`, no `.` or `..` segment.
pub fn base_path(value: &str) -> Result<(), NameError> {
    let err = |reason| Err(NameError { field: "target.basePath", value: value.to_owned(), reason });
    if value.len() > 128 {
        return err("must be at most 128 characters");
    }
    let Some(rest) = value.strip_prefix('/') else { return err("must start with '/'") };
    for segment in rest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return err("must not contain empty, '.' or '..' segments");
        }
        if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~' | b'-')) {
            return err("may only contain letters, digits and _ . ~ -");
        }
    }
    Ok(())
}

/// The directory of one capture's runs: `<namespace>/<capture>`.
pub fn capture_dir(namespace: &str, capture: &str) -> PathBuf {
    Path::new(namespace).join(capture)
}

/// The directory one pod writes a run's files to: `<namespace>/<capture>/<run>/<pod>`.
pub fn pod_run_dir(namespace: &str, capture: &str, run: &str, pod: &str) -> PathBuf {
    capture_dir(namespace, capture).join(run).join(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "shop", "run-1", "0abc"] {
            assert!(dns_label("x", ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "..", "UPPER", "-a", "a-", "a.b", "a/b", &"a".repeat(64), "a b", "ä"] {
            assert!(dns_label("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdomains_and_ids() {
        assert!(dns_subdomain("name", "api.v2").is_ok());
        assert!(dns_subdomain("name", "a..b").unwrap_err().to_string().contains("empty labels"));
        assert!(dns_subdomain("name", "../etc").is_err());
        assert!(capture_id("0f3c-run-7").is_ok());
        assert!(capture_id("../x").is_err());
        assert!(capture_id(&"a".repeat(129)).is_err());
    }

    #[test]
    fn base_paths() {
        assert!(base_path("/debug/pprof").is_ok());
        assert!(base_path("/x/../admin").is_err());
        assert!(base_path("debug/pprof").is_err());
        assert!(base_path("/debug//pprof").is_err());
        assert!(base_path("/debug/pprof?x=1").is_err());
        assert!(base_path("http://evil/x").is_err());
    }
}
