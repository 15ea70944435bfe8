//! The ProfileCapture decisions, as pure functions over plain data: which pods, whether a
//! run is due and what it is called, what the agents' answers mean for status.

use std::{collections::HashSet, time::Duration};

use crate::{agent_client::AgentError, pods::fnv, reasons};
use biometrics_agent_api::{
    CaptureInstance, CaptureRef, CaptureRequest, CaptureRuns, CaptureState, CaptureStatus, RetentionRequest, TargetSpec,
};
use biometrics_crds::{
    CAPTURE_NOW_ANNOTATION,
    profile::ProfileType,
    run_id,
    schedule::Schedule,
    v1alpha1::{
        CaptureRun, ConcurrencyPolicy, FlatShift, PodRunResult, ProfileCapture, ProfileCaptureStatus, ProfileResult,
        RunResult, RunSummary, RunTrigger, TopComparison, TopFunction,
    },
};
use jiff::Timestamp;

pub use super::thresholds::{
    effective_thresholds, fired_triggers, firing, level_of, levels, threshold_run, triggered_profiles, withhold_memory,
};

/// A run that should start now.
#[derive(Debug, Clone, PartialEq)]
pub struct DueRun {
    /// Why.
    pub trigger: RunTrigger,
    /// Its id (a DNS label; deterministic, so a restarted operator picks the same one).
    pub id: String,
    /// For scheduled runs: the fire time.
    pub scheduled_for: Option<Timestamp>,
}

/// The agent capture id of one pod's part of a run: `[a-z0-9-]`, at most 128 characters.
pub fn capture_id(capture_uid: &str, run: &str, pod: &str) -> String {
    let uid: String =
        capture_uid.chars().filter(char::is_ascii_alphanumeric).take(12).collect::<String>().to_lowercase();
    format!("{uid}-{run}-{:016x}", fnv(pod))
}

/// Whether a run is due, and which, at `now`, given the freshest `status` this process
/// knows (what it wrote last, which a lagging watch may not have delivered yet: deciding on
/// the delivered one would start a finished run again). Order: a manual request, then the
/// spec's one-shot run, then the schedule.
pub fn due(pc: &ProfileCapture, status: &ProfileCaptureStatus, now: Timestamp) -> Option<DueRun> {
    let generation = pc.metadata.generation.unwrap_or(0);
    let uid = pc.metadata.uid.as_deref().unwrap_or_default();
    if let Some(value) = pc.metadata.annotations.as_ref().and_then(|a| a.get(CAPTURE_NOW_ANNOTATION))
        && status.handled_capture_now.as_ref() != Some(value)
    {
        return Some(DueRun {
            trigger: RunTrigger::Manual,
            id: run_id::run_id(&format!("m{:x}", fnv(value) & 0xffff_ffff_ffff), uid),
            scheduled_for: None,
        });
    }
    let Some(schedule) = &pc.spec.schedule else {
        // A capture watching rollouts runs for them, not for its own creation or changes.
        if status.spec_run_generation != Some(generation) && pc.spec.on_rollout_of.is_none() {
            let id = run_id::run_id(&format!("g{generation}"), uid);
            return Some(DueRun { trigger: RunTrigger::Spec, id, scheduled_for: None });
        }
        return None;
    };
    if pc.spec.suspend {
        return None;
    }
    let since = status
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| pc.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    // CronJob semantics: of the fire times missed (say, while the operator was down) only
    // the latest runs, once.
    let missed = schedule.missed_between(since, now, 100);
    missed.latest.map(|at| DueRun {
        trigger: RunTrigger::Schedule,
        id: run_id::run_id(&format!("s{}", at.as_second()), uid),
        scheduled_for: Some(at),
    })
}

/// The request that starts `pod`'s part of run `run`, capturing `profiles`.
pub fn capture_request(pc: &ProfileCapture, run: &str, pod: &str, profiles: Vec<ProfileType>) -> CaptureRequest {
    CaptureRequest {
        id: capture_id(pc.metadata.uid.as_deref().unwrap_or_default(), run, pod),
        capture: capture_ref(pc),
        run: run.to_owned(),
        profiles,
        duration_seconds: pc.spec.duration.as_std().as_secs().max(1),
        target: TargetSpec {
            port: u16::try_from(pc.spec.target.port).unwrap_or(0),
            base_path: pc.spec.target.base_path.clone(),
        },
        metrics: super::signals::metrics_source(&pc.spec),
    }
}

/// The most pods a run profiles: the capture's `maxPods`, else the operator's default.
pub fn max_pods(pc: &ProfileCapture, default: Option<usize>) -> Option<usize> {
    pc.spec.max_pods.and_then(|m| usize::try_from(m).ok()).or(default)
}

/// The capture as agents know it.
pub fn capture_ref(pc: &ProfileCapture) -> CaptureRef {
    CaptureRef {
        namespace: pc.metadata.namespace.clone().unwrap_or_default(),
        name: pc.metadata.name.clone().unwrap_or_default(),
    }
}

/// The runs whose files stay: the newest `retention.keepRuns` of those the status lists
/// (the last run, then the history, newest first). The status lists `historyLimit` + 1
/// runs at most, so more are never kept.
pub fn kept_runs(pc: &ProfileCapture, status: &ProfileCaptureStatus) -> Vec<String> {
    let keep = usize::try_from(pc.spec.retention.keep_runs).unwrap_or(5);
    status.last_run.iter().map(|r| r.id.clone()).chain(status.history.iter().map(|h| h.id.clone())).take(keep).collect()
}

/// What an agent is asked to prune once a run of `pc` finished: every run of this capture
/// but the kept ones, and, as `existing` names every capture of the namespace (name and
/// uid), the runs of deleted captures that asked for `deleteOnRemoval`.
pub fn retention_request<'a>(
    pc: &ProfileCapture,
    status: &ProfileCaptureStatus,
    existing: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> RetentionRequest {
    let uid = pc.metadata.uid.as_deref().unwrap_or_default();
    let mut existing: Vec<CaptureInstance> = existing
        .into_iter()
        .map(|(name, uid)| CaptureInstance { name: name.to_owned(), run_suffix: run_id::suffix(uid) })
        .filter(|c| run_id::is_suffix(&c.run_suffix))
        .collect();
    existing.sort_by(|a, b| (&a.name, &a.run_suffix).cmp(&(&b.name, &b.run_suffix)));
    RetentionRequest {
        namespace: pc.metadata.namespace.clone().unwrap_or_default(),
        prune: vec![CaptureRuns {
            name: pc.metadata.name.clone().unwrap_or_default(),
            run_suffix: run_id::suffix(uid),
            keep: kept_runs(pc, status),
            delete_on_removal: pc.spec.retention.delete_on_removal,
        }],
        existing: Some(existing),
    }
}

