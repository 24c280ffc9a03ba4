//! The registry as its config describes it: storage, the metadata store in each of its roles,
//! and the services built on them (events, replication on push, the collector, the proxy, auth).

use std::sync::Arc;

use crate::api::AppState;
use crate::auth::Authenticator;
use crate::gc::Collector;
use crate::meta::cache::CacheIndex;
use crate::meta::gc::Collect;
use crate::meta::multiparts::MultipartLog;
use crate::meta::outbox::EventLog;
#[cfg(feature = "postgres")]
use crate::meta::postgres::PostgresMeta;
use crate::meta::sqlite::SqliteMeta;
use crate::meta::{MetaError, MetaStore};
use crate::notify::deliver::Notifier;
use crate::notify::Events;
use crate::proxy::Proxy;
use crate::replicate::on_push::PushCopier;
#[cfg(feature = "s3")]
use crate::service::multiparts::Journal;
use crate::service::{Limits, Registry};
use crate::storage::fs::{self, FsStorage};
use crate::storage::memory::MemoryStorage;
#[cfg(feature = "s3")]
use crate::storage::s3::{S3Options, S3Storage};
use crate::storage::Storage;
use crate::telemetry::Metrics;
use crate::tls::TlsError;
use berth_core::config::{Config, MetadataConfig, S3Config, StorageConfig};

/// Why the registry could not be built or served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("storage at {path}: {source}")]
    Storage { path: String, source: std::io::Error },
    #[error("metadata: {0}")]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("proxy: {0}")]
    Proxy(String),
    #[error("auth: {0}")]
    Auth(String),
    #[error("{0}")]
    Config(String),
}

#[cfg(not(feature = "s3"))]
fn s3_storage(_: &S3Config, _: Arc<dyn MultipartLog>) -> Result<MemoryStorage, ServeError> {
    Err(ServeError::Config("storage: this berth was built without S3 support (feature s3)".into()))
}

/// The bucket as configured, with its credentials from `credentials_dir` (the files a mounted
/// Secret's `accessKeyId` and `secretAccessKey` keys become, re-read when they change) or the
/// usual AWS variables.
/// Its writers record their multipart uploads in `log`.
#[cfg(feature = "s3")]
fn s3_storage(c: &S3Config, log: Arc<dyn MultipartLog>) -> Result<S3Storage, ServeError> {
    let fail = |m: String| ServeError::Config(format!("storage: {m}"));
    let env = |var: &str| match (&c.credentials_dir, std::env::var(var)) {
        (Some(_), _) => Ok(String::new()),
        (None, Ok(v)) => Ok(v),
        (None, Err(_)) => Err(fail(format!("no credentials_dir and {var} is not set"))),
    };
    let ca_pem = match &c.ca_file {
        Some(f) => Some(std::fs::read(f).map_err(|e| fail(format!("reading {}: {e}", f.display())))?),
        None => None,
    };
    S3Storage::new(&S3Options {
        bucket: c.bucket.clone(),
        prefix: c.prefix.clone().unwrap_or_default(),
        region: c.region.clone().unwrap_or_default(),
        endpoint: c.endpoint.clone().unwrap_or_default(),
        path_style: c.path_style,
        access_key_id: env("AWS_ACCESS_KEY_ID")?,
        secret_access_key: env("AWS_SECRET_ACCESS_KEY")?,
        credentials_dir: c.credentials_dir.clone(),
        ca_pem,
        redirect: c.redirect,
    })
    .map(|s| s.with_journal(Arc::new(Journal(log))))
    .map_err(fail)
}

/// One metadata store in its three roles.
struct Metadata {
    /// The registry's index.
    meta: Arc<dyn MetaStore>,
    /// The proxy's cache bookkeeping.
    cache: Arc<dyn CacheIndex>,
    /// The record of multipart uploads written straight into object storage.
    multiparts: Arc<dyn MultipartLog>,
    /// What garbage collection reads and removes.
    collect: Arc<dyn Collect>,
    /// What the admin API reports of storage use.
    usage: Arc<dyn crate::meta::usage::Usage>,
    /// Events of changes and their deliveries.
    events: Arc<dyn EventLog>,
    /// The embedded store, which also keeps a filesystem store's small objects.
    sqlite: Option<SqliteMeta>,
}

