//! Who may do what, with the server authenticating bearer tokens and authorizing by RBAC:
//! a user with no binding is refused in kube-apiserver's words, the `view` ClusterRole (with
//! a CRD's role aggregated into it) lets one read but not patch, a Role grants one
//! subresource in one namespace to a ServiceAccount, the reviews answer what a user may do
//! and who they are, and unknown or missing credentials get 401.
//!
//! The server serves HTTPS with its own CA, as it must for kubectl to send a bearer token.

mod common;

use std::path::Path;

use biometrics_test_apiserver::{Options, TestApiServer, rbac::Tokens};
use k8s_openapi::api::{
    authentication::v1::SelfSubjectReview,
    authorization::v1::SelfSubjectAccessReview,
    core::v1::{Pod, Secret},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::json;

const TOKENS: &str = "vera-token,vera,1001,\"\"\nops-token,system:serviceaccount:shop:ops,1002,\"system:serviceaccounts,system:serviceaccounts:shop\"\n";

async fn client(server: &TestApiServer, token: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig_as(token)).unwrap();
    Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap())
        .unwrap()
}

fn captures(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("biometrics.io", "v1alpha1", "ProfileCapture");
    Api::namespaced_with(client.clone(), "shop", &ApiResource::from_gvk_with_plural(&gvk, "profilecaptures"))
}

