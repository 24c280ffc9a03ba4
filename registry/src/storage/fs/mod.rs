//! Filesystem backend.
//!
//! Objects are files under the root at their key's path. A writer gathers what arrives and writes
//! it into `tmp/<random>` a batch at a time, and `commit` makes it visible with `fsync(file)`,
//! `rename(tmp, final)` and an fsync of every directory the rename needed (the ones it created
//! and the one that now names it): after a crash an object is either whole at its key or absent.
//! Whatever is left in `tmp/` by a crash is removed when the backend is opened. Objects of a few
//! KiB may instead be rows of the SQLite metadata database ([`small`]), which every call here looks
//! at first, in the same trip to the blocking pool.
//!
//! No thread waits on a client. Reads and writes go to the blocking pool one disk operation at a
//! time (a `pread` of the next chunk when the client asks for it, a vectored write of the next
//! batch), so a client that reads or sends slowly costs a socket and one chunk of memory, not a
//! thread. Reads copy from the page cache instead of mapping the file: a mapped file that is
//! truncated or fails to read kills the process with SIGBUS; a read only fails its request.

use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::{ByteStream, Key, Listed, ObjectWriter, Storage, StorageError};
use crate::meta::sqlite::SqliteMeta;

mod place;
mod small;
mod writer;

use place::{blocking, place_synced};
pub use small::DEFAULT_MAX as SMALL_OBJECTS_DEFAULT;
use small::{Commit, Durability, Small, SmallFirst};
pub(crate) use writer::Appender;
use writer::FsWriter;

/// Reads start with chunks this small (a client that stops reading early holds little)...
const FIRST_READ: u64 = 64 << 10;
/// ...and double up to this size for clients that keep reading.
const MAX_READ: u64 = 1 << 20;

pub struct FsStorage {
    root: PathBuf,
    tmp: PathBuf,
    /// Where objects small enough are kept as rows ([`small`]), if anywhere.
    small: Option<Arc<Small>>,
}

impl FsStorage {
    /// Opens (creating if needed) a store rooted at `root` and clears leftovers of crashed writes.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<FsStorage> {
        let root = root.into();
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        remove_upload_dirs_of_old_layout(&root.join("uploads"))?;
        Ok(FsStorage { root, tmp, small: None })
    }

    /// Keeps objects of at most `max` bytes as rows of `meta`'s database instead of files
    /// ([`small`]), moving in the rows of an older Berth's `small-objects.db` in the root. With 0
    /// every new object is a file, but the rows kept before are still read (and removed when
    /// deleted). Only one process may use a store that keeps rows.
    pub async fn with_small_objects(mut self, max: u64, meta: &SqliteMeta) -> io::Result<FsStorage> {
        let max = usize::try_from(max).map_err(io::Error::other)?;
        let io = |e: StorageError| match e {
            StorageError::Io(e) => e,
            e => io::Error::other(e),
        };
        let small = Arc::new(Small::open(&self.root, meta, max).await.map_err(io)?);
        // Rows off and none kept: no call looks for one.
        let s = small.clone();
        if max > 0 || blocking(move || s.holds_any()).await.map_err(io)? {
            self.small = Some(small);
        }
        Ok(self)
    }

    /// Keeps no object as a row (metadata other than SQLite's): refuses a store in which an older
    /// Berth kept some in `small-objects.db`, which only a Berth with SQLite metadata reads.
    pub fn without_small_objects(self) -> io::Result<FsStorage> {
        if self.root.join(small::OLD_FILE).exists() {
            return Err(io::Error::other(format!(
                "{} holds small objects only a Berth with SQLite metadata reads: run `berth \
                 unpack-small-objects` with that configuration first",
                self.root.join(small::OLD_FILE).display()
            )));
        }
        Ok(self)
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// A writer for `file`'s object that keeps it a row if it turns out small enough.
    fn small_first(&self, file: FsWriter) -> Box<dyn ObjectWriter> {
        match &self.small {
            Some(small) if small.max() > 0 => Box::new(SmallFirst::new(small.clone(), Box::new(file))),
            _ => Box::new(file),
        }
    }

    /// Moves an object: a row within the database (committed as `how` says), a file durably.
    async fn rename_with(&self, from: &Key, to: &Key, how: Commit) -> Result<(), StorageError> {
        let (from_path, to_path, small) = (self.path(from), self.path(to), self.small.clone());
        let (from_key, to_key) = (from.clone(), to.clone());
        // `Some(row at to)` once a file moved; `None` when `from` is a row.
        let moved = blocking(move || {
            if row_size(small.as_ref(), &from_key)?.is_some() {
                return Ok(None);
            }
            place_synced(&from_path, &to_path)?;
            Ok(Some(row_size(small.as_ref(), &to_key)?.is_some()))
        })
        .await
        .map_err(|e| match e {
            StorageError::Io(e) if e.kind() == io::ErrorKind::NotFound => StorageError::NotFound,
            e => e,
        })?;
        match (moved, &self.small) {
            (None, Some(small)) => small.rename(from, to, how.row()).await,
            // The file is there now: the row it replaces goes, not to shadow it.
            (Some(true), Some(small)) => small.delete(to, how.row()).await,
            _ => Ok(()),
        }
    }

    /// Writes every row out as a file at its key, durably, then removes the row: what an older
    /// Berth, which reads only files, needs to find on a store this one kept rows in. Run it on a
    /// store no server is adding rows to. Returns how many objects became files.
    pub async fn unpack_small_objects(&self) -> Result<u64, StorageError> {
        let Some(small) = &self.small else { return Ok(0) };
        let mut unpacked = 0;
        loop {
            let s = small.clone();
            let keys = blocking(move || s.keys(UNPACK_BATCH)).await?;
            if keys.is_empty() {
                return Ok(unpacked);
            }
            for key in keys {
                let (s, at) = (small.clone(), key.clone());
                if let Some(bytes) = blocking(move || s.bytes(&at)).await? {
                    let temp = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
                    let mut file = FsWriter::new(self.root.clone(), temp);
                    file.write(bytes).await?;
                    Box::new(file).commit(&key).await?;
                    unpacked += 1;
                }
                small.delete(&key, Durability::Synced).await?;
            }
        }
    }
}

