//! The app's request signals: while the operator asks for them, the agent reads the app's
//! Prometheus endpoint on its sample interval and keeps a window of readings per source,
//! from which it answers request rate, error rate and latency quantiles. A source nobody
//! asked for within the lease is dropped, and with it every read of the endpoint.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    api::{MetricsSource, RequestFigures},
    app_metrics::{
        exposition,
        reading::{self, Source},
        window::{Window, increase},
    },
    fetch::{FetchError, Fetcher},
};

/// At most this many sources are read at once; the one asked for least recently gives way.
pub const MAX_SOURCES: usize = 4;

/// Bounds of one read of the endpoint.
#[derive(Debug, Clone, Copy)]
pub struct ScrapeLimits {
    /// Largest exposition read.
    pub max_bytes: u64,
    /// Most samples in it.
    pub max_series: usize,
    /// How long one read may take.
    pub timeout: Duration,
}

impl Default for ScrapeLimits {
    fn default() -> Self {
        Self { max_bytes: 8 << 20, max_series: 200_000, timeout: Duration::from_secs(5) }
    }
}

/// Why a source is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A field out of its allowed form.
    #[error("metrics.{field} {value:?} {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

fn invalid(field: &'static str, value: &str, reason: &'static str) -> SourceError {
    SourceError::Invalid { field, value: value.chars().take(128).collect(), reason }
}

fn metric_name(field: &'static str, value: &str) -> Result<(), SourceError> {
    let mut bytes = value.bytes();
    let ok = value.len() <= 128
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
    if ok { Ok(()) } else { Err(invalid(field, value, "is not a metric name")) }
}

