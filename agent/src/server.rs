//! The agent's HTTP server: open health and metrics endpoints, and the authenticated v1 API
//! with its limits (request body size, concurrent requests).

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use axum::{
    Router,
    body::Body,
    extract::{Path, Query, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::{
    api::{
        CaptureRequest, RetentionRequest, RetentionResponse,
        routes::{self, ErrorBody, ErrorCode},
    },
    auth::{AuthError, Verifier, unix_now},
    captures::{Engine, RetentionError, SubmitError},
    metrics::Metrics,
};

/// A JSON error response: its kind, which decides the status, and the reason.
pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    (status_of(code), axum::Json(ErrorBody { code, message: message.into() })).into_response()
}

/// The HTTP status each kind of failure is answered with.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::TrustNotReady | ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::VolumeConflict | ErrorCode::Busy => StatusCode::CONFLICT,
        ErrorCode::RedisAuthFailed
        | ErrorCode::RedisUnreachable
        | ErrorCode::RedisCommandFailed
        | ErrorCode::RedisCertificateUntrusted
        | ErrorCode::RedisServerNameMismatch => StatusCode::BAD_GATEWAY,
        ErrorCode::Internal | ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Loads the operator's public key, again whenever the file changes (ConfigMap updates).
#[derive(Debug)]
pub struct KeyLoader {
    path: Option<PathBuf>,
    namespace: String,
    pod: String,
    cached: Mutex<Option<(SystemTime, Verifier)>>,
}

impl KeyLoader {
    /// A loader for the key at `path` for pod `namespace/pod`.
    pub fn new(path: Option<PathBuf>, namespace: String, pod: String) -> Self {
        Self { path, namespace, pod, cached: Mutex::new(None) }
    }

    /// The current verifier, or why there is none: `TrustNotReady` while the key file is
    /// not there yet (the ConfigMap volume is filled after the pod starts), `Unauthorized`
    /// when the agent was given no key or a key it cannot use.
    pub fn verifier(&self) -> Result<Verifier, (ErrorCode, String)> {
        let unusable = |reason: String| (ErrorCode::Unauthorized, reason);
        let path = self.path.as_ref().ok_or_else(|| unusable("the agent has no --operator-public-key".into()))?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorCode::TrustNotReady
            } else {
                ErrorCode::Unauthorized
            };
            (code, format!("cannot read the operator public key {}: {e}", path.display()))
        })?;
        let mut cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((when, verifier)) = cached.as_ref()
            && *when == modified
        {
            return Ok(verifier.clone());
        }
        let pem = std::fs::read(path)
            .map_err(|e| unusable(format!("cannot read the operator public key {}: {e}", path.display())))?;
        let verifier = Verifier::from_pem(&pem, &self.namespace, &self.pod).map_err(unusable)?;
        *cached = Some((modified, verifier.clone()));
        Ok(verifier)
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Capture jobs.
    pub engine: Engine,
    /// Metrics.
    pub metrics: Metrics,
    /// Token verification.
    pub keys: Arc<KeyLoader>,
    /// Runtime samples of the app, taken while asked for.
    pub runtime: crate::sampling::Sampling,
    /// The app's request signals, read while asked for.
    pub requests_signals: crate::requests::RequestSignals,
    /// One self-profile at a time.
    pub self_profile: Arc<tokio::sync::Mutex<()>>,
    /// Concurrent `/v1/` requests.
    pub requests: Arc<Semaphore>,
    /// The largest request body accepted.
    pub max_request_bytes: usize,
    /// How long a request body may take to arrive.
    pub body_read_timeout: std::time::Duration,
    /// Redis work.
    pub cache: crate::cache::CacheService,
    /// The capture files on the volume.
    pub files: crate::files::Files,
}

/// Liveness and readiness, for the health listener.
pub fn health_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(|| async { "ok" }))
}

