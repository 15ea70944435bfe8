//! Every spec field of both custom resources does something: walked from the generated
//! schema, each field is changed alone on a full spec, and what the operator's decisions
//! make of the spec must change with it. A field that only describes is listed in
//! [`INFORMATIONAL`] and its description says so. A field added to either kind without a
//! change below fails this test, so no field can be accepted and silently ignored.

use std::collections::BTreeMap;

use biometrics_agent_api::RuntimeSample;
use biometrics_crds::{
    selector::PodSelector,
    v1alpha1::{
        CachePolicy, InvalidationResult, InvalidationStatus, PodRuntime, ProfileCapture, ProfileCaptureStatus,
        RedisHealth, RunResult, RunTrigger, TriggerFire, WorkloadKind,
    },
};
use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    CustomResourceExt,
    runtime::{reflector, watcher},
};
use serde_json::{Value, json};

use crate::{
    cache::decide as cache,
    capture::decide::{self as capture, DueRun},
    pods::{self, PodInfo, WatchedPod},
};

/// Fields that change nothing the operator does, by design; each one's description must
/// say it is informational.
const INFORMATIONAL: &[&str] = &[];

const NS: &str = "shop";

fn now() -> Timestamp {
    "2026-01-01T00:15:00Z".parse().unwrap()
}

/// Every leaf field under `schema` (objects are walked, list items as `[]`), with its
/// description.
fn leaves(schema: &Value, path: &str, out: &mut Vec<(String, String)>) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            let child_path = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
            leaves(child, &child_path, out);
        }
        return;
    }
    if let Some(items) = schema.get("items").filter(|i| i.get("properties").is_some()) {
        leaves(items, &format!("{path}[]"), out);
        return;
    }
    let description = schema.get("description").and_then(Value::as_str).unwrap_or_default();
    out.push((path.to_owned(), description.to_owned()));
}

fn spec_fields(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Vec<(String, String)> {
    let schema =
        serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
            .unwrap();
    let mut out = Vec::new();
    leaves(&schema["properties"]["spec"], "", &mut out);
    out
}

/// Sets `path` (dotted; `[]` is the list's first item) in `spec` to `value`.
fn set(spec: &mut Value, path: &str, value: Value) {
    let mut node = spec;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (name, item) = part.strip_suffix("[]").map_or((*part, false), |n| (n, true));
        let last = i + 1 == parts.len();
        if last && !item {
            node[name] = value;
            return;
        }
        node = &mut node[name];
        if item {
            node = &mut node[0];
        }
    }
}

/// The pods both kinds select from: four `app=api,tier=web`, one `app=api,tier=batch`,
/// one `app=other,tier=web`.
fn pods() -> Vec<PodInfo> {
    let (store, mut writer) = reflector::store::<WatchedPod>();
    let labelled = [
        ("api-0", "api", "web"),
        ("api-1", "api", "web"),
        ("api-2", "api", "web"),
        ("api-3", "api", "web"),
        ("batch-0", "api", "batch"),
        ("other-0", "other", "web"),
    ];
    for (i, (name, app, tier)) in labelled.into_iter().enumerate() {
        let pod: WatchedPod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS, "labels": {"app": app, "tier": tier}},
            "spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "1Gi"}}}, {"name": "biometrics-agent"}]},
            "status": {"phase": "Running", "podIP": format!("10.0.0.{}", i + 1),
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        writer.apply_watcher_event(&watcher::Event::Apply(pod));
    }
    pods::pods_in(&store, NS, None, 9477)
}

fn capture_spec() -> Value {
    json!({
        "selector": {"matchLabels": {"app": "api"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]},
        "target": {"port": 6060, "basePath": "/debug/pprof", "metrics": {
            "port": 8080, "path": "/metrics",
            "latency": {"histogram": "http_request_duration_seconds"},
            "requests": {"counter": "http_requests_total"},
            "errors": {"label": "code", "values": "5.."},
            "matchLabels": {"handler": "/checkout"},
            "window": "1m"
        }},
        "profiles": ["cpu", "heap"],
        "duration": "30s",
        "schedule": "*/10 * * * *",
        "suspend": false,
        "concurrencyPolicy": "Forbid",
        "maxPods": 3,
        "retention": {"keepRuns": 5, "historyLimit": 10, "deleteOnRemoval": false},
        "thresholds": {
            "memoryPercent": {"warning": 70.0, "critical": 90.0},
            "goroutines": {"warning": 1000.0, "critical": 5000.0},
            "gcPerSecond": {"warning": 10.0, "critical": 50.0},
            "responseTimeMillis": {"warning": 500.0, "critical": 2000.0, "quantile": "p99"},
            "errorRatePercent": {"warning": 1.0, "critical": 5.0}
        },
        "triggers": [{"metric": "goroutines", "level": "Warning", "profiles": ["goroutine"], "cooldown": "10m"}],
        "onRolloutOf": {"kind": "Deployment", "name": "app", "settle": "2m"},
        "regression": {
            "totalPercent": {"warning": 15.0, "critical": 30.0},
            "functionSharePoints": {"warning": 5.0, "critical": 15.0},
            "latencyPercent": {"warning": 20.0, "critical": 50.0},
            "errorRatePoints": {"warning": 1.0, "critical": 5.0},
            "minSamples": 20
        }
    })
}

