//! A real `berth` server on a loopback port for each test, and small client helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::config::Config;
use berth_registry::api::AppState;
use berth_registry::meta::sqlite::SqliteMeta;
use berth_registry::service::{Limits, Registry};
use berth_registry::storage::fs::{FsStorage, SMALL_OBJECTS_DEFAULT};
use berth_registry::telemetry::Metrics;
use reqwest::{Method, StatusCode};
use sha2::Digest as _;
use tokio::sync::oneshot;

pub mod berth;
pub mod upstream;

pub struct TestServer {
    pub url: String,
    pub state: AppState,
    pub addr: std::net::SocketAddr,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let mut s = TestServer::start_in(&data, Limits::default()).await;
        s._dir = Some(dir);
        s
    }

    pub async fn with_limits(limits: Limits) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut s = TestServer::start_in(dir.path(), limits).await;
        s._dir = Some(dir);
        s
    }

    /// A server over an existing data directory (for restart tests).
    pub async fn start_in(data: &Path, limits: Limits) -> TestServer {
        let metrics = Arc::new(Metrics::new());
        let meta = SqliteMeta::open(data.join("meta.db")).unwrap();
        let storage = FsStorage::open(data.join("storage")).unwrap();
        let storage = Arc::new(storage.with_small_objects(SMALL_OBJECTS_DEFAULT, &meta).await.unwrap());
        let meta = Arc::new(meta);
        let registry = Arc::new(Registry::new(metrics.instrument(storage), meta, limits));
        let config = Config { data_dir: data.to_path_buf(), ..Config::default() };
        let state = AppState::new(registry, metrics, &config).unwrap();
        TestServer::serve(config, state).await
    }

    /// A server built from `config` exactly as `berth serve` builds it, in a fresh data directory.
    pub async fn with_config(mut config: Config) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        config.data_dir = dir.path().to_path_buf();
        let state = berth_registry::server::build_state(&config).await.unwrap();
        let mut s = TestServer::serve(config, state).await;
        s._dir = Some(dir);
        s
    }

    async fn serve(config: Config, state: AppState) -> TestServer {
        let data = config.data_dir.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = Config { listen: addr.to_string(), ..config };
        let served = state.clone();
        let task = tokio::spawn(async move {
            berth_registry::server::serve(&config, served, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            url: format!("http://{addr}"),
            state,
            addr,
            data,
            _dir: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Blobs in storage (what a client could ever be served), as files or rows.
    pub fn stored_blobs(&self) -> Vec<PathBuf> {
        self.stored_under("storage/blobs")
    }

    /// Objects anywhere under `dir` of the data directory.
    pub fn stored_under(&self, dir: &str) -> Vec<PathBuf> {
        stored_under(&self.data, dir)
    }
}

/// The objects a store in `data/storage` holds under `data/<dir>` (`storage/blobs`), files and
/// small objects (rows of `data/meta.db`) both, at the paths they have (or would have) as files.
pub fn stored_under(data: &Path, dir: &str) -> Vec<PathBuf> {
    let storage = data.join("storage");
    let prefix = format!("{}/", dir.strip_prefix("storage/").expect("a directory of the store"));
    let keys = berth_registry::storage::fs::stored_keys(&storage, &data.join("meta.db"), &prefix).unwrap();
    keys.into_iter().map(|k| storage.join(k)).collect()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", berth_core::oci::hex(&sha2::Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", berth_core::oci::hex(&sha2::Sha512::digest(data)))
}

/// The error code of a spec error body.
pub async fn error_code(resp: reqwest::Response) -> String {
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    v["errors"][0]["code"].as_str().unwrap_or("").to_owned()
}

pub async fn push_blob(s: &TestServer, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let r = client()
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "pushing a blob");
    digest
}

/// Starts an upload session in `repo` and returns its Location (a path).
pub async fn start_session(s: &TestServer, repo: &str) -> String {
    let r = client().post(s.url(&format!("/v2/{repo}/blobs/uploads/"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "starting an upload session");
    r.headers()["location"].to_str().unwrap().to_owned()
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Pushes config + one layer and returns (manifest bytes, its digest) without pushing the manifest.
/// PATCHes `chunk` into the session at `loc` as the bytes from `start` on.
pub async fn patch_chunk(
    s: &TestServer,
    loc: &str,
    start: usize,
    chunk: &[u8],
) -> reqwest::Result<reqwest::Response> {
    client()
        .patch(s.url(loc))
        .header("content-range", format!("{start}-{}", start + chunk.len() - 1))
        .header("content-type", "application/octet-stream")
        .body(chunk.to_vec())
        .send()
        .await
}

pub async fn image_manifest(s: &TestServer, repo: &str, seed: &str, extra: serde_json::Value) -> Vec<u8> {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let layer = format!("layer-{seed}").repeat(100);
    let cd = push_blob(s, repo, config.as_bytes()).await;
    let ld = push_blob(s, repo, layer.as_bytes()).await;
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
    });
    if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&m).unwrap()
}

pub async fn put_manifest(
    s: &TestServer,
    repo: &str,
    reference: &str,
    ct: &str,
    body: &[u8],
) -> reqwest::Response {
    client()
        .put(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", ct)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

pub async fn send(method: Method, url: String) -> reqwest::Response {
    client().request(method, url).send().await.unwrap()
}

/// One page of a referrers list: its descriptors' digests, and whether it said it applied the
/// `artifactType` filter.
pub struct ReferrerPage {
    pub digests: Vec<String>,
    pub filtered: bool,
}

/// Every page of the referrers list at `path` on `s`, following its `Link`s.
pub async fn referrer_pages(s: &TestServer, path: &str) -> Vec<ReferrerPage> {
    let (mut pages, mut next) = (Vec::new(), Some(path.to_owned()));
    while let Some(path) = next {
        assert!(pages.len() < 20, "pages without end");
        let r = send(Method::GET, s.url(&path)).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["content-type"], OCI_INDEX);
        let filtered = r.headers().get("oci-filters-applied").is_some_and(|v| v == "artifactType");
        next = r.headers().get("link").map(|v| {
            let v = v.to_str().unwrap();
            assert!(v.ends_with(">; rel=\"next\""), "{v}");
            v.strip_prefix('<').unwrap().split_once('>').unwrap().0.to_owned()
        });
        let body: serde_json::Value = r.json().await.unwrap();
        let listed = body["manifests"].as_array().unwrap().iter();
        pages.push(ReferrerPage {
            digests: listed.map(|m| m["digest"].as_str().unwrap().to_owned()).collect(),
            filtered,
        });
    }
    pages
}

/// Sends a request line exactly as given (no client-side path normalisation) and returns the status.
pub async fn raw_status(addr: std::net::SocketAddr, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Polls `f` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The YAML of a replica on the S3 server and PostgreSQL database the environment names
/// (`BERTH_TEST_S3_ENDPOINT`, `_BUCKET`, `_ACCESS_KEY`, `_SECRET_KEY` and `BERTH_POSTGRES_URL`,
/// an empty database), its objects under `prefix`, its credentials written to `credentials`.
pub fn s3_postgres_yaml(prefix: &str, credentials: &Path) -> String {
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    std::fs::write(credentials.join("accessKeyId"), env("BERTH_TEST_S3_ACCESS_KEY")).unwrap();
    std::fs::write(credentials.join("secretAccessKey"), env("BERTH_TEST_S3_SECRET_KEY")).unwrap();
    env("BERTH_POSTGRES_URL");
    format!(
        "storage:\n  kind: s3\n  bucket: {}\n  prefix: {prefix}\n  endpoint: {}\n  path_style: true\n  credentials_dir: {}\nmetadata:\n  kind: postgres\n",
        env("BERTH_TEST_S3_BUCKET"),
        env("BERTH_TEST_S3_ENDPOINT"),
        credentials.display()
    )
}
