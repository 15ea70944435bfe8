//! Capture jobs: accepted idempotently by id, run in the background one profile after the
//! other, written atomically under the profiles directory, summarised, kept for polling,
//! cancellable, and pruned by retention.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use biometrics_crds::profile::ProfileType;
use tokio_util::sync::CancellationToken;

use crate::{
    api::{CaptureRequest, CaptureState, CaptureStatus, ProfileOutcome, RetentionRequest},
    fetch::Fetcher,
    metrics::Metrics,
    names, profile,
};

/// Limits of capture work.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes a profile response may have.
    pub max_profile_bytes: u64,
    /// Bytes a profile may inflate to.
    pub max_decompressed_bytes: u64,
    /// Captures kept in the table (running and finished).
    pub max_captures: usize,
    /// How long a finished capture stays pollable at least.
    pub keep_finished: Duration,
    /// The longest cpu/trace duration.
    pub max_duration_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_profile_bytes: 256 << 20,
            max_decompressed_bytes: 1 << 30,
            max_captures: 1000,
            keep_finished: Duration::from_secs(3600),
            max_duration_seconds: 300,
        }
    }
}

/// What the engine needs to know about its pod and app.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Root of the shared profiles volume.
    pub profiles_dir: PathBuf,
    /// This pod's name (a directory per pod in each run).
    pub pod: String,
    /// The app's loopback address.
    pub target_host: IpAddr,
    /// Limits.
    pub limits: Limits,
    /// How many functions a summary keeps.
    pub top_n: usize,
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
}

struct Entry {
    request: CaptureRequest,
    status: CaptureStatus,
    cancel: CancellationToken,
    finished: Option<Instant>,
}

/// The capture table and the workers.
#[derive(Clone)]
pub struct Engine {
    config: Arc<EngineConfig>,
    table: Arc<Mutex<HashMap<String, Entry>>>,
    fetcher: Fetcher,
    /// Go serves one CPU profile (or trace) at a time: ours queue behind each other.
    timed_profile: Arc<tokio::sync::Mutex<()>>,
    metrics: Metrics,
    tasks: tokio_util::task::TaskTracker,
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
    Ok(())
}

