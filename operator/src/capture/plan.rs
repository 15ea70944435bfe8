//! A capture's reconcile decision as one pure function. `reconcile` observes (the capture,
//! its freshest status, its pods, what their agents answered: runtime samples and the
//! running run's captures) into [`Observed`]; [`plan`] turns that into a [`Plan`]: the
//! status with those answers folded in, the run to stop and the run to start, the Events,
//! the retries to remember and the retention to ask for; `reconcile` carries it out. What
//! the agents answer to the stop and the start is folded in by [`stopped`], [`begin`] and
//! [`started`], a finished run by [`finish`], and [`settle`] gives phase and conditions.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use biometrics_agent_api::{CaptureRequest, CaptureStatus, RetentionRequest, RuntimeSample};
use biometrics_crds::{
    profile::ProfileType,
    v1alpha1::{
        CapturePhase, CaptureRun, PodRunResult, PodRuntime, ProfileCapture, ProfileCaptureStatus, RunResult,
        RunTrigger, ThresholdFiring, TriggerFire,
    },
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    decide::{self, Call, DueRun, Unanswered, Verdict},
    rollout, signals, thresholds,
};
use crate::{
    agent_client::AgentError,
    pods::{self, NO_ELIGIBLE_PODS, PodInfo},
    reasons::{self, condition},
    status::set_condition,
};

/// What the decision needs to know besides the capture.
#[derive(Debug, Clone)]
pub struct Rules {
    /// How long a runtime sample stays fresh.
    pub metrics_interval: Duration,
    /// How long past a capture's expected end a silent agent is retried.
    pub unreachable_grace: Duration,
    /// Cluster-wide alert thresholds.
    pub alerting: crate::config::Alerting,
    /// How often a running run is polled.
    pub poll_interval: Duration,
}

/// A runtime sample read this pass.
#[derive(Debug)]
pub struct Sample {
    /// The pod.
    pub pod: String,
    /// What its agent answered.
    pub answer: Result<RuntimeSample, AgentError>,
}

/// Where one pod of the running run stands, as observed this pass.
// Made and read once per pass, a few per pod: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Progress {
    /// Its agent was asked (`call`), with the start request when it had not taken the
    /// capture yet, and the record of its earlier silence.
    Asked {
        /// The pod.
        pod: String,
        /// Its capture id.
        id: String,
        /// Which call.
        call: Call,
        /// The start request, while the agent has not taken the capture.
        request: Option<CaptureRequest>,
        /// The answer.
        answer: Result<CaptureStatus, AgentError>,
        /// Its earlier unanswered calls in a row.
        previous: Option<Unanswered>,
    },
    /// Its agent is not asked before its retry time.
    BackingOff,
    /// The pod is gone or has no agent: the reason ([`reasons`]) and message.
    Unreachable {
        /// The pod.
        pod: String,
        /// Its capture id.
        id: String,
        /// The reason.
        reason: &'static str,
        /// The message.
        message: &'static str,
    },
}

/// What a reconcile observed.
#[derive(Debug)]
pub struct Observed<'a> {
    /// The capture.
    pub capture: &'a ProfileCapture,
    /// Its freshest status.
    pub status: ProfileCaptureStatus,
    /// The pods the selector matches (eligible or not).
    pub selected: Vec<String>,
    /// The pods a run profiles (eligible, within `maxPods`), by name.
    pub eligible: Vec<PodInfo>,
    /// How many eligible pods matched before `maxPods`.
    pub matching: usize,
    /// Pods whose agent was asked for a runtime sample this pass.
    pub samples: Vec<Sample>,
    /// When each pod was last sampled, where that is later than its status shows.
    pub sampled_at: HashMap<String, Timestamp>,
    /// The running run's pods.
    pub progress: Vec<Progress>,
    /// The capture's previous finished run, to compare a finishing run with.
    pub previous_run: Option<CaptureRun>,
    /// Every capture of the namespace, as (name, uid), for retention.
    pub existing: Vec<(String, String)>,
    /// The `onRolloutOf` workload, when the capture has one.
    pub rollout: Option<rollout::WorkloadView>,
    /// The rules.
    pub rules: &'a Rules,
    /// Now.
    pub now: Timestamp,
}

/// An Event to publish about the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Warning, or Normal.
    pub warning: bool,
    /// Its reason ([`reasons`]).
    pub reason: &'static str,
    /// Its message.
    pub message: String,
}

impl Note {
    fn normal(reason: &'static str, message: String) -> Self {
        Self { warning: false, reason, message }
    }

    fn warning(reason: &'static str, message: String) -> Self {
        Self { warning: true, reason, message }
    }
}

/// A change to the remembered silences of agents, by capture id.
// Made and read once per pass, a few per pod: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Ask again at the record's time (re-sending the start request when there is one).
    Remember(String, Unanswered, Option<CaptureRequest>),
    /// The agent answered, or its pod has failed: forget it.
    Forget(String),
}

/// A run that finished this pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Each pod's result, for the metrics.
    pub results: Vec<RunResult>,
    /// The pods whose agents are asked to prune.
    pub pods: Vec<String>,
    /// What they are asked.
    pub retention: RetentionRequest,
}

/// The run to stop so that the due one can take its place (`concurrencyPolicy: Replace`).
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    /// Its pods still running and their capture ids.
    pub pods: Vec<(String, String)>,
}

/// The run to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// Which, and why.
    pub run: DueRun,
    /// Each pod's start request.
    pub requests: Vec<(String, CaptureRequest)>,
    /// For a threshold run, what fired it.
    pub fired_by: Vec<ThresholdFiring>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The status, with this pass's observations folded in.
    pub status: ProfileCaptureStatus,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// Silences to remember or forget.
    pub retries: Vec<Retry>,
    /// The running run finished: count it and prune.
    pub finished: Option<Finished>,
    /// Stop the running run first.
    pub stop: Option<Stop>,
    /// Start a run.
    pub start: Option<Start>,
}

