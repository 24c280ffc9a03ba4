//! Writing to a registry: what `berth replicate` needs at its destination. Blobs are checked
//! (`HEAD`), mounted from another repository of the same registry when one holds them, or sent
//! in one streamed `PUT` (the body is never held whole); manifests are put byte for byte.
//!
//! Every write asks for `pull,push` on its repository (and `pull` on a mount's source). A
//! streamed body cannot be sent twice, so its `PUT` goes out once, with the credentials the
//! upload's `POST` just proved; everything else is retried like a pull.

use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Body, Method, RequestBuilder, StatusCode};

use crate::{Fetched, Result, Upstream, UpstreamError};
use berth_core::oci::RepoName;

/// How a blob reached the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Mounted from another repository: no bytes sent.
    Mounted,
    /// Uploaded: its bytes sent.
    Uploaded,
}

fn push_scope(repo: &RepoName) -> String {
    format!("repository:{repo}:pull,push")
}

impl Upstream {
    /// The digest the registry has for `reference` in `repo` (`HEAD`), `None` when it has none.
    pub async fn manifest_digest(&self, repo: &RepoName, reference: &str) -> Result<Option<String>> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let accept = |r: RequestBuilder| r.header(reqwest::header::ACCEPT, crate::MANIFEST_ACCEPT);
        let resp = self.authorized(&Method::HEAD, &url, Some(&push_scope(repo)), &accept).await?;
        Ok(match self.found(resp).await? {
            Fetched::Found(resp) => {
                Some(header(resp.headers(), "docker-content-digest").unwrap_or_else(|| reference.to_owned()))
            }
            Fetched::NotFound => None,
        })
    }

    /// Whether `repo` holds the blob (`HEAD`).
    pub async fn has_blob(&self, repo: &RepoName, digest: &str) -> Result<bool> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let resp = self.authorized(&Method::HEAD, &url, Some(&push_scope(repo)), &|r| r).await?;
        Ok(matches!(self.found(resp).await?, Fetched::Found(_)))
    }

    /// Puts a blob into `repo`: mounted from `mount_from` when that repository holds it, else
    /// its `size` bytes streamed from `body` (called only then).
    pub async fn put_blob<F>(
        &self,
        repo: &RepoName,
        digest: &str,
        size: u64,
        mount_from: Option<&RepoName>,
        body: F,
    ) -> Result<Sent>
    where
        F: std::future::Future<Output = Result<Body>>,
    {
        let mut scope = push_scope(repo);
        let mut url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        if let Some(from) = mount_from {
            scope.push_str(&format!(" repository:{from}:pull"));
            url.push_str(&format!("?mount={digest}&from={from}"));
        }
        let resp =
            self.authorized(&Method::POST, &url, Some(&scope), &|r| r.header(CONTENT_LENGTH, 0)).await?;
        match resp.status() {
            StatusCode::CREATED if mount_from.is_some() => return Ok(Sent::Mounted),
            StatusCode::ACCEPTED => {}
            _ => return Err(self.status_error(resp).await),
        }
        let Some(location) = header(resp.headers(), LOCATION.as_str()) else {
            return Err(self.protocol(format!("the upload of {digest} to {repo} came without a Location")));
        };
        let mut put = self.absolute(&location)?;
        put.query_pairs_mut().append_pair("digest", digest);
        let body = body.await?;
        let req = self.http.put(put.as_str()).header(CONTENT_TYPE, "application/octet-stream");
        let resp = self.once(&scope, req.header(CONTENT_LENGTH, size).body(body)).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(Sent::Uploaded),
            _ => Err(self.status_error(resp).await),
        }
    }

    /// Puts a manifest's bytes, as they are, under `reference` (a tag or its digest); the
    /// response's headers (`OCI-Subject` says the registry tracks referrers itself).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        media_type: &str,
        bytes: bytes::Bytes,
    ) -> Result<HeaderMap> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let build = |r: RequestBuilder| r.header(CONTENT_TYPE, media_type).body(bytes.clone());
        let resp = self.authorized(&Method::PUT, &url, Some(&push_scope(repo)), &build).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(resp.headers().clone()),
            _ => Err(self.status_error(resp).await),
        }
    }

    /// Deletes a tag or manifest (`DELETE`): whether there was one.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &str) -> Result<bool> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let scope = format!("repository:{repo}:pull,push,delete");
        let resp = self.authorized(&Method::DELETE, &url, Some(&scope), &|r| r).await?;
        Ok(matches!(self.found(resp).await?, Fetched::Found(_)))
    }

    /// Sends `req` once, with the credentials `scope` was last granted (a request before it
    /// logged in), and no retry: for a body that can be read only once.
    async fn once(&self, scope: &str, req: RequestBuilder) -> Result<reqwest::Response> {
        let scheme = self.login.scheme();
        let req = crate::with_auth(req, self.authorization(&scheme, Some(scope), false).await?.as_ref());
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        if matches!(resp.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(self.auth_error(resp).await);
        }
        Ok(resp)
    }

    /// A `Location` as an absolute URL (registries may answer with a path).
    fn absolute(&self, location: &str) -> Result<reqwest::Url> {
        let base = reqwest::Url::parse(&format!("{}/", self.base))
            .map_err(|e| self.protocol(format!("the registry's URL: {e}")))?;
        base.join(location).map_err(|e| self.protocol(format!("the upload's Location {location:?}: {e}")))
    }

    fn protocol(&self, detail: String) -> UpstreamError {
        UpstreamError::Protocol { upstream: self.name.clone(), detail }
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)?.to_str().ok().map(str::to_owned)
}
