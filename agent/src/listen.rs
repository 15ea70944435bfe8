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
