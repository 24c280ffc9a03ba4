//! Filesystem backend.
//!
//! Objects are files under the root at their key's path. A writer streams into `tmp/<random>` on a
//! blocking thread (so socket reads and disk writes overlap), and `commit` makes it visible with
//! `fsync(file)`, `rename(tmp, final)`, `fsync(dir)`: after a crash an object is either whole at its
//! key or absent. Whatever is left in `tmp/` by a crash is removed when the backend is opened.

use std::fs::{self, File};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{ByteStream, Key, ObjectWriter, Storage, StorageError};

/// Writes are gathered into pieces of this size.
const IO_CHUNK: usize = 1 << 20;
/// Large reads are mapped this much at a time, at most `MAPPED_AHEAD` chunks ahead of the socket.
const MAP_CHUNK: u64 = 2 << 20;
const MAPPED_AHEAD: usize = 3;
/// Objects up to this size are read in one go instead of through a reader thread.
const SMALL_OBJECT: u64 = 256 << 10;

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
        Ok(FsStorage { root, tmp })
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.root.join(key.as_str())
    }
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
        let len = range.end.saturating_sub(range.start);
        if len <= SMALL_OBJECT {
            let bytes = blocking(move || read_range(file, range.start, len)).await?;
            return Ok(Box::pin(futures_util::stream::iter([Ok(bytes)])));
        }
        Ok(spawn_reader(file, range.start, len))
    }

    async fn writer(&self) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let temp = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let file = blocking({
            let temp = temp.clone();
            move || File::create_new(temp)
        })
        .await?;
        Ok(Box::new(FsWriter::start(self.root.clone(), file, temp)))
    }

    async fn rename(&self, from: &Key, to: &Key) -> Result<(), StorageError> {
        let (from, to) = (self.path(from), self.path(to));
        blocking(move || {
            if !from.is_file() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "rename source missing"));
            }
            place(&from, &to)
        })
        .await
        .map_err(|e| match e {
            StorageError::Io(e) if e.kind() == io::ErrorKind::NotFound => StorageError::NotFound,
            e => e,
        })
    }

    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        let path = self.path(key);
        blocking(move || {
            not_found_to_none(fs::remove_file(&path))?;
            // Drop the directory if that emptied it (fails harmlessly when it is not empty).
            if let Some(parent) = path.parent() {
                let _ = fs::remove_dir(parent);
            }
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &Key) -> Result<Vec<Key>, StorageError> {
        let root = self.root.clone();
        let start = self.path(prefix);
        blocking(move || {
            let mut out = Vec::new();
            walk(&root, &start, &mut out)?;
            out.sort();
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
        blocking(move || {
            File::open(&from)?.sync_all()?;
            place(&from, &to)
        })
        .await
    }
}

/// Moves `from` to `to` durably: rename, then fsync the directory that now names it.
fn place(from: &Path, to: &Path) -> io::Result<()> {
    let dir = to.parent().ok_or_else(|| io::Error::other("key has no parent"))?;
    for attempt in 0..3 {
        fs::create_dir_all(dir)?;
        match fs::rename(from, to) {
            // A concurrent delete may remove the freshly made, still empty directory: make it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 2 && from.exists() => continue,
            r => r?,
        }
        break;
    }
    File::open(dir)?.sync_all()
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Key>) -> io::Result<()> {
    let Some(entries) = not_found_to_none(fs::read_dir(dir))? else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let key = rel.iter().map(|c| c.to_string_lossy()).collect::<Vec<_>>().join("/");
            out.push(Key::new(key));
        }
    }
    Ok(())
}

fn read_range(mut file: File, start: u64, len: u64) -> io::Result<Bytes> {
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "object shorter than expected"));
    }
    Ok(Bytes::from(buf))
}

