//! Pods reach the API server as their ServiceAccount, as in a cluster: the kubelet projects
//! the ServiceAccount's token, the CA and the namespace into every pod, sets
//! `KUBERNETES_SERVICE_HOST`/`PORT` to where pods reach the server, and the server's
//! certificate names that address; so kube-rs's `Client::try_default()` and kubectl work in
//! a pod unchanged, over HTTPS, and RBAC decides for the pod's ServiceAccount. Projected
//! volumes carry tokens for other audiences, bound to the pod.
//!
//! Needs root with CAP_SYS_ADMIN (the kubelet), and the `in_cluster_list` example built
//! (`cargo test -p biometrics-test-apiserver` builds it, as `make test` does).

mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use biometrics_test_apiserver::{
    Options, TestApiServer,
    kubelet::{ImageMap, KubeletConfig},
    rbac::Tokens,
};
use k8s_openapi::api::{
    authentication::v1::TokenReview,
    core::v1::{Pod, ServiceAccount},
    rbac::v1::RoleBinding,
};
use kube::{
    Api, Client,
    api::{LogParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

fn in_cluster_program() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/examples/in_cluster_list");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or(path, |dir| PathBuf::from(dir).join("debug/examples/in_cluster_list"));
    assert!(
        target.exists(),
        "{} is not built: `cargo build -p biometrics-test-apiserver --example in_cluster_list` (cargo test builds it)",
        target.display()
    );
    target
}

async fn create<K>(api: &Api<K>, manifest: serde_json::Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    api.create(&PostParams::default(), &serde_json::from_value(manifest).unwrap()).await.unwrap()
}

/// Waits for the pod to finish and returns its phase and log.
async fn outcome(pods: &Api<Pod>, name: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod = pods.get(name).await.unwrap();
        let status = pod.status.unwrap_or_default();
        let phase = status.phase.unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            let log = pods.logs(name, &LogParams::default()).await.unwrap();
            return (phase, log);
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} did not finish: {:?} {:?}",
            status.message,
            status.container_statuses
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pod(name: &str, account: &str, image: &str, args: &[&str]) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {"serviceAccountName": account, "restartPolicy": "Never",
        "containers": [{"name": "main", "image": image, "args": args}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_the_api_server_as_their_service_account() {
    let program = in_cluster_program();
    let dir = tempfile::tempdir().unwrap();
    let images = format!(
        "images:\n  example/in-cluster: {{command: [{}]}}\n  example/kubectl: {{command: [{}]}}\n  example/shell: {{command: [/bin/sh]}}\n",
        program.display(),
        common::kubectl_binary().canonicalize().unwrap().display()
    );
    let options = Options { rbac: Some(Tokens::default()), tls: true, ..Options::default() };
    let mut server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let config = KubeletConfig {
        node_name: "local-1".into(),
        state_dir: dir.path().join("kubelet"),
        images: ImageMap::parse(&images, Path::new("images.yaml")).unwrap(),
        restart_backoff: Duration::from_secs(1),
        api: server.addr(),
    };
    server.start_kubelet(config).await.expect("the kubelet starts (it needs root)");
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let admin = Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap(),
    )
    .unwrap();
    create(&Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone()), json!({"metadata": {"name": "shop"}}))
        .await;
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), "shop");
    create(&accounts, json!({"metadata": {"name": "lister"}})).await;
    let pods = Api::<Pod>::namespaced(admin.clone(), "shop");

    // No binding: the pod's own request is refused, for its ServiceAccount, in kube-apiserver's words.
    create(&pods, pod("denied", "lister", "example/in-cluster", &[])).await;
    let (phase, log) = outcome(&pods, "denied").await;
    assert_eq!(
        (phase.as_str(), log.trim()),
        (
            "Failed",
            "refused 403: pods is forbidden: User \"system:serviceaccount:shop:lister\" cannot list resource \"pods\" in API group \"\" in the namespace \"shop\""
        )
    );

    // Bound to view in shop: the same program lists, over HTTPS to the relay's address.
    create(
        &Api::<RoleBinding>::namespaced(admin.clone(), "shop"),
        json!({"metadata": {"name": "lister-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": "shop"}]}),
    )
    .await;
    create(&pods, pod("allowed", "lister", "example/in-cluster", &[])).await;
    let (phase, log) = outcome(&pods, "allowed").await;
    assert_eq!(phase, "Succeeded", "{log}");
    assert!(log.starts_with("listed 2 pods in shop"), "{log}");

    // kubectl in a pod uses the same in-cluster configuration.
    create(&pods, pod("kubectl", "lister", "example/kubectl", &["get", "pods", "-o", "name"])).await;
    let (phase, log) = outcome(&pods, "kubectl").await;
    assert_eq!(phase, "Succeeded", "{log}");
    assert!(log.contains("pod/allowed") && log.contains("pod/kubectl"), "{log}");

    // Opting out: no token, so no in-cluster configuration.
    let mut opted_out = pod("opted-out", "lister", "example/in-cluster", &[]);
    opted_out["spec"]["automountServiceAccountToken"] = json!(false);
    create(&pods, opted_out).await;
    let (phase, log) = outcome(&pods, "opted-out").await;
    assert_eq!(phase, "Failed");
    assert!(log.starts_with("no in-cluster configuration"), "{log}");

    // A projected volume: a token for another audience bound to this pod, a ConfigMap and
    // the downward API beside it; and the ServiceAccount volume's CA is the server's.
    let script = "cat /var/run/secrets/kubernetes.io/serviceaccount/ca.crt; echo '#'; \
                  cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo '#'; \
                  cat /projected/ui-token; echo '#'; cat /projected/pod";
    let mut projected = pod("projected", "lister", "example/shell", &["-c", script]);
    projected["spec"]["volumes"] = json!([{"name": "ui", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "biometrics-ui", "expirationSeconds": 600, "path": "ui-token"}},
        {"downwardAPI": {"items": [{"path": "pod", "fieldRef": {"fieldPath": "metadata.name"}}]}},
    ]}}]);
    projected["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "ui", "mountPath": "/projected"}]);
    create(&pods, projected).await;
    let (phase, log) = outcome(&pods, "projected").await;
    assert_eq!(phase, "Succeeded", "{log}");
    let parts: Vec<&str> = log.split('#').map(str::trim).collect();
    assert_eq!(parts[0], server.ca_pem().unwrap().trim());
    assert_eq!((parts[1], parts[3]), ("shop", "projected"));
    let review: TokenReview =
        serde_json::from_value(json!({"spec": {"token": parts[2], "audiences": ["biometrics-ui"]}})).unwrap();
    let status =
        Api::<TokenReview>::all(admin.clone()).create(&PostParams::default(), &review).await.unwrap().status.unwrap();
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.unwrap();
    assert_eq!(user.username.as_deref(), Some("system:serviceaccount:shop:lister"));
    assert_eq!(user.extra.unwrap()["authentication.kubernetes.io/pod-name"], ["projected"]);
    let for_api: TokenReview = serde_json::from_value(json!({"spec": {"token": parts[2]}})).unwrap();
    let status = Api::<TokenReview>::all(admin).create(&PostParams::default(), &for_api).await.unwrap().status.unwrap();
    assert_eq!(status.authenticated, Some(false), "a token for the browser is not one for the API server");

    server.stop_kubelet().await;
}
