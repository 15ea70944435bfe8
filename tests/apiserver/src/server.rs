//! The HTTP face of the store: discovery, the REST verbs on every resource path, watches,
//! and `Status` errors — parsed and answered the way kube-apiserver does for kube-rs and
//! kubectl.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::{
    audit::{RequestLog, RequestRecord},
    error::ApiError,
    negotiation::{self, Output},
    registry::{ResourceType, TypeKey},
    schema::FieldValidation,
    selectors::{FieldSelector, LabelSelector},
    store::{EventType, Patch, Store, Subresource, WriteOptions},
    table,
};

/// Counts of requests by verb and resource, so tests can tell a relist loop from a watch.
#[derive(Debug, Default)]
pub struct RequestCounts(Mutex<BTreeMap<String, u64>>);

impl RequestCounts {
    fn bump(&self, key: String) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(key).or_default() += 1;
    }

    /// The counts as kube-apiserver's `/metrics` exposes them: `apiserver_request_total`
    /// by `verb` and `resource`.
    pub fn exposition(&self) -> String {
        let counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut text = String::from("# TYPE apiserver_request_total counter\n");
        for (key, n) in counts.iter() {
            let (verb, resource) = key.split_once(' ').unwrap_or((key, ""));
            text.push_str(&format!("apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\"}} {n}\n"));
        }
        text
    }

    /// How many requests of `verb` (`list`, `watch`, `get`, `create`, `update`, `patch`,
    /// `delete`) hit resource `plural`.
    pub fn get(&self, verb: &str, plural: &str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&format!("{verb} {plural}"))
            .copied()
            .unwrap_or(0)
    }
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The objects.
    pub store: Store,
    /// Request counts.
    pub counts: Arc<RequestCounts>,
    /// The address clients reach the server at.
    pub address: String,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Where each request's authorization check is recorded, when asked for.
    pub requests: Option<Arc<RequestLog>>,
    /// The kubelet, once one runs (pods' logs are in its state directory).
    pub kubelet_state: Arc<std::sync::OnceLock<crate::kubelet::NodeInfo>>,
    /// How late watches deliver each change.
    pub watch_delay: Duration,
    /// Users by bearer token, when requests are authenticated and authorized by RBAC;
    /// `None` lets every request through.
    pub rbac: Option<Arc<crate::rbac::Tokens>>,
    /// Signs and checks ServiceAccount tokens.
    pub service_accounts: Arc<crate::serviceaccounts::Issuer>,
}

impl AppState {
    /// State for a server at `address`.
    pub fn new(store: Store, address: String) -> Self {
        Self {
            store,
            counts: Arc::default(),
            address,
            bookmark_interval: Duration::from_secs(5),
            requests: None,
            kubelet_state: Arc::default(),
            watch_delay: Duration::ZERO,
            rbac: None,
            service_accounts: Arc::new(crate::serviceaccounts::Issuer::generate().expect("ring makes a P-256 key")),
        }
    }
}

/// Where a request path points.
#[derive(Debug, Clone)]
enum Target {
    GroupDiscovery { group: String, version: String },
    Collection { rt: ResourceType, namespace: Option<String> },
    Object { rt: ResourceType, namespace: String, name: String, sub: Subresource },
    Scale { rt: ResourceType, namespace: String, name: String },
    PodLog { namespace: String, name: String },
    PortForward { namespace: String, name: String },
    Exec { namespace: String, name: String },
}

