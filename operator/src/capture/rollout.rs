//! Rollout comparisons (`spec.onRolloutOf`) as pure functions: a new revision of the
//! workload opens a comparison (and closes one it interrupts), the old pods are the
//! baseline and the new ones the candidate, each side's profiles are merged into a bounded
//! digest, and the two digests are compared with the capture browser's comparison
//! (`biometrics_pprof::merge`) and judged against `spec.regression`.

use std::{collections::HashMap, time::Duration};

use biometrics_crds::{
    profile::ProfileType,
    run_id,
    threshold::ThresholdLevel,
    v1alpha1::{
        BaselineSource, CaptureRun, DigestFunction, FunctionChange, Normalisation, PodRuntime, ProfileCapture,
        ProfileChange, ProfileDigest, ProfileResult, RegressionBounds, RolloutComparison, RolloutStage, RolloutVerdict,
        RunResult, TopFunction, ValueChange, WorkloadKind,
    },
};
use biometrics_pprof::merge::{self, FunctionTotal, Mergeable, Merged};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::workload;

/// How many comparisons `status.rollouts` keeps.
pub const HISTORY: usize = 10;

/// How many functions a digest keeps per profile type.
pub const DIGEST_FUNCTIONS: usize = 20;

/// How many grown and shrunk functions a change lists.
pub const GROWN: usize = 5;
/// See [`GROWN`].
pub const SHRUNK: usize = 3;

/// The workload a capture watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched<'a> {
    /// Its kind.
    pub kind: WorkloadKind,
    /// Its name, in the capture's namespace.
    pub name: &'a str,
    /// The pod label telling its revisions apart.
    pub label: &'static str,
    /// How long new pods settle before they are measured.
    pub settle: Duration,
}

/// The workload `pc` watches, if any.
pub fn watched(pc: &ProfileCapture) -> Option<Watched<'_>> {
    let w = pc.spec.on_rollout_of.as_ref()?;
    Some(Watched { kind: w.kind, name: &w.name, label: workload::revision_label(w.kind), settle: w.settle.into() })
}

/// The workload as observed this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadState {
    /// Its revision (Deployment revision annotation, StatefulSet `updateRevision`).
    pub revision: String,
    /// The pod-template hash of that revision's pods, once known.
    pub hash: Option<String>,
    /// Its rollout to `revision` has completed.
    pub complete: bool,
    /// The Deployment is paused.
    pub paused: bool,
    /// The Deployment replaces all pods at once (`Recreate`).
    pub recreate: bool,
}

/// A selected pod of the workload and the template hash it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadPod {
    /// The pod.
    pub name: String,
    /// Its `pod-template-hash` / `controller-revision-hash`.
    pub hash: Option<String>,
}

/// The run id of a revision's baseline (`b<revision>-<uid suffix>`).
pub fn baseline_run(revision: &str, uid: &str) -> String {
    run_id::run_id(&format!("b{}", id_part(revision)), uid)
}

/// The run id of a revision's candidate (`c<revision>-<uid suffix>`).
pub fn candidate_run(revision: &str, uid: &str) -> String {
    run_id::run_id(&format!("c{}", id_part(revision)), uid)
}

/// A revision as a run-id part: a StatefulSet's `<name>-<hash>` gives its hash, anything
/// else its lower-case letters and digits, at most 40.
fn id_part(revision: &str) -> String {
    let tail = revision.rsplit_once('-').map_or(revision, |(_, h)| h);
    tail.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).take(40).collect()
}

/// The old pods: the selected pods of the workload that do not run the new template.
pub fn old_pods<'p>(pods: &'p [WorkloadPod], new_hash: &str) -> Vec<&'p WorkloadPod> {
    pods.iter().filter(|p| p.hash.as_deref().is_some_and(|h| h != new_hash)).collect()
}

/// The new pods: those running the new template.
pub fn new_pods<'p>(pods: &'p [WorkloadPod], new_hash: &str) -> Vec<&'p WorkloadPod> {
    pods.iter().filter(|p| p.hash.as_deref() == Some(new_hash)).collect()
}

/// How long the baseline captures: the capture's duration, but at most three quarters of
/// the old pods' `terminationGracePeriodSeconds` (at least 1s), so a pod being replaced
/// still answers when its profile ends.
pub fn baseline_duration(duration: Duration, grace_seconds: Option<i64>) -> Duration {
    match grace_seconds {
        Some(grace) => {
            let cap = Duration::from_secs(u64::try_from(grace.max(0)).unwrap_or(0) * 3 / 4).max(Duration::from_secs(1));
            duration.min(cap)
        }
        None => duration,
    }
}

/// What a new revision does to `status.rollouts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    /// The comparison to put first.
    pub entry: RolloutComparison,
    /// The old pods to capture now as its baseline (empty when the baseline is carried
    /// over or there is none).
    pub baseline_pods: Vec<String>,
}

/// Opens the comparison of a revision not seen before, closing the one it interrupts.
/// `None` when the revision is the newest one recorded.
///
/// - The first revision seen has nothing before it: its pods are measured as a candidate
///   (when its rollout is complete), the baseline of the next rollout if that one's old pods
///   are gone.
/// - A revision that arrives while the previous rollout has not been judged interrupts it
///   (`Interrupted`, with why: superseded, or rolled back when the new template is the one
///   it replaced). Its baseline, once measured, carries over: the old pods it measured ran
///   the last completed revision.
/// - Otherwise the old pods are the baseline, captured at once; with `Recreate`, or when no
///   old pod is left, the previous rollout's candidate is, and status says so.
pub fn open(
    rollouts: &mut [RolloutComparison],
    state: &WorkloadState,
    pods: &[WorkloadPod],
    uid: &str,
    now: Timestamp,
) -> Option<Opened> {
    let previous = rollouts.first_mut();
    if previous.as_ref().is_some_and(|p| p.revision == state.revision) {
        return None;
    }
    let mut entry = RolloutComparison {
        revision: state.revision.clone(),
        previous_revision: previous.as_ref().map(|p| p.revision.clone()),
        template_hash: state.hash.clone(),
        previous_template_hash: None,
        stage: RolloutStage::Settling,
        detected_time: Time(now),
        completed_time: None,
        baseline_run: None,
        baseline_source: None,
        capture_seconds: None,
        candidate_run: None,
        verdict: None,
        severity: None,
        message: None,
        changes: Vec::new(),
        latency: None,
        error_rate: None,
        baseline: Vec::new(),
        candidate: Vec::new(),
    };
    let Some(previous) = previous else {
        entry.message = Some(format!(
            "revision {} is the first seen: its pods are measured as the baseline of the next rollout",
            state.revision
        ));
        return Some(Opened { entry, baseline_pods: Vec::new() });
    };
    entry.previous_template_hash = previous.template_hash.clone();
    if previous.stage != RolloutStage::Judged {
        let rolled_back = state.hash.is_some() && state.hash == previous.previous_template_hash;
        let why = if rolled_back {
            format!("rolled back by revision {} to the template it replaced (rollout undo)", state.revision)
        } else {
            format!("revision {} came before this rollout completed", state.revision)
        };
        previous.stage = RolloutStage::Interrupted;
        previous.message = Some(format!("not judged: {why}"));
        if !previous.baseline.is_empty() {
            entry.previous_template_hash = previous.previous_template_hash.clone();
            entry.baseline = std::mem::take(&mut previous.baseline);
            entry.baseline_run = previous.baseline_run.clone();
            entry.baseline_source = Some(BaselineSource::InterruptedRollout);
            return Some(Opened { entry, baseline_pods: Vec::new() });
        }
    }
    let old: Vec<String> = match (&state.hash, state.recreate) {
        (Some(hash), false) => old_pods(pods, hash).into_iter().map(|p| p.name.clone()).collect(),
        _ => Vec::new(),
    };
    if !old.is_empty() {
        entry.stage = RolloutStage::MeasuringBaseline;
        entry.baseline_run = Some(baseline_run(&state.revision, uid));
        entry.baseline_source = Some(BaselineSource::OldPods);
        return Some(Opened { entry, baseline_pods: old });
    }
    if !previous.candidate.is_empty() {
        entry.baseline = previous.candidate.clone();
        entry.baseline_run = previous.candidate_run.clone();
        entry.baseline_source = Some(BaselineSource::PreviousCandidate);
        let why = if state.recreate { "a Recreate rollout" } else { "the old pods were already gone" };
        entry.message = Some(format!("baseline: revision {}'s candidate run ({why})", previous.revision));
    }
    Some(Opened { entry, baseline_pods: Vec::new() })
}

/// Whether the candidate can be measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandidateDue {
    /// Now: the rollout completed and `settle` has passed.
    Now,
    /// The rollout has not completed.
    RolloutInProgress,
    /// The Deployment is paused: nothing is measured until it is resumed.
    Paused,
    /// The rollout completed; the new pods settle until then.
    SettlingUntil(Timestamp),
}

