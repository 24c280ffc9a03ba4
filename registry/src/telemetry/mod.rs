//! Prometheus metrics. Labels are bounded: the endpoint kind (never the path), the method, the
//! status code, the storage operation.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::auth::throttle::LoginMetrics;
use crate::gc::metrics::GcMetrics;
use crate::storage::{ByteStream, Key, ObjectWriter, Storage, StorageError};

mod proxy;
pub use proxy::{ContentLabel, ProxyMetrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: &'static str,
    /// ok, not_found, full, unavailable (a remote store did not serve it) or error.
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<EndpointLabels>,
    bytes_in: Counter,
    bytes_out: Counter,
    upload_sessions: Gauge,
    /// The metadata database's pooled connections by state (in_use, idle), and the most allowed.
    db_connections: Family<StateLabels, Gauge>,
    db_max_connections: Gauge,
    storage_ops: HistogramFamily<OpLabels>,
    pub proxy: Arc<ProxyMetrics>,
    pub gc: Arc<GcMetrics>,
    pub webhooks: Arc<crate::notify::metrics::WebhookMetrics>,
    pub login: LoginMetrics,
    pub connections: ConnectionMetrics,
    pub volume: VolumeMetrics,
    pub stored: StoredMetrics,
}

/// What the metadata says is stored, each blob once (object storage included).
#[derive(Clone, Default)]
pub struct StoredMetrics {
    pub bytes: Gauge,
    pub blobs: Gauge,
}

/// The filesystem under the data directory (absent on object storage).
#[derive(Clone, Default)]
pub struct VolumeMetrics {
    pub size: Gauge,
    pub available: Gauge,
}