fn parse_target(state: &AppState, path: &str) -> Result<Target, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => (String::new(), (*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => ((*group).to_owned(), (*version).to_owned(), rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let registry = state.store.registry();
    let lookup = |plural: &str| registry.get(&group, &version, plural).cloned().ok_or_else(|| ApiError::no_route(path));
    let sub = |s: &str| match s {
        "status" => Ok(Subresource::Status),
        _ => Err(ApiError::no_route(path)),
    };
    match rest {
        [] => {
            if group.is_empty() && version != "v1"
                || !group.is_empty() && !registry.all().any(|t| t.group == group && t.version == version)
            {
                return Err(ApiError::no_route(path));
            }
            Ok(Target::GroupDiscovery { group, version })
        }
        ["namespaces", ns, plural] if *plural != "status" && *plural != "finalize" => {
            let rt = lookup(plural)?;
            if !rt.namespaced {
                return Err(ApiError::no_route(path));
            }
            Ok(Target::Collection { rt, namespace: Some((*ns).to_owned()) })
        }
        ["namespaces", ns, plural, name] => Ok(Target::Object {
            rt: lookup(plural)?,
            namespace: (*ns).to_owned(),
            name: (*name).to_owned(),
            sub: Subresource::Main,
        }),
        ["namespaces", ns, "pods", name, "portforward"] if group.is_empty() => {
            Ok(Target::PortForward { namespace: (*ns).to_owned(), name: (*name).to_owned() })
        }
        ["namespaces", ns, "pods", name, "exec"] if group.is_empty() => {
            Ok(Target::Exec { namespace: (*ns).to_owned(), name: (*name).to_owned() })
        }
        ["namespaces", ns, "pods", name, "log"] if group.is_empty() => {
            Ok(Target::PodLog { namespace: (*ns).to_owned(), name: (*name).to_owned() })
        }
        ["namespaces", ns, plural, name, "scale"] if lookup(plural)?.scale.is_some() => {
            Ok(Target::Scale { rt: lookup(plural)?, namespace: (*ns).to_owned(), name: (*name).to_owned() })
        }
        ["namespaces", ns, plural, name, s] => {
            let rt = lookup(plural)?;
            if !rt.status_subresource {
                return Err(ApiError::no_route(path));
            }
            Ok(Target::Object { rt, namespace: (*ns).to_owned(), name: (*name).to_owned(), sub: sub(s)? })
        }
        [plural] => Ok(Target::Collection { rt: lookup(plural)?, namespace: None }),
        [plural, name] => {
            let rt = lookup(plural)?;
            if rt.namespaced {
                return Err(ApiError::no_route(path));
            }
            Ok(Target::Object { rt, namespace: String::new(), name: (*name).to_owned(), sub: Subresource::Main })
        }
        [plural, name, "scale"] if lookup(plural).is_ok_and(|rt| !rt.namespaced && rt.scale.is_some()) => {
            Ok(Target::Scale { rt: lookup(plural)?, namespace: String::new(), name: (*name).to_owned() })
        }
        [plural, name, s] => {
            let rt = lookup(plural)?;
            if rt.namespaced || !rt.status_subresource {
                return Err(ApiError::no_route(path));
            }
            Ok(Target::Object { rt, namespace: String::new(), name: (*name).to_owned(), sub: sub(s)? })
        }
        _ => Err(ApiError::no_route(path)),
    }
}

fn query_map(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut response = (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append("Warning", v);
        }
    }
    response
}

/// An error as kube-apiserver sends it: a `Status` object with the error's code.
pub fn error_response(e: &ApiError) -> Response {
    json_response(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &e.to_status(), &[])
}

fn parse_body(bytes: &Bytes, content_type: &str) -> Result<Value, ApiError> {
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({content_type}) - accepted media types include: application/json, application/yaml"
        )));
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    if content_type.contains("yaml") {
        let text =
            std::str::from_utf8(bytes).map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
        serde_saphyr::from_str(text).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("the body of the request could not be decoded: {e}")))
    }
}

fn write_options(query: &BTreeMap<String, String>, headers: &HeaderMap) -> Result<WriteOptions, ApiError> {
    let field_validation = match query.get("fieldValidation").map(String::as_str) {
        None | Some("" | "Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict, got {other:?}"
            )));
        }
    };
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown");
    let default_manager = user_agent.split('/').next().unwrap_or("unknown").to_owned();
    Ok(WriteOptions {
        field_manager: query.get("fieldManager").cloned().unwrap_or(default_manager),
        field_validation,
        dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
        force: query.get("force").is_some_and(|f| f == "true"),
    })
}

