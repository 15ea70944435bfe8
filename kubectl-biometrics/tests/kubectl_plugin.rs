//! kubectl (1.37, from make setup) finds `kubectl-biometrics` on PATH as the plugin
//! `biometrics` and passes it its arguments.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use biometrics_test_support::repo_root;
use common::{NS, Run, backend, serve_browser};

fn kubectl() -> PathBuf {
    let kubectl = repo_root().join(".tools/bin/kubectl");
    assert!(kubectl.exists(), "make setup installs kubectl into .tools/bin");
    kubectl
}

/// kubectl with only `dir` (holding the plugin) and the system's directories on PATH.
fn kubectl_with_plugin_in(dir: &Path, args: &[&str]) -> Run {
    Command::new(kubectl())
        .args(args)
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("BIOMETRICS_UI")
        .output()
        .expect("kubectl runs")
        .into()
}

#[test]
fn kubectl_finds_the_plugin_on_path() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kubectl-biometrics"), dir.path().join("kubectl-biometrics"))
        .unwrap();

    let list = kubectl_with_plugin_in(dir.path(), &["plugin", "list"]);
    list.assert_ok();
    assert!(list.stdout.contains(&format!("{}/kubectl-biometrics", dir.path().display())), "{list:?}");

    let help = kubectl_with_plugin_in(dir.path(), &["biometrics", "--help"]);
    help.assert_ok();
    assert!(help.stdout.contains("Usage: kubectl biometrics [OPTIONS] <COMMAND>"), "{help:?}");

    let (ui, _rt) = serve_browser(backend(&[]));
    let runs = kubectl_with_plugin_in(dir.path(), &["biometrics", "runs", "pcap/checkout", "-n", NS, "--ui", &ui]);
    runs.assert_ok();
    assert!(runs.stdout.starts_with("RUN   TRIGGER"), "{runs:?}");
    let missing = kubectl_with_plugin_in(dir.path(), &["biometrics", "runs", "pcap/nope", "-n", NS, "--ui", &ui]);
    missing.assert_error("no ProfileCapture shop/nope");
}
