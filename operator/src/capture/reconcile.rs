//! Reconciling a ProfileCapture: observe (the freshest status, the pods, stale pods'
//! runtime samples and the running run's captures, from their agents) → decide (one pure
//! function, [`plan::plan`]) → act (stop and start runs, prune, Events; the agents' answers
//! folded in by the plan's pure functions) → write status (server-side apply, only when it
//! changed). A run never blocks a reconcile: it is started, then observed on requeues.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use biometrics_agent_api::{CaptureRequest, routes};
use biometrics_crds::{
    selector::PodSelector,
    v1alpha1::{CapturePhase, CaptureRun, ProfileCapture, ProfileCaptureStatus, RunResult, WorkloadKind},
};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller, controller::Action, events::EventType, finalizer::Event as Finalizer, reflector,
        reflector::ObjectRef,
    },
};

use super::{
    decide::{self, Call, Unanswered},
    plan, rollout, signals,
};
use crate::{
    agent_client::{AgentApi, AgentClient, AgentError},
    controller::{self, Failures},
    error::{Error, Result},
    guard::{self, Guarded, InvalidSpecStatus},
    metrics::Metrics,
    pods::{self, PodInfo, WatchedPod, agent_of},
    reasons::{self, condition},
    signing::SigningKey,
    status::{Events, StatusWriter, set_condition},
    workload,
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
    pub pods: reflector::Store<WatchedPod>,
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
    /// When each capture's pods were last sampled (by uid, then pod), for samples that
    /// changed nothing worth a status write.
    sampled: Mutex<HashMap<String, HashMap<String, Timestamp>>>,
    /// Pods of running runs whose agents have not answered, by capture id (with the start
    /// request while the agent has not accepted it).
    unanswered: Mutex<HashMap<String, (Unanswered, Option<CaptureRequest>)>>,
    /// Status writes, remembered until the watch delivers them.
    status: StatusWriter<ProfileCaptureStatus>,
    /// The captures, from the watch: which exist in a namespace, for retention.
    captures: reflector::Store<Guarded<ProfileCapture>>,
    /// The workloads whose rollouts captures watch, from watches.
    workloads: Workloads,
}

/// The workload caches a rollout comparison reads.
#[derive(Clone)]
pub struct Workloads {
    /// Deployments.
    pub deployments: reflector::Store<Deployment>,
    /// StatefulSets.
    pub statefulsets: reflector::Store<StatefulSet>,
    /// ReplicaSets (metadata only): which pod-template hash each Deployment revision has.
    pub replicasets: reflector::Store<ReplicaSet>,
}

impl Workloads {
    /// Empty caches, filled by no watch (for tests that watch no workload).
    pub fn unwatched() -> Self {
        let (deployments, mut d) = reflector::store();
        let (statefulsets, mut s) = reflector::store();
        let (replicasets, mut r) = reflector::store();
        d.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        s.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        r.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        Self { deployments, statefulsets, replicasets }
    }
}

