//! `ProfileCapture`: capture pprof profiles from selected pods, once or on a schedule.
// clippy reads the repeated `type_ = …` of several printcolumns as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions_schema;
use crate::{
    duration::Duration,
    profile::ProfileType,
    schedule::Schedule,
    selector::label_selector_schema,
    threshold::{ThresholdLevel, UpperBounds},
};

/// Capture pprof profiles from the pods this selects — now, on a schedule, on request
/// (annotation `biometrics.io/capture-now`) or when a pod crosses a runtime threshold — and
/// report the files, their hottest functions and the pods' runtime metrics in status.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "biometrics.io",
    version = "v1alpha1",
    kind = "ProfileCapture",
    namespaced,
    status = "ProfileCaptureStatus",
    derive = "PartialEq",
    shortname = "pcap",
    category = "biometrics",
    doc = "ProfileCapture captures pprof profiles from the pods it selects and reports the results in status.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the capture stands"
    ),
    printcolumn(
        name = "Pods",
        type_ = "integer",
        json_path = ".status.selectedPods",
        description = "Pods selected for the next run"
    ),
    printcolumn(
        name = "Last Run",
        type_ = "date",
        json_path = ".status.lastRun.startTime",
        description = "When the last run started"
    ),
    // A string, not a date: kubectl prints a date column as the age it has reached, and a
    // time still to come as `<invalid>`.
    printcolumn(
        name = "Next Run",
        type_ = "string",
        json_path = ".status.nextRunTime",
        description = "When the schedule fires next"
    ),
    printcolumn(
        name = "Latency",
        type_ = "number",
        json_path = ".status.requests.latencyMillis",
        description = "Request latency in ms at the judged quantile over the pods, weighted by their requests"
    ),
    printcolumn(
        name = "Errors",
        type_ = "number",
        json_path = ".status.requests.errorRatePercent",
        description = "Errors as a percentage of the pods' requests"
    ),
    printcolumn(
        name = "Threshold",
        type_ = "string",
        json_path = ".status.thresholdLevel",
        description = "Worst runtime threshold level over the pods"
    ),
    printcolumn(
        name = "Rollout",
        type_ = "string",
        json_path = ".status.rollouts[0].verdict",
        description = "The verdict on the latest rollout of onRolloutOf"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ProfileCaptureSpec {
    /// Which pods of this namespace to profile. Only Running and Ready pods that carry the
    /// `biometrics-agent` sidecar are profiled.
    #[schemars(schema_with = "label_selector_schema")]
    pub selector: LabelSelector,

    /// Where the app serves its pprof endpoints, inside its own pod.
    pub target: CaptureTarget,

    /// The profiles to capture, one after another, in each selected pod.
    #[serde(default = "default_profiles")]
    #[schemars(length(min = 1, max = 8), extend("x-kubernetes-list-type" = "set"))]
    pub profiles: Vec<ProfileType>,

    /// How long the cpu and trace profiles sample (the other profiles are snapshots).
    /// Between 1s and 5m.
    #[serde(default = "default_duration")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1s') && duration(self) <= duration('5m')", "message": "duration must be between 1s and 5m"}
    ]))]
    pub duration: Duration,

    /// When to capture, in UTC: a 5-field cron expression, `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly` or `@every <duration>` (at least 1s). In cron fields a range runs
    /// from low to high (`10-30`) and a step of 1 to 99 follows `*` or a range (`*/15`,
    /// `0-30/10`). Without a schedule the capture runs once per change of its spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,

    /// Stop starting scheduled and threshold-triggered runs; a running one finishes.
    #[serde(default)]
    pub suspend: bool,

    /// What to do when a run is due while the previous one is still running: `Forbid`
    /// skips the new run, `Replace` cancels the running one and starts the new one.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,

    /// The most pods one run profiles; when more are selected, a stable subset is taken
    /// (ordered by pod name) and the Ready condition says how many matched. Unset: the
    /// operator's default, 100 (its `performance.profiling.max_pods`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_pods: Option<i32>,

    /// How many runs' files and results are kept.
    #[serde(default)]
    pub retention: Retention,

    /// Warning and critical bounds for the pods' runtime metrics.
    #[serde(default)]
    pub thresholds: RuntimeThresholds,

    /// Extra captures started when a pod reaches a threshold level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub triggers: Vec<ThresholdTrigger>,

    /// Compare the pods before and after each rollout of this workload: its old pods are
    /// captured as soon as a new revision appears (baseline), its new pods once the rollout
    /// has completed and `settle` has passed (candidate), and the verdict goes to
    /// `status.rollouts`. The pods are the workload's pods that this capture's selector
    /// also selects. Such a capture has no run of its own when it is created or changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rollout_of: Option<RolloutWatch>,

    /// What counts as a regression when a rollout is compared (`onRolloutOf`).
    #[serde(default)]
    pub regression: RegressionBounds,
}

