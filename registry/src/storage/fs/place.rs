//! Making files visible durably: renames into directories created (and fsynced) on demand, and
//! running such disk work on the blocking pool. Shared by the store and its writer.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::storage::StorageError;

/// Runs one disk operation on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(StorageError::from),
        Err(e) => Err(StorageError::Io(io::Error::other(e))),
    }
}

/// [`place`] for a file written by someone else, or not synced when written: its bytes must be
/// on disk before a name says they are complete.
pub(super) fn place_synced(from: &Path, to: &Path) -> io::Result<()> {
    File::open(from)?.sync_all()?;
    place(from, to)
}

/// Moves `from` to `to` durably: every directory the move needs is created and made durable,
/// then the rename, then an fsync of the directory that now names the file.
pub(super) fn place(from: &Path, to: &Path) -> io::Result<()> {
    rename_into(from, to, true)?;
    let dir = to.parent().ok_or_else(|| io::Error::other("key has no parent"))?;
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to`, creating the directories it needs (made durable with `durable`; not for
/// files a crash may lose anyway, such as upload chunks). Directories are never removed, so one
/// made here is still there for the rename.
pub(super) fn rename_into(from: &Path, to: &Path, durable: bool) -> io::Result<()> {
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
