//! A client-side limit on Kubernetes API requests per second (a token bucket, like
//! client-go's `--kube-api-qps` / `--kube-api-burst`), as a tower layer under kube's client.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

/// A token bucket: `rate` tokens a second, at most `burst` saved up. A request takes one
/// token; without one it reserves the next and waits for it, so waiting requests go in
/// the order they came.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate, burst, tokens: burst, last: now }
    }

    /// Takes a token at `now`; how long to wait before using it.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - 1.0;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }
}

/// The layer; `None` rate means no limit.
#[derive(Debug, Clone)]
pub struct ThrottleLayer {
    bucket: Option<Arc<Mutex<Bucket>>>,
}

impl ThrottleLayer {
    /// At most `qps` requests a second with bursts of `burst`; `qps <= 0` is unlimited.
    pub fn new(qps: f64, burst: u32) -> Self {
        Self { bucket: (qps > 0.0).then(|| Arc::new(Mutex::new(Bucket::new(qps, burst, Instant::now())))) }
    }
}

impl<S> tower::Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle { inner, bucket: self.bucket.clone() }
    }
}

/// The service: waits for a token, then sends.
#[derive(Debug, Clone)]
pub struct Throttle<S> {
    inner: S,
    bucket: Option<Arc<Mutex<Bucket>>>,
}

impl<S, R> tower::Service<R> for Throttle<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let wait = self
            .bucket
            .as_ref()
            .map(|b| b.lock().unwrap_or_else(std::sync::PoisonError::into_inner).reserve(Instant::now()))
            .unwrap_or_default();
        // The client's futures do nothing until polled: the request leaves after the wait.
        let sent = self.inner.call(request);
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            sent.await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_paces_at_the_rate() {
        let start = Instant::now();
        let mut b = Bucket::new(10.0, 3, start);
        let waits: Vec<Duration> = (0..5).map(|_| b.reserve(start)).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3], "the burst goes at once");
        assert_eq!(waits[3].as_millis(), 100);
        assert_eq!(waits[4].as_millis(), 200, "waiting requests queue one interval apart");
        // A second later the debt is paid and tokens are back, but never more than the burst.
        let later = start + Duration::from_secs(10);
        let waits: Vec<Duration> = (0..4).map(|_| b.reserve(later)).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3]);
        assert_eq!(waits[3].as_millis(), 100);
    }
}
