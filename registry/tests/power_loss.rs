//! A power loss, as the metadata database's write-ahead log meets it: the log keeps its frames up
//! to some point and loses the rest (SQLite recovers the commits of the longest valid prefix).
//! Small objects are rows of that log, committed without waiting for the disk just before the
//! synced commit that records them: whatever prefix survives, everything recorded is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use common::berth::*;
use common::upstream::push_image;
use common::*;
use reqwest::StatusCode;

/// The WAL header's length, and each frame's own header before its page.
const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// Pushes a small blob as docker does: `POST`, one `PATCH` with the bytes, then `PUT ?digest=`.
async fn push_in_chunks(url: &str, repo: &str, data: &[u8]) -> String {
    let c = client();
    let r = c.post(format!("{url}/v2/{repo}/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let at = format!("{url}{}", r.headers()["location"].to_str().unwrap());
    let r = c.patch(&at).body(data.to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let at = format!("{url}{}", r.headers()["location"].to_str().unwrap());
    let sep = if at.contains('?') { '&' } else { '?' };
    let digest = sha256(data);
    let r = c.put(format!("{at}{sep}digest={digest}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    digest
}

/// What the data directory `data` holds after its log is recovered: the digests recorded (linked
/// to a repository, or stored as manifests) and the blob keys stored (rows and files).
fn recovered(data: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let db = rusqlite::Connection::open(data.join("meta.db")).unwrap();
    // A prefix from before the schema's own commit holds no table.
    let schema =
        db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'manifests'").unwrap().exists([]).unwrap();
    if !schema {
        return (BTreeSet::new(), BTreeSet::new());
    }
    let recorded = db
        .prepare("SELECT digest FROM repository_blobs UNION SELECT digest FROM manifests")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<BTreeSet<_>, _>>()
        .unwrap();
    // Closed, so that the recovered log is folded into the database file.
    drop(db);
    let stored =
        berth_registry::storage::fs::stored_keys(&data.join("storage"), &data.join("meta.db"), "blobs/")
            .unwrap()
            .into_iter()
            .collect();
    (recorded, stored)
}

/// The blob key of a `sha256:` digest, as the store lays it out.
fn blob_key(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap();
    format!("blobs/sha256/{}/{hex}", &hex[..2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_prefix_of_the_log_a_power_loss_keeps_has_what_it_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let berth = Berth::spawn(&data, &free_addr(), &[]).await;
    let mut pushed = vec![];
    for i in 0..3 {
        pushed.push(push_in_chunks(&berth.url, "power/chunks", format!("chunk-pushed {i}").as_bytes()).await);
    }
    // containerd's flow (`POST`, then a `PUT` with the body) and a manifest over what it pushed.
    let layers = (0..2).map(|i| Bytes::from(format!("layer {i} ").repeat(100))).collect();
    let image = push_image(&berth.url, "power/image", "v1", layers).await;
    pushed.extend([image.config.clone(), image.digest.clone()]);
    pushed.extend(image.layers.iter().cloned());
    // Killed: the log stays as the pushes left it, not folded into the database.
    berth.signal("-KILL");
    drop(berth);

    let wal = std::fs::read(data.join("meta.db-wal")).unwrap();
    let page = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
    let frames = (wal.len() - WAL_HEADER) / (FRAME_HEADER + page);
    assert!(frames > 8, "the pushes are in the log ({frames} frames)");
    let mut seen = BTreeSet::new();
    for kept in 0..=frames {
        let copy = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(copy.path().join("storage")).unwrap();
        std::fs::copy(data.join("meta.db"), copy.path().join("meta.db")).unwrap();
        std::fs::write(copy.path().join("meta.db-wal"), &wal[..WAL_HEADER + kept * (FRAME_HEADER + page)])
            .unwrap();
        let (recorded, stored) = recovered(copy.path());
        for digest in &recorded {
            assert!(stored.contains(&blob_key(digest)), "{kept} frames kept: {digest} recorded, not stored");
        }
        seen.insert(recorded.len());
    }
    let (recorded, _) = recovered(&data);
    for digest in &pushed {
        assert!(recorded.contains(digest), "{digest} pushed and recorded");
    }
    assert!(seen.len() > pushed.len() / 2, "the prefixes recorded more and more: {seen:?}");
}
