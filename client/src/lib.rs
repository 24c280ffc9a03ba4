//! `berth-client`: talking to another registry as a client — authentication, retries, rate
//! limits, redirects. The pull-through cache fetches from its upstreams with it, the operator
//! checks ProxyCache upstreams with it, and `berth replicate` builds on it.
//!
//! - Auth: anonymous, Basic, or Bearer tokens from the realm the upstream names in its
//!   `WWW-Authenticate` challenge, one token per repository scope, cached until shortly before
//!   it expires. Once the upstream's scheme is known, requests carry credentials up front instead
//!   of collecting a 401 each time.
//! - Credentials are read from their file or variable when a token is fetched, so a rotated
//!   Secret is picked up without a restart; they never reach a log, `Debug` or an error message.
//! - Redirects (blob storage, presigned URLs) are followed; the `Authorization` header is dropped
//!   whenever a redirect leaves the upstream's host.
//! - Only idempotent requests (GET, HEAD) exist here, and they are retried with backoff on
//!   refused connections, 5xx and 429 (waiting out a short `Retry-After`). Timeouts are not
//!   retried: a pull must never hang longer than one connect or idle-read timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ACCEPT, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;

pub mod authfile;
pub mod challenge;
pub mod pace;
pub mod push;

use berth_core::config::UpstreamConfig;
use berth_core::oci::RepoName;
use challenge::Challenge;

/// Every manifest type a pull may end in; upstreams pick the best they have.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Adds a request's headers and body, for each attempt.
type Build<'a> = &'a (dyn Fn(RequestBuilder) -> RequestBuilder + Send + Sync);

const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest `Retry-After` waited out inside one pull; longer ones are passed to the client.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
/// Tokens are renewed this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(15);
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} cannot be reached: {detail}")]
    Connect { upstream: String, detail: String },
    #[error("upstream {upstream} did not answer in time")]
    Timeout { upstream: String },
    #[error("upstream {upstream} refused the credentials: {detail}")]
    Auth { upstream: String, detail: String },
    #[error("upstream {upstream} is rate limiting pulls")]
    RateLimited { upstream: String, retry_after: Option<u64> },
    #[error("upstream {upstream} answered {status}: {detail}")]
    Status { upstream: String, status: u16, detail: String },
    #[error("upstream {upstream} sent content that does not match {digest}")]
    Corrupt { upstream: String, digest: String },
    #[error("upstream {upstream}: {detail}")]
    Protocol { upstream: String, detail: String },
}

impl UpstreamError {
    /// A bounded label for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Auth { .. } => "auth",
            UpstreamError::RateLimited { .. } => "rate_limited",
            UpstreamError::Status { status, .. } if *status >= 500 => "status_5xx",
            UpstreamError::Status { .. } => "status_4xx",
            UpstreamError::Corrupt { .. } => "corrupt",
            UpstreamError::Protocol { .. } => "protocol",
        }
    }
}

pub type Result<T> = std::result::Result<T, UpstreamError>;

/// What a client reports as it goes (the registry counts these in its metrics).
pub trait Observer: Send + Sync {
    /// A request failed; `class` is [`UpstreamError::class`].
    fn error(&self, _upstream: &str, _class: &'static str) {}
    /// The upstream's `ratelimit-remaining` header.
    fn ratelimit_remaining(&self, _upstream: &str, _remaining: i64) {}
}

/// Reports nothing.
pub struct Unobserved;

impl Observer for Unobserved {}

/// What an upstream said about a manifest or blob.
pub enum Fetched {
    Found(Response),
    NotFound,
}

/// Credentials for one request.
enum Auth {
    Basic(String, String),
    Bearer(String),
}

/// What an upstream is logged in with.
#[derive(Clone)]
pub enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "anonymous",
            Credentials::Basic { .. } => "basic(redacted)",
            Credentials::Bearer(_) => "bearer(redacted)",
        })
    }
}

#[derive(Clone)]
enum Scheme {
    Unknown,
    Anonymous,
    Basic,
    Bearer { realm: String, service: Option<String> },
}

struct Token {
    value: String,
    renew_at: Instant,
}

