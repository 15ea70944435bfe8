//! Invalidation jobs: validated, accepted idempotently by id, run once across agents (a
//! marker key in Redis), executed with `SCAN` + pipelined `UNLINK` under a throttle, and
//! announced on `<keyPrefix>invalidations`.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{
    CacheLimits, Throttle,
    conn::{CacheError, Node, Pool, Redis},
    glob,
};
use crate::{
    api::{CaptureState, ErrorCode, InvalidationRequest, InvalidationStatus, RuleSpec},
    names,
};

/// How long a running execution's marker lives without a heartbeat.
const LEASE: Duration = Duration::from_secs(30);
/// How long a finished execution's marker stops re-runs.
const DONE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Aborts a spawned task when dropped, so a cancelled job leaves no heartbeat behind.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The table of invalidation jobs.
#[derive(Clone)]
pub struct Jobs {
    table: super::jobs::Table<InvalidationStatus>,
    limits: Arc<CacheLimits>,
}

/// Which kind of rule, and its values, as published.
fn describe_rule(rule: &RuleSpec) -> (&'static str, Vec<String>) {
    if let Some(p) = &rule.pattern {
        ("pattern", vec![p.clone()])
    } else if let Some(p) = &rule.prefix {
        ("prefix", vec![p.clone()])
    } else if let Some(t) = &rule.tags {
        ("tags", t.clone())
    } else {
        ("keys", rule.keys.clone().unwrap_or_default())
    }
}

/// Checks a request before anything touches Redis.
pub fn validate(req: &InvalidationRequest, limits: &CacheLimits) -> Result<(), String> {
    names::capture_id(&req.id).map_err(|e| e.to_string())?;
    names::dns_label("policy.namespace", &req.policy.namespace).map_err(|e| e.to_string())?;
    names::dns_subdomain("policy.name", &req.policy.name).map_err(|e| e.to_string())?;
    glob::check_prefix(&req.key_prefix).map_err(|e| e.0)?;
    super::conn::check_target(&req.redis)?;
    let r = &req.rule;
    let set =
        [r.pattern.is_some(), r.prefix.is_some(), r.tags.is_some(), r.keys.is_some()].iter().filter(|x| **x).count();
    if set != 1 {
        return Err(format!("rule {:?} must set exactly one of pattern, prefix, tags or keys (it sets {set})", r.name));
    }
    if let Some(p) = &r.pattern {
        glob::pattern_match(&req.key_prefix, p).map_err(|e| e.0)?;
    }
    if let Some(p) = &r.prefix {
        glob::prefix_match(&req.key_prefix, p).map_err(|e| e.0)?;
    }
    if let Some(tags) = &r.tags {
        if tags.is_empty() || tags.len() > limits.max_tags_per_rule {
            return Err(format!("tags must list 1 to {} tags", limits.max_tags_per_rule));
        }
        if tags.iter().any(|t| t.is_empty() || t.len() > glob::MAX_PATTERN_LEN) {
            return Err(format!("each tag must be 1 to {} bytes", glob::MAX_PATTERN_LEN));
        }
    }
    if let Some(keys) = &r.keys {
        if keys.is_empty() || keys.len() > limits.max_keys_per_rule {
            return Err(format!("keys must list 1 to {} keys", limits.max_keys_per_rule));
        }
        if keys.iter().any(|k| k.is_empty() || k.len() > 512) {
            return Err("each key must be 1 to 512 bytes".into());
        }
    }
    Ok(())
}

