//! The world the end-to-end tests run in: the test API server, "pods" whose IPs are
//! loopback addresses where a real agent listens (beside a real Go program when the test
//! profiles), the real operator binary, and kubectl.
#![allow(dead_code)]

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use biometrics_crds::v1alpha1::ProfileCapture;
use biometrics_test_apiserver::{Options, TestApiServer};
use biometrics_test_support::{
    ChildGuard, FaultProxy, GoTarget, free_port, repo_root, wait_for_listener, workspace_binary,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

pub const NS: &str = "shop";
pub const OPERATOR_NS: &str = "biometrics-system";

/// One "pod": a Go target and an agent on the pod's own loopback address.
pub struct FakePod {
    pub name: String,
    pub ip: IpAddr,
    pub target: Option<GoTarget>,
    pub agent: Option<ChildGuard>,
}

pub struct World {
    pub server: TestApiServer,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub pods: Vec<FakePod>,
    pub operator: Option<ChildGuard>,
    pub operator_metrics: Option<SocketAddr>,
    /// Where the latest operator started serves the capture browser.
    pub operator_ui: Option<SocketAddr>,
    pub operators_started: usize,
    pub public_key: PathBuf,
    /// Extra arguments of every agent started.
    pub agent_args: Vec<String>,
    /// Extra arguments of every operator started.
    pub operator_args: Vec<String>,
    /// The lease of replicas started with `start_operator`.
    pub lease: &'static str,
}

pub fn kubeconfig_path(dir: &Path) -> PathBuf {
    dir.join("kubeconfig")
}

/// Takes the CRDs, writes the admin kubeconfig into `dir`, and creates the namespaces `NS`
/// and `OPERATOR_NS`; the admin's client.
async fn admin_client(server: &TestApiServer, dir: &Path) -> Client {
    let crds = ["profilecapture.yaml", "cachepolicy.yaml"].map(|f| repo_root().join("crds/yaml").join(f));
    server.create_from_files(&crds).unwrap();
    server.write_kubeconfig(&kubeconfig_path(dir)).unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let client = Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap(),
    )
    .unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for ns in [NS, OPERATOR_NS] {
        namespaces
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap())
            .await
            .unwrap();
    }
    client
}

/// Starts the server's kubelet, its state under `dir`, running pods by `images` (YAML).
async fn start_kubelet(server: &mut TestApiServer, dir: &Path, images: &str) {
    let images = biometrics_test_apiserver::kubelet::ImageMap::parse(images, Path::new("images.yaml")).unwrap();
    let config = biometrics_test_apiserver::kubelet::KubeletConfig {
        node_name: "local-1".into(),
        state_dir: dir.join("kubelet"),
        images,
        restart_backoff: Duration::from_secs(1),
        api: server.addr(),
    };
    server.start_kubelet(config).await.expect("the kubelet starts (it needs root)");
}

/// Every stored object as `plural.group namespace/name`, except Events, which a cluster
/// keeps after what they are about is gone.
pub fn everything(store: &biometrics_test_apiserver::Store) -> std::collections::BTreeSet<String> {
    let registry = store.registry();
    let mut all = std::collections::BTreeSet::new();
    for rt in registry.all().filter(|rt| rt.plural != "events") {
        let (items, _) = store.list(&rt.key(), None).expect("list");
        for item in items {
            let text = |p: &str| item.pointer(p).and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
            all.insert(format!("{} {}/{}", rt.qualified_name(), text("/metadata/namespace"), text("/metadata/name")));
        }
    }
    all
}

impl World {
    pub async fn start(pod_ips: &[&str]) -> Self {
        Self::start_with(Options::default(), pod_ips).await
    }

