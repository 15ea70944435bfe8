//! Request latency and error rate, read from the apps' own metrics by the real agents,
//! judged by the real operator and firing captures of the pod that went bad, against the
//! test API server; the Go target serves the histogram and counter and takes the latency
//! and error share a test gives it.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use biometrics_crds::{
    profile::ProfileType,
    threshold::ThresholdLevel,
    v1alpha1::{PodRuntime, ProfileCapture, ProfileCaptureStatus, RunResult, RunTrigger, RuntimeMetric},
};
use common::*;
use kube::Api;

const FAST: &str = "127.0.0.70";
const SLOW: &str = "127.0.0.71";

fn control(ip: &str, query: &str) {
    let ip: IpAddr = ip.parse().unwrap();
    biometrics_test_support::http_get(SocketAddr::new(ip, 6060), &format!("/control?{query}"));
}

fn pod<'a>(status: &'a ProfileCaptureStatus, name: &str) -> Option<&'a PodRuntime> {
    status.pods.iter().find(|p| p.name == name)
}

fn level(status: &ProfileCaptureStatus, name: &str, metric: RuntimeMetric) -> Option<ThresholdLevel> {
    let levels = pod(status, name)?.levels.as_ref()?;
    match metric {
        RuntimeMetric::ResponseTimeMillis => levels.response_time_millis,
        RuntimeMetric::ErrorRatePercent => levels.error_rate_percent,
        _ => None,
    }
}