impl Jobs {
    /// An empty table.
    pub fn new(limits: Arc<CacheLimits>) -> Self {
        Self { table: super::jobs::Table::default(), limits }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, super::jobs::Entry<InvalidationStatus>>> {
        self.table.lock()
    }

    /// Accepts a job (or returns the one with the same id) and starts it.
    pub fn submit(
        &self,
        req: InvalidationRequest,
        pool: Pool,
        pod: String,
    ) -> Result<InvalidationStatus, (ErrorCode, String)> {
        validate(&req, &self.limits).map_err(|e| (ErrorCode::InvalidRequest, e))?;
        let status = running(&req.id);
        let cancel = match self.table.admit(&req.id, status.clone(), &self.limits, "invalidations")? {
            super::jobs::Admission::Existing(existing) => return Ok(existing),
            super::jobs::Admission::New(cancel) => cancel,
        };
        let jobs = self.clone();
        tokio::spawn(async move { jobs.run(req, pool, pod, cancel).await });
        Ok(status)
    }

    /// Stops a running job (its lease marker expires on its own, so another agent can
    /// redo the rest); the status of a finished one is left as it is.
    pub fn cancel(&self, id: &str) -> Option<InvalidationStatus> {
        self.table.cancel(id)
    }

    /// A job's status.
    pub fn status(&self, id: &str) -> Option<InvalidationStatus> {
        self.table.status(id)
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut InvalidationStatus)) {
        if let Some(e) = self.lock().get_mut(id) {
            f(&mut e.status);
        }
    }

