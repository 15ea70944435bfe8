//! Cache statistics: reachability, `PING` latency, memory, and the server-wide hit ratio and evictions per
//! second from the deltas between two `INFO` samples of the same server (the counters run
//! since start-up), plus the number of keys under the prefix, counted by a `SCAN` pass that
//! advances a bounded stretch per call (so a call costs Redis the same on a keyspace of a
//! thousand keys or of millions).

use std::time::Instant;

use super::{
    CacheLimits, CacheService,
    conn::{CacheError, Node, Redis},
    enforce::info_field,
    glob,
};
use crate::api::{StatsRequest, StatsResponse};

/// The counters of one `INFO` sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counters {
    /// `keyspace_hits`.
    pub hits: u64,
    /// `keyspace_misses`.
    pub misses: u64,
    /// `evicted_keys`.
    pub evicted: u64,
    /// When.
    pub at: Instant,
}

/// Hit ratio (%) and evictions per second between two samples; `None` where undefined.
pub fn rates(previous: Option<Counters>, now: Counters) -> (Option<f64>, Option<f64>) {
    let Some(p) = previous else { return (None, None) };
    let (hits, misses) = (now.hits.saturating_sub(p.hits), now.misses.saturating_sub(p.misses));
    let lookups = hits + misses;
    let ratio = (lookups > 0).then(|| hits as f64 * 100.0 / lookups as f64);
    let seconds = now.at.duration_since(p.at).as_secs_f64();
    let evictions = (seconds > 0.0).then(|| now.evicted.saturating_sub(p.evicted) as f64 / seconds);
    (ratio, evictions)
}

fn number(info: &str, field: &str) -> u64 {
    info_field(info, field).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Samples a server (or cluster). A failure is the error whose code the answer carries
/// (`RedisAuthFailed`, `RedisUnreachable`, `RedisCommandFailed`, `TooManyRequests`), so the
/// operator decides on the code, never on the message. A command that fails on a pooled
/// connection is tried once more on a fresh one: a server that went away since shows as
/// unreachable (its dial fails), not as a failed command.
pub async fn stats(req: &StatsRequest, service: &CacheService) -> Result<StatsResponse, CacheError> {
    let mut redis = service.pool.get(&req.redis).await?;
    let mut response = StatsResponse::default();
    let mut sampled = sample(req, &mut redis, service, &mut response).await;
    if let Err(CacheError::Command(_)) = sampled {
        service.pool.forget(&req.redis);
        let mut fresh = service.pool.get(&req.redis).await?;
        response = StatsResponse::default();
        sampled = sample(req, &mut fresh, service, &mut response).await;
    }
    match sampled {
        Ok(()) => {
            response.reachable = true;
            Ok(response)
        }
        Err(e) => {
            if e.drops_connection() {
                service.pool.forget(&req.redis);
            }
            Err(e)
        }
    }
}

async fn sample(
    req: &StatsRequest,
    redis: &mut Redis,
    service: &CacheService,
    response: &mut StatsResponse,
) -> Result<(), CacheError> {
    let started = Instant::now();
    let _: String = redis.query(None, &redis::cmd("PING")).await?;
    response.ping_latency_millis = Some(started.elapsed().as_secs_f64() * 1000.0);
    let nodes = redis.scan_nodes().await?;
    let (mut used, mut max, mut hits, mut misses, mut evicted) = (0, 0, 0, 0, 0);
    for node in &nodes {
        let info: String = redis.query(node.as_ref(), &redis::cmd("INFO")).await?;
        used += number(&info, "used_memory");
        max += number(&info, "maxmemory");
        hits += number(&info, "keyspace_hits");
        misses += number(&info, "keyspace_misses");
        evicted += number(&info, "evicted_keys");
        if response.eviction_policy.is_none() {
            response.eviction_policy = info_field(&info, "maxmemory_policy").map(str::to_owned);
        }
    }
    response.used_memory_bytes = Some(i64::try_from(used).unwrap_or(i64::MAX));
    response.max_memory_bytes = Some(i64::try_from(max).unwrap_or(i64::MAX));
    response.memory_percent = (max > 0).then(|| used as f64 * 100.0 / max as f64);
    let now = Counters { hits, misses, evicted, at: Instant::now() };
    let key = format!("{}/{}/{}", req.redis.address, req.redis.database, req.redis.cluster);
    let previous = service.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key.clone(), now);
    (response.server_hit_ratio_percent, response.evictions_per_second) = rates(previous, now);
    let pass_key = format!("{key}/{}", req.key_prefix);
    let mut pass = service
        .count_passes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&pass_key)
        .unwrap_or_default();
    let (count, estimated) = count_keys(&req.key_prefix, redis, &nodes, &service.limits, &mut pass).await?;
    service.keep_count_pass(pass_key, pass);
    response.keys_under_prefix = Some(i64::try_from(count).unwrap_or(i64::MAX));
    response.keys_estimated = estimated;
    Ok(())
}

