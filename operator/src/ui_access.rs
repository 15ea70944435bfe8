//! The capture browser's `token` mode, answered by the cluster: a bearer token is who
//! TokenReview says it is (for the API server's audience), and that user may see a
//! namespace's captures when a SubjectAccessReview allows it `get profilecaptures` there.
//! The operator asks with its own credentials, which need `create` on `tokenreviews` and
//! `subjectaccessreviews` (the chart grants both only in this mode).

use biometrics_ui::access::{Access, AccessError, AccessFuture, Viewer};
use k8s_openapi::api::{authentication::v1::TokenReview, authorization::v1::SubjectAccessReview};
use kube::{Api, Client, api::PostParams};
use serde_json::json;

/// Token mode's questions, put to the API server.
pub struct ClusterAccess {
    client: Client,
}

impl ClusterAccess {
    /// Asks with `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn unavailable(what: &str, e: &kube::Error) -> AccessError {
    AccessError::Unavailable(format!("the Kubernetes API could not answer the {what}: {e}"))
}

impl Access for ClusterAccess {
    fn authenticate<'a>(&'a self, token: &'a str) -> AccessFuture<'a, Viewer> {
        Box::pin(async move {
            let review: TokenReview = serde_json::from_value(json!({"spec": {"token": token}}))
                .map_err(|e| AccessError::Unavailable(e.to_string()))?;
            let answer = Api::<TokenReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| unavailable("TokenReview", &e))?;
            let status = answer.status.unwrap_or_default();
            // The reason (an expired token, a deleted pod) is the cluster's to log, not
            // this page's to tell whoever holds the token.
            if status.authenticated != Some(true) {
                return Err(AccessError::Unauthenticated("the cluster did not accept the bearer token".into()));
            }
            let user = status.user.unwrap_or_default();
            Ok(Viewer {
                name: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
            })
        })
    }

    fn may_view<'a>(&'a self, viewer: &'a Viewer, namespace: &'a str) -> AccessFuture<'a, bool> {
        Box::pin(async move {
            let review: SubjectAccessReview = serde_json::from_value(json!({"spec": {
                "user": viewer.name, "uid": viewer.uid, "groups": viewer.groups, "extra": viewer.extra,
                "resourceAttributes": {"namespace": namespace, "verb": "get", "group": biometrics_crds::GROUP, "resource": "profilecaptures"},
            }}))
            .map_err(|e| AccessError::Unavailable(e.to_string()))?;
            let answer = Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| unavailable("SubjectAccessReview", &e))?;
            Ok(answer.status.is_some_and(|s| s.allowed))
        })
    }
}
