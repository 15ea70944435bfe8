//! Threshold and trigger arithmetic, as pure functions: the bounds a capture is judged by,
//! each runtime metric's level, the worst level, and which triggers fire for which pods
//! past their cooldowns. New metrics and threshold kinds are added here alone.

use biometrics_agent_api::RuntimeSample;
use biometrics_crds::{
    profile::ProfileType,
    run_id,
    threshold::{ThresholdLevel, UpperBounds},
    v1alpha1::{
        PodRuntime, ProfileCapture, ProfileCaptureStatus, RunTrigger, RuntimeLevels, RuntimeMetric, RuntimeThresholds,
        ThresholdTrigger,
    },
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{decide::DueRun, signals};

/// The triggers that fire now for each of `pods` (in order; pods none fires for are left
/// out), on the levels and cooldowns the status records. Nothing fires while suspended.
pub fn fired_triggers<'a, 'p>(
    pc: &'a ProfileCapture,
    status: &ProfileCaptureStatus,
    pods: impl IntoIterator<Item = &'p str>,
    now: Timestamp,
) -> Vec<(&'p str, Vec<&'a ThresholdTrigger>)> {
    if pc.spec.suspend || pc.spec.triggers.is_empty() {
        return Vec::new();
    }
    pods.into_iter()
        .filter_map(|pod| {
            let levels = status.pods.iter().find(|p| p.name == pod).and_then(|p| p.levels.as_ref())?;
            let last =
                |metric| status.trigger_fires.iter().find(|f| f.pod == pod && f.metric == metric).map(|f| f.time.0);
            let fired = firing(&pc.spec.triggers, levels, last, now);
            (!fired.is_empty()).then_some((pod, fired))
        })
        .collect()
}

/// The profiles a pod's fired triggers capture, each once.
pub fn triggered_profiles(fired: &[&ThresholdTrigger]) -> Vec<ProfileType> {
    let mut profiles: Vec<_> = fired.iter().flat_map(|t| t.profiles.iter().copied()).collect();
    profiles.sort();
    profiles.dedup();
    profiles
}

/// A threshold run, when a trigger fires for any of `pods`.
pub fn threshold_run<'p>(
    pc: &ProfileCapture,
    status: &ProfileCaptureStatus,
    pods: impl IntoIterator<Item = &'p str>,
    now: Timestamp,
) -> Option<DueRun> {
    (!fired_triggers(pc, status, pods, now).is_empty()).then(|| DueRun {
        trigger: RunTrigger::Threshold,
        id: run_id::run_id(&format!("t{}", now.as_second()), pc.metadata.uid.as_deref().unwrap_or_default()),
        scheduled_for: None,
    })
}

/// Each metric's level against the bounds (a metric not measured has none).
pub fn levels(sample: &RuntimeSample, thresholds: &RuntimeThresholds) -> RuntimeLevels {
    RuntimeLevels {
        memory_percent: sample.memory_percent.map(|v| thresholds.memory_percent.level(v)),
        goroutines: sample.goroutines.map(|v| thresholds.goroutines.level(v as f64)),
        gc_per_second: sample.gc_per_second.map(|v| thresholds.gc_per_second.level(v)),
        // The request metrics are judged apart (`signals::apply`).
        response_time_millis: None,
        error_rate_percent: None,
        not_judged: Vec::new(),
    }
}

/// A sample of a pod whose memory limit is missing (`memory_unknown` says why): its memory
/// percentage is withdrawn and its memory threshold marked as not judged, so a percentage
/// of the node's memory never reads as OK.
pub fn withhold_memory(sample: &mut RuntimeSample, levels: &mut RuntimeLevels, memory_unknown: Option<&str>) {
    if memory_unknown.is_some() {
        sample.memory_percent = None;
        levels.memory_percent = None;
        levels.not_judged.push(RuntimeMetric::MemoryPercent);
    }
}

/// The level of one metric.
pub fn level_of(levels: &RuntimeLevels, metric: RuntimeMetric) -> Option<ThresholdLevel> {
    match metric {
        RuntimeMetric::MemoryPercent => levels.memory_percent,
        RuntimeMetric::Goroutines => levels.goroutines,
        RuntimeMetric::GcPerSecond => levels.gc_per_second,
        RuntimeMetric::ResponseTimeMillis => levels.response_time_millis,
        RuntimeMetric::ErrorRatePercent => levels.error_rate_percent,
    }
}

/// The triggers that fire for a pod now: its level reached theirs and their cooldown has
/// passed since they last fired for this pod.
pub fn firing<'a>(
    triggers: &'a [ThresholdTrigger],
    levels: &RuntimeLevels,
    last_fired: impl Fn(RuntimeMetric) -> Option<Timestamp>,
    now: Timestamp,
) -> Vec<&'a ThresholdTrigger> {
    triggers
        .iter()
        .filter(|t| level_of(levels, t.metric).is_some_and(|l| l >= t.level))
        .filter(|t| {
            last_fired(t.metric).is_none_or(|last| {
                let cooldown = jiff::SignedDuration::try_from(t.cooldown.as_std()).unwrap_or_default();
                last.checked_add(cooldown).is_ok_and(|end| end <= now)
            })
        })
        .collect()
}

