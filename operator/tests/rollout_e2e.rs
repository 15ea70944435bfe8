//! A performance verdict on every rollout, on the local cluster: a Deployment of the Go
//! target with its agent, rolled out four times by kubectl as a user would — a release
//! that burns extra CPU per request in `main.extraHashRounds`, the release that removes
//! it, a change of a label only, and a release whose requests each wait 400 ms more
//! (`ADDED_DELAY_MS`) — and `kubectl describe pcap` says Regressed, Improved, Unchanged
//! and Regressed on the p99 latency, under bounds derived from this machine's noise. The
//! target does its CPU per request (`REQUEST_HASHES`) and sends itself `SELF_RPS`
//! requests per second; the capture reads
//! its metrics, so each side's CPU is divided by the requests its pods answered while
//! they were profiled: a replica starved on a busy machine answers fewer, each costing the
//! same. `GOMAXPROCS=1` keeps the runtime's threads from spreading, and
//! `GODEBUG=asyncpreemptoff=1` keeps Go's asynchronous preemption, which a starved
//! process gets often, from crediting the hashing's samples to `runtime.asyncPreempt`.
//! A StatefulSet release that holds more heap is judged Regressed on the function holding
//! it. `label_only_rollouts_measure_the_noise` (`make rollout-noise`) measures what the
//! default bounds are derived from. Needs root, as the kubelet does.

mod common;

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use biometrics_crds::{
    profile::ProfileType,
    v1alpha1::{BaselineSource, Normalisation, ProfileCapture, RolloutComparison, RolloutStage, RolloutVerdict},
};
use common::*;

fn images() -> String {
    format!(
        "images:\n  example/app: {{command: [{}], args: [-addr, '0.0.0.0:6060', -idle]}}\n  example/agent: {{command: [{}]}}\n",
        biometrics_test_support::go_target_binary().display(),
        biometrics_test_support::workspace_binary("biometrics-agent").display(),
    )
}

/// The app: 2 replicas, both replaced at once (two surge, none unavailable), and new pods
/// count as available only after 4 s, so the old ones outlive most of the baseline's 4 s
/// capture; stopped before it ends, their apps finish the profile in flight and their
/// agents finish the capture and answer its status before they exit, so the baseline is
/// the old pods' own.
fn app() -> String {
    let env = "        env:
        - {name: GOMAXPROCS, value: \"1\"}
        - {name: GODEBUG, value: asyncpreemptoff=1}
        - {name: REQUEST_HASHES, value: \"200\"}
        - {name: SELF_RPS, value: \"100\"}
";
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: app, namespace: {NS}}}
spec:
  replicas: 2
  minReadySeconds: 4
  selector: {{matchLabels: {{app: app}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 2, maxUnavailable: 0}}}}
{}"#,
        profiled_template("app", 10, env, &[])
    )
}

/// Bounds derived from this machine's noise (`docs/operations.md`, "Noise"): label-only
/// rollouts of this app moved its CPU per request by -10 to +31 % on the 2-core development
/// machine (mean +8 %, standard deviation 12 %); the warnings are about 2.5 standard
/// deviations above the mean. The latency bounds are the defaults.
const NOISE_BOUNDS: &str =
    "  regression: {totalPercent: {warning: 40, critical: 80}, functionSharePoints: {warning: 30, critical: 60}}\n";

/// When the test started, for the times it prints.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// The capture watching it: 4 s cpu profiles, 2 s of settle, request counts from the
/// app's metrics, and `regression` (YAML lines under `spec`, none for the defaults).
fn capture(regression: &str) -> String {
    format!(
        r#"
apiVersion: biometrics.io/v1alpha1
kind: ProfileCapture
metadata: {{name: app, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: app}}}}
  target: {{port: 6060, metrics: {{path: /metrics}}}}
  profiles: [cpu]
  duration: 4s
  onRolloutOf: {{kind: Deployment, name: app, settle: 2s}}
{regression}"#
    )
}

