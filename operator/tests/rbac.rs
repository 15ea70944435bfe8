//! The Helm chart's RBAC is exactly what the operator uses. The real operator binary runs
//! with the settings the chart renders for it and its own token (its ServiceAccount's
//! name), through a ProfileCapture and a CachePolicy from creation to deletion, against a
//! test API server that records each request's authorization check. Then every request
//! must be allowed by the Roles and ClusterRoles `helm template` binds to that
//! ServiceAccount, and every verb they grant must have been used. Every way the chart
//! installs: watching every namespace, one (`watchNamespace`), and the capture browser in
//! token mode (which asks TokenReview and SubjectAccessReview for a viewer's token).

mod common;

use std::{
    collections::BTreeSet,
    future::Future,
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use biometrics_crds::v1alpha1::{CachePolicy, CapturePhase, InvalidationResult, ProfileCapture};
use biometrics_test_apiserver::{Options, RequestRecord, TestApiServer};
use biometrics_test_support::{ChildGuard, RedisServer, free_port, repo_root, wait_for_listener};
use common::*;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Pod, Secret, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};

/// The release the chart is rendered as: its ServiceAccount is `biometrics`.
const RELEASE: &str = "biometrics";

/// Grants a real cluster needs that this test cannot exercise, as (API group, resource,
/// verb, why). Empty: the scenario below uses every one; keep it that way where possible.
const NOT_EXERCISED: &[(&str, &str, &str, &str)] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_wide_rbac_is_exactly_what_the_operator_uses() {
    let chart = Chart::render(&[]);
    assert!(chart.kinds().contains("ClusterRole"), "watching every namespace takes a ClusterRole");
    check(&chart, &run_operator(&chart, "127.0.3.2").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_token_mode_rbac_is_exactly_what_the_operator_uses() {
    let chart = Chart::render(&["--set", "ui.auth=token"]);
    assert!(
        chart.docs.iter().any(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "biometrics-ui-token"),
        "token mode asks TokenReview and SubjectAccessReview, which a ClusterRole grants"
    );
    check(&chart, &run_operator(&chart, "127.0.3.4").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_namespace_rbac_is_exactly_what_the_operator_uses() {
    let chart = Chart::render(&["--set", &format!("watchNamespace={NS}")]);
    assert!(!chart.kinds().contains("ClusterRole"), "one namespace needs no ClusterRole");
    check(&chart, &run_operator(&chart, "127.0.3.3").await);
}

/// One RBAC rule as granted in a scope: a namespace, or everywhere (a ClusterRole bound by
/// a ClusterRoleBinding).
#[derive(Debug, Clone)]
struct Grant {
    /// Where it applies; None: every namespace and cluster-scoped resources.
    namespace: Option<String>,
    /// Which role, bound where, for messages.
    source: String,
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    resource_names: Vec<String>,
}

impl Grant {
    /// Whether this rule lets `r` through (the chart uses no wildcards; chart-check says so).
    fn allows(&self, r: &RequestRecord) -> bool {
        self.namespace.as_ref().is_none_or(|ns| *ns == r.namespace)
            && self.api_groups.contains(&r.group)
            && self.resources.contains(&r.rbac_resource())
            && self.verbs.contains(&r.verb)
            && (self.resource_names.is_empty() || self.resource_names.contains(&r.name))
    }

    /// One grant per group, resource and verb of the rule, to see each one used.
    fn each(&self) -> Vec<Grant> {
        let mut out = Vec::new();
        for group in &self.api_groups {
            for resource in &self.resources {
                for verb in &self.verbs {
                    out.push(Grant {
                        api_groups: vec![group.clone()],
                        resources: vec![resource.clone()],
                        verbs: vec![verb.clone()],
                        ..self.clone()
                    });
                }
            }
        }
        out
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.api_groups[0].is_empty() { "core" } else { &self.api_groups[0] };
        write!(f, "{} {}/{}", self.verbs.join(","), group, self.resources.join(","))?;
        if !self.resource_names.is_empty() {
            write!(f, " {:?}", self.resource_names)?;
        }
        write!(f, " from {}", self.source)
    }
}

/// What `helm template` renders for the operator.
struct Chart {
    docs: Vec<Value>,
    dir: tempfile::TempDir,
}

impl Chart {
    /// The chart with the operator's config made quick for a test (samples every second),
    /// plus `extra` helm arguments.
    fn render(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = json!({"performance": {"metrics": {"interval": "1s"}, "cache": {"enforce_interval": "2s"}}});
        let out = Command::new(repo_root().join(".tools/bin/helm"))
            .args(["template", RELEASE])
            .arg(repo_root().join("charts/biometrics"))
            .args(["--namespace", OPERATOR_NS, "--set-json", &format!("config={config}")])
            .args(extra)
            .env("HELM_CACHE_HOME", dir.path().join("helm"))
            .env("HELM_CONFIG_HOME", dir.path().join("helm"))
            .env("HELM_DATA_HOME", dir.path().join("helm"))
            .stderr(Stdio::inherit())
            .output()
            .expect("helm (make setup installs it)");
        assert!(out.status.success(), "helm template failed");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
        Self { docs: docs.into_iter().filter(Value::is_object).collect(), dir }
    }

    fn kinds(&self) -> BTreeSet<&str> {
        self.docs.iter().filter_map(|d| d["kind"].as_str()).collect()
    }

    fn one(&self, kind: &str, name_suffix: &str) -> &Value {
        let mut found = self
            .docs
            .iter()
            .filter(|d| d["kind"] == kind && d["metadata"]["name"].as_str().is_some_and(|n| n.ends_with(name_suffix)));
        let doc = found.next().unwrap_or_else(|| panic!("the chart renders no {kind} *{name_suffix}"));
        assert!(found.next().is_none(), "the chart renders several {kind} *{name_suffix}");
        doc
    }

    /// The operator's container.
    fn container(&self) -> &Value {
        &self.one("Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
    }

    /// The user the operator's pods authenticate as: their ServiceAccount.
    fn user(&self) -> String {
        let account = self.one("Deployment", RELEASE)["spec"]["template"]["spec"]["serviceAccountName"].as_str();
        format!("system:serviceaccount:{OPERATOR_NS}:{}", account.expect("a serviceAccountName"))
    }

    /// Every rule of the Roles and ClusterRoles bound to the operator's ServiceAccount.
    fn grants(&self) -> Vec<Grant> {
        let account = self.user().rsplit(':').next().unwrap().to_owned();
        let mut grants = Vec::new();
        for binding in self.docs.iter().filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding") {
            let ours = binding["subjects"].as_array().into_iter().flatten().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == account.as_str() && s["namespace"] == OPERATOR_NS
            });
            if !ours {
                continue;
            }
            let namespace = binding["metadata"]["namespace"].as_str().map(str::to_owned);
            let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
            let role_name = binding["roleRef"]["name"].as_str().unwrap();
            let role = self
                .docs
                .iter()
                .find(|d| {
                    d["kind"] == role_kind
                        && d["metadata"]["name"] == role_name
                        && (role_kind == "ClusterRole" || d["metadata"]["namespace"].as_str() == namespace.as_deref())
                })
                .unwrap_or_else(|| {
                    panic!("{} binds {role_kind} {role_name}, which the chart lacks", binding["metadata"])
                });
            let source = match &namespace {
                Some(ns) => format!("{role_kind} {role_name} bound in {ns}"),
                None => format!("{role_kind} {role_name}"),
            };
            for rule in role["rules"].as_array().into_iter().flatten() {
                let list = |field: &str| -> Vec<String> {
                    rule[field].as_array().into_iter().flatten().map(|v| v.as_str().unwrap().to_owned()).collect()
                };
                grants.push(Grant {
                    namespace: namespace.clone(),
                    source: source.clone(),
                    api_groups: list("apiGroups"),
                    resources: list("resources"),
                    verbs: list("verbs"),
                    resource_names: list("resourceNames"),
                });
            }
        }
        grants
    }

    /// The operator's environment as the chart sets it, with the downward API filled in
    /// and two test-only changes: a free metrics port, and a short lease so renewals
    /// (`update`) happen within the test.
    fn operator_env(&self, metrics: SocketAddr) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for var in self.container()["env"].as_array().unwrap() {
            let name = var["name"].as_str().unwrap().to_owned();
            let value = match (&var["value"], var["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
                (Value::String(v), _) => v.clone(),
                (_, Some("metadata.name")) => format!("{RELEASE}-0"),
                (_, Some("metadata.namespace")) => OPERATOR_NS.to_owned(),
                _ => panic!("an operator variable this test cannot fill: {var}"),
            };
            env.push((name, value));
        }
        for (name, value) in &mut env {
            match name.as_str() {
                "BIOMETRICS_METRICS_ADDR" => *value = metrics.to_string(),
                "BIOMETRICS_LEASE_DURATION" => *value = "3s".into(),
                _ => {}
            }
        }
        env
    }

    /// A variable the chart sets to a literal value.
    fn env(&self, name: &str) -> String {
        let vars = self.container()["env"].as_array().unwrap();
        let var = vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("the chart sets no {name}"));
        var["value"].as_str().unwrap().to_owned()
    }

    /// The operator's arguments, the config file they name written from the ConfigMap.
    fn operator_args(&self) -> Vec<String> {
        let config = self.one("ConfigMap", "-config")["data"]["config.yaml"].as_str().unwrap();
        let path = self.dir.path().join("config.yaml");
        std::fs::write(&path, config).unwrap();
        let args: Vec<String> =
            self.container()["args"].as_array().into_iter().flatten().map(|a| a.as_str().unwrap().to_owned()).collect();
        assert_eq!(args, ["--config=/etc/biometrics/config/config.yaml"], "the chart passes only --config");
        vec![format!("--config={}", path.display())]
    }
}

/// Polls `check` until it holds, for up to 30 s.
async fn eventually<F, Fut>(world: &World, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen; operator log:\n{}", world.operator_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ready_reason(cp: &CachePolicy) -> Option<&str> {
    cp.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.reason.as_str())
}

