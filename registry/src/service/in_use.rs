//! An upload session stays in use for as long as a request is sending to it.
//!
//! A session idle for longer than the upload TTL is abandoned: the purge removes it, and a request
//! that finds it so discards it. "Idle" is read from the session's `updated_at`, which a request
//! sets when it ends; so one request sending for longer than the TTL (a large layer over a slow
//! link, or a short TTL) would see its session removed under it and lose everything it sent. While
//! a request sends, [`InUse`] moves `updated_at` on every quarter of the TTL, on whichever replica
//! the request runs, and stops when the request ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::debug;

use crate::meta::{now, MetaStore};
use crate::UploadId;

/// Marks a session as in use until dropped.
pub(super) struct InUse(JoinHandle<()>);

impl InUse {
    /// For the session `id`, last touched at `updated_at` (Unix seconds). A request's start is
    /// recorded only for a session idle for half the TTL already: any other stays younger than
    /// the TTL until the first mark, a quarter of the TTL later, so a short request costs no write.
    pub(super) fn start(meta: Arc<dyn MetaStore>, id: UploadId, updated_at: i64, ttl: Duration) -> InUse {
        let every = (ttl / 4).max(Duration::from_millis(100));
        let idle = Duration::from_secs(now().saturating_sub(updated_at).max(0) as u64);
        let first = if idle >= ttl / 2 { Duration::ZERO } else { every };
        InUse(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = meta.touch_upload(id, now()).await {
                    // The request itself finds out at its end whether its session still stands.
                    debug!(upload = %id, error = %e, "could not mark an upload session in use");
                }
            }
        }))
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.abort();
    }
}
