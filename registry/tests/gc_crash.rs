//! A collection killed with SIGKILL in the middle of its sweep: after a restart, every tagged
//! image is whole, and the next collection finishes the work — exactly the live set stays on disk.
//! And a backup taken beside collections (the database first, then the store) restores whole
//! when released bytes are kept for `retention.purge_delay`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::berth::*;
use common::*;
use reqwest::StatusCode;

const KEPT: usize = 20;

fn blob_files(data: &Path) -> usize {
    stored_under(data, "storage/blobs").len()
}

async fn push(url: &str, repo: &str, data: &[u8]) {
    let r = client()
        .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={}", sha256(data)))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// Image `i`: a config and a layer of its own, and a layer every image shares.
fn image(i: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let config = format!("{{\"image\":{i}}}").into_bytes();
    let layer = format!("layer of image {i} ").repeat(50).into_bytes();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(SHARED), "size": SHARED.len()},
        ],
    }))
    .unwrap();
    (config, layer, manifest)
}

const SHARED: &[u8] = b"a layer every image has";

/// `images` images, the first `KEPT` tagged, the rest pushed by digest only: garbage.
async fn pushed(url: &str, images: usize) {
    push(url, "crash/gc", SHARED).await;
    for i in 0..images {
        let (config, layer, manifest) = image(i);
        push(url, "crash/gc", &config).await;
        push(url, "crash/gc", &layer).await;
        let reference = if i < KEPT { format!("t{i}") } else { sha256(&manifest) };
        let r = client()
            .put(format!("{url}/v2/crash/gc/manifests/{reference}"))
            .header("content-type", OCI_MANIFEST)
            .body(manifest)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
}

/// The states of the runs in the log, newest first.
async fn run_states(url: &str) -> Vec<String> {
    let runs: serde_json::Value =
        client().get(format!("{url}/admin/v1/gc/runs")).send().await.unwrap().json().await.unwrap();
    runs["runs"].as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap().to_owned()).collect()
}

/// A collection with no grace, waited for: its report.
async fn collect(url: &str) -> anyhow::Result<serde_json::Value> {
    admin(url).collect(&serde_json::json!({"grace": "0s"})).await
}

fn admin(url: &str) -> berth_registry::gc::client::Admin {
    berth_registry::gc::client::Admin::new(client(), url, None)
}

/// Every tagged image pulls whole: its manifest and blobs, each matching its digest.
async fn tagged_images_whole(url: &str) {
    tagged_images_whole_up_to(url, KEPT).await;
}

