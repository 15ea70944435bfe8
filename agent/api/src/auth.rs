//! Authentication of `/v1/` requests: a short-lived EdDSA (Ed25519) JWT signed by the
//! operator, for this agent's pod. Minting lives here too, beside the rules it must meet.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::{AUDIENCE, Claims, ISSUER, MAX_TOKEN_LIFETIME_SECS};

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No valid token: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token for another pod: 403.
    #[error("{0}")]
    Forbidden(String),
}

impl AuthError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
        }
    }
}

/// Checks tokens against the operator's public key and this agent's identity.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    subject: String,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// Clock skew tolerated between operator and agent.
const LEEWAY_SECS: u64 = 30;

impl Verifier {
    /// A verifier for the pod `namespace/pod` from the operator's public key (PEM).
    pub fn from_pem(public_key_pem: &[u8], namespace: &str, pod: &str) -> Result<Self, String> {
        let key =
            DecodingKey::from_ed_pem(public_key_pem).map_err(|e| format!("not an Ed25519 public key in PEM: {e}"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Ok(Self { key, subject: format!("{namespace}/{pod}"), validation })
    }

    /// Verifies an `Authorization` header value at time `now` (seconds since the epoch).
    pub fn verify(&self, authorization: Option<&str>, now: u64) -> Result<Claims, AuthError> {
        let unauthorized = |m: &str| AuthError::Unauthorized(m.to_owned());
        let header = authorization.ok_or_else(|| unauthorized("missing Authorization header"))?;
        let token =
            header.strip_prefix("Bearer ").ok_or_else(|| unauthorized("Authorization must be 'Bearer <token>'"))?;
        // RFC 7515 4.1.11: a recipient must refuse critical extensions it does not understand,
        // and this agent understands none.
        let jose =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Unauthorized(format!("invalid token: {e}")))?;
        if let Some(crit) = jose.crit {
            return Err(AuthError::Unauthorized(format!(
                "token has critical header parameters this agent does not understand: {crit:?}"
            )));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Unauthorized(format!("invalid token: {e}")))?;
        let claims = data.claims;
        if claims.exp.saturating_sub(claims.iat) > MAX_TOKEN_LIFETIME_SECS {
            return Err(unauthorized("token lifetime exceeds 600 seconds"));
        }
        if claims.iat > now + LEEWAY_SECS {
            return Err(unauthorized("token issued in the future"));
        }
        if claims.exp + LEEWAY_SECS < now {
            return Err(unauthorized("token expired"));
        }
        if claims.nbf.is_some_and(|nbf| nbf > now + LEEWAY_SECS) {
            return Err(unauthorized("token not valid yet (nbf)"));
        }
        if claims.sub != self.subject {
            return Err(AuthError::Forbidden(format!(
                "token is for {}, this agent serves {}",
                claims.sub, self.subject
            )));
        }
        Ok(claims)
    }
}

/// Mints a token for the agent of pod `namespace/pod`, valid `lifetime_secs` from `now`.
pub fn mint(
    private_key_pem: &[u8],
    namespace: &str,
    pod: &str,
    now: u64,
    lifetime_secs: u64,
) -> Result<String, String> {
    let key =
        EncodingKey::from_ed_pem(private_key_pem).map_err(|e| format!("not an Ed25519 private key in PEM: {e}"))?;
    let claims = Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: format!("{namespace}/{pod}"),
        iat: now,
        exp: now + lifetime_secs,
        nbf: None,
    };
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).map_err(|e| e.to_string())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