/// The test's own client (not the operator's user) and kubectl, on a recording server with
/// the chart's CRDs. Unlike `World::start`, nothing of the operator's is made ahead.
async fn world() -> World {
    biometrics_operator::install_crypto();
    let options = Options { record_requests: true, controllers: false, ..Options::default() };
    let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let crds = ["profilecapture.yaml", "cachepolicy.yaml"].map(|f| repo_root().join("charts/biometrics/crds").join(f));
    server.create_from_files(&crds).unwrap();
    let dir = tempfile::tempdir().unwrap();
    server.write_kubeconfig(&kubeconfig_path(dir.path())).unwrap();
    let client = client_of(&server.kubeconfig()).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [NS, OPERATOR_NS] {
        let namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces.create(&PostParams::default(), &namespace).await.unwrap();
    }
    let public_key = dir.path().join("operator.pub");
    World::from_parts(server, client, dir, public_key)
}

async fn client_of(kubeconfig: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).unwrap();
    Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap())
        .unwrap()
}

/// Runs the operator as the chart configures it through everything it does, and returns
/// the requests it made.
async fn run_operator(chart: &Chart, pod_ip: &str) -> Vec<RequestRecord> {
    let mut world = world().await;
    let user = chart.user();
    let redis = RedisServer::start(&["--requirepass", "Rbac-Pa55"]);
    // The workload a rule invalidates after; its rollout is complete.
    let deployments: Api<Deployment> = Api::namespaced(world.client.clone(), NS);
    let deployment = json!({"metadata": {"name": "api"}, "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "app", "image": "api"}]}}}});
    deployments.create(&PostParams::default(), &serde_json::from_value(deployment).unwrap()).await.unwrap();
    let status = json!({"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
    deployments.patch_status("api", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();

    // The operator, as the chart's Deployment runs it, with its own credentials.
    let operator_kubeconfig = world.dir.path().join("operator.kubeconfig");
    std::fs::write(&operator_kubeconfig, world.server.kubeconfig_as(&user)).unwrap();
    let metrics = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1".parse().unwrap()));
    // Two tests run at once: each operator's browser on a port of its own.
    let ui = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1".parse().unwrap()));
    world.operators_started = 1;
    world.operator = Some(ChildGuard::spawn(
        "biometrics-operator",
        Command::new(env!("CARGO_BIN_EXE_biometrics-operator"))
            .args(chart.operator_args())
            .env_clear()
            .envs(chart.operator_env(metrics))
            .env("BIOMETRICS_UI_ADDR", ui.to_string())
            .env("KUBECONFIG", &operator_kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(world.dir.path().join("operator-0.log")).unwrap())),
    ));
    wait_for_listener(metrics, Duration::from_secs(10));

    // It makes its signing key; the agents get the public half (kubelet would mount it).
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), OPERATOR_NS);
    let signing_secret = chart.env("BIOMETRICS_SIGNING_SECRET");
    eventually(&world, "the signing key Secret", || async {
        secrets.get_opt(&signing_secret).await.unwrap().is_some()
    })
    .await;
    let secret = secrets.get(&signing_secret).await.unwrap();
    std::fs::write(&world.public_key, &secret.data.unwrap()["operator.pub"].0).unwrap();

    // A policy before its pod and its Secret exist: a Warning Event for each, then it runs.
    let policy = format!(
        "apiVersion: biometrics.io/v1alpha1\nkind: CachePolicy\nmetadata:\n  name: sessions\n  namespace: {NS}\nspec:\n  selector:\n    matchLabels:\n      app: api\n  redis:\n    address: {}\n    passwordSecretRef:\n      name: redis-auth\n  keyPrefix: \"sessions:\"\n  strategy:\n    type: LRU\n  invalidations:\n  - name: on-deploy\n    pattern: \"page:*\"\n    onRolloutOf:\n      kind: Deployment\n      name: api\n",
        redis.addr
    );
    world.kubectl(&["apply", "-f", "-"], Some(&policy));
    let policies: Api<CachePolicy> = Api::namespaced(world.client.clone(), NS);
    let reason_is = |want: &'static str| {
        let policies = policies.clone();
        move || {
            let policies = policies.clone();
            async move { ready_reason(&policies.get("sessions").await.unwrap()) == Some(want) }
        }
    };
    eventually(&world, "NoExecutor", reason_is("NoExecutor")).await;
    world.add_pod("api-0", pod_ip.parse::<IpAddr>().unwrap()).await;
    eventually(&world, "SecretNotFound", reason_is("SecretNotFound")).await;
    world.kubectl(
        &["apply", "-f", "-"],
        Some(&format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis-auth\n  namespace: {NS}\nstringData:\n  password: Rbac-Pa55\n")),
    );
    eventually(&world, "the invalidation", || async {
        let cp = policies.get("sessions").await.unwrap();
        cp.status.as_ref().is_some_and(|s| {
            s.invalidations.iter().any(|e| e.name == "on-deploy" && e.result == Some(InvalidationResult::Succeeded))
        })
    })
    .await;

    // A one-shot capture, to the end.
    world.kubectl(
        &["apply", "-f", "-"],
        Some(&format!("apiVersion: biometrics.io/v1alpha1\nkind: ProfileCapture\nmetadata:\n  name: once\n  namespace: {NS}\nspec:\n  selector:\n    matchLabels:\n      app: api\n  target:\n    port: 6060\n  profiles: [heap]\n")),
    );
    let captures: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    eventually(&world, "the capture", || async {
        let pc = captures.get("once").await.unwrap();
        pc.status.and_then(|s| s.phase) == Some(CapturePhase::Succeeded)
    })
    .await;
    if chart.env("BIOMETRICS_UI_AUTH") == "port-forward" {
        // The browser's page of the capture.
        let (status, body) = biometrics_test_support::http_request(
            ui,
            "GET",
            &format!("/api/v1/namespaces/{NS}/captures/once"),
            &[],
            b"",
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    if chart.env("BIOMETRICS_UI_AUTH") == "token" {
        // The browser in token mode: a viewer's ServiceAccount token, reviewed, then its
        // access to the capture's namespace.
        let viewer = json!({"metadata": {"name": "viewer"}});
        Api::<ServiceAccount>::namespaced(world.client.clone(), NS)
            .create(&PostParams::default(), &serde_json::from_value(viewer).unwrap())
            .await
            .unwrap();
        let token = world.server.service_account_token(NS, "viewer", &[]).unwrap();
        let bearer = format!("Bearer {token}");
        let (status, body) = biometrics_test_support::http_request(
            ui,
            "GET",
            "/api/v1/captures",
            &[("Authorization", bearer.as_str())],
            b"",
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("\"name\":\"once\""));
        let detail = format!("/api/v1/namespaces/{NS}/captures/once");
        let (status, body) =
            biometrics_test_support::http_request(ui, "GET", &detail, &[("Authorization", bearer.as_str())], b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    world.kubectl(&["delete", "pcap", "once", "-n", NS, "--timeout=30s"], None);

    // The pod goes: NoExecutor again, the same Event as before, so the recorder patches its
    // series. Then both finalizers are removed on deletion.
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), NS);
    pods.delete("api-0", &DeleteParams::default()).await.unwrap();
    eventually(&world, "NoExecutor again", reason_is("NoExecutor")).await;
    eventually(&world, "the Event patched", || async {
        world.server.requests().iter().any(|r| r.user == user && r.resource == "events" && r.verb == "patch")
    })
    .await;
    world.kubectl(&["delete", "cpol", "sessions", "-n", NS, "--timeout=30s"], None);
    assert!(captures.get_opt("once").await.unwrap().is_none() && policies.get_opt("sessions").await.unwrap().is_none());

    world.operator.take().unwrap().terminate(Duration::from_secs(5));
    world.server.requests().into_iter().filter(|r| r.user == user).collect()
}

/// Every request allowed, every grant used.
fn check(chart: &Chart, requests: &[RequestRecord]) {
    assert!(requests.len() > 20, "the operator's requests were recorded: {requests:?}");
    let grants = chart.grants();
    let denied: BTreeSet<String> =
        requests.iter().filter(|r| !grants.iter().any(|g| g.allows(r))).map(ToString::to_string).collect();
    let unused: Vec<String> = grants
        .iter()
        .flat_map(Grant::each)
        .filter(|g| !requests.iter().any(|r| g.allows(r)))
        .filter(|g| {
            !NOT_EXERCISED.iter().any(|(group, resource, verb, _)| {
                g.api_groups[0] == *group && g.resources[0] == *resource && g.verbs[0] == *verb
            })
        })
        .map(|g| g.to_string())
        .collect();
    let used: BTreeSet<String> = requests.iter().map(|r| format!("{} {}", r.verb, r.rbac_resource())).collect();
    assert!(
        denied.is_empty() && unused.is_empty(),
        "the chart's RBAC is not what the operator does.\ndenied (add to charts/biometrics/templates):\n  {}\ngranted but never used (remove, or list in NOT_EXERCISED with why):\n  {}\nused: {used:?}",
        denied.into_iter().collect::<Vec<_>>().join("\n  "),
        unused.join("\n  "),
    );
}
