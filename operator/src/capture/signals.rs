//! The app's request signals in a capture, as pure functions: whether a capture wants them
//! read, what the agent is asked to read, the bounds they are judged by (the capture's own,
//! else the cluster's `performance.alerting`, else the origin document's), each pod's
//! levels, and the capture-wide figure with each pod weighted by its requests.

use biometrics_agent_api::{MetricsSource, RequestFigures};
use biometrics_crds::{
    threshold::{ThresholdLevel, UpperBounds},
    v1alpha1::{
        CaptureRequests, LatencyBounds, LatencyQuantile, MetricsTarget, PodRuntime, ProfileCaptureSpec, RuntimeLevels,
        RuntimeMetric, default_error_rate, default_response_time,
    },
};

/// The default latency histogram and the OpenTelemetry one, looked for in this order.
pub const DEFAULT_HISTOGRAMS: [&str; 2] = ["http_request_duration_seconds", "http_server_request_duration_seconds"];

/// Whether the capture reads the app's metrics: it names an endpoint, sets a request
/// threshold, or has a trigger on one.
pub fn wants_requests(spec: &ProfileCaptureSpec) -> bool {
    spec.target.metrics.is_some()
        || spec.thresholds.response_time_millis.is_some()
        || spec.thresholds.error_rate_percent.is_some()
        || spec.triggers.iter().any(|t| t.metric.from_requests())
}

/// What the agent is asked to read, when the capture wants request signals.
pub fn metrics_source(spec: &ProfileCaptureSpec) -> Option<MetricsSource> {
    if !wants_requests(spec) {
        return None;
    }
    let metrics = spec.target.metrics.clone().unwrap_or_default();
    let port = metrics.port.unwrap_or(spec.target.port);
    Some(MetricsSource {
        port: u16::try_from(port).ok()?,
        path: metrics.path.clone(),
        histograms: histograms(&metrics),
        requests_counter: metrics.requests.counter.clone(),
        error_label: metrics.errors.label.clone(),
        error_values: metrics.errors.values.clone(),
        match_labels: metrics.match_labels.clone(),
        window_seconds: u32::try_from(metrics.window.as_std().as_secs()).unwrap_or(60),
    })
}

fn histograms(metrics: &MetricsTarget) -> Vec<String> {
    match &metrics.latency.histogram {
        Some(name) => vec![name.clone()],
        None => DEFAULT_HISTOGRAMS.iter().map(|h| (*h).to_owned()).collect(),
    }
}

/// The bounds a capture's request signals are judged by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestThresholds {
    /// Latency, ms, at a quantile.
    pub response_time: LatencyBounds,
    /// Error percentage.
    pub error_rate: UpperBounds,
}

/// The capture's own bounds; where it sets none, the cluster's critical level (the warning
/// level scaled along when it would not be below it); else the origin document's.
pub fn thresholds(spec: &ProfileCaptureSpec, alerting: &crate::config::Alerting) -> RequestThresholds {
    let from_cluster = |default: UpperBounds, critical: Option<f64>| match critical {
        Some(c) if c > 0.0 => {
            let warning = if default.warning < c { default.warning } else { c * default.warning / default.critical };
            UpperBounds { warning, critical: c }
        }
        _ => default,
    };
    let response_time = spec.thresholds.response_time_millis.unwrap_or_else(|| {
        let default = default_response_time();
        let cluster = alerting.response_time_threshold.map(|d| d.as_std().as_secs_f64() * 1000.0);
        let b = from_cluster(default.bounds(), cluster);
        LatencyBounds { warning: b.warning, critical: b.critical, quantile: default.quantile }
    });
    let error_rate = spec
        .thresholds
        .error_rate_percent
        .unwrap_or_else(|| from_cluster(default_error_rate(), alerting.error_rate_threshold));
    RequestThresholds { response_time, error_rate }
}

/// The latency at `quantile`.
pub fn latency_at(figures: &RequestFigures, quantile: LatencyQuantile) -> Option<f64> {
    match quantile {
        LatencyQuantile::P50 => figures.p50_latency_millis,
        LatencyQuantile::P95 => figures.p95_latency_millis,
        LatencyQuantile::P99 => figures.p99_latency_millis,
    }
}

