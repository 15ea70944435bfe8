//! The capture browser's JSON API (`/api/v1/…`, the types of `biometrics_ui::api`) over
//! HTTP/1: at the local end of our port-forward, or at `--ui URL` (https too, verified
//! against the system's roots, for a browser behind an ingress).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use biometrics_ui::api::{ApiError, CaptureDetail, CompareView, RunDetail, TopView};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Uri, body::Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Where the last failed port-forward stream said why, so that a request that broke on it
/// reports the port-forward's reason rather than a closed connection.
pub type TunnelErrors = Arc<Mutex<Option<(String, String)>>>;

/// A client of one capture browser.
pub struct Browser {
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
    tunnel_errors: Option<TunnelErrors>,
    /// The bearer token a browser in token mode asks for.
    token: Option<String>,
}

/// A path segment with everything but RFC 3986's unreserved characters percent-encoded.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `--ui URL` checked and without its trailing `/` (a path prefix, such as a proxy's, is
/// kept).
pub fn base_url(given: &str) -> Result<String> {
    let bad = |reason: &str| Error::BadUrl { given: given.to_owned(), reason: reason.to_owned() };
    let uri: Uri = given.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("write http://HOST:PORT or https://HOST")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if uri.query().is_some() {
        return Err(bad("a query has no place in the browser's address"));
    }
    Ok(given.trim_end_matches('/').to_owned())
}

/// The error an answer other than 2xx stands for. The browser's error bodies are
/// `{"message": …}`; anything else (a proxy's page) is quoted, shortened.
pub fn answer_error(url: &str, status: u16, body: &[u8]) -> Error {
    let message = serde_json::from_slice::<ApiError>(body).map(|e| e.message).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let short: String = text.chars().take(200).collect();
        if short.len() < text.len() { format!("{short}…") } else { short }
    });
    match status {
        401 => Error::Unauthorized(message),
        404 => Error::NotFound(message),
        403 => Error::Forbidden(message),
        502 => Error::AgentUnreachable(message),
        500 => Error::BrowserFailed(message),
        _ => Error::Unexpected { url: url.to_owned(), status, body: message },
    }
}

impl Browser {
    /// A client of the browser at `base` (see [`base_url`]); each request gives up after
    /// `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<Self> {
        let base = base_url(base)?;
        let builder = if base.starts_with("https:") {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map_err(|e| Error::BadUrl { given: base.clone(), reason: format!("no TLS root certificates: {e}") })?
        } else {
            // Plain HTTP: no certificate is ever checked, so no roots are needed.
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { base, client, timeout, tunnel_errors: None, token: None })
    }

    /// Reports a broken port-forward stream as such (see [`TunnelErrors`]).
    pub fn with_tunnel_errors(mut self, errors: TunnelErrors) -> Self {
        self.tunnel_errors = Some(errors);
        self
    }

    /// Sends `token` as `Authorization: Bearer` with every request (a browser in token mode).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.trim().is_empty());
        self
    }

    /// The browser's own address plus `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits up to 2 s for the port-forward (if any) to record why a connection broke.
    async fn tunnel_settled(&self) {
        let Some(errors) = &self.tunnel_errors else { return };
        for _ in 0..40 {
            if errors.lock().ok().is_some_and(|e| e.is_some()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    fn unreachable(&self, url: &str, reason: String) -> Error {
        let broken = self.tunnel_errors.as_ref().and_then(|e| e.lock().ok().and_then(|e| e.clone()));
        match broken {
            Some((pod, why)) => Error::PortForward { pod, reason: why },
            None => Error::BrowserUnreachable { url: url.to_owned(), reason },
        }
    }

    /// GETs `path` and returns the 2xx answer's body as it arrives; any other answer is
    /// read and made into its error.
    pub async fn get(&self, path: &str) -> Result<Incoming> {
        let url = self.url(path);
        let mut request =
            Request::get(&url).header(hyper::header::ACCEPT, "application/json, application/octet-stream");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {}", token.trim()));
        }
        let request =
            request.body(Empty::new()).map_err(|e| Error::BadUrl { given: url.clone(), reason: e.to_string() })?;
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                // The port-forward says why a moment after the connection breaks (the pod
                // refused it, say): that is the line worth showing.
                self.tunnel_settled().await;
                return Err(self.unreachable(&url, error_chain(&e)));
            }
            Err(_) => return Err(self.unreachable(&url, format!("no answer within {:?}", self.timeout))),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response.into_body());
        }
        let body = self.read(&url, response.into_body()).await.unwrap_or_default();
        Err(answer_error(&url, status.as_u16(), &body))
    }

    async fn read(&self, url: &str, body: Incoming) -> Result<Bytes> {
        let collected = tokio::time::timeout(self.timeout, body.collect())
            .await
            .map_err(|_| self.unreachable(url, format!("the answer did not finish within {:?}", self.timeout)))?
            .map_err(|e| self.unreachable(url, error_chain(&e)))?;
        Ok(collected.to_bytes())
    }

    /// GETs `path` and parses the JSON answer.
    pub async fn json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.url(path);
        let body = self.get(path).await?;
        let bytes = self.read(&url, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode { url, source })
    }

    /// A capture and its runs, newest first.
    pub async fn capture(&self, namespace: &str, name: &str) -> Result<CaptureDetail> {
        self.json(&capture_path(namespace, name)).await
    }

    /// One run, with each pod's files.
    pub async fn run(&self, namespace: &str, name: &str, run: &str) -> Result<RunDetail> {
        self.json(&format!("{}/runs/{}", capture_path(namespace, name), segment(run))).await
    }

    /// A run's top functions.
    pub async fn top(&self, namespace: &str, name: &str, run: &str, query: &Query<'_>) -> Result<TopView> {
        self.json(&format!("{}/runs/{}/top?{}", capture_path(namespace, name), segment(run), query.encode())).await
    }

    /// Two runs compared.
    pub async fn compare(
        &self,
        namespace: &str,
        name: &str,
        base: &str,
        run: &str,
        query: &Query<'_>,
    ) -> Result<CompareView> {
        self.json(&format!(
            "{}/compare?base={}&run={}&{}",
            capture_path(namespace, name),
            segment(base),
            segment(run),
            query.encode()
        ))
        .await
    }
}

