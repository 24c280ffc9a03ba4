//! The admin API (`/admin/v1/...`): JSON, for users and robots granted `admin`, with their own
//! credentials (Basic; a token's scopes name repositories, never this API).
//!
//! `POST /admin/v1/gc` starts a garbage collection in the background (one at a time across
//! replicas) and answers 202 with the run, its `Location` where to follow it:
//! `{"dryRun": true, "grace": "1h", "keepUntagged": false, "scrub": false, "verify": false,
//! "queued": false}` (every field optional). `GET
//! /admin/v1/gc/runs?n=20` lists the newest runs (`&queued=false` only full runs, `true` only
//! reviews of the queue; the log keeps the last 100 of each); `GET /admin/v1/gc/runs/{id}` shows one, with its
//! progress and, once it ended, its report; `DELETE` on it asks it to stop.
//!
//! `GET /admin/v1/usage?n=100&last=<repository>` answers with what is stored in all (blobs and
//! bytes, each blob once) and a page of repositories by name, each with its tags, manifests and
//! bytes (what a pull of all of it reads); `next` names the last one when more follow.

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::{ApiError, Code};
use super::state::AppState;
use crate::auth::{AuthError, Caller, Identity};
use crate::gc::{Collector, Options, RunView};
use crate::service::Result as ServiceResult;
use std::sync::Arc;

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
    /// Also look for stored objects no metadata knows, and stale upload objects.
    #[serde(default)]
    scrub: bool,
    /// Scrub, and read every live blob to check it against its digest.
    #[serde(default)]
    verify: bool,
    /// Look only at the repositories queued for review.
    #[serde(default)]
    queued: bool,
}

pub async fn gc(State(st): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let caller = match admin(&st, &parts).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let options = match options(body).await {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let collector = match collector(&st) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let asked = format!("{options:?}");
    match collector.start(options).await {
        Ok(run) => {
            let what = format!("garbage collection {} started: {asked}", run.id);
            st.record_admin_action(&parts, &caller, what).await;
            let location = format!("/admin/v1/gc/runs/{}", run.id);
            let mut resp = json(StatusCode::ACCEPTED, &run);
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Runs per page of `GET /admin/v1/gc/runs`: by default, and at most.
const RUNS_PAGE: usize = 20;
const RUNS_PAGE_MAX: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    n: Option<usize>,
    /// Only reviews of the queue (`true`) or only full runs (`false`).
    queued: Option<bool>,
}

pub async fn gc_runs(
    State(st): State<AppState>,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let collector = match gc_admin(&st, req).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let (limit, queued) = match query {
        Ok(Query(RunsQuery { n, queued })) => (n.unwrap_or(RUNS_PAGE), queued),
        Err(_) => (0, None),
    };
    if !(1..=RUNS_PAGE_MAX).contains(&limit) {
        return ApiError::new(
            Code::BadRequest,
            format!("the query takes n, 1 to {RUNS_PAGE_MAX}, and queued, true or false"),
        )
        .into_response();
    }
    match collector.run_views(limit, queued).await {
        Ok(runs) => json(StatusCode::OK, &serde_json::json!({ "runs": runs })),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /admin/v1/gc/runs/{id}`: the run, with its progress, and its report once it ended.
pub async fn gc_run(State(st): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    match gc_admin(&st, req).await {
        Ok(c) => answer(&id, c.run_view(&id).await, |run| json(StatusCode::OK, &run)),
        Err(refused) => refused,
    }
}

/// `DELETE /admin/v1/gc/runs/{id}`: asks a running run to stop (202); it stops within seconds,
/// keeping what it removed so far. A run that ended is a 409.
pub async fn cancel_gc_run(State(st): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let caller = match admin(&st, &parts).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let collector = match collector(&st) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let cancelled = collector.cancel(&id).await;
    if matches!(&cancelled, Ok(Some(run)) if run.state == "running") {
        st.record_admin_action(&parts, &caller, format!("garbage collection {id} asked to stop")).await;
    }
    answer(&id, cancelled, |run| {
        if run.state == "running" {
            json(StatusCode::ACCEPTED, &run)
        } else {
            ApiError::new(Code::Conflict, format!("run {id} already ended: it {}", run.state)).into_response()
        }
    })
}

/// The collector, if the caller may use the admin API and this registry collects; else the
/// refusal.
async fn gc_admin(st: &AppState, req: Request) -> Result<Arc<Collector>, Response> {
    let (parts, _) = req.into_parts();
    admin(st, &parts).await?;
    collector(st).map_err(IntoResponse::into_response)
}

fn collector(st: &AppState) -> Result<Arc<Collector>, ApiError> {
    st.collector
        .clone()
        .ok_or_else(|| ApiError::new(Code::NotFound, "this registry runs no garbage collection"))
}

/// The run found, as `found_it` answers; a 404 when there is none.
fn answer(
    id: &str,
    found: ServiceResult<Option<RunView>>,
    found_it: impl FnOnce(RunView) -> Response,
) -> Response {
    match found {
        Ok(Some(run)) => found_it(run),
        Ok(None) => no_such_run(id),
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn no_such_run(id: &str) -> Response {
    ApiError::new(
        Code::NotFound,
        format!("no garbage collection run {id:?} is known (the log keeps the last 100)"),
    )
    .into_response()
}

pub(super) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::new(Code::Unknown, e.to_string()).into_response(),
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
    Ok(Options {
        grace,
        keep_untagged: r.keep_untagged,
        dry_run: r.dry_run,
        scrub: r.scrub || r.verify,
        verify: r.verify,
        queued: r.queued,
    })
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
    json(
        StatusCode::OK,
        &serde_json::json!({"stored": stored, "repositories": repos, "next": next.flatten()}),
    )
}

/// The caller, if they may use the admin API; else the refusal (401 with a Basic challenge, or
/// 403).
pub(super) async fn admin(st: &AppState, req: &Parts) -> Result<Caller, Response> {
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
    st.audit.denied(
        caller.identity.name(),
        &st.client(req).to_string(),
        "",
        &format!("{} {}", req.method, req.uri.path()),
    );
    Err(ApiError::new(Code::Denied, format!("{} is not granted admin", caller.identity.name()))
        .into_response())
}

fn basic_challenge(message: &str) -> Response {
    let mut resp = ApiError::new(Code::Unauthorized, message).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"berth admin\""));
    resp
}