/// When `entry`'s candidate is due, recording when its rollout was first seen complete.
pub fn candidate_due(
    entry: &mut RolloutComparison,
    state: &WorkloadState,
    settle: Duration,
    now: Timestamp,
) -> CandidateDue {
    if state.paused {
        return CandidateDue::Paused;
    }
    if !state.complete || state.revision != entry.revision {
        return CandidateDue::RolloutInProgress;
    }
    let completed = entry.completed_time.get_or_insert(Time(now)).0;
    let settle = SignedDuration::try_from(settle).unwrap_or(SignedDuration::MAX);
    match completed.checked_add(settle) {
        Ok(until) if until > now => CandidateDue::SettlingUntil(until),
        _ => CandidateDue::Now,
    }
}

/// One pod's captured profile, as its agent reported it.
#[derive(Debug, Clone, Copy)]
pub struct PodProfile<'a> {
    /// The sample type summarised.
    pub sample_type: &'a str,
    /// The samples' total.
    pub total: i64,
    /// How many samples.
    pub samples: i64,
    /// How long it sampled (0 for snapshots).
    pub seconds: f64,
    /// Its top functions by flat value.
    pub top: &'a [TopFunction],
}

/// The app's request figures over a side's pods during its capture.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SideRequests {
    /// Requests per second, summed over the pods.
    pub requests_per_second: Option<f64>,
    /// Latency at the judged quantile, in milliseconds.
    pub latency_millis: Option<f64>,
    /// Errors in percent of requests.
    pub error_rate_percent: Option<f64>,
}

/// One profile type of one side merged over its pods (pprof's merge: flat and cum add by
/// function; the total is the pods' totals summed, as it is for profiles whose values are
/// not negative), bounded to the [`DIGEST_FUNCTIONS`] functions pprof's `-top` lists first.
/// `None` when the pods' sample types differ or there is no pod.
pub fn digest(profile_type: ProfileType, pods: &[PodProfile<'_>], requests: SideRequests) -> Option<ProfileDigest> {
    let first = pods.first()?;
    let parts: Vec<Mergeable> = pods
        .iter()
        .map(|p| Mergeable {
            sample_types: vec![p.sample_type.to_owned()],
            default_index: 0,
            duration_nanos: (p.seconds * 1e9) as i64,
            functions: p
                .top
                .iter()
                .map(|t| FunctionTotal { function: t.function.clone(), flat: t.flat, cum: t.cum })
                .collect(),
            stacks: HashMap::new(),
        })
        .collect();
    let merged = merge::merge(&parts.iter().map(|p| (p, 1)).collect::<Vec<_>>()).ok()?;
    let functions = merge::report_order(
        merged.functions.iter().map(|(name, (flat, cum))| (name.as_str(), *flat, *cum)),
        DIGEST_FUNCTIONS,
    )
    .into_iter()
    .map(|(function, flat, cum)| DigestFunction { function: function.to_owned(), flat, cum })
    .collect();
    Some(ProfileDigest {
        profile_type,
        sample_type: first.sample_type.to_owned(),
        pods: i32::try_from(pods.len()).unwrap_or(i32::MAX),
        samples: pods.iter().map(|p| p.samples).sum(),
        total: pods.iter().map(|p| p.total).sum(),
        seconds: pods.iter().map(|p| p.seconds).sum(),
        requests_per_second: requests.requests_per_second,
        latency_millis: requests.latency_millis,
        error_rate_percent: requests.error_rate_percent,
        functions,
    })
}

/// A digest as the merged profile it summarises.
fn merged(d: &ProfileDigest) -> Merged {
    Merged {
        sample_type: d.sample_type.clone(),
        duration_nanos: (d.seconds * 1e9) as i64,
        total: d.total,
        functions: d.functions.iter().map(|f| (f.function.clone(), (f.flat, f.cum))).collect(),
    }
}

/// What a profile's values are divided by to compare two sides: per request when both
/// sides know their request rate (cpu), else per second of capture (timed profiles), else
/// per pod (snapshots).
fn normaliser(d: &ProfileDigest, per: Normalisation) -> f64 {
    match per {
        Normalisation::Request => d.requests_per_second.unwrap_or(0.0) * d.seconds / f64::from(d.pods.max(1)),
        Normalisation::Second => d.seconds,
        Normalisation::Pod => f64::from(d.pods.max(1)),
    }
}

fn per(before: &ProfileDigest, after: &ProfileDigest) -> Normalisation {
    let rate = |d: &ProfileDigest| d.requests_per_second.is_some_and(|r| r > 0.0) && d.seconds > 0.0;
    if before.profile_type == ProfileType::Cpu && rate(before) && rate(after) {
        Normalisation::Request
    } else if before.seconds > 0.0 && after.seconds > 0.0 {
        Normalisation::Second
    } else {
        Normalisation::Pod
    }
}

/// `before` → `after`, with the change in percent when `before` is not 0.
pub fn value_change(before: f64, after: f64) -> ValueChange {
    let change_percent = (before != 0.0).then(|| round2((after - before) * 100.0 / before));
    ValueChange { before: round4(before), after: round4(after), change_percent }
}

/// Each profile type both sides have, compared: the normalised total, and the functions
/// whose flat share moved most ([`GROWN`] grown, [`SHRUNK`] shrunk) with their shares and
/// normalised flat values before and after.
pub fn compare(baseline: &[ProfileDigest], candidate: &[ProfileDigest]) -> Vec<ProfileChange> {
    let mut changes = Vec::new();
    for before in baseline {
        let Some(after) = candidate.iter().find(|c| c.profile_type == before.profile_type) else { continue };
        if before.sample_type != after.sample_type {
            continue;
        }
        let per = per(before, after);
        let (nb, na) = (normaliser(before, per), normaliser(after, per));
        if nb <= 0.0 || na <= 0.0 {
            continue;
        }
        let shares = merge::share_changes(&merged(before), &merged(after));
        let function = |s: &merge::ShareChange| FunctionChange {
            function: s.function.clone(),
            before_percent: round2(s.base_percent),
            after_percent: round2(s.percent),
            before: round4(s.base_flat as f64 / nb),
            after: round4(s.flat as f64 / na),
        };
        let grown = shares.iter().filter(|s| s.points() > 0.0).take(GROWN).map(function).collect();
        let shrunk = shares.iter().rev().filter(|s| s.points() < 0.0).take(SHRUNK).map(function).collect();
        changes.push(ProfileChange {
            profile_type: before.profile_type,
            sample_type: before.sample_type.clone(),
            per,
            total: value_change(before.total as f64 / nb, after.total as f64 / na),
            samples_before: before.samples,
            samples_after: after.samples,
            grown,
            shrunk,
        });
    }
    changes
}

/// A comparison judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The verdict.
    pub verdict: RolloutVerdict,
    /// For `Regressed`, the worst level crossed.
    pub severity: Option<ThresholdLevel>,
    /// The verdict in a sentence: the Event's message.
    pub message: String,
}

fn share_of(profile_type: ProfileType) -> &'static str {
    match profile_type {
        ProfileType::Cpu => "CPU",
        ProfileType::Heap => "heap",
        ProfileType::Allocs => "allocations",
        ProfileType::Goroutine => "goroutines",
        ProfileType::Block => "blocking",
        ProfileType::Mutex => "mutex contention",
        ProfileType::Threadcreate => "thread creation",
        ProfileType::Trace => "trace",
    }
}

