//! One scrape of the app's metrics, reduced to what the request signals need: the latency
//! histogram's cumulative buckets and the request counter, per series, each series marked
//! as an error series or not. Everything else in the exposition is ignored; what is wrong
//! in these series (NaN, decreasing buckets, a missing `+Inf`, a series twice) is refused
//! with the series named.

use std::collections::BTreeMap;

use super::exposition::{Exposition, Sample};

/// Which series of the exposition carry the signals.
#[derive(Debug, Clone)]
pub struct Source {
    /// Latency histogram family names, the first one present is used.
    pub histograms: Vec<String>,
    /// The request counter's sample name (`http_requests_total`).
    pub requests_counter: String,
    /// The label that tells an error apart; when unset, `http_response_status_code` for
    /// the OpenTelemetry histogram and `code` otherwise.
    pub error_label: Option<String>,
    /// Values of that label that count as errors (anchored: the whole value must match).
    pub error_values: regex::Regex,
    /// Only series carrying all these labels with these values count.
    pub match_labels: Vec<(String, String)>,
}

/// The OpenTelemetry semantic-convention histogram, whose status label differs.
pub const OTEL_HISTOGRAM: &str = "http_server_request_duration_seconds";
/// The OpenTelemetry status label.
pub const OTEL_STATUS_LABEL: &str = "http_response_status_code";
/// The Prometheus client libraries' status label.
pub const STATUS_LABEL: &str = "code";

/// One series of the histogram: its cumulative buckets, sorted by upper bound.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSeries {
    /// Whether the series counts errors.
    pub error: bool,
    /// `(le, cumulative count)`, ascending, ending with `+Inf`.
    pub buckets: Vec<(f64, f64)>,
}

/// One series of the request count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterSeries {
    /// Whether the series counts errors.
    pub error: bool,
    /// The counter's value.
    pub value: f64,
}

/// The signals' series from one scrape, keyed by their labels (without `le`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// When it was read, in seconds on a clock of the caller's choosing.
    pub at: f64,
    /// The histogram family found, if any.
    pub histogram: Option<String>,
    /// Its series.
    pub latency: BTreeMap<String, HistogramSeries>,
    /// The request count's series: the counter's, or the histogram's `+Inf` buckets when
    /// the app has no counter (OpenTelemetry).
    pub requests: BTreeMap<String, CounterSeries>,
}

/// Why a scrape gave no reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadingError {
    /// Neither a histogram nor the counter is there.
    #[error("the metrics have no histogram {histograms} and no counter {counter}")]
    NoSignals {
        /// The histogram names looked for.
        histograms: String,
        /// The counter name looked for.
        counter: String,
    },
    /// A value that is not a number where a count is needed.
    #[error("series {series} has the value {value}, not a count")]
    NotACount {
        /// The series.
        series: String,
        /// Its value as written.
        value: String,
    },
    /// The same series twice.
    #[error("series {0} appears more than once")]
    Duplicate(String),
    /// A bucket bound that is not a number.
    #[error("series {series} has le={le:?}, not a number")]
    BadBound {
        /// The series.
        series: String,
        /// The bound.
        le: String,
    },
    /// No `+Inf` bucket.
    #[error("histogram series {0} has no le=\"+Inf\" bucket")]
    NoInfBucket(String),
    /// Buckets that are not cumulative.
    #[error("histogram series {series} decreases: le={le} holds {count}, fewer than le={below}'s {below_count}")]
    Decreasing {
        /// The series.
        series: String,
        /// The bucket that holds fewer.
        le: f64,
        /// Its count.
        count: f64,
        /// The bucket below it.
        below: f64,
        /// Its count.
        below_count: f64,
    },
}

impl Source {
    /// The error label for histogram family `histogram`.
    fn error_label(&self, histogram: Option<&str>) -> &str {
        match (&self.error_label, histogram) {
            (Some(label), _) => label,
            (None, Some(OTEL_HISTOGRAM)) => OTEL_STATUS_LABEL,
            (None, _) => STATUS_LABEL,
        }
    }

    fn selected(&self, sample: &Sample<'_>) -> bool {
        self.match_labels.iter().all(|(k, v)| sample.label(k) == Some(v.as_str()))
    }
}

/// The series' labels in a stable order, without `le`: the key a series keeps across scrapes.
fn series_key(sample: &Sample<'_>) -> String {
    let mut labels: Vec<_> = sample.labels.iter().filter(|(k, _)| k != "le").collect();
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut key = String::new();
    for (k, v) in labels {
        if !key.is_empty() {
            key.push(',');
        }
        key.push_str(k);
        key.push_str("=\"");
        for ch in v.chars() {
            match ch {
                '"' => key.push_str("\\\""),
                '\\' => key.push_str("\\\\"),
                '\n' => key.push_str("\\n"),
                ch => key.push(ch),
            }
        }
        key.push('"');
    }
    key
}

