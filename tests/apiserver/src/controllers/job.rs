//! The Job controller's decision, for `completionMode: NonIndexed` Jobs: pods from the
//! template until `completions` have succeeded (or, without `completions`, until one has
//! and none runs), at most `parallelism` at once; a Job whose pods failed more than
//! `backoffLimit` times, or that ran past `activeDeadlineSeconds`, fails and its running
//! pods are deleted; `suspend` deletes them and creates none. The status and conditions
//! are kube-controller-manager's: `SuccessCriteriaMet` then `Complete`, `FailureTarget`
//! then `Failed`, each terminal one once no pod of the Job is terminating.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    replicaset::pod_from_template,
    workload::{condition, int_at, meta_str, ready, terminating},
};

/// What one sync of a Job does.
#[derive(Debug, Default, PartialEq)]
pub struct JobPlan {
    /// Pods to create (bodies with `generateName`).
    pub create: Vec<Value>,
    /// Names of running pods to delete.
    pub delete: Vec<String>,
    /// The status to write, if it changed.
    pub status: Option<Value>,
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending")
}

fn has_condition(job: &Value, kind: &str) -> bool {
    job.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some(kind) && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

fn previous<'a>(job: &'a Value, kind: &str) -> Option<&'a Value> {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// Why the Job fails, if it does: its pods failed too often, or it ran too long.
fn failure(job: &Value, failed: i64, now: Timestamp) -> Option<(&'static str, &'static str)> {
    if failed > int_at(job, "/spec/backoffLimit", 6) {
        return Some(("BackoffLimitExceeded", "Job has reached the specified backoff limit"));
    }
    let started = job.pointer("/status/startTime").and_then(Value::as_str).and_then(|t| t.parse::<Timestamp>().ok());
    let deadline = job.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64);
    match (started, deadline) {
        (Some(started), Some(limit)) if now.duration_since(started).as_secs() >= limit => {
            Some(("DeadlineExceeded", "Job was active longer than specified deadline"))
        }
        _ => None,
    }
}

