//! Reading, deleting and mounting blobs.

use tracing::{error, warn};

use super::error::{Result, ServiceError};
use super::registry::Registry;
use crate::meta::Stored;
use crate::storage::{layout, ByteStream, Key, ObjectWriter, StorageError};
use berth_core::oci::range::{span, ByteRange};
use berth_core::oci::{Digest, RepoName};

/// A blob read: its full size, the part being served, and the bytes (none for HEAD).
pub struct BlobRead {
    pub size: u64,
    /// `Some((start, end))` (inclusive) when serving a range.
    pub range: Option<(u64, u64)>,
    pub body: Option<ByteStream>,
    /// False only for a proxied blob whose upstream sent no length; it is then streamed without
    /// a `Content-Length`.
    pub size_known: bool,
}

/// How many other repositories to look through for a mount without `from`.
const MOUNT_CANDIDATES: usize = 16;

impl Registry {
    /// Whether blobs may be stored away from their digest's key: on a store that assembles
    /// uploads from parts (S3), where the object an upload session wrote stays the blob instead
    /// of being copied (`finish_upload`), and only on a database no older Berth uses.
    pub(super) fn locates(&self) -> bool {
        self.meta.records_locations() && self.storage.assembly_part_size(0).is_some()
    }

    /// Where the blob `digest`'s object is: its recorded location, or its digest's key.
    pub(crate) async fn blob_key(&self, digest: &Digest) -> Result<Key> {
        if !self.locates() {
            return Ok(layout::blob(digest));
        }
        key_at(digest, self.meta.blob_location(digest).await?.as_deref())
    }

    /// A blob the repository may read: its size and where its object is.
    async fn find_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(u64, Key)> {
        let found = self.meta.find_blob(repo, digest).await?.ok_or(ServiceError::BlobUnknown)?;
        Ok((found.size, key_at(digest, found.location.as_deref())?))
    }

