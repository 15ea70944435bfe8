//! Which run a command shows, which it compares against, and how far a requested run has
//! got: plain functions over what the browser and the API server answered.

use biometrics_crds::v1alpha1::{CaptureRun, ProfileCaptureStatus, RunResult, RunSummary, RunTrigger};
use biometrics_ui::api::{CaptureDetail, RunRow};

use crate::error::{Error, Result};

fn no_such_run(detail: &CaptureDetail, run: &str) -> Error {
    Error::NoSuchRun {
        namespace: detail.capture.namespace.clone(),
        name: detail.capture.name.clone(),
        run: run.to_owned(),
        known: detail.runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", "),
    }
}

fn has_files(run: &RunRow) -> bool {
    !run.pods_with_files.is_empty()
}

/// The run `wanted`, or by default the newest whose files are on the volume: the newest
/// run may still be capturing, and a run without files has nothing to show.
/// `detail.runs` is newest first, as the browser answers it.
pub fn run<'a>(detail: &'a CaptureDetail, wanted: Option<&str>) -> Result<&'a RunRow> {
    if let Some(id) = wanted {
        return detail.runs.iter().find(|r| r.id == id).ok_or_else(|| no_such_run(detail, id));
    }
    let Some(newest) = detail.runs.first() else {
        return Err(Error::NoRunYet { namespace: detail.capture.namespace.clone(), name: detail.capture.name.clone() });
    };
    detail.runs.iter().find(|r| has_files(r)).ok_or_else(|| Error::NoFilesYet {
        namespace: detail.capture.namespace.clone(),
        name: detail.capture.name.clone(),
        newest: match newest.result {
            Some(result) => format!("{}, {result:?}", newest.id),
            None => newest.id.clone(),
        },
    })
}

/// The base to compare `run` with: `wanted`, or by default the newest run with files
/// before it.
pub fn base<'a>(detail: &'a CaptureDetail, run: &RunRow, wanted: Option<&str>) -> Result<&'a RunRow> {
    if let Some(id) = wanted {
        return detail.runs.iter().find(|r| r.id == id).ok_or_else(|| no_such_run(detail, id));
    }
    detail.runs.iter().skip_while(|r| r.id != run.id).skip(1).find(|r| has_files(r)).ok_or_else(|| {
        Error::NothingBefore {
            namespace: detail.capture.namespace.clone(),
            name: detail.capture.name.clone(),
            run: run.id.clone(),
        }
    })
}

/// How far the run asked for with `biometrics.io/capture-now=<value>` has got.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress<'a> {
    /// The operator has not acted on the value yet.
    Requested,
    /// The run started and is capturing.
    Running(&'a CaptureRun),
    /// The run ended; the status holds its pods' results and top functions.
    Finished(&'a CaptureRun),
    /// The run ended and a newer run (of another trigger) already replaced it as the last
    /// run: only its summary is left in the history.
    Superseded(&'a RunSummary),
    /// The operator took the value but started no run (no eligible pod).
    Skipped,
}

/// Where the run requested with `value` stands, given the status now and the id of the last
/// run before the request (`before`). The operator records the value it acted on
/// (`handledCaptureNow`) in the same status write that records the run it started, so
/// a handled value with the same last run means no run was started.
pub fn progress<'a>(status: Option<&'a ProfileCaptureStatus>, value: &str, before: Option<&str>) -> Progress<'a> {
    let Some(status) = status.filter(|s| s.handled_capture_now.as_deref() == Some(value)) else {
        return Progress::Requested;
    };
    let is_new = |id: &str| Some(id) != before;
    match &status.last_run {
        Some(last) if last.trigger == RunTrigger::Manual && is_new(&last.id) => {
            if last.result == RunResult::Running {
                Progress::Running(last)
            } else {
                Progress::Finished(last)
            }
        }
        Some(last) if is_new(&last.id) => status
            .history
            .iter()
            .find(|h| h.trigger == RunTrigger::Manual && is_new(&h.id) && h.id != last.id)
            .map_or(Progress::Skipped, Progress::Superseded),
        _ => Progress::Skipped,
    }
}

#[cfg(test)]
mod tests {
    use biometrics_ui::api::CaptureRow;
    use serde_json::{Value, json};

    use super::*;