/// The thresholds a capture is judged by: its own, except that a bound left at the schema
/// default takes the cluster's `performance.alerting` value as its critical level (the
/// warning level scaled along when it would no longer be below it).
pub fn effective_thresholds(own: &RuntimeThresholds, alerting: &crate::config::Alerting) -> RuntimeThresholds {
    let defaults = RuntimeThresholds::default();
    let adopt = |own: UpperBounds, default: UpperBounds, critical: Option<f64>| match critical {
        Some(c) if own == default && c > 0.0 => {
            let warning = if default.warning < c { default.warning } else { c * default.warning / default.critical };
            UpperBounds { warning, critical: c }
        }
        _ => own,
    };
    RuntimeThresholds {
        memory_percent: own.memory_percent,
        goroutines: adopt(own.goroutines, defaults.goroutines, alerting.goroutine_threshold),
        gc_per_second: adopt(own.gc_per_second, defaults.gc_per_second, alerting.gc_threshold),
        response_time_millis: own.response_time_millis,
        error_rate_percent: own.error_rate_percent,
    }
}

/// The worst of a pod's levels (OK when none was judged).
pub fn worst(levels: &RuntimeLevels) -> ThresholdLevel {
    let all = [
        levels.memory_percent,
        levels.goroutines,
        levels.gc_per_second,
        levels.response_time_millis,
        levels.error_rate_percent,
    ];
    ThresholdLevel::worst(all.into_iter().flatten())
}

/// The values behind the levels, for an Event's note.
pub fn describe(s: &RuntimeSample, l: &RuntimeLevels) -> String {
    let mut parts = Vec::new();
    if let (Some(v), Some(level)) = (s.memory_percent, l.memory_percent) {
        parts.push(format!("memory {v:.1}% ({level})"));
    }
    if let (Some(v), Some(level)) = (s.goroutines, l.goroutines) {
        parts.push(format!("goroutines {v} ({level})"));
    }
    if let (Some(v), Some(level)) = (s.gc_per_second, l.gc_per_second) {
        parts.push(format!("GC {v:.1}/s ({level})"));
    }
    parts.join(", ")
}

/// What a pod's runtime sample says, judged: its status entry, and whether any of its levels
/// rose since `previous` (worth a Warning Event, naming the worst).
pub struct Judged {
    /// The pod's status entry.
    pub entry: PodRuntime,
    /// The worst level, when it rose above OK since the previous sample.
    pub crossed: Option<ThresholdLevel>,
    /// The sample's values and levels, for the Event.
    pub described: String,
}

/// Judges pod `pod`'s sample against its runtime and request `thresholds`; `memory_unknown`
/// says why its memory percentage means nothing (no memory limit), and `previous` is its
/// last entry.
pub fn judge(
    pod: &str,
    mut sample: RuntimeSample,
    (thresholds, requests): (&RuntimeThresholds, &signals::RequestThresholds),
    memory_unknown: Option<String>,
    previous: Option<&PodRuntime>,
    now: Timestamp,
) -> Judged {
    let mut levels = levels(&sample, thresholds);
    withhold_memory(&mut sample, &mut levels, memory_unknown.as_deref());
    let mut entry = PodRuntime {
        name: pod.to_owned(),
        sample_time: Some(Time(now)),
        heap_alloc_bytes: sample.heap_alloc_bytes.and_then(|v| i64::try_from(v).ok()),
        heap_sys_bytes: sample.heap_sys_bytes.and_then(|v| i64::try_from(v).ok()),
        sys_bytes: sample.sys_bytes.and_then(|v| i64::try_from(v).ok()),
        goroutines: sample.goroutines.and_then(|v| i64::try_from(v).ok()),
        gc_per_second: sample.gc_per_second.map(round2),
        memory_percent: sample.memory_percent.map(round2),
        memory_percent_unknown: memory_unknown,
        error: sample.error.clone(),
        ..PodRuntime::default()
    };
    if let Some(figures) = &sample.requests {
        signals::apply(&mut entry, &mut levels, figures, requests);
    }
    let level = worst(&levels);
    let crossed = signals::rose(previous.and_then(|p| p.levels.as_ref()), &levels).then_some(level);
    let mut parts = vec![describe(&sample, &levels)];
    parts.extend(signals::describe(&entry, &levels, requests));
    parts.retain(|p| !p.is_empty());
    entry.levels = Some(levels);
    Judged { entry, crossed, described: parts.join(", ") }
}

/// A pod whose sample could not be read: the reason, no levels.
pub fn unsampled(pod: &str, error: String, memory_unknown: Option<String>, now: Timestamp) -> PodRuntime {
    PodRuntime {
        name: pod.to_owned(),
        sample_time: Some(Time(now)),
        memory_percent_unknown: memory_unknown,
        error: Some(error),
        ..PodRuntime::default()
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
