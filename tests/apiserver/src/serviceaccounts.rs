//! ServiceAccount tokens, as kube-apiserver issues and checks its bound tokens: signed JWTs
//! (ES256, with a key the server makes at start) carrying the issuer, the audiences, an expiry
//! and the `kubernetes.io` claims that tie the token to its ServiceAccount and, when bound,
//! to a Pod or Secret. A token stops authenticating when what it is bound to is deleted (or
//! replaced by an object of the same name), as kube-apiserver's legacy-lookup-free validator
//! checks it. Served through `POST …/serviceaccounts/NAME/token` (TokenRequest) and checked
//! for every bearer token the static token file does not know, and by TokenReview.

use std::collections::BTreeMap;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{error::ApiError, rbac::UserInfo, registry::TypeKey, store::Store};

/// The issuer of every token, and the audience of the API server itself (kube-apiserver's
/// `--service-account-issuer` default in most clusters).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// kube-apiserver's default lifetime of a requested token (one hour).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// The shortest lifetime a TokenRequest may ask for (kube-apiserver's validation).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

/// The claims kube-apiserver puts in a bound token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// `https://kubernetes.default.svc.cluster.local`.
    pub iss: String,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub sub: String,
    /// Who the token is for.
    pub aud: Vec<String>,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// A unique id, reported as the `authentication.kubernetes.io/credential-id` extra.
    pub jti: String,
    /// What the token is bound to.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KubernetesClaims {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: ObjectClaim,
    /// The Pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectClaim>,
    /// The Secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectClaim>,
}

/// One object a token names, by name and uid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectClaim {
    /// The object's name.
    pub name: String,
    /// The object's uid.
    pub uid: String,
}

/// What a token request asks for, after defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// The audiences; the API server's own when none are asked for.
    pub audiences: Vec<String>,
    /// The lifetime in seconds.
    pub expiration_seconds: i64,
}

/// Signs and verifies ServiceAccount tokens.
pub struct Issuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    key_id: String,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// Why a token does not authenticate; the text is what TokenReview reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidToken(pub String);

fn key(plural: &str) -> TypeKey {
    TypeKey { group: String::new(), plural: plural.into() }
}

fn uid_of(object: &Value) -> String {
    object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_owned()
}

impl Issuer {
    /// A new signing key (ECDSA P-256), kept in memory for the server's lifetime.
    pub fn generate() -> Result<Self, String> {
        let pair = rcgen::KeyPair::generate().map_err(|e| format!("making the token signing key: {e}"))?;
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())
            .map_err(|e| format!("the token signing key: {e}"))?;
        let decoding = DecodingKey::from_ec_pem(pair.public_key_pem().as_bytes())
            .map_err(|e| format!("the token verifying key: {e}"))?;
        // kube-apiserver names its key by a hash of the public key; any stable id will do.
        let key_id = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self { encoding, decoding, key_id })
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("signing the token: {e}")))
    }

    /// The claims of a token this issuer signed that has not expired, or why not.
    fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.validate_aud = false;
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| InvalidToken(format!("invalid bearer token: {e}")))
    }

    /// Who `token` stands for, when it is one of ours, unexpired, meant for one of
    /// `audiences` (the API server's own when empty), and what it names still exists; with
    /// the audiences it was accepted for.
    pub fn authenticate(
        &self,
        store: &Store,
        token: &str,
        audiences: &[String],
    ) -> Result<(UserInfo, Vec<String>), InvalidToken> {
        let claims = self.verify(token)?;
        let wanted: Vec<String> = if audiences.is_empty() { vec![ISSUER.to_owned()] } else { audiences.to_vec() };
        let accepted: Vec<String> = wanted.iter().filter(|a| claims.aud.contains(a)).cloned().collect();
        if accepted.is_empty() {
            return Err(InvalidToken(format!(
                "invalid bearer token: token audiences {:?} is invalid for the target audiences {:?}",
                claims.aud, wanted
            )));
        }
        let k = &claims.kubernetes;
        let still = |plural: &str, kind: &str, claim: &ObjectClaim| -> Result<(), InvalidToken> {
            match store.get(&key(plural), &k.namespace, &claim.name) {
                Ok(object) if uid_of(&object) == claim.uid => Ok(()),
                Ok(object) => {
                    Err(InvalidToken(format!("{kind} UID ({}) does not match claim ({})", uid_of(&object), claim.uid)))
                }
                Err(_) => Err(InvalidToken(format!("{kind} {}/{} has been deleted", k.namespace, claim.name))),
            }
        };
        still("serviceaccounts", "ServiceAccount", &k.serviceaccount)?;
        if let Some(pod) = &k.pod {
            still("pods", "Pod", pod)?;
        }
        if let Some(secret) = &k.secret {
            still("secrets", "Secret", secret)?;
        }
        Ok((user_of(&claims), accepted))
    }

    /// A token for ServiceAccount `namespace/name`, bound to `bound` when given
    /// (`(kind, name, uid)` of a Pod or Secret, uid checked against the stored object).
    pub fn issue(
        &self,
        store: &Store,
        namespace: &str,
        name: &str,
        spec: &TokenSpec,
        bound: Option<(&str, &str, &str)>,
    ) -> Result<(String, jiff::Timestamp), ApiError> {
        let account = store.get(&key("serviceaccounts"), namespace, name)?;
        let mut kubernetes = KubernetesClaims {
            namespace: namespace.to_owned(),
            serviceaccount: ObjectClaim { name: name.to_owned(), uid: uid_of(&account) },
            pod: None,
            secret: None,
        };
        if let Some((kind, object_name, uid)) = bound {
            let plural = match kind {
                "Pod" => "pods",
                "Secret" => "secrets",
                other => {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token to object of type {other}: only Pod and Secret are supported"
                    )));
                }
            };
            let object = store.get(&key(plural), namespace, object_name)?;
            let stored = uid_of(&object);
            if !uid.is_empty() && uid != stored {
                return Err(ApiError::conflict_message(format!(
                    "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
                )));
            }
            let claim = Some(ObjectClaim { name: object_name.to_owned(), uid: stored });
            if kind == "Pod" {
                kubernetes.pod = claim;
            } else {
                kubernetes.secret = claim;
            }
        }
        let now = jiff::Timestamp::now();
        let expires = now + jiff::SignedDuration::from_secs(spec.expiration_seconds);
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: format!("system:serviceaccount:{namespace}:{name}"),
            aud: spec.audiences.clone(),
            exp: expires.as_second(),
            iat: now.as_second(),
            nbf: now.as_second(),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes,
        };
        Ok((self.sign(&claims)?, expires))
    }
}

