//! The HTTP edge: the only module that knows HTTP.
//!
//! One catch-all route takes every `/v2/...` request; [`path::parse`](berth_core::oci::route::parse) turns the raw path into a
//! typed [`Route`], a handler turns headers and query into typed values and calls one
//! [`Registry`](crate::service::Registry) method, and [`error`] maps whatever failed to the spec's error envelope.

mod admin;
mod audit;
mod auth;
mod body;
pub mod error;
mod handlers;
mod parts;
mod referrers;
mod state;
mod uploads;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use tracing::Instrument;

use berth_core::oci::route::{self as path, Route};
use body::IdleLimited;
use error::{ApiError, Code};
pub use state::{AppState, PeerAddr, UploadsPerClient};

/// The whole HTTP application; tests drive it without a socket.
/// The registry's routes, with `extra` ones (the web UI) beside them.
pub fn router(state: AppState, extra: Router<AppState>) -> Router {
    let mut app = Router::new()
        .route("/v2", any(distribution))
        .route("/v2/", any(distribution))
        .route("/v2/{*rest}", any(distribution))
        .route("/token", get(auth::token).post(auth::token))
        .route("/admin/v1/gc", post(admin::gc))
        .route("/admin/v1/gc/runs", get(admin::gc_runs))
        .route("/admin/v1/gc/runs/{id}", get(admin::gc_run).delete(admin::cancel_gc_run))
        .route("/admin/v1/usage", get(admin::usage))
        .route("/admin/v1/events", get(audit::events))
        .route("/admin/v1/webhooks", get(audit::webhooks))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if state.serve_metrics {
        app = app.route("/metrics", get(metrics));
    }
    app = app.merge(extra);
    app.fallback(|| async { ApiError::new(Code::NotFound, "no such endpoint") })
        .layer(axum::middleware::map_response_with_state(state.stopping.clone(), close_when_stopping))
        .with_state(state)
}

/// Once a shutdown has begun, every response closes its connection, so clients holding
/// keep-alive connections reconnect — through the load balancer, to a replica that stays —
/// instead of finding this one gone between two requests.
async fn close_when_stopping(State(stopping): State<Arc<AtomicBool>>, mut resp: Response) -> Response {
    if stopping.load(Ordering::Relaxed) {
        resp.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// `/metrics` and `/readyz`, for a listener of its own (`metrics.listen`): plain HTTP without
/// credentials, for Prometheus and for the operator reading why a replica is not ready.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::new(Code::NotFound, "no such endpoint") })
        .with_state(state)
}

async fn distribution(State(st): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let route = path::parse(parts.uri.path());
    let kind = route.as_ref().map(Route::kind).unwrap_or("invalid");
    let mut resp = match route {
        Ok(route) => {
            let body = Body::new(IdleLimited::new(st.metrics.count_body_in(body), st.body_idle_timeout));
            let span = tracing::debug_span!("request", endpoint = kind, method = %parts.method);
            match auth::admit(&st, &parts, &route).await {
                Err(refused) => refused,
                Ok(caller) => {
                    match handlers::handle(&st, &parts, route, body, &caller).instrument(span).await {
                        Ok(r) => r,
                        Err(e) => e.into_response(),
                    }
                }
            }
        }
        Err(e) => ApiError::from_route(e, &parts.method).into_response(),
    };
    resp.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    st.metrics.observe_request(kind, &parts.method, resp.status(), started.elapsed());
    if parts.method == Method::HEAD {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, st.metrics.count_body_out(body))
}

/// 200 when storage and the database both answer, 503 otherwise (and from the moment a shutdown
/// begins: `{"ready":false,"stopping":true,...}`); the body says which is which,
/// in each backend's own words, for people and for the operator's `StorageReady` and
/// `DatabaseReady` conditions: `{"ready":false,"database":null,"storage":"object storage
/// unavailable: ..."}`.
async fn readyz(State(st): State<AppState>) -> Response {
    if st.is_stopping() {
        let body = serde_json::json!({"ready": false, "stopping": true, "database": null, "storage": null});
        let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
        return (StatusCode::SERVICE_UNAVAILABLE, json, body.to_string()).into_response();
    }
    let r = st.registry.readiness().await;
    let status = if r.ready() {
        StatusCode::OK
    } else {
        tracing::warn!(database = ?r.database, storage = ?r.storage, "not ready");
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({"ready": r.ready(), "database": r.database, "storage": r.storage});
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    if let Ok(n) = st.registry.meta().count_uploads().await {
        st.metrics.set_upload_sessions(n);
    }
    if let Some(pool) = st.registry.meta().pool_use() {
        st.metrics.set_database_pool(pool);
    }
    match st.metrics.render() {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            Body::from(text),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
