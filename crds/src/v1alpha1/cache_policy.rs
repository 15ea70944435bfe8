//! `CachePolicy`: the Redis cache of a workload — strategy, invalidations, health.
// clippy reads the repeated `type_ = …` of several printcolumns as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions_schema;
use crate::{
    duration::Duration,
    schedule::Schedule,
    selector::label_selector_schema,
    threshold::{LowerBounds, ThresholdLevel, UpperBounds},
};

/// Enforce a caching strategy on the keys under `keyPrefix` in a Redis, run invalidation
/// rules when they change, on a schedule, on request (annotation
/// `biometrics.io/invalidate-now`) or after a rollout, and report the cache's health.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "biometrics.io",
    version = "v1alpha1",
    kind = "CachePolicy",
    plural = "cachepolicies",
    namespaced,
    status = "CachePolicyStatus",
    derive = "PartialEq",
    shortname = "cpol",
    category = "biometrics",
    doc = "CachePolicy enforces a caching strategy and invalidation rules on a workload's Redis and reports the cache's health in status.",
    printcolumn(
        name = "Strategy",
        type_ = "string",
        json_path = ".spec.strategy.type",
        description = "Caching strategy"
    ),
    printcolumn(
        name = "Executor",
        type_ = "string",
        json_path = ".status.executor",
        description = "The agent pod running this policy's Redis work"
    ),
    printcolumn(
        name = "Server Hit Ratio",
        type_ = "number",
        json_path = ".status.redis.serverHitRatioPercent",
        description = "Keyspace hits as a percentage of lookups on the whole Redis server, since the previous sample"
    ),
    printcolumn(
        name = "Last Invalidation",
        type_ = "date",
        json_path = ".status.lastInvalidationTime",
        description = "When an invalidation last finished"
    ),
    printcolumn(
        name = "Threshold",
        type_ = "string",
        json_path = ".status.thresholdLevel",
        description = "Worst cache threshold level"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.keyPrefix.size() > 0", "message": "keyPrefix must not be empty: without a prefix a policy could delete every key in the database", "fieldPath": ".keyPrefix"}
]))]
pub struct CachePolicySpec {
    /// The workload's pods; one of them, with a Ready `biometrics-agent` sidecar, runs the
    /// policy's Redis work.
    #[schemars(schema_with = "label_selector_schema")]
    pub selector: LabelSelector,

    /// How to reach the Redis.
    pub redis: RedisConnection,

    /// The prefix of every key this policy may touch; patterns, prefixes and keys in the
    /// rules are all relative to it, so a policy can never reach keys outside it.
    #[schemars(length(max = 256))]
    pub key_prefix: String,

    /// The caching strategy enforced on the keys under the prefix.
    pub strategy: CacheStrategy,

    /// Invalidation rules, each run when it is new or changed, when its schedule fires,
    /// when the annotation `biometrics.io/invalidate-now` changes, or after a rollout of
    /// the workload it names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
        "x-kubernetes-validations" = [
            {"rule": "self.all(r, self.exists_one(s, s.name == r.name))", "message": "invalidation rule names must be unique"}
        ]
    ))]
    pub invalidations: Vec<InvalidationRule>,

    /// Warning and critical bounds for the cache's health.
    #[serde(default)]
    pub thresholds: CacheThresholds,
}

/// A Redis server (or cluster) and how to connect to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.caSecretRef) || self.tls", "message": "caSecretRef applies only with tls: true", "fieldPath": ".caSecretRef"},
    {"rule": "!has(self.tlsServerName) || self.tls", "message": "tlsServerName applies only with tls: true", "fieldPath": ".tlsServerName"},
    {"rule": "!has(self.tlsServerName) || !self.cluster", "message": "tlsServerName cannot be used with cluster: a cluster's nodes are verified under the addresses they announce", "fieldPath": ".tlsServerName"}
]))]
pub struct RedisConnection {
    /// `host:port` of the Redis server (for a cluster: of any node).
    #[schemars(length(min = 3, max = 261), regex(pattern = r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$"))]
    pub address: String,

    /// The database number (always 0 for a cluster).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1023))]
    pub database: i32,

    /// Connect with TLS. The server's certificate is verified against the system's
    /// trusted roots, or against `caSecretRef` when set, for the host of `address`, or for
    /// `tlsServerName` when set.
    #[serde(default)]
    pub tls: bool,