/// A Deployment or StatefulSet of the capture's namespace whose rollouts are compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutWatch {
    /// The workload's kind.
    #[serde(default)]
    pub kind: super::WorkloadKind,

    /// The workload's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,

    /// How long the new pods run after the rollout has completed before they are measured
    /// (warm caches, finished JIT and connection pools). Between 0s and 1h.
    #[serde(default = "default_settle")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('0s') && duration(self) <= duration('1h')", "message": "settle must be between 0s and 1h"}
    ]))]
    pub settle: Duration,
}

fn default_settle() -> Duration {
    Duration::from_secs(120)
}

/// Bounds a rollout's comparison is judged by. Crossing any warning bound makes the
/// verdict `Regressed` (severity Warning), any critical bound `Regressed` (Critical); a
/// normalised total that fell by at least `totalPercent.warning` with no bound crossed is
/// `Improved`; the rest is `Unchanged`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegressionBounds {
    /// Growth, in percent, of a profile's total per request (when the app's request rate is
    /// known on both sides), else per second of capture (cpu) or per pod (snapshots such as
    /// heap and goroutine).
    #[serde(default = "default_total_percent")]
    pub total_percent: UpperBounds,

    /// Growth of a single function's own (flat) value, in percentage points of the
    /// profile's old normalised total: a function that took 10 % and now costs twice as
    /// much grew by 10 points. A function whose share rose only because others fell does
    /// not count, and neither does one whose share rose by no more than three standard
    /// errors of sampling (a share of few samples moves by chance).
    #[serde(default = "default_function_share_points")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.critical <= 100.0", "message": "a share cannot grow by more than 100 points"}
    ]))]
    pub function_share_points: UpperBounds,

    /// Growth, in percent, of the request p99 latency (over the pods, weighted by their
    /// requests), when the app's metrics give it on both sides.
    #[serde(default = "default_latency_percent")]
    pub latency_percent: UpperBounds,

    /// Growth of the error rate in percentage points (absolute: 0.5 % → 2.5 % grew by 2
    /// points), over the requests the pods answered while profiled, when the app's
    /// metrics give it on both sides. Points rather than percent: a rate near zero moves
    /// by hundreds of percent on a handful of errors, and what a user feels (and an error
    /// budget counts) is the share of requests that fail.
    #[serde(default = "default_error_rate_points")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.critical <= 100.0", "message": "an error rate cannot grow by more than 100 points"}
    ]))]
    pub error_rate_points: UpperBounds,

    /// The fewest samples a cpu profile needs on each side (its sample records, one per
    /// distinct stack, summed over its pods) to be judged; below it the verdict is
    /// `Inconclusive` and says how many there were. Below 20, a total's 10 ms sampling
    /// step alone moves it by 5 % or more.
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 1, max = 1000000))]
    pub min_samples: i32,
}

fn default_total_percent() -> UpperBounds {
    UpperBounds { warning: 20.0, critical: 40.0 }
}

fn default_function_share_points() -> UpperBounds {
    UpperBounds { warning: 15.0, critical: 30.0 }
}

fn default_latency_percent() -> UpperBounds {
    UpperBounds { warning: 20.0, critical: 50.0 }
}

fn default_error_rate_points() -> UpperBounds {
    UpperBounds { warning: 1.0, critical: 5.0 }
}

fn default_min_samples() -> i32 {
    20
}

impl Default for RegressionBounds {
    fn default() -> Self {
        Self {
            total_percent: default_total_percent(),
            function_share_points: default_function_share_points(),
            latency_percent: default_latency_percent(),
            error_rate_points: default_error_rate_points(),
            min_samples: default_min_samples(),
        }
    }
}

fn default_profiles() -> Vec<ProfileType> {
    vec![ProfileType::Cpu, ProfileType::Heap]
}

fn default_duration() -> Duration {
    Duration::from_secs(30)
}

/// Where a pod's pprof endpoints are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptureTarget {
    /// The app's port serving pprof, on the pod's loopback interface.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The path the pprof handlers are mounted under.
    #[serde(default = "default_base_path")]
    #[schemars(length(max = 128), regex(pattern = r"^(/[A-Za-z0-9_.~-]+)+$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "!self.split('/').exists(s, s == '..' || s == '.')", "message": "basePath must not contain '.' or '..' segments"}
    ]))]
    pub base_path: String,

    /// Where the app serves its Prometheus metrics, read for its request rate, error rate
    /// and latency quantiles. Read only when this is set, or when a `responseTimeMillis` or
    /// `errorRatePercent` threshold or trigger is (then with these defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsTarget>,
}

