//! The scrub a collection may end with (`scrub`, `verify`): stored objects the metadata does
//! not know, and (verifying) stored bytes that do not match their digest.
//!
//! ```text
//! blobs/<alg>/<hh>/ (each of 256 shards) ─► objects listed, merged with the digests recorded
//!     an object no row knows, older than a day ─► adopted as a released blob: the purge deletes
//!     it on the one safe path, and a push of its digest meanwhile keeps it
//! uploads/ ─► objects of sessions that no longer exist, older than a day ─► deleted, unless a
//!     blob's row names the object its location (the session's bytes stayed as the blob)
//! live blobs (verify) ─► read whole and hashed ─► missing, short or wrong: reported; content
//!     the pull-through cache holds is evicted, so the next pull fetches it again
//! ```
//! The age keeps a scrub clear of writes in flight: an upload writes its object before the row
//! that records it, and a session writes its chunks after its row, both within far less than a
//! day.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use berth_core::oci::{Algorithm, Digest};
use futures_util::StreamExt;
use tracing::{info, warn};

use super::progress::Control;
use super::report::{Corrupt, Removed, ScrubReport};
use super::{Collector, Options, BATCH};
use crate::meta;
use crate::service::Result;
use crate::storage::{layout, Key, Listed, StorageError};
use crate::UploadId;

/// An object no metadata knows is removed only once it is this old (seconds).
pub const ORPHAN_AGE: i64 = 24 * 3600;

const ORPHAN: &str = "stored, but no metadata knows it";

/// The digest a blob key names (`blobs/<alg>/<hh>/<hex>`).
fn digest_of(key: &Key) -> Option<Digest> {
    let mut parts = key.as_str().split('/');
    let (_, alg, _, hex) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Digest::from_str(&format!("{alg}:{hex}")).ok()
}

/// The digests of a shard: from its first two hex digits up to the next shard's. Letters and
/// digits only, so a database comparing text by a language's rules (which skip punctuation)
/// orders them as bytes do.
fn shard_bounds(alg: Algorithm, shard: u8) -> (String, String) {
    let next = match shard.checked_add(1) {
        Some(n) => format!("{n:02x}"),
        None => "g".into(),
    };
    (format!("{}:{shard:02x}", alg.name()), format!("{}:{next}", alg.name()))
}

/// The session an upload object belongs to (`uploads/<hh>/<id>.<rest>`).
fn upload_of(key: &Key) -> Option<UploadId> {
    let name = key.as_str().rsplit('/').next()?;
    UploadId::from_str(name.split('.').next()?).ok()
}