/// Fills a pod's request figures and their levels. No requests in the window gives no
/// error rate and no level: it is neither OK nor a failure.
pub fn apply(entry: &mut PodRuntime, levels: &mut RuntimeLevels, figures: &RequestFigures, t: &RequestThresholds) {
    entry.p50_latency_millis = figures.p50_latency_millis;
    entry.p95_latency_millis = figures.p95_latency_millis;
    entry.p99_latency_millis = figures.p99_latency_millis;
    entry.error_rate_percent = figures.error_rate_percent;
    entry.requests_per_second = figures.requests_per_second;
    entry.requests_note = figures.note.clone();
    entry.metrics_error = figures.error.clone();
    levels.response_time_millis =
        latency_at(figures, t.response_time.quantile).map(|v| t.response_time.bounds().level(v));
    levels.error_rate_percent = figures.error_rate_percent.map(|v| t.error_rate.level(v));
}

/// A pod's value of a request metric, as judged.
pub fn value_of(entry: &PodRuntime, metric: RuntimeMetric, quantile: LatencyQuantile) -> Option<f64> {
    match metric {
        RuntimeMetric::ResponseTimeMillis => match quantile {
            LatencyQuantile::P50 => entry.p50_latency_millis,
            LatencyQuantile::P95 => entry.p95_latency_millis,
            LatencyQuantile::P99 => entry.p99_latency_millis,
        },
        RuntimeMetric::ErrorRatePercent => entry.error_rate_percent,
        RuntimeMetric::MemoryPercent => entry.memory_percent,
        RuntimeMetric::Goroutines => entry.goroutines.map(|g| g as f64),
        RuntimeMetric::GcPerSecond => entry.gc_per_second,
    }
}

/// The capture-wide figures: latency averaged and error rate summed with each pod
/// weighted by its requests per second; a note says why there are none.
pub fn capture_requests(pods: &[PodRuntime], t: &RequestThresholds) -> CaptureRequests {
    let quantile = t.response_time.quantile;
    let reading: Vec<&PodRuntime> =
        pods.iter().filter(|p| p.requests_per_second.is_some() || p.requests_note.is_some()).collect();
    if reading.is_empty() {
        let note = if pods.iter().any(|p| p.metrics_error.is_some()) {
            "no pod's metrics could be read (see pods[].metricsError)"
        } else {
            "no pod reports request figures yet"
        };
        return CaptureRequests { quantile, note: Some(note.into()), ..Default::default() };
    }
    let total: f64 = reading.iter().filter_map(|p| p.requests_per_second).sum();
    let mut out = CaptureRequests { quantile, ..Default::default() };
    if total <= 0.0 {
        out.note = Some(if reading.iter().any(|p| p.requests_per_second.is_some()) {
            "no requests".into()
        } else {
            "no pod has two readings yet".into()
        });
        out.requests_per_second = reading.iter().any(|p| p.requests_per_second.is_some()).then_some(0.0);
        return out;
    }
    let weighted = |value: &dyn Fn(&PodRuntime) -> Option<f64>| {
        let (sum, weight) = reading
            .iter()
            .filter_map(|p| Some((value(p)?, p.requests_per_second?)))
            .filter(|(_, w)| *w > 0.0)
            .fold((0.0, 0.0), |(s, w), (v, pw)| (s + v * pw, w + pw));
        (weight > 0.0).then(|| round2(sum / weight))
    };
    out.requests_per_second = Some(round2(total));
    out.latency_millis = weighted(&|p| value_of(p, RuntimeMetric::ResponseTimeMillis, quantile));
    out.error_rate_percent = weighted(&|p| p.error_rate_percent);
    out.level = Some(ThresholdLevel::worst(
        [
            out.latency_millis.map(|v| t.response_time.bounds().level(v)),
            out.error_rate_percent.map(|v| t.error_rate.level(v)),
        ]
        .into_iter()
        .flatten(),
    ));
    out
}

/// The bound a metric's value crossed to reach `level`.
pub fn bound_crossed(bounds: UpperBounds, level: ThresholdLevel) -> f64 {
    match level {
        ThresholdLevel::Critical => bounds.critical,
        _ => bounds.warning,
    }
}

/// The bounds of any metric: the runtime ones from `runtime`, the request ones from
/// `requests`.
pub fn bounds_of(
    metric: RuntimeMetric,
    runtime: &biometrics_crds::v1alpha1::RuntimeThresholds,
    requests: &RequestThresholds,
) -> UpperBounds {
    match metric {
        RuntimeMetric::MemoryPercent => runtime.memory_percent,
        RuntimeMetric::Goroutines => runtime.goroutines,
        RuntimeMetric::GcPerSecond => runtime.gc_per_second,
        RuntimeMetric::ResponseTimeMillis => requests.response_time.bounds(),
        RuntimeMetric::ErrorRatePercent => requests.error_rate,
    }
}

