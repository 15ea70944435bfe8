//! Reconciling a CachePolicy, in the capture reconcile's shape: observe (pods, the
//! referenced Secret, workloads) → decide (one pure function, [`decide::plan_policy`]: the
//! executor, each rule's plan, where the Redis work goes) → act (agent jobs, enforcement,
//! statistics, Events) → write status (server-side apply, only when it changed).
//! Invalidations are agent jobs polled on requeues; no reconcile waits for one.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use biometrics_agent_api::{
    CaptureState, EnforceRequest, ErrorCode, InvalidationRequest, InvalidationStatus as Job, PolicyRef, RedisTarget,
    StatsRequest, StatsResponse, routes,
};
use biometrics_crds::{
    selector::PodSelector,
    threshold::ThresholdLevel,
    v1alpha1::{
        CachePolicy, CachePolicyStatus, EnforcementStatus, InvalidationResult, InvalidationStatus, RedisHealth,
        WorkloadKind, WorkloadRef,
    },
};
use jiff::Timestamp;
use k8s_openapi::{
    api::apps::v1::{Deployment, StatefulSet},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        finalizer::Event as Finalizer,
        reflector::{self, ObjectRef},
    },
};

use super::decide::{self, Blocked, RulePlan, Waiting};
use crate::{
    agent_client::{AgentAddr, AgentApi, AgentClient, AgentError},
    controller::{self, Failures},
    error::{Error, Result},
    guard::{self, Guarded, InvalidSpecStatus},
    metrics::Metrics,
    pods::{self, PodInfo, WatchedPod, agent_of},
    reasons::{self, condition},
    signing::SigningKey,
    status::{Events, StatusWriter, now_time, set_condition},
    workload,
};

/// The finalizer that lets deletion stop running invalidations.
pub const FINALIZER: &str = "biometrics.io/cachepolicy";
const CONTROLLER: &str = "cachepolicy";
/// The action of this controller's Events (a rule's own series aside).
const ACTION: &str = "Cache";
/// How a rule's message starts when a trigger is held back.
const WAITING: &str = "held back: ";
/// How soon an executor still without the operator's key is asked again.
const TRUST_RETRY: Duration = Duration::from_secs(2);

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Agent port when a pod has no annotation.
    pub default_agent_port: u16,
    /// How often cache statistics are sampled into status.
    pub stats_interval: Duration,
    /// How often the strategy is enforced again (drift).
    pub enforce_interval: Duration,
    /// How often running invalidations are polled.
    pub poll_interval: Duration,
}

/// What reconciles share; the agents' client is behind [`AgentApi`], so reconcile steps can
/// be tested against a fake.
pub struct Context<A = AgentClient> {
    /// The API client.
    pub client: Client,
    /// Pods, from the shared watch.
    pub pods: reflector::Store<WatchedPod>,
    /// Deployments, for `onRolloutOf`.
    pub deployments: reflector::Store<Deployment>,
    /// StatefulSets, for `onRolloutOf`.
    pub statefulsets: reflector::Store<StatefulSet>,
    /// Resolves once the three stores are filled.
    pub caches_ready: pods::CachesReady,
    /// The agents' client.
    pub agents: A,
    /// The signing key (published per namespace).
    pub key: SigningKey,
    /// Events.
    pub events: Events,
    /// Metrics.
    pub metrics: Metrics,
    /// The failure last shown on each policy.
    pub failures: Failures,
    /// Settings.
    pub settings: Settings,
    /// Status writes, remembered until the watch delivers them.
    status: StatusWriter<CachePolicyStatus>,
    /// When each policy's statistics were last sampled (by uid).
    sampled: Mutex<HashMap<String, Instant>>,
    /// Per policy (by uid): the enforcement whose policy the selected agents serve their
    /// apps, and the pods that have it.
    served: Mutex<HashMap<String, Served>>,
    /// The `passwordSecretRef` Secrets, read at most every 30 s.
    secrets: crate::secrets::SecretCache,
}

/// The enforcement (by time) whose policy some agents serve, and those agents' pods.
type Served = (Option<Time>, BTreeSet<String>);

