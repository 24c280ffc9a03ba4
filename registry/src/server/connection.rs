//! One client connection's bounds: how many may be open at once (one more is told so and closed),
//! how long a TLS handshake may take, how long a response may wait for a client that takes none
//! of it, and how long a connection may go without a request in flight.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

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

/// Whether a connection is serving anything: its requests count themselves in and out (from
/// the head's arrival until the response's body is dropped), and its socket reads this.
#[derive(Default)]
pub struct Activity {
    requests: AtomicUsize,
    /// Requests ended so far: each end starts the quiet clock again.
    ended: AtomicU64,
    /// The socket's reader, woken when the last request ends (so it starts the clock).
    reader: AtomicWaker,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity::default())
    }

    /// Counts a request in until the returned value is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One request in flight on a connection ([`Activity::begin`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::AcqRel);
        if self.0.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// A client connection's socket, with two clocks. Writes fail once one has waited `idle` for the
/// client to take anything: a client that stops reading a response cannot hold its request (and
/// what the request holds) open forever. Reads fail once the connection has had no request in
/// flight for `quiet` (since it opened, or since its last request ended), whatever arrived
/// meanwhile: a socket that never sends a request (or an HTTP/2 connection kept open with
/// pings) cannot hold one of the `limits.max_connections` forever. Request bodies have their
/// own timeout.
pub struct StallGuard<T> {
    inner: T,
    idle: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
    quiet: Duration,
    /// The quiet clock, and the count of ended requests it was started at.
    quiet_since: Option<(u64, Pin<Box<Sleep>>)>,
    metrics: ConnectionMetrics,
}

impl<T> StallGuard<T> {
    pub fn new(
        inner: T,
        (idle, quiet): (Duration, Duration),
        activity: Arc<Activity>,
        metrics: ConnectionMetrics,
    ) -> StallGuard<T> {
        StallGuard { inner, idle, stalled: None, activity, quiet, quiet_since: None, metrics }
    }

    /// A read that found nothing, with the quiet clock applied: not running while a request is
    /// in flight; (re)started when the connection opened or a request ended since it started;
    /// the read fails once it has run out.
    fn quiet(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.activity.reader.register(cx.waker());
        if self.activity.requests.load(Ordering::Acquire) > 0 {
            self.quiet_since = None;
            return Poll::Pending;
        }
        let ended = self.activity.ended.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + self.quiet;
        let (since, clock) =
            self.quiet_since.get_or_insert_with(|| (ended, Box::pin(tokio::time::sleep_until(deadline))));
        if *since != ended {
            *since = ended;
            clock.as_mut().reset(deadline);
        }
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.metrics.quiet.inc();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no request on the connection for {:?}", self.quiet),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
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
