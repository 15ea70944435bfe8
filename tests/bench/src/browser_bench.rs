//! The capture browser's analysis: comparing two runs of the large generated profile
//! (fetched, read and diffed with an empty cache) against `go tool pprof -top -base` on the
//! same files, and the run page of a 100-pod run (the run's listing and its top functions
//! merged over every pod, with an empty cache).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use biometrics_agent_api::{CaptureFiles, FileEntry, PodFiles, RunFiles};
use biometrics_crds::v1alpha1::ProfileCapture;
use biometrics_test_support::{free_port, http_request};
use biometrics_ui::{Backend, BackendError, FileRef, HeldFiles, UiOptions};
use bytes::Bytes;

use crate::{LOCALHOST, Scale, best, generated_profile, pprof_tool};

/// One capture `bench/bench` whose runs' files an agent holds in memory.
#[derive(Clone)]
struct Files {
    capture: ProfileCapture,
    held: Vec<HeldFiles>,
    files: Arc<HashMap<(String, String), Bytes>>,
}

impl Backend for Files {
    async fn captures(&self) -> Result<Vec<ProfileCapture>, BackendError> {
        Ok(vec![self.capture.clone()])
    }

    async fn capture(&self, _: &str, _: &str) -> Result<Option<ProfileCapture>, BackendError> {
        Ok(Some(self.capture.clone()))
    }

    async fn files(&self, _: &ProfileCapture) -> Result<(Vec<HeldFiles>, Vec<String>), BackendError> {
        Ok((self.held.clone(), vec![]))
    }

    async fn fetch(&self, _: &str, file: &FileRef) -> Result<Bytes, BackendError> {
        self.files
            .get(&(file.run.clone(), file.pod.clone()))
            .cloned()
            .ok_or_else(|| BackendError::NotFound(file.file.clone()))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs (oldest first), each with its pods' CPU profiles.
fn files(runs: Vec<(String, Vec<(String, Bytes)>)>) -> Files {
    let capture: ProfileCapture = serde_json::from_value(serde_json::json!({
        "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {"selector": {"matchLabels": {"app": "bench"}}, "target": {"port": 6060}, "profiles": ["cpu"]},
        "status": {"phase": "Succeeded"}
    }))
    .expect("a ProfileCapture");
    let mut held_files = HashMap::new();
    let listing = CaptureFiles {
        namespace: "bench".into(),
        capture: "bench".into(),
        runs: runs
            .into_iter()
            .enumerate()
            .map(|(i, (run, pods))| RunFiles {
                modified: format!("2026-11-29T{:02}:00:00Z", i % 24),
                pods: pods
                    .into_iter()
                    .map(|(pod, bytes)| {
                        let entry = FileEntry {
                            name: "cpu.pb.gz".into(),
                            bytes: bytes.len() as u64,
                            sha256: sha256_hex(&bytes),
                            modified: "2026-11-29T00:00:00Z".into(),
                        };
                        held_files.insert((run.clone(), pod.clone()), bytes);
                        PodFiles { pod, files: vec![entry] }
                    })
                    .collect(),
                run,
            })
            .collect(),
        skipped: vec![],
    };
    Files { capture, held: vec![HeldFiles { holder: "agent".into(), listing }], files: Arc::new(held_files) }
}

/// A browser over `backend` with an empty cache, on a loopback port.
fn serve(backend: Files) -> (SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let app = biometrics_ui::router(backend, UiOptions::default());
    let addr = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr)).expect("bind");
    runtime.spawn(async move { axum::serve(listener, app).await });
    (addr, runtime)
}

/// GETs `path`, checks the answer is 200, and returns how long it took and its JSON.
fn timed_get(addr: SocketAddr, path: &str) -> (Duration, serde_json::Value) {
    let started = Instant::now();
    let (status, body) = http_request(addr, "GET", path, &[], b"");
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    (elapsed, serde_json::from_slice(&body).expect("JSON"))
}

pub fn run(dir: &Path, scale: Scale) {
    compare_runs(dir, scale);
    run_page(scale);
}