impl<A: AgentApi> Context<A> {
    /// A context.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        pods: reflector::Store<WatchedPod>,
        captures: reflector::Store<Guarded<ProfileCapture>>,
        workloads: Workloads,
        agents: A,
        key: SigningKey,
        metrics: Metrics,
        settings: Settings,
        instance: &str,
    ) -> Self {
        let events = Events::new(client.clone(), instance);
        let caches_ready = pods::caches_ready(vec![
            pods::store_ready(&pods),
            pods::store_ready(&workloads.deployments),
            pods::store_ready(&workloads.statefulsets),
            pods::store_ready(&workloads.replicasets),
        ]);
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
            sampled: Mutex::default(),
            unanswered: Mutex::default(),
            status: StatusWriter::default(),
            captures,
            workloads,
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

/// One pass: observe → decide ([`plan::plan`], pure) → act → write status.
async fn apply<A: AgentApi>(pc: &ProfileCapture, ctx: &Context<A>) -> Result<Action> {
    let ns = pc.namespace().unwrap_or_default();
    let before = pc.status.clone().unwrap_or_default();
    ctx.key.ensure_published(ctx.client.clone(), &ns).await?;
    let selector = match PodSelector::new(&pc.spec.selector) {
        Ok(s) => s,
        Err(e) => {
            let generation = pc.metadata.generation;
            let mut status = ctx.status.freshest(pc, before.clone());
            status.phase = Some(CapturePhase::Failed);
            let message = e.to_string();
            let reason = reasons::INVALID_SELECTOR;
            set_condition(&mut status.conditions, condition::DEGRADED, true, reason, &message, generation);
            status.observed_generation = generation;
            ctx.status.write(&ctx.client, pc, &before, status).await?;
            return Err(Error::InvalidSpec { reason, message });
        }
    };
    let rules = ctx.settings.rules();
    let observed = observe(pc, ctx, &selector, &rules).await;
    tracing::debug!(capture = %pc.name_any(), seen = ?pc.resource_version(), "reconciling");
    let decided = plan::plan(&observed);
    let status = act(pc, ctx, &observed, decided).await;
    ctx.status.write(&ctx.client, pc, &before, status.clone()).await?;
    Ok(Action::requeue(plan::requeue(&observed, &status)))
}

impl Settings {
    /// What the decision needs of the settings.
    fn rules(&self) -> plan::Rules {
        plan::Rules {
            metrics_interval: self.metrics_interval,
            unreachable_grace: self.unreachable_grace,
            alerting: self.alerting.clone(),
            poll_interval: self.poll_interval,
        }
    }
}

/// Reads what the decision needs: the freshest status, the pods, stale pods' runtime
/// samples and where the running run's pods stand (their agents asked together, within
/// [`AGENT_CALLS_AT_ONCE`]; one backing off after a silence is not asked before its time).
async fn observe<'a, A: AgentApi>(
    pc: &'a ProfileCapture,
    ctx: &Context<A>,
    selector: &PodSelector,
    rules: &'a plan::Rules,
) -> plan::Observed<'a> {
    let ns = pc.namespace().unwrap_or_default();
    let uid = pc.uid().unwrap_or_default();
    let now = Timestamp::now();
    let status = ctx.status.freshest(pc, pc.status.clone().unwrap_or_default());
    let selected = pods_in(ctx, &ns, Some(selector));
    let mut eligible = pods::eligible(&selected, selector, None);
    let matching = eligible.len();
    if let Some(max) = decide::max_pods(pc, ctx.settings.default_max_pods) {
        eligible.truncate(max);
    }
    let eligible_for_rollout = eligible.clone();
    let mut sampled_at = lock(&ctx.sampled).remove(&uid).unwrap_or_default();
    sampled_at.retain(|pod, _| eligible.iter().any(|p| &p.name == pod));
    let stale: Vec<_> = plan::stale(&status, &sampled_at, &eligible, rules.metrics_interval, now)
        .into_iter()
        .filter_map(|pod| Some((pod.name.clone(), agent_of(&ns, pod)?)))
        .collect();
    // With request signals wanted, the agent reads the app's metrics endpoint too.
    let request = signals::metrics_source(&pc.spec).map(|metrics| biometrics_agent_api::RuntimeRequest { metrics });
    let request = &request;
    let samples = each(stale, |(pod, agent)| async move {
        let answer = match request {
            Some(body) => ctx.agents.send(&agent, routes::RUNTIME_WITH_REQUESTS, None, Some(body)).await,
            None => ctx.agents.send(&agent, routes::RUNTIME, None, None).await,
        };
        plan::Sample { pod, answer }
    })
    .await;
    let before = sampled_at.clone();
    sampled_at.extend(samples.iter().map(|s| (s.pod.clone(), now)));
    lock(&ctx.sampled).insert(uid.clone(), sampled_at);
    let mut asks = Vec::new();
    let mut progress = Vec::new();
    if let Some(run) = status.last_run.as_ref().filter(|r| r.result == RunResult::Running) {
        for p in run.pods.iter().filter(|p| p.result == RunResult::Running) {
            let id = decide::capture_id(&uid, &run.id, &p.pod);
            let agent = match pod_named(ctx, &ns, &p.pod) {
                None => Err((reasons::POD_GONE, "the pod is gone")),
                Some(pod) => agent_of(&ns, &pod).ok_or((reasons::NO_AGENT, "the pod has no IP or agent")),
            };
            let pending = lock(&ctx.unanswered).get(&id).cloned();
            match (agent, pending) {
                (Err((reason, message)), _) => {
                    progress.push(plan::Progress::Unreachable { pod: p.pod.clone(), id, reason, message })
                }
                (Ok(_), Some((record, _))) if record.next_attempt > now => progress.push(plan::Progress::BackingOff),
                (Ok(agent), pending) => {
                    let (previous, request) = pending.map_or((None, None), |(r, q)| (Some(r), q));
                    asks.push((p.pod.clone(), id, agent, previous, request));
                }
            }
        }
    }
    let polls = each(asks, |(pod, id, agent, previous, request)| async move {
        let (call, answer) = match &request {
            Some(start) => (Call::Start, ctx.agents.send(&agent, routes::START_CAPTURE, None, Some(start)).await),
            None => (Call::Poll, ctx.agents.send(&agent, routes::CAPTURE, Some(&id), None).await),
        };
        plan::Progress::Asked { pod, id, call, request, answer, previous }
    })
    .await;
    progress.extend(polls);
    let existing = ctx
        .captures
        .state()
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(ns.as_str()))
        .filter_map(|c| Some((c.name_any(), c.uid()?)))
        .collect();
    plan::Observed {
        capture: pc,
        status,
        selected: selected.iter().map(|p| p.name.clone()).collect(),
        eligible,
        matching,
        samples,
        sampled_at: before,
        progress,
        previous_run: lock(&ctx.previous).get(&uid).cloned(),
        existing,
        rollout: workload_view(ctx, pc, &ns, &eligible_for_rollout),
        rules,
        now,
    }
}

