//! Streaming a blob that another replica is still fetching, through storage.
//!
//! ```text
//! replica A (holds the fetch claim)           replica B (follows)
//! upstream ──► spool ──► segment objects ──►  storage GETs ──► client
//!                  └──► blob object (once verified) ──► the rest, from the blob
//! ```
//! The holder records the upstream's size in the claim as soon as it has the answer, so a
//! follower can answer at once instead of after the whole fetch. Once a follower says it waits
//! (the claim's `wanted`), the holder copies whole segments of its spool to storage, each an
//! object of its own recorded in the claim as it is written; the follower streams them and
//! switches to the stored blob as soon as that exists. The last segment is never published: like
//! the holder's own clients, a follower gets the blob's last byte only from the verified, stored
//! blob, so no client ever receives a complete body of wrong content. Segments are deleted a
//! while after the fetch ends; those a crash leaves behind are named like upload chunks without a
//! session, which the scrub removes.
//!
//! Nothing is published unless another replica asks, so a lone replica pays one metadata write
//! per fetch and a look at the claim every [`WANTED_POLL`] while a fetch runs.

use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use berth_core::oci::Digest;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::blobs::{Source, FOLLOW_POLL_FIRST, FOLLOW_POLL_MAX};
use super::error::failure;
use super::flight::{Answer, Flight, FlightFailure};
use super::route::Target;
use super::state::Proxy;
use crate::meta::cache::FetchSegments;
use crate::meta::now_millis;
use crate::storage::{layout, put_all, ByteStream, StorageError};
use crate::UploadId;

/// How many bytes of a blob each published segment holds.
pub const SEGMENT: u64 = 8 << 20;
/// How often a running fetch looks whether another replica waits for it.
const WANTED_POLL: Duration = Duration::from_millis(500);
/// How long published segments outlive their fetch: followers reading one finish first.
const SEGMENT_GRACE: Duration = Duration::from_secs(60);

impl Proxy {
    /// Publishes what this replica's fetch of `digest` (a blob of `size` bytes) brings, for the
    /// replicas that follow it; runs beside the fetch until it ends, then cleans up.
    pub(super) async fn publish(self: Arc<Self>, digest: Digest, flight: Arc<Flight>, size: u64) {
        let fetch_id = UploadId::random();
        let mut begun = 0u64;
        let publishing = self.publish_segments(&digest, &flight, &fetch_id, size, &mut begun);
        tokio::select! {
            outcome = publishing => {
                if let Err(e) = outcome {
                    warn!(%digest, error = %e, "could not publish a fetch for other replicas");
                }
            }
            _ = flight.ended() => {}
        }
        if begun == 0 {
            return;
        }
        flight.ended().await;
        tokio::time::sleep(SEGMENT_GRACE).await;
        for start in (0..begun).map(|i| i * SEGMENT) {
            match self.registry.storage().delete(&layout::fetch_segment(&fetch_id, start)).await {
                Ok(()) | Err(StorageError::NotFound) => {}
                // The scrub removes it in a day.
                Err(e) => warn!(%digest, start, error = %e, "could not delete a fetch segment"),
            }
        }
    }

    /// Records the fetch's size, waits until another replica follows it, then writes each whole
    /// segment short of the last byte as the spool gets it; `begun` counts the segments written
    /// or being written.
    async fn publish_segments(
        &self,
        digest: &Digest,
        flight: &Arc<Flight>,
        fetch_id: &UploadId,
        size: u64,
        begun: &mut u64,
    ) -> Result<(), String> {
        let mut s = FetchSegments { fetch_id: fetch_id.to_string(), size, segment: SEGMENT, published: 0 };
        if !self.cache.publish_fetch(digest, &self.holder, &s).await.map_err(|e| e.to_string())? {
            return Ok(());
        }
        loop {
            match self.cache.fetch_state(digest).await.map_err(|e| e.to_string())? {
                Some(state) if state.wanted => break,
                Some(_) => tokio::time::sleep(WANTED_POLL).await,
                None => return Ok(()),
            }
        }
        while s.published + SEGMENT < size {
            let (start, end) = (s.published, s.published + SEGMENT);
            let mut bytes = BytesMut::with_capacity(SEGMENT as usize);
            let mut read = flight.read(start, Some(end));
            while let Some(chunk) = read.next().await {
                bytes.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
            }
            *begun += 1;
            let key = layout::fetch_segment(fetch_id, start);
            put_all(self.registry.storage().as_ref(), &key, bytes.freeze())
                .await
                .map_err(|e| e.to_string())?;
            s.published = end;
            if !self.cache.publish_fetch(digest, &self.holder, &s).await.map_err(|e| e.to_string())? {
                return Ok(());
            }
        }
        info!(%digest, segments = *begun, "published a fetch for other replicas");
        Ok(())
    }