pub struct Upstream {
    pub name: String,
    base: String,
    config: UpstreamConfig,
    http: reqwest::Client,
    scheme: Mutex<Scheme>,
    tokens: Mutex<HashMap<String, Token>>,
    /// Credentials given in memory instead of the config's files (the operator's probe).
    given: Option<Credentials>,
    observer: Arc<dyn Observer>,
    /// Paces every request (a rate limit), when set.
    pacer: Option<Arc<pace::Pacer>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name).field("url", &self.base).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Upstream {
    pub fn new(
        config: &UpstreamConfig,
        observer: Arc<dyn Observer>,
    ) -> std::result::Result<Upstream, String> {
        let ca = match &config.ca_file {
            Some(f) => Some(std::fs::read(f).map_err(|e| format!("ca_file {}: {e}", f.display()))?),
            None => None,
        };
        Upstream::build(config, ca.as_deref(), None, observer)
    }

    /// An upstream logged in with `credentials` and trusting `ca` (PEM), whatever the config's
    /// credential and CA files say: for checking an upstream from outside berth.
    pub fn with_credentials(
        config: &UpstreamConfig,
        credentials: Credentials,
        ca: Option<&[u8]>,
    ) -> std::result::Result<Upstream, String> {
        Upstream::build(config, ca, Some(credentials), Arc::new(Unobserved))
    }

    fn build(
        config: &UpstreamConfig,
        ca: Option<&[u8]>,
        given: Option<Credentials>,
        observer: Arc<dyn Observer>,
    ) -> std::result::Result<Upstream, String> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(10));
        if config.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(pem) = ca {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("CA certificates: {e}"))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Upstream {
            name: config.name.clone(),
            base: config.url.trim_end_matches('/').to_owned(),
            config: config.clone(),
            http,
            scheme: Mutex::new(Scheme::Unknown),
            tokens: Mutex::new(HashMap::new()),
            given,
            observer,
            pacer: None,
        })
    }

    /// Sends at most `per_second` requests a second (spread evenly).
    pub fn with_request_rate(mut self, per_second: f64) -> Upstream {
        self.pacer = pace::Pacer::new(per_second).map(Arc::new);
        self
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// `HEAD` or `GET` of `/v2/<repo>/manifests/<reference>` or `/v2/<repo>/blobs/<digest>`.
    pub async fn fetch(
        &self,
        method: Method,
        repo: &RepoName,
        kind: &str,
        reference: &str,
    ) -> Result<Fetched> {
        let url = format!("{}/v2/{repo}/{kind}/{reference}", self.base);
        let accept = (kind == "manifests").then_some(MANIFEST_ACCEPT);
        let r = self.send(&method, &url, Some(repo), accept).await;
        if let Err(e) = &r {
            self.observer.error(&self.name, e.class());
        }
        r
    }

    /// `GET /v2/<repo>/tags/list`, passing the query on.
    pub async fn tags(&self, repo: &RepoName, query: &str) -> Result<Fetched> {
        let q = if query.is_empty() { String::new() } else { format!("?{query}") };
        let url = format!("{}/v2/{repo}/tags/list{q}", self.base);
        self.send(&Method::GET, &url, Some(repo), None).await
    }

    /// `GET /v2/_catalog`, passing the query on.
    pub async fn catalog(&self, query: &str) -> Result<Fetched> {
        let q = if query.is_empty() { String::new() } else { format!("?{query}") };
        let url = format!("{}/v2/_catalog{q}", self.base);
        let resp = self.authorized(&Method::GET, &url, Some("registry:catalog:*"), &|r| r).await?;
        self.found(resp).await
    }

    /// Logs in and asks `GET /v2/`: `Ok` when the upstream is a registry that accepts the
    /// credentials (or needs none).
    pub async fn check(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        match self.send(&Method::GET, &url, None, None).await? {
            Fetched::Found(_) => Ok(()),
            Fetched::NotFound => Err(UpstreamError::Status {
                upstream: self.name.clone(),
                status: 404,
                detail: "no registry API at /v2/".into(),
            }),
        }
    }

    async fn send(
        &self,
        method: &Method,
        url: &str,
        repo: Option<&RepoName>,
        accept: Option<&str>,
    ) -> Result<Fetched> {
        let scope = repo.map(|r| format!("repository:{r}:pull"));
        let with_accept = |r: RequestBuilder| match accept {
            Some(a) => r.header(ACCEPT, a),
            None => r,
        };
        let resp = self.authorized(method, url, scope.as_deref(), &with_accept).await?;
        self.found(resp).await
    }

    /// A 404 as [`Fetched::NotFound`], a success as found, any other status as its error.
    async fn found(&self, resp: Response) -> Result<Fetched> {
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(Fetched::NotFound),
            s if s.is_success() => Ok(Fetched::Found(resp)),
            _ => Err(self.status_error(resp).await),
        }
    }

    /// A request (as `build` makes it, again for each attempt) with the credentials `scope`
    /// needs (scopes separated by spaces), logging in again once on a 401; errors on a refusal,
    /// any other status is the caller's.
    async fn authorized(
        &self,
        method: &Method,
        url: &str,
        scope: Option<&str>,
        build: Build<'_>,
    ) -> Result<Response> {
        let mut fresh_token = false;
        for round in 0..2 {
            let scheme = self.scheme.lock().map(|s| s.clone()).unwrap_or(Scheme::Unknown);
            let auth = self.authorization(&scheme, scope, fresh_token).await?;
            let resp = self.with_retries(method, url, build, auth.as_ref()).await?;
            match resp.status() {
                StatusCode::UNAUTHORIZED if round == 0 => {
                    self.learn(&resp);
                    fresh_token = true;
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(self.auth_error(resp).await),
                _ => return Ok(resp),
            }
        }
        Err(UpstreamError::Auth {
            upstream: self.name.clone(),
            detail: "still unauthorized after login".into(),
        })
    }

    /// Remembers the scheme from a 401's challenge.
    fn learn(&self, resp: &Response) {
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .collect();
        let scheme = if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            match b.param("realm") {
                Some(realm) => {
                    Scheme::Bearer { realm: realm.to_owned(), service: b.param("service").map(str::to_owned) }
                }
                None => Scheme::Unknown,
            }
        } else if challenges.iter().any(|c| c.scheme == "basic") {
            Scheme::Basic
        } else if resp.status() == StatusCode::UNAUTHORIZED {
            Scheme::Unknown
        } else {
            Scheme::Anonymous
        };
        if let Ok(mut s) = self.scheme.lock() {
            *s = scheme;
        }
    }

    async fn authorization(&self, scheme: &Scheme, scope: Option<&str>, renew: bool) -> Result<Option<Auth>> {
        let secret = self.secret().await?;
        Ok(match (scheme, secret) {
            (_, Credentials::Bearer(t)) => Some(Auth::Bearer(t)),
            (Scheme::Basic, Credentials::Basic { user, password }) => Some(Auth::Basic(user, password)),
            (Scheme::Bearer { realm, service }, secret) => {
                Some(Auth::Bearer(self.token(realm, service.as_deref(), scope, &secret, renew).await?))
            }
            _ => None,
        })
    }

    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        secret: &Credentials,
        renew: bool,
    ) -> Result<String> {
        let key = scope.unwrap_or("").to_owned();
        if !renew {
            if let Some(t) =
                self.tokens.lock().ok().and_then(|m| {
                    m.get(&key).filter(|t| t.renew_at > Instant::now()).map(|t| t.value.clone())
                })
            {
                return Ok(t);
            }
        }
        let mut query: Vec<(&str, &str)> = vec![];
        if let Some(s) = service {
            query.push(("service", s));
        }
        for s in scope.into_iter().flat_map(|s| s.split(' ')).filter(|s| !s.is_empty()) {
            query.push(("scope", s));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Credentials::Basic { user, password } = secret {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        if !resp.status().is_success() {
            return Err(self.auth_error(resp).await);
        }
        let body: TokenResponse = resp.json().await.map_err(|e| UpstreamError::Auth {
            upstream: self.name.clone(),
            detail: format!("token service answered something that is not a token: {e}"),
        })?;
        let Some(value) = body.token.or(body.access_token).filter(|t| !t.is_empty()) else {
            return Err(UpstreamError::Auth {
                upstream: self.name.clone(),
                detail: "token service sent no token".into(),
            });
        };
        let lifetime = body.expires_in.map(Duration::from_secs).unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let renew_at = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN).max(lifetime / 2);
        if let Ok(mut m) = self.tokens.lock() {
            m.retain(|_, t| t.renew_at > Instant::now());
            m.insert(key, Token { value: value.clone(), renew_at });
        }
        Ok(value)
    }

    /// The credentials as they are now (files are re-read, so rotation needs no restart; the
    /// reads run on the blocking pool, never on the async thread that serves the request).
    async fn secret(&self) -> Result<Credentials> {
        if let Some(given) = &self.given {
            return Ok(given.clone());
        }
        let c = &self.config;
        if c.credentials_dir.is_none() && c.token_file.is_none() && c.password_file.is_none() {
            return configured_secret(&self.name, &self.base, c);
        }
        let (name, base, config) = (self.name.clone(), self.base.clone(), self.config.clone());
        tokio::task::spawn_blocking(move || configured_secret(&name, &base, &config))
            .await
            .map_err(|e| UpstreamError::Auth { upstream: self.name.clone(), detail: e.to_string() })?
    }

    async fn with_retries(
        &self,
        method: &Method,
        url: &str,
        build: Build<'_>,
        auth: Option<&Auth>,
    ) -> Result<Response> {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let last = attempt == ATTEMPTS;
            match self.attempt(method, url, build, auth).await {
                Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after(resp.headers());
                    match wait {
                        Some(w) if !last && w <= MAX_RETRY_WAIT => tokio::time::sleep(w).await,
                        None if !last => tokio::time::sleep(backoff).await,
                        _ => {
                            return Err(UpstreamError::RateLimited {
                                upstream: self.name.clone(),
                                retry_after: wait.map(|w| w.as_secs()),
                            })
                        }
                    }
                }
                Ok(resp) if resp.status().is_server_error() && !last => {
                    self.observer.error(&self.name, "status_5xx");
                    tokio::time::sleep(backoff).await;
                }
                Ok(resp) => return Ok(resp),
                Err(e @ UpstreamError::Connect { .. }) if !last => {
                    self.observer.error(&self.name, e.class());
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e),
            }
            backoff *= 2;
        }
        Err(UpstreamError::Protocol { upstream: self.name.clone(), detail: "no attempt was made".into() })
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        build: Build<'_>,
        auth: Option<&Auth>,
    ) -> Result<Response> {
        if let Some(p) = &self.pacer {
            p.take(1).await;
        }
        let req = with_auth(build(self.http.request(method.clone(), url)), auth);
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        if let Some(n) = ratelimit_remaining(resp.headers()) {
            self.observer.ratelimit_remaining(&self.name, n);
        }
        Ok(resp)
    }

    /// A response's body, refused once it passes `limit` bytes (a registry that sends a
    /// manifest or a list without end must not take all memory).
    pub async fn read_limited(&self, resp: Response, what: &str, limit: usize) -> Result<bytes::Bytes> {
        let too_large = || UpstreamError::Protocol {
            upstream: self.name.clone(),
            detail: format!("{what} is larger than the {limit} bytes accepted"),
        };
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut resp = resp;
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport_error(&e))? {
            if buf.len() + chunk.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    pub fn transport_error(&self, e: &reqwest::Error) -> UpstreamError {
        let upstream = self.name.clone();
        if e.is_timeout() {
            return UpstreamError::Timeout { upstream };
        }
        // The chain, without the URL (which never holds credentials, but keeps messages short).
        let mut detail = String::new();
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        if detail.is_empty() {
            detail = e.to_string();
        }
        if e.is_connect() {
            UpstreamError::Connect { upstream, detail }
        } else {
            UpstreamError::Protocol { upstream, detail }
        }
    }

    async fn auth_error(&self, resp: Response) -> UpstreamError {
        let status = resp.status().as_u16();
        let detail = error_message(resp).await.unwrap_or_else(|| format!("HTTP {status}"));
        UpstreamError::Auth { upstream: self.name.clone(), detail }
    }

    async fn status_error(&self, resp: Response) -> UpstreamError {
        let status = resp.status().as_u16();
        let detail = error_message(resp).await.unwrap_or_else(|| "no error message".into());
        UpstreamError::Status { upstream: self.name.clone(), status, detail }
    }
}

