//! The window of readings and the figures over it: request rate, error ratio and latency
//! quantiles, from counter increases that survive the app restarting (a counter that goes
//! down started again from zero) and from histogram bucket increases with Prometheus's
//! `histogram_quantile` interpolation.

use std::collections::VecDeque;

use super::reading::Reading;

/// The latency quantiles reported, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub p50_millis: f64,
    /// 95th percentile.
    pub p95_millis: f64,
    /// 99th percentile.
    pub p99_millis: f64,
}

/// The figures over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Seconds between the window's first and last reading.
    pub seconds: f64,
    /// Requests counted in the window.
    pub requests: f64,
    /// Error requests counted in the window.
    pub errors: f64,
    /// Requests per second.
    pub requests_per_second: f64,
    /// Errors as a percentage of requests; `None` when there were no requests (no
    /// requests is not 0 % errors).
    pub error_rate_percent: Option<f64>,
    /// Latency quantiles; `None` without a histogram or without observations.
    pub latency: Option<Quantiles>,
}

/// The readings of the last `span` seconds.
#[derive(Debug, Clone)]
pub struct Window {
    span: f64,
    readings: VecDeque<Reading>,
}

impl Window {
    /// An empty window over `span` seconds.
    pub fn new(span: f64) -> Self {
        Self { span, readings: VecDeque::new() }
    }

    /// The window's span in seconds.
    pub fn span(&self) -> f64 {
        self.span
    }

    /// Adds the newest reading and drops those no longer needed: the oldest kept is the
    /// latest one at least `span` before the newest, so the window covers the span once
    /// it has run that long. A reading from another histogram family, or one not after the
    /// newest, starts the window again.
    pub fn push(&mut self, reading: Reading) {
        if self.readings.back().is_some_and(|last| last.histogram != reading.histogram || last.at >= reading.at) {
            self.readings.clear();
        }
        self.readings.push_back(reading);
        let newest = self.readings.back().map_or(0.0, |r| r.at);
        while self.readings.len() > 2 && self.readings[1].at <= newest - self.span {
            self.readings.pop_front();
        }
    }

    /// Forgets every reading (the source changed, or a scrape failed).
    pub fn clear(&mut self) {
        self.readings.clear();
    }

    /// How many readings it holds.
    pub fn len(&self) -> usize {
        self.readings.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }

    /// The figures over the window; `None` until two readings are in it.
    pub fn figures(&self) -> Option<Figures> {
        figures(self.readings.iter().collect())
    }
}

/// The figures between two readings alone: a timed profile's span, read as it starts and
/// once its duration has passed.
pub fn between(before: &Reading, after: &Reading) -> Option<Figures> {
    figures(vec![before, after])
}

/// A counter's increase over successive values (`None`: the series was absent then),
/// reset-safe: a value below the one before means the counter started again from zero, so
/// the whole value is the increase; a series that appears after the first reading counted
/// from zero too.
pub fn increase(values: impl IntoIterator<Item = Option<f64>>) -> f64 {
    let mut total = 0.0;
    let mut previous: Option<Option<f64>> = None;
    for value in values {
        if let (Some(before), Some(now)) = (previous, value) {
            match before {
                Some(before) if now >= before => total += now - before,
                _ => total += now,
            }
        }
        previous = Some(value);
    }
    total
}

/// Prometheus's `histogram_quantile`: the `q` quantile of cumulative `buckets`
/// (`(upper bound, count)` ascending, the last `+Inf`), linearly interpolated within the
/// bucket that holds the rank; in the `+Inf` bucket, the highest finite bound. `None`
/// without a `+Inf` bucket, with fewer than two buckets or with no observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if buckets.len() < 2 || buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return None;
    }
    // Sums of increases across series can be out of order by rounding; like Prometheus,
    // a bucket never holds fewer than the one below it.
    let mut monotonic = Vec::with_capacity(buckets.len());
    let mut highest = 0.0_f64;
    for &(le, count) in buckets {
        highest = highest.max(count);
        monotonic.push((le, highest));
    }
    let observations = monotonic[monotonic.len() - 1].1;
    if observations <= 0.0 {
        return None;
    }
    let rank = q * observations;
    let b = monotonic[..monotonic.len() - 1].iter().position(|b| b.1 >= rank).unwrap_or(monotonic.len() - 1);
    if b == monotonic.len() - 1 {
        return Some(monotonic[monotonic.len() - 2].0);
    }
    if b == 0 && monotonic[0].0 <= 0.0 {
        return Some(monotonic[0].0);
    }
    let (start, below) = if b == 0 { (0.0, 0.0) } else { monotonic[b - 1] };
    let (end, count) = monotonic[b];
    Some(start + (end - start) * ((rank - below) / (count - below)))
}