/// What the agents are asked to remove when the capture (`namespace`/`name` with `uid`) is
/// deleted: every run of its own, with `retention.deleteOnRemoval`; nothing otherwise. A
/// former or later capture of the same name is left alone.
pub fn removal_request(namespace: &str, name: &str, uid: &str, delete_on_removal: bool) -> Option<RetentionRequest> {
    delete_on_removal.then(|| RetentionRequest {
        namespace: namespace.to_owned(),
        prune: vec![CaptureRuns {
            name: name.to_owned(),
            run_suffix: run_id::suffix(uid),
            keep: Vec::new(),
            // Done now: the note that it is to be done goes.
            delete_on_removal: false,
        }],
        existing: None,
    })
}

/// Moves the last run into the history (newest first, at most `retention.historyLimit`)
/// to make room for a new one; the moved run is returned.
pub fn archive(pc: &ProfileCapture, status: &mut ProfileCaptureStatus) -> Option<CaptureRun> {
    let previous = status.last_run.take()?;
    status.history.insert(0, summary(&previous));
    status.history.truncate(usize::try_from(pc.spec.retention.history_limit).unwrap_or(10));
    Some(previous)
}

/// A run's line in the history.
pub fn summary(run: &CaptureRun) -> RunSummary {
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
pub fn expected_end(pc: &ProfileCapture, start: Timestamp) -> Timestamp {
    let mut profiles = pc.spec.profiles.clone();
    profiles.extend(pc.spec.triggers.iter().flat_map(|t| t.profiles.iter().copied()));
    profiles.sort();
    profiles.dedup();
    let length = expected_length(&profiles, pc.spec.duration.as_std());
    start.checked_add(jiff::SignedDuration::try_from(length).unwrap_or_default()).unwrap_or(start)
}

/// When the schedule fires next (after `now`).
pub fn next_run(schedule: Option<&Schedule>, suspended: bool, now: Timestamp) -> Option<Timestamp> {
    if suspended {
        return None;
    }
    schedule.and_then(|s| s.next_after(now))
}

/// How many of a profile's top functions a run's status keeps: what a rollout's digests
/// merge over the pods, so a function that ranks lower on one pod still counts there.
pub const TOP_FUNCTIONS: usize = 10;

/// How many of them the shift since the previous run compares.
pub const TOP_COMPARED: usize = 5;

/// The top functions the shift since the previous run compares.
pub fn compared_top(top: &[TopFunction]) -> &[TopFunction] {
    &top[..top.len().min(TOP_COMPARED)]
}

/// One pod's part of a run from the agent's capture status.
pub fn pod_result(pod: &str, status: &CaptureStatus) -> PodRunResult {
    let profiles: Vec<ProfileResult> = status
        .profiles
        .iter()
        .filter_map(|p| {
            Some(ProfileResult {
                profile_type: p.profile_type?,
                path: p.path.clone(),
                bytes: p.bytes.and_then(|b| i64::try_from(b).ok()),
                sha256: p.sha256.clone(),
                sample_type: p.sample_type.clone(),
                total: p.total,
                samples: p.samples.and_then(|s| i64::try_from(s).ok()),
                // Two decimals are what kubectl shows; they keep a 100-pod status small.
                top: p
                    .top
                    .iter()
                    .take(TOP_FUNCTIONS)
                    .map(|t| TopFunction {
                        flat_percent: round2(t.flat_percent),
                        cum_percent: round2(t.cum_percent),
                        ..t.clone()
                    })
                    .collect(),
                requests: p.requests,
                p99_latency_millis: p.p99_latency_millis,
                error_rate_percent: p.error_rate_percent,
                requests_error: p.requests_error.clone(),
                error: p.error.clone(),
                compared_to_previous: None,
            })
        })
        .collect();
    let result = match status.state {
        CaptureState::Running => RunResult::Running,
        _ => {
            let ok = profiles.iter().filter(|p| p.error.is_none() && p.path.is_some()).count();
            if ok == profiles.len() && ok > 0 {
                RunResult::Succeeded
            } else if ok > 0 {
                RunResult::PartiallySucceeded
            } else {
                RunResult::Failed
            }
        }
    };
    let failed = result == RunResult::Failed;
    PodRunResult {
        pod: pod.to_owned(),
        result,
        profiles,
        error: status.error.clone().filter(|_| failed),
        reason: failed.then(|| reasons::CAPTURE_FAILED.to_owned()),
    }
}

/// A pod that failed as a whole (agent unreachable or refusing, pod gone, …), with the
/// reason ([`reasons`]) and the message.
pub fn pod_failed(pod: &str, reason: &str, message: String) -> PodRunResult {
    PodRunResult {
        pod: pod.to_owned(),
        result: RunResult::Failed,
        profiles: Vec::new(),
        error: Some(message),
        reason: Some(reason.to_owned()),
    }
}

/// One pod's part of a run that a newer run replaced, from the agent's answer to the stop:
/// the profiles it finished are kept and listed. A capture that had finished before the stop
/// arrived keeps its own result; an agent that could not be told shows why.
pub fn pod_cancelled(pod: &str, answer: Result<&CaptureStatus, &AgentError>) -> PodRunResult {
    match answer {
        Ok(s) if s.state == CaptureState::Succeeded => pod_result(pod, s),
        Ok(s) => PodRunResult { result: RunResult::Cancelled, error: None, reason: None, ..pod_result(pod, s) },
        Err(e) => PodRunResult {
            pod: pod.to_owned(),
            result: RunResult::Cancelled,
            profiles: Vec::new(),
            error: Some(format!("the agent could not be told to stop: {e}")),
            reason: None,
        },
    }
}

/// Whether `due` takes the place of the running run `running` (`concurrencyPolicy:
/// Replace`); under `Forbid` a running run always finishes first. A run is never replaced
/// by itself, nor for want of pods to start the new one on.
pub fn replaces(policy: ConcurrencyPolicy, running: &str, due: &DueRun, eligible_pods: usize) -> bool {
    policy == ConcurrencyPolicy::Replace && due.id != running && eligible_pods > 0
}

/// A pod whose agent has not accepted its capture yet (the request is being retried).
pub fn pod_starting(pod: &str) -> PodRunResult {
    PodRunResult { pod: pod.to_owned(), result: RunResult::Running, profiles: Vec::new(), error: None, reason: None }
}

/// What a profile adds to a capture's length besides the spec's duration (fetching, parsing,
/// writing).
const PER_PROFILE: Duration = Duration::from_secs(2);

/// How long a capture of `profiles` takes on a pod: the agent takes them one after another,
/// cpu and trace for `duration` each.
pub fn expected_length(profiles: &[ProfileType], duration: Duration) -> Duration {
    profiles
        .iter()
        .map(|p| if matches!(p, ProfileType::Cpu | ProfileType::Trace) { duration + PER_PROFILE } else { PER_PROFILE })
        .sum()
}

/// Which agent call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `POST /v1/captures`: the agent has not accepted the capture yet.
    Start,
    /// `GET /v1/captures/{id}`: the agent accepted it.
    Poll,
}

