//! The operator at scale: 500 ProfileCaptures selecting 5,000 pods in the test API server,
//! the agents answered by an in-process responder so the operator is what is measured.
//! Reports the operator's peak RSS and the time from the first apply to every status
//! written (goals: under 100 MiB and under 30 s). Then, with CachePolicies (each with a
//! password Secret) running beside the captures, the Kubernetes API requests per minute the
//! operator makes at steady state, read from the API server's `apiserver_request_total`.
//! `BIOMETRICS_BENCH_OPERATOR` names another operator binary to measure (an older build, to
//! compare).

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use axum::{Json, Router, routing::get, routing::post};
use biometrics_agent_api::{
    AppliedPolicy, CaptureState, CaptureStatus, EnforceResponse, ProfileOutcome, RetentionResponse, RuntimeSample,
    StatsResponse, TopEntry,
};
use biometrics_test_support::{ChildGuard, free_port, http_request, wait_for_listener};
use serde_json::{Value, json};

fn finished(id: String) -> CaptureStatus {
    let top = (0..5)
        .map(|i| TopEntry {
            function: format!("main.work{i}"),
            flat: 100 - i,
            flat_percent: 10.0,
            cum: 200,
            cum_percent: 20.0,
        })
        .collect();
    CaptureStatus {
        id,
        state: CaptureState::Succeeded,
        started_at: "2026-01-01T00:00:00Z".into(),
        finished_at: Some("2026-01-01T00:00:01Z".into()),
        error: None,
        waiting: None,
        profiles: vec![ProfileOutcome {
            profile_type: Some(biometrics_crds::profile::ProfileType::Heap),
            path: Some("ns/c/run/pod/heap.pb.gz".into()),
            bytes: Some(1024),
            sha256: Some("0".repeat(64)),
            sample_type: Some("inuse_space/bytes".into()),
            total: Some(1000),
            samples: Some(10),
            top,
            ..Default::default()
        }],
    }
}

/// Answers every agent call at once, for any pod.
fn responder(runtime: &tokio::runtime::Runtime) -> SocketAddr {
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind responder");
    let addr = listener.local_addr().expect("address");
    let app = Router::new()
        .route(
            "/v1/captures",
            post(|Json(body): Json<Value>| async move {
                (axum::http::StatusCode::ACCEPTED, Json(finished(body["id"].as_str().unwrap_or_default().into())))
            }),
        )
        .route(
            "/v1/captures/{id}",
            get(|axum::extract::Path(id): axum::extract::Path<String>| async move { Json(finished(id)) }),
        )
        .route(
            "/v1/runtime",
            get(|| async {
                Json(RuntimeSample {
                    goroutines: Some(10),
                    memory_percent: Some(20.0),
                    gc_per_second: Some(1.0),
                    ..Default::default()
                })
            }),
        )
        .route("/v1/retention", post(|| async { Json(RetentionResponse { removed: vec![] }) }))
        .route("/v1/cache/enforce", post(|| async { Json(EnforceResponse::default()) }))
        .route(
            "/v1/cache/stats",
            post(|| async {
                Json(StatsResponse { reachable: true, ping_latency_millis: Some(0.5), ..StatsResponse::default() })
            }),
        )
        .route("/v1/cache/app-policy", axum::routing::put(|Json(p): Json<AppliedPolicy>| async move { Json(p) }));
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn api(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &Value) -> (u16, Value) {
    let (status, bytes) =
        http_request(addr, method, path, &[("Content-Type", content_type)], body.to_string().as_bytes());
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn rss_peak(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap_or(0))
            })
        })
        .unwrap_or(0)
        * 1024
}

