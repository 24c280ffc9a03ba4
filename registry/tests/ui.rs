//! The web UI's repository list over 10,000 repositories: pages of 50 that together hold every
//! repository once, in order; each page light; a search that reads a bounded part of the catalog
//! per page and still reaches a name at its very end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use berth_core::oci::{Digest, RepoName};
use berth_registry::meta::Stored;
use common::{client, push_blob, TestServer};
use futures_util::StreamExt;

const REPOSITORIES: usize = 10_000;

/// The repositories a page lists, and its Next link.
fn listed(html: &str) -> (Vec<String>, Option<String>) {
    let decode = |s: &str| -> String {
        form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let names = html
        .split("href=\"/ui/repository?name=")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(decode)
        .collect();
    let next = html
        .split("<p class=\"pager\"><a href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|href| href.replace("&amp;", "&"));
    (names, next)
}

async fn page(s: &TestServer, path: &str) -> String {
    let r = client().get(s.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_repositories_page_and_search() {
    let s = TestServer::start().await;
    let digest: Digest = push_blob(&s, "seed/first", b"x").await.parse().unwrap();
    let names: Vec<String> = (0..REPOSITORIES).map(|i| format!("team-{:02}/app-{i:05}", i % 50)).collect();
    // Each repository is a link to the seed's blob, written straight into the metadata.
    let meta = s.state.registry.meta().clone();
    let written: Vec<()> = futures_util::stream::iter(names.clone())
        .map(|name| {
            let (meta, digest) = (meta.clone(), digest.clone());
            async move {
                let repo: RepoName = name.parse().unwrap();
                meta.link_blob(&repo, &digest, 1, Stored::Written).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(written.len(), REPOSITORIES);

    let mut expected = names.clone();
    expected.push("seed/first".into());
    expected.sort();
    let (mut seen, mut path, mut pages) = (Vec::new(), "/ui/".to_owned(), 0);
    loop {
        let html = page(&s, &path).await;
        assert!(html.len() < 150_000, "a page of {} bytes", html.len());
        let (names, next) = listed(&html);
        assert!(names.len() <= 50, "{} on one page", names.len());
        seen.extend(names);
        pages += 1;
        assert!(pages <= expected.len() / 50 + 1, "more pages than the repositories fill");
        match next {
            Some(n) => path = n,
            None => break,
        }
    }
    assert_eq!(seen.len(), expected.len());
    assert!(seen == expected, "every repository once, in order");

    // The last name of all: a search reads a bounded stretch of the catalog per page, and its
    // Next link goes on from where it stopped.
    let (mut found, mut path, mut pages) = (Vec::new(), "/ui/?q=app-09999".to_owned(), 0);
    while pages < 5 {
        let (names, next) = listed(&page(&s, &path).await);
        found.extend(names);
        pages += 1;
        match next {
            Some(n) => path = n,
            None => break,
        }
    }
    assert_eq!(found, ["team-49/app-09999"], "after {pages} pages");
    s.stop().await;
}
