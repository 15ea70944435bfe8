//! A Kubernetes API server for tests and the local demo: in memory, one process, HTTP on
//! loopback. It serves what the operator, kube-rs and kubectl use — discovery, OpenAPI v3,
//! the REST verbs with merge / JSON / strategic / server-side-apply patches, `/status`,
//! generations, resourceVersions and conflicts, finalizers, watches with bookmarks, Tables
//! for `kubectl get`, and custom resources admitted against their CRD schema with CEL.
//! What it does not do is listed in its README.

pub mod audit;
pub mod builtins;
pub mod controllers;
pub mod defaults;
pub mod discovery;
pub mod error;
pub mod escalation;
pub mod events;
pub mod exec;
pub mod fields;
pub mod impersonation;
pub mod kubelet;
pub mod logs;
pub mod negotiation;
pub mod openapi;
pub mod openapi_v2;
pub mod portforward;
pub mod protobuf;
pub mod rbac;
pub mod registry;
pub mod reviews;
pub mod scale;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod serviceaccounts;
pub mod spdy;
pub mod store;
pub mod strategic;
pub mod table;
pub mod tls;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde_json::Value;

pub use crate::{
    audit::{Authorization, RequestLog, RequestRecord},
    server::RequestCounts,
    store::Store,
};

/// The strings of a JSON array (none when it is missing or not an array; other items
/// skipped), as the API's string-list fields are read.
pub(crate) fn strings(value: Option<&Value>) -> Vec<String> {
    value.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// Why the server could not start or load manifests.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A manifest is not valid YAML.
    #[error("{path}: {message}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The server refused an object.
    #[error("{path}: {source}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// The API error.
        source: error::ApiError,
    },
}

/// A running server.
#[derive(Debug)]
pub struct TestApiServer {
    addr: SocketAddr,
    store: Store,
    counts: Arc<RequestCounts>,
    requests: Option<Arc<RequestLog>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    controllers: Option<tokio::task::JoinHandle<()>>,
    kubelet: Option<kubelet::Kubelet>,
    kubelet_state: Arc<std::sync::OnceLock<kubelet::NodeInfo>>,
    /// The CA and certificate, when the server serves HTTPS.
    certs: Option<tls::ServingCerts>,
    /// Signs ServiceAccount tokens (the kubelet asks it for pods' tokens).
    service_accounts: Arc<serviceaccounts::Issuer>,
    /// The default ServiceAccount and CA ConfigMap of every namespace, when serving HTTPS.
    publisher: Option<tokio::task::JoinHandle<()>>,
}

/// Tunables of a server; the defaults suit tests and the demo.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events kept for watches; a watch from before them gets 410 Gone.
    pub event_log_capacity: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: std::time::Duration,
    /// Whether to keep every request's authorization check for
    /// [`TestApiServer::requests`]; the log grows with the requests served.
    pub record_requests: bool,
    /// Whether the workload controllers run (Deployments make ReplicaSets, ReplicaSets make
    /// Pods). Off for tests that create Pods and write workload status themselves.
    pub controllers: bool,
    /// How late watches deliver each change (a lagging watch cache, as a loaded API server
    /// has); zero by default. A watch's initial state is not delayed.
    pub watch_delay: std::time::Duration,
    /// Authenticate by these bearer tokens (kube-apiserver's `--token-auth-file`) and
    /// authorize by RBAC, with kube-apiserver's default roles and bindings; the server's own
    /// kubeconfig is an admin in `system:masters`. `None` (the default) lets every request
    /// through.
    pub rbac: Option<rbac::Tokens>,
    /// Serve HTTPS with a CA of the server's own (in the kubeconfig it writes) instead of
    /// plain HTTP. kubectl sends bearer tokens only over HTTPS.
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            event_log_capacity: store::DEFAULT_EVENT_LOG_CAPACITY,
            bookmark_interval: std::time::Duration::from_secs(5),
            record_requests: false,
            controllers: true,
            watch_delay: std::time::Duration::ZERO,
            rbac: None,
            tls: false,
        }
    }
}

/// The bearer token of the kubeconfig the server writes: an admin (`system:masters`).
pub const ADMIN_TOKEN: &str = "biometrics-test";

