//! A fault-injecting HTTP/1 proxy for tests: put it between a client and a server (the
//! operator and an agent, say) and switch, while the test runs, between forwarding, delaying,
//! freezing, resetting and answering with a status of its choosing. Plain threads and std
//! sockets; loopback only.
//!
//! Each client connection carries one request: the proxy reads it, applies the fault that
//! matches its path, forwards it on a fresh upstream connection with `Connection: close`
//! and relays the answer as it arrives (so a watch streams), then closes. A freeze also holds
//! answers already streaming, a watch's included. What it saw is kept for the test to read.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// What the proxy does to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward it.
    Pass,
    /// Forward it after holding it this long.
    Delay(Duration),
    /// Read it and never answer; the connection is closed once the fault changes.
    Freeze,
    /// Close the connection with a TCP reset, the request unread.
    Reset,
    /// Answer with this status and JSON body instead of forwarding.
    Status(u16, String),
}

impl Fault {
    /// A short name for the request log.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Delay(_) => "delay",
            Self::Freeze => "freeze",
            Self::Reset => "reset",
            Self::Status(..) => "status",
        }
    }
}

/// One request the proxy saw, and what it did to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The path (with the query, if any).
    pub path: String,
    /// The fault applied.
    pub fault: Fault,
}

#[derive(Debug)]
struct Rule {
    /// Requests whose path starts with this; every request when empty.
    prefix: String,
    fault: Fault,
}

#[derive(Debug, Default)]
struct State {
    rule: Option<Rule>,
    seen: Vec<Seen>,
}

impl State {
    fn fault_for(&self, path: &str) -> Fault {
        match &self.rule {
            Some(rule) if path.starts_with(&rule.prefix) => rule.fault.clone(),
            _ => Fault::Pass,
        }
    }
}

/// A running proxy; it stops accepting when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

/// The largest request head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;

