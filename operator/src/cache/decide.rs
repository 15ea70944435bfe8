//! The CachePolicy decisions, as pure functions over plain data: which agent executes,
//! which rules are due and under which job id, what a rollout's state is, what the agent's
//! answers mean for status.

use biometrics_agent_api::{CaBundle, Password, RedisTarget, RuleSpec, StrategySpec};
use biometrics_crds::{
    INVALIDATE_NOW_ANNOTATION,
    threshold::ThresholdLevel,
    v1alpha1::{
        CacheLevels, CachePolicy, CacheThresholds, EnforcementStatus, InvalidationResult, InvalidationRule,
        InvalidationStatus, InvalidationTrigger, RedisHealth, SecretKeyRef, StrategyType, WorkloadRef,
    },
};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;

use crate::{
    pods::{PodInfo, fnv},
    reasons,
    workload::Rollout,
};

/// The executor: the current one while it is still a candidate (Ready, with an agent),
/// otherwise the candidate ranked first for this policy by rendezvous hashing — stable,
/// and different policies spread over the pods.
pub fn executor<'a>(policy_uid: &str, current: Option<&str>, candidates: &'a [PodInfo]) -> Option<&'a PodInfo> {
    if let Some(kept) = current.and_then(|name| candidates.iter().find(|p| p.name == name)) {
        return Some(kept);
    }
    candidates.iter().max_by_key(|p| (fnv(&format!("{policy_uid}/{}", p.name)), std::cmp::Reverse(p.name.clone())))
}

/// A baseline recorded by an operator version that digested the pod template (16 hex
/// digits): not comparable with a revision, so it is replaced without firing.
fn is_template_digest(baseline: &str) -> bool {
    baseline.len() == 16 && baseline.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A rule run to start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRun {
    /// What started it.
    pub trigger: InvalidationTrigger,
    /// The agent job id, `<policy-uid>-<rule>-<trigger-key>`: deterministic, so a restarted
    /// operator or a new executor re-drives the same job instead of starting another.
    pub id: String,
}

/// What a reconcile does about one rule: run it, and what to record either way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RulePlan {
    /// The rule.
    pub name: String,
    /// A run to start.
    pub run: Option<DueRun>,
    /// The rule's digest, recorded with a run.
    pub digest: String,
    /// A schedule fire time to record (acted on, or the baseline of a new rule).
    pub schedule_time: Option<Timestamp>,
    /// A rollout revision to record (acted on, or the baseline).
    pub rollout_revision: Option<String>,
    /// Why a trigger is held back (a rollout in progress, a missing workload).
    pub waiting: Option<Waiting>,
    /// An `invalidate-now` request this rule could not act on yet (it is running).
    pub manual_deferred: bool,
    /// When a failed run is retried, if it is waiting to be.
    pub retry_at: Option<Timestamp>,
}

/// Why a rule's rollout trigger is held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// The `onRolloutOf` workload does not exist (in the policy's namespace).
    WorkloadNotFound(WorkloadRef),
    /// The workload's rollout has not completed yet.
    RolloutInProgress(WorkloadRef),
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WorkloadNotFound(w) => write!(f, "{:?} {} not found", w.kind, w.name),
            Self::RolloutInProgress(w) => write!(f, "waiting for the rollout of {:?} {} to complete", w.kind, w.name),
        }
    }
}

/// A Kubernetes quantity that is not a whole number of bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("maxMemory {text:?} is not a whole number of bytes (like 512Mi or 1G)")]
pub struct InvalidQuantity {
    /// The quantity as written.
    pub text: String,
}

/// The delay before retrying a run that failed `failures` times in a row: 10 s, doubling,
/// at most 5 min.
pub fn retry_delay(failures: i32) -> jiff::SignedDuration {
    let exponent = u32::try_from(failures.clamp(1, 6) - 1).unwrap_or(0);
    jiff::SignedDuration::from_secs((10 * 2_i64.pow(exponent)).min(300))
}

/// A digest of what a rule deletes: its selection, the key prefix and the Redis.
pub fn rule_digest(policy: &CachePolicy, rule: &InvalidationRule) -> String {
    let r = &policy.spec.redis;
    let what = serde_json::json!([
        rule.pattern,
        rule.prefix,
        rule.tags,
        rule.keys,
        policy.spec.key_prefix,
        r.address,
        r.database,
        r.cluster
    ]);
    format!("{:016x}", fnv(&what.to_string()))
}

/// The job id of a rule's run.
pub fn run_id(policy_uid: &str, rule: &str, key: &str) -> String {
    format!("{}-{rule}-{key}", policy_uid.to_ascii_lowercase())
}

