//! `pods/{name}/portforward` over WebSocket, as kube-apiserver serves it to client-go and
//! kube-rs: subprotocol `v4.channel.k8s.io` (or `v5`, which adds close frames), two channels
//! per requested port (data `2i`, error `2i+1`), each opened by the server with a frame of
//! the port number, then `[channel, bytes…]` both ways. Each port is a TCP connection to
//! the pod's own loopback, made inside its network namespace as a kubelet's runtime makes
//! it (so a server listening on 127.0.0.1 in the pod is reached); a pod no kubelet here runs
//! is reached on its `status.podIP`. kubectl's forwarder speaks SPDY/3.1
//! (`portforward.k8s.io`): an error and a data stream per port and request.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::derive_accept_key, protocol::Role},
};

use crate::{error::ApiError, registry::TypeKey, store::Store};

const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The ports asked for (`?ports=80&ports=8080` or `ports=80,8080`).
pub fn requested_ports(query: Option<&str>) -> Result<Vec<u16>, ApiError> {
    let ports: Vec<u16> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "ports")
        .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .map(|p| p.trim().parse::<u16>().map_err(|_| ApiError::bad_request(format!("invalid port {p:?}"))))
        .collect::<Result<_, _>>()?;
    if ports.is_empty() {
        return Err(ApiError::bad_request("at least one port must be specified"));
    }
    Ok(ports)
}

/// Where a forwarded port's connections go.
#[derive(Debug, Clone)]
pub enum Dial {
    /// The pod's loopback, inside the network namespace bound at this path.
    PodLoopback(PathBuf),
    /// The pod's address, for pods whose processes this server does not run.
    Address(IpAddr),
}

impl Dial {
    /// Connects to `port`.
    pub async fn connect(&self, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        match self {
            Self::Address(address) => tokio::net::TcpStream::connect(SocketAddr::new(*address, port)).await,
            Self::PodLoopback(netns) => {
                let netns = netns.clone();
                let (tx, rx) = tokio::sync::oneshot::channel();
                // A thread of its own: entering a namespace changes the calling thread for
                // good, and a socket stays in the namespace it was made in.
                std::thread::spawn(move || {
                    let _ = tx.send(connect_inside(&netns, port));
                });
                let stream = rx.await.map_err(|_| std::io::Error::other("the connecting thread died"))??;
                stream.set_nonblocking(true)?;
                tokio::net::TcpStream::from_std(stream)
            }
        }
    }
}

/// Connects to `localhost:port` (IPv4, then IPv6) from inside the network namespace `netns`.
fn connect_inside(netns: &std::path::Path, port: u16) -> std::io::Result<std::net::TcpStream> {
    let namespace = std::fs::File::open(netns)?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&namespace),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    let timeout = Duration::from_secs(5);
    std::net::TcpStream::connect_timeout(&SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port), timeout)
        .or_else(|_| std::net::TcpStream::connect_timeout(&SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port), timeout))
}

/// Upgrades the request and forwards its ports to the pod.
pub fn serve(
    store: &Store,
    node: Option<&crate::kubelet::NodeInfo>,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response, ApiError> {
    let pod = store.get(&TypeKey { group: String::new(), plural: "pods".into() }, namespace, name)?;
    let address: IpAddr = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?;
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let dial = match node.map(|n| n.pod_netns(uid)) {
        Some(netns) if pod.pointer("/spec/nodeName").is_some() && netns.exists() => Dial::PodLoopback(netns),
        _ => Dial::Address(address),
    };
    let upgrade_to = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if upgrade_to.eq_ignore_ascii_case("SPDY/3.1") {
        let Some(upgrade) = upgrade else { return Err(ApiError::bad_request("the connection cannot be upgraded")) };
        return Ok(serve_spdy(dial, upgrade));
    }
    let ports = requested_ports(query)?;
    let websocket = websocket_key(headers).zip(upgrade).ok_or_else(|| {
        ApiError::bad_request(
            "port-forward is served over SPDY/3.1 or WebSocket (v4.channel.k8s.io, v5.channel.k8s.io); SPDY tunnelled in WebSocket is not",
        )
    })?;
    accept_websocket(headers, websocket, &PROTOCOLS, move |socket, _| forward(socket, dial, ports))
}

/// The upgraded connection of a WebSocket.
pub type Socket = WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// The request's `Sec-WebSocket-Key`, when it asks to upgrade to WebSocket.
pub fn websocket_key(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    upgrade.eq_ignore_ascii_case("websocket").then(|| headers.get(header::SEC_WEBSOCKET_KEY).cloned()).flatten()
}

/// Accepts a WebSocket upgrade (its key and the connection to upgrade) with the first of
/// `protocols` the client offers, and runs `serve` on the socket once it is upgraded.
pub fn accept_websocket<F, Fut>(
    headers: &HeaderMap,
    (key, upgrade): (HeaderValue, hyper::upgrade::OnUpgrade),
    protocols: &[&'static str],
    serve: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Socket, &'static str) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let offered = headers.get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let protocol = protocols
        .iter()
        .copied()
        .find(|p| offered.split(',').any(|o| o.trim() == *p))
        .ok_or_else(|| ApiError::bad_request(format!("none of the offered subprotocols ({offered}) is served")))?;
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let socket = WebSocketStream::from_raw_socket(hyper_util::rt::TokioIo::new(upgraded), Role::Server, None).await;
        serve(socket, protocol).await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|e| ApiError::bad_request(e.to_string()))?,
    );
    h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    Ok(response.into_response())
}