/// What the accept loop saw.
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    /// Turned away because `limits.max_connections` were open.
    pub refused: Counter,
    /// Closed for not finishing a TLS handshake in time.
    pub handshake_timeouts: Counter,
    /// Closed because the client took nothing of a response for `limits.body_idle_timeout`.
    pub stalled: Counter,
    /// Closed for having no request in flight for `limits.idle_timeout`.
    pub quiet: Counter,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.5, 14))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily<EndpointLabels> = Family::new_with_constructor(latency_histogram);
        let storage_ops: HistogramFamily<OpLabels> = Family::new_with_constructor(latency_histogram);
        let (bytes_in, bytes_out, upload_sessions) =
            (Counter::default(), Counter::default(), Gauge::default());
        registry.register(
            "http_requests",
            "HTTP requests by endpoint kind, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by endpoint kind",
            durations.clone(),
        );
        registry.register("http_received_bytes", "Request body bytes received", bytes_in.clone());
        registry.register("http_sent_bytes", "Response body bytes sent", bytes_out.clone());
        registry.register("upload_sessions", "Blob upload sessions open", upload_sessions.clone());
        let (db_connections, db_max_connections) =
            (Family::<StateLabels, Gauge>::default(), Gauge::default());
        registry.register(
            "database_connections",
            "Pooled connections to the metadata database, by state (in_use, idle)",
            db_connections.clone(),
        );
        registry.register(
            "database_max_connections",
            "The most connections to the metadata database this replica opens",
            db_max_connections.clone(),
        );
        registry.register(
            "storage_operation_duration_seconds",
            "Storage backend latency by operation and outcome",
            storage_ops.clone(),
        );
        let proxy = Arc::new(ProxyMetrics::default());
        proxy.register(&mut registry);
        let gc = Arc::new(GcMetrics::default());
        gc.register(&mut registry);
        let webhooks = Arc::new(crate::notify::metrics::WebhookMetrics::default());
        webhooks.register(&mut registry);
        let login = LoginMetrics::default();
        registry.register(
            "auth_failed_logins",
            "Logins refused for a wrong name or password",
            login.failed.clone(),
        );
        registry.register(
            "auth_throttled_logins",
            "Logins refused unheard after repeated failures, or for want of a turn at password checking",
            login.throttled.clone(),
        );
        let connections = ConnectionMetrics::default();
        registry.register("connections_open", "Client connections open", connections.open.clone());
        registry.register(
            "connections_refused",
            "Connections refused because limits.max_connections were open",
            connections.refused.clone(),
        );
        registry.register(
            "connections_handshake_timeouts",
            "TLS connections closed for not finishing the handshake in time",
            connections.handshake_timeouts.clone(),
        );
        registry.register(
            "connections_stalled",
            "Connections closed because the client stopped taking a response",
            connections.stalled.clone(),
        );
        registry.register(
            "connections_idle_closed",
            "Connections closed for having no request in flight for limits.idle_timeout",
            connections.quiet.clone(),
        );
        let volume = VolumeMetrics::default();
        registry.register(
            "storage_volume_size_bytes",
            "Size of the filesystem holding the data directory",
            volume.size.clone(),
        );
        registry.register(
            "storage_volume_available_bytes",
            "Bytes of that filesystem still available to berth",
            volume.available.clone(),
        );
        let stored = StoredMetrics::default();
        registry.register(
            "storage_stored_bytes",
            "Bytes of the blobs and manifests stored, each once",
            stored.bytes.clone(),
        );
        registry.register(
            "storage_stored_blobs",
            "Blobs and manifests stored, each once",
            stored.blobs.clone(),
        );
        Metrics {
            registry,
            requests,
            durations,
            bytes_in,
            bytes_out,
            upload_sessions,
            db_connections,
            db_max_connections,
            storage_ops,
            proxy,
            gc,
            webhooks,
            login,
            connections,
            volume,
            stored,
        }
    }

    pub fn observe_request(
        &self,
        endpoint: &'static str,
        method: &Method,
        status: StatusCode,
        took: Duration,
    ) {
        let method = match *method {
            Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::PATCH | Method::DELETE => {
                method.as_str()
            }
            _ => "other",
        };
        self.requests
            .get_or_create(&RequestLabels { endpoint, method: method.to_owned(), status: status.as_u16() })
            .inc();
        self.durations.get_or_create(&EndpointLabels { endpoint }).observe(took.as_secs_f64());
    }

    pub fn set_upload_sessions(&self, n: u64) {
        self.upload_sessions.set(n as i64);
    }

    pub fn set_database_pool(&self, pool: crate::meta::PoolUse) {
        self.db_connections.get_or_create(&StateLabels { state: "in_use" }).set(pool.in_use as i64);
        self.db_connections.get_or_create(&StateLabels { state: "idle" }).set(pool.idle as i64);
        self.db_max_connections.set(pool.max as i64);
    }

    pub fn count_body_in(&self, body: Body) -> Body {
        Body::new(Counted { inner: body, counter: self.bytes_in.clone() })
    }

    pub fn count_body_out(&self, body: Body) -> Body {
        Body::new(Counted { inner: body, counter: self.bytes_out.clone() })
    }

    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Wraps a storage backend so every operation's latency is recorded.
    pub fn instrument(self: &Arc<Self>, inner: Arc<dyn Storage>) -> Arc<dyn Storage> {
        Arc::new(Instrumented { inner, metrics: self.clone() })
    }

    fn time_op<T>(&self, operation: &'static str, started: Instant, result: &Result<T, StorageError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(StorageError::NotFound) => "not_found",
            Err(StorageError::Unavailable(_)) => "unavailable",
            Err(e) if e.is_full() => "full",
            Err(_) => "error",
        };
        let labels = OpLabels { operation, outcome };
        self.storage_ops.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A body that counts its bytes and otherwise changes nothing (size hints included).
struct Counted {
    inner: Body,
    counter: Counter,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.counter.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

struct Instrumented {
    inner: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    /// A writer started at `t`, timed as `create`, its commit timed as it ends.
    fn instrumented(
        &self,
        t: Instant,
        inner: Result<Box<dyn ObjectWriter>, StorageError>,
    ) -> Result<Box<dyn ObjectWriter>, StorageError> {
        self.metrics.time_op("create", t, &inner);
        Ok(Box::new(InstrumentedWriter { inner: inner?, metrics: self.metrics.clone() }))
    }
}

#[async_trait::async_trait]
impl Storage for Instrumented {
    async fn stat(&self, key: &Key) -> Result<Option<u64>, StorageError> {
        let t = Instant::now();
        let r = self.inner.stat(key).await;
        self.metrics.time_op("stat", t, &r);
        r
    }

