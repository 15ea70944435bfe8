//! The browser's JSON API (`/api/v1/…`): what the pages and `kubectl biometrics` read.

use biometrics_crds::{
    threshold::ThresholdLevel,
    v1alpha1::{PodRuntime, RunResult, RunTrigger, TopFunction},
};
use serde::{Deserialize, Serialize};

/// One ProfileCapture in the list of all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureRow {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its phase, as `kubectl get pcap` shows it.
    pub phase: Option<String>,
    /// Pods selected at the last reconcile.
    pub selected_pods: Option<i32>,
    /// The latest run's id, when there was one.
    pub last_run: Option<String>,
    /// When the latest run started (RFC 3339).
    pub last_run_time: Option<String>,
    /// When the next scheduled run is due (RFC 3339).
    pub next_run_time: Option<String>,
    /// The worst runtime-metric level over its pods.
    pub threshold_level: Option<ThresholdLevel>,
    /// The profile types it captures.
    pub profiles: Vec<String>,
}

/// One run of a capture, as its history and the volume know it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRow {
    /// The run id (also its directory on the volume).
    pub id: String,
    /// Why it ran, when the status still records it.
    pub trigger: Option<RunTrigger>,
    /// When it started (RFC 3339), or when its files were written.
    pub start_time: Option<String>,
    /// How it ended, when the status still records it.
    pub result: Option<RunResult>,
    /// The pods whose files are on the volume.
    pub pods_with_files: Vec<String>,
}

/// A rollout compared: its revision, verdict and the two runs whose comparison (and
/// differential flame graph) shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRow {
    /// The workload's revision.
    pub revision: String,
    /// Where its comparison stands.
    pub stage: biometrics_crds::v1alpha1::RolloutStage,
    /// Its verdict, once judged.
    pub verdict: Option<biometrics_crds::v1alpha1::RolloutVerdict>,
    /// For `Regressed`, Warning or Critical.
    pub severity: Option<biometrics_crds::threshold::ThresholdLevel>,
    /// The verdict or what it waits for.
    pub message: Option<String>,
    /// The run of the old pods (or the previous candidate).
    pub baseline_run: Option<String>,
    /// The run of the new pods.
    pub candidate_run: Option<String>,
}

/// A capture and its runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureDetail {
    /// The capture.
    pub capture: CaptureRow,
    /// Its runs, newest first.
    pub runs: Vec<RunRow>,
    /// The rollouts of its `onRolloutOf` workload, newest first, with their verdicts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<RolloutRow>,
    /// What could not be asked or read (an unreachable agent, a link on the volume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One profile file of one pod in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileFile {
    /// `cpu`, `heap`, … (`trace` has no summary).
    pub profile_type: String,
    /// The file's name on the volume.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256.
    pub sha256: String,
    /// Where to download it (this API).
    pub download: String,
    /// The top functions the status keeps (up to five), when it still has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TopFunction>,
}

/// One pod's part of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRun {
    /// The pod.
    pub pod: String,
    /// How its part ended, when the status still records it.
    pub result: Option<RunResult>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Its files.
    pub files: Vec<ProfileFile>,
    /// Its latest runtime metrics and levels (now, not at the run's time).
    pub runtime: Option<PodRuntime>,
}

/// A run with each pod's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetail {
    /// The capture.
    pub capture: CaptureRow,
    /// The run.
    pub run: RunRow,
    /// Its pods.
    pub pods: Vec<PodRun>,
    /// What could not be asked or read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, for people.
    pub message: String,
}

/// `GET …/runs/{run}/top?profile=cpu[&pod=P][&nodecount=N]`: the top functions computed from
/// the profile files — one pod's, or every pod's merged as `go tool pprof -top f1 f2 …`
/// merges them — with the numbers `go tool pprof -top` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopView {
    /// The run.
    pub run: String,
    /// The profile type.
    pub profile: String,
    /// The pods whose files were read.
    pub pods: Vec<String>,
    /// `type/unit` of the value summarised (pprof's default sample type).
    pub sample_type: String,
    /// The sum of that value over all samples.
    pub total: i64,
    /// How long the profile sampled, when it says (cpu: the capture's duration).
    pub duration_seconds: Option<f64>,
    /// Functions by flat value, as pprof orders them, at most `nodecount`.
    pub functions: Vec<TopFunction>,
}

/// One function's change between two runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompareRow {
    /// The function.
    pub function: String,
    /// Its flat value in the base run.
    pub base_flat: i64,
    /// Its flat value in the compared run.
    pub flat: i64,
    /// `flat - baseFlat`: what `go tool pprof -top -base` shows as flat.
    pub flat_delta: i64,
    /// `flatDelta` as a percentage of `diffTotal`: `-top -base`'s flat%.
    #[serde(default)]
    pub flat_delta_percent: f64,
    /// Its cumulative value in the base run.
    pub base_cum: i64,
    /// Its cumulative value in the compared run.
    pub cum: i64,
    /// `cum - baseCum`: what `go tool pprof -top -base` shows as cum.
    pub cum_delta: i64,
    /// `cumDelta` as a percentage of `diffTotal`: `-top -base`'s cum%.
    #[serde(default)]
    pub cum_delta_percent: f64,
    /// The flat change per second of profiling (each side divided by its own duration,
    /// which for a run merged over its pods is their durations' sum, as pprof's merge
    /// adds them), when both durations are known.
    pub flat_delta_per_second: Option<f64>,
}

/// `GET …/compare?profile=cpu[&base=R1][&run=R2][&pod=P][&basePod=Q][&nodecount=N]`: two
/// runs (merged over their pods, or one pod's: `pod`, and `basePod` when the base's pod
/// differs) compared function by function. Without `run` the latest run with that profile
/// is compared, against the one before it (or, comparing two pods, against itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompareView {
    /// The base run.
    pub base: String,
    /// The base's pod, when one pod's profile is compared rather than the run's merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_pod: Option<String>,
    /// The compared run.
    pub run: String,
    /// The compared pod, when one pod's profile is compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The profile type.
    pub profile: String,
    /// `type/unit` of the values.
    pub sample_type: String,
    /// The base run's total.
    pub base_total: i64,
    /// The compared run's total.
    pub total: i64,
    /// The total `go tool pprof -top -base` reports, its percentages' denominator: each
    /// stack's absolute change, summed over the stacks of both.
    #[serde(default)]
    pub diff_total: i64,
    /// The base run's duration, when known.
    pub base_seconds: Option<f64>,
    /// The compared run's duration, when known.
    pub seconds: Option<f64>,
    /// Functions by the size of their flat change, as `go tool pprof -top -base` orders
    /// them, at most `nodecount`.
    pub rows: Vec<CompareRow>,
}