/// A pod's agent that has not answered (or only said "not now"), remembered between polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanswered {
    /// When the first failure in a row was.
    pub since: Timestamp,
    /// Failures in a row.
    pub attempts: u32,
    /// When to ask again.
    pub next_attempt: Timestamp,
    /// The last failure, for the message if the pod fails.
    pub last_error: String,
}

/// What a failed call means for a pod's part of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still running as far as we know: ask again (as the updated record says).
    Retry(Unanswered),
    /// The pod has failed: its reason ([`reasons`]) and message.
    Fail {
        /// The reason.
        reason: &'static str,
        /// The message.
        message: String,
    },
}

/// The wait before asking again after `attempts` failures in a row: 1 s, doubling, at most 5 s.
pub fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(1 << attempts.clamp(1, 4).saturating_sub(1)).min(Duration::from_secs(5))
}

/// Decides on a failed `call` for a pod. A definitive answer fails the pod at once: 404 or
/// 410 for the capture (the agent restarted and lost it: `CaptureNotFound`), any other
/// refusal or an unreadable answer (`AgentRefused`). A transient failure (no connection, a
/// timeout, 408, 429, 5xx) is retried with a backoff until the pod has gone without an
/// answer past the capture's expected end, and past its first unanswered call, by `grace`
/// (`AgentUnreachable`): a capture polled hundreds of times survives a blip. An agent that
/// refuses a start because it is shutting down will never take it (`PodTerminating`): its
/// pod is going, though the operator had not yet seen it terminating.
pub fn after_failure(
    call: Call,
    error: &AgentError,
    previous: Option<&Unanswered>,
    expected_end: Timestamp,
    grace: Duration,
    now: Timestamp,
) -> Verdict {
    if call == Call::Start && error.code() == Some(biometrics_agent_api::ErrorCode::ShuttingDown) {
        return Verdict::Fail {
            reason: reasons::POD_TERMINATING,
            message: format!("the pod is terminating; its agent starts no new capture: {error}"),
        };
    }
    if !error.is_transient() {
        return match call {
            Call::Poll if error.is_not_found() => Verdict::Fail {
                reason: reasons::CAPTURE_NOT_FOUND,
                message: format!("the agent no longer knows this capture (it restarted since?): {error}"),
            },
            _ => Verdict::Fail { reason: reasons::AGENT_REFUSED, message: error.to_string() },
        };
    }
    let since = previous.map_or(now, |p| p.since);
    let attempts = previous.map_or(0, |p| p.attempts).saturating_add(1);
    let signed = |d: Duration| jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    let deadline = expected_end.max(since).checked_add(signed(grace)).unwrap_or(Timestamp::MAX);
    if now >= deadline {
        let silent = now.duration_since(since).round(jiff::Unit::Second).unwrap_or_default();
        return Verdict::Fail {
            reason: reasons::AGENT_UNREACHABLE,
            message: format!(
                "no answer for {silent:#}, past the capture's expected end and a grace of {}s: {error}",
                grace.as_secs()
            ),
        };
    }
    let next = now.checked_add(signed(retry_delay(attempts))).unwrap_or(deadline).min(deadline);
    Verdict::Retry(Unanswered { since, attempts, next_attempt: next, last_error: error.to_string() })
}

/// The run's result from its pods'.
pub fn run_result(pods: &[PodRunResult]) -> RunResult {
    if pods.iter().any(|p| p.result == RunResult::Running) {
        return RunResult::Running;
    }
    let ok = pods.iter().filter(|p| p.result == RunResult::Succeeded).count();
    if !pods.is_empty() && ok == pods.len() {
        RunResult::Succeeded
    } else if pods.iter().any(|p| matches!(p.result, RunResult::Succeeded | RunResult::PartiallySucceeded)) {
        RunResult::PartiallySucceeded
    } else {
        RunResult::Failed
    }
}

/// How a profile's top functions moved since the previous run's: each side's top
/// functions and total as a merged summary, compared as the capture browser compares two
/// runs (`biometrics_pprof::merge::share_changes`, each share of its own side's total);
/// the functions that entered the top, and the 3 largest moves in flat %.
pub fn compare(
    previous_run: &str,
    (before, before_total): (&[TopFunction], i64),
    (after, after_total): (&[TopFunction], i64),
) -> TopComparison {
    let merged = |top: &[TopFunction], total: i64| biometrics_pprof::merge::Merged {
        sample_type: String::new(),
        duration_nanos: 0,
        total,
        functions: top.iter().map(|t| (t.function.clone(), (t.flat, t.cum))).collect(),
    };
    let entered =
        after.iter().filter(|t| !before.iter().any(|b| b.function == t.function)).map(|t| t.function.clone()).collect();
    let mut shifts: Vec<FlatShift> =
        biometrics_pprof::merge::share_changes(&merged(before, before_total), &merged(after, after_total))
            .into_iter()
            .map(|c| FlatShift {
                function: c.function,
                before_percent: round2(c.base_percent),
                after_percent: round2(c.percent),
            })
            .filter(|s| (s.after_percent - s.before_percent).abs() >= 0.01)
            .collect();
    shifts.sort_by(|a, b| {
        (b.after_percent - b.before_percent)
            .abs()
            .total_cmp(&(a.after_percent - a.before_percent).abs())
            .then_with(|| a.function.cmp(&b.function))
    });
    shifts.truncate(3);
    TopComparison { run: previous_run.to_owned(), entered, shifts }
}

