//! The capture browser: every ProfileCapture, its runs, and each run's profiles per pod, as
//! web pages and as the JSON API (`/api/v1/…`) that the pages and `kubectl biometrics` read.
//! The operator process serves it; what it knows of the cluster and of the agents comes
//! through a [`Backend`], so it is tested without either.
//!
//! Who may use it is the operator's choice: whoever reaches it (on the pod's loopback,
//! through `kubectl port-forward`), or, in token mode ([`access`]), bearer tokens the
//! cluster accepts, each namespace shown only to users it allows to get its captures.
//!
//! Profile content is untrusted (the app chooses its function names, and may write the
//! volume): pages build the DOM with text nodes only under a strict Content-Security-Policy,
//! and files are only ever served as downloads.

pub mod access;
pub mod analysis;
pub mod api;
mod pages;
pub mod views;

use std::{future::Future, path::PathBuf, sync::Arc};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use biometrics_crds::v1alpha1::ProfileCapture;
use bytes::Bytes;
pub use views::HeldFiles;

/// One file on the profiles volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The capture's namespace.
    pub namespace: String,
    /// The capture.
    pub capture: String,
    /// The run.
    pub run: String,
    /// The pod that wrote it.
    pub pod: String,
    /// The file's name.
    pub file: String,
}

/// Why the backend could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// No such object or file (404).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not see it (403).
    #[error("{0}")]
    Forbidden(String),
    /// An agent or the API server could not be reached (502).
    #[error("{0}")]
    Unreachable(String),
    /// Anything else (500).
    #[error("{0}")]
    Failed(String),
}

/// What the browser needs from the cluster and the agents.
pub trait Backend: Send + Sync + 'static {
    /// Every ProfileCapture the browser may show.
    fn captures(&self) -> impl Future<Output = Result<Vec<ProfileCapture>, BackendError>> + Send;

    /// One ProfileCapture, or `None`.
    fn capture(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ProfileCapture>, BackendError>> + Send;

    /// What the agents of the capture's namespace hold of its files, and what could not be
    /// asked (an unreachable agent) as warnings.
    fn files(
        &self,
        capture: &ProfileCapture,
    ) -> impl Future<Output = Result<(Vec<HeldFiles>, Vec<String>), BackendError>> + Send;

    /// One file's bytes, from the agent (pod) `holder` that listed it.
    fn fetch(&self, holder: &str, file: &FileRef) -> impl Future<Output = Result<Bytes, BackendError>> + Send;
}

/// How the browser is set up.
#[derive(Debug, Clone, Default)]
pub struct UiOptions {
    /// speedscope's release files (`index.html`, its script and styles), when installed.
    pub speedscope_dir: Option<PathBuf>,
}

struct Shared<B> {
    backend: B,
    options: UiOptions,
    /// Token mode's gate; `None`: whoever reaches the browser may see everything.
    access: Option<Arc<dyn access::Access>>,
    analyses: analysis::Cache,
    /// Files read at once: each may take up to [`analysis::ANALYSIS_MEMORY`].
    reading: tokio::sync::Semaphore,
}

/// The browser's routes: pages, the JSON API and speedscope, open to whoever reaches them.
pub fn router<B: Backend>(backend: B, options: UiOptions) -> Router {
    router_with_access(backend, options, None)
}

/// The browser's routes; with `access` (token mode) every API request needs a bearer token
/// the cluster authenticates, and sees only the namespaces whose captures its user may get.
pub fn router_with_access<B: Backend>(
    backend: B,
    options: UiOptions,
    access: Option<Arc<dyn access::Access>>,
) -> Router {
    let shared = Arc::new(Shared {
        backend,
        options,
        access,
        analyses: analysis::Cache::default(),
        reading: tokio::sync::Semaphore::new(analysis::CONCURRENT_ANALYSES),
    });
    Router::new()
        .route("/api/v1/captures", get(list_captures::<B>))
        .route("/api/v1/namespaces/{namespace}/captures/{name}", get(capture_detail::<B>))
        .route("/api/v1/namespaces/{namespace}/captures/{name}/runs/{run}", get(run_detail::<B>))
        .route("/api/v1/namespaces/{namespace}/captures/{name}/runs/{run}/files/{pod}/{file}", get(download::<B>))
        .route("/api/v1/namespaces/{namespace}/captures/{name}/runs/{run}/top", get(top::<B>))
        .route("/api/v1/namespaces/{namespace}/captures/{name}/compare", get(compare::<B>))
        .route("/api/v1/namespaces/{namespace}/captures/{name}/compare/flamegraph.svg", get(compare_flamegraph::<B>))
        .route("/speedscope/{*file}", get(speedscope::<B>))
        .merge(pages::routes())
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::middleware::from_fn_with_state(shared.clone(), gate::<B>))
        .with_state(shared)
}