/// Milliseconds as people read them: whole from 100 ms, else with one decimal.
fn millis(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

fn signed(v: f64) -> String {
    if v >= 0.0 { format!("+{v:.0}") } else { format!("{v:.0}") }
}

/// How many standard errors of sampling a function's share must rise by before its growth
/// is judged: with the 10 or so functions each side lists, 3 keeps a label-only rollout's
/// largest chance move (about 1 standard error over 5 rollouts on the development machine)
/// from reading as a regression.
pub const SHARE_SIGNIFICANCE: f64 = 3.0;

/// The standard error, in points, of the difference between a function's share of two
/// sampled profiles of `before` and `after` samples (each share a binomial proportion).
/// 0 when a side's sample count is unknown: nothing to discount.
pub fn share_noise(before_percent: f64, after_percent: f64, before: i64, after: i64) -> f64 {
    if before <= 0 || after <= 0 {
        return 0.0;
    }
    let variance = |percent: f64, n: i64| {
        let p = (percent / 100.0).clamp(0.0, 1.0);
        p * (1.0 - p) / n as f64
    };
    100.0 * (variance(before_percent, before) + variance(after_percent, after)).sqrt()
}

/// Judges `changes` (and the p99 latency and error-rate changes, when known) against
/// `bounds` (the error rate's growth in points, not percent):
/// `Inconclusive` when a cpu side has fewer samples than `minSamples` or nothing could be
/// compared; `Regressed` when a bound is crossed (severity: the worst level; a function's
/// growth only when its share rose by more than [`SHARE_SIGNIFICANCE`] standard errors of
/// sampling); `Improved`
/// when a normalised total fell by at least the total bound's warning; else `Unchanged`.
pub fn judge(
    revision: &str,
    changes: &[ProfileChange],
    latency: Option<&ValueChange>,
    error_rate: Option<&ValueChange>,
    bounds: &RegressionBounds,
) -> Judgement {
    let inconclusive = |message: String| Judgement { verdict: RolloutVerdict::Inconclusive, severity: None, message };
    if changes.is_empty() {
        return inconclusive(format!("revision {revision}: no profile of both sides could be compared"));
    }
    let min = i64::from(bounds.min_samples);
    if let Some(c) =
        changes.iter().find(|c| c.profile_type == ProfileType::Cpu && c.samples_before.min(c.samples_after) < min)
    {
        return inconclusive(format!(
            "revision {revision}: too few cpu samples to judge: {} before, {} after (at least {min} each)",
            c.samples_before, c.samples_after
        ));
    }
    let mut findings: Vec<(ThresholdLevel, String)> = Vec::new();
    for c in changes {
        let what = share_of(c.profile_type);
        // A function's growth in points of the old total: its own added cost, so a function
        // whose share rose only because others fell does not count.
        let growth =
            |f: &FunctionChange| if c.total.before > 0.0 { (f.after - f.before) * 100.0 / c.total.before } else { 0.0 };
        // Only a move of its share beyond what sampling alone gives counts.
        let beyond_noise = |f: &&FunctionChange| {
            f.after_percent - f.before_percent
                > SHARE_SIGNIFICANCE * share_noise(f.before_percent, f.after_percent, c.samples_before, c.samples_after)
        };
        if let Some(grown) = c.grown.iter().filter(beyond_noise).max_by(|a, b| growth(a).total_cmp(&growth(b))) {
            let level = bounds.function_share_points.level(growth(grown));
            let text =
                format!("{} {:.1} % → {:.1} % of {what}", grown.function, grown.before_percent, grown.after_percent);
            findings.push((level, text));
        }
        if let Some(pct) = c.total.change_percent {
            findings
                .push((bounds.total_percent.level(pct), format!("{what} per {} {} %", c.per.as_str(), signed(pct))));
        }
    }
    if let Some(l) = latency
        && let Some(pct) = l.change_percent
    {
        let text = format!("p99 latency {} % ({} → {} ms)", signed(pct), millis(l.before), millis(l.after));
        findings.push((bounds.latency_percent.level(pct), text));
    }
    if let Some(e) = error_rate {
        let points = e.after - e.before;
        let text = format!("error rate {points:+.1} points ({:.2} % → {:.2} %)", e.before, e.after);
        findings.push((bounds.error_rate_points.level(points), text));
    }
    let worst = ThresholdLevel::worst(findings.iter().map(|(l, _)| *l));
    if worst > ThresholdLevel::OK {
        let crossed: Vec<&str> =
            findings.iter().filter(|(l, _)| *l > ThresholdLevel::OK).map(|(_, t)| t.as_str()).collect();
        // The function first: it names what to look at.
        let mut text = crossed.join(", ");
        if let Some(c) = changes.iter().find(|c| c.total.change_percent.is_some())
            && !crossed.iter().any(|t| t.contains(" per "))
        {
            text = format!(
                "{text}, {} per {} {} %",
                share_of(c.profile_type),
                c.per.as_str(),
                signed(c.total.change_percent.unwrap_or(0.0))
            );
        }
        return Judgement {
            verdict: RolloutVerdict::Regressed,
            severity: Some(worst),
            message: format!("revision {revision}: {text}"),
        };
    }
    let fell = changes.iter().find(|c| c.total.change_percent.is_some_and(|p| p <= -bounds.total_percent.warning));
    match fell {
        Some(c) => Judgement {
            verdict: RolloutVerdict::Improved,
            severity: None,
            message: format!(
                "revision {revision}: {} per {} {} %",
                share_of(c.profile_type),
                c.per.as_str(),
                signed(c.total.change_percent.unwrap_or(0.0))
            ),
        },
        None => Judgement {
            verdict: RolloutVerdict::Unchanged,
            severity: None,
            message: format!("revision {revision}: within the regression bounds"),
        },
    }
}

/// Puts `entry` first in `rollouts`, keeping at most [`HISTORY`], and only the newest two
/// with their digests (the newest's candidate may be the next baseline; an older one's are
/// dead weight in status).
pub fn push(rollouts: &mut Vec<RolloutComparison>, entry: RolloutComparison) {
    rollouts.insert(0, entry);
    rollouts.truncate(HISTORY);
    for older in rollouts.iter_mut().skip(2) {
        older.baseline.clear();
        older.candidate.clear();
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// What this pass sees of the watched workload.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadView {
    /// It does not exist (yet).
    Missing,
    /// Its state, its pods that the capture selects (with their template hash), and the
    /// shortest `terminationGracePeriodSeconds` among them.
    Seen {
        /// Its revision and rollout.
        state: WorkloadState,
        /// Its selected, eligible pods.
        pods: Vec<WorkloadPod>,
        /// The shortest grace period of its pods.
        grace_seconds: Option<i64>,
    },
}

/// A rollout run to start.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRun {
    /// Its id (`b…` or `c…`).
    pub id: String,
    /// The pods it captures.
    pub pods: Vec<String>,
    /// How long its timed profiles sample.
    pub duration: Duration,
}

/// An Event about a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutEvent {
    /// Warning, or Normal.
    pub warning: bool,
    /// Its reason ([`crate::reasons`]).
    pub reason: &'static str,
    /// Its message.
    pub message: String,
}

impl RolloutEvent {
    fn normal(reason: &'static str, message: String) -> Self {
        Self { warning: false, reason, message }
    }
}

/// What this pass does about rollouts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    /// The run to start (only when no run is running: rollout runs queue behind others).
    pub run: Option<RolloutRun>,
    /// Events to publish.
    pub events: Vec<RolloutEvent>,
}

/// One pass over the watched workload: folds a finished baseline or candidate run into
/// the newest comparison (judging it after the candidate), opens a comparison for a new
/// revision, and says which rollout run is due. `last_run` is the capture's latest run,
/// `pods` its pods' latest runtime entries (their request figures).
pub fn step(
    pc: &ProfileCapture,
    rollouts: &mut Vec<RolloutComparison>,
    view: &WorkloadView,
    last_run: Option<&CaptureRun>,
    pods: &[PodRuntime],
    now: Timestamp,
) -> Step {
    let mut out = Step::default();
    let Some(watched) = watched(pc) else { return out };
    let uid = pc.metadata.uid.as_deref().unwrap_or_default();
    let finished = last_run.filter(|r| r.result != RunResult::Running);
    if let (Some(entry), Some(run)) = (rollouts.first_mut(), finished) {
        let counts_requests = super::signals::wants_requests(&pc.spec);
        fold(entry, run, pods, counts_requests, &pc.spec.regression, &mut out);
        // The old pods' capture gave nothing (say, they were stopped mid-profile).
        if entry.stage == RolloutStage::Settling
            && entry.baseline.is_empty()
            && entry.baseline_source == Some(BaselineSource::OldPods)
        {
            use_previous_candidate(rollouts, "the old pods' capture gave no profile");
        }
    }
    let WorkloadView::Seen { state, pods: workload_pods, grace_seconds } = view else { return out };
    // A revision whose pods cannot be told apart yet (its ReplicaSet not seen) waits a pass.
    if state.hash.is_some()
        && let Some(opened) = open(rollouts, state, workload_pods, uid, now)
    {
        if let Some(interrupted) = rollouts.first().filter(|r| r.stage == RolloutStage::Interrupted) {
            let message =
                format!("revision {}: {}", interrupted.revision, interrupted.message.as_deref().unwrap_or_default());
            out.events.push(RolloutEvent::normal(crate::reasons::ROLLOUT_INTERRUPTED, message));
        }
        let message = match &opened.entry.previous_revision {
            Some(previous) => {
                format!("revision {} replaces {previous}: comparing its pods with the old ones", state.revision)
            }
            None => format!("revision {} seen first: measuring it as the baseline of the next rollout", state.revision),
        };
        out.events.push(RolloutEvent::normal(crate::reasons::ROLLOUT_DETECTED, message));
        push(rollouts, opened.entry);
    }
    if last_run.is_some_and(|r| r.result == RunResult::Running) {
        return out;
    }
    let Some(entry) = rollouts.first_mut().filter(|e| e.revision == state.revision) else { return out };
    let hash = entry.template_hash.clone().unwrap_or_default();
    if entry.stage == RolloutStage::MeasuringBaseline
        && last_run.map(|r| r.id.as_str()) != entry.baseline_run.as_deref()
    {
        let old: Vec<String> = old_pods(workload_pods, &hash).into_iter().map(|p| p.name.clone()).collect();
        if !old.is_empty() {
            let id = entry.baseline_run.clone().unwrap_or_default();
            let duration = baseline_duration(watched_duration(pc), *grace_seconds);
            entry.capture_seconds = Some(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX));
            out.run = Some(RolloutRun { id, pods: old, duration });
            return out;
        }
        // Queued behind another run until the old pods were gone.
        entry.stage = RolloutStage::Settling;
        entry.baseline_run = None;
        entry.baseline_source = None;
        use_previous_candidate(rollouts, "the old pods were gone before they could be captured");
    }
    let Some(entry) = rollouts.first_mut() else { return out };
    if entry.stage != RolloutStage::Settling {
        return out;
    }
    match candidate_due(entry, state, watched.settle, now) {
        CandidateDue::Now => {
            let new: Vec<String> = new_pods(workload_pods, &hash).into_iter().map(|p| p.name.clone()).collect();
            if new.is_empty() {
                entry.message = Some("waiting for a selected pod of the new revision".into());
                return out;
            }
            let id = candidate_run(&entry.revision, uid);
            entry.stage = RolloutStage::MeasuringCandidate;
            entry.candidate_run = Some(id.clone());
            // As long as the baseline's, so both sides sample alike.
            let duration = match entry.capture_seconds.and_then(|s| u64::try_from(s).ok()) {
                Some(seconds) => Duration::from_secs(seconds),
                None => watched_duration(pc),
            };
            entry.capture_seconds = Some(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX));
            out.run = Some(RolloutRun { id, pods: new, duration });
        }
        CandidateDue::SettlingUntil(_) | CandidateDue::RolloutInProgress => {}
        CandidateDue::Paused => {
            entry.message = Some("waiting: the Deployment is paused (kubectl rollout resume)".into())
        }
    }
    out
}

