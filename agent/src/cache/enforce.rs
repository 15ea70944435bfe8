//! Strategy enforcement: the server's eviction policy (set and read back, drift reported),
//! `maxKeys` trimming by idle time or access frequency, and the TTL cap.

use super::{
    CacheLimits, Throttle,
    conn::{CacheError, Node, Redis},
    glob,
};
use crate::api::{EnforceRequest, EnforceResponse, EvictionPolicyReport};

/// Checks a request.
pub fn validate(req: &EnforceRequest) -> Result<(), String> {
    glob::check_prefix(&req.key_prefix).map_err(|e| e.0)?;
    super::conn::check_target(&req.redis)?;
    let s = &req.strategy;
    if !matches!(s.strategy_type.as_str(), "LRU" | "LFU" | "TTL" | "WriteBehind") {
        return Err(format!("strategy.type {:?} is not one of LRU, LFU, TTL, WriteBehind", s.strategy_type));
    }
    if s.strategy_type == "TTL" && s.ttl_seconds.is_none() {
        return Err("the TTL strategy needs ttlSeconds".into());
    }
    if s.ttl_seconds == Some(0) || s.max_keys == Some(0) {
        return Err("ttlSeconds and maxKeys must be at least 1".into());
    }
    if s.manage_server_eviction_policy && !matches!(s.strategy_type.as_str(), "LRU" | "LFU") {
        return Err("manageServerEvictionPolicy applies only to LRU and LFU".into());
    }
    Ok(())
}

/// The `maxmemory-policy` a strategy asks for when it manages the server's.
pub fn desired_policy(strategy_type: &str) -> Option<&'static str> {
    match strategy_type {
        "LRU" => Some("allkeys-lru"),
        "LFU" => Some("allkeys-lfu"),
        _ => None,
    }
}

/// A value of `INFO` output.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':'))).map(str::trim)
}

async fn eviction_policy(redis: &mut Redis, nodes: &[Option<Node>]) -> Result<Option<String>, CacheError> {
    // INFO works where CONFIG may be renamed away.
    let info: String = redis.query(nodes[0].as_ref(), redis::cmd("INFO").arg("memory")).await?;
    Ok(info_field(&info, "maxmemory_policy").map(str::to_owned))
}

/// Enforces a strategy.
pub async fn enforce(
    req: &EnforceRequest,
    redis: &mut Redis,
    limits: &CacheLimits,
) -> Result<EnforceResponse, CacheError> {
    let mut response = EnforceResponse::default();
    let nodes = redis.scan_nodes().await?;
    let found = eviction_policy(redis, &nodes).await?;
    let mut report = EvictionPolicyReport { found: found.clone(), ..Default::default() };
    if req.strategy.manage_server_eviction_policy
        && let Some(desired) = desired_policy(&req.strategy.strategy_type)
    {
        report.desired = Some(desired.to_owned());
        report.drift = found.as_deref() != Some(desired);
        let mut error = None;
        for node in &nodes {
            let set: Result<String, CacheError> =
                redis.query(node.as_ref(), redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg(desired)).await;
            let set = match (set, req.strategy.max_memory_bytes) {
                (Ok(_), Some(bytes)) => {
                    redis
                        .query::<String>(node.as_ref(), redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(bytes))
                        .await
                }
                (other, _) => other,
            };
            if let Err(e) = set {
                error = Some(format!("CONFIG refused by the server: {e}"));
                break;
            }
        }
        report.applied = error.is_none();
        report.error = error;
    }
    report.actual = eviction_policy(redis, &nodes).await?;
    response.eviction_policy = report;
    if req.strategy.max_keys.is_some() || req.strategy.ttl_seconds.is_some() {
        sweep(req, redis, &nodes, limits, &mut response).await?;
    }
    Ok(response)
}

