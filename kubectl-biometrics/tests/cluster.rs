//! The real `kubectl-biometrics` against the test API server with the CRDs, through a
//! kubeconfig: `capture` sets `biometrics.io/capture-now` and `--wait` follows the run the
//! status reports (the test plays the operator's part by writing status); every command
//! reaches the capture browser through the port-forward to the operator's pod that the
//! plugin opens itself (the browser served by the test on the pod's address), and each way
//! that can fail is one line.

mod common;

use std::{
    io::Read,
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use biometrics_crds::{CAPTURE_NOW_ANNOTATION, v1alpha1::ProfileCapture};
use biometrics_test_apiserver::TestApiServer;
use biometrics_test_support::repo_root;
use common::{NS, Run, backend, plugin, serve_browser, sha256};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Pod},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const OPERATOR_NS: &str = "biometrics-system";

struct Cluster {
    runtime: tokio::runtime::Runtime,
    server: TestApiServer,
    client: Client,
    dir: tempfile::TempDir,
}

fn object<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

impl Cluster {
    /// The API server with the CRDs, namespaces `shop` and `biometrics-system`, and
    /// `shop/checkout` whose last run is the scheduled `s100`.
    fn start() -> Self {
        Self::start_with(biometrics_test_apiserver::Options::default())
    }

