//! The local cluster's own bounds: how long the process kubelet takes to bring up 200 pods
//! of a trivial process (goal < 20 s), and the test API server's peak RSS with its
//! controllers at 5,000 Pods (goal < 200 MiB).

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use biometrics_test_support::{ChildGuard, RssPeak, http_request};
use serde_json::{Value, json};

/// A test-apiserver process and where it listens.
struct Server {
    child: ChildGuard,
    addr: SocketAddr,
}

fn start(extra: &[&str]) -> Server {
    let mut command = Command::new(crate::bin_dir().join("test-apiserver"));
    command.args(["--listen", "127.0.0.1:0"]).args(extra).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = ChildGuard::spawn("test-apiserver", &mut command);
    let mut line = String::new();
    BufReader::new(child.child_mut().stdout.take().expect("stdout")).read_line(&mut line).expect("LISTEN line");
    let addr = line.trim().strip_prefix("LISTEN ").and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
    Server { child, addr }
}

fn request(server: &Server, method: &str, path: &str, body: &Value) -> Value {
    let text = body.to_string();
    let headers = [("Content-Type", "application/json")];
    let (status, response) = http_request(server.addr, method, path, &headers, text.as_bytes());
    assert!(status < 300, "{method} {path}: {status} {}", String::from_utf8_lossy(&response));
    serde_json::from_slice(&response).unwrap_or(Value::Null)
}

fn deployment(replicas: usize, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}}, "spec": {"containers": [{"name": "c", "image": image}]}},
        },
    })
}

/// Polls the Deployment until `field` of its status reaches `wanted`.
fn wait_for(server: &Server, field: &str, wanted: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let d = request(server, "GET", "/apis/apps/v1/namespaces/default/deployments/bench", &Value::Null);
        if d.pointer(&format!("/status/{field}")).and_then(Value::as_u64) == Some(wanted as u64) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{field} stayed at {:?} of {wanted}",
            d.pointer(&format!("/status/{field}"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs both measurements.
pub fn run(work: &Path, scale: crate::Scale) {
    let pods = scale.pick(200, 10);
    println!("== local cluster: {pods} pods of a trivial process on the process kubelet (goal: all Ready < 20 s)");
    let images = work.join("bench-images.yaml");
    std::fs::write(&images, "images:\n  bench/sleep: {command: [/bin/sleep], args: ['3600']}\n").expect("image map");
    let state = work.join("bench-kubelet");
    let server = start(&["--kubelet-images", &images.to_string_lossy(), "--kubelet-state", &state.to_string_lossy()]);
    request(&server, "POST", "/apis/apps/v1/namespaces/default/deployments", &deployment(pods, "bench/sleep"));
    let ready = wait_for(&server, "availableReplicas", pods, Duration::from_secs(300));
    println!("  {pods} pods Ready {:.1} s after the Deployment was created", ready.as_secs_f64());
    let mut server = server;
    // SIGTERM: the kubelet stops every pod and removes its network.
    assert!(server.child.terminate(Duration::from_secs(30)), "the test API server stops on SIGTERM");

    let pods = scale.pick(5_000, 500);
    println!("== local cluster: the API server with its controllers at {pods} Pods (goal < 200 MiB)");
    let server = start(&[]);
    let peak = RssPeak::start(server.child.pid());
    request(&server, "POST", "/apis/apps/v1/namespaces/default/deployments", &deployment(pods, "bench/none"));
    let made = wait_for(&server, "replicas", pods, Duration::from_secs(600));
    let rss = peak.finish();
    println!(
        "  {pods} Pods made by the Deployment and ReplicaSet controllers in {:.1} s; peak RSS {:.1} MiB",
        made.as_secs_f64(),
        crate::mib(rss)
    );
}
