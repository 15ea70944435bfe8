//! The operator's errors, each with its context, a short label for the failure metric and
//! the reason of the Warning Event a failed reconcile publishes on its object.

use std::{net::SocketAddr, path::PathBuf};

use crate::{agent_client::TransportError, reasons};

/// What went wrong in a reconcile or at start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The status of an object could not be written.
    #[error("writing the status of {object}: {source}")]
    WriteStatus {
        /// `namespace/name`.
        object: String,
        /// Why.
        source: kube::Error,
    },
    /// The operator's public key could not be published in a namespace.
    #[error(
        "publishing ConfigMap {namespace}/{} with the operator's public key: {source}",
        crate::signing::TRUST_CONFIGMAP
    )]
    PublishKey {
        /// The namespace.
        namespace: String,
        /// Why.
        source: kube::Error,
    },
    /// The object cannot be acted on until it changes (bad schedule, bad selector); its
    /// status says so with `reason`.
    #[error("invalid spec: {message}")]
    InvalidSpec {
        /// The condition reason the status shows ([`reasons`]).
        reason: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The signing key or trust ConfigMap could not be set up.
    #[error("signing key: {0}")]
    Signing(#[from] crate::signing::SigningError),
    /// The configuration is wrong.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// Leadership was lost.
    #[error("leader election: {0}")]
    Leadership(#[from] crate::leader::LeadershipError),
    /// Adding or removing a finalizer failed.
    #[error("finalizer {finalizer}: {source}")]
    Finalizer {
        /// The finalizer.
        finalizer: &'static str,
        /// Why.
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
}

/// Why the operator cannot start with its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The metrics and probes address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No Kubernetes client configuration (kubeconfig or in-cluster).
    #[error("Kubernetes client: {0}")]
    Kubeconfig(#[from] kube::config::InferConfigError),
    /// The Kubernetes client cannot be built from it.
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The agents' transport cannot be set up.
    #[error("agent transport: {0}")]
    Transport(#[from] TransportError),

    /// A role named as the owner of what the operator writes cannot be read.
    #[error("cannot read the owner {owner}: {source}")]
    Owner {
        /// The role.
        owner: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },

    /// The configuration file cannot be read.
    #[error("{}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not what the operator reads.
    #[error("{}: {source}", path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names an unknown key).
        source: crate::config::ParseError,
    },
}

impl Error {
    /// The `reason` label of `biometrics_operator_reconcile_failures_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) | Self::WriteStatus { .. } | Self::PublishKey { .. } => "kube",
            Self::InvalidSpec { .. } => "invalid_spec",
            Self::Signing(_) => "signing",
            Self::Config(_) => "config",
            Self::Leadership(_) => "leadership",
            Self::Finalizer { .. } => "finalizer",
        }
    }

    /// The reason of the Warning Event a failed reconcile publishes on its object.
    pub fn event_reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => reasons::KUBERNETES_API_FAILED,
            Self::WriteStatus { .. } => reasons::STATUS_WRITE_FAILED,
            Self::PublishKey { .. } => reasons::TRUST_PUBLISH_FAILED,
            Self::InvalidSpec { reason, .. } => reason,
            Self::Signing(_) => reasons::SIGNING_KEY_UNAVAILABLE,
            Self::Config(_) => reasons::CONFIGURATION_INVALID,
            Self::Leadership(_) => reasons::LEADERSHIP_LOST,
            Self::Finalizer { .. } => reasons::FINALIZER_FAILED,
        }
    }

    /// Whether the reconcile has shown this failure on the object already (an invalid spec
    /// is in its conditions, with its own Event): the error policy adds no Event of its own.
    pub fn shown_on_object(&self) -> bool {
        matches!(self, Self::InvalidSpec { .. })
    }
}

/// Results of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;