/// Decides what this pass does.
pub fn plan(o: &Observed<'_>) -> Plan {
    let pc = o.capture;
    let mut plan = Plan {
        status: o.status.clone(),
        notes: Vec::new(),
        retries: Vec::new(),
        finished: None,
        stop: None,
        start: None,
    };
    plan.status.selected_pods = Some(i32::try_from(o.eligible.len()).unwrap_or(i32::MAX));
    fold_samples(o, &mut plan);
    if running(&plan.status).is_some() {
        fold_progress(o, &mut plan);
    }
    // Rollout runs come first, and queue behind a running run whatever concurrencyPolicy says.
    if let Some(view) = &o.rollout {
        let status = &mut plan.status;
        let step = rollout::step(pc, &mut status.rollouts, view, status.last_run.as_ref(), &status.pods, o.now);
        plan.notes.extend(step.events.into_iter().map(|e| Note {
            warning: e.warning,
            reason: e.reason,
            message: e.message,
        }));
        if let Some(run) = step.run {
            start_rollout(o, run, &mut plan);
            return plan;
        }
    }
    let names = o.eligible.iter().map(|p| p.name.as_str());
    let due =
        decide::due(pc, &plan.status, o.now).or_else(|| thresholds::threshold_run(pc, &plan.status, names, o.now));
    let Some(run) = due else { return plan };
    match running(&plan.status) {
        None => prepare_start(o, run, &mut plan),
        // A rollout run is never replaced: its pods may be gone by the time it could run again.
        Some(current)
            if current.trigger != RunTrigger::Rollout
                && decide::replaces(pc.spec.concurrency_policy, &current.id, &run, o.eligible.len()) =>
        {
            let uid = pc.metadata.uid.as_deref().unwrap_or_default();
            let pods = current
                .pods
                .iter()
                .filter(|p| p.result == RunResult::Running)
                .map(|p| (p.pod.clone(), decide::capture_id(uid, &current.id, &p.pod)))
                .collect::<Vec<_>>();
            prepare_start(o, run, &mut plan);
            if plan.start.is_some() {
                plan.retries.extend(pods.iter().map(|(_, id)| Retry::Forget(id.clone())));
                plan.stop = Some(Stop { pods });
            }
        }
        // Forbid: the running run finishes first.
        Some(_) => {}
    }
    plan
}

fn running(status: &ProfileCaptureStatus) -> Option<&CaptureRun> {
    status.last_run.as_ref().filter(|r| r.result == RunResult::Running)
}

/// The eligible pods whose runtime sample is older than the interval (or missing): their
/// agents are asked for a new one. A pod's last sample is the later of the one its status
/// shows and the one `sampled_at` remembers (taken but not written, as it changed nothing
/// worth a write: see [`worth_writing`]).
pub fn stale<'p>(
    status: &ProfileCaptureStatus,
    sampled_at: &HashMap<String, Timestamp>,
    eligible: &'p [PodInfo],
    interval: Duration,
    now: Timestamp,
) -> Vec<&'p PodInfo> {
    let interval = jiff::SignedDuration::try_from(interval).unwrap_or_default();
    eligible
        .iter()
        .filter(|pod| {
            let shown =
                status.pods.iter().find(|p| p.name == pod.name).and_then(|p| p.sample_time.as_ref()).map(|t| t.0);
            let sampled = shown.into_iter().chain(sampled_at.get(&pod.name).copied()).max();
            !sampled.is_some_and(|t| t.checked_add(interval).is_ok_and(|end| end > now))
        })
        .collect()
}

/// How long a pod's runtime entry may go unwritten while its samples change nothing worth
/// a write (the kubelet's node status report frequency: a heartbeat every five minutes).
pub const STATUS_REPORT_INTERVAL: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// How far a figure may move before the new sample is worth a status write.
const WORTH_WRITING_CHANGE: f64 = 0.10;

/// Whether a new runtime entry is worth a status write over the one shown: its levels,
/// error or any non-numeric field differ, a figure moved by more than 10 %, or the shown one
/// is older than [`STATUS_REPORT_INTERVAL`]. Every sample is still judged against the
/// thresholds when it is taken; only the write waits. Without this, a capture's status is
/// patched every `metricsInterval` for each sample's new time alone (a thousand patches a
/// minute at 500 captures).
pub fn worth_writing(shown: &PodRuntime, new: &PodRuntime, now: Timestamp) -> bool {
    let shown_at = shown.sample_time.as_ref().map(|t| t.0);
    if shown_at.is_none_or(|t| t.checked_add(STATUS_REPORT_INTERVAL).is_ok_and(|due| due <= now)) {
        return true;
    }
    let figures =
        |r: &PodRuntime| serde_json::to_value(PodRuntime { sample_time: None, ..r.clone() }).unwrap_or_default();
    !close(&figures(shown), &figures(new))
}

/// Equal but for numbers within [`WORTH_WRITING_CHANGE`] of each other.
fn close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= WORTH_WRITING_CHANGE * x.abs().max(y.abs())
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| close(v, w)),
        _ => a == b,
    }
}

/// The entry the status shows for a pod just sampled: the new one when it is worth a
/// write, else the one shown.
fn newer(shown: Option<&PodRuntime>, new: PodRuntime, now: Timestamp) -> PodRuntime {
    match shown {
        Some(shown) if !worth_writing(shown, &new, now) => shown.clone(),
        _ => new,
    }
}

