//! One handler per endpoint: parse headers and query into typed values, make one service call,
//! shape the response. No OCI logic lives here.

use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;

use super::error::{ApiError, Code};
use super::parts::{header_value, query, unsupported, with_digest, Result};
use super::state::AppState;
use super::{referrers, uploads};
use crate::auth::Caller;
use crate::meta::precondition::Etags;
use crate::meta::{ManifestRecord, Precondition};
use crate::proxy::{Proxy, Target};
use crate::service::{BlobRead, Listing, PushOptions, ServiceError};
use berth_core::oci::range::parse_range;
use berth_core::oci::route::Route;
use berth_core::oci::{Digest, Reference, RepoName, Tag};

pub(super) async fn handle(
    st: &AppState,
    req: &Parts,
    route: Route,
    body: Body,
    caller: &Caller,
) -> Result<Response> {
    if let (Some(proxy), Some(repo)) = (&st.proxy, route.repo()) {
        let q = query(req);
        if let Some(target) = proxy.resolve(repo, q.get("ns").map(String::as_str)) {
            return proxied(st, proxy, req, route, target, caller).await;
        }
    }
    let reg = &st.registry;
    let m = &req.method;
    let head = *m == Method::HEAD;
    match route {
        Route::Base if *m == Method::GET || head => Ok(json_response(StatusCode::OK, "{}".into())),
        Route::Catalog if *m == Method::GET => {
            let (n, last) = pagination(req)?;
            let page = reg.catalog(n, last, |repo| caller.may_read(repo)).await?;
            Ok(listing_response("/v2/_catalog", n, &page, serde_json::json!({"repositories": page.items})))
        }
        Route::Tags(repo) if *m == Method::GET => {
            let (n, last) = pagination(req)?;
            let page = reg.tags(&repo, n, last).await?;
            let body = serde_json::json!({"name": repo.as_str(), "tags": page.items});
            Ok(listing_response(&format!("/v2/{repo}/tags/list"), n, &page, body))
        }
        Route::Manifest(repo, r) if *m == Method::GET || head => {
            get_manifest(st, req, caller, &repo, &r, head).await
        }
        Route::Manifest(repo, r) if *m == Method::PUT => put_manifest(st, req, &repo, &r, body, caller).await,
        Route::Manifest(repo, r) if *m == Method::DELETE => {
            reg.delete_manifest(&repo, &r, &precondition(req), &st.origin(req, caller)).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Route::Blob(repo, d) if *m == Method::GET || head => get_blob(st, req, &repo, &d, head).await,
        Route::Blob(repo, d) if *m == Method::DELETE => {
            reg.delete_blob(&repo, &d).await?;
            Ok(with_digest(StatusCode::ACCEPTED.into_response(), &d))
        }
        Route::UploadStart(repo) if *m == Method::POST => uploads::start(st, req, &repo, body, caller).await,
        Route::Upload(repo, id) => uploads::handle(st, req, &repo, id, body).await,
        Route::Referrers(repo, subject) if *m == Method::GET => {
            referrers::local(st, req, &repo, &subject).await
        }
        _ => Err(unsupported(m)),
    }
}

/// A request for a repository an upstream serves: reads go through the cache; writes are refused.
async fn proxied(
    st: &AppState,
    proxy: &Arc<Proxy>,
    req: &Parts,
    route: Route,
    t: Target,
    caller: &Caller,
) -> Result<Response> {
    let m = &req.method;
    let head = *m == Method::HEAD;
    match route {
        Route::Manifest(_, r) if *m == Method::GET || head => {
            let record = proxy.manifest(&t, &r).await?;
            serve_manifest(st, req, caller, &t.local, &r, &record, head).await
        }
        Route::Blob(_, d) if *m == Method::GET || head => {
            // The upstream's (or the cache's) answer to a HEAD says whether the blob exists.
            let known = async { proxy.blob(&t, &d, None, true).await.map(|_| ()).map_err(ApiError::from) };
            if let Some(resp) = answered_blob_conditions(req, &d, known).await? {
                return Ok(resp);
            }
            blob_response(proxy.blob(&t, &d, requested_range(req, &d), head).await?, &d)
        }
        Route::Tags(repo) if *m == Method::GET => {
            let (n, last) = pagination(req)?;
            let upstream_query = req.uri.query().map(strip_ns).unwrap_or_default();
            // The upstream's list, or the cached tags when the upstream cannot answer.
            let page = match proxy.tags(&t, &upstream_query).await? {
                Some((items, more)) => Listing { next: items.last().filter(|_| more).cloned(), items },
                None => st.registry.tags(&t.local, n, last).await?,
            };
            let body = serde_json::json!({"name": repo.as_str(), "tags": page.items});
            Ok(listing_response(&format!("/v2/{repo}/tags/list"), n, &page, body))
        }
        Route::Referrers(_, subject) if *m == Method::GET => {
            referrers::proxied(st, proxy, req, &t, &subject).await
        }
        _ => Err(ApiError::new(
            Code::Denied,
            format!(
                "{} is a read-only mirror of upstream {}; push to a repository no upstream serves",
                t.local,
                proxy.upstream_name(&t)
            ),
        )),
    }
}

/// The query minus containerd's `ns`, for passing on to the upstream.
fn strip_ns(q: &str) -> String {
    q.split('&').filter(|kv| !kv.starts_with("ns=")).collect::<Vec<_>>().join("&")
}

fn pagination(req: &Parts) -> Result<(Option<usize>, Option<String>)> {
    let q = query(req);
    let n = q.get("n").map(|v| page_size(v)).transpose()?;
    Ok((n, q.get("last").cloned()))
}

/// The `n` of a listing: a non-negative integer; one too large for a number here asks for as
/// many as a page may hold, as any large `n` does.
fn page_size(n: &str) -> Result<usize> {
    match n.parse::<usize>() {
        Ok(n) => Ok(n),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Ok(usize::MAX),
        Err(_) => Err(ApiError::new(Code::PaginationNumberInvalid, "n must be a non-negative integer")),
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A sorted listing page; `Link` names the next page when one follows.
fn listing_response(path: &str, n: Option<usize>, page: &Listing, body: serde_json::Value) -> Response {
    let mut resp = json_response(StatusCode::OK, body.to_string());
    if let Some(next) = &page.next {
        let last = percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC);
        let link = match n {
            Some(n) => format!("<{path}?n={n}&last={last}>; rel=\"next\""),
            None => format!("<{path}?last={last}>; rel=\"next\""),
        };
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

async fn get_manifest(
    st: &AppState,
    req: &Parts,
    caller: &Caller,
    repo: &RepoName,
    r: &Reference,
    head: bool,
) -> Result<Response> {
    let record = st.registry.head_manifest(repo, r).await?;
    serve_manifest(st, req, caller, repo, r, &record, head).await
}

/// Answers a manifest read from one lookup's `record`, so the conditions and the answer speak of
/// the same manifest; its bytes are read only when they are served.
async fn serve_manifest(
    st: &AppState,
    req: &Parts,
    caller: &Caller,
    repo: &RepoName,
    r: &Reference,
    record: &ManifestRecord,
    head: bool,
) -> Result<Response> {
    let answered = answered_by_conditions(&precondition(req), &record.digest)?;
    let body = match (&answered, head) {
        (None, false) => st.registry.manifest_bytes(record).await?,
        _ => Bytes::new(),
    };
    if !head {
        // A 304 (a client, or a cache in front of the registry, has the manifest) is a use too.
        st.registry.note_pull(repo, &record.digest);
        st.pulled(req, caller, repo, r, record);
    }
    Ok(answered.unwrap_or_else(|| manifest_response(record, body)))
}

fn manifest_response(record: &ManifestRecord, body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(&record.media_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(record.size));
    h.insert(header::ETAG, header_value(&format!("\"{}\"", record.digest)));
    with_digest(resp, &record.digest)
}

async fn put_manifest(
    st: &AppState,
    req: &Parts,
    repo: &RepoName,
    r: &Reference,
    body: Body,
    caller: &Caller,
) -> Result<Response> {
    let limit = st.registry.limits().max_manifest_bytes;
    let bytes = read_bounded(body, limit).await.map_err(|e| match e {
        BodyError::TooLarge => ApiError::new(
            Code::ManifestTooLarge,
            format!("manifest is larger than the {limit} bytes accepted"),
        ),
        BodyError::Read(e) => ApiError::new(Code::ManifestInvalid, format!("reading manifest failed: {e}")),
    })?;
    let content_type = req.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let options = PushOptions { extra_tags: tag_params(req)?, expect: precondition(req) };
    let tagged_by_param = !options.extra_tags.is_empty();
    let put =
        st.registry.put_manifest(repo, r, content_type, bytes, options, &st.origin(req, caller)).await?;
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, header_value(&format!("/v2/{repo}/manifests/{}", put.digest)));
    if let Some(subject) = &put.subject {
        h.insert("oci-subject", header_value(subject.as_str()));
    }
    if tagged_by_param {
        // One `OCI-Tag` per tag applied tells the client this registry honoured the parameters.
        for tag in &put.tags {
            h.append("oci-tag", header_value(tag.as_str()));
        }
    }
    Ok(with_digest(resp, &put.digest))
}

/// The condition of a manifest request: its `If-Match` and `If-None-Match` headers.
fn precondition(req: &Parts) -> Precondition {
    let etags = |name| Etags::parse(req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()));
    Precondition { if_match: etags(header::IF_MATCH), if_none_match: etags(header::IF_NONE_MATCH) }
}

/// The `tag` query parameters of a manifest push (`PUT …/manifests/<digest>?tag=a&tag=b`).
fn tag_params(req: &Parts) -> Result<Vec<Tag>> {
    let Some(q) = req.uri.query() else { return Ok(Vec::new()) };
    form_urlencoded::parse(q.as_bytes())
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.parse::<Tag>().map_err(|e| ApiError::new(Code::ManifestInvalid, e.to_string())))
        .collect()
}

async fn get_blob(st: &AppState, req: &Parts, repo: &RepoName, d: &Digest, head: bool) -> Result<Response> {
    let known = async { st.registry.blob_size(repo, d).await.map(|_| ()).map_err(ApiError::from) };
    if let Some(resp) = answered_blob_conditions(req, d, known).await? {
        // From here rather than from a redirect to the store.
        return Ok(resp);
    }
    if !head {
        if let Some(url) = st.registry.blob_redirect(repo, d).await? {
            // The store serves the bytes (and any Range the client sends along).
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            resp.headers_mut().insert(header::LOCATION, header_value(&url));
            return Ok(with_digest(resp, d));
        }
    }
    let range = requested_range(req, d);
    let read = st.registry.get_blob(repo, d, range, !head).await?;
    blob_response(read, d)
}

/// What a blob read's conditions make of it. A blob's entity tag is its digest, which never
/// names other bytes: once `known` shows the repository holds the blob (a 404 stays a 404), the
/// conditions ask only whether the client names it. `known` runs only when there are conditions.
async fn answered_blob_conditions(
    req: &Parts,
    d: &Digest,
    known: impl std::future::Future<Output = Result<()>>,
) -> Result<Option<Response>> {
    let expect = precondition(req);
    if expect.is_none() {
        return Ok(None);
    }
    known.await?;
    Ok(answered_by_conditions(&expect, d)?.map(immutable))
}

/// What a read's conditions make of the manifest or blob it names (`digest`, which exists; a
/// 404 stays a 404): `412` when `If-Match` leaves it out, `304 Not Modified` (no body, its `ETag`
/// and digest) when `If-None-Match` names it, and `None` when it is to be served.
fn answered_by_conditions(expect: &Precondition, digest: &Digest) -> Result<Option<Response>> {
    let current = Some(digest);
    if !expect.if_match_holds(current) {
        return Err(ServiceError::PreconditionFailed { current: Some(digest.clone()) }.into());
    }
    if expect.if_none_match_holds(current) {
        return Ok(None);
    }
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    resp.headers_mut().insert(header::ETAG, header_value(&format!("\"{digest}\"")));
    Ok(Some(with_digest(resp, digest)))
}

/// The range a blob read asks for: `Range`, unless an `If-Range` names anything but the blob
/// itself (RFC 9110 §13.1.5: another entity tag, or a date, since blobs answer no
/// `Last-Modified`), when the client gets the whole blob instead.
fn requested_range(req: &Parts, d: &Digest) -> Option<berth_core::oci::range::ByteRange> {
    let range = req.headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(parse_range)?;
    match req.headers.get(header::IF_RANGE) {
        None => Some(range),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().strip_prefix('"')?.strip_suffix('"'))
            .is_some_and(|tag| tag == d.as_str())
            .then_some(range),
    }
}