/// Token mode: an API request is let through only with a token the cluster authenticates,
/// and, when it is about one namespace, whose user may get captures there; the user goes
/// with the request (the capture list shows only what it may see).
async fn gate<B: Backend>(
    State(s): State<Arc<Shared<B>>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(access) = &s.access else { return next.run(request).await };
    let path = request.uri().path().to_owned();
    if !path.starts_with("/api/") {
        return next.run(request).await;
    }
    let Some(token) = access::bearer(request.headers()) else {
        let mut response = api_error(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required: send Authorization: Bearer <token> (e.g. kubectl create token)",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"biometrics\""));
        return response;
    };
    let viewer = match access.authenticate(token).await {
        Ok(viewer) => viewer,
        Err(e) => return access_error(&e),
    };
    if let Some(namespace) = access::namespace_of(&path) {
        if !namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return api_error(StatusCode::BAD_REQUEST, format!("{namespace:?} is not a namespace name"));
        }
        match access.may_view(&viewer, namespace).await {
            Ok(true) => {}
            Ok(false) => return api_error(StatusCode::FORBIDDEN, access::forbidden_message(&viewer, namespace)),
            Err(e) => return access_error(&e),
        }
    }
    request.extensions_mut().insert(viewer);
    next.run(request).await
}

fn access_error(e: &access::AccessError) -> Response {
    match e {
        access::AccessError::Unauthenticated(message) => {
            let mut response = api_error(StatusCode::UNAUTHORIZED, message.clone());
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"biometrics\""));
            response
        }
        access::AccessError::Unavailable(message) => api_error(StatusCode::BAD_GATEWAY, message.clone()),
    }
}

fn api_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(api::ApiError { message: message.into() })).into_response()
}