/// The cluster with the app rolled out, the capture watching it, and its first revision
/// measured (as the next rollout's baseline, not judged).
async fn watching(regression: &str) -> World {
    STARTED.get_or_init(Instant::now);
    let mut world = World::start_on_cluster(&images()).await;
    world.start_operator();
    world.kubectl(&["apply", "-f", "-"], Some(&app()));
    world.kubectl(&["rollout", "status", "deployment/app", "-n", NS, "--timeout=90s"], None);
    world.kubectl(&["apply", "-f", "-"], Some(&capture(regression)));
    let first = judged(&world, "1").await;
    assert_eq!(first.verdict, None, "{first:?}");
    assert!(!first.candidate.is_empty(), "{first:?}");
    world
}

/// Changes only a label of the pod template: a rollout of the same code.
fn relabel(world: &World, release: &str) {
    let patch = format!(r#"{{"spec":{{"template":{{"metadata":{{"labels":{{"release":"{release}"}}}}}}}}}}"#);
    world.kubectl(&["patch", "deployment/app", "-n", NS, "-p", &patch], None);
}

/// Waits until the newest comparison is of `revision` and judged (or measured, for the
/// first revision), and returns it.
async fn judged(world: &World, revision: &str) -> RolloutComparison {
    judged_where(world, "app", |r| r == revision).await
}

/// Waits until capture `name`'s newest comparison is of a revision `wanted` accepts and
/// judged (or measured, for the first revision), and returns it.
async fn judged_where(world: &World, name: &str, wanted: impl Fn(&str) -> bool) -> RolloutComparison {
    let pc = world
        .wait_capture(name, Duration::from_secs(90), |pc: &ProfileCapture| {
            pc.status
                .as_ref()
                .and_then(|s| s.rollouts.first())
                .is_some_and(|r| wanted(&r.revision) && r.stage == RolloutStage::Judged)
        })
        .await;
    let mut status = pc.status.unwrap();
    // The pods of the run that ended it (the candidate), and why any has no profile.
    if let Some(run) = &status.last_run {
        for p in &run.pods {
            let requests: Vec<Option<f64>> = p.profiles.iter().map(|q| q.requests).collect();
            eprintln!("  {} {}: {:?} requests {requests:?} {:?}", run.id, p.pod, p.result, p.error);
        }
    }
    let comparison = status.rollouts.remove(0);
    let revision = &comparison.revision;
    eprintln!(
        "{:?} revision {revision}: {:?} {:?} (detected {}, rollout seen complete {:?})",
        STARTED.get_or_init(Instant::now).elapsed(),
        comparison.verdict,
        comparison.message,
        comparison.detected_time.0,
        comparison.completed_time.as_ref().map(|t| t.0.to_string()),
    );
    if comparison.changes.iter().any(|c| c.profile_type == ProfileType::Cpu) {
        eprintln!("  {:?}", figures(&comparison));
    }
    comparison
}

/// The figures a comparison is judged on.
#[derive(Debug, Clone, Copy)]
struct Figures {
    /// The cpu total's change, in percent.
    total: f64,
    /// The largest growth of one function, in points of the old total (as the verdict
    /// counts it).
    growth: f64,
    /// Sample records before and after.
    samples: (i64, i64),
    /// The p99 latency's change, in percent, when both sides have it.
    latency: Option<f64>,
}

fn figures(c: &RolloutComparison) -> Figures {
    let cpu = c.changes.iter().find(|p| p.profile_type == ProfileType::Cpu).expect("a cpu comparison");
    let growth = cpu
        .grown
        .iter()
        .map(|f| if cpu.total.before > 0.0 { (f.after - f.before) * 100.0 / cpu.total.before } else { 0.0 })
        .fold(0.0, f64::max);
    Figures {
        total: cpu.total.change_percent.unwrap_or(0.0),
        growth,
        samples: (cpu.samples_before, cpu.samples_after),
        latency: c.latency.as_ref().and_then(|l| l.change_percent),
    }
}

fn describe(world: &World) -> String {
    describe_capture(world, "app")
}

fn describe_capture(world: &World, name: &str) -> String {
    world.kubectl(&["describe", "pcap", name, "-n", NS], None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rollout_gets_a_verdict_in_describe() {
    let world = watching(NOISE_BOUNDS).await;

    // A release burning extra CPU in a named function: 900 rounds, about twice the
    // request's own cost, so taking them out falls by about 63 %, clear of the 40 % bound
    // (600 rounds, a fall of about 53 %, once read -39 %: docs/operations.md, "Noise").
    world.kubectl(&["set", "env", "deployment/app", "-n", NS, "EXTRA_HASH_ROUNDS=900"], None);
    let slower = judged(&world, "2").await;
    assert_eq!(slower.verdict, Some(RolloutVerdict::Regressed), "{slower:#?}\n{}", world.operator_log());
    // Latency and errors read over the profiles themselves: present though the old pods
    // are gone by the time of the verdict.
    assert!(slower.latency.is_some() && slower.error_rate.is_some(), "{slower:#?}");
    assert_eq!(slower.baseline_run.as_deref().map(|r| r.starts_with("b2-")), Some(true), "{slower:?}");
    assert_eq!(slower.baseline_source, Some(BaselineSource::OldPods), "{slower:?}");
    let cpu = &slower.changes[0];
    let grown = cpu.grown.iter().find(|g| g.function == "main.extraHashRounds").expect("the function is named");
    assert!(grown.after_percent > grown.before_percent + 20.0, "{grown:?}");
    let text = describe(&world);
    assert!(text.contains("Regressed") && text.contains("main.extraHashRounds"), "{text}");
    let events = world.kubectl(
        &["get", "events", "-n", NS, "--field-selector", "reason=Regressed", "-o", "jsonpath={.items[*].message}"],
        None,
    );
    assert!(events.contains("revision 2: main.extraHashRounds"), "{events}");

    // The release that takes it out again.
    world.kubectl(&["set", "env", "deployment/app", "-n", NS, "EXTRA_HASH_ROUNDS-"], None);
    let faster = judged(&world, "3").await;
    assert_eq!(faster.verdict, Some(RolloutVerdict::Improved), "{faster:#?}");
    assert!(faster.latency.is_some(), "{faster:#?}");
    assert!(describe(&world).contains("Improved"));

    // A label only: the same code, within the noise bound.
    relabel(&world, "r4");
    let same = judged(&world, "4").await;
    assert_eq!(same.verdict, Some(RolloutVerdict::Unchanged), "{same:#?}");
    assert_eq!(same.changes[0].per, Normalisation::Request, "{same:#?}");
    assert!(same.latency.is_some(), "{same:#?}");
    let columns = world.kubectl(&["get", "pcap", "app", "-n", NS], None);
    assert!(columns.contains("ROLLOUT") && columns.contains("Unchanged"), "{columns}");

    // A release whose requests each wait 400 ms more: the same CPU, a slower p99. (A
    // smaller delay drowns on a busy 2-core machine: the old pods' baseline is taken while
    // the new pods start beside them, and its p99 has measured up to 316 ms there.)
    world.kubectl(&["set", "env", "deployment/app", "-n", NS, "ADDED_DELAY_MS=400"], None);
    let later = judged(&world, "5").await;
    assert_eq!(later.verdict, Some(RolloutVerdict::Regressed), "{later:#?}");
    let latency = later.latency.as_ref().expect("both sides have a p99");
    assert!(latency.after > 400.0 && latency.change_percent.is_some_and(|p| p > 20.0), "{latency:?}");
    let message = later.message.as_deref().unwrap_or_default();
    assert!(message.contains("p99 latency +"), "{message}");
    // The verdict with its p99 numbers, and the latency before and after, in describe.
    let text = describe(&world);
    assert!(message.contains(" ms)") && text.contains(message), "{message}\n{text}");
    assert!(text.contains("Latency:"), "{text}");
}

/// How many label-only rollouts the noise is measured over.
const NOISE_ROLLOUTS: usize = 5;

/// A measurement, not a check of the product: label-only rollouts of the e2e's app, each
/// judged per request, printed with the spread the default `spec.regression` bounds are
/// derived from. Run it with `make rollout-noise`.
#[ignore = "a measurement of this machine's noise: make rollout-noise"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_only_rollouts_measure_the_noise() {
    let world = watching("  regression: {minSamples: 1}\n").await;
    let mut rows = Vec::new();
    for i in 0..NOISE_ROLLOUTS {
        let revision = (i + 2).to_string();
        relabel(&world, &format!("noise-{revision}"));
        let judged = judged(&world, &revision).await;
        assert_eq!(judged.changes.first().map(|c| c.per), Some(Normalisation::Request), "{judged:#?}");
        rows.push(figures(&judged));
    }
    println!("label-only rollouts, cpu per request (4 s captures, 2 replicas):");
    println!(
        "{:>8} {:>14} {:>20} {:>9} {:>9} {:>12}",
        "rollout", "total change", "function growth", "samples", "", "p99 change"
    );
    for (i, f) in rows.iter().enumerate() {
        let latency = f.latency.map_or("-".to_owned(), |l| format!("{l:+.1} %"));
        let (total, growth, (before, after)) = (f.total, f.growth, f.samples);
        println!("{:>8} {total:>+12.1} % {growth:>15.1} pts {before:>9} {after:>9} {latency:>12}", i + 2);
    }
    let most = |f: fn(&Figures) -> f64| rows.iter().map(f).fold(0.0, f64::max);
    println!(
        "largest: total {:.1} %, function growth {:.1} points, fewest samples {}, p99 {:.1} %",
        most(|r| r.total.abs()),
        most(|r| r.growth),
        rows.iter().map(|r| r.samples.0.min(r.samples.1)).min().unwrap_or(0),
        most(|r| r.latency.unwrap_or(0.0).abs()),
    );
}

/// A StatefulSet of the Go target doing nothing but serve, with its agent.
fn store() -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: store, namespace: {NS}}}
spec:
  replicas: 2
  serviceName: store
  selector: {{matchLabels: {{app: store}}}}
{}"#,
        profiled_template("store", 10, "        env: [{name: GOMAXPROCS, value: \"1\"}]\n", &[])
    )
}

