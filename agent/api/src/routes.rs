//! The agent's routes, defined once: the agent's router is built from these templates and
//! the operator's client calls them through the same values, so a path, a method or the
//! types a route carries cannot drift apart between the two sides.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::{
    AppliedPolicy, CaptureFiles, CaptureRequest, CaptureStatus, EnforceRequest, EnforcementJob, InvalidationRequest,
    InvalidationStatus, RetentionRequest, RetentionResponse, RuntimeRequest, RuntimeSample, StatsRequest,
    StatsResponse,
};

/// An HTTP method the agent serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
        }
    }
}

/// One route: its method, its path template (axum's syntax, `{id}` for the one parameter a
/// route may have), a short label for metrics, and the JSON it takes and answers with.
#[derive(Debug)]
pub struct Route<Request, Response> {
    /// The method.
    pub method: Method,
    /// The path template.
    pub template: &'static str,
    /// A short name for metrics and logs.
    pub label: &'static str,
    types: PhantomData<fn(Request) -> Response>,
}

impl<Request, Response> Clone for Route<Request, Response> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Request, Response> Copy for Route<Request, Response> {}

impl<Request, Response> Route<Request, Response> {
    const fn new(method: Method, template: &'static str, label: &'static str) -> Self {
        Self { method, template, label, types: PhantomData }
    }

    /// The path with its `{id}` filled in (ids are checked names, `[a-z0-9-]`, so they need
    /// no escaping; anything else is percent-encoded all the same).
    pub fn path(&self, id: &str) -> String {
        self.fill(&[id])
    }

    /// The path with its parameters (`{namespace}`, `{capture}`, …) filled in order, each
    /// percent-encoded but for letters, digits, `-` and `.` (never a whole `.` or `..`).
    pub fn fill(&self, params: &[&str]) -> String {
        let mut params = params.iter();
        let mut out = String::with_capacity(self.template.len());
        let mut rest = self.template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
            out.push_str(&encode_segment(params.next().copied().unwrap_or_default()));
            rest = &rest[close..];
        }
        out.push_str(rest);
        out
    }
}