fn backend_error(e: &BackendError) -> Response {
    let status = match e {
        BackendError::NotFound(_) => StatusCode::NOT_FOUND,
        BackendError::Forbidden(_) => StatusCode::FORBIDDEN,
        BackendError::Unreachable(_) => StatusCode::BAD_GATEWAY,
        BackendError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    api_error(status, e.to_string())
}

async fn list_captures<B: Backend>(
    State(s): State<Arc<Shared<B>>>,
    viewer: Option<axum::Extension<access::Viewer>>,
) -> Response {
    let mut captures = match s.backend.captures().await {
        Ok(captures) => captures,
        Err(e) => return backend_error(&e),
    };
    if let (Some(access), Some(axum::Extension(viewer))) = (&s.access, viewer) {
        let namespaces: std::collections::BTreeSet<String> =
            captures.iter().filter_map(|pc| pc.metadata.namespace.clone()).collect();
        let mut visible = std::collections::BTreeSet::new();
        for namespace in namespaces {
            match access.may_view(&viewer, &namespace).await {
                Ok(true) => {
                    visible.insert(namespace);
                }
                Ok(false) => {}
                Err(e) => return access_error(&e),
            }
        }
        captures.retain(|pc| pc.metadata.namespace.as_ref().is_some_and(|ns| visible.contains(ns)));
    }
    Json(views::capture_rows(&captures)).into_response()
}

async fn find<B: Backend>(s: &Shared<B>, namespace: &str, name: &str) -> Result<ProfileCapture, Response> {
    match s.backend.capture(namespace, name).await {
        Ok(Some(pc)) => Ok(pc),
        Ok(None) => Err(api_error(StatusCode::NOT_FOUND, format!("no ProfileCapture {namespace}/{name}"))),
        Err(e) => Err(backend_error(&e)),
    }
}

async fn capture_detail<B: Backend>(
    State(s): State<Arc<Shared<B>>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let pc = match find(&s, &namespace, &name).await {
        Ok(pc) => pc,
        Err(response) => return response,
    };
    match s.backend.files(&pc).await {
        Ok((held, warnings)) => Json(views::capture_detail(&pc, &held, warnings)).into_response(),
        Err(e) => backend_error(&e),
    }
}

async fn run_detail<B: Backend>(
    State(s): State<Arc<Shared<B>>>,
    Path((namespace, name, run)): Path<(String, String, String)>,
) -> Response {
    let pc = match find(&s, &namespace, &name).await {
        Ok(pc) => pc,
        Err(response) => return response,
    };
    let (held, warnings) = match s.backend.files(&pc).await {
        Ok(found) => found,
        Err(e) => return backend_error(&e),
    };
    match views::run_detail(&pc, &run, &held, warnings) {
        Some(detail) => Json(detail).into_response(),
        None => api_error(StatusCode::NOT_FOUND, format!("ProfileCapture {namespace}/{name} has no run {run:?}")),
    }
}

/// The agent (pod) that listed `file`, if any did.
fn holder_of<'a>(held: &'a [HeldFiles], file: &FileRef) -> Option<&'a str> {
    held.iter()
        .find(|h| {
            h.listing.runs.iter().any(|r| {
                r.run == file.run
                    && r.pods.iter().any(|p| p.pod == file.pod && p.files.iter().any(|f| f.name == file.file))
            })
        })
        .map(|h| h.holder.as_str())
}

async fn download<B: Backend>(
    State(s): State<Arc<Shared<B>>>,
    Path((namespace, capture, run, pod, file)): Path<(String, String, String, String, String)>,
) -> Response {
    let pc = match find(&s, &namespace, &capture).await {
        Ok(pc) => pc,
        Err(response) => return response,
    };
    let (held, _) = match s.backend.files(&pc).await {
        Ok(found) => found,
        Err(e) => return backend_error(&e),
    };
    let wanted = FileRef { namespace, capture, run, pod, file };
    let Some(holder) = holder_of(&held, &wanted) else {
        return api_error(StatusCode::NOT_FOUND, format!("no agent holds {}", wanted.file));
    };
    match s.backend.fetch(holder, &wanted).await {
        Ok(bytes) => attachment(&format!("{}_{}_{}", wanted.pod, wanted.run, wanted.file), bytes),
        Err(e) => backend_error(&e),
    }
}

/// Profiles fetched from the agents at once for one answer.
const CONCURRENT_FETCHES: usize = 8;

/// `?profile=cpu&pod=P&nodecount=N` of a top answer.
#[derive(Debug, serde::Deserialize)]
struct TopQuery {
    profile: Option<String>,
    pod: Option<String>,
    nodecount: Option<usize>,
}

/// `?profile=cpu&base=R1&run=R2&pod=P&basePod=Q&nodecount=N` of a comparison.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompareQuery {
    profile: Option<String>,
    base: Option<String>,
    run: Option<String>,
    pod: Option<String>,
    base_pod: Option<String>,
    nodecount: Option<usize>,
}

/// A request refused: its status and message, answered as the JSON error.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        api_error(self.0, self.1)
    }
}

/// A profile type as the capture files name it: `cpu`, `heap`, `goroutine`, ….
fn profile_name(given: Option<String>) -> Result<String, Refusal> {
    let profile = given.unwrap_or_else(|| "cpu".to_owned());
    if profile.is_empty() || profile == "trace" || !profile.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(Refusal(StatusCode::BAD_REQUEST, format!("{profile:?} is not a profile with functions to show")));
    }
    Ok(profile)
}

