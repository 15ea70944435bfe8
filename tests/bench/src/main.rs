//! `make bench`: Biometrics measured against what it replaces, printed as ratios.
//!
//! - `biometrics-agent top` against `go tool pprof -top` on the same files (a real CPU
//!   profile of the Go target, and a generated large one): wall time and peak RSS of the
//!   whole process, best of several runs;
//! - the agent's idle RSS after start-up, and its RSS above idle while it refuses a gzip
//!   bomb (2 GiB of zeros served as `heap`), one alone and four at once;
//! - the capture browser comparing two runs of the large profile against `go tool pprof
//!   -top -base` on the same files, and its run page for a 100-pod run;
//! - the time from `POST /v1/captures` to its 202, and the time to parse one runtime
//!   sample, beside the origin document's "Profile Start 20 µs" and "Metrics Collection
//!   10 µs".
//! - the time to read one scrape of an app's Prometheus metrics (5,000 series) into the
//!   request signals' series, against the goal of 5 ms.
//! - the local cluster: pods of a trivial process brought up by the process kubelet, and
//!   the test API server's RSS with its controllers at thousands of Pods.
//!
//! Figures, not assertions: the goals are printed next to them. `--quick` (part of
//! `make test`) runs every benchmark at small sizes through the same code paths and
//! checks, so a benchmark that breaks fails CI; its figures are not comparable.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use biometrics_agent::profile::proto;
use biometrics_test_support::{
    ChildGuard, GoTarget, RssPeak, free_port, gzip_bomb, http_request, serve_canned, wait_for_listener,
};
use prost::Message;

mod browser_bench;
mod cluster_bench;
mod idle_bench;
mod operator_bench;
mod redis_bench;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How big the benchmarks run: the full sizes for `make bench`, small ones for `--quick`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    quick: bool,
}

