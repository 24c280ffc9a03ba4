//! The upload endpoints: `POST …/blobs/uploads/` (a session, a mount, or a whole blob by digest)
//! and the session's `GET`, `PATCH`, `PUT` and `DELETE`.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::error::{ApiError, Code};
use super::parts::{header_value, query, unsupported, with_digest, Result};
use super::state::{AppState, Uploader};
use crate::auth::{Actions, Caller};
use crate::service::{BodyStream, ServiceError, UploadState};
use crate::UploadId;
use berth_core::oci::range::{parse_content_range, ChunkRange};
use berth_core::oci::{Digest, RepoName};

const UPLOAD_UUID_HEADER: &str = "docker-upload-uuid";

/// A request to an upload session.
pub(super) async fn handle(
    st: &AppState,
    req: &Parts,
    repo: &RepoName,
    id: UploadId,
    body: Body,
) -> Result<Response> {
    let reg = &st.registry;
    match req.method {
        Method::GET => {
            let state = reg.upload_status(repo, id).await?;
            Ok(upload_response(StatusCode::NO_CONTENT, repo, state))
        }
        Method::PATCH => {
            let (range, len) = chunk_headers(&req.headers)?;
            let state = reg
                .upload_chunk(repo, id, range, len, stream(body))
                .await
                .map_err(|e| resumable(e, repo, id))?;
            Ok(upload_response(StatusCode::ACCEPTED, repo, state))
        }
        Method::PUT => {
            let digest = match required_digest(req) {
                Ok(d) => d,
                Err(e) => {
                    // An unknown session is the more useful answer than a missing digest.
                    reg.upload_status(repo, id).await?;
                    return Err(e);
                }
            };
            let (range, len) = chunk_headers(&req.headers)?;
            let body = stream(body);
            let session = id.to_string();
            reg.finish_upload(repo, id, &digest, range, len, body)
                .await
                .map_err(|e| resumable(e, repo, id))?;
            st.uploads.closed(&session);
            Ok(created_blob(repo, &digest))
        }
        Method::DELETE => {
            let session = id.to_string();
            reg.cancel_upload(repo, id).await?;
            st.uploads.closed(&session);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ref m => Err(unsupported(m)),
    }
}

/// `POST …/blobs/uploads/`: a mount where one is asked for and allowed, the whole blob when its
/// digest comes with it, else a new session (within the caller's share of sessions).
pub(super) async fn start(
    st: &AppState,
    req: &Parts,
    repo: &RepoName,
    body: Body,
    caller: &Caller,
) -> Result<Response> {
    let q = query(req);
    let reg = &st.registry;
    if let Some(mount) = q.get("mount") {
        let digest: Digest = mount.parse().map_err(|e| ApiError::new(Code::DigestInvalid, format!("{e}")))?;
        // An unusable `from` means no mount, not an error: the client then uploads.
        let from = match q.get("from") {
            Some(f) => f.parse::<RepoName>().ok().map(Some),
            None => Some(None),
        };
        if let Some(from) = from {
            // Named or not, a source must be one this request may pull from: with a token, one
            // the token was scoped to, so a down-scoped token mounts nothing outside its scope.
            let readable = |source: &RepoName| caller.may(source.as_str(), Actions::PULL);
            if reg.mount_blob(repo, &digest, from.as_ref(), readable).await?.is_some() {
                return Ok(created_blob(repo, &digest));
            }
        }
    }
    if let Some(d) = q.get("digest") {
        let digest: Digest = d.parse().map_err(|e| ApiError::new(Code::DigestInvalid, format!("{e}")))?;
        let len = content_length(&req.headers)?;
        reg.put_blob(repo, &digest, len, stream(body)).await?;
        return Ok(created_blob(repo, &digest));
    }
    let who = Uploader::of(caller, st.client(req));
    if !st.uploads.admits(&who) {
        return Err(ApiError::new(
            Code::TooManyRequests,
            format!("{who} has too many upload sessions open; finish or cancel some first"),
        ));
    }
    let state = reg.start_upload(repo).await?;
    st.uploads.opened(who, state.id.to_string());
    Ok(upload_response(StatusCode::ACCEPTED, repo, state))
}

fn created_blob(repo: &RepoName, digest: &Digest) -> Response {
    let mut resp = StatusCode::CREATED.into_response();
    resp.headers_mut().insert(header::LOCATION, header_value(&format!("/v2/{repo}/blobs/{digest}")));
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    with_digest(resp, digest)
}

fn upload_location(repo: &RepoName, id: UploadId) -> HeaderValue {
    header_value(&format!("/v2/{repo}/blobs/uploads/{id}"))
}

/// `Range: 0-<last byte received>` (`0-0` before the first byte, as Distribution writes it).
fn range_value(received: u64) -> HeaderValue {
    header_value(&format!("0-{}", received.saturating_sub(1)))
}

fn upload_response(status: StatusCode, repo: &RepoName, state: UploadState) -> Response {
    let mut resp = status.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, upload_location(repo, state.id));
    h.insert(header::RANGE, range_value(state.received));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    h.insert(UPLOAD_UUID_HEADER, header_value(&state.id.to_string()));
    h.insert(HeaderName::from_static("oci-chunk-min-length"), HeaderValue::from(0));
    resp
}

/// A 416 tells the client where the upload stands, so it can resume from there.
fn resumable(e: ServiceError, repo: &RepoName, id: UploadId) -> ApiError {
    let received = match &e {
        ServiceError::RangeInvalid { received } => Some(*received),
        _ => None,
    };
    let err = ApiError::from(e);
    match received {
        Some(r) => err
            .with_header(header::LOCATION, upload_location(repo, id))
            .with_header(header::RANGE, range_value(r))
            .with_header(HeaderName::from_static(UPLOAD_UUID_HEADER), header_value(&id.to_string())),
        None => err,
    }
}

fn required_digest(req: &Parts) -> Result<Digest> {
    let q = query(req);
    let d = q
        .get("digest")
        .ok_or_else(|| ApiError::new(Code::DigestInvalid, "digest query parameter is required"))?;
    d.parse().map_err(|e| ApiError::new(Code::DigestInvalid, format!("{e}")))
}

fn content_length(h: &HeaderMap) -> Result<Option<u64>> {
    match h.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::new(Code::SizeInvalid, "Content-Length is not a number")),
    }
}

fn chunk_headers(h: &HeaderMap) -> Result<(Option<ChunkRange>, Option<u64>)> {
    let len = content_length(h)?;
    let range = match h.get(header::CONTENT_RANGE) {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(parse_content_range).ok_or_else(|| {
            ApiError::new(Code::RangeNotSatisfiable, "Content-Range must be <start>-<end>")
        })?),
    };
    Ok((range, len))
}

fn stream(body: Body) -> BodyStream {
    Box::pin(body.into_data_stream().map(|r| r.map_err(std::io::Error::other)))
}
