//! The real operator binary against the test API server, with "pods" whose IPs are
//! loopback addresses where a real agent listens beside a real Go program; captures applied
//! with kubectl.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
    time::Duration,
};

use biometrics_crds::v1alpha1::{CapturePhase, ProfileCapture, RunResult};
use biometrics_test_support::{
    ChildGuard, Fault, FaultProxy, GoTarget, go_pprof, parse_pprof_top, repo_root, wait_for_listener, workspace_binary,
};
use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

fn capture_manifest(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: biometrics.io/v1alpha1\nkind: ProfileCapture\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  selector:\n    matchLabels:\n      app: api\n  target:\n    port: 6060\n  profiles: [cpu, heap]\n  duration: 2s\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_capture_lands_files_and_top_functions_in_status() {
    let mut world = World::start(&["127.0.0.2", "127.0.0.3"]).await;
    world.start_operator();
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest("checkout-now", "")));
    let pc = world
        .wait_capture("checkout-now", Duration::from_secs(60), |pc| {
            pc.status.as_ref().and_then(|s| s.phase) == Some(CapturePhase::Succeeded)
        })
        .await;
    let status = pc.status.clone().unwrap();
    let run = status.last_run.clone().unwrap();
    assert_eq!(run.result, RunResult::Succeeded);
    assert_eq!(status.observed_generation, pc.metadata.generation);
    assert_eq!(status.selected_pods, Some(2));
    let mut pods: Vec<&str> = run.pods.iter().map(|p| p.pod.as_str()).collect();
    pods.sort_unstable();
    assert_eq!(pods, ["api-0", "api-1"]);
    for pod in &run.pods {
        assert_eq!(pod.profiles.len(), 2, "{pod:?}");
        for profile in &pod.profiles {
            let file = world.dir.path().join("profiles").join(profile.path.as_ref().unwrap());
            let bytes = std::fs::read(&file).unwrap();
            assert_eq!(profile.bytes, Some(bytes.len() as i64));
            use sha2::Digest;
            let digest: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(profile.sha256.as_deref(), Some(digest.as_str()));
            let unit = if profile.profile_type == biometrics_crds::profile::ProfileType::Cpu { "ns" } else { "B" };
            let (_, go_rows) = parse_pprof_top(&go_pprof(&["-top", &format!("-unit={unit}")], &file), unit);
            let ours: Vec<(&str, i64)> = profile.top.iter().map(|t| (t.function.as_str(), t.flat)).collect();
            let theirs: Vec<(&str, i64)> = go_rows.iter().take(10).map(|r| (r.function.as_str(), r.flat)).collect();
            assert_eq!(ours, theirs, "the top functions in status are the ones go tool pprof lists");
        }
    }
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Captured"));
    let printed = world.kubectl(&["get", "pcap", "-n", NS], None);
    assert!(
        printed.lines().any(|l| l.starts_with("checkout-now") && l.contains("Succeeded") && l.contains(" 2 ")),
        "{printed}"
    );
    let described = world.kubectl(&["describe", "pcap", "checkout-now", "-n", NS], None);
    assert!(described.contains("RunStarted") && described.contains("RunFinished"), "{described}");
    // The operator published its key for the agents of the namespace.
    let trust: Api<ConfigMap> = Api::namespaced(world.client.clone(), NS);
    let cm = trust.get("biometrics-trust").await.unwrap();
    assert_eq!(cm.data.unwrap()["operator.pub"], std::fs::read_to_string(&world.public_key).unwrap());
    // One run per generation: nothing more happens without a change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let api: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    assert_eq!(api.get("checkout-now").await.unwrap().status.unwrap().last_run.unwrap().id, run.id);
    assert!(pc.finalizers().iter().any(|f| f == "biometrics.io/profilecapture"));
    // The operator counts what it did.
    let metrics = biometrics_test_support::http_get(world.operator_metrics.unwrap(), "/metrics");
    assert!(metrics.contains(r#"biometrics_operator_captures_total{result="succeeded"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"biometrics_operator_reconciles_total{controller="profilecapture"}"#), "{metrics}");
    assert!(
        metrics.contains(r#"biometrics_operator_agent_call_duration_seconds_count{call="start_capture"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_agent_fails_its_pod_only_and_recovers() {
    let mut world = World::start(&["127.0.0.4", "127.0.0.5"]).await;
    // A dead agent is retried past the capture's expected end for this long.
    let config = world.dir.path().join("operator.yaml");
    std::fs::write(&config, "performance:\n  profiling:\n    unreachable_grace: 3s\n").unwrap();
    world.operator_args = vec!["--config".into(), config.display().to_string()];
    world.start_operator();
    // Kill one agent: that pod fails with the reason, the other succeeds.
    if let Some(mut agent) = world.pods[1].agent.take() {
        agent.kill();
    }
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest("flaky", "")));
    let pc = world
        .wait_capture("flaky", Duration::from_secs(60), |pc| {
            pc.status.as_ref().and_then(|s| s.last_run.as_ref()).is_some_and(|r| r.result != RunResult::Running)
        })
        .await;
    let status = pc.status.unwrap();
    let run = status.last_run.unwrap();
    assert_eq!(run.result, RunResult::PartiallySucceeded);
    let failed = run.pods.iter().find(|p| p.pod == "api-1").unwrap();
    assert_eq!(failed.result, RunResult::Failed);
    assert_eq!(failed.reason.as_deref(), Some("AgentUnreachable"), "{failed:?}");
    assert!(failed.error.as_deref().unwrap().contains("unreachable"), "{failed:?}");
    assert_eq!(run.pods.iter().find(|p| p.pod == "api-0").unwrap().result, RunResult::Succeeded);
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "PodsFailed"));
    let described = world.kubectl(&["describe", "pcap", "flaky", "-n", NS], None);
    assert!(described.contains("Warning") && described.contains("PodFailed"), "{described}");
    // The agent comes back; a new request (capture-now) succeeds everywhere.
    let (name, ip) = (world.pods[1].name.clone(), world.pods[1].ip);
    world.pods[1].agent = Some(world.start_agent(&name, ip));
    world.kubectl(&["annotate", "pcap", "flaky", "-n", NS, "biometrics.io/capture-now=retry-1"], None);
    let pc = world
        .wait_capture("flaky", Duration::from_secs(60), |pc| {
            pc.status.as_ref().and_then(|s| s.last_run.as_ref()).is_some_and(|r| r.result == RunResult::Succeeded)
        })
        .await;
    let status = pc.status.unwrap();
    assert_eq!(status.history.len(), 1, "the failed run is in the history");
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.status, "False");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_schedule_accumulates_runs_within_the_limits() {
    let mut world = World::start(&["127.0.0.6"]).await;
    world.start_operator();
    world.kubectl(
        &["apply", "-f", "-"],
        Some(
            &capture_manifest(
                "every",
                "  schedule: \"@every 4s\"\n  retention:\n    keepRuns: 2\n    historyLimit: 2\n",
            )
            .replace("[cpu, heap]", "[heap]"),
        ),
    );
    let pc = world
        .wait_capture("every", Duration::from_secs(60), |pc| {
            pc.status.as_ref().is_some_and(|s| {
                s.history.len() >= 2 && s.last_run.as_ref().is_some_and(|r| r.result == RunResult::Succeeded)
            })
        })
        .await;
    let status = pc.status.unwrap();
    assert_eq!(status.history.len(), 2, "history stays at historyLimit");
    assert!(status.next_run_time.is_some() && status.last_schedule_time.is_some());
    let run_dirs = std::fs::read_dir(world.dir.path().join("profiles").join(NS).join("every")).unwrap().count();
    assert!(run_dirs <= 3, "files stay near keepRuns (one more may be in flight): {run_dirs}");
    // A later run compares itself with the previous one.
    let compared = status.last_run.unwrap().pods[0].profiles[0].compared_to_previous.clone();
    assert!(compared.is_some_and(|c| c.run.starts_with('s')), "the comparison names the previous run");
    // Suspended: no more runs.
    world.kubectl(&["patch", "pcap", "every", "-n", NS, "--type=merge", "-p", r#"{"spec":{"suspend":true}}"#], None);
    let pc = world
        .wait_capture("every", Duration::from_secs(30), |pc| {
            pc.status.as_ref().and_then(|s| s.phase) == Some(CapturePhase::Suspended)
        })
        .await;
    let last = pc.status.unwrap().last_run.unwrap().id;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let api: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    assert_eq!(api.get("every").await.unwrap().status.unwrap().last_run.unwrap().id, last, "suspend stops runs");
    let _ = world.server.addr();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_finishes_the_run_without_starting_another() {
    let mut world = World::start(&["127.0.0.7"]).await;
    world.lease = "4s";
    world.start_operator();
    world
        .kubectl(&["apply", "-f", "-"], Some(&capture_manifest("restart", "").replace("duration: 2s", "duration: 6s")));
    let pc = world
        .wait_capture("restart", Duration::from_secs(30), |pc| {
            pc.status.as_ref().and_then(|s| s.last_run.as_ref()).is_some_and(|r| r.result == RunResult::Running)
        })
        .await;
    let run_id = pc.status.unwrap().last_run.unwrap().id;
    // Killed mid-run, started again: it polls the same run to its end.
    if let Some(mut operator) = world.operator.take() {
        operator.kill();
    }
    world.start_operator();
    let pc = world
        .wait_capture("restart", Duration::from_secs(60), |pc| {
            pc.status.as_ref().and_then(|s| s.phase) == Some(CapturePhase::Succeeded)
        })
        .await;
    let status = pc.status.unwrap();
    assert_eq!(status.last_run.unwrap().id, run_id, "the same run");
    assert!(status.history.is_empty(), "no second run");
    let runs = std::fs::read_dir(world.dir.path().join("profiles").join(NS).join("restart")).unwrap().count();
    assert_eq!(runs, 1, "one run's files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_leader_acts() {
    let mut world = World::start(&["127.0.0.8"]).await;
    world.lease = "4s";
    world.start_operator();
    let first = world.operator.take();
    world.start_operator();
    let second = world.operator.take();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(world.client.clone(), OPERATOR_NS);
    let holder = leases.get("biometrics-operator").await.unwrap().spec.unwrap().holder_identity.unwrap();
    assert_eq!(holder, "operator-0");
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest("two", "")));
    world
        .wait_capture("two", Duration::from_secs(60), |pc| {
            pc.status.as_ref().and_then(|s| s.phase) == Some(CapturePhase::Succeeded)
        })
        .await;
    let events =
        world.kubectl(&["get", "events", "-n", NS, "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}"], None);
    assert_eq!(events.lines().filter(|l| *l == "RunStarted").count(), 1, "one replica acted: {events}");
    drop(second);
    drop(first);
}

/// One authenticated request an agent logged: when, from which operator replica, what.
#[derive(Debug)]
struct AgentRequest {
    at: jiff::Timestamp,
    caller: String,
    method: String,
    path: String,
}

/// Every request the agent of `pod` logged.
fn agent_requests(world: &World, pod: &str) -> Vec<AgentRequest> {
    let log = std::fs::read_to_string(world.dir.path().join(format!("agent-{pod}.log"))).unwrap_or_default();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "biometrics_agent::access")
        .map(|v| AgentRequest {
            at: v["timestamp"].as_str().unwrap().parse().unwrap(),
            caller: v["caller"].as_str().unwrap().to_owned(),
            method: v["method"].as_str().unwrap().to_owned(),
            path: v["path"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// The Lease's holder and acquire time, as the API server has them.
async fn lease_holder(world: &World) -> (Option<String>, Option<jiff::Timestamp>) {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(world.client.clone(), OPERATOR_NS);
    let spec = leases.get("biometrics-operator").await.unwrap().spec.unwrap_or_default();
    (spec.holder_identity.filter(|h| !h.is_empty()), spec.acquire_time.map(|t| t.0))
}

/// A kubeconfig reaching the API server through `proxy`.
fn proxied_kubeconfig(world: &World, proxy: &FaultProxy) -> std::path::PathBuf {
    let kubeconfig = world.dir.path().join(format!("kubeconfig-{}", proxy.addr().port()));
    std::fs::write(&kubeconfig, biometrics_test_apiserver::kubeconfig_for(&format!("http://{}", proxy.addr())))
        .unwrap();
    kubeconfig
}

/// The leader's API traffic frozen mid-run (a partition: every request and watch held, no
/// error ever returned): it stops calling agents before the other replica can take the lease,
/// the other takes it and finishes the same run, and no agent sees the two interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_stops_before_another_replica_takes_over() {
    let mut world = World::start(&["127.0.0.50"]).await;
    let proxy = FaultProxy::start("127.0.0.1:0".parse().unwrap(), world.server.addr());
    let (mut first, first_metrics) = world.spawn_operator(&proxied_kubeconfig(&world, &proxy));
    assert_eq!(wait_readyz(first_metrics, 200).await, "ok: leading");
    let (_second, second_metrics) = world.spawn_operator(&kubeconfig_path(world.dir.path()));
    assert_eq!(wait_readyz(second_metrics, 200).await, "ok: following");
    world.kubectl(
        &["apply", "-f", "-"],
        Some(
            &capture_manifest("partition", "").replace("duration: 2s", "duration: 12s").replace("[cpu, heap]", "[cpu]"),
        ),
    );
    let pc = world
        .wait_capture("partition", Duration::from_secs(30), |pc| {
            pc.status.as_ref().and_then(|s| s.last_run.as_ref()).is_some_and(|r| r.result == RunResult::Running)
        })
        .await;
    let run_id = pc.status.unwrap().last_run.unwrap().id;
    // The leader is polling the run; now nothing it sends the API server gets through.
    let polled = |requests: &[AgentRequest], caller: &str| {
        requests.iter().filter(|r| r.caller == caller && r.path.starts_with("/v1/captures/")).count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while polled(&agent_requests(&world, "api-0"), "operator-0") == 0 {
        assert!(std::time::Instant::now() < deadline, "the leader never polled the run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.set(Fault::Freeze);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let taken_at = loop {
        if let (Some(holder), Some(at)) = lease_holder(&world).await
            && holder == "operator-1"
        {
            break at;
        }
        assert!(std::time::Instant::now() < deadline, "the follower never took the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pc = world
        .wait_capture("partition", Duration::from_secs(60), |pc| {
            pc.status.as_ref().and_then(|s| s.phase) == Some(CapturePhase::Succeeded)
        })
        .await;
    let status = pc.status.unwrap();
    assert_eq!(status.last_run.unwrap().id, run_id, "the new leader finished the run it found");
    assert!(status.history.is_empty(), "no second run");

    let requests = agent_requests(&world, "api-0");
    let late: Vec<_> = requests.iter().filter(|r| r.caller == "operator-0" && r.at >= taken_at).collect();
    assert!(late.is_empty(), "the old leader called the agent after the lease was taken at {taken_at}: {late:#?}");
    assert!(polled(&requests, "operator-1") > 0, "the new leader polled the run: {requests:#?}");
    assert!(requests.iter().all(|r| r.caller.starts_with("operator-")), "every request names its replica");
    let started: Vec<_> = requests.iter().filter(|r| r.method == "POST" && r.path == "/v1/captures").collect();
    assert_eq!(started.len(), 1, "the run was dispatched once: {started:#?}");
    let log = std::fs::read_to_string(world.dir.path().join("agent-api-0.log")).unwrap();
    assert_eq!(log.matches("capture accepted").count(), 1, "one capture started on the agent");
    // The old leader gave up on its own: it exited, saying why.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = first.exited() {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "the old leader kept running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!exit.success(), "lost leadership is a failure: {exit:?}");
    let first_log = std::fs::read_to_string(world.dir.path().join("operator-0.log")).unwrap();
    assert!(first_log.contains("renew deadline"), "{first_log}");
}

/// A leader shut down gracefully clears the Lease's holder, so the other replica takes over
/// at its next try rather than after the lease duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_shut_down_releases_the_lease() {
    let mut world = World::start(&[]).await;
    world.start_operator();
    let mut first = world.operator.take().unwrap();
    assert_eq!(wait_readyz(world.operator_metrics.unwrap(), 200).await, "ok: leading");
    let (_second, second_metrics) = world.spawn_operator(&kubeconfig_path(world.dir.path()));
    assert_eq!(wait_readyz(second_metrics, 200).await, "ok: following");
    assert!(first.terminate(Duration::from_secs(30)), "the leader exits after SIGTERM");
    assert!(first.exited().unwrap().success());
    let (holder, _) = lease_holder(&world).await;
    assert_ne!(holder.as_deref(), Some("operator-0"), "the lease still names the replica that left");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lease_holder(&world).await.0.as_deref() != Some("operator-1") {
        assert!(std::time::Instant::now() < deadline, "the follower did not take the released lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(wait_readyz(second_metrics, 200).await, "ok: leading");
}

/// The trust ConfigMap deleted, then edited: each time the operator publishes it again
/// (without a restart), and captures keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trust_configmap_comes_back_when_deleted_or_edited() {
    let mut world = World::start(&["127.0.0.51"]).await;
    world.start_operator();
    let succeeded = |pc: &ProfileCapture| pc.status.as_ref().and_then(|s| s.phase) == Some(CapturePhase::Succeeded);
    let heap_only = |name: &str| capture_manifest(name, "").replace("[cpu, heap]", "[heap]");
    world.kubectl(&["apply", "-f", "-"], Some(&heap_only("before")));
    world.wait_capture("before", Duration::from_secs(60), succeeded).await;
    let public_key = std::fs::read_to_string(&world.public_key).unwrap();
    let trust: Api<ConfigMap> = Api::namespaced(world.client.clone(), NS);
    let published = || async {
        trust
            .get_opt("biometrics-trust")
            .await
            .unwrap()
            .and_then(|cm| cm.data)
            .and_then(|d| d.get("operator.pub").cloned())
    };
    assert_eq!(published().await.as_deref(), Some(public_key.as_str()));
    let wait_published = || async {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while published().await.as_deref() != Some(public_key.as_str()) {
            assert!(std::time::Instant::now() < deadline, "not published again:\n{}", world.operator_log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    world.kubectl(&["delete", "configmap", "biometrics-trust", "-n", NS], None);
    wait_published().await;
    world.kubectl(
        &[
            "patch",
            "configmap",
            "biometrics-trust",
            "-n",
            NS,
            "--type=merge",
            "-p",
            r#"{"data":{"operator.pub":"not a key"}}"#,
        ],
        None,
    );
    wait_published().await;
    assert!(world.operator_log().contains("re-published the public key"));
    world.kubectl(&["apply", "-f", "-"], Some(&heap_only("after")));
    world.wait_capture("after", Duration::from_secs(60), succeeded).await;
}

/// The operator watches only pods labelled as carrying an agent: a pod the capture's
/// selector matches, with an agent container, but without the label is never seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_without_the_agent_label_are_not_watched() {
    let mut world = World::start(&["127.0.0.53"]).await;
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), NS);
    let stray = json!({"metadata": {"name": "stray", "labels": {"app": "api"}}, "spec": {"containers": [{"name": "app", "image": "a"}, {"name": "biometrics-agent", "image": "b"}]}});
    pods.create(&PostParams::default(), &serde_json::from_value(stray).unwrap()).await.unwrap();
    let ready = json!({"status": {"phase": "Running", "podIP": "127.0.0.52", "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status("stray", &PatchParams::default(), &Patch::Merge(&ready)).await.unwrap();
    world.start_operator();
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest("labelled", "").replace("[cpu, heap]", "[heap]")));
    let pc = world
        .wait_capture("labelled", Duration::from_secs(60), |pc| {
            pc.status.as_ref().and_then(|s| s.phase) == Some(CapturePhase::Succeeded)
        })
        .await;
    let run = pc.status.unwrap().last_run.unwrap();
    assert_eq!(run.pods.iter().map(|p| p.pod.as_str()).collect::<Vec<_>>(), ["api-0"], "{run:?}");
}

/// A lagging watch (the API server delivers every change 6 s late) does not make the
/// operator start a finished run again: it decides on the status it wrote last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watch_does_not_start_a_second_run() {
    let options = biometrics_test_apiserver::Options { watch_delay: Duration::from_secs(6), ..Default::default() };
    let mut world = World::start_with(options, &["127.0.0.54"]).await;
    // Reconciles every second once the run is over, while the watch still lags.
    let config = world.dir.path().join("operator.yaml");
    std::fs::write(&config, "performance:\n  metrics:\n    interval: 1s\n").unwrap();
    world.operator_args = vec!["--config".into(), config.display().to_string()];
    world.start_operator();
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest("lagging", "").replace("[cpu, heap]", "[heap]")));
    let pc = world
        .wait_capture("lagging", Duration::from_secs(60), |pc| {
            pc.status.as_ref().and_then(|s| s.phase) == Some(CapturePhase::Succeeded)
        })
        .await;
    let run_id = pc.status.unwrap().last_run.unwrap().id;
    // Long enough for the delayed changes to arrive and every reconcile they cause to run.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let api: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    let status = api.get("lagging").await.unwrap().status.unwrap();
    assert_eq!(status.last_run.unwrap().id, run_id, "the same run");
    assert!(status.history.is_empty(), "no second run: {:?}", status.history);
    let runs = std::fs::read_dir(world.dir.path().join("profiles").join(NS).join("lagging")).unwrap().count();
    assert_eq!(runs, 1, "one run's files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_trigger_fires_once_per_cooldown() {
    let mut world = World::start(&[]).await;
    // An app whose memory limit is 256 MiB: the agent reports Sys against it.
    add_pod_with_memory_limit(&mut world, "hungry", "127.0.0.9".parse().unwrap(), Some("256Mi")).await;
    let ip: IpAddr = "127.0.0.9".parse().unwrap();
    world.start_operator();
    let manifest = capture_manifest(
        "watch",
        "  schedule: \"@daily\"\n  triggers:\n    - metric: memoryPercent\n      level: Warning\n      profiles: [heap]\n      cooldown: 10m\n",
    );
    world.kubectl(&["apply", "-f", "-"], Some(&manifest));
    let pc = world
        .wait_capture("watch", Duration::from_secs(60), |pc| {
            pc.status
                .as_ref()
                .is_some_and(|s| s.threshold_level == Some(biometrics_crds::threshold::ThresholdLevel::OK))
        })
        .await;
    assert!(pc.status.unwrap().last_run.is_none(), "no run while the pod is calm");
    // The app grows past 70% of its limit: Warning, and the trigger captures its heap.
    http_get_target(ip, "/retain?mb=200");
    let pc = world
        .wait_capture("watch", Duration::from_secs(90), |pc| {
            pc.status.as_ref().and_then(|s| s.last_run.as_ref()).is_some_and(|r| {
                r.trigger == biometrics_crds::v1alpha1::RunTrigger::Threshold && r.result != RunResult::Running
            })
        })
        .await;
    let status = pc.status.unwrap();
    assert!(
        status.threshold_level >= Some(biometrics_crds::threshold::ThresholdLevel::Warning),
        "{:?}",
        status.threshold_level
    );
    let run = status.last_run.unwrap();
    assert_eq!(
        run.pods[0].profiles.iter().map(|p| p.profile_type).collect::<Vec<_>>(),
        [biometrics_crds::profile::ProfileType::Heap]
    );
    assert_eq!(status.trigger_fires.len(), 1);
    // Within the cooldown it does not fire again.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let api: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    let again = api.get("watch").await.unwrap().status.unwrap();
    assert_eq!(again.last_run.unwrap().id, run.id, "once per cooldown");
    let described = world.kubectl(&["describe", "pcap", "watch", "-n", NS], None);
    assert!(described.contains("ThresholdCrossed") && described.contains("TriggerFired"), "{described}");
}

/// A pod whose app container serves port 6060 with `limit` as its memory limit (none when
/// `None`), and whose agent reads 256 MiB through the downward API (with no limit, what it
/// reads is the node's memory; the figure only has to be one the agent reports).
async fn add_pod_with_memory_limit(world: &mut World, name: &str, ip: IpAddr, limit: Option<&str>) {
    let target = GoTarget::start(SocketAddr::new(ip, 6060));
    let listen = SocketAddr::new(ip, 9477);
    let agent = ChildGuard::spawn(
        "biometrics-agent",
        Command::new(workspace_binary("biometrics-agent"))
            .args(["--listen", &listen.to_string(), "--pod-name", name, "--pod-namespace", NS, "--target-port", "6060"])
            .args(["--target-host", &ip.to_string(), "--sample-interval", "1s", "--memory-limit-bytes", "268435456"])
            .arg("--profiles-dir")
            .arg(world.dir.path().join("profiles"))
            .arg("--operator-public-key")
            .arg(&world.public_key)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_listener(listen, Duration::from_secs(10));
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), NS);
    let resources = limit.map_or(json!({}), |l| json!({"limits": {"memory": l}}));
    let pod = json!({"metadata": {"name": name, "labels": {"app": "api", "biometrics.io/agent": "true"}}, "spec": {"containers": [
        {"name": "app", "image": "a", "ports": [{"containerPort": 6060}], "resources": resources},
        {"name": "biometrics-agent", "image": "b"}]}});
    pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
    let status = json!({"status": {"phase": "Running", "podIP": ip.to_string(), "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    world.pods.push(FakePod { name: name.into(), ip, target: Some(target), agent: Some(agent) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_without_a_limit_is_reported_unknown_never_ok() {
    let mut world = World::start(&[]).await;
    add_pod_with_memory_limit(&mut world, "unbounded", "127.0.0.16".parse().unwrap(), None).await;
    world.start_operator();
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest("watch", "  schedule: \"@daily\"\n")));
    let pc = world
        .wait_capture("watch", Duration::from_secs(60), |pc| {
            // A sample the agent could not take (slow under load) is shown with its error
            // and no levels; the one judged comes next.
            pc.status.as_ref().is_some_and(|s| s.pods.iter().any(|p| p.sample_time.is_some() && p.error.is_none()))
        })
        .await;
    let pod = pc.status.unwrap().pods.remove(0);
    assert_eq!(pod.memory_percent, None, "a percentage of the node's memory is not shown: {pod:?}");
    let why = pod.memory_percent_unknown.clone().unwrap_or_default();
    assert!(why.contains("\"app\"") && why.contains("6060") && why.contains("no memory limit"), "{pod:?}");
    let levels = pod.levels.clone().expect("the other metrics are judged");
    assert_eq!(levels.memory_percent, None, "no false OK: {pod:?}");
    assert_eq!(levels.not_judged, [biometrics_crds::v1alpha1::RuntimeMetric::MemoryPercent]);
    assert!(pod.goroutines.is_some() && levels.goroutines.is_some(), "{pod:?}");
    let described = world.kubectl(&["describe", "pcap", "watch", "-n", NS], None);
    assert!(described.contains("MemoryNotJudged"), "{described}");
}

fn http_get_target(ip: IpAddr, path: &str) {
    biometrics_test_support::http_get(SocketAddr::new(ip, 6060), path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_capture_is_refused_at_apply() {
    let world = World::start(&[]).await;
    let mut child = Command::new(repo_root().join(".tools/bin/kubectl"))
        .args(["apply", "-f", "-"])
        .env("KUBECONFIG", kubeconfig_path(world.dir.path()))
        .env("KUBECACHEDIR", world.dir.path().join("kubecache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        capture_manifest("bad", "").replace("duration: 2s", "duration: 10m").as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("duration must be between 1s and 5m"));
    let api: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    assert!(api.get_opt("bad").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_removes_files_when_asked_and_never_waits_on_a_dead_agent() {
    let mut world = World::start(&["127.0.0.10", "127.0.0.11"]).await;
    world.start_operator();
    world.kubectl(
        &["apply", "-f", "-"],
        Some(&capture_manifest("gone", "  retention:\n    deleteOnRemoval: true\n").replace("[cpu, heap]", "[heap]")),
    );
    world
        .wait_capture("gone", Duration::from_secs(60), |pc| {
            pc.status.as_ref().and_then(|s| s.phase) == Some(CapturePhase::Succeeded)
        })
        .await;
    let dir = world.dir.path().join("profiles").join(NS).join("gone");
    assert!(dir.exists());
    // One agent is dead by the time the capture is deleted: deletion still completes.
    if let Some(mut agent) = world.pods[1].agent.take() {
        agent.kill();
    }
    world.kubectl(&["delete", "pcap", "gone", "-n", NS, "--timeout=60s"], None);
    let api: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    assert!(api.get_opt("gone").await.unwrap().is_none());
    let left: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .flat_map(|run| {
                    std::fs::read_dir(run.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|p| p.file_name().to_string_lossy().into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "the live agent removed every pod's files, the dead one's too: {left:?}");
    let rest: Vec<_> =
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(!dir.exists(), "and the capture's directory: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_created_again_under_the_same_name_never_mixes_files_with_the_old_one() {
    let mut world = World::start(&["127.0.0.60", "127.0.0.61"]).await;
    world.start_operator();
    let manifest = capture_manifest("again", "").replace("[cpu, heap]", "[heap]");
    let succeeded = |pc: &ProfileCapture| pc.status.as_ref().and_then(|s| s.phase) == Some(CapturePhase::Succeeded);
    world.kubectl(&["apply", "-f", "-"], Some(&manifest));
    let first = world.wait_capture("again", Duration::from_secs(60), succeeded).await;
    let first_uid = first.uid().unwrap();
    world.kubectl(&["delete", "pcap", "again", "-n", NS, "--timeout=60s"], None);
    world.kubectl(&["apply", "-f", "-"], Some(&manifest));
    let second = world
        .wait_capture("again", Duration::from_secs(60), |pc| pc.uid().as_ref() != Some(&first_uid) && succeeded(pc))
        .await;
    let (old_run, new_run) =
        (first.status.unwrap().last_run.unwrap(), second.status.clone().unwrap().last_run.unwrap());
    assert_eq!(old_run.id, format!("g1-{}", &first_uid.replace('-', "")[..8]));
    assert_eq!(new_run.id, format!("g1-{}", &second.uid().unwrap().replace('-', "")[..8]));
    assert_ne!(old_run.id, new_run.id, "both are the first generation's run, of two captures");
    let volume = world.dir.path().join("profiles");
    for (run, label) in [(&old_run, "the old capture's"), (&new_run, "the new capture's")] {
        for pod in &run.pods {
            for profile in &pod.profiles {
                let path = profile.path.as_deref().unwrap();
                assert!(path.starts_with(&format!("{NS}/again/{}/{}/", run.id, pod.pod)), "{label}: {path}");
                let bytes = std::fs::read(volume.join(path)).unwrap();
                use sha2::Digest;
                let digest: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(profile.sha256.as_deref(), Some(digest.as_str()), "{label} file is its own: {path}");
            }
        }
    }
    let mut runs: Vec<String> = std::fs::read_dir(volume.join(NS).join("again"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    runs.sort();
    let mut expected = vec![old_run.id.clone(), new_run.id.clone()];
    expected.sort();
    assert_eq!(runs, expected, "the old capture's files stay (no deleteOnRemoval) beside the new one's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_that_never_fires_is_reported() {
    let mut world = World::start(&["127.0.0.12"]).await;
    world.start_operator();
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest("feb30", "  schedule: \"0 0 30 2 *\"\n")));
    let pc = world
        .wait_capture("feb30", Duration::from_secs(30), |pc| {
            pc.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "ScheduleNeverFires"))
        })
        .await;
    let status = pc.status.unwrap();
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.status, "True");
    assert!(degraded.message.contains(r#"schedule "0 0 30 2 *" never fires"#), "{degraded:?}");
    assert_eq!(status.conditions.iter().find(|c| c.type_ == "Ready").unwrap().status, "False");
    assert!(status.next_run_time.is_none() && status.last_run.is_none());
}

/// The ProfileCapture CRD as it was before a cron range had to ascend: the same CRD
/// without that rule.
fn without_ascending_ranges(
    mut crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let schema = crd.spec.versions[0].schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()).unwrap();
    let spec = schema.properties.as_mut().unwrap().get_mut("spec").unwrap();
    let schedule = spec.properties.as_mut().unwrap().get_mut("schedule").unwrap();
    let rules = schedule.x_kubernetes_validations.as_mut().unwrap();
    let before = rules.len();
    rules.retain(|r| r.message.as_deref() != Some(biometrics_crds::schedule::ASCENDING_RANGES_MESSAGE));
    assert_eq!(rules.len(), before - 1, "the rule is in the current CRD");
    crd
}

/// The InvalidSpec Events about `name`.
async fn invalid_spec_events(world: &World, name: &str) -> Vec<k8s_openapi::api::core::v1::Event> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(world.client.clone(), NS);
    let selector = format!("involvedObject.name={name},reason=InvalidSpec");
    events.list(&kube::api::ListParams::default().fields(&selector)).await.unwrap().items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_the_parser_refuses_is_reported_and_stops_no_other() {
    use biometrics_crds::v1alpha1::ProfileCaptureStatus;
    use biometrics_operator::guard::Guarded;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    let mut world = World::start(&["127.0.0.13"]).await;
    world.lease = "4s";
    world.start_operator();
    // The API server holds a capture the operator cannot read, as a real one does when a CRD
    // upgrade tightened the schema: it was admitted by the CRD before the upgrade.
    let crds: Api<CustomResourceDefinition> = Api::all(world.client.clone());
    let crd_name = "profilecaptures.biometrics.io";
    let current = crds.get(crd_name).await.unwrap();
    crds.replace(crd_name, &PostParams::default(), &without_ascending_ranges(current.clone())).await.unwrap();
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest("poison", "  schedule: \"30-10 * * * *\"\n")));
    let mut upgraded = current;
    upgraded.metadata.resource_version = crds.get(crd_name).await.unwrap().metadata.resource_version;
    crds.replace(crd_name, &PostParams::default(), &upgraded).await.unwrap();
    let refused = Command::new(repo_root().join(".tools/bin/kubectl"))
        .args(["apply", "-f", "-", "--dry-run=server"])
        .env("KUBECONFIG", kubeconfig_path(world.dir.path()))
        .env("KUBECACHEDIR", world.dir.path().join("kubecache"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut child| {
            let manifest = capture_manifest("poison-2", "  schedule: \"30-10 * * * *\"\n");
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), manifest.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("a cron range must run from low to high"), "{stderr}");

    // The running operator reports it on its own status, with the parser's message.
    let captures: Api<Guarded<ProfileCapture>> = Api::namespaced(world.client.clone(), NS);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (generation, status) = loop {
        let object = captures.get("poison").await.unwrap();
        let invalid = object.valid().expect_err("the operator's parser refuses the schedule");
        let status: Option<ProfileCaptureStatus> = invalid.part("/status");
        if let Some(status) = status.filter(|s| s.conditions.iter().any(|c| c.reason == "InvalidSpec")) {
            break (kube::Resource::meta(&object).generation, status);
        }
        assert!(std::time::Instant::now() < deadline, "no InvalidSpec status:\n{}", world.operator_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.phase, Some(CapturePhase::Failed));
    assert_eq!(status.observed_generation, generation);
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
    assert!(
        ready.message.contains(r#""30-10 * * * *" is not a valid cron schedule"#)
            && ready.message.contains("runs backwards"),
        "{ready:?}"
    );
    assert_eq!(ready.observed_generation, generation);
    let events = invalid_spec_events(&world, "poison").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    assert_eq!(events[0].message.as_deref(), Some(ready.message.as_str()));

    // Restarted, the operator lists every capture again: the poison one is one object with
    // an error, and a valid capture still runs.
    if let Some(mut operator) = world.operator.take() {
        operator.kill();
    }
    world.start_operator();
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest("after-restart", "")));
    world
        .wait_capture("after-restart", Duration::from_secs(60), |pc| {
            pc.status.as_ref().and_then(|s| s.phase) == Some(CapturePhase::Succeeded)
        })
        .await;
    let log = world.operator_log();
    assert!(
        log.lines().any(|l| l.contains("\"name\":\"poison\"") && l.contains("invalid spec")),
        "the restarted operator logs the invalid capture:\n{log}"
    );
    assert_eq!(invalid_spec_events(&world, "poison").await.len(), 1, "nothing new to say after the restart");

    // Deletion needs no readable spec: the finalizer's cleanup runs and the capture goes.
    let poison = captures.get("poison").await.unwrap();
    assert!(poison.finalizers().iter().any(|f| f == "biometrics.io/profilecapture"));
    world.kubectl(&["delete", "pcap", "poison", "-n", NS, "--timeout=30s"], None);
    assert!(captures.get_opt("poison").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_reconcile_in_flight_write_its_status() {
    let mut world = World::start(&[]).await;
    let proxy = world.add_pod_behind_proxy("api-0", "127.0.0.14".parse().unwrap()).await;
    // Every agent call takes 2 s: the first reconcile of the capture is in flight a while.
    proxy.set(Fault::Delay(Duration::from_secs(2)));
    world.start_operator();
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest("drain", "").replace("[cpu, heap]", "[heap]")));
    // The run's start is on its way to the agent; the reconcile writes the status next.
    proxy.wait_for("/v1/captures", "delay", 1, Duration::from_secs(30));
    let api: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    assert!(api.get("drain").await.unwrap().status.is_none(), "nothing written yet");
    let mut operator = world.operator.take().unwrap();
    assert!(operator.terminate(Duration::from_secs(30)), "the operator exits after SIGTERM");
    let exit = operator.exited().unwrap();
    assert!(exit.success(), "{exit:?}\n{}", world.operator_log());
    // The reconcile in flight finished: the run it started is in the status.
    let status = api.get("drain").await.unwrap().status;
    let run = status.and_then(|s| s.last_run).unwrap_or_else(|| {
        panic!("the status write of the reconcile in flight did not land:\n{}", world.operator_log())
    });
    assert_eq!(run.pods.iter().map(|p| p.pod.as_str()).collect::<Vec<_>>(), ["api-0"]);
    assert!(world.operator_log().contains("the reconciles in flight finish first"));
}

/// Where the operator polls captures (`GET /v1/captures/{id}`); the start is `POST /v1/captures`.
const POLLS: &str = "/v1/captures/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_blips_during_a_cpu_capture_are_retried_and_a_404_fails_the_pod() {
    let mut world = World::start(&[]).await;
    let config = world.dir.path().join("operator.yaml");
    std::fs::write(&config, "performance:\n  profiling:\n    agent_timeout: 1s\n").unwrap();
    world.operator_args = vec!["--config".into(), config.display().to_string()];
    let proxy = world.add_pod_behind_proxy("api-0", "127.0.0.15".parse().unwrap()).await;
    world.start_operator();
    let manifest =
        capture_manifest("blips", "").replace("[cpu, heap]", "[cpu]").replace("duration: 2s", "duration: 8s");
    world.kubectl(&["apply", "-f", "-"], Some(&manifest));
    // Polls are under way. Now the agent blips in each way a network or a busy agent does.
    proxy.wait_for(POLLS, "pass", 1, Duration::from_secs(30));
    let faults = [
        Fault::Status(
            429,
            r#"{"code":"TooManyRequests","message":"too many concurrent requests; retry later"}"#.into(),
        ),
        Fault::Reset,
        Fault::Status(503, "upstream connect error".into()),
        // Past the operator's 1 s agent timeout.
        Fault::Delay(Duration::from_secs(2)),
        Fault::Freeze,
    ];
    for fault in faults {
        let label = fault.label();
        let seen = proxy.count(POLLS, label);
        proxy.set_for(POLLS, fault);
        proxy.wait_for(POLLS, label, seen + 1, Duration::from_secs(30));
    }
    proxy.set(Fault::Pass);
    let pc = world
        .wait_capture("blips", Duration::from_secs(60), |pc| {
            pc.status.as_ref().and_then(|s| s.last_run.as_ref()).is_some_and(|r| r.result != RunResult::Running)
        })
        .await;
    let first = pc.status.unwrap().last_run.unwrap();
    assert_eq!(first.result, RunResult::Succeeded, "{first:#?}\n{}", world.operator_log());
    let pod = &first.pods[0];
    assert_eq!((pod.error.as_deref(), pod.reason.as_deref()), (None, None));
    assert!(world.dir.path().join("profiles").join(pod.profiles[0].path.as_ref().unwrap()).exists());
    assert_eq!(proxy.count(POLLS, "status"), 2, "a 429 and a 503 reached the operator");
    for label in ["reset", "delay", "freeze"] {
        assert!(proxy.count(POLLS, label) >= 1, "{label}: {:?}", proxy.seen());
    }
    let described = world.kubectl(&["describe", "pcap", "blips", "-n", NS], None);
    assert!(!described.contains("PodFailed"), "{described}");

    // The agent restarted and lost the capture: a definitive 404 fails the pod at once.
    let not_found = r#"{"code":"NotFound","message":"no capture with that id"}"#;
    proxy.set_for(POLLS, Fault::Status(404, not_found.into()));
    world.kubectl(&["annotate", "pcap", "blips", "-n", NS, "biometrics.io/capture-now=after-a-restart"], None);
    let pc = world
        .wait_capture("blips", Duration::from_secs(30), |pc| {
            pc.status
                .as_ref()
                .and_then(|s| s.last_run.as_ref())
                .is_some_and(|r| r.id != first.id && r.result != RunResult::Running)
        })
        .await;
    let status = pc.status.unwrap();
    let run = status.last_run.unwrap();
    assert_eq!(run.result, RunResult::Failed);
    let pod = &run.pods[0];
    assert_eq!(pod.reason.as_deref(), Some("CaptureNotFound"), "{pod:?}");
    assert!(pod.error.as_deref().unwrap().contains("404"), "{pod:?}");
    let took = run.start_time.0.duration_until(run.completion_time.unwrap().0);
    assert!(took < jiff::SignedDuration::from_secs(15), "not after the unreachable budget: {took:?}");
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "PodsFailed"));
    assert!(degraded.message.contains("api-0 (CaptureNotFound)"), "{degraded:?}");
    let described = world.kubectl(&["describe", "pcap", "blips", "-n", NS], None);
    assert!(described.contains("PodFailed"), "{described}");
}

/// `/readyz` of the operator at `addr`: status and body.
fn readyz(addr: SocketAddr) -> (u16, String) {
    let (status, body) = biometrics_test_support::http_request(addr, "GET", "/readyz", &[], b"");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until `/readyz` answers `status`; its body.
async fn wait_readyz(addr: SocketAddr, status: u16) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (now, body) = readyz(addr);
        if now == status {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "/readyz stays {now} ({body}), not {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_whether_the_lease_loop_and_the_caches_run() {
    let mut world = World::start(&[]).await;
    // The leader is ready once its caches have synced.
    world.start_operator();
    let leader = world.operator_metrics.unwrap();
    assert_eq!(wait_readyz(leader, 200).await, "ok: leading");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(world.client.clone(), OPERATOR_NS);
    let holder = leases.get("biometrics-operator").await.unwrap().spec.unwrap().holder_identity.unwrap();
    assert_eq!(holder, "operator-0");

    // A second replica reaches the API server through a proxy that holds every request: its
    // lease loop has not run yet, so it is not ready.
    let proxy = FaultProxy::start("127.0.0.1:0".parse().unwrap(), world.server.addr());
    proxy.set(Fault::Freeze);
    let kubeconfig = world.dir.path().join("kubeconfig-proxied");
    std::fs::write(&kubeconfig, biometrics_test_apiserver::kubeconfig_for(&format!("http://{}", proxy.addr())))
        .unwrap();
    let (_replica, follower) = world.spawn_operator(&kubeconfig);
    proxy.wait_for("/apis/coordination.k8s.io/", "freeze", 1, Duration::from_secs(10));
    for _ in 0..5 {
        assert_eq!(readyz(follower), (503, "the lease loop has not reached the Lease yet".into()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let through: a follower is ready once its lease loop runs (it builds no caches).
    proxy.set(Fault::Pass);
    assert_eq!(wait_readyz(follower, 200).await, "ok: following");
    // Lease access refused: not ready.
    let forbidden = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"Forbidden","code":403,"message":"leases.coordination.k8s.io \"biometrics-operator\" is forbidden"}"#;
    proxy.set_for("/apis/coordination.k8s.io/", Fault::Status(403, forbidden.into()));
    assert_eq!(wait_readyz(follower, 503).await, "the lease loop cannot read or write the Lease");
    // Allowed again, then the API server gone: ready, then not.
    proxy.set(Fault::Pass);
    assert_eq!(wait_readyz(follower, 200).await, "ok: following");
    proxy.set(Fault::Reset);
    assert_eq!(wait_readyz(follower, 503).await, "the lease loop cannot read or write the Lease");
    assert_eq!(readyz(leader), (200, "ok: leading".into()), "the leader was never concerned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_of_a_new_leader_waits_for_its_watch_caches() {
    let mut world = World::start(&[]).await;
    // The only replica leads at once, but its pod list is held: not ready until it syncs.
    let proxy = FaultProxy::start("127.0.0.1:0".parse().unwrap(), world.server.addr());
    proxy.set_for("/api/v1/pods", Fault::Freeze);
    let kubeconfig = world.dir.path().join("kubeconfig-proxied");
    std::fs::write(&kubeconfig, biometrics_test_apiserver::kubeconfig_for(&format!("http://{}", proxy.addr())))
        .unwrap();
    let (_leader, leader) = world.spawn_operator(&kubeconfig);
    proxy.wait_for("/api/v1/pods", "freeze", 1, Duration::from_secs(10));
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(world.client.clone(), OPERATOR_NS);
    let holder = leases.get("biometrics-operator").await.unwrap().spec.unwrap().holder_identity.unwrap();
    assert_eq!(holder, "operator-0", "it leads");
    for _ in 0..5 {
        assert_eq!(readyz(leader), (503, "leading; the watch caches have not synced yet".into()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.set(Fault::Pass);
    assert_eq!(wait_readyz(leader, 200).await, "ok: leading");
}

/// The capture browser the operator serves: the run's files listed from the agents with
/// the hashes the status has, each download the file, and the run page in a real browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capture_browser_shows_each_run_and_serves_its_files() {
    use sha2::Digest;
    let mut world = World::start(&["127.0.0.40", "127.0.0.41"]).await;
    world.start_operator();
    world.kubectl(&["apply", "-f", "-"], Some(&capture_manifest("browsed", "")));
    let pc = world
        .wait_capture("browsed", Duration::from_secs(60), |pc| {
            pc.status.as_ref().and_then(|s| s.phase) == Some(CapturePhase::Succeeded)
        })
        .await;
    let run = pc.status.unwrap().last_run.unwrap();
    let ui = world.operator_ui.unwrap();
    let get = |path: &str| {
        let (status, body) = biometrics_test_support::http_request(ui, "GET", path, &[], b"");
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        body
    };
    let captures: serde_json::Value = serde_json::from_slice(&get("/api/v1/captures")).unwrap();
    assert!(captures.as_array().unwrap().iter().any(|c| c["name"] == "browsed" && c["lastRun"] == run.id.as_str()));
    let detail: serde_json::Value =
        serde_json::from_slice(&get(&format!("/api/v1/namespaces/{NS}/captures/browsed/runs/{}", run.id))).unwrap();
    let pods = detail["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 2, "{detail}");
    for pod in &run.pods {
        let shown = pods.iter().find(|p| p["pod"] == pod.pod.as_str()).unwrap();
        for profile in &pod.profiles {
            let name = profile.path.as_deref().unwrap().rsplit('/').next().unwrap();
            let file = shown["files"].as_array().unwrap().iter().find(|f| f["file"] == name).unwrap();
            assert_eq!(file["sha256"].as_str(), profile.sha256.as_deref(), "the agent's hash is the status's");
            let bytes = get(file["download"].as_str().unwrap());
            let digest: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(Some(digest.as_str()), profile.sha256.as_deref(), "the download is the file");
        }
    }
    // Top functions computed from the files the agents serve: go tool pprof -top's on the
    // same files, one pod's and both pods' merged.
    let dir = tempfile::tempdir().unwrap();
    let mut cpu_files = Vec::new();
    for pod in ["api-0", "api-1"] {
        let bytes = get(&format!("/api/v1/namespaces/{NS}/captures/browsed/runs/{}/files/{pod}/cpu.pb.gz", run.id));
        let path = dir.path().join(format!("{pod}.pb.gz"));
        std::fs::write(&path, bytes).unwrap();
        cpu_files.push(path);
    }
    let rows = |view: &serde_json::Value| -> Vec<(String, i64, i64)> {
        view["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (f["function"].as_str().unwrap().to_owned(), f["flat"].as_i64().unwrap(), f["cum"].as_i64().unwrap())
            })
            .collect()
    };
    let pprof_rows = |files: &[&std::path::Path]| -> (i64, Vec<(String, i64, i64)>) {
        let out = biometrics_test_support::go_pprof_files(&["-top", "-unit=ns"], files);
        let (total, rows) = biometrics_test_support::parse_pprof_top(&out, "ns");
        (total, rows.into_iter().map(|r| (r.function, r.flat, r.cum)).collect())
    };
    let top_path = format!("/api/v1/namespaces/{NS}/captures/browsed/runs/{}/top?profile=cpu", run.id);
    let one: serde_json::Value = serde_json::from_slice(&get(&format!("{top_path}&pod=api-0"))).unwrap();
    assert_eq!((one["total"].as_i64().unwrap(), rows(&one)), pprof_rows(&[&cpu_files[0]]), "{one}");
    let merged: serde_json::Value = serde_json::from_slice(&get(&top_path)).unwrap();
    assert_eq!((merged["total"].as_i64().unwrap(), rows(&merged)), pprof_rows(&[&cpu_files[0], &cpu_files[1]]));

    let dom = biometrics_test_support::browser::dump_dom(&format!("http://{ui}/captures/{NS}/browsed/runs/{}", run.id));
    let top = &run.pods[0].profiles[0].top[0].function;
    assert!(dom.contains("Pod api-0") && dom.contains("Pod api-1"), "{dom}");
    assert!(dom.contains(top.as_str()), "the top function {top} is shown: {dom}");
    assert!(dom.contains("/speedscope/index.html#profileURL="), "{dom}");
    let (status, _) =
        biometrics_test_support::http_request(ui, "GET", &format!("/api/v1/namespaces/{NS}/captures/nope"), &[], b"");
    assert_eq!(status, 404);
}