fn default_base_path() -> String {
    "/debug/pprof".to_owned()
}

/// The app's Prometheus metrics endpoint and the series that carry its requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsTarget {
    /// The port serving the metrics on the pod's loopback interface. Unset: `target.port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// The path of the metrics endpoint (Prometheus text format or OpenMetrics).
    #[serde(default = "default_metrics_path")]
    #[schemars(length(max = 128), regex(pattern = r"^(/[A-Za-z0-9_.~-]+)+$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "!self.split('/').exists(s, s == '..' || s == '.')", "message": "metrics.path must not contain '.' or '..' segments"}
    ]))]
    pub path: String,

    /// The request latency histogram.
    #[serde(default)]
    pub latency: LatencySeries,

    /// The request counter.
    #[serde(default)]
    pub requests: RequestSeries,

    /// Which requests count as errors.
    #[serde(default)]
    pub errors: ErrorSeries,

    /// Only series carrying all these labels with these values count (for example one
    /// `handler`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 8))]
    pub match_labels: std::collections::BTreeMap<String, String>,

    /// The span the rates and quantiles are computed over, between 10s and 1h. The agent
    /// reads the endpoint on its sample interval, so the window needs at least two of them.
    #[serde(default = "default_metrics_window")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('10s') && duration(self) <= duration('1h')", "message": "window must be between 10s and 1h"}
    ]))]
    pub window: Duration,
}

fn default_metrics_path() -> String {
    "/metrics".to_owned()
}

fn default_metrics_window() -> Duration {
    Duration::from_secs(60)
}

impl Default for MetricsTarget {
    fn default() -> Self {
        Self {
            port: None,
            path: default_metrics_path(),
            latency: LatencySeries::default(),
            requests: RequestSeries::default(),
            errors: ErrorSeries::default(),
            match_labels: Default::default(),
            window: default_metrics_window(),
        }
    }
}

/// The latency histogram's family name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencySeries {
    /// The histogram's name (without `_bucket`), in seconds. Unset:
    /// `http_request_duration_seconds`, or the OpenTelemetry
    /// `http_server_request_duration_seconds` when only that one is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"))]
    pub histogram: Option<String>,
}

/// The request counter's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestSeries {
    /// The counter's sample name. When the app serves no such counter, requests are
    /// counted from the latency histogram.
    #[serde(default = "default_request_counter")]
    #[schemars(length(max = 128), regex(pattern = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"))]
    pub counter: String,
}

fn default_request_counter() -> String {
    "http_requests_total".to_owned()
}

impl Default for RequestSeries {
    fn default() -> Self {
        Self { counter: default_request_counter() }
    }
}

/// Which requests are errors: those whose `label` matches `values`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorSeries {
    /// The label holding the status. Unset: `code`, or `http_response_status_code` for the
    /// OpenTelemetry histogram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_]*$"))]
    pub label: Option<String>,

    /// The label values that are errors, matched whole: letters, digits, `_` and `-`, with
    /// `.` for any one character and `|` between alternatives (`5..`, `5..|429`).
    #[serde(default = "default_error_values")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_.|-]+$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[A-Za-z0-9_.|-]+$')", "message": "errors.values may only hold letters, digits, '_', '-', '.' (any one character) and '|' (between alternatives)"}
    ]))]
    pub values: String,
}

fn default_error_values() -> String {
    "5..".to_owned()
}

impl Default for ErrorSeries {
    fn default() -> Self {
        Self { label: None, values: default_error_values() }
    }
}

/// What to do with a due run while the previous one still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip the new run.
    #[default]
    Forbid,
    /// Cancel the running run and start the new one.
    Replace,
}

/// How much of the past is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Runs whose files are kept on the shared volume: the newest of those status lists
    /// (the last run and `historyLimit` more). Older runs are removed, every pod's files in
    /// them, those of pods that have gone away too.
    #[serde(default = "default_keep_runs")]
    #[schemars(range(min = 1, max = 100))]
    pub keep_runs: i32,

    /// Runs listed in `status.history`.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 50))]
    pub history_limit: i32,

    /// Remove this capture's files when the ProfileCapture is deleted: any agent of the
    /// namespace removes them, at once or, where none could be reached then, after a later
    /// run of another capture there. A capture created again under the same name never
    /// shares files with this one.
    #[serde(default)]
    pub delete_on_removal: bool,
}

