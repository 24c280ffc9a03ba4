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

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

pub mod authfile;
mod error;
mod login;
pub mod pace;
pub mod pages;
pub mod push;
pub mod referrers;

use berth_core::config::UpstreamConfig;
use berth_core::oci::RepoName;
use error::error_message;
pub use error::{Result, UpstreamError};
pub use login::Credentials;
use login::{configured_secret, with_auth, Auth, Scheme, Session, TokenResponse};

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

pub struct Upstream {
    pub name: String,
    base: String,
    config: UpstreamConfig,
    http: reqwest::Client,
    login: Session,
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
            login: Session::default(),
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
            let scheme = self.login.scheme();
            let auth = self.authorization(&scheme, scope, fresh_token).await?;
            let resp = self.with_retries(method, url, build, auth.as_ref()).await?;
            match resp.status() {
                StatusCode::UNAUTHORIZED if round == 0 => {
                    self.login.learn(&resp);
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
            if let Some(t) = self.login.token(&key) {
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
        self.login.keep(key, value.clone(), body.expires_in);
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
        let detail = root_cause(e);
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

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `ratelimit-remaining: 76;w=21600` (Docker Hub) or a plain number.
fn ratelimit_remaining(h: &HeaderMap) -> Option<i64> {
    let v = h.get("ratelimit-remaining")?.to_str().ok()?;
    v.split(';').next()?.trim().parse().ok()
}

/// What went wrong under a transport error, without the URL (which never holds credentials
/// here, but keeps messages short): the innermost cause ("Connection refused (os error 111)"),
/// where reqwest's own words say only "error sending request".
pub fn root_cause(e: &reqwest::Error) -> String {
    let mut detail = e.to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    detail
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
}