/// Each file's analysis: from the cache, or fetched from its agent and read; with its
/// folded stacks when `flame` (drawing costs as much again, so only a flame graph asks).
async fn analyses<B: Backend>(
    s: &Shared<B>,
    flame: bool,
    namespace: &str,
    capture: &str,
    run: &str,
    files: &[analysis::Located],
) -> Result<Vec<Arc<analysis::Analysed>>, Response> {
    use futures::{StreamExt, TryStreamExt};
    let asked: Vec<FileRef> = files
        .iter()
        .map(|located| FileRef {
            namespace: namespace.to_owned(),
            capture: capture.to_owned(),
            run: run.to_owned(),
            pod: located.pod.clone(),
            file: located.file.clone(),
        })
        .collect();
    let jobs: Vec<_> =
        files.iter().cloned().zip(asked).map(|(located, file)| analyse_one(s, flame, located, file)).collect();
    futures::stream::iter(jobs).buffered(CONCURRENT_FETCHES).try_collect().await
}

async fn analyse_one<B: Backend>(
    s: &Shared<B>,
    flame: bool,
    located: analysis::Located,
    file: FileRef,
) -> Result<Arc<analysis::Analysed>, Response> {
    let key = |sha256: &str| if flame { format!("{sha256} flame") } else { sha256.to_owned() };
    if let Some(kept) = s.analyses.get(&key(&located.sha256)) {
        return Ok(kept);
    }
    let bytes = s.backend.fetch(&located.holder, &file).await.map_err(|e| backend_error(&e))?;
    let _slot = s.reading.acquire().await.map_err(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // Kept under the hash of what was read, which is the listed one unless the file changed
    // since the agent listed it.
    let read = tokio::task::spawn_blocking(move || (analysis::sha256_hex(&bytes), analysis::analyse(&bytes, flame)))
        .await
        .map_err(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (sha256, read) = read;
    let read = read.map_err(|reason| {
        api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{} of pod {} in run {}: {reason}", file.file, file.pod, file.run),
        )
    })?;
    let read = Arc::new(read);
    s.analyses.put(&key(&sha256), read.clone());
    Ok(read)
}

/// The files of `profile` of `run` (one pod's, or every pod's), or why there are none.
fn located(
    held: &[HeldFiles],
    namespace: &str,
    name: &str,
    run: &str,
    profile: &str,
    pod: Option<&str>,
) -> Result<Vec<analysis::Located>, Refusal> {
    let found = analysis::locate(held, run, profile, pod);
    if found.is_empty() {
        let whose = pod.map_or_else(|| "no pod".to_owned(), |p| format!("pod {p}"));
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("ProfileCapture {namespace}/{name}: {whose} has a {profile} profile in run {run:?} on the volume"),
        ));
    }
    Ok(found)
}

