//! A throwaway MinIO server on loopback for the end-to-end tests and the benchmark: started from
//! the given binary over the given directory, with root credentials of its own, stopped on drop.
//! Requests to it are signed by curl (`--aws-sigv4`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "berth-test";
pub const SECRET: &str = "berth-test-secret";

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
    /// Starts MinIO and waits (at most 30 s) until it is ready.
    pub async fn start(bin: &Path, dir: &Path) -> Result<Minio, String> {
        let free = || berth_core::ports::free_port().map_err(|e| e.to_string());
        let (port, console) = (free()?, free()?);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let minio = Minio { child, url: format!("http://127.0.0.1:{port}") };
        let client = reqwest::Client::builder().no_proxy().build().map_err(|e| e.to_string())?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let ready = client.get(format!("{}/minio/health/ready", minio.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(minio);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("MinIO did not become ready within 30 s".into())
    }

    /// One signed request to `path` (e.g. `/bucket?list-type=2`), for curl to run.
    pub fn s3(&self, method: &str, path: &str) -> Command {
        let mut c = Command::new("curl");
        c.args(["-sS", "-f", "-X", method, "--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", &format!("{USER}:{SECRET}")])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg(format!("{}{path}", self.url));
        c
    }

    /// A new, empty bucket.
    pub fn bucket(&self, name: &str) -> Result<(), String> {
        let out = self.s3("PUT", &format!("/{name}")).output().map_err(|e| format!("running curl: {e}"))?;
        if !out.status.success() {
            return Err(format!("creating bucket {name}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    }
}
