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

use super::{client, sha256, OCI_INDEX, OCI_MANIFEST};

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
    /// Bearer tokens from a token service Distribution trusts (see [`TokenService`]).
    Token {
        realm: String,
        cert_pem: String,
    },
}

impl Distribution {
    pub async fn start(auth: Auth) -> Distribution {
        let dir = tempfile::tempdir().unwrap();
        let child = Distribution::spawn(dir.path(), None, auth).await;
        Distribution { url: child.0, child: Some(child.1), _dir: dir }
    }

    /// Stops and starts again over the same content and port, with other auth.
    pub async fn restart(&mut self, auth: Auth) {
        self.stop();
        let port = self.url.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Some(Distribution::spawn(self._dir.path(), Some(port), auth).await.1);
    }

    /// Starts Distribution on `port`, or on a free one.
    async fn spawn(dir: &Path, port: Option<u16>, auth: Auth) -> (String, Child) {
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd { user, password } => {
                let hash = bcrypt::hash(password, 4).unwrap();
                let file = dir.join("htpasswd");
                std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
                format!("auth:\n  htpasswd:\n    realm: upstream\n    path: {}\n", file.display())
            }
            Auth::Token { realm, cert_pem } => {
                let file = dir.join("token-ca.pem");
                std::fs::write(&file, cert_pem).unwrap();
                format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    \
                     issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    file.display()
                )
            }
        };
        // The port was free when picked, but any socket on this machine (a client's ephemeral
        // port, another test's server) may take it before Distribution binds: then Distribution
        // exits, and whatever holds the port must not pass for it. Start again until it is ours.
        for _ in 0..20 {
            let port = port.unwrap_or_else(free_port);
            let url = format!("http://127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
                dir.join("data").display()
            );
            let config_path = dir.join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let mut child = Command::new(distribution_binary())
                .arg("serve")
                .arg(&config_path)
                .env("OTEL_TRACES_EXPORTER", "none")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if Distribution::serving(&url, &mut child).await {
                return (url, child);
            }
            let _ = child.kill();
            let _ = child.wait();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("Distribution did not start");
    }

    /// Whether `child` answers on `url`: a Distribution response there while the child lives.
    async fn serving(url: &str, child: &mut Child) -> bool {
        let probe = format!("{url}/v2/");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return false;
            }
            if let Ok(r) = client().get(&probe).send().await {
                if r.headers().contains_key("docker-distribution-api-version") {
                    return matches!(child.try_wait(), Ok(None));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
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

pub const TOKEN_SERVICE: &str = "upstream-registry";
pub const TOKEN_ISSUER: &str = "berth-test-token-issuer";

/// A token service in the style of Docker Hub's `auth.docker.io`: checks Basic credentials and
/// issues EdDSA-signed JWTs with `access` claims for the scopes asked for. Distribution trusts
/// its certificate; the key ID is the key's JWK thumbprint, as Distribution looks keys up.
pub struct TokenService {
    pub url: String,
    pub cert_pem: String,
    pub shared: Arc<TokenState>,
    task: tokio::task::JoinHandle<()>,
}

pub struct TokenState {
    user: String,
    password: String,
    key: rcgen::KeyPair,
    kid: String,
    /// The `scope` of every token issued.
    pub issued: Mutex<Vec<String>>,
    pub refused: AtomicU64,
}

impl TokenService {
    pub async fn start(user: &str, password: &str) -> TokenService {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert_pem = rcgen::CertificateParams::new(vec!["token-issuer".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let jwk = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(key.public_key_raw()));
        let kid = b64(&sha2::Sha256::digest(jwk.as_bytes()));
        let shared = Arc::new(TokenState {
            user: user.into(),
            password: password.into(),
            key,
            kid,
            issued: Mutex::new(vec![]),
            refused: AtomicU64::new(0),
        });
        let app = axum::Router::new().route("/token", axum::routing::get(issue)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenService { url, cert_pem, shared, task }
    }

    pub fn auth(&self) -> Auth {
        Auth::Token { realm: format!("{}/token", self.url), cert_pem: self.cert_pem.clone() }
    }

    pub fn issued(&self) -> Vec<String> {
        self.shared.issued.lock().unwrap().clone()
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

use sha2::Digest as _;

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

async fn issue(
    State(st): State<Arc<TokenState>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
) -> Response {
    use base64::Engine as _;
    use rcgen::SigningKey as _;
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    if given != Some(format!("{}:{}", st.user, st.password)) {
        st.refused.fetch_add(1, Ordering::SeqCst);
        return Response::builder()
            .status(401)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"details":"incorrect username or password"}"#))
            .unwrap();
    }
    let scopes: Vec<String> = url_pairs(query.as_deref().unwrap_or(""))
        .into_iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v)
        .collect();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": st.kid});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": st.user, "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input =
        format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = st.key.sign(signing_input.as_bytes()).unwrap();
    let token = format!("{signing_input}.{}", b64(&signature));
    st.issued.lock().unwrap().push(scopes.join(" "));
    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300});
    Response::builder().header("content-type", "application/json").body(Body::from(body.to_string())).unwrap()
}

/// `a=b&c=d` with percent-decoding.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One request the counting proxy passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Whether the request carried an `Authorization` header.
    pub authorized: bool,
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
    /// Answer this many of the next requests with 429 and `Retry-After: 1`.
    pub throttle: AtomicU64,
    /// Answer blob GETs with a 307 to this base URL (another host), as registries redirect to
    /// blob storage.
    pub redirect_blobs: Mutex<Option<String>>,
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
            throttle: AtomicU64::new(0),
            redirect_blobs: Mutex::new(None),
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
    let authorized = req.headers().contains_key("authorization");
    st.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path_and_query.clone(),
        authorized,
    });
    if st.throttle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return Response::builder().status(429).header("retry-after", "1").body(Body::empty()).unwrap();
    }
    let redirect = st.redirect_blobs.lock().unwrap().clone();
    if let Some(to) = redirect.filter(|_| method == "GET" && path_and_query.contains("/blobs/sha256:")) {
        let location = format!("{to}{path_and_query}");
        return Response::builder().status(307).header("location", location).body(Body::empty()).unwrap();
    }
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
    Ok(format!("sha256:{}", berth_core::oci::hex(&h.finalize())))
}

pub fn temp_secret(dir: &Path, name: &str, value: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    p
}