impl Engine {
    /// An engine writing under `config.profiles_dir`.
    pub fn new(config: EngineConfig, metrics: Metrics) -> Self {
        Self {
            config: Arc::new(config),
            table: Arc::default(),
            fetcher: Fetcher::default(),
            timed_profile: Arc::default(),
            metrics,
            tasks: tokio_util::task::TaskTracker::new(),
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
        self.evict(&mut table);
        if table.len() >= self.config.limits.max_captures {
            return Err(SubmitError::Full(table.len()));
        }
        let status = CaptureStatus {
            id: req.id.clone(),
            state: CaptureState::Running,
            started_at: now_rfc3339(),
            finished_at: None,
            error: None,
            profiles: req
                .profiles
                .iter()
                .map(|p| ProfileOutcome { profile_type: Some(*p), ..Default::default() })
                .collect(),
        };
        let cancel = CancellationToken::new();
        table.insert(
            req.id.clone(),
            Entry { request: req.clone(), status: status.clone(), cancel: cancel.clone(), finished: None },
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

    /// A capture's status.
    pub fn status(&self, id: &str) -> Option<CaptureStatus> {
        self.lock().get(id).map(|e| e.status.clone())
    }

    /// Cancels a running capture and removes what it wrote; a finished one is left as is.
    pub async fn cancel(&self, id: &str) -> Option<CaptureStatus> {
        let (token, dir) = {
            let table = self.lock();
            let entry = table.get(id)?;
            if entry.finished.is_some() {
                return Some(entry.status.clone());
            }
            let r = &entry.request;
            (entry.cancel.clone(), self.pod_dir(&r.capture.namespace, &r.capture.name, &r.run))
        };
        token.cancel();
        // The job notices, removes its temporary file and marks itself failed.
        for _ in 0..200 {
            if self.lock().get(id).is_some_and(|e| e.finished.is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = tokio::fs::remove_dir_all(&dir).await;
        remove_if_empty(dir.parent());
        self.status(id)
    }

    /// Cancels everything running (shutdown) and waits for the jobs to clean up.
    pub async fn shutdown(&self, reason: &str) {
        let tokens: Vec<CancellationToken> = {
            let mut table = self.lock();
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

    fn pod_dir(&self, namespace: &str, capture: &str, run: &str) -> PathBuf {
        self.config.profiles_dir.join(names::pod_run_dir(namespace, capture, run, &self.config.pod))
    }

    async fn run(&self, req: CaptureRequest, cancel: CancellationToken) {
        let started = Instant::now();
        let mut any_ok = false;
        for (i, kind) in req.profiles.iter().enumerate() {
            if cancel.is_cancelled() {
                break;
            }
            let outcome = self.capture_one(&req, *kind, &cancel).await;
            let ok = outcome.error.is_none();
            any_ok |= ok;
            self.metrics.captures.with_label_values(&[kind.as_str(), if ok { "succeeded" } else { "failed" }]).inc();
            if let Some(entry) = self.lock().get_mut(&req.id) {
                entry.status.profiles[i] = outcome;
            }
        }
        self.metrics.capture_duration.observe(started.elapsed().as_secs_f64());
        let mut table = self.lock();
        if let Some(entry) = table.get_mut(&req.id) {
            entry.finished = Some(Instant::now());
            entry.status.finished_at = Some(now_rfc3339());
            if cancel.is_cancelled() {
                entry.status.state = CaptureState::Failed;
                entry.status.error.get_or_insert_with(|| "cancelled".to_owned());
                for p in entry.status.profiles.iter_mut().filter(|p| p.path.is_none() && p.error.is_none()) {
                    p.error = Some("not captured: the capture was cancelled".into());
                }
            } else if any_ok {
                entry.status.state = CaptureState::Succeeded;
            } else {
                entry.status.state = CaptureState::Failed;
                entry.status.error = Some("no profile could be captured".into());
            }
        }
    }

    async fn capture_one(&self, req: &CaptureRequest, kind: ProfileType, cancel: &CancellationToken) -> ProfileOutcome {
        let mut outcome = ProfileOutcome { profile_type: Some(kind), ..Default::default() };
        let relative_dir = names::pod_run_dir(&req.capture.namespace, &req.capture.name, &req.run, &self.config.pod);
        let dir = match ensure_dir(&self.config.profiles_dir, &relative_dir) {
            Ok(d) => d,
            Err(e) => {
                outcome.error = Some(format!("cannot create {}: {e}", relative_dir.display()));
                return outcome;
            }
        };
        let file_name = kind.file_name();
        let tmp = dir.join(format!(".{file_name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let url = format!(
            "http://{}{}/{}",
            std::net::SocketAddr::new(self.config.target_host, req.target.port),
            req.target.base_path,
            kind.endpoint(req.duration_seconds)
        );
        let timeout =
            if kind.is_timed() { Duration::from_secs(req.duration_seconds + 30) } else { Duration::from_secs(60) };
        let fetch_started = Instant::now();
        let fetch = async {
            let _turn = if kind.is_timed() { Some(self.timed_profile.lock().await) } else { None };
            self.fetcher.to_file(&url, &tmp, self.config.limits.max_profile_bytes, timeout).await
        };
        let fetched = tokio::select! {
            r = fetch => r,
            () = cancel.cancelled() => {
                let _ = tokio::fs::remove_file(&tmp).await;
                outcome.error = Some("cancelled".into());
                return outcome;
            }
        };
        self.metrics.fetch_duration.with_label_values(&[kind.as_str()]).observe(fetch_started.elapsed().as_secs_f64());
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                outcome.error = Some(e.to_string());
                return outcome;
            }
        };
        let final_path = dir.join(&file_name);
        let svg_name = format!("{}.svg", kind.as_str());
        if kind.is_pprof() {
            let (tmp_c, limit, top_n) = (tmp.clone(), self.config.limits.max_decompressed_bytes, self.config.top_n);
            let svg_tmp = dir.join(format!(".{svg_name}.{}.tmp", uuid::Uuid::new_v4().simple()));
            let svg_tmp_c = svg_tmp.clone();
            let title = format!("{} {} — {}/{}", kind, self.config.pod, req.capture.namespace, req.capture.name);
            let analysed =
                match tokio::task::spawn_blocking(move || analyse(&tmp_c, &svg_tmp_c, limit, top_n, &title)).await {
                    Ok(result) => result,
                    Err(e) => Err(format!("summarising the profile failed: {e}")),
                };
            match analysed {
                Ok(summary) => {
                    outcome.sample_type = Some(summary.sample_type);
                    outcome.total = Some(summary.total);
                    outcome.samples = Some(summary.samples);
                    outcome.top = summary.functions;
                    if std::fs::rename(&svg_tmp, dir.join(&svg_name)).is_ok() {
                        outcome.flamegraph = Some(relative_dir.join(&svg_name).display().to_string());
                    }
                }
                Err(reason) => {
                    let _ = std::fs::remove_file(&tmp);
                    let _ = std::fs::remove_file(&svg_tmp);
                    outcome.error = Some(reason);
                    return outcome;
                }
            }
        }
        if let Err(e) = std::fs::rename(&tmp, &final_path) {
            let _ = std::fs::remove_file(&tmp);
            outcome.error = Some(format!("cannot move the profile into place: {e}"));
            return outcome;
        }
        sync_dir(&dir);
        self.metrics.bytes_written.inc_by(fetched.bytes);
        outcome.path = Some(relative_dir.join(&file_name).display().to_string());
        outcome.bytes = Some(fetched.bytes);
        outcome.sha256 = Some(fetched.sha256);
        outcome
    }

    /// Removes this pod's files of all but the newest `keep_runs` runs of a capture.
    pub fn retain(&self, req: &RetentionRequest) -> Result<Vec<String>, String> {
        names::dns_label("capture.namespace", &req.capture.namespace).map_err(|e| e.to_string())?;
        names::dns_subdomain("capture.name", &req.capture.name).map_err(|e| e.to_string())?;
        let capture_dir = self.config.profiles_dir.join(names::capture_dir(&req.capture.namespace, &req.capture.name));
        let running: Vec<String> = self
            .lock()
            .values()
            .filter(|e| e.finished.is_none() && e.request.capture == req.capture)
            .map(|e| e.request.run.clone())
            .collect();
        let Ok(entries) = std::fs::read_dir(&capture_dir) else { return Ok(Vec::new()) };
        let mut runs: Vec<(std::time::SystemTime, String)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| e.path().join(&self.config.pod).is_dir())
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.file_name().into_string().ok()?)))
            .collect();
        runs.sort_by(|a, b| b.cmp(a));
        let mut removed = Vec::new();
        for (_, run) in runs.into_iter().skip(req.keep_runs as usize) {
            if running.contains(&run) {
                continue;
            }
            let run_dir = capture_dir.join(&run);
            if std::fs::remove_dir_all(run_dir.join(&self.config.pod)).is_ok() {
                removed.push(run);
                let _ = std::fs::remove_dir(&run_dir);
            }
        }
        removed.sort();
        Ok(removed)
    }
}

/// Summarises a fetched profile and writes its flame graph; the error is the reason.
fn analyse(path: &Path, svg_path: &Path, limit: u64, top_n: usize, title: &str) -> Result<profile::Summary, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let decoded = profile::decode(std::io::BufReader::new(file), limit).map_err(|e| e.to_string())?;
    let summary = profile::summarise(&decoded, top_n).map_err(|e| e.to_string())?;
    let folded = profile::folded_stacks(&decoded).map_err(|e| e.to_string())?;
    let svg = profile::flamegraph::render_svg(title, &summary.sample_type, &folded)?;
    let mut out = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut out, libc::O_NOFOLLOW);
    let mut file = out.write(true).create_new(true).open(svg_path).map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut file, &svg).map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    Ok(summary)
}

/// Creates `root/relative` one component at a time, refusing any component that exists as
/// something other than a real directory (a symlink planted on the volume, say).
fn ensure_dir(root: &Path, relative: &Path) -> std::io::Result<PathBuf> {
    let mut dir = root.to_path_buf();
    for component in relative.components() {
        let std::path::Component::Normal(part) = component else {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "unexpected path component"));
        };
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} is not a directory", dir.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists
                        && std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) => {}
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn remove_if_empty(dir: Option<&Path>) {
    if let Some(d) = dir {
        let _ = std::fs::remove_dir(d);
    }
}