fn default_keep_runs() -> i32 {
    5
}

fn default_history_limit() -> i32 {
    10
}

impl Default for Retention {
    fn default() -> Self {
        Self { keep_runs: default_keep_runs(), history_limit: default_history_limit(), delete_on_removal: false }
    }
}

/// Bounds for the runtime metrics sampled from each pod. A value above `warning` is at
/// Warning level, above `critical` at Critical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeThresholds {
    /// Memory in use (the Go runtime's `Sys`) as a percentage of the container's memory
    /// limit. Needs the limit passed to the agent.
    #[serde(default = "default_memory_percent")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.warning < self.critical", "message": "warning must be lower than critical"},
        {"rule": "self.critical <= 100.0", "message": "a memory percentage cannot exceed 100"}
    ]))]
    pub memory_percent: UpperBounds,

    /// Live goroutines.
    #[serde(default = "default_goroutines")]
    pub goroutines: UpperBounds,

    /// Garbage collections per second.
    #[serde(default = "default_gc_per_second")]
    pub gc_per_second: UpperBounds,

    /// Request latency, in milliseconds, at a quantile (p99 unless `quantile` says
    /// otherwise), from the app's metrics. Unset: 500 / 2000, or the operator's
    /// `performance.alerting`; setting it turns the reading of the app's metrics on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_time_millis: Option<LatencyBounds>,

    /// Errors as a percentage of requests, from the app's metrics. Unset: 1 / 5, or the
    /// operator's `performance.alerting`; setting it turns the reading of the app's
    /// metrics on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.warning < self.critical", "message": "warning must be lower than critical"},
        {"rule": "self.critical <= 100.0", "message": "an error percentage cannot exceed 100"}
    ]))]
    pub error_rate_percent: Option<UpperBounds>,
}

/// Latency bounds at a quantile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.warning < self.critical", "message": "warning must be lower than critical"}
]))]
pub struct LatencyBounds {
    /// Latencies above this many milliseconds are at Warning level.
    #[schemars(range(min = 0))]
    pub warning: f64,
    /// Latencies above this many milliseconds are at Critical level.
    #[schemars(range(min = 0))]
    pub critical: f64,
    /// The quantile judged.
    #[serde(default)]
    pub quantile: LatencyQuantile,
}

impl LatencyBounds {
    /// The bounds as upper bounds.
    pub fn bounds(&self) -> UpperBounds {
        UpperBounds { warning: self.warning, critical: self.critical }
    }
}

/// A latency quantile the agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LatencyQuantile {
    /// The median.
    P50,
    /// The 95th percentile.
    P95,
    /// The 99th percentile.
    #[default]
    P99,
}

impl std::fmt::Display for LatencyQuantile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::P50 => "p50",
            Self::P95 => "p95",
            Self::P99 => "p99",
        })
    }
}

/// The origin document's response-time bounds: > 500 ms Warning, > 2 s Critical.
pub fn default_response_time() -> LatencyBounds {
    LatencyBounds { warning: 500.0, critical: 2000.0, quantile: LatencyQuantile::P99 }
}

/// The origin document's error-rate bounds: > 1 % Warning, > 5 % Critical.
pub fn default_error_rate() -> UpperBounds {
    UpperBounds { warning: 1.0, critical: 5.0 }
}

fn default_memory_percent() -> UpperBounds {
    UpperBounds { warning: 70.0, critical: 90.0 }
}

fn default_goroutines() -> UpperBounds {
    UpperBounds { warning: 1000.0, critical: 5000.0 }
}

fn default_gc_per_second() -> UpperBounds {
    UpperBounds { warning: 10.0, critical: 50.0 }
}

impl Default for RuntimeThresholds {
    fn default() -> Self {
        Self {
            memory_percent: default_memory_percent(),
            goroutines: default_goroutines(),
            gc_per_second: default_gc_per_second(),
            response_time_millis: None,
            error_rate_percent: None,
        }
    }
}

/// A runtime metric of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RuntimeMetric {
    /// Memory in use as a percentage of the memory limit.
    MemoryPercent,
    /// Live goroutines.
    Goroutines,
    /// Garbage collections per second.
    GcPerSecond,
    /// Request latency at the judged quantile, from the app's metrics.
    ResponseTimeMillis,
    /// Errors as a percentage of requests, from the app's metrics.
    ErrorRatePercent,
}