/// The first message of a distribution error envelope, or a short plain-text body.
async fn error_message(resp: Response) -> Option<String> {
    #[derive(Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let text = resp.text().await.ok()?;
    if let Ok(env) = serde_json::from_str::<Envelope>(&text) {
        let e = env.errors.into_iter().next()?;
        return Some(if e.message.is_empty() { e.code } else { format!("{}: {}", e.code, e.message) });
    }
    // Token services answer `{"details": ...}` (Docker Hub) or `{"error": ...}`.
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&text) {
        let said = ["details", "message", "error"].iter().find_map(|k| o.get(*k)?.as_str());
        if let Some(said) = said.filter(|s| !s.is_empty() && s.len() <= 200) {
            return Some(said.to_owned());
        }
    }
    let text = text.trim();
    (!text.is_empty() && text.len() <= 200 && !text.contains('<')).then(|| text.to_owned())
}

/// `config`'s credentials for upstream `name` at `base`, read from its files or environment now.
fn configured_secret(name: &str, base: &str, c: &UpstreamConfig) -> Result<Credentials> {
    let read = |file: &Option<std::path::PathBuf>, env: &Option<String>| -> Result<Option<String>> {
        if let Some(f) = file {
            return std::fs::read_to_string(f)
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| UpstreamError::Auth {
                    upstream: name.to_owned(),
                    detail: format!("cannot read {}: {}", f.display(), e.kind()),
                });
        }
        if let Some(v) = env {
            return std::env::var(v).map(Some).map_err(|_| UpstreamError::Auth {
                upstream: name.to_owned(),
                detail: format!("environment variable {v} is not set"),
            });
        }
        Ok(None)
    };
    if let Some(dir) = &c.credentials_dir {
        return credentials_in(name, base, dir);
    }
    if let Some(token) = read(&c.token_file, &c.token_env)? {
        return Ok(Credentials::Bearer(token));
    }
    match (&c.username, read(&c.password_file, &c.password_env)?) {
        (Some(user), password) => {
            Ok(Credentials::Basic { user: user.clone(), password: password.unwrap_or_default() })
        }
        (None, _) => Ok(Credentials::None),
    }
}

