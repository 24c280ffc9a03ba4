//! The storage conformance suite: every backend runs all of it (see each backend's tests).

use bytes::Bytes;
use futures_util::TryStreamExt;

use super::{layout, put_all, read_all, Storage, StorageError};
use crate::UploadId;
use berth_core::oci::{Algorithm, Digest};

pub(crate) async fn run(s: &dyn Storage) {
    s.check().await.expect("a working store passes its readiness check");
    missing_objects(s).await;
    write_commit_read(s).await;
    ranges(s).await;
    uncommitted_writes_stay_invisible(s).await;
    large_objects_stream_in_order(s).await;
    rename_and_delete(s).await;
    scratch_objects(s).await;
    listing(s).await;
    concurrent_commits_to_one_key(s).await;
}

fn key_for(content: &[u8]) -> super::Key {
    layout::blob(&Digest::of(Algorithm::Sha256, content))
}

async fn missing_objects(s: &dyn Storage) {
    let k = key_for(b"never written");
    assert_eq!(s.stat(&k).await.unwrap(), None);
    assert!(matches!(s.get(&k, None).await, Err(StorageError::NotFound)));
    s.delete(&k).await.expect("deleting a missing object is fine");
    assert!(matches!(s.rename(&k, &key_for(b"x")).await, Err(StorageError::NotFound)));
}

async fn write_commit_read(s: &dyn Storage) {
    let k = key_for(b"hello");
    let mut w = s.writer().await.unwrap();
    w.write(Bytes::from_static(b"hel")).await.unwrap();
    w.write(Bytes::from_static(b"lo")).await.unwrap();
    assert_eq!(w.written(), 5);
    w.commit(&k).await.unwrap();
    assert_eq!(s.stat(&k).await.unwrap(), Some(5));
    assert_eq!(read_all(s, &k).await.unwrap(), Bytes::from_static(b"hello"));
    // Committing the same key again replaces it whole.
    put_all(s, &k, Bytes::from_static(b"HELLO")).await.unwrap();
    assert_eq!(read_all(s, &k).await.unwrap(), Bytes::from_static(b"HELLO"));
    // The empty object exists and is empty.
    let empty = key_for(b"");
    put_all(s, &empty, Bytes::new()).await.unwrap();
    assert_eq!(s.stat(&empty).await.unwrap(), Some(0));
    assert!(read_all(s, &empty).await.unwrap().is_empty());
}

async fn ranges(s: &dyn Storage) {
    let k = key_for(b"0123456789");
    put_all(s, &k, Bytes::from_static(b"0123456789")).await.unwrap();
    let part: Vec<Bytes> = s.get(&k, Some(2..5)).await.unwrap().try_collect().await.unwrap();
    assert_eq!(part.concat(), b"234");
    let tail: Vec<Bytes> = s.get(&k, Some(9..10)).await.unwrap().try_collect().await.unwrap();
    assert_eq!(tail.concat(), b"9");
}

async fn uncommitted_writes_stay_invisible(s: &dyn Storage) {
    let k = key_for(b"abandoned");
    let mut w = s.writer().await.unwrap();
    w.write(Bytes::from_static(b"abandoned")).await.unwrap();
    drop(w);
    assert_eq!(s.stat(&k).await.unwrap(), None);
    assert!(s.list(&layout::blobs_root()).await.unwrap().iter().all(|x| x.key != k));
    // Nor those begun where they were meant to go: the key shows nothing until a commit, which
    // may still name another key.
    let mut w = s.writer_at(&k).await.unwrap();
    w.write(Bytes::from_static(b"abandoned")).await.unwrap();
    assert_eq!(s.stat(&k).await.unwrap(), None);
    drop(w);
    assert_eq!(s.stat(&k).await.unwrap(), None);
    let elsewhere = key_for(b"moved on");
    let mut w = s.writer_at(&k).await.unwrap();
    w.write(Bytes::from_static(b"moved on")).await.unwrap();
    w.commit(&elsewhere).await.unwrap();
    assert_eq!((s.stat(&k).await.unwrap(), s.stat(&elsewhere).await.unwrap()), (None, Some(8)));
    s.delete(&elsewhere).await.unwrap();
}