impl RuntimeMetric {
    /// Whether the metric comes from the app's request metrics.
    pub fn from_requests(self) -> bool {
        matches!(self, Self::ResponseTimeMillis | Self::ErrorRatePercent)
    }
}

impl std::fmt::Display for RuntimeMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MemoryPercent => "memoryPercent",
            Self::Goroutines => "goroutines",
            Self::GcPerSecond => "gcPerSecond",
            Self::ResponseTimeMillis => "responseTimeMillis",
            Self::ErrorRatePercent => "errorRatePercent",
        })
    }
}

/// Capture extra profiles from a pod when one of its metrics reaches a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdTrigger {
    /// The metric to watch.
    pub metric: RuntimeMetric,

    /// The level at which to capture (Critical also fires a Warning trigger).
    #[serde(default = "default_trigger_level")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self != 'OK'", "message": "a trigger fires at Warning or Critical"}
    ]))]
    pub level: ThresholdLevel,

    /// The profiles to capture from that pod.
    #[serde(default = "default_trigger_profiles")]
    #[schemars(length(min = 1, max = 8), extend("x-kubernetes-list-type" = "set"))]
    pub profiles: Vec<ProfileType>,

    /// The least time between two captures by this trigger for the same pod (at least 1m).
    #[serde(default = "default_cooldown")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1m')", "message": "cooldown must be at least 1m"}
    ]))]
    pub cooldown: Duration,
}

fn default_trigger_level() -> ThresholdLevel {
    ThresholdLevel::Warning
}

fn default_trigger_profiles() -> Vec<ProfileType> {
    vec![ProfileType::Heap]
}

fn default_cooldown() -> Duration {
    Duration::from_secs(600)
}

/// What the operator last observed and did for a ProfileCapture.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileCaptureStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Where the capture stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CapturePhase>,

    /// `Ready`, `Progressing` and `Degraded`, each with the generation it was computed for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// How many pods the selector currently selects for a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_pods: Option<i32>,

    /// When a run was last started by the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,

    /// When the schedule fires next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,

    /// The latest run, with per-pod results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<CaptureRun>,

    /// Earlier runs, newest first, at most `retention.historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub history: Vec<RunSummary>,

    /// The latest runtime metrics of each selected pod and their threshold levels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub pods: Vec<PodRuntime>,

    /// The worst threshold level over all pods and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_level: Option<ThresholdLevel>,

    /// The app's request figures over all selected pods, each pod weighted by its requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<CaptureRequests>,

    /// The value of the annotation `biometrics.io/capture-now` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_capture_now: Option<String>,

    /// The `metadata.generation` whose run (for captures without a schedule) was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_run_generation: Option<i64>,

    /// When each threshold trigger last fired for each pod (their cooldowns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["pod", "metric"]))]
    pub trigger_fires: Vec<TriggerFire>,

    /// The rollouts of `onRolloutOf` compared, newest first, at most 10. Only the newest
    /// keeps its profile summaries (a next rollout's baseline when the old pods are gone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub rollouts: Vec<RolloutComparison>,
}

/// One rollout of the `onRolloutOf` workload, its old pods against its new ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutComparison {
    /// The workload's revision rolled out to (a Deployment's
    /// `deployment.kubernetes.io/revision`, a StatefulSet's `updateRevision`).
    #[schemars(length(max = 253))]
    pub revision: String,
    /// The revision before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub previous_revision: Option<String>,
    /// The new pods' `pod-template-hash` (Deployment) or `controller-revision-hash`
    /// (StatefulSet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub template_hash: Option<String>,
    /// The old pods' hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub previous_template_hash: Option<String>,
    /// Where the comparison stands.
    pub stage: RolloutStage,
    /// When the revision was seen first.
    pub detected_time: Time,
    /// When the rollout was seen completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_time: Option<Time>,
    /// The run that captured the old pods (`b<revision>-<uid>`), or the previous rollout's
    /// candidate run when that is the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_run: Option<String>,
    /// Where the baseline comes from: `OldPods`, or `PreviousCandidate` (a `Recreate`
    /// rollout, or the old pods were already gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_source: Option<BaselineSource>,
    /// How long the timed profiles of both sides' runs sample, in seconds: the capture's
    /// duration, capped below the old pods' grace period, the same for the candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_seconds: Option<i64>,
    /// The run that captured the new pods (`c<revision>-<uid>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_run: Option<String>,
    /// The outcome, once judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<RolloutVerdict>,
    /// For `Regressed`: the worst bound crossed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<crate::threshold::ThresholdLevel>,
    /// The verdict, or what the comparison waits for, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// Per profile type: how the normalised total and the functions' shares moved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub changes: Vec<ProfileChange>,
    /// The request p99 latency, before and after, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<ValueChange>,
    /// The error rate in percent, before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ValueChange>,
    /// The old pods' profiles merged, per type (bounded), so the comparison needs no file
    /// from pods that are gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub baseline: Vec<ProfileDigest>,
    /// The new pods' profiles merged, per type (bounded): the next rollout's baseline when
    /// its old pods cannot be captured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub candidate: Vec<ProfileDigest>,
}