    /// [`Cluster::start`] with `options` (RBAC and HTTPS): the kubeconfig is the admin's.
    fn start_with(options: biometrics_test_apiserver::Options) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = runtime.block_on(async {
            // The tests create Pods themselves.
            let options = biometrics_test_apiserver::Options { controllers: false, ..options };
            let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
            server.create_from_files(&[repo_root().join("crds/yaml/profilecapture.yaml")]).unwrap();
            server.write_kubeconfig(&dir.path().join("kubeconfig")).unwrap();
            let config = kube::Config::from_custom_kubeconfig(
                Kubeconfig::from_yaml(&server.kubeconfig()).unwrap(),
                &KubeConfigOptions::default(),
            )
            .await
            .unwrap();
            let client = Client::try_from(config).unwrap();
            for ns in [NS, OPERATOR_NS] {
                Api::<Namespace>::all(client.clone())
                    .create(&PostParams::default(), &object(json!({"metadata": {"name": ns}})))
                    .await
                    .unwrap();
            }
            let captures: Api<ProfileCapture> = Api::namespaced(client.clone(), NS);
            let pc = json!({
                "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
                "metadata": {"name": "checkout"},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "target": {"port": 6060}, "profiles": ["cpu"], "schedule": "@hourly"}
            });
            captures.create(&PostParams::default(), &object(pc)).await.unwrap();
            let status = json!({"status": {"phase": "Scheduled", "lastRun": {
                "id": "s100", "trigger": "Schedule", "startTime": "2026-11-29T09:00:00Z", "result": "Succeeded"}}});
            captures.patch_status("checkout", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
            (server, client)
        });
        Self { runtime, server, client, dir }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The plugin with this cluster's kubeconfig.
    fn spawn(&self, args: &[&str]) -> Child {
        plugin()
            .args(args)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> Run {
        finish(self.spawn(args), Duration::from_secs(30))
    }

    fn captures(&self) -> Api<ProfileCapture> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn capture(&self) -> ProfileCapture {
        self.runtime.block_on(self.captures().get("checkout")).unwrap()
    }

    /// Writes status as the operator would.
    fn set_status(&self, status: Value) {
        self.runtime
            .block_on(self.captures().patch_status(
                "checkout",
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            ))
            .unwrap();
    }

    fn annotation(&self) -> Option<String> {
        self.capture().metadata.annotations.and_then(|a| a.get(CAPTURE_NOW_ANNOTATION).cloned())
    }

    /// The plugin spawned with `args`, and the new capture-now value it set, once it has.
    fn spawn_capture(&self, args: &[&str]) -> (Child, String) {
        let before = self.annotation();
        let mut child = self.spawn(args);
        let value = self.requested_value(&mut child, before);
        (child, value)
    }

    fn requested_value(&self, child: &mut Child, before: Option<String>) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(value) = self.annotation().filter(|v| Some(v) != before.as_ref()) {
                return value;
            }
            assert!(child.try_wait().unwrap().is_none(), "the plugin exited before annotating");
            assert!(Instant::now() < deadline, "the plugin never set {CAPTURE_NOW_ANNOTATION}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits for the plugin to exit and collects what it printed.
fn finish(mut child: Child, timeout: Duration) -> Run {
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the plugin did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    Run { code: status.code().unwrap(), stdout, stderr }
}

fn top(function: &str, flat: i64, cum: i64) -> Value {
    json!({"function": function, "flat": flat, "flatPercent": flat as f64 / 1e7, "cum": cum, "cumPercent": cum as f64 / 1e7})
}

#[test]
fn capture_wait_follows_the_run_and_prints_its_top_functions() {
    let cluster = Cluster::start();
    let (mut child, value) =
        cluster.spawn_capture(&["capture", "pcap/checkout", "-n", NS, "--wait", "--timeout", "1m"]);

    // The operator takes the request and starts run m1.
    let started = json!({"id": "m1", "trigger": "Manual", "startTime": "2026-11-29T10:00:00Z", "result": "Running",
        "pods": [{"pod": "web-0", "result": "Running"}, {"pod": "web-1", "result": "Running"}]});
    cluster.set_status(json!({"phase": "Running", "handledCaptureNow": value, "lastRun": started}));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "still waiting while the run captures");

    // It finishes: one pod's CPU profile with its top functions, the other's failed.
    let profile = json!({"type": "cpu", "path": "shop/checkout/m1/web-0/cpu.pb.gz", "bytes": 2048, "sha256": "ab".repeat(32),
        "sampleType": "cpu/nanoseconds", "total": 1_000_000_000i64, "samples": 100,
        "top": [top("main.burnCPU", 980_000_000, 990_000_000), top("runtime.futex", 10_000_000, 10_000_000), top("main.main", 0, 990_000_000)]});
    cluster.set_status(json!({"phase": "Failed", "lastRun": {
        "id": "m1", "trigger": "Manual", "startTime": "2026-11-29T10:00:00Z", "completionTime": "2026-11-29T10:00:12Z",
        "result": "PartiallySucceeded",
        "pods": [{"pod": "web-0", "result": "Succeeded", "profiles": [profile]},
                 {"pod": "web-1", "result": "Failed", "error": "agent unreachable: connection refused"}]}}));
    let out = finish(child, Duration::from_secs(20));
    out.assert_ok();
    assert_eq!(
        out.stdout,
        "\
Run m1 PartiallySucceeded: 1 of 2 pods succeeded

Pod web-0, cpu profile (shop/checkout/m1/web-0/cpu.pb.gz):
Type: cpu
Showing nodes accounting for 990ms, 99.00% of 1000ms total
      flat  flat%   sum%        cum   cum%
     980ms 98.00% 98.00%      990ms 99.00%  main.burnCPU
      10ms  1.00% 99.00%       10ms  1.00%  runtime.futex
         0     0% 99.00%      990ms 99.00%  main.main
"
    );
    assert_eq!(
        out.stderr,
        format!(
            "Requested a run of ProfileCapture shop/checkout ({CAPTURE_NOW_ANNOTATION}={value})\nRun m1 started\nwarning: web-1: agent unreachable: connection refused\n"
        )
    );
}

#[test]
fn capture_without_wait_only_asks() {
    let cluster = Cluster::start();
    let before = jiff::Timestamp::now();
    let out = cluster.run(&["capture", "checkout", "-n", NS]);
    out.assert_ok();
    let value = cluster.capture().metadata.annotations.unwrap()[CAPTURE_NOW_ANNOTATION].clone();
    let stamped: jiff::Timestamp = value.parse().expect("the value is the time of the request");
    assert!(stamped >= before, "a fresh value: {value}");
    assert_eq!(
        out.stderr,
        format!("Requested a run of ProfileCapture shop/checkout ({CAPTURE_NOW_ANNOTATION}={value})\n")
    );
    assert_eq!(out.stdout, "");
    // Twice in a row: two values, two runs.
    cluster.run(&["capture", "checkout", "-n", NS]).assert_ok();
    let again = cluster.capture().metadata.annotations.unwrap()[CAPTURE_NOW_ANNOTATION].clone();
    assert_ne!(again, value);
}

#[test]
fn capture_errors_are_one_line() {
    let cluster = Cluster::start();
    cluster.run(&["capture", "pcap/nope", "-n", NS]).assert_error("no ProfileCapture shop/nope");
    // No -n: the kubeconfig context's namespace (the test server's is `default`).
    cluster.run(&["capture", "pcap/checkout"]).assert_error("no ProfileCapture default/checkout");
    // Nobody acts on the request.
    cluster.run(&["capture", "pcap/checkout", "-n", NS, "--wait", "--timeout", "1s"]).assert_last_error(
        "timed out after 1s waiting for the requested run of shop/checkout (is the operator running?)",
    );

    // The operator takes the value but has no pod to run on.
    let (child, value) = cluster.spawn_capture(&["capture", "pcap/checkout", "-n", NS, "--wait", "--timeout", "1m"]);
    cluster.set_status(json!({"handledCaptureNow": value}));
    let out = finish(child, Duration::from_secs(20));
    out.assert_last_error(&format!(
        "the operator handled capture-now={value} but started no run of shop/checkout (no eligible pods: see kubectl describe pcap checkout -n shop)"
    ));

    // The run fails everywhere.
    let (child, value) = cluster.spawn_capture(&["capture", "pcap/checkout", "-n", NS, "--wait", "--timeout", "1m"]);
    cluster.set_status(json!({"handledCaptureNow": value, "lastRun": {
        "id": "m2", "trigger": "Manual", "startTime": "2026-11-29T10:00:00Z", "result": "Failed",
        "pods": [{"pod": "web-0", "result": "Failed", "error": "agent unreachable:\nconnection refused"}]}}));
    let out = finish(child, Duration::from_secs(20));
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "Run m2 Failed: 0 of 1 pods succeeded\n");
    assert!(
        out.stderr.ends_with("\nerror: run m2 of shop/checkout failed: web-0: agent unreachable: connection refused\n"),
        "{out:?}"
    );
}

/// The chart's operator Deployment in `biometrics-system` and one pod of it, ready at
/// 127.0.0.1 when `ready` (the test serves the browser there).
fn operator_deployment(cluster: &Cluster, ready: bool) -> Api<Pod> {
    let labels = json!({"app.kubernetes.io/name": "biometrics", "app.kubernetes.io/instance": "biometrics", "app.kubernetes.io/component": "operator"});
    let deployment = json!({"metadata": {"name": "biometrics", "labels": labels}, "spec": {"selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "operator", "image": "biometrics-operator"}]}}}});
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), OPERATOR_NS);
    cluster.runtime.block_on(async {
        Api::<Deployment>::namespaced(cluster.client.clone(), OPERATOR_NS)
            .create(&PostParams::default(), &object(deployment))
            .await
            .unwrap();
        let pod = json!({"metadata": {"name": "biometrics-7d9f-abcde", "labels": labels},
            "spec": {"containers": [{"name": "operator", "image": "biometrics-operator"}]}});
        pods.create(&PostParams::default(), &object(pod)).await.unwrap();
        if ready {
            let ready = json!({"status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}});
            pods.patch_status("biometrics-7d9f-abcde", &PatchParams::default(), &Patch::Merge(&ready)).await.unwrap();
        }
    });
    pods
}

/// Without `--ui`, each command port-forwards to the operator's pod itself (the kubeconfig's
/// user, the API server's pods/portforward) and answers exactly as with the browser's URL.
#[test]
fn every_command_reaches_the_browser_through_a_port_forward() {
    let cluster = Cluster::start();
    let (ui, _browser) = serve_browser(backend(&[]));
    let port = ui.rsplit(':').next().unwrap().to_owned();
    operator_deployment(&cluster, true);
    let through_forward = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--ui-port", &port]);
        cluster.run(&all)
    };
    let direct = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--ui", &ui]);
        cluster.run(&all)
    };
    for args in [
        &["runs", "pcap/checkout", "-n", NS][..],
        &["top", "pcap/checkout", "-n", NS, "--profile", "cpu"],
        &["diff", "pcap/checkout", "-n", NS, "--profile", "cpu"],
    ] {
        let forwarded = through_forward(args);
        forwarded.assert_ok();
        assert!(!forwarded.stdout.is_empty(), "{args:?}: {forwarded:?}");
        assert_eq!(forwarded.stdout, direct(args).stdout, "{args:?}: the same answer either way");
    }
    let out = tempfile::tempdir().unwrap();
    let fetched =
        through_forward(&["fetch", "pcap/checkout", "-n", NS, "--run", "r2", "-o", &out.path().to_string_lossy()]);
    fetched.assert_ok();
    let profiles = common::profiles();
    for pod in ["web-0", "web-1"] {
        let file = out.path().join(pod).join("cpu.pb.gz");
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}: {fetched:?}", file.display()));
        assert_eq!(sha256(&bytes), sha256(profiles.get("r2", pod, "cpu.pb.gz")), "{pod}");
    }
}

#[test]
fn port_forward_errors_are_one_line() {
    let cluster = Cluster::start();
    let commands: [&[&str]; 4] = [
        &["runs", "pcap/checkout", "-n", NS],
        &["top", "pcap/checkout", "-n", NS],
        &["fetch", "pcap/checkout", "-n", NS, "-o", "/nonexistent"],
        &["open", "pcap/checkout", "-n", NS],
    ];
    // No Deployment yet.
    cluster.run(commands[0]).assert_error(
        "no operator Deployment biometrics-system/biometrics (pass --operator-namespace and --operator-deployment, or --ui URL)",
    );

    // The chart's Deployment, with a pod that is not ready.
    let pods = operator_deployment(&cluster, false);
    cluster
        .run(commands[0])
        .assert_error("no running and ready pod of the operator Deployment biometrics-system/biometrics");

    // Ready, but nothing listens on the browser's port at the pod's address: the API server
    // forwards, and the pod's refusal is the one line.
    let ready = json!({"status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}});
    cluster
        .runtime
        .block_on(pods.patch_status("biometrics-7d9f-abcde", &PatchParams::default(), &Patch::Merge(&ready)))
        .unwrap();
    for args in commands {
        cluster.run(args).assert_error(
            "port-forward to biometrics-7d9f-abcde: error forwarding port 9478 to pod: Connection refused (os error 111)",
        );
    }
    cluster
        .run(&["runs", "pcap/checkout", "-n", NS, "--operator-deployment", "ops"])
        .assert_error("no operator Deployment biometrics-system/ops (pass --operator-namespace and --operator-deployment, or --ui URL)");
}

/// The permissions the quickstart lists for the plugin's port-forward (`get` on the
/// Deployment, `list` on pods, `get` and `create` on `pods/portforward` in the operator's
/// namespace) are enough, and the `get` on `pods/portforward` that a WebSocket
/// port-forward needs is one of them.
#[test]
fn the_documented_permissions_are_enough_for_the_port_forward() {
    let tokens = biometrics_test_apiserver::rbac::Tokens::parse("dana-token,dana,2001,\"\"\n").unwrap();
    let options = biometrics_test_apiserver::Options { rbac: Some(tokens), tls: true, ..Default::default() };
    let cluster = Cluster::start_with(options);
    let (ui, _browser) = serve_browser(backend(&[]));
    let port = ui.rsplit(':').next().unwrap().to_owned();
    operator_deployment(&cluster, true);
    let grant = |verbs: Value| {
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "biometrics-browse", "namespace": OPERATOR_NS},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
                      {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
                      {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": verbs}]});
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "biometrics-browse", "namespace": OPERATOR_NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "biometrics-browse"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dana"}]});
        cluster.runtime.block_on(async {
            let apply = PatchParams::apply("test").force();
            let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(cluster.client.clone(), OPERATOR_NS);
            roles.patch("biometrics-browse", &apply, &Patch::Apply(&role)).await.unwrap();
            let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
                Api::namespaced(cluster.client.clone(), OPERATOR_NS);
            bindings.patch("biometrics-browse", &apply, &Patch::Apply(&binding)).await.unwrap();
        });
    };
    let dana = cluster.dir.path().join("dana");
    std::fs::write(&dana, cluster.server.kubeconfig_as("dana-token")).unwrap();
    let runs = || {
        let child = plugin()
            .args(["runs", "pcap/checkout", "-n", NS, "--ui-port", &port, "--kubeconfig"])
            .arg(&dana)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        finish(child, Duration::from_secs(30))
    };
    grant(json!(["get", "create"]));
    let listed = runs();
    listed.assert_ok();
    assert!(!listed.stdout.is_empty(), "{listed:?}");
    grant(json!(["create"]));
    let refused = runs();
    assert!(refused.stderr.contains("cannot get resource \"pods/portforward\""), "{refused:?}");
}