async fn large_objects_stream_in_order(s: &dyn Storage) {
    // 5 MiB + 3 in odd-sized writes, so reads and writes cross every internal buffer boundary.
    let data: Vec<u8> = (0..(5 << 20) + 3).map(|i: u32| (i % 251) as u8).collect();
    let k = key_for(&data);
    let mut w = s.writer_at(&k).await.unwrap();
    for chunk in data.chunks(70_001) {
        w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    w.commit(&k).await.unwrap();
    assert_eq!(s.stat(&k).await.unwrap(), Some(data.len() as u64));
    let back: Vec<Bytes> = s.get(&k, None).await.unwrap().try_collect().await.unwrap();
    assert!(back.concat() == data, "full read differs");
    let (a, b) = (1_000_000u64, 4_500_001u64);
    let mid: Vec<Bytes> = s.get(&k, Some(a..b)).await.unwrap().try_collect().await.unwrap();
    assert!(mid.concat() == data[a as usize..b as usize], "ranged read differs");
}

async fn rename_and_delete(s: &dyn Storage) {
    let id = UploadId::random();
    let from = layout::upload_part(&id, 0, "0");
    let to = key_for(b"renamed");
    put_all(s, &from, Bytes::from_static(b"renamed")).await.unwrap();
    s.rename(&from, &to).await.unwrap();
    assert_eq!(s.stat(&from).await.unwrap(), None);
    assert_eq!(read_all(s, &to).await.unwrap(), Bytes::from_static(b"renamed"));
    s.delete(&to).await.unwrap();
    assert_eq!(s.stat(&to).await.unwrap(), None);
    s.delete(&to).await.unwrap();
    // As a blob the caller records next is moved and written: visible at once, the same way.
    put_all(s, &from, Bytes::from_static(b"renamed")).await.unwrap();
    s.rename_then_record(&from, &to).await.unwrap();
    assert_eq!(s.stat(&from).await.unwrap(), None);
    assert_eq!(read_all(s, &to).await.unwrap(), Bytes::from_static(b"renamed"));
    let written = key_for(b"written, recorded next");
    crate::storage::put_all_then_record(s, &written, Bytes::from_static(b"written, recorded next"))
        .await
        .unwrap();
    assert_eq!(read_all(s, &written).await.unwrap(), Bytes::from_static(b"written, recorded next"));
    for key in [&to, &written] {
        s.delete(key).await.unwrap();
    }
}

/// Written at their own keys (an upload's chunks): whole there once committed, synced or not; gone
/// with a writer dropped before its commit.
async fn scratch_objects(s: &dyn Storage) {
    let id = UploadId::random();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (unsynced, synced, dropped) = (
        layout::upload_part(&id, 0, "a"),
        layout::upload_part(&id, 1, "b"),
        layout::upload_part(&id, 2, "c"),
    );
    for (key, sync) in [(&unsynced, false), (&synced, true)] {
        let mut w = s.scratch_writer(key).await.unwrap();
        for piece in data.chunks(1000) {
            w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        assert_eq!(w.written(), data.len() as u64);
        if sync {
            w.commit(key).await.unwrap();
        } else {
            w.commit_unsynced(key).await.unwrap();
        }
        assert!(read_all(s, key).await.unwrap() == data, "{} reads back whole", key.as_str());
    }
    let mut w = s.scratch_writer(&dropped).await.unwrap();
    w.write(Bytes::copy_from_slice(&data)).await.unwrap();
    drop(w);
    // Removed in the background: wait for it, within bounds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.stat(&dropped).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "a dropped scratch writer leaves nothing");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for key in [&unsynced, &synced] {
        s.delete(key).await.unwrap();
    }
}

async fn listing(s: &dyn Storage) {
    let (a, b) = (UploadId::random(), UploadId::random());
    for start in [0u64, 10, 20] {
        put_all(s, &layout::upload_part(&a, start, "a"), Bytes::from_static(b"x")).await.unwrap();
    }
    put_all(s, &layout::upload_part(&b, 0, "b"), Bytes::from_static(b"yz")).await.unwrap();
    let listed = s.list(&layout::upload_prefix(&a)).await.unwrap();
    let keys: Vec<_> = listed.iter().map(|l| l.key.clone()).collect();
    let want: Vec<_> = [0u64, 10, 20].iter().map(|o| layout::upload_part(&a, *o, "a")).collect();
    assert_eq!(keys, want);
    // Each with its size and when it was written (clocks of a store and of berth may differ a
    // little).
    let now = crate::meta::now();
    assert!(listed.iter().all(|l| l.size == 1 && (l.modified - now).abs() < 300), "{listed:?}");
    assert_eq!(s.list(&layout::upload_prefix(&b)).await.unwrap()[0].size, 2);
    for k in keys {
        s.delete(&k).await.unwrap();
    }
    assert!(s.list(&layout::upload_prefix(&a)).await.unwrap().is_empty());
    assert_eq!(s.list(&layout::upload_prefix(&b)).await.unwrap().len(), 1);
}

async fn concurrent_commits_to_one_key(s: &dyn Storage) {
    let data = Bytes::from(vec![7u8; 300_000]);
    let k = key_for(&data);
    let writes = (0..8).map(|_| {
        let data = data.clone();
        let k = k.clone();
        async move { put_all(s, &k, data).await }
    });
    for r in futures_util::future::join_all(writes).await {
        r.unwrap();
    }
    assert_eq!(read_all(s, &k).await.unwrap(), data);
}
