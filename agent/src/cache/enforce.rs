//! Strategy enforcement: the server's eviction policy (set and read back, drift reported),
//! `maxKeys` trimming by idle time or access frequency, and the TTL cap; run as jobs
//! (id, progress, cancel) that stream over the keys with bounded memory.

use std::{collections::HashMap, sync::Arc, time::Instant};

use super::{
    CacheLimits, Throttle,
    conn::{CacheError, Node, Pool, Redis},
    glob,
};
use crate::api::{CaptureState, EnforceRequest, EnforceResponse, EnforcementJob, ErrorCode, EvictionPolicyReport};

/// Checks a request.
pub fn validate(req: &EnforceRequest) -> Result<(), String> {
    crate::names::capture_id(&req.id).map_err(|e| e.to_string())?;
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

/// Reports what an enforcement did so far (its job's progress).
pub type Progress<'a> = &'a (dyn Fn(&EnforceResponse) + Send + Sync);

/// Enforces a strategy.
pub async fn enforce(
    req: &EnforceRequest,
    redis: &mut Redis,
    limits: &CacheLimits,
    progress: Progress<'_>,
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
    progress(&response);
    if req.strategy.max_keys.is_some() || req.strategy.ttl_seconds.is_some() {
        sweep(req, redis, &nodes, limits, &mut response, progress).await?;
    }
    Ok(response)
}

/// An order-keeping bucket of a rank, coarse enough that a histogram of any keyspace stays
/// small: exact below 128, then the 7 highest bits (under 1 % apart; a few thousand
/// buckets cover every `i64`).
pub fn bucket(rank: i64) -> i64 {
    let magnitude = rank.unsigned_abs();
    if magnitude < 128 {
        return rank;
    }
    let shift = 64 - magnitude.leading_zeros() - 7;
    let coarse = i64::try_from((magnitude >> shift) << shift).unwrap_or(i64::MAX);
    // Negative ranks round away from zero so that the order is kept on both sides.
    if rank < 0 {
        let up = if coarse.unsigned_abs() == magnitude { coarse } else { coarse.saturating_add(1 << shift) };
        -up
    } else {
        coarse
    }
}

/// Where the trim cuts: keys in buckets below `bucket` go, and of those in `bucket` itself
/// `quota` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The bucket the cut falls in.
    pub bucket: i64,
    /// Keys of that bucket to evict.
    pub quota: u64,
}

/// The cut that evicts `excess` keys, lowest buckets first, from a histogram of buckets.
pub fn cut(histogram: &std::collections::BTreeMap<i64, u64>, excess: u64) -> Option<Cut> {
    let mut below = 0u64;
    for (&b, &n) in histogram {
        if below + n >= excess {
            return Some(Cut { bucket: b, quota: excess - below });
        }
        below += n;
    }
    None
}

/// Each key's rank (lower is evicted first): access frequency for LFU, minus the idle time
/// otherwise (or when `OBJECT FREQ` is refused: the server's policy is not LFU).
async fn ranks(
    redis: &mut Redis,
    node: Option<&Node>,
    keys: &[Vec<u8>],
    lfu: &mut bool,
    response: &mut EnforceResponse,
) -> Result<Vec<i64>, CacheError> {
    let ask = |what: &str| {
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("OBJECT").arg(what).arg(k.as_slice());
        }
        pipe
    };
    let values = if *lfu {
        match redis.pipeline(node, &ask("FREQ")).await {
            Ok(v) => v,
            Err(e) => {
                *lfu = false;
                response.warnings.push(format!("OBJECT FREQ unavailable ({e}); trimmed by idle time instead"));
                redis.pipeline(node, &ask("IDLETIME")).await?
            }
        }
    } else {
        redis.pipeline(node, &ask("IDLETIME")).await?
    };
    let lfu = *lfu;
    // A key gone since the SCAN ranks first: evicting it costs nothing.
    Ok(values
        .into_iter()
        .map(|v| redis::from_redis_value::<i64>(v).map_or(i64::MIN, |v| if lfu { v } else { -v }))
        .collect())
}