/// Each rule's plan at `now`. A rule whose run is still going gets no run (like a CronJob
/// with `Forbid`); its triggers wait for it. Of several triggers at once one run happens,
/// under the first of: change, manual, rollout, schedule.
pub fn plan_rules(
    policy: &CachePolicy,
    now: Timestamp,
    rollout: impl Fn(&WorkloadRef) -> Option<Rollout>,
) -> Vec<RulePlan> {
    let status = policy.status.clone().unwrap_or_default();
    let uid = policy.metadata.uid.clone().unwrap_or_default();
    let generation = policy.metadata.generation.unwrap_or(0);
    let manual = policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INVALIDATE_NOW_ANNOTATION))
        .filter(|v| status.handled_invalidate_now.as_ref() != Some(*v));
    policy
        .spec
        .invalidations
        .iter()
        .map(|rule| {
            let entry = status.invalidations.iter().find(|e| e.name == rule.name);
            let digest = rule_digest(policy, rule);
            let mut plan = RulePlan { name: rule.name.clone(), digest: digest.clone(), ..RulePlan::default() };
            let mut triggers: Vec<(InvalidationTrigger, String)> = Vec::new();
            if entry.is_none_or(|e| e.rule_digest.as_deref() != Some(digest.as_str())) {
                triggers.push((InvalidationTrigger::Change, format!("g{generation}")));
            }
            if let Some(value) = manual {
                triggers.push((InvalidationTrigger::Manual, format!("m{:012x}", fnv(value) & 0xffff_ffff_ffff)));
            }
            if let Some(workload) = &rule.on_rollout_of {
                let baseline = entry.and_then(|e| e.rollout_revision.clone());
                match rollout(workload) {
                    None => {
                        plan.waiting = Some(Waiting::WorkloadNotFound(workload.clone()));
                        plan.rollout_revision = baseline;
                    }
                    // No revision recorded yet: nothing to compare, the baseline stays.
                    Some(Rollout { revision: None, .. }) => plan.rollout_revision = baseline,
                    Some(Rollout { revision: Some(revision), complete }) => match baseline {
                        None => plan.rollout_revision = Some(revision),
                        Some(seen) if is_template_digest(&seen) => plan.rollout_revision = Some(revision),
                        Some(seen) if seen == revision => plan.rollout_revision = Some(seen),
                        Some(seen) if !complete => {
                            plan.waiting = Some(Waiting::RolloutInProgress(workload.clone()));
                            plan.rollout_revision = Some(seen);
                        }
                        Some(_) => {
                            // A digest keeps the job id short whatever the revision's form.
                            let digest = fnv(&revision) & 0xffff_ffff_ffff;
                            triggers.push((InvalidationTrigger::Rollout, format!("r{digest:012x}")));
                            plan.rollout_revision = Some(revision);
                        }
                    },
                }
            }
            if let Some(schedule) = &rule.schedule {
                match entry.and_then(|e| e.last_schedule_time.as_ref()) {
                    // A new rule starts its schedule now: it runs on change anyway.
                    None => plan.schedule_time = Some(now),
                    Some(since) => {
                        // Of the fire times missed (while the operator was down) only the
                        // latest runs, once.
                        let missed = schedule.missed_between(since.0, now, 100);
                        plan.schedule_time = Some(since.0);
                        if let Some(at) = missed.latest {
                            triggers.push((InvalidationTrigger::Schedule, format!("s{}", at.as_second())));
                            plan.schedule_time = Some(at);
                        }
                    }
                }
            }
            let running = entry.is_some_and(|e| e.result == Some(InvalidationResult::Running));
            // A job already started under the same id is not started again.
            triggers.retain(|(_, key)| {
                entry.and_then(|e| e.run_id.as_deref()) != Some(run_id(&uid, &rule.name, key).as_str())
            });
            if running {
                plan.manual_deferred = triggers.iter().any(|(t, _)| *t == InvalidationTrigger::Manual);
                // Nothing is acted on while the rule runs: keep what was recorded.
                plan.schedule_time = entry.and_then(|e| e.last_schedule_time.as_ref().map(|t| t.0));
                plan.rollout_revision = entry.and_then(|e| e.rollout_revision.clone());
            } else if let Some((trigger, key)) = triggers.into_iter().next() {
                plan.run = Some(DueRun { trigger, id: run_id(&uid, &rule.name, &key) });
            } else if let Some(e) = entry.filter(|e| e.result == Some(InvalidationResult::Failed))
                && let (Some(id), Some(trigger), Some(at)) = (&e.run_id, e.trigger, &e.last_run_time)
            {
                // The same work again, once the backoff has passed.
                let retry_at = at.0.checked_add(retry_delay(e.failures.unwrap_or(1))).unwrap_or(at.0);
                if retry_at <= now {
                    plan.run = Some(DueRun { trigger, id: id.clone() });
                } else {
                    plan.retry_at = Some(retry_at);
                }
            }
            plan
        })
        .collect()
}

/// The wire form of a rule.
pub fn rule_spec(rule: &InvalidationRule) -> RuleSpec {
    RuleSpec {
        name: rule.name.clone(),
        pattern: rule.pattern.clone(),
        prefix: rule.prefix.clone(),
        tags: rule.tags.clone(),
        keys: rule.keys.clone(),
    }
}

/// What the policy's Secrets hold for reaching its Redis.
#[derive(Debug, Default, Clone)]
pub struct RedisSecrets {
    /// From `passwordSecretRef`.
    pub password: Option<String>,
    /// From `caSecretRef`: PEM, checked by [`check_ca_bundle`].
    pub ca_bundle: Option<String>,
}

/// Why a Secret's value is no CA bundle (the value itself is never part of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCaBundle {
    /// Not text.
    #[error("is not UTF-8 text")]
    NotText,
    /// A PEM block that does not parse.
    #[error("is not valid PEM ({0})")]
    NotPem(String),
    /// No `CERTIFICATE` block at all.
    #[error("holds no PEM certificate")]
    NoCertificate,
    /// A certificate that cannot be a trust anchor.
    #[error("holds a certificate that cannot be trusted ({0})")]
    NotAnAnchor(String),
}

/// The PEM text of a CA bundle, once it holds at least one certificate usable as a trust
/// anchor: a bad Secret is reported on the policy before any agent dials with it.
pub fn check_ca_bundle(bytes: &[u8]) -> Result<String, InvalidCaBundle> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let text = std::str::from_utf8(bytes).map_err(|_| InvalidCaBundle::NotText)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bytes) {
        let cert = cert.map_err(|e| InvalidCaBundle::NotPem(e.to_string()))?;
        roots.add(cert).map_err(|e| InvalidCaBundle::NotAnAnchor(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(InvalidCaBundle::NoCertificate);
    }
    Ok(text.to_owned())
}

/// How the agent reaches the policy's Redis.
pub fn redis_target(policy: &CachePolicy, secrets: RedisSecrets) -> RedisTarget {
    let r = &policy.spec.redis;
    let millis = |d: &biometrics_crds::duration::Duration| u64::try_from(d.as_std().as_millis()).unwrap_or(u64::MAX);
    RedisTarget {
        address: r.address.clone(),
        database: u32::try_from(r.database).unwrap_or(0),
        username: r.username.clone(),
        password: secrets.password.map(Password),
        tls: r.tls,
        ca_bundle: secrets.ca_bundle.map(CaBundle),
        tls_server_name: r.tls_server_name.clone(),
        cluster: r.cluster,
        dial_timeout_millis: millis(&r.dial_timeout),
        read_timeout_millis: millis(&r.read_timeout),
        write_timeout_millis: millis(&r.write_timeout),
        pool_size: u32::try_from(r.pool_size).unwrap_or(1),
    }
}

/// The password `reference` names, from `secret` (the Secret of that name in `namespace`, if
/// it exists); or why there is none, as a reason ([`reasons`]) and a message that names the
/// Secret and key, never a value.
pub fn secret_password(
    namespace: &str,
    reference: &SecretKeyRef,
    secret: Option<&Secret>,
) -> Result<String, (&'static str, String)> {
    let value = secret_bytes(namespace, &reference.name, &reference.key, "", secret)?;
    String::from_utf8(value).map_err(|_| {
        let message = format!("key {:?} of Secret {namespace}/{} is not UTF-8 text", reference.key, reference.name);
        (reasons::SECRET_KEY_INVALID, message)
    })
}

/// The value under `key` of `secret` (the Secret `namespace/name`, if it exists); or why there
/// is none, as a reason and a message naming the Secret and key (and `role`, what the value
/// is for, when given), never a value.
pub fn secret_bytes(
    namespace: &str,
    name: &str,
    key: &str,
    role: &str,
    secret: Option<&Secret>,
) -> Result<Vec<u8>, (&'static str, String)> {
    let Some(secret) = secret else {
        return Err((reasons::SECRET_NOT_FOUND, format!("Secret {namespace}/{name} not found{role}")));
    };
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.clone())
        .ok_or_else(|| (reasons::SECRET_KEY_NOT_FOUND, format!("Secret {namespace}/{name} has no key {key:?}{role}")))
}

