//! The agent's HTTP server: open health and metrics endpoints, and the authenticated v1 API
//! with its limits (request body size, concurrent requests).

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::{Instant, SystemTime},
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
    api::{CaptureRequest, ErrorBody, RetentionRequest, RetentionResponse, RuntimeSample},
    auth::{AuthError, Verifier, unix_now},
    captures::{Engine, RetentionError, SubmitError},
    metrics::Metrics,
};

/// A JSON error response.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(ErrorBody { error: message.into() })).into_response()
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

    /// The current verifier, or why there is none.
    pub fn verifier(&self) -> Result<Verifier, String> {
        let path = self.path.as_ref().ok_or("the agent has no --operator-public-key")?;
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("cannot read the operator public key {}: {e}", path.display()))?;
        let mut cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((when, verifier)) = cached.as_ref()
            && *when == modified
        {
            return Ok(verifier.clone());
        }
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read the operator public key {}: {e}", path.display()))?;
        let verifier = Verifier::from_pem(&pem, &self.namespace, &self.pod)?;
        *cached = Some((modified, verifier.clone()));
        Ok(verifier)
    }
}

/// The latest runtime sample and when it was taken.
#[derive(Debug, Default)]
pub struct RuntimeCell {
    /// The sample.
    pub sample: RuntimeSample,
    /// When it was taken.
    pub at: Option<Instant>,
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
    /// The latest runtime sample.
    pub runtime: Arc<RwLock<RuntimeCell>>,
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
}

/// Liveness and readiness, for the health listener.
pub fn health_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(|| async { "ok" }))
}

/// The router.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/captures", post(create_capture))
        .route("/v1/captures/{id}", get(get_capture).delete(delete_capture))
        .route("/v1/runtime", get(runtime))
        .route("/v1/retention", post(retention))
        .route("/v1/debug/pprof/profile", get(self_profile))
        .route("/v1/cache/invalidations", post(create_invalidation))
        .route("/v1/cache/invalidations/{id}", get(get_invalidation).delete(cancel_invalidation))
        .route("/v1/cache/enforce", post(enforce))
        .route("/v1/cache/stats", post(cache_stats))
        .route("/v1/cache/app-policy", put(serve_policy))
        .layer(middleware::from_fn_with_state(state.clone(), guard));
    health_router()
        .route("/metrics", get(metrics))
        // For the app's own cache client in the pod: no token, but loopback callers only.
        .route("/v1/cache/policy", get(applied_policy))
        .merge(v1)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}

