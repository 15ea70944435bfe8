//! The wire types of the agent API.
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
    /// The app's metrics endpoint, when the capture reads its requests: each timed profile
    /// then counts the requests the app answered while it sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSource>,
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

/// A function's share of a profile: the type the ProfileCapture status stores it as.
pub use biometrics_crds::v1alpha1::TopFunction as TopEntry;

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
    /// For a timed profile of a capture that names the app's metrics: the requests the app
    /// answered while it sampled (its request counter's increase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<f64>,
    /// Likewise, the p99 latency of the requests answered while it sampled, in
    /// milliseconds (the latency histogram's increase over that span).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_latency_millis: Option<f64>,
    /// Likewise, the errors in percent of the requests answered while it sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_percent: Option<f64>,
    /// Why the requests could not be counted (the endpoint unreachable or refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_error: Option<String>,
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
    /// While `Running`: what it waits for, when it waits (e.g. memory to analyse a profile
    /// in). Absent otherwise; readers that do not know the field still see `Running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
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
    /// The app's request figures, when the operator asked for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestFigures>,
}

/// `POST /v1/runtime`: which request signals to read with the runtime sample.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeRequest {
    /// The app's metrics endpoint and its series.
    pub metrics: MetricsSource,
}

/// The app's Prometheus endpoint, on the pod's loopback, and the series that carry its
/// requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsSource {
    /// The port.
    pub port: u16,
    /// The path (`/metrics`).
    pub path: String,
    /// Latency histogram names; the first one the app serves is used.
    pub histograms: Vec<String>,
    /// The request counter's sample name.
    pub requests_counter: String,
    /// The label telling errors apart; unset: by histogram (`code`, or
    /// `http_response_status_code` for OpenTelemetry's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_label: Option<String>,
    /// The label values that are errors: letters, digits, `_`, `-`, `.` (any one
    /// character) and `|` (alternatives), matched whole.
    pub error_values: String,
    /// Only series with these labels count.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub match_labels: std::collections::BTreeMap<String, String>,
    /// The window, in seconds.
    pub window_seconds: u32,
}

/// The app's requests over the window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestFigures {
    /// Seconds the figures span (up to the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Errors as a percentage of requests; absent when there were none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_percent: Option<f64>,
    /// Latency median, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_latency_millis: Option<f64>,
    /// Latency 95th percentile, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_latency_millis: Option<f64>,
    /// Latency 99th percentile, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_latency_millis: Option<f64>,
    /// Why figures are absent though the endpoint was read (`no requests`, one reading
    /// so far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why the endpoint gave no figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/retention`: prune runs of a namespace's captures. Any agent on the volume may
/// be asked: a run's directory holds every pod's files, and all of it goes, the files of
/// pods that have gone away included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionRequest {
    /// The namespace.
    pub namespace: String,
    /// Captures whose runs to prune: every run of each but those it keeps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prune: Vec<CaptureRuns>,
    /// Every capture of the namespace that exists, when the operator says so: the runs of a
    /// capture not listed (deleted) go when it asked for that (`deleteOnRemoval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing: Option<Vec<CaptureInstance>>,
}

/// One capture's runs, and which of them stay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaptureRuns {
    /// The ProfileCapture's name.
    pub name: String,
    /// Its run-id suffix (the first 8 hex digits of its uid): only runs whose ids end with
    /// `-<suffix>` are its own; a former capture of the same name is left alone.
    pub run_suffix: String,
    /// The run ids kept; every other run of the capture is removed.
    #[serde(default)]
    pub keep: Vec<String>,
    /// Whether its files are to go when it is deleted (`retention.deleteOnRemoval`): the
    /// agent notes it on the volume, so any agent can act on it once the capture is gone.
    #[serde(default)]
    pub delete_on_removal: bool,
}

/// A capture that exists: its name and run-id suffix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaptureInstance {
    /// The ProfileCapture's name.
    pub name: String,
    /// Its run-id suffix.
    pub run_suffix: String,
}

/// The answer to `POST /v1/retention`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionResponse {
    /// The runs removed, as `<capture>/<run>`.
    pub removed: Vec<String>,
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
    /// Not valid before (seconds since the epoch), when the token says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// The token issuer.
pub const ISSUER: &str = "biometrics-operator";
/// The token audience.
pub const AUDIENCE: &str = "biometrics-agent";
/// The longest lifetime a token may have.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 600;

/// A Redis password: transported, never shown (`Debug` prints `[redacted]`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// PEM certificates of the authorities a Redis server's certificate must chain to. Not
/// secret, but bulky and of no use to a reader: `Debug` prints its size only, so it stays
/// out of logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CaBundle(pub String);

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} bytes of PEM]", self.0.len())
    }
}

/// How to reach a Redis (a server, or any node of a cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisTarget {
    /// `host:port`.
    pub address: String,
    /// Database number (0 for a cluster).
    #[serde(default)]
    pub database: u32,
    /// ACL user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password, from the policy's Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Password>,
    /// Connect with TLS.
    #[serde(default)]
    pub tls: bool,
    /// The certificate authorities (PEM) trusted for the server's certificate instead of
    /// the system's roots; only with `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundle>,
    /// The name the server's certificate is verified for (and the SNI sent) instead of the
    /// address's host; only with `tls`, not with `cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// The address is a Redis Cluster node.
    #[serde(default)]
    pub cluster: bool,
    /// Connect timeout, milliseconds.
    #[serde(default = "default_dial_timeout_ms")]
    pub dial_timeout_millis: u64,
    /// Reply timeout, milliseconds.
    #[serde(default = "default_io_timeout_ms")]
    pub read_timeout_millis: u64,
    /// Send timeout, milliseconds (bounded by the reply timeout on async connections).
    #[serde(default = "default_io_timeout_ms")]
    pub write_timeout_millis: u64,
    /// Connections the agent may keep to this target (the policy's `poolSize`); each is a
    /// multiplexed connection used in turn.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
}