/// A change of each ProfileCapture field that a user could make.
fn capture_change(path: &str) -> Option<Value> {
    Some(match path {
        "selector.matchLabels" => json!({"app": "other"}),
        "selector.matchExpressions[].key" => json!("app"),
        "selector.matchExpressions[].operator" => json!("NotIn"),
        "selector.matchExpressions[].values" => json!(["batch"]),
        "target.port" => json!(7070),
        "target.basePath" => json!("/pprof"),
        "target.metrics.port" => json!(9090),
        "target.metrics.path" => json!("/stats"),
        "target.metrics.latency.histogram" => json!("http_server_request_duration_seconds"),
        "target.metrics.requests.counter" => json!("requests_total"),
        "target.metrics.errors.label" => json!("status"),
        "target.metrics.errors.values" => json!("500|503"),
        "target.metrics.matchLabels" => json!({"handler": "/cart"}),
        "target.metrics.window" => json!("5m"),
        "profiles" => json!(["heap"]),
        "duration" => json!("1m"),
        "schedule" => json!("@hourly"),
        "suspend" => json!(true),
        "concurrencyPolicy" => json!("Replace"),
        "maxPods" => json!(2),
        "retention.keepRuns" => json!(2),
        "retention.historyLimit" => json!(3),
        "retention.deleteOnRemoval" => json!(true),
        "thresholds.memoryPercent.warning" => json!(80.0),
        "thresholds.memoryPercent.critical" => json!(74.0),
        "thresholds.goroutines.warning" => json!(2000.0),
        "thresholds.goroutines.critical" => json!(1400.0),
        "thresholds.gcPerSecond.warning" => json!(30.0),
        "thresholds.gcPerSecond.critical" => json!(15.0),
        "thresholds.responseTimeMillis.warning" => json!(800.0),
        "thresholds.responseTimeMillis.critical" => json!(3000.0),
        "thresholds.responseTimeMillis.quantile" => json!("p95"),
        "thresholds.errorRatePercent.warning" => json!(2.0),
        "thresholds.errorRatePercent.critical" => json!(10.0),
        "triggers[].metric" => json!("memoryPercent"),
        "triggers[].level" => json!("Critical"),
        "triggers[].profiles" => json!(["heap"]),
        "triggers[].cooldown" => json!("20m"),
        "onRolloutOf.kind" => json!("StatefulSet"),
        "onRolloutOf.name" => json!("web"),
        "onRolloutOf.settle" => json!("30s"),
        "regression.totalPercent.warning" => json!(25.0),
        "regression.totalPercent.critical" => json!(40.0),
        "regression.functionSharePoints.warning" => json!(10.0),
        "regression.functionSharePoints.critical" => json!(25.0),
        "regression.latencyPercent.warning" => json!(40.0),
        "regression.latencyPercent.critical" => json!(70.0),
        "regression.errorRatePoints.warning" => json!(2.0),
        "regression.errorRatePoints.critical" => json!(8.0),
        "regression.minSamples" => json!(5000),
        _ => return None,
    })
}