/// Streaming passes over the keys under the prefix, holding one `SCAN` batch and a
/// histogram of ranks at a time: the first caps TTLs and counts keys by rank, the second
/// evicts the lowest-ranked beyond `maxKeys`, so memory stays flat however many keys there
/// are. Ranks move a little between passes (idle times are whole seconds, keys are used
/// meanwhile): when the eviction falls short, the count and the eviction run again on what
/// is left, at most `TRIM_ROUNDS` times.
async fn sweep(
    req: &EnforceRequest,
    redis: &mut Redis,
    nodes: &[Option<Node>],
    limits: &CacheLimits,
    response: &mut EnforceResponse,
    progress: Progress<'_>,
) -> Result<(), CacheError> {
    let mut pass = Pass {
        req,
        nodes,
        limits,
        throttle: Throttle::new(limits.max_ops_per_second),
        matcher: glob::all_match(&req.key_prefix),
        lfu: req.strategy.strategy_type == "LFU",
        started: Instant::now(),
    };
    for round in 0..TRIM_ROUNDS {
        let (total, histogram) = pass.count(redis, response, progress, round == 0).await?;
        let Some(max) = req.strategy.max_keys.filter(|max| total > *max) else { return Ok(()) };
        let Some(cut) = cut(&histogram, total - max) else { return Ok(()) };
        drop(histogram);
        if pass.evict(redis, response, progress, cut, total - max).await? == 0 {
            return Ok(());
        }
    }
    Ok(())
}

/// Count-and-evict rounds of a trim at most.
const TRIM_ROUNDS: usize = 3;

/// What the passes of one sweep share.
struct Pass<'a> {
    req: &'a EnforceRequest,
    nodes: &'a [Option<Node>],
    limits: &'a CacheLimits,
    throttle: Throttle,
    matcher: String,
    lfu: bool,
    started: Instant,
}

impl Pass<'_> {
    /// Keys under the prefix and their histogram by rank bucket (TTLs capped on the
    /// first round).
    async fn count(
        &mut self,
        redis: &mut Redis,
        response: &mut EnforceResponse,
        progress: Progress<'_>,
        first: bool,
    ) -> Result<(u64, std::collections::BTreeMap<i64, u64>), CacheError> {
        let (req, limits) = (self.req, self.limits);
        let mut histogram = std::collections::BTreeMap::<i64, u64>::new();
        let mut total = 0u64;
        for node in self.nodes {
            let mut cursor = 0;
            loop {
                let (next, keys) = redis.scan(node.as_ref(), cursor, Some(&self.matcher), limits.scan_count).await?;
                let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| glob::owned(&req.key_prefix, k)).collect();
                if first {
                    response.keys_scanned += keys.len() as u64;
                    if let Some(ttl) = req.strategy.ttl_seconds
                        && !keys.is_empty()
                    {
                        response.keys_given_ttl += cap_ttls(redis, node.as_ref(), &keys, ttl).await?;
                    }
                }
                if req.strategy.max_keys.is_some() && !keys.is_empty() {
                    for rank in ranks(redis, node.as_ref(), &keys, &mut self.lfu, response).await? {
                        *histogram.entry(bucket(as_of(rank, self.lfu, self.started))).or_default() += 1;
                        total += 1;
                    }
                }
                progress(response);
                self.throttle.record(keys.len().max(1) as u64).await;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok((total, histogram))
    }

    /// Evicts up to `excess` keys at or below the cut; how many went.
    async fn evict(
        &mut self,
        redis: &mut Redis,
        response: &mut EnforceResponse,
        progress: Progress<'_>,
        cut: Cut,
        excess: u64,
    ) -> Result<u64, CacheError> {
        let (req, limits) = (self.req, self.limits);
        let mut quota = cut.quota;
        let mut trimmed = 0u64;
        for node in self.nodes {
            let mut cursor = 0;
            loop {
                let (next, keys) = redis.scan(node.as_ref(), cursor, Some(&self.matcher), limits.scan_count).await?;
                let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| glob::owned(&req.key_prefix, k)).collect();
                if !keys.is_empty() {
                    let ranks = ranks(redis, node.as_ref(), &keys, &mut self.lfu, response).await?;
                    let mut victims = Vec::new();
                    for (key, rank) in keys.into_iter().zip(ranks) {
                        if trimmed + victims.len() as u64 >= excess {
                            break;
                        }
                        // Idle times are whole seconds on the server's clock, which ticks
                        // apart from ours: a key counted at the cut may read one second more
                        // recent now. A second of slack keeps it a candidate (the total stays
                        // capped at `excess`).
                        let slack = if self.lfu || rank == i64::MIN { 0 } else { 1 };
                        let b = bucket(as_of(rank, self.lfu, self.started).saturating_sub(slack));
                        if b < cut.bucket {
                            victims.push(key);
                        } else if b == cut.bucket && quota > 0 {
                            quota -= 1;
                            victims.push(key);
                        }
                    }
                    for batch in victims.chunks(limits.unlink_batch) {
                        let gone = redis.unlink(node.as_ref(), batch).await?;
                        trimmed += gone;
                        response.keys_trimmed += gone;
                        self.throttle.record(batch.len() as u64).await;
                    }
                    progress(response);
                }
                cursor = next;
                if cursor == 0 || trimmed >= excess {
                    break;
                }
            }
            if trimmed >= excess {
                break;
            }
        }
        Ok(trimmed)
    }
}