/// One pass over the keys under the prefix: TTLs capped, then the excess keys evicted.
async fn sweep(
    req: &EnforceRequest,
    redis: &mut Redis,
    nodes: &[Option<Node>],
    limits: &CacheLimits,
    response: &mut EnforceResponse,
) -> Result<(), CacheError> {
    let mut throttle = Throttle::new(limits.max_ops_per_second);
    let matcher = glob::all_match(&req.key_prefix);
    let lfu = req.strategy.strategy_type == "LFU";
    // (node, key, rank): lower rank is evicted first.
    let mut ranked: Vec<(usize, Vec<u8>, i64)> = Vec::new();
    let mut freq_unavailable = false;
    for (n, node) in nodes.iter().enumerate() {
        let mut cursor = 0;
        loop {
            let (next, keys) = redis.scan(node.as_ref(), cursor, Some(&matcher), limits.scan_count).await?;
            let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| glob::owned(&req.key_prefix, k)).collect();
            response.keys_scanned += keys.len() as u64;
            if let Some(ttl) = req.strategy.ttl_seconds
                && !keys.is_empty()
            {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("TTL").arg(k.as_slice());
                }
                let ttls = redis.pipeline(node.as_ref(), &pipe).await?;
                let mut expire = redis::pipe();
                let mut count = 0;
                for (k, t) in keys.iter().zip(ttls) {
                    let t: i64 = redis::from_redis_value(t).unwrap_or(-2);
                    if t == -1 || t > i64::try_from(ttl).unwrap_or(i64::MAX) {
                        expire.cmd("EXPIRE").arg(k.as_slice()).arg(ttl);
                        count += 1;
                    }
                }
                if count > 0 {
                    redis.pipeline(node.as_ref(), &expire).await?;
                    response.keys_given_ttl += count;
                }
            }
            if req.strategy.max_keys.is_some() && !keys.is_empty() {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("OBJECT")
                        .arg(if lfu && !freq_unavailable { "FREQ" } else { "IDLETIME" })
                        .arg(k.as_slice());
                }
                let ranks = match redis.pipeline(node.as_ref(), &pipe).await {
                    Ok(r) => r,
                    Err(e) if lfu && !freq_unavailable => {
                        // OBJECT FREQ needs an LFU maxmemory-policy on the server.
                        freq_unavailable = true;
                        response.warnings.push(format!("OBJECT FREQ unavailable ({e}); trimmed by idle time instead"));
                        let mut idle = redis::pipe();
                        for k in &keys {
                            idle.cmd("OBJECT").arg("IDLETIME").arg(k.as_slice());
                        }
                        redis.pipeline(node.as_ref(), &idle).await?
                    }
                    Err(e) => return Err(e),
                };
                for (k, r) in keys.into_iter().zip(ranks) {
                    let v: i64 = redis::from_redis_value(r).unwrap_or(0);
                    // Frequency: the least used go first; idle time: the longest idle first.
                    ranked.push((n, k, if lfu && !freq_unavailable { v } else { -v }));
                }
            }
            throttle.record(response.keys_scanned.min(limits.scan_count as u64)).await;
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    if let Some(max) = req.strategy.max_keys {
        let total = ranked.len() as u64;
        if total > max {
            ranked.sort_by_key(|(_, _, rank)| *rank);
            let excess = usize::try_from(total - max).unwrap_or(usize::MAX);
            for (n, node) in nodes.iter().enumerate() {
                let victims: Vec<Vec<u8>> =
                    ranked[..excess].iter().filter(|(i, _, _)| *i == n).map(|(_, k, _)| k.clone()).collect();
                for batch in victims.chunks(limits.unlink_batch) {
                    response.keys_trimmed += redis.unlink(node.as_ref(), batch).await?;
                    throttle.record(batch.len() as u64).await;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields() {
        let info = "# Memory\r\nused_memory:1024\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(info_field(info, "maxmemory_policy"), Some("noeviction"));
        assert_eq!(info_field(info, "used_memory"), Some("1024"));
        assert_eq!(info_field(info, "missing"), None);
    }

    #[test]
    fn policies_by_strategy() {
        assert_eq!(desired_policy("LRU"), Some("allkeys-lru"));
        assert_eq!(desired_policy("LFU"), Some("allkeys-lfu"));
        assert_eq!(desired_policy("TTL"), None);
    }
}