impl<A: AgentApi> Context<A> {
    /// A context.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        pods: reflector::Store<WatchedPod>,
        deployments: reflector::Store<Deployment>,
        statefulsets: reflector::Store<StatefulSet>,
        agents: A,
        key: SigningKey,
        metrics: Metrics,
        settings: Settings,
        instance: &str,
    ) -> Self {
        let events = Events::new(client.clone(), instance);
        let caches_ready = pods::caches_ready(vec![
            pods::store_ready(&pods),
            pods::store_ready(&deployments),
            pods::store_ready(&statefulsets),
        ]);
        Self {
            client,
            caches_ready,
            pods,
            deployments,
            statefulsets,
            agents,
            key,
            events,
            metrics,
            failures: Failures::default(),
            settings,
            status: StatusWriter::default(),
            sampled: Mutex::default(),
            served: Mutex::default(),
            secrets: crate::secrets::SecretCache::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn event<A: AgentApi>(ctx: &Context<A>, cp: &CachePolicy, type_: EventType, reason: &str, note: String) {
    ctx.events.publish(&cp.object_ref(&()), type_, reason, note, ACTION).await;
}

/// An Event about one rule: its own series, so one rule's runs do not hide another's.
async fn rule_event<A: AgentApi>(
    ctx: &Context<A>,
    cp: &CachePolicy,
    type_: EventType,
    reason: &str,
    rule: &str,
    note: String,
) {
    ctx.events.publish(&cp.object_ref(&()), type_, reason, note, &format!("Invalidate-{rule}")).await;
}

/// The reconcile entry: the finalizer around apply and cleanup. A policy whose spec cannot
/// be read is reported on its own status; its cleanup needs no spec.
pub async fn reconcile<A: AgentApi>(object: Arc<Guarded<CachePolicy>>, ctx: Arc<Context<A>>) -> Result<Action> {
    // Decisions read the watch caches: they must be filled first.
    ctx.caches_ready.clone().await;
    controller::finalized(&ctx.client, &ctx.metrics, &ctx.failures, CONTROLLER, FINALIZER, object, |event| async {
        match event {
            Finalizer::Apply(object) => match object.valid() {
                Ok(cp) => apply(cp, &ctx).await,
                Err(invalid) => {
                    guard::report_invalid(&ctx.client, &ctx.events, &ctx.status, &*object, invalid, ACTION).await
                }
            },
            Finalizer::Cleanup(object) => cleanup(&object, &ctx).await,
        }
    })
    .await
}

/// Shows the failure on the policy (a Warning Event) and backs off; a spec that cannot be
/// acted on waits for a change.
pub fn error_policy<A: AgentApi>(object: Arc<Guarded<CachePolicy>>, error: &Error, ctx: Arc<Context<A>>) -> Action {
    controller::backoff(&ctx.metrics, &ctx.failures, &ctx.events, CONTROLLER, &*object, error)
}

/// A policy whose spec cannot be read is not in effect: `Ready` and `Degraded` give the
/// parser's message; what was last observed of Redis and the rules stays.
impl InvalidSpecStatus for CachePolicyStatus {
    fn invalid_spec(&mut self, message: &str, generation: Option<i64>) {
        self.observed_generation = generation;
        set_condition(&mut self.conditions, condition::READY, false, reasons::INVALID_SPEC, message, generation);
        set_condition(&mut self.conditions, condition::DEGRADED, true, reasons::INVALID_SPEC, message, generation);
    }
}

/// The Secret `namespace/name` as read within the last 30 s (`None` when it does not exist);
/// an error names the Secret (and `role`, what it is for, when given), never a value.
async fn read_secret<A: AgentApi>(
    ctx: &Context<A>,
    ns: &str,
    name: &str,
    role: &str,
) -> std::result::Result<Option<Arc<k8s_openapi::api::core::v1::Secret>>, Blocked> {
    ctx.secrets.get(&ctx.client, ns, name).await.map_err(|e| Blocked {
        reason: reasons::SECRET_UNREADABLE,
        message: format!("cannot read Secret {ns}/{name}{role}: {e}"),
    })
}

/// The password from `passwordSecretRef` and the CA bundle from `caSecretRef`, as read
/// within the last 30 s (a rotated value is used from then on; at once when Redis refuses
/// the password or the certificate).
async fn redis_secrets<A: AgentApi>(
    ctx: &Context<A>,
    cp: &CachePolicy,
) -> std::result::Result<decide::RedisSecrets, Blocked> {
    let ns = cp.namespace().unwrap_or_default();
    let blocked = |(reason, message)| Blocked { reason, message };
    let mut secrets = decide::RedisSecrets::default();
    if let Some(reference) = &cp.spec.redis.password_secret_ref {
        let secret = read_secret(ctx, &ns, &reference.name, "").await?;
        secrets.password = Some(decide::secret_password(&ns, reference, secret.as_deref()).map_err(blocked)?);
    }
    if let Some(reference) = &cp.spec.redis.ca_secret_ref {
        let role = " (redis.caSecretRef)";
        let secret = read_secret(ctx, &ns, &reference.name, role).await?;
        let value =
            decide::secret_bytes(&ns, &reference.name, &reference.key, role, secret.as_deref()).map_err(blocked)?;
        let bundle = decide::check_ca_bundle(&value).map_err(|e| Blocked {
            reason: reasons::SECRET_KEY_INVALID,
            message: format!("key {:?} of Secret {ns}/{}{role} {e}", reference.key, reference.name),
        })?;
        secrets.ca_bundle = Some(bundle);
    }
    Ok(secrets)
}

fn rollout_of<A: AgentApi>(ctx: &Context<A>, namespace: &str, workload: &WorkloadRef) -> Option<workload::Rollout> {
    match workload.kind {
        WorkloadKind::Deployment => ctx
            .deployments
            .get(&ObjectRef::new(&workload.name).within(namespace))
            .map(|d| workload::deployment_rollout(&d)),
        WorkloadKind::StatefulSet => ctx
            .statefulsets
            .get(&ObjectRef::new(&workload.name).within(namespace))
            .map(|s| workload::statefulset_rollout(&s)),
    }
}

/// One pass: observe → decide ([`decide::plan_policy`], pure) → act → write status.
async fn apply<A: AgentApi>(cp: &CachePolicy, ctx: &Context<A>) -> Result<Action> {
    let ns = cp.namespace().unwrap_or_default();
    let now = Timestamp::now();
    let before = cp.status.clone().unwrap_or_default();
    // Decisions read the freshest status this process knows.
    let mut current = cp.clone();
    current.status = Some(ctx.status.freshest(cp, before.clone()));
    ctx.key.ensure_published(ctx.client.clone(), &ns).await?;
    let mut status = current.status.clone().unwrap_or_default();
    status.observed_generation = cp.metadata.generation;
    let selector = match PodSelector::new(&cp.spec.selector) {
        Ok(s) => s,
        Err(e) => return invalid(ctx, cp, &before, status, reasons::INVALID_SELECTOR, e.to_string()).await,
    };
    let strategy = match decide::strategy_spec(cp) {
        Ok(s) => s,
        Err(e) => return invalid(ctx, cp, &before, status, reasons::INVALID_STRATEGY, e.to_string()).await,
    };
    let observed = observe(ctx, &current, &selector, now).await;
    let plan = decide::plan_policy(&observed);
    let (status, trust_pending) = act(ctx, cp, &before, &observed, plan.clone(), strategy).await;
    ctx.status.write(&ctx.client, cp, &before, status.clone()).await?;
    let intervals = (ctx.settings.poll_interval, ctx.settings.stats_interval.min(ctx.settings.enforce_interval));
    let trust = trust_pending.then_some(TRUST_RETRY);
    Ok(Action::requeue(decide::requeue(cp, &status, &plan.rules, intervals, trust, now)))
}

/// Reads what the decision needs: the candidate executors, the rules' workloads and the
/// Redis password.
async fn observe<'a, A: AgentApi>(
    ctx: &Context<A>,
    current: &'a CachePolicy,
    selector: &PodSelector,
    now: Timestamp,
) -> decide::Observed<'a> {
    let ns = current.namespace().unwrap_or_default();
    let selected = pods::pods_in(&ctx.pods, &ns, Some(selector), ctx.settings.default_agent_port);
    let candidates = pods::eligible(&selected, selector, None);
    let rollouts = current
        .spec
        .invalidations
        .iter()
        .filter_map(|r| r.on_rollout_of.clone())
        .map(|w| {
            let rollout = rollout_of(ctx, &ns, &w);
            (w, rollout)
        })
        .collect();
    let secrets = redis_secrets(ctx, current).await;
    decide::Observed { policy: current, candidates, rollouts, secrets, now }
}