fn entry_key_empty(sample: &Sample<'_>) -> bool {
    sample.labels.iter().all(|(k, _)| k == "le")
}

fn shown(name: &str, key: &str) -> String {
    format!("{name}{{{key}}}")
}

fn count(name: &str, key: &str, value: f64) -> Result<f64, ReadingError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(ReadingError::NotACount { series: shown(name, key), value: value.to_string() })
    }
}

/// Reduces a parsed exposition to the signals' series.
pub fn read(exposition: &Exposition<'_>, source: &Source, at: f64) -> Result<Reading, ReadingError> {
    let buckets: Vec<String> = source.histograms.iter().map(|h| format!("{h}_bucket")).collect();
    // Per histogram candidate: series key → (error label value, raw buckets).
    type RawSeries = BTreeMap<String, (Option<String>, Vec<(f64, f64)>)>;
    let mut found: Vec<RawSeries> = vec![BTreeMap::new(); buckets.len()];
    let mut counter: BTreeMap<String, (Option<String>, f64)> = BTreeMap::new();
    let mut counter_seen = false;
    for sample in &exposition.samples {
        let which = buckets.iter().position(|b| *b == sample.name);
        let is_counter = sample.name == source.requests_counter;
        if (which.is_none() && !is_counter) || !source.selected(sample) {
            continue;
        }
        let key = series_key(sample);
        if let Some(which) = which {
            let name = &source.histograms[which];
            let le_text = sample.label("le").unwrap_or_default();
            let le = le_text
                .parse::<f64>()
                .ok()
                .filter(|le| !le.is_nan())
                .ok_or_else(|| ReadingError::BadBound { series: shown(name, &key), le: le_text.to_owned() })?;
            let value = count(name, &key, sample.value)?;
            let label = source.error_label(Some(name));
            let entry = found[which].entry(key).or_insert_with(|| (sample.label(label).map(str::to_owned), Vec::new()));
            if entry.1.iter().any(|(b, _)| *b == le) {
                let comma = if entry_key_empty(sample) { "" } else { "," };
                let key = series_key(sample);
                return Err(ReadingError::Duplicate(format!("{}{{{key}{comma}le={le_text:?}}}", buckets[which])));
            }
            entry.1.push((le, value));
        } else {
            counter_seen = true;
            let value = count(&source.requests_counter, &key, sample.value)?;
            let label = sample.label(source.error_label(None)).map(str::to_owned);
            if counter.insert(key.clone(), (label, value)).is_some() {
                return Err(ReadingError::Duplicate(shown(&source.requests_counter, &key)));
            }
        }
    }
    let chosen = found.iter().position(|series| !series.is_empty());
    if chosen.is_none() && !counter_seen {
        return Err(ReadingError::NoSignals {
            histograms: source.histograms.join(" or "),
            counter: source.requests_counter.clone(),
        });
    }
    let is_error = |value: &Option<String>| value.as_deref().is_some_and(|v| source.error_values.is_match(v));
    let mut reading = Reading { at, histogram: chosen.map(|i| source.histograms[i].clone()), ..Default::default() };
    if let Some(which) = chosen {
        let name = &source.histograms[which];
        for (key, (label, mut raw)) in std::mem::take(&mut found[which]) {
            raw.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            if raw.last().is_none_or(|(le, _)| *le != f64::INFINITY) {
                return Err(ReadingError::NoInfBucket(shown(name, &key)));
            }
            if let Some(w) = raw.windows(2).find(|w| w[1].1 < w[0].1) {
                return Err(ReadingError::Decreasing {
                    series: shown(name, &key),
                    le: w[1].0,
                    count: w[1].1,
                    below: w[0].0,
                    below_count: w[0].1,
                });
            }
            reading.latency.insert(key, HistogramSeries { error: is_error(&label), buckets: raw });
        }
    }
    if counter_seen {
        reading.requests = counter
            .into_iter()
            .map(|(k, (label, value))| (k, CounterSeries { error: is_error(&label), value }))
            .collect();
    } else {
        reading.requests = reading
            .latency
            .iter()
            .map(|(k, s)| (k.clone(), CounterSeries { error: s.error, value: s.buckets.last().map_or(0.0, |b| b.1) }))
            .collect();
    }
    Ok(reading)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_metrics::exposition::parse_str;

    pub(crate) fn source() -> Source {
        Source {
            histograms: vec!["http_request_duration_seconds".into(), OTEL_HISTOGRAM.into()],
            requests_counter: "http_requests_total".into(),
            error_label: None,
            error_values: regex::Regex::new("^(?:5..)$").unwrap(),
            match_labels: vec![],
        }
    }

    fn read_text(text: &str, source: &Source) -> Result<Reading, ReadingError> {
        read(&parse_str(text, 1000).unwrap(), source, 0.0)
    }

    const APP: &str = "# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{handler=\"/\",le=\"0.5\"} 3
http_request_duration_seconds_bucket{handler=\"/\",le=\"0.1\"} 1
http_request_duration_seconds_bucket{handler=\"/\",le=\"+Inf\"} 4
http_request_duration_seconds_sum{handler=\"/\"} 2.5
http_request_duration_seconds_count{handler=\"/\"} 4
http_request_duration_seconds_bucket{handler=\"/x\",le=\"0.1\"} 0
http_request_duration_seconds_bucket{handler=\"/x\",le=\"+Inf\"} 2
# TYPE http_requests_total counter
http_requests_total{code=\"200\",handler=\"/\"} 4
http_requests_total{code=\"503\",handler=\"/x\"} 2
go_goroutines 7
";

    #[test]
    fn reads_the_histogram_and_the_counter() {
        let r = read_text(APP, &source()).unwrap();
        assert_eq!(r.histogram.as_deref(), Some("http_request_duration_seconds"));
        assert_eq!(r.latency["handler=\"/\""].buckets, vec![(0.1, 1.0), (0.5, 3.0), (f64::INFINITY, 4.0)]);
        assert_eq!(r.requests.len(), 2);
        assert!(r.requests["code=\"503\",handler=\"/x\""].error);
        assert!(!r.requests["code=\"200\",handler=\"/\""].error);
        let only_root = Source { match_labels: vec![("handler".into(), "/".into())], ..source() };
        let r = read_text(APP, &only_root).unwrap();
        assert_eq!((r.latency.len(), r.requests.len()), (1, 1), "the label selector restricts the series");
    }

    #[test]
    fn opentelemetry_names_count_requests_from_the_histogram() {
        let text = "http_server_request_duration_seconds_bucket{http_response_status_code=\"500\",le=\"1\"} 2
http_server_request_duration_seconds_bucket{http_response_status_code=\"500\",le=\"+Inf\"} 3
http_server_request_duration_seconds_bucket{http_response_status_code=\"200\",le=\"1\"} 5
http_server_request_duration_seconds_bucket{http_response_status_code=\"200\",le=\"+Inf\"} 5
";
        let r = read_text(text, &source()).unwrap();
        assert_eq!(r.histogram.as_deref(), Some(OTEL_HISTOGRAM));
        let errors: f64 = r.requests.values().filter(|s| s.error).map(|s| s.value).sum();
        let all: f64 = r.requests.values().map(|s| s.value).sum();
        assert_eq!((errors, all), (3.0, 8.0));
    }

    #[test]
    fn refuses_broken_series_with_their_names() {
        let cases = [
            (
                "go_goroutines 7\n",
                "the metrics have no histogram http_request_duration_seconds or http_server_request_duration_seconds and no counter http_requests_total",
            ),
            (
                "http_requests_total{code=\"200\"} NaN\n",
                "series http_requests_total{code=\"200\"} has the value NaN, not a count",
            ),
            (
                "http_requests_total{code=\"200\"} 1\nhttp_requests_total{code=\"200\"} 2\n",
                "series http_requests_total{code=\"200\"} appears more than once",
            ),
            (
                "http_request_duration_seconds_bucket{le=\"0.1\"} 5\nhttp_request_duration_seconds_bucket{le=\"0.5\"} 3\nhttp_request_duration_seconds_bucket{le=\"+Inf\"} 6\n",
                "histogram series http_request_duration_seconds{} decreases: le=0.5 holds 3, fewer than le=0.1's 5",
            ),
            (
                "http_request_duration_seconds_bucket{le=\"0.1\"} 5\n",
                "histogram series http_request_duration_seconds{} has no le=\"+Inf\" bucket",
            ),
            (
                "http_request_duration_seconds_bucket{le=\"fast\"} 5\n",
                "series http_request_duration_seconds{} has le=\"fast\", not a number",
            ),
            (
                "http_request_duration_seconds_bucket{le=\"+Inf\"} 5\nhttp_request_duration_seconds_bucket{le=\"+Inf\"} 5\n",
                "series http_request_duration_seconds_bucket{le=\"+Inf\"} appears more than once",
            ),
        ];
        for (text, reason) in cases {
            assert_eq!(read_text(text, &source()).unwrap_err().to_string(), reason);
        }
    }
}