/// The size of the row at `key`, if rows are kept and there is one. Blocking.
fn row_size(small: Option<&Arc<Small>>, key: &Key) -> io::Result<Option<u64>> {
    small.map(|s| s.size(key)).transpose().map(Option::flatten)
}

/// The keys of every object under `prefix` (`blobs/`, `uploads/`) in the store at `root` whose
/// small objects are rows of the metadata database `meta`, files and rows both, sorted: what
/// tests count, reading a store a server may be using (nothing is opened for writing).
#[cfg(any(test, feature = "testing"))]
pub fn stored_keys(root: &Path, meta: &Path, prefix: &str) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    walk(root, &root.join(prefix), prefix, &mut out)?;
    let mut keys: Vec<String> = out.into_iter().map(|l| l.key.0).collect();
    if meta.exists() {
        keys.extend(small::keys_read_only(meta, prefix)?.into_iter().map(|k| k.0));
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Rows written out as files per round of [`FsStorage::unpack_small_objects`].
const UNPACK_BATCH: usize = 256;

/// What a read found at a key.
enum Found {
    Row(Bytes),
    File(File, u64),
}

/// Before uploads were kept flat in `uploads/<hh>/`, each had a directory `uploads/<upload-id>/`.
/// Sessions do not survive the change of layout (their clients start over), so such directories
/// only hold bytes nothing refers to any more.
fn remove_upload_dirs_of_old_layout(uploads: &Path) -> io::Result<()> {
    let Some(entries) = not_found_to_none(fs::read_dir(uploads))? else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() && entry.file_name().len() > 2 {
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

fn not_found_to_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait::async_trait]
impl Storage for FsStorage {
    async fn check(&self) -> Result<(), StorageError> {
        // The root is there and a directory (an unmounted or removed volume is not).
        let meta = tokio::fs::metadata(&self.root).await?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(StorageError::Io(io::Error::other(format!("{} is not a directory", self.root.display()))))
        }
    }

    async fn stat(&self, key: &Key) -> Result<Option<u64>, StorageError> {
        let (path, small, key) = (self.path(key), self.small.clone(), key.clone());
        blocking(move || {
            if let Some(size) = row_size(small.as_ref(), &key)? {
                return Ok(Some(size));
            }
            Ok(not_found_to_none(fs::metadata(&path))?.filter(|m| m.is_file()).map(|m| m.len()))
        })
        .await
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
        let (path, small, key) = (self.path(key), self.small.clone(), key.clone());
        let found = blocking(move || {
            if let Some(bytes) = small.map(|s| s.bytes(&key)).transpose()?.flatten() {
                return Ok(Some(Found::Row(bytes)));
            }
            let file = not_found_to_none(File::open(&path))?;
            match file {
                Some(f) => {
                    let size = f.metadata()?.len();
                    Ok(Some(Found::File(f, size)))
                }
                None => Ok(None),
            }
        })
        .await?
        .ok_or(StorageError::NotFound)?;
        match found {
            Found::Row(bytes) => {
                let len = bytes.len() as u64;
                let range = range.unwrap_or(0..len);
                let (start, end) = (range.start.min(len), range.end.min(len));
                let part = bytes.slice(start as usize..end.max(start) as usize);
                Ok(Box::pin(futures_util::stream::iter((!part.is_empty()).then_some(Ok(part)))))
            }
            Found::File(file, size) => {
                let range = range.unwrap_or(0..size);
                Ok(read_chunks(Arc::new(file), range.start, range.end.max(range.start)))
            }
        }
    }

    async fn writer(&self) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let temp = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        Ok(self.small_first(FsWriter::new(self.root.clone(), temp)))
    }

    async fn scratch_writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>, StorageError> {
        // Written at its own name: its commit renames nothing, so it takes no part in the
        // filesystem-wide lock every rename between directories holds.
        Ok(self.small_first(FsWriter::new(self.root.clone(), self.path(key))))
    }

    async fn rename(&self, from: &Key, to: &Key) -> Result<(), StorageError> {
        self.rename_with(from, to, Commit::Durable).await
    }

    async fn rename_then_record(&self, from: &Key, to: &Key) -> Result<(), StorageError> {
        self.rename_with(from, to, Commit::ThenRecord).await
    }

    /// Removes the object. A file's directory stays: every directory the layout makes is one of
    /// a fixed few (hash prefixes), so keeping them costs nothing, and removing and remaking them
    /// would cost an inode allocation and a free per object.
    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        let (path, small, at) = (self.path(key), self.small.clone(), key.clone());
        let row = blocking(move || {
            not_found_to_none(fs::remove_file(&path))?;
            row_size(small.as_ref(), &at)
        })
        .await?;
        match (row, &self.small) {
            (Some(_), Some(small)) => small.delete(key, Durability::Unsynced).await,
            _ => Ok(()),
        }
    }

    async fn list(&self, prefix: &Key) -> Result<Vec<Listed>, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.clone();
        let dir = self.root.join(&prefix.as_str()[..prefix.as_str().rfind('/').map_or(0, |i| i + 1)]);
        let small = self.small.clone();
        blocking(move || {
            let mut out = Vec::new();
            walk(&root, &dir, prefix.as_str(), &mut out)?;
            if let Some(small) = small {
                let rows = small.list(prefix.as_str())?;
                // A row shadows a file at its key.
                out.retain(|f| rows.binary_search_by(|r| r.key.cmp(&f.key)).is_err());
                out.extend(rows);
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    fn adopts_from(&self, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(dir), fs::metadata(&self.root)) {
            (Ok(d), Ok(r)) => d.is_dir() && d.dev() == r.dev(),
            _ => false,
        }
    }

    /// A file small enough to be a row becomes one (its few KiB copied), and is then removed.
    async fn adopt(&self, file: &Path, key: &Key) -> Result<(), StorageError> {
        let max = self.small.as_ref().map(|s| s.max()).filter(|max| *max > 0);
        let (from, to) = (file.to_path_buf(), self.path(key));
        let read = blocking(move || {
            if max.is_some_and(|max| fs::metadata(&from).is_ok_and(|m| m.len() <= max as u64)) {
                return fs::read(&from).map(Some);
            }
            place_synced(&from, &to).map(|()| None)
        })
        .await?;
        let Some(small) = &self.small else { return Ok(()) };
        match read {
            Some(bytes) => {
                small.put(key, Bytes::from(bytes), Durability::Synced).await?;
                let file = file.to_path_buf();
                blocking(move || not_found_to_none(fs::remove_file(&file)).map(drop)).await
            }
            None => small.forget(key, Durability::Synced).await,
        }
    }
}

/// The files under `dir` whose keys start with `prefix`. A file removed while the walk runs is
/// not listed.
fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<Listed>) -> io::Result<()> {
    let Some(entries) = not_found_to_none(fs::read_dir(dir))? else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, prefix, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let key = rel.iter().map(|c| c.to_string_lossy()).collect::<Vec<_>>().join("/");
            if !key.starts_with(prefix) {
                continue;
            }
            let Some(meta) = not_found_to_none(entry.metadata())? else { continue };
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            out.push(Listed { key: Key::new(key), size: meta.len(), modified });
        }
    }
    Ok(())
}