/// The first `n` tagged images pull whole.
async fn tagged_images_whole_up_to(url: &str, n: usize) {
    for i in 0..n {
        let (config, layer, manifest) = image(i);
        let r = client().get(format!("{url}/v2/crash/gc/manifests/t{i}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "t{i}");
        assert_eq!(r.bytes().await.unwrap(), manifest);
        for b in [&config, &layer, &SHARED.to_vec()] {
            let got = client().get(format!("{url}/v2/crash/gc/blobs/{}", sha256(b))).send().await.unwrap();
            assert_eq!(got.status(), StatusCode::OK, "a blob of t{i}");
            assert_eq!(sha256(&got.bytes().await.unwrap()), sha256(b));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_sweep_then_the_next_collection_finishes_the_work() {
    // The live set: each kept image's config, layer and manifest, and the shared layer.
    let live = KEPT * 3 + 1;
    let mut images = 300;
    for attempt in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let berth = Berth::spawn(dir.path(), &addr, &[]).await;
        let url = berth.url.clone();
        pushed(&url, images).await;
        let data = dir.path().to_path_buf();
        let stored = blob_files(&data);
        assert_eq!(stored, images * 3 + 1);

        // Killed as soon as the sweep has deleted its first objects.
        let run = tokio::spawn({
            let url = url.clone();
            async move { collect(&url).await }
        });
        let mut at_kill = stored;
        let caught = eventually(Duration::from_secs(60), || {
            let n = blob_files(&data);
            at_kill = n;
            async move { n < stored }
        })
        .await;
        berth.signal("-KILL");
        let _ = run.await;
        drop(berth);
        assert!(caught, "the collection started deleting");
        if at_kill <= live {
            // It finished before it was killed: try again with more to do.
            images *= 2;
            eprintln!("attempt {attempt}: the sweep ended before the kill; {images} images next");
            continue;
        }

        let berth = Berth::spawn(dir.path(), &addr, &[]).await;
        if run_states(&berth.url).await == ["succeeded"] {
            // The last deletes and the run's end came between the look and the kill.
            images *= 2;
            eprintln!("attempt {attempt}: the run ended before the kill; {images} images next");
            continue;
        }
        tagged_images_whole(&berth.url).await;
        let report = collect(&berth.url).await.unwrap();
        assert_eq!(report["conflicts"], 0, "{report}");
        let states = run_states(&berth.url).await;
        assert_eq!(states, ["succeeded", "interrupted"], "the killed run is known as cut off");
        assert_eq!(blob_files(&data), live, "exactly the live set is left on disk");
        tagged_images_whole(&berth.url).await;
        for i in [KEPT, images - 1] {
            let (_, _, manifest) = image(i);
            let r = client().get(format!("{url}/v2/crash/gc/manifests/{}", sha256(&manifest))).send().await;
            let r = r.unwrap_or_else(|_| panic!("{}", berth.url));
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "untagged image {i} is gone");
        }
        return;
    }
    panic!("no attempt caught the sweep in the middle");
}

/// What `sqlite3 DB ".backup COPY"` does.
fn online_copy(db: &Path, copy: &Path) {
    let db = rusqlite::Connection::open(db).unwrap();
    db.execute("VACUUM INTO ?1", [copy.to_str().unwrap()]).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Backs up a registry while an image is deleted and collected between the copy of the
/// database and the copy of the store, restores it elsewhere: whether that image pulls whole.
async fn deleted_image_restores_whole(config: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::spawn_with_config(dir.path(), &free_addr(), config).await;
    let url = berth.url.clone();
    pushed(&url, 2).await;
    // The database, online (what `sqlite3 meta.db ".backup …"` does too).
    let backup = tempfile::tempdir().unwrap();
    online_copy(&dir.path().join("meta.db"), &backup.path().join("meta.db"));
    // Meanwhile image 1 is deleted and collected.
    let (_, _, manifest) = image(1);
    let r =
        client().delete(format!("{url}/v2/crash/gc/manifests/{}", sha256(&manifest))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    collect(&url).await.unwrap();
    // Then the store.
    copy_dir(&dir.path().join("storage"), &backup.path().join("storage"));
    drop(berth);

    let berth = Berth::spawn(backup.path(), &free_addr(), &[]).await;
    tagged_images_whole_up_to(&berth.url, 1).await;
    let (config, layer, manifest) = image(1);
    let got = client().get(format!("{}/v2/crash/gc/manifests/t1", berth.url)).send().await.unwrap();
    if got.status() != StatusCode::OK || got.bytes().await.unwrap() != manifest {
        return false;
    }
    for b in [&config, &layer] {
        let got =
            client().get(format!("{}/v2/crash/gc/blobs/{}", berth.url, sha256(b))).send().await.unwrap();
        if got.status() != StatusCode::OK || sha256(&got.bytes().await.unwrap()) != sha256(b) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_beside_collections_restores_whole_with_a_purge_delay() {
    // Every object a file: small objects are rows of the database, copied with it.
    let files = "storage:\n  kind: filesystem\n  small_objects: 0\n";
    assert!(
        deleted_image_restores_whole(&format!("{files}retention:\n  purge_delay: 1h\n")).await,
        "released bytes stay for the purge delay: the store's copy still has them"
    );
    assert!(
        !deleted_image_restores_whole(files).await,
        "without it the collection deletes them before the store is copied"
    );
    assert!(
        deleted_image_restores_whole("").await,
        "objects kept as rows are in the database's copy, whatever a collection does after it"
    );
}
