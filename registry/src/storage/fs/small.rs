//! Small objects kept as rows of one SQLite database in the store's root
//! (`small-objects.db`), not as files of their own.
//!
//! Most of what a registry stores is small: every manifest, every image's config, many layers of
//! a few KiB. As a file, such an object costs an inode and, before it is durable, a flush of its
//! bytes and another of the directory that names it — one after the other, for each object. As a
//! row it is durable with one append to the database's write-ahead log, synced once for all the
//! objects committed at the same time (the group commit of the metadata store's [`Writer`]).
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
//! blocking pool from a few pooled connections, inside the same call that would open the file.
//!
//! Only one process may keep rows in a store (SQLite's locks do not hold over a network
//! filesystem), so berth keeps them only beside a SQLite metadata store, which is one process's
//! too. Space a deleted row leaves is reused by later rows; the file does not shrink.

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};

use super::place::blocking;
use crate::meta::sqlite::open_connection;
use crate::meta::sqlite::readers::Readers;
pub(super) use crate::meta::sqlite::writer::Durability;
use crate::meta::sqlite::writer::Writer;
use crate::meta::MetaError;
use crate::storage::{Key, Listed, ObjectWriter, StorageError};

/// Objects up to this size are rows unless the config says otherwise.
pub const DEFAULT_MAX: u64 = 16 << 10;

/// The database's file name, in the store's root (beside `blobs/`, so never listed).
pub(super) const FILE: &str = "small-objects.db";

pub(super) struct Small {
    writer: Writer,
    readers: Readers,
    max: usize,
}

impl Small {
    /// Opens (creating if needed) the database in `root`; objects up to `max` bytes become rows.
    pub(super) fn open(root: &Path, max: usize) -> io::Result<Small> {
        let path = root.join(FILE);
        let conn = open_connection(&path).map_err(io::Error::other)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (
                 key TEXT PRIMARY KEY NOT NULL,
                 data BLOB NOT NULL,
                 modified INTEGER NOT NULL
             )",
        )
        .map_err(io::Error::other)?;
        let wal = root.join(format!("{FILE}-wal"));
        let writer = Writer::start(conn, &wal, "berth-small")?;
        Ok(Small { writer, readers: Readers::new(path), max })
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
            c.prepare_cached("SELECT data FROM objects WHERE key = ?1")?
                .query_row([key.as_str()], |r| r.get::<_, Vec<u8>>(0))
                .optional()
        })
        .map(|v| v.map(Bytes::from))
    }

    /// The object's size, if it is a row. Blocking.
    pub(super) fn size(&self, key: &Key) -> io::Result<Option<u64>> {
        self.read(|c| {
            c.prepare_cached("SELECT length(data) FROM objects WHERE key = ?1")?
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
            let mut s = c.prepare_cached("SELECT key FROM objects ORDER BY key LIMIT ?1")?;
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
                c.prepare_cached("INSERT OR REPLACE INTO objects (key, data, modified) VALUES (?1, ?2, ?3)")?
                    .execute(params![key, &data[..], modified])?;
                Ok(())
            })
            .await
            .map_err(storage_error)
    }

    /// Moves the row at `from` to `to`, replacing what is there, durably; `NotFound` if there is
    /// no row at `from`.
    pub(super) async fn rename(&self, from: &Key, to: &Key) -> Result<(), StorageError> {
        let (from, to) = (from.as_str().to_owned(), to.as_str().to_owned());
        let moved = self
            .writer
            .run(Durability::Synced, move |c| {
                if from == to {
                    return Ok(c.prepare_cached("SELECT 1 FROM objects WHERE key = ?1")?.exists([&from])?);
                }
                c.prepare_cached("DELETE FROM objects WHERE key = ?1")?.execute([&to])?;
                let moved =
                    c.prepare_cached("UPDATE objects SET key = ?2 WHERE key = ?1")?.execute([&from, &to])?;
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
                c.prepare_cached("DELETE FROM objects WHERE key = ?1")?.execute([key])?;
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
        "SELECT key, length(data), modified FROM objects WHERE key >= ?1 AND key < ?2 ORDER BY key",
    )?;
    let rows = s.query_map([prefix, end.as_str()], |r| {
        Ok(Listed { key: Key::new(r.get(0)?), size: r.get::<_, i64>(1)?.max(0) as u64, modified: r.get(2)? })
    })?;
    rows.collect()
}

/// The keys of the rows under `prefix` in the database at `path`, opened read-only.
#[cfg(any(test, feature = "testing"))]
pub(super) fn keys_read_only(path: &Path, prefix: &str) -> io::Result<Vec<Key>> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = Connection::open_with_flags(path, flags).map_err(io::Error::other)?;
    let rows = rows_under(&conn, prefix).map_err(io::Error::other)?;
    Ok(rows.into_iter().map(|l| l.key).collect())
}

/// A full disk stays a full disk (the client hears 507); anything else is an I/O failure.
fn storage_error(e: MetaError) -> StorageError {
    match e {
        MetaError::Full => StorageError::Io(io::Error::new(
            io::ErrorKind::StorageFull,
            "no space left for the small-object database",
        )),
        e => StorageError::Io(io::Error::other(format!("small-object database: {e}"))),
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

    async fn finish(self: Box<Self>, key: &Key, durability: Durability) -> Result<(), StorageError> {
        let SmallFirst { small, file, held, spilled, .. } = *self;
        if spilled {
            match durability {
                Durability::Synced => file.commit(key).await?,
                Durability::Unsynced => file.commit_unsynced(key).await?,
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
        self.finish(key, Durability::Synced).await
    }

    async fn commit_unsynced(self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        self.finish(key, Durability::Unsynced).await
    }
}

#[cfg(test)]
#[path = "small_tests.rs"]
mod tests;