/// Bytes in a Kubernetes quantity (`512Mi`, `1G`, `1048576`); fractions and exponents are
/// refused rather than rounded.
pub fn quantity_bytes(text: &str) -> Result<u64, InvalidQuantity> {
    const SUFFIXES: [(&str, u64); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    let (digits, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|d| (d, *factor)))
        .unwrap_or((text, 1));
    let bad = || InvalidQuantity { text: text.to_owned() };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits.parse::<u64>().ok().and_then(|n| n.checked_mul(factor)).ok_or_else(bad)
}

/// The wire form of the strategy.
pub fn strategy_spec(policy: &CachePolicy) -> Result<StrategySpec, InvalidQuantity> {
    let s = &policy.spec.strategy;
    Ok(StrategySpec {
        strategy_type: match s.strategy_type {
            StrategyType::Lru => "LRU",
            StrategyType::Lfu => "LFU",
            StrategyType::Ttl => "TTL",
            StrategyType::WriteBehind => "WriteBehind",
        }
        .into(),
        max_keys: s.max_keys.and_then(|m| u64::try_from(m).ok()),
        ttl_seconds: s.ttl.as_ref().map(|t| t.as_std().as_secs()),
        async_write: s.async_write,
        write_batch_size: s.write_batch_size.and_then(|b| u32::try_from(b).ok()),
        manage_server_eviction_policy: s.manage_server_eviction_policy,
        max_memory_bytes: s.max_memory.as_ref().map(|q| quantity_bytes(&q.0)).transpose()?,
    })
}

/// A digest of what enforcement acts on: the strategy, the key prefix and the Redis.
pub fn strategy_digest(policy: &CachePolicy) -> String {
    let r = &policy.spec.redis;
    let what = serde_json::json!([policy.spec.strategy, policy.spec.key_prefix, r.address, r.database, r.cluster]);
    format!("{:016x}", fnv(&what.to_string()))
}

/// The id of an enforcement job of the policy with `uid` started at `now`: unique per
/// policy and second, in the agent's id alphabet.
pub fn enforcement_id(uid: &str, now: Timestamp) -> String {
    let tag: String = uid.chars().filter(char::is_ascii_alphanumeric).take(8).collect::<String>().to_ascii_lowercase();
    format!("enforce-{tag}-{}", now.as_second())
}

/// Whether to enforce now: the strategy changed since the last enforcement, or it is older
/// than `interval` (drift is checked periodically).
pub fn enforce_due(
    last: Option<&EnforcementStatus>,
    digest: &str,
    now: Timestamp,
    interval: std::time::Duration,
) -> bool {
    let Some(last) = last else { return true };
    if last.applied_strategy.as_deref() != Some(digest) {
        return true;
    }
    let interval = jiff::SignedDuration::try_from(interval).unwrap_or_default();
    last.last_enforce_time.as_ref().is_none_or(|t| t.0.checked_add(interval).is_ok_and(|due| due <= now))
}

/// Each health metric's level against the thresholds; unmeasured metrics have none.
pub fn levels(health: &RedisHealth, thresholds: &CacheThresholds) -> CacheLevels {
    CacheLevels {
        memory_percent: health.memory_percent.map(|v| thresholds.memory_percent.level(v)),
        server_hit_ratio_percent: health.server_hit_ratio_percent.map(|v| thresholds.hit_ratio_percent.level(v)),
        evictions_per_second: health.evictions_per_second.map(|v| thresholds.evictions_per_second.level(v)),
    }
}

/// The worst of the levels.
pub fn worst(levels: &CacheLevels) -> ThresholdLevel {
    ThresholdLevel::worst(
        [levels.memory_percent, levels.server_hit_ratio_percent, levels.evictions_per_second].into_iter().flatten(),
    )
}

