//! One client connection's bounds: how many may be open at once (one more is told so and closed),
//! how long a TLS handshake may take, how long a response may wait for a client that takes none
//! of it, and how long a connection may go without a request in flight.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use super::activity::Activity;
use super::unread;
use crate::api::PeerAddr;
use crate::telemetry::ConnectionMetrics;

/// What a refused connection is told (plain HTTP only; a TLS client just sees the close).
const REFUSAL: &str = "{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"the registry has as many connections open as it serves; retry shortly\"}]}\n";

/// The bound on open connections.
pub struct Connections {
    slots: Arc<Semaphore>,
    pub metrics: ConnectionMetrics,
}

/// An open connection's slot, given back (and counted) when it closes.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: ConnectionMetrics,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.open.dec();
    }
}

impl Connections {
    pub fn new(max: usize, metrics: ConnectionMetrics) -> Connections {
        Connections { slots: Arc::new(Semaphore::new(max)), metrics }
    }

    /// A slot for a new connection; without one, the connection is refused (off the accept loop:
    /// writing the refusal must not wait on the client).
    pub fn admit(&self, stream: TcpStream, plain: bool) -> Option<(TcpStream, Slot)> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                self.metrics.open.inc();
                Some((stream, Slot { _permit: permit, metrics: self.metrics.clone() }))
            }
            Err(_) => {
                self.metrics.refused.inc();
                tokio::spawn(refuse(stream, plain));
                None
            }
        }
    }
}

async fn refuse(mut stream: TcpStream, plain: bool) {
    if plain {
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n{REFUSAL}",
            REFUSAL.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(response.as_bytes())).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// How long a connection asked to finish for being quiet may take before its reads fail.
const FINISHING: Duration = Duration::from_secs(5);

/// How long a connection may take: to finish its TLS handshake, to take anything of a response
/// (`body_idle`), and without a request in flight (`quiet`).
#[derive(Clone, Copy)]
pub struct Timeouts {
    pub handshake: Duration,
    pub body_idle: Duration,
    pub quiet: Duration,
}

/// A client connection's byte stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// What serving a connection takes, cloned for each one.
#[derive(Clone)]
pub struct Serving {
    pub tls: Option<TlsAcceptor>,
    pub builder: auto::Builder<TokioExecutor>,
    pub app: axum::Router,
    pub timeouts: Timeouts,
    /// Turns true when the server stops.
    pub stopping: watch::Receiver<bool>,
    pub metrics: ConnectionMetrics,
}

impl Serving {
    /// Serves one admitted connection until it ends (then its `slot` is given back): the TLS
    /// handshake (if any) within its time, then the app over HTTP/1.1 or HTTP/2. The connection
    /// is asked to finish (HTTP/2 sends GOAWAY, so a client knows which requests were not taken
    /// and sends them again; HTTP/1 closes once its response in flight is sent) when the server
    /// stops or the connection has gone quiet.
    pub async fn serve(self, stream: TcpStream, _slot: Slot, peer: SocketAddr) {
        let Serving { tls, builder, app, timeouts, mut stopping, metrics } = self;
        let activity = Activity::new();
        let service = TowerToHyperService::new(unread::service(app, PeerAddr(peer.ip()), activity.clone()));
        let io = StallGuard::new(stream, timeouts, activity.clone(), metrics.clone());
        let io: Box<dyn Io> = match tls {
            Some(acceptor) => match tokio::time::timeout(timeouts.handshake, acceptor.accept(io)).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, peer = %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics.handshake_timeouts.inc();
                    tracing::debug!(peer = %peer, "TLS handshake did not finish in time");
                    return;
                }
            },
            None => Box::new(io),
        };
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut asked = false;
        let ended = loop {
            tokio::select! {
                ended = conn.as_mut() => break ended,
                // The value only turns true (or its sender goes, at the very end): either is a stop.
                _ = stopping.changed(), if !asked => {
                    asked = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = activity.gone_quiet.notified(), if !asked => {
                    asked = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
        }
    }
}

/// A client connection's socket, with two clocks. Writes fail once one has waited `idle` for the
/// client to take anything: a client that stops reading a response cannot hold its request (and
/// what the request holds) open forever. Once the connection has had no request in flight for
/// `quiet` (since it opened, or since its last request ended), whatever arrived meanwhile, it is
/// asked to finish ([`Serving::serve`]), and its reads fail if it has not [`FINISHING`] later: a
/// socket that never sends a request (or an HTTP/2 connection kept open with pings) cannot hold
/// one of the `limits.max_connections` forever. Request bodies have their own timeout.
pub struct StallGuard<T> {
    inner: T,
    idle: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
    quiet: Duration,
    /// The quiet clock, and the count of ended requests it was started at.
    quiet_since: Option<(u64, Pin<Box<Sleep>>)>,
    /// Whether the connection was asked to finish for being quiet.
    asked: bool,
    metrics: ConnectionMetrics,
}

impl<T> StallGuard<T> {
    pub fn new(
        inner: T,
        timeouts: Timeouts,
        activity: Arc<Activity>,
        metrics: ConnectionMetrics,
    ) -> StallGuard<T> {
        let (idle, quiet) = (timeouts.body_idle, timeouts.quiet);
        StallGuard { inner, idle, stalled: None, activity, quiet, quiet_since: None, asked: false, metrics }
    }

    /// A read that found nothing, with the quiet clock applied: not running while a request is
    /// in flight; (re)started when the connection opened or a request ended since it started.
    /// When it runs out the connection is asked to finish, and the read fails if it runs out
    /// again, [`FINISHING`] later.
    fn quiet(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.activity.reader.register(cx.waker());
        if self.activity.requests.load(Ordering::Acquire) > 0 {
            // The clock is kept (not polled): the request's end restarts it below.
            return Poll::Pending;
        }
        let ended = self.activity.ended.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + if self.asked { FINISHING } else { self.quiet };
        let (since, clock) =
            self.quiet_since.get_or_insert_with(|| (ended, Box::pin(tokio::time::sleep_until(deadline))));
        if *since != ended {
            *since = ended;
            clock.as_mut().reset(deadline);
        }
        if clock.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if self.asked {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no request on the connection for {:?}, and it did not finish", self.quiet),
            )));
        }
        self.asked = true;
        self.metrics.quiet.inc();
        self.activity.gone_quiet.notify_one();
        clock.as_mut().reset(tokio::time::Instant::now() + FINISHING);
        // Polled again so that the clock's new deadline wakes this reader.
        if clock.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// What a write returned, with the clock applied: progress stops it; no progress starts it,
    /// or fails the write once it has run out.
    fn watch<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let idle = self.idle;
        let clock = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.metrics.stalled.inc();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client took nothing for {idle:?}"),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => self.quiet(cx),
            ready => ready,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