impl Metadata {
    fn of<M: MetaStore + CacheIndex + MultipartLog + Collect + crate::meta::usage::Usage + EventLog>(
        m: Arc<M>,
    ) -> Metadata {
        Metadata {
            meta: m.clone(),
            cache: m.clone(),
            multiparts: m.clone(),
            collect: m.clone(),
            usage: m.clone(),
            events: m,
            sqlite: None,
        }
    }
}

/// The database URL: from `url_file`, else `BERTH_POSTGRES_URL`.
#[cfg(feature = "postgres")]
fn postgres_url(url_file: Option<&std::path::Path>) -> Result<String, ServeError> {
    match url_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| ServeError::Config(format!("metadata.url_file {}: {e}", f.display()))),
        None => std::env::var("BERTH_POSTGRES_URL").map_err(|_| {
            ServeError::Config("metadata: no url_file and BERTH_POSTGRES_URL is not set".into())
        }),
    }
}

/// `berth contract-schema`: rules Berths older than this one out of the configured PostgreSQL
/// database; the oldest schema whose code could run on it before, and now.
pub async fn contract_schema(config: &Config) -> Result<(i32, i32), ServeError> {
    match &config.metadata {
        #[cfg(feature = "postgres")]
        MetadataConfig::Postgres { url_file, ca_file, .. } => {
            let url = postgres_url(url_file.as_deref())?;
            Ok(PostgresMeta::contract(url.trim(), ca_file.as_deref()).await?)
        }
        #[cfg(not(feature = "postgres"))]
        MetadataConfig::Postgres { .. } => {
            Err(ServeError::Config("metadata: this berth was built without PostgreSQL support".into()))
        }
        MetadataConfig::Sqlite { .. } => Err(ServeError::Config(
            "metadata: SQLite needs no contracting (one berth owns its file, and an older one refuses a newer schema)"
                .into(),
        )),
    }
}

/// Writes the small objects of the configured filesystem store out as files (for an older Berth,
/// which reads only files); returns how many.
pub async fn unpack_small_objects(config: &Config) -> Result<u64, ServeError> {
    let (Some(path), Some(db)) = (config.storage_path(), config.sqlite_path()) else {
        return Err(ServeError::Config(
            "storage: only a filesystem store with SQLite metadata keeps small objects".into(),
        ));
    };
    let storage = |source| ServeError::Storage { path: path.display().to_string(), source };
    let meta = SqliteMeta::open(db)?;
    let fs = FsStorage::open(&path).map_err(storage)?.with_small_objects(0, &meta).await.map_err(storage)?;
    fs.unpack_small_objects().await.map_err(|e| storage(std::io::Error::other(e)))
}

/// The configured metadata store.
async fn open_metadata(config: &Config) -> Result<Metadata, ServeError> {
    match &config.metadata {
        MetadataConfig::Sqlite { .. } => {
            let meta = match config.sqlite_path() {
                Some(path) => SqliteMeta::open(path)?,
                None => SqliteMeta::temporary()?,
            };
            Ok(Metadata { sqlite: Some(meta.clone()), ..Metadata::of(Arc::new(meta)) })
        }
        #[cfg(feature = "postgres")]
        MetadataConfig::Postgres { url_file, max_connections, ca_file, contract } => {
            let url = postgres_url(url_file.as_deref())?;
            let meta = Arc::new(
                PostgresMeta::connect_with(
                    url.trim(),
                    *max_connections as usize,
                    ca_file.as_deref(),
                    *contract,
                )
                .await?,
            );
            if let Some(f) = url_file {
                // A rotated password takes effect without a restart.
                meta.watch_url_file(f.clone(), crate::meta::postgres::URL_REFRESH);
            }
            Ok(Metadata::of(meta))
        }
        #[cfg(not(feature = "postgres"))]
        MetadataConfig::Postgres { .. } => {
            Err(ServeError::Config("metadata: this berth was built without PostgreSQL support".into()))
        }
    }
}

