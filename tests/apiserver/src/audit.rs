//! The log of what each request would be authorized as, so a test can hold a client's
//! requests against RBAC rules. Each request is described the way kube-apiserver's
//! request-info step describes it to the authorizer: from the method, the path and the
//! query alone, before anything is looked up, so a request the server then refuses (404,
//! 409, 422) is still in the log, as it is still authorized in a real cluster.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
};

use axum::http::{HeaderMap, Method, Uri, header};

use crate::rbac::UserInfo;

/// One authorization check: who asked to do what to which resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestRecord {
    /// The bearer token the client sent. This server authenticates nobody, so the token
    /// stands for the user: give each client its own kubeconfig token to tell them apart.
    pub user: String,
    /// The client's `User-Agent`.
    pub user_agent: String,
    /// The authorization verb: `get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete` or `deletecollection`; for a non-resource request the lowercase method.
    pub verb: String,
    /// The API group, empty for the core group.
    pub group: String,
    /// The API version.
    pub version: String,
    /// The plural resource; empty for a non-resource request (discovery, `/version`, …).
    pub resource: String,
    /// The subresource (`status`), or empty.
    pub subresource: String,
    /// The namespace, empty for cluster-scoped requests and requests across namespaces.
    pub namespace: String,
    /// The object's name; empty for collection requests.
    pub name: String,
    /// The request path.
    pub path: String,
}

impl RequestRecord {
    /// Describes a request as kube-apiserver's authorizer would see it.
    pub fn from_request(method: &Method, uri: &Uri, headers: &HeaderMap) -> Self {
        let header_text =
            |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let user = header_text(header::AUTHORIZATION).strip_prefix("Bearer ").unwrap_or_default().to_owned();
        let query: BTreeMap<String, String> = uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
            .unwrap_or_default();
        let mut record = Self {
            user,
            user_agent: header_text(header::USER_AGENT),
            verb: method.as_str().to_ascii_lowercase(),
            group: String::new(),
            version: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            path: uri.path().to_owned(),
        };
        record.parse_resource(method, &query);
        record
    }

    /// Fills the resource fields when the path is a resource path; leaves a non-resource
    /// request (fewer segments than `/api/<version>/<resource>` or
    /// `/apis/<group>/<version>/<resource>`) as it is.
    fn parse_resource(&mut self, method: &Method, query: &BTreeMap<String, String>) {
        let path = self.path.clone();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, mut parts) = match segments.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
            ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
            _ => return,
        };
        self.group = group.to_owned();
        self.version = version.to_owned();
        // `namespaces/<ns>/<resource>/…` is a namespaced resource; `namespaces/<ns>` and its
        // own subresources (`status`, `finalize`) are the Namespace object itself.
        if parts[0] == "namespaces" && parts.len() > 1 {
            self.namespace = parts[1].to_owned();
            if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
                parts = &parts[2..];
            }
        }
        self.resource = parts[0].to_owned();
        self.name = parts.get(1).copied().unwrap_or_default().to_owned();
        self.subresource = parts.get(2).copied().unwrap_or_default().to_owned();
        self.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_owned();
        if self.name.is_empty() && self.verb == "get" {
            let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
            self.verb = if watch { "watch" } else { "list" }.to_owned();
            // A list or watch of one object by field selector is authorized for that name.
            if let Some(name) = exact_name(query.get("fieldSelector").map_or("", String::as_str)) {
                self.name = name.to_owned();
            }
        }
        if self.name.is_empty() && self.verb == "delete" {
            self.verb = "deletecollection".into();
        }
    }

    /// True for a request on a resource, false for discovery and other plain paths.
    pub fn is_resource_request(&self) -> bool {
        !self.resource.is_empty()
    }

    /// The resource as RBAC rules name it: `plural` or `plural/subresource`.
    pub fn rbac_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The resource as errors name it: `plural` for the core group, `plural.group` otherwise.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() { self.resource.clone() } else { format!("{}.{}", self.resource, self.group) }
    }

    /// The same request checked for another verb (as a server-side apply that creates its
    /// object is also checked for `create`).
    pub fn with_verb(&self, verb: &str) -> Self {
        Self { verb: verb.to_owned(), ..self.clone() }
    }
}

impl std::fmt::Display for RequestRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.is_resource_request() {
            return write!(f, "{} {} (non-resource)", self.verb, self.path);
        }
        let group = if self.group.is_empty() { "core" } else { &self.group };
        write!(f, "{} {}/{}", self.verb, group, self.rbac_resource())?;
        if !self.name.is_empty() {
            write!(f, " {:?}", self.name)?;
        }
        if self.namespace.is_empty() {
            write!(f, " (cluster-wide)")
        } else {
            write!(f, " in namespace {}", self.namespace)
        }
    }
}

/// `metadata.name=<name>` (or `==`) in a field selector, alone or among other terms.
fn exact_name(selector: &str) -> Option<&str> {
    selector.split(',').find_map(|term| {
        let (field, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        (field.trim() == "metadata.name").then(|| value.trim())
    })
}

/// One decision of the RBAC authorizer: the authenticated user, the attributes it was asked
/// about and its answer. Replaying the attributes through [`crate::rbac::Policy::authorize`]
/// against other rules tells what those rules would have allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Who asked (for an impersonation check, the impersonator).
    pub user: UserInfo,
    /// What was asked; `user` in it is the bearer token, not who it authenticated as.
    pub attributes: RequestRecord,
    /// Whether RBAC allowed it.
    pub allowed: bool,
}

