//! The HTTP edge: the only module that knows HTTP.
//!
//! One catch-all route takes every `/v2/...` request; [`path::parse`] turns the raw path into a
//! typed [`path::Route`], a handler turns headers and query into typed values and calls one
//! [`Registry`] method, and [`error`] maps whatever failed to the spec's error envelope.

mod auth;
pub mod error;
mod handlers;
pub mod path;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tracing::Instrument;

use crate::auth::Authenticator;
use crate::proxy::Proxy;
use crate::service::Registry;
use crate::telemetry::Metrics;
use error::{ApiError, Code};
use path::Route;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// The pull-through cache, when upstreams are configured.
    pub proxy: Option<Arc<Proxy>>,
    /// Access control, when `auth` is configured.
    pub auth: Option<Arc<Authenticator>>,
    /// Whether clients reach this server over TLS (for the token realm).
    pub tls: bool,
    /// A request body silent for this long is cut off.
    pub body_idle_timeout: std::time::Duration,
    /// Open upload sessions per client address.
    pub uploads: Arc<UploadsPerClient>,
}

/// The address a request came from (set by the server for each connection).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::IpAddr);

/// Upload sessions each client address holds open, so one client cannot exhaust them. Sessions
/// are forgotten when finished or cancelled, or after the upload TTL (when they expire anyway).
pub struct UploadsPerClient {
    limit: usize,
    ttl: std::time::Duration,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, Vec<(String, std::time::Instant)>>>,
}

impl UploadsPerClient {
    pub fn new(limit: usize, ttl: std::time::Duration) -> UploadsPerClient {
        UploadsPerClient { limit, ttl, open: Default::default() }
    }

    /// Whether `client` may open another session.
    fn admits(&self, client: std::net::IpAddr) -> bool {
        let Ok(mut open) = self.open.lock() else { return true };
        let ttl = self.ttl;
        let sessions = open.entry(client).or_default();
        sessions.retain(|(_, at)| at.elapsed() < ttl);
        sessions.len() < self.limit
    }

    fn opened(&self, client: std::net::IpAddr, id: String) {
        if let Ok(mut open) = self.open.lock() {
            open.entry(client).or_default().push((id, std::time::Instant::now()));
        }
    }

    fn closed(&self, id: &str) {
        if let Ok(mut open) = self.open.lock() {
            for sessions in open.values_mut() {
                sessions.retain(|(s, _)| s != id);
            }
            open.retain(|_, s| !s.is_empty());
        }
    }
}

/// The whole HTTP application; tests drive it without a socket.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2", any(distribution))
        .route("/v2/", any(distribution))
        .route("/v2/{*rest}", any(distribution))
        .route("/token", get(auth::token).post(auth::token))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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

async fn readyz(State(st): State<AppState>) -> Response {
    match st.registry.ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
        }
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    if let Ok(n) = st.registry.meta().count_uploads().await {
        st.metrics.set_upload_sessions(n);
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

/// A request body that fails once the client has sent nothing for `idle` (a stalled or
/// deliberately slow client cannot hold a request, and its upload, open forever).
struct IdleLimited {
    inner: Body,
    idle: std::time::Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleLimited {
    fn new(inner: Body, idle: std::time::Duration) -> IdleLimited {
        IdleLimited { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }
}

impl http_body::Body for IdleLimited {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client sent nothing for {:?}", this.idle),
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
