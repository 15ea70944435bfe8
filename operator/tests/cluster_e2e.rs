//! The product on the local cluster, as a cluster runs it: the Deployment and ReplicaSet
//! controllers and the process kubelet run the app (the Go pprof target), its agent and
//! Redis as pods; the operator reaches the agents on their pod IPs and gives them its key
//! through the trust ConfigMap their pods mount. A rolling update, a deleted pod and a
//! scale-out are the workload controllers', not the test's.
//! Needs root, as the kubelet does.

mod common;

use std::{collections::BTreeSet, time::Duration};

use biometrics_crds::v1alpha1::{CachePolicy, InvalidationResult, InvalidationTrigger, ProfileCapture, RunResult};
use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};

fn images() -> String {
    format!(
        "images:\n  example/app: {{command: [{}], args: [-addr, '0.0.0.0:6060']}}\n  example/agent: {{command: [{}]}}\n  redis: {{command: [{}]}}\n",
        biometrics_test_support::go_target_binary().display(),
        biometrics_test_support::workspace_binary("biometrics-agent").display(),
        which("redis-server"),
    )
}

fn which(program: &str) -> String {
    let out = std::process::Command::new("sh").args(["-c", &format!("command -v {program}")]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Redis, with its password.
fn redis_manifests() -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: redis, namespace: {NS}}}
stringData: {{password: s3cret}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: redis, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: redis}}}}
  template:
    metadata: {{labels: {{app: redis}}}}
    spec:
      containers:
      - name: redis
        image: redis:7.4
        args: [--requirepass, $(PASSWORD), --save, "", --appendonly, "no"]
        env: [{{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: redis, key: password}}}}}}]
        readinessProbe: {{tcpSocket: {{port: 6379}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: redis, namespace: {NS}}}
spec: {{selector: {{app: redis}}, ports: [{{port: 6379}}]}}
"#
    )
}

/// The `web` app with its agent (3 replicas, one surge, none unavailable) and its cache's
/// policy.
fn web_manifests() -> String {
    let template = profiled_template(
        "web",
        5,
        "        resources: {limits: {memory: 256Mi}}\n",
        &[
            "{name: BIOMETRICS_MEMORY_LIMIT, valueFrom: {resourceFieldRef: {containerName: app, resource: limits.memory}}}",
        ],
    );
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
{template}---
apiVersion: biometrics.io/v1alpha1
kind: CachePolicy
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  redis:
    address: redis.{NS}.svc:6379
    passwordSecretRef: {{name: redis, key: password}}
  keyPrefix: "web:"
  strategy: {{type: TTL, ttl: 1h}}
  invalidations:
  - name: pages-after-rollout
    prefix: "page:"
    onRolloutOf: {{kind: Deployment, name: web}}
"#
    )
}

/// A heap profile of every web pod, once (and again on the annotation).
fn capture() -> String {
    format!(
        "apiVersion: biometrics.io/v1alpha1\nkind: ProfileCapture\nmetadata: {{name: web, namespace: {NS}}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  target: {{port: 6060}}\n  profiles: [heap]\n  duration: 1s\n"
    )
}

/// The web pods: name → (ready, terminating, pod IP).
async fn web_pods(world: &World) -> Vec<(String, bool, bool, String)> {
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), NS);
    let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
    list.items
        .into_iter()
        .map(|p| {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
            (p.metadata.name.unwrap_or_default(), ready, p.metadata.deletion_timestamp.is_some(), ip)
        })
        .collect()
}

fn redis_cli(ip: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", ip, "-a", "s3cret", "--no-auth-warning"])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn seed_pages(redis_ip: &str, n: usize) {
    for i in 0..n {
        redis_cli(redis_ip, &["SET", &format!("web:page:{i}"), "cached"]);
    }
}