/// Streams bytes `start..end`, one `pread` on the blocking pool per chunk, each made only when the
/// consumer asks for the next one: nothing waits on a slow client but the chunk it has not taken.
/// A file found shorter than `end` (truncated underneath) ends the stream with an error.
fn read_chunks(file: Arc<File>, start: u64, end: u64) -> ByteStream {
    Box::pin(futures_util::stream::unfold((start, FIRST_READ), move |(pos, chunk)| {
        let file = file.clone();
        async move {
            if pos >= end {
                return None;
            }
            let want = (end - pos).min(chunk);
            let read = tokio::task::spawn_blocking(move || read_exact_at(&file, pos, want))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
            match read {
                Ok(bytes) => Some((Ok(bytes), (pos + want, (chunk * 2).min(MAX_READ)))),
                Err(e) => Some((Err(e), (end, chunk))),
            }
        }
    }))
}

fn read_exact_at(file: &File, pos: u64, len: u64) -> io::Result<Bytes> {
    let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
    file.read_exact_at(&mut buf, pos).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => io::Error::new(e.kind(), "object shorter than expected"),
        _ => e,
    })?;
    Ok(Bytes::from(buf))
}

/// The size of the filesystem holding `path`, and what is left of it for unprivileged writers
/// (`statvfs`), in bytes. Blocking.
#[allow(unsafe_code)]
pub fn volume(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `stats` is a plain struct
    // the kernel fills in; nothing is kept after the call returns.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut stats) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let unit = stats.f_frsize as u64;
    Ok((stats.f_blocks as u64 * unit, stats.f_bavail as u64 * unit))
}

