//! ServiceAccount tokens as kube-apiserver issues them: a TokenRequest returns a signed token
//! that authenticates as the ServiceAccount (and RBAC decides what it may do), TokenReview
//! says who a token stands for and for which audiences, and a token bound to a pod stops
//! working when the pod is deleted.

use std::time::Duration;

use biometrics_test_apiserver::{Options, TestApiServer, rbac::Tokens};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenReview, TokenReviewStatus},
    core::v1::{Namespace, Pod, ServiceAccount},
    rbac::v1::RoleBinding,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

async fn client(server: &TestApiServer, token: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig_as(token)).unwrap();
    Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap())
        .unwrap()
}

fn refusal<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(e)) => (e.code, e.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn token(admin: &Client, account: &str, spec: serde_json::Value) -> kube::Result<String> {
    let request: TokenRequest = serde_json::from_value(json!({"spec": spec})).unwrap();
    let answer = Api::<ServiceAccount>::namespaced(admin.clone(), "shop")
        .create_token_request(account, &PostParams::default(), &request)
        .await?;
    Ok(answer.status.unwrap().token.unwrap())
}

async fn review(admin: &Client, token: &str, audiences: &[&str]) -> TokenReviewStatus {
    let review: TokenReview =
        serde_json::from_value(json!({"spec": {"token": token, "audiences": audiences}})).unwrap();
    Api::<TokenReview>::all(admin.clone()).create(&PostParams::default(), &review).await.unwrap().status.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_authenticate_as_their_account_until_what_they_are_bound_to_goes() {
    let options = Options { rbac: Some(Tokens::default()), tls: true, ..Options::default() };
    let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let admin = client(&server, biometrics_test_apiserver::ADMIN_TOKEN).await;
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap();
    Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), "shop");
    // kube-controller-manager's default ServiceAccount and CA ConfigMap appear in a new namespace.
    let mut published = false;
    for _ in 0..50 {
        if accounts.get_opt("default").await.unwrap().is_some() {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "the default ServiceAccount is made in every namespace");
    let root_ca = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), "shop")
        .get("kube-root-ca.crt")
        .await
        .unwrap();
    assert_eq!(root_ca.data.unwrap()["ca.crt"], server.ca_pem().unwrap());

    let ops: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "ops"}})).unwrap();
    accounts.create(&PostParams::default(), &ops).await.unwrap();
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"serviceAccountName": "ops", "containers": [{"name": "app", "image": "app"}]}}))
    .unwrap();
    let pods = Api::<Pod>::namespaced(admin.clone(), "shop");
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod_uid = pod.metadata.uid.unwrap();

    // A token bound to the pod: the ServiceAccount, refused by RBAC until bound, then allowed.
    let bound = token(
        &admin,
        "ops",
        json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": pod_uid}}),
    )
    .await
    .unwrap();
    let as_ops = client(&server, &bound).await;
    assert_eq!(
        refusal(Api::<Pod>::namespaced(as_ops.clone(), "shop").list(&ListParams::default()).await),
        (
            403,
            "pods is forbidden: User \"system:serviceaccount:shop:ops\" cannot list resource \"pods\" in API group \"\" in the namespace \"shop\"".into()
        )
    );
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "ops-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "ops", "namespace": "shop"}]}))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "shop").create(&PostParams::default(), &binding).await.unwrap();
    let listed = Api::<Pod>::namespaced(as_ops.clone(), "shop").list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);

    // TokenReview: the user, its groups and the bound pod, for the API server's audience.
    let status = review(&admin, &bound, &[]).await;
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.unwrap();
    assert_eq!(user.username.as_deref(), Some("system:serviceaccount:shop:ops"));
    assert_eq!(user.groups.unwrap(), ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]);
    assert_eq!(user.extra.unwrap()["authentication.kubernetes.io/pod-name"], ["web"]);
    assert_eq!(status.audiences.unwrap(), ["https://kubernetes.default.svc.cluster.local"]);
    let elsewhere = review(&admin, &bound, &["biometrics-ui"]).await;
    assert_eq!(elsewhere.authenticated, Some(false), "a token for the API server is not for another audience");

    // A token for another audience: reviewed for it, refused by the API server itself.
    let for_ui = token(&admin, "ops", json!({"audiences": ["biometrics-ui"], "expirationSeconds": 600})).await.unwrap();
    let status = review(&admin, &for_ui, &["biometrics-ui", "other"]).await;
    assert_eq!((status.authenticated, status.audiences), (Some(true), Some(vec!["biometrics-ui".to_owned()])));
    let as_ui = client(&server, &for_ui).await;
    assert_eq!(refusal(Api::<Pod>::namespaced(as_ui, "shop").list(&ListParams::default()).await).0, 401);

    // Bad requests change nothing: too short a lifetime, no such account, a stale pod uid.
    let (code, message) = refusal(token(&admin, "ops", json!({"expirationSeconds": 60})).await);
    assert_eq!(code, 422);
    assert!(message.contains("may not specify a duration less than 10 minutes"), "{message}");
    assert_eq!(refusal(token(&admin, "nobody", json!({})).await), (404, "serviceaccounts \"nobody\" not found".into()));
    let stale = json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "not-the-uid"}});
    assert_eq!(refusal(token(&admin, "ops", stale).await).0, 409);

    // The pod goes: its token no longer authenticates; an unbound token of the account still does.
    let unbound = token(&admin, "ops", json!({})).await.unwrap();
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    let status = review(&admin, &bound, &[]).await;
    assert_eq!(status.authenticated, Some(false));
    assert_eq!(status.error.as_deref(), Some("Pod shop/web has been deleted"));
    assert_eq!(refusal(Api::<Pod>::namespaced(as_ops, "shop").list(&ListParams::default()).await).0, 401);
    assert_eq!(review(&admin, &unbound, &[]).await.authenticated, Some(true));

    // The account goes: none of its tokens authenticates.
    accounts.delete("ops", &DeleteParams::default()).await.unwrap();
    let status = review(&admin, &unbound, &[]).await;
    assert_eq!(status.error.as_deref(), Some("ServiceAccount shop/ops has been deleted"));

    // Only who may create tokenreviews may ask.
    let nobody = client(&server, &token(&admin, "default", json!({})).await.unwrap()).await;
    let ask: TokenReview = serde_json::from_value(json!({"spec": {"token": unbound}})).unwrap();
    let (code, message) = refusal(Api::<TokenReview>::all(nobody).create(&PostParams::default(), &ask).await);
    assert_eq!(code, 403);
    assert!(
        message.contains(
            "cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope"
        ),
        "{message}"
    );
}
