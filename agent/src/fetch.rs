//! HTTP GETs to the app on the pod's loopback: plain HTTP/1.1, no redirects followed, a
//! timeout over the whole exchange, and a ceiling on the bytes read. Bodies go straight to
//! a new file the caller opened on the volume while being hashed, or into a bounded string.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The app could not be reached.
    #[error("cannot reach the app at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The exchange took longer than allowed.
    #[error("the app did not answer {url} within {0:?}", .timeout)]
    Timeout {
        /// The URL.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// A redirect, which is never followed.
    #[error("the app redirected {url} (status {status}); redirects are not followed")]
    Redirect {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// A non-2xx answer; Go's pprof explains itself in the body.
    #[error("the app answered {url} with status {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The body was larger than allowed.
    #[error("the app's response is larger than {limit} bytes (limit maxProfileBytes)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The body broke off.
    #[error("reading the app's response failed: {0}")]
    Body(String),
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A loopback HTTP client.
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
}

impl Default for Fetcher {
    fn default() -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(true);
        Self { client: Client::builder(TokioExecutor::new()).build(connector) }
    }
}

/// What a fetch to a file produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes written.
    pub bytes: u64,
    /// SHA-256 of them, hex.
    pub sha256: String,
}

impl Fetcher {
    async fn response(&self, url: &str) -> Result<hyper::Response<hyper::body::Incoming>, FetchError> {
        let uri: hyper::Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| FetchError::Connect {
            url: url.into(),
            reason: e.to_string(),
        })?;
        let response =
            self.client.get(uri).await.map_err(|e| FetchError::Connect { url: url.into(), reason: error_chain(&e) })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(FetchError::Redirect { url: url.into(), status: status.as_u16() });
        }
        if !status.is_success() {
            let body = read_bounded(response.into_body(), 2048).await.unwrap_or_default();
            return Err(FetchError::Status {
                url: url.into(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        Ok(response)
    }

    /// GETs `url` into `file` (new and empty; `shown` names it in errors), at most `limit`
    /// bytes, within `timeout`; the file is synced before returning. On error the file may
    /// remain and is the caller's to remove.
    pub async fn to_file(
        &self,
        url: &str,
        mut file: tokio::fs::File,
        shown: &str,
        limit: u64,
        timeout: Duration,
    ) -> Result<Fetched, FetchError> {
        let work = async {
            let response = self.response(url).await?;
            let write_err = |source| FetchError::Write { path: shown.to_owned(), source };
            let mut body = response.into_body();
            let (mut bytes, mut hasher) = (0u64, Sha256::new());
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| FetchError::Body(error_chain(&e)))?;
                if let Ok(data) = frame.into_data() {
                    bytes += data.len() as u64;
                    if bytes > limit {
                        return Err(FetchError::TooLarge { limit });
                    }
                    hasher.update(&data);
                    file.write_all(&data).await.map_err(write_err)?;
                }
            }
            file.flush().await.map_err(write_err)?;
            file.sync_all().await.map_err(write_err)?;
            Ok(Fetched { bytes, sha256: hex(&hasher.finalize()) })
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| Err(FetchError::Timeout { url: url.into(), timeout }))
    }

    /// GETs `url`'s bytes, at most `limit` of them, within `timeout`.
    pub async fn bytes(&self, url: &str, limit: u64, timeout: Duration) -> Result<Vec<u8>, FetchError> {
        let work = async {
            let response = self.response(url).await?;
            read_bounded(response.into_body(), limit).await
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| Err(FetchError::Timeout { url: url.into(), timeout }))
    }

    /// GETs `url` as text, at most `limit` bytes, within `timeout`.
    pub async fn text(&self, url: &str, limit: u64, timeout: Duration) -> Result<String, FetchError> {
        let work = async {
            let response = self.response(url).await?;
            let body = read_bounded(response.into_body(), limit).await?;
            Ok(String::from_utf8_lossy(&body).into_owned())
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| Err(FetchError::Timeout { url: url.into(), timeout }))
    }
}

async fn read_bounded(mut body: hyper::body::Incoming, limit: u64) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| FetchError::Body(error_chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            if (out.len() + data.len()) as u64 > limit {
                return Err(FetchError::TooLarge { limit });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