#[cfg(test)]
mod tests {
    use super::writer::IO_CHUNK;
    use super::*;
    use std::io::Read;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStorage::open(dir.path()).unwrap();
        super::super::testsuite::run(&store).await;
        // Nothing may be left half-written.
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn adopts_local_files_without_copying() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStorage::open(dir.path().join("store")).unwrap();
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        assert!(store.adopts_from(&spool), "same filesystem");
        assert!(!store.adopts_from(&dir.path().join("missing")));
        let file = spool.join("fetched");
        fs::write(&file, b"adopted bytes").unwrap();
        let open = File::open(&file).unwrap();
        let key = Key::new("blobs/sha256/ab/abcdef".into());
        store.adopt(&file, &key).await.unwrap();
        assert!(!file.exists(), "moved, not copied");
        assert_eq!(super::super::read_all(&store, &key).await.unwrap(), Bytes::from_static(b"adopted bytes"));
        let mut again = String::new();
        (&open).read_to_string(&mut again).unwrap();
        assert_eq!(again, "adopted bytes", "open handles read on");
        assert!(store.adopt(&file, &key).await.is_err(), "a missing file is an error");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_clears_leftover_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("tmp/crashed-write"), b"partial").unwrap();
        FsStorage::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_removes_upload_directories_of_the_old_layout() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("uploads/0f3c9a5e-6a1b-4c1e-9a55-5d2f0e7c1b2a");
        let new = dir.path().join("uploads/0f");
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("00000000000000000000-ab"), b"orphaned chunk").unwrap();
        fs::create_dir_all(&new).unwrap();
        fs::write(new.join("0f3c.00000000000000000000-ab"), b"live chunk").unwrap();
        FsStorage::open(dir.path()).unwrap();
        assert!(!old.exists());
        assert_eq!(fs::read(new.join("0f3c.00000000000000000000-ab")).unwrap(), b"live chunk");
    }

    /// The closing `PUT` of most uploads carries no bytes; it must not cost a file made and
    /// removed (an inode allocated and freed per push).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_receives_nothing_makes_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStorage::open(dir.path()).unwrap();
        let tmp = dir.path().join("tmp");
        let before = fs::metadata(&tmp).unwrap().modified().unwrap();
        // Past the filesystem's timestamp granularity, so a file made and removed would show.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut w = store.writer().await.unwrap();
        w.write(Bytes::new()).await.unwrap();
        drop(w);
        assert_eq!(fs::metadata(&tmp).unwrap().modified().unwrap(), before, "tmp/ was changed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scratch_object_is_written_at_its_key_and_never_in_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStorage::open(dir.path()).unwrap();
        let tmp = dir.path().join("tmp");
        let before = fs::metadata(&tmp).unwrap().modified().unwrap();
        // Past the filesystem's timestamp granularity, so a file made and renamed would show.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let key = crate::storage::layout::upload_part(&crate::UploadId::random(), 0, "ab");
        let mut w = store.scratch_writer(&key).await.unwrap();
        let data = Bytes::from(vec![5u8; IO_CHUNK + 4096]);
        w.write(data.clone()).await.unwrap();
        w.commit_unsynced(&key).await.unwrap();
        assert_eq!(fs::metadata(&tmp).unwrap().modified().unwrap(), before, "tmp/ was used");
        assert_eq!(super::super::read_all(&store, &key).await.unwrap(), data);
    }
}
