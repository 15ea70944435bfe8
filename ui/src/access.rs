//! Who may see what when the browser runs in `token` mode (reachable on every address, as
//! kube-rbac-proxy and Kiali's token login are): every API request carries a bearer token,
//! which the cluster authenticates (TokenReview), and a namespace's captures are shown only
//! to a user the cluster allows to `get profilecaptures` there (SubjectAccessReview). The
//! cluster is asked through an [`Access`], so the gate is tested without one. The pages and
//! the flame-graph viewer are static files and stay open: they hold no data.

use std::{collections::BTreeMap, future::Future, pin::Pin};

use axum::http::{HeaderMap, header};

/// An authenticated user of the browser, as TokenReview describes them (what a
/// SubjectAccessReview then asks about).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Viewer {
    /// The user's name.
    pub name: String,
    /// Its uid, when the cluster gives one.
    pub uid: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// What the authenticator added.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why the cluster's answer could not be had or was no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The token does not authenticate (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The cluster could not be asked (502).
    #[error("{0}")]
    Unavailable(String),
}

/// A boxed answer of the cluster.
pub type AccessFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, AccessError>> + Send + 'a>>;

/// What token mode asks of the cluster.
pub trait Access: Send + Sync + 'static {
    /// Who `token` stands for.
    fn authenticate<'a>(&'a self, token: &'a str) -> AccessFuture<'a, Viewer>;
    /// Whether `viewer` may `get profilecaptures` in `namespace`.
    fn may_view<'a>(&'a self, viewer: &'a Viewer, namespace: &'a str) -> AccessFuture<'a, bool>;
}

/// The bearer token of a request, if it sent one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The namespace an API path is about (`/api/v1/namespaces/<ns>/…`), if one.
pub fn namespace_of(path: &str) -> Option<&str> {
    path.strip_prefix("/api/v1/namespaces/")?.split('/').next().filter(|ns| !ns.is_empty())
}

/// kube-apiserver's words for a user who may not read a namespace's captures.
pub fn forbidden_message(viewer: &Viewer, namespace: &str) -> String {
    format!(
        "profilecaptures.biometrics.io is forbidden: User \"{}\" cannot get resource \"profilecaptures\" in API group \"biometrics.io\" in the namespace \"{namespace}\"",
        viewer.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_namespaces_are_read_from_the_request() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc.def".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc.def"));
        headers.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        assert_eq!(namespace_of("/api/v1/namespaces/shop/captures/web/runs/r1"), Some("shop"));
        assert_eq!(namespace_of("/api/v1/captures"), None);
        assert_eq!(namespace_of("/api/v1/namespaces/"), None);
    }
}