    /// The Secret key (in this namespace) holding the PEM bundle of the certificate
    /// authorities that sign the server's certificate, trusted instead of the system's
    /// roots (a private CA). Only with `tls: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretKeyRef>,

    /// The name the server's certificate must be valid for, when it is not the host of
    /// `address` (an IP address, or a Service name the certificate does not list). Also
    /// sent as the TLS server name indication. Only with `tls: true`, and not with
    /// `cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
        )
    )]
    pub tls_server_name: Option<String>,

    /// The address is a Redis Cluster node: scans run on every master.
    #[serde(default)]
    pub cluster: bool,

    /// ACL user name; unset uses the default user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub username: Option<String>,

    /// The Secret (in this namespace) holding the password. The password is only ever
    /// sent to the executing agent; it never appears in status, Events or logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,

    /// Connections the executing agent may open to this Redis, as its work needs them
    /// (each is multiplexed and used in turn); the agent's `--max-redis-connections` caps
    /// its connections to all servers together.
    #[serde(default = "default_pool_size")]
    #[schemars(range(min = 1, max = 100))]
    pub pool_size: i32,

    /// Time allowed to establish a connection. Between 1ms and 1m.
    #[serde(default = "default_dial_timeout")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1ms') && duration(self) <= duration('60s')", "message": "dialTimeout must be between 1ms and 1m"}
    ]))]
    pub dial_timeout: Duration,

    /// Time allowed for a reply. Between 1ms and 1m.
    #[serde(default = "default_io_timeout")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1ms') && duration(self) <= duration('60s')", "message": "readTimeout must be between 1ms and 1m"}
    ]))]
    pub read_timeout: Duration,

    /// Time allowed to send a command. Between 1ms and 1m.
    #[serde(default = "default_io_timeout")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1ms') && duration(self) <= duration('60s')", "message": "writeTimeout must be between 1ms and 1m"}
    ]))]
    pub write_timeout: Duration,
}

fn default_pool_size() -> i32 {
    10
}

fn default_dial_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_io_timeout() -> Duration {
    Duration::from_secs(3)
}

/// A key of a Secret in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "password".to_owned()
}

/// A key of a Secret in the same namespace holding PEM certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret (`ca.crt`, as cert-manager and service-account Secrets
    /// name it, unless set).
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".to_owned()
}

/// How keys under the prefix are kept in check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type == 'WriteBehind' || (!has(self.asyncWrite) && !has(self.writeBatchSize))", "message": "asyncWrite and writeBatchSize apply only to the WriteBehind strategy"},
    {"rule": "self.type != 'TTL' || has(self.ttl)", "message": "the TTL strategy needs a ttl"},
    {"rule": "!self.manageServerEvictionPolicy || self.type in ['LRU', 'LFU']", "message": "manageServerEvictionPolicy applies only to the LRU and LFU strategies"},
    {"rule": "!has(self.maxMemory) || self.manageServerEvictionPolicy", "message": "maxMemory is set on the server only with manageServerEvictionPolicy"}
]))]
pub struct CacheStrategy {
    /// `LRU` and `LFU` trim the least recently / frequently used keys beyond `maxKeys`;
    /// `TTL` caps every key's time to live at `ttl`; `WriteBehind` serves the write-behind
    /// settings to the app and still enforces `maxKeys` and `ttl`.
    #[serde(rename = "type")]
    pub strategy_type: StrategyType,

    /// The most keys kept under the prefix; beyond it keys are evicted by the strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_keys: Option<i64>,

    /// The longest time to live a key under the prefix may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1s')", "message": "ttl must be at least 1s"}
    ]))]
    pub ttl: Option<Duration>,

    /// WriteBehind only: the app writes to the backing store asynchronously (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_write: Option<bool>,

    /// WriteBehind only: writes batched together by the app (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub write_batch_size: Option<i32>,

    /// LRU/LFU only: also set the server's `maxmemory-policy` to `allkeys-lru` or
    /// `allkeys-lfu` (and `maxmemory` when given), and report drift from it.
    #[serde(default)]
    pub manage_server_eviction_policy: bool,

    /// With `manageServerEvictionPolicy`: the server's `maxmemory` (e.g. `512Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
}

/// A caching strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StrategyType {
    /// Least recently used keys go first.
    #[serde(rename = "LRU")]
    Lru,
    /// Least frequently used keys go first.
    #[serde(rename = "LFU")]
    Lfu,
    /// Every key expires within `ttl`.
    #[serde(rename = "TTL")]
    Ttl,
    /// The app writes behind the cache; the policy is served to it.
    WriteBehind,
}