/// A StatefulSet's rollout is told by its `updateRevision` and its pods by
/// `controller-revision-hash`, and a heap profile is compared per pod: a release that keeps
/// 64 MiB more live heap in `main.retainMiB` is judged Regressed, naming that function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_release_that_holds_more_heap_is_regressed() {
    STARTED.get_or_init(Instant::now);
    let mut world = World::start_on_cluster(&images()).await;
    world.start_operator();
    world.kubectl(&["apply", "-f", "-"], Some(&store()));
    world.kubectl(&["rollout", "status", "statefulset/store", "-n", NS, "--timeout=90s"], None);
    let capture = format!(
        r#"
apiVersion: biometrics.io/v1alpha1
kind: ProfileCapture
metadata: {{name: store, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: store}}}}
  target: {{port: 6060}}
  profiles: [heap]
  onRolloutOf: {{kind: StatefulSet, name: store, settle: 2s}}
"#
    );
    world.kubectl(&["apply", "-f", "-"], Some(&capture));
    let first = judged_where(&world, "store", |_| true).await;
    assert_eq!(first.verdict, None, "{first:?}");
    let hash = first.revision.strip_prefix("store-").expect("the revision is the ControllerRevision's name").to_owned();

    world.kubectl(&["set", "env", "statefulset/store", "-n", NS, "RETAIN_MB=64"], None);
    let hungrier = judged_where(&world, "store", |r| r != first.revision).await;
    let revision =
        world.kubectl(&["get", "statefulset/store", "-n", NS, "-o", "jsonpath={.status.updateRevision}"], None);
    assert_eq!(hungrier.revision, revision, "{hungrier:#?}");
    assert_eq!(hungrier.verdict, Some(RolloutVerdict::Regressed), "{hungrier:#?}\n{}", world.operator_log());
    let part = revision.strip_prefix("store-").unwrap_or_default();
    assert_ne!(part, hash);
    assert_eq!(
        hungrier.candidate_run.as_deref().map(|r| r.starts_with(&format!("c{part}-"))),
        Some(true),
        "{hungrier:?}"
    );
    let heap = hungrier.changes.iter().find(|c| c.profile_type == ProfileType::Heap).expect("a heap comparison");
    assert_eq!(heap.per, Normalisation::Pod, "{heap:?}");
    assert!(heap.total.change_percent.is_some_and(|p| p > 100.0), "{heap:?}");
    let grown = heap.grown.iter().find(|g| g.function == "main.retainMiB").expect("the function is named");
    assert!(grown.after_percent > grown.before_percent + 50.0, "{grown:?}");
    let text = describe_capture(&world, "store");
    assert!(text.contains("Regressed") && text.contains("main.retainMiB"), "{text}");
}