async fn apply(client: &Client, manifest: serde_json::Value) {
    let kind = manifest["kind"].as_str().unwrap();
    let (group, version) = manifest["apiVersion"].as_str().unwrap().split_once('/').unwrap_or(("", "v1"));
    let plural = format!("{}s", kind.to_lowercase());
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
    let api: Api<DynamicObject> = match manifest.pointer("/metadata/namespace").and_then(|n| n.as_str()) {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.create(&PostParams::default(), &serde_json::from_value(manifest).unwrap()).await.unwrap();
}

fn refusal<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(e)) => (e.code, e.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn may(client: &Client, namespace: &str, verb: &str, resource: &str, subresource: &str) -> bool {
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {"resourceAttributes": {
        "namespace": namespace, "verb": verb, "resource": resource, "subresource": subresource}}}))
    .unwrap();
    let answer =
        Api::<SelfSubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &review).await.unwrap();
    answer.status.unwrap().allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_decides_who_may_do_what() {
    let options = Options { rbac: Some(Tokens::parse(TOKENS).unwrap()), tls: true, ..Options::default() };
    let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    server
        .create_from_files(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/yaml/profilecapture.yaml")])
        .unwrap();
    let admin = client(&server, biometrics_test_apiserver::ADMIN_TOKEN).await;
    for ns in ["shop", "billing"] {
        apply(&admin, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await;
    }
    // What a CRD's chart adds so that the built-in view role covers its kinds.
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "biometrics-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["biometrics.io"], "resources": ["profilecaptures"], "verbs": ["get", "list", "watch"]}]}))
    .await;
    apply(
        &admin,
        json!({"apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "target": {"port": 6060}, "profiles": ["heap"]}}),
    )
    .await;
    let vera = client(&server, "vera-token").await;

    // No binding yet: refused, in kube-apiserver's words.
    assert_eq!(
        refusal(captures(&vera).list(&ListParams::default()).await),
        (403, "profilecaptures.biometrics.io is forbidden: User \"vera\" cannot list resource \"profilecaptures\" in API group \"biometrics.io\" in the namespace \"shop\"".into())
    );

    // Bound to view (which aggregates the CRD's role, through edit's and admin's labels too):
    // reads, and only reads.
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "vera-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "vera"}]}))
    .await;
    let listed = captures(&vera).list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    Api::<Pod>::all(vera.clone()).list(&ListParams::default()).await.expect("view reads pods everywhere");
    let patch = Patch::Merge(json!({"spec": {"duration": "5s"}}));
    assert_eq!(
        refusal(captures(&vera).patch("web", &PatchParams::default(), &patch).await),
        (403, "profilecaptures.biometrics.io \"web\" is forbidden: User \"vera\" cannot patch resource \"profilecaptures\" in API group \"biometrics.io\" in the namespace \"shop\"".into())
    );
    let (code, message) = refusal(Api::<Secret>::namespaced(vera.clone(), "shop").list(&ListParams::default()).await);
    assert!(code == 403 && message.contains("cannot list resource \"secrets\""), "view reads no secrets: {message}");

    // A Role granting pods/portforward in shop to a ServiceAccount: there, and only there.
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "forward", "namespace": "shop"},
        "rules": [{"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]}]}))
    .await;
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "forward", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "forward"},
        "subjects": [{"kind": "ServiceAccount", "name": "ops", "namespace": "shop"}]}))
    .await;
    let ops = client(&server, "ops-token").await;
    assert!(may(&ops, "shop", "create", "pods", "portforward").await);
    assert!(!may(&ops, "billing", "create", "pods", "portforward").await);
    assert!(!may(&ops, "shop", "get", "pods", "").await);
    assert!(may(&vera, "shop", "list", "pods", "").await);
    // A WebSocket port-forward (kube-rs's, kubectl-biometrics') is a GET: it needs `get`,
    // and, as in Kubernetes 1.35 and later, `create` too. (No pod: allowed, it is 404.)
    let forward = async |verbs: serde_json::Value| {
        let rule = json!({"rules": [{"apiGroups": [""], "resources": ["pods/portforward"], "verbs": verbs}]});
        let roles = Api::<Role>::namespaced(admin.clone(), "shop");
        roles.patch("forward", &PatchParams::default(), &Patch::Merge(rule)).await.unwrap();
        refusal(Api::<Pod>::namespaced(ops.clone(), "shop").portforward("web-0", &[80]).await.map(|_| ()))
    };
    let (code, message) = forward(json!(["create"])).await;
    assert!(code == 403 && message.contains("cannot get resource \"pods/portforward\""), "{message}");
    let (code, message) = forward(json!(["get"])).await;
    assert!(code == 403 && message.contains("cannot create resource \"pods/portforward\""), "{message}");
    assert_eq!(forward(json!(["get", "create"])).await.0, 404);

    // Who am I.
    let review: SelfSubjectReview = serde_json::from_value(json!({})).unwrap();
    let me = Api::<SelfSubjectReview>::all(ops.clone()).create(&PostParams::default(), &review).await.unwrap();
    let info = me.status.unwrap().user_info.unwrap();
    assert_eq!(info.username.as_deref(), Some("system:serviceaccount:shop:ops"));
    assert!(info.groups.unwrap().iter().any(|g| g == "system:serviceaccounts:shop"));

    // Credentials the server does not know, and none at all.
    let stranger = client(&server, "no-such-token").await;
    assert_eq!(refusal(Api::<Pod>::all(stranger).list(&ListParams::default()).await).0, 401);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig_as("no-such-token")).unwrap();
    let kubectl = common::Kubectl::new(dir.path());
    let out = kubectl.run(&["get", "pods"], None);
    let refused =
        "error: You must be logged in to the server (the server has asked for the client to provide credentials)";
    assert!(String::from_utf8_lossy(&out.stderr).contains(refused), "{out:?}");
    let anonymous = {
        let text = server.kubeconfig_as("").replace("    token: \n", "");
        let kubeconfig = Kubeconfig::from_yaml(&text).unwrap();
        Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap())
            .unwrap()
    };
    anonymous.apiserver_version().await.expect("/version is public");
    assert_eq!(refusal(Api::<Pod>::all(anonymous).list(&ListParams::default()).await).0, 401);

    // kubectl, over HTTPS, as vera: the same answers, in kubectl's words.
    std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig_as("vera-token")).unwrap();
    let out = kubectl.run(&["get", "pcap", "-n", "shop", "-o", "name"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "profilecapture.biometrics.io/web", "{out:?}");
    let patch = ["patch", "pcap", "web", "-n", "shop", "--type=merge", "-p", r#"{"spec":{"duration":"5s"}}"#];
    let out = kubectl.run(&patch, None);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (Forbidden): profilecaptures.biometrics.io \"web\" is forbidden: User \"vera\" cannot patch resource \"profilecaptures\" in API group \"biometrics.io\" in the namespace \"shop\""
    );
    let out = kubectl.run(&["get", "secrets", "-n", "billing"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot list resource \"secrets\""), "{out:?}");

    // kubectl's own questions (sent in protobuf): can-i and whoami.
    let can_i = |args: &[&str]| {
        let out = kubectl.run(&[&["auth", "can-i"], args].concat(), None);
        (out.status.code(), String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    assert_eq!(can_i(&["get", "pcap", "-n", "shop"]), (Some(0), "yes".into()));
    assert_eq!(can_i(&["patch", "pcap", "-n", "shop"]), (Some(1), "no".into()));
    assert_eq!(can_i(&["get", "secrets", "-n", "shop"]), (Some(1), "no".into()));
    let out = kubectl.run(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "vera", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_a_service_account_token_that_the_server_then_accepts() {
    let options = Options { rbac: Some(Tokens::parse(TOKENS).unwrap()), tls: true, ..Options::default() };
    let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig()).unwrap();
    let kubectl = common::Kubectl::new(dir.path());
    let ok = |args: &[&str]| {
        let out = kubectl.run(args, None);
        assert!(out.status.success(), "kubectl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    ok(&["create", "namespace", "shop"]);
    ok(&["create", "serviceaccount", "builder", "-n", "shop"]);
    ok(&["create", "rolebinding", "builder-view", "-n", "shop", "--clusterrole=view", "--serviceaccount=shop:builder"]);
    let token = ok(&["create", "token", "builder", "-n", "shop", "--duration=1h"]);
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig_as(&token)).unwrap();
    assert_eq!(
        ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]),
        "system:serviceaccount:shop:builder"
    );
    assert_eq!(ok(&["auth", "can-i", "list", "pods", "-n", "shop"]), "yes");
    let out = kubectl.run(&["auth", "can-i", "list", "pods", "-n", "default"], None);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).trim()), (Some(1), "no"));
    // Its ServiceAccount deleted, the token is refused.
    std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig()).unwrap();
    ok(&["delete", "serviceaccount", "builder", "-n", "shop"]);
    std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig_as(&token)).unwrap();
    let out = kubectl.run(&["get", "pods", "-n", "shop"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("You must be logged in to the server"), "{out:?}");
}

