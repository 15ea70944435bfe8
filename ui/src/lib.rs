//! The capture browser: every ProfileCapture, its runs, and each run's profiles per pod, as
//! web pages and as the JSON API (`/api/v1/…`) that the pages and `kubectl biometrics` read.
//! The operator process serves it; what it knows of the cluster and of the agents comes
//! through a [`Backend`], so it is tested without either.
//!
//! Profile content is untrusted (the app chooses its function names, and may write the
//! volume): pages build the DOM with text nodes only under a strict Content-Security-Policy,
//! and files are only ever served as downloads.

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
}

/// The browser's routes: pages, the JSON API and speedscope.
pub fn router<B: Backend>(backend: B, options: UiOptions) -> Router {
    let shared = Arc::new(Shared { backend, options });
    Router::new()
        .route("/api/v1/captures", get(list_captures::<B>))
        .route("/api/v1/namespaces/{namespace}/captures/{name}", get(capture_detail::<B>))
        .route("/api/v1/namespaces/{namespace}/captures/{name}/runs/{run}", get(run_detail::<B>))
        .route("/api/v1/namespaces/{namespace}/captures/{name}/runs/{run}/files/{pod}/{file}", get(download::<B>))
        .route("/speedscope/{*file}", get(speedscope::<B>))
        .merge(pages::routes())
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "no such page") })
        .with_state(shared)
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

async fn list_captures<B: Backend>(State(s): State<Arc<Shared<B>>>) -> Response {
    match s.backend.captures().await {
        Ok(captures) => Json(views::capture_rows(&captures)).into_response(),
        Err(e) => backend_error(&e),
    }
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
