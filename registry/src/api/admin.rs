//! The admin API (`/admin/v1/...`): JSON, for users and robots granted `admin`, with their own
//! credentials (Basic; a token's scopes name repositories, never this API).
//!
//! `POST /admin/v1/gc` runs a garbage collection and answers with its report:
//! `{"dryRun": true, "grace": "1h", "keepUntagged": false}` (every field optional).
//!
//! `GET /admin/v1/usage?n=100&last=<repository>` answers with what is stored in all (blobs and
//! bytes, each blob once) and a page of repositories by name, each with its tags, manifests and
//! bytes (what a pull of all of it reads); `next` names the last one when more follow.

use axum::body::{to_bytes, Body};
use axum::extract::{Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::{ApiError, Code};
use super::state::AppState;
use crate::auth::{AuthError, Caller, Identity};
use crate::gc::Options;

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 << 10;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GcRequest {
    #[serde(default)]
    dry_run: bool,
    /// A duration (`30m`, `2h`, `0s`); one hour when absent.
    #[serde(default)]
    grace: Option<String>,
    #[serde(default)]
    keep_untagged: bool,
}

pub async fn gc(State(st): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(refused) = admin(&st, &parts).await {
        return refused;
    }
    let options = match options(body).await {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let Some(collector) = &st.collector else {
        return ApiError::new(Code::NotFound, "this registry runs no garbage collection").into_response();
    };
    // One run at a time: here, before the database's lease is asked for.
    let Ok(_running) = st.gc_running.try_lock() else {
        return ApiError::new(Code::Conflict, "a garbage collection is running; try again when it ends")
            .into_response();
    };
    match collector.run(&options).await {
        Ok(report) => {
            let json = [(header::CONTENT_TYPE, "application/json")];
            match serde_json::to_string(&report) {
                Ok(body) => (StatusCode::OK, json, body).into_response(),
                Err(e) => ApiError::new(Code::Unknown, e.to_string()).into_response(),
            }
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn options(body: Body) -> Result<Options, ApiError> {
    let bytes = to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::new(Code::BadRequest, format!("the body is larger than {MAX_BODY} bytes")))?;
    let r: GcRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        GcRequest::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(Code::BadRequest, format!("the body is not a garbage collection request: {e}"))
        })?
    };
    let grace = match &r.grace {
        Some(g) => berth_core::config::duration::parse(g)
            .map_err(|e| ApiError::new(Code::BadRequest, format!("grace {g:?}: {e}")))?,
        None => Options::default().grace,
    };
    Ok(Options { grace, keep_untagged: r.keep_untagged, dry_run: r.dry_run })
}

/// Repositories per page of `GET /admin/v1/usage`: by default, and at most.
const USAGE_PAGE: usize = 100;
const USAGE_PAGE_MAX: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    n: Option<usize>,
    last: Option<String>,
}

pub async fn usage(
    State(st): State<AppState>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    if let Err(refused) = admin(&st, &parts).await {
        return refused;
    }
    let Ok(Query(q)) = query else {
        return ApiError::new(Code::BadRequest, "the query takes n (1 to 1000) and last (a repository name)")
            .into_response();
    };
    let limit = q.n.unwrap_or(USAGE_PAGE);
    if !(1..=USAGE_PAGE_MAX).contains(&limit) {
        return ApiError::new(Code::BadRequest, format!("n must be 1 to {USAGE_PAGE_MAX}")).into_response();
    }
    let Some(usage) = &st.usage else {
        return ApiError::new(Code::NotFound, "this registry reports no usage").into_response();
    };
    let page = crate::meta::Page { limit, last: q.last };
    let (mut repos, stored) = match tokio::try_join!(usage.repo_usage(&page), usage.stored_total()) {
        Ok(r) => r,
        Err(e) => return ApiError::from(crate::service::ServiceError::from(e)).into_response(),
    };
    let next = (repos.len() > limit).then(|| {
        repos.truncate(limit);
        repos.last().map(|r| r.name.clone())
    });
    let body = serde_json::json!({"stored": stored, "repositories": repos, "next": next.flatten()});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The caller, if they may use the admin API; else the refusal (401 with a Basic challenge, or
/// 403).
async fn admin(st: &AppState, req: &Parts) -> Result<Caller, Response> {
    let Some(auth) = &st.auth else { return Ok(Caller::open()) };
    let header = req.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = match auth.caller(header, st.client(req)).await {
        Ok(c) => c,
        Err(AuthError::Unavailable) => {
            return Err(ApiError::new(Code::ServiceUnavailable, "authentication is temporarily unavailable")
                .into_response())
        }
        Err(e) => return Err(basic_challenge(&e.to_string())),
    };
    if caller.may_admin() {
        return Ok(caller);
    }
    if caller.identity == Identity::Anonymous || caller.by_token() {
        return Err(basic_challenge("the admin API needs the credentials of a user or robot granted admin"));
    }
    Err(ApiError::new(Code::Denied, format!("{} is not granted admin", caller.identity.name()))
        .into_response())
}

fn basic_challenge(message: &str) -> Response {
    let mut resp = ApiError::new(Code::Unauthorized, message).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"berth admin\""));
    resp
}
