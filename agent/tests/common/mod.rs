//! An agent process with its own key pair and profiles directory, and the Go target it
//! profiles; requests signed like the operator signs them.

#![allow(dead_code)]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use biometrics_test_support::{ChildGuard, free_port, http_request, wait_for_listener};
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
use serde_json::{Value, json};

pub const NAMESPACE: &str = "shop";
pub const POD: &str = "api-7d9f-x2x4q";
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An Ed25519 key pair as PEM.
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

pub fn key_pair() -> KeyPair {
    let signing = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    KeyPair {
        private_pem: signing.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM").to_string(),
        public_pem: signing.verifying_key().to_public_key_pem(LineEnding::LF).expect("SPKI PEM"),
    }
}

pub struct Agent {
    pub addr: SocketAddr,
    pub keys: KeyPair,
    pub dir: tempfile::TempDir,
    pub process: ChildGuard,
    /// The pod this agent serves.
    pub pod: String,
    /// The profiles volume (another agent's, when shared).
    pub profiles_dir: PathBuf,
}

impl Agent {
    /// Starts an agent for pod `shop/api-…` whose app serves pprof on `target_port`.
    pub fn start(target_port: Option<u16>, extra: &[&str]) -> Self {
        Self::start_with_env(target_port, extra, &[])
    }

    /// As `start`, with extra environment variables (e.g. `SSL_CERT_FILE`).
    pub fn start_with_env(target_port: Option<u16>, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_full(SocketAddr::new(LOCALHOST, free_port(LOCALHOST)), target_port, extra, env)
    }

    /// As `start`, listening on `addr`.
    pub fn start_at(addr: SocketAddr, target_port: Option<u16>, extra: &[&str]) -> Self {
        Self::start_full(addr, target_port, extra, &[])
    }

    /// An agent for pod `pod` whose profiles volume is `shared`'s (a ReadWriteMany claim
    /// mounted by both pods), trusting the same operator key.
    pub fn start_sharing(shared: &Agent, pod: &str, target_port: Option<u16>) -> Self {
        let addr = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
        let keys = KeyPair { private_pem: shared.keys.private_pem.clone(), public_pem: shared.keys.public_pem.clone() };
        Self::start_on(addr, target_port, &[], &[], keys, pod, Some(shared.profiles()))
    }

    fn start_full(addr: SocketAddr, target_port: Option<u16>, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on(addr, target_port, extra, env, key_pair(), POD, None)
    }

    fn start_on(
        addr: SocketAddr,
        target_port: Option<u16>,
        extra: &[&str],
        env: &[(&str, &str)],
        keys: KeyPair,
        pod: &str,
        shared_profiles: Option<PathBuf>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key_path = dir.path().join("operator.pub");
        std::fs::write(&key_path, &keys.public_pem).expect("write key");
        let profiles_dir = shared_profiles.unwrap_or_else(|| dir.path().join("profiles"));
        std::fs::create_dir_all(&profiles_dir).expect("profiles dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_biometrics-agent"));
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--profiles-dir")
            .arg(&profiles_dir)
            .arg("--operator-public-key")
            .arg(&key_path)
            .args(["--pod-name", pod, "--pod-namespace", NAMESPACE, "--sample-interval", "1s"])
            .args(extra)
            .env("BIOMETRICS_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log")).expect("log file"));
        if let Some(port) = target_port {
            cmd.arg("--target-port").arg(port.to_string());
        }
        let process = ChildGuard::spawn("biometrics-agent", &mut cmd);
        wait_for_listener(addr, Duration::from_secs(10));
        Self { addr, keys, dir, process, pod: pod.to_owned(), profiles_dir }
    }

    /// What the agent logged (warnings and errors, as JSON lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn profiles(&self) -> PathBuf {
        self.profiles_dir.clone()
    }

    pub fn token(&self) -> String {
        biometrics_agent::auth::mint(
            self.keys.private_pem.as_bytes(),
            NAMESPACE,
            &self.pod,
            biometrics_agent::auth::unix_now(),
            300,
        )
        .expect("mint")
    }

    pub fn request_with(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let (status, body) = http_request(self.addr, method, path, &headers, body);
        (
            status,
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
        )
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.request_with(method, path, Some(&self.token()), &bytes)
    }

    /// Polls a capture until it leaves Running.
    pub fn wait_capture(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.request("GET", &format!("/v1/captures/{id}"), None);
            assert_eq!(status, 200, "{body}");
            if body["state"] != "Running" {
                return body;
            }
            assert!(Instant::now() < deadline, "capture {id} still running after {timeout:?}: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn capture_request(id: &str, run: &str, profiles: &[&str], seconds: u64, port: u16) -> Value {
    json!({
        "id": id,
        "capture": {"namespace": NAMESPACE, "name": "api-hourly"},
        "run": run,
        "profiles": profiles,
        "durationSeconds": seconds,
        "target": {"port": port, "basePath": "/debug/pprof"}
    })
}

/// Every file under a directory, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap_or(&path).display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