/// The `onRolloutOf` workload as the caches hold it: its revision and rollout, the hash of
/// that revision's pods, and which of `eligible` are its pods (its selector matches them).
fn workload_view<A: AgentApi>(
    ctx: &Context<A>,
    pc: &ProfileCapture,
    ns: &str,
    eligible: &[PodInfo],
) -> Option<rollout::WorkloadView> {
    let watched = rollout::watched(pc)?;
    let w = &ctx.workloads;
    let found = match watched.kind {
        WorkloadKind::Deployment => w.deployments.get(&ObjectRef::new(watched.name).within(ns)).and_then(|d| {
            let rollout = workload::deployment_rollout(&d);
            let revision = rollout.revision?;
            let replicasets: Vec<ReplicaSet> = w
                .replicasets
                .state()
                .iter()
                .filter(|r| r.namespace().as_deref() == Some(ns))
                .map(|r| (**r).clone())
                .collect();
            let hash = workload::deployment_revision_hashes(watched.name, &replicasets).remove(&revision);
            let selector = d.spec.as_ref().map(|s| s.selector.clone());
            let state = rollout::WorkloadState {
                revision,
                hash,
                complete: rollout.complete,
                paused: workload::deployment_paused(&d),
                recreate: workload::deployment_recreates(&d),
            };
            Some((state, selector))
        }),
        WorkloadKind::StatefulSet => w.statefulsets.get(&ObjectRef::new(watched.name).within(ns)).and_then(|s| {
            let rollout = workload::statefulset_rollout(&s);
            let revision = rollout.revision?;
            let state = rollout::WorkloadState {
                hash: Some(workload::statefulset_revision_hash(&revision)),
                revision,
                complete: rollout.complete,
                paused: false,
                recreate: false,
            };
            Some((state, s.spec.as_ref().map(|s| s.selector.clone())))
        }),
    };
    let Some((state, selector)) = found else { return Some(rollout::WorkloadView::Missing) };
    let selector = selector.and_then(|s| PodSelector::new(&s).ok());
    let mine: Vec<&PodInfo> =
        eligible.iter().filter(|p| selector.as_ref().is_some_and(|s| s.matches(&p.labels))).collect();
    let pods = mine
        .iter()
        .map(|p| rollout::WorkloadPod { name: p.name.clone(), hash: p.labels.get(watched.label).cloned() })
        .collect();
    let grace_seconds = mine
        .iter()
        .filter_map(|p| ctx.pods.get(&ObjectRef::new(&p.name).within(ns)))
        .filter_map(|p| p.spec.as_ref()?.termination_grace_period_seconds)
        .min();
    Some(rollout::WorkloadView::Seen { state, pods, grace_seconds })
}