/// The router.
pub fn router(state: AppState) -> Router {
    // The routes that start work: refused once the agent is shutting down.
    // A capture start is not among them: a retried start of a capture already accepted
    // answers that capture, so the draining check is `submit`'s, after its lookup.
    let starting = Router::new()
        .route(routes::RETENTION.template, post(retention))
        .route(routes::SELF_PROFILE.template, get(self_profile))
        .route(routes::START_INVALIDATION.template, post(create_invalidation))
        .route(routes::ENFORCE.template, post(enforce))
        .route_layer(middleware::from_fn_with_state(state.clone(), refuse_while_draining));
    // Status, cancelling and reading go on while it drains: the operator polls the
    // captures it finishes.
    let v1 = starting
        .route(routes::START_CAPTURE.template, post(create_capture))
        .route(routes::CAPTURE.template, get(get_capture).delete(delete_capture))
        .route(routes::STOP_CAPTURE.template, post(stop_capture))
        .route(routes::RUNTIME.template, get(runtime).post(runtime_with_requests))
        .route(routes::INVALIDATION.template, get(get_invalidation).delete(cancel_invalidation))
        .route(routes::ENFORCEMENT.template, get(get_enforcement).delete(cancel_enforcement))
        .route(routes::STATS.template, post(cache_stats))
        .route(routes::SERVE_POLICY.template, put(serve_policy))
        .route(routes::CAPTURE_FILES.template, get(capture_files))
        .route(routes::CAPTURE_FILE.template, get(capture_file))
        .layer(middleware::from_fn_with_state(state.clone(), guard));
    health_router()
        .route("/metrics", get(metrics))
        // For the app's own cache client in the pod: no token, but loopback callers only.
        .route(routes::APP_POLICY.template, get(applied_policy))
        .merge(v1)
        .fallback(|| async { error(ErrorCode::NotFound, "no such endpoint") })
        .with_state(state)
}

/// Authentication, the request body within its deadline, then the concurrency limit, before
/// any `/v1/` handler runs. A slot is taken only once the body is in, so slow senders hold
/// none.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let verifier = match state.keys.verifier() {
        Ok(v) => v,
        Err((code, reason)) => {
            state.metrics.auth_failures.with_label_values(&["no_key"]).inc();
            return error(code, reason);
        }
    };
    let given = request.headers().get_all(header::AUTHORIZATION).iter().count();
    if given > 1 {
        state.metrics.auth_failures.with_label_values(&["ambiguous"]).inc();
        return error(
            ErrorCode::InvalidRequest,
            format!("the request has {given} Authorization headers; send exactly one"),
        );
    }
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Err(e) = verifier.verify(authorization, unix_now()) {
        state.metrics.auth_failures.with_label_values(&[e.label()]).inc();
        let status = match e {
            AuthError::Unauthorized(_) => ErrorCode::Unauthorized,
            AuthError::Forbidden(_) => ErrorCode::Forbidden,
        };
        return error(status, e.to_string());
    }
    // Who asked, for the record: the operator replica that sent it (its Lease identity).
    let caller = request.headers().get(routes::CALLER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info!(target: "biometrics_agent::access", method = %request.method(), path = %request.uri().path(), caller, "request");
    let (parts, body) = request.into_parts();
    let limit = state.max_request_bytes;
    let body = match tokio::time::timeout(state.body_read_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_length_limit(&e) => {
            return error(ErrorCode::PayloadTooLarge, format!("the request body is larger than {limit} bytes"));
        }
        Ok(Err(e)) => return error(ErrorCode::InvalidRequest, format!("reading the request body failed: {e}")),
        Err(_) => {
            return error(
                ErrorCode::RequestTimeout,
                format!("the request body did not arrive within {:?}", state.body_read_timeout),
            );
        }
    };
    let request = Request::from_parts(parts, Body::from(body));
    let Ok(_permit) = state.requests.clone().try_acquire_owned() else {
        return error(ErrorCode::TooManyRequests, "too many concurrent requests; retry later");
    };
    next.run(request).await
}

/// New work is refused with 503 once shutdown has begun.
async fn refuse_while_draining(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.engine.is_draining() {
        return error(ErrorCode::ShuttingDown, crate::captures::DRAINING);
    }
    next.run(request).await
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

async fn parse_body<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T, Response> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| error(ErrorCode::PayloadTooLarge, format!("the request body is larger than {limit} bytes")))?;
    serde_json::from_slice(&bytes).map_err(|e| error(ErrorCode::InvalidRequest, format!("invalid request body: {e}")))
}

