//! The real Helm (installed by `make setup`) installs, upgrades and uninstalls the
//! project's chart against the server, and leaves behind only what Helm keeps by design:
//! the CRDs of the chart's `crds/` directory and the namespace `--create-namespace` made.

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use biometrics_test_apiserver::{TestApiServer, store::Store};
use common::Kubectl;
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn helm(dir: &Path, args: &[&str]) -> String {
    let binary = std::env::var_os("HELM").map_or_else(|| repo_root().join(".tools/bin/helm"), PathBuf::from);
    assert!(binary.exists(), "helm is not installed at {}: run `make setup`", binary.display());
    let out = Command::new(binary)
        .args(args)
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("HELM_CACHE_HOME", dir.join("helm/cache"))
        .env("HELM_CONFIG_HOME", dir.join("helm/config"))
        .env("HELM_DATA_HOME", dir.join("helm/data"))
        .current_dir(repo_root())
        .output()
        .expect("helm runs");
    assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every stored object as `plural.group namespace/name`, except Events, which a cluster
/// keeps after what they are about is gone.
fn everything(store: &Store) -> BTreeSet<String> {
    let registry = store.registry();
    let mut all = BTreeSet::new();
    for rt in registry.all().filter(|rt| rt.plural != "events") {
        let (items, _) = store.list(&rt.key(), None).expect("list");
        for item in items {
            let text = |p: &str| item.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
            all.insert(format!("{} {}/{}", rt.qualified_name(), text("/metadata/namespace"), text("/metadata/name")));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_upgrades_and_uninstalls() {
    let server = TestApiServer::start("127.0.0.1:0".parse().unwrap()).await.expect("server");
    let dir = tempfile::tempdir().expect("dir");
    server.write_kubeconfig(&dir.path().join("kubeconfig")).expect("kubeconfig");
    let before = everything(server.store());
    let path = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let k = Kubectl::new(&path);
        let get = |kind: &str, name: &str| -> Value {
            serde_json::from_str(&k.ok(&["get", kind, name, "-n", "biometrics", "-o", "json"])).expect("JSON")
        };
        let out = helm(
            &path,
            &[
                "install",
                "bio",
                "charts/biometrics",
                "-n",
                "biometrics",
                "--create-namespace",
                "--set",
                "networkPolicy.enabled=true,networkPolicy.namespaces={biometrics}",
                "--set",
                "profiles.claimName=profiles,profiles.persistentVolumeClaim.create=true",
                "--set-json",
                r#"config={"performance":{"metrics":{"interval":"30s"}}}"#,
            ],
        );
        assert!(out.contains("STATUS: deployed"), "{out}");
        let deploy = get("deployment", "bio-biometrics");
        assert_eq!(deploy["spec"]["replicas"], 2);
        assert_eq!(deploy["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm");
        for (kind, name) in [
            ("serviceaccount", "bio-biometrics"),
            ("service", "bio-biometrics-metrics"),
            ("role", "bio-biometrics"),
            ("rolebinding", "bio-biometrics"),
            ("persistentvolumeclaim", "profiles"),
        ] {
            assert_eq!(get(kind, name)["metadata"]["annotations"]["meta.helm.sh/release-name"], "bio", "{kind}");
        }
        let policies = k.ok(&["get", "networkpolicy", "-n", "biometrics", "-o", "name"]);
        assert!(!policies.trim().is_empty(), "a NetworkPolicy for the agents");
        k.ok(&["get", "clusterrole,clusterrolebinding", "bio-biometrics"]);
        let crds = k.ok(&["get", "crds", "-o", "name"]);
        assert!(crds.contains("profilecaptures.biometrics.io") && crds.contains("cachepolicies.biometrics.io"));

        // An upgrade with changed values changes the objects and keeps the others.
        let out = helm(
            &path,
            &[
                "upgrade",
                "bio",
                "charts/biometrics",
                "-n",
                "biometrics",
                "--reuse-values",
                "--set",
                "replicaCount=1,logLevel=debug",
            ],
        );
        assert!(out.contains("REVISION: 2"), "{out}");
        let deploy = get("deployment", "bio-biometrics");
        assert_eq!(deploy["spec"]["replicas"], 1);
        let env = &deploy["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(env.as_array().unwrap().contains(&json!({"name": "BIOMETRICS_LOG", "value": "debug"})), "{env}");
        let history = helm(&path, &["history", "bio", "-n", "biometrics", "-o", "json"]);
        let history: Value = serde_json::from_str(&history).unwrap();
        assert_eq!(history.as_array().map(Vec::len), Some(2));
        assert_eq!(history[1]["status"], "deployed");
        assert_eq!(history[0]["status"], "superseded");

        let out = helm(&path, &["uninstall", "bio", "-n", "biometrics"]);
        assert!(out.contains("uninstalled"), "{out}");
    })
    .await
    .unwrap();

    // Garbage collection of the ReplicaSet's pods is in the background; wait for it.
    let mut left = BTreeSet::new();
    for _ in 0..50 {
        left = everything(server.store()).difference(&before).cloned().collect();
        if !left.iter().any(|o| o.starts_with("pods ") || o.starts_with("replicasets")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let kept: BTreeSet<String> = [
        "customresourcedefinitions.apiextensions.k8s.io /cachepolicies.biometrics.io",
        "customresourcedefinitions.apiextensions.k8s.io /profilecaptures.biometrics.io",
        "namespaces /biometrics",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(left, kept, "only what Helm keeps by design is left");
}