/// Checks a source and compiles its matchers.
pub fn compile(spec: &MetricsSource) -> Result<Source, SourceError> {
    crate::names::base_path(&spec.path).map_err(|_| invalid("path", &spec.path, "is not a plain absolute path"))?;
    if spec.histograms.is_empty() || spec.histograms.len() > 4 {
        return Err(invalid("histograms", &spec.histograms.join(","), "must name 1 to 4 histograms"));
    }
    for h in &spec.histograms {
        metric_name("histograms", h)?;
    }
    metric_name("requestsCounter", &spec.requests_counter)?;
    if let Some(label) = &spec.error_label {
        metric_name("errorLabel", label)?;
    }
    let values = &spec.error_values;
    if values.is_empty()
        || values.len() > 64
        || !values.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.|-".contains(&b))
    {
        return Err(invalid("errorValues", values, "may only hold letters, digits and _ - . |"));
    }
    if spec.match_labels.len() > 8 {
        return Err(invalid("matchLabels", "", "may hold at most 8 labels"));
    }
    if !(10..=3600).contains(&spec.window_seconds) {
        return Err(invalid("windowSeconds", &spec.window_seconds.to_string(), "must be between 10 and 3600"));
    }
    // Only literal characters, `.` and `|`: always a valid expression, matched whole.
    let error_values = regex::Regex::new(&format!("^(?:{values})$"))
        .map_err(|_| invalid("errorValues", values, "is not a valid pattern"))?;
    Ok(Source {
        histograms: spec.histograms.clone(),
        requests_counter: spec.requests_counter.clone(),
        error_label: spec.error_label.clone(),
        error_values,
        match_labels: spec.match_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

#[derive(Debug)]
struct Entry {
    source: Source,
    window: Window,
    figures: RequestFigures,
    wanted_until: Instant,
}

/// The sources asked for and their windows.
#[derive(Debug, Clone)]
pub struct RequestSignals {
    entries: Arc<Mutex<HashMap<MetricsSource, Entry>>>,
    lease: Duration,
    limits: ScrapeLimits,
    reads: prometheus::IntCounterVec,
}

impl RequestSignals {
    /// Signals whose sources stay wanted for `lease` after each ask; each read of an
    /// endpoint is counted in `reads` by result.
    pub fn new(lease: Duration, limits: ScrapeLimits, reads: prometheus::IntCounterVec) -> Self {
        Self { entries: Arc::default(), lease, limits, reads }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MetricsSource, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `spec` read for the lease; a new source starts with an empty window.
    pub fn want(&self, spec: &MetricsSource) -> Result<(), SourceError> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, e| e.wanted_until > now);
        if let Some(entry) = entries.get_mut(spec) {
            entry.wanted_until = now + self.lease;
            return Ok(());
        }
        let source = compile(spec)?;
        while entries.len() >= MAX_SOURCES {
            let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.wanted_until).map(|(k, _)| k.clone()) else {
                break;
            };
            entries.remove(&oldest);
        }
        entries.insert(
            spec.clone(),
            Entry {
                source,
                window: Window::new(f64::from(spec.window_seconds)),
                figures: RequestFigures { note: Some("no reading yet".into()), ..Default::default() },
                wanted_until: now + self.lease,
            },
        );
        Ok(())
    }

    /// The latest figures of `spec`, if it is wanted.
    pub fn figures(&self, spec: &MetricsSource) -> Option<RequestFigures> {
        self.lock().get(spec).map(|e| e.figures.clone())
    }

    /// Whether any source is wanted now.
    pub fn wanted(&self) -> bool {
        let now = Instant::now();
        self.lock().values().any(|e| e.wanted_until > now)
    }

    /// Reads every wanted endpoint once (each distinct port and path once) and adds the
    /// readings to their windows.
    pub async fn read_all(&self, fetcher: &Fetcher, host: IpAddr) {
        let now = Instant::now();
        let mut endpoints: Vec<(u16, String)> =
            self.lock().iter().filter(|(_, e)| e.wanted_until > now).map(|(k, _)| (k.port, k.path.clone())).collect();
        endpoints.sort();
        endpoints.dedup();
        for (port, path) in endpoints {
            let url = format!("http://{}{path}", SocketAddr::new(host, port));
            let body = fetcher.bytes(&url, self.limits.max_bytes, self.limits.timeout).await;
            let at = clock_seconds();
            let mut entries = self.lock();
            for (_, entry) in entries.iter_mut().filter(|(k, _)| k.port == port && k.path == path) {
                entry.figures = match &body {
                    Ok(bytes) => read_one(bytes, entry, at, self.limits.max_series),
                    Err(e) => {
                        entry.window.clear();
                        RequestFigures { error: Some(fetch_reason(e, self.limits.max_bytes)), ..Default::default() }
                    }
                };
                let result = match (&body, &entry.figures.error) {
                    (Err(_), _) => "unreachable",
                    (Ok(_), Some(_)) => "refused",
                    (Ok(_), None) => "ok",
                };
                self.reads.with_label_values(&[result]).inc();
            }
        }
    }
}

/// One reading of `spec`'s endpoint on `host`, outside any window: what a timed profile
/// reads as it starts and once its duration has passed, to count the requests answered
/// while it sampled.
/// With `before_any`, an endpoint serving none of the series yet (an app that has answered
/// no request) reads as no requests so far.
pub async fn read_now(
    fetcher: &Fetcher,
    host: IpAddr,
    spec: &MetricsSource,
    limits: ScrapeLimits,
    before_any: bool,
) -> Result<reading::Reading, String> {
    let source = compile(spec).map_err(|e| e.to_string())?;
    let url = format!("http://{}{}", SocketAddr::new(host, spec.port), spec.path);
    let body =
        fetcher.bytes(&url, limits.max_bytes, limits.timeout).await.map_err(|e| fetch_reason(&e, limits.max_bytes))?;
    let parsed = exposition::parse(&body, limits.max_series).map_err(|e| e.to_string())?;
    match reading::read(&parsed, &source, clock_seconds()) {
        Err(reading::ReadingError::NoSignals { .. }) if before_any => Ok(reading::Reading::default()),
        other => other.map_err(|e| e.to_string()),
    }
}

/// The requests answered between two readings of one source: each request series'
/// increase, reset-safe, a series absent before counted from zero (as the window counts).
pub fn answered_between(before: &reading::Reading, after: &reading::Reading) -> f64 {
    after.requests.iter().map(|(key, now)| increase([before.requests.get(key).map(|s| s.value), Some(now.value)])).sum()
}

/// What a timed profile reports of the app's requests over its own span.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProfileRequests {
    /// Requests answered.
    pub requests: f64,
    /// Their p99 latency in milliseconds (the histogram's increase over the span); `None`
    /// without a histogram or without requests.
    pub p99_latency_millis: Option<f64>,
    /// Errors in percent of them; `None` without requests.
    pub error_rate_percent: Option<f64>,
}