impl Scale {
    /// `full`, or `quick` under `--quick`.
    pub(crate) fn pick(self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

/// Where the binaries measured are: beside this one (target/release for `make bench`,
/// target/debug for the quick pass of `make test`).
pub(crate) fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    exe.parent().expect("a directory").to_path_buf()
}

/// Wall time and peak RSS of one process run to completion (peak RSS from GNU time).
pub(crate) fn measure(cmd: &Command) -> (Duration, u64) {
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let mut timed = Command::new("/usr/bin/time");
    timed.args(["-f", "%M", "-o"]).arg(report.path()).arg(cmd.get_program()).args(cmd.get_args());
    let started = Instant::now();
    let status = timed
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("/usr/bin/time runs (make setup installs it)");
    let elapsed = started.elapsed();
    assert!(status.success(), "benchmark process failed: {cmd:?}");
    let kib: u64 = std::fs::read_to_string(report.path())
        .ok()
        .and_then(|s| s.trim().lines().last()?.trim().parse().ok())
        .unwrap_or(0);
    (elapsed, kib * 1024)
}

/// Best of `runs`: least time and least peak memory.
pub(crate) fn best(runs: usize, mut make: impl FnMut() -> Command) -> (Duration, u64) {
    (0..runs).map(|_| measure(&make())).fold((Duration::MAX, u64::MAX), |(t, m), (t2, m2)| (t.min(t2), m.min(m2)))
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub(crate) fn pprof_tool() -> PathBuf {
    let out = Command::new("go").args(["env", "GOTOOLDIR"]).output().expect("go env");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("pprof")
}

/// A large synthetic CPU profile: `functions` functions, one location each, and `samples`
/// samples with stacks of 20–40 frames, gzip-compressed.
fn large_profile(path: &Path, functions: u64, samples: u64) {
    std::fs::write(path, generated_profile(functions, samples, 0x9E37_79B9_7F4A_7C15)).expect("write large profile");
}

/// The generated profile's gzipped bytes; `seed` picks its samples.
pub(crate) fn generated_profile(functions: u64, samples: u64, seed: u64) -> Vec<u8> {
    let mut strings = vec![String::new(), "samples".into(), "count".into(), "cpu".into(), "nanoseconds".into()];
    let mut function = Vec::new();
    let mut location = Vec::new();
    for id in 1..=functions {
        strings.push(format!("github.com/example/service/pkg{}.(*Handler{}).method{}", id % 97, id % 1013, id));
        function.push(proto::Function { id, name: strings.len() as i64 - 1, ..Default::default() });
        location.push(proto::Location {
            id,
            address: 0x40_0000 + id * 16,
            line: vec![proto::Line { function_id: id, line: (id % 500) as i64 + 1, column: 0 }],
            ..Default::default()
        });
    }
    // A deterministic xorshift: the same file every run.
    let mut state: u64 = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let sample = (0..samples)
        .map(|_| {
            let depth = 20 + next() % 21;
            let location_id = (0..depth).map(|_| 1 + next() % functions).collect();
            let count = 1 + (next() % 10) as i64;
            proto::Sample { location_id, value: vec![count, count * 10_000_000], label: vec![] }
        })
        .collect();
    let profile = proto::Profile {
        sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }, proto::ValueType { r#type: 3, unit: 4 }],
        sample,
        location,
        function,
        string_table: strings,
        period_type: Some(proto::ValueType { r#type: 3, unit: 4 }),
        period: 10_000_000,
        duration_nanos: 30_000_000_000,
        ..Default::default()
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &profile.encode_to_vec()).expect("gzip");
    gz.finish().expect("gzip")
}

fn compare_top(label: &str, file: &Path, agent_bin: &Path, runs: usize) {
    let tool = pprof_tool();
    let (ours_t, ours_m) = best(runs, || {
        let mut c = Command::new(agent_bin);
        c.arg("top").arg(file);
        c
    });
    let (go_t, go_m) = best(runs, || {
        let mut c = Command::new(&tool);
        c.arg("-top").arg(file);
        c
    });
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!(
        "top {label} ({:.1} MiB): biometrics-agent {:.3}s {:.1} MiB | go tool pprof {:.3}s {:.1} MiB | {:.1}x faster, {:.1}x less memory",
        mib(size),
        ours_t.as_secs_f64(),
        mib(ours_m),
        go_t.as_secs_f64(),
        mib(go_m),
        go_t.as_secs_f64() / ours_t.as_secs_f64(),
        go_m as f64 / ours_m as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scale = Scale { quick: args.iter().any(|a| a == "--quick") };
    let release = bin_dir().join("biometrics-agent");
    assert!(release.exists(), "build the agent first: cargo build --release -p biometrics-agent");
    let work = tempfile::tempdir().expect("temp dir");
    if scale.quick {
        println!("== --quick: every benchmark at small sizes, checked; figures not comparable");
    }
    // `biometrics-bench agent`, `… redis`, `… operator`, `… browser`, `… browser-page` (the
    // run page alone), `… cluster` and `… signals` (the metrics scrape alone) run one part
    // alone.
    match args.iter().find(|a| !a.starts_with("--")).map(String::as_str) {
        Some("agent") => return agent_parts(&release, work.path(), scale),
        Some("redis") => return redis_bench::run(&release, &work.path().join("redis"), scale),
        Some("operator") => return operator_bench::run(work.path(), scale),
        Some("browser") => return browser_bench::run(work.path(), scale),
        Some("browser-page") => return browser_bench::run_page(scale),
        Some("cluster") => return cluster_bench::run(work.path(), scale),
        Some("signals") => return exposition_parse(scale),
        _ => {}
    }
    agent_parts(&release, work.path(), scale);
    redis_bench::run(&release, &work.path().join("redis"), scale);
    operator_bench::run(work.path(), scale);
    browser_bench::run(work.path(), scale);
    cluster_bench::run(work.path(), scale);
}

/// The agent's figures: `top` against pprof, footprint, a gzip bomb, latencies.
fn agent_parts(release: &Path, work: &Path, scale: Scale) {
    println!("== agent: pprof summaries (goal on the large file: >= 60x faster than go tool pprof, <= 64 MiB peak)");
    let target = GoTarget::start(SocketAddr::new(LOCALHOST, free_port(LOCALHOST)));
    let small = work.join("cpu-small.pb.gz");
    let seconds = scale.pick(3, 1);
    let (status, body) = http_request(target.addr, "GET", &format!("/debug/pprof/profile?seconds={seconds}"), &[], b"");
    assert_eq!(status, 200);
    std::fs::write(&small, body).expect("write small profile");
    compare_top("small (the Go target's CPU profile)", &small, release, scale.pick(5, 1));
    let large = work.join("cpu-large.pb.gz");
    let (functions, samples) = (scale.pick(60_000, 3_000), scale.pick(300_000, 15_000));
    large_profile(&large, functions as u64, samples as u64);
    compare_top(
        &format!("large ({functions} functions/locations, {samples} samples)"),
        &large,
        release,
        scale.pick(3, 1),
    );

    println!("== agent: footprint and latency");
    gzip_bomb_rss(release, work, scale);
    accept_latency(release, work, target.addr.port(), scale);
    parse_latency(&target, scale);
    exposition_parse(scale);
    idle_bench::run(release, work, scale);
}

/// The agent's RSS above idle while it refuses a gzip bomb served as `heap` (2 GiB of
/// zeros; 512 MiB under `--quick`), one alone and then four at once, with its defaults
/// (256 MiB decompressed at most, 64 MiB of analysis memory).
fn gzip_bomb_rss(agent_bin: &Path, dir: &Path, scale: Scale) {
    let size = scale.pick(2 << 30, 512 << 20) as u64;
    let bomb = gzip_bomb(size);
    let gzipped = bomb.len() as u64;
    let server = serve_canned(SocketAddr::new(LOCALHOST, 0), 200, "", bomb);
    let agent = signed_agent(agent_bin, &dir.join("bomb"), &[]);
    std::thread::sleep(Duration::from_secs(2));
    let idle = biometrics_test_support::rss_bytes(agent.pid);
    let capture = |id: &str| {
        let body = serde_json::json!({
            "id": id, "capture": {"namespace": "bench", "name": "bomb"}, "run": id,
            "profiles": ["heap"], "durationSeconds": 1, "target": {"port": server.port(), "basePath": "/debug/pprof"}
        })
        .to_string();
        let headers = [("Authorization", agent.auth.as_str()), ("Content-Type", "application/json")];
        let (status, _) = http_request(agent.addr, "POST", "/v1/captures", &headers, body.as_bytes());
        assert_eq!(status, 202);
    };
    let wait = |id: &str| {
        let started = Instant::now();
        loop {
            let headers = [("Authorization", agent.auth.as_str())];
            let (_, body) = http_request(agent.addr, "GET", &format!("/v1/captures/{id}"), &headers, b"");
            let status: serde_json::Value = serde_json::from_slice(&body).expect("capture status");
            if status["state"] != "Running" {
                let reason = status["profiles"][0]["error"].as_str().unwrap_or_default();
                assert!(reason.contains("decompresses to more than"), "the bomb is refused by its size: {status}");
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "bomb capture still running: {status}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let peak = RssPeak::start(agent.pid);
    let started = Instant::now();
    capture("bomb-1");
    wait("bomb-1");
    let (one, one_time) = (peak.finish(), started.elapsed());
    let peak = RssPeak::start(agent.pid);
    let ids = ["bomb-2", "bomb-3", "bomb-4", "bomb-5"];
    ids.iter().for_each(|id| capture(id));
    ids.iter().for_each(|id| wait(id));
    let four = peak.finish();
    println!(
        "gzip bomb ({} MiB of zeros as heap, {:.1} MiB gzipped), refused in {:.2}s: agent RSS {:.1} MiB above idle ({:.1} MiB) (goal < 64 MiB); four at once: {:.1} MiB above idle",
        size >> 20,
        mib(gzipped),
        one_time.as_secs_f64(),
        mib(one.saturating_sub(idle)),
        mib(idle),
        mib(four.saturating_sub(idle)),
    );
}

/// An agent process trusting a fresh key pair, and a token for it.
pub(crate) struct SignedAgent {
    pub(crate) addr: SocketAddr,
    pub(crate) auth: String,
    pub(crate) pid: u32,
    _process: ChildGuard,
}

/// Starts the agent under `dir` with its own key pair; `extra` adds flags.
pub(crate) fn signed_agent(agent_bin: &Path, dir: &Path, extra: &[&str]) -> SignedAgent {
    let (private_pem, public_pem) = bench_keys();
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("operator.pub"), public_pem).expect("key");
    let addr = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let process = ChildGuard::spawn(
        "biometrics-agent",
        Command::new(agent_bin)
            .args(["--listen", &addr.to_string(), "--pod-name", "bench", "--pod-namespace", "bench"])
            .args(extra)
            .arg("--profiles-dir")
            .arg(dir.join("profiles"))
            .arg("--operator-public-key")
            .arg(dir.join("operator.pub"))
            .env("BIOMETRICS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_listener(addr, Duration::from_secs(10));
    let token =
        biometrics_agent::auth::mint(private_pem.as_bytes(), "bench", "bench", biometrics_agent::auth::unix_now(), 600)
            .expect("token");
    SignedAgent { addr, auth: format!("Bearer {token}"), pid: process.pid(), _process: process }
}

/// Time from `POST /v1/captures` to its 202, with a real key and token.
fn accept_latency(agent_bin: &Path, dir: &Path, target_port: u16, scale: Scale) {
    let agent = signed_agent(agent_bin, &dir.join("accept"), &["--max-captures", "100000"]);
    let (addr, auth) = (agent.addr, agent.auth.clone());
    let mut times = Vec::new();
    for i in 0..scale.pick(300, 30) {
        let body = serde_json::json!({
            "id": format!("bench-{i}"), "capture": {"namespace": "bench", "name": "bench"}, "run": format!("run-{i}"),
            "profiles": ["goroutine"], "durationSeconds": 1, "target": {"port": target_port, "basePath": "/debug/pprof"}
        })
        .to_string();
        let started = Instant::now();
        let (status, _) = http_request(
            addr,
            "POST",
            "/v1/captures",
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            body.as_bytes(),
        );
        times.push(started.elapsed());
        assert_eq!(status, 202);
        std::thread::sleep(Duration::from_millis(5));
    }
    times.sort();
    println!(
        "POST /v1/captures -> 202 (new connection, token verified, job started): median {:.0} µs, p90 {:.0} µs (origin: Profile Start 20 µs in-process)",
        times[times.len() / 2].as_secs_f64() * 1e6,
        times[times.len() * 9 / 10].as_secs_f64() * 1e6
    );
}

/// A fresh Ed25519 key pair as PKCS#8 / SPKI PEM.
pub(crate) fn bench_keys() -> (String, String) {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    (
        key.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM").to_string(),
        key.verifying_key().to_public_key_pem(LineEnding::LF).expect("SPKI PEM"),
    )
}

/// Time to parse one runtime sample from the texts the Go runtime serves.
fn parse_latency(target: &GoTarget, scale: Scale) {
    let heap = target.get("/debug/pprof/heap?debug=1");
    let goroutine = target.get("/debug/pprof/goroutine?debug=1");
    let rounds = scale.pick(20_000, 1_000) as u32;
    let started = Instant::now();
    for _ in 0..rounds {
        let m = biometrics_agent::runtime::parse_memstats(std::hint::black_box(&heap)).expect("memstats");
        let g = biometrics_agent::runtime::parse_goroutines(std::hint::black_box(&goroutine)).expect("goroutines");
        std::hint::black_box((m, g));
    }
    let each = started.elapsed() / rounds;
    println!(
        "parse one runtime sample ({} + {} bytes of text): {:.2} µs (origin: Metrics Collection 10 µs)",
        heap.len(),
        goroutine.len(),
        each.as_secs_f64() * 1e6
    );
}

/// An exposition of `series` sample lines shaped like a busy Go service's: a latency
/// histogram by handler, method and code (11 buckets, `_sum`, `_count`), the request
/// counter, and runtime gauges to fill up to `series`.
pub(crate) fn app_exposition(series: usize) -> String {
    use std::fmt::Write;
    let bounds = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"];
    let mut out = String::from(
        "# HELP http_request_duration_seconds Request latency.\n# TYPE http_request_duration_seconds histogram\n",
    );
    let mut lines = 0;
    let mut counters = Vec::new();
    'outer: for handler in 0.. {
        for (method, code) in [("GET", "200"), ("POST", "201"), ("GET", "500")] {
            if lines + bounds.len() + 3 > series {
                break 'outer;
            }
            let labels = format!("code=\"{code}\",handler=\"/api/v1/items/{handler}\",method=\"{method}\"");
            let mut cumulative = 0u64;
            for (i, le) in bounds.iter().enumerate() {
                cumulative += (handler as u64 * 7 + i as u64 * 13) % 50;
                writeln!(out, "http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}").unwrap();
            }
            writeln!(out, "http_request_duration_seconds_sum{{{labels}}} {}.25", cumulative / 10).unwrap();
            writeln!(out, "http_request_duration_seconds_count{{{labels}}} {cumulative}").unwrap();
            counters.push(format!("http_requests_total{{{labels}}} {cumulative}"));
            lines += bounds.len() + 3;
        }
    }
    out.push_str("# TYPE http_requests_total counter\n");
    for c in counters {
        out.push_str(&c);
        out.push('\n');
    }
    out.push_str("# TYPE go_memstats_gauge gauge\n");
    for i in lines..series {
        writeln!(out, "go_memstats_gauge{{field=\"f{i}\"}} {}", i * 1024).unwrap();
    }
    out
}

/// Time to parse one scrape of 5,000 series and keep the signals' series from it.
fn exposition_parse(scale: Scale) {
    use biometrics_agent::app_metrics::{exposition, reading};
    let series = 5_000;
    let text = app_exposition(series);
    let source = reading::Source {
        histograms: vec!["http_request_duration_seconds".into(), reading::OTEL_HISTOGRAM.into()],
        requests_counter: "http_requests_total".into(),
        error_label: None,
        error_values: regex::Regex::new("^(?:5..)$").expect("pattern"),
        match_labels: vec![],
    };
    let rounds = scale.pick(200, 10);
    let mut times = Vec::with_capacity(rounds);
    let cpu_before = thread_cpu_seconds();
    for _ in 0..rounds {
        let started = Instant::now();
        let parsed = exposition::parse(std::hint::black_box(text.as_bytes()), 100_000).expect("exposition");
        assert_eq!(parsed.samples.len(), series);
        let read = reading::read(&parsed, &source, 0.0).expect("reading");
        std::hint::black_box(read);
        times.push(started.elapsed());
    }
    // CPU time as well as wall time: on a machine shared with other work, the wall time
    // includes waiting for a core.
    let cpu = (thread_cpu_seconds() - cpu_before) * 1e3 / rounds as f64;
    times.sort();
    let median = times[times.len() / 2].as_secs_f64() * 1e3;
    println!(
        "read one metrics scrape ({series} series, {:.0} KiB): median {median:.2} ms wall, p90 {:.2} ms, {cpu:.2} ms CPU (goal < 5 ms: {:.1}x under it by wall, {:.1}x by CPU)",
        text.len() as f64 / 1024.0,
        times[times.len() * 9 / 10].as_secs_f64() * 1e3,
        5.0 / median,
        5.0 / cpu.max(1e-6)
    );
}

/// This thread's user + system CPU time in seconds (`/proc/thread-self/stat`, in clock
/// ticks of 10 ms: meaningful over many rounds).
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}
