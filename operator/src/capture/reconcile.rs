//! Reconciling a ProfileCapture: read (pods, agents' answers) → decide (pure functions in
//! `decide`) → act (agent calls, Events) → write status (server-side apply, only when it
//! changed). A run never blocks a reconcile: it is started, then polled on requeues.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use biometrics_agent_api::{CaptureRef, CaptureRequest, RetentionRequest, RuntimeSample, TargetSpec, routes};
use biometrics_crds::{
    selector::PodSelector,
    threshold::ThresholdLevel,
    v1alpha1::{
        CapturePhase, CaptureRun, PodRunResult, PodRuntime, ProfileCapture, ProfileCaptureStatus, RunResult,
        RunSummary, RunTrigger, ThresholdFiring, TriggerFire,
    },
};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{Controller, controller::Action, events::EventType, finalizer::Event as Finalizer, reflector},
};

use super::{
    decide::{self, Call, DueRun, Unanswered, Verdict},
    signals,
};
use crate::{
    agent_client::{AgentApi, AgentClient},
    controller::{self, Failures},
    error::{Error, Result},
    guard::{self, Guarded, InvalidSpecStatus},
    metrics::Metrics,
    pods::{self, NO_ELIGIBLE_PODS, PodInfo, agent_of},
    reasons::{self, condition},
    signing::SigningKey,
    status::{Events, StatusWriter, now_time, set_condition},
};

/// The finalizer that lets deletion stop running captures and clean up files.
pub const FINALIZER: &str = "biometrics.io/profilecapture";
const CONTROLLER: &str = "profilecapture";
/// The action of this controller's Events.
const ACTION: &str = "Capture";
/// Agent calls of one reconcile made at once: the pods of a run are asked together, so 100
/// unreachable pods cost one timeout, not 100 in a row.
pub const AGENT_CALLS_AT_ONCE: usize = 16;

/// Runs `call` over `items`, at most [`AGENT_CALLS_AT_ONCE`] at a time; answers in order.
async fn each<T, F, Fut>(items: Vec<T>, call: F) -> Vec<Fut::Output>
where
    F: FnMut(T) -> Fut,
    Fut: std::future::Future,
{
    futures::stream::iter(items).map(call).buffered(AGENT_CALLS_AT_ONCE).collect().await
}

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Agent port when a pod has no annotation.
    pub default_agent_port: u16,
    /// How often runtime metrics are read into status.
    pub metrics_interval: Duration,
    /// `maxPods` when a capture sets none.
    pub default_max_pods: Option<usize>,
    /// How often a running run is polled.
    pub poll_interval: Duration,
    /// Cluster-wide alert thresholds (`performance.alerting`).
    pub alerting: crate::config::Alerting,
    /// How long past a capture's expected end a silent agent is retried before its pod fails
    /// (`performance.profiling.unreachable_grace`).
    pub unreachable_grace: Duration,
}

/// What reconciles share; the agents' client is behind [`AgentApi`], so reconcile steps can
/// be tested against a fake.
pub struct Context<A = AgentClient> {
    /// The API client.
    pub client: Client,
    /// Pods, from a watch.
    pub pods: reflector::Store<Pod>,
    /// Resolves once `pods` is filled.
    pub caches_ready: pods::CachesReady,
    /// The agents' client.
    pub agents: A,
    /// The signing key (published per namespace).
    pub key: SigningKey,
    /// Events.
    pub events: Events,
    /// Metrics.
    pub metrics: Metrics,
    /// The failure last shown on each capture.
    pub failures: Failures,
    /// Settings.
    pub settings: Settings,
    /// Each capture's previous finished run, to compare the next one with (by uid).
    previous: Mutex<HashMap<String, CaptureRun>>,
    /// Pods of running runs whose agents have not answered, by capture id (with the start
    /// request while the agent has not accepted it).
    unanswered: Mutex<HashMap<String, (Unanswered, Option<CaptureRequest>)>>,
    /// Status writes, remembered until the watch delivers them.
    status: StatusWriter<ProfileCaptureStatus>,
}

