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

/// A capture and its runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureDetail {
    /// The capture.
    pub capture: CaptureRow,
    /// Its runs, newest first.
    pub runs: Vec<RunRow>,
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
