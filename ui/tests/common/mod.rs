//! What the browser's tests share: an in-memory backend over a capture `shop/checkout`
//! whose runs' files one agent holds, real CPU profiles of the Go target, and a profile
//! whose function names are an app's attempts to become markup.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use biometrics_agent_api::{CaptureFiles, FileEntry, PodFiles, RunFiles};
use biometrics_crds::v1alpha1::ProfileCapture;
use biometrics_pprof::proto;
use biometrics_test_support::{GoTarget, free_port, http_request};
use biometrics_ui::{Backend, BackendError, FileRef, HeldFiles, UiOptions};
use bytes::Bytes;
use prost::Message;
use serde_json::json;
use sha2::Digest;

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Function names an app could choose, each an attempt to become markup.
pub const HOSTILE: [&str; 2] =
    ["<script>document.title='pwned'</script>", "\"><img src=x onerror=\"document.title='pwned'\">"];

/// A capture whose runs' files are held by the agent `web-0`.
#[derive(Clone)]
pub struct Volume {
    capture: ProfileCapture,
    held: Vec<HeldFiles>,
    files: Arc<HashMap<(String, String), Bytes>>,
}

impl Backend for Volume {
    async fn captures(&self) -> Result<Vec<ProfileCapture>, BackendError> {
        Ok(vec![self.capture.clone()])
    }

    async fn capture(&self, namespace: &str, name: &str) -> Result<Option<ProfileCapture>, BackendError> {
        Ok((namespace == "shop" && name == "checkout").then(|| self.capture.clone()))
    }

    async fn files(&self, _: &ProfileCapture) -> Result<(Vec<HeldFiles>, Vec<String>), BackendError> {
        Ok((self.held.clone(), vec![]))
    }

    async fn fetch(&self, holder: &str, file: &FileRef) -> Result<Bytes, BackendError> {
        assert_eq!(holder, "web-0", "fetched from the agent that listed it");
        self.files
            .get(&(file.run.clone(), file.pod.clone()))
            .cloned()
            .ok_or_else(|| BackendError::NotFound(file.file.clone()))
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `shop/checkout` with `status`, and runs in order (oldest first), each with its pods'
/// CPU profiles.
pub fn volume(status: serde_json::Value, runs: &[(&str, Vec<(&str, Bytes)>)]) -> Volume {
    let capture: ProfileCapture = serde_json::from_value(json!({
        "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "checkout"}}, "target": {"port": 6060}, "profiles": ["cpu"]},
        "status": status
    }))
    .expect("a ProfileCapture");
    let mut files = HashMap::new();
    let listing = CaptureFiles {
        namespace: "shop".into(),
        capture: "checkout".into(),
        runs: runs
            .iter()
            .enumerate()
            .map(|(i, (run, pods))| RunFiles {
                run: (*run).into(),
                modified: format!("2026-11-29T0{}:00:00Z", 8 + i),
                pods: pods
                    .iter()
                    .map(|(pod, bytes)| {
                        files.insert(((*run).to_owned(), (*pod).to_owned()), bytes.clone());
                        PodFiles {
                            pod: (*pod).into(),
                            files: vec![FileEntry {
                                name: "cpu.pb.gz".into(),
                                bytes: bytes.len() as u64,
                                sha256: sha256(bytes),
                                modified: format!("2026-11-29T0{}:00:00Z", 8 + i),
                            }],
                        }
                    })
                    .collect(),
            })
            .collect(),
        skipped: vec![],
    };
    Volume { capture, held: vec![HeldFiles { holder: "web-0".into(), listing }], files: Arc::new(files) }
}

/// The browser over `backend` on a loopback port, with speedscope when installed.
pub fn serve(backend: Volume) -> (SocketAddr, tokio::runtime::Runtime) {
    serve_gated(backend, None)
}

/// The browser in token mode, where the cluster stands in as two accepted tokens:
/// `dev-token` (user `dev`, who may read `shop`) and `other-token` (user `other`, who may
/// read nothing). The operator's test asks a real API server's reviews.
pub fn serve_with_tokens(backend: Volume) -> (SocketAddr, tokio::runtime::Runtime) {
    use biometrics_ui::access::{Access, AccessError, AccessFuture, Viewer};
    struct Tokens;
    impl Access for Tokens {
        fn authenticate<'a>(&'a self, token: &'a str) -> AccessFuture<'a, Viewer> {
            Box::pin(async move {
                match token {
                    "dev-token" | "other-token" => {
                        Ok(Viewer { name: token.trim_end_matches("-token").into(), ..Viewer::default() })
                    }
                    _ => Err(AccessError::Unauthenticated("the cluster did not accept the bearer token".into())),
                }
            })
        }
        fn may_view<'a>(&'a self, viewer: &'a Viewer, namespace: &'a str) -> AccessFuture<'a, bool> {
            Box::pin(async move { Ok(viewer.name == "dev" && namespace == "shop") })
        }
    }
    serve_gated(backend, Some(Arc::new(Tokens)))
}

fn serve_gated(
    backend: Volume,
    access: Option<Arc<dyn biometrics_ui::access::Access>>,
) -> (SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let speedscope = biometrics_test_support::repo_root().join(".tools/speedscope");
    let app = biometrics_ui::router_with_access(backend, UiOptions { speedscope_dir: Some(speedscope) }, access);
    let addr = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });
    (addr, runtime)
}

/// A one-second CPU profile of the target.
pub fn cpu_profile(target: &GoTarget) -> Bytes {
    let (status, body) = http_request(target.addr, "GET", "/debug/pprof/profile?seconds=1", &[], b"");
    assert_eq!(status, 200);
    Bytes::from(body)
}

/// A CPU profile (the Go runtime's sample types) whose two functions have the hostile
/// names, `scale` × 100 ms under the first, all called from the second.
pub fn hostile_profile(scale: i64) -> Bytes {
    let strings = ["", "samples", "count", "cpu", "nanoseconds", HOSTILE[0], HOSTILE[1]];
    let line = |function_id| proto::Line { function_id, ..Default::default() };
    let p = proto::Profile {
        sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }, proto::ValueType { r#type: 3, unit: 4 }],
        function: vec![
            proto::Function { id: 1, name: 5, ..Default::default() },
            proto::Function { id: 2, name: 6, ..Default::default() },
        ],
        location: vec![
            proto::Location { id: 1, line: vec![line(1)], ..Default::default() },
            proto::Location { id: 2, line: vec![line(2)], ..Default::default() },
        ],
        sample: vec![proto::Sample {
            location_id: vec![1, 2],
            value: vec![10 * scale, 100_000_000 * scale],
            label: vec![],
        }],
        string_table: strings.iter().map(|s| (*s).to_owned()).collect(),
        period_type: Some(proto::ValueType { r#type: 3, unit: 4 }),
        period: 10_000_000,
        duration_nanos: 1_000_000_000,
        ..Default::default()
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &p.encode_to_vec()).unwrap();
    Bytes::from(gz.finish().unwrap())
}

/// The hostile names appear as text (escaped in the serialised DOM), never as elements,
/// and no script of theirs ran.
pub fn assert_inert(dom: &str) {
    assert!(dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"), "the name is shown as text: {dom}");
    assert!(dom.contains("\"&gt;&lt;img src=x onerror="), "the name is shown as text: {dom}");
    assert!(!dom.contains("<img src=\"x\""), "no element was made of a name");
    assert!(!dom.contains("<title>pwned</title>"), "no script of the app's ran");
}