/// Streams `len` bytes from `start`: a blocking thread maps the file a chunk at a time, with its
/// pages populated (read in, if they were not cached) before the chunk is handed over, so the
/// bytes go from the page cache to the socket with no copy in between and the async threads
/// never wait for the disk.
fn spawn_reader(file: File, start: u64, len: u64) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(MAPPED_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut pos = start;
        let end = start + len;
        let size = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        while pos < end {
            let want = (end - pos).min(MAP_CHUNK);
            let msg = if pos + want > size {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "object shorter than expected"))
            } else {
                map_chunk(&file, pos, want)
            };
            let failed = msg.is_err();
            if tx.blocking_send(msg).is_err() || failed {
                return; // consumer went away, or the error has been handed over
            }
            pos += want;
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

/// `len` bytes of `file` from `offset`, mapped read-only and populated.
#[allow(unsafe_code)]
fn map_chunk(file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    // SAFETY: a mapping is only unsound if the file changes under it. Objects of this backend
    // never do: a file becomes visible by rename once complete and fsynced, and is afterwards
    // only replaced by another rename or unlinked, neither of which touches the mapped inode.
    // The range was checked against the file's size above, so no page lies past its end.
    let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(len).populate().map(file)? };
    Ok(Bytes::from_owner(map))
}

enum Msg {
    Data(Bytes),
    Commit(PathBuf, oneshot::Sender<io::Result<()>>),
}

struct FsWriter {
    root: PathBuf,
    tx: mpsc::Sender<Msg>,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
    written: u64,
}

impl FsWriter {
    fn start(root: PathBuf, file: File, temp: PathBuf) -> FsWriter {
        let (tx, mut rx) = mpsc::channel::<Msg>(32);
        let task = tokio::task::spawn_blocking(move || {
            let mut out = Gather::new(file);
            let result = (|| {
                while let Some(msg) = rx.blocking_recv() {
                    match msg {
                        Msg::Data(b) => out.push(b)?,
                        Msg::Commit(dest, reply) => {
                            let r = out.finish().and_then(|f| finish(f, &temp, &dest));
                            let _ = reply.send(r);
                            return Ok(true);
                        }
                    }
                }
                Ok(false)
            })();
            // Not committed (dropped, aborted or failed): the temp file must not linger.
            if !matches!(result, Ok(true)) {
                let _ = fs::remove_file(&temp);
            }
            result.map(|_| ())
        });
        FsWriter { root, tx, task: Some(task), written: 0 }
    }

    /// The writer thread stopped early: report why.
    async fn failure(&mut self) -> StorageError {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => StorageError::Io(e),
                Ok(Ok(())) => StorageError::Io(io::Error::other("writer closed")),
                Err(e) => StorageError::Io(io::Error::other(e)),
            },
            None => StorageError::Io(io::Error::other("writer closed")),
        }
    }
}

/// Collects received chunks and writes them with one vectored write per `IO_CHUNK` or so: no
/// copy into a staging buffer, few system calls.
struct Gather {
    out: Appender,
    pending: Vec<Bytes>,
    size: usize,
}

impl Gather {
    fn new(file: File) -> Gather {
        Gather { out: Appender::new(file), pending: Vec::with_capacity(64), size: 0 }
    }

    fn push(&mut self, b: Bytes) -> io::Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        self.size += b.len();
        self.pending.push(b);
        if self.size >= IO_CHUNK || self.pending.len() >= 64 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.append(&self.pending)?;
        self.pending.clear();
        self.size = 0;
        Ok(())
    }

    fn finish(mut self) -> io::Result<File> {
        self.flush()?;
        Ok(self.out.into_file())
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

fn finish(file: File, temp: &Path, dest: &Path) -> io::Result<()> {
    file.sync_all()?;
    drop(file);
    place(temp, dest)
}

#[async_trait::async_trait]
impl ObjectWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        let n = data.len() as u64;
        if self.tx.send(Msg::Data(data)).await.is_err() {
            return Err(self.failure().await);
        }
        self.written += n;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    async fn commit(mut self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        let (reply, done) = oneshot::channel();
        let dest = self.root.join(key.as_str());
        if self.tx.send(Msg::Commit(dest, reply)).await.is_err() {
            return Err(self.failure().await);
        }
        match done.await {
            Ok(r) => r.map_err(StorageError::from),
            Err(_) => Err(self.failure().await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