async fn wait_status(
    world: &World,
    what: &str,
    timeout: Duration,
    done: impl Fn(&ProfileCaptureStatus) -> bool,
) -> ProfileCaptureStatus {
    let api: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    let deadline = Instant::now() + timeout;
    loop {
        let status = api.get("latency").await.unwrap().status.unwrap_or_default();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: status {}\n{}",
            serde_json::to_string_pretty(&status).unwrap(),
            world.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pod_crosses_its_latency_bound_and_only_it_is_captured() {
    let mut world = World::start(&[]).await;
    world.add_pod("fast", FAST.parse().unwrap()).await;
    world.add_pod("slow", SLOW.parse().unwrap()).await;
    let config = world.dir.path().join("operator.yaml");
    std::fs::write(&config, "performance:\n  metrics:\n    interval: 2s\n").unwrap();
    world.operator_args = vec!["--config".into(), config.display().to_string()];
    world.start_operator();
    // Steady traffic on both pods.
    control(FAST, "rps=20");
    control(SLOW, "rps=20");
    let manifest = format!(
        "apiVersion: biometrics.io/v1alpha1\nkind: ProfileCapture\nmetadata:\n  name: latency\n  namespace: {NS}\nspec:\n  selector:\n    matchLabels:\n      app: api\n  target:\n    port: 6060\n    metrics:\n      window: 10s\n  schedule: \"@yearly\"\n  profiles: [heap]\n  duration: 2s\n  triggers:\n    - metric: responseTimeMillis\n      level: Warning\n      profiles: [cpu, goroutine]\n      cooldown: 3m\n    - metric: errorRatePercent\n      level: Critical\n      profiles: [goroutine]\n      cooldown: 3m\n"
    );
    world.kubectl(&["apply", "-f", "-"], Some(&manifest));
    // A second capture on the same pods reads a page that is not metrics.
    let broken = format!(
        "apiVersion: biometrics.io/v1alpha1\nkind: ProfileCapture\nmetadata:\n  name: behind-login\n  namespace: {NS}\nspec:\n  selector:\n    matchLabels:\n      app: api\n  target:\n    port: 6060\n    metrics:\n      path: /login\n  schedule: \"@yearly\"\n"
    );
    world.kubectl(&["apply", "-f", "-"], Some(&broken));

    // Both pods answer in milliseconds: OK, and the capture-wide figure is small.
    let calm = wait_status(&world, "both pods read and OK", Duration::from_secs(60), |s| {
        ["fast", "slow"].iter().all(|p| level(s, p, RuntimeMetric::ResponseTimeMillis) == Some(ThresholdLevel::OK))
            && s.requests.as_ref().is_some_and(|r| r.latency_millis.is_some())
    })
    .await;
    let before = calm.requests.as_ref().and_then(|r| r.latency_millis).unwrap();
    assert!(before < 100.0, "{calm:?}");
    assert!(calm.last_run.is_none(), "no run while both pods are fast");
    let calm_pod = pod(&calm, "fast").unwrap();
    assert!(calm_pod.requests_per_second.is_some_and(|r| r > 5.0), "{calm_pod:?}");
    assert_eq!(calm_pod.error_rate_percent, Some(0.0), "traffic without errors is 0 %: {calm_pod:?}");
    let printed = world.kubectl(&["get", "pcap", "latency", "-n", NS], None);
    assert!(printed.contains("LATENCY") && printed.contains("ERRORS"), "{printed}");

    // 800 ms more on one pod: its p99 crosses Warning and a run captures it alone.
    control(SLOW, "delay_ms=800");
    let fired = wait_status(&world, "a threshold run of the slow pod", Duration::from_secs(90), |s| {
        s.last_run.as_ref().is_some_and(|r| r.trigger == RunTrigger::Threshold && r.result != RunResult::Running)
    })
    .await;
    let run = fired.last_run.clone().unwrap();
    assert_eq!(run.result, RunResult::Succeeded, "{run:?}");
    assert_eq!(run.pods.iter().map(|p| p.pod.as_str()).collect::<Vec<_>>(), ["slow"], "only the slow pod");
    assert_eq!(
        run.pods[0].profiles.iter().map(|p| p.profile_type).collect::<Vec<_>>(),
        [ProfileType::Cpu, ProfileType::Goroutine]
    );
    let why = &run.fired_by[..];
    assert_eq!(why.len(), 1, "{why:?}");
    assert_eq!((why[0].pod.as_str(), why[0].metric), ("slow", RuntimeMetric::ResponseTimeMillis));
    assert_eq!((why[0].level, why[0].bound), (ThresholdLevel::Warning, 500.0));
    assert!(why[0].value > 500.0, "{why:?}");
    assert_eq!(level(&fired, "fast", RuntimeMetric::ResponseTimeMillis), Some(ThresholdLevel::OK));
    let after = fired.requests.as_ref().and_then(|r| r.latency_millis).unwrap_or_default();
    assert!(after > before, "the capture-wide figure rises: {before} → {after}");
    let described = world.kubectl(&["describe", "pcap", "latency", "-n", NS], None);
    assert!(
        described.contains("ThresholdCrossed") && described.contains("responseTimeMillis: p99 latency"),
        "the Event names the metric, the value and the bound: {described}"
    );

    // A tenth of the slow pod's answers fail: Critical, and the error trigger fires.
    control(SLOW, "error_percent=10");
    let failing = wait_status(&world, "the error trigger's run", Duration::from_secs(90), |s| {
        s.last_run.as_ref().is_some_and(|r| {
            r.result != RunResult::Running && r.fired_by.iter().any(|f| f.metric == RuntimeMetric::ErrorRatePercent)
        })
    })
    .await;
    let run = failing.last_run.clone().unwrap();
    let why = run.fired_by.iter().find(|f| f.metric == RuntimeMetric::ErrorRatePercent).unwrap();
    assert_eq!((why.pod.as_str(), why.level, why.bound), ("slow", ThresholdLevel::Critical, 5.0));
    assert!(why.value > 5.0, "{why:?}");
    assert_eq!(run.pods.iter().map(|p| p.pod.as_str()).collect::<Vec<_>>(), ["slow"]);
    assert_eq!(level(&failing, "fast", RuntimeMetric::ErrorRatePercent), Some(ThresholdLevel::OK));

    // Recovery: both metrics back to OK on both pods.
    control(SLOW, "delay_ms=0&error_percent=0");
    wait_status(&world, "recovery to OK", Duration::from_secs(60), |s| {
        ["fast", "slow"].iter().all(|p| {
            level(s, p, RuntimeMetric::ResponseTimeMillis) == Some(ThresholdLevel::OK)
                && level(s, p, RuntimeMetric::ErrorRatePercent) == Some(ThresholdLevel::OK)
        })
    })
    .await;
    // Slow again within the cooldown: Warning again, but no second run.
    control(SLOW, "delay_ms=800");
    let again = wait_status(&world, "Warning again", Duration::from_secs(60), |s| {
        level(s, "slow", RuntimeMetric::ResponseTimeMillis) == Some(ThresholdLevel::Warning)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let api: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    let last = api.get("latency").await.unwrap().status.unwrap().last_run.unwrap();
    assert_eq!(last.id, run.id, "the cooldown holds a second firing back");
    assert_eq!(again.last_run.map(|r| r.id), Some(run.id));
    // The capture reading an HTML page says why, pod by pod, and has no figures.
    let api: Api<ProfileCapture> = Api::namespaced(world.client.clone(), NS);
    let broken = api.get("behind-login").await.unwrap().status.unwrap_or_default();
    assert_eq!(broken.pods.len(), 2, "{broken:?}");
    for p in &broken.pods {
        let why = p.metrics_error.as_deref().unwrap_or_default();
        assert!(why.starts_with("not the Prometheus text format: line 1"), "{p:?}");
        assert_eq!((p.p99_latency_millis, p.error_rate_percent), (None, None), "{p:?}");
    }
    let note = broken.requests.and_then(|r| r.note).unwrap_or_default();
    assert!(note.contains("metricsError"), "{note}");
    control(FAST, "rps=0");
    control(SLOW, "rps=0");
}