async fn create_capture(State(state): State<AppState>, body: Body) -> Response {
    let request: CaptureRequest = match parse_body(body, state.max_request_bytes).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    match state.engine.submit(request) {
        Ok((status, created)) => {
            if created {
                tracing::info!(id = %status.id, "capture accepted");
            }
            json(StatusCode::ACCEPTED, &status)
        }
        Err(e @ SubmitError::Invalid(_)) => error(ErrorCode::InvalidRequest, e.to_string()),
        Err(e @ (SubmitError::Full(_) | SubmitError::Queued { .. })) => {
            error(ErrorCode::TooManyRequests, e.to_string())
        }
        Err(e @ SubmitError::ShuttingDown) => error(ErrorCode::ShuttingDown, e.to_string()),
    }
}

async fn get_capture(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.engine.status(&id) {
        Some(status) => json(StatusCode::OK, &status),
        None => error(ErrorCode::NotFound, format!("no capture {id:?}")),
    }
}

async fn delete_capture(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.engine.cancel(&id).await {
        Some(status) => json(StatusCode::OK, &status),
        None => error(ErrorCode::NotFound, format!("no capture {id:?}")),
    }
}

async fn stop_capture(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.engine.stop(&id).await {
        Some(status) => json(StatusCode::OK, &status),
        None => error(ErrorCode::NotFound, format!("no capture {id:?}")),
    }
}

async fn runtime(State(state): State<AppState>) -> Response {
    json(StatusCode::OK, &state.runtime.ask().await)
}

/// The runtime sample with the request figures of the source in the body; the source is
/// read from now on for the lease (a new one starts an empty window).
async fn runtime_with_requests(State(state): State<AppState>, body: Body) -> Response {
    let request: crate::api::RuntimeRequest = match parse_body(body, state.max_request_bytes).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    if let Err(e) = state.requests_signals.want(&request.metrics) {
        return error(ErrorCode::InvalidRequest, e.to_string());
    }
    let mut sample = state.runtime.ask().await;
    sample.requests = state.requests_signals.figures(&request.metrics);
    json(StatusCode::OK, &sample)
}

async fn retention(State(state): State<AppState>, body: Body) -> Response {
    let request: RetentionRequest = match parse_body(body, state.max_request_bytes).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    match state.engine.retain(&request) {
        Ok(removed) => json(StatusCode::OK, &RetentionResponse { removed }),
        Err(e @ RetentionError::Invalid(_)) => error(ErrorCode::InvalidRequest, e.to_string()),
        Err(e @ RetentionError::OtherNamespace { .. }) => error(ErrorCode::Forbidden, e.to_string()),
        Err(e @ RetentionError::Volume(_)) => {
            tracing::warn!(error = %e, "retention refused");
            error(ErrorCode::VolumeConflict, e.to_string())
        }
    }
}

#[derive(serde::Deserialize)]
struct SelfProfileQuery {
    seconds: Option<u64>,
}