/// Answers every request.
pub async fn handle(
    state: AppState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response {
    let record = RequestRecord::from_request(&method, &uri, &headers);
    if let Some(log) = &state.requests {
        log.record(record.clone());
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let response = respond(state, method, uri, headers, body, upgrade, &record).await;
    negotiate(response, &accept).await
}

async fn respond(
    state: AppState,
    method: Method,
    uri: Uri,
    mut headers: HeaderMap,
    body: Bytes,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    record: &RequestRecord,
) -> Response {
    let user = match authorize(&state, &headers, record) {
        Ok(user) => user,
        Err(e) => return error_response(&e),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    // A protobuf object is read into the JSON everything else works on; patches are never
    // protobuf, and keep their 415. A DELETE's options are optional: unreadable ones are none.
    let protobuf_body = negotiation::is_protobuf(content_type) && method != Method::PATCH;
    let body = if protobuf_body {
        match protobuf_to_json(&body) {
            Ok(json) => {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                json
            }
            Err(_) if method == Method::DELETE => Bytes::new(),
            Err(e) => return error_response(&e),
        }
    } else {
        body
    };
    if state.rbac.is_some()
        && crate::escalation::guards(record)
        && let Err(e) = object_after(&state, &method, &uri, &headers, &body, record)
            .and_then(|object| crate::escalation::check(&crate::rbac::policy(&state.store), &user, record, &object))
    {
        return error_response(&e);
    }
    if method == Method::POST
        && let Some(review) = crate::reviews::serve(&state, &user, uri.path(), &body)
    {
        return review.unwrap_or_else(|e| error_response(&e));
    }
    if method == Method::POST
        && let Some(answer) =
            crate::serviceaccounts::serve_token_request(&state.store, &state.service_accounts, uri.path(), &body)
    {
        return answer.unwrap_or_else(|e| error_response(&e));
    }
    match route(&state, &user, &method, &uri, &headers, &body, upgrade, protobuf_body).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

/// The JSON of a protobuf request body; 415 for a kind with no protobuf form (a custom
/// resource), 400 for bytes that are not an object.
fn protobuf_to_json(body: &Bytes) -> Result<Bytes, ApiError> {
    match crate::protobuf::decode_object(body) {
        Ok(object) => Ok(Bytes::from(object.to_string())),
        Err(crate::protobuf::DecodeError::UnknownKind { .. }) => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            negotiation::accepted(false)
        ))),
        Err(crate::protobuf::DecodeError::Malformed(e)) => {
            Err(ApiError::bad_request(format!("the body of the request could not be decoded: {e}")))
        }
    }
}

/// A complete JSON answer rewritten in protobuf when the client prefers it and the object
/// is a built-in kind (Tables stay JSON); streams and other bodies pass as they are.
async fn negotiate(response: Response, accept: &str) -> Response {
    use axum::body::HttpBody;
    let json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // A 406 is written in JSON, as kube-apiserver writes what it could not negotiate.
    if !json
        || response.status() == StatusCode::NOT_ACCEPTABLE
        || !accept.contains(crate::protobuf::MEDIA_TYPE)
        || response.body().size_hint().exact().is_none()
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return error_response(&ApiError::internal("the response could not be read"));
    };
    let encoded = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(|object| object.get("kind").and_then(Value::as_str) != Some("Table"))
        .filter(|object| negotiation::output(accept, crate::protobuf::encodable(object)) == Output::Protobuf)
        .map(|object| crate::protobuf::encode_object(&object));
    match encoded {
        Some(Ok(Some(protobuf))) => {
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::protobuf::MEDIA_TYPE));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(protobuf))
        }
        Some(Err(e)) => {
            error_response(&ApiError::internal(format!("the object could not be written as protobuf: {e}")))
        }
        _ => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// Who sent the request (or whom it impersonates, when allowed to), and whether RBAC lets
/// them do it (every request passes when the server runs without RBAC).
fn authorize(state: &AppState, headers: &HeaderMap, record: &RequestRecord) -> Result<crate::rbac::UserInfo, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let impersonation = crate::impersonation::requested(headers)?;
    if state.rbac.is_none() {
        // Without authentication the token stands for the user, who may do anything.
        let user = token.map_or_else(crate::rbac::UserInfo::anonymous, |t| {
            crate::rbac::UserInfo::authenticated(t, &["system:masters"])
        });
        return Ok(impersonation.map_or(user, |wanted| crate::impersonation::user(&wanted)));
    }
    let user = match token {
        Some(token) => authenticate_token(state, token, &[]).map_err(|_| ApiError::unauthorized())?.0,
        None => crate::rbac::UserInfo::anonymous(),
    };
    let policy = crate::rbac::policy(&state.store);
    let user = match impersonation {
        Some(wanted) => {
            for check in crate::impersonation::checks(&wanted) {
                authorize_check(state, &policy, &user, &check)?;
            }
            crate::impersonation::user(&wanted)
        }
        None => user,
    };
    authorize_check(state, &policy, &user, record)?;
    // A WebSocket upgrade of exec, attach or port-forward arrives as a GET; kube-apiserver
    // (1.35 and later) also asks for `create`, the verb the same request has over SPDY.
    let streaming = matches!(record.subresource.as_str(), "exec" | "attach" | "portforward");
    if streaming && record.verb == "get" && crate::portforward::websocket_key(headers).is_some() {
        authorize_check(state, &policy, &user, &RequestRecord { verb: "create".into(), ..record.clone() })?;
    }
    Ok(user)
}

