//! A refusal sent before the request's body was read — a 416 for a chunk out of order, a 401 or a
//! 404 on a PATCH — leaves the body's bytes on the connection. hyper then reads what has already
//! arrived and, if the body is not all there, closes the connection; but by then the response
//! head has gone out without `Connection: close`, so an HTTP/1.1 client pools the connection and
//! sends its next request into a socket that is closing. A POST sent that way fails outright
//! (clients retry only idempotent requests), which is how a conformance run met an `EOF` on the
//! POST after its out-of-order PATCH, now and then, when the body came a moment after the head.
//!
//! So each request's body is watched to its end, and a response that leaves it unread says
//! `Connection: close` itself: the client opens a new connection instead of reusing a dying one.
//! (HTTP/2 needs none of this: an unread stream is reset on its own and the connection stays.)
//!
//! Each request is also counted in flight on its connection from its head until its response's
//! body is dropped ([`Activity`]), which is what the connection's quiet clock asks.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, Request, Version};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tower::ServiceExt;

use super::activity::{Activity, InFlight};
use crate::api::PeerAddr;

/// The registry's router as hyper calls it: the peer's address attached to each request,
/// `Connection: close` on any HTTP/1 response that left its request's body unread, and each
/// request counted in flight on the connection's `activity`.
pub fn service(
    app: axum::Router,
    peer: PeerAddr,
    activity: Arc<Activity>,
) -> impl tower::Service<Request<Incoming>, Response = Response<Counted>, Error = Infallible, Future: Send> + Clone
{
    tower::service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        let in_flight = activity.begin();
        async move {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(peer);
            let http1 = parts.version < Version::HTTP_2;
            let (body, read) = Watched::new(body);
            let mut response = app.oneshot(Request::from_parts(parts, body)).await?;
            if http1 && !read.load(Ordering::Acquire) {
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|inner| Counted { inner, _in_flight: in_flight }))
        }
    })
}

/// A response body that keeps its request counted in flight until it is dropped.
pub struct Counted {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that records when it has been read to its end.
struct Watched {
    inner: Incoming,
    read: Arc<AtomicBool>,
}

impl Watched {
    fn new(inner: Incoming) -> (Self, Arc<AtomicBool>) {
        let read = Arc::new(AtomicBool::new(inner.is_end_stream()));
        (Watched { inner, read: read.clone() }, read)
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
