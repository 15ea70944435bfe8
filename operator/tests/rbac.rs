//! The Helm chart's RBAC is what the operator needs, under the test API server's real RBAC
//! authorizer. `helm install` puts the chart (its ServiceAccount, Roles, ClusterRoles and
//! bindings) into a server that serves HTTPS and authorizes by RBAC; the real operator
//! binary runs with the settings the chart renders for its Deployment and nothing but its
//! ServiceAccount's token, through a CachePolicy and a ProfileCapture from creation to
//! deletion: a rule that runs after a workload's rollout, a pod that comes and goes, a
//! repeated Event, the capture browser. Any request RBAC denies fails the test, named.
//!
//! Then least privilege, by mutation: for each verb on each resource the chart's Roles and
//! ClusterRoles grant, every decision made for the operator is asked again of the same
//! authorizer (the function that served the requests, in process) against the chart's
//! rules without that one grant, and some request must be denied. Every way the chart
//! installs: every namespace, one (`watchNamespace`), agent TLS, and the capture browser's
//! token mode. Reruns with a grant taken out of the installed chart (`patch` on capture
//! status, `create` on the trust ConfigMap) show what a user sees: a Warning Event naming
//! the refused request.

mod common;

use std::{
    collections::BTreeSet,
    future::Future,
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use biometrics_crds::v1alpha1::{CachePolicy, CapturePhase, InvalidationResult, InvalidationTrigger, ProfileCapture};
use biometrics_test_apiserver::{
    Authorization, Options, TestApiServer,
    rbac::{Policy, Tokens},
};
use biometrics_test_support::{ChildGuard, RedisServer, free_port, repo_root, wait_for_listener};
use common::*;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Event, Namespace, Pod, Secret, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};

/// The release the chart is installed as: its ServiceAccount is `biometrics`.
const RELEASE: &str = "biometrics";