/// What the operator decides for a capture, in one scenario: every pod sampled at 75 %
/// memory, 1,500 goroutines and 20 GCs/s, its goroutine trigger last fired 15 minutes ago,
/// the schedule last fired at 00:00, run `g1` still running, twelve runs in the history.
fn capture_behaviour(spec: &Value) -> String {
    let pc: ProfileCapture = serde_json::from_value(json!({
        "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
        "metadata": {"name": "checkout", "namespace": NS, "uid": "3f2a9c1b-0000-4000-8000-000000000000",
            "generation": 1, "creationTimestamp": "2025-12-31T00:00:00Z"},
        "spec": spec
    }))
    .unwrap();
    let now = now();
    let mut out = Vec::new();
    let selector = PodSelector::new(&pc.spec.selector).unwrap();
    let mut eligible = pods::eligible(&pods(), &selector, None);
    eligible.truncate(capture::max_pods(&pc, Some(100)).unwrap_or(usize::MAX));
    let names: Vec<&str> = eligible.iter().map(|p| p.name.as_str()).collect();
    out.push(format!("pods {names:?}"));

    let thresholds = capture::effective_thresholds(&pc.spec.thresholds, &crate::config::Alerting::default());
    let sample = RuntimeSample {
        memory_percent: Some(75.0),
        goroutines: Some(1500),
        gc_per_second: Some(20.0),
        ..Default::default()
    };
    let levels = capture::levels(&sample, &thresholds);
    out.push(format!("levels {levels:?}"));
    // The app's request signals: where they are read from, and what they are judged by.
    out.push(format!("metrics {:?}", crate::capture::signals::metrics_source(&pc.spec)));
    out.push(format!(
        "request thresholds {:?}",
        crate::capture::signals::thresholds(&pc.spec, &crate::config::Alerting::default())
    ));
    let fired_at = Time(now.checked_sub(jiff::SignedDuration::from_mins(15)).unwrap());
    let mut status = ProfileCaptureStatus {
        last_schedule_time: Some(Time("2026-01-01T00:00:00Z".parse().unwrap())),
        pods: names
            .iter()
            .map(|name| PodRuntime { name: (*name).to_owned(), levels: Some(levels.clone()), ..PodRuntime::default() })
            .collect(),
        trigger_fires: names
            .iter()
            .map(|name| TriggerFire {
                pod: (*name).to_owned(),
                metric: biometrics_crds::v1alpha1::RuntimeMetric::Goroutines,
                time: fired_at.clone(),
            })
            .collect(),
        ..Default::default()
    };
    let due = capture::due(&pc, &status, now);
    out.push(format!("due {due:?} next {:?}", capture::next_run(pc.spec.schedule.as_ref(), pc.spec.suspend, now)));
    let fired: Vec<_> = capture::fired_triggers(&pc, &status, names.iter().copied(), now)
        .into_iter()
        .map(|(pod, t)| (pod, t.iter().map(|t| t.metric).collect::<Vec<_>>(), capture::triggered_profiles(&t)))
        .collect();
    out.push(format!("fired {fired:?}"));
    let scheduled = DueRun { trigger: RunTrigger::Schedule, id: "s1".into(), scheduled_for: None };
    out.push(format!("replaces {}", capture::replaces(pc.spec.concurrency_policy, "g1", &scheduled, names.len())));
    for name in &names {
        out.push(format!("{:?}", capture::capture_request(&pc, "s1", name, pc.spec.profiles.clone())));
    }
    out.push(format!("expected end {}", capture::expected_end(&pc, now)));
    let uid = pc.metadata.uid.as_deref().unwrap();
    out.push(format!(
        "on removal {:?}",
        capture::removal_request(NS, "checkout", uid, pc.spec.retention.delete_on_removal)
    ));
    let run = |id: &str| biometrics_crds::v1alpha1::CaptureRun {
        id: id.into(),
        trigger: RunTrigger::Schedule,
        start_time: Time(now),
        completion_time: None,
        result: RunResult::Succeeded,
        fired_by: Vec::new(),
        pods: Vec::new(),
    };
    status.history = (0..12).map(|i| capture::summary(&run(&format!("s{i}")))).collect();
    status.last_run = Some(run("s12"));
    capture::archive(&pc, &mut status);
    out.push(format!("history {}", status.history.len()));
    status.last_run = Some(run("s13"));
    out.push(format!("{:?}", capture::retention_request(&pc, &status, [("checkout", uid)])));
    rollout_behaviour(&pc, now, &mut out);
    out.join("\n")
}