/// The checks of every request served, in arrival order, and with RBAC on, every decision
/// of the authorizer. It grows with the requests: it is meant for tests, which run for
/// seconds, and is off unless asked for.
#[derive(Debug, Default)]
pub struct RequestLog {
    checks: Mutex<Vec<RequestRecord>>,
    decisions: Mutex<Vec<Authorization>>,
}

impl RequestLog {
    /// Appends a check.
    pub fn record(&self, record: RequestRecord) {
        self.checks.lock().unwrap_or_else(PoisonError::into_inner).push(record);
    }

    /// Every check so far.
    pub fn all(&self) -> Vec<RequestRecord> {
        self.checks.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Appends a decision of the authorizer.
    pub fn record_decision(&self, decision: Authorization) {
        self.decisions.lock().unwrap_or_else(PoisonError::into_inner).push(decision);
    }

    /// Every decision so far.
    pub fn decisions(&self) -> Vec<Authorization> {
        self.decisions.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(method: Method, uri: &str) -> RequestRecord {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer alice".parse().unwrap());
        RequestRecord::from_request(&method, &uri.parse().unwrap(), &headers)
    }

    /// verb, group, RBAC resource, namespace, name and user.
    fn summary(r: &RequestRecord) -> [String; 6] {
        [r.verb.clone(), r.group.clone(), r.rbac_resource(), r.namespace.clone(), r.name.clone(), r.user.clone()]
    }

    #[test]
    fn verbs_follow_method_name_and_watch() {
        let cases = [
            (Method::GET, "/api/v1/pods?watch=true&resourceVersion=5", ("watch", "", "pods", "", "")),
            (Method::GET, "/api/v1/namespaces/shop/pods", ("list", "", "pods", "shop", "")),
            (Method::GET, "/api/v1/namespaces/shop/secrets/auth", ("get", "", "secrets", "shop", "auth")),
            (Method::POST, "/api/v1/namespaces/shop/secrets", ("create", "", "secrets", "shop", "")),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/ops/leases/op",
                ("update", "coordination.k8s.io", "leases", "ops", "op"),
            ),
            (
                Method::PATCH,
                "/apis/biometrics.io/v1alpha1/namespaces/shop/cachepolicies/c/status",
                ("patch", "biometrics.io", "cachepolicies/status", "shop", "c"),
            ),
            (Method::DELETE, "/api/v1/namespaces/shop/pods/p", ("delete", "", "pods", "shop", "p")),
            (Method::DELETE, "/api/v1/namespaces/shop/pods", ("deletecollection", "", "pods", "shop", "")),
            (Method::GET, "/api/v1/namespaces/shop", ("get", "", "namespaces", "shop", "shop")),
            (Method::PUT, "/api/v1/namespaces/shop/finalize", ("update", "", "namespaces/finalize", "shop", "shop")),
            (
                Method::GET,
                "/api/v1/namespaces/shop/pods?watch=1&fieldSelector=metadata.name%3Dp",
                ("watch", "", "pods", "shop", "p"),
            ),
        ];
        for (method, uri, (verb, group, resource, namespace, name)) in cases {
            let r = record(method, uri);
            assert_eq!(summary(&r), [verb, group, resource, namespace, name, "alice"].map(str::to_owned), "{uri}");
            assert!(r.is_resource_request());
        }
    }

    #[test]
    fn discovery_is_not_a_resource_request() {
        for uri in ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/version", "/openapi/v3"] {
            let r = record(Method::GET, uri);
            assert!(!r.is_resource_request(), "{uri}");
            assert_eq!(r.verb, "get");
            assert_eq!(r.to_string(), format!("get {uri} (non-resource)"));
        }
    }

    #[test]
    fn display_names_the_scope() {
        assert_eq!(
            record(Method::PATCH, "/api/v1/namespaces/shop/configmaps/trust").with_verb("create").to_string(),
            "create core/configmaps \"trust\" in namespace shop"
        );
        assert_eq!(
            record(Method::GET, "/apis/apps/v1/deployments").to_string(),
            "list apps/deployments (cluster-wide)"
        );
    }

    /// A kube-rs client of `server` whose requests are `user`'s.
    async fn client_as(server: &crate::TestApiServer, user: &str) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig_as(user)).unwrap();
        let options = kube::config::KubeConfigOptions::default();
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn the_server_logs_each_users_checks_when_asked() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::{Api, Patch, PatchParams};

        let options = crate::Options { record_requests: true, ..crate::Options::default() };
        let server = crate::TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(client_as(&server, "bob").await, "default");
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}});
        for _ in 0..2 {
            api.patch("trust", &PatchParams::apply("bob"), &Patch::Apply(&cm)).await.unwrap();
        }
        assert!(api.get_opt("absent").await.unwrap().is_none());
        let seen: Vec<String> = server.requests().iter().filter(|r| r.user == "bob").map(ToString::to_string).collect();
        assert_eq!(
            seen,
            [
                "patch core/configmaps \"trust\" in namespace default",
                "create core/configmaps \"trust\" in namespace default",
                "patch core/configmaps \"trust\" in namespace default",
                "get core/configmaps \"absent\" in namespace default",
            ],
            "the apply that creates is also a create; a refused get is still checked"
        );

        let quiet = crate::TestApiServer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(client_as(&quiet, "bob").await, "default");
        assert!(api.get_opt("absent").await.unwrap().is_none());
        assert!(quiet.requests().is_empty(), "off by default");
    }
}
