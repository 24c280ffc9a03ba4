//! The one place where failures become distribution-spec error responses.
//!
//! ```json
//! {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": null}]}
//! ```

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::meta::cache::ContentKind;
use crate::proxy::ProxyError;
use crate::service::ServiceError;
use crate::storage::StorageError;
use berth_client::UpstreamError;
use berth_core::oci::name::ReferenceError;
use berth_core::oci::route::RouteError;

/// The spec's error codes (plus `UNKNOWN` for server faults), each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unsupported,
    PaginationNumberInvalid,
    RangeNotSatisfiable,
    ManifestTooLarge,
    NotFound,
    /// The repository refuses the operation (a read-only mirror).
    Denied,
    /// No or unusable credentials.
    Unauthorized,
    /// Something the request depends on is down (not an upstream).
    ServiceUnavailable,
    /// The disk under storage or metadata is full: nothing of the write was kept.
    StorageFull,
    /// The upstream of a proxied repository is rate limiting.
    TooManyRequests,
    /// The upstream of a proxied repository failed or cannot be reached.
    UpstreamUnavailable,
    /// The upstream of a proxied repository did not answer in time.
    UpstreamTimeout,
    /// (Admin API) the request is malformed.
    BadRequest,
    /// (Admin API) the operation is already running.
    Conflict,
    /// A conditional write (`If-Match`, `If-None-Match`) whose condition does not hold.
    PreconditionFailed,
    Unknown,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid | Code::RangeNotSatisfiable => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid | Code::ManifestTooLarge => "SIZE_INVALID",
            Code::Unsupported => "UNSUPPORTED",
            Code::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Code::NotFound => "NOT_FOUND",
            Code::Denied => "DENIED",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::ServiceUnavailable | Code::StorageFull => "UNAVAILABLE",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::UpstreamUnavailable | Code::UpstreamTimeout => "UNAVAILABLE",
            Code::BadRequest => "BAD_REQUEST",
            Code::Conflict => "CONFLICT",
            Code::PreconditionFailed => "PRECONDITION_FAILED",
            Code::Unknown => "UNKNOWN",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown
            | Code::NotFound => StatusCode::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid
            | Code::PaginationNumberInvalid
            | Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::Conflict => StatusCode::CONFLICT,
            Code::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::ManifestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Code::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        if status.is_server_error() {
            tracing::error!(error = %self.message, "request failed");
        }
        // Server faults say what kind of thing failed, never the backend's own words. Upstream
        // failures are the exception: the client needs to know the upstream is the problem.
        let message = if self.code == Code::Unknown { "internal error".to_owned() } else { self.message };
        let body = serde_json::json!({
            "errors": [{"code": self.code.as_str(), "message": message, "detail": null}]
        });
        let mut resp = (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string())
            .into_response();
        resp.headers_mut().extend(self.headers);
        resp
    }
}

