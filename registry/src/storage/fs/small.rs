//! Small objects kept as rows of the SQLite metadata database (table `small_objects`), not as
//! files of their own.
//!
//! Most of what a registry stores is small: every manifest, every image's config, many layers of
//! a few KiB. As a file, such an object costs an inode and, before it is durable, a flush of its
//! bytes and another of the directory that names it — one after the other, for each object. As a
//! row it is durable with one append to the database's write-ahead log, synced once for all the
//! writes committed at the same time (the group commit of the metadata store's [`Writer`]). And
//! since the rows share that log with the metadata, an object the caller records next (a blob it
//! links, a manifest it stores) is committed without waiting for the disk at all: the record's
//! synced commit, later in the same log, makes both durable with one flush
//! ([`crate::storage::ObjectWriter::commit_then_record`]). A power loss keeps a prefix of the log,
//! so it never keeps a record without the row before it.
//!
//! ```text
//! writer ─► bytes held in memory ─┬─ commit, at most `max` ─► a row (key, bytes, modified)
//!                                 └─ more than `max` ───────► a file, as before (held bytes first)
//! stat, get ─► the row, else the file            list ─► rows and files, merged
//! rename    ─► a row's key changes; a file moves as before
//! delete    ─► both
//! ```
//! A key names one object: a file committed, renamed or adopted at a key drops the row there. A
//! row shadows a file of the same key, which only a store written before rows existed can hold
//! (content-addressed, so the same bytes), and a delete removes both. Rows are read on the
//! blocking pool from the metadata store's reading connections, inside the same call that would
//! open the file.
//!
//! Only one process may keep rows (SQLite's locks do not hold over a network filesystem), so
//! berth keeps them only beside SQLite metadata, which is one process's too. Space a deleted row
//! leaves is reused by later rows; the file does not shrink. Rows an earlier Berth kept in a
//! database of their own in the store's root (`small-objects.db`) are moved in when the store is
//! opened ([`Small::open`]).

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};

use super::place::blocking;
use crate::meta::sqlite::readers::Readers;
pub(super) use crate::meta::sqlite::writer::Durability;
use crate::meta::sqlite::writer::Writer;
use crate::meta::sqlite::{open_connection, SqliteMeta};
use crate::meta::MetaError;
use crate::storage::{Key, Listed, ObjectWriter, StorageError};

/// Objects up to this size are rows unless the config says otherwise.
pub const DEFAULT_MAX: u64 = 16 << 10;

/// The database an earlier Berth kept rows in, in the store's root (beside `blobs/`, so never
/// listed); moved into the metadata database when found.
pub(super) const OLD_FILE: &str = "small-objects.db";

/// Rows of the old database copied per metadata write while they are moved in.
const MOVE_BATCH: i64 = 256;

pub(super) struct Small {
    writer: Writer,
    readers: Arc<Readers>,
    max: usize,
}