/// The status entry of a run just started.
pub fn started(
    plan: &RulePlan,
    run: &DueRun,
    executor: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> InvalidationStatus {
    InvalidationStatus {
        name: plan.name.clone(),
        last_run_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        trigger: Some(run.trigger),
        keys_deleted: Some(0),
        duration_millis: None,
        result: Some(InvalidationResult::Running),
        message: None,
        applied_generation: generation,
        rule_digest: Some(plan.digest.clone()),
        run_id: Some(run.id.clone()),
        executor: Some(executor.to_owned()),
        carried_over: None,
        failures: None,
        last_schedule_time: plan.schedule_time.map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
        rollout_revision: plan.rollout_revision.clone(),
    }
}

/// Folds an agent's answer about a run into its status entry.
pub fn progress(entry: &mut InvalidationStatus, answer: &biometrics_agent_api::InvalidationStatus) {
    use biometrics_agent_api::CaptureState;
    let carried = entry.carried_over.unwrap_or(0);
    if answer.state == CaptureState::Failed && entry.result == Some(InvalidationResult::Running) {
        entry.failures = Some(entry.failures.unwrap_or(0).saturating_add(1));
    }
    let deleted = i64::try_from(answer.keys_deleted).unwrap_or(i64::MAX);
    entry.keys_deleted = Some(if answer.already_done { deleted.max(carried) } else { carried.saturating_add(deleted) });
    entry.result = Some(match answer.state {
        CaptureState::Running => InvalidationResult::Running,
        CaptureState::Succeeded => InvalidationResult::Succeeded,
        CaptureState::Failed => InvalidationResult::Failed,
    });
    if answer.state != CaptureState::Running {
        entry.duration_millis = Some(i64::try_from(answer.duration_millis).unwrap_or(i64::MAX));
        entry.message = answer.error.clone();
    }
}

#[cfg(test)]
mod tests {
    use biometrics_agent_api::CaptureState;
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::workload::{DEPLOYMENT_REVISION_ANNOTATION, deployment_rollout, statefulset_rollout};

    fn pod(name: &str) -> PodInfo {
        PodInfo {
            name: name.into(),
            labels: Default::default(),
            ip: Some("10.0.0.1".into()),
            ready: true,
            agent_port: Some(9477),
            containers: Vec::new(),
        }
    }

    fn policy(
        rules: serde_json::Value,
        status: serde_json::Value,
        annotations: serde_json::Value,
        generation: i64,
    ) -> CachePolicy {
        serde_json::from_value(json!({
            "apiVersion": "biometrics.io/v1alpha1", "kind": "CachePolicy",
            "metadata": {"name": "users", "namespace": "shop", "uid": "0f3c9a2b-1111-2222-3333-444455556666", "generation": generation, "annotations": annotations},
            "spec": {"selector": {}, "redis": {"address": "redis:6379"}, "keyPrefix": "users:", "strategy": {"type": "LRU"}, "invalidations": rules},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_pass_chooses_the_executor_plans_the_rules_and_says_where_the_work_goes() {
        let now = t("2026-01-01T00:00:00Z");
        let p = policy(json!([{"name": "all", "pattern": "*"}]), json!({}), json!({}), 2);
        let candidates = vec![pod("api-0"), pod("api-1")];
        let observed =
            |candidates: Vec<PodInfo>, secrets| Observed { policy: &p, candidates, rollouts: Vec::new(), secrets, now };
        let with_password = RedisSecrets { password: Some("pw".into()), ca_bundle: None };
        let plan = plan_policy(&observed(candidates.clone(), Ok(with_password)));
        let chosen = plan.status.executor.clone().unwrap();
        assert_eq!(plan.executor_changed, Some(format!("{chosen} executes this policy's Redis work")));
        assert_eq!(plan.status.observed_generation, Some(2));
        assert!(plan.rules[0].run.is_some(), "a new rule runs");
        let (agent, target) = plan.work.unwrap();
        assert_eq!((agent.pod.as_str(), target.password.map(|p| p.0)), (chosen.as_str(), Some("pw".to_owned())));

        let secret_missing =
            Blocked { reason: reasons::SECRET_NOT_FOUND, message: "Secret shop/redis not found".into() };
        let plan = plan_policy(&observed(candidates, Err(secret_missing.clone())));
        assert_eq!(plan.work.unwrap_err(), secret_missing);
        let plan = plan_policy(&observed(Vec::new(), Ok(RedisSecrets::default())));
        assert_eq!(plan.work.unwrap_err().reason, reasons::NO_EXECUTOR);
        assert_eq!((plan.status.executor, plan.executor_changed), (None, None));

        let quiet = biometrics_crds::v1alpha1::CachePolicyStatus::default();
        let intervals = (std::time::Duration::from_secs(1), std::time::Duration::from_secs(30));
        assert_eq!(requeue(&p, &quiet, &[], intervals, None, now), std::time::Duration::from_secs(30));
        let trust = Some(std::time::Duration::from_secs(2));
        assert_eq!(requeue(&p, &quiet, &[], intervals, trust, now), std::time::Duration::from_secs(2));
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// The status a reconcile would leave after starting and finishing every due run.
    fn settle(p: &CachePolicy, now: Timestamp, rollout: impl Fn(&WorkloadRef) -> Option<Rollout>) -> serde_json::Value {
        let plans = plan_rules(p, now, rollout);
        let entries: Vec<InvalidationStatus> = plans
            .iter()
            .map(|plan| {
                let previous = p.status.as_ref().and_then(|s| s.invalidations.iter().find(|e| e.name == plan.name));
                match (&plan.run, previous) {
                    (Some(run), _) => {
                        let mut e = started(plan, run, "api-0", p.metadata.generation, now);
                        e.result = Some(InvalidationResult::Succeeded);
                        e
                    }
                    (None, Some(prev)) => {
                        let mut e = prev.clone();
                        e.last_schedule_time = plan.schedule_time.map(Time);
                        e.rollout_revision = plan.rollout_revision.clone();
                        e
                    }
                    (None, None) => InvalidationStatus {
                        last_schedule_time: plan.schedule_time.map(Time),
                        rollout_revision: plan.rollout_revision.clone(),
                        ..InvalidationStatus::new(&plan.name)
                    },
                }
            })
            .collect();
        let handled = p.metadata.annotations.as_ref().and_then(|a| a.get(INVALIDATE_NOW_ANNOTATION)).cloned();
        json!({"invalidations": entries, "handledInvalidateNow": handled})
    }

    fn runs(plans: &[RulePlan]) -> Vec<(String, InvalidationTrigger)> {
        plans.iter().filter_map(|p| p.run.as_ref().map(|r| (p.name.clone(), r.trigger))).collect()
    }

    #[test]
    fn the_executor_is_kept_while_ready_and_replaced_stably() {
        let pods = [pod("api-0"), pod("api-1"), pod("api-2")];
        let first = executor("uid-a", None, &pods).unwrap().name.clone();
        assert_eq!(executor("uid-a", None, &pods).unwrap().name, first, "deterministic");
        assert_eq!(executor("uid-a", Some("api-1"), &pods).unwrap().name, "api-1", "the current one stays");
        let without: Vec<PodInfo> = pods.iter().filter(|p| p.name != first).cloned().collect();
        let next = executor("uid-a", Some(&first), &without).unwrap().name.clone();
        assert_ne!(next, first);
        assert_eq!(executor("uid-a", Some(&first), &without).unwrap().name, next, "the successor is stable too");
        assert!(executor("uid-a", None, &[]).is_none());
        let spread: std::collections::HashSet<String> =
            (0..40).map(|i| executor(&format!("uid-{i}"), None, &pods).unwrap().name.clone()).collect();
        assert_eq!(spread.len(), 3, "policies spread over the pods");
    }

    #[test]
    fn new_and_changed_rules_run_and_unchanged_ones_do_not() {
        let rules = json!([{"name": "users", "pattern": "user:*"}, {"name": "sessions", "prefix": "session:"}]);
        let now = t("2026-01-01T00:00:00Z");
        let p = policy(rules.clone(), json!({}), json!({}), 1);
        let plans = plan_rules(&p, now, |_| None);
        assert_eq!(
            runs(&plans),
            [("users".into(), InvalidationTrigger::Change), ("sessions".into(), InvalidationTrigger::Change)]
        );
        let id = plans[0].run.as_ref().unwrap().id.clone();
        assert_eq!(id, "0f3c9a2b-1111-2222-3333-444455556666-users-g1");
        assert!(id.len() <= 128 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));

        let settled = settle(&p, now, |_| None);
        assert!(runs(&plan_rules(&policy(rules, settled.clone(), json!({}), 1), now, |_| None)).is_empty());
        // Generation 2 edits only `sessions`.
        let edited = json!([{"name": "users", "pattern": "user:*"}, {"name": "sessions", "prefix": "sess:"}]);
        let plans = plan_rules(&policy(edited, settled, json!({}), 2), now, |_| None);
        assert_eq!(runs(&plans), [("sessions".into(), InvalidationTrigger::Change)]);
        assert!(plans[1].run.as_ref().unwrap().id.ends_with("-sessions-g2"));
    }

    #[test]
    fn a_new_invalidate_now_value_runs_every_rule_once() {
        let rules = json!([{"name": "users", "pattern": "user:*"}, {"name": "sessions", "prefix": "session:"}]);
        let now = t("2026-01-01T00:00:00Z");
        let settled = settle(&policy(rules.clone(), json!({}), json!({}), 1), now, |_| None);
        let asked = policy(rules.clone(), settled, json!({"biometrics.io/invalidate-now": "1"}), 1);
        let plans = plan_rules(&asked, now, |_| None);
        assert_eq!(
            runs(&plans),
            [("users".into(), InvalidationTrigger::Manual), ("sessions".into(), InvalidationTrigger::Manual)]
        );
        let again = settle(&asked, now, |_| None);
        let handled = policy(rules, again, json!({"biometrics.io/invalidate-now": "1"}), 1);
        assert!(runs(&plan_rules(&handled, now, |_| None)).is_empty(), "the same value runs nothing more");
    }

    /// Item: rollouts are detected by the workload's revision, so the same template
    /// serialised with an extra defaulted field (a client-library upgrade, server-side
    /// defaulting) fires nothing, and neither does a digest left by an older operator.
    #[test]
    fn a_rollout_is_the_workloads_revision_not_its_serialised_template() {
        let deployment = |revision: &str, template: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": "api", "generation": 2, "annotations": {DEPLOYMENT_REVISION_ANNOTATION: revision}},
                "spec": {"replicas": 1, "selector": {}, "template": template},
                "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}
            }))
            .unwrap()
        };
        let template = json!({"spec": {"containers": [{"name": "app", "image": "api:v1"}]}});
        let defaulted = json!({"spec": {"terminationGracePeriodSeconds": 30, "restartPolicy": "Always", "containers": [{"name": "app", "image": "api:v1", "terminationMessagePath": "/dev/termination-log"}]}});
        let before = deployment_rollout(&deployment("3", template));
        assert_eq!(before, Rollout { revision: Some("3".into()), complete: true });
        assert_eq!(deployment_rollout(&deployment("3", defaulted.clone())), before, "the same revision");
        assert_eq!(deployment_rollout(&deployment("4", defaulted)).revision.as_deref(), Some("4"));
        let mut unprocessed = deployment("1", json!({}));
        unprocessed.metadata.annotations = None;
        assert_eq!(deployment_rollout(&unprocessed).revision, None, "no revision before the controller's first");

        let statefulset: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "serviceName": "db", "template": {}},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "currentRevision": "db-5d8f7c9b4", "updateRevision": "db-6c4b8d7f5"}
        }))
        .unwrap();
        let rollout = statefulset_rollout(&statefulset);
        assert_eq!(rollout.revision.as_deref(), Some("db-6c4b8d7f5"));
        assert!(!rollout.complete, "pods still on the current revision");

        // Through the rule: a recorded revision and the same one again fire nothing; nor
        // does a workload with no revision yet, nor a digest recorded by an older operator.
        let rules =
            json!([{"name": "users", "pattern": "user:*", "onRolloutOf": {"kind": "Deployment", "name": "api"}}]);
        let now = t("2026-01-01T00:00:00Z");
        let p = policy(rules.clone(), json!({}), json!({}), 1);
        let settled = policy(rules.clone(), settle(&p, now, |_| Some(before.clone())), json!({}), 1);
        assert!(runs(&plan_rules(&settled, now, |_| Some(before.clone()))).is_empty());
        let plans = plan_rules(&settled, now, |_| Some(Rollout { revision: None, complete: true }));
        assert!(runs(&plans).is_empty());
        assert_eq!(plans[0].rollout_revision.as_deref(), Some("3"), "the baseline stays");
        let mut legacy = settled.clone();
        legacy.status.as_mut().unwrap().invalidations[0].rollout_revision = Some("9f86d081884c7d65".into());
        let plans = plan_rules(&legacy, now, |_| Some(before.clone()));
        assert!(runs(&plans).is_empty(), "an operator upgrade flushes nothing");
        assert_eq!(plans[0].rollout_revision.as_deref(), Some("3"), "re-based on the revision");
    }

    #[test]
    fn rollouts_run_once_after_completion() {
        let rules =
            json!([{"name": "users", "pattern": "user:*", "onRolloutOf": {"kind": "Deployment", "name": "api"}}]);
        let now = t("2026-01-01T00:00:00Z");
        let at = |revision: &str, complete: bool| Rollout { revision: Some(revision.into()), complete };
        // Created: runs on change and records the current revision as its baseline.
        let p = policy(rules.clone(), json!({}), json!({}), 1);
        let plans = plan_rules(&p, now, |_| Some(at("a", true)));
        assert_eq!(plans[0].rollout_revision.as_deref(), Some("a"));
        let settled = settle(&p, now, |_| Some(at("a", true)));
        let p = policy(rules.clone(), settled, json!({}), 1);
        assert!(runs(&plan_rules(&p, now, |_| Some(at("a", true)))).is_empty());
        // The template changes: nothing while the rollout is in progress.
        let plans = plan_rules(&p, now, |_| Some(at("b", false)));
        assert!(runs(&plans).is_empty());
        let api = WorkloadRef { kind: biometrics_crds::v1alpha1::WorkloadKind::Deployment, name: "api".into() };
        assert_eq!(plans[0].waiting, Some(Waiting::RolloutInProgress(api.clone())), "{plans:?}");
        assert_eq!(
            plans[0].waiting.as_ref().unwrap().to_string(),
            "waiting for the rollout of Deployment api to complete"
        );
        assert_eq!(plans[0].rollout_revision.as_deref(), Some("a"), "the baseline stays until it runs");
        // Complete: once.
        let plans = plan_rules(&p, now, |_| Some(at("b", true)));
        assert_eq!(runs(&plans), [("users".into(), InvalidationTrigger::Rollout)]);
        assert!(plans[0].run.as_ref().unwrap().id.ends_with(&format!("-users-r{:012x}", fnv("b") & 0xffff_ffff_ffff)));
        let done = policy(rules.clone(), settle(&p, now, |_| Some(at("b", true))), json!({}), 1);
        assert!(runs(&plan_rules(&done, now, |_| Some(at("b", true)))).is_empty());
        // A missing workload holds the trigger with a reason.
        let plans = plan_rules(&done, now, |_| None);
        assert_eq!(plans[0].waiting, Some(Waiting::WorkloadNotFound(api)));
        assert_eq!(plans[0].waiting.as_ref().unwrap().to_string(), "Deployment api not found");
        assert_eq!(plans[0].rollout_revision.as_deref(), Some("b"));
    }

    #[test]
    fn schedules_fire_once_for_the_latest_missed_time_and_wait_for_a_running_run() {
        let rules = json!([{"name": "users", "pattern": "user:*", "schedule": "@every 1m"}]);
        let created = t("2026-01-01T00:00:30Z");
        let p = policy(rules.clone(), json!({}), json!({}), 1);
        let settled = settle(&p, created, |_| None);
        assert_eq!(settled["invalidations"][0]["lastScheduleTime"], "2026-01-01T00:00:30Z");
        let p = policy(rules.clone(), settled, json!({}), 1);
        assert!(runs(&plan_rules(&p, t("2026-01-01T00:00:59Z"), |_| None)).is_empty());
        // Ten minutes of downtime: one run, for the latest fire time.
        let plans = plan_rules(&p, t("2026-01-01T00:10:10Z"), |_| None);
        assert_eq!(runs(&plans), [("users".into(), InvalidationTrigger::Schedule)]);
        assert_eq!(plans[0].schedule_time, Some(t("2026-01-01T00:10:00Z")));
        // While it runs, nothing more starts and nothing is recorded as acted on.
        let mut running = p.clone();
        running.status.as_mut().unwrap().invalidations[0].result = Some(InvalidationResult::Running);
        let plans = plan_rules(&running, t("2026-01-01T00:12:10Z"), |_| None);
        assert!(runs(&plans).is_empty());
        assert_eq!(plans[0].schedule_time, Some(t("2026-01-01T00:00:30Z")));
    }

    #[test]
    fn a_failed_run_is_retried_under_its_id_with_backoff() {
        let rules = json!([{"name": "users", "pattern": "user:*"}]);
        let now = t("2026-01-01T00:00:00Z");
        let p = policy(rules.clone(), json!({}), json!({}), 1);
        let plans = plan_rules(&p, now, |_| None);
        let run = plans[0].run.clone().unwrap();
        let mut entry = started(&plans[0], &run, "api-0", Some(1), now);
        let failed = |deleted| biometrics_agent_api::InvalidationStatus {
            id: run.id.clone(),
            state: CaptureState::Failed,
            keys_scanned: deleted,
            keys_deleted: deleted,
            duration_millis: 5,
            error: Some("authentication failed".into()),
            already_done: false,
        };
        progress(&mut entry, &failed(0));
        assert_eq!((entry.result, entry.failures), (Some(InvalidationResult::Failed), Some(1)));
        let status = |e: &InvalidationStatus| json!({"invalidations": [e]});
        let p = policy(rules.clone(), status(&entry), json!({}), 1);
        let plans = plan_rules(&p, t("2026-01-01T00:00:05Z"), |_| None);
        assert!(plans[0].run.is_none());
        assert_eq!(plans[0].retry_at, Some(t("2026-01-01T00:00:10Z")));
        let plans = plan_rules(&p, t("2026-01-01T00:00:10Z"), |_| None);
        assert_eq!(plans[0].run.as_ref().unwrap().id, run.id, "the same job again");
        // A second failure doubles the wait; a new trigger does not wait at all.
        entry.result = Some(InvalidationResult::Running);
        progress(&mut entry, &failed(0));
        assert_eq!(entry.failures, Some(2));
        assert_eq!(retry_delay(2).as_secs(), 20);
        assert_eq!(retry_delay(40).as_secs(), 300);
        let asked = policy(rules, status(&entry), json!({"biometrics.io/invalidate-now": "x"}), 1);
        let plans = plan_rules(&asked, t("2026-01-01T00:00:11Z"), |_| None);
        assert_eq!(plans[0].run.as_ref().unwrap().trigger, InvalidationTrigger::Manual);
    }

    #[test]
    fn quantities_and_strategies_reach_the_wire() {
        assert_eq!(quantity_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(quantity_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(quantity_bytes("1048576"), Ok(1_048_576));
        assert!(quantity_bytes("1.5Gi").unwrap_err().to_string().contains("whole number"));
        assert!(quantity_bytes("20000E").is_err(), "overflow is refused");
        let mut p = policy(json!([]), json!({}), json!({}), 1);
        p.spec.strategy = serde_json::from_value(
            json!({"type": "LFU", "maxKeys": 100, "manageServerEvictionPolicy": true, "maxMemory": "64Mi"}),
        )
        .unwrap();
        let wire = strategy_spec(&p).unwrap();
        assert_eq!(
            (wire.strategy_type.as_str(), wire.max_keys, wire.max_memory_bytes),
            ("LFU", Some(100), Some(64 << 20))
        );
        let target = redis_target(&p, RedisSecrets { password: Some("pw".into()), ca_bundle: Some(PEM.into()) });
        assert_eq!(format!("{:?}", target.password), "Some([redacted])");
        assert!(!format!("{target:?}").contains("MIIBgj"), "the CA bundle stays out of debug output");
    }

    /// A self-signed P-256 certificate (a CA's, as far as a trust store is concerned).
    const PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBgjCCASmgAwIBAgIUPxEtzIwFlXq9lh/pc5Bghu9enigwCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMdW5pdC10ZXN0LWNhMB4XDTI2MTEyOTE3NTEyM1oXDTM2MTEy
NjE3NTEyM1owFzEVMBMGA1UEAwwMdW5pdC10ZXN0LWNhMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAE4K9iV+ur0cf9X65ydZ1vjvShJ6DvXMfwiChhyW8V3BO7sLcX
1y1Y5d7oYAtReXfIf+FcxlnmPk3Ki2z1bKOYoaNTMFEwHQYDVR0OBBYEFEjhGely
pA2ewp5R8cai31I/UYs7MB8GA1UdIwQYMBaAFEjhGelypA2ewp5R8cai31I/UYs7
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgESs8mUrUWLtyGciV
s5IXn+cIosuUgx2RpBuIMfKiIxMCIHfeieJOEBjToEQWhfniYS9bXwS7vOwjT10A
V+dvXSeI
-----END CERTIFICATE-----
";

    #[test]
    fn a_ca_bundle_is_pem_with_a_certificate() {
        assert!(check_ca_bundle(PEM.as_bytes()).is_ok());
        assert_eq!(check_ca_bundle(b"\xff\xfe"), Err(InvalidCaBundle::NotText));
        assert_eq!(check_ca_bundle(b"just text"), Err(InvalidCaBundle::NoCertificate));
        let key_only = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(check_ca_bundle(key_only.as_bytes()), Err(InvalidCaBundle::NoCertificate));
        let not_der = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        assert!(matches!(check_ca_bundle(not_der.as_bytes()), Err(InvalidCaBundle::NotAnAnchor(_))));
    }

    #[test]
    fn enforcement_runs_on_change_and_periodically() {
        let p = policy(json!([]), json!({}), json!({}), 1);
        let digest = strategy_digest(&p);
        let now = t("2026-01-01T00:10:00Z");
        let interval = std::time::Duration::from_secs(300);
        assert!(enforce_due(None, &digest, now, interval));
        let last = EnforcementStatus {
            last_enforce_time: Some(Time(t("2026-01-01T00:06:00Z"))),
            applied_strategy: Some(digest.clone()),
            ..EnforcementStatus::default()
        };
        assert!(!enforce_due(Some(&last), &digest, now, interval));
        assert!(enforce_due(Some(&last), &digest, t("2026-01-01T00:11:00Z"), interval), "drift check");
        let mut changed = p.clone();
        changed.spec.strategy.max_keys = Some(10);
        assert!(enforce_due(Some(&last), &strategy_digest(&changed), now, interval));
    }

    #[test]
    fn agent_answers_fold_into_the_rule_status_with_carried_counts() {
        let plan = RulePlan { name: "users".into(), digest: "d".into(), ..RulePlan::default() };
        let run = DueRun { trigger: InvalidationTrigger::Change, id: "x-users-g1".into() };
        let mut entry = started(&plan, &run, "api-0", Some(1), t("2026-01-01T00:00:00Z"));
        let answer = |state, deleted, already_done| biometrics_agent_api::InvalidationStatus {
            id: "x-users-g1".into(),
            state,
            keys_scanned: deleted,
            keys_deleted: deleted,
            duration_millis: 1200,
            error: None,
            already_done,
        };
        progress(&mut entry, &answer(CaptureState::Running, 40, false));
        assert_eq!((entry.keys_deleted, entry.result), (Some(40), Some(InvalidationResult::Running)));
        // The executor is lost; its 40 are carried over and the new one deletes the rest.
        entry.carried_over = entry.keys_deleted;
        progress(&mut entry, &answer(CaptureState::Succeeded, 60, false));
        assert_eq!(
            (entry.keys_deleted, entry.result, entry.duration_millis),
            (Some(100), Some(InvalidationResult::Succeeded), Some(1200))
        );
        // A retry that finds the work done reports the first execution's count.
        let mut again = started(&plan, &run, "api-1", Some(1), t("2026-01-01T00:00:00Z"));
        progress(&mut again, &answer(CaptureState::Succeeded, 100, true));
        assert_eq!(again.keys_deleted, Some(100));
    }

    #[test]
    fn levels_follow_the_thresholds() {
        let health = RedisHealth {
            reachable: true,
            memory_percent: Some(75.0),
            server_hit_ratio_percent: Some(40.0),
            evictions_per_second: Some(1.0),
            ..RedisHealth::default()
        };
        let l = levels(&health, &CacheThresholds::default());
        assert_eq!(
            (l.memory_percent, l.server_hit_ratio_percent, l.evictions_per_second),
            (Some(ThresholdLevel::Warning), Some(ThresholdLevel::Critical), Some(ThresholdLevel::OK))
        );
        assert_eq!(worst(&l), ThresholdLevel::Critical);
        assert_eq!(worst(&levels(&RedisHealth::default(), &CacheThresholds::default())), ThresholdLevel::OK);
    }

    #[test]
    fn rollout_completion_reads_like_kubectl_rollout_status() {
        let deployment = |generation: i64, status: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": "api", "generation": generation},
                "spec": {"replicas": 2, "selector": {}, "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "app", "image": "v2"}]}}},
                "status": status
            }))
            .unwrap()
        };
        let done = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        assert!(deployment_rollout(&deployment(2, done.clone())).complete);
        assert!(!deployment_rollout(&deployment(3, done)).complete, "the controller has not seen the new spec");
        let surging = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2});
        assert!(!deployment_rollout(&deployment(2, surging)).complete, "an old replica is still there");
        let unavailable = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1});
        assert!(!deployment_rollout(&deployment(2, unavailable)).complete);
        // The controller gives a new template the next revision; scaling keeps it.
        let mut d = deployment(2, json!({}));
        d.metadata.annotations = Some([(DEPLOYMENT_REVISION_ANNOTATION.to_owned(), "1".to_owned())].into());
        let a = deployment_rollout(&d);
        d.spec.as_mut().unwrap().replicas = Some(5);
        assert_eq!(deployment_rollout(&d).revision, a.revision, "scaling is not a rollout");
        d.metadata.annotations = Some([(DEPLOYMENT_REVISION_ANNOTATION.to_owned(), "2".to_owned())].into());
        assert_ne!(deployment_rollout(&d).revision, a.revision);
    }
}