    async fn run(&self, req: InvalidationRequest, pool: Pool, pod: String, cancel: Arc<tokio::sync::Notify>) {
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = self.execute(&req, &pool, &pod, started) => outcome,
            () = cancel.notified() => Err(CacheError::Command("cancelled by the operator".into())),
        };
        if outcome.as_ref().is_err_and(CacheError::drops_connection) {
            pool.forget(&req.redis);
        }
        let mut table = self.lock();
        if let Some(e) = table.get_mut(&req.id) {
            e.finished = Some(Instant::now());
            e.status.duration_millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            match outcome {
                Ok(()) => e.status.state = CaptureState::Succeeded,
                Err(err) => {
                    e.status.state = CaptureState::Failed;
                    e.status.error = Some(err.to_string());
                }
            }
        }
    }

    async fn execute(
        &self,
        req: &InvalidationRequest,
        pool: &Pool,
        pod: &str,
        started: Instant,
    ) -> Result<(), CacheError> {
        let mut redis = pool.get(&req.redis).await?;
        let marker = glob::done_marker(&req.key_prefix, &req.id);
        // Claim the execution, or learn that it happened, or wait out another agent's run.
        let wait_until = Instant::now() + LEASE * 4;
        loop {
            let claimed: Option<String> = redis
                .query(
                    None,
                    redis::cmd("SET")
                        .arg(&marker)
                        .arg(format!("running:{pod}"))
                        .arg("NX")
                        .arg("EX")
                        .arg(LEASE.as_secs()),
                )
                .await?;
            if claimed.is_some() {
                break;
            }
            let current: Option<String> = redis.query(None, redis::cmd("GET").arg(&marker)).await?;
            if let Some(done) = current.as_deref().and_then(|v| v.strip_prefix("done:")) {
                let previous: serde_json::Value = serde_json::from_str(done).unwrap_or_default();
                self.update(&req.id, |s| {
                    s.already_done = true;
                    s.keys_scanned = previous["keysScanned"].as_u64().unwrap_or(0);
                    s.keys_deleted = previous["keysDeleted"].as_u64().unwrap_or(0);
                    s.error =
                        Some(format!("already executed ({})", previous["by"].as_str().unwrap_or("another agent")));
                });
                return Ok(());
            }
            if Instant::now() > wait_until {
                return Err(CacheError::Command("another agent holds this invalidation and does not finish it".into()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let heartbeat = {
            let (mut r, marker, value) = (redis.clone(), marker.clone(), format!("running:{pod}"));
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LEASE / 3).await;
                    let _: Result<Option<String>, _> = r
                        .query(
                            None,
                            redis::cmd("SET").arg(&marker).arg(&value).arg("XX").arg("EX").arg(LEASE.as_secs()),
                        )
                        .await;
                }
            }))
        };
        // Pattern deletes unlink on another of the target's connections (when its poolSize
        // allows one): the SCAN reply then leaves Redis without waiting behind an UNLINK.
        let result = match pool.get(&req.redis).await {
            Ok(unlinker) => self.delete(req, &mut redis, unlinker).await,
            Err(e) => Err(e),
        };
        drop(heartbeat);
        match result {
            Ok(()) => {
                let status = self.status(&req.id).unwrap_or_else(|| running(&req.id));
                let record = json!({"keysScanned": status.keys_scanned, "keysDeleted": status.keys_deleted, "by": pod, "millis": started.elapsed().as_millis() as u64});
                let _: Option<String> = redis
                    .query(
                        None,
                        redis::cmd("SET").arg(&marker).arg(format!("done:{record}")).arg("EX").arg(DONE_TTL.as_secs()),
                    )
                    .await?;
                let (kind, values) = describe_rule(&req.rule);
                let message = json!({
                    "policy": format!("{}/{}", req.policy.namespace, req.policy.name),
                    "rule": req.rule.name,
                    "kind": kind,
                    "values": values,
                    "keysDeleted": status.keys_deleted,
                    "id": req.id,
                });
                let _: i64 = redis
                    .query(
                        None,
                        redis::cmd("PUBLISH").arg(format!("{}invalidations", req.key_prefix)).arg(message.to_string()),
                    )
                    .await?;
                Ok(())
            }
            Err(e) => {
                // Free the id so a retry (here or on another agent) runs the rest.
                let _: Result<i64, _> = redis.query(None, redis::cmd("DEL").arg(&marker)).await;
                Err(e)
            }
        }
    }

    /// The deletion itself, counting as it goes.
    async fn delete(&self, req: &InvalidationRequest, redis: &mut Redis, unlinker: Redis) -> Result<(), CacheError> {
        let mut throttle = Throttle::new(self.limits.max_ops_per_second);
        let rule = &req.rule;
        let matcher = match (&rule.pattern, &rule.prefix) {
            (Some(p), _) => Some(glob::pattern_match(&req.key_prefix, p).map_err(|e| CacheError::Invalid(e.0))?),
            (_, Some(p)) => Some(glob::prefix_match(&req.key_prefix, p).map_err(|e| CacheError::Invalid(e.0))?),
            _ => None,
        };
        if let Some(matcher) = matcher {
            for node in redis.scan_nodes().await? {
                self.delete_matching(req, (redis, &unlinker), node, &matcher, &mut throttle).await?;
            }
            return Ok(());
        }
        if let Some(keys) = &rule.keys {
            let full: Vec<Vec<u8>> = keys
                .iter()
                .map(|k| format!("{}{k}", req.key_prefix).into_bytes())
                .filter(|k| glob::owned(&req.key_prefix, k))
                .collect();
            for batch in full.chunks(self.limits.unlink_batch) {
                self.unlink_counted(req, redis, None, batch, &mut throttle).await?;
            }
            return Ok(());
        }
        for tag in rule.tags.iter().flatten() {
            let set = glob::tag_set(&req.key_prefix, tag);
            let mut cursor = 0u64;
            loop {
                let (next, members): (u64, Vec<Vec<u8>>) = redis
                    .query(None, redis::cmd("SSCAN").arg(&set).arg(cursor).arg("COUNT").arg(self.limits.scan_count))
                    .await?;
                // A tag set can only name keys under the policy's prefix to be deleted.
                let owned: Vec<Vec<u8>> = members.into_iter().filter(|k| glob::owned(&req.key_prefix, k)).collect();
                for batch in owned.chunks(self.limits.unlink_batch) {
                    self.unlink_counted(req, redis, None, batch, &mut throttle).await?;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            // The set is a key the rule deletes too, and counts like one.
            let removed: u64 = redis.query(None, redis::cmd("UNLINK").arg(&set)).await?;
            self.update(&req.id, |s| s.keys_deleted += removed);
        }
        Ok(())
    }

    /// Deletes the keys of one node that match: a chain of `SCAN`s, each sent as soon as the
    /// previous page arrives (before that page is filtered), and each page's `UNLINK` sent
    /// on the other connection once filtered, with [`UNLINKS_IN_FLIGHT`] at most, so Redis
    /// has an `UNLINK` to run while the agent turns a `SCAN` reply into the next `SCAN`.
    async fn delete_matching(
        &self,
        req: &InvalidationRequest,
        (redis, unlinker): (&mut Redis, &Redis),
        node: Option<Node>,
        matcher: &str,
        throttle: &mut Throttle,
    ) -> Result<(), CacheError> {
        type Page = tokio::task::JoinHandle<Result<(u64, Vec<Vec<u8>>), CacheError>>;
        let (scan_count, unlink_batch, depth) = (self.limits.scan_count, self.limits.unlink_batch, UNLINKS_IN_FLIGHT);
        let scan = |cursor: u64| -> Page {
            let (mut r, node, matcher) = (redis.clone(), node.clone(), matcher.to_owned());
            tokio::spawn(async move { r.scan(node.as_ref(), cursor, Some(&matcher), scan_count).await })
        };
        let mut unlinks = std::collections::VecDeque::new();
        let mut next_page = Some(scan(0));
        while let Some(page) = next_page.take() {
            let (cursor, keys) =
                page.await.map_err(|e| CacheError::Command(format!("the scan task failed: {e}")))??;
            if cursor != 0 {
                next_page = Some(scan(cursor));
            }
            let owned: Vec<Vec<u8>> = keys.into_iter().filter(|k| glob::owned(&req.key_prefix, k)).collect();
            for batch in owned.chunks(unlink_batch) {
                while unlinks.len() >= depth {
                    if let Some(oldest) = unlinks.pop_front() {
                        self.settle(req, oldest, throttle).await?;
                    }
                }
                let (mut r, node, batch) = (unlinker.clone(), node.clone(), batch.to_vec());
                unlinks.push_back(tokio::spawn(async move {
                    r.unlink(node.as_ref(), &batch).await.map(|d| (batch.len() as u64, d))
                }));
            }
        }
        while let Some(oldest) = unlinks.pop_front() {
            self.settle(req, oldest, throttle).await?;
        }
        Ok(())
    }

    /// Waits for an UNLINK in flight and counts it.
    async fn settle(
        &self,
        req: &InvalidationRequest,
        unlink: tokio::task::JoinHandle<Result<(u64, u64), CacheError>>,
        throttle: &mut Throttle,
    ) -> Result<(), CacheError> {
        let (scanned, deleted) =
            unlink.await.map_err(|e| CacheError::Command(format!("the delete task failed: {e}")))??;
        self.update(&req.id, |s| {
            s.keys_scanned += scanned;
            s.keys_deleted += deleted;
        });
        throttle.record(scanned).await;
        Ok(())
    }

    async fn unlink_counted(
        &self,
        req: &InvalidationRequest,
        redis: &mut Redis,
        node: Option<&Node>,
        keys: &[Vec<u8>],
        throttle: &mut Throttle,
    ) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let deleted = redis.unlink(node, keys).await?;
        self.update(&req.id, |s| {
            s.keys_scanned += keys.len() as u64;
            s.keys_deleted += deleted;
        });
        throttle.record(keys.len() as u64).await;
        Ok(())
    }
}

/// `UNLINK`s of one pattern invalidation in flight at once: two keep one queued behind the
/// one Redis runs; more only lengthen what a `PING` waits behind.
const UNLINKS_IN_FLIGHT: usize = 2;

/// A job just accepted.
fn running(id: &str) -> InvalidationStatus {
    InvalidationStatus {
        id: id.into(),
        state: CaptureState::Running,
        keys_scanned: 0,
        keys_deleted: 0,
        duration_millis: 0,
        error: None,
        already_done: false,
    }
}

impl super::jobs::JobStatus for InvalidationStatus {
    fn state(&self) -> CaptureState {
        self.state
    }
}
