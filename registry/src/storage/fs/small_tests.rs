use std::fs;
use std::path::Path;

use bytes::Bytes;

use super::super::FsStorage;
use super::OLD_FILE;
use crate::meta::sqlite::SqliteMeta;
use crate::storage::{layout, read_all, testsuite, Key, Storage};
use berth_core::oci::{Algorithm, Digest};

fn key_of(data: &[u8]) -> Key {
    layout::blob(&Digest::of(Algorithm::Sha256, data))
}

/// A store in `root` whose rows are kept in `root/meta.db`, the metadata database.
async fn store(root: &Path, max: u64) -> FsStorage {
    let meta = SqliteMeta::open(root.join("meta.db")).unwrap();
    FsStorage::open(root).unwrap().with_small_objects(max, &meta).await.unwrap()
}

/// Every file under `root` but the databases'.
fn files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else if !["meta.db", OLD_FILE].iter().any(|db| e.file_name().to_string_lossy().starts_with(db))
            {
                out.push(e.path().display().to_string());
            }
        }
    }
    let mut out = vec![];
    walk(root, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_rows_and_files() {
    // A small limit, so that the suite's objects are rows and files both.
    for max in [64, super::DEFAULT_MAX] {
        let dir = tempfile::tempdir().unwrap();
        testsuite::run(&store(dir.path(), max).await).await;
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "nothing half-written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_object_is_a_row_and_a_large_one_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1024).await;
    let small = Bytes::from(vec![7u8; 1024]);
    let large = Bytes::from(vec![8u8; 1025]);
    let (ks, kl) = (key_of(&small), key_of(&large));
    crate::storage::put_all(&s, &ks, small.clone()).await.unwrap();
    let mut w = s.writer().await.unwrap();
    // In pieces: the first fits, the second makes it a file.
    w.write(large.slice(..1000)).await.unwrap();
    w.write(large.slice(1000..)).await.unwrap();
    assert_eq!(w.written(), 1025);
    w.commit(&kl).await.unwrap();
    assert_eq!(files(dir.path()), [dir.path().join(kl.as_str()).display().to_string()]);
    assert_eq!(s.stat(&ks).await.unwrap(), Some(1024));
    assert_eq!(read_all(&s, &ks).await.unwrap(), small);
    assert_eq!(read_all(&s, &kl).await.unwrap(), large);
    let listed: Vec<Key> = s.list(&layout::blobs_root()).await.unwrap().into_iter().map(|l| l.key).collect();
    let mut both = vec![ks.clone(), kl.clone()];
    both.sort();
    assert_eq!(listed, both);
    // Kept across a restart.
    drop(s);
    let s = store(dir.path(), 1024).await;
    assert_eq!(read_all(&s, &ks).await.unwrap(), small);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_chunk_becomes_its_blob_without_a_file() {
    // docker's push of a small layer: the chunk written at its key, then renamed to the blob's.
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), super::DEFAULT_MAX).await;
    let data = Bytes::from(vec![3u8; 4096]);
    let chunk = layout::upload_part(&crate::UploadId::random(), 0, "ab");
    let mut w = s.scratch_writer(&chunk).await.unwrap();
    w.write(data.clone()).await.unwrap();
    w.commit_unsynced(&chunk).await.unwrap();
    assert_eq!(s.list(&layout::uploads_root()).await.unwrap().len(), 1);
    let blob = key_of(&data);
    s.rename(&chunk, &blob).await.unwrap();
    assert_eq!(s.stat(&chunk).await.unwrap(), None);
    assert_eq!(read_all(&s, &blob).await.unwrap(), data);
    let ranged: Vec<Bytes> =
        futures_util::TryStreamExt::try_collect(s.get(&blob, Some(10..20)).await.unwrap()).await.unwrap();
    assert_eq!(ranged.concat(), &data[10..20]);
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    assert!(matches!(s.rename(&chunk, &blob).await, Err(crate::storage::StorageError::NotFound)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_placed_at_a_rows_key_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 16).await;
    let key = Key::new("blobs/sha256/ab/replaced".into());
    crate::storage::put_all(&s, &key, Bytes::from_static(b"row")).await.unwrap();
    crate::storage::put_all(&s, &key, Bytes::from_static(b"a file, more than sixteen bytes")).await.unwrap();
    assert_eq!(read_all(&s, &key).await.unwrap(), Bytes::from_static(b"a file, more than sixteen bytes"));
    assert_eq!(s.list(&layout::blobs_root()).await.unwrap().len(), 1);
    // Renamed onto a row, and adopted onto one.
    let other = Key::new("blobs/sha256/ab/other".into());
    crate::storage::put_all(&s, &other, Bytes::from_static(b"row")).await.unwrap();
    s.rename(&key, &other).await.unwrap();
    assert_eq!(s.stat(&other).await.unwrap(), Some(31));
    crate::storage::put_all(&s, &key, Bytes::from_static(b"row")).await.unwrap();
    let spool = dir.path().join("spool");
    fs::write(&spool, b"adopted, more than sixteen bytes").unwrap();
    s.adopt(&spool, &key).await.unwrap();
    assert_eq!(s.stat(&key).await.unwrap(), Some(32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_an_older_store_are_read_and_a_delete_removes_both() {
    let dir = tempfile::tempdir().unwrap();
    let data = Bytes::from_static(b"written before rows were kept");
    let key = key_of(&data);
    crate::storage::put_all(&FsStorage::open(dir.path()).unwrap(), &key, data.clone()).await.unwrap();
    let s = store(dir.path(), super::DEFAULT_MAX).await;
    assert_eq!(read_all(&s, &key).await.unwrap(), data, "the file is read");
    // Pushed again: a row at the same key, the same bytes; listed once.
    crate::storage::put_all(&s, &key, data.clone()).await.unwrap();
    assert_eq!(s.list(&layout::blobs_root()).await.unwrap().len(), 1);
    s.delete(&key).await.unwrap();
    assert_eq!(s.stat(&key).await.unwrap(), None);
    assert!(files(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_is_a_full_disk_until_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), super::DEFAULT_MAX).await;
    let small = s.small.clone().unwrap();
    let room = |pages: i64| {
        let small = small.clone();
        async move {
            small
                .writer
                .run(super::Durability::Synced, move |c| {
                    Ok(c.pragma_update(None, "max_page_count", pages)?)
                })
                .await
                .unwrap()
        }
    };
    let pages: i64 = small.read(|c| c.query_row("PRAGMA page_count", [], |r| r.get(0))).unwrap();
    room(pages).await;
    let data = Bytes::from(vec![1u8; 16 << 10]);
    let e = crate::storage::put_all(&s, &key_of(&data), data.clone()).await.unwrap_err();
    assert!(e.is_full(), "{e:?}");
    assert_eq!(s.stat(&key_of(&data)).await.unwrap(), None, "nothing of it is visible");
    room(1 << 30).await;
    crate::storage::put_all(&s, &key_of(&data), data.clone()).await.unwrap();
    assert_eq!(read_all(&s, &key_of(&data)).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_small_file_becomes_a_row() {
    // The proxy's spooled fetch of an image config.
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path().join("store").as_path(), super::DEFAULT_MAX).await;
    let spooled = dir.path().join("spooled");
    fs::write(&spooled, b"a config").unwrap();
    let key = key_of(b"a config");
    s.adopt(&spooled, &key).await.unwrap();
    assert!(!spooled.exists(), "the spooled file is removed");
    assert!(files(&dir.path().join("store")).is_empty());
    assert_eq!(read_all(&s, &key).await.unwrap(), Bytes::from_static(b"a config"));
    assert!(s.adopt(&spooled, &key).await.is_err(), "a missing file is an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turned_off_rows_are_still_read_and_can_be_unpacked_for_an_older_berth() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), super::DEFAULT_MAX).await;
    let kept: Vec<Bytes> = (0..300u16).map(|i| Bytes::from(i.to_string())).collect();
    for b in &kept {
        crate::storage::put_all(&s, &key_of(b), b.clone()).await.unwrap();
    }
    drop(s);
    // `small_objects: 0`: what was kept is still there, and a new object is a file.
    let s = store(dir.path(), 0).await;
    assert_eq!(read_all(&s, &key_of(&kept[7])).await.unwrap(), kept[7]);
    let new = Bytes::from_static(b"new");
    crate::storage::put_all(&s, &key_of(&new), new.clone()).await.unwrap();
    assert_eq!(files(dir.path()), [dir.path().join(key_of(&new).as_str()).display().to_string()]);
    // Unpacked (more than one batch), a store that reads only files finds every object.
    assert_eq!(s.unpack_small_objects().await.unwrap(), 300);
    let older = FsStorage::open(dir.path()).unwrap();
    for b in kept.iter().chain([&new]) {
        assert_eq!(read_all(&older, &key_of(b)).await.unwrap(), b);
    }
    assert_eq!(s.unpack_small_objects().await.unwrap(), 0, "no row is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_an_older_berth_kept_in_a_database_of_their_own_are_moved_in() {
    let dir = tempfile::tempdir().unwrap();
    let old = rusqlite::Connection::open(dir.path().join(OLD_FILE)).unwrap();
    old.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE objects (key TEXT PRIMARY KEY NOT NULL, data BLOB NOT NULL, modified INTEGER NOT NULL)",
    )
    .unwrap();
    // More than one batch of the move.
    let kept: Vec<Bytes> = (0..300u16).map(|i| Bytes::from(format!("kept {i}"))).collect();
    for b in &kept {
        old.execute("INSERT INTO objects VALUES (?1, ?2, 7)", rusqlite::params![key_of(b).as_str(), &b[..]])
            .unwrap();
    }
    drop(old);
    let s = store(dir.path(), super::DEFAULT_MAX).await;
    let gone = |suffix: &str| !dir.path().join(format!("{OLD_FILE}{suffix}")).exists();
    assert!(gone("") && gone("-wal") && gone("-shm"), "the old database is removed");
    for b in &kept {
        assert_eq!(read_all(&s, &key_of(b)).await.unwrap(), b);
    }
    let listed = s.list(&layout::blobs_root()).await.unwrap();
    assert_eq!(listed.len(), 300);
    assert!(listed.iter().all(|l| l.modified == 7), "kept as they were");
    drop(s);
    let s = store(dir.path(), super::DEFAULT_MAX).await;
    assert_eq!(read_all(&s, &key_of(&kept[299])).await.unwrap(), kept[299], "and after a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_sqlite_metadata_refuses_rows_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(OLD_FILE), b"").unwrap();
    let e = FsStorage::open(dir.path()).unwrap().without_small_objects().err().unwrap();
    assert!(e.to_string().contains("unpack-small-objects"), "{e}");
    fs::remove_file(dir.path().join(OLD_FILE)).unwrap();
    FsStorage::open(dir.path()).unwrap().without_small_objects().unwrap();
}

/// An object the caller records next (a pushed blob, written or moved into place) is a row of
/// the metadata database, in the log whose next synced write, the record, makes it durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_recorded_next_is_a_row_in_the_metadata_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), super::DEFAULT_MAX).await;
    let data = Bytes::from_static(b"recorded next");
    let mut w = s.writer().await.unwrap();
    w.write(data.clone()).await.unwrap();
    w.commit_then_record(&key_of(&data)).await.unwrap();
    let chunk = layout::upload_part(&crate::UploadId::random(), 0, "ab");
    let moved = Bytes::from_static(b"moved, recorded next");
    crate::storage::put_all(&s, &chunk, moved.clone()).await.unwrap();
    s.rename_then_record(&chunk, &key_of(&moved)).await.unwrap();
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    let rows = super::super::stored_keys(dir.path(), &dir.path().join("meta.db"), "blobs/").unwrap();
    let mut both = vec![key_of(&data).as_str().to_owned(), key_of(&moved).as_str().to_owned()];
    both.sort();
    assert_eq!(rows, both, "rows of the metadata database");
    assert_eq!(read_all(&s, &key_of(&moved)).await.unwrap(), moved);
    assert_eq!(s.stat(&chunk).await.unwrap(), None);
}