async fn policy(world: &World) -> CachePolicy {
    Api::<CachePolicy>::namespaced(world.client.clone(), NS).get("web").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_keeps_every_replica_ready_and_runs_the_rollout_rule_once_after_it() {
    let mut world = World::start_on_cluster(&images()).await;
    world.start_operator();
    // Redis first: until its pod is ready its Service resolves to nothing, and a rule run
    // then fails on the address, as it would in a cluster.
    world.kubectl(&["apply", "-f", "-"], Some(&redis_manifests()));
    world.kubectl(&["rollout", "status", "deployment/redis", "-n", NS, "--timeout=90s"], None);
    world.kubectl(&["apply", "-f", "-"], Some(&web_manifests()));
    world.kubectl(&["rollout", "status", "deployment/web", "-n", NS, "--timeout=90s"], None);
    let redis_ip =
        world.kubectl(&["get", "pod", "-n", NS, "-l", "app=redis", "-o", "jsonpath={.items[0].status.podIP}"], None);

    // The policy takes effect through an agent that got the operator's key from the trust
    // ConfigMap on its pod's volume; the rule runs once when created.
    let first = world
        .wait("the rule's first run", Duration::from_secs(60), async || {
            let cp = policy(&world).await;
            let entry = cp.status?.invalidations.into_iter().find(|e| e.name == "pages-after-rollout")?;
            (entry.result == Some(InvalidationResult::Succeeded)).then_some(entry)
        })
        .await;
    assert_eq!(first.trigger, Some(InvalidationTrigger::Change), "{first:?}");
    assert_eq!(first.failures, None, "no failed attempt while the key was on its way: {first:?}");

    // A capture created now reaches every pod the ReplicaSet made.
    let old: BTreeSet<String> = web_pods(&world).await.into_iter().map(|p| p.0).collect();
    assert_eq!(old.len(), 3);
    world.kubectl(&["apply", "-f", "-"], Some(&capture()));
    let captured = world
        .wait_capture("web", Duration::from_secs(60), |pc: &ProfileCapture| {
            pc.status.as_ref().and_then(|s| s.last_run.as_ref()).is_some_and(|r| r.completion_time.is_some())
        })
        .await;
    let run = captured.status.unwrap().last_run.unwrap();
    let run_pods: BTreeSet<String> = run.pods.iter().map(|p| p.pod.clone()).collect();
    assert_eq!(run_pods, old, "{run:?}");

    seed_pages(&redis_ip, 20);
    world.kubectl(&["set", "env", "deployment/web", "-n", NS, "COLOUR=blue"], None);
    // Watch the rollout: never fewer than 3 ready replicas, and no Rollout run before the
    // Deployment reports it complete.
    let mut fewest_ready = usize::MAX;
    let mut deployments = 0;
    loop {
        let pods = web_pods(&world).await;
        fewest_ready = fewest_ready.min(pods.iter().filter(|p| p.1 && !p.2).count());
        let done = world.kubectl(&["rollout", "status", "deployment/web", "-n", NS, "--watch=false"], None);
        let cp = policy(&world).await;
        let rule = cp.status.unwrap_or_default().invalidations.into_iter().find(|e| e.name == "pages-after-rollout");
        if done.contains("successfully rolled out") {
            break;
        }
        assert_ne!(
            rule.and_then(|r| r.trigger),
            Some(InvalidationTrigger::Rollout),
            "the rule ran before the rollout completed: {done}"
        );
        deployments += 1;
        assert!(deployments < 600, "the rollout did not complete: {done}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fewest_ready >= 3, "only {fewest_ready} replicas were ready at one point of the rollout");
    let new: BTreeSet<String> = web_pods(&world).await.into_iter().filter(|p| !p.2).map(|p| p.0).collect();
    assert!(new.is_disjoint(&old), "every pod was replaced: {old:?} → {new:?}");

    let rollout = world
        .wait("the rollout's run", Duration::from_secs(60), async || {
            let cp = policy(&world).await;
            let entry = cp.status?.invalidations.into_iter().find(|e| e.name == "pages-after-rollout")?;
            (entry.trigger == Some(InvalidationTrigger::Rollout) && entry.result == Some(InvalidationResult::Succeeded))
                .then_some(entry)
        })
        .await;
    assert_eq!(rollout.keys_deleted, Some(20), "{rollout:?}");
    assert_eq!(redis_cli(&redis_ip, &["--scan", "--pattern", "web:page:*"]).trim(), "");
    // Exactly once: a later reconcile does not run it again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later =
        policy(&world).await.status.unwrap().invalidations.into_iter().find(|e| e.name == "pages-after-rollout");
    assert_eq!(later.and_then(|e| e.run_id), rollout.run_id);
    let events = world.kubectl(
        &[
            "get",
            "events",
            "-n",
            NS,
            "--field-selector",
            "involvedObject.name=web",
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ],
        None,
    );
    assert_eq!(events.lines().filter(|l| l.contains("pages-after-rollout (Rollout)")).count(), 1, "{events}");

    // A deleted pod is replaced by its ReplicaSet, and the next run reaches the new one.
    let victim = new.iter().next().unwrap().clone();
    world.kubectl(&["delete", "pod", &victim, "-n", NS], None);
    world.kubectl(&["rollout", "status", "deployment/web", "-n", NS, "--timeout=60s"], None);
    let now = world
        .wait("three ready replicas again", Duration::from_secs(60), async || {
            let pods = web_pods(&world).await;
            let ready: BTreeSet<String> = pods.iter().filter(|p| p.1 && !p.2).map(|p| p.0.clone()).collect();
            (ready.len() == 3 && !ready.contains(&victim)).then_some(ready)
        })
        .await;
    world
        .kubectl(&["annotate", "pcap", "web", "-n", NS, "biometrics.io/capture-now=after-delete", "--overwrite"], None);
    let captured = world
        .wait_capture("web", Duration::from_secs(60), |pc: &ProfileCapture| {
            pc.status
                .as_ref()
                .and_then(|s| s.last_run.as_ref())
                .is_some_and(|r| r.id.starts_with('m') && r.completion_time.is_some())
        })
        .await;
    let run = captured.status.unwrap().last_run.unwrap();
    let run_pods: BTreeSet<String> = run.pods.iter().map(|p| p.pod.clone()).collect();
    assert_eq!(run_pods, now, "the run covers the pods that exist now: {run:?}");
    assert!(run.pods.iter().all(|p| !p.profiles.is_empty()), "{run:?}");
}

/// A Job whose pod's agent is a native sidecar: an init container with `restartPolicy:
/// Always`, as Kubernetes runs sidecars since 1.29. The operator profiles the pod through
/// that agent, and when the app's work ends (the test tells the Go target to exit) the
/// kubelet stops the agent too, so the pod succeeds and the Job completes, instead of
/// running for ever beside its idle agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_as_a_native_sidecar_profiles_a_job_that_then_completes() {
    let mut world = World::start_on_cluster(&images()).await;
    world.start_operator();
    let job = format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: batch, namespace: {NS}}}
spec:
  backoffLimit: 0
  template:
    metadata:
      labels: {{app: batch, biometrics.io/agent: "true"}}
      annotations: {{biometrics.io/agent-port: "9477"}}
    spec:
      restartPolicy: Never
      initContainers:
{agent}      containers:
      - name: app
        image: example/app:1.0
        readinessProbe: {{httpGet: {{path: /debug/pprof/, port: 6060}}, periodSeconds: 1}}
{AGENT_VOLUMES}---
apiVersion: biometrics.io/v1alpha1
kind: ProfileCapture
metadata: {{name: batch, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: batch}}}}
  target: {{port: 6060}}
  profiles: [heap]
  duration: 1s