    /// Bytes `start..end` of `digest`, which another replica is fetching: from the segments it
    /// publishes, then from the stored blob. Should that replica stop (its claim expires, or ends
    /// without the blob stored), this one takes the fetch over and streams the rest from its own.
    pub(super) fn follow(self: &Arc<Self>, t: &Target, digest: &Digest, start: u64, end: u64) -> ByteStream {
        let (tx, rx) = mpsc::channel(4);
        let (this, t, digest) = (self.clone(), t.clone(), digest.clone());
        tokio::spawn(async move {
            if let Err(e) = this.follow_into(&t, &digest, start, end, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        ))
    }

    async fn follow_into(
        self: &Arc<Self>,
        t: &Target,
        digest: &Digest,
        mut pos: u64,
        end: u64,
        tx: &mpsc::Sender<io::Result<Bytes>>,
    ) -> io::Result<()> {
        let mut wait = FOLLOW_POLL_FIRST;
        while pos < end {
            if self.registry.meta().blob_size(digest).await.map_err(io::Error::other)?.is_some() {
                let key = self.registry.blob_key(digest).await.map_err(io::Error::other)?;
                let stored = self.registry.storage().get(&key, Some(pos..end)).await;
                forward(stored.map_err(io::Error::other)?, tx).await?;
                return Ok(());
            }
            let state = self.cache.fetch_state(digest).await.map_err(io::Error::other)?;
            if let Some(f) = state.as_ref().and_then(|s| s.failure.as_deref()) {
                return Err(FlightFailure::from_stored(f).cut_off());
            }
            // No claim (the blob was stored just now, or the fetch ended without storing it), or
            // one whose holder stopped renewing it: claim it, or follow whoever did.
            if state.as_ref().is_none_or(|s| s.expires_at < now_millis()) {
                match self.join_or_claim(t, digest).await.map_err(|e| io::Error::other(e.to_string()))? {
                    Source::Local(flight) => {
                        if let Answer::Failed(f) = flight.answer().await {
                            return Err(io::Error::other(failure(&f).to_string()));
                        }
                        forward(flight.read(pos, Some(end)), tx).await?;
                        return Ok(());
                    }
                    Source::Stored | Source::Elsewhere { .. } => continue,
                }
            }
            let Some(s) = state.and_then(|s| s.segments).filter(|s| pos < s.published) else {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(FOLLOW_POLL_MAX);
                continue;
            };
            let id = UploadId::from_str(&s.fetch_id)
                .map_err(|_| io::Error::other(format!("a fetch id that is not one: {:?}", s.fetch_id)))?;
            let first = pos / s.segment * s.segment;
            let until = (first + s.segment).min(end);
            let key = layout::fetch_segment(&id, first);
            match self.registry.storage().get(&key, Some(pos - first..until - first)).await {
                Ok(segment) => {
                    pos += forward(segment, tx).await?;
                    wait = FOLLOW_POLL_FIRST;
                }
                // Deleted once the blob was stored, or by a holder before this one: look again.
                Err(StorageError::NotFound) => tokio::time::sleep(wait).await,
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        Ok(())
    }
}

/// Sends `stream` on to a follower's client; the bytes sent.
async fn forward(mut stream: ByteStream, tx: &mpsc::Sender<io::Result<Bytes>>) -> io::Result<u64> {
    let mut sent = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        sent += chunk.len() as u64;
        tx.send(Ok(chunk)).await.map_err(|_| io::Error::other("the client went away"))?;
    }
    Ok(sent)
}
