//! The Redis half of the agent: invalidations (pattern, prefix, tags, keys) as idempotent
//! jobs, strategy enforcement, and cache statistics — for one server or a Redis Cluster.
//! Every key touched is under the policy's key prefix.

pub mod conn;
pub mod enforce;
pub mod glob;
pub mod invalidate;
pub mod jobs;
pub mod stats;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::api::AppliedPolicy;

/// Tunables of Redis work.
#[derive(Debug, Clone)]
pub struct CacheLimits {
    /// Ceiling on keys deleted or examined per second per job (keeps the server responsive).
    pub max_ops_per_second: u64,
    /// Keys per `SCAN` step (`COUNT`).
    pub scan_count: usize,
    /// Keys per `UNLINK`.
    pub unlink_batch: usize,
    /// Most keys a `keys` rule may list.
    pub max_keys_per_rule: usize,
    /// Most tags a `tags` rule may list.
    pub max_tags_per_rule: usize,
    /// Keys a statistics call examines at most (its `SCAN` budget); the count of keys under
    /// a prefix continues from the previous call's cursor.
    pub stats_scan_budget: u64,
    /// Invalidation (and, apart, enforcement) jobs kept for polling.
    pub max_jobs: usize,
    /// How long a finished job stays pollable at least.
    pub keep_finished: Duration,
    /// Bounds of the Redis connection pool.
    pub pool: conn::PoolLimits,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_ops_per_second: 1_000_000,
            scan_count: 1000,
            unlink_batch: 1000,
            max_keys_per_rule: 1000,
            max_tags_per_rule: 32,
            stats_scan_budget: 5_000,
            max_jobs: 1000,
            keep_finished: Duration::from_secs(3600),
            pool: conn::PoolLimits::default(),
        }
    }
}

/// What the Redis handlers share.
#[derive(Clone)]
pub struct CacheService {
    /// Connections.
    pub pool: conn::Pool,
    /// Limits.
    pub limits: Arc<CacheLimits>,
    /// Invalidation jobs.
    pub jobs: invalidate::Jobs,
    /// Enforcement jobs.
    pub enforcements: enforce::Jobs,
    /// The previous INFO counters of each server, for rates.
    pub history: Arc<Mutex<HashMap<String, stats::Counters>>>,
    /// Where the count of keys under each prefix of each server stands.
    pub count_passes: Arc<Mutex<HashMap<String, stats::CountPass>>>,
    /// The policies served to the app, by `<namespace>/<name>` of their CachePolicy.
    pub applied: Arc<Mutex<std::collections::BTreeMap<String, AppliedPolicy>>>,
    /// This pod, named in markers and messages.
    pub pod: String,
}

impl CacheService {
    /// A service for pod `pod`.
    pub fn new(limits: CacheLimits, pod: String) -> Self {
        let limits = Arc::new(limits);
        Self {
            pool: conn::Pool::new(limits.pool),
            jobs: invalidate::Jobs::new(limits.clone()),
            enforcements: enforce::Jobs::new(limits.clone()),
            limits,
            history: Arc::default(),
            count_passes: Arc::default(),
            applied: Arc::default(),
            pod,
        }
    }
}

impl CacheService {
    /// Keeps a count's pass for the next call; forgets them all beyond a bound (a pass is
    /// only a cursor and two counters, and starting over costs one pass).
    pub fn keep_count_pass(&self, key: String, pass: stats::CountPass) {
        let mut passes = self.count_passes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if passes.len() >= MAX_COUNT_PASSES && !passes.contains_key(&key) {
            passes.clear();
        }
        passes.insert(key, pass);
    }
}

/// Counts kept at once (one per policy and server in practice).
const MAX_COUNT_PASSES: usize = 1024;

/// Paces work to at most `per_second` operations a second.
pub struct Throttle {
    per_second: u64,
    started: Instant,
    done: u64,
}

impl Throttle {
    /// A throttle starting now.
    pub fn new(per_second: u64) -> Self {
        Self { per_second: per_second.max(1), started: Instant::now(), done: 0 }
    }

    /// Records `ops` operations, sleeping as long as they are ahead of the ceiling.
    pub async fn record(&mut self, ops: u64) {
        self.done += ops;
        let due = Duration::from_secs_f64(self.done as f64 / self.per_second as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}
