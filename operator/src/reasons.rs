//! Condition types, condition reasons and Event reasons: one spelling, one place. What each
//! means for a user is in `docs/operations.md`.

/// Condition types.
pub mod condition {
    /// Both kinds: the object is in effect / its last run captured everything.
    pub const READY: &str = "Ready";
    /// Both kinds: something failed or is held back.
    pub const DEGRADED: &str = "Degraded";
    /// ProfileCapture: a run is in progress.
    pub const PROGRESSING: &str = "Progressing";
    /// CachePolicy: the executor's last sample reached Redis.
    pub const REDIS_REACHABLE: &str = "RedisReachable";
    /// ProfileCapture with `onRolloutOf`: the latest judged rollout regressed.
    pub const PERFORMANCE_REGRESSED: &str = "PerformanceRegressed";
}

// Both kinds.

/// The spec cannot be read (a value the schema admitted but the parser refuses): `Ready`
/// and `Degraded` say so with the parser's message, one Warning Event too, and the object
/// waits for a change.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// A schedule parses but has no fire time left (`0 0 30 2 *`).
pub const SCHEDULE_NEVER_FIRES: &str = "ScheduleNeverFires";
/// The selector cannot be used.
pub const INVALID_SELECTOR: &str = "InvalidSelector";
/// `Degraded` False.
pub const AS_EXPECTED: &str = "AsExpected";
/// A runtime level (capture) or a cache level (policy) rose.
pub const THRESHOLD_CROSSED: &str = "ThresholdCrossed";
/// ProfileCapture: a rollout crossed a bound of `spec.regression` (Warning Event; the
/// `PerformanceRegressed` condition True).
pub const REGRESSED: &str = "Regressed";
/// ProfileCapture: a rollout made a normalised total fall by at least the total bound.
pub const IMPROVED: &str = "Improved";
/// ProfileCapture: a rollout stayed within `spec.regression`.
pub const UNCHANGED: &str = "Unchanged";
/// ProfileCapture: a rollout could not be judged (too few samples, no baseline).
pub const INCONCLUSIVE: &str = "Inconclusive";
/// ProfileCapture: a newer revision or a rollback came before a rollout completed.
pub const ROLLOUT_INTERRUPTED: &str = "RolloutInterrupted";
/// ProfileCapture: a new revision of `onRolloutOf` was seen; its comparison begins.
pub const ROLLOUT_DETECTED: &str = "RolloutDetected";
/// ProfileCapture: `Ready` of a capture watching rollouts before its first run.
pub const WATCHING_ROLLOUTS: &str = "WatchingRollouts";
/// ProfileCapture: `PerformanceRegressed` False before any rollout was judged.
pub const NO_ROLLOUT_JUDGED: &str = "NoRolloutJudged";
/// ProfileCapture: a pod's memory percentage cannot be judged (its app container has no
/// memory limit); a Warning Event when it is first seen for the pod.
pub const MEMORY_NOT_JUDGED: &str = "MemoryNotJudged";

// A failed reconcile: the Warning Event on its object, once per distinct failure.

/// A Kubernetes API request of the reconcile failed.
pub const KUBERNETES_API_FAILED: &str = "KubernetesApiFailed";
/// The object's status could not be written.
pub const STATUS_WRITE_FAILED: &str = "StatusWriteFailed";
/// The `biometrics-trust` ConfigMap could not be published in the object's namespace.
pub const TRUST_PUBLISH_FAILED: &str = "TrustPublishFailed";
/// The signing key is not usable.
pub const SIGNING_KEY_UNAVAILABLE: &str = "SigningKeyUnavailable";
/// The operator's configuration is wrong (a start-up failure; no object sees it).
pub const CONFIGURATION_INVALID: &str = "ConfigurationInvalid";
/// The replica lost its lease (a process failure; no object sees it).
pub const LEADERSHIP_LOST: &str = "LeadershipLost";
/// The finalizer could not be added or removed.
pub const FINALIZER_FAILED: &str = "FinalizerFailed";

// ProfileCapture.

/// `Ready` True: the last run captured every profile.
pub const CAPTURED: &str = "Captured";
/// `Ready` / `Progressing`: a run is in progress.
pub const CAPTURING: &str = "Capturing";
/// `Progressing` False.
pub const IDLE: &str = "Idle";
/// `Ready` False: the last run did not capture everything.
pub const RUN_FAILED: &str = "RunFailed";
/// `Ready` True: no run yet, the schedule will start one.
pub const SCHEDULED: &str = "Scheduled";
/// `Ready` False: no run yet and none can start.
pub const PENDING: &str = "Pending";
/// `Degraded`, and a skipped run's Event: no selected pod is eligible.
pub const NO_ELIGIBLE_PODS: &str = "NoEligiblePods";
/// `Degraded`: pods failed in the last run.
pub const PODS_FAILED: &str = "PodsFailed";
/// Event: a run started.
pub const RUN_STARTED: &str = "RunStarted";
/// Event: a run ended.
pub const RUN_FINISHED: &str = "RunFinished";
/// Event: a running run was stopped because a newer one replaced it
/// (`concurrencyPolicy: Replace`).
pub const RUN_CANCELLED: &str = "RunCancelled";
/// Event: one pod's part of a run failed as a whole.
pub const POD_FAILED: &str = "PodFailed";
/// Event: a threshold trigger fired for a pod.
pub const TRIGGER_FIRED: &str = "TriggerFired";

