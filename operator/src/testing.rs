//! What the operator's unit tests share: a Kubernetes client on an in-process test API
//! server (the one the end-to-end tests run against), for reconcile steps that write
//! Events or status.

use biometrics_test_apiserver::TestApiServer;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

/// The namespace the helpers create.
pub const NS: &str = "shop";

/// A test API server with the namespace [`NS`], and a client of it.
pub async fn api_server() -> (TestApiServer, Client) {
    crate::install_crypto();
    let server = TestApiServer::start("127.0.0.1:0".parse().expect("address")).await.expect("test API server");
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("client config");
    let client = Client::try_from(config).expect("client");
    let namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).expect("namespace");
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.expect("namespace");
    (server, client)
}

/// The Events of [`NS`] about the object named `name`, once at least `at_least` are there
/// (they are published from spawned tasks); after a short wait for any more.
pub async fn events_about(client: &Client, name: &str, at_least: usize) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), NS);
    let list = || async {
        let selector = format!("involvedObject.name={name}");
        api.list(&ListParams::default().fields(&selector)).await.expect("list events").items
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while list().await.len() < at_least {
        assert!(std::time::Instant::now() < deadline, "fewer than {at_least} Events about {name}: {:#?}", list().await);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    list().await
}