/// The operator scale benchmark.
pub fn run(dir: &Path, scale: crate::Scale) {
    let (captures, pods_per_capture) = (scale.pick(500, 20), scale.pick(10, 5));
    println!(
        "== operator: {captures} ProfileCaptures selecting {} pods (goals: peak RSS < 100 MiB, all statuses written < 30 s)",
        captures * pods_per_capture
    );
    let root = biometrics_test_support::repo_root();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let agents = responder(&runtime);
    let kubeconfig = dir.join("kubeconfig");
    let mut server = ChildGuard::spawn(
        "test-apiserver",
        Command::new(crate::bin_dir().join("test-apiserver"))
            .args(["--listen", "127.0.0.1:0", "--controllers=false", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--create")
            .arg(root.join("crds/yaml/profilecapture.yaml"))
            .arg("--create")
            .arg(root.join("crds/yaml/cachepolicy.yaml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.child_mut().stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("LISTEN line");
    let apiserver: SocketAddr = line.trim().trim_start_matches("LISTEN ").parse().expect("address");
    for ns in ["shop", "biometrics-system"] {
        api(apiserver, "POST", "/api/v1/namespaces", "application/json", &json!({"metadata": {"name": ns}}));
    }
    for i in 0..captures * pods_per_capture {
        let name = format!("pod-{i:05}");
        let pod = json!({
            "metadata": {"name": name, "labels": {"group": format!("g{}", i / pods_per_capture), "biometrics.io/agent": "true"}, "annotations": {"biometrics.io/agent-port": agents.port().to_string()}},
            "spec": {"containers": [{"name": "app", "image": "a"}, {"name": "biometrics-agent", "image": "b"}]}
        });
        assert_eq!(api(apiserver, "POST", "/api/v1/namespaces/shop/pods", "application/json", &pod).0, 201);
        let status = json!({"status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(
            api(
                apiserver,
                "PATCH",
                &format!("/api/v1/namespaces/shop/pods/{name}/status"),
                "application/merge-patch+json",
                &status
            )
            .0,
            200
        );
    }
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1".parse().expect("ip"))));
    let binary = std::env::var_os("BIOMETRICS_BENCH_OPERATOR")
        .map_or_else(|| crate::bin_dir().join("biometrics-operator"), std::path::PathBuf::from);
    let operator = ChildGuard::spawn(
        "biometrics-operator",
        Command::new(&binary)
            .args(["--metrics-addr", &metrics.to_string(), "--namespace", "biometrics-system", "--identity", "bench"])
            .args(["--ui-addr", "off"])
            .env("KUBECONFIG", &kubeconfig)
            .env("BIOMETRICS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_listener(metrics, Duration::from_secs(10));
    let started = Instant::now();
    for i in 0..captures {
        let capture = json!({
            "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
            "metadata": {"name": format!("capture-{i:03}")},
            "spec": {"selector": {"matchLabels": {"group": format!("g{i}")}}, "target": {"port": 6060}, "profiles": ["heap"]}
        });
        assert_eq!(
            api(
                apiserver,
                "POST",
                "/apis/biometrics.io/v1alpha1/namespaces/shop/profilecaptures",
                "application/json",
                &capture
            )
            .0,
            201
        );
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let (_, list) = api(
            apiserver,
            "GET",
            "/apis/biometrics.io/v1alpha1/namespaces/shop/profilecaptures",
            "application/json",
            &Value::Null,
        );
        let succeeded = list["items"].as_array().map_or(0, |items| {
            items.iter().filter(|c| c.pointer("/status/phase").and_then(Value::as_str) == Some("Succeeded")).count()
        });
        if succeeded == captures {
            break started.elapsed();
        }
        assert!(Instant::now() < deadline, "only {succeeded} of {captures} captures finished in 300 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    let peak = rss_peak(operator.pid());
    println!(
        "{captures} captures x {pods_per_capture} pods: every status written {:.1} s after the first apply (goal < 30 s); operator peak RSS {:.1} MiB (goal < 100 MiB)",
        done.as_secs_f64(),
        peak as f64 / (1024.0 * 1024.0)
    );
    steady_state_requests(apiserver, scale, pods_per_capture);
}

/// Adds CachePolicies with a password Secret each, lets everything settle, then reports the
/// API requests per minute over a quiet window (the benchmark itself sends none then).
fn steady_state_requests(apiserver: SocketAddr, scale: crate::Scale, pods_per_capture: usize) {
    let policies = scale.pick(50, 5);
    let (settle, window) =
        (Duration::from_secs(scale.pick(20, 10) as u64), Duration::from_secs(scale.pick(60, 20) as u64));
    for i in 0..policies {
        let secret = json!({"metadata": {"name": format!("redis-{i:03}")}, "stringData": {"password": "bench"}});
        assert_eq!(api(apiserver, "POST", "/api/v1/namespaces/shop/secrets", "application/json", &secret).0, 201);
        let policy = json!({
            "apiVersion": "biometrics.io/v1alpha1", "kind": "CachePolicy",
            "metadata": {"name": format!("cache-{i:03}")},
            "spec": {"selector": {"matchLabels": {"group": format!("g{i}")}}, "keyPrefix": format!("p{i}:"),
                     "redis": {"address": "127.0.0.1:6379", "passwordSecretRef": {"name": format!("redis-{i:03}")}},
                     "strategy": {"type": "LRU"}}
        });
        let path = "/apis/biometrics.io/v1alpha1/namespaces/shop/cachepolicies";
        assert_eq!(api(apiserver, "POST", path, "application/json", &policy).0, 201);
    }
    std::thread::sleep(settle);
    let before = request_counts(apiserver);
    std::thread::sleep(window);
    let after = request_counts(apiserver);
    let per_minute = |n: u64| n as f64 * 60.0 / window.as_secs_f64();
    let mut rates: Vec<(String, f64)> = after
        .iter()
        .map(|(k, n)| (k.clone(), per_minute(n - before.get(k).copied().unwrap_or(0))))
        .filter(|(_, r)| *r > 0.0)
        .collect();
    rates.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = rates.iter().map(|(_, r)| r).sum();
    let detail: Vec<String> = rates.iter().take(6).map(|(k, r)| format!("{k} {r:.0}")).collect();
    println!(
        "steady state with {policies} CachePolicies (password Secrets) beside the captures ({} pods each): {total:.0} Kubernetes API requests per minute ({})",
        pods_per_capture,
        detail.join(", ")
    );
}

/// `apiserver_request_total` by "verb resource".
fn request_counts(apiserver: SocketAddr) -> std::collections::BTreeMap<String, u64> {
    let (_, body) = http_request(apiserver, "GET", "/metrics", &[], b"");
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.strip_prefix("apiserver_request_total{verb=\""))
        .filter_map(|l| {
            let (verb, rest) = l.split_once("\",resource=\"")?;
            let (resource, n) = rest.split_once("\"} ")?;
            Some((format!("{verb} {resource}"), n.trim().parse().ok()?))
        })
        .collect()
}