/// Opens storage and metadata as configured and wires up the application state.
pub async fn build_state(config: &Config) -> Result<AppState, ServeError> {
    let metrics = Arc::new(Metrics::new());
    let Metadata { meta, cache, multiparts, collect, usage, events: event_log, sqlite } =
        open_metadata(config).await?;
    let mut journaled = None;
    let storage: Arc<dyn Storage> = match (&config.storage, config.storage_path()) {
        (StorageConfig::Filesystem { small_objects, .. }, Some(path)) => {
            let error = |source| ServeError::Storage { path: path.display().to_string(), source };
            let fs = FsStorage::open(&path).map_err(error)?;
            // Rows only where one process owns the store: in SQLite metadata.
            let fs = match &sqlite {
                Some(db) => {
                    let small = small_objects.unwrap_or(fs::SMALL_OBJECTS_DEFAULT);
                    fs.with_small_objects(small, db).await.map_err(error)?
                }
                None => fs.without_small_objects().map_err(error)?,
            };
            Arc::new(fs)
        }
        (StorageConfig::S3(s3), _) => {
            journaled = Some(multiparts.clone());
            Arc::new(s3_storage(s3, multiparts)?)
        }
        _ => Arc::new(MemoryStorage::new()),
    };
    let limits = Limits {
        max_manifest_bytes: usize::try_from(config.limits.max_manifest_bytes).unwrap_or(usize::MAX),
        upload_ttl: config.limits.upload_ttl,
        max_upload_chunks: config.limits.max_upload_chunks,
        referrers_page_bytes: usize::try_from(config.limits.referrers_page_bytes).unwrap_or(usize::MAX),
        purge_delay: config.retention.purge_delay.unwrap_or_default(),
        sparse_indexes: config.sparse_indexes,
        ..Limits::default()
    };
    let mut registry = Registry::new(metrics.instrument(storage), meta, limits);
    if let Some(log) = journaled {
        registry = registry.with_multipart_log(log);
    }
    let events = Arc::new(Events::new(&config.notifications, &config.replication));
    let registry = Arc::new(registry.with_events(events.clone()));
    let mut state = AppState::new(registry.clone(), metrics.clone(), config).map_err(ServeError::Config)?;
    let source = match (&config.notifications.source, &config.external_url) {
        (Some(s), _) | (None, Some(s)) => s.trim_end_matches('/').to_owned(),
        (None, None) => format!("http://{}", config.listen),
    };
    let on_push = config
        .replication
        .on_push
        .iter()
        .map(|p| PushCopier::new(p, registry.clone()).map_err(|e| ServeError::Config(format!("{e:#}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let notifier = Notifier::new(
        &config.notifications,
        on_push,
        event_log.clone(),
        events,
        metrics.webhooks.clone(),
        source,
    )
    .map_err(ServeError::Config)?
    .with_notes(state.audit.clone(), state.pulls.clone());
    state.notifier = Some(Arc::new(notifier));
    state.events = Some(event_log);
    // The pull-through cache's repositories are its eviction's to clean, not the collector's.
    let cached = config.proxy.upstreams.iter().map(|u| u.name.clone()).collect();
    let retention = crate::gc::retention::Policies::new(&config.retention).map_err(ServeError::Config)?;
    let collector =
        Collector::new(registry.clone(), collect, cached, metrics.gc.clone()).with_retention(retention);
    collector.recover().await;
    state.collector = Some(Arc::new(collector));
    state.usage = Some(usage);
    if !config.proxy.is_empty() {
        let spool = config.data_dir.join("proxy-spool");
        state.proxy = Some(
            Proxy::new(&config.proxy, registry, cache, spool, metrics.proxy.clone())
                .map_err(ServeError::Proxy)?,
        );
    }
    if let Some(a) = &config.auth {
        let auth =
            Authenticator::new(a, &config.data_dir, metrics.login.clone()).map_err(ServeError::Auth)?;
        state.auth = Some(Arc::new(auth.with_audit(state.audit.clone())));
    }
    Ok(state)
}
