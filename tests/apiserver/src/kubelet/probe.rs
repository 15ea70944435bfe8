//! Readiness and liveness probes, run from the node against the pod's address as the
//! kubelet runs them: `httpGet` (2xx/3xx passes), `tcpSocket` (a connection passes) and
//! `exec` (exit 0 passes, in the container's namespaces and root).

use std::{net::Ipv4Addr, path::Path, time::Duration};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How often and how patiently a probe runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `initialDelaySeconds`.
    pub initial_delay: Duration,
    /// `periodSeconds`.
    pub period: Duration,
    /// `timeoutSeconds`.
    pub timeout: Duration,
    /// `successThreshold`.
    pub success_threshold: u32,
    /// `failureThreshold`.
    pub failure_threshold: u32,
}

fn seconds(probe: &Value, field: &str, default: u64) -> Duration {
    Duration::from_secs(probe.get(field).and_then(Value::as_u64).unwrap_or(default))
}

/// The probe's timing, with kube's defaults.
pub fn timing(probe: &Value) -> Timing {
    let count = |field: &str, default: u32| {
        probe.get(field).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).unwrap_or(default)
    };
    Timing {
        initial_delay: seconds(probe, "initialDelaySeconds", 0),
        period: seconds(probe, "periodSeconds", 10).max(Duration::from_secs(1)),
        timeout: seconds(probe, "timeoutSeconds", 1).max(Duration::from_secs(1)),
        success_threshold: count("successThreshold", 1).max(1),
        failure_threshold: count("failureThreshold", 3).max(1),
    }
}

/// A port by number or by the container's port name.
fn port(container: &Value, value: Option<&Value>) -> Option<u16> {
    match value? {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(name) => container
            .get("ports")
            .and_then(Value::as_array)?
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))?
            .get("containerPort")?
            .as_u64()
            .and_then(|n| u16::try_from(n).ok()),
        _ => None,
    }
}

async fn http_get(address: Ipv4Addr, port: u16, path: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect((address, port)).await else { return false };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}:{port}\r\nUser-Agent: kube-probe/1.{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        crate::discovery::MINOR_VERSION
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 32];
    let Ok(n) = stream.read(&mut head).await else { return false };
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (200..400).contains(&code)
}

/// Runs `probe` once; an exec probe's command runs in the container as `identity`.
pub async fn run(
    probe: &Value,
    container: &Value,
    address: Ipv4Addr,
    pid: Option<u32>,
    root: &Path,
    identity: &super::security::Identity,
) -> bool {
    let timeout = timing(probe).timeout;
    let attempt = async {
        if let Some(get) = probe.get("httpGet") {
            let Some(port) = port(container, get.get("port")) else { return false };
            return http_get(address, port, get.get("path").and_then(Value::as_str).unwrap_or("/")).await;
        }
        if let Some(tcp) = probe.get("tcpSocket") {
            let Some(port) = port(container, tcp.get("port")) else { return false };
            return tokio::net::TcpStream::connect((address, port)).await.is_ok();
        }
        if let (Some(exec), Some(pid)) = (probe.get("exec"), pid) {
            let argv: Vec<&str> =
                exec.get("command").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            if argv.is_empty() {
                return false;
            }
            let target = pid.to_string();
            let status = tokio::process::Command::new("nsenter")
                .args(["--target", &target, "--mount", "--net", "--", "chroot"])
                .arg(root)
                .args(super::container::setpriv(identity))
                .args(&argv)
                .env_clear()
                .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await;
            return status.is_ok_and(|s| s.success());
        }
        false
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or(false)
}
