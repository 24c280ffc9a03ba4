//! The record of the multipart uploads that requests write straight into object storage, kept in
//! the metadata store ([`MultipartLog`]), and the sweep that aborts those a crash left behind by
//! their recorded id — never by listing the bucket. A writer renews its record every minute; a
//! record not renewed for [`LEASE`] belongs to a writer that is gone.

use std::sync::Arc;
use std::time::Duration;

use crate::meta::multiparts::MultipartLog;
use crate::meta::now_millis;
use crate::storage::{layout, Key, MultipartJournal, Storage, StorageError};

/// How long a record stands without renewal (writers renew every minute).
pub const LEASE: Duration = Duration::from_secs(10 * 60);

/// How many lapsed uploads one sweep aborts at most.
const SWEEP_BATCH: usize = 100;

/// [`MultipartJournal`] over the metadata store.
pub struct Journal(pub Arc<dyn MultipartLog>);

fn lease_end() -> i64 {
    now_millis().saturating_add(LEASE.as_millis() as i64)
}

#[async_trait::async_trait]
impl MultipartJournal for Journal {
    async fn started(&self, key: &Key, id: &str) -> Result<(), StorageError> {
        self.0.record_multipart(key.as_str(), id, lease_end()).await.map_err(|e| {
            StorageError::Unavailable(format!("recording a multipart upload in the database: {e}"))
        })
    }

    async fn renewed(&self, key: &Key, id: &str) {
        if let Err(e) = self.0.record_multipart(key.as_str(), id, lease_end()).await {
            tracing::warn!(error = %e, "renewing the record of a multipart upload failed");
        }
    }

    async fn ended(&self, key: &Key, id: &str) {
        if let Err(e) = self.0.forget_multipart(key.as_str(), id).await {
            // Only costs the sweep an abort of an upload that is already gone.
            tracing::debug!(error = %e, "forgetting a finished multipart upload failed");
        }
    }
}

/// Aborts up to one batch of multipart uploads whose records lapsed before `now` (unix ms), and
/// forgets each once it is gone; returns how many. One that cannot be aborted now stays recorded
/// for the next sweep.
pub async fn sweep(storage: &dyn Storage, log: &dyn MultipartLog, now: i64) -> Result<usize, String> {
    let lapsed = log.lapsed_multiparts(now, SWEEP_BATCH).await.map_err(|e| e.to_string())?;
    let mut aborted = 0;
    for (key, id) in lapsed {
        let Some(k) = layout::recorded(&key) else {
            // Not a key Berth writes: nothing to abort, nothing to keep.
            let _ = log.forget_multipart(&key, &id).await;
            continue;
        };
        match storage.abort_assembly(&k, &id).await {
            Ok(()) | Err(StorageError::NotFound) => {
                log.forget_multipart(&key, &id).await.map_err(|e| e.to_string())?;
                aborted += 1;
            }
            Err(e) => tracing::warn!(error = %e, key, "aborting a lapsed multipart upload failed"),
        }
    }
    Ok(aborted)
}

#[cfg(all(test, feature = "s3"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::meta::sqlite::SqliteMeta;
    use crate::storage::s3::tests::from_env;
    use crate::storage::s3::PART_SIZE;
    use bytes::Bytes;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs an S3 server: tests/s3.sh runs it"]
    async fn multipart_uploads_of_crashed_writers_are_aborted_by_their_recorded_id() {
        let log: Arc<dyn MultipartLog> = Arc::new(SqliteMeta::temporary().unwrap());
        let s3 = from_env(&format!("sweep-{}", uuid::Uuid::new_v4().simple()))
            .with_journal(Arc::new(Journal(log.clone())));
        let storage: Arc<dyn Storage> = Arc::new(s3);
        let part = Bytes::from(vec![7u8; PART_SIZE]);
        let key = layout::blob(&berth_core::oci::Digest::of(berth_core::oci::Algorithm::Sha256, b"sweep"));

        // A writer that completes leaves no record.
        let mut w = storage.writer_at(&key).await.unwrap();
        w.write(part.clone()).await.unwrap();
        w.write(Bytes::from_static(b"tail")).await.unwrap();
        assert_eq!(log.lapsed_multiparts(i64::MAX, 10).await.unwrap().len(), 1, "recorded while it runs");
        w.commit(&key).await.unwrap();
        assert_eq!(log.lapsed_multiparts(i64::MAX, 10).await.unwrap(), vec![], "forgotten once complete");
        storage.delete(&key).await.unwrap();

        // A writer that crashes (never dropped, as when the process dies) leaves its record...
        let mut w = storage.writer_at(&key).await.unwrap();
        w.write(part.clone()).await.unwrap();
        w.write(part.clone()).await.unwrap();
        std::mem::forget(w);
        let recorded = log.lapsed_multiparts(i64::MAX, 10).await.unwrap();
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        let (k, id) = recorded[0].clone();
        assert_eq!(k, key.as_str());
        // ...which no sweep touches while its lease runs...
        assert_eq!(sweep(storage.as_ref(), log.as_ref(), now_millis()).await.unwrap(), 0);
        let open = storage.put_assembly_part(&key, &id, 2, Bytes::from_static(b"more")).await;
        assert!(open.is_ok(), "still open: {open:?}");
        // ...and the sweep after it lapses aborts the upload by its id and forgets it.
        let later = now_millis() + LEASE.as_millis() as i64 + 1;
        assert_eq!(sweep(storage.as_ref(), log.as_ref(), later).await.unwrap(), 1);
        let gone = storage.put_assembly_part(&key, &id, 3, Bytes::from_static(b"late")).await;
        assert!(gone.is_err(), "aborted: {gone:?}");
        assert_eq!(log.lapsed_multiparts(i64::MAX, 10).await.unwrap(), vec![]);
        assert_eq!(storage.stat(&key).await.unwrap(), None, "nothing was published");
    }
}