/// One question to the RBAC authorizer, its decision logged when requests are recorded;
/// the error kube-apiserver answers a denial with.
fn authorize_check(
    state: &AppState,
    policy: &crate::rbac::Policy,
    user: &crate::rbac::UserInfo,
    check: &RequestRecord,
) -> Result<(), ApiError> {
    let decision = policy.authorize(user, check);
    if let Some(log) = &state.requests {
        log.record_decision(crate::audit::Authorization {
            user: user.clone(),
            attributes: check.clone(),
            allowed: decision.allowed(),
        });
    }
    match decision {
        crate::rbac::Decision::Allowed(_) => Ok(()),
        // kube-apiserver answers an anonymous request it would not allow with 401.
        crate::rbac::Decision::Denied(_) if user.groups.iter().any(|g| g == "system:unauthenticated") => {
            Err(ApiError::unauthorized())
        }
        crate::rbac::Decision::Denied(message) => {
            Err(ApiError::forbidden(message, &check.qualified_resource(), &check.name))
        }
    }
}

/// The object a create, update or patch would store (a patch applied as a dry run), for
/// checks that judge the result rather than the request.
fn object_after(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    record: &RequestRecord,
) -> Result<Value, ApiError> {
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_owned();
    let value = parse_body(body, &content_type)?;
    if *method != Method::PATCH {
        return Ok(value);
    }
    let query = query_map(uri);
    let opts = WriteOptions { dry_run: true, ..write_options(&query, headers)? };
    let key = TypeKey { group: record.group.clone(), plural: record.resource.clone() };
    let patch = patch_of(&content_type, value, &query)?;
    match state.store.patch(&key, &record.namespace, &record.name, patch.clone(), Subresource::Main, &opts) {
        Ok((object, _)) => Ok(object),
        // An apply that creates its object: the applied configuration is the object.
        Err(e) if e.code == 404 => match patch {
            Patch::Apply(object) => Ok(object),
            _ => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Who a bearer token stands for, by the static token file or as a ServiceAccount token meant
/// for one of `audiences` (the API server's own when empty), with the audiences it was
/// accepted for; or why it does not authenticate.
pub fn authenticate_token(
    state: &AppState,
    token: &str,
    audiences: &[String],
) -> Result<(crate::rbac::UserInfo, Vec<String>), String> {
    let api_audience = crate::serviceaccounts::ISSUER.to_owned();
    // The token file knows nothing of audiences: its tokens are for the API server only.
    if let Some(user) = state.rbac.as_ref().and_then(|tokens| tokens.user(token))
        && (audiences.is_empty() || audiences.contains(&api_audience))
    {
        return Ok((user.clone(), vec![api_audience]));
    }
    state.service_accounts.authenticate(&state.store, token, audiences).map_err(|e| e.0)
}

#[allow(clippy::too_many_arguments)]
async fn route(
    state: &AppState,
    user: &crate::rbac::UserInfo,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    protobuf_body: bool,
) -> Result<Response, ApiError> {
    let path = uri.path();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    match (method, path) {
        (&Method::GET, "/healthz" | "/readyz" | "/livez") => return Ok((StatusCode::OK, "ok").into_response()),
        (&Method::GET, "/metrics") => return Ok((StatusCode::OK, state.counts.exposition()).into_response()),
        (&Method::GET, "/version") => return Ok(json_response(StatusCode::OK, &crate::discovery::version(), &[])),
        (&Method::GET, "/api") => {
            return Ok(json_response(StatusCode::OK, &crate::discovery::core_versions(&state.address), &[]));
        }
        (&Method::GET, "/apis") => {
            return Ok(json_response(StatusCode::OK, &crate::discovery::group_list(&state.store.registry()), &[]));
        }
        (&Method::GET, "/openapi/v2") => return crate::openapi_v2::serve(&accept),
        (&Method::GET, p) if p.starts_with("/openapi/") => {
            return crate::openapi::serve(state, p);
        }
        (&Method::GET, p) if p.starts_with("/apis/") && p.trim_matches('/').split('/').count() == 2 => {
            let group = p.trim_matches('/').split('/').nth(1).unwrap_or_default();
            let doc = crate::discovery::group(&state.store.registry(), group).ok_or_else(|| ApiError::no_route(p))?;
            return Ok(json_response(StatusCode::OK, &doc, &[]));
        }
        _ => {}
    }
    let query = query_map(uri);
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_owned();
    let target = parse_target(state, path)?;
    if let Target::Collection { rt, .. } | Target::Object { rt, .. } | Target::Scale { rt, .. } = &target {
        // Custom resources are read and written in JSON only, as kube-apiserver serves them.
        let builtin = rt.builtin_schema.is_some();
        if protobuf_body && !builtin {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                negotiation::accepted(false)
            )));
        }
        if negotiation::output(&accept, builtin) == Output::NotAcceptable {
            return Err(ApiError::not_acceptable(format!(
                "only the following media types are accepted: {}",
                negotiation::accepted(builtin)
            )));
        }
    }
    if let Some(verb) = verb_of(&target, method, &query)
        && let Target::Collection { rt, .. } | Target::Object { rt, .. } | Target::Scale { rt, .. } = &target
        && !rt.serves(verb)
    {
        // kube-apiserver's answer for a verb the storage does not implement.
        return Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource"));
    }
    match target {
        Target::GroupDiscovery { group, version } => Ok(json_response(
            StatusCode::OK,
            &crate::discovery::resource_list(&state.store.registry(), &group, &version),
            &[],
        )),
        Target::Collection { rt, namespace } => match *method {
            Method::GET if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                state.counts.bump(format!("watch {}", rt.plural));
                watch(state, &rt, namespace, &query, &accept)
            }
            Method::GET => {
                state.counts.bump(format!("list {}", rt.plural));
                let list = list(state, &rt, namespace.as_deref(), &query)?;
                let body = if table::wants_table(&accept) { table::list_table(&rt, &list) } else { list };
                Ok(json_response(StatusCode::OK, &body, &[]))
            }
            Method::POST => {
                state.counts.bump(format!("create {}", rt.plural));
                let ns = namespace
                    .ok_or_else(|| ApiError::method_not_allowed("create needs a namespace in the path"))
                    .or_else(|e| if rt.namespaced { Err(e) } else { Ok(String::new()) })?;
                let opts = write_options(&query, headers)?;
                let (obj, warnings) = state.store.create(&rt.key(), &ns, parse_body(body, &content_type)?, &opts)?;
                Ok(json_response(StatusCode::CREATED, &obj, &warnings))
            }
            Method::DELETE => {
                state.counts.bump(format!("deletecollection {}", rt.plural));
                let (items, _) = state.store.list(&rt.key(), namespace.as_deref())?;
                let selector = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
                    .map_err(|e| ApiError::bad_request(e.0))?;
                let mut deleted = Vec::new();
                for item in items.iter().filter(|i| selector.matches_object(i)) {
                    let ns = item.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
                    let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                    deleted.push(state.store.delete(&rt.key(), ns, name, false, None)?);
                }
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {}, "items": deleted}),
                    &[],
                ))
            }
            _ => Err(ApiError::method_not_allowed(format!("{method} is not supported on a collection"))),
        },
        Target::PodLog { namespace, name } if *method == Method::GET => {
            state.counts.bump("get pods/log".into());
            // The log is text, but negotiated over the API's media types: a bare
            // `Accept: text/plain` is a 406 from kube-apiserver.
            if negotiation::output(&accept, true) == Output::NotAcceptable {
                return Err(ApiError::not_acceptable(format!(
                    "only the following media types are accepted: {}",
                    negotiation::accepted(true)
                )));
            }
            crate::logs::serve(
                &state.store,
                state.kubelet_state.get().map(|node| node.state_dir.as_path()),
                &namespace,
                &name,
                &query,
            )
        }
        Target::PortForward { namespace, name } if *method == Method::GET || *method == Method::POST => {
            state.counts.bump("create pods/portforward".into());
            let node = state.kubelet_state.get();
            crate::portforward::serve(&state.store, node, &namespace, &name, headers, uri.query(), upgrade)
        }
        Target::Exec { namespace, name } if *method == Method::GET || *method == Method::POST => {
            state.counts.bump("create pods/exec".into());
            let state_dir = state.kubelet_state.get().map(|node| node.state_dir.as_path());
            crate::exec::serve(&state.store, state_dir, &namespace, &name, headers, uri.query(), upgrade)
        }
        Target::PodLog { .. } | Target::PortForward { .. } | Target::Exec { .. } => {
            Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource"))
        }
        Target::Scale { rt, namespace, name } => {
            scale(state, &rt, &namespace, &name, method, body, &content_type, &query, headers)
        }
        Target::Object { rt, namespace, name, sub } => match *method {
            Method::GET => {
                state.counts.bump(format!("get {}", rt.plural));
                let obj = state.store.get(&rt.key(), &namespace, &name)?;
                let body = if table::wants_table(&accept) { table::object_table(&rt, &obj) } else { obj };
                Ok(json_response(StatusCode::OK, &body, &[]))
            }
            Method::PUT => {
                state.counts.bump(format!("update {}", rt.plural));
                let opts = write_options(&query, headers)?;
                let (obj, warnings) =
                    state.store.update(&rt.key(), &namespace, &name, parse_body(body, &content_type)?, sub, &opts)?;
                Ok(json_response(StatusCode::OK, &obj, &warnings))
            }
            Method::PATCH => {
                state.counts.bump(format!("patch {}", rt.plural));
                let opts = write_options(&query, headers)?;
                let value = parse_body(body, &content_type)?;
                let patch = patch_of(&content_type, value, &query)?;
                // kube-apiserver also checks `create` when an apply makes the object, and
                // refuses the apply when the user may not create it.
                if matches!(patch, Patch::Apply(_))
                    && sub == Subresource::Main
                    && state.store.get(&rt.key(), &namespace, &name).is_err()
                {
                    let check = RequestRecord::from_request(method, uri, headers).with_verb("create");
                    if let Some(log) = &state.requests {
                        log.record(check.clone());
                    }
                    if state.rbac.is_some() {
                        authorize_check(state, &crate::rbac::policy(&state.store), user, &check)?;
                    }
                }
                let (obj, warnings) = state.store.patch(&rt.key(), &namespace, &name, patch, sub, &opts)?;
                Ok(json_response(StatusCode::OK, &obj, &warnings))
            }
            Method::DELETE => {
                state.counts.bump(format!("delete {}", rt.plural));
                let options = parse_body(body, "application/json").unwrap_or(Value::Null);
                let propagation = query
                    .get("propagationPolicy")
                    .cloned()
                    .or_else(|| options.get("propagationPolicy").and_then(Value::as_str).map(str::to_owned));
                let orphan = propagation.as_deref() == Some("Orphan")
                    || options.get("orphanDependents").and_then(Value::as_bool) == Some(true);
                let uid = options.pointer("/preconditions/uid").and_then(Value::as_str);
                let grace = query
                    .get("gracePeriodSeconds")
                    .and_then(|g| g.parse().ok())
                    .or_else(|| options.get("gracePeriodSeconds").and_then(Value::as_i64));
                let obj = state.store.delete_gracefully(&rt.key(), &namespace, &name, orphan, uid, grace)?;
                Ok(json_response(StatusCode::OK, &obj, &[]))
            }
            _ => Err(ApiError::method_not_allowed(format!("{method} is not supported on an object"))),
        },
    }
}