/// Authentication, the request body within its deadline, then the concurrency limit, before
/// any `/v1/` handler runs. A slot is taken only once the body is in, so slow senders hold
/// none.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let verifier = match state.keys.verifier() {
        Ok(v) => v,
        Err(reason) => {
            state.metrics.auth_failures.with_label_values(&["no_key"]).inc();
            return error(StatusCode::UNAUTHORIZED, reason);
        }
    };
    let given = request.headers().get_all(header::AUTHORIZATION).iter().count();
    if given > 1 {
        state.metrics.auth_failures.with_label_values(&["ambiguous"]).inc();
        return error(
            StatusCode::BAD_REQUEST,
            format!("the request has {given} Authorization headers; send exactly one"),
        );
    }
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Err(e) = verifier.verify(authorization, unix_now()) {
        state.metrics.auth_failures.with_label_values(&[e.label()]).inc();
        let status = match e {
            AuthError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
        };
        return error(status, e.to_string());
    }
    let (parts, body) = request.into_parts();
    let limit = state.max_request_bytes;
    let body = match tokio::time::timeout(state.body_read_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_length_limit(&e) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {limit} bytes"));
        }
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("reading the request body failed: {e}")),
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {:?}", state.body_read_timeout),
            );
        }
    };
    let request = Request::from_parts(parts, Body::from(body));
    let Ok(_permit) = state.requests.clone().try_acquire_owned() else {
        return error(StatusCode::TOO_MANY_REQUESTS, "too many concurrent requests; retry later");
    };
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
        .map_err(|_| error(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {limit} bytes")))?;
    serde_json::from_slice(&bytes).map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid request body: {e}")))
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
        Err(e @ SubmitError::Invalid(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ (SubmitError::Full(_) | SubmitError::Queued { .. })) => {
            error(StatusCode::TOO_MANY_REQUESTS, e.to_string())
        }
    }
}

async fn get_capture(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.engine.status(&id) {
        Some(status) => json(StatusCode::OK, &status),
        None => error(StatusCode::NOT_FOUND, format!("no capture {id:?}")),
    }
}

async fn delete_capture(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.engine.cancel(&id).await {
        Some(status) => json(StatusCode::OK, &status),
        None => error(StatusCode::NOT_FOUND, format!("no capture {id:?}")),
    }
}

async fn runtime(State(state): State<AppState>) -> Response {
    let sample = state.runtime.read().unwrap_or_else(std::sync::PoisonError::into_inner).sample.clone();
    json(StatusCode::OK, &sample)
}

async fn retention(State(state): State<AppState>, body: Body) -> Response {
    let request: RetentionRequest = match parse_body(body, state.max_request_bytes).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    match state.engine.retain(&request) {
        Ok(removed) => json(StatusCode::OK, &RetentionResponse { removed }),
        Err(e @ RetentionError::Invalid(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ RetentionError::Volume(_)) => {
            tracing::warn!(error = %e, "retention refused");
            error(StatusCode::CONFLICT, e.to_string())
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
        return error(StatusCode::BAD_REQUEST, "seconds must be between 1 and 60");
    }
    let Ok(_busy) = state.self_profile.try_lock() else {
        return error(StatusCode::CONFLICT, "a CPU profile of the agent is already being taken");
    };
    match tokio::task::spawn_blocking(move || crate::selfprof::cpu_profile(seconds)).await {
        Ok(Ok(bytes)) => {
            let mut response = Response::new(Body::from(bytes));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            response
        }
        Ok(Err(reason)) => error(StatusCode::INTERNAL_SERVER_ERROR, reason),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(at) = state.runtime.read().unwrap_or_else(std::sync::PoisonError::into_inner).at {
        state.metrics.runtime_sample_age.set(at.elapsed().as_secs_f64());
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
        Err((code, reason)) => error(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST), reason),
    }
}

async fn get_invalidation(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.cache.jobs.status(&id) {
        Some(status) => json(StatusCode::OK, &status),
        None => error(StatusCode::NOT_FOUND, format!("no invalidation {id:?}")),
    }
}

async fn cancel_invalidation(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.cache.jobs.cancel(&id) {
        Some(status) => json(StatusCode::OK, &status),
        None => error(StatusCode::NOT_FOUND, format!("no invalidation {id:?}")),
    }
}

async fn enforce(State(state): State<AppState>, body: Body) -> Response {
    let request: crate::api::EnforceRequest = match parse_body(body, state.max_request_bytes).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    if let Err(reason) = crate::cache::enforce::validate(&request) {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    let outcome = async {
        let mut redis = state.cache.pool.get(&request.redis).await?;
        crate::cache::enforce::enforce(&request, &mut redis, &state.cache.limits).await
    }
    .await;
    match outcome {
        Ok(report) => {
            let applied = crate::api::AppliedPolicy {
                key_prefix: request.key_prefix.clone(),
                strategy: request.strategy.clone(),
                applied_at: jiff::Timestamp::now().round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default(),
            };
            *state.cache.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(applied);
            json(StatusCode::OK, &report)
        }
        Err(e) => {
            if matches!(e, crate::cache::conn::CacheError::Connect(_)) {
                state.cache.pool.forget(&request.redis);
            }
            let status = match e {
                crate::cache::conn::CacheError::Invalid(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            error(status, e.to_string())
        }
    }
}

async fn cache_stats(State(state): State<AppState>, body: Body) -> Response {
    let request: crate::api::StatsRequest = match parse_body(body, state.max_request_bytes).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    if let Err(e) = crate::cache::glob::check_prefix(&request.key_prefix) {
        return error(StatusCode::BAD_REQUEST, e.0);
    }
    if let Err(reason) = crate::cache::conn::check_target(&request.redis) {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    json(StatusCode::OK, &crate::cache::stats::stats(&request, &state.cache).await)
}

/// The policy this agent serves its app, set by the operator on every selected pod (the
/// executor also sets it when it enforces).
async fn serve_policy(State(state): State<AppState>, body: Body) -> Response {
    let policy: crate::api::AppliedPolicy = match parse_body(body, state.max_request_bytes).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if let Err(e) = crate::cache::glob::check_prefix(&policy.key_prefix) {
        return error(StatusCode::BAD_REQUEST, e.0);
    }
    *state.cache.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(policy.clone());
    json(StatusCode::OK, &policy)
}

async fn applied_policy(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(crate::tls::Peer(peer)): axum::extract::ConnectInfo<crate::tls::Peer>,
) -> Response {
    if !peer.ip().is_loopback() {
        return error(StatusCode::FORBIDDEN, "the cache policy is served to clients in the pod (loopback) only");
    }
    match state.cache.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
        Some(policy) => json(StatusCode::OK, &policy),
        None => error(StatusCode::NOT_FOUND, "no cache policy has been applied by this agent yet"),
    }
}