/// Carries out `decided`: remembers the retries, publishes the Events, counts and prunes a
/// finished run, stops the run being replaced and starts the due one (their answers folded
/// in by the plan's pure functions); returns the status to write.
async fn act<A: AgentApi>(
    pc: &ProfileCapture,
    ctx: &Context<A>,
    observed: &plan::Observed<'_>,
    decided: plan::Plan,
) -> ProfileCaptureStatus {
    let plan::Plan { mut status, notes, retries, finished, stop, start } = decided;
    let uid = pc.uid().unwrap_or_default();
    remember(ctx, retries);
    publish(ctx, pc, notes).await;
    if let Some(finished) = finished {
        wrap_up(pc, ctx, finished).await;
    }
    if let Some(stop) = stop
        && let Some(start) = &start
    {
        let ns = pc.namespace().unwrap_or_default();
        let ns = ns.as_str();
        let answers = each(stop.pods, |(pod, id)| async move {
            let answer = match pod_named(ctx, ns, &pod).and_then(|p| agent_of(ns, &p)) {
                Some(agent) => ctx.agents.send(&agent, routes::STOP_CAPTURE, Some(&id), None).await,
                None => Err(AgentError::Request("the pod has no IP or agent".into())),
            };
            (pod, answer)
        })
        .await;
        let results = plan::stopped(&mut status, &answers, observed.now);
        count(ctx, &results);
        publish(ctx, pc, plan::stopped_note(&status, &start.run).into_iter().collect()).await;
    }
    if let Some(start) = start {
        let (previous, note) = plan::begin(pc, &mut status, &start, observed.now);
        if let Some(previous) = previous {
            lock(&ctx.previous).insert(uid.clone(), previous);
        }
        publish(ctx, pc, vec![note]).await;
        let ns = pc.namespace().unwrap_or_default();
        let requests: Vec<_> = start
            .requests
            .into_iter()
            .filter_map(|(pod, request)| {
                Some((pod_named(ctx, &ns, &pod).and_then(|p| agent_of(&ns, &p))?, pod, request))
            })
            .collect();
        let answers = each(requests, |(agent, pod, request)| async move {
            let answer = ctx.agents.send(&agent, routes::START_CAPTURE, None, Some(&request)).await;
            (pod, request, answer)
        })
        .await;
        let grace = ctx.settings.unreachable_grace;
        let (retries, notes) = plan::started(pc, &mut status, answers, grace, observed.now);
        remember(ctx, retries);
        publish(ctx, pc, notes).await;
        // Every pod refused at once: the run is over already.
        if status.last_run.as_ref().is_some_and(|r| r.result != RunResult::Running) {
            let previous = lock(&ctx.previous).get(&uid).cloned();
            let (finished, notes) = plan::finish(pc, &mut status, previous.as_ref(), &observed.existing, observed.now);
            publish(ctx, pc, notes).await;
            if let Some(finished) = finished {
                wrap_up(pc, ctx, finished).await;
            }
        }
    }
    plan::settle(observed, &mut status);
    status
}

/// Applies the plan's changes to the remembered silences.
fn remember<A: AgentApi>(ctx: &Context<A>, retries: Vec<plan::Retry>) {
    let mut unanswered = lock(&ctx.unanswered);
    for retry in retries {
        match retry {
            plan::Retry::Remember(id, record, request) => {
                if !unanswered.contains_key(&id) {
                    tracing::info!(capture = %id, error = %record.last_error, "no answer from the agent; retrying");
                }
                unanswered.insert(id, (record, request));
            }
            plan::Retry::Forget(id) => {
                unanswered.remove(&id);
            }
        }
    }
}

async fn publish<A: AgentApi>(ctx: &Context<A>, pc: &ProfileCapture, notes: Vec<plan::Note>) {
    for note in notes {
        let kind = if note.warning { EventType::Warning } else { EventType::Normal };
        event(ctx, pc, kind, note.reason, note.message).await;
    }
}

/// Counts pods' parts of finished runs by result.
fn count<A: AgentApi>(ctx: &Context<A>, results: &[RunResult]) {
    for result in results {
        let label = match result {
            RunResult::Succeeded => "succeeded",
            RunResult::PartiallySucceeded => "partially_succeeded",
            RunResult::Cancelled => "cancelled",
            _ => "failed",
        };
        ctx.metrics.captures.with_label_values(&[label]).inc();
    }
}

