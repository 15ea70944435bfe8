//! What each page shows, computed from a ProfileCapture and the agents' file listings: plain
//! functions over plain data.

use std::collections::{BTreeMap, BTreeSet};

use biometrics_agent_api::CaptureFiles;
use biometrics_crds::v1alpha1::{ProfileCapture, RunResult, RunTrigger};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::api::{CaptureDetail, CaptureRow, PodRun, ProfileFile, RolloutRow, RunDetail, RunRow};

/// The files the agents of a namespace hold for a capture, each listing with the agent (pod)
/// that can serve its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldFiles {
    /// The agent's pod.
    pub holder: String,
    /// What it holds.
    pub listing: CaptureFiles,
}

fn time(t: &Time) -> String {
    t.0.to_string()
}

/// The row of the capture list.
pub fn capture_row(pc: &ProfileCapture) -> CaptureRow {
    let status = pc.status.as_ref();
    let last = status.and_then(|s| s.last_run.as_ref());
    CaptureRow {
        namespace: pc.namespace().unwrap_or_default(),
        name: pc.name_any(),
        phase: status.and_then(|s| s.phase).map(|p| format!("{p:?}")),
        selected_pods: status.and_then(|s| s.selected_pods),
        last_run: last.map(|r| r.id.clone()),
        last_run_time: last.map(|r| time(&r.start_time)),
        next_run_time: status.and_then(|s| s.next_run_time.as_ref()).map(time),
        threshold_level: status.and_then(|s| s.threshold_level),
        profiles: pc.spec.profiles.iter().map(|p| p.as_str().to_owned()).collect(),
    }
}

