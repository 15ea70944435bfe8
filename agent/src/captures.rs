//! Capture jobs: accepted idempotently by id, run in the background one profile after the
//! other, written atomically under the profiles directory, summarised, kept for polling,
//! cancellable, and pruned by retention.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use biometrics_crds::{profile::ProfileType, run_id};
use cap_std::fs::Dir;
use tokio_util::sync::CancellationToken;

use crate::{
    api::{CaptureRequest, CaptureState, CaptureStatus, MetricsSource, ProfileOutcome, RetentionRequest},
    budget::{self, MemoryBudget},
    fetch::Fetcher,
    metrics::Metrics,
    names,
    profile::{self, ProfileError, memory::Allowance},
    requests::{self, ScrapeLimits},
    volume::{self, Volume, VolumeError},
};

/// Limits of capture work.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes a profile response may have.
    pub max_profile_bytes: u64,
    /// Bytes a profile may inflate to.
    pub max_decompressed_bytes: u64,
    /// Bytes all profile analyses together may hold (their tables and call trees).
    pub analysis_memory_budget: u64,
    /// Analyses that may wait for that memory; more are refused.
    pub max_queued_analyses: usize,
    /// Captures kept in the table (running and finished).
    pub max_captures: usize,
    /// How long a finished capture stays pollable at least.
    pub keep_finished: Duration,
    /// The longest cpu/trace duration.
    pub max_duration_seconds: u64,
    /// Seconds of cpu/trace profiling accepted but not finished, at most: the app serves one
    /// such profile at a time, so more would only queue work for hours.
    pub max_queued_timed_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_profile_bytes: 256 << 20,
            max_decompressed_bytes: 256 << 20,
            analysis_memory_budget: 64 << 20,
            max_queued_analyses: 16,
            max_captures: 1000,
            keep_finished: Duration::from_secs(3600),
            max_duration_seconds: 300,
            max_queued_timed_seconds: 900,
        }
    }
}

/// What the engine needs to know about its pod and app.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The shared profiles volume.
    pub volume: Arc<Volume>,
    /// Hashes of the files written, so serving them needs no second read.
    pub hashes: crate::files::Hashes,
    /// This pod's name (a directory per pod in each run).
    pub pod: String,
    /// This pod's namespace: retention prunes its captures only.
    pub namespace: String,
    /// The app's loopback address.
    pub target_host: IpAddr,
    /// Limits.
    pub limits: Limits,
    /// How many functions a summary keeps.
    pub top_n: usize,
}

/// Why retention refused to prune.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// A name in the request is invalid (400).
    #[error(transparent)]
    Invalid(#[from] names::NameError),
    /// The volume holds something the agent will not touch, a link above all (409).
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// The request names another namespace than this pod's (403).
    #[error("this agent prunes the captures of namespace {own:?} only, not of {asked:?}")]
    OtherNamespace {
        /// This pod's namespace.
        own: String,
        /// The namespace asked for.
        asked: String,
    },
}

/// Why a capture request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Bad input (400).
    #[error("{0}")]
    Invalid(String),
    /// The table is full of running captures (429).
    #[error("too many captures in progress ({0}); retry later")]
    Full(usize),
    /// Too much cpu/trace profiling is queued already (429).
    #[error(
        "{queued} s of cpu/trace profiling are queued or running; this capture adds {adds} s, over the limit of {limit} s; retry later"
    )]
    Queued {
        /// Seconds queued or running.
        queued: u64,
        /// Seconds this capture would add.
        adds: u64,
        /// The limit.
        limit: u64,
    },
    /// The agent is shutting down: it finishes what it runs and takes nothing new (503).
    #[error("{DRAINING}")]
    ShuttingDown,
}

/// Why an agent that is shutting down refuses new work.
pub const DRAINING: &str = "the agent is shutting down (its pod is terminating): it finishes the captures in flight and starts no new capture or job";

struct Entry {
    request: CaptureRequest,
    status: CaptureStatus,
    cancel: CancellationToken,
    /// Set by an explicit cancel: the job removes what it wrote (a shutdown keeps it).
    discard: bool,
    finished: Option<Instant>,
    /// Its final status has been answered (a poll after it finished): a draining agent
    /// waits for that before it exits, so the result reaches the operator.
    delivered: bool,
}

/// What ending a capture early does with what it wrote.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Remove its files (`DELETE`).
    Discard,
    /// Keep the profiles it finished (`stop`).
    Keep,
}

/// The error of a capture stopped on request.
const STOPPED: &str = "stopped on request before it finished; the profiles it finished are kept";

