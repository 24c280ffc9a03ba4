//! The web UI's repository list over 10,000 repositories: pages of 50 that together hold every
//! repository once, in order; each page light; a search that reads a bounded part of the catalog
//! per page and still reaches a name at its very end. A repository's tags: pages of 50 in the
//! order asked for, each tag with its image's size, and any `from` answered. A manifest's
//! referrers tree: bounded however many referrers hang under it; and an index's platforms in a
//! tag's row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use berth_core::oci::{Digest, RepoName};
use berth_registry::meta::Stored;
use common::{client, image_manifest, push_blob, put_manifest, sha256, TestServer, OCI_MANIFEST};
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

/// The tags a repository page lists (its rows' first cells), and its Next link.
fn tags_listed(html: &str) -> (Vec<String>, Option<String>) {
    let tags = html
        .split("<tr><td>")
        .skip(1)
        .filter_map(|row| row.split("</td>").next())
        .map(str::to_owned)
        .collect();
    let next = html
        .split("\">Next</a>")
        .next()
        .filter(|before| before.len() < html.len())
        .and_then(|before| before.rsplit("href=\"").next())
        .map(|href| href.replace("&amp;", "&"));
    (tags, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_of_many_tags_pages_them() {
    const TAGS: usize = 120;
    let s = TestServer::with_config(berth_core::config::Config::default()).await;
    let image = image_manifest(&s, "many/tags", "one", serde_json::json!({})).await;
    for i in 0..TAGS {
        let r = put_manifest(&s, "many/tags", &format!("t{i:03}"), OCI_MANIFEST, &image).await;
        assert_eq!(r.status(), 201);
    }
    // The image's config and layer, as `image_manifest` makes them.
    let bytes = "{\"seed\":\"one\"}".len() + "layer-one".len() * 100;
    let shown_size = berth_core::config::size::approximate(bytes as u64);

    let (mut seen, mut path, mut pages) =
        (Vec::new(), "/ui/repository?name=many/tags&order=name".to_owned(), 0);
    loop {
        let html = page(&s, &path).await;
        assert!(html.contains(&format!("{TAGS} tags, by")), "{html}");
        assert!(html.contains(&format!("<td>{shown_size}</td>")), "each row shows its image's size: {html}");
        let (tags, next) = tags_listed(&html);
        assert!(!tags.is_empty() && tags.len() <= 50, "{} on one page", tags.len());
        seen.extend(tags);
        pages += 1;
        assert!(pages <= TAGS / 50 + 1, "more pages than the tags fill");
        match next {
            Some(n) => path = n,
            None => break,
        }
    }
    let expected: Vec<String> = (0..TAGS).map(|i| format!("t{i:03}")).collect();
    assert_eq!(seen, expected, "every tag once, by name");

    // Past the end, however far: the count, no rows, no Next.
    for from in ["120", "18446744073709551615"] {
        let html = page(&s, &format!("/ui/repository?name=many/tags&from={from}")).await;
        assert!(html.contains(&format!("{TAGS} tags, by")), "{html}");
        assert_eq!(tags_listed(&html), (vec![], None), "from={from}");
    }
    let r = client().get(s.url("/ui/repository?name=nothing/here")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    s.stop().await;
}

/// Pushes a signature of `subject` (its digest and size) to `repo`, distinct by `n`; its digest
/// and size.
async fn push_referrer(
    s: &TestServer,
    repo: &str,
    empty: &str,
    subject: &(String, usize),
    n: usize,
) -> (String, usize) {
    let empty =
        serde_json::json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2});
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": empty,
        "layers": [empty],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.0, "size": subject.1},
        "annotations": {"n": n.to_string()},
    }))
    .unwrap();
    let digest = sha256(&body);
    let r = put_manifest(s, repo, &digest, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    (digest, body.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referrers_tree_shows_a_bounded_part() {
    // 60 signatures of the image, each signed 4 times: the tree would list 50 + 50 × 4.
    const FIRST: usize = 60;
    const EACH: usize = 4;
    let s = TestServer::start().await;
    let image = image_manifest(&s, "signed/app", "app", serde_json::json!({})).await;
    assert_eq!(put_manifest(&s, "signed/app", "v1", OCI_MANIFEST, &image).await.status(), 201);
    let subject = (sha256(&image), image.len());
    let empty = push_blob(&s, "signed/app", b"{}").await;
    let first: Vec<(String, usize)> = futures_util::stream::iter(0..FIRST)
        .map(|n| push_referrer(&s, "signed/app", &empty, &subject, n))
        .buffer_unordered(8)
        .collect()
        .await;
    let second: Vec<(String, usize)> =
        futures_util::stream::iter(first.iter().flat_map(|f| (0..EACH).map(move |n| (f, n))))
            .map(|(f, n)| push_referrer(&s, "signed/app", &empty, f, n))
            .buffer_unordered(8)
            .collect()
            .await;
    assert_eq!(second.len(), FIRST * EACH);

    let html = page(&s, &format!("/ui/manifest?name=signed/app&ref={}", subject.0)).await;
    assert_eq!(html.matches("<li>").count(), 200, "the tree's bound: {html}");
    assert!(html.contains("<li class=\"muted\">and more</li>"), "{html}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_row_lists_a_bounded_part_of_an_index() {
    const CHILDREN: usize = 20;
    let s = TestServer::with_config(berth_core::config::Config::default()).await;
    let mut children = Vec::new();
    for i in 0..CHILDREN {
        let image = image_manifest(&s, "multi/arch", &format!("child-{i}"), serde_json::json!({})).await;
        let digest = sha256(&image);
        assert_eq!(put_manifest(&s, "multi/arch", &digest, OCI_MANIFEST, &image).await.status(), 201);
        children.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": digest, "size": image.len(),
            "platform": {"os": "linux", "architecture": format!("arch{i:02}")},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children,
    }))
    .unwrap();
    let r = put_manifest(&s, "multi/arch", "latest", "application/vnd.oci.image.index.v1+json", &index).await;
    assert_eq!(r.status(), 201);

    let html = page(&s, "/ui/repository?name=multi/arch").await;
    assert_eq!(html.matches("linux/arch").count(), 16, "{html}");
    assert!(
        html.contains("linux/arch00") && !html.contains("linux/arch16"),
        "the index's first ones: {html}"
    );
    assert!(html.contains("and 4 more"), "{html}");
    s.stop().await;
}