impl<A: AgentApi> Context<A> {
    /// A context.
    pub fn new(
        client: Client,
        pods: reflector::Store<Pod>,
        agents: A,
        key: SigningKey,
        metrics: Metrics,
        settings: Settings,
        instance: &str,
    ) -> Self {
        let events = Events::new(client.clone(), instance);
        let caches_ready = pods::caches_ready(vec![pods::store_ready(&pods)]);
        Self {
            client,
            caches_ready,
            pods,
            agents,
            key,
            events,
            metrics,
            failures: Failures::default(),
            settings,
            previous: Mutex::default(),
            unanswered: Mutex::default(),
            status: StatusWriter::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn event<A: AgentApi>(ctx: &Context<A>, pc: &ProfileCapture, type_: EventType, reason: &str, note: String) {
    ctx.events.publish(&pc.object_ref(&()), type_, reason, note, ACTION).await;
}

fn pods_in<A: AgentApi>(ctx: &Context<A>, namespace: &str, selector: Option<&PodSelector>) -> Vec<PodInfo> {
    pods::pods_in(&ctx.pods, namespace, selector, ctx.settings.default_agent_port)
}

fn pod_named<A: AgentApi>(ctx: &Context<A>, namespace: &str, name: &str) -> Option<PodInfo> {
    pods::pod_named(&ctx.pods, namespace, name, ctx.settings.default_agent_port)
}

/// The reconcile entry: the finalizer around apply and cleanup. A capture whose spec cannot
/// be read is reported on its own status; its cleanup needs no spec.
pub async fn reconcile<A: AgentApi>(object: Arc<Guarded<ProfileCapture>>, ctx: Arc<Context<A>>) -> Result<Action> {
    // Decisions read the watch caches: they must be filled first.
    ctx.caches_ready.clone().await;
    controller::finalized(&ctx.client, &ctx.metrics, &ctx.failures, CONTROLLER, FINALIZER, object, |event| async {
        match event {
            Finalizer::Apply(object) => match object.valid() {
                Ok(pc) => apply(pc, &ctx).await,
                Err(invalid) => {
                    guard::report_invalid(&ctx.client, &ctx.events, &ctx.status, &*object, invalid, ACTION).await
                }
            },
            Finalizer::Cleanup(object) => cleanup(&object, &ctx).await,
        }
    })
    .await
}

/// Shows the failure on the capture (a Warning Event) and backs off; a spec that cannot be
/// acted on waits for a change.
pub fn error_policy<A: AgentApi>(object: Arc<Guarded<ProfileCapture>>, error: &Error, ctx: Arc<Context<A>>) -> Action {
    controller::backoff(&ctx.metrics, &ctx.failures, &ctx.events, CONTROLLER, &*object, error)
}

/// A capture whose spec cannot be read has failed: nothing runs, nothing is scheduled, and
/// `Ready` and `Degraded` give the parser's message.
impl InvalidSpecStatus for ProfileCaptureStatus {
    fn invalid_spec(&mut self, message: &str, generation: Option<i64>) {
        self.phase = Some(CapturePhase::Failed);
        self.next_run_time = None;
        self.observed_generation = generation;
        set_condition(&mut self.conditions, condition::READY, false, reasons::INVALID_SPEC, message, generation);
        set_condition(&mut self.conditions, condition::DEGRADED, true, reasons::INVALID_SPEC, message, generation);
    }
}

async fn apply<A: AgentApi>(pc: &ProfileCapture, ctx: &Context<A>) -> Result<Action> {
    let ns = pc.namespace().unwrap_or_default();
    let uid = pc.uid().unwrap_or_default();
    let now = Timestamp::now();
    let seen_rv = pc.resource_version().unwrap_or_default();
    let before = pc.status.clone().unwrap_or_default();
    let mut status = ctx.status.freshest(pc, before.clone());
    let generation = pc.metadata.generation;

    ctx.key.ensure_published(ctx.client.clone(), &ns).await?;

    let selector = match PodSelector::new(&pc.spec.selector) {
        Ok(s) => s,
        Err(e) => {
            status.phase = Some(CapturePhase::Failed);
            let message = e.to_string();
            set_condition(
                &mut status.conditions,
                condition::DEGRADED,
                true,
                reasons::INVALID_SELECTOR,
                &message,
                generation,
            );
            status.observed_generation = generation;
            ctx.status.write(&ctx.client, pc, &before, status).await?;
            return Err(Error::InvalidSpec { reason: reasons::INVALID_SELECTOR, message });
        }
    };
    let pods = pods_in(ctx, &ns, Some(&selector));
    let max_pods = pc.spec.max_pods.and_then(|m| usize::try_from(m).ok()).or(ctx.settings.default_max_pods);
    let mut eligible = pods::eligible(&pods, &selector, None);
    let matching = eligible.len();
    if let Some(max) = max_pods {
        eligible.truncate(max);
    }
    status.selected_pods = Some(i32::try_from(eligible.len()).unwrap_or(i32::MAX));

    refresh_runtime(pc, ctx, &eligible, &mut status, now).await;

    let running = status.last_run.as_ref().is_some_and(|r| r.result == RunResult::Running);
    tracing::debug!(capture = %pc.name_any(), %seen_rv, running, "reconciling");
    if running {
        poll_run(pc, ctx, &mut status).await;
    } else {
        let due = decide::due(pc, &status, now).or_else(|| threshold_run(pc, &status, &eligible, now));
        if let Some(run) = due {
            start_run(pc, ctx, &ns, &uid, &eligible, run, &mut status, now).await;
        }
    }

    status.next_run_time = decide::next_run(pc.spec.schedule.as_ref(), pc.spec.suspend, now).map(Time);
    status.observed_generation = generation;
    summarise(pc, &eligible, &mut status);
    if let Some(note) = decide::capped_note(matching, eligible.len()) {
        append_to_ready(&mut status, &note);
    }
    let present: std::collections::HashSet<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    decide::bound_status(&mut status, &present);
    let still_running = status.last_run.as_ref().is_some_and(|r| r.result == RunResult::Running);
    ctx.status.write(&ctx.client, pc, &before, status.clone()).await?;
    if still_running {
        return Ok(Action::requeue(ctx.settings.poll_interval));
    }
    if eligible.is_empty() && !pods.is_empty() {
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let until_next =
        status.next_run_time.map(|t| now.duration_until(t.0).unsigned_abs()).unwrap_or(ctx.settings.metrics_interval);
    Ok(Action::requeue(until_next.min(ctx.settings.metrics_interval).max(Duration::from_millis(200))))
}

/// Reads the pods' runtime metrics when the last sample is older than the interval.
async fn refresh_runtime<A: AgentApi>(
    pc: &ProfileCapture,
    ctx: &Context<A>,
    eligible: &[PodInfo],
    status: &mut ProfileCaptureStatus,
    now: Timestamp,
) {
    let ns = pc.namespace().unwrap_or_default();
    let interval = jiff::SignedDuration::try_from(ctx.settings.metrics_interval).unwrap_or_default();
    let mut pods = Vec::new();
    let mut stale = Vec::new();
    for pod in eligible {
        let previous = status.pods.iter().find(|p| p.name == pod.name).cloned();
        let fresh = previous
            .as_ref()
            .and_then(|p| p.sample_time.as_ref())
            .is_some_and(|t| t.0.checked_add(interval).is_ok_and(|end| end > now));
        let memory_unknown = pods::memory_limit_missing(pod, u16::try_from(pc.spec.target.port).unwrap_or(0));
        match (fresh, agent_of(&ns, pod)) {
            (true, _) => pods.extend(previous),
            (false, Some(agent)) => stale.push((pod.name.clone(), agent, previous, memory_unknown)),
            (false, None) => {}
        }
    }
    // With request signals wanted, the agent reads the app's metrics endpoint too.
    let request = signals::metrics_source(&pc.spec).map(|metrics| biometrics_agent_api::RuntimeRequest { metrics });
    let request_thresholds = signals::thresholds(&pc.spec, &ctx.settings.alerting);
    let request = &request;
    let samples = each(stale, |(pod, agent, previous, memory_unknown)| async move {
        let answer = match request {
            Some(body) => ctx.agents.send(&agent, routes::RUNTIME_WITH_REQUESTS, None, Some(body)).await,
            None => ctx.agents.send(&agent, routes::RUNTIME, None, None).await,
        };
        (pod, previous, memory_unknown, answer)
    })
    .await;
    for (pod, previous, memory_unknown, sample) in samples {
        let entry = match sample {
            Ok(mut s) => {
                let thresholds = decide::effective_thresholds(&pc.spec.thresholds, &ctx.settings.alerting);
                let mut levels = decide::levels(&s, &thresholds);
                decide::withhold_memory(&mut s, &mut levels, memory_unknown.as_deref());
                let mut entry = PodRuntime {
                    name: pod.clone(),
                    sample_time: Some(now_time()),
                    heap_alloc_bytes: s.heap_alloc_bytes.and_then(|v| i64::try_from(v).ok()),
                    heap_sys_bytes: s.heap_sys_bytes.and_then(|v| i64::try_from(v).ok()),
                    sys_bytes: s.sys_bytes.and_then(|v| i64::try_from(v).ok()),
                    goroutines: s.goroutines.and_then(|v| i64::try_from(v).ok()),
                    gc_per_second: s.gc_per_second.map(round2),
                    memory_percent: s.memory_percent.map(round2),
                    memory_percent_unknown: memory_unknown.clone(),
                    error: s.error.clone(),
                    ..Default::default()
                };
                if let Some(figures) = &s.requests {
                    signals::apply(&mut entry, &mut levels, figures, &request_thresholds);
                }
                if let Some(why) = &memory_unknown
                    && previous.as_ref().is_none_or(|p| p.memory_percent_unknown.is_none())
                {
                    event(
                        ctx,
                        pc,
                        EventType::Warning,
                        reasons::MEMORY_NOT_JUDGED,
                        format!("pod {pod}: memory thresholds not judged: {why}"),
                    )
                    .await;
                }
                let worst = worst_level(&levels);
                if signals::rose(previous.as_ref().and_then(|p| p.levels.as_ref()), &levels) {
                    let mut parts = vec![describe_levels(&s, &levels)];
                    parts.extend(signals::describe(&entry, &levels, &request_thresholds));
                    parts.retain(|p| !p.is_empty());
                    event(
                        ctx,
                        pc,
                        EventType::Warning,
                        reasons::THRESHOLD_CROSSED,
                        format!("pod {} reached {worst}: {}", pod, parts.join(", ")),
                    )
                    .await;
                }
                entry.levels = Some(levels);
                entry
            }
            Err(reason) => PodRuntime {
                name: pod.clone(),
                sample_time: Some(now_time()),
                memory_percent_unknown: memory_unknown,
                error: Some(reason.to_string()),
                ..Default::default()
            },
        };
        pods.push(entry);
    }
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    status.pods = pods;
    status.threshold_level =
        Some(ThresholdLevel::worst(status.pods.iter().filter_map(|p| p.levels.as_ref()).map(worst_level)));
    status.requests = request.as_ref().map(|_| signals::capture_requests(&status.pods, &request_thresholds));
}

fn worst_level(l: &biometrics_crds::v1alpha1::RuntimeLevels) -> ThresholdLevel {
    ThresholdLevel::worst(
        [l.memory_percent, l.goroutines, l.gc_per_second, l.response_time_millis, l.error_rate_percent]
            .into_iter()
            .flatten(),
    )
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn describe_levels(s: &RuntimeSample, l: &biometrics_crds::v1alpha1::RuntimeLevels) -> String {
    let mut parts = Vec::new();
    if let (Some(v), Some(level)) = (s.memory_percent, l.memory_percent) {
        parts.push(format!("memory {v:.1}% ({level})"));
    }
    if let (Some(v), Some(level)) = (s.goroutines, l.goroutines) {
        parts.push(format!("goroutines {v} ({level})"));
    }
    if let (Some(v), Some(level)) = (s.gc_per_second, l.gc_per_second) {
        parts.push(format!("GC {v:.1}/s ({level})"));
    }
    parts.join(", ")
}

/// A run for the pods whose metrics reached a trigger's level, past its cooldown.
fn threshold_run(
    pc: &ProfileCapture,
    status: &ProfileCaptureStatus,
    eligible: &[PodInfo],
    now: Timestamp,
) -> Option<DueRun> {
    if pc.spec.suspend || pc.spec.triggers.is_empty() {
        return None;
    }
    let any = eligible.iter().any(|pod| {
        let Some(levels) = status.pods.iter().find(|p| p.name == pod.name).and_then(|p| p.levels.clone()) else {
            return false;
        };
        let last =
            |metric| status.trigger_fires.iter().find(|f| f.pod == pod.name && f.metric == metric).map(|f| f.time.0);
        !decide::firing(&pc.spec.triggers, &levels, last, now).is_empty()
    });
    any.then(|| DueRun { trigger: RunTrigger::Threshold, id: format!("t{}", now.as_second()), scheduled_for: None })
}

#[allow(clippy::too_many_arguments)]
async fn start_run<A: AgentApi>(
    pc: &ProfileCapture,
    ctx: &Context<A>,
    ns: &str,
    uid: &str,
    eligible: &[PodInfo],
    run: DueRun,
    status: &mut ProfileCaptureStatus,
    now: Timestamp,
) {
    // Which pods and profiles: all for a normal run; for a threshold run the pods whose
    // triggers fire, with those triggers' profiles.
    let mut targets: Vec<(PodInfo, Vec<biometrics_crds::profile::ProfileType>)> = Vec::new();
    let mut fired_by = Vec::new();
    for pod in eligible {
        if run.trigger == RunTrigger::Threshold {
            let Some(levels) = status.pods.iter().find(|p| p.name == pod.name).and_then(|p| p.levels.clone()) else {
                continue;
            };
            let last = |metric| {
                status.trigger_fires.iter().find(|f| f.pod == pod.name && f.metric == metric).map(|f| f.time.0)
            };
            let fired = decide::firing(&pc.spec.triggers, &levels, last, now);
            if fired.is_empty() {
                continue;
            }
            let mut profiles: Vec<_> = fired.iter().flat_map(|t| t.profiles.iter().copied()).collect();
            profiles.sort();
            profiles.dedup();
            let runtime = decide::effective_thresholds(&pc.spec.thresholds, &ctx.settings.alerting);
            let requests = signals::thresholds(&pc.spec, &ctx.settings.alerting);
            let entry = status.pods.iter().find(|p| p.name == pod.name).cloned().unwrap_or_default();
            for t in &fired {
                status.trigger_fires.retain(|f| !(f.pod == pod.name && f.metric == t.metric));
                status.trigger_fires.push(TriggerFire { pod: pod.name.clone(), metric: t.metric, time: Time(now) });
                let level = decide::level_of(&levels, t.metric).unwrap_or(t.level);
                let bound = signals::bound_crossed(signals::bounds_of(t.metric, &runtime, &requests), level);
                let value = signals::value_of(&entry, t.metric, requests.response_time.quantile);
                if let Some(value) = value {
                    fired_by.push(ThresholdFiring { pod: pod.name.clone(), metric: t.metric, value, level, bound });
                }
                let value = value.map_or_else(|| "unknown".to_owned(), |v| format!("{v:.2}"));
                event(
                    ctx,
                    pc,
                    EventType::Normal,
                    reasons::TRIGGER_FIRED,
                    format!(
                        "{} of pod {} is {value}, over the {level} bound {bound}: capturing {:?}",
                        t.metric, pod.name, t.profiles
                    ),
                )
                .await;
            }
            targets.push((pod.clone(), profiles));
        } else {
            targets.push((pod.clone(), pc.spec.profiles.clone()));
        }
    }
    match run.trigger {
        RunTrigger::Manual => {
            status.handled_capture_now = pc.annotations().get(biometrics_crds::CAPTURE_NOW_ANNOTATION).cloned()
        }
        RunTrigger::Spec => {
            if targets.is_empty() {
                // Wait for pods: the one-shot run happens when there are some.
                set_condition(
                    &mut status.conditions,
                    condition::DEGRADED,
                    true,
                    reasons::NO_ELIGIBLE_PODS,
                    NO_ELIGIBLE_PODS,
                    pc.metadata.generation,
                );
                return;
            }
            status.spec_run_generation = pc.metadata.generation;
        }
        RunTrigger::Schedule => status.last_schedule_time = run.scheduled_for.map(Time),
        RunTrigger::Threshold => {}
    }
    if targets.is_empty() {
        let note = format!("run {} skipped: {NO_ELIGIBLE_PODS}", run.id);
        event(ctx, pc, EventType::Warning, reasons::NO_ELIGIBLE_PODS, note).await;
        return;
    }
    let requests: Vec<_> = targets
        .iter()
        .filter_map(|(pod, profiles)| {
            let agent = agent_of(ns, pod)?;
            let request = CaptureRequest {
                id: decide::capture_id(uid, &run.id, &pod.name),
                capture: CaptureRef { namespace: ns.into(), name: pc.name_any() },
                run: run.id.clone(),
                profiles: profiles.clone(),
                duration_seconds: pc.spec.duration.as_std().as_secs().max(1),
                target: TargetSpec {
                    port: u16::try_from(pc.spec.target.port).unwrap_or(0),
                    base_path: pc.spec.target.base_path.clone(),
                },
            };
            Some((pod.name.clone(), agent, request))
        })
        .collect();
    let answers = each(requests, |(pod, agent, request)| async move {
        let answer = ctx.agents.send(&agent, routes::START_CAPTURE, None, Some(&request)).await;
        (pod, request, answer)
    })
    .await;
    let end = expected_end(pc, now);
    let mut pods = Vec::new();
    let mut failed = Vec::new();
    for (pod, request, answer) in answers {
        pods.push(match answer {
            Ok(s) => decide::pod_result(&pod, &s),
            Err(e) => match decide::after_failure(Call::Start, &e, None, end, ctx.settings.unreachable_grace, now) {
                Verdict::Retry(record) => {
                    tracing::info!(capture = %pc.name_any(), %pod, error = %e, "the agent has not taken the capture; retrying");
                    lock(&ctx.unanswered).insert(request.id.clone(), (record, Some(request)));
                    decide::pod_starting(&pod)
                }
                Verdict::Fail { reason, message } => {
                    let result = decide::pod_failed(&pod, reason, message);
                    failed.push(result.clone());
                    result
                }
            },
        });
    }
    for f in &failed {
        event(ctx, pc, EventType::Warning, reasons::POD_FAILED, pod_failed_note(f)).await;
    }
    if let Some(previous) = status.last_run.take() {
        lock(&ctx.previous).insert(uid.to_owned(), previous.clone());
        status.history.insert(0, summary(&previous));
        status.history.truncate(usize::try_from(pc.spec.retention.history_limit).unwrap_or(10));
    }
    let result = decide::run_result(&pods);
    status.last_run = Some(CaptureRun {
        id: run.id.clone(),
        trigger: run.trigger,
        start_time: Time(now),
        completion_time: None,
        result,
        fired_by,
        pods,
    });
    event(
        ctx,
        pc,
        EventType::Normal,
        reasons::RUN_STARTED,
        format!("run {} ({:?}) started on {} pods", run.id, run.trigger, targets.len()),
    )
    .await;
    if result != RunResult::Running {
        finish_run(pc, ctx, status).await;
    }
}

fn summary(run: &CaptureRun) -> RunSummary {
    let count =
        |f: fn(&PodRunResult) -> bool| i32::try_from(run.pods.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX);
    RunSummary {
        id: run.id.clone(),
        trigger: run.trigger,
        start_time: run.start_time.clone(),
        completion_time: run.completion_time.clone(),
        result: run.result,
        pods_succeeded: count(|p| p.result == RunResult::Succeeded),
        pods_failed: count(|p| p.result != RunResult::Succeeded),
    }
}

/// When a run that started at `start` is expected to be over on every pod: the capture's
/// profiles (and any its triggers take) one after another.
fn expected_end(pc: &ProfileCapture, start: Timestamp) -> Timestamp {
    let mut profiles = pc.spec.profiles.clone();
    profiles.extend(pc.spec.triggers.iter().flat_map(|t| t.profiles.iter().copied()));
    profiles.sort();
    profiles.dedup();
    let length = decide::expected_length(&profiles, pc.spec.duration.as_std());
    start.checked_add(jiff::SignedDuration::try_from(length).unwrap_or_default()).unwrap_or(start)
}

/// The note of a `PodFailed` Event.
fn pod_failed_note(p: &PodRunResult) -> String {
    format!("pod {} ({}): {}", p.pod, p.reason.as_deref().unwrap_or_default(), p.error.as_deref().unwrap_or_default())
}

/// Asks each running pod's agent how its capture stands (or, while it has not taken it, to
/// take it), all at once within [`AGENT_CALLS_AT_ONCE`]. A transient failure keeps the pod
/// running and is retried with a backoff; a definitive answer or a silence past the budget
/// fails it with the reason ([`decide::after_failure`]).
async fn poll_run<A: AgentApi>(pc: &ProfileCapture, ctx: &Context<A>, status: &mut ProfileCaptureStatus) {
    let ns = pc.namespace().unwrap_or_default();
    let uid = pc.uid().unwrap_or_default();
    let now = Timestamp::now();
    let Some(run) = status.last_run.as_mut() else { return };
    let run_id = run.id.clone();
    let end = expected_end(pc, run.start_time.0);
    let mut failed = Vec::new();
    let mut asks = Vec::new();
    for p in run.pods.iter_mut().filter(|p| p.result == RunResult::Running) {
        let id = decide::capture_id(&uid, &run_id, &p.pod);
        let agent = match pod_named(ctx, &ns, &p.pod) {
            None => Err((reasons::POD_GONE, "the pod is gone")),
            Some(pod) => agent_of(&ns, &pod).ok_or((reasons::NO_AGENT, "the pod has no IP or agent")),
        };
        match agent {
            Err((reason, message)) => {
                lock(&ctx.unanswered).remove(&id);
                *p = decide::pod_failed(&p.pod, reason, message.into());
                failed.push(p.clone());
            }
            Ok(agent) => {
                let pending = lock(&ctx.unanswered).get(&id).cloned();
                match pending {
                    // Backing off.
                    Some((record, _)) if record.next_attempt > now => {}
                    Some((_, request)) => asks.push((p.pod.clone(), id, agent, request)),
                    None => asks.push((p.pod.clone(), id, agent, None)),
                }
            }
        }
    }
    let answers = each(asks, |(pod, id, agent, request)| async move {
        let answer = match &request {
            Some(start) => (Call::Start, ctx.agents.send(&agent, routes::START_CAPTURE, None, Some(start)).await),
            None => (Call::Poll, ctx.agents.send(&agent, routes::CAPTURE, Some(&id), None).await),
        };
        (pod, id, request, answer)
    })
    .await;
    let grace = ctx.settings.unreachable_grace;
    for (pod, id, request, (call, answer)) in answers {
        let Some(p) = run.pods.iter_mut().find(|p| p.pod == pod) else { continue };
        match answer {
            Ok(s) => {
                if lock(&ctx.unanswered).remove(&id).is_some() {
                    tracing::info!(capture = %pc.name_any(), %pod, "the agent answers again");
                }
                *p = decide::pod_result(&pod, &s);
            }
            Err(e) => {
                let previous = lock(&ctx.unanswered).get(&id).map(|(record, _)| record.clone());
                match decide::after_failure(call, &e, previous.as_ref(), end, grace, now) {
                    Verdict::Retry(record) => {
                        if previous.is_none() {
                            tracing::info!(capture = %pc.name_any(), %pod, error = %e, "no answer from the agent; retrying");
                        }
                        lock(&ctx.unanswered).insert(id, (record, request));
                    }
                    Verdict::Fail { reason, message } => {
                        lock(&ctx.unanswered).remove(&id);
                        *p = decide::pod_failed(&pod, reason, message);
                        failed.push(p.clone());
                    }
                }
            }
        }
    }
    for f in &failed {
        event(ctx, pc, EventType::Warning, reasons::POD_FAILED, pod_failed_note(f)).await;
    }
    run.result = decide::run_result(&run.pods);
    if run.result != RunResult::Running {
        finish_run(pc, ctx, status).await;
    }
}

async fn finish_run<A: AgentApi>(pc: &ProfileCapture, ctx: &Context<A>, status: &mut ProfileCaptureStatus) {
    let ns = pc.namespace().unwrap_or_default();
    let uid = pc.uid().unwrap_or_default();
    let previous = lock(&ctx.previous).get(&uid).cloned();
    let Some(run) = status.last_run.as_mut() else { return };
    run.completion_time = Some(now_time());
    // Compared with the previous run of the same capture, pod by pod and profile by profile.
    if let Some(prev) = &previous {
        for pod in &mut run.pods {
            for profile in &mut pod.profiles {
                let before = prev
                    .pods
                    .iter()
                    .find(|p| p.pod == pod.pod)
                    .and_then(|p| p.profiles.iter().find(|q| q.profile_type == profile.profile_type));
                if let Some(before) = before.filter(|b| !b.top.is_empty())
                    && !profile.top.is_empty()
                {
                    profile.compared_to_previous = Some(decide::compare(&prev.id, &before.top, &profile.top));
                }
            }
        }
    }
    if decide::fit_to_budget(run, decide::RUN_STATUS_BUDGET) {
        tracing::info!(run = %run.id, "run status trimmed to fit the object size budget");
    }
    let ok = run.pods.iter().filter(|p| p.result == RunResult::Succeeded).count();
    let profiles: usize = run.pods.iter().map(|p| p.profiles.iter().filter(|q| q.error.is_none()).count()).sum();
    for p in &run.pods {
        let label = match p.result {
            RunResult::Succeeded => "succeeded",
            RunResult::PartiallySucceeded => "partially_succeeded",
            _ => "failed",
        };
        ctx.metrics.captures.with_label_values(&[label]).inc();
    }
    let note =
        format!("run {} finished: {:?}, {} profiles from {}/{} pods", run.id, run.result, profiles, ok, run.pods.len());
    let kind = if run.result == RunResult::Succeeded { EventType::Normal } else { EventType::Warning };
    let pods_of_run: Vec<String> = run.pods.iter().map(|p| p.pod.clone()).collect();
    {
        let mut unanswered = lock(&ctx.unanswered);
        for pod in &pods_of_run {
            unanswered.remove(&decide::capture_id(&uid, &run.id, pod));
        }
    }
    event(ctx, pc, kind, reasons::RUN_FINISHED, note).await;
    // Retention: each agent prunes its own files beyond keepRuns.
    let request = RetentionRequest {
        capture: CaptureRef { namespace: ns.clone(), name: pc.name_any() },
        keep_runs: u32::try_from(pc.spec.retention.keep_runs).unwrap_or(5),
    };
    let mut agents = Vec::new();
    for name in &pods_of_run {
        agents.extend(pod_named(ctx, &ns, name).and_then(|p| agent_of(&ns, &p)));
    }
    let request = &request;
    for (agent, pruned) in each(agents, |agent| async move {
        let pruned = ctx.agents.send(&agent, routes::RETENTION, None, Some(request)).await;
        (agent, pruned)
    })
    .await
    {
        if let Err(reason) = pruned {
            tracing::warn!(pod = %agent.pod, %reason, "retention failed");
        }
    }
}

/// Phase and conditions from the rest of the status.
fn summarise(pc: &ProfileCapture, eligible: &[PodInfo], status: &mut ProfileCaptureStatus) {
    let generation = pc.metadata.generation;
    let run = status.last_run.as_ref();
    let running = run.is_some_and(|r| r.result == RunResult::Running);
    status.phase = Some(if running {
        CapturePhase::Running
    } else if pc.spec.suspend && pc.spec.schedule.is_some() {
        CapturePhase::Suspended
    } else {
        match run.map(|r| r.result) {
            Some(RunResult::Failed | RunResult::PartiallySucceeded) => CapturePhase::Failed,
            Some(_) if pc.spec.schedule.is_some() => CapturePhase::Scheduled,
            Some(_) => CapturePhase::Succeeded,
            None if pc.spec.schedule.is_some() => CapturePhase::Scheduled,
            None => CapturePhase::Pending,
        }
    });
    set_condition(
        &mut status.conditions,
        condition::PROGRESSING,
        running,
        if running { reasons::CAPTURING } else { reasons::IDLE },
        &run.filter(|_| running).map(|r| format!("run {} in progress", r.id)).unwrap_or_default(),
        generation,
    );
    let failed: Vec<String> = run
        .map(|r| {
            r.pods
                .iter()
                .filter(|p| matches!(p.result, RunResult::Failed | RunResult::PartiallySucceeded))
                .map(|p| match (&p.reason, &p.error) {
                    (Some(reason), Some(error)) => format!("{} ({reason}): {error}", p.pod),
                    (None, Some(error)) => format!("{}: {error}", p.pod),
                    (_, None) => format!("{}: some profiles failed", p.pod),
                })
                .collect()
        })
        .unwrap_or_default();
    let never = pc.spec.schedule.as_ref().and_then(|s| s.never_fires(Timestamp::now()));
    if let Some(why) = &never {
        set_condition(
            &mut status.conditions,
            condition::DEGRADED,
            true,
            reasons::SCHEDULE_NEVER_FIRES,
            why,
            generation,
        );
    } else if eligible.is_empty() {
        let reason = reasons::NO_ELIGIBLE_PODS;
        set_condition(&mut status.conditions, condition::DEGRADED, true, reason, NO_ELIGIBLE_PODS, generation);
    } else if !failed.is_empty() {
        let message = failed.join("; ");
        set_condition(&mut status.conditions, condition::DEGRADED, true, reasons::PODS_FAILED, &message, generation);
    } else {
        set_condition(&mut status.conditions, condition::DEGRADED, false, reasons::AS_EXPECTED, "", generation);
    }
    let ready = run.is_some_and(|r| r.result == RunResult::Succeeded)
        || (run.is_none() && pc.spec.schedule.is_some() && !eligible.is_empty() && never.is_none());
    let (reason, message) = match run.map(|r| r.result) {
        Some(RunResult::Succeeded) => (
            reasons::CAPTURED,
            format!("run {} captured every profile", run.map(|r| r.id.as_str()).unwrap_or_default()),
        ),
        Some(RunResult::Running) => (reasons::CAPTURING, String::new()),
        Some(_) => (
            reasons::RUN_FAILED,
            format!("run {} did not capture everything", run.map(|r| r.id.as_str()).unwrap_or_default()),
        ),
        None if never.is_some() => (reasons::SCHEDULE_NEVER_FIRES, never.clone().unwrap_or_default()),
        None if ready => (reasons::SCHEDULED, "waiting for the schedule".into()),
        None => (reasons::PENDING, "no run yet".into()),
    };
    set_condition(&mut status.conditions, condition::READY, ready, reason, &message, generation);
}

/// Adds `note` to the Ready condition's message.
fn append_to_ready(status: &mut ProfileCaptureStatus, note: &str) {
    if let Some(ready) = status.conditions.iter_mut().find(|c| c.type_ == condition::READY) {
        ready.message = if ready.message.is_empty() { note.to_owned() } else { format!("{}; {note}", ready.message) };
    }
}

/// Deletion: stop running captures, and with `deleteOnRemoval` remove the files. Best
/// effort, bounded by the agent timeout: an unreachable agent never blocks deletion. Needs
/// no valid spec: of a capture that cannot be read, its status and `spec.retention` are
/// read from the stored object.
async fn cleanup<A: AgentApi>(object: &Guarded<ProfileCapture>, ctx: &Context<A>) -> Result<Action> {
    let ns = object.namespace().unwrap_or_default();
    let uid = object.uid().unwrap_or_default();
    let name = object.name_any();
    let (status, delete_files) = match object.valid() {
        Ok(pc) => (pc.status.clone(), pc.spec.retention.delete_on_removal),
        Err(invalid) => (
            invalid.part::<ProfileCaptureStatus>("/status"),
            invalid.part("/spec/retention/deleteOnRemoval").unwrap_or(false),
        ),
    };
    let pods = pods_in(ctx, &ns, None);
    if let Some(run) = status.as_ref().and_then(|s| s.last_run.as_ref()).filter(|r| r.result == RunResult::Running) {
        let mut running = Vec::new();
        for p in run.pods.iter().filter(|p| p.result == RunResult::Running) {
            let id = decide::capture_id(&uid, &run.id, &p.pod);
            lock(&ctx.unanswered).remove(&id);
            if let Some(agent) = pods.iter().find(|x| x.name == p.pod).and_then(|pod| agent_of(&ns, pod)) {
                running.push((agent, id));
            }
        }
        each(running, |(agent, id)| async move {
            let _ = ctx.agents.send(&agent, routes::CANCEL_CAPTURE, Some(&id), None).await;
        })
        .await;
    }
    if delete_files {
        let request = RetentionRequest { capture: CaptureRef { namespace: ns.clone(), name }, keep_runs: 0 };
        let request = &request;
        let mut agents = Vec::new();
        for pod in &pods {
            agents.extend(agent_of(&ns, pod));
        }
        each(agents, |agent| async move {
            let _ = ctx.agents.send(&agent, routes::RETENTION, None, Some(request)).await;
        })
        .await;
    }
    lock(&ctx.previous).remove(&uid);
    ctx.status.forget(&uid);
    Ok(Action::await_change())
}

/// Runs the controller on the capture cache `(reader, writer)` until its streams end or, once
/// `shutdown` resolves, the reconciles in flight have finished (their status writes with
/// them).
pub async fn run<A: AgentApi>(
    ctx: Arc<Context<A>>,
    captures: Api<Guarded<ProfileCapture>>,
    (reader, writer): (reflector::Store<Guarded<ProfileCapture>>, reflector::store::Writer<Guarded<ProfileCapture>>),
    pod_events: impl futures::Stream<Item = Arc<Pod>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let selecting = reader.clone();
    let controller = Controller::for_stream(controller::objects(captures, writer), reader)
        .watches_shared_stream(pod_events, move |pod: Arc<Pod>| {
            let ns = pod.namespace().unwrap_or_default();
            controller::in_namespace_where(&selecting, &ns, |object: &Guarded<ProfileCapture>| {
                object
                    .valid()
                    .is_ok_and(|pc| PodSelector::new(&pc.spec.selector).is_ok_and(|s| s.matches(pod.labels())))
            })
        })
        // Bounded: thousands of captures must not all hold agent calls open at once.
        .with_config(kube::runtime::controller::Config::default().concurrency(32))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    controller::drive(controller).await;
}

#[cfg(test)]
mod tests {
    use biometrics_agent_api::{CaptureState, CaptureStatus, ErrorCode};
    use kube::runtime::watcher;
    use serde_json::json;

    use super::*;
    use crate::{
        agent_client::{AgentError, fake::FakeAgents},
        testing,
    };

    fn context(client: Client, pods: usize, agents: FakeAgents) -> Context<FakeAgents> {
        let (store, mut writer) = reflector::store::<Pod>();
        for i in 0..pods {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("api-{i}"), "namespace": testing::NS, "labels": {"app": "api"}},
                "spec": {"containers": [{"name": "app"}, {"name": "biometrics-agent"}]},
                "status": {"phase": "Running", "podIP": format!("10.0.{}.{}", i / 200, i % 200 + 1),
                    "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap();
            writer.apply_watcher_event(&watcher::Event::Apply(pod));
        }
        let settings = Settings {
            default_agent_port: 9477,
            metrics_interval: Duration::from_secs(30),
            default_max_pods: None,
            poll_interval: Duration::from_secs(1),
            alerting: Default::default(),
            unreachable_grace: Duration::from_secs(30),
        };
        Context::new(client, store, agents, SigningKey::generate().unwrap(), Metrics::default(), settings, "test")
    }

    /// A capture whose run `g1` is running on `pods` pods.
    fn running(pods: usize) -> (ProfileCapture, ProfileCaptureStatus) {
        let pc: ProfileCapture = serde_json::from_value(json!({
            "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
            "metadata": {"name": "checkout", "namespace": testing::NS, "uid": "0f3c9a2b-1111", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "target": {"port": 6060}, "profiles": ["cpu"],
                "duration": "30s"}
        }))
        .unwrap();
        let run = CaptureRun {
            id: "g1".into(),
            trigger: RunTrigger::Spec,
            start_time: Time(Timestamp::now()),
            completion_time: None,
            result: RunResult::Running,
            fired_by: vec![],
            pods: (0..pods).map(|i| decide::pod_starting(&format!("api-{i}"))).collect(),
        };
        (pc, ProfileCaptureStatus { last_run: Some(run), ..Default::default() })
    }

    fn capture(state: CaptureState) -> CaptureStatus {
        CaptureStatus {
            id: "x".into(),
            state,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: None,
            error: None,
            profiles: vec![],
            waiting: None,
        }
    }

    #[tokio::test]
    async fn the_pods_of_a_run_are_polled_together_within_the_bound() {
        let (_server, client) = testing::api_server().await;
        let agents = FakeAgents::default();
        agents.answer(routes::CAPTURE, Ok(capture(CaptureState::Running)));
        agents.take(Duration::from_millis(300));
        let ctx = context(client, 40, agents);
        let (pc, mut status) = running(40);
        let started = std::time::Instant::now();
        poll_run(&pc, &ctx, &mut status).await;
        let took = started.elapsed();
        assert_eq!(ctx.agents.calls().len(), 40);
        assert!(ctx.agents.calls().iter().all(|c| c.route == "poll_capture" && c.path.starts_with("/v1/captures/")));
        assert_eq!(ctx.agents.most_at_once(), AGENT_CALLS_AT_ONCE, "bounded, and used");
        // Three rounds of 16, not 40 calls in a row (12 s).
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(status.last_run.unwrap().result, RunResult::Running);
    }

    #[tokio::test]
    async fn a_blip_keeps_the_pod_running_and_a_404_fails_it_with_the_reason() {
        let (_server, client) = testing::api_server().await;
        let ctx = context(client.clone(), 1, FakeAgents::default());
        let (pc, mut status) = running(1);
        let busy = AgentError::Answered {
            status: 429,
            code: Some(ErrorCode::TooManyRequests),
            message: "too many concurrent requests; retry later".into(),
        };
        ctx.agents.answer(routes::CAPTURE, Err(busy));
        poll_run(&pc, &ctx, &mut status).await;
        let pod = &status.last_run.as_ref().unwrap().pods[0];
        assert_eq!((pod.result, pod.error.as_deref(), pod.reason.as_deref()), (RunResult::Running, None, None));
        // Backing off: the next poll a moment later does not ask yet.
        poll_run(&pc, &ctx, &mut status).await;
        assert_eq!(ctx.agents.calls().len(), 1);

        // The agent restarted and lost the capture: the pod fails now, saying why.
        let gone = AgentError::Answered {
            status: 404,
            code: Some(ErrorCode::NotFound),
            message: "no capture \"0f3c9a2b1111-g1-…\"".into(),
        };
        ctx.agents.answer(routes::CAPTURE, Err(gone));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        poll_run(&pc, &ctx, &mut status).await;
        let run = status.last_run.as_ref().unwrap();
        let pod = &run.pods[0];
        assert_eq!((pod.result, pod.reason.as_deref()), (RunResult::Failed, Some(reasons::CAPTURE_NOT_FOUND)));
        assert!(pod.error.as_deref().unwrap().contains("404"), "{pod:?}");
        assert_eq!(run.result, RunResult::Failed);
        assert!(run.completion_time.is_some());
        assert!(lock(&ctx.unanswered).is_empty(), "nothing left over");
        let events = testing::events_about(&client, "checkout", 2).await;
        let failed = events.iter().find(|e| e.reason.as_deref() == Some(reasons::POD_FAILED)).unwrap();
        assert!(failed.message.as_deref().unwrap().starts_with("pod api-0 (CaptureNotFound): "), "{failed:?}");
    }
}