async fn self_profile(State(state): State<AppState>, Query(q): Query<SelfProfileQuery>) -> Response {
    let seconds = q.seconds.unwrap_or(30);
    if !(1..=60).contains(&seconds) {
        return error(ErrorCode::InvalidRequest, "seconds must be between 1 and 60");
    }
    let Ok(_busy) = state.self_profile.try_lock() else {
        return error(ErrorCode::Busy, "a CPU profile of the agent is already being taken");
    };
    match tokio::task::spawn_blocking(move || crate::selfprof::cpu_profile(seconds)).await {
        Ok(Ok(bytes)) => {
            let mut response = Response::new(Body::from(bytes));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            response
        }
        Ok(Err(reason)) => error(ErrorCode::Internal, reason),
        Err(e) => error(ErrorCode::Internal, e.to_string()),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(age) = state.runtime.age() {
        state.metrics.runtime_sample_age.set(age.as_secs_f64());
    }
    let budget = state.engine.analysis_memory();
    state.metrics.analysis_memory_held.set(i64::try_from(budget.total() - budget.available()).unwrap_or(i64::MAX));
    state.metrics.analyses_waiting.set(i64::try_from(budget.waiting()).unwrap_or(i64::MAX));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn create_invalidation(State(state): State<AppState>, body: Body) -> Response {
    let request: crate::api::InvalidationRequest = match parse_body(body, state.max_request_bytes).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    match state.cache.jobs.submit(request, state.cache.pool.clone(), state.cache.pod.clone()) {
        Ok(status) => json(StatusCode::ACCEPTED, &status),
        Err((code, reason)) => error(code, reason),
    }
}

async fn get_invalidation(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.cache.jobs.status(&id) {
        Some(status) => json(StatusCode::OK, &status),
        None => error(ErrorCode::NotFound, format!("no invalidation {id:?}")),
    }
}

async fn cancel_invalidation(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.cache.jobs.cancel(&id) {
        Some(status) => json(StatusCode::OK, &status),
        None => error(ErrorCode::NotFound, format!("no invalidation {id:?}")),
    }
}

async fn enforce(State(state): State<AppState>, body: Body) -> Response {
    let request: crate::api::EnforceRequest = match parse_body(body, state.max_request_bytes).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let applied = state.cache.applied.clone();
    let done = move |request: &crate::api::EnforceRequest| {
        let policy = crate::api::AppliedPolicy {
            policy: request.policy.clone(),
            key_prefix: request.key_prefix.clone(),
            strategy: request.strategy.clone(),
            applied_at: jiff::Timestamp::now().round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default(),
        };
        let key = policy_key(policy.policy.as_ref());
        applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, policy);
    };
    match state.cache.enforcements.submit(request, state.cache.pool.clone(), done) {
        Ok(status) => json(StatusCode::ACCEPTED, &status),
        Err((code, reason)) => error(code, reason),
    }
}

async fn get_enforcement(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.cache.enforcements.status(&id) {
        Some(status) => json(StatusCode::OK, &status),
        None => error(ErrorCode::NotFound, format!("no enforcement {id:?}")),
    }
}

async fn cancel_enforcement(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.cache.enforcements.cancel(&id) {
        Some(status) => json(StatusCode::OK, &status),
        None => error(ErrorCode::NotFound, format!("no enforcement {id:?}")),
    }
}

async fn cache_stats(State(state): State<AppState>, body: Body) -> Response {
    let request: crate::api::StatsRequest = match parse_body(body, state.max_request_bytes).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    if let Err(e) = crate::cache::glob::check_prefix(&request.key_prefix) {
        return error(ErrorCode::InvalidRequest, e.0);
    }
    if let Err(reason) = crate::cache::conn::check_target(&request.redis) {
        return error(ErrorCode::InvalidRequest, reason);
    }
    match crate::cache::stats::stats(&request, &state.cache).await {
        Ok(stats) => json(StatusCode::OK, &stats),
        Err(e) => error(e.code(), e.to_string()),
    }
}

/// `<namespace>/<name>` of a policy's CachePolicy ("" for a request that names none).
fn policy_key(policy: Option<&crate::api::PolicyRef>) -> String {
    policy.map(|p| format!("{}/{}", p.namespace, p.name)).unwrap_or_default()
}

fn keep_applied(state: &AppState, policy: crate::api::AppliedPolicy) {
    let key = policy_key(policy.policy.as_ref());
    state.cache.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, policy);
}

/// A policy this agent serves its app, set by the operator on every selected pod (the
/// executor also sets it when it enforces); one per CachePolicy.
async fn serve_policy(State(state): State<AppState>, body: Body) -> Response {
    let policy: crate::api::AppliedPolicy = match parse_body(body, state.max_request_bytes).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if let Err(e) = crate::cache::glob::check_prefix(&policy.key_prefix) {
        return error(ErrorCode::InvalidRequest, e.0);
    }
    if let Some(r) = &policy.policy {
        let checked = crate::names::dns_label("policy.namespace", &r.namespace)
            .and_then(|()| crate::names::dns_subdomain("policy.name", &r.name));
        if let Err(e) = checked {
            return error(ErrorCode::InvalidRequest, e.to_string());
        }
    }
    keep_applied(&state, policy.clone());
    json(StatusCode::OK, &policy)
}

#[derive(serde::Deserialize)]
struct PolicyQuery {
    policy: Option<String>,
}