// ProfileCapture: why one pod's part of a run failed (`status.lastRun.pods[].reason`).

/// The agent reports the capture failed (nothing could be captured, or it was stopped).
pub const CAPTURE_FAILED: &str = "CaptureFailed";
/// The agent answered 404/410 for the capture: it no longer knows it (it restarted).
pub const CAPTURE_NOT_FOUND: &str = "CaptureNotFound";
/// The agent refused the request (a 4xx other than 408/429), or answered something unreadable.
pub const AGENT_REFUSED: &str = "AgentRefused";
/// The agent gave no answer (or only "not now") past the capture's expected end and a grace.
pub const AGENT_UNREACHABLE: &str = "AgentUnreachable";
/// The pod is gone.
pub const POD_GONE: &str = "PodGone";
/// The pod was terminating when its capture was to start: its agent, draining, starts no
/// new capture.
pub const POD_TERMINATING: &str = "PodTerminating";
/// The pod lost its IP or its agent.
pub const NO_AGENT: &str = "NoAgent";

// CachePolicy.

/// `Ready` True: executor, credentials and a reachable Redis.
pub const ENFORCED: &str = "Enforced";
/// `Ready` False: `strategy.maxMemory` is not a whole number of bytes.
pub const INVALID_STRATEGY: &str = "InvalidStrategy";
/// `Ready` False, and its Event: no eligible pod to execute.
pub const NO_EXECUTOR: &str = "NoExecutor";
/// `Ready` False, and its Event: the password Secret does not exist.
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
/// `Ready` False, and its Event: the Secret has no such key.
pub const SECRET_KEY_NOT_FOUND: &str = "SecretKeyNotFound";
/// `Ready` False, and its Event: the Secret cannot be read.
pub const SECRET_UNREADABLE: &str = "SecretUnreadable";
/// `Ready` False, and its Event: the key's value is not UTF-8.
pub const SECRET_KEY_INVALID: &str = "SecretKeyInvalid";
/// `RedisReachable` False: the password or the CA bundle cannot be read.
pub const CREDENTIALS_UNAVAILABLE: &str = "CredentialsUnavailable";
/// `RedisReachable` True.
pub const REACHABLE: &str = "Reachable";
/// `RedisReachable` False: Redis could not be reached (agent code `RedisUnreachable`).
pub const UNREACHABLE: &str = "Unreachable";
/// `RedisReachable` False: Redis refused the credentials (agent code `RedisAuthFailed`).
pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
/// `RedisReachable` False: Redis's TLS certificate does not chain to the trusted CAs
/// (`caSecretRef`, else the system's roots), or is invalid as a certificate
/// (`RedisCertificateUntrusted`).
pub const CERTIFICATE_UNTRUSTED: &str = "CertificateUntrusted";
/// `RedisReachable` False: Redis's TLS certificate is not valid for the name verified
/// (`tlsServerName`, else the address's host) (`RedisServerNameMismatch`).
pub const SERVER_NAME_MISMATCH: &str = "ServerNameMismatch";
/// `RedisReachable` False: Redis answered a command with an error (`RedisCommandFailed`).
pub const COMMAND_FAILED: &str = "CommandFailed";
/// `RedisReachable` False: the executor is at one of its bounds (`TooManyRequests`), e.g.
/// `--max-redis-connections`.
pub const EXECUTOR_BUSY: &str = "ExecutorBusy";
/// `RedisReachable` False: the executor itself did not answer, or answered something else.
pub const EXECUTOR_UNREACHABLE: &str = "ExecutorUnreachable";
/// `Degraded`, and its Events: a rule's run failed.
pub const INVALIDATION_FAILED: &str = "InvalidationFailed";
/// `Degraded`, and its Events: enforcing the strategy failed.
pub const ENFORCEMENT_FAILED: &str = "EnforcementFailed";
/// `Degraded`: an `onRolloutOf` workload does not exist (a CachePolicy's rule, or a
/// ProfileCapture's `PerformanceRegressed` reason).
pub const WORKLOAD_NOT_FOUND: &str = "WorkloadNotFound";
/// Event: a new executor.
pub const EXECUTOR_CHANGED: &str = "ExecutorChanged";
/// Event: a rule's run finished.
pub const INVALIDATED: &str = "Invalidated";
/// Event: a new or changed strategy was enforced.
pub const STRATEGY_ENFORCED: &str = "StrategyEnforced";
/// Event: the server's eviction policy was changed behind the policy's back.
pub const EVICTION_POLICY_DRIFT: &str = "EvictionPolicyDrift";
/// Event: the executor could not sample Redis.
pub const REDIS_UNREACHABLE: &str = "RedisUnreachable";
/// Event: Redis answers again.
pub const REDIS_REACHABLE: &str = "RedisReachable";
