//! The capture browser in a real headless Chromium, over an in-memory backend holding a real
//! CPU profile of the Go target: every view renders, names chosen by the app stay text, the
//! download is the file, and speedscope draws the profile.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use biometrics_agent_api::{CaptureFiles, FileEntry, PodFiles, RunFiles};
use biometrics_crds::v1alpha1::ProfileCapture;
use biometrics_test_support::{GoTarget, browser, free_port, http_request};
use biometrics_ui::{Backend, BackendError, FileRef, HeldFiles, UiOptions};
use bytes::Bytes;
use serde_json::json;
use sha2::Digest;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Function names an app could choose, each an attempt to become markup.
const HOSTILE: [&str; 2] =
    ["<script>document.title='pwned'</script>", "\"><img src=x onerror=\"document.title='pwned'\">"];

#[derive(Clone)]
struct Memory {
    captures: Vec<ProfileCapture>,
    held: Vec<HeldFiles>,
    files: Arc<HashMap<String, Bytes>>,
}

impl Backend for Memory {
    async fn captures(&self) -> Result<Vec<ProfileCapture>, BackendError> {
        Ok(self.captures.clone())
    }

    async fn capture(&self, namespace: &str, name: &str) -> Result<Option<ProfileCapture>, BackendError> {
        Ok(self
            .captures
            .iter()
            .find(|c| c.metadata.namespace.as_deref() == Some(namespace) && c.metadata.name.as_deref() == Some(name))
            .cloned())
    }

    async fn files(&self, _: &ProfileCapture) -> Result<(Vec<HeldFiles>, Vec<String>), BackendError> {
        Ok((self.held.clone(), vec![]))
    }

    async fn fetch(&self, holder: &str, file: &FileRef) -> Result<Bytes, BackendError> {
        assert_eq!(holder, "web-0", "fetched from the agent that listed it");
        self.files.get(&file.file).cloned().ok_or_else(|| BackendError::NotFound(file.file.clone()))
    }
}

fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A capture `shop/checkout` whose last run `r2` holds a real CPU profile, with an older run
/// `r1` known only from the volume.
fn backend(profile: Bytes) -> Memory {
    let sha = sha256(&profile);
    let top: Vec<_> = ["main.burnCPU", HOSTILE[0], HOSTILE[1]]
        .iter()
        .enumerate()
        .map(|(i, f)| json!({"function": f, "flat": 100 - i, "flatPercent": 50.0, "cum": 100, "cumPercent": 50.0}))
        .collect();
    let capture: ProfileCapture = serde_json::from_value(json!({
        "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "checkout"}}, "target": {"port": 6060}, "profiles": ["cpu"]},
        "status": {
            "phase": "Succeeded", "selectedPods": 1, "thresholdLevel": "Warning",
            "lastRun": {"id": "r2", "trigger": "Manual", "startTime": "2026-11-29T10:00:00Z", "result": "Succeeded",
                "pods": [{"pod": "web-0", "result": "Succeeded", "profiles": [{"type": "cpu", "path": "shop/checkout/r2/web-0/cpu.pb.gz", "top": top}]}]},
            "history": [{"id": "r2", "trigger": "Manual", "startTime": "2026-11-29T10:00:00Z", "result": "Succeeded", "podsSucceeded": 1, "podsFailed": 0}],
            "pods": [{"name": "web-0", "goroutines": 12, "levels": {"goroutines": "OK", "memoryPercent": "Warning"}, "memoryPercent": 75.5}]
        }
    }))
    .expect("a ProfileCapture");
    let entry = |modified: &str| FileEntry {
        name: "cpu.pb.gz".into(),
        bytes: profile.len() as u64,
        sha256: sha.clone(),
        modified: modified.into(),
    };
    let listing = CaptureFiles {
        namespace: "shop".into(),
        capture: "checkout".into(),
        runs: ["r1", "r2"]
            .iter()
            .map(|run| RunFiles {
                run: (*run).into(),
                modified: format!("2026-11-29T0{}:00:00Z", if *run == "r1" { 9 } else { 10 }),
                pods: vec![PodFiles { pod: "web-0".into(), files: vec![entry("2026-11-29T10:00:00Z")] }],
            })
            .collect(),
        skipped: vec![],
    };
    Memory {
        captures: vec![capture],
        held: vec![HeldFiles { holder: "web-0".into(), listing }],
        files: Arc::new(HashMap::from([("cpu.pb.gz".to_owned(), profile)])),
    }
}

fn serve(backend: Memory) -> (SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let speedscope = biometrics_test_support::repo_root().join(".tools/speedscope");
    assert!(speedscope.join("index.html").exists(), "make setup installs speedscope into .tools/speedscope");
    let app = biometrics_ui::router(backend, UiOptions { speedscope_dir: Some(speedscope) });
    let addr = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });
    (addr, runtime)
}

fn cpu_profile() -> Bytes {
    let target = GoTarget::start(SocketAddr::new(LOCALHOST, free_port(LOCALHOST)));
    let (status, body) = http_request(target.addr, "GET", "/debug/pprof/profile?seconds=1", &[], b"");
    assert_eq!(status, 200);
    Bytes::from(body)
}