/// An invalidation rule: which keys to delete, and when besides on change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "[has(self.pattern), has(self.prefix), has(self.tags), has(self.keys)].filter(x, x).size() == 1", "message": "set exactly one of pattern, prefix, tags or keys"}
]))]
pub struct InvalidationRule {
    /// The rule's name, unique within the policy.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// Delete keys matching this glob, after the key prefix (Redis `MATCH` syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub pattern: Option<String>,

    /// Delete keys starting with this, after the key prefix (taken literally, not a glob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub prefix: Option<String>,

    /// Delete the keys carrying any of these tags: the members of the sets
    /// `<keyPrefix>tag:<tag>`, then the sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 128)), extend("x-kubernetes-list-type" = "set"))]
    pub tags: Option<Vec<String>>,

    /// Delete exactly these keys, after the key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000), inner(length(min = 1, max = 512)), extend("x-kubernetes-list-type" = "set"))]
    pub keys: Option<Vec<String>>,

    /// Also run on this schedule (same syntax as ProfileCapture's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,

    /// Also run once after each completed rollout of this workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rollout_of: Option<WorkloadRef>,
}

/// A Deployment or StatefulSet in the policy's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// The workload's kind.
    #[serde(default)]
    pub kind: WorkloadKind,
    /// The workload's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds of workload whose rollouts can be watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    #[default]
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

/// Bounds for the cache's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheThresholds {
    /// Used memory as a percentage of `maxmemory` (higher is worse).
    #[serde(default = "default_memory_percent")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.warning < self.critical", "message": "warning must be lower than critical"},
        {"rule": "self.critical <= 100.0", "message": "a memory percentage cannot exceed 100"}
    ]))]
    pub memory_percent: UpperBounds,

    /// Hits as a percentage of lookups (lower is worse), judged against
    /// `status.redis.serverHitRatioPercent`: the ratio of the whole Redis server, every
    /// client and prefix included.
    #[serde(default = "default_hit_ratio_percent")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.critical < self.warning", "message": "critical must be lower than warning: this metric is worse when it is lower"},
        {"rule": "self.warning <= 100.0", "message": "a hit ratio percentage cannot exceed 100"}
    ]))]
    pub hit_ratio_percent: LowerBounds,

    /// Keys evicted by the server per second (higher is worse).
    #[serde(default = "default_evictions_per_second")]
    pub evictions_per_second: UpperBounds,
}

fn default_memory_percent() -> UpperBounds {
    UpperBounds { warning: 70.0, critical: 90.0 }
}

fn default_hit_ratio_percent() -> LowerBounds {
    LowerBounds { warning: 80.0, critical: 50.0 }
}

fn default_evictions_per_second() -> UpperBounds {
    UpperBounds { warning: 100.0, critical: 1000.0 }
}

impl Default for CacheThresholds {
    fn default() -> Self {
        Self {
            memory_percent: default_memory_percent(),
            hit_ratio_percent: default_hit_ratio_percent(),
            evictions_per_second: default_evictions_per_second(),
        }
    }
}

/// What the operator last observed and did for a CachePolicy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CachePolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `RedisReachable` and `Degraded`, each with the generation it was computed for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The pod whose agent runs this policy's Redis work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,

    /// The cache's latest health sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisHealth>,

    /// Each rule's latest run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub invalidations: Vec<InvalidationStatus>,

    /// When an invalidation last finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_invalidation_time: Option<Time>,

    /// The level of each health metric against `spec.thresholds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<CacheLevels>,

    /// The worst of `levels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_level: Option<ThresholdLevel>,

    /// The latest strategy enforcement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<EnforcementStatus>,

    /// The value of the annotation `biometrics.io/invalidate-now` already acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_invalidate_now: Option<String>,
}