fn default_pool_size() -> u32 {
    1
}

fn default_dial_timeout_ms() -> u64 {
    5000
}

fn default_io_timeout_ms() -> u64 {
    3000
}

/// Which CachePolicy a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRef {
    /// The CachePolicy's namespace.
    pub namespace: String,
    /// The CachePolicy's name.
    pub name: String,
}

/// An invalidation rule: exactly one of pattern, prefix, tags, keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// The rule's name.
    pub name: String,
    /// A glob after the key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// A literal prefix after the key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Tags whose sets name the keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Keys after the key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

/// `POST /v1/cache/invalidations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvalidationRequest {
    /// Idempotency key, here and across agents.
    pub id: String,
    /// The CachePolicy.
    pub policy: PolicyRef,
    /// The Redis.
    pub redis: RedisTarget,
    /// Every key touched is under this.
    pub key_prefix: String,
    /// What to delete.
    pub rule: RuleSpec,
}

/// `GET /v1/cache/invalidations/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidationStatus {
    /// The id.
    pub id: String,
    /// `Running`, `Succeeded` or `Failed` (as captures).
    pub state: CaptureState,
    /// Keys examined.
    pub keys_scanned: u64,
    /// Keys deleted.
    pub keys_deleted: u64,
    /// How long it ran.
    pub duration_millis: u64,
    /// Why it failed, or a note (e.g. that another agent had already run it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when the work was done by an earlier execution with the same id.
    #[serde(default)]
    pub already_done: bool,
}

/// A caching strategy as the agent enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategySpec {
    /// `LRU`, `LFU`, `TTL` or `WriteBehind`.
    #[serde(rename = "type")]
    pub strategy_type: String,
    /// Most keys under the prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u64>,
    /// Longest TTL, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// WriteBehind: asynchronous writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_write: Option<bool>,
    /// WriteBehind: batch size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_batch_size: Option<u32>,
    /// Set the server's eviction policy (LRU/LFU).
    #[serde(default)]
    pub manage_server_eviction_policy: bool,
    /// With it, the server's `maxmemory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
}

/// `POST /v1/cache/enforce`: start an enforcement job (idempotent by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnforceRequest {
    /// The job's id (`[a-z0-9-]`): the same id is the same job on this agent.
    pub id: String,
    /// The CachePolicy enforced (its app policy is kept under this name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// The Redis.
    pub redis: RedisTarget,
    /// The key prefix.
    pub key_prefix: String,
    /// The strategy.
    pub strategy: StrategySpec,
}

/// The server's eviction policy: wanted, found, and what was done.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvictionPolicyReport {
    /// What the strategy asks for, when it manages the server's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<String>,
    /// What the server had before this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    /// What the server has now (read back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    /// `found` differed from `desired`.
    pub drift: bool,
    /// The policy was set by this request.
    pub applied: bool,
    /// Why it could not be set (e.g. `CONFIG` refused by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What an enforcement did (so far, while it runs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnforceResponse {
    /// The eviction policy.
    pub eviction_policy: EvictionPolicyReport,
    /// Keys under the prefix examined.
    pub keys_scanned: u64,
    /// Keys given (or cut down to) the strategy's TTL.
    pub keys_given_ttl: u64,
    /// Keys evicted to respect `maxKeys`.
    pub keys_trimmed: u64,
    /// Problems that did not stop the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// An enforcement job: the answer to `POST /v1/cache/enforce`, `GET` and `DELETE
/// /v1/cache/enforce/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnforcementJob {
    /// The id.
    pub id: String,
    /// `Running`, `Succeeded` or `Failed` (as captures).
    pub state: CaptureState,
    /// What it did so far.
    #[serde(flatten)]
    pub report: EnforceResponse,
    /// How long it ran.
    pub duration_millis: u64,
    /// Why it failed (a cancelled job fails with "cancelled").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The agent's error code for the failure, so the caller decides on it, not on text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<crate::routes::ErrorCode>,
}

/// `POST /v1/cache/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatsRequest {
    /// The Redis.
    pub redis: RedisTarget,
    /// The key prefix.
    pub key_prefix: String,
}

/// The answer to `POST /v1/cache/stats`: the type the CachePolicy status stores it as.
pub use biometrics_crds::v1alpha1::RedisHealth as StatsResponse;

/// `GET /v1/cache/policy`: the strategy last applied, for the app's own cache client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedPolicy {
    /// The CachePolicy it comes from: an agent serves one per policy that selects its pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// The key prefix.
    pub key_prefix: String,
    /// The strategy.
    pub strategy: StrategySpec,
    /// When it was applied (RFC 3339).
    pub applied_at: String,
}

/// `GET /v1/files/{namespace}/{capture}`: what the profiles volume holds of a capture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureFiles {
    /// The capture's namespace.
    pub namespace: String,
    /// The capture's name.
    pub capture: String,
    /// Its runs, oldest first.
    pub runs: Vec<RunFiles>,
    /// What was left out and why (a link planted on the volume, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// One run's files, per pod (a shared volume holds every pod's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFiles {
    /// The run id.
    pub run: String,
    /// When the run's directory last changed (RFC 3339).
    pub modified: String,
    /// The pods that wrote files in it.
    pub pods: Vec<PodFiles>,
}

/// One pod's files of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodFiles {
    /// The pod's name.
    pub pod: String,
    /// Its files.
    pub files: Vec<FileEntry>,
}

/// One file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// `cpu.pb.gz`, `cpu.svg`, `trace.out`, …
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex (also the download's `ETag`).
    pub sha256: String,
    /// When it was written (RFC 3339).
    pub modified: String,
}
