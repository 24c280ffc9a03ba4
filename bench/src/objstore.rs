//! The same loads with content in S3 and, for berth, metadata in PostgreSQL: MinIO on loopback
//! (started here, a bucket of its own for each server) and a throwaway PostgreSQL (a database of
//! its own for each berth). CNCF Distribution uses its `s3` driver on the same MinIO, configured as
//! its docs recommend for production (`storage.cache.blobdescriptor: inmemory`), with bytes
//! through the registry (`redirect.disable: true`) like berth's `redirect: false`, so both
//! columns move every byte through the registry.

use berth_registry::storage::s3::testing::{SECRET, USER};

pub use berth_registry::storage::s3::testing::Minio;

/// Starts MinIO over `dir`.
pub async fn start(bin: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<Minio> {
    Minio::start(bin, dir).await.map_err(anyhow::Error::msg)
}

/// A target of its own for one server: a new bucket on `store` and, for berth, a new database.
pub async fn target(store: &Minio, with_database: bool) -> anyhow::Result<S3Target> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let bucket = format!("bench-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    store.bucket(&bucket).map_err(anyhow::Error::msg)?;
    let postgres_url = if with_database {
        Some(berth_registry::meta::postgres::testing::TestDatabase::create().await.url)
    } else {
        None
    };
    Ok(S3Target { endpoint: store.url.clone(), bucket, postgres_url, redirect: false })
}

/// Where one server keeps its content: its own bucket and (berth) its own database.
#[derive(Clone, Debug)]
pub struct S3Target {
    pub endpoint: String,
    pub bucket: String,
    pub postgres_url: Option<String>,
    /// berth answers blob GETs with a presigned URL (307) instead of the bytes.
    pub redirect: bool,
}

impl S3Target {
    /// berth's config for this target; the credentials come from the environment ([`env`]).
    pub fn berth_config(&self) -> String {
        format!(
            "storage:\n  kind: s3\n  bucket: {}\n  endpoint: {}\n  path_style: true\n  redirect: {}\nmetadata:\n  kind: {}\n",
            self.bucket,
            self.endpoint,
            self.redirect,
            if self.postgres_url.is_some() { "postgres" } else { "sqlite" }
        )
    }

    /// Distribution's `storage:` section for this target.
    pub fn distribution_storage(&self) -> String {
        format!(
            "storage:\n  s3:\n    accesskey: {USER}\n    secretkey: {SECRET}\n    region: us-east-1\n    regionendpoint: {}\n    bucket: {}\n    forcepathstyle: true\n    secure: false\n    rootdirectory: /registry\n  cache:\n    blobdescriptor: inmemory\n  delete:\n    enabled: true\n  redirect:\n    disable: true\n",
            self.endpoint, self.bucket
        )
    }

    /// The environment berth reads its credentials and database from.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env =
            vec![("AWS_ACCESS_KEY_ID", USER.to_owned()), ("AWS_SECRET_ACCESS_KEY", SECRET.to_owned())];
        if let Some(url) = &self.postgres_url {
            env.push(("BERTH_POSTGRES_URL", url.clone()));
        }
        env
    }
}