/// What the rollout comparison makes of the spec: the workload watched, when a rollout
/// completed a minute ago is measured, and the verdicts on changes of a cpu profile (150
/// samples a side) whose total grew 20 % or 35 %, whose top function's share grew 7 or 20
/// points, whose latency grew 30 % or 60 %, and whose error rate grew 1.5 or 6 points.
fn rollout_behaviour(pc: &ProfileCapture, now: Timestamp, out: &mut Vec<String>) {
    use biometrics_crds::v1alpha1::{FunctionChange, ProfileChange};

    use crate::capture::rollout;
    let watched = rollout::watched(pc);
    out.push(format!("watched {watched:?}"));
    let state = rollout::WorkloadState {
        revision: "7".into(),
        hash: Some("bbb".into()),
        complete: true,
        paused: false,
        recreate: false,
    };
    let mut entry = rollout::open(&mut [], &state, &[], "3f2a9c1b", now).unwrap().entry;
    entry.completed_time = Some(Time(now.checked_sub(jiff::SignedDuration::from_mins(1)).unwrap()));
    let settle = watched.map(|w| w.settle).unwrap_or_default();
    out.push(format!("candidate {:?}", rollout::candidate_due(&mut entry, &state, settle, now)));
    let change = |total: f64, points: f64| ProfileChange {
        profile_type: biometrics_crds::profile::ProfileType::Cpu,
        sample_type: "cpu/nanoseconds".into(),
        per: biometrics_crds::v1alpha1::Normalisation::Second,
        total: rollout::value_change(100.0, 100.0 + total),
        samples_before: 2000,
        samples_after: 2000,
        grown: vec![FunctionChange {
            function: "main.work".into(),
            before_percent: 10.0,
            after_percent: 10.0 + points,
            before: 10.0,
            after: 10.0 + points,
        }],
        shrunk: Vec::new(),
    };
    let cases = [
        (20.0, 0.0, 0.0, 0.0),
        (35.0, 0.0, 0.0, 0.0),
        (0.0, 7.0, 0.0, 0.0),
        (0.0, 20.0, 0.0, 0.0),
        (0.0, 0.0, 30.0, 0.0),
        (0.0, 0.0, 60.0, 0.0),
        (0.0, 0.0, 0.0, 1.5),
        (0.0, 0.0, 0.0, 6.0),
    ];
    for (total, points, latency, errors) in cases {
        let latency = rollout::value_change(100.0, 100.0 + latency);
        let errors = rollout::value_change(0.5, 0.5 + errors);
        let regression = &pc.spec.regression;
        out.push(format!(
            "{:?}",
            rollout::judge("7", &[change(total, points)], Some(&latency), Some(&errors), regression)
        ));
    }
}

fn cache_spec() -> Value {
    json!({
        "selector": {"matchLabels": {"app": "api"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]},
        "redis": {
            "address": "redis:6379", "database": 0, "tls": false, "cluster": false, "username": "app",
            "passwordSecretRef": {"name": "redis", "key": "password"},
            "caSecretRef": {"name": "redis", "key": "ca.crt"}, "tlsServerName": "redis.shop.svc",
            "poolSize": 10, "dialTimeout": "5s", "readTimeout": "3s", "writeTimeout": "3s"
        },
        "keyPrefix": "users:",
        "strategy": {"type": "LRU", "maxKeys": 1000, "ttl": "1h", "manageServerEvictionPolicy": true, "maxMemory": "512Mi"},
        "invalidations": [{
            "name": "profiles", "pattern": "profile:*", "prefix": "p:", "tags": ["t"], "keys": ["k"],
            "schedule": "@hourly", "onRolloutOf": {"kind": "Deployment", "name": "api"}
        }],
        "thresholds": {
            "memoryPercent": {"warning": 70.0, "critical": 90.0},
            "hitRatioPercent": {"warning": 80.0, "critical": 50.0},
            "evictionsPerSecond": {"warning": 100.0, "critical": 1000.0}
        }
    })
}