/// The request metrics past a bound, each with its value and the bound, for Events:
/// `p99 latency 812.4 ms over the Warning bound 500 ms`.
pub fn describe(entry: &PodRuntime, levels: &RuntimeLevels, t: &RequestThresholds) -> Vec<String> {
    let mut parts = Vec::new();
    let quantile = t.response_time.quantile;
    if let (Some(level @ (ThresholdLevel::Warning | ThresholdLevel::Critical)), Some(v)) =
        (levels.response_time_millis, value_of(entry, RuntimeMetric::ResponseTimeMillis, quantile))
    {
        let bound = bound_crossed(t.response_time.bounds(), level);
        parts.push(format!("responseTimeMillis: {quantile} latency {v:.1} ms over the {level} bound {bound} ms"));
    }
    if let (Some(level @ (ThresholdLevel::Warning | ThresholdLevel::Critical)), Some(v)) =
        (levels.error_rate_percent, entry.error_rate_percent)
    {
        let bound = bound_crossed(t.error_rate, level);
        parts.push(format!("errorRatePercent: {v:.2}% errors over the {level} bound {bound}%"));
    }
    parts
}

/// Whether any metric's level rose past OK since `previous`: each metric on its own, so a
/// pod already at Warning for one metric still reports another that crosses.
pub fn rose(previous: Option<&RuntimeLevels>, now: &RuntimeLevels) -> bool {
    let all = |l: &RuntimeLevels| {
        [l.memory_percent, l.goroutines, l.gc_per_second, l.response_time_millis, l.error_rate_percent]
    };
    let before = previous.map(all).unwrap_or_default();
    all(now)
        .iter()
        .zip(before)
        .any(|(now, before)| now.is_some_and(|n| n > ThresholdLevel::OK && before.is_none_or(|b| b < n)))
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Alerting;

    fn spec(extra: serde_json::Value) -> ProfileCaptureSpec {
        let mut base = serde_json::json!({"selector": {}, "target": {"port": 6060}});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn read_only_when_asked_for() {
        assert!(!wants_requests(&spec(serde_json::json!({}))), "a plain capture never reads /metrics");
        assert!(metrics_source(&spec(serde_json::json!({}))).is_none());
        let by_threshold =
            spec(serde_json::json!({"thresholds": {"errorRatePercent": {"warning": 2, "critical": 10}}}));
        let source = metrics_source(&by_threshold).unwrap();
        assert_eq!((source.port, source.path.as_str(), source.window_seconds), (6060, "/metrics", 60));
        assert_eq!(source.histograms, DEFAULT_HISTOGRAMS);
        assert_eq!((source.requests_counter.as_str(), source.error_values.as_str()), ("http_requests_total", "5.."));
        let by_trigger = spec(serde_json::json!({"triggers": [{"metric": "responseTimeMillis"}]}));
        assert!(wants_requests(&by_trigger));
        let own = spec(
            serde_json::json!({"target": {"port": 6060, "metrics": {"port": 9090, "path": "/m", "latency": {"histogram": "rpc_seconds"}, "window": "2m", "matchLabels": {"handler": "/api"}}}}),
        );
        let source = metrics_source(&own).unwrap();
        assert_eq!((source.port, source.path.as_str(), source.window_seconds), (9090, "/m", 120));
        assert_eq!(source.histograms, ["rpc_seconds"]);
        assert_eq!(source.match_labels.get("handler").map(String::as_str), Some("/api"));
    }

    #[test]
    fn bounds_come_from_the_capture_then_the_cluster_then_the_origin() {
        let none = Alerting::default();
        let t = thresholds(&spec(serde_json::json!({})), &none);
        assert_eq!((t.response_time.warning, t.response_time.critical), (500.0, 2000.0));
        assert_eq!(t.response_time.quantile, LatencyQuantile::P99);
        assert_eq!(t.error_rate, UpperBounds { warning: 1.0, critical: 5.0 });
        let cluster = Alerting {
            response_time_threshold: Some(biometrics_crds::duration::Duration::from_secs(1)),
            error_rate_threshold: Some(0.5),
            ..Default::default()
        };
        let t = thresholds(&spec(serde_json::json!({})), &cluster);
        assert_eq!((t.response_time.warning, t.response_time.critical), (500.0, 1000.0));
        // 0.5 % critical is below the 1 % warning: the warning scales along (1/5 of it).
        assert_eq!(t.error_rate, UpperBounds { warning: 0.1, critical: 0.5 });
        let own = spec(
            serde_json::json!({"thresholds": {"responseTimeMillis": {"warning": 100, "critical": 300, "quantile": "p95"}}}),
        );
        let t = thresholds(&own, &cluster);
        assert_eq!((t.response_time.warning, t.response_time.quantile), (100.0, LatencyQuantile::P95));
    }

    fn pod(name: &str, rps: Option<f64>, p99: Option<f64>, errors: Option<f64>) -> PodRuntime {
        let mut p: PodRuntime = serde_json::from_value(serde_json::json!({"name": name})).unwrap();
        p.requests_per_second = rps;
        p.p99_latency_millis = p99;
        p.error_rate_percent = errors;
        p
    }

    #[test]
    fn pod_levels_and_no_requests() {
        let t = thresholds(&spec(serde_json::json!({})), &Alerting::default());
        let mut entry = pod("a", None, None, None);
        let mut levels = RuntimeLevels::default();
        let slow = RequestFigures {
            requests_per_second: Some(10.0),
            p99_latency_millis: Some(812.0),
            error_rate_percent: Some(10.0),
            ..Default::default()
        };
        apply(&mut entry, &mut levels, &slow, &t);
        assert_eq!(levels.response_time_millis, Some(ThresholdLevel::Warning));
        assert_eq!(levels.error_rate_percent, Some(ThresholdLevel::Critical));
        let idle = RequestFigures {
            requests_per_second: Some(0.0),
            note: Some("no requests in the last 60s".into()),
            ..Default::default()
        };
        apply(&mut entry, &mut levels, &idle, &t);
        assert_eq!(
            (entry.error_rate_percent, levels.error_rate_percent),
            (None, None),
            "no requests is not 0 % errors"
        );
        assert_eq!(entry.requests_note.as_deref(), Some("no requests in the last 60s"));
    }

    #[test]
    fn a_metric_that_rises_is_reported_though_another_was_already_past_its_bound() {
        let gc_warning = RuntimeLevels { gc_per_second: Some(ThresholdLevel::Warning), ..Default::default() };
        let and_latency = RuntimeLevels { response_time_millis: Some(ThresholdLevel::Warning), ..gc_warning.clone() };
        assert!(rose(None, &gc_warning));
        assert!(!rose(Some(&gc_warning), &gc_warning), "nothing new");
        assert!(rose(Some(&gc_warning), &and_latency), "latency crossed while GC stayed at Warning");
        let calmer = RuntimeLevels { gc_per_second: Some(ThresholdLevel::OK), ..and_latency.clone() };
        assert!(!rose(Some(&and_latency), &calmer), "falling is not crossing");
    }

    #[test]
    fn the_capture_wide_figure_weighs_pods_by_their_requests() {
        let t = thresholds(&spec(serde_json::json!({})), &Alerting::default());
        // 30 req/s at 100 ms and 1 % errors, 10 req/s at 900 ms and 5 %:
        // latency (30·100 + 10·900)/40 = 300 ms; errors (30·1 + 10·5)/40 = 2 %.
        let pods = [pod("a", Some(30.0), Some(100.0), Some(1.0)), pod("b", Some(10.0), Some(900.0), Some(5.0))];
        let c = capture_requests(&pods, &t);
        assert_eq!(
            (c.latency_millis, c.error_rate_percent, c.requests_per_second),
            (Some(300.0), Some(2.0), Some(40.0))
        );
        assert_eq!(c.level, Some(ThresholdLevel::Warning));
        let idle = [pod("a", Some(0.0), None, None)];
        let c = capture_requests(&idle, &t);
        assert_eq!((c.note.as_deref(), c.latency_millis, c.error_rate_percent), (Some("no requests"), None, None));
        let none = capture_requests(&[pod("a", None, None, None)], &t);
        assert_eq!((none.note.as_deref(), none.latency_millis), (Some("no pod reports request figures yet"), None));
        let mut unreadable = pod("a", None, None, None);
        unreadable.metrics_error = Some("not the Prometheus text format".into());
        let broken = capture_requests(&[unreadable], &t);
        assert!(broken.note.is_some_and(|n| n.contains("metricsError")));
    }
}
