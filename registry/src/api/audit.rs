//! The audit log and webhook backlog in the admin API.
//!
//! `GET /admin/v1/events?repository=team/app&actor=ci&n=100&before=<seq>` lists the events of
//! changes (pushes, tag and manifest deletes, referrers attached), newest first, with who made
//! them, from where, in which request; a full page's last `seq` is the next page's `before`.
//! `GET /admin/v1/webhooks` lists each endpoint's pending and dead deliveries, with the oldest
//! pending one and the last given up (its event, attempts and last error): why an endpoint
//! falls behind, before anything is dead.

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::admin::{admin, json};
use super::error::{ApiError, Code};
use super::state::AppState;
use crate::meta::events::{EventQuery, MAX_LIST};
use crate::meta::outbox::EventLog;
use std::sync::Arc;

const PAGE: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    repository: Option<String>,
    actor: Option<String>,
    n: Option<usize>,
    before: Option<i64>,
}

pub async fn events(
    State(st): State<AppState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let log = match event_log(&st, req).await {
        Ok(l) => l,
        Err(refused) => return refused,
    };
    let q = match query {
        Ok(Query(q)) if (1..=MAX_LIST).contains(&q.n.unwrap_or(PAGE)) => q,
        _ => {
            return ApiError::new(
                Code::BadRequest,
                format!("the query takes repository, actor, before (a seq) and n, 1 to {MAX_LIST}"),
            )
            .into_response()
        }
    };
    let query =
        EventQuery { repository: q.repository, actor: q.actor, before: q.before, limit: q.n.unwrap_or(PAGE) };
    match log.events(&query).await {
        Ok(events) => json(StatusCode::OK, &serde_json::json!({ "events": events })),
        Err(e) => ApiError::from(crate::service::ServiceError::from(e)).into_response(),
    }
}

pub async fn webhooks(State(st): State<AppState>, req: Request) -> Response {
    let log = match event_log(&st, req).await {
        Ok(l) => l,
        Err(refused) => return refused,
    };
    match log.backlog().await {
        Ok(backlog) => json(StatusCode::OK, &serde_json::json!({ "endpoints": backlog })),
        Err(e) => ApiError::from(crate::service::ServiceError::from(e)).into_response(),
    }
}

async fn event_log(st: &AppState, req: Request) -> Result<Arc<dyn EventLog>, Response> {
    let (parts, _) = req.into_parts();
    admin(st, &parts).await?;
    st.events
        .clone()
        .ok_or_else(|| ApiError::new(Code::NotFound, "this registry keeps no event log").into_response())
}