/// The ConfigMap every namespace gets with the cluster's CA, for projected volumes.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// What kube-controller-manager keeps in every namespace for its pods to reach the API: the
/// `default` ServiceAccount (the serviceaccount controller) and, when the server has a CA,
/// the `kube-root-ca.crt` ConfigMap (the root-ca-cert-publisher). Runs until dropped.
pub fn spawn_publisher(store: Store, ca_pem: Option<String>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = store.subscribe();
        let opts = crate::store::WriteOptions { field_manager: "kube-controller-manager".into(), ..Default::default() };
        loop {
            let namespaces = store.list_shared(&key("namespaces"), None).map(|(items, _)| items).unwrap_or_default();
            for namespace in
                namespaces.iter().filter(|n| n.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null))
            {
                let ns = namespace.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                if store.get(&key("serviceaccounts"), ns, "default").is_err() {
                    let account =
                        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
                    let _ = store.create(&key("serviceaccounts"), ns, account, &opts);
                }
                if let Some(ca) = &ca_pem
                    && store.get(&key("configmaps"), ns, ROOT_CA_CONFIG_MAP).is_err()
                {
                    let map = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": ROOT_CA_CONFIG_MAP, "annotations": {"kubernetes.io/description":
                            "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                        "data": {"ca.crt": ca}});
                    let _ = store.create(&key("configmaps"), ns, map, &opts);
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    })
}

/// The user a token's claims stand for: the ServiceAccount, its groups, and the extras
/// kube-apiserver adds (the bound pod and the token's id).
pub fn user_of(claims: &Claims) -> UserInfo {
    let k = &claims.kubernetes;
    let mut user = UserInfo::authenticated(
        &claims.sub,
        &["system:serviceaccounts", &format!("system:serviceaccounts:{}", k.namespace)],
    );
    user.uid = k.serviceaccount.uid.clone();
    let mut extra = BTreeMap::new();
    if let Some(pod) = &k.pod {
        extra.insert("authentication.kubernetes.io/pod-name".to_owned(), vec![pod.name.clone()]);
        extra.insert("authentication.kubernetes.io/pod-uid".to_owned(), vec![pod.uid.clone()]);
    }
    extra.insert("authentication.kubernetes.io/credential-id".to_owned(), vec![format!("JTI={}", claims.jti)]);
    user.extra = extra;
    user
}

