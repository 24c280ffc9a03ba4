//! Filesystem backend.
//!
//! Objects are files under the root at their key's path. A writer gathers what arrives and writes
//! it into `tmp/<random>` a batch at a time, and `commit` makes it visible with `fsync(file)`,
//! `rename(tmp, final)` and an fsync of every directory the rename needed (the ones it created
//! and the one that now names it): after a crash an object is either whole at its key or absent.
//! Whatever is left in `tmp/` by a crash is removed when the backend is opened.
//!
//! No thread waits on a client. Reads and writes go to the blocking pool one disk operation at a
//! time (a `pread` of the next chunk when the client asks for it, a vectored write of the next
//! batch), so a client that reads or sends slowly costs a socket and one chunk of memory, not a
//! thread. Reads copy from the page cache instead of mapping the file: a mapped file that is
//! truncated or fails to read kills the process with SIGBUS; a read only fails its request.

use std::fs::{self, File};
use std::io::{self, IoSlice, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::{ByteStream, Key, Listed, ObjectWriter, Storage, StorageError};

/// Writes are gathered into batches of about this size, one vectored write each.
const IO_CHUNK: usize = 1 << 20;
/// Reads start with chunks this small (a client that stops reading early holds little)...
const FIRST_READ: u64 = 64 << 10;
/// ...and double up to this size for clients that keep reading.
const MAX_READ: u64 = 1 << 20;

pub struct FsStorage {
    root: PathBuf,
    tmp: PathBuf,
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
        Ok(FsStorage { root, tmp })
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.root.join(key.as_str())
    }
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

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(StorageError::from),
        Err(e) => Err(StorageError::Io(io::Error::other(e))),
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
        let path = self.path(key);
        blocking(move || Ok(not_found_to_none(fs::metadata(&path))?.filter(|m| m.is_file()).map(|m| m.len())))
            .await
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
        let path = self.path(key);
        let (file, size) = blocking(move || {
            let file = not_found_to_none(File::open(&path))?;
            match file {
                Some(f) => {
                    let size = f.metadata()?.len();
                    Ok(Some((f, size)))
                }
                None => Ok(None),
            }
        })
        .await?
        .ok_or(StorageError::NotFound)?;
        let range = range.unwrap_or(0..size);
        Ok(read_chunks(Arc::new(file), range.start, range.end.max(range.start)))
    }

    async fn writer(&self) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let temp = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        Ok(Box::new(FsWriter::new(self.root.clone(), temp)))
    }

    async fn scratch_writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>, StorageError> {
        // Written at its own name: its commit renames nothing, so it takes no part in the
        // filesystem-wide lock every rename between directories holds.
        Ok(Box::new(FsWriter::new(self.root.clone(), self.path(key))))
    }

    async fn rename(&self, from: &Key, to: &Key) -> Result<(), StorageError> {
        let (from, to) = (self.path(from), self.path(to));
        blocking(move || place_synced(&from, &to)).await.map_err(|e| match e {
            StorageError::Io(e) if e.kind() == io::ErrorKind::NotFound => StorageError::NotFound,
            e => e,
        })
    }

    /// Removes the file. Its directory stays: every directory the layout makes is one of a
    /// fixed few (hash prefixes), so keeping them costs nothing, and removing and remaking them
    /// would cost an inode allocation and a free per object.
    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        let path = self.path(key);
        blocking(move || not_found_to_none(fs::remove_file(&path)).map(drop)).await
    }

    async fn list(&self, prefix: &Key) -> Result<Vec<Listed>, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.clone();
        let dir = self.root.join(&prefix.as_str()[..prefix.as_str().rfind('/').map_or(0, |i| i + 1)]);
        blocking(move || {
            let mut out = Vec::new();
            walk(&root, &dir, prefix.as_str(), &mut out)?;
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

    async fn adopt(&self, file: &Path, key: &Key) -> Result<(), StorageError> {
        let (from, to) = (file.to_path_buf(), self.path(key));
        blocking(move || place_synced(&from, &to)).await
    }
}

/// [`place`] for a file written by someone else, or not synced when written: its bytes must be
/// on disk before a name says they are complete.
fn place_synced(from: &Path, to: &Path) -> io::Result<()> {
    File::open(from)?.sync_all()?;
    place(from, to)
}

/// Moves `from` to `to` durably: every directory the move needs is created and made durable,
/// then the rename, then an fsync of the directory that now names the file.
fn place(from: &Path, to: &Path) -> io::Result<()> {
    rename_into(from, to, true)?;
    let dir = to.parent().ok_or_else(|| io::Error::other("key has no parent"))?;
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to`, creating the directories it needs (made durable with `durable`; not for
/// files a crash may lose anyway, such as upload chunks). Directories are never removed, so one
/// made here is still there for the rename.
fn rename_into(from: &Path, to: &Path, durable: bool) -> io::Result<()> {
    let dir = to.parent().ok_or_else(|| io::Error::other("key has no parent"))?;
    if durable {
        create_dirs_durably(dir)?;
    } else if !dir.is_dir() {
        // Looked up first: `mkdir` of a directory that exists still locks its parent.
        fs::create_dir_all(dir)?;
    }
    fs::rename(from, to)
}

/// Creates `dir` and any missing parents, fsyncing each parent that gained an entry, so a file
/// placed in a new directory cannot vanish with the directory after a power loss.
fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    let mut missing = vec![];
    let mut at = dir;
    while !at.is_dir() {
        missing.push(at);
        at = at.parent().ok_or_else(|| io::Error::other("no existing ancestor"))?;
    }
    for d in missing.iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        if let Some(parent) = d.parent() {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
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

/// A new object: received bytes are gathered, and each full batch is written on the blocking pool
/// while the next one gathers (at most one write in flight). Between batches, and while the client
/// is silent, no thread is held. The temp file is made with the first batch, so a writer that
/// receives nothing (the empty closing `PUT` of an upload) costs no file.
struct FsWriter {
    root: PathBuf,
    temp: PathBuf,
    /// Whether the temp file was (or is being) created.
    opened: bool,
    /// The file, unless a write in flight has it (and will hand it back), or it is not made yet.
    file: Option<Appender>,
    in_flight: Option<JoinHandle<io::Result<Appender>>>,
    pending: Vec<Bytes>,
    pending_len: usize,
    written: u64,
    done: bool,
}

impl FsWriter {
    fn new(root: PathBuf, temp: PathBuf) -> FsWriter {
        FsWriter {
            root,
            temp,
            opened: false,
            file: None,
            in_flight: None,
            pending: Vec::with_capacity(64),
            pending_len: 0,
            written: 0,
            done: false,
        }
    }

    /// The file, once the write in flight (if any) has finished; `None` before it is made.
    async fn file(&mut self) -> Result<Option<Appender>, StorageError> {
        if let Some(task) = self.in_flight.take() {
            let file = task.await.map_err(|e| StorageError::Io(io::Error::other(e)))?;
            return file.map(Some).map_err(StorageError::Io);
        }
        match self.file.take() {
            Some(file) => Ok(Some(file)),
            None if !self.opened => {
                self.opened = true;
                Ok(None)
            }
            None => Err(StorageError::Io(io::Error::other("an earlier write failed"))),
        }
    }

    /// Starts writing the gathered batch.
    async fn flush(&mut self) -> Result<(), StorageError> {
        let file = self.file().await?;
        let batch = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let temp = self.temp.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let mut file = open_or_create(file, &temp)?;
            file.append(&batch)?;
            Ok(file)
        }));
        Ok(())
    }

    /// Writes what is left, then runs `finish` (fsyncs, rename) on the blocking pool.
    async fn complete(
        mut self: Box<Self>,
        key: &Key,
        finish: fn(File, &Path, &Path, &Path) -> io::Result<()>,
    ) -> Result<(), StorageError> {
        let file = self.file().await?;
        let batch = std::mem::take(&mut self.pending);
        let (temp, dest, root) = (self.temp.clone(), self.root.join(key.as_str()), self.root.clone());
        let done = blocking(move || {
            let mut file = open_or_create(file, &temp)?;
            file.append(&batch)?;
            finish(file.into_file(), &temp, &dest, &root)
        })
        .await;
        // Committed: the temp name is gone. Failed: Drop removes whatever is left.
        self.done = done.is_ok();
        done
    }
}

/// The writer's file: the one it has, or a new one at `temp`.
fn open_or_create(file: Option<Appender>, temp: &Path) -> io::Result<Appender> {
    match file {
        Some(file) => Ok(file),
        None => match File::create_new(temp) {
            // A scratch object's directory, made on first use; not synced, as the object itself
            // need not be (a synced commit syncs the directories above it).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(temp.parent().ok_or_else(|| io::Error::other("no parent"))?)?;
                File::create_new(temp).map(Appender::new)
            }
            created => created.map(Appender::new),
        },
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        if self.opened && !self.done {
            let temp = std::mem::take(&mut self.temp);
            // A write still in flight finishes on its own; the name goes now, the inode with it.
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || fs::remove_file(temp))),
                Err(_) => drop(fs::remove_file(temp)),
            }
        }
    }
}

/// Start the disk writing the last this-many bytes while more arrive.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Appends to a new file and keeps the disk busy while it grows: every `WRITEBACK_EVERY` bytes
/// it starts writeback of what came before (without waiting for it), so the `fsync` that makes
/// the file durable at the end has only the tail left to write instead of the whole file.
pub(crate) struct Appender {
    file: File,
    written: u64,
    flushed: u64,
}

impl Appender {
    pub(crate) fn new(file: File) -> Appender {
        Appender { file, written: 0, flushed: 0 }
    }

    /// Writes every buffer, in order, with as few vectored writes as the kernel allows.
    pub(crate) fn append(&mut self, bufs: &[Bytes]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = self.file.write_vectored(rest)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "disk accepted no bytes"));
            }
            self.written += n as u64;
            IoSlice::advance_slices(&mut rest, n);
        }
        if self.written - self.flushed >= WRITEBACK_EVERY {
            start_writeback(&self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(())
    }

    pub(crate) fn into_file(self) -> File {
        self.file
    }
}

/// Asks the kernel to start writing `len` bytes from `offset` to disk, and returns at once. Only
/// a head start for a later `fsync`, so a failure is of no consequence and is ignored.
#[allow(unsafe_code)]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else {
        return;
    };
    // SAFETY: plain system call on a descriptor `file` keeps open for the duration; no memory is
    // passed to the kernel.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
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

/// Durable: the file's bytes, then its name. A scratch object already has its name, in
/// directories that may be new and unsynced: each one up to the store's `root` is synced.
fn finish_synced(file: File, temp: &Path, dest: &Path, root: &Path) -> io::Result<()> {
    file.sync_all()?;
    drop(file);
    if temp == dest {
        for dir in dest.ancestors().skip(1).take_while(|d| d.starts_with(root)) {
            File::open(dir)?.sync_all()?;
        }
        return Ok(());
    }
    place(temp, dest)
}

/// Visible at once, but a crash may lose it. Its writeback starts now, so that the `fsync` that
/// later makes it durable (when an upload's chunk becomes its blob) finds little left to do.
fn finish_unsynced(file: File, temp: &Path, dest: &Path, _root: &Path) -> io::Result<()> {
    if let Ok(meta) = file.metadata() {
        start_writeback(&file, 0, meta.len());
    }
    drop(file);
    if temp == dest {
        return Ok(());
    }
    rename_into(temp, dest, false)
}

#[async_trait::async_trait]
impl ObjectWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        if data.is_empty() {
            return Ok(());
        }
        self.written += data.len() as u64;
        self.pending_len += data.len();
        self.pending.push(data);
        if self.pending_len >= IO_CHUNK || self.pending.len() >= 64 {
            self.flush().await?;
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    async fn commit(self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        self.complete(key, finish_synced).await
    }

    async fn commit_unsynced(self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        self.complete(key, finish_unsynced).await
    }
}

#[cfg(test)]
mod tests {
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