fn capture_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{}/captures/{}", segment(namespace), segment(name))
}

/// The profile, pod and node count of a `top` or `compare` request.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// `cpu`, `heap`, …
    pub profile: &'a str,
    /// One pod's profile rather than all pods' merged.
    pub pod: Option<&'a str>,
    /// At most this many functions (0: the browser's default).
    pub nodecount: u32,
}

impl Query<'_> {
    fn encode(&self) -> String {
        let mut query = format!("profile={}", segment(self.profile));
        if let Some(pod) = self.pod {
            query.push_str(&format!("&pod={}", segment(pod)));
        }
        if self.nodecount > 0 {
            query.push_str(&format!("&nodecount={}", self.nodecount));
        }
        query
    }
}

/// An error with its causes, `a: b: c`, as one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_queries_are_encoded() {
        assert_eq!(segment("web-0.a_b~"), "web-0.a_b~");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
        let q = Query { profile: "cpu", pod: Some("web 0"), nodecount: 20 };
        assert_eq!(q.encode(), "profile=cpu&pod=web%200&nodecount=20");
        assert_eq!(Query { profile: "heap", pod: None, nodecount: 0 }.encode(), "profile=heap");
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(base_url("http://127.0.0.1:9478/").unwrap(), "http://127.0.0.1:9478");
        assert_eq!(base_url("https://ui.example/biometrics/").unwrap(), "https://ui.example/biometrics");
        for bad in ["127.0.0.1:9478", "ftp://x", "http://", "http://x/?a=b", "not a url"] {
            assert!(matches!(base_url(bad), Err(Error::BadUrl { .. })), "{bad}");
        }
    }

    #[test]
    fn answers_become_their_errors() {
        let body = br#"{"message": "no ProfileCapture shop/nope"}"#;
        assert_eq!(answer_error("u", 404, body).to_string(), "no ProfileCapture shop/nope");
        let e = answer_error("u", 502, br#"{"message": "agent web-0 (10.0.0.1:9477): connection refused"}"#);
        assert_eq!(e.to_string(), "agent unreachable: agent web-0 (10.0.0.1:9477): connection refused");
        assert_eq!(answer_error("u", 403, br#"{"message": "m"}"#).to_string(), "RBAC denied: m");
        assert_eq!(answer_error("u", 500, br#"{"message": "m"}"#).to_string(), "the capture browser failed: m");
        let e = answer_error("http://x/api", 418, format!("<html>{}</html>", "x".repeat(300)).as_bytes());
        let text = e.to_string();
        assert!(text.starts_with("http://x/api: HTTP 418: <html>xxx"), "{text}");
        assert!(text.ends_with('…') && text.len() < 260, "{text}");
    }
}