/// A finished run: counted, its silences forgotten, and its agents asked to prune (on a
/// shared volume whichever agent comes first removes the runs).
async fn wrap_up<A: AgentApi>(pc: &ProfileCapture, ctx: &Context<A>, finished: plan::Finished) {
    count(ctx, &finished.results);
    let ns = pc.namespace().unwrap_or_default();
    let mut agents = Vec::new();
    for name in &finished.pods {
        agents.extend(pod_named(ctx, &ns, name).and_then(|p| agent_of(&ns, &p)));
    }
    let request = &finished.retention;
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
    // Any agent of the namespace may remove the runs (every pod's files) from a shared
    // volume; all are asked, so per-pod volumes are cleared too. Where none answers, the
    // note each agent keeps on the volume lets a later retention remove them.
    if let Some(request) = decide::removal_request(&ns, &name, &uid, delete_files) {
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
    lock(&ctx.sampled).remove(&uid);
    ctx.status.forget(&uid);
    Ok(Action::await_change())
}

/// The workload watches a capture controller follows.
pub struct WorkloadEvents<D, S, R> {
    /// Deployments.
    pub deployments: D,
    /// StatefulSets.
    pub statefulsets: S,
    /// ReplicaSets.
    pub replicasets: R,
}

/// Whether the capture watches the rollouts of this workload.
fn watches(object: &Guarded<ProfileCapture>, kind: WorkloadKind, name: &str) -> bool {
    object.valid().is_ok_and(|pc| pc.spec.on_rollout_of.as_ref().is_some_and(|w| w.kind == kind && w.name == name))
}

/// Runs the controller on the capture cache `(reader, writer)` until its streams end or, once
/// `shutdown` resolves, the reconciles in flight have finished (their status writes with
/// them).
pub async fn run<A: AgentApi>(
    ctx: Arc<Context<A>>,
    captures: Api<Guarded<ProfileCapture>>,
    (reader, writer): (reflector::Store<Guarded<ProfileCapture>>, reflector::store::Writer<Guarded<ProfileCapture>>),
    pod_events: impl futures::Stream<Item = Arc<WatchedPod>> + Send + 'static,
    workload_events: WorkloadEvents<
        impl futures::Stream<Item = Arc<Deployment>> + Send + 'static,
        impl futures::Stream<Item = Arc<StatefulSet>> + Send + 'static,
        impl futures::Stream<Item = Arc<ReplicaSet>> + Send + 'static,
    >,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let selecting = reader.clone();
    let (r1, r2, r3) = (reader.clone(), reader.clone(), reader.clone());
    let controller = Controller::for_stream(controller::objects(captures, writer), reader)
        .watches_shared_stream(pod_events, move |pod: Arc<WatchedPod>| {
            let ns = pod.namespace().unwrap_or_default();
            controller::in_namespace_where(&selecting, &ns, |object: &Guarded<ProfileCapture>| {
                object
                    .valid()
                    .is_ok_and(|pc| PodSelector::new(&pc.spec.selector).is_ok_and(|s| s.matches(pod.labels())))
            })
        })
        .watches_shared_stream(workload_events.deployments, move |d: Arc<Deployment>| {
            let (ns, name) = (d.namespace().unwrap_or_default(), d.name_any());
            controller::in_namespace_where(&r1, &ns, |c| watches(c, WorkloadKind::Deployment, &name))
        })
        .watches_shared_stream(workload_events.statefulsets, move |s: Arc<StatefulSet>| {
            let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
            controller::in_namespace_where(&r2, &ns, |c| watches(c, WorkloadKind::StatefulSet, &name))
        })
        // A new ReplicaSet tells a Deployment's new pods apart: its owner's captures look again.
        .watches_shared_stream(workload_events.replicasets, move |r: Arc<ReplicaSet>| {
            let ns = r.namespace().unwrap_or_default();
            let owners: Vec<String> =
                r.owner_references().iter().filter(|o| o.kind == "Deployment").map(|o| o.name.clone()).collect();
            controller::in_namespace_where(&r3, &ns, |c| owners.iter().any(|o| watches(c, WorkloadKind::Deployment, o)))
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
    use biometrics_crds::v1alpha1::RunTrigger;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::watcher;
    use serde_json::json;

    use super::*;
    use crate::{
        agent_client::{AgentError, fake::FakeAgents},
        testing,
    };

    fn context(client: Client, pods: usize, agents: FakeAgents) -> Context<FakeAgents> {
        let (store, mut writer) = reflector::store::<WatchedPod>();
        for i in 0..pods {
            let pod: WatchedPod = serde_json::from_value(json!({
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
        let (captures, _) = reflector::store();
        let key = SigningKey::generate().unwrap();
        Context::new(client, store, captures, Workloads::unwatched(), agents, key, Metrics::default(), settings, "test")
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
        // Every pod sampled just now: no runtime call in these passes.
        let sampled = (0..pods)
            .map(|i| {
                serde_json::from_value(json!({"name": format!("api-{i}"), "sampleTime": Timestamp::now()})).unwrap()
            })
            .collect();
        let status = ProfileCaptureStatus {
            last_run: Some(run),
            pods: sampled,
            spec_run_generation: Some(1),
            ..Default::default()
        };
        (pc, status)
    }

    /// One pass without the status write: observe, plan, act. The capture carries `status`
    /// as the watch delivered it; the status to write is returned.
    async fn pass(
        pc: &mut ProfileCapture,
        status: ProfileCaptureStatus,
        ctx: &Context<FakeAgents>,
    ) -> ProfileCaptureStatus {
        pc.status = Some(status);
        let selector = PodSelector::new(&pc.spec.selector).unwrap();
        let rules = ctx.settings.rules();
        let observed = observe(pc, ctx, &selector, &rules).await;
        let decided = plan::plan(&observed);
        act(pc, ctx, &observed, decided).await
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
        let (mut pc, status) = running(40);
        let started = std::time::Instant::now();
        let status = pass(&mut pc, status, &ctx).await;
        let took = started.elapsed();
        assert_eq!(ctx.agents.calls().len(), 40);
        assert!(ctx.agents.calls().iter().all(|c| c.route == "poll_capture" && c.path.starts_with("/v1/captures/")));
        assert_eq!(ctx.agents.most_at_once(), AGENT_CALLS_AT_ONCE, "bounded, and used");
        // Three rounds of 16, not 40 calls in a row (12 s).
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(status.last_run.unwrap().result, RunResult::Running);
    }

    fn stopped_with_heap(pod: &str) -> CaptureStatus {
        let mut stopped = capture(CaptureState::Failed);
        stopped.error = Some("stopped on request before it finished; the profiles it finished are kept".into());
        stopped.profiles = vec![
            biometrics_agent_api::ProfileOutcome {
                profile_type: Some(biometrics_crds::profile::ProfileType::Heap),
                path: Some(format!("{}/checkout/g1/{pod}/heap.pb.gz", testing::NS)),
                ..Default::default()
            },
            biometrics_agent_api::ProfileOutcome {
                profile_type: Some(biometrics_crds::profile::ProfileType::Cpu),
                error: Some("cancelled".into()),
                ..Default::default()
            },
        ];
        stopped
    }

    /// A new `capture-now` value while run `g1` runs, under `policy`.
    fn asked_again(policy: &str, pods: usize) -> (ProfileCapture, ProfileCaptureStatus) {
        let (mut pc, status) = running(pods);
        pc.spec.concurrency_policy = serde_json::from_value(json!(policy)).unwrap();
        pc.metadata.annotations = Some([(biometrics_crds::CAPTURE_NOW_ANNOTATION.to_owned(), "2".to_owned())].into());
        (pc, status)
    }

    #[tokio::test]
    async fn replace_stops_the_running_run_keeps_its_profiles_and_starts_the_new_one() {
        let (_server, client) = testing::api_server().await;
        let ctx = context(client.clone(), 2, FakeAgents::default());
        ctx.agents.answer(routes::CAPTURE, Ok(capture(CaptureState::Running)));
        ctx.agents.answer(routes::STOP_CAPTURE, Ok(stopped_with_heap("api-0")));
        ctx.agents.answer(routes::START_CAPTURE, Ok(capture(CaptureState::Running)));
        let (mut pc, status) = asked_again("Replace", 2);
        let status = pass(&mut pc, status, &ctx).await;

        let stops: Vec<_> = ctx.agents.calls().into_iter().filter(|c| c.route == "stop_capture").collect();
        assert_eq!(stops.len(), 2, "each running pod's agent is told");
        assert!(stops.iter().all(|c| c.path.ends_with("/stop") && c.path.contains("-g1-")), "{stops:?}");
        let run = status.last_run.as_ref().unwrap();
        assert_eq!((run.trigger, run.result), (RunTrigger::Manual, RunResult::Running), "the new run started");
        let cancelled = &status.history[0];
        assert_eq!((cancelled.id.as_str(), cancelled.result), ("g1", RunResult::Cancelled));
        assert!(cancelled.completion_time.is_some());
        assert_eq!(status.handled_capture_now.as_deref(), Some("2"));
        let starts = ctx.agents.calls().iter().filter(|c| c.route == "start_capture").count();
        assert_eq!(starts, 2);
        let events = testing::events_about(&client, "checkout", 2).await;
        let note = events.iter().find(|e| e.reason.as_deref() == Some(reasons::RUN_CANCELLED)).unwrap();
        assert_eq!(note.type_.as_deref(), Some("Normal"));
        assert!(note.message.as_deref().unwrap().contains("2 finished profiles kept from 2 pods"), "{note:?}");
    }

    #[test]
    fn a_cancelled_run_lists_the_profiles_each_pod_finished() {
        let stopped = stopped_with_heap("api-0");
        let pod = decide::pod_cancelled("api-0", Ok(&stopped));
        assert_eq!((pod.result, pod.reason.as_deref(), pod.error.as_deref()), (RunResult::Cancelled, None, None));
        assert_eq!(pod.profiles.len(), 2);
        assert_eq!(pod.profiles[0].path.as_deref(), Some("shop/checkout/g1/api-0/heap.pb.gz"));
        let finished = decide::pod_cancelled("api-1", Ok(&capture(CaptureState::Succeeded)));
        assert_ne!(finished.result, RunResult::Cancelled, "a capture that finished before the stop keeps its result");
        let silent = decide::pod_cancelled("api-2", Err(&AgentError::Timeout(Duration::from_secs(5))));
        assert_eq!(silent.result, RunResult::Cancelled);
        assert!(silent.error.unwrap().starts_with("the agent could not be told to stop"));
    }

    #[tokio::test]
    async fn forbid_lets_the_running_run_finish() {
        let (_server, client) = testing::api_server().await;
        let ctx = context(client, 2, FakeAgents::default());
        ctx.agents.answer(routes::CAPTURE, Ok(capture(CaptureState::Running)));
        let (mut pc, status) = asked_again("Forbid", 2);
        let status = pass(&mut pc, status, &ctx).await;
        assert!(ctx.agents.calls().iter().all(|c| c.route == "poll_capture"), "{:?}", ctx.agents.calls());
        let run = status.last_run.as_ref().unwrap();
        assert_eq!((run.id.as_str(), run.result), ("g1", RunResult::Running));
        assert!(status.history.is_empty());
    }

    #[tokio::test]
    async fn a_blip_keeps_the_pod_running_and_a_404_fails_it_with_the_reason() {
        let (_server, client) = testing::api_server().await;
        let ctx = context(client.clone(), 1, FakeAgents::default());
        let (mut pc, status) = running(1);
        let busy = AgentError::Answered {
            status: 429,
            code: Some(ErrorCode::TooManyRequests),
            message: "too many concurrent requests; retry later".into(),
        };
        ctx.agents.answer(routes::CAPTURE, Err(busy));
        let status = pass(&mut pc, status, &ctx).await;
        let pod = &status.last_run.as_ref().unwrap().pods[0];
        assert_eq!((pod.result, pod.error.as_deref(), pod.reason.as_deref()), (RunResult::Running, None, None));
        // Backing off: the next poll a moment later does not ask yet.
        let status = pass(&mut pc, status, &ctx).await;
        assert_eq!(ctx.agents.calls().len(), 1);

        // The agent restarted and lost the capture: the pod fails now, saying why.
        let gone = AgentError::Answered {
            status: 404,
            code: Some(ErrorCode::NotFound),
            message: "no capture \"0f3c9a2b1111-g1-…\"".into(),
        };
        ctx.agents.answer(routes::CAPTURE, Err(gone));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let status = pass(&mut pc, status, &ctx).await;
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
