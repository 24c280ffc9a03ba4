//! What a proxied request can fail with.

use std::sync::Arc;

use berth_client::UpstreamError;

use super::flight::FlightFailure;
use crate::meta::cache::ContentKind;
use crate::meta::MetaError;
use crate::service::ServiceError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("{0} unknown to the upstream")]
    NotFound(ContentKind),
    #[error(transparent)]
    Upstream(Arc<UpstreamError>),
    #[error(transparent)]
    Local(Arc<ServiceError>),
    /// A blob fetch failed after it started.
    #[error("{message}")]
    Fetch { class: &'static str, message: String },
}

impl From<ServiceError> for ProxyError {
    fn from(e: ServiceError) -> Self {
        ProxyError::Local(Arc::new(e))
    }
}

impl From<MetaError> for ProxyError {
    fn from(e: MetaError) -> Self {
        ProxyError::Local(Arc::new(ServiceError::from(e)))
    }
}

impl From<UpstreamError> for ProxyError {
    fn from(e: UpstreamError) -> Self {
        ProxyError::Upstream(Arc::new(e))
    }
}

pub type Result<T> = std::result::Result<T, ProxyError>;

pub(super) fn failure(f: &FlightFailure) -> ProxyError {
    match f {
        FlightFailure::NotFound => ProxyError::NotFound(ContentKind::Blob),
        FlightFailure::Error { class, message } => ProxyError::Fetch { class, message: message.clone() },
    }
}