    /// A world whose API server runs with `options` (e.g. recording every request).
    pub async fn start_with(options: Options, pod_ips: &[&str]) -> Self {
        biometrics_operator::install_crypto();
        // These tests create Pods (agents on loopback addresses, behind fault proxies where a
        // test needs one) and walk workload status themselves, for states and timings a real
        // controller would not stage; `start_on_cluster` runs the real ones.
        let options = Options { controllers: false, ..options };
        let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let client = admin_client(&server, dir.path()).await;
        // The operator's signing key, made ahead so the agents can be given its public half.
        let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
        let private_pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let public_pem = key.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NS);
        secrets
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "biometrics-operator-signing-key"}, "stringData": {"operator.key": private_pem, "operator.pub": public_pem}})).unwrap())
            .await
            .unwrap();
        let public_key = dir.path().join("operator.pub");
        std::fs::write(&public_key, &public_pem).unwrap();
        let mut world = Self::from_parts(server, client, dir, public_key);
        for (i, ip) in pod_ips.iter().enumerate() {
            world.add_pod(&format!("api-{i}"), ip.parse().unwrap()).await;
        }
        world
    }

    /// A world on a local cluster: the API server with its workload controllers and a
    /// kubelet that runs pods as processes, `images` its image → command map (YAML). The
    /// agents run as pods' containers and take the operator's key from the trust ConfigMap
    /// the operator publishes, as in a cluster.
    pub async fn start_on_cluster(images: &str) -> Self {
        biometrics_operator::install_crypto();
        let mut server = TestApiServer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        start_kubelet(&mut server, dir.path(), images).await;
        let client = admin_client(&server, dir.path()).await;
        let public_key = dir.path().join("operator.pub");
        Self::from_parts(server, client, dir, public_key)
    }

    /// A local cluster that authenticates and authorizes as a real one: HTTPS with the
    /// server's own CA, RBAC with kube-apiserver's default roles (the test's kubeconfig is
    /// an admin in `system:masters`), every decision of the authorizer recorded; pods reach
    /// it as their ServiceAccount. Only namespace `NS` is made: Helm brings the CRDs and the
    /// operator's namespace.
    pub async fn start_on_secure_cluster(images: &str) -> Self {
        biometrics_operator::install_crypto();
        let options = Options {
            rbac: Some(biometrics_test_apiserver::rbac::Tokens::default()),
            tls: true,
            record_requests: true,
            ..Options::default()
        };
        let mut server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        start_kubelet(&mut server, dir.path(), images).await;
        server.write_kubeconfig(&kubeconfig_path(dir.path())).unwrap();
        let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
        let client = Client::try_from(
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap(),
        )
        .unwrap();
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        namespaces
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap())
            .await
            .unwrap();
        let public_key = dir.path().join("operator.pub");
        Self::from_parts(server, client, dir, public_key)
    }

    /// A world around a running API server, with no pods and no operator yet.
    pub fn from_parts(server: TestApiServer, client: Client, dir: tempfile::TempDir, public_key: PathBuf) -> Self {
        std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
        Self {
            server,
            client,
            dir,
            pods: Vec::new(),
            operator: None,
            operator_metrics: None,
            operator_ui: None,
            operators_started: 0,
            public_key,
            agent_args: Vec::new(),
            operator_args: Vec::new(),
            lease: "60s",
        }
    }

    pub fn start_agent(&self, name: &str, ip: IpAddr) -> ChildGuard {
        let addr = SocketAddr::new(ip, 9477);
        let agent = ChildGuard::spawn(
            "biometrics-agent",
            Command::new(workspace_binary("biometrics-agent"))
                .args([
                    "--listen",
                    &addr.to_string(),
                    "--pod-name",
                    name,
                    "--pod-namespace",
                    NS,
                    "--target-port",
                    "6060",
                    "--sample-interval",
                    "1s",
                ])
                .arg("--target-host")
                .arg(ip.to_string())
                .arg("--profiles-dir")
                .arg(self.dir.path().join("profiles"))
                .arg("--operator-public-key")
                .arg(&self.public_key)
                .args(&self.agent_args)
                .env("BIOMETRICS_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.dir.path().join(format!("agent-{name}.log")))
                        .unwrap(),
                )),
        );
        wait_for_listener(addr, Duration::from_secs(10));
        agent
    }

    /// A pod with a Go target beside its agent.
    pub async fn add_pod(&mut self, name: &str, ip: IpAddr) {
        let target = GoTarget::start(SocketAddr::new(ip, 6060));
        self.add_pod_with(name, ip, Some(target), "api").await;
    }

    /// A pod with label `app: <app>`, an agent, and the given target.
    pub async fn add_pod_with(&mut self, name: &str, ip: IpAddr, target: Option<GoTarget>, app: &str) {
        let agent = self.start_agent(name, ip);
        self.create_pod(name, ip, app).await;
        self.pods.push(FakePod { name: name.into(), ip, target, agent: Some(agent) });
    }

    /// A pod with a Go target beside its agent, whose agent the operator reaches through a
    /// fault proxy on the pod's address (the pod's agent-port annotation names the proxy).
    pub async fn add_pod_behind_proxy(&mut self, name: &str, ip: IpAddr) -> FaultProxy {
        let target = GoTarget::start(SocketAddr::new(ip, 6060));
        let agent = self.start_agent(name, ip);
        let proxy = FaultProxy::start(SocketAddr::new(ip, 0), SocketAddr::new(ip, 9477));
        self.create_pod_on(name, ip, "api", proxy.addr().port()).await;
        self.pods.push(FakePod { name: name.into(), ip, target: Some(target), agent: Some(agent) });
        proxy
    }

    /// The Pod object only: Running and Ready at `ip`, with an agent container.
    pub async fn create_pod(&self, name: &str, ip: IpAddr, app: &str) {
        self.create_pod_on(name, ip, app, 9477).await;
    }

    /// The Pod object only, its agent on `agent_port`.
    pub async fn create_pod_on(&self, name: &str, ip: IpAddr, app: &str, agent_port: u16) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NS);
        let pod = json!({
            "metadata": {"name": name, "labels": {"app": app, "biometrics.io/agent": "true"}, "annotations": {"biometrics.io/agent-port": agent_port.to_string()}},
            "spec": {"containers": [{"name": "app", "image": "api"}, {"name": "biometrics-agent", "image": "agent"}]}
        });
        pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
        let status = json!({"status": {"phase": "Running", "podIP": ip.to_string(), "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    }

    /// A replica with the world's lease (`lease`: long by default, so that a loaded machine
    /// does not make a lone leader miss a renewal and stop mid-test; short in tests where
    /// another replica or a restarted one must take over quickly).
    pub fn start_operator(&mut self) {
        let (operator, metrics) = self.spawn_replica(&kubeconfig_path(self.dir.path()), self.lease);
        self.operator = Some(operator);
        self.operator_metrics = Some(metrics);
    }

    /// Another operator replica, reaching the API server with `kubeconfig`; its process and
    /// its metrics address (`/readyz`).
    pub fn spawn_operator(&mut self, kubeconfig: &Path) -> (ChildGuard, SocketAddr) {
        // Short, so that failover happens within a test.
        self.spawn_replica(kubeconfig, "4s")
    }

    fn spawn_replica(&mut self, kubeconfig: &Path, lease: &str) -> (ChildGuard, SocketAddr) {
        let identity = format!("operator-{}", self.operators_started);
        self.operators_started += 1;
        let metrics = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1".parse().unwrap()));
        let ui = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1".parse().unwrap()));
        self.operator_ui = Some(ui);
        let operator = ChildGuard::spawn(
            "biometrics-operator",
            Command::new(env!("CARGO_BIN_EXE_biometrics-operator"))
                .args([
                    "--metrics-addr",
                    &metrics.to_string(),
                    "--namespace",
                    OPERATOR_NS,
                    "--identity",
                    &identity,
                    "--lease-duration",
                    lease,
                    "--ui-addr",
                    &ui.to_string(),
                ])
                .arg("--ui-speedscope-dir")
                .arg(repo_root().join(".tools/speedscope"))
                .args(&self.operator_args)
                .env("KUBECONFIG", kubeconfig)
                .env("BIOMETRICS_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::from(std::fs::File::create(self.dir.path().join(format!("{identity}.log"))).unwrap())),
        );
        wait_for_listener(metrics, Duration::from_secs(10));
        (operator, metrics)
    }

    /// The real Helm (`make setup` installs it) against the world's API server as its
    /// admin, from the repository's root; its output.
    pub fn helm(&self, args: &[&str]) -> String {
        let home = self.dir.path().join("helm");
        let out = Command::new(repo_root().join(".tools/bin/helm"))
            .args(args)
            .env("KUBECONFIG", kubeconfig_path(self.dir.path()))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .current_dir(repo_root())
            .output()
            .expect("helm (make setup installs it)");
        assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `charts/biometrics/examples/app-chart` with the chart as its dependency, unpacked in
    /// its `charts/` as `helm dependency build` leaves it; its directory.
    pub fn app_chart(&self) -> PathBuf {
        let chart = repo_root().join("charts/biometrics");
        let app = self.dir.path().join("app-chart");
        let script = format!(
            "cp -r '{examples}/app-chart' '{app}' && mkdir -p '{app}/charts/biometrics' && (cd '{chart}' && tar --exclude=./examples -cf - .) | tar -xf - -C '{app}/charts/biometrics'",
            examples = chart.join("examples").display(),
            app = app.display(),
            chart = chart.display(),
        );
        let status = Command::new("sh").args(["-c", &script]).status().unwrap();
        assert!(status.success(), "copying the app chart");
        app
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = Command::new(repo_root().join(".tools/bin/kubectl"))
            .args(args)
            .env("KUBECONFIG", kubeconfig_path(self.dir.path()))
            .env("KUBECACHEDIR", self.dir.path().join("kubecache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl (make setup installs it)");
        if let Some(input) = stdin {
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `check` every 200 ms until it gives a value; after `timeout`, fails naming
    /// `what`, with the cluster's pods.
    pub async fn wait<T>(&self, what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen; pods:\n{}",
                self.kubectl(&["get", "pods", "-A"], None)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_capture(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&ProfileCapture) -> bool,
    ) -> ProfileCapture {
        let api: Api<ProfileCapture> = Api::namespaced(self.client.clone(), NS);
        let deadline = Instant::now() + timeout;
        loop {
            let pc = api.get(name).await.unwrap();
            if done(&pc) {
                return pc;
            }
            if Instant::now() > deadline {
                panic!("{name} did not reach the expected state: {:#?}\n{}", pc.status, self.logs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The log of the latest operator started.
    pub fn operator_log(&self) -> String {
        std::fs::read_to_string(
            self.dir.path().join(format!("operator-{}.log", self.operators_started.saturating_sub(1))),
        )
        .unwrap_or_default()
    }

    /// The current operator's log and the end of each agent's, for a failure's message.
    pub fn logs(&self) -> String {
        let mut text = format!("operator log:\n{}", self.operator_log());
        let mut agents: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("agent-")))
            .collect();
        agents.sort();
        for path in agents {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            text.push_str(&format!("\n{}, last lines:\n", path.file_name().unwrap_or_default().to_string_lossy()));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Everything the operators and agents logged.
    pub fn all_logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }
}

/// A workload's pod template on the local cluster (the lines from `  template:` on): pods
/// labelled `app: <app>` that the operator serves, stopped with `grace_seconds`, running
/// the Go target (its readiness probed on pprof) with `app_lines` added to its container
/// (YAML at the container's indentation: env, resources), and the agent sidecar with
/// `agent_env`.
pub fn profiled_template(app: &str, grace_seconds: u32, app_lines: &str, agent_env: &[&str]) -> String {
    let sidecar = agent_sidecar(agent_env);
    format!(
        r#"  template:
    metadata:
      labels: {{app: {app}, biometrics.io/agent: "true"}}
      annotations: {{biometrics.io/agent-port: "9477"}}
    spec:
      terminationGracePeriodSeconds: {grace_seconds}
      containers:
      - name: app
        image: example/app:1.0
        readinessProbe: {{httpGet: {{path: /debug/pprof/, port: 6060}}, periodSeconds: 1}}
{app_lines}{sidecar}"#
    )
}

/// An app pod's agent sidecar on the local cluster, for a Deployment's pod template: the
/// container (a list item under `containers:`, with `extra_env` lines added to its env)
/// and then the pod's `volumes:` it mounts (its profiles, and the trust ConfigMap with the
/// operator's key), so it ends the pod spec.
pub fn agent_sidecar(extra_env: &[&str]) -> String {
    format!("{}{AGENT_VOLUMES}", agent_container(extra_env, false))
}

/// The agent's container at a pod template's indentation, with `extra_env` lines added to
/// its env; `native`, as a native sidecar (a list item under `initContainers:`, with
/// `restartPolicy: Always`). It mounts [`AGENT_VOLUMES`].
pub fn agent_container(extra_env: &[&str], native: bool) -> String {
    let mut env = vec![
        "{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}",
        "{name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}",
    ];
    env.extend_from_slice(extra_env);
    env.push("{name: BIOMETRICS_OPERATOR_PUBLIC_KEY, value: /etc/biometrics/trust/operator.pub}");
    let env: String = env.iter().map(|e| format!("        - {e}\n")).collect();
    let restart = if native { "        restartPolicy: Always\n" } else { "" };
    format!(
        "      - name: biometrics-agent
        image: example/agent:1.0
{restart}        args: [--target-port=6060]
        env:
{env}        volumeMounts:
        - {{name: profiles, mountPath: /profiles}}
        - {{name: trust, mountPath: /etc/biometrics/trust, readOnly: true}}
"
    )
}

/// The volumes the agent's container mounts (its profiles, and the trust ConfigMap with
/// the operator's key), at a pod template's indentation: they end the pod spec.
pub const AGENT_VOLUMES: &str = "      volumes:
      - {name: profiles, emptyDir: {}}
      - {name: trust, configMap: {name: biometrics-trust, optional: true}}
";