    /// The size of a blob the repository may read (`BLOB_UNKNOWN` when it holds none such).
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        Ok(self.find_blob(repo, digest).await?.0)
    }

    /// Opens a blob, or the satisfiable part of `range`. `Ok(Err(size))` means the range cannot be
    /// satisfied (416).
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
        with_body: bool,
    ) -> Result<std::result::Result<BlobRead, u64>> {
        let (size, key) = self.find_blob(repo, digest).await?;
        let span = match span(range, size) {
            Ok(span) => span,
            Err(size) => return Ok(Err(size)),
        };
        if !with_body {
            // A HEAD comes before a manifest that needs the blob: keep the link out of a
            // collection's reach meanwhile.
            self.meta.touch_link(repo, digest).await?;
            return Ok(Ok(BlobRead { size, range: span, body: None, size_known: true }));
        }
        match self.storage.get(&key, span.map(|(s, e)| s..e + 1)).await {
            Ok(body) => Ok(Ok(BlobRead { size, range: span, body: Some(body), size_known: true })),
            Err(StorageError::NotFound) => {
                error!(digest = %digest, "blob is recorded in metadata but missing from storage");
                Err(ServiceError::BlobUnknown)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A blob the repository may read, whole, when it has at most `max` bytes (an image's
    /// config, for the UI); `None` when it has more.
    pub async fn small_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        max: u64,
    ) -> Result<Option<bytes::Bytes>> {
        let (size, key) = self.find_blob(repo, digest).await?;
        if size > max {
            return Ok(None);
        }
        match crate::storage::read_all(self.storage.as_ref(), &key).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StorageError::NotFound) => Err(ServiceError::BlobUnknown),
            Err(e) => Err(e.into()),
        }
    }

    /// Where the client may read the blob directly, when storage hands reads out (S3 with
    /// `redirect: true`): checked against the repository first, like any read.
    pub async fn blob_redirect(&self, repo: &RepoName, digest: &Digest) -> Result<Option<String>> {
        let (_, key) = self.find_blob(repo, digest).await?;
        Ok(self.storage.presigned_get(&key).await?)
    }

    /// Starts writing a blob fetched from an upstream; [`Registry::commit_cached_blob`] publishes it.
    pub async fn blob_writer(&self, digest: &Digest) -> Result<Box<dyn ObjectWriter>> {
        Ok(self.storage.writer_at(&layout::blob(digest)).await?)
    }

    /// Publishes a blob whose digest the caller verified while writing it, and links it to `repo`.
    pub async fn commit_cached_blob(
        &self,
        writer: Box<dyn ObjectWriter>,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        writer.commit_then_record(&layout::blob(digest)).await?;
        self.record_written(repo, digest, size).await
    }

    /// Whether fetched blobs spooled in `dir` can become stored blobs by being moved, not copied.
    pub fn adopts_from(&self, dir: &std::path::Path) -> bool {
        self.storage.adopts_from(dir)
    }

    /// Publishes a complete local file whose digest the caller verified by moving it into storage
    /// (see [`Registry::adopts_from`]), and links it to `repo`.
    pub async fn adopt_cached_blob(
        &self,
        file: &std::path::Path,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        self.storage.adopt(file, &layout::blob(digest)).await?;
        self.record_written(repo, digest, size).await
    }

    /// Links a blob whose object the caller just wrote; an error if a purge took it meanwhile.
    pub(super) async fn record_written(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let linked = self
            .record_past_purge(digest, size, Stored::Written, |s| self.meta.link_blob(repo, digest, size, s))
            .await;
        // A link no manifest uses yet: the review queue looks at it once the grace is over.
        // Noted after the write, so the note is never older than what it notes.
        self.changed(repo);
        match linked {
            Ok(true) => {
                self.drop_needless_copy(digest).await;
                Ok(())
            }
            Ok(false) => Err(ServiceError::gone(digest)),
            Err(e) => Err(self.orphaned(digest, size, e).await),
        }
    }

    /// After a blob written at its digest's key was recorded: when the blob was stored already
    /// where an upload wrote it (`super::in_place`), which its row keeps naming, the object just
    /// written is not needed (and no reader is handed it: readers go where the row says).
    pub(super) async fn drop_needless_copy(&self, digest: &Digest) {
        if !self.locates() {
            return;
        }
        match self.meta.blob_location(digest).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                if let Err(e) = self.storage.delete(&layout::blob(digest)).await {
                    warn!(digest = %digest, error = %e, "could not remove a needless copy of a blob");
                }
            }
            Err(e) => warn!(digest = %digest, error = %e, "a copy of a blob may be left needless"),
        }
    }

    /// Links a blob found stored to `repo`; false when it turns out to be gone.
    async fn record_assumed(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<bool> {
        let linked = self
            .record_past_purge(digest, size, Stored::Assumed, |s| self.meta.link_blob(repo, digest, size, s))
            .await;
        self.changed(repo);
        linked
    }

    /// Links bytes already in storage to another repository (the caller knows the repository may
    /// hold them). False when the bytes are not there after all.
    pub async fn link_existing_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let Some(size) = self.meta.blob_size(digest).await? else { return Ok(None) };
        if self.storage.stat(&self.blob_key(digest).await?).await? != Some(size) {
            return Ok(None);
        }
        Ok(self.record_assumed(repo, digest, size).await?.then_some(size))
    }

    /// Removes the blob from the repository. Its bytes stay until garbage collection finds no
    /// repository and no manifest that still needs them.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let unlinked = self.meta.unlink_blob(repo, digest).await;
        self.changed(repo);
        if unlinked? {
            Ok(())
        } else {
            Err(ServiceError::BlobUnknown)
        }
    }

    /// Cross-repository mount. With `from`, mounts if that repository has the blob; without, if
    /// any repository has it. Returns the size when mounted, `None` when an upload is needed.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
        readable: impl Fn(&RepoName) -> bool,
    ) -> Result<Option<u64>> {
        if let Some(size) = self.meta.blob_in_repo(repo, digest).await? {
            return Ok(Some(size));
        }
        let sources = match from {
            Some(from) => vec![from.clone()],
            None => self.meta.repos_with_blob(digest, MOUNT_CANDIDATES).await?,
        };
        for source in sources.into_iter().filter(|s| readable(s)) {
            let Some(size) = self.meta.blob_in_repo(&source, digest).await? else { continue };
            if self.storage.stat(&self.blob_key(digest).await?).await?.is_none() {
                warn!(digest = %digest, "mount source is recorded but its bytes are missing");
                return Ok(None);
            }
            return Ok(self.record_assumed(repo, digest, size).await?.then_some(size));
        }
        Ok(None)
    }
}

/// The key of the object a blob's row places at `location` (none: its digest's key).
fn key_at(digest: &Digest, location: Option<&str>) -> Result<Key> {
    match location {
        None => Ok(layout::blob(digest)),
        Some(at) => layout::recorded(at).ok_or_else(|| {
            ServiceError::Meta(crate::meta::MetaError::Db(format!(
                "blob {digest} is recorded at {at:?}, which is not a storage key"
            )))
        }),
    }
}