/// Makes the previous rollout's candidate the newest comparison's baseline, saying `why`,
/// when there is one.
fn use_previous_candidate(rollouts: &mut [RolloutComparison], why: &str) {
    let Some((entry, rest)) = rollouts.split_first_mut() else { return };
    let Some(previous) = rest.first().filter(|p| !p.candidate.is_empty()) else { return };
    entry.baseline = previous.candidate.clone();
    entry.baseline_run = previous.candidate_run.clone();
    entry.baseline_source = Some(BaselineSource::PreviousCandidate);
    entry.message = Some(format!("baseline: revision {}'s candidate run ({why})", previous.revision));
}

/// When the newest comparison's settle ends, while it settles after a completed rollout:
/// the pass that starts its candidate.
pub fn wake(pc: &ProfileCapture, rollouts: &[RolloutComparison]) -> Option<Timestamp> {
    let entry = rollouts.first().filter(|e| e.stage == RolloutStage::Settling)?;
    let settle = SignedDuration::try_from(watched(pc)?.settle).ok()?;
    entry.completed_time.as_ref()?.0.checked_add(settle).ok()
}

fn watched_duration(pc: &ProfileCapture) -> Duration {
    pc.spec.duration.into()
}

/// Folds `run`, finished, into `entry` when it is the entry's baseline or candidate run.
fn fold(
    entry: &mut RolloutComparison,
    run: &CaptureRun,
    pods: &[PodRuntime],
    counts_requests: bool,
    bounds: &RegressionBounds,
    out: &mut Step,
) {
    let id = Some(run.id.as_str());
    if entry.stage == RolloutStage::MeasuringBaseline && entry.baseline_run.as_deref() == id {
        entry.baseline = digests(run, pods, entry.capture_seconds, counts_requests);
        entry.stage = RolloutStage::Settling;
        if entry.baseline.is_empty() {
            entry.message = Some(format!("the baseline run {} captured nothing", run.id));
        }
        return;
    }
    if entry.stage != RolloutStage::MeasuringCandidate || entry.candidate_run.as_deref() != id {
        return;
    }
    entry.candidate = digests(run, pods, entry.capture_seconds, counts_requests);
    entry.stage = RolloutStage::Judged;
    if entry.previous_revision.is_none() {
        entry.message = Some(format!("revision {} measured: the baseline of the next rollout", entry.revision));
        return;
    }
    let judgement = if entry.baseline.is_empty() {
        Judgement {
            verdict: RolloutVerdict::Inconclusive,
            severity: None,
            message: format!("revision {}: no baseline (the old pods could not be captured)", entry.revision),
        }
    } else {
        entry.changes = compare(&entry.baseline, &entry.candidate);
        let request_figure = |side: &[ProfileDigest], f: fn(&ProfileDigest) -> Option<f64>| side.iter().find_map(f);
        let change = |f: fn(&ProfileDigest) -> Option<f64>| {
            Some(value_change(request_figure(&entry.baseline, f)?, request_figure(&entry.candidate, f)?))
        };
        entry.latency = change(|d| d.latency_millis);
        entry.error_rate = change(|d| d.error_rate_percent);
        judge(&entry.revision, &entry.changes, entry.latency.as_ref(), entry.error_rate.as_ref(), bounds)
    };
    let reason = match judgement.verdict {
        RolloutVerdict::Regressed => crate::reasons::REGRESSED,
        RolloutVerdict::Improved => crate::reasons::IMPROVED,
        RolloutVerdict::Unchanged => crate::reasons::UNCHANGED,
        RolloutVerdict::Inconclusive => crate::reasons::INCONCLUSIVE,
    };
    let warning = judgement.verdict == RolloutVerdict::Regressed;
    out.events.push(RolloutEvent { warning, reason, message: judgement.message.clone() });
    entry.verdict = Some(judgement.verdict);
    entry.severity = judgement.severity;
    entry.message = Some(judgement.message);
}

/// Each profile type of a finished run merged over the pods that captured it, with the
/// pods' request figures (p99 latency and error rate weighted by requests): of a timed
/// profile, those its agents read over the profile's own span when they report them,
/// else the pods' runtime entries'.
/// Timed profiles sampled `capture_seconds` each (what the run asked for: its wall time
/// also counts the agents' polling). When the capture `counts_requests` (it reads the
/// app's metrics), a timed profile's rate is the requests its pods counted while they
/// sampled, and a pod that could not count them (say, its app stopped accepting
/// connections on SIGTERM before the count was read again) is left out of the side; when
/// none could, the side has no request rate (the metrics window's rate is not over the
/// profiles), so it is compared per second.
pub fn digests(
    run: &CaptureRun,
    pods: &[PodRuntime],
    capture_seconds: Option<i64>,
    counts_requests: bool,
) -> Vec<ProfileDigest> {
    let run_seconds = capture_seconds.unwrap_or(0) as f64;
    let runtime: Vec<&PodRuntime> = run.pods.iter().filter_map(|p| pods.iter().find(|r| r.name == p.pod)).collect();
    let rps: f64 = runtime.iter().filter_map(|r| r.requests_per_second).sum();
    let weighted = |f: fn(&PodRuntime) -> Option<f64>| {
        weighted_mean(runtime.iter().filter_map(|r| Some((f(r)?, r.requests_per_second?))))
    };
    let requests = SideRequests {
        requests_per_second: (rps > 0.0).then_some(rps),
        latency_millis: weighted(|r| r.p99_latency_millis),
        error_rate_percent: weighted(|r| r.error_rate_percent),
    };
    let mut types: Vec<ProfileType> = run.pods.iter().flat_map(|p| p.profiles.iter().map(|q| q.profile_type)).collect();
    types.sort_by_key(|t| t.as_str());
    types.dedup();
    types
        .into_iter()
        .filter_map(|profile_type| {
            let mut results: Vec<&ProfileResult> = run
                .pods
                .iter()
                .flat_map(|p| p.profiles.iter())
                .filter(|q| q.profile_type == profile_type && q.error.is_none())
                .collect();
            let counted = counts_requests && profile_type.is_timed() && run_seconds > 0.0;
            let mut requests = requests;
            if counted {
                if results.iter().any(|q| q.requests.is_some()) {
                    results.retain(|q| q.requests.is_some());
                    let answered: f64 = results.iter().filter_map(|q| q.requests).sum();
                    requests.requests_per_second = Some(answered / run_seconds);
                    // Latency and errors over the profiles' own span too, when the agents
                    // report them (the runtime entries' are over another span, and gone
                    // with the old pods).
                    let latency = weighted_by_requests(&results, |q| q.p99_latency_millis);
                    let errors = weighted_by_requests(&results, |q| q.error_rate_percent);
                    if latency.is_some() || errors.is_some() {
                        (requests.latency_millis, requests.error_rate_percent) = (latency, errors);
                    }
                } else {
                    requests.requests_per_second = None;
                }
            }
            let parts: Vec<PodProfile<'_>> = results
                .iter()
                .filter_map(|q| {
                    Some(PodProfile {
                        sample_type: q.sample_type.as_deref()?,
                        total: q.total?,
                        samples: q.samples.unwrap_or(0),
                        // The capture's length: the profile's own is in the file only.
                        seconds: if profile_type.is_timed() { run_seconds } else { 0.0 },
                        top: &q.top,
                    })
                })
                .collect();
            digest(profile_type, &parts, requests)
        })
        .collect()
}