impl TestApiServer {
    /// Starts a server on `listen` (port 0 picks a free one) on the current tokio runtime.
    pub async fn start(listen: SocketAddr) -> Result<Self, StartError> {
        Self::start_with(listen, Options::default()).await
    }

    /// Starts a server with non-default options.
    pub async fn start_with(listen: SocketAddr, options: Options) -> Result<Self, StartError> {
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|source| StartError::Bind { addr: listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: listen, source })?;
        let store = Store::new(options.event_log_capacity);
        let mut state = server::AppState::new(store.clone(), addr.to_string());
        state.bookmark_interval = options.bookmark_interval;
        state.watch_delay = options.watch_delay;
        state.requests = options.record_requests.then(Arc::default);
        if let Some(mut tokens) = options.rbac {
            tokens.insert(ADMIN_TOKEN, rbac::UserInfo::authenticated(ADMIN_TOKEN, &["system:masters"]));
            state.rbac = Some(Arc::new(tokens));
            let opts = store::WriteOptions { field_manager: "kube-apiserver".into(), ..Default::default() };
            for object in rbac::bootstrap() {
                let plural = if object["kind"] == "ClusterRole" { "clusterroles" } else { "clusterrolebindings" };
                let key = registry::TypeKey { group: "rbac.authorization.k8s.io".into(), plural: plural.into() };
                store.create(&key, "", object, &opts).map_err(|e| StartError::Manifest {
                    path: PathBuf::from("<bootstrap RBAC>"),
                    message: e.message,
                })?;
            }
        }
        let counts = state.counts.clone();
        let requests = state.requests.clone();
        let service_accounts = state.service_accounts.clone();
        let kubelet_state = state.kubelet_state.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let state = state.clone();
            async move {
                let (mut parts, body) = request.into_parts();
                // Port-forward takes the connection over once answered.
                let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
                // kube-apiserver's limit on a request body.
                match axum::body::to_bytes(body, 3 * 1024 * 1024).await {
                    Ok(body) => server::handle(state, parts.method, parts.uri, parts.headers, body, upgrade).await,
                    Err(e) => server::error_response(&error::ApiError::too_large(e.to_string())),
                }
            }
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let certs =
            if options.tls {
                Some(tls::ServingCerts::generate(addr).map_err(|message| StartError::Manifest {
                    path: PathBuf::from("<serving certificate>"),
                    message,
                })?)
            } else {
                None
            };
        let shutdown = async move {
            let _ = rx.await;
        };
        match &certs {
            Some(certs) => {
                let listener = tls::TlsListener::new(listener, certs);
                tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await });
            }
            None => {
                tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await });
            }
        }
        let controllers = options.controllers.then(|| controllers::spawn(store.clone()));
        // What kube-controller-manager publishes for in-cluster clients, which need HTTPS.
        let publisher = certs.as_ref().map(|c| serviceaccounts::spawn_publisher(store.clone(), Some(c.ca_pem.clone())));
        Ok(Self {
            addr,
            store,
            counts,
            requests,
            shutdown: Some(tx),
            controllers,
            kubelet: None,
            kubelet_state,
            certs,
            service_accounts,
            publisher,
        })
    }

    /// Starts a kubelet that runs this server's pods as local processes (see
    /// [`kubelet`]); it stops with the server.
    pub async fn start_kubelet(&mut self, config: kubelet::KubeletConfig) -> Result<(), kubelet::KubeletError> {
        // Pods reach the server over HTTPS as their ServiceAccount when it serves HTTPS.
        let access = self.certs.as_ref().map(|_| kubelet::ClusterAccess { issuer: self.service_accounts.clone() });
        let kubelet = kubelet::Kubelet::start(self.store.clone(), config, access).await?;
        if let Some(certs) = &self.certs {
            certs.add_address(kubelet.gateway().into()).map_err(kubelet::KubeletError::Network)?;
        }
        let _ = self.kubelet_state.set(kubelet.node_info());
        self.kubelet = Some(kubelet);
        Ok(())
    }

    /// Stops every pod of the kubelet (if one runs) and removes its network.
    pub async fn stop_kubelet(&mut self) {
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.shutdown().await;
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        let scheme = if self.certs.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA clients must trust (PEM), when the server serves HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.certs.as_ref().map(|c| c.ca_pem.as_str())
    }

    /// A token for ServiceAccount `namespace/name` (which must exist) for `audiences` (the
    /// API server's own when empty), as a TokenRequest would return it.
    pub fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[&str],
    ) -> Result<String, error::ApiError> {
        let spec = serviceaccounts::TokenSpec {
            audiences: if audiences.is_empty() {
                vec![serviceaccounts::ISSUER.to_owned()]
            } else {
                audiences.iter().map(|a| (*a).to_owned()).collect()
            },
            expiration_seconds: serviceaccounts::DEFAULT_EXPIRATION_SECONDS,
        };
        Ok(self.service_accounts.issue(&self.store, namespace, name, &spec, None)?.0)
    }

    /// Direct access to the objects.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Requests served so far, by verb and resource.
    pub fn counts(&self) -> &RequestCounts {
        &self.counts
    }

    /// Every request's authorization check so far, in arrival order: who (the bearer
    /// token) did which verb on which resource, as kube-apiserver's authorizer would be
    /// asked. Empty unless the server was started with [`Options::record_requests`].
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests.as_ref().map(|log| log.all()).unwrap_or_default()
    }

    /// Every decision of the RBAC authorizer so far, in order: who was allowed or denied
    /// what. Empty unless the server runs with [`Options::rbac`] and
    /// [`Options::record_requests`].
    pub fn authorizations(&self) -> Vec<Authorization> {
        self.requests.as_ref().map(|log| log.decisions()).unwrap_or_default()
    }

    /// A kubeconfig that kubectl and kube-rs use unchanged.
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_as(ADMIN_TOKEN)
    }

    /// A kubeconfig whose requests are recorded as `user`'s (see [`Self::requests`]).
    pub fn kubeconfig_as(&self, user: &str) -> String {
        kubeconfig_text(&self.url(), user, self.ca_pem())
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), StartError> {
        std::fs::write(path, self.kubeconfig()).map_err(|source| StartError::Io { path: path.to_owned(), source })
    }

    /// Creates every object in the YAML files given (multi-document files allowed), as
    /// `kubectl create -f` would; CRDs are served as soon as they are created.
    pub fn create_from_files(&self, paths: &[PathBuf]) -> Result<usize, StartError> {
        let mut created = 0;
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|source| StartError::Io { path: path.clone(), source })?;
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .map_err(|e| StartError::Manifest { path: path.clone(), message: e.to_string() })?;
            for doc in docs.into_iter().filter(|d| d.is_object()) {
                let registry = self.store.registry();
                let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
                let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
                let rt = registry.by_kind(api_version, kind).ok_or_else(|| StartError::Manifest {
                    path: path.clone(),
                    message: format!("no resource type serves {api_version} {kind}"),
                })?;
                let namespace = if rt.namespaced {
                    doc.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_owned()
                } else {
                    String::new()
                };
                let opts = store::WriteOptions { field_manager: "test-apiserver".into(), ..Default::default() };
                self.store
                    .create(&rt.key(), &namespace, doc, &opts)
                    .map_err(|source| StartError::Refused { path: path.clone(), source })?;
                created += 1;
            }
        }
        Ok(created)
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(controllers) = self.controllers.take() {
            controllers.abort();
        }
        if let Some(publisher) = self.publisher.take() {
            publisher.abort();
        }
    }
}

/// The kubeconfig for a server at `url`: one cluster, one context, namespace `default`.
pub fn kubeconfig_for(url: &str) -> String {
    kubeconfig_with_token(url, ADMIN_TOKEN)
}

/// The same kubeconfig with another bearer token, the `user` of the requests it makes in
/// [`TestApiServer::requests`].
pub fn kubeconfig_with_token(url: &str, token: &str) -> String {
    kubeconfig_text(url, token, None)
}

fn kubeconfig_text(url: &str, token: &str, ca_pem: Option<&str>) -> String {
    use base64::Engine as _;
    let ca = ca_pem.map_or_else(String::new, |pem| {
        format!("\n    certificate-authority-data: {}", base64::engine::general_purpose::STANDARD.encode(pem))
    });
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: biometrics-test
  cluster:
    server: {url}{ca}
users:
- name: biometrics-test
  user:
    token: {token}
contexts:
- name: biometrics-test
  context:
    cluster: biometrics-test
    user: biometrics-test
    namespace: default
current-context: biometrics-test
"
    )
}