/// Why a policy's Redis work cannot be sent: no executor, or no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The reason ([`reasons`]).
    pub reason: &'static str,
    /// The message (names a Secret and key, never a value).
    pub message: String,
}

/// What a CachePolicy reconcile observed.
#[derive(Debug)]
pub struct Observed<'a> {
    /// The policy, carrying the freshest status this process knows.
    pub policy: &'a CachePolicy,
    /// The selected pods that can execute (Ready, with an agent).
    pub candidates: Vec<PodInfo>,
    /// The workloads the rules' `onRolloutOf` name, and where each one's rollout stands.
    pub rollouts: Vec<(WorkloadRef, Option<Rollout>)>,
    /// The Redis password and CA bundle, or why they cannot be had.
    pub secrets: Result<RedisSecrets, Blocked>,
    /// Now.
    pub now: Timestamp,
}

/// What a CachePolicy reconcile does.
#[derive(Debug, Clone)]
pub struct PolicyPlan {
    /// The status, with the executor chosen.
    pub status: biometrics_crds::v1alpha1::CachePolicyStatus,
    /// The note of an `ExecutorChanged` Event, when it changed.
    pub executor_changed: Option<String>,
    /// Each rule's plan.
    pub rules: Vec<RulePlan>,
    /// Where the Redis work goes, or why it cannot be sent.
    pub work: Result<(crate::agent_client::AgentAddr, RedisTarget), Blocked>,
}

