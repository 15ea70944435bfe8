//! The app's request signals through the real agent: `POST /v1/runtime` with a metrics
//! source makes the agent read the app's Prometheus endpoint on its sample interval and
//! answer request rate, error rate and latency quantiles; broken endpoints give a reason
//! per source and the agent keeps serving.

mod common;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use biometrics_test_support::http_request;
use common::{Agent, LOCALHOST};
use serde_json::{Value, json};

/// Each path's status and body.
type Bodies = HashMap<String, (u16, Vec<u8>)>;

/// An HTTP server answering each path with a body that the test can change, counting
/// the requests per path.
#[derive(Clone, Default)]
struct App {
    bodies: Arc<Mutex<Bodies>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl App {
    fn start() -> (Self, SocketAddr) {
        let app = Self::default();
        let listener = TcpListener::bind(SocketAddr::new(LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = app.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let served = served.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let n = stream.read(&mut buf).unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    *served.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let (status, body) =
                        served.bodies.lock().unwrap().get(&path).cloned().unwrap_or((404, b"not found".to_vec()));
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
                });
            }
        });
        (app, addr)
    }

    fn serve(&self, path: &str, status: u16, body: impl Into<Vec<u8>>) {
        self.bodies.lock().unwrap().insert(path.into(), (status, body.into()));
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// An exposition: `ok` 200s and `errors` 500s, latencies in buckets 0.1 / 0.5 / 1 / +Inf.
fn exposition(ok: u64, errors: u64, buckets: [u64; 3]) -> String {
    let total = ok + errors;
    format!(
        "# HELP http_request_duration_seconds Latency.\n# TYPE http_request_duration_seconds histogram\n\
http_request_duration_seconds_bucket{{le=\"0.1\"}} {}\n\
http_request_duration_seconds_bucket{{le=\"0.5\"}} {}\n\
http_request_duration_seconds_bucket{{le=\"1\"}} {}\n\
http_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n\
http_request_duration_seconds_sum 12.5\nhttp_request_duration_seconds_count {total}\n\
# TYPE http_requests_total counter\n\
http_requests_total{{code=\"200\",handler=\"/items\"}} {ok}\n\
http_requests_total{{code=\"500\",handler=\"/items\"}} {errors}\n",
        buckets[0], buckets[1], buckets[2]
    )
}

fn source(port: u16, path: &str) -> Value {
    json!({"metrics": {
        "port": port, "path": path,
        "histograms": ["http_request_duration_seconds", "http_server_request_duration_seconds"],
        "requestsCounter": "http_requests_total", "errorValues": "5..", "windowSeconds": 30
    }})
}

/// Asks until `done` holds for the figures, or panics with the last answer.
fn ask_until(agent: &Agent, body: &Value, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, sample) = agent.request("POST", "/v1/runtime", Some(body));
        assert_eq!(status, 200, "{sample}");
        if done(&sample["requests"]) {
            return sample["requests"].clone();
        }
        assert!(Instant::now() < deadline, "{what}: last answer {sample}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn request_figures_come_from_the_apps_metrics_only_when_asked() {
    let (app, addr) = App::start();
    app.serve("/metrics", 200, exposition(100, 0, [90, 100, 100]));
    app.serve("/idle", 200, exposition(5, 0, [5, 5, 5]));
    let agent = Agent::start(Some(addr.port()), &[]);

    // Runtime sampling alone never reads the metrics endpoint.
    let (status, _) = agent.request("GET", "/v1/runtime", None);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(app.hits("/metrics"), 0, "nobody asked for request signals: /metrics is never read");

    // Until the endpoint has been read once, there is nothing; after one reading, no rate.
    let first = ask_until(&agent, &source(addr.port(), "/metrics"), "a first reading", |r| {
        r["note"].as_str().is_some_and(|n| n != "no reading yet")
    });
    if first["note"].as_str().is_some_and(|n| n.starts_with("one reading")) {
        assert!(first["requestsPerSecond"].is_null(), "one reading has no rate: {first}");
    }
    // 180 more 200s and 20 500s; bucket increases 0.1: 90, 0.5: 170, 1: 190, +Inf: 200.
    app.serve("/metrics", 200, exposition(280, 20, [180, 270, 290]));
    let figures = ask_until(&agent, &source(addr.port(), "/metrics"), "figures after two readings", |r| {
        r["p99LatencyMillis"].is_number()
    });
    assert_eq!(figures["errorRatePercent"], 10.0, "20 errors of 200 requests: {figures}");
    // p50: rank 100 in (0.1, 0.5]: 0.1 + 0.4·10/80 = 0.15 s.
    assert_eq!(figures["p50LatencyMillis"], 150.0, "{figures}");
    // p95: rank 190 in (0.5, 1]: 0.5 + 0.5·20/20 = 1 s. p99: rank 198 in +Inf: 1 s.
    assert_eq!(
        (figures["p95LatencyMillis"].as_f64(), figures["p99LatencyMillis"].as_f64()),
        (Some(1000.0), Some(1000.0))
    );
    let rps = figures["requestsPerSecond"].as_f64().expect("rate");
    let seconds = figures["seconds"].as_f64().expect("span");
    assert!((rps * seconds - 200.0).abs() < 2.0, "rate × span is the 200 requests: {figures}");

    let idle = ask_until(&agent, &source(addr.port(), "/idle"), "an idle endpoint's second reading", |r| {
        r["requestsPerSecond"].is_number()
    });
    assert!(idle["note"].as_str().is_some_and(|n| n.starts_with("no requests")), "{idle}");
    assert!(idle["errorRatePercent"].is_null(), "no requests is not 0 % errors: {idle}");
}

#[test]
fn broken_endpoints_give_a_reason_each_and_the_agent_keeps_serving() {
    let (app, addr) = App::start();
    let agent = Agent::start(None, &[]);
    app.serve("/html", 200, "<!DOCTYPE html>\n<html><body>Login</body></html>\n");
    app.serve("/huge", 200, vec![b'#'; 50 << 20]);
    app.serve(
        "/decreasing",
        200,
        "http_request_duration_seconds_bucket{le=\"0.1\"} 9\nhttp_request_duration_seconds_bucket{le=\"0.5\"} 4\nhttp_request_duration_seconds_bucket{le=\"+Inf\"} 9\n",
    );
    app.serve("/nan", 200, "http_requests_total{code=\"200\"} NaN\n");
    app.serve("/duplicate", 200, "http_requests_total{code=\"200\"} 1\nhttp_requests_total{code=\"200\"} 2\n");
    app.serve("/refused", 503, "overloaded");
    let cases = [
        ("/html", "not the Prometheus text format: line 1"),
        ("/huge", "the metrics exposition is larger than 8 MiB"),
        ("/decreasing", "decreases: le=0.5 holds 4, fewer than le=0.1's 9"),
        ("/nan", "has the value NaN, not a count"),
        ("/duplicate", "series http_requests_total{code=\"200\"} appears more than once"),
        ("/refused", "with status 503"),
        ("/missing", "with status 404"),
    ];
    for (path, reason) in cases {
        let figures = ask_until(&agent, &source(addr.port(), path), path, |r| r["error"].is_string());
        let error = figures["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{path}: {error:?} does not say {reason:?}");
    }
    let (status, _) = http_request(agent.addr, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "the agent keeps serving");
    let (_, metrics) = http_request(agent.addr, "GET", "/metrics", &[], b"");
    let metrics = String::from_utf8_lossy(&metrics);
    for result in ["refused", "unreachable"] {
        assert!(
            metrics.contains(&format!("biometrics_agent_app_metrics_reads_total{{result=\"{result}\"}}")),
            "reads counted by result: {metrics}"
        );
    }
    let bad = json!({"metrics": {"port": addr.port(), "path": "/../admin", "histograms": ["h"], "requestsCounter": "c", "errorValues": "5..", "windowSeconds": 30}});
    let (status, body) = agent.request("POST", "/v1/runtime", Some(&bad));
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("metrics.path")), "{body}");
}
