//! What the plugin's tests run against: the capture browser's real router in-process over
//! an in-memory backend holding real profiles of the Go target (one backend can serve wrong
//! bytes for a file, fail to reach its agents, or refuse the caller), and the real
//! `kubectl-biometrics` binary.
#![allow(dead_code)]

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::{Command, Output},
    sync::{Arc, OnceLock},
};

use biometrics_agent_api::{CaptureFiles, FileEntry, PodFiles, RunFiles};
use biometrics_crds::v1alpha1::ProfileCapture;
use biometrics_test_support::{GoTarget, free_port, http_request};
use biometrics_ui::{Backend, BackendError, FileRef, HeldFiles, UiOptions};
use bytes::Bytes;
use serde_json::json;
use sha2::Digest;

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const NS: &str = "shop";
pub const PODS: [&str; 2] = ["web-0", "web-1"];
/// Runs of `checkout`, newest first.
pub const RUNS: [&str; 2] = ["r2", "r1"];

pub fn sha256(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Real profiles of the Go target: a CPU profile per run and pod, and a heap profile of
/// web-0 in r2. Taken once per test binary (each CPU profile samples for a second).
pub struct Profiles {
    /// (run, pod, file) → bytes.
    pub files: HashMap<(String, String, String), Bytes>,
}

impl Profiles {
    pub fn get(&self, run: &str, pod: &str, file: &str) -> &Bytes {
        &self.files[&(run.to_owned(), pod.to_owned(), file.to_owned())]
    }
}

pub fn profiles() -> &'static Profiles {
    static PROFILES: OnceLock<Profiles> = OnceLock::new();
    PROFILES.get_or_init(|| {
        let target = GoTarget::start(SocketAddr::new(LOCALHOST, free_port(LOCALHOST)));
        let take = |path: &str| {
            let (status, body) = http_request(target.addr, "GET", path, &[], b"");
            assert_eq!(status, 200, "{path}");
            Bytes::from(body)
        };
        let mut files = HashMap::new();
        for run in RUNS.iter().rev() {
            for pod in PODS {
                files.insert(
                    ((*run).to_owned(), pod.to_owned(), "cpu.pb.gz".to_owned()),
                    take("/debug/pprof/profile?seconds=1"),
                );
            }
        }
        files.insert(("r2".into(), "web-0".into(), "heap.pb.gz".into()), take("/debug/pprof/heap"));
        Profiles { files }
    })
}

/// A capture browser's view of the cluster, in memory.
#[derive(Clone)]
pub struct Memory {
    pub captures: Vec<ProfileCapture>,
    /// Capture name → what the agents hold of it.
    pub held: HashMap<String, Vec<HeldFiles>>,
    /// (run, pod, file) → bytes served.
    pub files: Arc<HashMap<(String, String, String), Bytes>>,
    /// Captures whose agents cannot be reached (502).
    pub unreachable: HashSet<String>,
    /// Captures the caller may not see (403).
    pub forbidden: HashSet<String>,
}

impl Backend for Memory {
    async fn captures(&self) -> Result<Vec<ProfileCapture>, BackendError> {
        Ok(self.captures.clone())
    }

    async fn capture(&self, namespace: &str, name: &str) -> Result<Option<ProfileCapture>, BackendError> {
        if self.forbidden.contains(name) {
            return Err(BackendError::Forbidden(format!(
                "profilecaptures.biometrics.io \"{name}\" is forbidden: User \"dev\" cannot get resource \"profilecaptures\" in the namespace \"{namespace}\""
            )));
        }
        Ok(self
            .captures
            .iter()
            .find(|c| c.metadata.namespace.as_deref() == Some(namespace) && c.metadata.name.as_deref() == Some(name))
            .cloned())
    }

    async fn files(&self, pc: &ProfileCapture) -> Result<(Vec<HeldFiles>, Vec<String>), BackendError> {
        let name = pc.metadata.name.clone().unwrap_or_default();
        if self.unreachable.contains(&name) {
            return Err(BackendError::Unreachable("agent web-0 (10.0.0.7:9477): connection refused".into()));
        }
        Ok((self.held.get(&name).cloned().unwrap_or_default(), vec![]))
    }

    async fn fetch(&self, _holder: &str, file: &FileRef) -> Result<Bytes, BackendError> {
        self.files
            .get(&(file.run.clone(), file.pod.clone(), file.file.clone()))
            .cloned()
            .ok_or_else(|| BackendError::NotFound(file.file.clone()))
    }
}

fn capture(name: &str, status: serde_json::Value) -> ProfileCapture {
    serde_json::from_value(json!({
        "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "target": {"port": 6060}, "profiles": ["cpu", "heap"]},
        "status": status
    }))
    .expect("a ProfileCapture")
}

