//! Support for tests that run the real parts: the Go pprof target built from `tests/target`
//! with the machine's Go, child processes that are killed when a test ends, free ports and
//! waiting for a listener on a loopback address, and a fault-injecting proxy
//! ([`fault_proxy`]).

pub mod browser;
pub mod fault_proxy;

pub use fault_proxy::{Fault, FaultProxy};

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root exists")
}

/// A child process that is killed (and reaped) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd`, naming it for messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, name: name.to_owned() }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process now (a crash, as far as its peers can tell).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` for it to exit; true if it exited.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        sigterm(self.pid());
        self.wait_exit(timeout).is_some()
    }

    /// Waits up to `timeout` for the process to exit; how long it took, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// The underlying child, e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends SIGTERM to process `pid`, as a kubelet stops a container; whether it was sent
/// (not when the process has gone already).
pub fn sigterm(pid: u32) -> bool {
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().is_ok_and(|s| s.success())
}

/// A port free on `ip` right now, below the kernel's ephemeral range, and not handed out
/// before by this process.
///
/// A port the kernel picks for `bind(0)` comes from the ephemeral range, the same range it
/// takes the local port of every outgoing connection from; between this call and the
/// child's bind, any test's connection could be given it ("Address already in use"). Below
/// that range only a listener can take it. Test binaries that `make unit` runs side by side
/// are told their lane (`BIOMETRICS_TEST_LANE` of `BIOMETRICS_TEST_LANES`) and each walks a
/// part of the range of its own.
pub fn free_port(ip: IpAddr) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (mut low, mut high) = (10_000, ephemeral_low);
    if let (Some(lane), Some(lanes)) = (number("BIOMETRICS_TEST_LANE"), number("BIOMETRICS_TEST_LANES"))
        && lane < lanes
    {
        let part = high.saturating_sub(low) / lanes;
        (low, high) = (low + lane * part, low + (lane + 1) * part);
    }
    if high < low + 100 {
        // No room below the ephemeral range on this machine: the kernel's choice.
        return TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
    }
    let span = high - low;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let port = (low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip} in {low}..{high}")
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_listener(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {addr} after {timeout:?}");
}

/// The Go pprof target, built once per test process (atomically, so concurrent test
/// binaries never run a half-written file).
pub fn go_target_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let source = repo_root().join("tests/target");
        let out_dir = repo_root().join("target/go");
        std::fs::create_dir_all(&out_dir).expect("target/go");
        let binary = out_dir.join("pprof-target");
        let tmp = out_dir.join(format!("pprof-target.{}", std::process::id()));
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&tmp)
            .arg(".")
            .current_dir(&source)
            .env("GOFLAGS", "-mod=mod")
            .env("GOCACHE", out_dir.join("cache"))
            .status()
            .expect("`go` is installed (make setup installs golang-go)");
        assert!(status.success(), "go build of tests/target failed");
        std::fs::rename(&tmp, &binary).expect("install the Go target");
        binary
    })
}

/// A running Go pprof target.
#[derive(Debug)]
pub struct GoTarget {
    /// Where it serves pprof.
    pub addr: SocketAddr,
    process: ChildGuard,
}

impl GoTarget {
    /// Starts the target on `addr` and waits until it serves.
    pub fn start(addr: SocketAddr) -> Self {
        Self::start_with(addr, &[])
    }

    /// Starts the target without its workloads: it only serves pprof.
    pub fn start_idle(addr: SocketAddr) -> Self {
        Self::start_with(addr, &["-idle"])
    }