impl Small {
    /// Keeps rows in `meta`'s database (creating their table if needed), first moving in those
    /// of an old database in `root`; objects up to `max` bytes become rows.
    pub(super) async fn open(root: &Path, meta: &SqliteMeta, max: usize) -> Result<Small, StorageError> {
        let (writer, readers) = meta.log();
        let small = Small { writer, readers, max };
        small
            .writer
            .run(Durability::Synced, |c| {
                c.execute_batch(
                    // Made here, not by a numbered migration, so that an older Berth still opens
                    // the database (after `berth unpack-small-objects` has emptied the table).
                    "CREATE TABLE IF NOT EXISTS small_objects (
                         key TEXT PRIMARY KEY NOT NULL,
                         data BLOB NOT NULL,
                         modified INTEGER NOT NULL
                     )",
                )?;
                Ok(())
            })
            .await
            .map_err(storage_error)?;
        small.move_in(root).await?;
        Ok(small)
    }

    /// Copies the rows of an old `small-objects.db` in `root` into the metadata database, durably,
    /// then removes the old one. A crash before its removal copies the same rows again.
    async fn move_in(&self, root: &Path) -> Result<(), StorageError> {
        let old = root.join(OLD_FILE);
        if !old.exists() {
            return Ok(());
        }
        let mut after = String::new();
        loop {
            let (at, from) = (old.clone(), after.clone());
            let rows = blocking(move || {
                let c = open_connection(&at).map_err(io::Error::other)?;
                old_rows(&c, &from).map_err(io::Error::other)
            })
            .await?;
            let Some((last, _, _)) = rows.last() else { break };
            after = last.clone();
            self.writer
                .run(Durability::Synced, move |c| {
                    let mut insert = c.prepare_cached(
                        "INSERT OR REPLACE INTO small_objects (key, data, modified) VALUES (?1, ?2, ?3)",
                    )?;
                    for (key, data, modified) in rows {
                        insert.execute(params![key, data, modified])?;
                    }
                    Ok(())
                })
                .await
                .map_err(storage_error)?;
        }
        let root = root.to_path_buf();
        blocking(move || {
            for suffix in ["", "-wal", "-shm"] {
                match std::fs::remove_file(root.join(format!("{OLD_FILE}{suffix}"))) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::File::open(&root)?.sync_all()
        })
        .await?;
        tracing::info!("moved the small objects of {} into the metadata database", old.display());
        Ok(())
    }

    /// Whether any object is a row. Blocking.
    pub(super) fn holds_any(&self) -> io::Result<bool> {
        self.read(|c| c.prepare_cached("SELECT 1 FROM small_objects LIMIT 1")?.exists([]))
    }

    /// The largest object kept as a row (0: none is made, rows already kept are still read).
    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// Runs `f` on a pooled reading connection. Blocking.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> io::Result<T> {
        self.readers.with(f).map_err(io::Error::other)
    }

    /// The object's bytes, if it is a row. Blocking.
    pub(super) fn bytes(&self, key: &Key) -> io::Result<Option<Bytes>> {
        self.read(|c| {
            c.prepare_cached("SELECT data FROM small_objects WHERE key = ?1")?
                .query_row([key.as_str()], |r| r.get::<_, Vec<u8>>(0))
                .optional()
        })
        .map(|v| v.map(Bytes::from))
    }

    /// The object's size, if it is a row. Blocking.
    pub(super) fn size(&self, key: &Key) -> io::Result<Option<u64>> {
        self.read(|c| {
            c.prepare_cached("SELECT length(data) FROM small_objects WHERE key = ?1")?
                .query_row([key.as_str()], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map(|n| n.map(|n| n.max(0) as u64))
    }

    /// The rows whose keys start with `prefix`, sorted by key. Blocking.
    pub(super) fn list(&self, prefix: &str) -> io::Result<Vec<Listed>> {
        self.read(|c| rows_under(c, prefix))
    }

    /// The first `n` keys, in order. Blocking.
    pub(super) fn keys(&self, n: usize) -> io::Result<Vec<Key>> {
        self.read(|c| {
            let mut s = c.prepare_cached("SELECT key FROM small_objects ORDER BY key LIMIT ?1")?;
            let rows = s.query_map([n as i64], |r| Ok(Key::new(r.get(0)?)))?;
            rows.collect()
        })
    }

    /// Stores `data` at `key`, replacing what is there; with [`Durability::Synced`], answers only
    /// once the row is on disk.
    pub(super) async fn put(
        &self,
        key: &Key,
        data: Bytes,
        durability: Durability,
    ) -> Result<(), StorageError> {
        let key = key.as_str().to_owned();
        let modified = crate::meta::now();
        self.writer
            .run(durability, move |c| {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO small_objects (key, data, modified) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![key, &data[..], modified])?;
                Ok(())
            })
            .await
            .map_err(storage_error)
    }

    /// Moves the row at `from` to `to`, replacing what is there; `NotFound` if there is no row
    /// at `from`.
    pub(super) async fn rename(
        &self,
        from: &Key,
        to: &Key,
        durability: Durability,
    ) -> Result<(), StorageError> {
        let (from, to) = (from.as_str().to_owned(), to.as_str().to_owned());
        let moved = self
            .writer
            .run(durability, move |c| {
                if from == to {
                    return Ok(c
                        .prepare_cached("SELECT 1 FROM small_objects WHERE key = ?1")?
                        .exists([&from])?);
                }
                c.prepare_cached("DELETE FROM small_objects WHERE key = ?1")?.execute([&to])?;
                let moved = c
                    .prepare_cached("UPDATE small_objects SET key = ?2 WHERE key = ?1")?
                    .execute([&from, &to])?;
                Ok(moved > 0)
            })
            .await
            .map_err(storage_error)?;
        if moved {
            Ok(())
        } else {
            Err(StorageError::NotFound)
        }
    }

    /// Removes the row at `key` if there is one (after a file was placed there).
    pub(super) async fn forget(
        self: &Arc<Small>,
        key: &Key,
        durability: Durability,
    ) -> Result<(), StorageError> {
        let (small, at) = (self.clone(), key.clone());
        if blocking(move || small.size(&at)).await?.is_some() {
            self.delete(key, durability).await?;
        }
        Ok(())
    }

    /// Removes the row at `key`, if there is one.
    pub(super) async fn delete(&self, key: &Key, durability: Durability) -> Result<(), StorageError> {
        let key = key.as_str().to_owned();
        self.writer
            .run(durability, move |c| {
                c.prepare_cached("DELETE FROM small_objects WHERE key = ?1")?.execute([key])?;
                Ok(())
            })
            .await
            .map_err(storage_error)
    }
}

/// The rows whose keys start with `prefix`, sorted by key.
fn rows_under(c: &Connection, prefix: &str) -> rusqlite::Result<Vec<Listed>> {
    // Keys are ASCII below DEL (`layout` builds them), so this bounds every key with the prefix.
    let end = format!("{prefix}\u{7f}");
    let mut s = c.prepare_cached(
        "SELECT key, length(data), modified FROM small_objects WHERE key >= ?1 AND key < ?2 ORDER BY key",
    )?;
    let rows = s.query_map([prefix, end.as_str()], |r| {
        Ok(Listed { key: Key::new(r.get(0)?), size: r.get::<_, i64>(1)?.max(0) as u64, modified: r.get(2)? })
    })?;
    rows.collect()
}

/// Up to [`MOVE_BATCH`] rows of an old database, in key order after `after`: none if it has no
/// table of objects.
fn old_rows(c: &Connection, after: &str) -> rusqlite::Result<Vec<(String, Vec<u8>, i64)>> {
    if !has_table(c, "objects")? {
        return Ok(Vec::new());
    }
    let mut s = c.prepare("SELECT key, data, modified FROM objects WHERE key > ?1 ORDER BY key LIMIT ?2")?;
    let rows = s.query_map(params![after, MOVE_BATCH], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// The keys of the rows under `prefix` in the metadata database at `path`, opened read-only.
#[cfg(any(test, feature = "testing"))]
pub(super) fn keys_read_only(path: &Path, prefix: &str) -> io::Result<Vec<Key>> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = Connection::open_with_flags(path, flags).map_err(io::Error::other)?;
    if !has_table(&conn, "small_objects").map_err(io::Error::other)? {
        return Ok(Vec::new());
    }
    let rows = rows_under(&conn, prefix).map_err(io::Error::other)?;
    Ok(rows.into_iter().map(|l| l.key).collect())
}

/// Whether the database has a table `name`.
fn has_table(c: &Connection, name: &str) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?.exists([name])
}

/// A full disk stays a full disk (the client hears 507); anything else is an I/O failure.
fn storage_error(e: MetaError) -> StorageError {
    match e {
        MetaError::Full => StorageError::Io(io::Error::new(
            io::ErrorKind::StorageFull,
            "no space left for small objects in the metadata database",
        )),
        e => StorageError::Io(io::Error::other(format!("small objects: {e}"))),
    }
}

/// A writer that holds what it receives in memory while it fits in a row, and hands it all to a
/// file writer (made, not yet opened, with it) once it does not.
pub(super) struct SmallFirst {
    small: Arc<Small>,
    file: Box<dyn ObjectWriter>,
    held: Vec<Bytes>,
    held_len: usize,
    spilled: bool,
}

impl SmallFirst {
    pub(super) fn new(small: Arc<Small>, file: Box<dyn ObjectWriter>) -> SmallFirst {
        SmallFirst { small, file, held: Vec::new(), held_len: 0, spilled: false }
    }

    async fn finish(self: Box<Self>, key: &Key, how: Commit) -> Result<(), StorageError> {
        let SmallFirst { small, file, held, spilled, .. } = *self;
        let durability = how.row();
        if spilled {
            match how {
                Commit::Unsynced => file.commit_unsynced(key).await?,
                Commit::Durable | Commit::ThenRecord => file.commit(key).await?,
            }
            return small.forget(key, durability).await;
        }
        let data = match <[Bytes; 1]>::try_from(held) {
            Ok([only]) => only,
            Err(held) => Bytes::from(held.concat()),
        };
        small.put(key, data, durability).await
    }
}

#[async_trait::async_trait]
impl ObjectWriter for SmallFirst {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        if !self.spilled {
            if self.held_len + data.len() <= self.small.max() {
                self.held_len += data.len();
                self.held.push(data);
                return Ok(());
            }
            self.spilled = true;
            self.held_len = 0;
            for held in std::mem::take(&mut self.held) {
                self.file.write(held).await?;
            }
        }
        self.file.write(data).await
    }

    fn written(&self) -> u64 {
        self.file.written() + self.held_len as u64
    }

    async fn commit(self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        self.finish(key, Commit::Durable).await
    }

    async fn commit_unsynced(self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        self.finish(key, Commit::Unsynced).await
    }

    async fn commit_then_record(self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        self.finish(key, Commit::ThenRecord).await
    }
}

/// How an object is committed, as [`ObjectWriter`] offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Commit {
    /// Durable on return.
    Durable,
    /// Not waited for: a crash may lose it.
    Unsynced,
    /// Durable once the metadata write the caller makes next is: a file durable on return, a row
    /// committed unsynced in the metadata log that write syncs.
    ThenRecord,
}

impl Commit {
    /// How a row (or the removal of one) is committed.
    pub(super) fn row(self) -> Durability {
        match self {
            Commit::Durable => Durability::Synced,
            Commit::Unsynced | Commit::ThenRecord => Durability::Unsynced,
        }
    }
}

#[cfg(test)]
#[path = "small_tests.rs"]
mod tests;