impl ApiError {
    /// A path that does not route. A malformed tag cannot name anything, so reading it is a plain
    /// `MANIFEST_UNKNOWN`, while pushing to it is `MANIFEST_INVALID`.
    pub fn from_route(e: RouteError, method: &axum::http::Method) -> ApiError {
        let code = match &e {
            RouteError::NotFound => Code::NotFound,
            RouteError::Name(_) => Code::NameInvalid,
            RouteError::Digest(_) | RouteError::Reference(ReferenceError::Digest(_)) => Code::DigestInvalid,
            RouteError::Reference(ReferenceError::Tag(_)) if method == axum::http::Method::PUT => {
                Code::ManifestInvalid
            }
            RouteError::Reference(ReferenceError::Tag(_)) => Code::ManifestUnknown,
            RouteError::UploadUnknown => Code::BlobUploadUnknown,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::from(&e)
    }
}

impl From<&ServiceError> for ApiError {
    fn from(e: &ServiceError) -> Self {
        let code = match e {
            ServiceError::BlobUnknown => Code::BlobUnknown,
            ServiceError::UploadUnknown => Code::BlobUploadUnknown,
            ServiceError::UploadInvalid(_) | ServiceError::Body(_) => Code::BlobUploadInvalid,
            ServiceError::RangeInvalid { .. } => Code::RangeNotSatisfiable,
            ServiceError::DigestInvalid(_) => Code::DigestInvalid,
            ServiceError::SizeInvalid(_) => Code::SizeInvalid,
            ServiceError::ManifestInvalid(_) => Code::ManifestInvalid,
            ServiceError::ManifestUnknown => Code::ManifestUnknown,
            ServiceError::ManifestBlobUnknown(_) => Code::ManifestBlobUnknown,
            ServiceError::NameUnknown => Code::NameUnknown,
            ServiceError::ManifestTooLarge { .. } => Code::ManifestTooLarge,
            ServiceError::Storage(s) if s.is_full() => Code::StorageFull,
            ServiceError::Meta(crate::meta::MetaError::Full) => Code::StorageFull,
            ServiceError::Storage(StorageError::Unavailable(reason)) => {
                tracing::error!(%reason, "object storage did not serve a request");
                return ApiError::new(
                    Code::ServiceUnavailable,
                    "the registry's storage is unavailable; try again shortly",
                );
            }
            ServiceError::Meta(crate::meta::MetaError::Unavailable(reason)) => {
                tracing::error!(%reason, "the metadata database did not serve a request");
                return ApiError::new(
                    Code::ServiceUnavailable,
                    "the registry's database is unavailable; try again shortly",
                );
            }
            ServiceError::Retry(_) => Code::ServiceUnavailable,
            ServiceError::Busy(_) => Code::Conflict,
            ServiceError::PreconditionFailed { current } => {
                // What the reference names now, as `GET` would tag it, for the client's next try.
                let err = ApiError::new(Code::PreconditionFailed, e.to_string());
                return match current.as_ref().and_then(|d| HeaderValue::from_str(&format!("\"{d}\"")).ok()) {
                    Some(etag) => err.with_header(axum::http::header::ETAG, etag),
                    None => err,
                };
            }
            ServiceError::Storage(_) | ServiceError::Meta(_) | ServiceError::Internal(_) => Code::Unknown,
        };
        if code == Code::StorageFull {
            return ApiError::new(code, "the registry's storage is full; nothing of this request was kept");
        }
        ApiError::new(code, e.to_string())
    }
}

impl From<ProxyError> for ApiError {
    fn from(e: ProxyError) -> Self {
        match e {
            ProxyError::NotFound(ContentKind::Manifest) => {
                ApiError::new(Code::ManifestUnknown, "manifest unknown to the upstream")
            }
            ProxyError::NotFound(ContentKind::Blob) => {
                ApiError::new(Code::BlobUnknown, "blob unknown to the upstream")
            }
            ProxyError::Local(e) => ApiError::from(&*e),
            ProxyError::Upstream(e) => {
                let code = match &*e {
                    UpstreamError::RateLimited { .. } => Code::TooManyRequests,
                    UpstreamError::Timeout { .. } => Code::UpstreamTimeout,
                    _ => Code::UpstreamUnavailable,
                };
                let err = ApiError::new(code, e.to_string());
                match &*e {
                    UpstreamError::RateLimited { retry_after: Some(s), .. } => {
                        err.with_header(axum::http::header::RETRY_AFTER, HeaderValue::from(*s))
                    }
                    _ => err,
                }
            }
            ProxyError::Fetch { class, message } => {
                let code = match class {
                    "timeout" => Code::UpstreamTimeout,
                    "rate_limited" => Code::TooManyRequests,
                    _ => Code::UpstreamUnavailable,
                };
                ApiError::new(code, message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_spec_status() {
        use Code::*;
        let all = [
            BlobUnknown,
            BlobUploadInvalid,
            BlobUploadUnknown,
            DigestInvalid,
            ManifestBlobUnknown,
            ManifestInvalid,
            ManifestUnknown,
            NameInvalid,
            NameUnknown,
            SizeInvalid,
            Unsupported,
            PaginationNumberInvalid,
            RangeNotSatisfiable,
            ManifestTooLarge,
            NotFound,
            Denied,
            TooManyRequests,
            UpstreamUnavailable,
            UpstreamTimeout,
            Unknown,
        ];
        for c in all {
            let upstream = matches!(c, UpstreamUnavailable | UpstreamTimeout);
            assert!(c.status().is_client_error() || c == Unknown || upstream, "{c:?}");
            assert!(c.as_str().chars().all(|x| x.is_ascii_uppercase() || x == '_'));
        }
        assert_eq!(ManifestTooLarge.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(RangeNotSatisfiable.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    }

    #[test]
    fn server_faults_hide_backend_text() {
        let e = ApiError::new(Code::Unknown, "disk /secret/path exploded");
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