/// Handles of the directories one capture writes in, opened once when it starts, so a
/// directory swapped for a link while it runs cannot redirect its files or its cleanup.
struct RunDirs {
    /// `<namespace>/<capture>/<run>/<pod>`, as shown in results.
    shown: String,
    /// `<namespace>/<capture>`.
    capture: Dir,
    /// `<namespace>/<capture>/<run>`.
    run: Dir,
    /// `<namespace>/<capture>/<run>/<pod>`.
    pod: Dir,
}

/// The capture table and the workers.
#[derive(Clone)]
pub struct Engine {
    config: Arc<EngineConfig>,
    table: Arc<Mutex<HashMap<String, Entry>>>,
    fetcher: Fetcher,
    /// Go serves one CPU profile (or trace) at a time: ours queue behind each other.
    timed_profile: Arc<tokio::sync::Mutex<()>>,
    /// The memory every analysis of a fetched profile draws from.
    analysis_memory: MemoryBudget,
    metrics: Metrics,
    tasks: tokio_util::task::TaskTracker,
    /// Set once shutdown begins: new captures are refused, running ones finish.
    draining: Arc<std::sync::atomic::AtomicBool>,
}

/// The ids of the captures still running.
fn unfinished(table: &HashMap<String, Entry>) -> Vec<String> {
    table.iter().filter(|(_, e)| e.finished.is_none()).map(|(id, _)| id.clone()).collect()
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().round(jiff::Unit::Millisecond).map(|t| t.to_string()).unwrap_or_default()
}

/// Checks a request before anything is done with it.
pub fn validate(req: &CaptureRequest, limits: &Limits) -> Result<(), String> {
    names::capture_id(&req.id).map_err(|e| e.to_string())?;
    names::dns_label("capture.namespace", &req.capture.namespace).map_err(|e| e.to_string())?;
    names::dns_subdomain("capture.name", &req.capture.name).map_err(|e| e.to_string())?;
    names::dns_label("run", &req.run).map_err(|e| e.to_string())?;
    names::base_path(&req.target.base_path).map_err(|e| e.to_string())?;
    if req.profiles.is_empty() {
        return Err("profiles must name at least one profile".into());
    }
    if req.profiles.len() > ProfileType::ALL.len() {
        return Err("profiles lists more profiles than there are types".into());
    }
    for (i, p) in req.profiles.iter().enumerate() {
        if req.profiles[..i].contains(p) {
            return Err(format!("profiles lists {p} twice"));
        }
    }
    if req.duration_seconds == 0 || req.duration_seconds > limits.max_duration_seconds {
        return Err(format!("durationSeconds must be between 1 and {}", limits.max_duration_seconds));
    }
    if req.target.port == 0 {
        return Err("target.port must be between 1 and 65535".into());
    }
    if let Some(metrics) = &req.metrics {
        requests::compile(metrics).map_err(|e| e.to_string())?;
    }
    Ok(())
}

