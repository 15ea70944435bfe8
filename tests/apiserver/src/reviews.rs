//! The review APIs, which store nothing and answer in the created object's `status`:
//! SelfSubjectAccessReview (`kubectl auth can-i`), SubjectAccessReview and
//! LocalSubjectAccessReview (what another user may do, as webhooks and proxies ask), and
//! SelfSubjectReview (`kubectl auth whoami`), and TokenReview (who a bearer token stands for,
//! as kube-rbac-proxy and other delegating servers ask). The caller was authorized to create
//! the review like any other request.

use axum::{
    body::Bytes,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{
    audit::RequestRecord,
    error::ApiError,
    rbac::{Decision, UserInfo},
    server::AppState,
};

/// Answers a POST to a review path, or `None` when the path is not one.
pub fn serve(state: &AppState, caller: &UserInfo, path: &str, body: &Bytes) -> Option<Result<Response, ApiError>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let kind = match segments.as_slice() {
        ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] => Review::SelfAccess,
        ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] => Review::Access(None),
        ["apis", "authorization.k8s.io", "v1", "namespaces", ns, "localsubjectaccessreviews"] => {
            Review::Access(Some((*ns).to_owned()))
        }
        ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"] => Review::WhoAmI,
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => Review::Token,
        _ => return None,
    };
    Some(answer(state, caller, &kind, body))
}

enum Review {
    SelfAccess,
    /// A SubjectAccessReview, or a LocalSubjectAccessReview in this namespace.
    Access(Option<String>),
    WhoAmI,
    Token,
}

fn answer(state: &AppState, caller: &UserInfo, kind: &Review, body: &Bytes) -> Result<Response, ApiError> {
    let mut review: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the review is not JSON ({e}); send it as application/json")))?;
    let status = match kind {
        Review::WhoAmI => json!({"userInfo": caller.to_json()}),
        Review::Token => token(state, &review["spec"])?,
        Review::SelfAccess => access(state, caller, &review["spec"], None)?,
        Review::Access(namespace) => {
            let spec = &review["spec"];
            let name = spec.get("user").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() && spec.get("groups").is_none() {
                return Err(ApiError::bad_request("spec.user or spec.groups is required"));
            }
            let groups = crate::strings(spec.get("groups"));
            let subject = UserInfo { name: name.to_owned(), groups, ..UserInfo::anonymous() };
            access(state, &subject, spec, namespace.as_deref())?
        }
    };
    review["status"] = status;
    review["metadata"] = json!({"creationTimestamp": null});
    Ok((StatusCode::CREATED, axum::Json(review)).into_response())
}

/// Who the token of a TokenReview's `spec` stands for, for the audiences it asks about (the
/// API server's own when none).
fn token(state: &AppState, spec: &Value) -> Result<Value, ApiError> {
    let token = spec.get("token").and_then(Value::as_str).unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::bad_request("spec.token is required"));
    }
    let audiences = crate::strings(spec.get("audiences"));
    Ok(match crate::server::authenticate_token(state, token, &audiences) {
        Ok((user, audiences)) => json!({"authenticated": true, "user": user.to_json(), "audiences": audiences}),
        Err(error) => json!({"authenticated": false, "user": {}, "error": error}),
    })
}

/// Whether `user` may do what `spec` describes (its `resourceAttributes` or
/// `nonResourceAttributes`).
fn access(state: &AppState, user: &UserInfo, spec: &Value, namespace: Option<&str>) -> Result<Value, ApiError> {
    let text = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
    let request = if let Some(attributes) = spec.get("resourceAttributes") {
        let ns = text(attributes, "namespace");
        if namespace.is_some_and(|n| !ns.is_empty() && n != ns) {
            return Err(ApiError::bad_request(format!(
                "spec.resourceAttributes.namespace must match the review's namespace ({})",
                namespace.unwrap_or_default()
            )));
        }
        RequestRecord {
            user: user.name.clone(),
            verb: text(attributes, "verb"),
            group: text(attributes, "group"),
            version: text(attributes, "version"),
            resource: text(attributes, "resource"),
            subresource: text(attributes, "subresource"),
            namespace: namespace.map_or(ns, str::to_owned),
            name: text(attributes, "name"),
            ..RequestRecord::default()
        }
    } else if let Some(attributes) = spec.get("nonResourceAttributes") {
        RequestRecord {
            user: user.name.clone(),
            verb: text(attributes, "verb"),
            path: text(attributes, "path"),
            ..RequestRecord::default()
        }
    } else {
        return Err(ApiError::bad_request(
            "exactly one of spec.resourceAttributes and spec.nonResourceAttributes is required",
        ));
    };
    if state.rbac.is_none() {
        return Ok(json!({"allowed": true, "reason": "every request is allowed: the server runs without RBAC"}));
    }
    Ok(match crate::rbac::policy(&state.store).authorize(user, &request) {
        Decision::Allowed(reason) => json!({"allowed": true, "reason": reason}),
        Decision::Denied(_) => json!({"allowed": false}),
    })
}
