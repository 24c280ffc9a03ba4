//! Upload sessions against the in-memory store and SQLite: what a close writes, and how often.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::*;
use crate::meta::sqlite::SqliteMeta;
use crate::service::Limits;
use crate::storage::{memory::MemoryStorage, read_all};
use crate::telemetry::Metrics;

fn body(data: &[u8]) -> BodyStream {
    futures_util::stream::iter([Ok(Bytes::copy_from_slice(data))]).boxed()
}

/// How many storage operations of `op` the registry made.
fn ops(metrics: &Metrics, op: &str) -> u64 {
    let series = format!("berth_storage_operation_duration_seconds_count{{operation=\"{op}\"");
    let text = metrics.render().unwrap();
    text.lines()
        .filter(|l| l.starts_with(&series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_session_closed_by_one_put_with_every_byte_writes_its_blob_once() {
    let metrics = Arc::new(Metrics::new());
    let storage = metrics.instrument(Arc::new(MemoryStorage::new()));
    let r = Registry::new(storage.clone(), Arc::new(SqliteMeta::temporary().unwrap()), Limits::default());
    let repo: RepoName = "up/whole".parse().unwrap();
    let data = b"a layer pushed the way containerd pushes it";
    let (digest, len) = (Digest::of(Algorithm::Sha256, data), data.len() as u64);

    // POST, then PUT ?digest= with the body: one writer, at the blob's key; nothing renamed.
    let id = r.start_upload(&repo).await.unwrap().id;
    assert_eq!(r.finish_upload(&repo, id, &digest, None, Some(len), body(data)).await.unwrap(), len);
    assert_eq!((ops(&metrics, "create"), ops(&metrics, "rename")), (1, 0));
    assert_eq!(read_all(storage.as_ref(), &layout::blob(&digest)).await.unwrap(), &data[..]);
    assert_eq!(r.meta().blob_size(&digest).await.unwrap(), Some(len));
    assert_eq!(r.meta().upload(id).await.unwrap(), None, "the session is closed");
    assert!(storage.list(&layout::uploads_root()).await.unwrap().is_empty());

    // A body shorter than declared: refused, nothing stored, the session kept for a retry.
    let other = b"another layer";
    let other_digest = Digest::of(Algorithm::Sha256, other);
    let id = r.start_upload(&repo).await.unwrap().id;
    let short = r.finish_upload(&repo, id, &other_digest, None, Some(99), body(other)).await;
    assert!(matches!(short, Err(ServiceError::SizeInvalid(_))), "{short:?}");
    assert_eq!(storage.stat(&layout::blob(&other_digest)).await.unwrap(), None);
    assert_eq!(r.meta().upload(id).await.unwrap().map(|u| u.received), Some(0));

    // The wrong digest: nothing stored at either key, and the session is gone.
    let wrong = r.finish_upload(&repo, id, &digest, None, None, body(other)).await;
    assert!(matches!(wrong, Err(ServiceError::DigestInvalid(_))), "{wrong:?}");
    assert_eq!(storage.stat(&layout::blob(&other_digest)).await.unwrap(), None);
    assert_eq!(r.meta().upload(id).await.unwrap(), None);

    // A session that holds bytes already closes from its chunk, as before.
    let id = r.start_upload(&repo).await.unwrap().id;
    r.upload_chunk(&repo, id, None, None, body(&other[..5])).await.unwrap();
    r.finish_upload(&repo, id, &other_digest, None, None, body(&other[5..])).await.unwrap();
    assert_eq!(read_all(storage.as_ref(), &layout::blob(&other_digest)).await.unwrap(), &other[..]);
}

#[tokio::test]
async fn a_close_publishes_only_the_bytes_its_session_counts() {
    // A PATCH that lands while the closing PUT reads its session can add a chunk that the
    // session row it read does not count yet. Here that chunk's row is written into the
    // database directly, so the PUT reads it every time.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let storage: Arc<dyn crate::storage::Storage> = Arc::new(MemoryStorage::new());
    let r = Registry::new(storage.clone(), Arc::new(SqliteMeta::open(&path).unwrap()), Limits::default());
    let repo: RepoName = "up/raced".parse().unwrap();
    let (counted, late) = (&b"the bytes the digest names"[..], &b" and a chunk that came late"[..]);
    let digest = Digest::of(Algorithm::Sha256, counted);
    let id = r.start_upload(&repo).await.unwrap().id;
    r.upload_chunk(&repo, id, None, None, body(counted)).await.unwrap();
    let at = counted.len() as u64;
    crate::storage::put_all(
        storage.as_ref(),
        &layout::upload_part(&id, at, "1a7e"),
        Bytes::from_static(late),
    )
    .await
    .unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute(
        "INSERT INTO upload_parts (upload_id, start, size, nonce, tag) VALUES (?1, ?2, ?3, '1a7e', NULL)",
        rusqlite::params![id.to_string(), at as i64, late.len() as i64],
    )
    .unwrap();

    // The digest names the counted bytes, and those alone become the blob.
    assert_eq!(r.finish_upload(&repo, id, &digest, None, None, body(b"")).await.unwrap(), at);
    assert_eq!(read_all(storage.as_ref(), &layout::blob(&digest)).await.unwrap(), counted);
}