    async fn get(&self, key: &Key, range: Option<std::ops::Range<u64>>) -> Result<ByteStream, StorageError> {
        let t = Instant::now();
        let r = self.inner.get(key, range).await;
        self.metrics.time_op("get", t, &r);
        r
    }

    async fn writer(&self) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let t = Instant::now();
        self.instrumented(t, self.inner.writer().await)
    }

    async fn writer_at(&self, key: &Key) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let t = Instant::now();
        self.instrumented(t, self.inner.writer_at(key).await)
    }

    async fn scratch_writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let t = Instant::now();
        self.instrumented(t, self.inner.scratch_writer(key).await)
    }

    async fn rename(&self, from: &Key, to: &Key) -> Result<(), StorageError> {
        let t = Instant::now();
        let r = self.inner.rename(from, to).await;
        self.metrics.time_op("rename", t, &r);
        r
    }

    async fn rename_then_record(&self, from: &Key, to: &Key) -> Result<(), StorageError> {
        let t = Instant::now();
        let r = self.inner.rename_then_record(from, to).await;
        self.metrics.time_op("rename_then_record", t, &r);
        r
    }

    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        let t = Instant::now();
        let r = self.inner.delete(key).await;
        self.metrics.time_op("delete", t, &r);
        r
    }

    async fn list(&self, prefix: &Key) -> Result<Vec<crate::storage::Listed>, StorageError> {
        let t = Instant::now();
        let r = self.inner.list(prefix).await;
        self.metrics.time_op("list", t, &r);
        r
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.inner.check().await
    }

    async fn presigned_get(&self, key: &Key) -> Result<Option<String>, StorageError> {
        let t = Instant::now();
        let r = self.inner.presigned_get(key).await;
        self.metrics.time_op("presign", t, &r);
        r
    }

    fn assembly_part_size(&self, index: usize) -> Option<u64> {
        self.inner.assembly_part_size(index)
    }

    async fn start_assembly(&self, key: &Key) -> Result<String, StorageError> {
        let t = Instant::now();
        let r = self.inner.start_assembly(key).await;
        self.metrics.time_op("start_assembly", t, &r);
        r
    }

    async fn put_assembly_part(
        &self,
        key: &Key,
        id: &str,
        index: usize,
        data: Bytes,
    ) -> Result<String, StorageError> {
        let t = Instant::now();
        let r = self.inner.put_assembly_part(key, id, index, data).await;
        self.metrics.time_op("put_part", t, &r);
        r
    }

    async fn complete_assembly(&self, key: &Key, id: &str, tags: Vec<String>) -> Result<(), StorageError> {
        let t = Instant::now();
        let r = self.inner.complete_assembly(key, id, tags).await;
        self.metrics.time_op("complete_assembly", t, &r);
        r
    }

    async fn abort_assembly(&self, key: &Key, id: &str) -> Result<(), StorageError> {
        let t = Instant::now();
        let r = self.inner.abort_assembly(key, id).await;
        self.metrics.time_op("abort_assembly", t, &r);
        r
    }

    fn adopts_from(&self, dir: &std::path::Path) -> bool {
        self.inner.adopts_from(dir)
    }

    async fn adopt(&self, file: &std::path::Path, key: &Key) -> Result<(), StorageError> {
        let t = Instant::now();
        let r = self.inner.adopt(file, key).await;
        self.metrics.time_op("commit", t, &r);
        r
    }
}

struct InstrumentedWriter {
    inner: Box<dyn ObjectWriter>,
    metrics: Arc<Metrics>,
}

#[async_trait::async_trait]
impl ObjectWriter for InstrumentedWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.inner.write(data).await
    }

    fn written(&self) -> u64 {
        self.inner.written()
    }

    async fn commit(self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        let t = Instant::now();
        let metrics = self.metrics.clone();
        let r = self.inner.commit(key).await;
        metrics.time_op("commit", t, &r);
        r
    }

    async fn commit_unsynced(self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        let t = Instant::now();
        let metrics = self.metrics.clone();
        let r = self.inner.commit_unsynced(key).await;
        metrics.time_op("commit_unsynced", t, &r);
        r
    }

    async fn commit_then_record(self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        let t = Instant::now();
        let metrics = self.metrics.clone();
        let r = self.inner.commit_then_record(key).await;
        metrics.time_op("commit_then_record", t, &r);
        r
    }
}
