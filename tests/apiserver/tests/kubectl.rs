//! The real kubectl (installed by `make setup`) against the real `test-apiserver` binary:
//! applying the CRDs and examples, printer columns, `get -w`, status patches, `explain`,
//! deletion waiting on a finalizer, server-side apply, and every invalid fixture refused
//! with its reason.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn kubectl_binary() -> PathBuf {
    if let Some(explicit) = std::env::var_os("KUBECTL") {
        return PathBuf::from(explicit);
    }
    let local = repo_root().join(".tools/bin/kubectl");
    assert!(local.exists(), "kubectl is not installed at {}: run `make setup`", local.display());
    local
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test-apiserver process with its own kubeconfig and kubectl cache.
struct Cluster {
    _server: Running,
    dir: tempfile::TempDir,
    startup: Duration,
}

impl Cluster {
    /// Starts the server and applies the CRDs with kubectl, timing both.
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_test-apiserver"))
            .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("test-apiserver starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("LISTEN line");
        assert!(line.starts_with("LISTEN 127.0.0.1:"), "unexpected first line {line:?}");
        let cluster = Self { _server: Running(child), dir, startup: Duration::ZERO };
        let out = cluster.kubectl(&["apply", "-f", &repo_root().join("crds/yaml").to_string_lossy()]);
        assert!(out.status.success(), "CRDs apply: {}", String::from_utf8_lossy(&out.stderr));
        Self { startup: started.elapsed(), ..cluster }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(kubectl_binary());
        cmd.env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .current_dir(repo_root());
        cmd
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("kubectl runs")
    }

    /// Runs kubectl and returns stdout, failing the test with stderr if it fails.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply_stdin(&self, manifest: &str, extra: &[&str]) -> Output {
        let mut child = self
            .command()
            .args(["apply", "-f", "-"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), manifest.as_bytes())
            .expect("write manifest");
        child.wait_with_output().expect("kubectl finishes")
    }

    fn with_examples(self) -> Self {
        self.apply_stdin("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n", &[]);
        self.ok(&["apply", "-f", "examples/"]);
        self
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).expect("dir").map(|e| e.expect("entry").path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    files
}

#[test]
fn starts_and_takes_the_crds() {
    let cluster = Cluster::start();
    // Reported, not asserted: a benchmark figure, not a test condition.
    eprintln!("test-apiserver start + kubectl apply of the CRDs: {:?}", cluster.startup);
    let crds = cluster.ok(&["get", "crds", "-o", "name"]);
    assert!(crds.contains("profilecaptures.biometrics.io") && crds.contains("cachepolicies.biometrics.io"), "{crds}");
    let resources = cluster.ok(&["api-resources", "--api-group=biometrics.io"]);
    assert!(resources.contains("pcap") && resources.contains("cpol"), "{resources}");
}

