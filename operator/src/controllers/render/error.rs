//! Why a resource cannot be rendered into berth's config and pods: each a user error in the spec
//! (or a Secret not there yet), reported in the `Ready` condition with a stable reason.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    #[error("{0} is not supported by this version of berth yet")]
    NotSupported(&'static str),
    #[error("spec.podTemplate is not a valid pod template once merged: {0}")]
    PodTemplate(String),
    #[error("TLS is on but no certificate Secret is available yet")]
    TlsPending,
    #[error("ProxyCache {name}: {message}")]
    InvalidProxyCache { name: String, message: String },
    #[error("{0}")]
    InvalidAuth(String),
    #[error("spec.gc: {0}")]
    InvalidGc(String),
    #[error("spec.notifications: {0}")]
    InvalidNotifications(String),
    #[error("{0}")]
    InvalidReplication(String),
    #[error("spec.ui: {0}")]
    InvalidUi(String),
}

impl BuildError {
    /// Stable reason for conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            BuildError::NotSupported(_) => "NotSupported",
            BuildError::PodTemplate(_) => "InvalidPodTemplate",
            BuildError::TlsPending => "CertificatePending",
            BuildError::InvalidProxyCache { .. } => "InvalidProxyCache",
            BuildError::InvalidAuth(_) => "InvalidAuth",
            BuildError::InvalidGc(_) => "InvalidGc",
            BuildError::InvalidNotifications(_) => "InvalidNotifications",
            BuildError::InvalidReplication(_) => "InvalidSpec",
            BuildError::InvalidUi(_) => "InvalidUi",
        }
    }
}