/// Where a rollout's comparison stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RolloutStage {
    /// The old pods are being captured.
    MeasuringBaseline,
    /// Waiting for the rollout to complete and `settle` to pass (or the Deployment is paused).
    Settling,
    /// The new pods are being captured.
    MeasuringCandidate,
    /// Judged: see `verdict`.
    Judged,
    /// A newer revision came before this rollout completed (or it was rolled back): not
    /// judged; its baseline carries over to the newer revision.
    Interrupted,
}

/// Where a rollout's baseline comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BaselineSource {
    /// The old revision's pods, captured when the rollout began.
    OldPods,
    /// The previous rollout's candidate: the old pods were gone (a `Recreate` rollout).
    PreviousCandidate,
    /// The baseline of an interrupted rollout, carried over.
    InterruptedRollout,
}

/// A rollout's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RolloutVerdict {
    /// A bound of `spec.regression` was crossed; `severity` says which level.
    Regressed,
    /// A normalised total fell by at least `regression.totalPercent.warning`, no bound crossed.
    Improved,
    /// Within the bounds.
    Unchanged,
    /// Too few samples, or a side could not be captured: the message says why.
    Inconclusive,
}

/// One profile type merged over one side's pods, bounded for status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileDigest {
    /// The profile type.
    #[serde(rename = "type")]
    pub profile_type: ProfileType,
    /// The sample type of the values (`cpu/nanoseconds`, `inuse_space/bytes`, …).
    #[schemars(length(max = 128))]
    pub sample_type: String,
    /// The pods merged.
    pub pods: i32,
    /// The samples over those pods.
    pub samples: i64,
    /// The total over those pods.
    pub total: i64,
    /// The capture's seconds summed over the pods (cpu; 0 for snapshots).
    pub seconds: f64,
    /// The app's requests per second over those pods during the capture, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// The request p99 latency in milliseconds (weighted by requests), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_millis: Option<f64>,
    /// The error rate in percent, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_percent: Option<f64>,
    /// The functions with the highest flat value, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub functions: Vec<DigestFunction>,
}

/// A function's sums in a digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DigestFunction {
    /// The function.
    #[schemars(length(max = 512))]
    pub function: String,
    /// Its own value.
    pub flat: i64,
    /// Its value with its callees'.
    pub cum: i64,
}

/// How one profile type moved over a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileChange {
    /// The profile type.
    #[serde(rename = "type")]
    pub profile_type: ProfileType,
    /// The sample type of the values.
    #[schemars(length(max = 128))]
    pub sample_type: String,
    /// What the total is normalised by.
    pub per: Normalisation,
    /// The normalised total before and after.
    pub total: ValueChange,
    /// Samples before (all old pods).
    pub samples_before: i64,
    /// Samples after (all new pods).
    pub samples_after: i64,
    /// The functions whose flat share grew most, at most 5.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub grown: Vec<FunctionChange>,
    /// The functions whose flat share shrank most, at most 3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub shrunk: Vec<FunctionChange>,
}

/// What a rollout comparison divides a profile's values by, so two sides of different
/// length, pod count or traffic compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Normalisation {
    /// Per request: cpu, when the app's request rate is known on both sides.
    Request,
    /// Per second of capture, per pod: timed profiles (cpu).
    Second,
    /// Per pod: snapshots (heap, allocs, goroutine, …).
    Pod,
}

impl Normalisation {
    /// The word used in verdicts (`CPU per request`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Second => "second",
            Self::Pod => "pod",
        }
    }
}

/// A value before and after, and its change in percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueChange {
    /// Before.
    pub before: f64,
    /// After.
    pub after: f64,
    /// `(after - before) / before` in percent; absent when before is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_percent: Option<f64>,
}

/// A function's flat share and normalised flat value before and after a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionChange {
    /// The function.
    #[schemars(length(max = 512))]
    pub function: String,
    /// Flat share of the total before, in percent (0 when it was not seen).
    pub before_percent: f64,
    /// Flat share after, in percent (0 when it is no longer seen).
    pub after_percent: f64,
    /// Flat value before, normalised as the profile's total.
    pub before: f64,
    /// Flat value after, normalised likewise.
    pub after: f64,
}

