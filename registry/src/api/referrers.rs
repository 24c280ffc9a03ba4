//! `GET /v2/<name>/referrers/<digest>`: a subject's referrers a page at a time, from this
//! registry's metadata or, for a mirrored repository, from its upstream.

use std::collections::HashMap;

use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, Code};
use super::parts::{header_value, query, Result};
use super::state::AppState;
use crate::proxy::{Proxy, Target};
use berth_core::oci::{Digest, RepoName};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub(super) async fn local(st: &AppState, req: &Parts, repo: &RepoName, subject: &Digest) -> Result<Response> {
    listed(st, req, &query(req), repo, subject).await
}

/// [`local`] with the request's query parsed.
async fn listed(
    st: &AppState,
    req: &Parts,
    q: &HashMap<String, String>,
    repo: &RepoName,
    subject: &Digest,
) -> Result<Response> {
    let filter = q.get("artifactType").filter(|s| !s.is_empty()).map(String::as_str);
    let after = match q.get("last") {
        None => None,
        Some(last) => Some(last.parse::<Digest>().map_err(|e| {
            ApiError::new(Code::DigestInvalid, format!("last must be the digest a page ended with: {e}"))
        })?),
    };
    let page = st.registry.referrers(repo, subject, filter, after.as_ref()).await?;
    let manifests = page
        .items
        .into_iter()
        .map(|r| {
            let mut d = serde_json::json!({
                "mediaType": r.media_type,
                "digest": r.digest.as_str(),
                "size": r.size,
            });
            if let Some(at) = r.artifact_type {
                d["artifactType"] = at.into();
            }
            if let Some(a) = r.annotations.and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok()) {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let next = page.next.map(|d| d.to_string());
    Ok(referrers_response(req, q, manifests, filter, next.as_deref().map(|d| ("last", d))))
}

/// The referrers of a mirrored image: the upstream's (filtered here when the upstream did not
/// filter them), or the cached ones when the upstream cannot answer.
pub(super) async fn proxied(
    st: &AppState,
    proxy: &Proxy,
    req: &Parts,
    t: &Target,
    subject: &Digest,
) -> Result<Response> {
    let q = query(req);
    if q.contains_key("last") && !q.contains_key("next") {
        // A page after one the cache answered: the cached list goes on.
        return listed(st, req, &q, &t.local, subject).await;
    }
    let filter = q.get("artifactType").filter(|s| !s.is_empty()).map(String::as_str);
    let Some(page) = proxy.referrers(t, subject, filter, q.get("next").map(String::as_str)).await else {
        return listed(st, req, &q, &t.local, subject).await;
    };
    let mut manifests = page.manifests;
    if let (Some(at), false) = (filter, page.filtered) {
        manifests.retain(|d| d["artifactType"].as_str() == Some(at));
    }
    Ok(referrers_response(req, &q, manifests, filter, page.next.as_deref().map(|link| ("next", link))))
}

/// A referrers list: an image index of `manifests`, saying whether `filter` was applied, with a
/// `Link` to the next page when `next` (the query parameter that names it) is given; `q` is the
/// request's query.
fn referrers_response(
    req: &Parts,
    q: &HashMap<String, String>,
    manifests: Vec<serde_json::Value>,
    filter: Option<&str>,
    next: Option<(&str, &str)>,
) -> Response {
    let body = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, OCI_INDEX)], body.to_string()).into_response();
    if filter.is_some() {
        resp.headers_mut().insert("oci-filters-applied", HeaderValue::from_static("artifactType"));
    }
    if let Some((key, value)) = next {
        // The next page keeps the filter and the name's namespace; the path is the client's.
        let mut link = form_urlencoded::Serializer::new(String::new());
        for k in ["ns", "artifactType"] {
            if let Some(v) = q.get(k).filter(|v| !v.is_empty()) {
                link.append_pair(k, v);
            }
        }
        link.append_pair(key, value);
        let link = format!("<{}?{}>; rel=\"next\"", req.uri.path(), link.finish());
        resp.headers_mut().insert(header::LINK, header_value(&link));
    }
    resp
}
