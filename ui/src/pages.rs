//! The web pages: one HTML shell and one script that renders each view from the JSON API,
//! with text nodes only, under a Content-Security-Policy that allows no inline script, no
//! other origin and no framing by others; and speedscope's files, served as installed.

use std::path::Path;

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// What our own pages may do: scripts and styles from this origin only, speedscope framed
/// from this origin, JSON fetched from this origin; images also from blob: URLs (in token
/// mode the differential flame graph is fetched with the token and shown from one).
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// speedscope injects its styles at run time (aphrodite), so its frame allows inline styles,
/// still no inline script; it may only be framed by our pages. It reads its profile from
/// this origin, or (token mode) from a blob: URL our page fetched with the token.
const SPEEDSCOPE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; font-src 'self'; connect-src 'self' blob:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'self'";

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

fn with_headers(content_type: &'static str, csp: &'static str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    with_headers("text/html; charset=utf-8", PAGE_CSP, INDEX)
}

/// The pages (every view is the same shell; the script reads the path).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/captures/{*view}", get(index))
        .route("/assets/app.js", get(|| async { with_headers("text/javascript; charset=utf-8", PAGE_CSP, SCRIPT) }))
        .route("/assets/app.css", get(|| async { with_headers("text/css; charset=utf-8", PAGE_CSP, STYLE) }))
}

/// One of speedscope's release files: a plain name in its directory, nothing else.
pub async fn speedscope_file(dir: &Path, name: &str) -> Response {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !plain {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    }
    let content_type = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    match tokio::fs::read(dir.join(name)).await {
        Ok(bytes) => with_headers(content_type, SPEEDSCOPE_CSP, bytes),
        Err(_) => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