    fn start_with(addr: SocketAddr, args: &[&str]) -> Self {
        let process = ChildGuard::spawn(
            "pprof-target",
            Command::new(go_target_binary())
                .args(args)
                .arg("-addr")
                .arg(addr.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for_listener(addr, Duration::from_secs(10));
        Self { addr, process }
    }

    /// The target's process id (for its CPU time in /proc).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// GETs a path of the target over plain HTTP/1.0 and returns the body.
    pub fn get(&self, path_and_query: &str) -> String {
        http_get(self.addr, path_and_query)
    }
}

/// A minimal HTTP/1.0 GET (the tests' own probe, independent of the code under test).
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(stream, "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// `go tool pprof <args> <file>`, its stdout.
pub fn go_pprof(args: &[&str], file: &Path) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("GOCACHE", repo_root().join("target/go/cache"))
        .output()
        .expect("go tool pprof runs");
    assert!(
        out.status.success(),
        "go tool pprof {args:?} {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `go tool pprof <args> <files…>`, its stdout: several files are merged, as pprof merges
/// them (and `-base B` subtracts B).
pub fn go_pprof_files(args: &[&str], files: &[&Path]) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .args(files)
        .env("GOCACHE", repo_root().join("target/go/cache"))
        .output()
        .expect("go tool pprof runs");
    assert!(out.status.success(), "go tool pprof {args:?} {files:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One row of `go tool pprof -top`.
#[derive(Debug, Clone, PartialEq)]
pub struct PprofRow {
    /// Function name, without pprof's ` (inline)` marker.
    pub function: String,
    /// Flat value in the unit asked for.
    pub flat: i64,
    /// Flat percentage as printed.
    pub flat_percent: f64,
    /// Cumulative value.
    pub cum: i64,
    /// Cumulative percentage as printed.
    pub cum_percent: f64,
}

/// Parses `go tool pprof -top -unit=<unit>` output: the total and every row.
pub fn parse_pprof_top(output: &str, unit: &str) -> (i64, Vec<PprofRow>) {
    let number = |s: &str| -> i64 {
        if s == "0" { 0 } else { s.trim_end_matches(unit).parse().unwrap_or_else(|e| panic!("{s:?}: {e}")) }
    };
    let percent = |s: &str| -> f64 { s.trim_end_matches('%').parse().unwrap_or_else(|e| panic!("{s:?}: {e}")) };
    let total = output
        .lines()
        .find_map(|l| l.strip_prefix("Showing nodes accounting for "))
        .and_then(|l| l.split(" of ").nth(1))
        .map(|t| number(t.trim_end_matches(" total")))
        .expect("a 'Showing nodes' line");
    let rows = output
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() >= 6).then(|| PprofRow {
                function: fields[5..].join(" ").trim_end_matches(" (inline)").to_owned(),
                flat: number(fields[0]),
                flat_percent: percent(fields[1]),
                cum: number(fields[3]),
                cum_percent: percent(fields[4]),
            })
        })
        .collect();
    (total, rows)
}

/// An HTTP/1.0 exchange for tests: status code and body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete HTTP response");
    let status_line = String::from_utf8_lossy(&response[..split]).lines().next().unwrap_or_default().to_owned();
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    (status, response[split + 4..].to_vec())
}

/// A one-trick HTTP server on `addr` answering every request with `status` and `body`
/// (a misbehaving pprof target). Runs until the process ends.
pub fn serve_canned(addr: SocketAddr, status: u16, extra_headers: &'static str, body: Vec<u8>) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = TcpListener::bind(addr).expect("bind canned server");
    let bound = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
        }
    });
    bound
}

/// A `redis-server` on a free loopback port, with nothing persisted, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    /// Where it listens.
    pub addr: SocketAddr,
    process: ChildGuard,
    _dir: tempdir::Dir,
}

/// A throwaway directory removed when dropped (no dependency for one helper).
pub mod tempdir {
    use std::path::{Path, PathBuf};

    /// The directory.
    #[derive(Debug)]
    pub struct Dir(PathBuf);

