//! Pure rendering of the custom resources into what `berth` reads: its config (from the very types
//! `berth` parses) and the volumes that carry credentials into the pod. No API calls: the
//! reconcilers look resources and Secrets up and pass them in.
//!
//! Both controllers use it: the Registry controller to build its children, the ProxyCache
//! controller to check a cache exactly as berth will be configured for it.

pub mod auth;
mod error;
pub mod notifications;
pub mod postgres;
pub mod proxies;
pub mod replication;
pub mod retention;
pub mod s3;

pub use error::BuildError;

/// A Kubernetes object from the JSON it was written as; a mistake in it is the pod template's.
pub fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, BuildError> {
    serde_json::from_value(v).map_err(|e| BuildError::PodTemplate(e.to_string()))
}