fn figures(readings: Vec<&Reading>) -> Option<Figures> {
    let (first, last) = (readings.first()?, readings.last()?);
    if readings.len() < 2 {
        return None;
    }
    let seconds = last.at - first.at;
    let mut keys: Vec<&String> = readings.iter().flat_map(|r| r.requests.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    let (mut requests, mut errors) = (0.0, 0.0);
    for key in keys {
        let grew = increase(readings.iter().map(|r| r.requests.get(key).map(|s| s.value)));
        requests += grew;
        if readings.iter().rev().find_map(|r| r.requests.get(key)).is_some_and(|s| s.error) {
            errors += grew;
        }
    }
    let latency = latency_increase(&readings).and_then(|buckets| {
        let millis = |q| histogram_quantile(q, &buckets).map(|s| s * 1000.0);
        Some(Quantiles { p50_millis: millis(0.5)?, p95_millis: millis(0.95)?, p99_millis: millis(0.99)? })
    });
    Some(Figures {
        seconds,
        requests,
        errors,
        requests_per_second: if seconds > 0.0 { requests / seconds } else { 0.0 },
        error_rate_percent: (requests > 0.0).then(|| errors * 100.0 / requests),
        latency,
    })
}

/// `sum by (le) (increase(bucket[window]))`: each series' buckets' increases, summed by
/// upper bound across series.
fn latency_increase(readings: &[&Reading]) -> Option<Vec<(f64, f64)>> {
    readings.last()?.histogram.as_ref()?;
    let mut keys: Vec<&String> = readings.iter().flat_map(|r| r.latency.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for key in keys {
        let mut bounds: Vec<f64> =
            readings.iter().filter_map(|r| r.latency.get(key)).flat_map(|s| s.buckets.iter().map(|b| b.0)).collect();
        bounds.sort_unstable_by(f64::total_cmp);
        bounds.dedup();
        for le in bounds {
            let grew = increase(
                readings
                    .iter()
                    .map(|r| r.latency.get(key).and_then(|s| s.buckets.iter().find(|b| b.0 == le)).map(|b| b.1)),
            );
            sums.push((le, grew));
        }
    }
    sums.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(sums.len());
    for (le, grew) in sums {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += grew,
            _ => merged.push((le, grew)),
        }
    }
    Some(merged)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::app_metrics::reading::{CounterSeries, HistogramSeries};

    const INF: f64 = f64::INFINITY;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn counter_increase_is_reset_safe() {
        assert_eq!(increase([Some(10.0), Some(15.0), Some(30.0)]), 20.0);
        // Restarted between the 2nd and 3rd reading: 15→4 counts 4 (from zero), then +6.
        assert_eq!(increase([Some(10.0), Some(15.0), Some(4.0), Some(10.0)]), 5.0 + 4.0 + 6.0);
        assert_eq!(increase([Some(7.0), Some(7.0), Some(7.0)]), 0.0, "no increase");
        // A series that first shows up within the window counts from zero.
        assert_eq!(increase([None, Some(3.0), Some(5.0)]), 5.0);
        // Absent in the newest reading: what it grew before still counts.
        assert_eq!(increase([Some(1.0), Some(4.0), None]), 3.0);
        assert_eq!(increase([Some(1.0)]), 0.0, "one reading has no increase");
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        // 100 observations: 10 ≤ 0.1, 50 ≤ 0.25, 90 ≤ 0.5, 100 ≤ 1.
        let b = [(0.1, 10.0), (0.25, 50.0), (0.5, 90.0), (1.0, 100.0), (INF, 100.0)];
        // rank 50 → bucket (0.1, 0.25], 40 in it, 40 of them below rank: 0.1 + 0.15·40/40.
        assert!(close(histogram_quantile(0.5, &b).unwrap(), 0.25));
        // rank 95 → bucket (0.5, 1], 10 in it, rank − 90 = 5: 0.5 + 0.5·5/10 = 0.75.
        assert!(close(histogram_quantile(0.95, &b).unwrap(), 0.75));
        // rank 99 → 0.5 + 0.5·9/10 = 0.95.
        assert!(close(histogram_quantile(0.99, &b).unwrap(), 0.95));
        // rank 5 → first bucket, from 0: 0.1·5/10 = 0.05.
        assert!(close(histogram_quantile(0.05, &b).unwrap(), 0.05));
    }

    #[test]
    fn quantile_edges() {
        // Ranks in +Inf answer the highest finite bound.
        let tail = [(0.1, 1.0), (0.5, 2.0), (INF, 10.0)];
        assert_eq!(histogram_quantile(0.99, &tail), Some(0.5));
        // Empty buckets in between are skipped: rank 2.5 of 4 lands in (0.2, 0.4].
        let gaps = [(0.1, 0.0), (0.2, 0.0), (0.4, 4.0), (INF, 4.0)];
        assert!(close(histogram_quantile(0.625, &gaps).unwrap(), 0.2 + 0.2 * 2.5 / 4.0));
        assert_eq!(histogram_quantile(0.5, &[(0.1, 0.0), (INF, 0.0)]), None, "no observations");
        assert_eq!(histogram_quantile(0.5, &[(0.1, 1.0), (0.2, 2.0)]), None, "no +Inf bucket");
        assert_eq!(histogram_quantile(0.5, &[(INF, 3.0)]), None, "fewer than two buckets");
        // Sums slightly out of order are made monotonic, not refused.
        // Rank 5 lands in (3, 4]; the dip to 3.9 counts as 4 below it: 3 + 1·(5 − 4)/(6 − 4).
        let dip = [(1.0, 2.0), (2.0, 4.0), (3.0, 3.9), (4.0, 6.0), (INF, 6.0)];
        assert!(close(histogram_quantile(5.0 / 6.0, &dip).unwrap(), 3.5));
    }

    fn reading(at: f64, ok: f64, errors: f64, buckets: &[(f64, f64)]) -> Reading {
        let mut requests = BTreeMap::new();
        requests.insert("code=\"200\"".to_owned(), CounterSeries { error: false, value: ok });
        if errors > 0.0 {
            requests.insert("code=\"500\"".to_owned(), CounterSeries { error: true, value: errors });
        }
        let mut latency = BTreeMap::new();
        latency.insert(String::new(), HistogramSeries { error: false, buckets: buckets.to_vec() });
        Reading { at, histogram: Some("h".into()), latency, requests }
    }

    #[test]
    fn window_figures() {
        let mut w = Window::new(60.0);
        w.push(reading(0.0, 100.0, 0.0, &[(0.1, 90.0), (1.0, 100.0), (INF, 100.0)]));
        assert_eq!(w.figures(), None, "one reading is no window yet");
        w.push(reading(30.0, 280.0, 10.0, &[(0.1, 180.0), (1.0, 270.0), (INF, 290.0)]));
        let f = w.figures().unwrap();
        // 180 ok + 10 errors in 30 s.
        assert_eq!((f.requests, f.errors, f.seconds), (190.0, 10.0, 30.0));
        assert!(close(f.requests_per_second, 190.0 / 30.0));
        assert!(close(f.error_rate_percent.unwrap(), 10.0 * 100.0 / 190.0));
        // Bucket increases 90, 170, 190: p50 rank 95 → (0.1, 1]: 0.1 + 0.9·5/80.
        let q = f.latency.unwrap();
        assert!(close(q.p50_millis, (0.1 + 0.9 * 5.0 / 80.0) * 1000.0));
        // p99 rank 188.1 → +Inf bucket → the highest finite bound, 1 s.
        assert!(close(q.p99_millis, 1000.0));
    }

    #[test]
    fn no_traffic_is_no_requests_not_zero_errors() {
        let mut w = Window::new(60.0);
        let b = [(0.1, 5.0), (INF, 5.0)];
        w.push(reading(0.0, 5.0, 0.0, &b));
        w.push(reading(10.0, 5.0, 0.0, &b));
        let f = w.figures().unwrap();
        assert_eq!((f.requests, f.requests_per_second, f.error_rate_percent, f.latency), (0.0, 0.0, None, None));
    }

    #[test]
    fn window_slides_and_survives_a_restart() {
        let mut w = Window::new(20.0);
        for (at, ok) in [(0.0, 0.0), (10.0, 10.0), (20.0, 20.0), (30.0, 30.0)] {
            w.push(reading(at, ok, 0.0, &[(1.0, ok), (INF, ok)]));
        }
        assert_eq!(w.len(), 3, "the reading 20 s before the newest is the oldest kept");
        assert_eq!(w.figures().unwrap().requests, 20.0);
        // The app restarts: its counters start from zero.
        w.push(reading(40.0, 3.0, 0.0, &[(1.0, 3.0), (INF, 3.0)]));
        let f = w.figures().unwrap();
        assert_eq!(f.requests, 10.0 + 3.0);
        assert!(close(f.latency.unwrap().p50_millis, 1000.0 * 6.5 / 13.0));
        // Another histogram family starts over.
        let mut other = reading(50.0, 1.0, 0.0, &[(INF, 1.0)]);
        other.histogram = Some("other".into());
        w.push(other);
        assert_eq!(w.len(), 1);
    }
}
