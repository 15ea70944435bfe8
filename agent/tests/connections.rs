//! Clients that hold connections without finishing a request: idle sockets, slow bodies.
//! Neither starves probes or valid requests, and neither holds the agent's resources for
//! longer than its deadlines.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use biometrics_test_support::{free_port, http_request, wait_for_listener};
use common::*;

/// The agent process's open sockets.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
        .count()
}

#[test]
fn idle_connections_are_capped_timed_out_and_never_starve_health() {
    let health = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let health_flag = format!("--health-listen={health}");
    let agent = Agent::start(None, &["--max-connections=64", "--header-read-timeout=2s", &health_flag]);
    wait_for_listener(health, Duration::from_secs(10));
    let baseline = open_sockets(agent.process.pid());
    // 100 clients connect and send nothing.
    let idle: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(agent.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let held = open_sockets(agent.process.pid());
    assert!(held <= baseline + 64, "at most 64 client connections open: {held} sockets, {baseline} before");
    assert!(held >= baseline + 60, "the cap is reached: {held} sockets, {baseline} before");
    // Probes answer at once on their own listener, while the API's cap is reached.
    let started = Instant::now();
    assert_eq!(http_request(health, "GET", "/healthz", &[], b"").0, 200);
    assert!(started.elapsed() < Duration::from_millis(1500), "health waited {:?}", started.elapsed());
    // A valid request gets through once the silent connections have used up their 2 s.
    let (status, body) = agent.request("GET", "/v1/runtime", None);
    assert_eq!(status, 200, "{body}");
    // Every silent client was disconnected by the agent.
    for mut stream in idle {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        let closed = matches!(stream.read(&mut buf), Ok(0))
            || stream.read(&mut buf).is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(closed, "an idle connection was closed by the agent");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(open_sockets(agent.process.pid()) <= baseline + 1, "the agent let go of the idle sockets");
}

/// Sends a valid, authenticated chunked POST whose body trickles in one byte every 300 ms,
/// and returns the status the agent answered with and when.
fn slow_post(addr: SocketAddr, token: &str) -> (u16, Duration) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let head = format!(
        "POST /v1/captures HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    while started.elapsed() < Duration::from_secs(20) {
        if stream.write_all(b"1\r\n{\r\n").is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => {}
        }
    }
    let status = String::from_utf8_lossy(&response).split_whitespace().nth(1).and_then(|s| s.parse().ok());
    (status.unwrap_or(0), started.elapsed())
}

#[test]
fn slow_bodies_hold_no_request_slot_and_meet_a_deadline() {
    let agent = Agent::start(None, &["--max-concurrent-requests=2", "--body-read-timeout=2s"]);
    let token = agent.token();
    let senders: Vec<_> = (0..6)
        .map(|_| {
            let (addr, token) = (agent.addr, token.clone());
            std::thread::spawn(move || slow_post(addr, &token))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(600));
    // Six bodies trickling in, two request slots: valid requests still get through.
    for _ in 0..3 {
        let (status, body) = agent.request("GET", "/v1/runtime", None);
        assert_eq!(status, 200, "a slow body must not hold a request slot: {body}");
    }
    for sender in senders {
        let (status, took) = sender.join().unwrap();
        assert_eq!(status, 408, "a body that does not arrive in time is refused");
        assert!(took < Duration::from_secs(10), "refused at the deadline, not later: {took:?}");
    }
}

#[test]
fn the_default_listen_address_serves_ipv4_and_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(LOCALHOST);
    let v6 = SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), port);
    let v4 = SocketAddr::new(LOCALHOST, port);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_biometrics-agent"));
    cmd.arg(format!("--listen=[::]:{port}"))
        .arg("--profiles-dir")
        .arg(dir.path())
        .args(["--pod-name", POD, "--pod-namespace", NAMESPACE])
        .env("BIOMETRICS_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _agent = biometrics_test_support::ChildGuard::spawn("biometrics-agent", &mut cmd);
    wait_for_listener(v4, Duration::from_secs(10));
    assert_eq!(http_request(v4, "GET", "/healthz", &[], b"").0, 200, "over IPv4");
    assert_eq!(http_request(v6, "GET", "/healthz", &[], b"").0, 200, "over IPv6 (::1)");
    // An agent asked for an IPv6 address only serves there.
    let only = SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), free_port(LOCALHOST));
    let agent6 = Agent::start_at(only, None, &[]);
    assert_eq!(agent6.request("GET", "/v1/runtime", None).0, 200, "the API over ::1");
    assert!(TcpStream::connect(SocketAddr::new(LOCALHOST, only.port())).is_err(), "not on IPv4");
}