/// A TokenRequest's spec with kube-apiserver's defaults and validation.
pub fn token_spec(request: &Value, name: &str) -> Result<TokenSpec, ApiError> {
    let spec = request.get("spec").unwrap_or(&Value::Null);
    let audiences = crate::strings(spec.get("audiences"));
    let expiration_seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be an integer"))?,
    };
    if expiration_seconds < MIN_EXPIRATION_SECONDS {
        return Err(ApiError::invalid_message(
            "TokenRequest.authentication.k8s.io",
            name,
            &format!(
                "spec.expirationSeconds: Invalid value: {expiration_seconds}: may not specify a duration less than 10 minutes"
            ),
        ));
    }
    if expiration_seconds > 1 << 32 {
        return Err(ApiError::invalid_message(
            "TokenRequest.authentication.k8s.io",
            name,
            &format!(
                "spec.expirationSeconds: Invalid value: {expiration_seconds}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let audiences = if audiences.is_empty() { vec![ISSUER.to_owned()] } else { audiences };
    Ok(TokenSpec { audiences, expiration_seconds })
}

/// Answers `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`, or `None` for any other
/// path.
pub fn serve_token_request(
    store: &Store,
    issuer: &Issuer,
    path: &str,
    body: &[u8],
) -> Option<Result<Response, ApiError>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", namespace, "serviceaccounts", name, "token"] = segments.as_slice() else {
        return None;
    };
    Some(token_request(store, issuer, namespace, name, body))
}

fn token_request(
    store: &Store,
    issuer: &Issuer,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut request: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the TokenRequest is not JSON ({e}); send it as application/json"))
        })?
    };
    let spec = token_spec(&request, name)?;
    let bound = request.pointer("/spec/boundObjectRef").filter(|b| !b.is_null());
    let text = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
    let bound = bound.map(|b| (text(b, "kind"), text(b, "name"), text(b, "uid")));
    let (token, expires) = issuer.issue(
        store,
        namespace,
        name,
        &spec,
        bound.as_ref().map(|(k, n, u)| (k.as_str(), n.as_str(), u.as_str())),
    )?;
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] = json!({"name": name, "namespace": namespace, "creationTimestamp": null});
    request["spec"]["audiences"] = json!(spec.audiences);
    request["spec"]["expirationSeconds"] = json!(spec.expiration_seconds);
    request["status"] = json!({"token": token, "expirationTimestamp": expires.to_string()});
    Ok((StatusCode::CREATED, axum::Json(request)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_gets_kube_apiservers_defaults_and_bounds() {
        let spec = token_spec(&json!({"spec": {}}), "ops").unwrap();
        assert_eq!(spec, TokenSpec { audiences: vec![ISSUER.into()], expiration_seconds: 3600 });
        let spec =
            token_spec(&json!({"spec": {"audiences": ["biometrics"], "expirationSeconds": 600}}), "ops").unwrap();
        assert_eq!(spec, TokenSpec { audiences: vec!["biometrics".into()], expiration_seconds: 600 });
        let short = token_spec(&json!({"spec": {"expirationSeconds": 599}}), "ops").unwrap_err();
        assert_eq!(short.code, 422);
        assert!(short.message.contains("may not specify a duration less than 10 minutes"), "{}", short.message);
    }

    #[test]
    fn a_signed_token_reads_back_and_a_foreign_one_does_not() {
        let issuer = Issuer::generate().unwrap();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: "system:serviceaccount:shop:ops".into(),
            aud: vec![ISSUER.into()],
            exp: jiff::Timestamp::now().as_second() + 600,
            iat: 0,
            nbf: 0,
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "shop".into(),
                serviceaccount: ObjectClaim { name: "ops".into(), uid: "u1".into() },
                pod: Some(ObjectClaim { name: "web-0".into(), uid: "p1".into() }),
                secret: None,
            },
        };
        let token = issuer.sign(&claims).unwrap();
        assert_eq!(issuer.verify(&token).unwrap(), claims);
        assert!(Issuer::generate().unwrap().verify(&token).is_err(), "another key's token");
        let expired = Claims { exp: 1, ..claims.clone() };
        assert!(issuer.verify(&issuer.sign(&expired).unwrap()).is_err(), "expired");
        let user = user_of(&claims);
        assert_eq!(user.groups, ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]);
        assert_eq!(user.extra["authentication.kubernetes.io/pod-name"], ["web-0"]);
    }
}
