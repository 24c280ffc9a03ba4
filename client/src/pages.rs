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
    /// `GET` of the page `link` names in the list at `/v2/<repo>/<kind>/<reference>`, with the
    /// credentials `repo` is read with. The link may change the query only: a page of another
    /// list, or on another host, is refused (a client passing a link on must not reach anything
    /// else with these credentials).
    pub async fn next_page(
        &self,
        repo: &RepoName,
        kind: &str,
        reference: &str,
        link: &str,
    ) -> Result<Fetched> {
        let refused = |detail: String| UpstreamError::Protocol { upstream: self.name.clone(), detail };
        let list = format!("{}/v2/{repo}/{kind}/{reference}", self.base);
        let list = Url::parse(&list).map_err(|e| refused(format!("its URL: {e}")))?;
        let url = list.join(link).map_err(|e| refused(format!("a next page at {link:?}: {e}")))?;
        let path = |u: &Url| percent_encoding::percent_decode_str(u.path()).decode_utf8_lossy().into_owned();
        if url.origin() != list.origin() || path(&url) != path(&list) {
            return Err(refused(format!("named a next page outside the list: {link:?}")));
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

    #[tokio::test]
    async fn a_next_page_outside_the_list_is_refused_before_any_request() {
        let config = berth_core::config::UpstreamConfig::new("up", "http://127.0.0.1:9");
        let up = Upstream::new(&config, std::sync::Arc::new(crate::Unobserved)).unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        let d = format!("sha256:{}", "a".repeat(64));
        for link in [
            format!("/v2/team/other/referrers/{d}?last=x"),
            format!("/v2/team/app/manifests/{d}"),
            format!("http://127.0.0.2:9/v2/team/app/referrers/{d}?last=x"),
            format!("https://127.0.0.1:9/v2/team/app/referrers/{d}"),
        ] {
            let e = up.next_page(&repo, "referrers", &d, &link).await.err();
            assert!(matches!(e, Some(UpstreamError::Protocol { .. })), "{link}: {e:?}");
        }
        // The same list with another query (its `:` encoded or not) is asked for, and here
        // fails to connect instead.
        for link in [
            format!("/v2/team/app/referrers/{d}?last=x"),
            format!("/v2/team/app/referrers/sha256%3A{}", "a".repeat(64)),
        ] {
            let e = up.next_page(&repo, "referrers", &d, &link).await.err();
            assert!(!matches!(e, Some(UpstreamError::Protocol { .. })), "{link}: {e:?}");
        }
    }
}
