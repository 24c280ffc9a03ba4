//! Writing a new object: bytes gathered into batches written on the blocking pool one at a time,
//! then made visible durably (`commit`: fsync of the file, rename, fsync of the directories) or
//! at once (`commit_unsynced`, for upload chunks a crash may lose).

use std::fs::{self, File};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::place::{blocking, place, rename_into};
use crate::storage::{Key, ObjectWriter, StorageError};

/// Writes are gathered into batches of about this size, one vectored write each.
pub(super) const IO_CHUNK: usize = 1 << 20;

/// A new object: received bytes are gathered, and each full batch is written on the blocking pool
/// while the next one gathers (at most one write in flight). Between batches, and while the client
/// is silent, no thread is held. The temp file is made with the first batch, so a writer that
/// receives nothing (the empty closing `PUT` of an upload) costs no file.
pub(super) struct FsWriter {
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
    pub(super) fn new(root: PathBuf, temp: PathBuf) -> FsWriter {
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
        if let Some(task) = self.in_flight.as_mut() {
            // Taken only once finished: a writer dropped while waiting still knows of the task.
            let file = task.await.map_err(|e| StorageError::Io(io::Error::other(e)));
            self.in_flight = None;
            return file?.map(Some).map_err(StorageError::Io);
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
            let in_flight = self.in_flight.take();
            match tokio::runtime::Handle::try_current() {
                // A write still in flight (the first one creates the file) finishes first, so
                // the name it makes is removed after it, not before; the inode goes with it.
                Ok(rt) => drop(rt.spawn(async move {
                    if let Some(task) = in_flight {
                        let _ = task.await;
                    }
                    let _ = tokio::task::spawn_blocking(move || fs::remove_file(temp)).await;
                })),
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
    use std::time::Duration;

    /// A client that goes away mid-upload drops the writer while its create or write is still
    /// running on the blocking pool: the removal must come after that, or the file outlives it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_dropped_mid_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..40 {
            let mut w = FsWriter::new(dir.path().into(), dir.path().join(format!("upload-{i}")));
            w.write(Bytes::from(vec![7u8; IO_CHUNK])).await.unwrap();
            drop(w);
        }
        let mut left = usize::MAX;
        for _ in 0..200 {
            left = fs::read_dir(dir.path()).unwrap().count();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(left, 0, "files left behind by dropped writers");
    }
}