/// The latest enforcement of `spec.strategy` by the executor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnforcementStatus {
    /// When it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_enforce_time: Option<Time>,
    /// A digest of the strategy, key prefix and Redis it was enforced for: a change of any
    /// of them enforces again at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_strategy: Option<String>,
    /// Whether it succeeded (`Running` while the executor's job runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<InvalidationResult>,
    /// The executor's enforcement job (polled until it ends; sent again under the same id
    /// to a new executor, which runs it from the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The agent pod running the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// Keys under the prefix examined so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_scanned: Option<i64>,
    /// The server's `maxmemory-policy` read back afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_policy: Option<String>,
    /// Keys evicted to respect `maxKeys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_trimmed: Option<i64>,
    /// Keys given (or cut down to) the strategy's TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_given_ttl: Option<i64>,
    /// Warnings, or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The cache's health as the executor last sampled it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisHealth {
    /// Whether the server answered.
    pub reachable: bool,
    /// Round trip of a `PING`, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_latency_millis: Option<f64>,
    /// `used_memory` in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_memory_bytes: Option<i64>,
    /// `maxmemory` in bytes (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<i64>,
    /// Used memory as a percentage of `maxmemory`, when there is a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<f64>,
    /// Keyspace hits as a percentage of lookups between the last two samples, for the whole
    /// server: Redis counts `keyspace_hits` and `keyspace_misses` per server, not per key
    /// prefix, so every client and prefix on it is included. A ratio of this policy's keys
    /// alone needs the app's own counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_hit_ratio_percent: Option<f64>,
    /// Keys evicted per second between the last two samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evictions_per_second: Option<f64>,
    /// The server's `maxmemory-policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_policy: Option<String>,
    /// Keys under the prefix. Counted by a `SCAN` pass that examines a bounded number of keys
    /// per sample and continues from where the previous sample stopped, so sampling costs
    /// Redis the same on a large keyspace as on a small one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_under_prefix: Option<i64>,
    /// Whether `keysUnderPrefix` is an estimate: the keyspace is larger than one sample
    /// examines, so the figure is the last complete pass (spread over several samples while
    /// keys came and went) or, before the first pass ends, the prefix's share of the keys
    /// examined so far times the server's key count.
    #[serde(default)]
    pub keys_estimated: bool,
    /// Why the server could not be sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What started an invalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InvalidationTrigger {
    /// The rule is new or changed.
    Change,
    /// The rule's schedule fired.
    Schedule,
    /// The annotation `biometrics.io/invalidate-now` got a new value.
    Manual,
    /// The workload in `onRolloutOf` finished a rollout.
    Rollout,
}

/// How an invalidation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InvalidationResult {
    /// Still running.
    Running,
    /// Every matching key was deleted.
    Succeeded,
    /// It stopped with an error; `keysDeleted` says how far it got.
    Failed,
}

/// A rule's latest run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvalidationStatus {
    /// The rule's name.
    pub name: String,
    /// When the latest run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,
    /// What started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<InvalidationTrigger>,
    /// Keys it deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_deleted: Option<i64>,
    /// How long it took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_millis: Option<i64>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<InvalidationResult>,
    /// Details, or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` whose version of the rule last ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<i64>,
    /// A digest of what the rule selects (its keys, the key prefix and the Redis) when it
    /// last ran: a spec change that leaves it alone does not run the rule again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_digest: Option<String>,
    /// The agent job id of the latest run (`<policy-uid>-<rule>-<trigger-key>`): the same
    /// work sent again, to any agent, is done once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The pod whose agent ran (or runs) the latest run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// Consecutive failed attempts of the latest run; it is retried with backoff
    /// (10 s, doubling, at most 5 min) under the same id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<i32>,
    /// Keys that an executor lost during the run had deleted; included in `keysDeleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_over: Option<i64>,
    /// The latest fire time of `schedule` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The revision of the `onRolloutOf` workload the rule last ran for (or found when it was
    /// added): a Deployment's `deployment.kubernetes.io/revision`, a StatefulSet's
    /// `status.updateRevision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_revision: Option<String>,
}

impl InvalidationStatus {
    /// The entry of a rule that has not run yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            last_run_time: None,
            trigger: None,
            keys_deleted: None,
            duration_millis: None,
            result: None,
            message: None,
            applied_generation: None,
            rule_digest: None,
            run_id: None,
            executor: None,
            failures: None,
            carried_over: None,
            last_schedule_time: None,
            rollout_revision: None,
        }
    }
}

/// The threshold level of each cache health metric; one that could not be measured has
/// no level.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheLevels {
    /// Level of `memoryPercent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<ThresholdLevel>,
    /// Level of `serverHitRatioPercent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_hit_ratio_percent: Option<ThresholdLevel>,
    /// Level of `evictionsPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evictions_per_second: Option<ThresholdLevel>,
}