/// `token`, or `username` and `password`, or `base`'s entry in a docker config
/// `.dockerconfigjson`, from a directory (a mounted Secret).
fn credentials_in(name: &str, base: &str, dir: &std::path::Path) -> Result<Credentials> {
    let config = dir.join(".dockerconfigjson");
    if config.exists() {
        let auth = |detail| UpstreamError::Auth { upstream: name.to_owned(), detail };
        return match authfile::lookup(&config, base, false).map_err(auth)? {
            Some((user, password)) => Ok(Credentials::Basic { user, password }),
            None => Err(auth(format!("{} has no entry for {}", config.display(), base))),
        };
    }
    let read = |file: &str| match std::fs::read_to_string(dir.join(file)) {
        Ok(v) => Ok(Some(v.trim_end_matches(['\n', '\r']).to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(UpstreamError::Auth {
            upstream: name.to_owned(),
            detail: format!("cannot read {}: {}", dir.join(file).display(), e.kind()),
        }),
    };
    match (read("token")?, read("username")?) {
        (Some(token), _) => Ok(Credentials::Bearer(token)),
        (None, Some(user)) => {
            Ok(Credentials::Basic { user, password: read("password")?.unwrap_or_default() })
        }
        (None, None) => Err(UpstreamError::Auth {
            upstream: name.to_owned(),
            detail: format!("{} holds neither `token` nor `username`", dir.display()),
        }),
    }
}

/// `req` with the credentials `auth` holds, if any.
fn with_auth(req: RequestBuilder, auth: Option<&Auth>) -> RequestBuilder {
    match auth {
        Some(Auth::Basic(user, password)) => req.basic_auth(user, Some(password)),
        Some(Auth::Bearer(token)) => req.bearer_auth(token),
        None => req,
    }
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `ratelimit-remaining: 76;w=21600` (Docker Hub) or a plain number.
fn ratelimit_remaining(h: &HeaderMap) -> Option<i64> {
    let v = h.get("ratelimit-remaining")?.to_str().ok()?;
    v.split(';').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn rate_limit_headers() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-remaining", HeaderValue::from_static("76;w=21600"));
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(ratelimit_remaining(&h), Some(76));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("ratelimit-remaining", HeaderValue::from_static("lots"));
        assert_eq!(ratelimit_remaining(&h), None);
    }

    #[tokio::test]
    async fn a_mounted_docker_config_gives_this_registrys_entry() {
        let dir = tempfile::tempdir().unwrap();
        let upstream = |url: &str| {
            let mut config = berth_core::config::UpstreamConfig::new("edge", url);
            config.credentials_dir = Some(dir.path().to_owned());
            Upstream::new(&config, Arc::new(Unobserved)).unwrap()
        };
        std::fs::write(
            dir.path().join(".dockerconfigjson"),
            r#"{"auths": {"edge.example:5000": {"username": "robot", "password": "pw"}}}"#,
        )
        .unwrap();
        match upstream("https://edge.example:5000").secret().await.unwrap() {
            Credentials::Basic { user, password } => {
                assert_eq!((user.as_str(), password.as_str()), ("robot", "pw"))
            }
            other => panic!("{other:?}"),
        }
        let e = upstream("https://elsewhere.example").secret().await.unwrap_err().to_string();
        assert!(e.contains("no entry"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = Credentials::Basic { user: "u".into(), password: "hunter2".into() };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Bearer("tok-123".into())).contains("tok-123"));
    }
}