"#,
        agent = agent_container(&[], true)
    );
    // The one-shot capture waits for the Job's pod to become eligible.
    world.kubectl(&["apply", "-f", "-"], Some(&job));
    let captured = world
        .wait_capture("batch", Duration::from_secs(60), |pc: &ProfileCapture| {
            pc.status.as_ref().and_then(|s| s.last_run.as_ref()).is_some_and(|r| r.completion_time.is_some())
        })
        .await;
    let run = captured.status.unwrap().last_run.unwrap();
    assert_eq!((run.pods.len(), run.pods[0].result), (1, RunResult::Succeeded), "{run:?}");
    assert!(run.pods[0].pod.starts_with("batch-"), "the Job's pod: {run:?}");
    let heap = &run.pods[0].profiles[0];
    assert!(heap.path.is_some() && heap.samples.is_some(), "the sidecar agent wrote the profile: {run:?}");

    // The work is done: the app exits 0, and the kubelet stops the agent after it.
    let ip = world
        .kubectl(&["get", "pod", "-n", NS, "-l", "job-name=batch", "-o", "jsonpath={.items[0].status.podIP}"], None);
    biometrics_test_support::http_get(format!("{ip}:6060").parse().unwrap(), "/control?exit=1");
    world.kubectl(&["wait", "job/batch", "-n", NS, "--for=condition=complete", "--timeout=60s"], None);
    let listed = world.kubectl(&["get", "job", "batch", "-n", NS, "--no-headers"], None);
    let columns: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(columns[1..3], ["Complete", "1/1"], "{listed}");
    let agent = world.kubectl(
        &[
            "get",
            "pod",
            "-n",
            NS,
            "-l",
            "job-name=batch",
            "-o",
            "jsonpath={.items[0].status.initContainerStatuses[0].state.terminated.reason}",
        ],
        None,
    );
    assert!(!agent.is_empty(), "the agent stopped with its app");
}