/// kube-rs with `as`/`as-groups` in its kubeconfig, as `kubectl --as`/`--as-group` send them.
async fn client_as(server: &TestApiServer, token: &str, user: &str, groups: &[&str]) -> Client {
    let text = server.kubeconfig_as(token).replace(
        &format!("    token: {token}\n"),
        &format!("    token: {token}\n    as: {user}\n    as-groups: {groups:?}\n"),
    );
    let kubeconfig = Kubeconfig::from_yaml(&text).unwrap();
    Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_needs_the_impersonate_verb_for_each_user_group_and_account() {
    let tokens = "imp-token,impersonator,2001\nvera-token,vera,1001\n";
    let options = Options { rbac: Some(Tokens::parse(tokens).unwrap()), tls: true, ..Options::default() };
    let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    server
        .create_from_files(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/yaml/profilecapture.yaml")])
        .unwrap();
    let admin = client(&server, biometrics_test_apiserver::ADMIN_TOKEN).await;
    apply(&admin, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})).await;
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "biometrics-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["biometrics.io"], "resources": ["profilecaptures"], "verbs": ["get", "list", "watch"]}]}))
    .await;
    apply(&admin, json!({"apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "target": {"port": 6060}, "profiles": ["heap"]}}))
    .await;
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "vera-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "vera"}]}))
    .await;
    // The impersonator may act as vera, in the viewers group, and nothing else.
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "impersonate-vera"},
        "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["vera"]},
                  {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"], "resourceNames": ["viewers"]}]}))
    .await;
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "impersonate-vera"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonate-vera"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "impersonator"}]}))
    .await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig_as("imp-token")).unwrap();
    let kubectl = common::Kubectl::new(dir.path());
    let stderr = |args: &[&str]| String::from_utf8_lossy(&kubectl.run(args, None).stderr).trim().to_owned();

    // As itself the impersonator reads nothing; as vera it reads what vera reads.
    assert!(stderr(&["get", "pcap", "-n", "shop"]).contains("User \"impersonator\" cannot list"));
    assert_eq!(
        kubectl.ok(&["get", "pcap", "-n", "shop", "-o", "name", "--as", "vera"]).trim(),
        "profilecapture.biometrics.io/web"
    );
    assert_eq!(
        kubectl.ok(&["get", "pcap", "-n", "shop", "-o", "name", "--as", "vera", "--as-group", "viewers"]).trim(),
        "profilecapture.biometrics.io/web"
    );
    // The impersonated user is the one authorized: vera may not patch.
    let patch =
        ["patch", "pcap", "web", "-n", "shop", "--type=merge", "-p", r#"{"spec":{"duration":"5s"}}"#, "--as", "vera"];
    assert!(stderr(&patch).contains("User \"vera\" cannot patch resource \"profilecaptures\""), "{}", stderr(&patch));

    // Anyone, group or ServiceAccount not granted: refused in kube-apiserver's words.
    assert_eq!(
        stderr(&["get", "pods", "-n", "shop", "--as", "bob"]),
        "Error from server (Forbidden): users \"bob\" is forbidden: User \"impersonator\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    assert_eq!(
        stderr(&["get", "pods", "-n", "shop", "--as", "vera", "--as-group", "system:masters"]),
        "Error from server (Forbidden): groups \"system:masters\" is forbidden: User \"impersonator\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope"
    );
    assert_eq!(
        stderr(&["get", "pods", "-n", "shop", "--as", "system:serviceaccount:shop:ops"]),
        "Error from server (Forbidden): serviceaccounts \"ops\" is forbidden: User \"impersonator\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"shop\""
    );

    // Who the server then takes the request to be.
    let review: SelfSubjectReview = serde_json::from_value(json!({})).unwrap();
    let as_vera = client_as(&server, "imp-token", "vera", &["viewers"]).await;
    let me = Api::<SelfSubjectReview>::all(as_vera).create(&PostParams::default(), &review).await.unwrap();
    let info = me.status.unwrap().user_info.unwrap();
    assert_eq!(info.username.as_deref(), Some("vera"));
    assert_eq!(info.groups.unwrap(), ["viewers", "system:authenticated"]);
    // system:masters may impersonate a ServiceAccount, which gets its groups.
    let as_ops =
        client_as(&server, biometrics_test_apiserver::ADMIN_TOKEN, "system:serviceaccount:shop:ops", &[]).await;
    let me = Api::<SelfSubjectReview>::all(as_ops).create(&PostParams::default(), &review).await.unwrap();
    let info = me.status.unwrap().user_info.unwrap();
    assert_eq!(info.groups.unwrap(), ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_bindings_grant_only_what_their_writer_holds_unless_it_may_escalate_or_bind() {
    let options =
        Options { rbac: Some(Tokens::parse("dev-token,dev,3001\n").unwrap()), tls: true, ..Options::default() };
    let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let admin = client(&server, biometrics_test_apiserver::ADMIN_TOKEN).await;
    apply(&admin, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})).await;
    // dev manages RBAC in shop and reads pods there: nothing more.
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "team-lead", "namespace": "shop"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["create", "get", "update", "patch"]},
                  {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}))
    .await;
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "team-lead", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "team-lead"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dev"}]}))
    .await;
    let dev = client(&server, "dev-token").await;
    let roles = Api::<Role>::namespaced(dev.clone(), "shop");
    let bindings = Api::<RoleBinding>::namespaced(dev.clone(), "shop");
    let role = |name: &str, rules: serde_json::Value| -> Role {
        serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).unwrap()
    };
    let binding = |name: &str, kind: &str, role: &str| -> RoleBinding {
        serde_json::from_value(json!({"metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "shop"}]}))
        .unwrap()
    };

    // What dev holds it may grant.
    let readers = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]);
    roles.create(&PostParams::default(), &role("pod-reader", readers)).await.unwrap();
    bindings.create(&PostParams::default(), &binding("pod-reader", "Role", "pod-reader")).await.unwrap();

    // What it does not, it may not: created, patched in, or bound.
    let secrets = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]);
    let not_held = "user \"dev\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n";
    assert_eq!(
        refusal(roles.create(&PostParams::default(), &role("secret-reader", secrets.clone())).await),
        (
            403,
            format!(
                "roles.rbac.authorization.k8s.io \"secret-reader\" is forbidden: {not_held}{{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"list\"]}}"
            )
        )
    );
    assert!(Api::<Role>::namespaced(admin.clone(), "shop").get_opt("secret-reader").await.unwrap().is_none());
    let widen =
        Patch::Merge(json!({"rules": [{"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["get"]}]}));
    let (code, message) = refusal(roles.patch("pod-reader", &PatchParams::default(), &widen).await);
    assert_eq!(code, 403);
    assert!(message.ends_with("{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}"), "{message}");
    let kept = Api::<Role>::namespaced(admin.clone(), "shop").get("pod-reader").await.unwrap();
    assert_eq!(kept.rules.unwrap()[0].resources.as_deref(), Some(&["pods".to_owned()][..]));
    let (code, message) =
        refusal(bindings.create(&PostParams::default(), &binding("viewers", "ClusterRole", "view")).await);
    assert_eq!(code, 403);
    assert!(
        message.starts_with(&format!("rolebindings.rbac.authorization.k8s.io \"viewers\" is forbidden: {not_held}")),
        "{message}"
    );
    assert_eq!(
        refusal(bindings.create(&PostParams::default(), &binding("ghost", "Role", "no-such-role")).await),
        (404, "roles.rbac.authorization.k8s.io \"no-such-role\" not found".into())
    );

    // kubectl shows the same refusal.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig_as("dev-token")).unwrap();
    let kubectl = common::Kubectl::new(dir.path());
    let manifest = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: secret-reader, namespace: shop}\nrules: [{apiGroups: [''], resources: [secrets], verbs: [get]}]\n";
    let out = kubectl.run(&["create", "-f", "-"], Some(manifest));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "Error from server (Forbidden): error when creating \"STDIN\": roles.rbac.authorization.k8s.io \"secret-reader\" is forbidden: {not_held}{{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}}"
        )
    );

    // `bind` on view lets dev bind view; `escalate` on roles lets it write any rules.
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "delegate", "namespace": "shop"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["view"]},
                  {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]}]}))
    .await;
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "delegate", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "delegate"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dev"}]}))
    .await;
    bindings.create(&PostParams::default(), &binding("viewers", "ClusterRole", "view")).await.unwrap();
    assert_eq!(
        refusal(bindings.create(&PostParams::default(), &binding("editors", "ClusterRole", "edit")).await).0,
        403
    );
    roles.create(&PostParams::default(), &role("secret-reader", secrets)).await.unwrap();
}