/// A PATCH body by its content type.
fn patch_of(content_type: &str, value: Value, query: &BTreeMap<String, String>) -> Result<Patch, ApiError> {
    Ok(match content_type.split(';').next().unwrap_or_default().trim() {
        "application/merge-patch+json" => Patch::Merge(value),
        "application/json-patch+json" => Patch::Json(value),
        "application/strategic-merge-patch+json" => Patch::Strategic(value),
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            if !query.contains_key("fieldManager") {
                return Err(ApiError::bad_request(
                    "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests",
                ));
            }
            Patch::Apply(value)
        }
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            )));
        }
    })
}

/// `GET`, `PUT` or `PATCH` of `/scale`: the Scale is read from the object, and a write sets
/// the object's replicas with the object's own resourceVersion as the precondition.
#[allow(clippy::too_many_arguments)]
fn scale(
    state: &AppState,
    rt: &ResourceType,
    namespace: &str,
    name: &str,
    method: &Method,
    body: &Bytes,
    content_type: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let Some(paths) = rt.scale.as_ref() else { return Err(ApiError::no_route(name)) };
    let object = state.store.get(&rt.key(), namespace, name)?;
    let current = crate::scale::scale_of(paths, &object);
    let wanted = match *method {
        Method::GET => {
            state.counts.bump(format!("get {}/scale", rt.plural));
            return Ok(json_response(StatusCode::OK, &current, &[]));
        }
        Method::PUT => parse_body(body, content_type)?,
        Method::PATCH => {
            let mut wanted = current.clone();
            match patch_of(content_type, parse_body(body, content_type)?, query)? {
                Patch::Merge(p) | Patch::Strategic(p) | Patch::Apply(p) => json_patch::merge(&mut wanted, &p),
                Patch::Json(p) => {
                    let ops: json_patch::Patch = serde_json::from_value(p)
                        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                    json_patch::patch(&mut wanted, &ops)
                        .map_err(|e| ApiError::bad_request(format!("the JSON patch could not be applied: {e}")))?;
                }
            }
            wanted
        }
        _ => return Err(ApiError::method_not_allowed(format!("{method} is not supported on a scale"))),
    };
    state.counts.bump(format!("update {}/scale", rt.plural));
    let replicas = crate::scale::requested_replicas(&wanted, name)?;
    let mut patch = crate::scale::replicas_patch(paths, replicas);
    // A PUT's resourceVersion is a precondition; a PATCH carries one only if it set one.
    let rv = wanted.pointer("/metadata/resourceVersion").filter(|rv| !rv.is_null());
    if let Some(rv) =
        rv.filter(|rv| *method == Method::PUT || Some(*rv) != current.pointer("/metadata/resourceVersion"))
    {
        patch["metadata"] = json!({"resourceVersion": rv});
    }
    let opts = write_options(query, headers)?;
    let (updated, warnings) =
        state.store.patch(&rt.key(), namespace, name, Patch::Merge(patch), Subresource::Main, &opts)?;
    Ok(json_response(StatusCode::OK, &crate::scale::scale_of(paths, &updated), &warnings))
}