/// A blob read, a 206 for a range, or the 416 when the range cannot be satisfied (`Err(size)`).
fn blob_response(read: std::result::Result<BlobRead, u64>, d: &Digest) -> Result<Response> {
    let read = match read {
        Ok(read) => read,
        Err(size) => {
            return Err(ApiError::new(Code::RangeNotSatisfiable, "requested range is not satisfiable")
                .with_header(header::CONTENT_RANGE, header_value(&format!("bytes */{size}"))));
        }
    };
    let body = read.body.map_or_else(Body::empty, Body::from_stream);
    let (status, len) = match read.range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, end - start + 1),
        None => (StatusCode::OK, read.size),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if read.size_known {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, header_value(&format!("\"{d}\"")));
    if let Some((start, end)) = read.range {
        h.insert(header::CONTENT_RANGE, header_value(&format!("bytes {start}-{end}/{}", read.size)));
    }
    Ok(immutable(with_digest(resp, d)))
}

/// Marks a blob's answer fresh for a year: the bytes of a digest never change. Not `public`, so a
/// shared cache keeps no answer to a request that carried credentials (RFC 9111 §3.5).
fn immutable(mut resp: Response) -> Response {
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=31536000"));
    resp
}

enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// Bytes kept reading (and thrown away) past a limit, so that a client still sending an oversized
/// body receives the 413 instead of a reset connection.
const DRAIN_AFTER_LIMIT: usize = 16 << 20;

/// Collects a body of at most `limit` bytes. A larger one is drained up to a bound and refused.
async fn read_bounded(body: Body, limit: usize) -> std::result::Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        seen += chunk.len();
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        } else if seen > limit + DRAIN_AFTER_LIMIT {
            return Err(BodyError::TooLarge);
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(buf.freeze())
}