/// Two runs of the large profile compared, cold (fetched and read) and cached, against
/// `go tool pprof -top -base old new`.
fn compare_runs(dir: &Path, scale: Scale) {
    println!(
        "== capture browser: comparing two runs (goal on the large profile: <= 2 s and >= 4x faster than go tool pprof -top -base)"
    );
    let (functions, samples) = (scale.pick(60_000, 3_000) as u64, scale.pick(300_000, 15_000) as u64);
    let (old, new) = (
        Bytes::from(generated_profile(functions, samples, 0x9E37_79B9_7F4A_7C15)),
        Bytes::from(generated_profile(functions, samples, 0x2545_F491_4F6C_DD1D)),
    );
    let (old_path, new_path) = (dir.join("compare-old.pb.gz"), dir.join("compare-new.pb.gz"));
    std::fs::write(&old_path, &old).expect("write");
    std::fs::write(&new_path, &new).expect("write");
    let backend = files(vec![
        ("r1".into(), vec![("pod-0".into(), old.clone())]),
        ("r2".into(), vec![("pod-0".into(), new.clone())]),
    ]);
    let path = "/api/v1/namespaces/bench/captures/bench/compare?profile=cpu";
    let mut cold = Duration::MAX;
    let mut warm = Duration::MAX;
    let mut rows = 0;
    for _ in 0..scale.pick(3, 1) {
        let (addr, _runtime) = serve(backend.clone());
        let (elapsed, view) = timed_get(addr, path);
        assert_eq!((view["base"].as_str(), view["run"].as_str()), (Some("r1"), Some("r2")), "the last two runs");
        rows = view["rows"].as_array().expect("rows").len();
        assert!(rows > 0, "the comparison has rows");
        cold = cold.min(elapsed);
        warm = warm.min(timed_get(addr, path).0);
    }
    let size = old.len() as f64 / (1024.0 * 1024.0);
    println!(
        "compare two runs ({functions} functions, {samples} samples each, {size:.1} MiB gzipped each; {rows} rows): browser {:.3}s with an empty cache, {:.3}s cached",
        cold.as_secs_f64(),
        warm.as_secs_f64(),
    );
    // pprof takes minutes on the large files: once is enough for the ratio.
    let tool = pprof_tool();
    let (go, _) = best(1, || {
        let mut c = Command::new(&tool);
        c.arg("-top").arg("-base").arg(&old_path).arg(&new_path);
        c
    });
    println!(
        "go tool pprof -top -base on the same files {:.3}s: the browser is {:.1}x faster",
        go.as_secs_f64(),
        go.as_secs_f64() / cold.as_secs_f64()
    );
}

/// The run page of a run of 100 pods: the run's listing, then its top functions merged
/// over every pod (each pod's profile fetched and read, the cache empty), then each pod's.
pub fn run_page(scale: Scale) {
    println!("== capture browser: the run page of a 100-pod run (goal: answers in under 1 s)");
    let pods = scale.pick(100, 10);
    let (functions, samples) = (scale.pick(2_000, 500) as u64, scale.pick(2_000, 500) as u64);
    let profiles: Vec<(String, Bytes)> = (0..pods)
        .map(|i| (format!("pod-{i:03}"), Bytes::from(generated_profile(functions, samples, 1_000 + i as u64))))
        .collect();
    let size: usize = profiles.iter().map(|(_, b)| b.len()).sum();
    let (addr, _runtime) = serve(files(vec![("r1".into(), profiles)]));
    let run = "/api/v1/namespaces/bench/captures/bench/runs/r1";
    let (listing, detail) = timed_get(addr, run);
    assert_eq!(detail["pods"].as_array().expect("pods").len(), pods);
    let (merged, top) = timed_get(addr, &format!("{run}/top?profile=cpu"));
    assert_eq!(top["pods"].as_array().expect("pods").len(), pods);
    let started = Instant::now();
    for i in 0..pods {
        timed_get(addr, &format!("{run}/top?profile=cpu&pod=pod-{i:03}"));
    }
    let each = started.elapsed();
    println!(
        "run page, {pods} pods ({functions} functions, {samples} samples, {:.1} MiB of profiles in all): run listing {:.3}s, top merged over every pod {:.3}s with an empty cache (page answered in {:.3}s); then each pod's top {:.1} ms on average (cached)",
        size as f64 / (1024.0 * 1024.0),
        listing.as_secs_f64(),
        merged.as_secs_f64(),
        (listing + merged).as_secs_f64(),
        each.as_secs_f64() * 1e3 / pods as f64
    );
}