/// A threshold trigger's last firing for one pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerFire {
    /// The pod.
    pub pod: String,
    /// The metric that crossed its bound.
    pub metric: RuntimeMetric,
    /// When the trigger fired.
    pub time: Time,
}

/// Where a ProfileCapture stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CapturePhase {
    /// Accepted, nothing run yet (for example no eligible pod).
    Pending,
    /// Waiting for its schedule to fire.
    Scheduled,
    /// A run is in progress.
    Running,
    /// The last run captured every profile from every pod.
    Succeeded,
    /// The last run failed for at least one pod, or the spec cannot be acted on.
    Failed,
    /// `spec.suspend` is set.
    Suspended,
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunTrigger {
    /// The spec was created or changed (captures without a schedule).
    Spec,
    /// The schedule fired.
    Schedule,
    /// The annotation `biometrics.io/capture-now` got a new value.
    Manual,
    /// A pod reached a threshold level named by a trigger.
    Threshold,
    /// A rollout of `onRolloutOf`: its old pods (baseline) or its new ones (candidate).
    Rollout,
}

/// How a run, or a pod's part of it, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunResult {
    /// Still running.
    Running,
    /// Everything was captured.
    Succeeded,
    /// Some pods or profiles failed, others were captured.
    PartiallySucceeded,
    /// Nothing was captured.
    Failed,
    /// Stopped before it finished because a newer run replaced it (`concurrencyPolicy:
    /// Replace`); the profiles finished until then are kept and listed.
    Cancelled,
}

/// One run of a ProfileCapture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptureRun {
    /// The run's id, ending with the first 8 hex digits of the capture's uid
    /// (`g1-3f2a9c1b`); also the directory of its files.
    pub id: String,
    /// Why it started.
    pub trigger: RunTrigger,
    /// When it started.
    pub start_time: Time,
    /// When the last pod finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// How it ended.
    pub result: RunResult,
    /// For a threshold run: what fired it, per pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub fired_by: Vec<ThresholdFiring>,
    /// Each pod's profiles, or its error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["pod"]))]
    pub pods: Vec<PodRunResult>,
}

/// A metric of a pod that reached a trigger's level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdFiring {
    /// The pod.
    pub pod: String,
    /// The metric.
    pub metric: RuntimeMetric,
    /// Its value then.
    pub value: f64,
    /// The level it reached.
    pub level: ThresholdLevel,
    /// The bound it crossed.
    pub bound: f64,
}

/// One pod's part of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRunResult {
    /// The pod's name.
    pub pod: String,
    /// How this pod's part ended.
    pub result: RunResult,
    /// The profiles captured from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub profiles: Vec<ProfileResult>,
    /// Why the pod failed as a whole (agent unreachable, pod gone, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What kind of failure, for tools: `CaptureFailed` (the agent's capture failed),
    /// `CaptureNotFound` (the agent answered 404/410 for the capture: it restarted),
    /// `AgentRefused` (the agent refused the request), `AgentUnreachable` (no answer past the
    /// capture's expected end and a grace), `PodGone`, `NoAgent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub reason: Option<String>,
}

/// One captured profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileResult {
    /// The profile type.
    #[serde(rename = "type")]
    pub profile_type: ProfileType,
    /// The file, relative to the profiles volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The file's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// The file's SHA-256, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The sample type the summary is in (e.g. `cpu/nanoseconds`, `inuse_space/bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_type: Option<String>,
    /// The samples' total value in that sample type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// How many samples the profile holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<i64>,
    /// The 10 functions with the highest flat value (fewer when a large run's status is
    /// trimmed to fit). (The flame graph is the SVG beside the file: `<type>.svg`.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub top: Vec<TopFunction>,
    /// For a timed profile of a capture that reads the app's metrics (`target.metrics`):
    /// the requests the app answered while it sampled, the figure a rollout comparison
    /// divides by to judge CPU per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<f64>,
    /// Likewise, the p99 request latency over the same span, in milliseconds (from the
    /// latency histogram's increase between the two readings); absent without a histogram
    /// or without requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_latency_millis: Option<f64>,
    /// Likewise, the errors in percent of the requests answered over the same span;
    /// absent without requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_percent: Option<f64>,
    /// Why the app's requests over this profile could not be counted (its metrics
    /// unreachable or unreadable); a rollout comparison then leaves the pod out of its side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_error: Option<String>,
    /// Why this profile failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How the top functions moved since the previous run of this capture, for this pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared_to_previous: Option<TopComparison>,
}

