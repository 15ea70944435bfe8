//! Runtime sampling on demand: the app's `heap?debug=1` and `goroutine?debug=1` are read
//! only while the operator wants them — it asks for `GET /v1/runtime` while some
//! ProfileCapture selects this pod, and each ask keeps sampling on for a lease. With no
//! capture selecting the pod the agent costs its app nothing.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

// Tokio's clock, so the lease follows the runtime's time (and paused time in tests).
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use crate::api::RuntimeSample;

/// The latest sample and whether anyone still wants the next.
#[derive(Debug)]
struct State {
    sample: RuntimeSample,
    at: Option<Instant>,
    wanted_until: Option<Instant>,
}

/// Shared between the sampler task and the API.
#[derive(Debug, Clone)]
pub struct Sampling {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    taken: watch::Sender<u64>,
    lease: Duration,
}

/// How long a first ask waits for the sample it started.
const FIRST_SAMPLE_WAIT: Duration = Duration::from_secs(15);

impl Sampling {
    /// Sampling that stays on for `lease` after each ask.
    pub fn new(lease: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(State { sample: RuntimeSample::default(), at: None, wanted_until: None })),
            wake: Arc::new(Notify::new()),
            taken: watch::channel(0).0,
            lease,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The latest sample, keeping sampling on for the lease. When sampling was off, waits
    /// for the sample this ask starts, so the first answer has figures too.
    pub async fn ask(&self) -> RuntimeSample {
        let mut taken = self.taken.subscribe();
        let was_idle = {
            let mut state = self.lock();
            let now = Instant::now();
            let idle = state.wanted_until.is_none_or(|until| until <= now);
            state.wanted_until = Some(now + self.lease);
            idle
        };
        if was_idle {
            taken.mark_unchanged();
            self.wake.notify_one();
            let _ = tokio::time::timeout(FIRST_SAMPLE_WAIT, taken.changed()).await;
        }
        self.lock().sample.clone()
    }

    /// How old the latest sample is.
    pub fn age(&self) -> Option<Duration> {
        self.lock().at.map(|at| at.elapsed())
    }

    /// Whether sampling is on now.
    pub fn wanted(&self) -> bool {
        self.lock().wanted_until.is_some_and(|until| until > Instant::now())
    }

    fn store(&self, sample: RuntimeSample) {
        {
            let mut state = self.lock();
            state.sample = sample;
            state.at = Some(Instant::now());
        }
        self.taken.send_modify(|n| *n += 1);
    }

    /// Takes a sample with `take` every `interval` while sampling is wanted; sleeps (no
    /// timer, no request to the app) while it is not.
    pub async fn run<F, Fut>(&self, interval: Duration, mut take: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = RuntimeSample>,
    {
        loop {
            if !self.wanted() {
                self.wake.notified().await;
                continue;
            }
            let sample = take().await;
            self.store(sample);
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                // A new ask after the lease ran out: sample at once.
                () = self.wake.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn samples_only_while_asked_for() {
        let sampling = Sampling::new(Duration::from_secs(30));
        let taken = Arc::new(AtomicU32::new(0));
        let counter = taken.clone();
        let sampler = sampling.clone();
        tokio::spawn(async move {
            sampler
                .run(Duration::from_secs(10), || {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    async move { RuntimeSample { goroutines: Some(u64::from(n)), ..Default::default() } }
                })
                .await;
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(taken.load(Ordering::SeqCst), 0, "nobody asked: the app was never read");
        let first = sampling.ask().await;
        assert_eq!(first.goroutines, Some(1), "the first ask waits for its sample");
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(taken.load(Ordering::SeqCst), 3, "every interval while the lease runs");
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(taken.load(Ordering::SeqCst), 3, "stops when the lease runs out");
        assert!(!sampling.wanted());
        assert_eq!(sampling.ask().await.goroutines, Some(4), "asked again: sampling resumes at once");
    }
}
