//! The route table of the distribution API, parsed by hand from the raw request path.
//!
//! Repository names have any number of segments, so the route is decided from the *end* of the
//! path: `…/tags/list`, `…/manifests/<ref>`, `…/blobs/uploads/[<id>]`, `…/blobs/<digest>`,
//! `…/referrers/<digest>`; everything before that is the name. Each segment is percent-decoded
//! once and then must pass the strict grammar of what it is, so encoded traversal (`%2e%2e`,
//! `%2f`) can never reach the service.

use percent_encoding::percent_decode_str;

use super::name::{NameError, ReferenceError};
use super::{Digest, DigestError, Reference, RepoName, UploadId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, Reference),
    Blob(RepoName, Digest),
    UploadStart(RepoName),
    Upload(RepoName, UploadId),
    Referrers(RepoName, Digest),
}

impl Route {
    /// The repository the request is about, if any.
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags(r)
            | Route::Manifest(r, _)
            | Route::Blob(r, _)
            | Route::UploadStart(r)
            | Route::Upload(r, _)
            | Route::Referrers(r, _) => Some(r),
        }
    }

    /// A bounded label for metrics and logs (never the raw path).
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags(_) => "tags",
            Route::Manifest(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::UploadStart(_) => "upload_start",
            Route::Upload(..) => "upload",
            Route::Referrers(..) => "referrers",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no such endpoint")]
    NotFound,
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("upload id is not one this registry issued")]
    UploadUnknown,
}

pub fn parse(path: &str) -> Result<Route, RouteError> {
    let rest = path.strip_prefix("/v2").ok_or(RouteError::NotFound)?;
    if rest.is_empty() || rest == "/" {
        return Ok(Route::Base);
    }
    let rest = rest.strip_prefix('/').ok_or(RouteError::NotFound)?;
    let segs = rest.split('/').map(decode).collect::<Result<Vec<_>, _>>()?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    if segs == ["_catalog"] {
        return Ok(Route::Catalog);
    }
    match segs.as_slice() {
        [name @ .., "tags", "list"] => Ok(Route::Tags(repo(name)?)),
        [name @ .., "manifests", r] => Ok(Route::Manifest(repo(name)?, r.parse()?)),
        [name @ .., "blobs", "uploads"] | [name @ .., "blobs", "uploads", ""] => {
            Ok(Route::UploadStart(repo(name)?))
        }
        [name @ .., "blobs", "uploads", id] => {
            let name = repo(name)?;
            Ok(Route::Upload(name, id.parse().map_err(|_| RouteError::UploadUnknown)?))
        }
        [name @ .., "blobs", d] => Ok(Route::Blob(repo(name)?, d.parse()?)),
        [name @ .., "referrers", d] => Ok(Route::Referrers(repo(name)?, d.parse()?)),
        _ => Err(RouteError::NotFound),
    }
}

fn decode(seg: &str) -> Result<String, RouteError> {
    let s = percent_decode_str(seg).decode_utf8().map_err(|_| RouteError::NotFound)?;
    if s.contains('/') {
        // An encoded slash would let one segment pose as several.
        return Err(RouteError::NotFound);
    }
    Ok(s.into_owned())
}

fn repo(segs: &[&str]) -> Result<RepoName, RouteError> {
    if segs.is_empty() {
        return Err(RouteError::NotFound);
    }
    Ok(segs.join("/").parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/"), Ok(Route::Base));
        assert_eq!(parse("/v2"), Ok(Route::Base));
        assert_eq!(parse("/v2/_catalog"), Ok(Route::Catalog));
        assert_eq!(parse("/v2/a/b/c/tags/list"), Ok(Route::Tags(name("a/b/c"))));
        assert_eq!(
            parse("/v2/lib/alpine/manifests/latest"),
            Ok(Route::Manifest(name("lib/alpine"), "latest".parse().unwrap()))
        );
        assert_eq!(
            parse(&format!("/v2/x/manifests/{D}")),
            Ok(Route::Manifest(name("x"), D.parse().unwrap()))
        );
        assert_eq!(parse(&format!("/v2/x/blobs/{D}")), Ok(Route::Blob(name("x"), D.parse().unwrap())));
        assert_eq!(parse("/v2/x/blobs/uploads/"), Ok(Route::UploadStart(name("x"))));
        assert_eq!(parse("/v2/x/blobs/uploads"), Ok(Route::UploadStart(name("x"))));
        let id = UploadId::random();
        assert_eq!(parse(&format!("/v2/x/y/blobs/uploads/{id}")), Ok(Route::Upload(name("x/y"), id)));
        assert_eq!(
            parse(&format!("/v2/x/referrers/{D}")),
            Ok(Route::Referrers(name("x"), D.parse().unwrap()))
        );
    }

    #[test]
    fn names_may_contain_route_words() {
        assert_eq!(
            parse("/v2/blobs/manifests/tags/manifests/v1"),
            Ok(Route::Manifest(name("blobs/manifests/tags"), "v1".parse().unwrap()))
        );
        assert_eq!(parse("/v2/a/blobs/uploads/tags/list"), Ok(Route::Tags(name("a/blobs/uploads"))));
        let deep = (0..40).map(|i| format!("s{i}")).collect::<Vec<_>>().join("/");
        assert_eq!(parse(&format!("/v2/{deep}/tags/list")), Ok(Route::Tags(name(&deep))));
    }

    #[test]
    fn percent_encoded_digest_colon_is_accepted() {
        let encoded = D.replace(':', "%3A");
        assert_eq!(parse(&format!("/v2/x/blobs/{encoded}")), Ok(Route::Blob(name("x"), D.parse().unwrap())));
    }

    #[test]
    fn traversal_and_garbage_are_refused() {
        for bad in [
            "/v2/../etc/passwd/tags/list",
            "/v2/%2e%2e/tags/list",
            "/v2/a/%2e%2e/b/tags/list",
            "/v2/a%2fb/tags/list",
            "/v2//a/tags/list",
            "/v2/A/tags/list",
            "/v2/a/./b/tags/list",
            "/v2/%ff/tags/list",
            "/v2/a/blobs/sha256:abc",
            "/v2/a/blobs/md5:abc",
            "/v2/a/manifests/..",
            "/v2/a/blobs/uploads/not-a-uuid",
            "/v2/a/blobs/uploads/..%2f..%2f",
            "/v2/tags/list",
            "/v2/a/unknown",
            "/v3/a/tags/list",
            "/v2x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must not route");
        }
        let long = format!("/v2/{}/tags/list", "a".repeat(300));
        assert_eq!(parse(&long), Err(RouteError::Name(NameError::TooLong)));
    }
}