/// Carries out `plan`: the executor's running jobs driven, due rules started, the strategy
/// enforced, the app policy served and the cache sampled; or, when the work cannot be
/// sent, why. Returns the status to write and whether an agent waits for its trust.
async fn act<A: AgentApi>(
    ctx: &Context<A>,
    cp: &CachePolicy,
    before: &CachePolicyStatus,
    observed: &decide::Observed<'_>,
    plan: decide::PolicyPlan,
    strategy: biometrics_agent_api::StrategySpec,
) -> (CachePolicyStatus, bool) {
    let decide::PolicyPlan { mut status, executor_changed, rules, work } = plan;
    if let Some(note) = executor_changed {
        event(ctx, cp, EventType::Normal, reasons::EXECUTOR_CHANGED, note).await;
    }
    let mut trust_pending = false;
    let blocked = match work {
        Ok((agent, target)) => {
            let work = Work::new(ctx, cp, &agent, &target);
            work.drive_running(&mut status).await;
            work.start_due(&rules, &mut status, observed.now).await;
            work.enforce(&mut status, strategy.clone(), observed.now).await;
            work.serve_policy(&observed.candidates, &status, strategy).await;
            work.sample(&mut status).await;
            trust_pending = work.waiting_for_trust();
            None
        }
        Err(b) => {
            if b.reason != reasons::NO_EXECUTOR {
                set_condition(
                    &mut status.conditions,
                    condition::REDIS_REACHABLE,
                    false,
                    reasons::CREDENTIALS_UNAVAILABLE,
                    &b.message,
                    cp.metadata.generation,
                );
            }
            if before.conditions.iter().all(|c| c.type_ != condition::READY || c.reason != b.reason) {
                event(ctx, cp, EventType::Warning, b.reason, b.message.clone()).await;
            }
            Some(b)
        }
    };
    record_plans(&rules, &mut status, cp);
    summarise(cp, &rules, blocked, &mut status);
    (status, trust_pending)
}

async fn invalid<A: AgentApi>(
    ctx: &Context<A>,
    cp: &CachePolicy,
    before: &CachePolicyStatus,
    mut status: CachePolicyStatus,
    reason: &'static str,
    message: String,
) -> Result<Action> {
    let generation = cp.metadata.generation;
    set_condition(&mut status.conditions, condition::READY, false, reason, &message, generation);
    set_condition(&mut status.conditions, condition::DEGRADED, true, reason, &message, generation);
    ctx.status.write(&ctx.client, cp, before, status).await?;
    Err(Error::InvalidSpec { reason, message })
}

/// What names `cp` in the agents' API.
fn policy_ref(cp: &CachePolicy) -> PolicyRef {
    PolicyRef { namespace: cp.namespace().unwrap_or_default(), name: cp.name_any() }
}

/// The Redis work of one reconcile, on one executor.
struct Work<'a, A> {
    ctx: &'a Context<A>,
    cp: &'a CachePolicy,
    agent: &'a AgentAddr,
    target: &'a RedisTarget,
    /// The executor answered that the operator's key has not reached it yet: what it was
    /// asked is asked again shortly, and is no failure.
    trust_pending: std::sync::atomic::AtomicBool,
}

impl<'a, A> Work<'a, A> {
    fn new(ctx: &'a Context<A>, cp: &'a CachePolicy, agent: &'a AgentAddr, target: &'a RedisTarget) -> Self {
        Self { ctx, cp, agent, target, trust_pending: std::sync::atomic::AtomicBool::new(false) }
    }

