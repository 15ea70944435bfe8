//! API errors, answered as `Status` objects the way kube-apiserver answers them.

use serde_json::{Value, json};

use crate::schema::FieldError;

/// An API error: HTTP code, `Status.reason`, message and details.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, `Invalid`, …).
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// `Status.details`, when the error concerns one object.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 404 for an object.
    pub fn not_found(qualified: &str, name: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found"));
        e.details = Some(details(qualified, name));
        e
    }

    /// 401: no credentials this server accepts.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403, with the authorizer's message, about a request for `resource` (`plural` or
    /// `plural.group`) `name`.
    pub fn forbidden(message: String, resource: &str, name: &str) -> Self {
        let mut e = Self::new(403, "Forbidden", message);
        e.details = Some(details(resource, name));
        e
    }

    /// 404 for a path nothing serves.
    pub fn no_route(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    /// 409 AlreadyExists.
    pub fn already_exists(qualified: &str, name: &str) -> Self {
        let mut e = Self::new(409, "AlreadyExists", format!("{qualified} \"{name}\" already exists"));
        e.details = Some(details(qualified, name));
        e
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(qualified: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {qualified} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
        e.details = Some(details(qualified, name));
        e
    }

    /// 409 Conflict of a server-side apply.
    pub fn apply_conflict(message: String, causes: Vec<Value>) -> Self {
        let mut e = Self::new(409, "Conflict", message);
        e.details = Some(json!({"causes": causes}));
        e
    }

    /// 422 Invalid with field causes.
    pub fn invalid(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Self {
        let qualified_kind = if group.is_empty() { kind.to_owned() } else { format!("{kind}.{group}") };
        let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let summary = if listed.len() == 1 { listed[0].clone() } else { format!("[{}]", listed.join(", ")) };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                let shown = e.to_string();
                let message = shown.strip_prefix(&format!("{}: ", e.field)).unwrap_or(&shown).to_owned();
                json!({"reason": e.kind.reason(), "message": message, "field": e.field})
            })
            .collect();
        let mut err = Self::new(422, "Invalid", format!("{qualified_kind} \"{name}\" is invalid: {summary}"));
        err.details = Some(json!({"name": name, "group": group, "kind": kind, "causes": causes}));
        err
    }

    /// 422 Invalid of a request body that is not a stored object (a TokenRequest's spec),
    /// with one field's message.
    pub fn invalid_message(qualified_kind: &str, name: &str, message: &str) -> Self {
        Self::new(422, "Invalid", format!("{qualified_kind} \"{name}\" is invalid: {message}"))
    }

    /// 409 Conflict with kube-apiserver's message for the case.
    pub fn conflict_message(message: impl Into<String>) -> Self {
        Self::new(409, "Conflict", message)
    }

    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    /// 406: nothing the client accepts.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 410 for a watch from a resourceVersion no longer kept.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        status
    }
}

fn details(qualified: &str, name: &str) -> Value {
    let (kind, group) = qualified.split_once('.').unwrap_or((qualified, ""));
    json!({"name": name, "group": group, "kind": kind})
}
