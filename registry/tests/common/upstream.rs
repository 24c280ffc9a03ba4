//! Real upstreams for the pull-through cache tests: CNCF Distribution run as a process, and a
//! counting proxy in front of it that records every request and can corrupt or hold back bodies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use tokio::sync::Notify;

use super::{client, eventually, sha256, OCI_INDEX, OCI_MANIFEST};

/// The Distribution binary `scripts/tools.sh registry` builds, at the pinned version.
pub fn distribution_binary() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_DISTRIBUTION") {
        return p.into();
    }
    let version = include_str!("../../../e2e/versions.env")
        .lines()
        .find_map(|l| l.strip_prefix("DISTRIBUTION_VERSION="))
        .expect("DISTRIBUTION_VERSION in e2e/versions.env")
        .trim();
    let cache = std::env::var("BERTH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(&std::env::var("HOME").unwrap()).join(".cache/berth"));
    let bin = cache.join(format!("registry-{version}/bin/registry"));
    assert!(bin.is_file(), "{} is missing: run `bash scripts/tools.sh registry`", bin.display());
    bin
}

/// CNCF Distribution serving on a loopback port, stopped on drop.
pub struct Distribution {
    pub url: String,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

pub enum Auth {
    None,
    /// Basic auth with one user (bcrypt htpasswd).
    Htpasswd {
        user: &'static str,
        password: &'static str,
    },
}

impl Distribution {
    pub async fn start(auth: Auth) -> Distribution {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd { user, password } => {
                let hash = bcrypt::hash(password, 4).unwrap();
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
                format!("auth:\n  htpasswd:\n    realm: upstream\n    path: {}\n", file.display())
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(distribution_binary())
            .arg("serve")
            .arg(&config_path)
            .env("OTEL_TRACES_EXPORTER", "none")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let probe = format!("{url}/v2/");
        let up =
            eventually(Duration::from_secs(20), || async { client().get(&probe).send().await.is_ok() }).await;
        assert!(up, "Distribution did not start on {url}");
        Distribution { url, child: Some(child), _dir: dir }
    }

    /// Stops the upstream for good (as if its host went away).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One request the counting proxy passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
}

/// A reverse proxy in front of an upstream: counts requests and can misbehave on demand.
pub struct CountingProxy {
    pub url: String,
    pub shared: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

pub struct ProxyState {
    upstream: String,
    seen: Mutex<Vec<Seen>>,
    /// Flip one byte in every blob and manifest body.
    pub corrupt: AtomicBool,
    /// When set, blob bodies stop after this many bytes until `release` is notified.
    pub hold_after: AtomicU64,
    pub release: Notify,
    /// Bytes of blob bodies passed on so far.
    pub blob_bytes_sent: AtomicU64,
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> CountingProxy {
        let shared = Arc::new(ProxyState {
            upstream: upstream.to_owned(),
            seen: Mutex::new(vec![]),
            corrupt: AtomicBool::new(false),
            hold_after: AtomicU64::new(u64::MAX),
            release: Notify::new(),
            blob_bytes_sent: AtomicU64::new(0),
        });
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingProxy { url: format!("http://{addr}"), shared, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// How many requests with this method had a path containing `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.seen().iter().filter(|s| s.method == method && s.path.contains(part)).count()
    }

    pub fn reset(&self) {
        self.shared.seen.lock().unwrap().clear();
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(st): State<Arc<ProxyState>>, req: Request) -> Response {
    let method = req.method().clone();
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    st.seen.lock().unwrap().push(Seen { method: method.to_string(), path: path_and_query.clone() });
    let mut out = client().request(method, format!("{}{path_and_query}", st.upstream));
    for (name, value) in req.headers() {
        if name != "host" {
            out = out.header(name, value);
        }
    }
    let body = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap_or_default();
    let resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(_) => return Response::builder().status(502).body(Body::empty()).unwrap(),
    };
    let is_blob = path_and_query.contains("/blobs/sha256:") && resp.status() == StatusCode::OK;
    let is_manifest = path_and_query.contains("/manifests/") && resp.status() == StatusCode::OK;
    let mut builder = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    let corrupt = st.corrupt.load(Ordering::SeqCst);
    if is_manifest && corrupt {
        let mut bytes = resp.bytes().await.unwrap_or_default().to_vec();
        if let Some(b) = bytes.last_mut() {
            *b ^= 0x01;
        }
        return builder.body(Body::from(bytes)).unwrap();
    }
    if !is_blob {
        return builder.body(Body::from_stream(resp.bytes_stream())).unwrap();
    }
    let state = st.clone();
    let init = (resp.bytes_stream(), 0u64, false, state, None::<Bytes>);
    let stream =
        futures_util::stream::unfold(init, move |(mut inner, mut sent, mut flipped, st, held)| async move {
            if let Some(rest) = held {
                // The part after the hold point goes out once the test releases it.
                st.release.notified().await;
                sent += rest.len() as u64;
                st.blob_bytes_sent.fetch_add(rest.len() as u64, Ordering::SeqCst);
                return Some((Ok::<_, std::io::Error>(rest), (inner, sent, flipped, st, None)));
            }
            let mut chunk: Bytes = match inner.next().await? {
                Ok(c) => c,
                Err(e) => return Some((Err(std::io::Error::other(e)), (inner, sent, flipped, st, None))),
            };
            if corrupt && !flipped && !chunk.is_empty() {
                let mut v = chunk.to_vec();
                v[0] ^= 0x01;
                chunk = Bytes::from(v);
                flipped = true;
            }
            let hold = st.hold_after.load(Ordering::SeqCst);
            let mut rest = None;
            if sent < hold && sent + chunk.len() as u64 >= hold {
                rest = Some(chunk.split_off((hold - sent) as usize));
            }
            sent += chunk.len() as u64;
            st.blob_bytes_sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Some((Ok(chunk), (inner, sent, flipped, st, rest)))
        });
    builder.body(Body::from_stream(stream)).unwrap()
}

/// A request to `url`, where `http://user:password@host` becomes Basic auth.
fn request(method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
    match url.split_once("://").and_then(|(scheme, rest)| {
        let (userinfo, host) = rest.split_once('@')?;
        let (user, password) = userinfo.split_once(':')?;
        Some((format!("{scheme}://{host}"), user.to_owned(), password.to_owned()))
    }) {
        Some((plain, user, password)) => client().request(method, plain).basic_auth(user, Some(password)),
        None => client().request(method, url),
    }
}

/// Pushes a blob to any registry (POST, then PUT with the bytes, as every registry supports).
pub async fn push_blob_to(base: &str, repo: &str, data: Bytes) -> String {
    let digest = sha256(&data);
    let r = request(reqwest::Method::POST, &format!("{base}/v2/{repo}/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "starting an upload at {base}");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with("http") {
        // Keep the credentials of `base` for the absolute URL the registry returned.
        match base.split_once('@') {
            Some((creds, _)) => format!("{creds}@{}", location.split_once("://").unwrap().1),
            None => location,
        }
    } else {
        format!("{base}{location}")
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = request(reqwest::Method::PUT, &format!("{location}{sep}digest={digest}"))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "pushing a blob to {base}");
    digest
}

/// An image pushed to an upstream: its manifest bytes and digest, and its layer digests.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub layers: Vec<String>,
    pub config: String,
}

/// Pushes an image with the given layers and tags it.
pub async fn push_image(base: &str, repo: &str, tag: &str, layers: Vec<Bytes>) -> Pushed {
    let config = Bytes::from(format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}"));
    let config_size = config.len();
    let config_digest = push_blob_to(base, repo, config).await;
    let mut descriptors = vec![];
    let mut digests = vec![];
    for layer in layers {
        let size = layer.len();
        let d = push_blob_to(base, repo, layer).await;
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size
        }));
        digests.push(d);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descriptors,
    }))
    .unwrap();
    let digest = put_manifest_to(base, repo, tag, OCI_MANIFEST, &manifest).await;
    Pushed { manifest, digest, layers: digests, config: config_digest }
}

/// Pushes an index of the given platform images under `tag`; returns its bytes and digest.
pub async fn push_index(
    base: &str,
    repo: &str,
    tag: &str,
    platforms: &[(&str, &Pushed)],
) -> (Vec<u8>, String) {
    let manifests: Vec<serde_json::Value> = platforms
        .iter()
        .map(|(arch, p)| {
            serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": p.digest, "size": p.manifest.len(),
                "platform": {"architecture": arch, "os": "linux"}
            })
        })
        .collect();
    let index = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    )
    .unwrap();
    let digest = put_manifest_to(base, repo, tag, OCI_INDEX, &index).await;
    (index, digest)
}

pub async fn put_manifest_to(base: &str, repo: &str, reference: &str, ct: &str, body: &[u8]) -> String {
    let r = request(reqwest::Method::PUT, &format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", ct)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "pushing a manifest to {base}");
    sha256(body)
}

/// Deterministic pseudo-random bytes (so layers never deduplicate by accident).
pub fn noise(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Streams a response body into a sha256 digest without keeping it.
pub async fn body_digest(resp: reqwest::Response) -> Result<String, String> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        h.update(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(format!("sha256:{:x}", h.finalize()))
}

pub fn temp_secret(dir: &Path, name: &str, value: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    p
}
