//! The same loads with content in S3 and, for berth, metadata in PostgreSQL: MinIO on loopback
//! (started here, a bucket of its own for each server) and a throwaway PostgreSQL (a database of
//! its own for each berth). CNCF Distribution uses its `s3` driver on the same MinIO, configured as
//! its docs recommend for production (`storage.cache.blobdescriptor: inmemory`), with bytes
//! through the registry (`redirect.disable: true`) like berth's `redirect: false`, so both
//! columns move every byte through the registry.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const USER: &str = "berth-bench";
const SECRET: &str = "berth-bench-secret";

/// A MinIO server on loopback, stopped on drop.
pub struct Minio {
    child: Child,
    pub url: String,
}

impl Drop for Minio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Minio {
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Minio> {
        let (port, console) = (crate::net::free_port()?, crate::net::free_port()?);
        std::fs::create_dir_all(dir)?;
        let child = Command::new(bin)
            .args(["server", "--quiet", "--address", &format!("127.0.0.1:{port}")])
            .args(["--console-address", &format!("127.0.0.1:{console}")])
            .arg(dir)
            .env("MINIO_ROOT_USER", USER)
            .env("MINIO_ROOT_PASSWORD", SECRET)
            .env("MINIO_BROWSER", "off")
            .env("MINIO_UPDATE", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let minio = Minio { child, url: format!("http://127.0.0.1:{port}") };
        let client = crate::load::client();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let ready = client.get(format!("{}/minio/health/ready", minio.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(minio);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("MinIO did not become ready within 30 s")
    }

    /// A new, empty bucket (curl signs the request).
    pub fn bucket(&self, name: &str) -> anyhow::Result<()> {
        let out = Command::new("curl")
            .args(["-sS", "-f", "-X", "PUT", "--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", &format!("{USER}:{SECRET}")])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg(format!("{}/{name}", self.url))
            .output()
            .context("running curl")?;
        if !out.status.success() {
            bail!("creating bucket {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

impl Minio {
    /// A target of its own for one server: a new bucket and, for berth, a new database.
    pub async fn target(&self, with_database: bool) -> anyhow::Result<S3Target> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let bucket = format!("bench-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        self.bucket(&bucket)?;
        let postgres_url = if with_database {
            Some(berth_registry::meta::postgres::testing::TestDatabase::create().await.url)
        } else {
            None
        };
        Ok(S3Target { endpoint: self.url.clone(), bucket, postgres_url })
    }
}

/// Where one server keeps its content: its own bucket and (berth) its own database.
#[derive(Clone, Debug)]
pub struct S3Target {
    pub endpoint: String,
    pub bucket: String,
    pub postgres_url: Option<String>,
}

impl S3Target {
    /// berth's config for this target; the credentials come from the environment ([`env`]).
    pub fn berth_config(&self) -> String {
        format!(
            "storage:\n  kind: s3\n  bucket: {}\n  endpoint: {}\n  path_style: true\nmetadata:\n  kind: {}\n",
            self.bucket,
            self.endpoint,
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
