//! The operator's Ed25519 signing key, kept in a Secret of its namespace (made on first
//! start), and its public half published as the ConfigMap `biometrics-trust` (key
//! `operator.pub`) in every namespace whose pods the operator instructs (and kept there by
//! [`crate::trust`]).

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
};

use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};

use crate::error::{Error, Result};

/// Why the signing key cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key could not be encoded as PEM.
    #[error("encoding the key: {0}")]
    Encode(String),
    /// The Secret lacks a half of the key.
    #[error("Secret {secret} lacks {PRIVATE_KEY} or {TRUST_KEY}")]
    Incomplete {
        /// `namespace/name`.
        secret: String,
    },
    /// Neither creating nor reading the Secret succeeded (replicas racing, or deletes).
    #[error("cannot create or read Secret {secret}")]
    Unavailable {
        /// `namespace/name`.
        secret: String,
    },
    /// No token could be minted for an agent.
    #[error("minting a token for {pod}: {reason}")]
    Mint {
        /// `namespace/pod`.
        pod: String,
        /// The minting library's message.
        reason: String,
    },
}

/// The ConfigMap agents mount the public key from.
pub const TRUST_CONFIGMAP: &str = "biometrics-trust";
/// Its key.
pub const TRUST_KEY: &str = "operator.pub";
const PRIVATE_KEY: &str = "operator.key";

/// The key pair, as PEM.
#[derive(Clone)]
pub struct SigningKey {
    private_pem: String,
    /// The public key (SPKI PEM).
    pub public_pem: String,
    /// Namespaces this process has published the public key in.
    published: Arc<Mutex<HashSet<String>>>,
    /// What owns the published ConfigMaps (see [`crate::owners`]).
    trust_owner: Option<OwnerReference>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("public_pem", &self.public_pem).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key pair.
    pub fn generate() -> Result<Self> {
        let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        Ok(Self {
            published: Arc::default(),
            trust_owner: None,
            private_pem: key.to_pkcs8_pem(LineEnding::LF).map_err(|e| SigningError::Encode(e.to_string()))?.to_string(),
            public_pem: key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| SigningError::Encode(e.to_string()))?,
        })
    }

    /// A token for the agent of pod `namespace/pod`, valid for five minutes.
    pub fn token_for(&self, namespace: &str, pod: &str) -> Result<String, SigningError> {
        biometrics_agent_api::auth::mint(
            self.private_pem.as_bytes(),
            namespace,
            pod,
            biometrics_agent_api::auth::unix_now(),
            300,
        )
        .map_err(|reason| SigningError::Mint { pod: format!("{namespace}/{pod}"), reason })
    }

    /// The key that publishes its ConfigMaps owned by `owner`.
    #[must_use]
    pub fn with_trust_owner(self, owner: Option<OwnerReference>) -> Self {
        Self { trust_owner: owner, ..self }
    }

    /// Loads the key from the Secret `name` in `namespace`, creating it (owned by `owner`)
    /// when missing. Two replicas starting together agree: the loser of the create reads the
    /// winner's key.
    pub async fn load_or_create(
        client: Client,
        namespace: &str,
        name: &str,
        owner: Option<&OwnerReference>,
    ) -> Result<Self> {
        let secrets: Api<Secret> = Api::namespaced(client, namespace);
        for _ in 0..3 {
            if let Some(secret) = secrets.get_opt(name).await? {
                let data = secret.data.unwrap_or_default();
                let field = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(&v.0).into_owned());
                return match (field(PRIVATE_KEY), field(TRUST_KEY)) {
                    (Some(private_pem), Some(public_pem)) => {
                        Ok(Self { private_pem, public_pem, published: Arc::default(), trust_owner: None })
                    }
                    _ => Err(SigningError::Incomplete { secret: format!("{namespace}/{name}") }.into()),
                };
            }
            let key = Self::generate()?;
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.into()),
                    owner_references: owner.map(|o| vec![o.clone()]),
                    ..Default::default()
                },
                string_data: Some(BTreeMap::from([
                    (PRIVATE_KEY.into(), key.private_pem.clone()),
                    (TRUST_KEY.into(), key.public_pem.clone()),
                ])),
                type_: Some("Opaque".into()),
                ..Default::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => return Ok(key),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SigningError::Unavailable { secret: format!("{namespace}/{name}") }.into())
    }

    /// Publishes the public key in `namespace` (server-side apply: no write when unchanged).
    pub async fn publish(&self, client: Client, namespace: &str) -> Result<()> {
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let mut cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": TRUST_CONFIGMAP, "labels": {"app.kubernetes.io/managed-by": "biometrics-operator"}},
            "data": {TRUST_KEY: self.public_pem},
        });
        if let Some(owner) = &self.trust_owner {
            cm["metadata"]["ownerReferences"] = serde_json::json!([owner]);
        }
        api.patch(TRUST_CONFIGMAP, &PatchParams::apply(crate::FIELD_MANAGER).force(), &Patch::Apply(&cm))
            .await
            .map_err(|source| Error::PublishKey { namespace: namespace.to_owned(), source })?;
        Ok(())
    }

    /// Whether this process has published the public key in `namespace`.
    pub fn published_in(&self, namespace: &str) -> bool {
        self.published.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(namespace)
    }

    /// Every namespace this process has published the public key in.
    pub fn published_namespaces(&self) -> HashSet<String> {
        self.published.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Forgets `namespace`, so that the next [`Self::ensure_published`] there publishes again.
    pub fn forget_published(&self, namespace: &str) {
        self.published.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(namespace);
    }

    /// Publishes the public key in `namespace` unless this process already has.
    pub async fn ensure_published(&self, client: Client, namespace: &str) -> Result<()> {
        if self.published.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(namespace) {
            return Ok(());
        }
        self.publish(client, namespace).await?;
        self.published.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(namespace.to_owned());
        Ok(())
    }
}