/// The authorization verb of a request, as kube-apiserver names it.
fn verb_of(target: &Target, method: &Method, query: &BTreeMap<String, String>) -> Option<&'static str> {
    let collection = matches!(target, Target::Collection { .. });
    Some(match *method {
        Method::GET if collection && query.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        Method::GET if collection => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        _ => return None,
    })
}

fn selectors(rt: &ResourceType, query: &BTreeMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(e.0))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str), &rt.kind)
        .map_err(|e| ApiError::bad_request(e.0))?;
    Ok((labels, fields))
}

/// The `events.k8s.io` Events, which the core Event API shows too.
fn new_api_events() -> TypeKey {
    TypeKey { group: "events.k8s.io".into(), plural: "events".into() }
}

fn is_core_events(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "events"
}

fn list(
    state: &AppState,
    rt: &ResourceType,
    namespace: Option<&str>,
    query: &BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    let (labels, fields) = selectors(rt, query)?;
    let (mut items, rv) = state.store.list(&rt.key(), namespace)?;
    if is_core_events(rt) {
        let (recorded, _) = state.store.list(&new_api_events(), namespace)?;
        items.extend(recorded.iter().map(crate::events::to_core));
        items.sort_by_cached_key(|v| {
            let text = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
            (text("/metadata/namespace"), text("/metadata/name"))
        });
    }
    let mut items: Vec<Value> =
        items.into_iter().filter(|i| labels.matches_object(i) && fields.matches_object(i)).collect();
    // `continue` resumes after the last key of the previous page.
    if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        let (ns, name) = token.split_once('/').ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        items.retain(|i| {
            let key = (
                i.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default(),
                i.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default(),
            );
            key > (ns, name)
        });
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0)
        && items.len() > limit
    {
        let remaining = items.len() - limit;
        items.truncate(limit);
        let last = items.last().expect("limit > 0");
        let token = format!(
            "{}/{}",
            last.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default(),
            last.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
        );
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(
        json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": metadata, "items": items}),
    )
}