fn encode_segment(segment: &str) -> String {
    let dots_only = segment.bytes().all(|b| b == b'.');
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || (b == b'.' && !dots_only) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// No request body.
pub type NoBody = ();

/// The header naming the operator replica that sends a request (its Lease identity): the
/// agent logs it with each request, so which replica acted, and when, can be read back.
pub const CALLER_HEADER: &str = "x-biometrics-caller";

/// `POST /v1/captures`: start a capture (idempotent by id).
pub const START_CAPTURE: Route<CaptureRequest, CaptureStatus> =
    Route::new(Method::Post, "/v1/captures", "start_capture");
/// `GET /v1/captures/{id}`: a capture's progress.
pub const CAPTURE: Route<NoBody, CaptureStatus> = Route::new(Method::Get, "/v1/captures/{id}", "poll_capture");
/// `DELETE /v1/captures/{id}`: cancel a capture and remove what it wrote.
pub const CANCEL_CAPTURE: Route<NoBody, CaptureStatus> =
    Route::new(Method::Delete, "/v1/captures/{id}", "cancel_capture");
/// `POST /v1/captures/{id}/stop`: stop a capture before it finishes, keeping the profiles
/// it finished (their files stay; the one in progress is dropped). A finished capture is
/// answered as it is.
pub const STOP_CAPTURE: Route<NoBody, CaptureStatus> =
    Route::new(Method::Post, "/v1/captures/{id}/stop", "stop_capture");
/// `GET /v1/runtime`: the app's latest runtime sample.
pub const RUNTIME: Route<NoBody, RuntimeSample> = Route::new(Method::Get, "/v1/runtime", "runtime");
/// `POST /v1/runtime`: the app's latest runtime sample with its request figures, read from
/// the metrics endpoint the body describes.
pub const RUNTIME_WITH_REQUESTS: Route<RuntimeRequest, RuntimeSample> =
    Route::new(Method::Post, "/v1/runtime", "runtime_with_requests");
/// `POST /v1/retention`: prune runs of the namespace's captures (any agent on the volume).
pub const RETENTION: Route<RetentionRequest, RetentionResponse> =
    Route::new(Method::Post, "/v1/retention", "retention");
/// `GET /v1/debug/pprof/profile`: the agent's own CPU profile (bytes, not JSON).
pub const SELF_PROFILE: Route<NoBody, ()> = Route::new(Method::Get, "/v1/debug/pprof/profile", "self_profile");
/// `POST /v1/cache/invalidations`: start an invalidation (idempotent by id).
pub const START_INVALIDATION: Route<InvalidationRequest, InvalidationStatus> =
    Route::new(Method::Post, "/v1/cache/invalidations", "invalidate");
/// `GET /v1/cache/invalidations/{id}`: an invalidation's progress.
pub const INVALIDATION: Route<NoBody, InvalidationStatus> =
    Route::new(Method::Get, "/v1/cache/invalidations/{id}", "poll_invalidation");
/// `DELETE /v1/cache/invalidations/{id}`: cancel an invalidation.
pub const CANCEL_INVALIDATION: Route<NoBody, InvalidationStatus> =
    Route::new(Method::Delete, "/v1/cache/invalidations/{id}", "cancel_invalidation");
/// `POST /v1/cache/enforce`: start enforcing a strategy (a job, idempotent by id).
pub const ENFORCE: Route<EnforceRequest, EnforcementJob> = Route::new(Method::Post, "/v1/cache/enforce", "enforce");
/// `GET /v1/cache/enforce/{id}`: an enforcement's progress.
pub const ENFORCEMENT: Route<NoBody, EnforcementJob> =
    Route::new(Method::Get, "/v1/cache/enforce/{id}", "poll_enforcement");
/// `DELETE /v1/cache/enforce/{id}`: cancel an enforcement.
pub const CANCEL_ENFORCEMENT: Route<NoBody, EnforcementJob> =
    Route::new(Method::Delete, "/v1/cache/enforce/{id}", "cancel_enforcement");
/// `POST /v1/cache/stats`: sample the cache's health.
pub const STATS: Route<StatsRequest, StatsResponse> = Route::new(Method::Post, "/v1/cache/stats", "stats");
/// `PUT /v1/cache/app-policy`: the policy this agent serves its app.
pub const SERVE_POLICY: Route<AppliedPolicy, AppliedPolicy> =
    Route::new(Method::Put, "/v1/cache/app-policy", "serve_policy");
/// `GET /v1/cache/policy`: every policy this agent serves its app (one per CachePolicy that
/// selects the pod), for the app on the pod's loopback (no token); `?policy=<ns>/<name>`
/// answers that one policy alone.
pub const APP_POLICY: Route<NoBody, Vec<AppliedPolicy>> = Route::new(Method::Get, "/v1/cache/policy", "app_policy");

/// `GET /v1/files/{namespace}/{capture}`: a capture's runs, pods and files on the volume.
pub const CAPTURE_FILES: Route<NoBody, CaptureFiles> =
    Route::new(Method::Get, "/v1/files/{namespace}/{capture}", "capture_files");
/// `GET /v1/files/{namespace}/{capture}/{run}/{pod}/{file}`: one file's bytes (`Range`
/// requests answered with 206; `ETag` is the SHA-256).
pub const CAPTURE_FILE: Route<NoBody, ()> =
    Route::new(Method::Get, "/v1/files/{namespace}/{capture}/{run}/{pod}/{file}", "capture_file");

/// What kind of failure an error answer reports: what a caller decides on, where the
/// message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// No valid token (401).
    Unauthorized,
    /// The operator's public key is not on the agent's trust volume yet (503): the
    /// `biometrics-trust` ConfigMap reaches a pod's volume a little after the operator
    /// publishes it, so asking again shortly succeeds.
    TrustNotReady,
    /// A valid token for another pod (403), or a caller the route does not serve.
    Forbidden,
    /// The request is malformed or out of bounds (400).
    InvalidRequest,
    /// The request body is larger than allowed (413).
    PayloadTooLarge,
    /// The request body did not arrive in time (408).
    RequestTimeout,
    /// No such route, capture or invalidation (404): e.g. the agent restarted since.
    NotFound,
    /// A bound of the agent is reached; retry later (429).
    TooManyRequests,
    /// The profiles volume holds something the agent will not touch, a link above all (409).
    VolumeConflict,
    /// The agent is already doing this one-at-a-time thing (409).
    Busy,
    /// The agent is shutting down (503): it finishes the captures in flight and answers
    /// their status until it exits, but starts no new capture or job; ask the agent of a
    /// pod that stays.
    ShuttingDown,
    /// Redis refused the credentials.
    RedisAuthFailed,
    /// Redis could not be reached.
    RedisUnreachable,
    /// A Redis command failed.
    RedisCommandFailed,
    /// Redis's TLS certificate does not chain to a trusted authority (or is expired or
    /// otherwise invalid as a certificate).
    RedisCertificateUntrusted,
    /// Redis's TLS certificate is not valid for the name it was verified for.
    RedisServerNameMismatch,
    /// The agent's own failure (500).
    Internal,
    /// A code this side does not know yet (a newer agent).
    #[serde(other)]
    Unknown,
}

/// Every 4xx/5xx body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What was wrong, for people.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fill_the_id_and_encode_anything_unexpected() {
        assert_eq!(CAPTURE.path("g1-3f2a"), "/v1/captures/g1-3f2a");
        assert_eq!(STOP_CAPTURE.path("g1-3f2a"), "/v1/captures/g1-3f2a/stop");
        assert_eq!(CANCEL_INVALIDATION.path("../x"), "/v1/cache/invalidations/..%2Fx");
        assert_eq!(RUNTIME.path("ignored"), "/v1/runtime");
        assert_eq!(
            CAPTURE_FILE.fill(&["shop", "api.v2", "g1-3f2a", "web-0", "cpu.pb.gz"]),
            "/v1/files/shop/api.v2/g1-3f2a/web-0/cpu.pb.gz"
        );
        assert_eq!(CAPTURE_FILES.fill(&["..", "a/b"]), "/v1/files/%2E%2E/a%2Fb");
    }

    #[test]
    fn unknown_codes_are_read_as_unknown() {
        let body: ErrorBody = serde_json::from_str(r#"{"code": "SomethingNew", "message": "m"}"#).unwrap();
        assert_eq!(body.code, ErrorCode::Unknown);
        let wire = serde_json::to_string(&ErrorBody { code: ErrorCode::RedisAuthFailed, message: "x".into() }).unwrap();
        assert_eq!(wire, r#"{"code":"RedisAuthFailed","message":"x"}"#);
    }
}