/// The pods' runtime entries: fresh ones kept, new samples judged (with their Events).
fn fold_samples(o: &Observed<'_>, plan: &mut Plan) {
    let pc = o.capture;
    let port = u16::try_from(pc.spec.target.port).unwrap_or(0);
    let limits = thresholds::effective_thresholds(&pc.spec.thresholds, &o.rules.alerting);
    let requests = signals::thresholds(&pc.spec, &o.rules.alerting);
    let stale: HashSet<&str> = stale(&o.status, &o.sampled_at, &o.eligible, o.rules.metrics_interval, o.now)
        .into_iter()
        .map(|p| p.name.as_str())
        .collect();
    let mut entries = Vec::new();
    for pod in &o.eligible {
        let previous = o.status.pods.iter().find(|p| p.name == pod.name);
        if !stale.contains(pod.name.as_str()) {
            entries.extend(previous.cloned());
            continue;
        }
        // A stale pod whose agent could not be asked (no IP) drops out until it can be.
        let Some(sample) = o.samples.iter().find(|s| s.pod == pod.name) else { continue };
        let memory_unknown = pods::memory_limit_missing(pod, port);
        match &sample.answer {
            Ok(s) => {
                if let Some(why) = &memory_unknown
                    && previous.is_none_or(|p| p.memory_percent_unknown.is_none())
                {
                    let message = format!("pod {}: memory thresholds not judged: {why}", pod.name);
                    plan.notes.push(Note::warning(reasons::MEMORY_NOT_JUDGED, message));
                }
                let judged =
                    thresholds::judge(&pod.name, s.clone(), (&limits, &requests), memory_unknown, previous, o.now);
                if let Some(level) = judged.crossed {
                    let message = format!("pod {} reached {level}: {}", pod.name, judged.described);
                    plan.notes.push(Note::warning(reasons::THRESHOLD_CROSSED, message));
                }
                entries.push(newer(previous, judged.entry, o.now));
            }
            Err(e) => entries.push(newer(
                previous,
                thresholds::unsampled(&pod.name, e.to_string(), memory_unknown, o.now),
                o.now,
            )),
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    plan.status.pods = entries;
    let levels = plan.status.pods.iter().filter_map(|p| p.levels.as_ref()).map(thresholds::worst);
    plan.status.threshold_level = Some(levels.max().unwrap_or(biometrics_crds::threshold::ThresholdLevel::OK));
    plan.status.requests =
        signals::wants_requests(&pc.spec).then(|| signals::capture_requests(&plan.status.pods, &requests));
}

/// The running run's pods from what their agents answered: a transient failure keeps a pod
/// running and is retried with a backoff; a definitive answer or a silence past the budget
/// fails it with the reason ([`decide::after_failure`]). A run whose pods are all done
/// finishes.
fn fold_progress(o: &Observed<'_>, plan: &mut Plan) {
    let pc = o.capture;
    let Some(run) = plan.status.last_run.as_mut() else { return };
    let end = decide::expected_end(pc, run.start_time.0);
    let mut failed = Vec::new();
    for progress in &o.progress {
        match progress {
            Progress::BackingOff => {}
            Progress::Unreachable { pod, id, reason, message } => {
                let Some(p) = run.pods.iter_mut().find(|p| &p.pod == pod) else { continue };
                plan.retries.push(Retry::Forget(id.clone()));
                *p = decide::pod_failed(pod, reason, (*message).to_owned());
                failed.push(p.clone());
            }
            Progress::Asked { pod, id, call, request, answer, previous } => {
                let Some(p) = run.pods.iter_mut().find(|p| &p.pod == pod) else { continue };
                match answer {
                    Ok(s) => {
                        if previous.is_some() {
                            plan.retries.push(Retry::Forget(id.clone()));
                        }
                        *p = decide::pod_result(pod, s);
                    }
                    Err(e) => {
                        let grace = o.rules.unreachable_grace;
                        match decide::after_failure(*call, e, previous.as_ref(), end, grace, o.now) {
                            Verdict::Retry(record) => {
                                plan.retries.push(Retry::Remember(id.clone(), record, request.clone()));
                            }
                            Verdict::Fail { reason, message } => {
                                plan.retries.push(Retry::Forget(id.clone()));
                                *p = decide::pod_failed(pod, reason, message);
                                failed.push(p.clone());
                            }
                        }
                    }
                }
            }
        }
    }
    plan.notes.extend(failed.iter().map(|f| Note::warning(reasons::POD_FAILED, pod_failed_note(f))));
    run.result = decide::run_result(&run.pods);
    if run.result != RunResult::Running {
        let (finished, notes) = finish(pc, &mut plan.status, o.previous_run.as_ref(), &o.existing, o.now);
        plan.finished = finished;
        plan.notes.extend(notes);
    }
}

/// The note of a `PodFailed` Event.
pub fn pod_failed_note(p: &PodRunResult) -> String {
    format!("pod {} ({}): {}", p.pod, p.reason.as_deref().unwrap_or_default(), p.error.as_deref().unwrap_or_default())
}

/// Closes the last run: its completion time, each profile compared with the previous run,
/// its detail fitted to the status budget, the `RunFinished` Event and the retention to ask
/// for.
pub fn finish(
    pc: &ProfileCapture,
    status: &mut ProfileCaptureStatus,
    previous: Option<&CaptureRun>,
    existing: &[(String, String)],
    now: Timestamp,
) -> (Option<Finished>, Vec<Note>) {
    let Some(run) = status.last_run.as_mut() else { return (None, Vec::new()) };
    run.completion_time = Some(Time(now));
    // Compared with the previous run of the same capture, pod by pod and profile by profile.
    if let Some(prev) = previous {
        for pod in &mut run.pods {
            for profile in &mut pod.profiles {
                let before = prev
                    .pods
                    .iter()
                    .find(|p| p.pod == pod.pod)
                    .and_then(|p| p.profiles.iter().find(|q| q.profile_type == profile.profile_type));
                if let Some(before) = before.filter(|b| !b.top.is_empty())
                    && let (Some(before_total), Some(total)) = (before.total, profile.total)
                    && !profile.top.is_empty()
                {
                    let (was, is) = (
                        (decide::compared_top(&before.top), before_total),
                        (decide::compared_top(&profile.top), total),
                    );
                    profile.compared_to_previous = Some(decide::compare(&prev.id, was, is));
                }
            }
        }
    }
    decide::fit_to_budget(run, decide::RUN_STATUS_BUDGET);
    let ok = run.pods.iter().filter(|p| p.result == RunResult::Succeeded).count();
    let profiles: usize = run.pods.iter().map(|p| p.profiles.iter().filter(|q| q.error.is_none()).count()).sum();
    let message =
        format!("run {} finished: {:?}, {} profiles from {}/{} pods", run.id, run.result, profiles, ok, run.pods.len());
    let note = Note { warning: run.result != RunResult::Succeeded, reason: reasons::RUN_FINISHED, message };
    let results = run.pods.iter().map(|p| p.result).collect();
    let pods = run.pods.iter().map(|p| p.pod.clone()).collect();
    let retention = decide::retention_request(pc, status, existing.iter().map(|(n, u)| (n.as_str(), u.as_str())));
    (Some(Finished { results, pods, retention }), vec![note])
}

/// Prepares the due `run`: its pods and profiles (for a threshold run, the pods whose
/// triggers fire, with those triggers' profiles, their fires recorded), what the status
/// records of why it ran, and the start requests.
fn prepare_start(o: &Observed<'_>, run: DueRun, plan: &mut Plan) {
    let pc = o.capture;
    let status = &mut plan.status;
    let mut targets: Vec<(&PodInfo, Vec<ProfileType>)> = Vec::new();
    let mut fired_by = Vec::new();
    if run.trigger == RunTrigger::Threshold {
        let runtime = thresholds::effective_thresholds(&pc.spec.thresholds, &o.rules.alerting);
        let requests = signals::thresholds(&pc.spec, &o.rules.alerting);
        let names = o.eligible.iter().map(|p| p.name.as_str());
        for (pod, fired) in thresholds::fired_triggers(pc, status, names, o.now) {
            let entry = status.pods.iter().find(|p| p.name == pod).cloned().unwrap_or_default();
            let levels = entry.levels.clone().unwrap_or_default();
            for t in &fired {
                status.trigger_fires.retain(|f| !(f.pod == pod && f.metric == t.metric));
                status.trigger_fires.push(TriggerFire { pod: pod.to_owned(), metric: t.metric, time: Time(o.now) });
                let level = thresholds::level_of(&levels, t.metric).unwrap_or(t.level);
                let bound = signals::bound_crossed(signals::bounds_of(t.metric, &runtime, &requests), level);
                let value = signals::value_of(&entry, t.metric, requests.response_time.quantile);
                if let Some(value) = value {
                    fired_by.push(ThresholdFiring { pod: pod.to_owned(), metric: t.metric, value, level, bound });
                }
                let value = value.map_or_else(|| "unknown".to_owned(), |v| format!("{v:.2}"));
                let message = format!(
                    "{} of pod {pod} is {value}, over the {level} bound {bound}: capturing {:?}",
                    t.metric, t.profiles
                );
                plan.notes.push(Note::normal(reasons::TRIGGER_FIRED, message));
            }
            if let Some(info) = o.eligible.iter().find(|p| p.name == pod) {
                targets.push((info, thresholds::triggered_profiles(&fired)));
            }
        }
    } else {
        targets.extend(o.eligible.iter().map(|pod| (pod, pc.spec.profiles.clone())));
    }
    match run.trigger {
        RunTrigger::Manual => {
            status.handled_capture_now =
                pc.metadata.annotations.as_ref().and_then(|a| a.get(biometrics_crds::CAPTURE_NOW_ANNOTATION)).cloned();
        }
        RunTrigger::Spec => {
            if targets.is_empty() {
                // Wait for pods: the one-shot run happens when there are some.
                return;
            }
            status.spec_run_generation = pc.metadata.generation;
        }
        RunTrigger::Schedule => status.last_schedule_time = run.scheduled_for.map(Time),
        RunTrigger::Threshold | RunTrigger::Rollout => {}
    }
    if targets.is_empty() {
        let message = format!("run {} skipped: {NO_ELIGIBLE_PODS}", run.id);
        plan.notes.push(Note::warning(reasons::NO_ELIGIBLE_PODS, message));
        return;
    }
    let requests = targets
        .into_iter()
        .map(|(pod, profiles)| (pod.name.clone(), decide::capture_request(pc, &run.id, &pod.name, profiles)))
        .collect();
    plan.start = Some(Start { run, requests, fired_by });
}

/// Prepares a rollout run: the capture's profiles from `run`'s pods, timed ones for the run's
/// duration (a baseline's is capped below the old pods' grace period).
fn start_rollout(o: &Observed<'_>, run: rollout::RolloutRun, plan: &mut Plan) {
    let pc = o.capture;
    let seconds = run.duration.as_secs().max(1);
    let requests = o
        .eligible
        .iter()
        .filter(|p| run.pods.contains(&p.name))
        .map(|pod| {
            let mut request = decide::capture_request(pc, &run.id, &pod.name, pc.spec.profiles.clone());
            request.duration_seconds = seconds;
            (pod.name.clone(), request)
        })
        .collect();
    let due = DueRun { trigger: RunTrigger::Rollout, id: run.id, scheduled_for: None };
    plan.start = Some(Start { run: due, requests, fired_by: Vec::new() });
}

/// The running run after its agents answered the stop: `Cancelled`, with the profiles each
/// pod finished, and the `RunCancelled` Event.
pub fn stopped(
    status: &mut ProfileCaptureStatus,
    answers: &[(String, Result<CaptureStatus, AgentError>)],
    now: Timestamp,
) -> Vec<RunResult> {
    let Some(run) = status.last_run.as_mut() else { return Vec::new() };
    for (pod, answer) in answers {
        if let Some(p) = run.pods.iter_mut().find(|p| &p.pod == pod) {
            *p = decide::pod_cancelled(pod, answer.as_ref());
        }
    }
    run.result = RunResult::Cancelled;
    run.completion_time = Some(Time(now));
    decide::fit_to_budget(run, decide::RUN_STATUS_BUDGET);
    run.pods.iter().map(|p| p.result).collect()
}

/// The `RunCancelled` Event of the run `stopped` just closed.
pub fn stopped_note(status: &ProfileCaptureStatus, by: &DueRun) -> Option<Note> {
    let run = status.last_run.as_ref().filter(|r| r.result == RunResult::Cancelled)?;
    let kept: usize = run.pods.iter().map(|p| p.profiles.iter().filter(|q| q.path.is_some()).count()).sum();
    let message = format!(
        "run {} cancelled: run {} ({:?}) replaces it (concurrencyPolicy Replace); {kept} finished profiles kept from {} pods",
        run.id,
        by.id,
        by.trigger,
        run.pods.len()
    );
    Some(Note::normal(reasons::RUN_CANCELLED, message))
}

/// Records the start of `start`: the last run moves to the history (returned, unless it
/// was cancelled, as the run the new one is compared with) and the new one runs on its
/// pods, each starting; the `RunStarted` Event.
pub fn begin(
    pc: &ProfileCapture,
    status: &mut ProfileCaptureStatus,
    start: &Start,
    now: Timestamp,
) -> (Option<CaptureRun>, Note) {
    // A cancelled run's partial profiles are no baseline for the next run's comparison.
    let previous = decide::archive(pc, status).filter(|p| p.result != RunResult::Cancelled);
    status.last_run = Some(CaptureRun {
        id: start.run.id.clone(),
        trigger: start.run.trigger,
        start_time: Time(now),
        completion_time: None,
        result: RunResult::Running,
        fired_by: start.fired_by.clone(),
        pods: start.requests.iter().map(|(pod, _)| decide::pod_starting(pod)).collect(),
    });
    let message = format!("run {} ({:?}) started on {} pods", start.run.id, start.run.trigger, start.requests.len());
    (previous, Note::normal(reasons::RUN_STARTED, message))
}

/// The new run after its agents answered the start requests: a pod whose agent refused
/// fails, one that did not answer is retried; the retries to remember and the Events.
pub fn started(
    pc: &ProfileCapture,
    status: &mut ProfileCaptureStatus,
    answers: Vec<(String, CaptureRequest, Result<CaptureStatus, AgentError>)>,
    grace: Duration,
    now: Timestamp,
) -> (Vec<Retry>, Vec<Note>) {
    let Some(run) = status.last_run.as_mut() else { return (Vec::new(), Vec::new()) };
    let end = decide::expected_end(pc, run.start_time.0);
    let (mut retries, mut notes) = (Vec::new(), Vec::new());
    for (pod, request, answer) in answers {
        let Some(p) = run.pods.iter_mut().find(|p| p.pod == pod) else { continue };
        match answer {
            Ok(s) => *p = decide::pod_result(&pod, &s),
            Err(e) => match decide::after_failure(Call::Start, &e, None, end, grace, now) {
                Verdict::Retry(record) => retries.push(Retry::Remember(request.id.clone(), record, Some(request))),
                Verdict::Fail { reason, message } => {
                    *p = decide::pod_failed(&pod, reason, message);
                    notes.push(Note::warning(reasons::POD_FAILED, pod_failed_note(p)));
                }
            },
        }
    }
    run.result = decide::run_result(&run.pods);
    (retries, notes)
}

/// The rest of the status from the outcome of this pass: next run time, phase, conditions,
/// and every list within its bound.
pub fn settle(o: &Observed<'_>, status: &mut ProfileCaptureStatus) {
    let pc = o.capture;
    let generation = pc.metadata.generation;
    status.next_run_time = decide::next_run(pc.spec.schedule.as_ref(), pc.spec.suspend, o.now).map(Time);
    status.observed_generation = generation;
    summarise(pc, o.eligible.is_empty(), status, o.now);
    if let Some(note) = decide::capped_note(o.matching, o.eligible.len()) {
        append_to_ready(status, &note);
    }
    match (&o.rollout, pc.spec.on_rollout_of.as_ref()) {
        (Some(rollout::WorkloadView::Missing), Some(w)) => {
            let message = format!("{:?} {} not found in this namespace", w.kind, w.name);
            let reason = reasons::WORKLOAD_NOT_FOUND;
            set_condition(
                &mut status.conditions,
                condition::PERFORMANCE_REGRESSED,
                false,
                reason,
                &message,
                generation,
            );
        }
        (_, Some(_)) => {
            let (value, reason, message) = rollout::regressed_condition(&status.rollouts);
            set_condition(
                &mut status.conditions,
                condition::PERFORMANCE_REGRESSED,
                value,
                reason,
                &message,
                generation,
            );
        }
        (_, None) => status.conditions.retain(|c| c.type_ != condition::PERFORMANCE_REGRESSED),
    }
    let present: HashSet<&str> = o.selected.iter().map(String::as_str).collect();
    decide::bound_status(status, &present);
}

/// How long until the next pass: soon while a run runs; otherwise at the next fire time or
/// metrics sample, and in 10 s while pods match but none is eligible.
pub fn requeue(o: &Observed<'_>, status: &ProfileCaptureStatus) -> Duration {
    if running(status).is_some() {
        return o.rules.poll_interval;
    }
    if o.eligible.is_empty() && !o.selected.is_empty() {
        return Duration::from_secs(10);
    }
    let interval = o.rules.metrics_interval;
    let until_next = status.next_run_time.as_ref().map_or(interval, |t| o.now.duration_until(t.0).unsigned_abs());
    let until_settled = rollout::wake(o.capture, &status.rollouts)
        .map_or(interval, |t| o.now.duration_until(t).try_into().unwrap_or(Duration::ZERO));
    until_next.min(until_settled).min(interval).max(Duration::from_millis(200))
}

/// Phase and conditions from the rest of the status.
fn summarise(pc: &ProfileCapture, no_pods: bool, status: &mut ProfileCaptureStatus, now: Timestamp) {
    let generation = pc.metadata.generation;
    let run = status.last_run.as_ref();
    let is_running = run.is_some_and(|r| r.result == RunResult::Running);
    status.phase = Some(if is_running {
        CapturePhase::Running
    } else if pc.spec.suspend && pc.spec.schedule.is_some() {
        CapturePhase::Suspended
    } else {
        match run.map(|r| r.result) {
            Some(RunResult::Failed | RunResult::PartiallySucceeded | RunResult::Cancelled) => CapturePhase::Failed,
            Some(_) if pc.spec.schedule.is_some() => CapturePhase::Scheduled,
            Some(_) => CapturePhase::Succeeded,
            None if pc.spec.schedule.is_some() => CapturePhase::Scheduled,
            None => CapturePhase::Pending,
        }
    });
    set_condition(
        &mut status.conditions,
        condition::PROGRESSING,
        is_running,
        if is_running { reasons::CAPTURING } else { reasons::IDLE },
        &run.filter(|_| is_running).map(|r| format!("run {} in progress", r.id)).unwrap_or_default(),
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
    let never = pc.spec.schedule.as_ref().and_then(|s| s.never_fires(now));
    if let Some(why) = &never {
        set_condition(
            &mut status.conditions,
            condition::DEGRADED,
            true,
            reasons::SCHEDULE_NEVER_FIRES,
            why,
            generation,
        );
    } else if no_pods {
        let reason = reasons::NO_ELIGIBLE_PODS;
        set_condition(&mut status.conditions, condition::DEGRADED, true, reason, NO_ELIGIBLE_PODS, generation);
    } else if !failed.is_empty() {
        let message = failed.join("; ");
        set_condition(&mut status.conditions, condition::DEGRADED, true, reasons::PODS_FAILED, &message, generation);
    } else {
        set_condition(&mut status.conditions, condition::DEGRADED, false, reasons::AS_EXPECTED, "", generation);
    }
    let waits = pc.spec.schedule.is_some() || pc.spec.on_rollout_of.is_some();
    let ready = run.is_some_and(|r| r.result == RunResult::Succeeded)
        || (run.is_none() && waits && !no_pods && never.is_none());
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
        None if ready && pc.spec.schedule.is_some() => (reasons::SCHEDULED, "waiting for the schedule".into()),
        None if ready => (
            reasons::WATCHING_ROLLOUTS,
            pc.spec
                .on_rollout_of
                .as_ref()
                .map(|w| format!("waiting for a rollout of {:?} {}", w.kind, w.name))
                .unwrap_or_default(),
        ),
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

#[cfg(test)]
mod tests {
    use biometrics_agent_api::{CaptureState, ProfileOutcome};
    use biometrics_crds::threshold::ThresholdLevel;
    use kube::runtime::{reflector, watcher};
    use serde_json::json;

    use super::*;

    const UID: &str = "0f3c9a2b-1111";

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn rules() -> Rules {
        Rules {
            metrics_interval: Duration::from_secs(30),
            unreachable_grace: Duration::from_secs(30),
            alerting: crate::config::Alerting::default(),
            poll_interval: Duration::from_secs(1),
        }
    }

    fn capture(spec: serde_json::Value, annotations: serde_json::Value) -> ProfileCapture {
        let mut full =
            json!({"selector": {"matchLabels": {"app": "api"}}, "target": {"port": 6060}, "profiles": ["heap"]});
        full.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
        serde_json::from_value(json!({
            "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
            "metadata": {"name": "checkout", "namespace": "shop", "uid": UID, "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z", "annotations": annotations},
            "spec": full
        }))
        .unwrap()
    }

    fn pods(n: usize) -> Vec<PodInfo> {
        let (store, mut writer) = reflector::store::<pods::WatchedPod>();
        for i in 0..n {
            let pod = serde_json::from_value(json!({
                "metadata": {"name": format!("api-{i}"), "namespace": "shop", "labels": {"app": "api"}},
                "spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "1Gi"}}}, {"name": "biometrics-agent"}]},
                "status": {"phase": "Running", "podIP": format!("10.0.0.{}", i + 1), "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap();
            writer.apply_watcher_event(&watcher::Event::Apply(pod));
        }
        let mut all = pods::pods_in(&store, "shop", None, 9477);
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// What a pass observes of `pc` with `n` pods, each sampled a moment before `now`.
    fn observed<'a>(
        pc: &'a ProfileCapture,
        status: ProfileCaptureStatus,
        n: usize,
        rules: &'a Rules,
        now: Timestamp,
    ) -> Observed<'a> {
        let mut status = status;
        if status.pods.is_empty() {
            status.pods = (0..n)
                .map(|i| serde_json::from_value(json!({"name": format!("api-{i}"), "sampleTime": now})).unwrap())
                .collect();
        }
        let eligible = pods(n);
        Observed {
            capture: pc,
            status,
            selected: eligible.iter().map(|p| p.name.clone()).collect(),
            matching: eligible.len(),
            eligible,
            samples: Vec::new(),
            sampled_at: HashMap::new(),
            progress: Vec::new(),
            previous_run: None,
            existing: vec![("checkout".into(), UID.into())],
            rollout: None,
            rules,
            now,
        }
    }

    fn running_run(id: &str, pods: usize, start: Timestamp) -> CaptureRun {
        CaptureRun {
            id: id.into(),
            trigger: RunTrigger::Schedule,
            start_time: Time(start),
            completion_time: None,
            result: RunResult::Running,
            fired_by: Vec::new(),
            pods: (0..pods).map(|i| decide::pod_starting(&format!("api-{i}"))).collect(),
        }
    }

    fn answer(state: CaptureState, pod: &str) -> CaptureStatus {
        CaptureStatus {
            id: "x".into(),
            state,
            started_at: String::new(),
            finished_at: None,
            error: None,
            waiting: None,
            profiles: vec![ProfileOutcome {
                profile_type: Some(ProfileType::Heap),
                path: (state == CaptureState::Succeeded).then(|| format!("shop/checkout/r/{pod}/heap.pb.gz")),
                ..Default::default()
            }],
        }
    }

    fn asked(pod: &str, run: &str, answer: Result<CaptureStatus, AgentError>) -> Progress {
        Progress::Asked {
            pod: pod.into(),
            id: decide::capture_id(UID, run, pod),
            call: Call::Poll,
            request: None,
            answer,
            previous: None,
        }
    }

    #[test]
    fn a_run_whose_pods_all_answered_finishes_and_the_due_run_starts_in_the_same_pass() {
        let (rules, now) = (rules(), t("2026-01-01T01:00:05Z"));
        let pc = capture(json!({"schedule": "@hourly", "retention": {"keepRuns": 2}}), json!({}));
        let status = ProfileCaptureStatus {
            last_run: Some(running_run("s1-0f3c9a2b", 2, t("2026-01-01T00:00:00Z"))),
            last_schedule_time: Some(Time(t("2026-01-01T00:00:00Z"))),
            ..Default::default()
        };
        let mut o = observed(&pc, status, 2, &rules, now);
        o.progress = vec![
            asked("api-0", "s1-0f3c9a2b", Ok(answer(CaptureState::Succeeded, "api-0"))),
            asked("api-1", "s1-0f3c9a2b", Ok(answer(CaptureState::Succeeded, "api-1"))),
        ];
        let plan = plan(&o);
        let run = plan.status.last_run.as_ref().unwrap();
        assert_eq!((run.result, run.completion_time.clone()), (RunResult::Succeeded, Some(Time(now))));
        let finished = plan.finished.as_ref().unwrap();
        assert_eq!(finished.results, [RunResult::Succeeded, RunResult::Succeeded]);
        assert_eq!(finished.retention.prune[0].keep, ["s1-0f3c9a2b"]);
        assert!(plan.notes.iter().any(|n| n.reason == reasons::RUN_FINISHED && !n.warning), "{:?}", plan.notes);
        let start = plan.start.as_ref().unwrap();
        let expected = format!("s{}-0f3c9a2b", t("2026-01-01T01:00:00Z").as_second());
        assert_eq!((start.run.trigger, start.run.id.as_str()), (RunTrigger::Schedule, expected.as_str()));
        assert_eq!(start.requests.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["api-0", "api-1"]);
        assert_eq!(start.requests[0].1.profiles, [ProfileType::Heap]);
        assert_eq!(plan.status.last_schedule_time, Some(Time(t("2026-01-01T01:00:00Z"))));
        assert_eq!(plan.stop, None);

        // Carried out: the finished run goes to the history, the new one runs.
        let mut status = plan.status.clone();
        let (previous, note) = begin(&pc, &mut status, start, now);
        assert_eq!(previous.unwrap().id, "s1-0f3c9a2b");
        assert_eq!(note.reason, reasons::RUN_STARTED);
        assert_eq!(status.history[0].id, "s1-0f3c9a2b");
        settle(&o, &mut status);
        assert_eq!(status.phase, Some(CapturePhase::Running));
        assert_eq!(requeue(&o, &status), Duration::from_secs(1));
    }

    #[test]
    fn replace_stops_the_running_run_for_the_due_one_and_forbid_waits() {
        let (rules, now) = (rules(), t("2026-01-01T00:00:10Z"));
        let status = ProfileCaptureStatus {
            last_run: Some(running_run("g1-0f3c9a2b", 2, t("2026-01-01T00:00:00Z"))),
            spec_run_generation: Some(1),
            ..Default::default()
        };
        let asked_now = json!({biometrics_crds::CAPTURE_NOW_ANNOTATION: "2"});
        let replace = capture(json!({"concurrencyPolicy": "Replace"}), asked_now.clone());
        let mut o = observed(&replace, status.clone(), 2, &rules, now);
        o.progress =
            vec![asked("api-0", "g1-0f3c9a2b", Ok(answer(CaptureState::Running, "api-0"))), Progress::BackingOff];
        let plan = plan(&o);
        let stop = plan.stop.as_ref().unwrap();
        assert_eq!(stop.pods.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["api-0", "api-1"]);
        assert!(stop.pods.iter().all(|(_, id)| plan.retries.contains(&Retry::Forget(id.clone()))));
        assert_eq!(plan.start.as_ref().unwrap().run.trigger, RunTrigger::Manual);
        assert_eq!(plan.status.handled_capture_now.as_deref(), Some("2"));

        // The agents answered the stop: the run is Cancelled with what each pod finished.
        let mut status = plan.status.clone();
        let answers = vec![
            ("api-0".to_owned(), Ok(answer(CaptureState::Failed, "api-0"))),
            ("api-1".to_owned(), Err(AgentError::Timeout(Duration::from_secs(5)))),
        ];
        assert_eq!(stopped(&mut status, &answers, now), [RunResult::Cancelled, RunResult::Cancelled]);
        let note = stopped_note(&status, &plan.start.as_ref().unwrap().run).unwrap();
        assert_eq!((note.reason, note.warning), (reasons::RUN_CANCELLED, false));
        let (previous, _) = begin(&replace, &mut status, plan.start.as_ref().unwrap(), now);
        assert!(previous.is_none(), "a cancelled run is no baseline");
        assert_eq!((status.history[0].id.as_str(), status.history[0].result), ("g1-0f3c9a2b", RunResult::Cancelled));

        let forbid = capture(json!({}), asked_now);
        let plan = super::plan(&observed(&forbid, o.status.clone(), 2, &rules, now));
        assert_eq!((plan.stop, plan.start), (None, None), "Forbid: the running run finishes first");
        assert_eq!(plan.status.handled_capture_now, None, "the request waits for it");
    }

    #[test]
    fn a_threshold_run_takes_only_the_pods_whose_triggers_fire_with_their_profiles() {
        let (rules, now) = (rules(), t("2026-01-01T00:30:00Z"));
        let triggers = json!({"triggers": [{"metric": "goroutines", "level": "Warning", "profiles": ["goroutine", "heap"], "cooldown": "10m"}]});
        let pc = capture(triggers.clone(), json!({}));
        let status = ProfileCaptureStatus {
            spec_run_generation: Some(1),
            last_run: Some(CaptureRun { result: RunResult::Succeeded, ..running_run("g1-0f3c9a2b", 0, now) }),
            ..Default::default()
        };
        let mut o = observed(&pc, status, 3, &rules, now);
        // api-1's sample is stale and its agent says 1,500 goroutines; the others are calm.
        o.status.pods[1].sample_time = Some(Time(t("2026-01-01T00:00:00Z")));
        o.samples = vec![Sample {
            pod: "api-1".into(),
            answer: Ok(RuntimeSample { goroutines: Some(1500), memory_percent: Some(10.0), ..Default::default() }),
        }];
        let plan = plan(&o);
        assert_eq!(plan.status.threshold_level, Some(ThresholdLevel::Warning));
        assert!(
            plan.notes.iter().any(|n| n.reason == reasons::THRESHOLD_CROSSED && n.message.starts_with("pod api-1"))
        );
        let start = plan.start.as_ref().unwrap();
        assert_eq!(start.run.trigger, RunTrigger::Threshold);
        assert!(start.run.id.ends_with("-0f3c9a2b"));
        assert_eq!(start.requests.len(), 1);
        assert_eq!(
            (start.requests[0].0.as_str(), &start.requests[0].1.profiles[..]),
            ("api-1", &[ProfileType::Heap, ProfileType::Goroutine][..])
        );
        assert_eq!(plan.status.trigger_fires.len(), 1);
        assert!(plan.notes.iter().any(|n| n.reason == reasons::TRIGGER_FIRED));

        // Within the cooldown, or suspended, nothing fires.
        let mut again = o.status.clone();
        again.pods = plan.status.pods.clone();
        again.trigger_fires = plan.status.trigger_fires.clone();
        let later = observed(&pc, again.clone(), 3, &rules, t("2026-01-01T00:35:00Z"));
        assert_eq!(super::plan(&later).start, None);
        let mut suspended_spec = triggers;
        suspended_spec["suspend"] = json!(true);
        let suspended = capture(suspended_spec, json!({}));
        let mut fresh = again;
        fresh.trigger_fires.clear();
        assert_eq!(super::plan(&observed(&suspended, fresh, 3, &rules, now)).start, None);
    }

    #[test]
    fn silences_are_retried_and_departed_pods_fail_with_their_reason() {
        let (rules, now) = (rules(), t("2026-01-01T00:00:10Z"));
        let pc = capture(json!({}), json!({}));
        let status = ProfileCaptureStatus {
            last_run: Some(running_run("g1-0f3c9a2b", 2, t("2026-01-01T00:00:00Z"))),
            spec_run_generation: Some(1),
            ..Default::default()
        };
        let mut o = observed(&pc, status, 2, &rules, now);
        o.progress = vec![
            asked("api-0", "g1-0f3c9a2b", Err(AgentError::Timeout(Duration::from_secs(5)))),
            Progress::Unreachable {
                pod: "api-1".into(),
                id: decide::capture_id(UID, "g1-0f3c9a2b", "api-1"),
                reason: reasons::POD_GONE,
                message: "the pod is gone",
            },
        ];
        let plan = plan(&o);
        let run = plan.status.last_run.as_ref().unwrap();
        assert_eq!(run.result, RunResult::Running, "api-0 may still answer");
        assert_eq!(run.pods[0].result, RunResult::Running);
        assert_eq!((run.pods[1].result, run.pods[1].reason.as_deref()), (RunResult::Failed, Some(reasons::POD_GONE)));
        assert!(
            matches!(&plan.retries[0], Retry::Remember(id, record, None) if id.contains("-g1-") && record.attempts == 1)
        );
        assert!(plan.retries.contains(&Retry::Forget(decide::capture_id(UID, "g1-0f3c9a2b", "api-1"))));
        let failed = plan.notes.iter().find(|n| n.reason == reasons::POD_FAILED).unwrap();
        assert_eq!(failed.message, "pod api-1 (PodGone): the pod is gone");
        assert_eq!((plan.start, plan.finished), (None, None));
    }

    #[test]
    fn a_one_shot_capture_without_eligible_pods_waits_for_them() {
        let (rules, now) = (rules(), t("2026-01-01T00:00:10Z"));
        let pc = capture(json!({}), json!({}));
        let o = observed(&pc, ProfileCaptureStatus::default(), 0, &rules, now);
        let plan = plan(&o);
        assert_eq!(plan.start, None);
        assert_eq!(plan.status.spec_run_generation, None, "the run is still owed");
        assert!(plan.notes.is_empty());
        let mut status = plan.status;
        settle(&o, &mut status);
        let degraded = status.conditions.iter().find(|c| c.type_ == condition::DEGRADED).unwrap();
        assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", reasons::NO_ELIGIBLE_PODS));
        assert_eq!(status.phase, Some(CapturePhase::Pending));
        // With pods, it starts.
        let o = observed(&pc, ProfileCaptureStatus::default(), 1, &rules, now);
        let plan = super::plan(&o);
        assert_eq!(plan.start.unwrap().run.id, "g1-0f3c9a2b");
        assert_eq!(plan.status.spec_run_generation, Some(1));
    }

    #[test]
    fn a_sample_that_changes_nothing_worth_a_write_keeps_the_status_and_is_remembered_as_taken() {
        let (rules, now) = (rules(), t("2026-01-01T00:30:00Z"));
        let pc = capture(json!({}), json!({}));
        let shown_at = t("2026-01-01T00:29:00Z");
        let status = ProfileCaptureStatus {
            pods: vec![
                serde_json::from_value(json!({"name": "api-0", "sampleTime": shown_at, "goroutines": 100,
                "memoryPercent": 20.0, "levels": {"goroutines": "OK", "memoryPercent": "OK"}}))
                .unwrap(),
            ],
            ..Default::default()
        };
        let with_sample = |goroutines: u64, at: Timestamp| {
            let mut o = observed(&pc, status.clone(), 1, &rules, at);
            o.samples = vec![Sample {
                pod: "api-0".into(),
                answer: Ok(RuntimeSample {
                    goroutines: Some(goroutines),
                    memory_percent: Some(20.0),
                    ..Default::default()
                }),
            }];
            plan(&o).status.pods.remove(0)
        };
        // 105 goroutines is within 10 % of 100: the entry shown stays, sample time and all.
        let kept = with_sample(105, now);
        assert_eq!(kept.goroutines, Some(100));
        assert_eq!(kept.sample_time.map(|t| t.0), Some(shown_at));
        // 150 is news, and so is the same figure once the shown one is five minutes old.
        assert_eq!(with_sample(150, now).goroutines, Some(150));
        let heartbeat = with_sample(100, t("2026-01-01T00:34:00Z"));
        assert_eq!(heartbeat.sample_time.map(|t| t.0), Some(t("2026-01-01T00:34:00Z")));
        // A sample taken but not written still counts as fresh for the next pass.
        let eligible = pods(1);
        let stale = |sampled_at: &HashMap<String, Timestamp>| {
            super::stale(&status, sampled_at, &eligible, rules.metrics_interval, now).len()
        };
        assert_eq!(stale(&HashMap::new()), 1, "the status's sample is a minute old");
        assert_eq!(stale(&HashMap::from([("api-0".to_owned(), t("2026-01-01T00:29:50Z"))])), 0);
    }

    #[test]
    fn figures_are_close_within_a_tenth_and_anything_else_must_match() {
        let entry = |v: serde_json::Value| -> PodRuntime { serde_json::from_value(v).unwrap() };
        let now = t("2026-01-01T00:00:30Z");
        let shown = entry(json!({"name": "a", "sampleTime": "2026-01-01T00:00:00Z", "heapAllocBytes": 1000,
            "gcPerSecond": 2.0, "levels": {"gcPerSecond": "OK"}}));
        let new = |v: serde_json::Value| {
            let mut base = json!({"name": "a", "sampleTime": now, "heapAllocBytes": 1000, "gcPerSecond": 2.0,
                "levels": {"gcPerSecond": "OK"}});
            base.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
            entry(base)
        };
        assert!(!worth_writing(&shown, &new(json!({})), now), "only the time moved");
        assert!(!worth_writing(&shown, &new(json!({"heapAllocBytes": 1090, "gcPerSecond": 1.85})), now));
        assert!(worth_writing(&shown, &new(json!({"heapAllocBytes": 1200})), now));
        assert!(worth_writing(&shown, &new(json!({"levels": {"gcPerSecond": "Warning"}})), now));
        assert!(worth_writing(&shown, &new(json!({"error": "agent unreachable"})), now), "a field that appears");
        assert!(worth_writing(&shown, &new(json!({"goroutines": 5})), now));
    }
}