/// The hostile names appear as text (escaped in the serialised DOM), never as elements,
/// and no script of theirs ran.
fn assert_inert(dom: &str) {
    assert!(dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"), "the name is shown as text");
    assert!(dom.contains("\"&gt;&lt;img src=x onerror="), "the name is shown as text");
    assert!(!dom.contains("<img src=\"x\""), "no element was made of a name");
    assert!(!dom.contains("<title>pwned</title>"), "no script of the app's ran");
}

#[test]
fn every_view_renders_and_the_apps_names_stay_text() {
    let profile = cpu_profile();
    let (addr, _runtime) = serve(backend(profile.clone()));
    let base = format!("http://{addr}");

    let dom = browser::dump_dom(&format!("{base}/"));
    assert!(dom.contains("id=\"captures\""), "{dom}");
    assert!(dom.contains("href=\"/captures/shop/checkout\""), "{dom}");
    assert!(dom.contains("class=\"level-Warning\""), "{dom}");

    let dom = browser::dump_dom(&format!("{base}/captures/shop/checkout"));
    assert!(dom.contains("id=\"runs\""), "{dom}");
    let r2 = dom.find(">r2<").expect("run r2 listed");
    let r1 = dom.find(">r1<").expect("run r1, known only from the volume, listed");
    assert!(r2 < r1, "newest first");

    let dom = browser::dump_dom(&format!("{base}/captures/shop/checkout/runs/r2"));
    assert!(dom.contains("main.burnCPU"), "{dom}");
    assert!(dom.contains("class=\"level-Warning\">Warning"), "the memory level is shown: {dom}");
    assert!(dom.contains("/api/v1/namespaces/shop/captures/checkout/runs/r2/files/web-0/cpu.pb.gz"), "{dom}");
    assert!(dom.contains("/speedscope/index.html#profileURL="), "{dom}");
    assert_inert(&dom);
}

#[test]
fn the_download_is_the_file_and_never_a_page() {
    let profile = cpu_profile();
    let (addr, _runtime) = serve(backend(profile.clone()));
    let path = "/api/v1/namespaces/shop/captures/checkout/runs/r2/files/web-0/cpu.pb.gz";
    let (status, body) = http_request(addr, "GET", path, &[], b"");
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), sha256(&profile), "byte for byte");
    let head = raw_head(addr, path);
    assert!(head.contains("content-disposition: attachment; filename=\"web-0_r2_cpu.pb.gz\""), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(head.contains("content-security-policy: sandbox"), "{head}");
    // Pages carry a policy that allows no inline script and no other origin.
    let page = raw_head(addr, "/");
    assert!(page.contains("content-security-policy: default-src 'none'; script-src 'self'"), "{page}");
    assert_eq!(http_request(addr, "GET", "/api/v1/namespaces/shop/captures/checkout/runs/r9", &[], b"").0, 404);
    assert_eq!(http_request(addr, "GET", "/api/v1/namespaces/shop/captures/nope", &[], b"").0, 404);
    assert_eq!(http_request(addr, "GET", "/speedscope/..%2F..%2FCargo.toml", &[], b"").0, 404);
}

fn raw_head(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: ui\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase()
}

#[test]
fn speedscope_draws_the_profile() {
    let profile = cpu_profile();
    let (addr, _runtime) = serve(backend(profile));
    let download = "/api/v1/namespaces/shop/captures/checkout/runs/r2/files/web-0/cpu.pb.gz";
    let url = |view: &str| {
        format!("http://{addr}/speedscope/index.html#profileURL={}&view={view}", download.replace('/', "%2F"))
    };
    // The sandwich view lists the functions as a table: the Go target's hot function is there.
    // On a loaded machine headless Chromium may take its DOM before speedscope has fetched
    // and parsed the profile: up to three looks, each of which must find the name.
    let dom = (0..3)
        .map(|_| browser::dump_dom(&url("sandwich")))
        .find(|dom| dom.contains("main.burnCPU"))
        .unwrap_or_else(|| browser::dump_dom(&url("sandwich")));
    assert!(dom.contains("main.burnCPU"), "speedscope read the profile: {}", &dom[..dom.len().min(2000)]);
    // The flame graph is drawn: the screenshot is far from one flat colour.
    let shot = tempfile::NamedTempFile::with_suffix(".png").unwrap();
    browser::screenshot(&url("left-heavy"), shot.path(), 1000, 600);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(shot.path()).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let colours: std::collections::HashSet<&[u8]> =
        pixels[..info.buffer_size()].chunks(info.color_type.samples()).collect();
    assert!(colours.len() > 50, "a drawn flame graph has many colours, this has {}", colours.len());
}

/// The pages as a person sees them, checked to be drawn (not blank) and, with
/// `BIOMETRICS_WRITE_SCREENSHOTS=1`, written to `docs/images/` for the user guide.
#[test]
fn screenshots_of_each_view() {
    let profile = cpu_profile();
    let (addr, _runtime) = serve(backend(profile));
    let download = "/api/v1/namespaces/shop/captures/checkout/runs/r2/files/web-0/cpu.pb.gz";
    let views = [
        ("browser-captures", "/".to_owned()),
        ("browser-runs", "/captures/shop/checkout".to_owned()),
        ("browser-run", "/captures/shop/checkout/runs/r2".to_owned()),
        ("browser-flamegraph", format!("/speedscope/index.html#profileURL={}", download.replace('/', "%2F"))),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, path) in views {
        let shot = dir.path().join(format!("{name}.png"));
        browser::screenshot(&format!("http://{addr}{path}"), &shot, 1200, 800);
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        let colours: std::collections::HashSet<&[u8]> =
            pixels[..info.buffer_size()].chunks(info.color_type.samples()).collect();
        assert!(colours.len() > 20, "{name} is drawn: {} colours", colours.len());
        if std::env::var_os("BIOMETRICS_WRITE_SCREENSHOTS").is_some() {
            let docs = biometrics_test_support::repo_root().join("docs/images");
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::copy(&shot, docs.join(format!("{name}.png"))).unwrap();
        }
    }
}