impl FaultProxy {
    /// A proxy on `listen` (port 0 picks one) forwarding to `upstream`, passing everything.
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(listen).unwrap_or_else(|e| panic!("fault proxy: bind {listen}: {e}"));
        let addr = listener.local_addr().expect("fault proxy address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (state, stop) = (shared.clone(), stopping.clone());
                std::thread::spawn(move || serve(client, upstream, &state, &stop));
            }
        });
        Self { addr, state, stop }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `fault` to every request from now on.
    pub fn set(&self, fault: Fault) {
        self.set_for("", fault);
    }

    /// Applies `fault` to requests whose path starts with `prefix` (others pass), replacing
    /// any earlier fault.
    pub fn set_for(&self, prefix: &str, fault: Fault) {
        self.lock().rule = Some(Rule { prefix: prefix.to_owned(), fault });
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// How many requests whose path starts with `prefix` got a fault with this label.
    pub fn count(&self, prefix: &str, label: &str) -> usize {
        self.lock().seen.iter().filter(|s| s.path.starts_with(prefix) && s.fault.label() == label).count()
    }

    /// Waits until `count(prefix, label)` reaches `n`; panics after `timeout`.
    pub fn wait_for(&self, prefix: &str, label: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count(prefix, label) < n {
            assert!(
                Instant::now() < deadline,
                "fault proxy: fewer than {n} {label} requests under {prefix} after {timeout:?}: {:?}",
                self.seen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// The request head, peeked (not consumed) so that a reset can leave it unread.
fn peek_head(client: &TcpStream) -> Option<(usize, String, String, usize)> {
    let mut buf = vec![0u8; MAX_HEAD];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = client.peek(&mut buf).ok()?;
        if n == 0 || Instant::now() > deadline {
            return None;
        }
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut request_line = head.lines().next()?.split_whitespace();
            let (method, path) = (request_line.next()?.to_owned(), request_line.next()?.to_owned());
            let length = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            return Some((end + 4, method, path, length));
        }
        if n == buf.len() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn serve(mut client: TcpStream, upstream: SocketAddr, state: &Mutex<State>, stop: &AtomicBool) {
    let lock = || state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some((head_len, method, path, body_len)) = peek_head(&client) else { return };
    let fault = lock().fault_for(&path);
    let frozen = || !stop.load(Ordering::SeqCst) && lock().fault_for(&path) == Fault::Freeze;
    lock().seen.push(Seen { method, path: path.clone(), fault: fault.clone() });
    if fault == Fault::Reset {
        // Closed with unread data, the kernel answers with RST rather than FIN.
        drop(client);
        return;
    }
    let mut request = vec![0u8; head_len + body_len];
    if client.read_exact(&mut request).is_err() {
        return;
    }
    match fault {
        Fault::Reset => {}
        Fault::Freeze => {
            while frozen() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Fault::Status(status, body) => {
            let answer = format!(
                "HTTP/1.1 {status} Injected\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes());
            let _ = client.shutdown(Shutdown::Write);
        }
        Fault::Delay(wait) => {
            std::thread::sleep(wait);
            forward(&mut client, upstream, &request, head_len, &frozen);
        }
        Fault::Pass => forward(&mut client, upstream, &request, head_len, &frozen),
    }
}

/// Sends the request upstream with `Connection: close` and relays the answer as it comes,
/// holding it while `frozen` says so.
fn forward(client: &mut TcpStream, upstream: SocketAddr, request: &[u8], head_len: usize, frozen: &dyn Fn() -> bool) {
    let Ok(mut server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else { return };
    let head = String::from_utf8_lossy(&request[..head_len - 4]).into_owned();
    let mut rewritten: String = head
        .lines()
        .filter(|l| !l.split_once(':').is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection")))
        .map(|l| format!("{l}\r\n"))
        .collect();
    rewritten.push_str("connection: close\r\n\r\n");
    if server.write_all(rewritten.as_bytes()).and_then(|()| server.write_all(&request[head_len..])).is_err() {
        return;
    }
    // Short reads, so that a freeze takes hold of a stream that is quiet.
    let _ = server.set_read_timeout(Some(Duration::from_millis(50)));
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match server.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => 0,
            Err(_) => break,
        };
        while frozen() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if n > 0 && client.write_all(&chunk[..n]).is_err() {
            return;
        }
    }
    let _ = client.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers every request with 200 and the path it was asked for.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
                let close = head.to_ascii_lowercase().contains("connection: close");
                let body = format!("{path} close={close}");
                let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            }
        });
        addr
    }

    fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(timeout))?;
        write!(stream, "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: keep-alive\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    #[test]
    fn faults_switch_while_it_runs_and_only_where_asked() {
        let proxy = FaultProxy::start("127.0.0.1:0".parse().unwrap(), echo());
        let t = Duration::from_secs(5);
        let answer = get(proxy.addr(), "/a", t).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("/a close=true"), "{answer}");

        proxy.set_for("/v1/captures/", Fault::Status(429, r#"{"code":"TooManyRequests","message":"m"}"#.into()));
        let answer = get(proxy.addr(), "/v1/captures/x", t).unwrap();
        assert!(answer.starts_with("HTTP/1.1 429") && answer.contains("TooManyRequests"), "{answer}");
        assert!(get(proxy.addr(), "/v1/runtime", t).unwrap().ends_with("/v1/runtime close=true"), "others pass");

        proxy.set(Fault::Reset);
        let reset = get(proxy.addr(), "/b", t).unwrap_err();
        assert_eq!(reset.kind(), std::io::ErrorKind::ConnectionReset, "{reset}");

        proxy.set(Fault::Freeze);
        let frozen = get(proxy.addr(), "/c", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(frozen.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{frozen}");

        proxy.set(Fault::Delay(Duration::from_millis(300)));
        let started = Instant::now();
        assert!(get(proxy.addr(), "/d", t).unwrap().ends_with("/d close=true"));
        assert!(started.elapsed() >= Duration::from_millis(300));

        let labels: Vec<(String, &str)> = proxy.seen().iter().map(|s| (s.path.clone(), s.fault.label())).collect();
        let expected = [
            ("/a", "pass"),
            ("/v1/captures/x", "status"),
            ("/v1/runtime", "pass"),
            ("/b", "reset"),
            ("/c", "freeze"),
            ("/d", "delay"),
        ];
        assert_eq!(labels, expected.map(|(p, l)| (p.to_owned(), l)));
        assert_eq!(proxy.count("/v1/", "status"), 1);
    }
}