/// The top functions of a profile against the previous run's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopComparison {
    /// The previous run.
    pub run: String,
    /// Functions in the top 5 now that were not before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub entered: Vec<String>,
    /// The largest changes in flat %, biggest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub shifts: Vec<FlatShift>,
}

/// A function's flat % in the previous run and now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlatShift {
    /// The function.
    pub function: String,
    /// Flat % before (0 when it was not in the top functions).
    pub before_percent: f64,
    /// Flat % now (0 when it left the top functions).
    pub after_percent: f64,
}

/// A function's share of a profile, as `go tool pprof -top` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopFunction {
    /// The function's name.
    pub function: String,
    /// Value in the function itself.
    pub flat: i64,
    /// `flat` as a percentage of the profile's total.
    pub flat_percent: f64,
    /// Value in the function and everything it called.
    pub cum: i64,
    /// `cum` as a percentage of the profile's total.
    pub cum_percent: f64,
}

/// A past run in brief.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run's id.
    pub id: String,
    /// Why it started.
    pub trigger: RunTrigger,
    /// When it started.
    pub start_time: Time,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// How it ended.
    pub result: RunResult,
    /// Pods that delivered every profile.
    pub pods_succeeded: i32,
    /// Pods that failed at least one profile.
    pub pods_failed: i32,
}

/// A pod's latest runtime sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRuntime {
    /// The pod's name.
    pub name: String,
    /// When the agent took the sample shown. Pods are sampled every metrics interval, but a
    /// sample that changes no level and moves no figure by more than 10 % is written only
    /// once the one shown is five minutes old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_time: Option<Time>,
    /// Bytes of live heap objects (`HeapAlloc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_alloc_bytes: Option<i64>,
    /// Bytes of heap obtained from the OS (`HeapSys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_sys_bytes: Option<i64>,
    /// Bytes obtained from the OS in total (`Sys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sys_bytes: Option<i64>,
    /// Live goroutines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goroutines: Option<i64>,
    /// Garbage collections per second since the previous sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_per_second: Option<f64>,
    /// `Sys` as a percentage of the container's memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<f64>,
    /// Why `memoryPercent` is unknown, when the pod's spec makes it meaningless: the
    /// container serving `target.port` has no memory limit (the downward API then gives the
    /// node's allocatable memory), or no single container declares that port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_percent_unknown: Option<String>,
    /// Request latency's median over `target.metrics.window`, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_latency_millis: Option<f64>,
    /// Request latency's 95th percentile, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_latency_millis: Option<f64>,
    /// Request latency's 99th percentile, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_latency_millis: Option<f64>,
    /// Errors as a percentage of requests over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_percent: Option<f64>,
    /// Requests per second over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Why the request figures are absent although the metrics were read: `no requests`
    /// in the window (which is not 0 % errors), or a first reading still waiting for a
    /// second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub requests_note: Option<String>,
    /// Why the app's metrics endpoint gave no figures (refused, too large, not the
    /// Prometheus text format, a broken series).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub metrics_error: Option<String>,
    /// The level of each metric against `spec.thresholds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<RuntimeLevels>,
    /// Why the metrics are missing, when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The request figures of all selected pods together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptureRequests {
    /// The judged latency quantile (`thresholds.responseTimeMillis.quantile`).
    #[serde(default)]
    pub quantile: LatencyQuantile,
    /// The pods' latency at that quantile, averaged with each pod weighted by its requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_millis: Option<f64>,
    /// Errors as a percentage of all the pods' requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_percent: Option<f64>,
    /// Requests per second over all the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// The level of the latency and error figures together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<ThresholdLevel>,
    /// Why there are no figures: `no requests` in the window, or no pod has a reading yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The threshold level of each runtime metric; a metric that could not be measured has
/// no level.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeLevels {
    /// Level of `memoryPercent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<ThresholdLevel>,
    /// Level of `goroutines`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goroutines: Option<ThresholdLevel>,
    /// Level of `gcPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_per_second: Option<ThresholdLevel>,
    /// Level of the latency at the judged quantile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_time_millis: Option<ThresholdLevel>,
    /// Level of `errorRatePercent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_percent: Option<ThresholdLevel>,
    /// Metrics whose thresholds could not be judged (`memoryPercent` when
    /// `memoryPercentUnknown` says why): neither OK nor past a bound, and no trigger fires on
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_judged: Vec<RuntimeMetric>,
}