/// A change of each CachePolicy field that a user could make.
fn cache_change(path: &str) -> Option<Value> {
    Some(match path {
        "selector.matchLabels" => json!({"app": "other"}),
        "selector.matchExpressions[].key" => json!("app"),
        "selector.matchExpressions[].operator" => json!("NotIn"),
        "selector.matchExpressions[].values" => json!(["batch"]),
        "redis.address" => json!("redis-2:6379"),
        "redis.database" => json!(2),
        "redis.tls" => json!(true),
        "redis.cluster" => json!(true),
        "redis.username" => json!("admin"),
        "redis.passwordSecretRef.name" => json!("redis-rotated"),
        "redis.passwordSecretRef.key" => json!("old"),
        "redis.caSecretRef.name" => json!("redis-rotated"),
        "redis.caSecretRef.key" => json!("old-ca.crt"),
        "redis.tlsServerName" => json!("cache.shop.svc"),
        "redis.poolSize" => json!(4),
        "redis.dialTimeout" => json!("1s"),
        "redis.readTimeout" => json!("10s"),
        "redis.writeTimeout" => json!("10s"),
        "keyPrefix" => json!("orders:"),
        "strategy.type" => json!("LFU"),
        "strategy.maxKeys" => json!(10),
        "strategy.ttl" => json!("5m"),
        "strategy.asyncWrite" => json!(true),
        "strategy.writeBatchSize" => json!(50),
        "strategy.manageServerEvictionPolicy" => json!(false),
        "strategy.maxMemory" => json!("1Gi"),
        "invalidations[].name" => json!("sessions"),
        "invalidations[].pattern" => json!("session:*"),
        "invalidations[].prefix" => json!("s:"),
        "invalidations[].tags" => json!(["u"]),
        "invalidations[].keys" => json!(["j"]),
        "invalidations[].schedule" => json!("*/5 * * * *"),
        "invalidations[].onRolloutOf.kind" => json!("StatefulSet"),
        "invalidations[].onRolloutOf.name" => json!("web"),
        "thresholds.memoryPercent.warning" => json!(80.0),
        "thresholds.memoryPercent.critical" => json!(74.0),
        "thresholds.hitRatioPercent.warning" => json!(55.0),
        "thresholds.hitRatioPercent.critical" => json!(65.0),
        "thresholds.evictionsPerSecond.warning" => json!(200.0),
        "thresholds.evictionsPerSecond.critical" => json!(120.0),
        _ => return None,
    })
}

/// What the operator decides for a policy, in one scenario: the baseline's rule ran at
/// 00:00 on its digest and the Deployment `api`'s revision 3, the StatefulSet `api` is at
/// revision 1, the Deployment `web` has completed revision 4; Redis at 75 % memory, a 60 %
/// hit ratio and 150 evictions/s; the Secrets `redis` (keys `password`, `old`) and
/// `redis-rotated`.
fn cache_behaviour(spec: &Value) -> String {
    let mut policy: CachePolicy = serde_json::from_value(json!({
        "apiVersion": "biometrics.io/v1alpha1", "kind": "CachePolicy",
        "metadata": {"name": "users", "namespace": NS, "uid": "5e1d-77", "generation": 1},
        "spec": spec
    }))
    .unwrap();
    let baseline: CachePolicy = serde_json::from_value(json!({
        "apiVersion": "biometrics.io/v1alpha1", "kind": "CachePolicy",
        "metadata": {"name": "users", "namespace": NS, "uid": "5e1d-77", "generation": 1}, "spec": cache_spec()
    }))
    .unwrap();
    let ran = InvalidationStatus {
        name: "profiles".into(),
        rule_digest: Some(cache::rule_digest(&baseline, &baseline.spec.invalidations[0])),
        last_schedule_time: Some(Time("2026-01-01T00:00:00Z".parse().unwrap())),
        rollout_revision: Some("3".into()),
        result: Some(InvalidationResult::Succeeded),
        ..serde_json::from_value(json!({"name": "profiles"})).unwrap()
    };
    policy.status =
        Some(biometrics_crds::v1alpha1::CachePolicyStatus { invalidations: vec![ran], ..Default::default() });
    let mut out = Vec::new();
    let selector = PodSelector::new(&policy.spec.selector).unwrap();
    let candidates = pods::eligible(&pods(), &selector, None);
    let names: Vec<&str> = candidates.iter().map(|p| p.name.as_str()).collect();
    out.push(format!("candidates {names:?}"));

    let secret = |name: &str, data: &[(&str, &str)]| -> Secret {
        let data: BTreeMap<String, k8s_openapi::ByteString> =
            data.iter().map(|(k, v)| ((*k).to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec()))).collect();
        Secret {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some(data),
            ..Default::default()
        }
    };
    let secrets =
        [secret("redis", &[("password", "p1"), ("old", "p0")]), secret("redis-rotated", &[("password", "p2")])];
    let password = policy.spec.redis.password_secret_ref.as_ref().map(|r| {
        let found = secrets.iter().find(|s| s.metadata.name.as_deref() == Some(r.name.as_str()));
        cache::secret_password(NS, r, found)
    });
    let password = password.transpose().unwrap();
    out.push(format!("password {password:?}"));
    // Which Secret key the CA bundle would be read from (its lookup's outcome names it).
    let ca = policy.spec.redis.ca_secret_ref.as_ref().map(|r| {
        let found = secrets.iter().find(|s| s.metadata.name.as_deref() == Some(r.name.as_str()));
        cache::secret_bytes(NS, &r.name, &r.key, " (redis.caSecretRef)", found).map(|b| b.len())
    });
    out.push(format!("ca {ca:?}"));
    let target = cache::redis_target(&policy, cache::RedisSecrets { password, ca_bundle: None });
    out.push(format!("{target:?} {:?}", target.password.as_ref().map(|p| p.0.clone())));
    out.push(format!("{:?} digest {}", cache::strategy_spec(&policy), cache::strategy_digest(&policy)));
    let rollout = |w: &biometrics_crds::v1alpha1::WorkloadRef| match (w.kind, w.name.as_str()) {
        (WorkloadKind::Deployment, "api") => {
            Some(crate::workload::Rollout { revision: Some("3".into()), complete: true })
        }
        (WorkloadKind::Deployment, "web") => {
            Some(crate::workload::Rollout { revision: Some("4".into()), complete: true })
        }
        (WorkloadKind::StatefulSet, "api") => {
            Some(crate::workload::Rollout { revision: Some("1".into()), complete: true })
        }
        _ => None,
    };
    for plan in cache::plan_rules(&policy, now(), rollout) {
        out.push(format!("{plan:?}"));
    }
    for rule in &policy.spec.invalidations {
        out.push(format!("{:?}", cache::rule_spec(rule)));
    }
    let health: RedisHealth = serde_json::from_value(json!({
        "reachable": true, "memoryPercent": 75.0, "serverHitRatioPercent": 60.0, "evictionsPerSecond": 150.0
    }))
    .unwrap();
    out.push(format!("levels {:?}", cache::levels(&health, &policy.spec.thresholds)));
    out.join("\n")
}