async fn top<B: Backend>(
    State(s): State<Arc<Shared<B>>>,
    Path((namespace, name, run)): Path<(String, String, String)>,
    axum::extract::Query(query): axum::extract::Query<TopQuery>,
) -> Response {
    let profile = match profile_name(query.profile) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    let pc = match find(&s, &namespace, &name).await {
        Ok(pc) => pc,
        Err(response) => return response,
    };
    let (held, _) = match s.backend.files(&pc).await {
        Ok(found) => found,
        Err(e) => return backend_error(&e),
    };
    let files = match located(&held, &namespace, &name, &run, &profile, query.pod.as_deref()) {
        Ok(files) => files,
        Err(refusal) => return refusal.into_response(),
    };
    let read = match analyses(&s, false, &namespace, &name, &run, &files).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let parts: Vec<&biometrics_pprof::merge::Mergeable> = read.iter().map(|a| &a.mergeable).collect();
    let pods = files.into_iter().map(|f| f.pod).collect();
    let nodecount = query.nodecount.unwrap_or(0);
    match analysis::top_view(&run, &profile, pods, &parts, nodecount) {
        Ok(view) => Json(view).into_response(),
        Err(e) => api_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// The two sides of a comparison, each with its files read.
struct Compared {
    profile: String,
    base: analysis::Side,
    base_read: Vec<Arc<analysis::Analysed>>,
    compared: analysis::Side,
    read: Vec<Arc<analysis::Analysed>>,
}

async fn compared<B: Backend>(
    s: &Shared<B>,
    namespace: &str,
    name: &str,
    query: CompareQuery,
    flame: bool,
) -> Result<Compared, Response> {
    let profile = profile_name(query.profile).map_err(IntoResponse::into_response)?;
    let pc = find(s, namespace, name).await?;
    let (held, _) = s.backend.files(&pc).await.map_err(|e| backend_error(&e))?;
    let detail = views::capture_detail(&pc, &held, Vec::new());
    let (base, compared) = analysis::sides(
        &detail.runs,
        &held,
        &profile,
        (query.base.as_deref(), query.base_pod.as_deref()),
        (query.run.as_deref(), query.pod.as_deref()),
    )
    .map_err(|message| api_error(StatusCode::NOT_FOUND, format!("ProfileCapture {namespace}/{name}: {message}")))?;
    let base_files = located(&held, namespace, name, &base.run, &profile, base.pod.as_deref())
        .map_err(IntoResponse::into_response)?;
    let files = located(&held, namespace, name, &compared.run, &profile, compared.pod.as_deref())
        .map_err(IntoResponse::into_response)?;
    // Both sides at once: each file is read on a blocking thread of its own.
    let (base_read, read) = futures::future::try_join(
        analyses(s, flame, namespace, name, &base.run, &base_files),
        analyses(s, flame, namespace, name, &compared.run, &files),
    )
    .await?;
    Ok(Compared { profile, base, base_read, compared, read })
}

async fn compare<B: Backend>(
    State(s): State<Arc<Shared<B>>>,
    Path((namespace, name)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<CompareQuery>,
) -> Response {
    let nodecount = query.nodecount.unwrap_or(0);
    let c = match compared(&s, &namespace, &name, query, false).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let base_parts: Vec<&biometrics_pprof::merge::Mergeable> = c.base_read.iter().map(|a| &a.mergeable).collect();
    let parts: Vec<&biometrics_pprof::merge::Mergeable> = c.read.iter().map(|a| &a.mergeable).collect();
    match analysis::compare_view(&c.profile, (&c.base, &base_parts), (&c.compared, &parts), nodecount) {
        Ok(view) => Json(view).into_response(),
        Err(e) => api_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// The differential flame graph of a comparison: an SVG drawn here from the profiles'
/// stacks (never a stored file), for an `<img>`, where no script of it runs; opened on its
/// own it is still sandboxed and scriptless.
async fn compare_flamegraph<B: Backend>(
    State(s): State<Arc<Shared<B>>>,
    Path((namespace, name)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<CompareQuery>,
) -> Response {
    let c = match compared(&s, &namespace, &name, query, true).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let describe = |side: &analysis::Side| match &side.pod {
        Some(pod) => format!("{} ({pod})", side.run),
        None => side.run.clone(),
    };
    let title = format!("{} profile: {} against {}", c.profile, describe(&c.compared), describe(&c.base));
    let count_name = c.read.first().map_or("", |a| a.mergeable.sample_type()).to_owned();
    let drawn = tokio::task::spawn_blocking(move || {
        let base: Vec<&analysis::Analysed> = c.base_read.iter().map(|a| a.as_ref()).collect();
        let compared: Vec<&analysis::Analysed> = c.read.iter().map(|a| a.as_ref()).collect();
        analysis::diff_flamegraph(&title, &count_name, &base, &compared)
    })
    .await;
    match drawn {
        Ok(Ok(svg)) => {
            let mut response = Response::new(Body::from(svg));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
            headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Ok(Err(e)) => api_error(StatusCode::INTERNAL_SERVER_ERROR, format!("drawing the flame graph: {e}")),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Bytes as a download, never rendered on this origin.
fn attachment(filename: &str, bytes: Bytes) -> Response {
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    let safe: String = filename.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).collect();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

async fn speedscope<B: Backend>(State(s): State<Arc<Shared<B>>>, Path(file): Path<String>) -> Response {
    let Some(dir) = &s.options.speedscope_dir else {
        return api_error(
            StatusCode::NOT_FOUND,
            "the flame graph viewer (speedscope) is not installed: --ui-speedscope-dir",
        );
    };
    pages::speedscope_file(dir, &file).await
}
