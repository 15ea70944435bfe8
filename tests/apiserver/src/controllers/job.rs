//! The Job controller's decision, for `completionMode: NonIndexed` Jobs: pods from the
//! template until `completions` have succeeded (or, without `completions`, until one has
//! and none runs), at most `parallelism` at once; a Job whose pods failed more than
//! `backoffLimit` times (with `restartPolicy: OnFailure`, counting their restarts), or
//! that ran past `activeDeadlineSeconds`, fails and its running pods are deleted;
//! `suspend` deletes them and creates none. The status and conditions are
//! kube-controller-manager's: `SuccessCriteriaMet` then `Complete`, `FailureTarget` then
//! `Failed`, each terminal one once no pod of the Job is left running or uncounted.
//!
//! Pods are counted as kube-controller-manager counts them, through the
//! `batch.kubernetes.io/job-tracking` finalizer each is created with: a pod that ended
//! (succeeded, failed, or deleted before it succeeded) is first listed by uid in
//! `uncountedTerminatedPods`, then its finalizer is removed, then it is added to
//! `succeeded` or `failed`; so a count survives the pod, and a deleted pod is a failure.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    replicaset::pod_from_template,
    workload::{condition, int_at, meta_str, ready, status_condition as condition_of, terminating},
};

/// The finalizer a Job's pods carry until the Job has counted them.
pub const TRACKING: &str = "batch.kubernetes.io/job-tracking";

/// What one sync of a Job does.
#[derive(Debug, Default, PartialEq)]
pub struct JobPlan {
    /// Pods to create (bodies with `generateName`).
    pub create: Vec<Value>,
    /// Names of running pods to delete.
    pub delete: Vec<String>,
    /// Names of pods whose end the status now holds: their tracking finalizer goes.
    pub release: Vec<String>,
    /// The merge patch of the status, if it changed.
    pub status: Option<Value>,
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending")
}

/// Whether the pod still carries the tracking finalizer.
pub fn tracked(pod: &Value) -> bool {
    pod.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| f.iter().any(|f| f == TRACKING))
}

/// How a pod ended, if it has: `Some(true)` succeeded; `Some(false)` failed, or deleted
/// before it succeeded (a deleted pod counts as failed, as with the default
/// `podReplacementPolicy`).
fn ended(pod: &Value) -> Option<bool> {
    match phase(pod) {
        "Succeeded" => Some(true),
        "Failed" => Some(false),
        _ if terminating(pod) => Some(false),
        _ => None,
    }
}

fn has_condition(job: &Value, kind: &str) -> bool {
    condition_of(job, kind).and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True")
}

