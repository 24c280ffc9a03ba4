//! Gauges of what is stored, refreshed by background tasks so a scrape costs no disk or database
//! work: the data directory's filesystem (for the storage-full alert) and the stored total the
//! metadata holds (which also covers object storage, where there is no volume to measure).

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::meta::usage::Usage;
use crate::telemetry::{StoredMetrics, VolumeMetrics};

/// Looks at the filesystem every 30 s, off the async threads.
pub(super) async fn volume(path: std::path::PathBuf, gauges: VolumeMetrics) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let p = path.clone();
        match tokio::task::spawn_blocking(move || crate::storage::fs::volume(&p)).await {
            Ok(Ok((size, available))) => {
                gauges.size.set(clamped(size));
                gauges.available.set(clamped(available));
            }
            Ok(Err(e)) => {
                warn!(path = %path.display(), error = %e, "the data directory's filesystem not measured")
            }
            Err(_) => {}
        }
    }
}

/// Sums the live blobs every minute (one aggregate query; each replica asks for itself).
pub(super) async fn stored(usage: Arc<dyn Usage>, gauges: StoredMetrics) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match usage.stored_total().await {
            Ok(total) => {
                gauges.bytes.set(clamped(total.bytes));
                gauges.blobs.set(clamped(total.blobs));
            }
            Err(e) => warn!(error = %e, "the stored total not measured"),
        }
    }
}

fn clamped(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