/// Walks `fields`, changing each alone, and returns the fields whose change the behaviour
/// did not show, and the fields the walk had no change for.
fn walk(
    fields: &[(String, String)],
    spec: fn() -> Value,
    change: fn(&str) -> Option<Value>,
    behaviour: fn(&Value) -> String,
) -> (Vec<String>, Vec<String>) {
    let baseline = behaviour(&spec());
    let (mut unchanged, mut uncovered) = (Vec::new(), Vec::new());
    for (path, description) in fields {
        if INFORMATIONAL.contains(&path.as_str()) {
            assert!(description.to_lowercase().contains("informational"), "{path}: its description must say so");
            continue;
        }
        let Some(value) = change(path) else {
            uncovered.push(path.clone());
            continue;
        };
        let mut changed = spec();
        set(&mut changed, path, value);
        if behaviour(&changed) == baseline {
            unchanged.push(path.clone());
        }
    }
    (unchanged, uncovered)
}

#[test]
fn every_profile_capture_spec_field_changes_what_the_operator_does() {
    let fields = spec_fields(&ProfileCapture::crd());
    assert!(fields.len() > 20, "the schema walk found the fields: {fields:?}");
    let (unchanged, uncovered) = walk(&fields, capture_spec, capture_change, capture_behaviour);
    assert!(uncovered.is_empty(), "fields this test does not change (add each here): {uncovered:?}");
    assert!(unchanged.is_empty(), "fields whose change the operator ignores: {unchanged:?}");
}

#[test]
fn every_cache_policy_spec_field_changes_what_the_operator_does() {
    let fields = spec_fields(&CachePolicy::crd());
    assert!(fields.len() > 30, "the schema walk found the fields: {fields:?}");
    let (unchanged, uncovered) = walk(&fields, cache_spec, cache_change, cache_behaviour);
    assert!(uncovered.is_empty(), "fields this test does not change (add each here): {uncovered:?}");
    assert!(unchanged.is_empty(), "fields whose change the operator ignores: {unchanged:?}");
}

#[test]
fn a_field_the_operator_ignored_would_be_caught() {
    // The walk itself: a behaviour blind to the key prefix reports that field.
    fn blind(spec: &Value) -> String {
        let mut spec = spec.clone();
        spec["keyPrefix"] = json!("users:");
        cache_behaviour(&spec)
    }
    let fields = vec![("keyPrefix".to_owned(), String::new()), ("redis.address".to_owned(), String::new())];
    let (unchanged, uncovered) = walk(&fields, cache_spec, cache_change, blind);
    assert_eq!((unchanged, uncovered), (vec!["keyPrefix".to_owned()], vec![]));
    let (_, uncovered) =
        walk(&[("spec.newField".to_owned(), String::new())], cache_spec, cache_change, cache_behaviour);
    assert_eq!(uncovered, ["spec.newField"]);
}