/// Every capture, by namespace and name.
pub fn capture_rows(captures: &[ProfileCapture]) -> Vec<CaptureRow> {
    let mut rows: Vec<CaptureRow> = captures.iter().map(capture_row).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

struct Known {
    trigger: RunTrigger,
    start: String,
    result: RunResult,
}

/// Whether run `run` on the volume is this capture's: its id ends with the capture's uid
/// (runs written before ids carried it are shown as its own), not a former capture's of
/// the same name.
fn own_run(pc: &ProfileCapture, run: &str) -> bool {
    let own = biometrics_crds::run_id::suffix(&pc.uid().unwrap_or_default());
    biometrics_crds::run_id::suffix_of(run).is_none_or(|s| s == own)
}

/// A capture's runs, newest first: those its status records and those whose files are on
/// the volume (older runs than the status's history keeps, say).
pub fn capture_detail(pc: &ProfileCapture, held: &[HeldFiles], warnings: Vec<String>) -> CaptureDetail {
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    if let Some(status) = &pc.status {
        for h in &status.history {
            known.insert(h.id.clone(), Known { trigger: h.trigger, start: time(&h.start_time), result: h.result });
        }
        if let Some(last) = &status.last_run {
            known.insert(
                last.id.clone(),
                Known { trigger: last.trigger, start: time(&last.start_time), result: last.result },
            );
        }
    }
    let mut on_volume: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for h in held {
        for run in h.listing.runs.iter().filter(|r| own_run(pc, &r.run)) {
            let entry = on_volume.entry(run.run.clone()).or_insert_with(|| (run.modified.clone(), BTreeSet::new()));
            entry.0 = entry.0.clone().max(run.modified.clone());
            entry.1.extend(run.pods.iter().filter(|p| !p.files.is_empty()).map(|p| p.pod.clone()));
        }
    }
    let ids: BTreeSet<&String> = known.keys().chain(on_volume.keys()).collect();
    let mut runs: Vec<RunRow> = ids
        .into_iter()
        .map(|id| {
            let k = known.get(id);
            let v = on_volume.get(id);
            RunRow {
                id: id.clone(),
                trigger: k.map(|k| k.trigger),
                start_time: k.map(|k| k.start.clone()).or_else(|| v.map(|v| v.0.clone())),
                result: k.map(|k| k.result),
                pods_with_files: v.map(|v| v.1.iter().cloned().collect()).unwrap_or_default(),
            }
        })
        .collect();
    runs.sort_by(|a, b| (&b.start_time, &b.id).cmp(&(&a.start_time, &a.id)));
    let rollouts = pc
        .status
        .iter()
        .flat_map(|s| s.rollouts.iter())
        .map(|r| RolloutRow {
            revision: r.revision.clone(),
            stage: r.stage,
            verdict: r.verdict,
            severity: r.severity,
            message: r.message.clone(),
            baseline_run: r.baseline_run.clone(),
            candidate_run: r.candidate_run.clone(),
        })
        .collect();
    CaptureDetail { capture: capture_row(pc), runs, rollouts, warnings }
}

/// The profile type a capture file holds (`cpu.pb.gz` → `cpu`, `trace.out` → `trace`);
/// flame graph SVGs are not profiles.
pub fn profile_of(file: &str) -> Option<&str> {
    file.strip_suffix(".pb.gz").or_else(|| (file == "trace.out").then_some("trace"))
}

/// Where the browser downloads a file.
pub fn download_path(namespace: &str, capture: &str, run: &str, pod: &str, file: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/captures/{capture}/runs/{run}/files/{pod}/{file}")
}

impl PodRun {
    /// A pod with nothing known of it yet.
    fn named(pod: &str) -> Self {
        Self { pod: pod.to_owned(), result: None, error: None, files: Vec::new(), runtime: None }
    }
}

/// One run, per pod: its files on the volume, what the status says of it, and the pod's
/// current runtime metrics. `None` when neither the status nor the volume knows the run.
pub fn run_detail(pc: &ProfileCapture, run: &str, held: &[HeldFiles], warnings: Vec<String>) -> Option<RunDetail> {
    let detail = capture_detail(pc, held, Vec::new());
    let row = detail.runs.into_iter().find(|r| r.id == run)?;
    let namespace = pc.namespace().unwrap_or_default();
    let name = pc.name_any();
    let status = pc.status.as_ref();
    let last = status.and_then(|s| s.last_run.as_ref()).filter(|r| r.id == run);
    let mut pods: BTreeMap<String, PodRun> = BTreeMap::new();
    for h in held {
        for r in h.listing.runs.iter().filter(|r| r.run == run) {
            for p in &r.pods {
                let pod = pods.entry(p.pod.clone()).or_insert_with(|| PodRun::named(&p.pod));
                for f in &p.files {
                    let Some(profile) = profile_of(&f.name) else { continue };
                    if pod.files.iter().any(|existing| existing.file == f.name) {
                        continue;
                    }
                    pod.files.push(ProfileFile {
                        profile_type: profile.to_owned(),
                        file: f.name.clone(),
                        bytes: f.bytes,
                        sha256: f.sha256.clone(),
                        download: download_path(&namespace, &name, run, &p.pod, &f.name),
                        top: Vec::new(),
                    });
                }
            }
        }
    }
    if let Some(last) = last {
        for p in &last.pods {
            let pod = pods.entry(p.pod.clone()).or_insert_with(|| PodRun::named(&p.pod));
            pod.result = Some(p.result);
            pod.error = p.error.clone();
            for result in &p.profiles {
                if let Some(file) = pod.files.iter_mut().find(|f| f.profile_type == result.profile_type.as_str()) {
                    file.top = result.top.clone();
                }
            }
        }
    }
    for pod in pods.values_mut() {
        pod.files.sort_by(|a, b| a.file.cmp(&b.file));
        pod.runtime = status.and_then(|s| s.pods.iter().find(|r| r.name == pod.pod)).cloned();
    }
    Some(RunDetail { capture: detail.capture, run: row, pods: pods.into_values().collect(), warnings })
}

#[cfg(test)]
mod tests {
    use biometrics_agent_api::{CaptureFiles, PodFiles, RunFiles};

    use super::*;

    #[test]
    fn a_capture_s_rollouts_name_the_runs_to_compare() {
        let pc: ProfileCapture = serde_json::from_value(serde_json::json!({
            "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
            "metadata": {"name": "checkout", "namespace": "shop", "uid": "3f2a9c1b-0000-4000-8000-000000000000"},
            "spec": {"selector": {}, "target": {"port": 6060}, "onRolloutOf": {"name": "checkout"}},
            "status": {"rollouts": [{
                "revision": "7", "stage": "Judged", "detectedTime": "2026-01-01T00:00:00Z",
                "baselineRun": "b7-3f2a9c1b", "candidateRun": "c7-3f2a9c1b", "verdict": "Regressed",
                "severity": "Warning", "message": "revision 7: main.crunchPrimes 12.1 % → 31.4 % of CPU"
            }]}
        }))
        .unwrap();
        let detail = capture_detail(&pc, &[], Vec::new());
        let r = &detail.rollouts[0];
        assert_eq!((r.baseline_run.as_deref(), r.candidate_run.as_deref()), (Some("b7-3f2a9c1b"), Some("c7-3f2a9c1b")));
        let json = serde_json::to_value(&detail).unwrap();
        assert_eq!(json["rollouts"][0]["verdict"], "Regressed");
    }

    #[test]
    fn a_former_capture_of_the_same_name_shows_none_of_its_runs() {
        let pc: ProfileCapture = serde_json::from_value(serde_json::json!({
            "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
            "metadata": {"name": "checkout", "namespace": "shop", "uid": "7e11aa02-2222-4000-8000-000000000000"},
            "spec": {"selector": {}, "target": {"port": 6060}}
        }))
        .unwrap();
        let run = |id: &str| RunFiles {
            run: id.into(),
            modified: "2026-01-01T00:00:00Z".into(),
            pods: vec![PodFiles { pod: "web-0".into(), files: Vec::new() }],
        };
        let listing = CaptureFiles {
            namespace: "shop".into(),
            capture: "checkout".into(),
            runs: vec![run("g1-3f2a9c1b"), run("g1-7e11aa02"), run("s9")],
            skipped: Vec::new(),
        };
        let held = [HeldFiles { holder: "web-0".into(), listing }];
        let ids: Vec<String> = capture_detail(&pc, &held, Vec::new()).runs.into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["s9", "g1-7e11aa02"]);
        assert!(capture_detail(&pc, &held, Vec::new()).rollouts.is_empty());
        assert!(run_detail(&pc, "g1-3f2a9c1b", &held, Vec::new()).is_none());
    }
}