/// Grants a real cluster needs that this scenario cannot show a use of, as (API group,
/// resource, verb, why). Empty: every grant is needed by some request below; keep it so.
const NOT_EXERCISED: &[(&str, &str, &str, &str)] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_wide_rbac_is_what_the_operator_needs() {
    let chart = Chart::render(&[]);
    assert!(chart.kinds().contains("ClusterRole"), "watching every namespace takes a ClusterRole");
    let run = run_operator(&chart, "127.0.3.2", None).await;
    check(&chart, &run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_namespace_rbac_is_what_the_operator_needs() {
    let chart = Chart::render(&["--set", &format!("watchNamespace={NS}")]);
    assert!(!chart.kinds().contains("ClusterRole"), "one namespace needs no ClusterRole");
    let run = run_operator(&chart, "127.0.3.3", None).await;
    check(&chart, &run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_token_mode_rbac_is_what_the_operator_needs() {
    let chart = Chart::render(&["--set", "ui.auth=token"]);
    assert!(
        chart.docs.iter().any(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "biometrics-ui-token"),
        "token mode asks TokenReview and SubjectAccessReview, which a ClusterRole grants"
    );
    let run = run_operator(&chart, "127.0.3.4", None).await;
    check(&chart, &run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_tls_rbac_is_what_the_operator_needs() {
    let chart = Chart::render(&["--set", "agent.tls.enabled=true,agent.tls.caBundle.secretName=agent-ca"]);
    assert_eq!(chart.env("BIOMETRICS_AGENT_SCHEME"), "https");
    let pki = tempfile::tempdir().unwrap();
    biometrics_test_support::tls_material(
        pki.path(),
        &format!("DNS:{}", chart.env("BIOMETRICS_AGENT_TLS_SERVER_NAME")),
    );
    let run = run_operator(&chart, "127.0.3.5", Some(pki.path())).await;
    check(&chart, &run);
}

/// A grant taken away from the installed chart: the operator carries on with what it may
/// do and says what it may not, as a Warning Event on the capture naming the refused
/// request, rather than failing silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_patch_on_capture_status_a_warning_event_names_the_refused_request() {
    let (world, message) =
        capture_without("biometrics.io", "profilecaptures/status", "patch", "StatusWriteFailed", "127.0.3.6").await;
    assert!(
        message.contains("cannot patch resource \"profilecaptures/status\" in API group \"biometrics.io\""),
        "the Event names the refused request: {message}"
    );
    let pc: ProfileCapture = Api::namespaced(world.client.clone(), NS).get("once").await.unwrap();
    assert!(pc.status.is_none_or(|s| s.phase.is_none()), "nothing written to status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_create_on_the_trust_configmap_a_warning_event_names_the_refused_request() {
    let (world, message) = capture_without("", "configmaps", "create", "TrustPublishFailed", "127.0.3.7").await;
    assert!(
        message.contains("cannot create resource \"configmaps\" in API group \"\" in the namespace \"shop\""),
        "the Event names the refused request: {message}"
    );
    let trust = world.server.store().get(
        &biometrics_test_apiserver::registry::TypeKey { group: String::new(), plural: "configmaps".into() },
        NS,
        "biometrics-trust",
    );
    assert!(trust.is_err(), "no key published");
}

/// Installs the chart (every namespace), takes `verb` on `group`/`resource` out of its
/// ClusterRole, runs the operator and a capture, and waits for the Warning Event `reason`
/// on the capture; the world and the Event's message. Only the grant taken away is denied.
async fn capture_without(group: &str, resource: &str, verb: &str, reason: &str, pod_ip: &str) -> (World, String) {
    let chart = Chart::render(&[]);
    let mut world = world(&chart).await;
    let role = format!("clusterrole/{RELEASE}");
    let installed: Value = serde_json::from_str(&world.kubectl(&["get", &role, "-o", "json"], None)).unwrap();
    let mut rules = Vec::new();
    let mut found = false;
    for rule in installed["rules"].as_array().unwrap() {
        let has = |field: &str, item: &str| strings(&rule[field]).iter().any(|v| v == item);
        if has("apiGroups", group) && has("resources", resource) && has("verbs", verb) && !found {
            found = true;
            rules.extend(split(rule, group, resource, verb));
        } else {
            rules.push(rule.clone());
        }
    }
    assert!(found, "the chart grants {verb} on {resource}");
    world.kubectl(&["patch", &role, "--type=merge", "-p", &json!({"rules": rules}).to_string()], None);

    start_operator(&mut world, &chart, None);
    world.add_pod("api-0", pod_ip.parse().unwrap()).await;
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest()));
    let events: Api<Event> = Api::namespaced(world.client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    let warning = loop {
        let list = events.list(&ListParams::default().fields("involvedObject.name=once")).await.unwrap();
        if let Some(e) = list.items.into_iter().find(|e| e.reason.as_deref() == Some(reason)) {
            break e;
        }
        assert!(Instant::now() < deadline, "no {reason} Event; operator log:\n{}", world.operator_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let account = chart.user();
    let message = warning.message.unwrap_or_default();
    assert!(message.contains(&format!("User \"{account}\"")), "{message}");
    let denied: BTreeSet<String> = world
        .server
        .authorizations()
        .into_iter()
        .filter(|d| d.user.name == account && !d.allowed)
        .map(|d| format!("{} {}", d.attributes.verb, d.attributes.rbac_resource()))
        .collect();
    assert_eq!(denied, BTreeSet::from([format!("{verb} {resource}")]), "only the grant taken away is missed");
    world.operator.take().unwrap().terminate(Duration::from_secs(5));
    (world, message)
}

/// What `helm template` renders for the operator, and the values it was rendered with.
struct Chart {
    docs: Vec<Value>,
    /// The helm arguments that set the values: `helm install` takes the same.
    values: Vec<String>,
    dir: tempfile::TempDir,
}

impl Chart {
    /// The chart with the operator's config made quick for a test (samples every second),
    /// plus `extra` helm arguments.
    fn render(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = json!({"performance": {"metrics": {"interval": "1s"}, "cache": {"enforce_interval": "2s"}}});
        let mut values = vec!["--set-json".to_owned(), format!("config={config}")];
        values.extend(extra.iter().map(|a| (*a).to_owned()));
        let out = Command::new(repo_root().join(".tools/bin/helm"))
            .args(["template", RELEASE])
            .arg(repo_root().join("charts/biometrics"))
            .args(["--namespace", OPERATOR_NS])
            .args(&values)
            .env("HELM_CACHE_HOME", dir.path().join("helm"))
            .env("HELM_CONFIG_HOME", dir.path().join("helm"))
            .env("HELM_DATA_HOME", dir.path().join("helm"))
            .stderr(Stdio::inherit())
            .output()
            .expect("helm (make setup installs it)");
        assert!(out.status.success(), "helm template failed");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
        Self { docs: docs.into_iter().filter(Value::is_object).collect(), values, dir }
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

    /// The operator's environment as the chart sets it, with the downward API filled in
    /// and two test-only changes: a free metrics port, and a shorter lease so renewals
    /// (`update`) happen within the test (every 1.3 s for 10 s; a lease of a few seconds
    /// has a renew deadline that several operators on a loaded machine miss).
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
                "BIOMETRICS_LEASE_DURATION" => *value = "10s".into(),
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

fn capture_manifest() -> String {
    format!(
        "apiVersion: biometrics.io/v1alpha1\nkind: ProfileCapture\nmetadata:\n  name: once\n  namespace: {NS}\nspec:\n  selector:\n    matchLabels:\n      app: api\n  target:\n    port: 6060\n  profiles: [heap]\n"
    )
}

/// A server that serves HTTPS and authorizes by RBAC, recording each decision, with the
/// chart installed by `helm install` (CRDs, ServiceAccount, Roles and bindings; no
/// controllers run, so its Deployment stays an object) and the test's admin client.
async fn world(chart: &Chart) -> World {
    biometrics_operator::install_crypto();
    let options = Options {
        record_requests: true,
        controllers: false,
        rbac: Some(Tokens::default()),
        tls: true,
        ..Options::default()
    };
    let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    server.write_kubeconfig(&kubeconfig_path(dir.path())).unwrap();
    let client = client_of(&server.kubeconfig()).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [NS, OPERATOR_NS] {
        let namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces.create(&PostParams::default(), &namespace).await.unwrap();
    }
    let public_key = dir.path().join("operator.pub");
    let world = World::from_parts(server, client, dir, public_key);
    let mut install = vec!["install", RELEASE, "charts/biometrics", "-n", OPERATOR_NS];
    install.extend(chart.values.iter().map(String::as_str));
    world.helm(&install);
    world
}

async fn client_of(kubeconfig: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).unwrap();
    Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap())
        .unwrap()
}

/// The operator as the chart's Deployment runs it, with its ServiceAccount's token as its
/// only credential; agents serve TLS from `pki` (a CA and a certificate) when given. Its
/// browser address.
fn start_operator(world: &mut World, chart: &Chart, pki: Option<&std::path::Path>) -> SocketAddr {
    let account = chart.user().rsplit(':').next().unwrap().to_owned();
    let token = world.server.service_account_token(OPERATOR_NS, &account, &[]).unwrap();
    let operator_kubeconfig = world.dir.path().join("operator.kubeconfig");
    std::fs::write(&operator_kubeconfig, world.server.kubeconfig_as(&token)).unwrap();
    let metrics = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1".parse().unwrap()));
    // Tests run at once: each operator's browser on a port of its own.
    let ui = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1".parse().unwrap()));
    let mut env = chart.operator_env(metrics);
    if let Some(pki) = pki {
        // The CA the chart mounts from agent.tls.caBundle.
        for (name, value) in &mut env {
            if name == "BIOMETRICS_AGENT_CA_BUNDLE" {
                *value = pki.join("ca.pem").display().to_string();
            }
        }
        let file = |f: &str| pki.join(f).display().to_string();
        world.agent_args.extend(["--tls-cert".into(), file("server.pem"), "--tls-key".into(), file("server.key")]);
    }
    world.operators_started = 1;
    world.operator = Some(ChildGuard::spawn(
        "biometrics-operator",
        Command::new(env!("CARGO_BIN_EXE_biometrics-operator"))
            .args(chart.operator_args())
            .env_clear()
            .envs(env)
            .env("BIOMETRICS_UI_ADDR", ui.to_string())
            .env("KUBECONFIG", &operator_kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(world.dir.path().join("operator-0.log")).unwrap())),
    ));
    wait_for_listener(metrics, Duration::from_secs(10));
    ui
}

/// What one mode's run leaves to check: every decision RBAC made, and the policy it made
/// them under (the chart's RBAC objects as installed, kube-apiserver's defaults beside).
struct Run {
    decisions: Vec<Authorization>,
    policy: Policy,
}

/// Runs the operator as the chart configures it through everything it does.
async fn run_operator(chart: &Chart, pod_ip: &str, pki: Option<&std::path::Path>) -> Run {
    let mut world = world(chart).await;
    let user = chart.user();
    let redis = RedisServer::start(&["--requirepass", "Rbac-Pa55"]);
    // The workload a rule invalidates after; its rollout is complete.
    let deployments: Api<Deployment> = Api::namespaced(world.client.clone(), NS);
    let deployment = json!({"metadata": {"name": "api", "annotations": {"deployment.kubernetes.io/revision": "1"}}, "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "app", "image": "api"}]}}}});
    deployments.create(&PostParams::default(), &serde_json::from_value(deployment).unwrap()).await.unwrap();
    let status = json!({"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
    deployments.patch_status("api", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();

    let ui = start_operator(&mut world, chart, pki);

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
    let ran = |trigger: InvalidationTrigger| {
        let policies = policies.clone();
        move || {
            let policies = policies.clone();
            async move {
                let cp = policies.get("sessions").await.unwrap();
                cp.status.as_ref().is_some_and(|s| {
                    s.invalidations.iter().any(|e| {
                        e.name == "on-deploy"
                            && e.trigger == Some(trigger)
                            && e.result == Some(InvalidationResult::Succeeded)
                    })
                })
            }
        }
    };
    eventually(&world, "the invalidation", ran(InvalidationTrigger::Change)).await;
    // A rollout of the workload to its next revision, completed: the rule runs for it.
    let next = json!({"metadata": {"annotations": {"deployment.kubernetes.io/revision": "2"}}, "spec": {"template": {"metadata": {"annotations": {"restartedAt": "now"}}}}});
    deployments.patch("api", &PatchParams::default(), &Patch::Merge(&next)).await.unwrap();
    let status = json!({"status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
    deployments.patch_status("api", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    eventually(&world, "the rollout's invalidation", ran(InvalidationTrigger::Rollout)).await;

    // A one-shot capture, to the end, and the browser's pages of it.
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest()));
    let captures: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    eventually(&world, "the capture", || async {
        let pc = captures.get("once").await.unwrap();
        pc.status.and_then(|s| s.phase) == Some(CapturePhase::Succeeded)
    })
    .await;
    let mut headers = Vec::new();
    let bearer;
    if chart.env("BIOMETRICS_UI_AUTH") == "token" {
        // The browser in token mode: a viewer's ServiceAccount token, reviewed, then its
        // access to the capture's namespace, which a Role there grants.
        let viewer = json!({"metadata": {"name": "viewer"}});
        Api::<ServiceAccount>::namespaced(world.client.clone(), NS)
            .create(&PostParams::default(), &serde_json::from_value(viewer).unwrap())
            .await
            .unwrap();
        world.kubectl(
            &["create", "role", "capture-viewer", "-n", NS, "--verb=get,list", "--resource=profilecaptures"],
            None,
        );
        world.kubectl(
            &[
                "create",
                "rolebinding",
                "capture-viewer",
                "-n",
                NS,
                "--role=capture-viewer",
                &format!("--serviceaccount={NS}:viewer"),
            ],
            None,
        );
        bearer = format!("Bearer {}", world.server.service_account_token(NS, "viewer", &[]).unwrap());
        headers.push(("Authorization", bearer.as_str()));
    }
    for page in ["/api/v1/captures".to_owned(), format!("/api/v1/namespaces/{NS}/captures/once")] {
        let (status, body) = biometrics_test_support::http_request(ui, "GET", &page, &headers, b"");
        assert_eq!(status, 200, "{page}: {}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("\"name\":\"once\""), "{page}");
    }
    world.kubectl(&["delete", "pcap", "once", "-n", NS, "--timeout=30s"], None);

    // The pod goes: NoExecutor again, the same Event as before, so the recorder patches its
    // series. Then both finalizers are removed on deletion.
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), NS);
    pods.delete("api-0", &DeleteParams::default()).await.unwrap();
    eventually(&world, "NoExecutor again", reason_is("NoExecutor")).await;
    eventually(&world, "the Event patched", || async {
        world
            .server
            .authorizations()
            .iter()
            .any(|d| d.user.name == user && d.attributes.resource == "events" && d.attributes.verb == "patch")
    })
    .await;
    world.kubectl(&["delete", "cpol", "sessions", "-n", NS, "--timeout=30s"], None);
    assert!(captures.get_opt("once").await.unwrap().is_none() && policies.get_opt("sessions").await.unwrap().is_none());

    world.operator.take().unwrap().terminate(Duration::from_secs(5));
    let decisions = world.server.authorizations().into_iter().filter(|d| d.user.name == user).collect();
    Run { decisions, policy: biometrics_test_apiserver::rbac::policy(world.server.store()) }
}

/// One verb on one resource of one rule of one of the chart's Roles or ClusterRoles.
#[derive(Debug, Clone)]
struct Grant {
    /// `Role <namespace>/<name>` or `ClusterRole <name>`.
    role: String,
    /// Where the role is in the policy: a Role (true) or a ClusterRole, and its index.
    namespaced: bool,
    index: usize,
    /// The rule's index in the role.
    rule: usize,
    group: String,
    resource: String,
    verb: String,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        write!(f, "{} {}/{} of {} (rule {})", self.verb, group, self.resource, self.role, self.rule)
    }
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// Every grant of the chart's own Roles and ClusterRoles (the release's label picks them).
fn grants(policy: &Policy) -> Vec<Grant> {
    let ours = |role: &Value| role["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE;
    let mut out = Vec::new();
    for (namespaced, roles) in [(true, &policy.roles), (false, &policy.cluster_roles)] {
        for (index, role) in roles.iter().enumerate().filter(|(_, r)| ours(r)) {
            let name = role["metadata"]["name"].as_str().unwrap_or_default();
            let label = match role["metadata"]["namespace"].as_str() {
                Some(ns) if namespaced => format!("Role {ns}/{name}"),
                _ => format!("ClusterRole {name}"),
            };
            for (rule_index, rule) in role["rules"].as_array().into_iter().flatten().enumerate() {
                for group in strings(&rule["apiGroups"]) {
                    for resource in strings(&rule["resources"]) {
                        for verb in strings(&rule["verbs"]) {
                            out.push(Grant {
                                role: label.clone(),
                                namespaced,
                                index,
                                rule: rule_index,
                                group: group.clone(),
                                resource: resource.clone(),
                                verb,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// `rule` without one group × resource × verb: the rules that grant everything else it did.
fn split(rule: &Value, group: &str, resource: &str, verb: &str) -> Vec<Value> {
    let without = |list: Vec<String>, item: &str| -> Vec<String> { list.into_iter().filter(|v| v != item).collect() };
    let with = |field: &str, list: Vec<String>| {
        let mut r = rule.clone();
        r[field] = json!(list);
        r
    };
    let mut out = Vec::new();
    let other_groups = without(strings(&rule["apiGroups"]), group);
    if !other_groups.is_empty() {
        out.push(with("apiGroups", other_groups));
    }
    let mut only_group = with("apiGroups", vec![group.to_owned()]);
    let other_resources = without(strings(&rule["resources"]), resource);
    if !other_resources.is_empty() {
        only_group["resources"] = json!(other_resources);
        out.push(only_group.clone());
    }
    let other_verbs = without(strings(&rule["verbs"]), verb);
    if !other_verbs.is_empty() {
        let mut r = only_group;
        r["resources"] = json!([resource]);
        r["verbs"] = json!(other_verbs);
        out.push(r);
    }
    out
}

/// The policy with `grant` taken out of its role, everything else as it was.
fn without(policy: &Policy, grant: &Grant) -> Policy {
    let mut roles = policy.roles.clone();
    let mut cluster_roles = policy.cluster_roles.clone();
    let list = if grant.namespaced { &mut roles } else { &mut cluster_roles };
    let mut role = (*list[grant.index]).clone();
    let rules = role["rules"].as_array().cloned().unwrap_or_default();
    let mut mutated = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if i == grant.rule {
            mutated.extend(split(rule, &grant.group, &grant.resource, &grant.verb));
        } else {
            mutated.push(rule.clone());
        }
    }
    role["rules"] = json!(mutated);
    list[grant.index] = Arc::new(role);
    Policy {
        roles,
        cluster_roles,
        role_bindings: policy.role_bindings.clone(),
        cluster_role_bindings: policy.cluster_role_bindings.clone(),
    }
}

/// Nothing denied, and no grant that every request could do without.
fn check(chart: &Chart, run: &Run) {
    assert!(run.decisions.len() > 20, "the operator's requests were authorized: {}", run.decisions.len());
    let denied: BTreeSet<String> =
        run.decisions.iter().filter(|d| !d.allowed).map(|d| d.attributes.to_string()).collect();
    assert!(
        denied.is_empty(),
        "the chart's RBAC denied the operator (add to charts/biometrics/templates):\n  {}",
        denied.into_iter().collect::<Vec<_>>().join("\n  ")
    );
    let grants = grants(&run.policy);
    assert!(
        grants.iter().any(|g| g.resource == "leases") && grants.iter().any(|g| g.group == "biometrics.io"),
        "the chart's roles were found: {}",
        grants.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    );
    // Each grant taken away in turn: some request the operator made must then be denied,
    // by the same authorizer that allowed it.
    let unneeded: Vec<String> = grants
        .iter()
        .filter(|g| {
            !NOT_EXERCISED
                .iter()
                .any(|(group, resource, verb, _)| g.group == *group && g.resource == *resource && g.verb == *verb)
        })
        .filter(|g| {
            let mutated = without(&run.policy, g);
            run.decisions.iter().all(|d| mutated.authorize(&d.user, &d.attributes).allowed())
        })
        .map(ToString::to_string)
        .collect();
    let used: BTreeSet<String> =
        run.decisions.iter().map(|d| format!("{} {}", d.attributes.verb, d.attributes.rbac_resource())).collect();
    assert!(
        unneeded.is_empty(),
        "the chart grants what the operator never needs (remove it, or list it in NOT_EXERCISED with why) in mode {:?}:\n  {}\nused: {used:?}",
        chart.values,
        unneeded.join("\n  "),
    );
}

/// The mutation takes out exactly one group × resource × verb and keeps the rest of the
/// rule (names included), whatever the rule's shape.
#[test]
fn a_mutated_rule_grants_all_but_the_one_taken_out() {
    let triples = |rules: &[Value]| -> BTreeSet<(String, String, String, Vec<String>)> {
        let mut all = BTreeSet::new();
        for rule in rules {
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        all.insert((g.clone(), r.clone(), v, strings(&rule["resourceNames"])));
                    }
                }
            }
        }
        all
    };
    let rule = json!({"apiGroups": ["", "apps"], "resources": ["pods", "pods/status"], "resourceNames": ["p"], "verbs": ["get", "list", "watch"]});
    for (g, r, v) in [("", "pods", "get"), ("apps", "pods/status", "watch"), ("", "pods/status", "list")] {
        let mut want = triples(std::slice::from_ref(&rule));
        assert!(want.remove(&(g.into(), r.into(), v.into(), vec!["p".into()])));
        assert_eq!(triples(&split(&rule, g, r, v)), want, "without {v} {g}/{r}");
    }
    let single = json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]});
    assert!(split(&single, "", "secrets", "get").is_empty(), "a rule of one grant goes");
}
