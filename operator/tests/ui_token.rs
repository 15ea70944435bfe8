//! The capture browser in token mode, against a test API server that authenticates and
//! authorizes as kube-apiserver does: no token or a token the cluster rejects gets 401; a
//! user allowed to get profilecaptures in `shop` only sees `shop` and is refused `billing`
//! in kube-apiserver's words; a user with no grant sees nothing and is refused everywhere;
//! a ServiceAccount token bound in `billing` sees only `billing`. The pages themselves are
//! static and open.

mod common;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use biometrics_test_apiserver::{Options, TestApiServer, rbac::Tokens};
use biometrics_test_support::{ChildGuard, free_port, http_request, wait_for_listener};
use common::OPERATOR_NS;
use kube::{
    Api, Client,
    api::{DynamicObject, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};

const TOKENS: &str = "shopper-token,shopper,1001\nnobody-token,nobody,1002\n";

async fn create(client: &Client, manifest: Value) {
    let kind = manifest["kind"].as_str().unwrap();
    let (group, version) = manifest["apiVersion"].as_str().unwrap().split_once('/').unwrap_or(("", "v1"));
    let plural = format!("{}s", kind.to_lowercase());
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
    let api: Api<DynamicObject> = match manifest.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.create(&PostParams::default(), &serde_json::from_value(manifest).unwrap()).await.unwrap();
}

/// `GET path` on the browser with `token`: the status and the JSON answer.
fn get(ui: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    let (status, body) = http_request(ui, "GET", path, &headers, b"");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn capture_names(answer: &Value) -> Vec<String> {
    let rows = answer.as_array().unwrap_or_else(|| panic!("a capture list: {answer}"));
    rows.iter().map(|r| format!("{}/{}", r["namespace"].as_str().unwrap(), r["name"].as_str().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_shows_each_user_only_the_namespaces_it_may_read() {
    biometrics_operator::install_crypto();
    let options = Options { rbac: Some(Tokens::parse(TOKENS).unwrap()), tls: true, ..Options::default() };
    let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let crds = ["profilecapture.yaml", "cachepolicy.yaml"]
        .map(|f| biometrics_test_support::repo_root().join("charts/biometrics/crds").join(f));
    server.create_from_files(&crds).unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let admin = Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap(),
    )
    .unwrap();
    for ns in ["shop", "billing", OPERATOR_NS] {
        create(&admin, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await;
    }
    for (ns, name) in [("shop", "web"), ("billing", "ledger")] {
        create(
            &admin,
            json!({"apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}}, "target": {"port": 6060}, "profiles": ["heap"]}}),
        )
        .await;
    }
    // shopper reads captures in shop; the ServiceAccount billing/auditor in billing.
    for (ns, subject) in [
        ("shop", json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "shopper"})),
        ("billing", json!({"kind": "ServiceAccount", "name": "auditor", "namespace": "billing"})),
    ] {
        create(
            &admin,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "capture-reader", "namespace": ns},
            "rules": [{"apiGroups": ["biometrics.io"], "resources": ["profilecaptures"], "verbs": ["get", "list"]}]}),
        )
        .await;
        create(
            &admin,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "capture-reader", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "capture-reader"},
            "subjects": [subject]}),
        )
        .await;
    }
    create(
        &admin,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "auditor", "namespace": "billing"}}),
    )
    .await;
    let auditor = server.service_account_token("billing", "auditor", &[]).unwrap();

    // The operator in token mode (its own credentials are an admin's here; the chart's RBAC
    // for this mode is operator/tests/rbac.rs's).
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig_path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig_path).unwrap();
    let loopback = "127.0.0.1".parse().unwrap();
    let (metrics, ui) =
        (SocketAddr::new(loopback, free_port(loopback)), SocketAddr::new(loopback, free_port(loopback)));
    let _operator = ChildGuard::spawn(
        "biometrics-operator",
        Command::new(env!("CARGO_BIN_EXE_biometrics-operator"))
            .args(["--metrics-addr", &metrics.to_string(), "--namespace", OPERATOR_NS, "--identity", "ui-0"])
            .args(["--ui-auth", "token", "--ui-addr", &ui.to_string()])
            .env("KUBECONFIG", &kubeconfig_path)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("operator.log")).unwrap())),
    );
    wait_for_listener(ui, Duration::from_secs(10));

    // No token, or one the cluster does not accept: 401, and nothing about any capture.
    let (status, answer) = get(ui, "/api/v1/captures", None);
    assert_eq!(status, 401, "{answer}");
    assert!(answer["message"].as_str().unwrap().starts_with("a bearer token is required"), "{answer}");
    let (status, answer) = get(ui, "/api/v1/namespaces/shop/captures/web", Some("forged-token"));
    assert_eq!((status, answer["message"].as_str()), (401, Some("the cluster did not accept the bearer token")));

    // shopper: shop only.
    let (status, answer) = get(ui, "/api/v1/captures", Some("shopper-token"));
    assert_eq!((status, capture_names(&answer)), (200, vec!["shop/web".to_owned()]));
    let (status, answer) = get(ui, "/api/v1/namespaces/shop/captures/web", Some("shopper-token"));
    assert_eq!((status, answer["capture"]["name"].as_str()), (200, Some("web")), "{answer}");
    let (status, answer) = get(ui, "/api/v1/namespaces/billing/captures/ledger", Some("shopper-token"));
    assert_eq!(
        (status, answer["message"].as_str().unwrap()),
        (
            403,
            "profilecaptures.biometrics.io is forbidden: User \"shopper\" cannot get resource \"profilecaptures\" in API group \"biometrics.io\" in the namespace \"billing\""
        )
    );

    // A namespace spelt with escapes is refused, not checked under another name.
    assert_eq!(get(ui, "/api/v1/namespaces/b%69lling/captures/ledger", Some("shopper-token")).0, 400);

    // nobody: nothing, and refused where it asks.
    let (status, answer) = get(ui, "/api/v1/captures", Some("nobody-token"));
    assert_eq!((status, capture_names(&answer)), (200, Vec::<String>::new()));
    assert_eq!(get(ui, "/api/v1/namespaces/shop/captures/web", Some("nobody-token")).0, 403);
    assert_eq!(get(ui, "/api/v1/namespaces/shop/captures/web/runs/r1/top", Some("nobody-token")).0, 403);

    // A ServiceAccount's token: its own namespace's captures.
    let (status, answer) = get(ui, "/api/v1/captures", Some(&auditor));
    assert_eq!((status, capture_names(&answer)), (200, vec!["billing/ledger".to_owned()]));

    // The pages are static and open; their data is behind the API.
    let (status, _) = http_request(ui, "GET", "/", &[], b"");
    assert_eq!(status, 200);
}
