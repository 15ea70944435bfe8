//! Cache statistics: reachability, `PING` latency, memory, and hit ratio and evictions per
//! second from the deltas between two `INFO` samples of the same server (the counters run
//! since start-up), plus the number of keys under the prefix.

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
    let previous = service.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, now);
    (response.hit_ratio_percent, response.evictions_per_second) = rates(previous, now);
    let (count, estimated) = count_keys(&req.key_prefix, redis, &nodes, &service.limits).await?;
    response.keys_under_prefix = Some(i64::try_from(count).unwrap_or(i64::MAX));
    response.keys_estimated = estimated;
    Ok(())
}

/// Keys under the prefix: exact up to the bound; beyond it, the share of the prefix in a
/// plain `SCAN` sample times `DBSIZE`.
async fn count_keys(
    prefix: &str,
    redis: &mut Redis,
    nodes: &[Option<Node>],
    limits: &CacheLimits,
) -> Result<(u64, bool), CacheError> {
    let matcher = glob::all_match(prefix);
    let mut exact = 0u64;
    for node in nodes {
        let mut cursor = 0;
        loop {
            let (next, keys) = redis.scan(node.as_ref(), cursor, Some(&matcher), limits.scan_count).await?;
            exact += keys.iter().filter(|k| glob::owned(prefix, k)).count() as u64;
            if exact > limits.exact_count_bound {
                return estimate(prefix, redis, nodes, limits).await.map(|n| (n, true));
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok((exact, false))
}

async fn estimate(
    prefix: &str,
    redis: &mut Redis,
    nodes: &[Option<Node>],
    limits: &CacheLimits,
) -> Result<u64, CacheError> {
    let (mut total, mut sampled, mut matching) = (0u64, 0u64, 0u64);
    for node in nodes {
        total += redis.query::<u64>(node.as_ref(), &redis::cmd("DBSIZE")).await?;
        let mut cursor = 0;
        for _ in 0..20 {
            let (next, keys) = redis.scan(node.as_ref(), cursor, None, limits.scan_count).await?;
            sampled += keys.len() as u64;
            matching += keys.iter().filter(|k| glob::owned(prefix, k)).count() as u64;
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok(if sampled == 0 { 0 } else { (total as f64 * matching as f64 / sampled as f64).round() as u64 })
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
}