/// Moves bytes between the socket's channels and one TCP connection per port.
async fn forward<S>(socket: WebSocketStream<S>, dial: Dial, ports: Vec<u16>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = socket.split();
    let (to_client, mut outgoing) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    // Every channel opens with its port number.
    for (i, port) in ports.iter().enumerate() {
        for channel in [2 * i, 2 * i + 1] {
            let [lo, hi] = port.to_le_bytes();
            let frame = vec![u8::try_from(channel).unwrap_or(u8::MAX), lo, hi];
            if sink.send(Message::binary(frame)).await.is_err() {
                return;
            }
        }
    }
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if sink.send(Message::binary(frame)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut to_pod = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        to_pod.push(tx);
        let out = to_client.clone();
        let data = u8::try_from(2 * i).unwrap_or(u8::MAX);
        let dial = dial.clone();
        tokio::spawn(async move {
            let mut connection = match dial.connect(port).await {
                Ok(c) => c,
                Err(e) => {
                    let mut frame = vec![data + 1];
                    frame.extend(format!("error forwarding port {port} to pod: {e}").into_bytes());
                    let _ = out.send(frame).await;
                    return;
                }
            };
            let (mut read, mut write) = connection.split();
            let upstream = async {
                while let Some(bytes) = rx.recv().await {
                    if write.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                let _ = write.shutdown().await;
            };
            let downstream = async {
                let mut buffer = vec![0u8; 32 * 1024];
                loop {
                    match read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut frame = Vec::with_capacity(n + 1);
                            frame.push(data);
                            frame.extend_from_slice(&buffer[..n]);
                            if out.send(frame).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            tokio::join!(upstream, downstream);
        });
    }
    drop(to_client);
    while let Some(Ok(message)) = stream.next().await {
        let Message::Binary(bytes) = message else {
            if matches!(message, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Some((&channel, payload)) = bytes.split_first() else { continue };
        if let Some(tx) = to_pod.get(usize::from(channel) / 2).filter(|_| channel % 2 == 0) {
            let _ = tx.send(payload.to_vec()).await;
        }
    }
    drop(to_pod);
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_repeated_or_comma_separated() {
        assert_eq!(requested_ports(Some("ports=80&ports=8080")).unwrap(), [80, 8080]);
        assert_eq!(requested_ports(Some("ports=80,81")).unwrap(), [80, 81]);
        assert!(requested_ports(Some("ports=x")).is_err());
        assert!(requested_ports(None).is_err());
    }
}

/// The pieces of one forwarded port over SPDY.
#[derive(Default)]
struct SpdyPort {
    error_stream: Option<u32>,
    to_pod: Option<tokio::sync::mpsc::Sender<Option<Vec<u8>>>>,
}

/// Answers kubectl's SPDY/3.1 upgrade and forwards each (error, data) stream pair it opens
/// to the pod's address.
pub fn serve_spdy(dial: Dial, upgrade: hyper::upgrade::OnUpgrade) -> Response {
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        spdy_session(hyper_util::rt::TokioIo::new(upgraded), dial).await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert("X-Stream-Protocol-Version", HeaderValue::from_static("portforward.k8s.io"));
    response
}

async fn spdy_session<S>(connection: S, dial: Dial)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use crate::spdy::{self, Frame};
    let (mut read, mut write) = tokio::io::split(connection);
    let (frames, mut outgoing) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if write.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let mut headers_in = spdy::HeaderReader::default();
    let mut headers_out = spdy::HeaderWriter::default();
    let mut ports: std::collections::HashMap<String, SpdyPort> = std::collections::HashMap::new();
    let mut data_streams: std::collections::HashMap<u32, tokio::sync::mpsc::Sender<Option<Vec<u8>>>> =
        std::collections::HashMap::new();
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    'session: loop {
        while let Some((frame, used)) = spdy::parse_frame(&buffer) {
            buffer.drain(..used);
            match frame {
                Frame::Control { kind: spdy::SYN_STREAM, payload, .. } if payload.len() >= 10 => {
                    let stream = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
                    let Ok(headers) = headers_in.read(&payload[10..]) else { break 'session };
                    let get = |name: &str| {
                        headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default()
                    };
                    let mut reply = stream.to_be_bytes().to_vec();
                    reply.extend(headers_out.write(&[]));
                    if frames.send(spdy::control(spdy::SYN_REPLY, 0, &reply)).await.is_err() {
                        break 'session;
                    }
                    let request = get("requestid");
                    let entry = ports.entry(request).or_default();
                    match get("streamtype").as_str() {
                        "error" => entry.error_stream = Some(stream),
                        "data" => {
                            let port: u16 = get("port").parse().unwrap_or(0);
                            let (tx, rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(16);
                            entry.to_pod = Some(tx.clone());
                            data_streams.insert(stream, tx);
                            tokio::spawn(spdy_port(dial.clone(), port, stream, entry.error_stream, rx, frames.clone()));
                        }
                        _ => {}
                    }
                }
                Frame::Control { kind: spdy::PING, flags, payload } => {
                    let _ = frames.send(spdy::control(spdy::PING, flags, &payload)).await;
                }
                Frame::Control { kind: spdy::GOAWAY, .. } => break 'session,
                Frame::Control { kind: spdy::RST_STREAM, payload, .. } if payload.len() >= 4 => {
                    let stream = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
                    if let Some(tx) = data_streams.remove(&stream) {
                        let _ = tx.send(None).await;
                    }
                }
                Frame::Control { .. } => {}
                Frame::Data { stream, flags, payload } => {
                    if let Some(tx) = data_streams.get(&stream) {
                        if !payload.is_empty() {
                            let _ = tx.send(Some(payload)).await;
                        }
                        if flags & spdy::FLAG_FIN != 0 {
                            let _ = tx.send(None).await;
                        }
                    }
                }
            }
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    drop(ports);
    drop(data_streams);
    drop(frames);
    let _ = writer.await;
}

/// One forwarded connection: the pod's bytes as DATA on `stream`, the client's to the pod;
/// a refused connection is reported on the error stream.
async fn spdy_port(
    dial: Dial,
    port: u16,
    stream: u32,
    error_stream: Option<u32>,
    mut from_client: tokio::sync::mpsc::Receiver<Option<Vec<u8>>>,
    frames: tokio::sync::mpsc::Sender<Vec<u8>>,
) {
    use crate::spdy;
    let connection = match dial.connect(port).await {
        Ok(c) => c,
        Err(e) => {
            if let Some(error_stream) = error_stream {
                let message = format!("error forwarding port {port} to pod: {e}");
                let _ = frames.send(spdy::data(error_stream, spdy::FLAG_FIN, message.as_bytes())).await;
            }
            let _ = frames.send(spdy::data(stream, spdy::FLAG_FIN, &[])).await;
            return;
        }
    };
    let (mut read, mut write) = connection.into_split();
    let upstream = tokio::spawn(async move {
        while let Some(Some(bytes)) = from_client.recv().await {
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if frames.send(spdy::data(stream, 0, &buffer[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
    // As the kubelet's forwarder: once the pod's side ends, both streams close.
    upstream.abort();
    let _ = frames.send(spdy::data(stream, spdy::FLAG_FIN, &[])).await;
    if let Some(error_stream) = error_stream {
        let _ = frames.send(spdy::data(error_stream, spdy::FLAG_FIN, &[])).await;
    }
}