/// The requests, p99 latency and error rate between two readings of one source (the
/// window's arithmetic over just these two), rounded as the request figures are.
pub fn profile_requests(before: &reading::Reading, after: &reading::Reading) -> ProfileRequests {
    let requests = answered_between(before, after);
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let figures = crate::app_metrics::window::between(before, after);
    let counted = figures.filter(|_| requests > 0.0);
    ProfileRequests {
        requests,
        p99_latency_millis: counted.and_then(|f| f.latency).map(|q| round(q.p99_millis)),
        error_rate_percent: counted.and_then(|f| f.error_rate_percent).map(|p| (p * 10_000.0).round() / 10_000.0),
    }
}

fn fetch_reason(e: &FetchError, max_bytes: u64) -> String {
    match e {
        FetchError::TooLarge { .. } => {
            format!("the metrics exposition is larger than {} MiB; restrict what the endpoint serves", max_bytes >> 20)
        }
        other => other.to_string(),
    }
}

/// The agent's monotonic clock in seconds, for the window.
fn clock_seconds() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn read_one(bytes: &[u8], entry: &mut Entry, at: f64, max_series: usize) -> RequestFigures {
    let reading = exposition::parse(bytes, max_series)
        .map_err(|e| e.to_string())
        .and_then(|parsed| reading::read(&parsed, &entry.source, at).map_err(|e| e.to_string()));
    match reading {
        Ok(reading) => {
            entry.window.push(reading);
            figures_of(&entry.window)
        }
        Err(reason) => {
            entry.window.clear();
            RequestFigures { error: Some(reason), ..Default::default() }
        }
    }
}