#[test]
fn examples_apply_and_print_their_columns() {
    let cluster = Cluster::start().with_examples();
    let captures = cluster.ok(&["get", "pcap", "-n", "shop"]);
    let header = captures.lines().next().unwrap_or_default();
    for column in ["NAME", "PHASE", "PODS", "LAST RUN", "NEXT RUN", "THRESHOLD", "AGE"] {
        assert!(header.contains(column), "missing column {column}: {captures}");
    }
    assert!(captures.contains("api-hourly") && captures.contains("checkout-now"), "{captures}");
    // The next run is a time still to come: shown as the time, not as an age.
    let next = r#"{"status":{"nextRunTime":"2099-01-01T00:00:00Z"}}"#;
    cluster.ok(&["patch", "pcap", "api-hourly", "-n", "shop", "--subresource=status", "--type=merge", "-p", next]);
    let hourly = cluster.ok(&["get", "pcap", "api-hourly", "-n", "shop"]);
    assert!(hourly.contains("2099-01-01T00:00:00Z") && !hourly.contains("<invalid>"), "{hourly}");
    let policies = cluster.ok(&["get", "cpol", "-n", "shop"]);
    for column in ["STRATEGY", "EXECUTOR", "HIT RATIO", "LAST INVALIDATION", "THRESHOLD"] {
        assert!(policies.lines().next().unwrap_or_default().contains(column), "missing column {column}: {policies}");
    }
    assert!(policies.lines().any(|l| l.starts_with("users") && l.contains("LRU")), "{policies}");
    assert!(policies.lines().any(|l| l.starts_with("orders") && l.contains("WriteBehind")), "{policies}");
    let category = cluster.ok(&["get", "biometrics", "-n", "shop", "-o", "name"]);
    let examples: usize = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples"))
        .unwrap()
        .filter_map(|f| std::fs::read_to_string(f.ok()?.path()).ok())
        .map(|text| text.lines().filter(|l| matches!(*l, "kind: ProfileCapture" | "kind: CachePolicy")).count())
        .sum();
    assert_eq!(category.lines().count(), examples, "the biometrics category lists both kinds: {category}");
    assert!(category.contains("profilecapture.") && category.contains("cachepolicy."), "{category}");
    // Applying the same files again changes nothing. (A Secret written with stringData is
    // reported "configured" each time, as by kube-apiserver: stringData is never stored, so
    // kubectl's diff always sends it again.)
    let secret_rv =
        cluster.ok(&["get", "secret", "users-redis", "-n", "shop", "-o", "jsonpath={.metadata.resourceVersion}"]);
    let again = cluster.ok(&["apply", "-f", "examples/"]);
    assert!(again.lines().filter(|l| !l.starts_with("secret/")).all(|l| l.ends_with("unchanged")), "{again}");
    let secret_rv_after =
        cluster.ok(&["get", "secret", "users-redis", "-n", "shop", "-o", "jsonpath={.metadata.resourceVersion}"]);
    assert_eq!(secret_rv, secret_rv_after, "the re-sent stringData changes nothing");
    // Defaults were applied by the server.
    let duration = cluster.ok(&["get", "pcap", "api-hourly", "-n", "shop", "-o", "jsonpath={.spec.concurrencyPolicy}"]);
    assert_eq!(duration, "Forbid");
}