impl Engine {
    /// An engine writing under `config.profiles_dir`.
    pub fn new(config: EngineConfig, metrics: Metrics) -> Self {
        let analysis_memory =
            MemoryBudget::new(config.limits.analysis_memory_budget, config.limits.max_queued_analyses);
        Self {
            config: Arc::new(config),
            table: Arc::default(),
            fetcher: Fetcher::default(),
            timed_profile: Arc::default(),
            analysis_memory,
            metrics,
            tasks: tokio_util::task::TaskTracker::new(),
            draining: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Accepts a capture, or returns the existing one with the same id (`false`).
    pub fn submit(&self, req: CaptureRequest) -> Result<(CaptureStatus, bool), SubmitError> {
        validate(&req, &self.config.limits).map_err(SubmitError::Invalid)?;
        let mut table = self.lock();
        if let Some(existing) = table.get(&req.id) {
            return Ok((existing.status.clone(), false));
        }
        // Checked under the table's lock, which `drain` takes too: no capture slips in
        // after the drain has counted what runs.
        if self.is_draining() {
            return Err(SubmitError::ShuttingDown);
        }
        self.evict(&mut table);
        if table.len() >= self.config.limits.max_captures {
            return Err(SubmitError::Full(table.len()));
        }
        let queued: u64 = table.values().filter(|e| e.finished.is_none()).map(|e| timed_seconds(&e.request)).sum();
        let (adds, limit) = (timed_seconds(&req), self.config.limits.max_queued_timed_seconds);
        if adds > 0 && queued + adds > limit {
            return Err(SubmitError::Queued { queued, adds, limit });
        }
        let status = CaptureStatus {
            id: req.id.clone(),
            state: CaptureState::Running,
            started_at: now_rfc3339(),
            finished_at: None,
            error: None,
            waiting: None,
            profiles: req
                .profiles
                .iter()
                .map(|p| ProfileOutcome { profile_type: Some(*p), ..Default::default() })
                .collect(),
        };
        let cancel = CancellationToken::new();
        table.insert(
            req.id.clone(),
            Entry {
                request: req.clone(),
                status: status.clone(),
                cancel: cancel.clone(),
                discard: false,
                finished: None,
                delivered: false,
            },
        );
        drop(table);
        let engine = self.clone();
        self.tasks.spawn(async move { engine.run(req, cancel).await });
        Ok((status, true))
    }

    /// Drops finished captures past their keep time, then the oldest finished ones while full.
    fn evict(&self, table: &mut HashMap<String, Entry>) {
        let keep = self.config.limits.keep_finished;
        table.retain(|_, e| e.finished.is_none_or(|f| f.elapsed() < keep));
        while table.len() >= self.config.limits.max_captures {
            let oldest = table.iter().filter_map(|(id, e)| e.finished.map(|f| (f, id.clone()))).min();
            match oldest {
                Some((_, id)) => {
                    table.remove(&id);
                }
                None => break,
            }
        }
    }

    /// The analysis memory budget, for its metrics.
    pub fn analysis_memory(&self) -> &MemoryBudget {
        &self.analysis_memory
    }

    /// A capture's status.
    pub fn status(&self, id: &str) -> Option<CaptureStatus> {
        let mut table = self.lock();
        let entry = table.get_mut(id)?;
        entry.delivered |= entry.finished.is_some();
        Some(entry.status.clone())
    }

    /// Cancels a running capture; the job removes what it wrote. A finished one is left as is.
    pub async fn cancel(&self, id: &str) -> Option<CaptureStatus> {
        self.end(id, Ending::Discard).await
    }

    /// Stops a running capture and keeps what it finished: the profiles written so far stay
    /// on the volume and in its status (a newer run replaces this one, and what this one
    /// captured is still worth reading); the profile in progress is dropped. A finished one
    /// is left as is.
    pub async fn stop(&self, id: &str) -> Option<CaptureStatus> {
        self.end(id, Ending::Keep).await
    }

    async fn end(&self, id: &str, ending: Ending) -> Option<CaptureStatus> {
        let token = {
            let mut table = self.lock();
            let entry = table.get_mut(id)?;
            if entry.finished.is_some() {
                return Some(entry.status.clone());
            }
            match ending {
                Ending::Discard => entry.discard = true,
                Ending::Keep => {
                    entry.status.error.get_or_insert_with(|| STOPPED.to_owned());
                }
            }
            entry.cancel.clone()
        };
        token.cancel();
        // The job notices, removes its files (when discarding) and marks itself ended.
        for _ in 0..200 {
            if self.lock().get(id).is_some_and(|e| e.finished.is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.status(id)
    }

    /// Whether shutdown has begun: new captures (and other new work) are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Shuts down gracefully: refuses new captures from now on, lets the running ones
    /// finish (their files written, summarised, their status final) and waits until each
    /// one's final status has been polled, all within `limit`; what still runs then is
    /// cancelled (marked failed with the reason, partial files removed). Returns the ids
    /// of the captures cancelled at the limit.
    pub async fn drain(&self, limit: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        let running: Vec<String> = {
            let table = self.lock();
            self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
            unfinished(&table)
        };
        if !running.is_empty() {
            tracing::info!(captures = ?running, ?limit, "shutting down: finishing the captures in flight");
        }
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait()).await.is_ok() {
            // Finished: the operator polls each capture every few seconds; its answer is
            // what it records, so the agent stays until then (or the limit).
            let unread = || {
                let table = self.lock();
                running.iter().any(|id| table.get(id).is_some_and(|e| !e.delivered))
            };
            while unread() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return Vec::new();
        }
        let cut = unfinished(&self.lock());
        let reason = format!(
            "the agent shut down: the capture was still running at the drain limit of {}s (--drain-timeout)",
            limit.as_secs_f64()
        );
        tracing::warn!(captures = ?cut, "{reason}; cancelling");
        self.shutdown(&reason).await;
        cut
    }

    /// Cancels everything running (shutdown) and waits for the jobs to clean up.
    pub async fn shutdown(&self, reason: &str) {
        let tokens: Vec<CancellationToken> = {
            let mut table = self.lock();
            self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
            table
                .values_mut()
                .filter(|e| e.finished.is_none())
                .map(|e| {
                    e.status.error = Some(reason.to_owned());
                    e.cancel.clone()
                })
                .collect()
        };
        for t in tokens {
            t.cancel();
        }
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
    }

    fn open_run_dirs(&self, req: &CaptureRequest) -> Result<RunDirs, VolumeError> {
        let r = &req.capture;
        let components = [r.namespace.as_str(), r.name.as_str(), req.run.as_str(), self.config.pod.as_str()];
        let mut handles = self.config.volume.create_dirs(&components)?.into_iter().skip(1);
        let (Some(capture), Some(run), Some(pod)) = (handles.next(), handles.next(), handles.next()) else {
            unreachable!("create_dirs returns one handle per component");
        };
        Ok(RunDirs { shown: components.join("/"), capture, run, pod })
    }

    async fn run(&self, req: CaptureRequest, cancel: CancellationToken) {
        let started = Instant::now();
        let dirs = match self.open_run_dirs(&req) {
            Ok(dirs) => dirs,
            Err(e) => return self.finish(&req.id, Some(format!("cannot create the run directory: {e}")), &cancel),
        };
        let mut any_ok = false;
        for (i, kind) in req.profiles.iter().enumerate() {
            if cancel.is_cancelled() {
                break;
            }
            let outcome = self.capture_one(&req, &dirs, *kind, &cancel).await;
            let ok = outcome.error.is_none();
            any_ok |= ok;
            self.metrics.captures.with_label_values(&[kind.as_str(), if ok { "succeeded" } else { "failed" }]).inc();
            if let Some(entry) = self.lock().get_mut(&req.id) {
                entry.status.profiles[i] = outcome;
            }
        }
        self.metrics.capture_duration.observe(started.elapsed().as_secs_f64());
        let discard = self.lock().get(&req.id).is_some_and(|e| e.discard);
        let mut error = None;
        let components: Vec<&str> = dirs.shown.split('/').collect();
        if discard {
            if let Err(e) = volume::remove_tree(&dirs.run, &self.config.pod, &dirs.shown) {
                error = Some(format!("cancelled; its files were not removed: {e}"));
            }
        } else if !cancel.is_cancelled() && !self.config.volume.still_at(&components, &dirs.pod) {
            error = Some(format!(
                "the run directory {} was moved or replaced while the capture ran; its files are not at that path",
                dirs.shown
            ));
        } else if !any_ok && !cancel.is_cancelled() {
            error = Some("no profile could be captured".into());
        }
        // Directories left empty (nothing captured, a shutdown) go; rmdir refuses the rest.
        let _ = dirs.run.remove_dir(&self.config.pod);
        let _ = dirs.capture.remove_dir(&req.run);
        self.finish(&req.id, error, &cancel);
    }

    /// Records the end of a capture: cancelled, failed with `error`, or succeeded when at
    /// least one profile was captured.
    fn finish(&self, id: &str, error: Option<String>, cancel: &CancellationToken) {
        let mut table = self.lock();
        let Some(entry) = table.get_mut(id) else { return };
        entry.finished = Some(Instant::now());
        entry.status.finished_at = Some(now_rfc3339());
        entry.status.waiting = None;
        let any_ok = entry.status.profiles.iter().any(|p| p.path.is_some());
        if cancel.is_cancelled() {
            entry.status.state = CaptureState::Failed;
            let reason = error.unwrap_or_else(|| "cancelled".to_owned());
            entry.status.error.get_or_insert(reason);
            for p in entry.status.profiles.iter_mut().filter(|p| p.path.is_none() && p.error.is_none()) {
                p.error = Some("not captured: the capture was cancelled".into());
            }
        } else if let Some(reason) = error {
            entry.status.state = CaptureState::Failed;
            for p in entry.status.profiles.iter_mut().filter(|p| p.error.is_none()) {
                p.error = Some(reason.clone());
                (p.path, p.flamegraph) = (None, None);
            }
            entry.status.error = Some(reason);
        } else if any_ok {
            entry.status.state = CaptureState::Succeeded;
        }
    }

    async fn read_requests(
        &self,
        spec: &MetricsSource,
        before_any: bool,
    ) -> Result<crate::app_metrics::reading::Reading, String> {
        requests::read_now(&self.fetcher, self.config.target_host, spec, ScrapeLimits::default(), before_any).await
    }

    async fn capture_one(
        &self,
        req: &CaptureRequest,
        dirs: &RunDirs,
        kind: ProfileType,
        cancel: &CancellationToken,
    ) -> ProfileOutcome {
        let mut outcome = ProfileOutcome { profile_type: Some(kind), ..Default::default() };
        let file_name = kind.file_name();
        let tmp = format!(".{file_name}.{}.tmp", uuid::Uuid::new_v4().simple());
        let shown = volume::join(&dirs.shown, &file_name);
        let url = format!(
            "http://{}{}/{}",
            std::net::SocketAddr::new(self.config.target_host, req.target.port),
            req.target.base_path,
            kind.endpoint(req.duration_seconds)
        );
        let timeout =
            if kind.is_timed() { Duration::from_secs(req.duration_seconds + 30) } else { Duration::from_secs(60) };
        let fetch_started = Instant::now();
        // The app's request counter, latency histogram and errors, read as the profile
        // starts and as it ends.
        let count_requests = req.metrics.as_ref().filter(|_| kind.is_timed());
        // The requests answered while the profile sampled: the app's counter read as the
        // attempt that succeeds starts and again once its duration has passed (not when
        // the response ends: a starved app takes a while to write the profile, and the
        // requests it answers meanwhile were not profiled).
        let mut counted: Option<Result<requests::ProfileRequests, String>> = None;
        let fetch = async {
            let _turn = if kind.is_timed() { Some(self.timed_profile.lock().await) } else { None };
            let started = Instant::now();
            loop {
                let file = volume::create_file(&dirs.pod, &tmp)
                    .map_err(|source| crate::fetch::FetchError::Write { path: shown.clone(), source })?;
                let before = match count_requests {
                    Some(spec) => Some(self.read_requests(spec, true).await),
                    None => None,
                };
                let attempt = self.fetcher.to_file(
                    &url,
                    tokio::fs::File::from_std(file),
                    &shown,
                    self.config.limits.max_profile_bytes,
                    timeout,
                );
                let (fetched, after) = match count_requests {
                    Some(spec) => {
                        let duration = tokio::time::sleep(Duration::from_secs(req.duration_seconds));
                        tokio::pin!(attempt, duration);
                        tokio::select! {
                            // The duration first: the profile's response comes right after
                            // it, often while the counter is still being read.
                            biased;
                            () = &mut duration => {
                                let (fetched, after) = tokio::join!(attempt, self.read_requests(spec, false));
                                (fetched, Some(after))
                            }
                            // Ended before its duration: refused or failed, nothing to count.
                            fetched = &mut attempt => (fetched, None),
                        }
                    }
                    None => (attempt.await, None),
                };
                // Go stops a CPU profile (or trace) a moment after its client went away, a
                // cancelled capture of ours included: the next one waits that moment out.
                if kind.is_timed() && is_profiler_busy(&fetched) && started.elapsed() < PROFILER_BUSY_WAIT {
                    let _ = dirs.pod.remove_file(&tmp);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                counted = match (before, after) {
                    (Some(Ok(before)), Some(Ok(after))) => Some(Ok(requests::profile_requests(&before, &after))),
                    (Some(Err(e)), _) | (_, Some(Err(e))) => Some(Err(e)),
                    _ => None,
                };
                break fetched;
            }
        };
        let fetched = tokio::select! {
            r = fetch => r,
            () = cancel.cancelled() => {
                let _ = dirs.pod.remove_file(&tmp);
                outcome.error = Some("cancelled".into());
                return outcome;
            }
        };
        self.metrics.fetch_duration.with_label_values(&[kind.as_str()]).observe(fetch_started.elapsed().as_secs_f64());
        match counted {
            Some(Ok(n)) => {
                outcome.requests = Some(n.requests);
                outcome.p99_latency_millis = n.p99_latency_millis;
                outcome.error_rate_percent = n.error_rate_percent;
            }
            Some(Err(e)) => outcome.requests_error = Some(e),
            None => {}
        }
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                let _ = dirs.pod.remove_file(&tmp);
                outcome.error = Some(e.to_string());
                return outcome;
            }
        };
        if kind.is_pprof() {
            let svg_name = format!("{}.svg", kind.as_str());
            let svg_tmp = format!(".{svg_name}.{}.tmp", uuid::Uuid::new_v4().simple());
            let title = format!("{} {} — {}/{}", kind, self.config.pod, req.capture.namespace, req.capture.name);
            let file = FetchedFile { tmp: &tmp, svg_tmp: &svg_tmp, bytes: fetched.bytes };
            match self.analyse_fetched(&req.id, dirs, kind, file, title, cancel).await {
                Ok(summary) => {
                    outcome.sample_type = Some(summary.sample_type);
                    outcome.total = Some(summary.total);
                    outcome.samples = Some(summary.samples);
                    outcome.top = summary
                        .functions
                        .into_iter()
                        .map(|t| crate::api::TopEntry {
                            function: t.function,
                            flat: t.flat,
                            flat_percent: t.flat_percent,
                            cum: t.cum,
                            cum_percent: t.cum_percent,
                        })
                        .collect();
                    if dirs.pod.rename(&svg_tmp, &dirs.pod, &svg_name).is_ok() {
                        outcome.flamegraph = Some(volume::join(&dirs.shown, &svg_name));
                    }
                }
                Err(reason) => {
                    let _ = dirs.pod.remove_file(&tmp);
                    let _ = dirs.pod.remove_file(&svg_tmp);
                    outcome.error = Some(reason);
                    return outcome;
                }
            }
        }
        if let Err(e) = dirs.pod.rename(&tmp, &dirs.pod, &file_name) {
            let _ = dirs.pod.remove_file(&tmp);
            outcome.error = Some(format!("cannot move the profile into place: {e}"));
            return outcome;
        }
        volume::sync(&dirs.pod);
        if let Ok(written) = volume::open_file(&dirs.pod, &file_name) {
            self.config.hashes.remember(&written, &fetched.sha256);
        }
        self.metrics.bytes_written.inc_by(fetched.bytes);
        outcome.path = Some(shown);
        outcome.bytes = Some(fetched.bytes);
        outcome.sha256 = Some(fetched.sha256);
        outcome
    }

    /// Shows (or clears) why a running capture is not progressing.
    fn set_waiting(&self, id: &str, waiting: Option<String>) {
        if let Some(entry) = self.lock().get_mut(id).filter(|e| e.finished.is_none()) {
            entry.status.waiting = waiting;
        }
    }

    /// Summarises a fetched profile and writes its flame graph, within a reservation of
    /// the analysis memory budget: waited for (the capture's status says so) or refused
    /// when the queue is full; an analysis that needs more than it reserved runs again
    /// with more, up to the whole budget. The error is the profile's reason.
    async fn analyse_fetched(
        &self,
        id: &str,
        dirs: &RunDirs,
        kind: ProfileType,
        file: FetchedFile<'_>,
        title: String,
        cancel: &CancellationToken,
    ) -> Result<profile::Summary, String> {
        let budget = &self.analysis_memory;
        let total = budget.total();
        let mut wanted = budget::first_reservation(file.bytes, total);
        loop {
            let on_wait = || {
                self.set_waiting(
                    id,
                    Some(format!(
                        "waiting for analysis memory: the {kind} profile needs {} of the {} budget (--analysis-memory-budget), which other analyses hold",
                        mib(wanted),
                        mib(total)
                    )),
                );
            };
            let reserved = tokio::select! {
                r = budget.reserve(wanted, on_wait) => r,
                () = cancel.cancelled() => return Err("cancelled".to_owned()),
            };
            self.set_waiting(id, None);
            let mut reservation = reserved.map_err(|e| e.to_string())?;
            let granted = reservation.bytes();
            let (read_dir, write_dir) = match (dirs.pod.try_clone(), dirs.pod.try_clone()) {
                (Ok(r), Ok(w)) => (r, w),
                (Err(e), _) | (_, Err(e)) => return Err(e.to_string()),
            };
            let (tmp, svg_tmp, title) = (file.tmp.to_owned(), file.svg_tmp.to_owned(), title.clone());
            let options = profile::Options {
                max_decompressed_bytes: self.config.limits.max_decompressed_bytes,
                top_n: self.config.top_n,
                flame: true,
                mergeable: false,
            };
            let analysed = tokio::task::spawn_blocking(move || {
                let profile = volume::open_file(&read_dir, &tmp).map_err(|e| Failure::Other(e.to_string()))?;
                let svg = volume::create_file(&write_dir, &svg_tmp).map_err(|e| Failure::Other(e.to_string()))?;
                // The reservation lives in the allowance: it is given back when the
                // analysis ends, whichever way.
                let mut memory = Allowance::new(granted, Some(Box::new(move |bytes| reservation.try_grow(bytes))));
                analyse(profile, svg, &options, &title, &mut memory)
            })
            .await
            .unwrap_or_else(|e| Err(Failure::Other(format!("summarising the profile failed: {e}"))));
            match analysed {
                Ok(summary) => return Ok(summary),
                Err(Failure::Other(reason)) => return Err(reason),
                Err(Failure::OverBudget { needed, granted }) => {
                    match budget::next_reservation(needed, granted, total) {
                        Some(more) => {
                            tracing::info!(capture = id, profile = %kind, needed, granted, retry_with = more, "analysis needs more memory; running it again");
                            let _ = dirs.pod.remove_file(file.svg_tmp);
                            wanted = more;
                        }
                        None => {
                            return Err(format!(
                                "summarising the profile needs more than the agent's analysis memory budget of {total} bytes (--analysis-memory-budget)"
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Prunes runs of this namespace's captures: of each capture in `prune`, every run of
    /// its own (by run-id suffix) but those it keeps; and with `existing`, every run of a
    /// capture no longer listed whose marker says it asked for `deleteOnRemoval`. A run's
    /// whole directory goes, every pod's files in it, departed pods' too; runs this agent
    /// is still capturing stay. Every run to remove is checked for links first: one
    /// anywhere refuses the whole request and nothing is removed. Returns the runs removed,
    /// as `<capture>/<run>`.
    pub fn retain(&self, req: &RetentionRequest) -> Result<Vec<String>, RetentionError> {
        let ns = req.namespace.as_str();
        names::dns_label("namespace", ns)?;
        if ns != self.config.namespace {
            return Err(RetentionError::OtherNamespace { own: self.config.namespace.clone(), asked: ns.to_owned() });
        }
        for c in &req.prune {
            names::dns_subdomain("prune.name", &c.name)?;
            names::run_suffix("prune.runSuffix", &c.run_suffix)?;
            for run in &c.keep {
                names::dns_label("prune.keep", run)?;
            }
        }
        for c in req.existing.iter().flatten() {
            names::dns_subdomain("existing.name", &c.name)?;
            names::run_suffix("existing.runSuffix", &c.run_suffix)?;
        }
        let Some(ns_dir) = self.config.volume.open_dir(&[ns])? else { return Ok(Vec::new()) };
        let running: HashSet<(String, String)> = self
            .lock()
            .values()
            .filter(|e| e.finished.is_none() && e.request.capture.namespace == ns)
            .map(|e| (e.request.capture.name.clone(), e.request.run.clone()))
            .collect();
        // What goes, decided before anything is touched: (capture, run), and the markers of
        // deleted captures.
        let mut doomed: Vec<(String, String)> = Vec::new();
        let mut stale_markers: Vec<(String, String)> = Vec::new();
        for c in &req.prune {
            let shown = volume::join(ns, &c.name);
            let Some(capture_dir) = volume::child_dir(&ns_dir, &c.name, &shown)? else { continue };
            for run in listing(&capture_dir, &shown)?.dirs {
                if run_id::belongs(&run, &c.run_suffix)
                    && !c.keep.contains(&run)
                    && !running.contains(&(c.name.clone(), run.clone()))
                {
                    doomed.push((c.name.clone(), run));
                }
            }
        }
        if let Some(existing) = &req.existing {
            for capture in listing(&ns_dir, ns)?.dirs {
                let shown = volume::join(ns, &capture);
                let Some(capture_dir) = volume::child_dir(&ns_dir, &capture, &shown)? else { continue };
                let entries = listing(&capture_dir, &shown)?;
                for suffix in entries.files.iter().filter_map(|f| f.strip_prefix(DELETE_ON_REMOVAL_MARKER)) {
                    if existing.iter().any(|e| e.name == capture && e.run_suffix == suffix) {
                        continue;
                    }
                    for run in entries.dirs.iter().filter(|r| run_id::belongs(r, suffix)) {
                        if !running.contains(&(capture.clone(), run.clone())) {
                            doomed.push((capture.clone(), run.clone()));
                        }
                    }
                    stale_markers.push((capture.clone(), suffix.to_owned()));
                }
            }
        }
        doomed.sort();
        doomed.dedup();
        for (capture, run) in &doomed {
            let shown = volume::join(&volume::join(ns, capture), run);
            if let Some(dir) = self.config.volume.open_dir(&[ns, capture, run])? {
                volume::refuse_links(&dir, &shown, 1)?;
            }
        }
        let mut removed = Vec::new();
        for (capture, run) in &doomed {
            let capture_shown = volume::join(ns, capture);
            let Some(capture_dir) = volume::child_dir(&ns_dir, capture, &capture_shown)? else { continue };
            if volume::remove_tree(&capture_dir, run, &volume::join(&capture_shown, run))? {
                removed.push(format!("{capture}/{run}"));
            }
        }
        for c in &req.prune {
            let shown = volume::join(ns, &c.name);
            if let Some(capture_dir) = volume::child_dir(&ns_dir, &c.name, &shown)? {
                mark_delete_on_removal(&capture_dir, &c.run_suffix, c.delete_on_removal, &shown)?;
            }
            // A capture that keeps nothing is being deleted: its directory goes once empty
            // (rmdir refuses otherwise, a former capture's runs there say).
            if c.keep.is_empty() {
                let _ = ns_dir.remove_dir(&c.name);
            }
        }
        for (capture, suffix) in &stale_markers {
            let shown = volume::join(ns, capture);
            if let Some(capture_dir) = volume::child_dir(&ns_dir, capture, &shown)? {
                mark_delete_on_removal(&capture_dir, suffix, false, &shown)?;
            }
            // The directory of a capture that is gone goes too once empty; rmdir refuses otherwise.
            let _ = ns_dir.remove_dir(capture);
        }
        Ok(removed)
    }
}

/// The prefix of the marker file a capture that asked for `deleteOnRemoval` keeps in its
/// directory, followed by its run-id suffix.
const DELETE_ON_REMOVAL_MARKER: &str = ".delete-on-removal-";

/// A directory's entries: subdirectories and other entries by name; links are refused.
struct Listing {
    dirs: Vec<String>,
    files: Vec<String>,
}

fn listing(dir: &Dir, shown: &str) -> Result<Listing, VolumeError> {
    let io = |e| VolumeError::Io { path: shown.to_owned(), source: e };
    let mut out = Listing { dirs: Vec::new(), files: Vec::new() };
    for entry in dir.entries().map_err(io)? {
        let entry = entry.map_err(io)?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let kind = entry.file_type().map_err(io)?;
        if kind.is_symlink() {
            return Err(VolumeError::Symlink { path: volume::join(shown, &name) });
        }
        if kind.is_dir() { out.dirs.push(name) } else { out.files.push(name) }
    }
    out.dirs.sort();
    Ok(out)
}

/// Notes (or withdraws) on the volume that the capture with run-id `suffix` asked for its
/// files to go when it is deleted.
fn mark_delete_on_removal(capture_dir: &Dir, suffix: &str, wanted: bool, shown: &str) -> Result<(), VolumeError> {
    let name = format!("{DELETE_ON_REMOVAL_MARKER}{suffix}");
    let io = |e| VolumeError::Io { path: volume::join(shown, &name), source: e };
    match (wanted, capture_dir.symlink_metadata(&name)) {
        (true, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => match volume::create_file(capture_dir, &name) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io(e)),
        },
        // unlinkat: the entry itself goes, never what a link there points to.
        (false, Ok(_)) => match capture_dir.remove_file(&name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// How long a timed profile is retried while the app says its profiler is busy.
const PROFILER_BUSY_WAIT: Duration = Duration::from_secs(3);

/// Go's answer when a CPU profile or trace is already running.
fn is_profiler_busy(fetched: &Result<crate::fetch::Fetched, crate::fetch::FetchError>) -> bool {
    matches!(fetched, Err(crate::fetch::FetchError::Status { status: 500, body, .. }) if body.contains("already in use")
        || body.contains("already enabled"))
}

/// Seconds of cpu/trace profiling a capture asks for.
fn timed_seconds(req: &CaptureRequest) -> u64 {
    req.profiles.iter().filter(|p| p.is_timed()).count() as u64 * req.duration_seconds
}

/// The files of a fetched profile: its temporary name, its flame graph's, its size.
#[derive(Debug, Clone, Copy)]
struct FetchedFile<'a> {
    tmp: &'a str,
    svg_tmp: &'a str,
    bytes: u64,
}

/// Why an analysis stopped: memory to ask more of, or a reason for the profile.
enum Failure {
    /// It needed `needed` bytes and held `granted`.
    OverBudget { needed: u64, granted: u64 },
    /// Anything else, as the profile's error.
    Other(String),
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Summarises a fetched profile and writes its flame graph.
fn analyse(
    profile: std::fs::File,
    svg_file: std::fs::File,
    options: &profile::Options,
    title: &str,
    memory: &mut Allowance,
) -> Result<profile::Summary, Failure> {
    let analysis = profile::analyse(profile, options, memory).map_err(|e| match e {
        ProfileError::OverBudget { needed, granted } => Failure::OverBudget { needed, granted },
        e => Failure::Other(e.to_string()),
    })?;
    let write = |e: std::io::Error| Failure::Other(format!("cannot write the flame graph: {e}"));
    let mut svg = std::io::BufWriter::new(svg_file);
    let empty = profile::flamegraph::Folded { text: String::new(), merged_below: 0 };
    let folded = analysis.folded.as_ref().unwrap_or(&empty);
    profile::flamegraph::render_svg(title, &analysis.summary.sample_type, folded, &mut svg).map_err(write)?;
    let svg_file = svg.into_inner().map_err(|e| write(e.into_error()))?;
    svg_file.sync_all().map_err(write)?;
    Ok(analysis.summary)
}