/// The mean of a figure the profiles report over their own span (p99 latency, error
/// rate), each profile weighted by the requests it counted; `None` when no profile with
/// requests reports it. Weighted so, the error rate is exactly the side's errors over its
/// requests; the p99 is the usual approximation of the merged distribution's (which would
/// need the histograms themselves).
fn weighted_by_requests(results: &[&ProfileResult], figure: fn(&ProfileResult) -> Option<f64>) -> Option<f64> {
    weighted_mean(results.iter().filter_map(|q| Some((figure(q)?, q.requests.filter(|n| *n > 0.0)?))))
}

/// The mean of `(value, weight)` pairs, each value weighted by its weight; `None` when
/// nothing weighs.
fn weighted_mean(pairs: impl Iterator<Item = (f64, f64)>) -> Option<f64> {
    let (sum, weight) = pairs.fold((0.0, 0.0), |(s, w), (v, n)| (s + v * n, w + n));
    (weight > 0.0).then(|| sum / weight)
}

/// The `PerformanceRegressed` condition: (status, reason, message) from the newest judged
/// rollout.
pub fn regressed_condition(rollouts: &[RolloutComparison]) -> (bool, &'static str, String) {
    match rollouts.iter().find(|r| r.verdict.is_some()) {
        Some(r) => {
            let reason = match r.verdict {
                Some(RolloutVerdict::Regressed) => crate::reasons::REGRESSED,
                Some(RolloutVerdict::Improved) => crate::reasons::IMPROVED,
                Some(RolloutVerdict::Unchanged) => crate::reasons::UNCHANGED,
                _ => crate::reasons::INCONCLUSIVE,
            };
            (r.verdict == Some(RolloutVerdict::Regressed), reason, r.message.clone().unwrap_or_default())
        }
        None => (false, crate::reasons::NO_ROLLOUT_JUDGED, "no rollout judged yet".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f2a9c1b-0000-4000-8000-000000000000";

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn state(revision: &str, hash: &str, complete: bool) -> WorkloadState {
        WorkloadState { revision: revision.into(), hash: Some(hash.into()), complete, paused: false, recreate: false }
    }

    fn pods(list: &[(&str, &str)]) -> Vec<WorkloadPod> {
        list.iter().map(|(n, h)| WorkloadPod { name: (*n).into(), hash: Some((*h).into()) }).collect()
    }

    fn top(functions: &[(&str, i64)]) -> Vec<TopFunction> {
        functions
            .iter()
            .map(|(f, flat)| TopFunction {
                function: (*f).into(),
                flat: *flat,
                flat_percent: 0.0,
                cum: *flat,
                cum_percent: 0.0,
            })
            .collect()
    }

    /// A cpu digest of `pods` pods capturing `seconds` each, with these flat values.
    /// Revision 6, the first the capture saw, opened and judged: what a later revision
    /// opens on.
    fn first_revision_judged(rollouts: &mut Vec<RolloutComparison>, now: Timestamp) {
        let first = open(rollouts, &state("6", "aaa", true), &[], UID, now).unwrap().entry;
        push(rollouts, first);
        rollouts[0].stage = RolloutStage::Judged;
    }

    fn cpu(pods: i32, seconds: f64, samples: i64, functions: &[(&str, i64)]) -> ProfileDigest {
        let tops: Vec<Vec<TopFunction>> = (0..pods).map(|_| top(functions)).collect();
        let total: i64 = functions.iter().map(|(_, f)| f).sum();
        let parts: Vec<PodProfile<'_>> = tops
            .iter()
            .map(|t| PodProfile {
                sample_type: "cpu/nanoseconds",
                total,
                samples: samples / i64::from(pods),
                seconds,
                top: t,
            })
            .collect();
        digest(ProfileType::Cpu, &parts, SideRequests::default()).unwrap()
    }

    #[test]
    fn run_ids_carry_the_revision_and_the_uid_suffix() {
        assert_eq!(baseline_run("7", UID), "b7-3f2a9c1b");
        assert_eq!(candidate_run("7", UID), "c7-3f2a9c1b");
        assert_eq!(candidate_run("db-6c4b8d7f5", UID), "c6c4b8d7f5-3f2a9c1b", "a StatefulSet revision's hash");
    }

    #[test]
    fn the_baseline_is_capped_below_the_grace_period() {
        let d = Duration::from_secs(30);
        assert_eq!(baseline_duration(d, Some(30)), Duration::from_secs(22));
        assert_eq!(baseline_duration(d, Some(60)), d);
        assert_eq!(baseline_duration(d, Some(0)), Duration::from_secs(1), "at least a second");
        assert_eq!(baseline_duration(d, None), d);
    }

    #[test]
    fn a_new_revision_captures_the_old_pods_at_once() {
        let now = t("2026-01-01T00:00:00Z");
        let mut rollouts = Vec::new();
        let first = open(&mut rollouts, &state("6", "aaa", true), &pods(&[("app-a1", "aaa")]), UID, now).unwrap();
        assert!(first.baseline_pods.is_empty() && first.entry.baseline_run.is_none(), "nothing before the first");
        push(&mut rollouts, first.entry);
        assert!(open(&mut rollouts, &state("6", "aaa", true), &[], UID, now).is_none(), "the same revision again");
        rollouts[0].stage = RolloutStage::Judged;
        let during = pods(&[("app-a1", "aaa"), ("app-a2", "aaa"), ("app-b1", "bbb")]);
        let opened = open(&mut rollouts, &state("7", "bbb", false), &during, UID, now).unwrap();
        assert_eq!(opened.baseline_pods, ["app-a1", "app-a2"], "told apart by template hash");
        assert_eq!(opened.entry.baseline_run.as_deref(), Some("b7-3f2a9c1b"));
        assert_eq!(opened.entry.baseline_source, Some(BaselineSource::OldPods));
        assert_eq!(opened.entry.stage, RolloutStage::MeasuringBaseline);
        assert_eq!(
            (opened.entry.previous_revision.as_deref(), opened.entry.previous_template_hash.as_deref()),
            (Some("6"), Some("aaa"))
        );
    }

    #[test]
    fn with_the_old_pods_gone_the_previous_candidate_is_the_baseline() {
        let now = t("2026-01-01T00:00:00Z");
        let mut rollouts = Vec::new();
        first_revision_judged(&mut rollouts, now);
        rollouts[0].candidate_run = Some("c6-3f2a9c1b".into());
        rollouts[0].candidate = vec![cpu(1, 10.0, 1000, &[("main.work", 100)])];
        let mut recreate = state("7", "bbb", false);
        recreate.recreate = true;
        let opened = open(&mut rollouts, &recreate, &pods(&[("app-a1", "aaa")]), UID, now).unwrap();
        assert!(opened.baseline_pods.is_empty(), "Recreate: the old pods are about to go");
        assert_eq!(opened.entry.baseline_source, Some(BaselineSource::PreviousCandidate));
        assert_eq!(opened.entry.baseline_run.as_deref(), Some("c6-3f2a9c1b"));
        assert!(opened.entry.message.as_deref().unwrap().contains("Recreate"));
        assert_eq!(opened.entry.baseline.len(), 1);
        let gone = open(&mut rollouts, &state("7", "bbb", false), &pods(&[("app-b1", "bbb")]), UID, now).unwrap();
        assert!(gone.entry.message.as_deref().unwrap().contains("already gone"));
        // Nothing measured before either: no baseline, said by the verdict later.
        let mut fresh = Vec::new();
        first_revision_judged(&mut fresh, now);
        let none = open(&mut fresh, &state("7", "bbb", false), &[], UID, now).unwrap();
        assert!(none.entry.baseline_source.is_none() && none.entry.baseline.is_empty());
    }

    #[test]
    fn interrupted_rollouts_are_closed_and_hand_on_their_baseline() {
        let now = t("2026-01-01T00:00:00Z");
        let mut rollouts = Vec::new();
        first_revision_judged(&mut rollouts, now);
        let seven = open(&mut rollouts, &state("7", "bbb", false), &pods(&[("app-a1", "aaa")]), UID, now).unwrap();
        push(&mut rollouts, seven.entry);
        // Revision 8 while 7 is still measuring its baseline: 7 is interrupted, and 8
        // measures the old pods itself (7's baseline was never folded in).
        let during = pods(&[("app-a1", "aaa"), ("app-b1", "bbb")]);
        let eight = open(&mut rollouts, &state("8", "ccc", false), &during, UID, now).unwrap();
        assert_eq!(rollouts[0].stage, RolloutStage::Interrupted);
        assert!(rollouts[0].message.as_deref().unwrap().contains("revision 8 came before"));
        assert_eq!(eight.baseline_pods, ["app-a1", "app-b1"]);
        push(&mut rollouts, eight.entry);
        // 8's baseline measured; `rollout undo` back to 7's template as revision 9: 8 is
        // rolled back, and its baseline carries over to 9.
        rollouts[0].stage = RolloutStage::Settling;
        rollouts[0].baseline = vec![cpu(2, 10.0, 2000, &[("main.work", 100)])];
        let nine = open(&mut rollouts, &state("9", "bbb", false), &during, UID, now).unwrap();
        assert!(
            rollouts[0].message.as_deref().unwrap().contains("rolled back by revision 9"),
            "{:?}",
            rollouts[0].message
        );
        assert!(rollouts[0].baseline.is_empty(), "moved, not copied");
        assert_eq!(nine.entry.baseline_source, Some(BaselineSource::InterruptedRollout));
        assert!(nine.baseline_pods.is_empty() && nine.entry.baseline.len() == 1);
        assert_eq!(nine.entry.baseline_run.as_deref(), Some("b8-3f2a9c1b"));
    }

    #[test]
    fn the_candidate_is_due_after_completion_and_settle_never_while_paused() {
        let now = t("2026-01-01T00:00:00Z");
        let mut rollouts = Vec::new();
        let mut entry = open(&mut rollouts, &state("7", "bbb", false), &[], UID, now).unwrap().entry;
        let settle = Duration::from_secs(120);
        assert_eq!(candidate_due(&mut entry, &state("7", "bbb", false), settle, now), CandidateDue::RolloutInProgress);
        let mut paused = state("7", "bbb", true);
        paused.paused = true;
        assert_eq!(candidate_due(&mut entry, &paused, settle, now), CandidateDue::Paused);
        assert!(entry.completed_time.is_none());
        let done = state("7", "bbb", true);
        let until = t("2026-01-01T00:02:00Z");
        assert_eq!(candidate_due(&mut entry, &done, settle, now), CandidateDue::SettlingUntil(until));
        assert_eq!(
            candidate_due(&mut entry, &done, settle, t("2026-01-01T00:01:00Z")),
            CandidateDue::SettlingUntil(until),
            "from the first completion seen"
        );
        assert_eq!(candidate_due(&mut entry, &done, settle, until), CandidateDue::Now);
        assert_eq!(
            candidate_due(&mut entry, &state("8", "ccc", true), settle, until),
            CandidateDue::RolloutInProgress,
            "another revision"
        );
    }

    #[test]
    fn digests_merge_the_pods_and_keep_the_top_functions() {
        let a = top(&[("main.crunchPrimes", 300), ("runtime.mallocgc", 100)]);
        let b = top(&[("main.crunchPrimes", 500), ("main.extraHashRounds", 200)]);
        let many: Vec<(String, i64)> = (0..30).map(|i| (format!("f{i:02}"), 100 - i)).collect();
        let many = top(&many.iter().map(|(f, v)| (f.as_str(), *v)).collect::<Vec<_>>());
        let parts = [
            PodProfile { sample_type: "cpu/nanoseconds", total: 400, samples: 40, seconds: 10.0, top: &a },
            PodProfile { sample_type: "cpu/nanoseconds", total: 700, samples: 70, seconds: 10.0, top: &b },
        ];
        let rps = SideRequests { requests_per_second: Some(50.0), ..Default::default() };
        let d = digest(ProfileType::Cpu, &parts, rps).unwrap();
        assert_eq!((d.pods, d.samples, d.total, d.seconds), (2, 110, 1100, 20.0));
        let names: Vec<(&str, i64)> = d.functions.iter().map(|f| (f.function.as_str(), f.flat)).collect();
        assert_eq!(names, [("main.crunchPrimes", 800), ("main.extraHashRounds", 200), ("runtime.mallocgc", 100)]);
        assert_eq!(d.requests_per_second, Some(50.0));
        let wide = [PodProfile { sample_type: "cpu/nanoseconds", total: 5000, samples: 50, seconds: 1.0, top: &many }];
        assert_eq!(digest(ProfileType::Cpu, &wide, SideRequests::default()).unwrap().functions.len(), DIGEST_FUNCTIONS);
        assert!(digest(ProfileType::Cpu, &[], SideRequests::default()).is_none());
    }

    #[test]
    fn a_function_that_grew_is_named_with_its_shares_and_the_total_per_request() {
        // Before: 2 pods × 10 s, 100 req/s; crunchPrimes 12 % of 1 s of CPU per pod-second.
        let mut before =
            cpu(2, 10.0, 2000, &[("main.crunchPrimes", 1_200), ("main.serve", 6_000), ("runtime.gc", 2_800)]);
        // After: hashing appears (one side only), crunch grows, gc shrinks.
        let mut after = cpu(
            2,
            10.0,
            2000,
            &[
                ("main.crunchPrimes", 3_000),
                ("main.extraHashRounds", 1_000),
                ("main.serve", 6_000),
                ("runtime.gc", 1_000),
            ],
        );
        before.requests_per_second = Some(100.0);
        after.requests_per_second = Some(100.0);
        let changes = compare(std::slice::from_ref(&before), std::slice::from_ref(&after));
        assert_eq!(changes.len(), 1);
        let c = &changes[0];
        assert_eq!(c.per, Normalisation::Request);
        // 1,000 ns per pod-second at 50 req/s per pod → 20 ns per request, then 22.
        assert_eq!((c.total.before, c.total.after, c.total.change_percent), (20.0, 22.0, Some(10.0)));
        let grown: Vec<(&str, f64, f64)> =
            c.grown.iter().map(|g| (g.function.as_str(), g.before_percent, g.after_percent)).collect();
        assert_eq!(grown, [("main.crunchPrimes", 12.0, 27.27), ("main.extraHashRounds", 0.0, 9.09)]);
        assert_eq!((c.grown[1].before, c.grown[1].after), (0.0, 2.0), "per request: present after only");
        let shrunk: Vec<&str> = c.shrunk.iter().map(|s| s.function.as_str()).collect();
        assert_eq!(shrunk, ["runtime.gc", "main.serve"]);

        let bounds = RegressionBounds::default();
        let j = judge("7", &changes, None, None, &bounds);
        assert_eq!(
            (j.verdict, j.severity),
            (RolloutVerdict::Regressed, Some(ThresholdLevel::Warning)),
            "+15.3 points, past the 15-point warning"
        );
        assert_eq!(j.message, "revision 7: main.crunchPrimes 12.0 % → 27.3 % of CPU, CPU per request +10 %");

        // Without request rates the total is per second of capture.
        before.requests_per_second = None;
        let c = &compare(&[before], &[after])[0];
        assert_eq!((c.per, c.total.before, c.total.after), (Normalisation::Second, 1_000.0, 1_100.0));
    }

    #[test]
    fn verdicts_follow_the_bounds() {
        let bounds = RegressionBounds::default();
        let base = cpu(2, 10.0, 2000, &[("main.a", 5_000), ("main.b", 5_000)]);
        let same = cpu(2, 10.0, 2000, &[("main.a", 5_100), ("main.b", 5_000)]);
        let j = judge("7", &compare(std::slice::from_ref(&base), &[same]), None, None, &bounds);
        assert_eq!(j.verdict, RolloutVerdict::Unchanged, "{}", j.message);
        // Everything 25 % slower, shares the same: Warning on the total only.
        let slower = cpu(2, 10.0, 2000, &[("main.a", 6_250), ("main.b", 6_250)]);
        let j = judge("7", &compare(std::slice::from_ref(&base), &[slower]), None, None, &bounds);
        assert_eq!((j.verdict, j.severity), (RolloutVerdict::Regressed, Some(ThresholdLevel::Warning)));
        assert_eq!(j.message, "revision 7: CPU per second +25 %");
        let faster = cpu(2, 10.0, 2000, &[("main.a", 4_000), ("main.b", 4_000)]);
        let j = judge("8", &compare(std::slice::from_ref(&base), std::slice::from_ref(&faster)), None, None, &bounds);
        assert_eq!((j.verdict, j.message.as_str()), (RolloutVerdict::Improved, "revision 8: CPU per second -20 %"));
        // A function whose share rises only because another one fell is no regression.
        let lighter = cpu(2, 10.0, 2000, &[("main.a", 5_000), ("main.b", 1_000)]);
        let j = judge("8", &compare(std::slice::from_ref(&base), &[lighter]), None, None, &bounds);
        assert_eq!((j.verdict, j.message.as_str()), (RolloutVerdict::Improved, "revision 8: CPU per second -40 %"));
        // Latency alone can regress.
        let latency = value_change(100.0, 180.0);
        let j = judge(
            "9",
            &compare(std::slice::from_ref(&base), std::slice::from_ref(&base)),
            Some(&latency),
            None,
            &bounds,
        );
        assert_eq!((j.verdict, j.severity), (RolloutVerdict::Regressed, Some(ThresholdLevel::Critical)));
        assert!(j.message.contains("latency +80 %"), "{}", j.message);
        // Too few samples: inconclusive, with the counts.
        let thin = cpu(2, 1.0, 12, &[("main.a", 4_000), ("main.b", 4_000)]);
        let j = judge("10", &compare(std::slice::from_ref(&base), &[thin]), None, None, &bounds);
        assert_eq!(j.verdict, RolloutVerdict::Inconclusive);
        assert_eq!(j.message, "revision 10: too few cpu samples to judge: 2000 before, 12 after (at least 20 each)");
        assert_eq!(judge("11", &[], None, None, &bounds).verdict, RolloutVerdict::Inconclusive);
        // A profile type missing on one side is not compared.
        assert!(compare(&[base], &[]).is_empty());
    }

    #[test]
    fn a_function_share_moved_by_sampling_alone_is_not_a_regression() {
        // 10 % and 20 % of 30 samples each side: 9.1 points of sampling error, so a
        // 10-point move is chance, well past the 5-point bound though it is.
        assert!((share_noise(10.0, 20.0, 30, 30) - 9.13).abs() < 0.01, "{}", share_noise(10.0, 20.0, 30, 30));
        assert_eq!(share_noise(10.0, 20.0, 0, 30), 0.0, "an unknown count discounts nothing");
        let bounds = RegressionBounds {
            min_samples: 1,
            function_share_points: biometrics_crds::threshold::UpperBounds { warning: 5.0, critical: 15.0 },
            ..Default::default()
        };
        let base = cpu(2, 10.0, 60, &[("main.a", 900), ("main.b", 100)]);
        let chance = cpu(2, 10.0, 60, &[("main.a", 800), ("main.b", 200)]);
        let j = judge("5", &compare(std::slice::from_ref(&base), &[chance]), None, None, &bounds);
        assert_eq!(j.verdict, RolloutVerdict::Unchanged, "{}", j.message);
        // The same move over 2,000 samples a side is beyond chance.
        let (base, moved) = (
            cpu(2, 10.0, 2000, &[("main.a", 900), ("main.b", 100)]),
            cpu(2, 10.0, 2000, &[("main.a", 800), ("main.b", 200)]),
        );
        let j = judge("6", &compare(&[base], &[moved]), None, None, &bounds);
        assert_eq!(
            (j.verdict, j.severity),
            (RolloutVerdict::Regressed, Some(ThresholdLevel::Warning)),
            "{}",
            j.message
        );
        assert!(j.message.starts_with("revision 6: main.b 10.0 % → 20.0 % of CPU"), "{}", j.message);
    }

    fn watching(settle: &str) -> ProfileCapture {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
            "metadata": {"name": "app", "namespace": "shop", "uid": UID, "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "app"}}, "target": {"port": 6060}, "profiles": ["cpu"],
                "duration": "30s", "onRolloutOf": {"name": "app", "settle": settle}}
        }))
        .unwrap()
    }

    /// A finished run of `pods`, each with a cpu profile of these flat values over 10 s.
    fn finished(id: &str, pods: &[&str], functions: &[(&str, i64)], start: Timestamp) -> CaptureRun {
        use biometrics_crds::v1alpha1::{PodRunResult, ProfileResult, RunTrigger};
        let total: i64 = functions.iter().map(|(_, f)| f).sum();
        CaptureRun {
            id: id.into(),
            trigger: RunTrigger::Rollout,
            start_time: Time(start),
            completion_time: Some(Time(start.checked_add(SignedDuration::from_secs(10)).unwrap())),
            result: RunResult::Succeeded,
            fired_by: Vec::new(),
            pods: pods
                .iter()
                .map(|p| PodRunResult {
                    pod: (*p).into(),
                    result: RunResult::Succeeded,
                    profiles: vec![ProfileResult {
                        profile_type: ProfileType::Cpu,
                        path: Some(format!("shop/app/{id}/{p}/cpu.pb.gz")),
                        bytes: None,
                        sha256: None,
                        sample_type: Some("cpu/nanoseconds".into()),
                        total: Some(total),
                        samples: Some(500),
                        top: top(functions),
                        requests: None,
                        p99_latency_millis: None,
                        error_rate_percent: None,
                        requests_error: None,
                        error: None,
                        compared_to_previous: None,
                    }],
                    error: None,
                    reason: None,
                })
                .collect(),
        }
    }

    #[test]
    fn cpu_is_judged_per_request_counted_over_the_profiles_themselves() {
        let t0 = t("2026-01-01T00:00:00Z");
        let count = |run: &mut CaptureRun, requests: &[Option<f64>]| {
            for (pod, n) in run.pods.iter_mut().zip(requests) {
                pod.profiles[0].requests = *n;
            }
        };
        // Before: 1,000 ns of CPU per pod over 10 s, 100 requests each (the runtime entries'
        // rate over their own window says otherwise, and is not used).
        let mut before = finished("b2-x", &["a1", "a2"], &[("main.serve", 700), ("crypto/sha256.block", 300)], t0);
        count(&mut before, &[Some(100.0), Some(100.0)]);
        let runtime = [PodRuntime { name: "a1".into(), requests_per_second: Some(999.0), ..Default::default() }];
        let baseline = digests(&before, &runtime, Some(10), true);
        assert_eq!(baseline[0].requests_per_second, Some(20.0), "200 requests in 10 s");
        // After: a starved replica answered half as many requests and burned half the CPU:
        // the same CPU per request.
        let mut after = finished("c2-x", &["b1", "b2"], &[("main.serve", 350), ("crypto/sha256.block", 150)], t0);
        count(&mut after, &[Some(50.0), Some(50.0)]);
        let candidate = digests(&after, &[], Some(10), true);
        let c = &compare(&baseline, &candidate)[0];
        assert_eq!(c.per, Normalisation::Request);
        assert_eq!((c.total.before, c.total.after, c.total.change_percent), (10.0, 10.0, Some(0.0)));
        let bounds = RegressionBounds { min_samples: 1, ..Default::default() };
        assert_eq!(judge("2", std::slice::from_ref(c), None, None, &bounds).verdict, RolloutVerdict::Unchanged);
        // A pod that could not count its requests is left out of its side.
        count(&mut after, &[Some(50.0), None]);
        let one = &digests(&after, &[], Some(10), true)[0];
        assert_eq!((one.pods, one.total, one.requests_per_second), (1, 500, Some(5.0)));
        // No pod counted any: no request rate (the runtime entries' is over another span),
        // so both sides are compared per second.
        count(&mut after, &[None, None]);
        let runtime_b = [PodRuntime { name: "b1".into(), requests_per_second: Some(999.0), ..Default::default() }];
        let c = &compare(&baseline, &digests(&after, &runtime_b, Some(10), true))[0];
        assert_eq!(c.per, Normalisation::Second);
        // A capture that does not count requests takes the runtime entries' rate.
        assert_eq!(digests(&after, &runtime_b, Some(10), false)[0].requests_per_second, Some(999.0));
    }

    #[test]
    fn latency_and_errors_are_the_profiles_own_weighted_by_their_requests() {
        let t0 = t("2026-01-01T00:00:00Z");
        let mut run = finished("b2-x", &["a1", "a2"], &[("main.serve", 700)], t0);
        let set = |run: &mut CaptureRun, figures: [(f64, Option<f64>, Option<f64>); 2]| {
            for (pod, (requests, p99, errors)) in run.pods.iter_mut().zip(figures) {
                let q = &mut pod.profiles[0];
                (q.requests, q.p99_latency_millis, q.error_rate_percent) = (Some(requests), p99, errors);
            }
        };
        // a1 answered 300 requests, p99 10 ms, 1 % failed (3); a2 100, p99 30 ms, 5 % (5).
        set(&mut run, [(300.0, Some(10.0), Some(1.0)), (100.0, Some(30.0), Some(5.0))]);
        // The runtime entries' figures are over another span, and not used.
        let runtime = [PodRuntime {
            name: "a1".into(),
            requests_per_second: Some(10.0),
            p99_latency_millis: Some(999.0),
            error_rate_percent: Some(50.0),
            ..Default::default()
        }];
        let d = &digests(&run, &runtime, Some(10), true)[0];
        assert_eq!(d.latency_millis, Some((10.0 * 300.0 + 30.0 * 100.0) / 400.0));
        assert_eq!(d.error_rate_percent, Some(2.0), "8 errors of 400 requests");
        // A pod without a figure is left out of its mean, not counted as 0.
        set(&mut run, [(300.0, Some(10.0), Some(1.0)), (100.0, None, Some(5.0))]);
        assert_eq!(digests(&run, &runtime, Some(10), true)[0].latency_millis, Some(10.0));
        // A pod that answered no request weighs nothing.
        set(&mut run, [(0.0, Some(80.0), Some(0.0)), (100.0, Some(30.0), Some(5.0))]);
        let d = &digests(&run, &runtime, Some(10), true)[0];
        assert_eq!((d.latency_millis, d.error_rate_percent), (Some(30.0), Some(5.0)));
        // Agents that report neither (an older agent): the runtime entries' figures.
        set(&mut run, [(300.0, None, None), (100.0, None, None)]);
        let d = &digests(&run, &runtime, Some(10), true)[0];
        assert_eq!((d.latency_millis, d.error_rate_percent), (Some(999.0), Some(50.0)));
    }

    #[test]
    fn error_rate_is_judged_in_points_and_latency_in_percent() {
        let bounds = RegressionBounds::default();
        let base = cpu(2, 10.0, 2000, &[("main.a", 5_000), ("main.b", 5_000)]);
        let same = compare(std::slice::from_ref(&base), std::slice::from_ref(&base));
        let judged = |latency: Option<ValueChange>, errors: Option<ValueChange>| {
            judge("5", &same, latency.as_ref(), errors.as_ref(), &bounds)
        };
        // 0.1 % → 0.9 %: +800 % of the rate, but 0.8 points: within the 1-point bound.
        let j = judged(None, Some(value_change(0.1, 0.9)));
        assert_eq!(j.verdict, RolloutVerdict::Unchanged, "{}", j.message);
        let j = judged(None, Some(value_change(0.5, 2.0)));
        assert_eq!((j.verdict, j.severity), (RolloutVerdict::Regressed, Some(ThresholdLevel::Warning)));
        assert_eq!(j.message, "revision 5: error rate +1.5 points (0.50 % → 2.00 %), CPU per second +0 %");
        // From none at all (a rate of 0 has no percent change) to 6 %: Critical.
        let j = judged(None, Some(value_change(0.0, 6.0)));
        assert_eq!((j.verdict, j.severity), (RolloutVerdict::Regressed, Some(ThresholdLevel::Critical)));
        // Latency with its numbers; fewer errors never regress.
        let j = judged(Some(value_change(3.1, 25.4)), Some(value_change(2.0, 0.0)));
        assert_eq!((j.verdict, j.severity), (RolloutVerdict::Regressed, Some(ThresholdLevel::Critical)));
        assert!(j.message.starts_with("revision 5: p99 latency +719 % (3.1 → 25.4 ms)"), "{}", j.message);
        let j = judged(Some(value_change(100.0, 110.0)), Some(value_change(2.0, 0.0)));
        assert_eq!(j.verdict, RolloutVerdict::Unchanged, "{}", j.message);
    }

    #[test]
    fn a_rollout_is_measured_before_and_after_and_judged() {
        let pc = watching("5s");
        let t0 = t("2026-01-01T00:00:00Z");
        let at = |s: i64| t0.checked_add(SignedDuration::from_secs(s)).unwrap();
        let seen = |revision: &str, hash: &str, complete: bool, pods: &[(&str, &str)]| WorkloadView::Seen {
            state: state(revision, hash, complete),
            pods: self::pods(pods),
            grace_seconds: Some(30),
        };
        let mut rollouts = Vec::new();
        // Revision 1, complete: measured after its settle as the next rollout's baseline.
        let v1 = seen("1", "aaa", true, &[("app-a1", "aaa"), ("app-a2", "aaa")]);
        let s = step(&pc, &mut rollouts, &v1, None, &[], t0);
        assert!(s.run.is_none() && s.events[0].reason == crate::reasons::ROLLOUT_DETECTED);
        assert_eq!(wake(&pc, &rollouts), Some(at(5)));
        let s = step(&pc, &mut rollouts, &v1, None, &[], at(5));
        let run = s.run.unwrap();
        assert_eq!((run.id.as_str(), run.pods.len(), run.duration), ("c1-3f2a9c1b", 2, Duration::from_secs(30)));
        let c1 =
            finished("c1-3f2a9c1b", &["app-a1", "app-a2"], &[("main.crunchPrimes", 300), ("main.serve", 700)], at(5));
        let s = step(&pc, &mut rollouts, &v1, Some(&c1), &[], at(16));
        assert!(s.run.is_none() && s.events.is_empty());
        assert_eq!(
            (rollouts[0].stage, rollouts[0].verdict),
            (RolloutStage::Judged, None),
            "nothing before it to judge"
        );

        // Revision 2 rolls out: the old pods at once, for at most 3/4 of their grace period.
        let v2 = seen("2", "bbb", false, &[("app-a1", "aaa"), ("app-a2", "aaa"), ("app-b1", "bbb")]);
        let s = step(&pc, &mut rollouts, &v2, Some(&c1), &[], at(100));
        let run = s.run.unwrap();
        assert_eq!(
            (run.id.as_str(), run.pods.clone(), run.duration),
            ("b2-3f2a9c1b", vec!["app-a1".to_owned(), "app-a2".to_owned()], Duration::from_secs(22))
        );
        let mut b2 =
            finished("b2-3f2a9c1b", &["app-a1", "app-a2"], &[("main.crunchPrimes", 300), ("main.serve", 700)], at(100));
        // While it runs nothing else starts.
        b2.result = RunResult::Running;
        assert!(step(&pc, &mut rollouts, &v2, Some(&b2), &[], at(105)).run.is_none());
        b2.result = RunResult::Succeeded;
        let s = step(&pc, &mut rollouts, &v2, Some(&b2), &[], at(111));
        assert!(s.run.is_none(), "the rollout has not completed");
        assert_eq!((rollouts[0].stage, rollouts[0].baseline.len()), (RolloutStage::Settling, 1));
        let v2done = seen("2", "bbb", true, &[("app-b1", "bbb"), ("app-b2", "bbb")]);
        assert!(step(&pc, &mut rollouts, &v2done, Some(&b2), &[], at(120)).run.is_none(), "settling");
        let run = step(&pc, &mut rollouts, &v2done, Some(&b2), &[], at(125)).run.unwrap();
        assert_eq!((run.id.as_str(), run.pods.len()), ("c2-3f2a9c1b", 2));
        let c2 = finished(
            "c2-3f2a9c1b",
            &["app-b1", "app-b2"],
            &[("main.crunchPrimes", 300), ("main.extraHashRounds", 600), ("main.serve", 700)],
            at(125),
        );
        let s = step(&pc, &mut rollouts, &v2done, Some(&c2), &[], at(136));
        let judged = &rollouts[0];
        assert_eq!(
            (judged.verdict, judged.severity),
            (Some(RolloutVerdict::Regressed), Some(ThresholdLevel::Critical))
        );
        assert_eq!(judged.baseline_source, Some(BaselineSource::OldPods));
        assert_eq!(s.events.len(), 1);
        assert!(s.events[0].warning && s.events[0].reason == crate::reasons::REGRESSED);
        assert_eq!(s.events[0].message, "revision 2: main.extraHashRounds 0.0 % → 37.5 % of CPU, CPU per second +60 %");
        assert!(regressed_condition(&rollouts).0);
        // Nothing more happens on later passes.
        let again = step(&pc, &mut rollouts, &v2done, Some(&c2), &[], at(200));
        assert!(again.run.is_none() && again.events.is_empty());
    }

    #[test]
    fn a_baseline_that_captured_nothing_falls_back_to_the_previous_candidate() {
        let pc = watching("0s");
        let t0 = t("2026-01-01T00:00:00Z");
        let mut rollouts = Vec::new();
        let first = open(&mut rollouts, &state("1", "aaa", true), &[], UID, t0).unwrap().entry;
        push(&mut rollouts, first);
        rollouts[0].stage = RolloutStage::Judged;
        rollouts[0].candidate_run = Some("c1-3f2a9c1b".into());
        rollouts[0].candidate = vec![cpu(2, 10.0, 1000, &[("main.serve", 100)])];
        let view = WorkloadView::Seen {
            state: state("2", "bbb", false),
            pods: pods(&[("app-a1", "aaa"), ("app-b1", "bbb")]),
            grace_seconds: None,
        };
        let run = step(&pc, &mut rollouts, &view, None, &[], t0).run.unwrap();
        assert_eq!(run.id, "b2-3f2a9c1b");
        // The old pod was stopped mid-profile: its part of the run failed.
        let mut b2 = finished("b2-3f2a9c1b", &["app-a1"], &[("main.serve", 100)], t0);
        b2.result = RunResult::Failed;
        b2.pods[0].result = RunResult::Failed;
        b2.pods[0].profiles[0].error = Some("the app went away".into());
        step(&pc, &mut rollouts, &view, Some(&b2), &[], t0);
        let entry = &rollouts[0];
        assert_eq!(entry.stage, RolloutStage::Settling);
        assert_eq!(entry.baseline_source, Some(BaselineSource::PreviousCandidate));
        assert_eq!(entry.baseline_run.as_deref(), Some("c1-3f2a9c1b"));
        assert!(entry.message.as_deref().unwrap().contains("gave no profile"), "{:?}", entry.message);
    }

    #[test]
    fn the_history_is_bounded_and_only_the_newest_keep_digests() {
        let now = t("2026-01-01T00:00:00Z");
        let mut rollouts = Vec::new();
        for i in 0..15 {
            let mut e = open(&mut rollouts, &state(&i.to_string(), "h", true), &[], UID, now).unwrap().entry;
            e.stage = RolloutStage::Judged;
            e.candidate = vec![cpu(1, 1.0, 100, &[("f", 1)])];
            push(&mut rollouts, e);
        }
        assert_eq!(rollouts.len(), HISTORY);
        assert_eq!(rollouts[0].revision, "14");
        assert!(rollouts[..2].iter().all(|r| !r.candidate.is_empty()));
        assert!(rollouts[2..].iter().all(|r| r.candidate.is_empty()));
    }
}