/// The most a run's status may take; Kubernetes objects must stay far below etcd's 1.5 MiB.
pub const RUN_STATUS_BUDGET: usize = 640 * 1024;

/// Trims a large run's per-profile detail until it fits the budget: first the comparisons'
/// shifts, then the top functions down to 5, 3 and then 1 per profile. Files and their
/// checksums are never dropped; `biometrics-agent top FILE` gives the full summary.
pub fn fit_to_budget(run: &mut biometrics_crds::v1alpha1::CaptureRun, budget: usize) -> bool {
    let size = |r: &biometrics_crds::v1alpha1::CaptureRun| serde_json::to_vec(r).map_or(usize::MAX, |v| v.len());
    if size(run) <= budget {
        return false;
    }
    for p in run.pods.iter_mut().flat_map(|p| p.profiles.iter_mut()) {
        if let Some(c) = p.compared_to_previous.as_mut() {
            c.shifts.clear();
        }
    }
    for keep in [5, 3, 1] {
        if size(run) <= budget {
            break;
        }
        for p in run.pods.iter_mut().flat_map(|p| p.profiles.iter_mut()) {
            p.top.truncate(keep);
            if let Some(c) = p.compared_to_previous.as_mut() {
                c.entered.truncate(keep);
            }
        }
    }
    true
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The most items any status list holds: below the schema's cap of 1000, so that a status
/// write is never refused for its size (a refused write would be retried, and the run
/// restarted, forever).
pub const STATUS_LIST_LIMIT: usize = 900;

/// Keeps the status lists that grow with the pods within [`STATUS_LIST_LIMIT`]: the
/// trigger fires of pods no longer `present` are dropped (their cooldowns mean nothing
/// now), then the oldest fires, and the runtime entries of pods beyond the limit.
pub fn bound_status(status: &mut ProfileCaptureStatus, present: &HashSet<&str>) {
    status.trigger_fires.retain(|f| present.contains(f.pod.as_str()));
    if status.trigger_fires.len() > STATUS_LIST_LIMIT {
        status.trigger_fires.sort_by_key(|f| std::cmp::Reverse(f.time.0));
        status.trigger_fires.truncate(STATUS_LIST_LIMIT);
    }
    status.pods.truncate(STATUS_LIST_LIMIT);
    if let Some(run) = status.last_run.as_mut() {
        run.pods.truncate(STATUS_LIST_LIMIT);
    }
    status.history.truncate(STATUS_LIST_LIMIT);
}

/// What the Ready condition adds when more pods match than a run profiles.
pub fn capped_note(matching: usize, profiled: usize) -> Option<String> {
    (matching > profiled).then(|| {
        format!("{matching} pods match; maxPods takes the first {profiled} by name (set spec.maxPods to change it)")
    })
}

#[cfg(test)]
mod tests {
    use biometrics_agent_api::ProfileOutcome;

    /// Whether a run is due, on the status the capture carries.
    fn due_of(pc: &ProfileCapture, now: Timestamp) -> Option<DueRun> {
        due(pc, &pc.status.clone().unwrap_or_default(), now)
    }

    use biometrics_agent_api::RuntimeSample;
    use biometrics_crds::{
        profile::ProfileType,
        threshold::{ThresholdLevel, UpperBounds},
        v1alpha1::{RuntimeMetric, RuntimeThresholds, ThresholdTrigger},
    };
    use serde_json::json;

    use super::*;

    fn capture(
        spec: serde_json::Value,
        status: serde_json::Value,
        annotations: serde_json::Value,
        generation: i64,
    ) -> ProfileCapture {
        serde_json::from_value(json!({
            "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
            "metadata": {"name": "c", "namespace": "ns", "uid": "0f3c9a2b-1111", "generation": generation, "annotations": annotations, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec, "status": status
        }))
        .unwrap()
    }

    fn spec(extra: serde_json::Value) -> serde_json::Value {
        let mut s = json!({"selector": {}, "target": {"port": 6060}});
        s.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        s
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn one_shot_runs_once_per_generation() {
        let now = t("2026-01-01T01:00:00Z");
        let fresh = capture(spec(json!({})), json!({}), json!({}), 3);
        assert_eq!(
            due_of(&fresh, now).unwrap(),
            DueRun { trigger: RunTrigger::Spec, id: "g3-0f3c9a2b".into(), scheduled_for: None }
        );
        let done = capture(spec(json!({})), json!({"specRunGeneration": 3}), json!({}), 3);
        assert_eq!(due_of(&done, now), None);
        let edited = capture(spec(json!({})), json!({"specRunGeneration": 3}), json!({}), 4);
        assert_eq!(due_of(&edited, now).unwrap().id, "g4-0f3c9a2b");
        let watching = capture(spec(json!({"onRolloutOf": {"name": "app"}})), json!({}), json!({}), 3);
        assert_eq!(due_of(&watching, now), None, "a capture watching rollouts runs for them only");
    }

    #[test]
    fn schedules_fire_once_for_the_latest_missed_time() {
        let s = spec(json!({"schedule": "*/10 * * * *"}));
        let never_ran = capture(s.clone(), json!({}), json!({}), 1);
        let run = due_of(&never_ran, t("2026-01-01T01:05:00Z")).unwrap();
        assert_eq!(run.scheduled_for, Some(t("2026-01-01T01:00:00Z")), "hours of missed runs: only the latest");
        assert_eq!(run.id, format!("s{}-0f3c9a2b", t("2026-01-01T01:00:00Z").as_second()));
        let ran = capture(s.clone(), json!({"lastScheduleTime": "2026-01-01T01:00:00Z"}), json!({}), 1);
        assert_eq!(due_of(&ran, t("2026-01-01T01:05:00Z")), None);
        assert!(due_of(&ran, t("2026-01-01T01:10:00Z")).is_some());
        let mut suspended = s;
        suspended["suspend"] = json!(true);
        assert_eq!(due_of(&capture(suspended, json!({}), json!({}), 1), t("2026-01-01T05:00:00Z")), None);
    }

    #[test]
    fn a_new_capture_now_value_runs_once() {
        let s = spec(json!({"schedule": "@daily", "suspend": true}));
        let asked = capture(s.clone(), json!({}), json!({CAPTURE_NOW_ANNOTATION: "1"}), 1);
        let run = due_of(&asked, t("2026-01-01T05:00:00Z")).unwrap();
        assert_eq!(run.trigger, RunTrigger::Manual, "a manual request works even while suspended");
        let handled = capture(s, json!({"handledCaptureNow": "1"}), json!({CAPTURE_NOW_ANNOTATION: "1"}), 1);
        assert_eq!(due_of(&handled, t("2026-01-01T05:00:00Z")), None);
    }

    #[test]
    fn every_run_id_ends_with_the_capture_s_uid_and_retention_names_the_runs_kept() {
        let now = t("2026-01-01T01:05:00Z");
        let manual = capture(spec(json!({})), json!({}), json!({CAPTURE_NOW_ANNOTATION: "1"}), 1);
        let scheduled = capture(spec(json!({"schedule": "@hourly"})), json!({}), json!({}), 1);
        let ids = [due_of(&manual, now).unwrap().id, due_of(&scheduled, now).unwrap().id];
        assert!(ids.iter().all(|id| id.ends_with("-0f3c9a2b")), "{ids:?}");
        // The same capture created again under the same name has other run ids.
        let mut again = capture(spec(json!({})), json!({}), json!({}), 1);
        again.metadata.uid = Some("7e11aa02-2222".into());
        assert_eq!(due_of(&again, now).unwrap().id, "g1-7e11aa02");

        let pc = capture(
            spec(json!({"retention": {"keepRuns": 2, "deleteOnRemoval": true}})),
            json!({"lastRun": {"id": "s3-0f3c9a2b", "trigger": "Schedule", "startTime": "2026-01-01T00:00:00Z", "result": "Succeeded"},
            "history": [
                {"id": "s2-0f3c9a2b", "trigger": "Schedule", "startTime": "2026-01-01T00:00:00Z", "result": "Succeeded", "podsSucceeded": 1, "podsFailed": 0},
                {"id": "s1-0f3c9a2b", "trigger": "Schedule", "startTime": "2026-01-01T00:00:00Z", "result": "Succeeded", "podsSucceeded": 1, "podsFailed": 0}
            ]}),
            json!({}),
            1,
        );
        let status = pc.status.clone().unwrap();
        assert_eq!(kept_runs(&pc, &status), ["s3-0f3c9a2b", "s2-0f3c9a2b"]);
        let request = retention_request(&pc, &status, [("c", "0f3c9a2b-1111"), ("b", "00aa11bb-0"), ("odd", "")]);
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"namespace": "ns", "prune": [{"name": "c", "runSuffix": "0f3c9a2b", "keep": ["s3-0f3c9a2b", "s2-0f3c9a2b"], "deleteOnRemoval": true}],
                "existing": [{"name": "b", "runSuffix": "00aa11bb"}, {"name": "c", "runSuffix": "0f3c9a2b"}]})
        );
        let removal = removal_request("ns", "c", "0f3c9a2b-1111", true).unwrap();
        assert_eq!((removal.prune[0].keep.len(), removal.existing), (0, None), "every run of its own, nothing else");
        assert_eq!(removal_request("ns", "c", "0f3c9a2b-1111", false), None, "files kept");
    }

    #[test]
    fn capture_ids_use_the_agent_alphabet() {
        let id = capture_id("0F3C9A2B-1111-2222", "s1767225600", "api-7d9f.x2x4q");
        assert!(
            id.len() <= 128 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{id}"
        );
        assert_ne!(capture_id("u", "r", "pod-a"), capture_id("u", "r", "pod-b"));
    }

    fn top(entries: &[(&str, i64)]) -> Vec<TopFunction> {
        entries
            .iter()
            .map(|(f, v)| TopFunction { function: (*f).into(), flat: *v, flat_percent: 0.0, cum: *v, cum_percent: 0.0 })
            .collect()
    }

    #[test]
    fn comparison_shows_what_entered_and_what_moved() {
        // Shares of each side's own total: 100 before, 200 after.
        let before = top(&[("a", 50), ("b", 30), ("c", 10)]);
        let after = top(&[("a", 40), ("d", 90), ("b", 60)]);
        let c = compare("s1", (&before, 100), (&after, 200));
        assert_eq!(c.entered, ["d"]);
        assert_eq!(c.shifts[0].function, "d");
        assert_eq!((c.shifts[0].before_percent, c.shifts[0].after_percent), (0.0, 45.0));
        assert_eq!(c.shifts[1].function, "a");
        assert!(c.shifts.iter().all(|s| s.function != "b"), "unchanged functions are not shifts");
    }

    #[test]
    fn agent_answers_become_pod_results() {
        let ok = ProfileOutcome { profile_type: Some(ProfileType::Heap), path: Some("p".into()), ..Default::default() };
        let failed =
            ProfileOutcome { profile_type: Some(ProfileType::Cpu), error: Some("busy".into()), ..Default::default() };
        let status = |profiles| CaptureStatus {
            id: "x".into(),
            state: CaptureState::Succeeded,
            started_at: String::new(),
            finished_at: None,
            error: None,
            waiting: None,
            profiles,
        };
        assert_eq!(pod_result("p", &status(vec![ok.clone()])).result, RunResult::Succeeded);
        // A profile whose requests could not be counted still succeeds, and says why.
        let uncounted = ProfileOutcome {
            profile_type: Some(ProfileType::Cpu),
            path: Some("p".into()),
            requests_error: Some("the metrics endpoint refused the connection".into()),
            ..Default::default()
        };
        let result = pod_result("p", &status(vec![uncounted]));
        assert_eq!(result.result, RunResult::Succeeded);
        assert_eq!(
            (result.profiles[0].requests, result.profiles[0].requests_error.as_deref()),
            (None, Some("the metrics endpoint refused the connection"))
        );
        // A capture waiting for analysis memory is running: the operator keeps polling it.
        let waiting: CaptureStatus = serde_json::from_value(serde_json::json!({
            "id": "x", "state": "Running", "startedAt": "", "profiles": [{"type": "heap"}],
            "waiting": "waiting for analysis memory"
        }))
        .unwrap();
        assert_eq!(pod_result("p", &waiting).result, RunResult::Running);
        assert_eq!(pod_result("p", &status(vec![ok, failed.clone()])).result, RunResult::PartiallySucceeded);
        assert_eq!(pod_result("p", &status(vec![failed])).result, RunResult::Failed);
        let pods = vec![
            pod_failed("a", reasons::POD_GONE, "gone".into()),
            PodRunResult { pod: "b".into(), result: RunResult::Succeeded, profiles: vec![], error: None, reason: None },
        ];
        assert_eq!(run_result(&pods), RunResult::PartiallySucceeded);
    }

    fn answered(status: u16, code: Option<biometrics_agent_api::ErrorCode>) -> AgentError {
        AgentError::Answered { status, code, message: "m".into() }
    }

    #[test]
    fn a_capture_is_expected_to_take_its_cpu_and_trace_durations_one_after_another() {
        let d = Duration::from_secs(30);
        assert_eq!(expected_length(&[ProfileType::Cpu, ProfileType::Heap], d), Duration::from_secs(34));
        assert_eq!(expected_length(&[ProfileType::Cpu, ProfileType::Trace], d), Duration::from_secs(64));
        assert_eq!(expected_length(&[ProfileType::Goroutine], d), Duration::from_secs(2));
    }

    #[test]
    fn blips_are_retried_with_a_backoff_and_only_a_long_silence_fails_the_pod() {
        let started = t("2026-01-01T00:00:00Z");
        let expected_end = t("2026-01-01T00:05:00Z");
        let grace = Duration::from_secs(30);
        let transient = [
            AgentError::Timeout(Duration::from_secs(5)),
            AgentError::Unreachable { addr: "10.0.0.1:9477".into(), reason: "connection reset by peer".into() },
            answered(429, Some(biometrics_agent_api::ErrorCode::TooManyRequests)),
            answered(503, None),
            answered(500, Some(biometrics_agent_api::ErrorCode::Internal)),
            answered(408, None),
            // Polled, a draining agent still answers for the capture it holds: not definitive.
            answered(503, Some(biometrics_agent_api::ErrorCode::ShuttingDown)),
        ];
        for error in &transient {
            let Verdict::Retry(first) = after_failure(Call::Poll, error, None, expected_end, grace, started) else {
                panic!("{error} is retried");
            };
            assert_eq!((first.since, first.attempts), (started, 1));
            assert_eq!(first.next_attempt, t("2026-01-01T00:00:01Z"));
        }
        // Failures in a row back off, 1 s doubling up to 5 s, keeping when the silence began.
        let mut record = None;
        let mut now = started;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let Verdict::Retry(next) =
                after_failure(Call::Poll, &transient[0], record.as_ref(), expected_end, grace, now)
            else {
                panic!("still within the budget");
            };
            waits.push(now.duration_until(next.next_attempt).as_secs());
            now = next.next_attempt;
            record = Some(next);
        }
        assert_eq!(waits, [1, 2, 4, 5, 5, 5]);
        assert_eq!(record.as_ref().unwrap().since, started);
        // Until the expected end plus the grace: then the pod fails, saying so.
        let retry_at_end =
            after_failure(Call::Poll, &transient[0], record.as_ref(), expected_end, grace, t("2026-01-01T00:05:29Z"));
        let Verdict::Retry(last) = retry_at_end else { panic!("within the grace") };
        assert_eq!(last.next_attempt, t("2026-01-01T00:05:30Z"), "never past the deadline");
        let verdict =
            after_failure(Call::Poll, &transient[0], Some(&last), expected_end, grace, t("2026-01-01T00:05:30Z"));
        let Verdict::Fail { reason, message } = verdict else { panic!("past the budget") };
        assert_eq!(reason, reasons::AGENT_UNREACHABLE);
        assert_eq!(
            message,
            "no answer for 5m 30s, past the capture's expected end and a grace of 30s: agent did not answer within 5s"
        );
        // A pod that answered until after the expected end still gets the whole grace.
        let late = t("2026-01-01T00:07:00Z");
        let Verdict::Retry(r) = after_failure(Call::Poll, &transient[1], None, expected_end, grace, late) else {
            panic!("a first failure after the expected end is retried");
        };
        assert!(matches!(
            after_failure(Call::Poll, &transient[1], Some(&r), expected_end, grace, t("2026-01-01T00:07:29Z")),
            Verdict::Retry(_)
        ));
    }

    #[test]
    fn a_definitive_answer_fails_the_pod_at_once_with_its_reason() {
        let now = t("2026-01-01T00:00:10Z");
        let end = t("2026-01-01T00:05:00Z");
        let grace = Duration::from_secs(30);
        let fail = |call, error: AgentError| match after_failure(call, &error, None, end, grace, now) {
            Verdict::Fail { reason, message } => (reason, message),
            Verdict::Retry(_) => panic!("{error} is definitive"),
        };
        let (reason, message) = fail(Call::Poll, answered(404, Some(biometrics_agent_api::ErrorCode::NotFound)));
        assert_eq!(reason, reasons::CAPTURE_NOT_FOUND);
        assert!(message.contains("no longer knows") && message.contains("404"), "{message}");
        assert_eq!(fail(Call::Poll, answered(410, None)).0, reasons::CAPTURE_NOT_FOUND);
        assert_eq!(fail(Call::Start, answered(404, None)).0, reasons::AGENT_REFUSED, "no such route is a refusal");
        assert_eq!(
            fail(Call::Start, answered(400, Some(biometrics_agent_api::ErrorCode::InvalidRequest))).0,
            reasons::AGENT_REFUSED
        );
        assert_eq!(fail(Call::Poll, answered(403, None)).0, reasons::AGENT_REFUSED);
        let (reason, message) = fail(Call::Start, answered(503, Some(biometrics_agent_api::ErrorCode::ShuttingDown)));
        assert_eq!(reason, reasons::POD_TERMINATING);
        assert!(message.contains("terminating") && message.contains("503"), "{message}");
        assert_eq!(fail(Call::Poll, AgentError::BadAnswer("expected value".into())).0, reasons::AGENT_REFUSED);
        // And an agent that says its capture failed: the pod's result says so.
        let failed = CaptureStatus {
            id: "x".into(),
            state: CaptureState::Failed,
            started_at: String::new(),
            finished_at: None,
            error: Some("the app refused".into()),
            profiles: vec![],
            waiting: None,
        };
        let result = pod_result("p", &failed);
        assert_eq!((result.result, result.reason.as_deref()), (RunResult::Failed, Some(reasons::CAPTURE_FAILED)));
    }

    #[test]
    fn cluster_alerting_fills_in_only_where_a_capture_kept_the_defaults() {
        let alerting = crate::config::Alerting {
            goroutine_threshold: Some(500.0),
            gc_threshold: Some(80.0),
            ..Default::default()
        };
        let kept = effective_thresholds(&RuntimeThresholds::default(), &alerting);
        assert_eq!(kept.goroutines, UpperBounds { warning: 100.0, critical: 500.0 }, "warning stays below critical");
        assert_eq!(kept.gc_per_second, UpperBounds { warning: 10.0, critical: 80.0 });
        let own = RuntimeThresholds {
            goroutines: UpperBounds { warning: 10.0, critical: 20.0 },
            ..RuntimeThresholds::default()
        };
        assert_eq!(effective_thresholds(&own, &alerting).goroutines, own.goroutines, "the capture's own value wins");
        let none = crate::config::Alerting::default();
        assert_eq!(effective_thresholds(&own, &none), own);
    }

    #[test]
    fn memory_without_a_limit_is_not_judged_and_fires_nothing() {
        let thresholds = RuntimeThresholds::default();
        // 3 % of a node's memory: reads as OK unless withheld.
        let mut sample = RuntimeSample { memory_percent: Some(3.0), goroutines: Some(10), ..Default::default() };
        let mut l = levels(&sample, &thresholds);
        assert_eq!(l.memory_percent, Some(ThresholdLevel::OK));
        withhold_memory(&mut sample, &mut l, Some("container \"app\" serving port 6060 has no memory limit"));
        assert_eq!((sample.memory_percent, l.memory_percent), (None, None), "no false OK");
        assert_eq!(l.not_judged, [RuntimeMetric::MemoryPercent]);
        assert_eq!(l.goroutines, Some(ThresholdLevel::OK), "the other metrics are judged");
        let triggers: Vec<ThresholdTrigger> = serde_json::from_value(
            json!([{"metric": "memoryPercent", "level": "OK", "profiles": ["heap"], "cooldown": "10m"}]),
        )
        .unwrap();
        assert!(firing(&triggers, &l, |_| None, t("2026-01-01T01:00:00Z")).is_empty());
        let mut measured = RuntimeSample { memory_percent: Some(75.0), ..Default::default() };
        let mut kept = levels(&measured, &thresholds);
        withhold_memory(&mut measured, &mut kept, None);
        assert_eq!((measured.memory_percent, kept.memory_percent), (Some(75.0), Some(ThresholdLevel::Warning)));
        assert!(kept.not_judged.is_empty());
    }

    #[test]
    fn triggers_respect_level_and_cooldown() {
        let thresholds =
            RuntimeThresholds { memory_percent: UpperBounds { warning: 70.0, critical: 90.0 }, ..Default::default() };
        let sample = RuntimeSample { memory_percent: Some(75.0), goroutines: Some(10), ..Default::default() };
        let l = levels(&sample, &thresholds);
        assert_eq!(l.memory_percent, Some(ThresholdLevel::Warning));
        assert_eq!(l.gc_per_second, None, "not measured, no level");
        let triggers: Vec<ThresholdTrigger> = serde_json::from_value(
            json!([{"metric": "memoryPercent", "level": "Warning", "profiles": ["heap"], "cooldown": "10m"}]),
        )
        .unwrap();
        let now = t("2026-01-01T01:00:00Z");
        assert_eq!(firing(&triggers, &l, |_| None, now).len(), 1);
        assert_eq!(firing(&triggers, &l, |_| Some(t("2026-01-01T00:55:00Z")), now).len(), 0, "within the cooldown");
        assert_eq!(firing(&triggers, &l, |_| Some(t("2026-01-01T00:50:00Z")), now).len(), 1);
        let calm = levels(&RuntimeSample { memory_percent: Some(10.0), ..Default::default() }, &thresholds);
        assert!(firing(&triggers, &calm, |_| None, now).is_empty());
    }
}