fn watch_line(event_type: &str, object: &Value, protobuf: bool) -> Bytes {
    if protobuf && let Ok(frame) = crate::protobuf::watch_frame(event_type, object) {
        return Bytes::from(frame);
    }
    let mut line = json!({"type": event_type, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata})
}

fn watch(
    state: &AppState,
    rt: &ResourceType,
    namespace: Option<String>,
    query: &BTreeMap<String, String>,
    accept: &str,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(rt, query)?;
    let as_table = table::wants_table(accept);
    // kube-apiserver streams built-ins in protobuf frames when the client prefers them.
    let protobuf = !as_table && negotiation::output(accept, rt.builtin_schema.is_some()) == Output::Protobuf;
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let send_initial = query.get("sendInitialEvents").is_some_and(|b| b == "true");
    let timeout = Duration::from_secs(query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800));
    let requested_rv = query.get("resourceVersion").cloned().unwrap_or_default();
    let selected = move |o: &Value, ns: &Option<String>| {
        ns.as_ref().is_none_or(|n| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(n))
            && labels.matches_object(o)
            && fields.matches_object(o)
    };
    let store = state.store.clone();
    let rt = rt.clone();
    let key = rt.key();
    let also_recorded = is_core_events(&rt);
    let bookmark_interval = state.bookmark_interval;
    let watch_delay = state.watch_delay;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let mut changed = store.subscribe();
    // Where the stream starts: after a given resourceVersion, or with the current state.
    let (mut cursor, initial): (u64, Vec<Value>) = if requested_rv.is_empty() || requested_rv == "0" || send_initial {
        let (mut items, rv) = store.list(&key, namespace.as_deref())?;
        if also_recorded {
            items.extend(store.list(&new_api_events(), namespace.as_deref())?.0.iter().map(crate::events::to_core));
        }
        (rv, items.into_iter().filter(|i| selected(i, &namespace)).collect())
    } else {
        let rv = requested_rv
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {requested_rv:?}")))?;
        (rv, Vec::new())
    };
    tokio::spawn(async move {
        let render = |object: &Value| if as_table { table::object_table(&rt, object) } else { object.clone() };
        for item in &initial {
            if tx.send(watch_line("ADDED", &render(item), protobuf)).await.is_err() {
                return;
            }
        }
        if send_initial && tx.send(watch_line("BOOKMARK", &bookmark(&rt, cursor, true), protobuf)).await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next_bookmark = tokio::time::Instant::now() + bookmark_interval;
        loop {
            let (events, latest) = match store.events_since(cursor) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(watch_line("ERROR", &e.to_status(), protobuf)).await;
                    return;
                }
            };
            if !events.is_empty() && !watch_delay.is_zero() {
                // Changes seen now reach the client this much later.
                tokio::time::sleep(watch_delay).await;
            }
            for event in
                events.iter().filter(|e| e.type_key == key || (also_recorded && e.type_key == new_api_events()))
            {
                // Recorder Events reach the core Event API converted.
                let converted = (event.type_key != key).then(|| {
                    (crate::events::to_core(&event.object), event.previous.as_deref().map(crate::events::to_core))
                });
                let (object, previous) = match &converted {
                    Some((o, p)) => (o, p.as_ref()),
                    None => (event.object.as_ref(), event.previous.as_deref()),
                };
                let now_selected = selected(object, &namespace);
                let was_selected = previous.is_some_and(|p| selected(p, &namespace));
                let kind = match event.event_type {
                    EventType::Added if now_selected => Some("ADDED"),
                    EventType::Deleted if now_selected => Some("DELETED"),
                    EventType::Modified if now_selected && was_selected => Some("MODIFIED"),
                    EventType::Modified if now_selected => Some("ADDED"),
                    EventType::Modified if was_selected => Some("DELETED"),
                    _ => None,
                };
                if let Some(kind) = kind
                    && tx.send(watch_line(kind, &render(object), protobuf)).await.is_err()
                {
                    return;
                }
            }
            cursor = latest;
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                () = tokio::time::sleep_until(next_bookmark) => {
                    next_bookmark = tokio::time::Instant::now() + bookmark_interval;
                    if bookmarks && tx.send(watch_line("BOOKMARK", &bookmark(&rt, cursor, false), protobuf)).await.is_err() {
                        return;
                    }
                }
                changed_result = changed.changed() => if changed_result.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    let mut response = Response::new(Body::from_stream(stream));
    let content_type = if protobuf { "application/vnd.kubernetes.protobuf;stream=watch" } else { "application/json" };
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counts_read_like_kube_apiservers_metric() {
        let counts = RequestCounts::default();
        counts.bump("get secrets".into());
        counts.bump("get secrets".into());
        counts.bump("update leases".into());
        assert_eq!(
            counts.exposition(),
            "# TYPE apiserver_request_total counter\n\
             apiserver_request_total{verb=\"get\",resource=\"secrets\"} 2\n\
             apiserver_request_total{verb=\"update\",resource=\"leases\"} 1\n"
        );
    }
}