    /// Whether `error` says the executor is still waiting for the `biometrics-trust`
    /// ConfigMap on its volume (a kubelet fills it a little after it is published);
    /// remembered, so the reconcile comes back soon.
    fn trust_pending(&self, error: &AgentError) -> bool {
        let pending = error.code() == Some(ErrorCode::TrustNotReady);
        if pending {
            tracing::info!(pod = %self.agent.pod, "the executor has not received the operator's key yet; asking again shortly");
            self.trust_pending.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        pending
    }

    fn waiting_for_trust(&self) -> bool {
        self.trust_pending.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl<A: AgentApi> Work<'_, A> {
    fn request(&self, id: &str, rule: &str) -> Option<InvalidationRequest> {
        let rule = self.cp.spec.invalidations.iter().find(|r| r.name == rule)?;
        Some(InvalidationRequest {
            id: id.to_owned(),
            policy: policy_ref(self.cp),
            redis: self.target.clone(),
            key_prefix: self.cp.spec.key_prefix.clone(),
            rule: decide::rule_spec(rule),
        })
    }

    async fn submit(&self, request: &InvalidationRequest) -> std::result::Result<Job, AgentError> {
        self.ctx.agents.send(self.agent, routes::START_INVALIDATION, None, Some(request)).await
    }

    /// Polls running invalidations; a run whose executor was lost (or forgot it) is sent
    /// again under the same id, to the current executor.
    async fn drive_running(&self, status: &mut CachePolicyStatus) {
        let mut finished = Vec::new();
        for entry in status.invalidations.iter_mut().filter(|e| e.result == Some(InvalidationResult::Running)) {
            let Some(id) = entry.run_id.clone() else { continue };
            let Some(request) = self.request(&id, &entry.name) else { continue };
            let answer = if entry.executor.as_deref() == Some(self.agent.pod.as_str()) {
                match self.ctx.agents.send(self.agent, routes::INVALIDATION, Some(&id), None).await {
                    Err(e) if e.is_not_found() => self.submit(&request).await,
                    other => other,
                }
            } else {
                // The executor changed mid-run: what the lost one reported is carried over.
                entry.carried_over = entry.keys_deleted;
                entry.message = Some(format!(
                    "continued by {} after {} was lost",
                    self.agent.pod,
                    entry.executor.as_deref().unwrap_or("the previous executor")
                ));
                entry.executor = Some(self.agent.pod.clone());
                self.submit(&request).await
            };
            match answer {
                Ok(job) => {
                    let note = entry.message.take();
                    decide::progress(entry, &job);
                    if entry.message.is_none() {
                        entry.message = note;
                    }
                    if entry.result != Some(InvalidationResult::Running) {
                        finished.push(entry.clone());
                    }
                }
                Err(reason) => {
                    // Still running as far as we know; the executor may come back or be replaced.
                    entry.message = Some(format!("cannot reach the executor: {reason}"));
                }
            }
        }
        for entry in finished {
            self.finished(status, &entry).await;
        }
    }

    async fn finished(&self, status: &mut CachePolicyStatus, entry: &InvalidationStatus) {
        let ctx = self.ctx;
        let deleted = entry.keys_deleted.unwrap_or(0);
        let trigger = entry.trigger.map(|t| format!("{t:?}")).unwrap_or_default();
        status.last_invalidation_time = Some(now_time());
        if entry.result == Some(InvalidationResult::Succeeded) {
            ctx.metrics.invalidations.with_label_values(&["succeeded"]).inc();
            ctx.metrics.keys_deleted.inc_by(u64::try_from(deleted).unwrap_or(0));
            let note = format!(
                "rule {} ({trigger}) deleted {} in {} ms{}",
                entry.name,
                count_of_keys(deleted),
                entry.duration_millis.unwrap_or(0),
                entry.message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
            );
            rule_event(ctx, self.cp, EventType::Normal, reasons::INVALIDATED, &entry.name, note).await;
        } else {
            ctx.metrics.invalidations.with_label_values(&["failed"]).inc();
            let note = format!(
                "rule {} ({trigger}) failed after deleting {}: {}",
                entry.name,
                count_of_keys(deleted),
                entry.message.as_deref().unwrap_or("unknown error")
            );
            rule_event(ctx, self.cp, EventType::Warning, reasons::INVALIDATION_FAILED, &entry.name, note).await;
        }
    }

    async fn start_due(&self, plans: &[RulePlan], status: &mut CachePolicyStatus, now: Timestamp) {
        for plan in plans {
            let Some(run) = &plan.run else { continue };
            let Some(request) = self.request(&run.id, &plan.name) else { continue };
            let mut entry = decide::started(plan, run, &self.agent.pod, self.cp.metadata.generation, now);
            // A retry keeps counting its failures.
            entry.failures = status
                .invalidations
                .iter()
                .find(|e| e.name == plan.name && e.run_id.as_deref() == Some(run.id.as_str()))
                .and_then(|e| e.failures);
            match self.submit(&request).await {
                Ok(job) => {
                    decide::progress(&mut entry, &job);
                    if entry.result != Some(InvalidationResult::Running) {
                        self.finished(status, &entry).await;
                    }
                }
                // Not taken: the rule stays due and is sent again at the next reconcile.
                Err(reason) if self.trust_pending(&reason) => continue,
                Err(reason) => {
                    entry.result = Some(InvalidationResult::Failed);
                    entry.failures = Some(entry.failures.unwrap_or(0).saturating_add(1));
                    entry.message = Some(reason.to_string());
                    self.finished(status, &entry).await;
                }
            }
            status.invalidations.retain(|e| e.name != plan.name);
            status.invalidations.push(entry);
        }
    }

    /// Enforces the strategy as a job on the executor: started when due, polled on the
    /// following reconciles until it ends (a trim of millions of keys takes longer than any
    /// request), sent again under the same id when the executor changed or forgot it.
    async fn enforce(
        &self,
        status: &mut CachePolicyStatus,
        strategy: biometrics_agent_api::StrategySpec,
        now: Timestamp,
    ) {
        let digest = decide::strategy_digest(self.cp);
        let previous = status.enforcement.clone().unwrap_or_default();
        let strategy_type = strategy.strategy_type.clone();
        let running = previous.job_id.clone().filter(|_| previous.result == Some(InvalidationResult::Running));
        if running.is_none()
            && !decide::enforce_due(status.enforcement.as_ref(), &digest, now, self.ctx.settings.enforce_interval)
        {
            return;
        }
        let id = running.clone().unwrap_or_else(|| decide::enforcement_id(&self.cp.uid().unwrap_or_default(), now));
        let request = EnforceRequest {
            id: id.clone(),
            policy: Some(policy_ref(self.cp)),
            redis: self.target.clone(),
            key_prefix: self.cp.spec.key_prefix.clone(),
            strategy,
        };
        let here = previous.executor.as_deref() == Some(self.agent.pod.as_str());
        let answer = match &running {
            Some(id) if here => match self.ctx.agents.send(self.agent, routes::ENFORCEMENT, Some(id), None).await {
                Err(e) if e.is_not_found() => {
                    self.ctx.agents.send(self.agent, routes::ENFORCE, None, Some(&request)).await
                }
                other => other,
            },
            _ => self.ctx.agents.send(self.agent, routes::ENFORCE, None, Some(&request)).await,
        };
        let mut record = EnforcementStatus {
            last_enforce_time: if running.is_some() { previous.last_enforce_time.clone() } else { Some(now_time()) },
            applied_strategy: previous.applied_strategy.clone(),
            job_id: Some(id),
            executor: Some(self.agent.pod.clone()),
            eviction_policy: previous.eviction_policy.clone(),
            ..EnforcementStatus::default()
        };
        let job = match answer {
            Ok(job) => job,
            Err(reason) if running.is_some() => {
                // Still running as far as we know; the executor may come back or be replaced.
                record.result = Some(InvalidationResult::Running);
                record.message = Some(format!("cannot reach the executor: {reason}"));
                status.enforcement = Some(record);
                return;
            }
            Err(reason) if self.trust_pending(&reason) => return,
            Err(reason) => {
                record.result = Some(InvalidationResult::Failed);
                record.applied_strategy = Some(digest);
                record.message = Some(reason.to_string());
                if previous.result != Some(InvalidationResult::Failed) {
                    event(self.ctx, self.cp, EventType::Warning, reasons::ENFORCEMENT_FAILED, reason.to_string()).await;
                }
                status.enforcement = Some(record);
                return;
            }
        };
        let report = &job.report;
        record.keys_scanned = i64::try_from(report.keys_scanned).ok();
        record.keys_trimmed = i64::try_from(report.keys_trimmed).ok();
        record.keys_given_ttl = i64::try_from(report.keys_given_ttl).ok();
        if job.state == CaptureState::Running {
            record.result = Some(InvalidationResult::Running);
            status.enforcement = Some(record);
            return;
        }
        let policy = &report.eviction_policy;
        let same = previous.applied_strategy.as_deref() == Some(digest.as_str());
        record.applied_strategy = Some(digest);
        if job.state == CaptureState::Failed {
            let error = job.error.clone().unwrap_or_else(|| "the enforcement failed".into());
            record.result = Some(InvalidationResult::Failed);
            record.message = Some(error.clone());
            event(self.ctx, self.cp, EventType::Warning, reasons::ENFORCEMENT_FAILED, error).await;
            status.enforcement = Some(record);
            return;
        }
        let mut problems = report.warnings.clone();
        problems.extend(policy.error.clone());
        record.result =
            Some(if policy.error.is_some() { InvalidationResult::Failed } else { InvalidationResult::Succeeded });
        record.eviction_policy = policy.actual.clone();
        record.message = (!problems.is_empty()).then(|| problems.join("; "));
        if policy.drift && same {
            let note = format!(
                "the server's maxmemory-policy was {} instead of {}; {}",
                policy.found.as_deref().unwrap_or("unknown"),
                policy.desired.as_deref().unwrap_or("unknown"),
                if policy.applied { "set again" } else { "could not set it again" }
            );
            event(self.ctx, self.cp, EventType::Warning, reasons::EVICTION_POLICY_DRIFT, note).await;
        } else if !same {
            let note = format!(
                "strategy {} enforced: eviction policy {}, {} keys trimmed, {} given a TTL",
                strategy_type,
                policy.actual.as_deref().unwrap_or("unmanaged"),
                report.keys_trimmed,
                report.keys_given_ttl
            );
            event(self.ctx, self.cp, EventType::Normal, reasons::STRATEGY_ENFORCED, note).await;
        }
        if let Some(e) = &policy.error {
            event(self.ctx, self.cp, EventType::Warning, reasons::ENFORCEMENT_FAILED, e.clone()).await;
        }
        status.enforcement = Some(record);
    }

    /// Gives every selected agent the enforced policy to serve its app (`GET
    /// /v1/cache/policy` on the pod's loopback): write-behind settings are for every
    /// replica, not just the executor. Sent again after each enforcement, so an agent that
    /// restarted gets it back.
    async fn serve_policy(
        &self,
        candidates: &[PodInfo],
        status: &CachePolicyStatus,
        strategy: biometrics_agent_api::StrategySpec,
    ) {
        let Some(enforced) = status.enforcement.as_ref().filter(|e| e.result == Some(InvalidationResult::Succeeded))
        else {
            return;
        };
        let uid = self.cp.uid().unwrap_or_default();
        let pending: Vec<&PodInfo> = {
            let mut served = lock(&self.ctx.served);
            let (at, pods) = served.entry(uid.clone()).or_default();
            if *at != enforced.last_enforce_time {
                *at = enforced.last_enforce_time.clone();
                pods.clear();
                // The executor set it when it enforced.
                pods.insert(self.agent.pod.clone());
            }
            candidates.iter().filter(|p| !pods.contains(&p.name)).collect()
        };
        let policy = biometrics_agent_api::AppliedPolicy {
            policy: Some(policy_ref(self.cp)),
            key_prefix: self.cp.spec.key_prefix.clone(),
            strategy,
            applied_at: enforced.last_enforce_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
        };
        let ns = self.cp.namespace().unwrap_or_default();
        for pod in pending {
            let Some(agent) = agent_of(&ns, pod) else { continue };
            let sent = self.ctx.agents.send(&agent, routes::SERVE_POLICY, None, Some(&policy)).await;
            match sent {
                Ok(_) => {
                    lock(&self.ctx.served).entry(uid.clone()).or_default().1.insert(pod.name.clone());
                }
                Err(reason) => tracing::warn!(pod = %pod.name, %reason, "cannot give the agent its app's cache policy"),
            }
        }
    }

    /// Redis refused the password: read the Secret again at the next use.
    fn forget_password(&self) {
        if let Some(reference) = &self.cp.spec.redis.password_secret_ref {
            self.ctx.secrets.forget(&self.cp.namespace().unwrap_or_default(), &reference.name);
        }
    }

    /// The server's certificate was refused: read the CA bundle again at the next use.
    fn forget_ca_bundle(&self) {
        if let Some(reference) = &self.cp.spec.redis.ca_secret_ref {
            self.ctx.secrets.forget(&self.cp.namespace().unwrap_or_default(), &reference.name);
        }
    }

    /// Samples the cache's health when the last sample is older than the interval.
    async fn sample(&self, status: &mut CachePolicyStatus) {
        let uid = self.cp.uid().unwrap_or_default();
        let fresh = lock(&self.ctx.sampled).get(&uid).is_some_and(|t| t.elapsed() < self.ctx.settings.stats_interval);
        if fresh && status.redis.is_some() {
            return;
        }
        let request = StatsRequest { redis: self.target.clone(), key_prefix: self.cp.spec.key_prefix.clone() };
        let answer = self.ctx.agents.send(self.agent, routes::STATS, None, Some(&request)).await;
        if let Err(e) = &answer
            && self.trust_pending(e)
        {
            return;
        }
        lock(&self.ctx.sampled).insert(uid, Instant::now());
        let (reachable, reason) = redis_reachability(&answer);
        if reason == reasons::AUTHENTICATION_FAILED {
            self.forget_password();
        }
        if reason == reasons::CERTIFICATE_UNTRUSTED {
            self.forget_ca_bundle();
        }
        let health = match answer {
            Ok(h) => rounded(h),
            Err(e) => {
                let error = match (&e, reason) {
                    (_, reasons::EXECUTOR_UNREACHABLE) => format!("the executor did not answer: {e}"),
                    (AgentError::Answered { message, .. }, _) => message.clone(),
                    _ => e.to_string(),
                };
                RedisHealth { reachable: false, error: Some(error), ..RedisHealth::default() }
            }
        };
        let was_reachable = status.redis.as_ref().is_none_or(|h| h.reachable);
        if !reachable && was_reachable {
            let note = format!(
                "Redis {} is unreachable: {}",
                self.cp.spec.redis.address,
                health.error.as_deref().unwrap_or("no answer")
            );
            event(self.ctx, self.cp, EventType::Warning, reasons::REDIS_UNREACHABLE, note).await;
        }
        if reachable && !was_reachable {
            event(
                self.ctx,
                self.cp,
                EventType::Normal,
                reasons::REDIS_REACHABLE,
                format!("Redis {} answers again", self.cp.spec.redis.address),
            )
            .await;
        }
        let levels = decide::levels(&health, &self.cp.spec.thresholds);
        let worst = decide::worst(&levels);
        let was = status.threshold_level.unwrap_or(ThresholdLevel::OK);
        if worst > ThresholdLevel::OK && worst > was {
            let note = format!(
                "cache reached {worst}: memory {}, server hit ratio {}, evictions {}/s",
                show(health.memory_percent, "%"),
                show(health.server_hit_ratio_percent, "%"),
                show(health.evictions_per_second, "")
            );
            event(self.ctx, self.cp, EventType::Warning, reasons::THRESHOLD_CROSSED, note).await;
        }
        let generation = self.cp.metadata.generation;
        let message = health.error.clone().unwrap_or_default();
        set_condition(&mut status.conditions, condition::REDIS_REACHABLE, reachable, reason, &message, generation);
        status.levels = Some(levels);
        status.threshold_level = Some(worst);
        status.redis = Some(health);
    }
}

/// `RedisReachable` from the executor's answer to a statistics request: the agent's error
/// code says what failed (its message is for people).
fn redis_reachability(answer: &std::result::Result<StatsResponse, AgentError>) -> (bool, &'static str) {
    match answer {
        Ok(h) if h.reachable => (true, reasons::REACHABLE),
        // An agent from before error codes reports a failed sample in a 200 answer.
        Ok(_) => (false, reasons::UNREACHABLE),
        Err(e) => match e.code() {
            Some(ErrorCode::RedisAuthFailed) => (false, reasons::AUTHENTICATION_FAILED),
            Some(ErrorCode::RedisUnreachable) => (false, reasons::UNREACHABLE),
            Some(ErrorCode::RedisCommandFailed) => (false, reasons::COMMAND_FAILED),
            Some(ErrorCode::RedisCertificateUntrusted) => (false, reasons::CERTIFICATE_UNTRUSTED),
            Some(ErrorCode::RedisServerNameMismatch) => (false, reasons::SERVER_NAME_MISMATCH),
            Some(ErrorCode::TooManyRequests) => (false, reasons::EXECUTOR_BUSY),
            _ => (false, reasons::EXECUTOR_UNREACHABLE),
        },
    }
}

fn count_of_keys(n: i64) -> String {
    if n == 1 { "1 key".into() } else { format!("{n} keys") }
}

fn show(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.1}{unit}"))
}

fn rounded(mut h: RedisHealth) -> RedisHealth {
    let r = |v: Option<f64>| v.map(|v| (v * 100.0).round() / 100.0);
    h.ping_latency_millis = r(h.ping_latency_millis);
    h.memory_percent = r(h.memory_percent);
    h.server_hit_ratio_percent = r(h.server_hit_ratio_percent);
    h.evictions_per_second = r(h.evictions_per_second);
    h
}

/// What the plans record whether or not a rule ran: baselines, the generation the rule
/// is current at, rules that left the spec, the `invalidate-now` value acted on.
fn record_plans(plans: &[RulePlan], status: &mut CachePolicyStatus, cp: &CachePolicy) {
    status.invalidations.retain(|e| plans.iter().any(|p| p.name == e.name));
    for plan in plans {
        let entry = match status.invalidations.iter_mut().find(|e| e.name == plan.name) {
            Some(e) => e,
            None => {
                status.invalidations.push(InvalidationStatus::new(&plan.name));
                status.invalidations.last_mut().expect("just pushed")
            }
        };
        if entry.result == Some(InvalidationResult::Running) || plan.run.is_some() {
            continue;
        }
        // A held-back trigger says why, unless the last run's failure is the news.
        if entry.result != Some(InvalidationResult::Failed) {
            let stale = entry.message.as_deref().is_some_and(|m| m.starts_with(WAITING));
            if let Some(waiting) = &plan.waiting {
                entry.message = Some(format!("{WAITING}{waiting}"));
            } else if stale {
                entry.message = None;
            }
        }
        if entry.rule_digest.is_some() {
            // Unchanged by this generation: current at it.
            if entry.rule_digest.as_deref() == Some(plan.digest.as_str()) {
                entry.applied_generation = cp.metadata.generation;
            }
            entry.last_schedule_time = plan.schedule_time.map(Time);
            entry.rollout_revision = plan.rollout_revision.clone();
        } else {
            // Not run yet (no executor): keep only the baselines.
            entry.last_schedule_time = entry.last_schedule_time.take().or(plan.schedule_time.map(Time));
            entry.rollout_revision = entry.rollout_revision.take().or(plan.rollout_revision.clone());
        }
    }
    status.invalidations.sort_by(|a, b| a.name.cmp(&b.name));
    let manual = cp.metadata.annotations.as_ref().and_then(|a| a.get(biometrics_crds::INVALIDATE_NOW_ANNOTATION));
    let all_started = plans.iter().all(|p| {
        !p.manual_deferred
            && status
                .invalidations
                .iter()
                .any(|e| e.name == p.name && (p.run.is_none() || e.run_id.as_ref() == p.run.as_ref().map(|r| &r.id)))
    });
    if manual.is_some() && all_started {
        status.handled_invalidate_now = manual.cloned();
    }
}

/// Ready and Degraded from the rest of the status. Ready: the policy is in effect (an
/// executor, credentials, a reachable Redis). Degraded: anything failed or is held back.
fn summarise(cp: &CachePolicy, plans: &[RulePlan], blocked: Option<Blocked>, status: &mut CachePolicyStatus) {
    let generation = cp.metadata.generation;
    let mut problems: Vec<(String, String)> = Vec::new();
    problems.extend(blocked.map(|b| (b.reason.to_owned(), b.message)));
    if let Some(c) = status.conditions.iter().find(|c| c.type_ == condition::REDIS_REACHABLE && c.status == "False") {
        problems.push((c.reason.clone(), c.message.clone()));
    }
    match problems.first() {
        Some((reason, message)) => {
            set_condition(&mut status.conditions, condition::READY, false, reason, message, generation)
        }
        None => set_condition(&mut status.conditions, condition::READY, true, reasons::ENFORCED, "", generation),
    }
    for e in status.invalidations.iter().filter(|e| e.result == Some(InvalidationResult::Failed)) {
        let message = format!("rule {}: {}", e.name, e.message.as_deref().unwrap_or(""));
        problems.push((reasons::INVALIDATION_FAILED.into(), message));
    }
    if let Some(e) = status.enforcement.as_ref().filter(|e| e.result == Some(InvalidationResult::Failed)) {
        problems.push((reasons::ENFORCEMENT_FAILED.into(), e.message.clone().unwrap_or_default()));
    }
    for rule in &cp.spec.invalidations {
        if let Some(why) = rule.schedule.as_ref().and_then(|s| s.never_fires(Timestamp::now())) {
            problems.push((reasons::SCHEDULE_NEVER_FIRES.into(), format!("rule {}: {why}", rule.name)));
        }
    }
    for plan in plans {
        if let Some(waiting @ Waiting::WorkloadNotFound(_)) = &plan.waiting {
            problems.push((reasons::WORKLOAD_NOT_FOUND.into(), format!("rule {}: {waiting}", plan.name)));
        }
    }
    match problems.first() {
        Some((reason, _)) => {
            let message: Vec<String> = problems.iter().map(|(_, m)| m.clone()).filter(|m| !m.is_empty()).collect();
            set_condition(&mut status.conditions, condition::DEGRADED, true, reason, &message.join("; "), generation);
        }
        None => set_condition(&mut status.conditions, condition::DEGRADED, false, reasons::AS_EXPECTED, "", generation),
    }
}

/// Deletion: cancel running invalidations on the executor. Best effort, bounded by the
/// agent timeout: an unreachable agent or Redis never blocks deletion. Needs no valid spec:
/// of a policy that cannot be read, its status is read from the stored object.
async fn cleanup<A: AgentApi>(object: &Guarded<CachePolicy>, ctx: &Context<A>) -> Result<Action> {
    let ns = object.namespace().unwrap_or_default();
    let uid = object.uid().unwrap_or_default();
    let status: CachePolicyStatus = match object.valid() {
        Ok(cp) => cp.status.clone(),
        Err(invalid) => invalid.part("/status"),
    }
    .unwrap_or_default();
    for entry in status.invalidations.iter().filter(|e| e.result == Some(InvalidationResult::Running)) {
        let (Some(id), Some(executor)) = (&entry.run_id, &entry.executor) else { continue };
        let Some(agent) = pods::pod_named(&ctx.pods, &ns, executor, ctx.settings.default_agent_port)
            .as_ref()
            .and_then(|p: &PodInfo| agent_of(&ns, p))
        else {
            continue;
        };
        if let Err(reason) = ctx.agents.send(&agent, routes::CANCEL_INVALIDATION, Some(id), None).await {
            tracing::warn!(policy = %object.name_any(), rule = %entry.name, %reason, "cannot cancel an invalidation");
        }
    }
    let enforcing = status.enforcement.as_ref().filter(|e| e.result == Some(InvalidationResult::Running));
    if let Some((Some(id), Some(executor))) = enforcing.map(|e| (&e.job_id, &e.executor))
        && let Some(agent) = pods::pod_named(&ctx.pods, &ns, executor, ctx.settings.default_agent_port)
            .as_ref()
            .and_then(|p: &PodInfo| agent_of(&ns, p))
        && let Err(reason) = ctx.agents.send(&agent, routes::CANCEL_ENFORCEMENT, Some(id), None).await
    {
        tracing::warn!(policy = %object.name_any(), %reason, "cannot cancel an enforcement");
    }
    ctx.status.forget(&uid);
    lock(&ctx.sampled).remove(&uid);
    lock(&ctx.served).remove(&uid);
    Ok(Action::await_change())
}

fn rolls_out(object: &Guarded<CachePolicy>, kind: WorkloadKind, name: &str) -> bool {
    object.valid().is_ok_and(|cp| {
        cp.spec.invalidations.iter().any(|r| r.on_rollout_of.as_ref().is_some_and(|w| w.kind == kind && w.name == name))
    })
}

/// Runs the controller on the policy cache `(reader, writer)` until its streams end or, once
/// `shutdown` resolves, the reconciles in flight have finished (their status writes with
/// them).
pub async fn run<A: AgentApi>(
    ctx: Arc<Context<A>>,
    policies: Api<Guarded<CachePolicy>>,
    (reader, writer): (reflector::Store<Guarded<CachePolicy>>, reflector::store::Writer<Guarded<CachePolicy>>),
    pod_events: impl futures::Stream<Item = Arc<WatchedPod>> + Send + 'static,
    deployments: impl futures::Stream<Item = Arc<Deployment>> + Send + 'static,
    statefulsets: impl futures::Stream<Item = Arc<StatefulSet>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (r1, r2, r3) = (reader.clone(), reader.clone(), reader.clone());
    let controller = Controller::for_stream(controller::objects(policies, writer), reader)
        .watches_shared_stream(pod_events, move |pod: Arc<WatchedPod>| {
            let ns = pod.namespace().unwrap_or_default();
            controller::in_namespace_where(&r1, &ns, |object: &Guarded<CachePolicy>| {
                object
                    .valid()
                    .is_ok_and(|cp| PodSelector::new(&cp.spec.selector).is_ok_and(|s| s.matches(pod.labels())))
            })
        })
        .watches_shared_stream(deployments, move |d: Arc<Deployment>| {
            let (ns, name) = (d.namespace().unwrap_or_default(), d.name_any());
            controller::in_namespace_where(&r2, &ns, |cp| rolls_out(cp, WorkloadKind::Deployment, &name))
        })
        .watches_shared_stream(statefulsets, move |s: Arc<StatefulSet>| {
            let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
            controller::in_namespace_where(&r3, &ns, |cp| rolls_out(cp, WorkloadKind::StatefulSet, &name))
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(16))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    controller::drive(controller).await;
}

#[cfg(test)]
mod tests {
    use biometrics_crds::v1alpha1::CachePolicy;
    use serde_json::json;

    use super::*;
    use crate::{agent_client::fake::FakeAgents, signing::SigningKey, testing};

    fn context(client: Client, agents: FakeAgents) -> Context<FakeAgents> {
        let settings = Settings {
            default_agent_port: 9477,
            stats_interval: Duration::ZERO,
            enforce_interval: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
        };
        Context::new(
            client,
            reflector::store().0,
            reflector::store().0,
            reflector::store().0,
            agents,
            SigningKey::generate().unwrap(),
            Metrics::default(),
            settings,
            "test",
        )
    }

    fn policy() -> CachePolicy {
        serde_json::from_value(json!({
            "apiVersion": "biometrics.io/v1alpha1", "kind": "CachePolicy",
            "metadata": {"name": "users", "namespace": testing::NS, "uid": "u-1", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "cache"}}, "redis": {"address": "redis:6379"},
                "keyPrefix": "users:", "strategy": {"type": "LRU"}}
        }))
        .unwrap()
    }