fn uids(status: &Value, list: &str) -> Vec<String> {
    status
        .pointer(&format!("/uncountedTerminatedPods/{list}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// Why the Job fails, if it does: its pods failed (or, with `restartPolicy: OnFailure`,
/// restarted) too often, or it ran too long (never while suspended).
fn failure(
    job: &Value,
    failed: i64,
    restarts: i64,
    (started, suspended): (Option<Timestamp>, bool),
    now: Timestamp,
) -> Option<(String, String)> {
    if failed + restarts > int_at(job, "/spec/backoffLimit", 6) {
        return Some(("BackoffLimitExceeded".into(), "Job has reached the specified backoff limit".into()));
    }
    let deadline = job.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64);
    match (started, deadline) {
        (Some(started), Some(limit)) if !suspended && now.duration_since(started).as_secs() >= limit => {
            Some(("DeadlineExceeded".into(), "Job was active longer than specified deadline".into()))
        }
        _ => None,
    }
}

/// The restarts of a pod's containers: failures, for a Job whose pods restart in place.
fn restarts(pod: &Value) -> i64 {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|list| pod.pointer(&format!("/status/{list}")).and_then(Value::as_array))
        .flatten()
        .filter_map(|s| s.get("restartCount").and_then(Value::as_i64))
        .sum()
}

/// One sync of `job`, given the pods it controls. A finished Job is left alone.
pub fn plan(job: &Value, owned: &[&Value], now: Timestamp) -> JobPlan {
    let mut plan = JobPlan::default();
    if has_condition(job, "Complete") || has_condition(job, "Failed") {
        return plan;
    }
    let old = job.get("status").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let uid_of = |p: &Value| meta_str(p, "uid").to_owned();

    // Counting: uncounted pods whose finalizer is gone join the counts; pods that ended
    // since join the uncounted, and are released.
    let still_tracked: BTreeSet<String> = owned.iter().filter(|p| tracked(p)).map(|p| uid_of(p)).collect();
    let (mut uncounted_succeeded, mut uncounted_failed) = (uids(&old, "succeeded"), uids(&old, "failed"));
    // Takes the released (no longer tracked) pods out of an uncounted list: how many.
    let released = |uncounted: &mut Vec<String>| {
        let before = uncounted.len();
        uncounted.retain(|u| still_tracked.contains(u));
        (before - uncounted.len()) as i64
    };
    let counted_succeeded = int_at(&old, "/succeeded", 0) + released(&mut uncounted_succeeded);
    let counted_failed = int_at(&old, "/failed", 0) + released(&mut uncounted_failed);
    for pod in owned.iter().filter(|p| tracked(p)) {
        let uid = uid_of(pod);
        if uncounted_succeeded.contains(&uid) || uncounted_failed.contains(&uid) {
            plan.release.push(meta_str(pod, "name").to_owned());
            continue;
        }
        match ended(pod) {
            Some(true) => uncounted_succeeded.push(uid),
            Some(false) => uncounted_failed.push(uid),
            None => continue,
        }
        plan.release.push(meta_str(pod, "name").to_owned());
    }
    let succeeded = counted_succeeded + uncounted_succeeded.len() as i64;
    let failed = counted_failed + uncounted_failed.len() as i64;

    let mut running: Vec<&Value> = owned.iter().copied().filter(|p| ended(p).is_none()).collect();
    running.sort_by_key(|p| meta_str(p, "creationTimestamp").to_owned());
    let stopping = owned.iter().filter(|p| terminating(p) && !matches!(phase(p), "Succeeded" | "Failed")).count();
    let suspended = job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let completions = job.pointer("/spec/completions").and_then(Value::as_i64);
    let parallelism = int_at(job, "/spec/parallelism", 1).max(0);
    let on_failure = job.pointer("/spec/template/spec/restartPolicy").and_then(Value::as_str) == Some("OnFailure");
    let restarted = if on_failure { running.iter().map(|p| restarts(p)).sum() } else { 0 };
    // A resumed Job's deadline counts from its resumption.
    let resuming = has_condition(job, "Suspended") && !suspended;
    let started_at = if resuming {
        Some(now)
    } else {
        old.get("startTime").and_then(Value::as_str).and_then(|t| t.parse::<Timestamp>().ok())
    };

    // A FailureTarget or SuccessCriteriaMet already written decides; else failure first.
    let failing = match condition_of(job, "FailureTarget") {
        Some(c) if has_condition(job, "FailureTarget") => Some((
            c.get("reason").and_then(Value::as_str).unwrap_or_default().to_owned(),
            c.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
        )),
        _ if has_condition(job, "SuccessCriteriaMet") => None,
        _ => failure(job, failed, restarted, (started_at, suspended), now),
    };
    let succeeding = failing.is_none()
        && (has_condition(job, "SuccessCriteriaMet")
            || match completions {
                Some(n) => succeeded >= n,
                // A work queue: done once one pod has succeeded and none runs.
                None => succeeded > 0 && running.is_empty(),
            });
    let wanted = if failing.is_some() || suspended || succeeding {
        0
    } else {
        match completions {
            Some(n) => parallelism.min(n - succeeded).max(0),
            // Once one has succeeded, the others finish their work: none new, none stopped.
            None if succeeded > 0 => running.len() as i64,
            None => parallelism,
        }
    };
    let have = running.len() as i64;
    if have > wanted {
        // The newest go first.
        let surplus = usize::try_from(have - wanted).unwrap_or(0);
        plan.delete = running.iter().rev().take(surplus).map(|p| meta_str(p, "name").to_owned()).collect();
    } else {
        plan.create = (have..wanted)
            .map(|_| {
                let mut pod = pod_from_template(job);
                pod["metadata"]["finalizers"] = json!([TRACKING]);
                pod
            })
            .collect();
    }

    let mut status = old.clone();
    let mut set_count = |field: &str, n: i64| {
        // Zero is left out, as the Go type's omitempty leaves it.
        status[field] = if n == 0 { Value::Null } else { json!(n) };
    };
    set_count("active", have - plan.delete.len() as i64 + plan.create.len() as i64);
    set_count("succeeded", counted_succeeded);
    set_count("failed", counted_failed);
    let deleted: BTreeSet<&str> = plan.delete.iter().map(String::as_str).collect();
    status["ready"] = json!(running.iter().filter(|p| ready(p) && !deleted.contains(meta_str(p, "name"))).count());
    status["terminating"] = json!(stopping + plan.delete.len());
    let mut uncounted = json!({});
    for (list, uids) in [("succeeded", &uncounted_succeeded), ("failed", &uncounted_failed)] {
        if !uids.is_empty() {
            uncounted[list] = json!(uids);
        }
    }
    status["uncountedTerminatedPods"] = uncounted;
    let mut conditions: Vec<Value> = old.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut set = |kind: &str, state: &str, reason: &str, message: &str| {
        let mut c = condition(condition_of(job, kind), kind, state, reason, message, now, false);
        c["lastProbeTime"] = c["lastTransitionTime"].clone();
        match conditions.iter_mut().find(|old| old.get("type").and_then(Value::as_str) == Some(kind)) {
            Some(old) if old.get("status") == c.get("status") => {}
            Some(old) => *old = c,
            None => conditions.push(c),
        }
    };
    // Terminal only once nothing of the Job runs or waits to be counted, as in 1.31+.
    let settled = stopping == 0
        && have == 0
        && plan.release.is_empty()
        && uncounted_succeeded.is_empty()
        && uncounted_failed.is_empty();
    if succeeding {
        set("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods");
        if settled {
            set("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods");
            status["completionTime"] = json!(now.to_string());
        }
    } else if let Some((reason, message)) = &failing {
        set("FailureTarget", "True", reason, message);
        if settled {
            set("Failed", "True", reason, message);
        }
    } else if suspended {
        set("Suspended", "True", "JobSuspended", "Job suspended");
    } else if resuming {
        set("Suspended", "False", "JobResumed", "Job resumed");
    }
    // Started when first running, and again on a resume.
    let has_started = old.get("startTime").is_some_and(|t| !t.is_null());
    if resuming || !has_started && !suspended {
        status["startTime"] = json!(now.to_string());
    }
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    if let Some(map) = status.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    if status != old {
        plan.status = Some(merge_patch(&old, &status));
    }
    plan
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: `null` for what `new`
/// leaves out, nested objects patched in turn.
fn merge_patch(old: &Value, new: &Value) -> Value {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else { return new.clone() };
    let mut patch: serde_json::Map<String, Value> =
        old.keys().filter(|k| !new.contains_key(*k)).map(|k| (k.clone(), Value::Null)).collect();
    for (key, value) in new {
        match old.get(key) {
            Some(before) if before == value => {}
            Some(before) if before.is_object() && value.is_object() => {
                patch.insert(key.clone(), merge_patch(before, value));
            }
            _ => {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(patch)
}

/// The Job's `kubectl get` STATUS, as kube-apiserver's printer makes it.
pub fn printed_status(job: &Value) -> &'static str {
    if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if terminating(job) {
        "Terminating"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: Value) -> Value {
        let mut spec = spec;
        spec["template"] = json!({"metadata": {"labels": {"job-name": "batch"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}});
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "batch", "namespace": "shop", "uid": "j1"}, "spec": spec})
    }

    /// A pod of the Job, still tracked.
    fn pod(name: &str, phase: &str) -> Value {
        json!({"metadata": {"name": name, "uid": format!("u-{name}"), "finalizers": [TRACKING],
            "creationTimestamp": format!("2026-01-01T00:00:0{}Z", name.len())}, "status": {"phase": phase}})
    }

    /// The pod once the Job has released it.
    fn released(pod: &Value) -> Value {
        let mut pod = pod.clone();
        pod["metadata"]["finalizers"] = json!([]);
        pod
    }

    fn now() -> Timestamp {
        "2026-01-01T00:01:00Z".parse().unwrap()
    }

    /// Applies `plan`'s status patch to `job`, as the store does.
    fn after(job: &Value, plan: &JobPlan) -> Value {
        let mut next = job.clone();
        if let Some(patch) = &plan.status {
            json_patch::merge(&mut next, &json!({"status": patch}));
        }
        next
    }

    fn condition_types(job: &Value) -> Vec<(String, String)> {
        job["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (c["type"].as_str().unwrap().to_owned(), c["status"].as_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn runs_parallelism_pods_until_the_completions_have_succeeded() {
        let j = job(json!({"completions": 3, "parallelism": 2, "backoffLimit": 6}));
        let first = plan(&j, &[], now());
        assert_eq!(first.create.len(), 2);
        assert_eq!(first.create[0]["metadata"]["generateName"], "batch-");
        assert_eq!(first.create[0]["metadata"]["ownerReferences"][0]["uid"], "j1");
        assert_eq!(first.create[0]["metadata"]["finalizers"], json!([TRACKING]));
        let j = after(&j, &first);
        assert_eq!(
            (j["status"]["active"].as_i64(), j["status"]["startTime"].as_str()),
            (Some(2), Some("2026-01-01T00:01:00Z"))
        );
        assert_eq!(j["status"].get("succeeded"), None, "a zero count is left out");

        // Two done: listed as uncounted and released; one more pod for the last completion.
        let (a, b) = (pod("a", "Succeeded"), pod("bb", "Succeeded"));
        let next = plan(&j, &[&a, &b], now());
        assert_eq!((next.create.len(), next.release.as_slice()), (1, ["a".to_owned(), "bb".to_owned()].as_slice()));
        let j = after(&j, &next);
        assert_eq!(j["status"]["uncountedTerminatedPods"], json!({"succeeded": ["u-a", "u-bb"]}));
        // Released: counted.
        let (a, b, c) = (released(&a), released(&b), pod("ccc", "Running"));
        let j = after(&j, &plan(&j, &[&a, &b, &c], now()));
        assert_eq!((j["status"]["succeeded"].as_i64(), &j["status"]["uncountedTerminatedPods"]), (Some(2), &json!({})));
        let c = pod("ccc", "Succeeded");
        let counting = plan(&j, &[&a, &b, &c], now());
        let j = after(&j, &counting);
        assert_eq!(
            condition_types(&j),
            [("SuccessCriteriaMet".into(), "True".into())],
            "not Complete while c is uncounted"
        );
        let c = released(&c);
        let j = after(&j, &plan(&j, &[&a, &b, &c], now()));
        assert_eq!(
            condition_types(&j),
            [("SuccessCriteriaMet".into(), "True".into()), ("Complete".into(), "True".into())]
        );
        assert_eq!((j["status"]["succeeded"].as_i64(), j["status"].get("active")), (Some(3), None));
        assert_eq!(printed_status(&j), "Complete");
        // Finished: the pods going since change nothing.
        assert_eq!(plan(&j, &[], now()), JobPlan::default());
    }

    #[test]
    fn a_deleted_pod_is_a_failure_and_failing_past_the_backoff_limit_stops_what_runs() {
        let j = job(json!({"completions": 2, "parallelism": 2, "backoffLimit": 1}));
        let mut deleted = pod("a", "Running");
        deleted["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:50Z");
        let b = pod("bb", "Running");
        let first = plan(&j, &[&deleted, &b], now());
        assert_eq!((first.create.len(), first.release.as_slice()), (1, ["a".to_owned()].as_slice()), "replaced");
        let j = after(&j, &first);
        assert_eq!(j["status"]["uncountedTerminatedPods"], json!({"failed": ["u-a"]}));
        // The deleted pod is gone with its count kept; a second failure passes the limit.
        let (b, c) = (pod("bb", "Failed"), pod("ccc", "Running"));
        let stop = plan(&j, &[&b, &c], now());
        assert_eq!((stop.create.len(), stop.delete.as_slice()), (0, ["ccc".to_owned()].as_slice()));
        let j = after(&j, &stop);
        assert_eq!(j["status"]["failed"], 1, "{j:#}");
        assert_eq!(condition_types(&j), [("FailureTarget".into(), "True".into())], "not Failed while pods stop");
        assert_eq!(printed_status(&j), "FailureTarget");
        // A pod that succeeds now does not make it Complete: the failure was decided.
        let (b, c) = (released(&b), pod("ccc", "Succeeded"));
        let j = after(&j, &plan(&j, &[&b, &c], now()));
        let c = released(&c);
        let j = after(&j, &plan(&j, &[&b, &c], now()));
        let failed = j["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").unwrap();
        assert_eq!(failed["reason"], "BackoffLimitExceeded");
        assert_eq!(condition_types(&j).len(), 2, "{j:#}");
        assert_eq!(printed_status(&j), "Failed");
    }

    #[test]
    fn restarts_count_as_failures_when_pods_restart_in_place() {
        let mut j = job(json!({"completions": 1, "parallelism": 1, "backoffLimit": 2}));
        j["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        let mut a = pod("a", "Running");
        a["status"]["containerStatuses"] = json!([{"restartCount": 3}]);
        let j = after(&j, &plan(&j, &[&a], now()));
        assert_eq!(condition_types(&j), [("FailureTarget".into(), "True".into())]);
    }

    #[test]
    fn a_work_queue_is_done_when_one_pod_succeeded_and_none_runs() {
        let j = job(json!({"parallelism": 2, "backoffLimit": 6}));
        let (a, b) = (released(&pod("a", "Succeeded")), pod("bb", "Running"));
        let mut counted = j.clone();
        counted["status"] = json!({"succeeded": 1});
        let waiting = plan(&counted, &[&a, &b], now());
        assert!(waiting.create.is_empty() && waiting.delete.is_empty(), "no new pod once one succeeded, none stopped");
        let b = released(&pod("bb", "Succeeded"));
        let mut both = counted.clone();
        both["status"]["succeeded"] = json!(2);
        assert!(
            condition_types(&after(&both, &plan(&both, &[&a, &b], now())))
                .contains(&("Complete".into(), "True".into()))
        );
    }

    #[test]
    fn lowering_parallelism_stops_the_newest() {
        let j = job(json!({"completions": 5, "parallelism": 1}));
        let (a, b) = (pod("a", "Running"), pod("bb", "Running"));
        assert_eq!(plan(&j, &[&a, &b], now()).delete, ["bb"]);
    }

    #[test]
    fn a_suspended_job_runs_nothing_and_a_deadline_fails_it() {
        let j = job(json!({"completions": 1, "parallelism": 1, "suspend": true, "activeDeadlineSeconds": 30}));
        let a = pod("a", "Running");
        let suspended = plan(&j, &[&a], now());
        assert_eq!(suspended.delete, ["a"]);
        let j = after(&j, &suspended);
        assert_eq!(printed_status(&j), "Suspended");
        assert!(j["status"].get("startTime").is_none());

        // Resumed long after: the deadline counts from the resume.
        let mut resumed = j.clone();
        resumed["spec"]["suspend"] = json!(false);
        resumed["status"]["startTime"] = json!("2026-01-01T00:00:00Z");
        let resumed = after(&resumed, &plan(&resumed, &[], now()));
        assert_eq!(resumed["status"]["startTime"], "2026-01-01T00:01:00Z");
        assert!(!condition_types(&resumed).iter().any(|(t, _)| t == "FailureTarget"), "{resumed:#}");

        let mut late = job(json!({"completions": 1, "parallelism": 1, "activeDeadlineSeconds": 30}));
        late["status"] = json!({"startTime": "2026-01-01T00:00:00Z"});
        let failed = after(&late, &plan(&late, &[], now()));
        let reasons: Vec<&str> =
            failed["status"]["conditions"].as_array().unwrap().iter().filter_map(|c| c["reason"].as_str()).collect();
        assert_eq!(reasons, ["DeadlineExceeded", "DeadlineExceeded"]);
    }
}
