//! The product installed as a cluster installs it: `helm install` puts charts/biometrics
//! into the local cluster (HTTPS, RBAC enforced, the process kubelet running pods), so the
//! operator runs as the chart's Deployment — two replicas, one leading — with no kubeconfig,
//! only its ServiceAccount's projected token and the in-cluster configuration, under the
//! chart's Roles. The app comes from the example app chart, its agent sidecar rendered from
//! the chart's `biometrics.agentSidecar` template. A capture runs to the end, nothing the
//! operator asks is denied, and `helm uninstall` leaves only what is kept by design.
//! Needs root, as the kubelet does.

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use biometrics_crds::v1alpha1::{CapturePhase, ProfileCapture};
use common::*;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube::{Api, api::ListParams};

/// The release: its ServiceAccount and Deployment are `biometrics`.
const RELEASE: &str = "biometrics";

/// The chart's images and the app's, mapped to what this workspace built.
fn images() -> String {
    format!(
        "images:\n  ghcr.io/biometrics-io/biometrics-operator: {{command: [{}]}}\n  ghcr.io/biometrics-io/biometrics-agent: {{command: [{}]}}\n  example/app: {{command: [{}], args: [-addr, '0.0.0.0:6060']}}\n",
        env!("CARGO_BIN_EXE_biometrics-operator"),
        biometrics_test_support::workspace_binary("biometrics-agent").display(),
        biometrics_test_support::go_target_binary().display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_the_operator_as_its_deployment_under_its_own_rbac() {
    let world = World::start_on_secure_cluster(&images()).await;
    // What a new namespace gets (its default ServiceAccount and root CA) is there first.
    let before = world
        .wait("namespace shop's defaults", Duration::from_secs(10), async || {
            let all = everything(world.server.store());
            let made = [format!("serviceaccounts {NS}/default"), format!("configmaps {NS}/kube-root-ca.crt")];
            made.iter().all(|o| all.contains(o)).then_some(all)
        })
        .await;

    let out = world.helm(&[
        "install",
        RELEASE,
        "charts/biometrics",
        "-n",
        OPERATOR_NS,
        "--create-namespace",
        "--set-json",
        r#"config={"performance":{"metrics":{"interval":"1s"}}}"#,
    ]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    let app = world.app_chart();
    world.helm(&[
        "install",
        "users",
        app.to_str().unwrap(),
        "-n",
        NS,
        "--set",
        "image=example/app:1.0,replicas=1,biometrics.profiles.claimName=",
    ]);
    let rollout = |namespace: &str, name: &str| {
        world.kubectl(&["rollout", "status", &format!("deployment/{name}"), "-n", namespace, "--timeout=50s"], None)
    };
    // The app first: the capture needs its pods, while the operator's readiness probes run.
    rollout(NS, "users");

    // The app pod carries the sidecar exactly as the chart's template renders it.
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), NS);
    let app_pod = pods.list(&ListParams::default().labels("app=users")).await.unwrap().items.remove(0);
    let containers: Vec<String> = app_pod.spec.unwrap().containers.into_iter().map(|c| c.name).collect();
    assert_eq!(containers, ["app", "biometrics-agent"]);

    // Two replicas, both ready; one holds the Lease.
    rollout(OPERATOR_NS, RELEASE);
    let operator_pods: Api<Pod> = Api::namespaced(world.client.clone(), OPERATOR_NS);
    let names: Vec<String> = operator_pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let leases: Api<Lease> = Api::namespaced(world.client.clone(), OPERATOR_NS);
    let holder = world
        .wait("a leader", Duration::from_secs(30), async || {
            leases.get_opt("biometrics-operator").await.unwrap()?.spec?.holder_identity
        })
        .await;
    assert!(names.contains(&holder), "the Lease is held by {holder}, not one of {names:?}");
    // As the chart's security context says: user 65532, no privileges to gain (the root
    // filesystem is read-only too, and the operator writes nothing outside its volumes).
    for name in &names {
        let status = process_status(name, "biometrics-oper");
        assert!(status.contains("\nUid:\t65532\t65532\t65532\t65532\n"), "{name}:\n{status}");
        assert!(status.contains("\nGid:\t65532\t65532\t65532\t65532\n"), "{name}:\n{status}");
        assert!(status.contains("\nNoNewPrivs:\t1\n"), "{name}:\n{status}");
    }

    // A capture reaches the agent the template added, through the pod network.
    world.kubectl(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: biometrics.io/v1alpha1\nkind: ProfileCapture\nmetadata: {{name: once, namespace: {NS}}}\nspec:\n  selector: {{matchLabels: {{app: users}}}}\n  target: {{port: 6060}}\n  profiles: [heap]\n"
        )),
    );
    let captures: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    let phase = world
        .wait("the capture", Duration::from_secs(40), async || {
            let phase = captures.get("once").await.unwrap().status?.phase?;
            matches!(phase, CapturePhase::Succeeded | CapturePhase::Failed).then_some(phase)
        })
        .await;
    assert_eq!(phase, CapturePhase::Succeeded, "{:#?}", captures.get("once").await.unwrap().status);
    world.kubectl(&["delete", "pcap", "once", "-n", NS, "--timeout=30s"], None);

    // The operator authenticated as its ServiceAccount (it has no other credentials) and
    // RBAC allowed everything it asked.
    let account = format!("system:serviceaccount:{OPERATOR_NS}:{RELEASE}");
    let decisions: Vec<_> = world.server.authorizations().into_iter().filter(|d| d.user.name == account).collect();
    assert!(decisions.iter().any(|d| d.attributes.resource == "profilecaptures"), "the operator's requests");
    let denied: Vec<String> = decisions.iter().filter(|d| !d.allowed).map(|d| d.attributes.to_string()).collect();
    assert!(denied.is_empty(), "the chart's RBAC denied the operator:\n  {}", denied.join("\n  "));

    // What the operator wrote at run time is owned by the chart's roles: the Lease and the
    // signing key by the Role in its namespace, the agents' key by the ClusterRole.
    let owner = |pointer: &str, kind: &str, name: &str| {
        let object =
            world.kubectl(&["get", "-o", "json"].into_iter().chain(pointer.split(' ')).collect::<Vec<_>>(), None);
        let object: serde_json::Value = serde_json::from_str(&object).unwrap();
        let owners = object["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
        assert!(
            owners
                .iter()
                .any(|o| o["kind"] == kind && o["name"] == name && o["uid"].as_str().is_some_and(|u| !u.is_empty())),
            "{pointer} is not owned by {kind} {name}: {owners:?}"
        );
    };
    owner(&format!("lease biometrics-operator -n {OPERATOR_NS}"), "Role", RELEASE);
    owner(&format!("secret biometrics-operator-signing-key -n {OPERATOR_NS}"), "Role", RELEASE);
    owner(&format!("configmap biometrics-trust -n {NS}"), "ClusterRole", RELEASE);

    world.helm(&["uninstall", "users", "-n", NS]);
    world.helm(&["uninstall", RELEASE, "-n", OPERATOR_NS]);
    let by_design: BTreeSet<String> = [
        // Helm keeps the CRDs of a chart's crds/ directory, and the namespace it created.
        "customresourcedefinitions.apiextensions.k8s.io /cachepolicies.biometrics.io".to_owned(),
        "customresourcedefinitions.apiextensions.k8s.io /profilecaptures.biometrics.io".to_owned(),
        format!("namespaces /{OPERATOR_NS}"),
        // What lives in that namespace from its creation on.
        format!("configmaps {OPERATOR_NS}/kube-root-ca.crt"),
        format!("serviceaccounts {OPERATOR_NS}/default"),
    ]
    .into_iter()
    .collect();
    // The pods take their grace period to go; the garbage collector takes the rest with the
    // roles.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: BTreeSet<String> = everything(world.server.store()).difference(&before).cloned().collect();
        if left == by_design {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "helm uninstall left more than what is kept by design: {:?}",
            left.difference(&by_design).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/proc/<pid>/status` of the process named `comm` that the kubelet runs for pod `pod`
/// (its environment names the pod as `HOSTNAME`).
fn process_status(pod: &str, comm: &str) -> String {
    let hostname = format!("HOSTNAME={pod}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let dir = entry.path();
        let read = |file: &str| std::fs::read(dir.join(file)).unwrap_or_default();
        let environ = read("environ");
        if String::from_utf8_lossy(&read("comm")).trim_end() == comm
            && environ.split(|b| *b == 0).any(|var| var == hostname.as_bytes())
        {
            return String::from_utf8_lossy(&read("status")).into_owned();
        }
    }
    panic!("no process {comm} of pod {pod}")
}