/// A server-side apply that would create its object is also a `create`, as kube-apiserver
/// checks it: a Role with `patch` alone cannot make the object, `create` by name can; every
/// decision, with who asked, is in the server's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_that_creates_needs_create_and_each_decision_is_logged() {
    let options =
        Options { rbac: Some(Tokens::parse(TOKENS).unwrap()), tls: true, record_requests: true, ..Options::default() };
    let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let admin = client(&server, biometrics_test_apiserver::ADMIN_TOKEN).await;
    apply(&admin, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})).await;
    let grant = |verbs: &[&str]| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "trust", "namespace": "shop"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["trust"], "verbs": verbs}]})
    };
    let roles: Api<Role> = Api::namespaced(admin.clone(), "shop");
    roles.create(&PostParams::default(), &serde_json::from_value(grant(&["patch"])).unwrap()).await.unwrap();
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "trust", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trust"},
        "subjects": [{"kind": "User", "name": "vera"}]}))
    .await;

    let vera: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client(&server, "vera-token").await, "shop");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}});
    let (code, message) = refusal(vera.patch("trust", &PatchParams::apply("vera"), &Patch::Apply(&cm)).await);
    assert_eq!(
        (code, message.as_str()),
        (
            403,
            "configmaps \"trust\" is forbidden: User \"vera\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"shop\""
        )
    );
    roles.patch("trust", &PatchParams::default(), &Patch::Merge(&grant(&["patch", "create"]))).await.unwrap();
    vera.patch("trust", &PatchParams::apply("vera"), &Patch::Apply(&cm)).await.unwrap();
    // Once it exists, an apply is a patch only.
    roles.patch("trust", &PatchParams::default(), &Patch::Merge(&grant(&["patch"]))).await.unwrap();
    vera.patch("trust", &PatchParams::apply("vera"), &Patch::Apply(&cm)).await.unwrap();

    let decided: Vec<(String, bool)> = server
        .authorizations()
        .into_iter()
        .filter(|d| d.user.name == "vera")
        .map(|d| (d.attributes.to_string(), d.allowed))
        .collect();
    let patch = "patch core/configmaps \"trust\" in namespace shop".to_owned();
    let create = "create core/configmaps \"trust\" in namespace shop".to_owned();
    assert_eq!(
        decided,
        [(patch.clone(), true), (create.clone(), false), (patch.clone(), true), (create, true), (patch, true)]
    );
    let vera_groups = &server.authorizations().into_iter().find(|d| d.user.name == "vera").unwrap().user.groups;
    assert!(vera_groups.contains(&"system:authenticated".to_owned()), "{vera_groups:?}");
}