/// An idle-time rank as of the sweep's start (minus the idle time then): a key examined
/// later in a long pass has idled longer by as much, and ranking it on that would mix up
/// which keys were used last. Frequencies and gone keys stay as they are.
fn as_of(rank: i64, lfu: bool, started: Instant) -> i64 {
    if lfu || rank == i64::MIN {
        rank
    } else {
        rank.saturating_add(i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX))
    }
}

/// Gives the keys without a TTL, or with one longer than `ttl`, that TTL; how many.
async fn cap_ttls(redis: &mut Redis, node: Option<&Node>, keys: &[Vec<u8>], ttl: u64) -> Result<u64, CacheError> {
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("TTL").arg(k.as_slice());
    }
    let ttls = redis.pipeline(node, &pipe).await?;
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
        redis.pipeline(node, &expire).await?;
    }
    Ok(count)
}

/// The table of enforcement jobs: accepted idempotently by id, run on a task of their own
/// (so no HTTP call waits for a sweep), polled for progress, cancellable. A job lives in this
/// process: the same id sent again to this agent answers for the job; another agent runs it
/// from the start.
#[derive(Clone)]
pub struct Jobs {
    table: super::jobs::Table<EnforcementJob>,
    limits: Arc<CacheLimits>,
}

fn running(id: &str) -> EnforcementJob {
    EnforcementJob {
        id: id.to_owned(),
        state: CaptureState::Running,
        report: EnforceResponse::default(),
        duration_millis: 0,
        error: None,
        code: None,
    }
}

