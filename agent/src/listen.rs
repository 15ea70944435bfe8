//! Serving connections with bounds a client cannot talk its way past: a cap on open
//! connections (beyond it, new ones wait in the kernel's backlog and cost the agent no file
//! descriptor), a deadline for each request's headers (which also closes a keep-alive
//! connection left idle that long: hyper times the wait for the next request from the moment
//! the connection goes idle), and a graceful drain on shutdown. `axum::serve` has none of
//! these knobs, so connections are driven with hyper directly.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::tls::Peer;

/// Bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, or stay idle between requests.
    pub header_read_timeout: Duration,
}

/// How long a draining connection may take to finish its request at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// File descriptors kept free for everything that is not a client connection: the profiles
/// volume, connections to the app and to Redis, TLS reloads.
const RESERVED_DESCRIPTORS: usize = 128;

/// The connection cap that fits under the process's open-file limit: `wanted`, or less when
/// the soft limit (`/proc/self/limits`) leaves no room for it.
pub fn fit_to_file_limit(wanted: usize) -> usize {
    let soft_limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..].split_whitespace().next()?.parse::<usize>().ok()
    });
    match soft_limit {
        Some(limit) => wanted.min(limit.saturating_sub(RESERVED_DESCRIPTORS)).max(1),
        None => wanted.max(1),
    }
}

/// Binds `addr`. The unspecified IPv6 address (`[::]`, the default) listens on both families
/// (IPv4 clients arrive mapped), so the agent is reachable on IPv4-only, IPv6-only and
/// dual-stack clusters alike; where the host has no IPv6 at all it falls back to `0.0.0.0`.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let dual = matches!(addr.ip(), std::net::IpAddr::V6(ip) if ip.is_unspecified());
    match bind_socket(addr, dual) {
        Err(e) if dual && ipv6_unavailable(&e) => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            tracing::info!(%addr, fallback = %v4, "no IPv6 on this host; listening on IPv4 only");
            bind_socket(v4, false)
        }
        other => other,
    }
}

fn ipv6_unavailable(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == libc::EAFNOSUPPORT || code == libc::EADDRNOTAVAIL)
}

fn bind_socket(addr: SocketAddr, dual: bool) -> std::io::Result<tokio::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    if dual {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in flight
/// finish (up to a deadline).
pub async fn serve<L>(mut listener: L, router: Router, limits: ConnectionLimits, shutdown: impl Future<Output = ()>)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(Peer(peer)));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN:?}; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_under_the_file_limit() {
        let fitted = fit_to_file_limit(usize::MAX);
        assert!(fitted >= 1);
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        let soft: usize = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert_eq!(fitted, soft.saturating_sub(RESERVED_DESCRIPTORS).max(1));
        assert_eq!(fit_to_file_limit(3), 3.min(fitted));
    }
}
