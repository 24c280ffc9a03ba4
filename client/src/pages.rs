//! Lists an upstream answers a page at a time (the referrers API): the `Link` header names the
//! next page, which is followed only on the upstream's own origin, so credentials never go to
//! a host the upstream's answer names.

use berth_core::oci::RepoName;
use reqwest::header::{HeaderMap, LINK};
use reqwest::{Method, Url};

use super::{Fetched, Result, Upstream, UpstreamError};

/// The target of the `rel="next"` link among a response's `Link` headers.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers.get_all(LINK).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).find_map(|link| {
        let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
        let next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=").is_some_and(|rel| rel.trim_matches('"').split(' ').any(|r| r == "next"))
        });
        next.then(|| target.to_owned())
    })
}

impl Upstream {
    /// `GET` of the page `link` names (relative to the upstream, or on its origin), with the
    /// credentials `repo` is read with.
    pub async fn next_page(&self, repo: &RepoName, link: &str) -> Result<Fetched> {
        let refused = |detail: String| UpstreamError::Protocol { upstream: self.name.clone(), detail };
        let base = Url::parse(&self.base).map_err(|e| refused(format!("its URL: {e}")))?;
        let url = base.join(link).map_err(|e| refused(format!("a next page at {link:?}: {e}")))?;
        if url.origin() != base.origin() {
            return Err(refused(format!("named a next page on another host: {link:?}")));
        }
        self.send(&Method::GET, url.as_str(), Some(repo), None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(LINK, v.parse().unwrap_or_else(|_| panic!("{v}")));
        }
        h
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let h = headers(&[r#"</v2/a/referrers/sha256:1?last=sha256:2>; rel="next""#]);
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/referrers/sha256:1?last=sha256:2"));
        let h = headers(&[r#"</prev>; rel="prev", </next?x=1>; rel=next"#]);
        assert_eq!(next_link(&h).as_deref(), Some("/next?x=1"));
        let h = headers(&[r#"</first>; rel="first""#, r#"</more>; title="x"; rel="next last""#]);
        assert_eq!(next_link(&h).as_deref(), Some("/more"));
        assert_eq!(next_link(&headers(&[r#"</prev>; rel="prev""#, "garbage"])), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }
}