impl Jobs {
    /// An empty table.
    pub fn new(limits: Arc<CacheLimits>) -> Self {
        Self { table: super::jobs::Table::default(), limits }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, super::jobs::Entry<EnforcementJob>>> {
        self.table.lock()
    }

    /// Accepts a job (or answers with the one of the same id) and starts it; `done` runs
    /// when it succeeds.
    pub fn submit(
        &self,
        req: EnforceRequest,
        pool: Pool,
        done: impl FnOnce(&EnforceRequest) + Send + 'static,
    ) -> Result<EnforcementJob, (ErrorCode, String)> {
        validate(&req).map_err(|e| (ErrorCode::InvalidRequest, e))?;
        let status = running(&req.id);
        let cancel = match self.table.admit(&req.id, status.clone(), &self.limits, "enforcements")? {
            super::jobs::Admission::Existing(existing) => return Ok(existing),
            super::jobs::Admission::New(cancel) => cancel,
        };
        let jobs = self.clone();
        tokio::spawn(async move { jobs.run(req, pool, cancel, done).await });
        Ok(status)
    }

    /// Stops a running job; a finished one is left as it is.
    pub fn cancel(&self, id: &str) -> Option<EnforcementJob> {
        self.table.cancel(id)
    }

    /// A job's status.
    pub fn status(&self, id: &str) -> Option<EnforcementJob> {
        self.table.status(id)
    }

    async fn run(
        &self,
        req: EnforceRequest,
        pool: Pool,
        cancel: Arc<tokio::sync::Notify>,
        done: impl FnOnce(&EnforceRequest),
    ) {
        let started = Instant::now();
        let progress = |report: &EnforceResponse| {
            if let Some(e) = self.lock().get_mut(&req.id) {
                e.status.report = report.clone();
                e.status.duration_millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            }
        };
        let work = async {
            let mut redis = pool.get(&req.redis).await?;
            enforce(&req, &mut redis, &self.limits, &progress).await
        };
        let outcome = tokio::select! {
            outcome = work => outcome,
            () = cancel.notified() => Err(CacheError::Command("cancelled by the operator".into())),
        };
        if outcome.as_ref().is_err_and(CacheError::drops_connection) {
            pool.forget(&req.redis);
        }
        if outcome.is_ok() {
            done(&req);
        }
        let mut table = self.lock();
        if let Some(e) = table.get_mut(&req.id) {
            e.finished = Some(Instant::now());
            e.status.duration_millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            match outcome {
                Ok(report) => {
                    e.status.report = report;
                    e.status.state = CaptureState::Succeeded;
                }
                Err(err) => {
                    e.status.state = CaptureState::Failed;
                    e.status.code = Some(err.code());
                    e.status.error = Some(err.to_string());
                }
            }
        }
    }
}

impl super::jobs::JobStatus for EnforcementJob {
    fn state(&self) -> CaptureState {
        self.state
    }
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
    fn buckets_keep_the_order_and_stay_few() {
        let ranks: Vec<i64> = [-5_000_000, -100_000, -1000, -129, -128, -127, -1, 0, 1, 127, 128, 129, 1000, 1 << 40]
            .into_iter()
            .collect();
        for pair in ranks.windows(2) {
            assert!(bucket(pair[0]) <= bucket(pair[1]), "{pair:?}");
        }
        assert_eq!(bucket(-100), -100, "exact below 128");
        let distinct: std::collections::BTreeSet<i64> = (0..10_000_000i64).step_by(7).map(|v| bucket(-v)).collect();
        assert!(distinct.len() < 2000, "{} buckets for ten million idle seconds", distinct.len());
    }

    #[test]
    fn the_cut_takes_the_lowest_buckets_first() {
        let histogram: std::collections::BTreeMap<i64, u64> = [(-300, 5), (-20, 10), (0, 100)].into_iter().collect();
        assert_eq!(cut(&histogram, 5), Some(Cut { bucket: -300, quota: 5 }));
        assert_eq!(cut(&histogram, 8), Some(Cut { bucket: -20, quota: 3 }));
        assert_eq!(cut(&histogram, 115), Some(Cut { bucket: 0, quota: 100 }));
        assert_eq!(cut(&histogram, 116), None);
    }

    #[test]
    fn policies_by_strategy() {
        assert_eq!(desired_policy("LRU"), Some("allkeys-lru"));
        assert_eq!(desired_policy("LFU"), Some("allkeys-lfu"));
        assert_eq!(desired_policy("TTL"), None);
    }
}