/// The wire figures of a window.
pub fn figures_of(window: &Window) -> RequestFigures {
    let Some(f) = window.figures() else {
        return RequestFigures { note: Some("one reading so far; figures need two".into()), ..Default::default() };
    };
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let mut out = RequestFigures {
        seconds: Some(round(f.seconds)),
        requests_per_second: Some(round(f.requests_per_second)),
        error_rate_percent: f.error_rate_percent.map(round),
        ..Default::default()
    };
    if f.requests <= 0.0 {
        out.note = Some(format!("no requests in the last {:.0}s", f.seconds));
    }
    if let Some(q) = f.latency {
        out.p50_latency_millis = Some(round(q.p50_millis));
        out.p95_latency_millis = Some(round(q.p95_millis));
        out.p99_latency_millis = Some(round(q.p99_millis));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MetricsSource {
        MetricsSource {
            port: 8080,
            path: "/metrics".into(),
            histograms: vec!["http_request_duration_seconds".into()],
            requests_counter: "http_requests_total".into(),
            error_label: None,
            error_values: "5..".into(),
            match_labels: Default::default(),
            window_seconds: 60,
        }
    }

    #[test]
    fn sources_are_checked() {
        assert!(compile(&spec()).is_ok());
        let bad = MetricsSource { error_values: "5(..)".into(), ..spec() };
        assert_eq!(
            compile(&bad).unwrap_err().to_string(),
            "metrics.errorValues \"5(..)\" may only hold letters, digits and _ - . |"
        );
        assert!(compile(&MetricsSource { path: "/../admin".into(), ..spec() }).is_err());
        assert!(compile(&MetricsSource { histograms: vec!["a-b".into()], ..spec() }).is_err());
        assert!(compile(&MetricsSource { window_seconds: 5, ..spec() }).is_err());
        let source = compile(&MetricsSource { error_values: "5..|429".into(), ..spec() }).unwrap();
        assert!(source.error_values.is_match("503") && source.error_values.is_match("429"));
        assert!(!source.error_values.is_match("5030") && !source.error_values.is_match("200"));
    }

    /// A reading of an exposition with `ok` and `failed` requests so far: the fast ones
    /// (≤ 10 ms) of `ok` given, the rest of them and every failed one ≤ 100 ms.
    fn read_text(at: f64, ok: (u64, u64), failed: u64) -> reading::Reading {
        let (fast, all) = ok;
        let text = format!(
            "# TYPE http_request_duration_seconds histogram\n\
             http_request_duration_seconds_bucket{{code=\"200\",le=\"0.01\"}} {fast}\n\
             http_request_duration_seconds_bucket{{code=\"200\",le=\"0.1\"}} {all}\n\
             http_request_duration_seconds_bucket{{code=\"200\",le=\"+Inf\"}} {all}\n\
             http_request_duration_seconds_sum{{code=\"200\"}} 1\n\
             http_request_duration_seconds_count{{code=\"200\"}} {all}\n\
             http_request_duration_seconds_bucket{{code=\"500\",le=\"0.01\"}} 0\n\
             http_request_duration_seconds_bucket{{code=\"500\",le=\"0.1\"}} {failed}\n\
             http_request_duration_seconds_bucket{{code=\"500\",le=\"+Inf\"}} {failed}\n\
             http_request_duration_seconds_sum{{code=\"500\"}} 1\n\
             http_request_duration_seconds_count{{code=\"500\"}} {failed}\n\
             # TYPE http_requests_total counter\n\
             http_requests_total{{code=\"200\"}} {all}\n\
             http_requests_total{{code=\"500\"}} {failed}\n"
        );
        let parsed = exposition::parse_str(&text, 1000).unwrap();
        reading::read(&parsed, &compile(&spec()).unwrap(), at).unwrap()
    }

    #[test]
    fn a_profile_reports_the_requests_latency_and_errors_of_its_own_span() {
        // Before: 100 fast requests. Over the profile: 180 more fast ones, 10 slower ones
        // and 10 failed (slower too), 200 in all.
        let before = read_text(10.0, (100, 100), 0);
        let after = read_text(14.0, (280, 290), 10);
        let figures = profile_requests(&before, &after);
        assert_eq!(figures.requests, 200.0);
        // 10 of 200 failed.
        assert_eq!(figures.error_rate_percent, Some(5.0));
        // Bucket increases: 180 ≤ 10 ms, 200 ≤ 100 ms. Rank 198 lies in (10, 100] ms, 18 of
        // its 20: 10 + 90 · 18/20 = 91 ms; the 100 requests before the span do not count.
        assert_eq!(figures.p99_latency_millis, Some(91.0));
        // No request over the span: no latency and no error rate, not 0.
        let idle = profile_requests(&after, &read_text(18.0, (280, 290), 10));
        assert_eq!(idle, ProfileRequests { requests: 0.0, p99_latency_millis: None, error_rate_percent: None });
        // An app that had answered nothing when the profile started (no series yet).
        let first = profile_requests(&reading::Reading::default(), &read_text(4.0, (9, 10), 0));
        assert_eq!((first.requests, first.error_rate_percent), (10.0, Some(0.0)));
        assert_eq!(first.p99_latency_millis, Some(91.0), "rank 9.9 of 10: 10 + 90 · 0.9 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_four_sources_and_each_for_its_lease() {
        let reads = prometheus::IntCounterVec::new(prometheus::Opts::new("reads", "reads"), &["result"]).unwrap();
        let signals = RequestSignals::new(Duration::from_secs(30), ScrapeLimits::default(), reads);
        for port in 1..=5 {
            signals.want(&MetricsSource { port, ..spec() }).unwrap();
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(signals.lock().len(), MAX_SOURCES);
        assert!(signals.figures(&MetricsSource { port: 1, ..spec() }).is_none(), "the least recently asked gave way");
        assert!(signals.wanted());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!signals.wanted(), "nobody asked within the lease: nothing is read");
    }
}
