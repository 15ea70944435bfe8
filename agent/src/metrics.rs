//! The agent's Prometheus metrics, served on `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Every metric the agent keeps.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Profiles captured, by type and result.
    pub captures: IntCounterVec,
    /// Whole capture jobs, in seconds.
    pub capture_duration: Histogram,
    /// Fetches from the app, by profile type, in seconds.
    pub fetch_duration: HistogramVec,
    /// Profile bytes written to the volume.
    pub bytes_written: IntCounter,
    /// Refused `/v1/` requests, by reason.
    pub auth_failures: IntCounterVec,
    /// Age of the latest runtime sample, refreshed at scrape time.
    pub runtime_sample_age: prometheus::Gauge,
    /// Bytes of the analysis memory budget held by analyses, refreshed at scrape time.
    pub analysis_memory_held: prometheus::IntGauge,
    /// Analyses waiting for analysis memory, refreshed at scrape time.
    pub analyses_waiting: prometheus::IntGauge,
    /// Reads of the app's Prometheus endpoint for request signals, by result (`ok`,
    /// `unreachable`: no usable answer, `refused`: not a usable exposition).
    pub app_metrics_reads: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new_custom(Some("biometrics_agent".into()), None).expect("valid registry prefix");
        let captures = IntCounterVec::new(
            Opts::new("captures_total", "Profiles captured, by type and result"),
            &["profile", "result"],
        )
        .expect("valid metric");
        let capture_duration = Histogram::with_opts(
            HistogramOpts::new("capture_duration_seconds", "Duration of whole capture jobs")
                .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0]),
        )
        .expect("valid metric");
        let fetch_duration = HistogramVec::new(
            HistogramOpts::new("fetch_duration_seconds", "Duration of profile fetches from the app")
                .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0]),
            &["profile"],
        )
        .expect("valid metric");
        let bytes_written = IntCounter::new("bytes_written_total", "Profile bytes written to the profiles volume")
            .expect("valid metric");
        let auth_failures =
            IntCounterVec::new(Opts::new("auth_failures_total", "Refused /v1/ requests, by reason"), &["reason"])
                .expect("valid metric");
        let runtime_sample_age = prometheus::Gauge::new(
            "runtime_sample_age_seconds",
            "Seconds since the app's runtime metrics were last sampled",
        )
        .expect("valid metric");
        let analysis_memory_held = prometheus::IntGauge::new(
            "analysis_memory_held_bytes",
            "Bytes of the analysis memory budget that profile analyses hold",
        )
        .expect("valid metric");
        let analyses_waiting =
            prometheus::IntGauge::new("analyses_waiting", "Profile analyses waiting for analysis memory")
                .expect("valid metric");
        let app_metrics_reads = IntCounterVec::new(
            Opts::new(
                "app_metrics_reads_total",
                "Reads of the app's Prometheus endpoint for request signals, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        for c in [
            Box::new(captures.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(app_metrics_reads.clone()),
            Box::new(capture_duration.clone()),
            Box::new(fetch_duration.clone()),
            Box::new(bytes_written.clone()),
            Box::new(auth_failures.clone()),
            Box::new(runtime_sample_age.clone()),
            Box::new(analysis_memory_held.clone()),
            Box::new(analyses_waiting.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            app_metrics_reads,
            captures,
            capture_duration,
            fetch_duration,
            bytes_written,
            auth_failures,
            runtime_sample_age,
            analysis_memory_held,
            analyses_waiting,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