impl Collector {
    /// Scrubs storage; `None` when cancelled meanwhile.
    pub(super) async fn scrub(&self, o: &Options, control: &Control) -> Result<Option<ScrubReport>> {
        let now = meta::now();
        let mut s = ScrubReport::default();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for shard in 0..=255u8 {
                if control.cancelled() {
                    return Ok(None);
                }
                self.orphans_in(alg, shard, now, o, &mut s).await?;
                control.update(|p| p.objects_scrubbed = s.objects);
            }
        }
        self.stale_uploads(now, o, &mut s).await?;
        if o.verify && !self.verify(o, control, &mut s).await? {
            return Ok(None);
        }
        Ok(Some(s))
    }

    async fn orphans_in(
        &self,
        alg: Algorithm,
        shard: u8,
        now: i64,
        o: &Options,
        s: &mut ScrubReport,
    ) -> Result<()> {
        let objects = self.registry.storage().list(&layout::blob_shard(alg, shard)).await?;
        if objects.is_empty() {
            return Ok(());
        }
        s.objects += objects.len() as u64;
        let (from, to) = shard_bounds(alg, shard);
        let recorded: HashSet<String> = self.store.recorded_blobs(&from, &to).await?.into_iter().collect();
        for Listed { key, size, modified } in objects {
            let Some(digest) = digest_of(&key) else {
                warn!(key = %key.as_str(), "a stored object under blobs/ is not named by a digest; left alone");
                continue;
            };
            if recorded.contains(digest.as_str()) || modified > now - ORPHAN_AGE {
                continue;
            }
            let adopted = o.dry_run || self.store.adopt_orphan(&digest, size, meta::now_millis()).await?;
            if adopted {
                info!(digest = %digest, size, reason = ORPHAN, dry_run = o.dry_run, "orphan released");
                s.orphans.push(Removed { digest, size, reason: ORPHAN });
            }
        }
        Ok(())
    }

    /// Deletes the objects of upload sessions that no longer exist, once all of a session's
    /// objects are a day old.
    async fn stale_uploads(&self, now: i64, o: &Options, s: &mut ScrubReport) -> Result<()> {
        let objects = self.registry.storage().list(&layout::uploads_root()).await?;
        let mut sessions: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
        for l in objects {
            if let Some(id) = upload_of(&l.key) {
                sessions.entry(id.to_string()).or_default().push(l);
            }
        }
        for (id, objects) in sessions {
            if objects.iter().any(|l| l.modified > now - ORPHAN_AGE) {
                continue;
            }
            let Ok(upload) = UploadId::from_str(&id) else { continue };
            if self.registry.meta().upload(upload).await?.is_some() {
                continue;
            }
            for l in objects {
                if self.store.is_location(l.key.as_str()).await? {
                    // What the session wrote stayed as a blob (its object on an object store).
                    continue;
                }
                if !o.dry_run {
                    self.registry.storage().delete(&l.key).await?;
                }
                info!(key = %l.key.as_str(), upload = %id, dry_run = o.dry_run, "stale upload object removed");
                s.upload_objects += 1;
                s.upload_bytes += l.size;
            }
        }
        Ok(())
    }

    /// Reads every live blob whole and checks it against its digest; false when cancelled.
    async fn verify(&self, o: &Options, control: &Control, s: &mut ScrubReport) -> Result<bool> {
        let mut after: Option<Digest> = None;
        loop {
            let batch = self.store.live_blobs(after.as_ref(), BATCH).await?;
            for (digest, size) in &batch {
                if control.cancelled() {
                    return Ok(false);
                }
                if let Some(problem) = self.check(digest, *size).await? {
                    s.corrupt.push(self.corrupt(digest, *size, problem, o).await?);
                }
                s.verified += 1;
                s.verified_bytes += size;
                control.update(|p| p.blobs_verified = s.verified);
            }
            match batch.last() {
                Some((d, _)) if batch.len() == BATCH => after = Some(d.clone()),
                _ => return Ok(true),
            }
        }
    }

    /// What is wrong with the stored bytes of `digest`, if anything.
    async fn check(&self, digest: &Digest, size: u64) -> Result<Option<String>> {
        let mut stream = match self.registry.storage().get(&self.registry.blob_key(digest).await?, None).await
        {
            Ok(s) => s,
            Err(StorageError::NotFound) => return Ok(Some("missing".into())),
            Err(e) => return Err(e.into()),
        };
        let mut hasher = digest.algorithm().hasher();
        let mut read = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(StorageError::Io)?;
            read += chunk.len() as u64;
            hasher.update(&chunk);
        }
        if read != size {
            return Ok(Some(format!("{read} bytes stored, {size} recorded")));
        }
        let got = hasher.finish();
        Ok((got != *digest).then(|| format!("the bytes hash to {got}")))
    }

    /// Reports corrupt bytes; a real run evicts what the pull-through cache holds of them.
    async fn corrupt(&self, digest: &Digest, size: u64, problem: String, o: &Options) -> Result<Corrupt> {
        let items = self.store.cached_items(digest).await?;
        warn!(digest = %digest, %problem, cached = !items.is_empty(), dry_run = o.dry_run, "stored bytes are corrupt");
        if !o.dry_run {
            for item in &items {
                self.store.evict(item).await?;
            }
        }
        Ok(Corrupt { digest: digest.clone(), size, problem, cached: !items.is_empty() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_digest_once() {
        assert_eq!(shard_bounds(Algorithm::Sha256, 0), ("sha256:00".into(), "sha256:01".into()));
        assert_eq!(shard_bounds(Algorithm::Sha256, 9), ("sha256:09".into(), "sha256:0a".into()));
        assert_eq!(shard_bounds(Algorithm::Sha512, 255), ("sha512:ff".into(), "sha512:g".into()));
        let d = Digest::of(Algorithm::Sha256, b"x");
        let shard = u8::from_str_radix(&d.hex()[..2], 16).unwrap();
        let (from, to) = shard_bounds(Algorithm::Sha256, shard);
        assert!(from.as_str() <= d.as_str() && d.as_str() < to.as_str());
    }

    #[test]
    fn keys_name_digests_and_sessions() {
        let d = Digest::of(Algorithm::Sha256, b"x");
        assert_eq!(digest_of(&layout::blob(&d)), Some(d));
        assert_eq!(digest_of(&layout::recorded("blobs/sha256/ab/not-hex").unwrap()), None);
        let id = UploadId::random();
        assert_eq!(upload_of(&layout::upload_part(&id, 5, "ab")), Some(id));
        assert_eq!(upload_of(&layout::upload_assembly(&id)), Some(id));
        assert_eq!(upload_of(&layout::recorded("uploads/zz/junk").unwrap()), None);
    }
}