/// One sync of `job`, given the pods it controls.
pub fn plan(job: &Value, owned: &[&Value], now: Timestamp) -> JobPlan {
    let mut plan = JobPlan::default();
    let running: Vec<&Value> =
        owned.iter().copied().filter(|p| !terminating(p) && !matches!(phase(p), "Succeeded" | "Failed")).collect();
    let succeeded = owned.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
    let failed = owned.iter().filter(|p| phase(p) == "Failed").count() as i64;
    let stopping =
        owned.iter().filter(|p| terminating(p) && !matches!(phase(p), "Succeeded" | "Failed")).count() as i64;
    let suspended = job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let finished = has_condition(job, "Complete") || has_condition(job, "Failed");
    let completions = job.pointer("/spec/completions").and_then(Value::as_i64);
    let parallelism = int_at(job, "/spec/parallelism", 1).max(0);

    let succeeding = match completions {
        Some(n) => succeeded >= n,
        // A work queue: done once one pod has succeeded and none runs.
        None => succeeded > 0 && running.is_empty(),
    };
    let failing = if succeeding { None } else { failure(job, failed, now) };
    let mut status = job.get("status").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    if !finished {
        if failing.is_some() || suspended {
            plan.delete = running.iter().map(|p| meta_str(p, "name").to_owned()).collect();
        } else if !succeeding {
            let wanted = match completions {
                Some(n) => parallelism.min(n - succeeded),
                None if succeeded > 0 => 0,
                None => parallelism,
            };
            let missing = wanted - running.len() as i64;
            plan.create = (0..missing.max(0)).map(|_| pod_from_template(job)).collect();
        }
    }
    let active = if plan.delete.is_empty() { running.len() + plan.create.len() } else { 0 };
    status["active"] = json!(active);
    status["ready"] = json!(running.iter().filter(|p| ready(p)).count());
    status["succeeded"] = json!(succeeded);
    status["failed"] = json!(failed);
    status["terminating"] = json!(stopping + plan.delete.len() as i64);
    status["uncountedTerminatedPods"] = json!({});
    if status.get("startTime").is_none() && !suspended {
        status["startTime"] = json!(now.to_string());
    }
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let mut set = |kind: &str, state: &str, reason: &str, message: &str| {
        let mut c = condition(previous(job, kind), kind, state, reason, message, now, false);
        c["lastProbeTime"] = c["lastTransitionTime"].clone();
        match conditions.iter_mut().find(|old| old.get("type").and_then(Value::as_str) == Some(kind)) {
            Some(old) if old.get("status") == c.get("status") => {}
            Some(old) => *old = c,
            None => conditions.push(c),
        }
    };
    if !finished {
        // Terminal only once no pod of the Job is still stopping, as in Kubernetes 1.31+.
        let settled = stopping == 0 && plan.delete.is_empty();
        if succeeding {
            set("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods");
            if settled {
                set("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods");
                status["completionTime"] = json!(now.to_string());
            }
        } else if let Some((reason, message)) = failing {
            set("FailureTarget", "True", reason, message);
            if settled {
                set("Failed", "True", reason, message);
            }
        } else if suspended {
            set("Suspended", "True", "JobSuspended", "Job suspended");
        } else if previous(job, "Suspended").is_some() {
            set("Suspended", "False", "JobResumed", "Job resumed");
        }
    }
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    if job.get("status") != Some(&status) {
        plan.status = Some(status);
    }
    plan
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

    fn pod(name: &str, phase: &str) -> Value {
        json!({"metadata": {"name": name}, "status": {"phase": phase}})
    }

    fn now() -> Timestamp {
        "2026-01-01T00:01:00Z".parse().unwrap()
    }

    /// Applies `plan`'s status to `job`, as the next sync reads it.
    fn after(job: &Value, plan: &JobPlan) -> Value {
        let mut next = job.clone();
        if let Some(status) = &plan.status {
            next["status"] = status.clone();
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
        let j = after(&j, &first);
        assert_eq!(
            (j["status"]["active"].as_i64(), j["status"]["startTime"].as_str()),
            (Some(2), Some("2026-01-01T00:01:00Z"))
        );

        // Two done: one more, the last completion.
        let (a, b) = (pod("a", "Succeeded"), pod("b", "Succeeded"));
        let next = plan(&j, &[&a, &b], now());
        assert_eq!(next.create.len(), 1);
        let j = after(&j, &next);
        let c = pod("c", "Succeeded");
        let done = plan(&j, &[&a, &b, &c], now());
        assert!(done.create.is_empty() && done.delete.is_empty());
        let j = after(&j, &done);
        assert_eq!(
            condition_types(&j),
            [("SuccessCriteriaMet".into(), "True".into()), ("Complete".into(), "True".into())]
        );
        assert_eq!((j["status"]["succeeded"].as_i64(), j["status"]["active"].as_i64()), (Some(3), Some(0)));
        assert_eq!(printed_status(&j), "Complete");
        assert_eq!(plan(&j, &[&a, &b, &c], now()), JobPlan::default(), "a finished Job writes nothing more");
    }

    #[test]
    fn fails_past_the_backoff_limit_and_stops_what_runs() {
        let j = job(json!({"completions": 2, "parallelism": 2, "backoffLimit": 1}));
        let (a, b, c) = (pod("a", "Failed"), pod("b", "Failed"), pod("c", "Running"));
        let stop = plan(&j, &[&a, &b, &c], now());
        assert_eq!((stop.create.len(), stop.delete.as_slice()), (0, ["c".to_owned()].as_slice()));
        let j = after(&j, &stop);
        assert_eq!(condition_types(&j), [("FailureTarget".into(), "True".into())], "not Failed while c stops");
        assert_eq!(printed_status(&j), "FailureTarget");
        let gone = plan(&j, &[&a, &b], now());
        let j = after(&j, &gone);
        let failed = j["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").unwrap();
        assert_eq!(failed["reason"], "BackoffLimitExceeded");
        assert_eq!(printed_status(&j), "Failed");
    }

    #[test]
    fn a_work_queue_is_done_when_one_pod_succeeded_and_none_runs() {
        let j = job(json!({"parallelism": 2, "backoffLimit": 6}));
        let (a, b) = (pod("a", "Succeeded"), pod("b", "Running"));
        let waiting = plan(&j, &[&a, &b], now());
        assert!(waiting.create.is_empty(), "no new pod once one succeeded");
        assert!(!condition_types(&after(&j, &waiting)).iter().any(|(t, _)| t == "Complete"));
        let b = pod("b", "Succeeded");
        assert!(condition_types(&after(&j, &plan(&j, &[&a, &b], now()))).contains(&("Complete".into(), "True".into())));
    }

    #[test]
    fn a_suspended_job_runs_nothing_and_a_deadline_fails_it() {
        let j = job(json!({"completions": 1, "parallelism": 1, "suspend": true}));
        let a = pod("a", "Running");
        let suspended = plan(&j, &[&a], now());
        assert_eq!(suspended.delete, ["a"]);
        let j = after(&j, &suspended);
        assert_eq!(printed_status(&j), "Suspended");
        assert!(j["status"].get("startTime").is_none());

        let mut late = job(json!({"completions": 1, "parallelism": 1, "activeDeadlineSeconds": 30}));
        late["status"] = json!({"startTime": "2026-01-01T00:00:00Z"});
        let failed = after(&late, &plan(&late, &[], now()));
        let reasons: Vec<&str> =
            failed["status"]["conditions"].as_array().unwrap().iter().filter_map(|c| c["reason"].as_str()).collect();
        assert_eq!(reasons, ["DeadlineExceeded", "DeadlineExceeded"]);
    }
}