/// Decides a pass: the executor (stable, failing over when it goes), each rule's plan, and
/// where the Redis work goes. `act` then drives the jobs the plan names.
pub fn plan_policy(o: &Observed<'_>) -> PolicyPlan {
    let policy = o.policy;
    let ns = policy.metadata.namespace.clone().unwrap_or_default();
    let uid = policy.metadata.uid.clone().unwrap_or_default();
    let mut status = policy.status.clone().unwrap_or_default();
    status.observed_generation = policy.metadata.generation;
    let executor = executor(&uid, status.executor.as_deref(), &o.candidates);
    let mut executor_changed = None;
    if let Some(new) = executor
        && status.executor.as_deref() != Some(new.name.as_str())
    {
        executor_changed = Some(match &status.executor {
            Some(old) => format!("executor {old} is gone or not Ready; {} takes over", new.name),
            None => format!("{} executes this policy's Redis work", new.name),
        });
        status.executor = Some(new.name.clone());
    }
    let rules = plan_rules(policy, o.now, |w| o.rollouts.iter().find(|(r, _)| r == w).and_then(|(_, x)| x.clone()));
    let work = match (executor, &o.secrets) {
        (None, _) => Err(Blocked { reason: reasons::NO_EXECUTOR, message: crate::pods::NO_ELIGIBLE_PODS.into() }),
        (Some(_), Err(b)) => Err(b.clone()),
        (Some(pod), Ok(secrets)) => match crate::pods::agent_of(&ns, pod) {
            Some(agent) => Ok((agent, redis_target(policy, secrets.clone()))),
            None => Err(Blocked { reason: reasons::NO_EXECUTOR, message: format!("pod {} has no IP", pod.name) }),
        },
    };
    PolicyPlan { status, executor_changed, rules, work }
}

/// How long until the next pass: soon while a job runs; otherwise at the next schedule
/// fire, failed-rule retry or trust retry, at most `interval`.
pub fn requeue(
    policy: &CachePolicy,
    status: &biometrics_crds::v1alpha1::CachePolicyStatus,
    rules: &[RulePlan],
    intervals: (std::time::Duration, std::time::Duration),
    trust_retry: Option<std::time::Duration>,
    now: Timestamp,
) -> std::time::Duration {
    let (poll, interval) = intervals;
    let running = status.invalidations.iter().any(|e| e.result == Some(InvalidationResult::Running))
        || status.enforcement.as_ref().is_some_and(|e| e.result == Some(InvalidationResult::Running));
    if running {
        return poll;
    }
    let next_fire = policy
        .spec
        .invalidations
        .iter()
        .filter_map(|r| r.schedule.as_ref()?.next_after(now))
        .min()
        .map(|t| now.duration_until(t).unsigned_abs());
    let next_retry = rules.iter().filter_map(|p| p.retry_at).min().map(|t| now.duration_until(t).unsigned_abs());
    let wait = [next_fire, next_retry, trust_retry].into_iter().flatten().fold(interval, std::time::Duration::min);
    wait.max(std::time::Duration::from_millis(200))
}