async fn applied_policy(
    State(state): State<AppState>,
    Query(query): Query<PolicyQuery>,
    axum::extract::ConnectInfo(crate::tls::Peer(peer)): axum::extract::ConnectInfo<crate::tls::Peer>,
) -> Response {
    if !peer.ip().is_loopback() {
        return error(ErrorCode::Forbidden, "the cache policy is served to clients in the pod (loopback) only");
    }
    let applied = state.cache.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    match query.policy {
        Some(wanted) => match applied.get(&wanted) {
            Some(policy) => json(StatusCode::OK, policy),
            None => error(ErrorCode::NotFound, format!("no cache policy {wanted:?} has been applied by this agent")),
        },
        None if applied.is_empty() => error(ErrorCode::NotFound, "no cache policy has been applied by this agent yet"),
        None => json(StatusCode::OK, &applied.into_values().collect::<Vec<_>>()),
    }
}

fn files_error(e: crate::files::FilesError) -> Response {
    use crate::{files::FilesError, volume::VolumeError};
    let code = match &e {
        FilesError::Invalid(_) | FilesError::NotOurs(_) => ErrorCode::InvalidRequest,
        FilesError::OtherNamespace { .. } => ErrorCode::Forbidden,
        FilesError::NotFound(_) => ErrorCode::NotFound,
        FilesError::Volume(VolumeError::Io { .. }) => ErrorCode::Internal,
        FilesError::Volume(_) => ErrorCode::VolumeConflict,
    };
    error(code, e.to_string())
}

async fn capture_files(State(state): State<AppState>, Path((namespace, capture)): Path<(String, String)>) -> Response {
    let files = state.files.clone();
    match tokio::task::spawn_blocking(move || files.list(&namespace, &capture)).await {
        Ok(Ok(listing)) => json(StatusCode::OK, &listing),
        Ok(Err(e)) => files_error(e),
        Err(e) => error(ErrorCode::Internal, e.to_string()),
    }
}

/// One capture file, streamed from the volume with constant memory. Served as a download
/// whatever it is: an SVG on the volume may have been written by the app.
async fn capture_file(
    State(state): State<AppState>,
    Path((namespace, capture, run, pod, name)): Path<(String, String, String, String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    use crate::files::{Ranged, resolve_range};
    let files = state.files.clone();
    let (n, c, r, p, f) = (namespace, capture, run.clone(), pod.clone(), name.clone());
    let open = match tokio::task::spawn_blocking(move || files.open(&n, &c, &r, &p, &f)).await {
        Ok(Ok(open)) => open,
        Ok(Err(e)) => return files_error(e),
        Err(e) => return error(ErrorCode::Internal, e.to_string()),
    };
    let etag = format!("\"{}\"", open.sha256);
    let content_type = if name.ends_with(".svg") { "image/svg+xml" } else { "application/octet-stream" };
    let mut response = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{pod}_{run}_{name}\""))
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, "sandbox")
        .header(header::LAST_MODIFIED, http_date(&open.modified));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return response.status(StatusCode::NOT_MODIFIED).body(Body::empty()).unwrap_or_default();
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len) = match resolve_range(range, open.bytes) {
        Ranged::Whole => (StatusCode::OK, 0, open.bytes),
        Ranged::Part { start, end } => {
            response = response.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{}", open.bytes));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Ranged::Unsatisfiable => {
            return response
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{}", open.bytes))
                .body(Body::empty())
                .unwrap_or_default();
        }
    };
    let mut file = tokio::fs::File::from_std(open.file);
    if let Err(e) = tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(start)).await {
        return error(ErrorCode::Internal, e.to_string());
    }
    let body = tokio_util::io::ReaderStream::with_capacity(tokio::io::AsyncReadExt::take(file, len), 64 << 10);
    response
        .status(status)
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(body))
        .unwrap_or_else(|e| error(ErrorCode::Internal, e.to_string()))
}

/// An RFC 3339 time as an HTTP date (`Last-Modified`).
fn http_date(rfc3339: &str) -> String {
    rfc3339.parse::<jiff::Timestamp>().map(|t| t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()).unwrap_or_default()
}
