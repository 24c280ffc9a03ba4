//! [`Browse`]: a page of tags in each order, and image sizes walked through indexes.

use std::collections::HashMap;
use std::time::Duration;

use super::fixtures::{described, digest, manifest, repo};
use crate::meta::browse::{Browse, TagOrder};
use crate::meta::{MetaStore, NewManifest, Stored};
use berth_core::oci::Digest;

async fn names<M: Browse>(m: &M, r: &str, order: TagOrder, offset: u64, limit: u64) -> (u64, Vec<String>) {
    let page = m.tag_page(&repo(r), order, offset, limit).await.unwrap().expect("the repository holds tags");
    (page.total, page.tags.into_iter().map(|t| t.name).collect())
}

pub(crate) async fn tag_pages<M: MetaStore + Browse>(m: &M) {
    let layer = described(&digest("browse-layer"), 10);
    m.link_blob(&repo("browse/tags"), &layer.digest, 10, Stored::Written).await.unwrap();
    assert_eq!(
        m.tag_page(&repo("browse/tags"), TagOrder::Name, 0, 10).await.unwrap().map(|p| p.total),
        Some(0),
        "a repository holding only a blob is listed, without tags"
    );
    assert_eq!(m.tag_page(&repo("browse/none"), TagOrder::Name, 0, 10).await.unwrap(), None);
    // Pushed in two seconds (push times are whole seconds): "old" then "b-new" and "a-new".
    m.put_manifest(manifest("browse/tags", "browse-old", &[&layer], Some("old"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    m.put_manifest(manifest("browse/tags", "browse-new", &[&layer], Some("b-new"))).await.unwrap();
    m.put_manifest(manifest("browse/tags", "browse-new2", &[&layer], Some("a-new"))).await.unwrap();
    let pushed = names(m, "browse/tags", TagOrder::Pushed, 0, 10).await;
    assert_eq!(pushed, (3, vec!["a-new".into(), "b-new".into(), "old".into()]), "newest first, ties by name");
    assert_eq!(names(m, "browse/tags", TagOrder::Name, 0, 10).await.1, ["a-new", "b-new", "old"]);
    // Pulled: the latest pull first, never pulled last.
    let pulls = vec![
        (repo("browse/tags"), digest("browse-old"), 500),
        (repo("browse/tags"), digest("browse-new"), 100),
    ];
    m.record_pull_times(pulls).await.unwrap();
    assert_eq!(names(m, "browse/tags", TagOrder::Pulled, 0, 10).await.1, ["old", "b-new", "a-new"]);
    let page = m.tag_page(&repo("browse/tags"), TagOrder::Pulled, 0, 1).await.unwrap().unwrap();
    assert_eq!((page.tags[0].pulled_at, page.tags[0].digest.clone()), (Some(500), digest("browse-old")));
    // Windows of the order, and one past the end.
    assert_eq!(names(m, "browse/tags", TagOrder::Name, 1, 1).await, (3, vec!["b-new".into()]));
    assert_eq!(names(m, "browse/tags", TagOrder::Name, 2, 5).await.1, ["old"]);
    assert_eq!(names(m, "browse/tags", TagOrder::Name, u64::MAX, u64::MAX).await, (3, vec![]));
}

pub(crate) async fn image_sizes<M: MetaStore + Browse>(m: &M) {
    let r = "browse/sizes";
    let blob = |name: &str, size| described(&digest(name), size);
    let (shared, config_a, config_b) =
        (blob("s-layer", 1000), blob("s-config-a", 10), blob("s-config-b", 20));
    for b in [&shared, &config_a, &config_b] {
        m.link_blob(&repo(r), &b.digest, b.size, Stored::Written).await.unwrap();
    }
    m.put_manifest(manifest(r, "s-image-a", &[&config_a, &shared], None)).await.unwrap();
    m.put_manifest(manifest(r, "s-image-b", &[&config_b, &shared], None)).await.unwrap();
    let index = |name: &str, children: &[&str]| NewManifest {
        manifests: children.iter().map(|c| described(&digest(c), 100)).collect(),
        ..manifest(r, name, &[], None)
    };
    m.put_manifest(index("s-index", &["s-image-a", "s-image-b"])).await.unwrap();
    // Indexes nested deeper than any stack a walk by nested calls could use.
    const LEVELS: usize = 300;
    let mut below = "s-index".to_owned();
    for level in 0..LEVELS {
        let name = format!("s-nest-{level}");
        m.put_manifest(index(&name, &[&below])).await.unwrap();
        below = name;
    }
    let wanted = ["s-image-a", "s-image-b", "s-index", &below, "s-unknown"].map(digest).to_vec();
    let sizes = m.image_sizes(&repo(r), wanted).await.unwrap();
    let expected: HashMap<Digest, u64> = [
        (digest("s-image-a"), 1010),
        (digest("s-image-b"), 1020),
        // The shared layer counted once.
        (digest("s-index"), 1030),
        (digest(&below), 1030),
    ]
    .into();
    assert_eq!(sizes, expected, "the unknown digest needs nothing");
    assert_eq!(m.image_sizes(&repo("browse/none"), vec![digest("s-index")]).await.unwrap(), HashMap::new());
    assert_eq!(m.image_sizes(&repo(r), vec![]).await.unwrap(), HashMap::new());
}
