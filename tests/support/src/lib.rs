//! Support for tests that run the real parts: the Go pprof target built from `tests/target`
//! with the machine's Go, child processes that are killed when a test ends, free ports and
//! waiting for a listener on a loopback address.

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
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
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

/// A port free on `ip` right now.
pub fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
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
    _process: ChildGuard,
}

impl GoTarget {
    /// Starts the target on `addr` and waits until it serves.
    pub fn start(addr: SocketAddr) -> Self {
        let process = ChildGuard::spawn(
            "pprof-target",
            Command::new(go_target_binary())
                .arg("-addr")
                .arg(addr.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for_listener(addr, Duration::from_secs(10));
        Self { addr, _process: process }
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