#[test]
fn every_invalid_fixture_is_refused_with_its_reason() {
    let cluster = Cluster::start();
    cluster.apply_stdin("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n", &[]);
    for path in yaml_files(&repo_root().join("tests/fixtures/invalid")) {
        let text = std::fs::read_to_string(&path).expect("fixture");
        let expect = text.lines().find_map(|l| l.strip_prefix("# expect: ")).expect("fixture states its reason");
        let out = cluster.kubectl(&["apply", "-f", &path.to_string_lossy()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} was accepted", path.display());
        assert!(stderr.contains(expect), "{} refused, but not with {expect:?}: {stderr}", path.display());
    }
    let left = cluster.ok(&["get", "pcap,cpol", "-n", "shop", "-o", "name"]);
    assert!(left.trim().is_empty(), "nothing invalid was stored: {left}");
}

#[test]
fn status_patch_is_seen_by_get_watch() {
    let cluster = Cluster::start().with_examples();
    let mut watch = cluster
        .command()
        .args(["get", "pcap", "checkout-now", "-n", "shop", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watch.stdout.take().expect("stdout");
    let _watch = Running(watch);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first line is the object as it is; then the patch arrives through the watch.
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("initial line");
    assert!(first.contains("NAME") || first.contains("checkout-now"), "{first}");
    cluster.ok(&[
        "patch",
        "pcap",
        "checkout-now",
        "-n",
        "shop",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","selectedPods":3}}"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains("Running") {
                assert!(line.contains('3'), "the Pods column shows the patched count: {line}");
                let generation =
                    cluster.ok(&["get", "pcap", "checkout-now", "-n", "shop", "-o", "jsonpath={.metadata.generation}"]);
                assert_eq!(generation, "1", "a status patch does not bump the generation");
                return;
            }
            seen.push(line);
        }
    }
    panic!("kubectl get -w never showed the status change; saw {seen:?}");
}

#[test]
fn explain_reads_the_schema() {
    let cluster = Cluster::start();
    let duration = cluster.ok(&["explain", "profilecapture.spec.duration"]);
    assert!(duration.contains("Between 1s and 5m"), "{duration}");
    let rules = cluster.ok(&["explain", "cpol.spec.invalidations"]);
    assert!(rules.contains("Invalidation rules"), "{rules}");
    assert!(rules.contains("onRolloutOf"), "fields of the rule are listed: {rules}");
}

#[test]
fn delete_waits_for_the_last_finalizer() {
    let cluster = Cluster::start().with_examples();
    cluster.ok(&[
        "patch",
        "pcap",
        "api-hourly",
        "-n",
        "shop",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["biometrics.io/cleanup"]}}"#,
    ]);
    let mut delete = Running(
        cluster
            .command()
            .args(["delete", "pcap", "api-hourly", "-n", "shop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl delete"),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(delete.0.try_wait().expect("poll").is_none(), "kubectl delete returned while a finalizer was still there");
    let terminating =
        cluster.ok(&["get", "pcap", "api-hourly", "-n", "shop", "-o", "jsonpath={.metadata.deletionTimestamp}"]);
    assert!(!terminating.is_empty(), "the object is terminating");
    cluster.ok(&[
        "patch",
        "pcap",
        "api-hourly",
        "-n",
        "shop",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = delete.0.try_wait().expect("poll") {
            assert!(status.success(), "kubectl delete failed");
            let gone = cluster.kubectl(&["get", "pcap", "api-hourly", "-n", "shop"]);
            assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("kubectl delete did not finish after the finalizer was removed");
}

#[test]
fn server_side_apply_conflicts_between_managers() {
    let cluster = Cluster::start();
    let manifest = |max_pods: u32| {
        format!(
            "apiVersion: biometrics.io/v1alpha1\nkind: ProfileCapture\nmetadata:\n  name: ssa\n  namespace: default\nspec:\n  selector: {{matchLabels: {{app: api}}}}\n  target: {{port: 6060}}\n  maxPods: {max_pods}\n"
        )
    };
    let out = cluster.apply_stdin(&manifest(2), &["--server-side", "--field-manager=alice"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cluster.apply_stdin(&manifest(4), &["--server-side", "--field-manager=bob"]);
    assert!(!out.status.success(), "bob's apply over alice's field must conflict");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("conflict") && stderr.contains("alice") && stderr.contains(".spec.maxPods"), "{stderr}");
    let out = cluster.apply_stdin(&manifest(4), &["--server-side", "--field-manager=bob", "--force-conflicts"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(cluster.ok(&["get", "pcap", "ssa", "-o", "jsonpath={.spec.maxPods}"]), "4");
}

#[test]
fn strategic_merge_patch_merges_containers_by_name() {
    let cluster = Cluster::start().with_examples();
    cluster.ok(&[
        "patch",
        "deployment",
        "users",
        "-n",
        "shop",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"registry.example.com/users:1.5.0"}]}}}}"#,
    ]);
    let images = cluster.ok(&[
        "get",
        "deployment",
        "users",
        "-n",
        "shop",
        "-o",
        "jsonpath={range .spec.template.spec.containers[*]}{.name}={.image} {end}",
    ]);
    assert_eq!(
        images.trim(),
        "app=registry.example.com/users:1.5.0 biometrics-agent=ghcr.io/biometrics-io/biometrics-agent:0.1.0"
    );
    let generation = cluster.ok(&["get", "deployment", "users", "-n", "shop", "-o", "jsonpath={.metadata.generation}"]);
    assert_eq!(generation, "2", "a template change is a new generation");
    // Custom resources do not take strategic merge patches, as in Kubernetes.
    let out = cluster.kubectl(&["patch", "pcap", "api-hourly", "-n", "shop", "-p", r#"{"spec":{"suspend":true}}"#]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("application/strategic-merge-patch+json is not supported"), "{stderr}");
}

#[test]
fn describe_shows_events_about_the_object() {
    let cluster = Cluster::start().with_examples();
    let uid = cluster.ok(&["get", "pcap", "checkout-now", "-n", "shop", "-o", "jsonpath={.metadata.uid}"]);
    let event = format!(
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: checkout-now.run1\n  namespace: shop\nregarding:\n  apiVersion: biometrics.io/v1alpha1\n  kind: ProfileCapture\n  name: checkout-now\n  namespace: shop\n  uid: {uid}\nreason: RunFinished\nnote: captured 3 profiles from 2 pods\ntype: Normal\naction: Capture\nreportingController: biometrics-operator\nreportingInstance: op-0\neventTime: \"2026-01-01T10:00:00.000000Z\"\n"
    );
    let out = cluster.apply_stdin(&event, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let described = cluster.ok(&["describe", "pcap", "checkout-now", "-n", "shop"]);
    let events = described.split("Events:").nth(1).unwrap_or_default();
    assert!(events.contains("RunFinished") && events.contains("captured 3 profiles from 2 pods"), "{described}");
}

/// `kubectl api-resources` of a kube-apiserver 1.36 with its default groups, less TokenReview,
/// SelfSubjectRulesReview and Bindings (not answered yet): NAME, SHORTNAMES, APIVERSION,
/// NAMESPACED, KIND. The reviews listed are create-only.
const KUBE_APISERVER_RESOURCES: &str = "
componentstatuses cs v1 false ComponentStatus
configmaps cm v1 true ConfigMap
endpoints ep v1 true Endpoints
events ev v1 true Event
limitranges limits v1 true LimitRange
namespaces ns v1 false Namespace
nodes no v1 false Node
persistentvolumeclaims pvc v1 true PersistentVolumeClaim
persistentvolumes pv v1 false PersistentVolume
pods po v1 true Pod
podtemplates - v1 true PodTemplate
replicationcontrollers rc v1 true ReplicationController
resourcequotas quota v1 true ResourceQuota
secrets - v1 true Secret
serviceaccounts sa v1 true ServiceAccount
services svc v1 true Service
mutatingadmissionpolicies - admissionregistration.k8s.io/v1 false MutatingAdmissionPolicy
mutatingadmissionpolicybindings - admissionregistration.k8s.io/v1 false MutatingAdmissionPolicyBinding
mutatingwebhookconfigurations - admissionregistration.k8s.io/v1 false MutatingWebhookConfiguration
validatingadmissionpolicies - admissionregistration.k8s.io/v1 false ValidatingAdmissionPolicy
validatingadmissionpolicybindings - admissionregistration.k8s.io/v1 false ValidatingAdmissionPolicyBinding
validatingwebhookconfigurations - admissionregistration.k8s.io/v1 false ValidatingWebhookConfiguration
customresourcedefinitions crd,crds apiextensions.k8s.io/v1 false CustomResourceDefinition
apiservices - apiregistration.k8s.io/v1 false APIService
selfsubjectreviews - authentication.k8s.io/v1 false SelfSubjectReview
tokenreviews - authentication.k8s.io/v1 false TokenReview
localsubjectaccessreviews - authorization.k8s.io/v1 true LocalSubjectAccessReview
selfsubjectaccessreviews - authorization.k8s.io/v1 false SelfSubjectAccessReview
subjectaccessreviews - authorization.k8s.io/v1 false SubjectAccessReview
controllerrevisions - apps/v1 true ControllerRevision
daemonsets ds apps/v1 true DaemonSet
deployments deploy apps/v1 true Deployment
replicasets rs apps/v1 true ReplicaSet
statefulsets sts apps/v1 true StatefulSet
horizontalpodautoscalers hpa autoscaling/v2 true HorizontalPodAutoscaler
cronjobs cj batch/v1 true CronJob
jobs - batch/v1 true Job
certificatesigningrequests csr certificates.k8s.io/v1 false CertificateSigningRequest
leases - coordination.k8s.io/v1 true Lease
endpointslices - discovery.k8s.io/v1 true EndpointSlice
events ev events.k8s.io/v1 true Event
flowschemas - flowcontrol.apiserver.k8s.io/v1 false FlowSchema
prioritylevelconfigurations - flowcontrol.apiserver.k8s.io/v1 false PriorityLevelConfiguration
ingressclasses - networking.k8s.io/v1 false IngressClass
ingresses ing networking.k8s.io/v1 true Ingress
ipaddresses ip networking.k8s.io/v1 false IPAddress
networkpolicies netpol networking.k8s.io/v1 true NetworkPolicy
servicecidrs - networking.k8s.io/v1 false ServiceCIDR
runtimeclasses - node.k8s.io/v1 false RuntimeClass
poddisruptionbudgets pdb policy/v1 true PodDisruptionBudget
clusterrolebindings - rbac.authorization.k8s.io/v1 false ClusterRoleBinding
clusterroles - rbac.authorization.k8s.io/v1 false ClusterRole
rolebindings - rbac.authorization.k8s.io/v1 true RoleBinding
roles - rbac.authorization.k8s.io/v1 true Role
deviceclasses - resource.k8s.io/v1 false DeviceClass
resourceclaims - resource.k8s.io/v1 true ResourceClaim
resourceclaimtemplates - resource.k8s.io/v1 true ResourceClaimTemplate
resourceslices - resource.k8s.io/v1 false ResourceSlice
priorityclasses pc scheduling.k8s.io/v1 false PriorityClass
csidrivers - storage.k8s.io/v1 false CSIDriver
csinodes - storage.k8s.io/v1 false CSINode
csistoragecapacities - storage.k8s.io/v1 true CSIStorageCapacity
storageclasses sc storage.k8s.io/v1 false StorageClass
volumeattachments - storage.k8s.io/v1 false VolumeAttachment
volumeattributesclasses vac storage.k8s.io/v1 false VolumeAttributesClass
";

#[test]
fn every_built_in_resource_is_served_as_kube_apiserver_serves_it() {
    let cluster = Cluster::start();
    let listed = cluster.ok(&["api-resources", "--no-headers"]);
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split_whitespace().collect()).collect();
    for expected in KUBE_APISERVER_RESOURCES.lines().filter(|l| !l.trim().is_empty()) {
        let want: Vec<&str> = expected.split_whitespace().collect();
        let (name, short, api_version) = (want[0], want[1], want[2]);
        let row = rows
            .iter()
            .find(|r| r[0] == name && r.contains(&api_version))
            .unwrap_or_else(|| panic!("{name} ({api_version}) is not listed by api-resources:\n{listed}"));
        let got: Vec<&str> =
            if short == "-" { row.clone() } else { row.iter().copied().filter(|c| *c != short).collect() };
        assert_eq!(got.len(), 4, "{name}: columns {row:?}, want {want:?}");
        assert_eq!(got[1..], want[2..], "{name}: {row:?}");
        // Each one can be read the way a user reads it, but for the reviews, which are only
        // created.
        if name.ends_with("reviews") {
            continue;
        }
        let resource = format!("{name}.{}", api_version.rsplit_once('/').map_or("", |(g, _)| g));
        let out = cluster.kubectl(&["get", resource.trim_end_matches('.'), "-A"]);
        assert!(out.status.success(), "kubectl get {resource}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let served = rows.iter().filter(|r| !r.contains(&"biometrics.io/v1alpha1")).count();
    assert_eq!(served, KUBE_APISERVER_RESOURCES.lines().filter(|l| !l.trim().is_empty()).count(), "{listed}");
}

#[test]
fn built_in_kinds_are_stored_explained_and_refused_where_kube_apiserver_refuses() {
    let cluster = Cluster::start();
    let manifest = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: api, namespace: shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: shop}
rules: [{apiGroups: [''], resources: [pods], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: api-reads, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: ServiceAccount, name: api, namespace: shop}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: api, namespace: shop}
spec: {minAvailable: 1, selector: {matchLabels: {app: api}}}
";
    let out = cluster.apply_stdin(manifest, &[]);
    assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    let bound = cluster.ok(&["get", "rolebinding", "api-reads", "-n", "shop", "-o", "jsonpath={.roleRef.name}"]);
    assert_eq!(bound, "reader");
    assert_eq!(cluster.ok(&["get", "sa", "-n", "shop", "-o", "name"]).trim(), "serviceaccount/api");
    let generation = cluster.ok(&["get", "pdb", "api", "-n", "shop", "-o", "jsonpath={.metadata.generation}"]);
    assert_eq!(generation, "1", "a PodDisruptionBudget tracks its generation");

    let replicas = cluster.ok(&["explain", "deployment.spec.replicas"]);
    assert!(replicas.contains("desired pods"), "the schema of the built-in explains it: {replicas}");
    let rules = cluster.ok(&["explain", "role.rules"]);
    assert!(rules.contains("verbs"), "{rules}");

    let out = cluster.apply_stdin("apiVersion: v1\nkind: ComponentStatus\nmetadata: {name: etcd-0}\n", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("does not allow this method"), "{stderr}");
}

#[test]
fn scale_reads_and_writes_a_workloads_replicas() {
    let cluster = Cluster::start();
    let deployment = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:1}]}
";
    let out = cluster.apply_stdin(deployment, &[]);
    assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    let scaled = cluster.ok(&["scale", "deployment/web", "-n", "shop", "--replicas=3"]);
    assert_eq!(scaled.trim(), "deployment.apps/web scaled");
    let spec =
        cluster.ok(&["get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.spec.replicas} {.metadata.generation}"]);
    assert_eq!(spec, "3 2", "replicas set and the spec change counted in generation");
    let scale = cluster.ok(&["get", "--raw", "/apis/apps/v1/namespaces/shop/deployments/web/scale"]);
    let scale: serde_json::Value = serde_json::from_str(&scale).expect("Scale JSON");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");

    // A precondition that no longer holds changes nothing.
    let out = cluster.kubectl(&["scale", "deployment/web", "-n", "shop", "--replicas=5", "--current-replicas=2"]);
    assert!(!out.status.success(), "a stale --current-replicas is refused");
    let stale = r#"{"kind":"Scale","apiVersion":"autoscaling/v1","metadata":{"name":"web","namespace":"shop","resourceVersion":"1"},"spec":{"replicas":5}}"#;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("scale.json");
    std::fs::write(&file, stale).expect("write Scale");
    let path = "/apis/apps/v1/namespaces/shop/deployments/web/scale";
    let out = cluster.kubectl(&["replace", "--raw", path, "-f", &file.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("the object has been modified"), "{stderr}");
    let out = cluster.kubectl(&["scale", "deployment/web", "-n", "shop", "--replicas=-1"]);
    assert!(!out.status.success(), "negative replicas are refused");
    assert_eq!(cluster.ok(&["get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.spec.replicas}"]), "3");
}

#[test]
fn kubectl_port_forward_reaches_a_pods_port() {
    let cluster = Cluster::start();
    // The pod's port: a tiny HTTP server on the pod's address (loopback here).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let pod_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 1024];
            let _ = std::io::Read::read(&mut stream, &mut request);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nfrom pod\n",
            );
        }
    });
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: default}}\nspec: {{containers: [{{name: web, image: web, ports: [{{containerPort: {pod_port}}}]}}]}}\n"
    );
    let out = cluster.apply_stdin(&pod, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    cluster.ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","podIP":"127.0.0.1"}}"#,
    ]);

    let mut forward = cluster
        .command()
        .args(["port-forward", "pod/web", &format!(":{pod_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward runs");
    // Kept open: kubectl writes a line per connection and would die of a closed pipe.
    let mut output = BufReader::new(forward.stdout.take().expect("stdout"));
    let local = common::forwarded_port(&mut output);
    let forward = Running(forward);
    for _ in 0..2 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", local)).expect("the local port");
        std::io::Write::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").unwrap();
        let mut response = String::new();
        let read = std::io::Read::read_to_string(&mut stream, &mut response);
        assert!(read.is_ok(), "{read:?} after {response:?}");
        assert!(response.ends_with("from pod\n"), "through kubectl port-forward: {response:?}");
    }
    drop(forward);
    drop(output);
}