/// `shop/checkout` with runs r1 and r2 of pods web-0 and web-1 (r2 the status's last run,
/// r1 known from its history); `shop/fresh` that has not run; `shop/broken` whose agents
/// cannot be reached; `shop/secret` the caller may not see. `corrupt` files are listed
/// with their true SHA-256 but served with one byte changed.
pub fn backend(corrupt: &[(&str, &str, &str)]) -> Memory {
    let profiles = profiles();
    let succeeded = |run: &str, start: &str| json!({"id": run, "trigger": "Schedule", "startTime": start, "result": "Succeeded", "podsSucceeded": 2, "podsFailed": 0});
    let checkout = capture(
        "checkout",
        json!({
            "phase": "Succeeded", "selectedPods": 2,
            "lastRun": {"id": "r2", "trigger": "Schedule", "startTime": "2026-11-29T10:00:00Z", "result": "Succeeded",
                "pods": PODS.iter().map(|p| json!({"pod": p, "result": "Succeeded"})).collect::<Vec<_>>()},
            "history": [succeeded("r2", "2026-11-29T10:00:00Z"), succeeded("r1", "2026-11-29T09:00:00Z")]
        }),
    );
    let mut runs: Vec<RunFiles> = RUNS
        .iter()
        .map(|run| RunFiles {
            run: (*run).into(),
            modified: "2026-11-29T10:00:00Z".into(),
            pods: PODS
                .iter()
                .map(|pod| PodFiles {
                    pod: (*pod).into(),
                    files: profiles
                        .files
                        .iter()
                        .filter(|((r, p, _), _)| r == run && p == pod)
                        .map(|((_, _, name), bytes)| FileEntry {
                            name: name.clone(),
                            bytes: bytes.len() as u64,
                            sha256: sha256(bytes),
                            modified: "2026-11-29T10:00:00Z".into(),
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    runs.sort_by(|a, b| a.run.cmp(&b.run));
    let listing = |name: &str, runs: Vec<RunFiles>| {
        vec![HeldFiles {
            holder: "web-0".into(),
            listing: CaptureFiles { namespace: NS.into(), capture: name.into(), runs, skipped: vec![] },
        }]
    };
    let mut files = profiles.files.clone();
    for (run, pod, file) in corrupt {
        let key = ((*run).to_owned(), (*pod).to_owned(), (*file).to_owned());
        let mut bytes = files[&key].to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        files.insert(key, Bytes::from(bytes));
    }
    Memory {
        captures: vec![
            checkout,
            capture("fresh", json!({"phase": "Pending"})),
            capture("broken", json!({"phase": "Succeeded"})),
            capture("secret", json!({})),
        ],
        held: HashMap::from([
            ("checkout".to_owned(), listing("checkout", runs)),
            ("fresh".to_owned(), listing("fresh", vec![])),
        ]),
        files: Arc::new(files),
        unreachable: HashSet::from(["broken".to_owned()]),
        forbidden: HashSet::from(["secret".to_owned()]),
    }
}

/// The browser's router on a free loopback port, served until the runtime is dropped.
pub fn serve(router: axum::Router) -> (String, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let addr = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
    runtime.spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), runtime)
}

/// The browser over `backend`.
pub fn serve_browser(backend: Memory) -> (String, tokio::runtime::Runtime) {
    serve(biometrics_ui::router(backend, UiOptions::default()))
}

/// The browser in token mode, where the cluster stands in as one accepted token, `dev-token`
/// (user `dev`), allowed in `shop` only; the operator's test runs it against a real API
/// server's TokenReview and SubjectAccessReview.
pub fn serve_browser_with_token(backend: Memory) -> (String, tokio::runtime::Runtime) {
    use biometrics_ui::access::{Access, AccessError, AccessFuture, Viewer};
    struct OneToken;
    impl Access for OneToken {
        fn authenticate<'a>(&'a self, token: &'a str) -> AccessFuture<'a, Viewer> {
            Box::pin(async move {
                match token {
                    "dev-token" => Ok(Viewer { name: "dev".into(), ..Viewer::default() }),
                    _ => Err(AccessError::Unauthenticated("the cluster did not accept the bearer token".into())),
                }
            })
        }
        fn may_view<'a>(&'a self, _viewer: &'a Viewer, namespace: &'a str) -> AccessFuture<'a, bool> {
            Box::pin(async move { Ok(namespace == NS) })
        }
    }
    serve(biometrics_ui::router_with_access(backend, UiOptions::default(), Some(std::sync::Arc::new(OneToken))))
}

/// The plugin's outcome: exit code, stdout, stderr.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts exit code 1 with exactly one line on stderr, `error: <expected>`.
    pub fn assert_error(&self, expected: &str) {
        assert_eq!(self.code, 1, "{self:?}");
        assert_eq!(self.stderr, format!("error: {expected}\n"), "{self:?}");
    }

    /// Asserts exit code 1 with one error line, `error: <expected>`, last on stderr (after
    /// what the command said it was doing).
    pub fn assert_last_error(&self, expected: &str) {
        assert_eq!(self.code, 1, "{self:?}");
        assert_eq!(self.stderr.lines().last(), Some(format!("error: {expected}").as_str()), "{self:?}");
        assert_eq!(self.stderr.lines().filter(|l| l.starts_with("error: ")).count(), 1, "{self:?}");
    }

    pub fn assert_ok(&self) {
        assert_eq!(self.code, 0, "{self:?}");
    }
}

/// The plugin binary, with no kubeconfig or browser from the environment unless given.
pub fn plugin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-biometrics"));
    cmd.env_remove("BIOMETRICS_UI").env("KUBECONFIG", "/nonexistent/kubeconfig");
    cmd
}

/// Runs the plugin with `args` to completion.
pub fn run(args: &[&str]) -> Run {
    plugin().args(args).output().expect("the plugin runs").into()
}
