//! The operator's errors, each with a short label for the failure metric.

/// What went wrong in a reconcile or at start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object cannot be acted on until it changes (bad schedule, bad selector).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The signing key or trust ConfigMap could not be set up.
    #[error("signing key: {0}")]
    Signing(String),
    /// The configuration file is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// Leadership was lost.
    #[error("leader election: {0}")]
    Leadership(String),
    /// A finalizer step failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// The `reason` label of `biometrics_operator_reconcile_failures_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Signing(_) => "signing",
            Self::Config(_) => "config",
            Self::Leadership(_) => "leadership",
            Self::Finalizer(_) => "finalizer",
        }
    }
}

/// Results of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;