    fn row(id: &str, pods: &[&str]) -> RunRow {
        RunRow {
            id: id.into(),
            trigger: None,
            start_time: None,
            result: Some(RunResult::Succeeded),
            pods_with_files: pods.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn detail(runs: Vec<RunRow>) -> CaptureDetail {
        CaptureDetail {
            capture: CaptureRow {
                namespace: "shop".into(),
                name: "checkout".into(),
                phase: None,
                selected_pods: None,
                last_run: None,
                last_run_time: None,
                next_run_time: None,
                threshold_level: None,
                profiles: vec![],
            },
            runs,
            rollouts: vec![],
            warnings: vec![],
        }
    }

    #[test]
    fn the_newest_run_with_files_by_default() {
        let mut running = row("r4", &[]);
        running.result = Some(RunResult::Running);
        let d = detail(vec![running, row("r3", &["a"]), row("r2", &[]), row("r1", &["a"])]);
        assert_eq!(run(&d, None).unwrap().id, "r3", "r4 is still capturing");
        assert_eq!(run(&d, Some("r4")).unwrap().id, "r4", "asked for by name");
        let r3 = run(&d, None).unwrap();
        assert_eq!(base(&d, r3, None).unwrap().id, "r1", "r2 has no files");
        assert_eq!(base(&d, r3, Some("r2")).unwrap().id, "r2");
        let r1 = run(&d, Some("r1")).unwrap();
        assert_eq!(
            base(&d, r1, None).unwrap_err().to_string(),
            "ProfileCapture shop/checkout has no run before r1 to compare with (pass --base)"
        );
    }

    #[test]
    fn no_run_no_files_no_such_run() {
        assert_eq!(run(&detail(vec![]), None).unwrap_err().to_string(), "ProfileCapture shop/checkout has no run yet");
        let mut running = row("m1", &[]);
        running.result = Some(RunResult::Running);
        assert_eq!(
            run(&detail(vec![running]), None).unwrap_err().to_string(),
            "ProfileCapture shop/checkout has no run with files yet (newest: m1, Running)"
        );
        let d = detail(vec![row("r2", &["a"]), row("r1", &["a"])]);
        assert_eq!(
            run(&d, Some("r9")).unwrap_err().to_string(),
            "ProfileCapture shop/checkout has no run \"r9\" (its runs: r2, r1)"
        );
        assert!(matches!(base(&d, &d.runs[0], Some("r9")), Err(Error::NoSuchRun { .. })));
    }

    fn status(value: Value) -> ProfileCaptureStatus {
        serde_json::from_value(value).unwrap()
    }

    fn run_json(id: &str, trigger: &str, result: &str) -> Value {
        json!({"id": id, "trigger": trigger, "startTime": "2026-11-29T10:00:00Z", "result": result})
    }

    #[test]
    fn progress_of_a_requested_run() {
        let before = Some("s100");
        let untouched =
            status(json!({"handledCaptureNow": "old", "lastRun": run_json("s100", "Schedule", "Succeeded")}));
        assert_eq!(progress(Some(&untouched), "v2", before), Progress::Requested);
        assert_eq!(progress(None, "v2", before), Progress::Requested);

        let running = status(json!({"handledCaptureNow": "v2", "lastRun": run_json("m1", "Manual", "Running")}));
        assert!(matches!(progress(Some(&running), "v2", before), Progress::Running(r) if r.id == "m1"));

        let done =
            status(json!({"handledCaptureNow": "v2", "lastRun": run_json("m1", "Manual", "PartiallySucceeded")}));
        assert!(matches!(progress(Some(&done), "v2", before), Progress::Finished(r) if r.id == "m1"));

        let skipped = status(json!({"handledCaptureNow": "v2", "lastRun": run_json("s100", "Schedule", "Succeeded")}));
        assert_eq!(progress(Some(&skipped), "v2", before), Progress::Skipped);
        let never_ran = status(json!({"handledCaptureNow": "v2"}));
        assert_eq!(progress(Some(&never_ran), "v2", None), Progress::Skipped);

        let superseded = status(json!({
            "handledCaptureNow": "v2",
            "lastRun": run_json("s200", "Schedule", "Running"),
            "history": [
                {"id": "s200", "trigger": "Schedule", "startTime": "2026-11-29T10:01:00Z", "result": "Running", "podsSucceeded": 0, "podsFailed": 0},
                {"id": "m1", "trigger": "Manual", "startTime": "2026-11-29T10:00:00Z", "result": "Succeeded", "podsSucceeded": 2, "podsFailed": 0},
                {"id": "s100", "trigger": "Schedule", "startTime": "2026-11-29T09:00:00Z", "result": "Succeeded", "podsSucceeded": 2, "podsFailed": 0}
            ]
        }));
        assert!(matches!(progress(Some(&superseded), "v2", before), Progress::Superseded(h) if h.id == "m1"));
    }

    #[test]
    fn a_manual_run_before_the_request_is_not_ours() {
        let earlier = status(json!({"handledCaptureNow": "v2", "lastRun": run_json("m0", "Manual", "Succeeded")}));
        assert_eq!(progress(Some(&earlier), "v2", Some("m0")), Progress::Skipped);
    }
}