/// Where a count of the keys under one prefix stands: a `SCAN` pass spread over as many
/// statistics calls as it takes, each call examining at most the budget of keys, so the cost
/// of a call to Redis stays bounded however large the keyspace is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CountPass {
    /// The cursor of each node (`0` before the node's first step).
    pub cursors: Vec<u64>,
    /// The node being scanned.
    pub node: usize,
    /// Keys under the prefix seen so far in this pass.
    pub matching: u64,
    /// Keys examined so far in this pass.
    pub examined: u64,
    /// The count of the last complete pass.
    pub last_complete: Option<u64>,
}

/// What one budgeted step of a count reports.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CountReport {
    /// A whole pass fitted in this call: the count is exact.
    Exact(u64),
    /// The count of the last pass that finished (it ran over several calls while keys came
    /// and went).
    LastPass(u64),
    /// No pass has finished yet: the share of the prefix in the keys examined so far.
    Share { matching: u64, examined: u64 },
}

impl CountPass {
    /// Starts over (a new pass, or the node list changed).
    fn restart(&mut self, nodes: usize) {
        self.cursors = vec![0; nodes];
        self.node = 0;
        self.matching = 0;
        self.examined = 0;
    }
}

/// Keys under the prefix: one budgeted stretch of the count's pass, continuing from where
/// the previous call stopped. A keyspace that fits the budget is counted exactly in every
/// call; a larger one reports the last complete pass, or, until the first pass ends, the
/// prefix's share of the keys examined times `DBSIZE`; both flagged as estimates.
async fn count_keys(
    prefix: &str,
    redis: &mut Redis,
    nodes: &[Option<Node>],
    limits: &CacheLimits,
    pass: &mut CountPass,
) -> Result<(u64, bool), CacheError> {
    let report = count_step(prefix, redis, nodes, limits, pass).await?;
    Ok(match report {
        CountReport::Exact(n) => (n, false),
        CountReport::LastPass(n) => (n, true),
        CountReport::Share { matching, examined } => {
            let mut total = 0u64;
            for node in nodes {
                total += redis.query::<u64>(node.as_ref(), &redis::cmd("DBSIZE")).await?;
            }
            (estimate(total, matching, examined), true)
        }
    })
}

/// Keys per `SCAN` step of a count (a fraction of a millisecond of the server's time each).
const STATS_SCAN_STEP: usize = 250;

/// `total` keys scaled by the share `matching / examined`.
pub fn estimate(total: u64, matching: u64, examined: u64) -> u64 {
    if examined == 0 { 0 } else { (total as f64 * matching as f64 / examined as f64).round() as u64 }
}

async fn count_step(
    prefix: &str,
    redis: &mut Redis,
    nodes: &[Option<Node>],
    limits: &CacheLimits,
    pass: &mut CountPass,
) -> Result<CountReport, CacheError> {
    if pass.cursors.len() != nodes.len() {
        pass.restart(nodes.len());
    }
    let fresh = pass.node == 0 && pass.cursors.iter().all(|c| *c == 0) && pass.examined == 0;
    let mut budget = limits.stats_scan_budget.max(1);
    while budget > 0 {
        // Short steps: the server answers others between them, so no client waits long.
        let count = STATS_SCAN_STEP.min(budget as usize).max(1);
        // No MATCH: the keys come back to be counted, so the share of the prefix is known.
        let (next, keys) = redis.scan(nodes[pass.node].as_ref(), pass.cursors[pass.node], None, count).await?;
        // A step with COUNT c examines about c keys even when it returns fewer.
        budget = budget.saturating_sub((keys.len() as u64).max(count as u64));
        pass.examined += keys.len() as u64;
        pass.matching += keys.iter().filter(|k| glob::owned(prefix, k)).count() as u64;
        pass.cursors[pass.node] = next;
        if next == 0 {
            pass.node += 1;
            if pass.node == nodes.len() {
                let count = pass.matching;
                pass.last_complete = Some(count);
                pass.restart(nodes.len());
                return Ok(if fresh { CountReport::Exact(count) } else { CountReport::LastPass(count) });
            }
        }
    }
    Ok(match pass.last_complete {
        Some(n) => CountReport::LastPass(n),
        None => CountReport::Share { matching: pass.matching, examined: pass.examined },
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rates_from_deltas() {
        let t0 = Instant::now();
        let before = Counters { hits: 1000, misses: 1000, evicted: 10, at: t0 };
        let after = Counters { hits: 1030, misses: 1010, evicted: 30, at: t0 + Duration::from_secs(10) };
        let (ratio, evictions) = rates(Some(before), after);
        assert_eq!(ratio, Some(75.0), "counters since start-up do not leak into the ratio");
        assert_eq!(evictions, Some(2.0));
        assert_eq!(rates(None, after), (None, None));
        let idle = Counters { at: t0 + Duration::from_secs(20), ..after };
        assert_eq!(rates(Some(after), idle).0, None, "no lookups, no ratio");
    }

    #[test]
    fn estimates_scale_the_share_seen() {
        assert_eq!(estimate(2_000_000, 5, 50_000), 200);
        assert_eq!(estimate(2_000_000, 0, 50_000), 0);
        assert_eq!(estimate(10, 3, 0), 0, "nothing examined, nothing claimed");
    }
}
