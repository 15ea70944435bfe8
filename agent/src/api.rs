//! The agent's HTTP API (v1) as wire types, shared with the operator's agent client.
//! JSON, camelCase.

use biometrics_crds::profile::ProfileType;
use serde::{Deserialize, Serialize};

/// Which ProfileCapture a capture belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaptureRef {
    /// The ProfileCapture's namespace.
    pub namespace: String,
    /// The ProfileCapture's name.
    pub name: String,
}

/// Where the app serves pprof, on the pod's loopback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSpec {
    /// The app's pprof port.
    pub port: u16,
    /// The pprof handlers' base path.
    #[serde(default = "default_base_path")]
    pub base_path: String,
}

fn default_base_path() -> String {
    "/debug/pprof".to_owned()
}

/// `POST /v1/captures`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaptureRequest {
    /// Idempotency key: the same id never runs twice.
    pub id: String,
    /// The ProfileCapture.
    pub capture: CaptureRef,
    /// The run id (a directory under the capture's).
    pub run: String,
    /// Profiles to capture, in order.
    pub profiles: Vec<ProfileType>,
    /// Length of cpu and trace profiles.
    pub duration_seconds: u64,
    /// Where the app serves pprof.
    pub target: TargetSpec,
}

/// Where a capture stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaptureState {
    /// Fetching profiles.
    Running,
    /// Every profile is written (some may have failed; see each).
    Succeeded,
    /// Stopped: cancelled, shut down, or nothing could be captured.
    Failed,
}

/// A function's share of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopEntry {
    /// Function name.
    pub function: String,
    /// Value in the function itself.
    pub flat: i64,
    /// `flat` as a percentage of the total.
    pub flat_percent: f64,
    /// Value in the function and its callees.
    pub cum: i64,
    /// `cum` as a percentage of the total.
    pub cum_percent: f64,
}

/// One profile of a capture.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileOutcome {
    /// The profile type.
    #[serde(rename = "type")]
    pub profile_type: Option<ProfileType>,
    /// The file, relative to the profiles directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// File size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// File SHA-256, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The sample type summarised (`cpu/nanoseconds`, `inuse_space/bytes`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_type: Option<String>,
    /// Total of that sample type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// Number of samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// The top functions by flat value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TopEntry>,
    /// The flame graph SVG, relative to the profiles directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flamegraph: Option<String>,
    /// Why this profile failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/captures/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureStatus {
    /// The capture id.
    pub id: String,
    /// Where it stands.
    pub state: CaptureState,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why it failed as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One entry per requested profile, filled as they complete.
    pub profiles: Vec<ProfileOutcome>,
}

/// `GET /v1/runtime`: the app's latest runtime metrics.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSample {
    /// When it was taken (RFC 3339); absent before the first sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_at: Option<String>,
    /// `HeapAlloc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_alloc_bytes: Option<u64>,
    /// `HeapSys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_sys_bytes: Option<u64>,
    /// `Sys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sys_bytes: Option<u64>,
    /// `NumGC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_gc: Option<u64>,
    /// Live goroutines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goroutines: Option<u64>,
    /// Collections per second since the previous sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_per_second: Option<f64>,
    /// `Sys` as a percentage of the memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<f64>,
    /// The container's memory limit, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// Why metrics are missing, when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/retention`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionRequest {
    /// The ProfileCapture whose runs to prune.
    pub capture: CaptureRef,
    /// How many runs (newest first) to keep.
    pub keep_runs: u32,
}

/// The answer to `POST /v1/retention`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionResponse {
    /// The run ids whose files this agent removed.
    pub removed: Vec<String>,
}

/// Every 4xx/5xx body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong.
    pub error: String,
}

/// Claims of the operator's tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Always `biometrics-operator`.
    pub iss: String,
    /// Always `biometrics-agent`.
    pub aud: String,
    /// `<pod-namespace>/<pod-name>` of the agent the token is for.
    pub sub: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
}

/// The token issuer.
pub const ISSUER: &str = "biometrics-operator";
/// The token audience.
pub const AUDIENCE: &str = "biometrics-agent";
/// The longest lifetime a token may have.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 600;