#[cfg(test)]
mod size {
    use biometrics_crds::{
        profile::ProfileType,
        v1alpha1::{
            CaptureRun, FlatShift, PodRunResult, PodRuntime, ProfileCaptureStatus, ProfileResult, RunResult,
            RunSummary, RunTrigger, TopComparison, TopFunction,
        },
    };
    use biometrics_crds::{
        threshold::ThresholdLevel,
        v1alpha1::{RuntimeLevels, RuntimeMetric},
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// A status at the limits: 100 pods × 8 profiles (trace has no top functions), every
    /// top function named with `name_len` characters.
    fn full_status(name_len: usize) -> ProfileCaptureStatus {
        let t = Time("2026-11-27T10:00:00Z".parse().unwrap());
        let name = |i: usize| format!("{i}{}", "x".repeat(name_len - 1));
        let top: Vec<TopFunction> = (0..super::TOP_FUNCTIONS)
            .map(|i| TopFunction {
                function: name(i),
                flat: 123_456_789_012,
                flat_percent: 12.34,
                cum: 987_654_321_098,
                cum_percent: 98.76,
            })
            .collect();
        let profile = |p: ProfileType| ProfileResult {
            profile_type: p,
            path: Some(format!("shop/a-capture-with-a-long-name/s1767225600/api-7d9f8c6b5d-x2x4q/{}", p.file_name())),
            bytes: Some(12_345_678),
            sha256: Some("f".repeat(64)),
            sample_type: Some("inuse_space/bytes".into()),
            requests: None,
            p99_latency_millis: None,
            error_rate_percent: None,
            requests_error: None,
            total: Some(123_456_789_012),
            samples: Some(123_456),
            top: if p.is_pprof() { top.clone() } else { vec![] },
            error: None,
            compared_to_previous: Some(TopComparison {
                run: "s1767222000".into(),
                entered: (0..2).map(name).collect(),
                shifts: (0..3)
                    .map(|i| FlatShift { function: name(i), before_percent: 1.25, after_percent: 12.5 })
                    .collect(),
            }),
        };
        let pods: Vec<PodRunResult> = (0..100)
            .map(|i| PodRunResult {
                pod: format!("api-7d9f8c6b5d-{i:05}"),
                result: RunResult::Succeeded,
                profiles: ProfileType::ALL.iter().map(|p| profile(*p)).collect(),
                error: None,
                reason: None,
            })
            .collect();
        ProfileCaptureStatus {
            last_run: Some(CaptureRun {
                id: "s1767225600".into(),
                trigger: RunTrigger::Schedule,
                start_time: t.clone(),
                completion_time: Some(t.clone()),
                result: RunResult::Succeeded,
                // Every pod fired a trigger on two metrics.
                fired_by: (0..200)
                    .map(|i| biometrics_crds::v1alpha1::ThresholdFiring {
                        pod: format!("api-7d9f8c6b5d-{:05}", i / 2),
                        metric: if i % 2 == 0 {
                            RuntimeMetric::ResponseTimeMillis
                        } else {
                            RuntimeMetric::ErrorRatePercent
                        },
                        value: 1234.56,
                        level: ThresholdLevel::Critical,
                        bound: 2000.0,
                    })
                    .collect(),
                pods,
            }),
            history: (0..50)
                .map(|i| RunSummary {
                    id: format!("s{i}"),
                    trigger: RunTrigger::Schedule,
                    start_time: t.clone(),
                    completion_time: Some(t.clone()),
                    result: RunResult::Succeeded,
                    pods_succeeded: 100,
                    pods_failed: 0,
                })
                .collect(),
            pods: (0..100)
                .map(|i| PodRuntime {
                    name: format!("api-7d9f8c6b5d-{i:05}"),
                    sample_time: Some(t.clone()),
                    heap_alloc_bytes: Some(1 << 30),
                    heap_sys_bytes: Some(1 << 31),
                    sys_bytes: Some(1 << 31),
                    goroutines: Some(5000),
                    gc_per_second: Some(1.5),
                    memory_percent: Some(55.5),
                    // Every request figure too, so the size counts them.
                    p50_latency_millis: Some(12.25),
                    p95_latency_millis: Some(480.5),
                    p99_latency_millis: Some(1234.75),
                    error_rate_percent: Some(1.25),
                    requests_per_second: Some(1234.5),
                    levels: Some(RuntimeLevels {
                        memory_percent: Some(ThresholdLevel::OK),
                        goroutines: Some(ThresholdLevel::Critical),
                        gc_per_second: Some(ThresholdLevel::OK),
                        response_time_millis: Some(ThresholdLevel::Warning),
                        error_rate_percent: Some(ThresholdLevel::Warning),
                        not_judged: vec![],
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_full_status_stays_well_under_a_mebibyte() {
        for name_len in [64, 100, 200] {
            let mut status = full_status(name_len);
            let trimmed = super::fit_to_budget(status.last_run.as_mut().unwrap(), super::RUN_STATUS_BUDGET);
            let bytes = serde_json::to_vec(&status).unwrap().len();
            eprintln!("100 pods x 8 profiles, {name_len}-character names: {bytes} bytes (trimmed: {trimmed})");
            assert!(bytes < 800 * 1024, "{bytes} bytes with {name_len}-character names");
            let top = &status.last_run.as_ref().unwrap().pods[0].profiles[0].top;
            assert!(!top.is_empty(), "every profile keeps at least its hottest function");
        }
    }

    #[test]
    fn a_small_run_keeps_every_detail() {
        let mut status = full_status(64);
        let run = status.last_run.as_mut().unwrap();
        run.pods.truncate(3);
        assert!(!super::fit_to_budget(run, super::RUN_STATUS_BUDGET));
        assert_eq!(run.pods[0].profiles[0].top.len(), super::TOP_FUNCTIONS);
    }
}

#[cfg(test)]
mod bounds {
    use std::collections::HashSet;

    use biometrics_crds::v1alpha1::{PodRuntime, ProfileCaptureStatus, RuntimeMetric, TriggerFire};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::{STATUS_LIST_LIMIT, bound_status, capped_note};

    /// Item: status stays writable with 2,000 matching pods of which 1,500 have gone: the
    /// fires of departed pods are pruned and every list stays below the schema's cap.
    #[test]
    fn status_stays_within_the_schema_with_2000_pods_and_1500_departed() {
        let pod = |i: usize| format!("pod-{i:04}");
        let metrics = [RuntimeMetric::MemoryPercent, RuntimeMetric::Goroutines, RuntimeMetric::GcPerSecond];
        let mut status = ProfileCaptureStatus {
            trigger_fires: (0..2000)
                .flat_map(|i| {
                    metrics.iter().map(move |m| TriggerFire {
                        pod: pod(i),
                        metric: *m,
                        time: Time(jiff::Timestamp::from_second(1_700_000_000 + i as i64).unwrap()),
                    })
                })
                .collect(),
            pods: (0..2000).map(|i| PodRuntime { name: pod(i), ..Default::default() }).collect(),
            ..ProfileCaptureStatus::default()
        };
        let names: Vec<String> = (1500..2000).map(pod).collect();
        let present: HashSet<&str> = names.iter().map(String::as_str).collect();
        bound_status(&mut status, &present);
        assert!(status.trigger_fires.iter().all(|f| present.contains(f.pod.as_str())), "departed pods pruned");
        assert!(status.trigger_fires.len() <= STATUS_LIST_LIMIT, "{}", status.trigger_fires.len());
        assert!(status.trigger_fires.iter().any(|f| f.pod == "pod-1999"), "the newest fires kept");
        assert!(status.pods.len() <= STATUS_LIST_LIMIT);
        const { assert!(STATUS_LIST_LIMIT < 1000, "below the schema's cap") };

        let mut few = ProfileCaptureStatus {
            trigger_fires: vec![TriggerFire {
                pod: pod(1600),
                metric: RuntimeMetric::Goroutines,
                time: Time(jiff::Timestamp::UNIX_EPOCH),
            }],
            ..ProfileCaptureStatus::default()
        };
        bound_status(&mut few, &present);
        assert_eq!(few.trigger_fires.len(), 1, "a present pod's fire stays");
        assert_eq!(
            capped_note(2000, 100).unwrap(),
            "2000 pods match; maxPods takes the first 100 by name (set spec.maxPods to change it)"
        );
        assert_eq!(capped_note(100, 100), None);
    }
}
