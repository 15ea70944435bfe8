//! The operator's Prometheus metrics, served on `/metrics`.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// Every metric the operator keeps.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles, by controller.
    pub reconciles: IntCounterVec,
    /// Failed reconciles, by controller and reason.
    pub failures: IntCounterVec,
    /// Reconcile durations, by controller.
    pub reconcile_duration: HistogramVec,
    /// Pod captures finished, by result.
    pub captures: IntCounterVec,
    /// Agent call latency, by call.
    pub agent_calls: HistogramVec,
    /// Invalidations finished, by result.
    pub invalidations: IntCounterVec,
    /// Keys deleted by invalidations.
    pub keys_deleted: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new_custom(Some("biometrics_operator".into()), None).expect("valid prefix");
        let reconciles =
            IntCounterVec::new(Opts::new("reconciles_total", "Reconciles, by controller"), &["controller"])
                .expect("metric");
        let failures = IntCounterVec::new(
            Opts::new("reconcile_failures_total", "Failed reconciles, by controller and reason"),
            &["controller", "reason"],
        )
        .expect("metric");
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Reconcile durations")
                .buckets(vec![0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            &["controller"],
        )
        .expect("metric");
        let captures = IntCounterVec::new(Opts::new("captures_total", "Pod captures finished, by result"), &["result"])
            .expect("metric");
        let agent_calls = HistogramVec::new(
            HistogramOpts::new("agent_call_duration_seconds", "Agent API call latency")
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            &["call"],
        )
        .expect("metric");
        let invalidations =
            IntCounterVec::new(Opts::new("invalidations_total", "Invalidations finished, by result"), &["result"])
                .expect("metric");
        let keys_deleted = IntCounter::new("invalidated_keys_total", "Keys deleted by invalidations").expect("metric");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(captures.clone()),
            Box::new(agent_calls.clone()),
            Box::new(invalidations.clone()),
            Box::new(keys_deleted.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        Self { registry, reconciles, failures, reconcile_duration, captures, agent_calls, invalidations, keys_deleted }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
