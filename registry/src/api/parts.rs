//! What every endpoint reads from a request and writes on a response: query parameters,
//! header values, the digest header, and the refusal of a method an endpoint does not take.

use std::collections::HashMap;

use axum::http::request::Parts;
use axum::http::{HeaderValue, Method};
use axum::response::Response;

use super::error::{ApiError, Code};
use berth_core::oci::Digest;

pub(super) type Result<T> = std::result::Result<T, ApiError>;

const DIGEST_HEADER: &str = "docker-content-digest";

pub(super) fn query(req: &Parts) -> HashMap<String, String> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(&req.uri).map(|q| q.0).unwrap_or_default()
}

pub(super) fn header_value(s: &str) -> HeaderValue {
    // Everything passed here is built from validated names, digests and numbers.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

pub(super) fn with_digest(mut resp: Response, digest: &Digest) -> Response {
    resp.headers_mut().insert(DIGEST_HEADER, header_value(digest.as_str()));
    resp
}

pub(super) fn unsupported(m: &Method) -> ApiError {
    ApiError::new(Code::Unsupported, format!("{m} is not supported on this endpoint"))
}