    fn refused(status: u16, code: ErrorCode, message: &str) -> AgentError {
        AgentError::Answered { status, code: Some(code), message: message.into() }
    }

    fn reachable(status: &CachePolicyStatus) -> (String, String, String) {
        let c = status.conditions.iter().find(|c| c.type_ == condition::REDIS_REACHABLE).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[tokio::test]
    async fn the_agents_error_codes_become_redis_reachable_reasons() {
        let (_server, client) = testing::api_server().await;
        let ctx = context(client.clone(), FakeAgents::default());
        let cp = policy();
        let agent =
            AgentAddr { namespace: testing::NS.into(), pod: "cache-0".into(), ip: "10.0.0.1".into(), port: 9477 };
        let target = decide::redis_target(&cp, decide::RedisSecrets::default());
        let work = Work::new(&ctx, &cp, &agent, &target);
        let mut status = CachePolicyStatus::default();

        let wrong_password = "authentication failed: WRONGPASS invalid username-password pair";
        ctx.agents.answer(routes::STATS, Err(refused(502, ErrorCode::RedisAuthFailed, wrong_password)));
        work.sample(&mut status).await;
        assert_eq!(reachable(&status), ("False".into(), reasons::AUTHENTICATION_FAILED.into(), wrong_password.into()));
        let health = status.redis.clone().unwrap();
        assert_eq!((health.reachable, health.error.as_deref()), (false, Some(wrong_password)));
        let calls = ctx.agents.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(
            (calls[0].pod.as_str(), calls[0].route, calls[0].path.as_str()),
            ("cache-0", "stats", "/v1/cache/stats")
        );
        assert_eq!(calls[0].body.as_ref().unwrap()["keyPrefix"], "users:");

        // Each code its reason; no code (the executor did not answer) is the executor's.
        let cases = [
            (Err(refused(502, ErrorCode::RedisUnreachable, "connection refused")), "False", reasons::UNREACHABLE),
            (Err(refused(502, ErrorCode::RedisCommandFailed, "ERR unknown command")), "False", reasons::COMMAND_FAILED),
            (
                Err(refused(502, ErrorCode::RedisCertificateUntrusted, "invalid peer certificate: UnknownIssuer")),
                "False",
                reasons::CERTIFICATE_UNTRUSTED,
            ),
            (
                Err(refused(502, ErrorCode::RedisServerNameMismatch, "certificate not valid for name")),
                "False",
                reasons::SERVER_NAME_MISMATCH,
            ),
            (Err(refused(429, ErrorCode::TooManyRequests, "64 Redis connections")), "False", reasons::EXECUTOR_BUSY),
            (Err(AgentError::Timeout(Duration::from_secs(5))), "False", reasons::EXECUTOR_UNREACHABLE),
            (Ok(StatsResponse { reachable: true, ..StatsResponse::default() }), "True", reasons::REACHABLE),
        ];
        for (answer, value, reason) in cases {
            ctx.agents.answer(routes::STATS, answer);
            work.sample(&mut status).await;
            let (shown, shown_reason, message) = reachable(&status);
            assert_eq!((shown.as_str(), shown_reason.as_str()), (value, reason), "{message}");
        }
        assert!(
            reachable(&status).2.is_empty() && status.redis.as_ref().unwrap().reachable,
            "reachable again: {status:?}"
        );
        assert!(status.conditions.iter().all(|c| c.observed_generation == Some(2)));

        // Going unreachable and coming back are Events on the policy, once each.
        let events = testing::events_about(&client, "users", 2).await;
        let mut reasons: Vec<String> = events.iter().map(|e| e.reason.clone().unwrap()).collect();
        reasons.sort();
        assert_eq!(reasons, [reasons::REDIS_REACHABLE, reasons::REDIS_UNREACHABLE]);
        let down = events.iter().find(|e| e.reason.as_deref() == Some(reasons::REDIS_UNREACHABLE)).unwrap();
        assert_eq!(
            down.message.as_deref(),
            Some(format!("Redis redis:6379 is unreachable: {wrong_password}").as_str())
        );
    }

    /// The trust ConfigMap reaches a new pod's volume a little after it is published: an
    /// executor without the key yet fails nothing and warns of nothing; the work stays due.
    #[tokio::test]
    async fn an_executor_without_the_operators_key_yet_is_asked_again_not_failed() {
        let (_server, client) = testing::api_server().await;
        let ctx = context(client.clone(), FakeAgents::default());
        let mut cp = policy();
        cp.spec.invalidations = serde_json::from_value(json!([{"name": "all", "pattern": "*"}])).unwrap();
        let agent =
            AgentAddr { namespace: testing::NS.into(), pod: "cache-0".into(), ip: "10.0.0.1".into(), port: 9477 };
        let target = decide::redis_target(&cp, decide::RedisSecrets::default());
        let work = Work::new(&ctx, &cp, &agent, &target);
        let not_yet = || {
            refused(
                503,
                ErrorCode::TrustNotReady,
                "cannot read the operator public key /etc/biometrics/trust/operator.pub",
            )
        };
        ctx.agents.answer(routes::START_INVALIDATION, Err(not_yet()));
        ctx.agents.answer(routes::ENFORCE, Err(not_yet()));
        ctx.agents.answer(routes::STATS, Err(not_yet()));
        let now = Timestamp::now();
        let plans = decide::plan_rules(&cp, now, |_| None);
        assert!(plans[0].run.is_some(), "the new rule is due");
        let mut status = CachePolicyStatus::default();
        work.start_due(&plans, &mut status, now).await;
        work.enforce(&mut status, decide::strategy_spec(&cp).unwrap(), now).await;
        work.sample(&mut status).await;
        assert!(work.waiting_for_trust());
        assert!(status.invalidations.is_empty(), "no run recorded, failed or otherwise: {status:?}");
        assert!(status.enforcement.is_none() && status.redis.is_none(), "{status:?}");
        assert_eq!(ctx.agents.calls().len(), 3, "each asked once");
        assert!(testing::events_about(&client, "users", 0).await.is_empty(), "no Event");
        // The rule is still due, under the same run id.
        cp.status = Some(status);
        let again = decide::plan_rules(&cp, now, |_| None);
        assert_eq!(again[0].run.as_ref().map(|r| &r.id), plans[0].run.as_ref().map(|r| &r.id));
    }
}