    impl Dir {
        /// A new empty directory under the system's temp dir.
        pub fn new(tag: &str) -> Self {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("biometrics-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("temp dir");
            Self(path)
        }

        /// Its path.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl RedisServer {
    /// Starts a server with extra `redis-server` arguments (`--requirepass x`, …).
    pub fn start(extra: &[&str]) -> Self {
        let ip: IpAddr = "127.0.0.1".parse().expect("loopback");
        // A port free a moment ago may be taken by the time the server binds it (tests run
        // in parallel): then another port.
        for _ in 0..5 {
            if let Some(server) = Self::try_start_on(free_port(ip), extra) {
                return server;
            }
        }
        panic!("redis-server could not bind a free port in 5 tries");
    }

    /// Starts a server speaking TLS only, with the certificate and key that
    /// [`tls_material`] made in `pki` (clients are not asked for certificates), plus extra
    /// arguments.
    pub fn start_tls(pki: &Path, extra: &[&str]) -> Self {
        let ip: IpAddr = "127.0.0.1".parse().expect("loopback");
        for _ in 0..5 {
            let port = free_port(ip);
            let args = Self::tls_args(pki, port, extra);
            if let Some(server) = Self::try_start_on(port, &args.iter().map(String::as_str).collect::<Vec<_>>()) {
                return server;
            }
        }
        panic!("redis-server could not bind a free port in 5 tries");
    }

    /// Starts a TLS server (as [`RedisServer::start_tls`]) on a given port.
    pub fn start_tls_on(port: u16, pki: &Path, extra: &[&str]) -> Self {
        let args = Self::tls_args(pki, port, extra);
        Self::start_on(port, &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn tls_args(pki: &Path, port: u16, extra: &[&str]) -> Vec<String> {
        let file = |f: &str| pki.join(f).display().to_string();
        let mut args: Vec<String> =
            ["--port", "0", "--tls-port", &port.to_string(), "--tls-auth-clients", "no"].map(str::to_owned).to_vec();
        for (flag, f) in
            [("--tls-cert-file", "server.pem"), ("--tls-key-file", "server.key"), ("--tls-ca-cert-file", "ca.pem")]
        {
            args.extend([flag.to_owned(), file(f)]);
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    }

    /// Starts a server on a given port (to bring one back where it was).
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        Self::try_start_on(port, extra).unwrap_or_else(|| panic!("redis-server could not bind port {port}"))
    }

    /// The server on `port`, if it is this one that listens there (not another test's).
    fn try_start_on(port: u16, extra: &[&str]) -> Option<Self> {
        let dir = tempdir::Dir::new("redis");
        let process = ChildGuard::spawn(
            "redis-server",
            Command::new("redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut server = Self { addr, process, _dir: dir };
        if extra.contains(&"--tls-port") {
            // No plain redis-cli to ask: it listens, and it did not exit binding.
            wait_for_listener(addr, Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(100));
            return server.process.exited().is_none().then_some(server);
        }
        let password = extra.windows(2).find(|w| w[0] == "--requirepass").map(|w| w[1]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if server.process.exited().is_some() {
                return None;
            }
            let info = server.cli(password, &["info", "server"]);
            let pid =
                info.lines().find_map(|l| l.trim().strip_prefix("process_id:")).and_then(|p| p.parse::<u32>().ok());
            if pid == Some(server.process.pid()) {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on {addr} did not answer within 10 s");
    }

    /// `redis-cli -p PORT <args>` (with `-a` when given), its stdout.
    pub fn cli(&self, auth: Option<&str>, args: &[&str]) -> String {
        redis_cli(self.addr.port(), auth, args)
    }

    /// Kills the server (a crash, as far as clients can tell).
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// `redis-cli -p PORT <args>`, its stdout.
pub fn redis_cli(port: u16, auth: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(a) = auth {
        cmd.args(["--no-auth-warning", "-a", a]);
    }
    let out = cmd.args(args).output().expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads keys with `redis-cli --pipe` (fast, and independent of the code under test).
pub fn redis_load(port: u16, commands: &[Vec<String>]) {
    use std::io::Write;
    let mut proto = Vec::new();
    for args in commands {
        write!(proto, "*{}\r\n", args.len()).expect("buffer");
        for a in args {
            write!(proto, "${}\r\n{a}\r\n", a.len()).expect("buffer");
        }
    }
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-cli --pipe");
    child.stdin.take().expect("stdin").write_all(&proto).expect("send keys");
    assert!(child.wait().expect("redis-cli --pipe finishes").success(), "redis-cli --pipe failed");
}

/// A 3-master Redis Cluster on loopback.
#[derive(Debug)]
pub struct RedisCluster {
    /// The masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three `--cluster-enabled` servers and joins them with `redis-cli --cluster create`.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            // nodes.conf lands in each server's own --dir.
            .map(|_| {
                RedisServer::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            while !n.cli(None, &["cluster", "info"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster did not become ok");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Self { nodes }
    }

    /// Runs a command through a cluster-aware `redis-cli -c`.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-c", "-h", "127.0.0.1", "-p", &self.nodes[0].addr.port().to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key in the cluster (each master scanned).
    pub fn keys(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .nodes
            .iter()
            .flat_map(|n| n.cli(None, &["--scan"]).lines().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        all.sort();
        all
    }
}

/// A binary of the workspace built into `target/debug` (by `make test`, which builds every
/// binary before running the tests).
pub fn workspace_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from);
    let path = target.join("debug").join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --workspace --bins` (make test does)", path.display());
    path
}

/// A CA (`ca.pem`) and a server certificate (`server.pem`, `server.key`) for the given
/// subject alternative names (`IP:127.0.0.1,DNS:localhost`), made with openssl in `dir`.
pub fn tls_material(dir: &Path, subject_alt_names: &str) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=biometrics-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=biometrics-test-server",
    ]);
    std::fs::write(dir.join("ext.cnf"), format!("subjectAltName={subject_alt_names}\n")).unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// A gzip file that inflates to `size` zero bytes (a "gzip bomb", about 1/1000 of that on
/// disk): one gzip member whose deflate stream repeats the compressed form of 1 MiB of
/// zeros, each copy ending on a full flush so that it stands alone. Quick to build even
/// for gigabytes, and a valid gzip file (CRC and size included).
pub fn gzip_bomb(size: u64) -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK as usize];
    let deflate = |input: &[u8], flush: FlushCompress| {
        let mut c = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(input.len() / 100 + 64);
        c.compress_vec(input, &mut out, flush).expect("deflate");
        out
    };
    let (whole, rest) = (size / CHUNK, (size % CHUNK) as usize);
    let block = deflate(&zeros, FlushCompress::Full);
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff];
    let mut crc = Crc::new();
    let mut chunk_crc = Crc::new();
    chunk_crc.update(&zeros);
    for _ in 0..whole {
        out.extend_from_slice(&block);
        crc.combine(&chunk_crc);
    }
    out.extend_from_slice(&deflate(&zeros[..rest], FlushCompress::Finish));
    crc.update(&zeros[..rest]);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out
}

/// A process's resident set size (`VmRSS` in `/proc/<pid>/status`), in bytes; 0 once it
/// is gone.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
        * 1024
}

/// Samples a process's RSS every few milliseconds on a thread of its own, keeping the peak.
#[derive(Debug)]
pub struct RssPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl RssPeak {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_bytes(pid));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak.max(rss_bytes(pid))
        });
        Self { stop, thread: Some(thread) }
    }

    /// Stops sampling; the highest RSS seen.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::repo_root;

    /// The `"127.x.y.z"` literals of a source file, but `127.0.0.1`.
    fn loopback_literals(text: &str) -> Vec<&str> {
        text.match_indices("\"127.")
            .filter_map(|(at, _)| {
                let rest = &text[at + 1..];
                let literal = &rest[..rest.find('"')?];
                let octets = literal.split('.').collect::<Vec<_>>();
                (octets.len() == 4 && octets.iter().all(|o| o.parse::<u8>().is_ok()) && literal != "127.0.0.1")
                    .then_some(literal)
            })
            .collect()
    }

    /// `make unit` runs test binaries side by side, and a test's "pods" listen on fixed
    /// loopback addresses (an agent's port is the same everywhere): two test files that
    /// use one address would collide.
    #[test]
    fn no_two_test_files_share_a_pod_address() {
        let mut files = Vec::new();
        let mut dirs: Vec<_> =
            ["operator/tests", "agent/tests", "ui/tests", "kubectl-biometrics/tests", "tests/apiserver/tests"]
                .iter()
                .map(|d| repo_root().join(d))
                .collect();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        assert!(files.len() > 20, "the test files were found: {files:?}");
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            let mut literals = loopback_literals(&text);
            literals.sort_unstable();
            literals.dedup();
            for literal in literals {
                users
                    .entry(literal.to_owned())
                    .or_default()
                    .push(file.strip_prefix(repo_root()).unwrap().display().to_string());
            }
        }
        assert!(users.len() > 20, "the addresses were found: {users:?}");
        let shared: Vec<String> =
            users.iter().filter(|(_, f)| f.len() > 1).map(|(a, f)| format!("{a}: {}", f.join(", "))).collect();
        assert!(shared.is_empty(), "addresses used by more than one test file:\n{}", shared.join("\n"));
    }

    #[test]
    fn loopback_literals_are_quoted_addresses() {
        assert_eq!(
            loopback_literals(r#"x("127.0.1.4", "127.0.0.1", "127.0.0", "127.0.0.300") "127.2.3.4""#),
            ["127.0.1.4", "127.2.3.4"]
        );
    }
}
