//! The one writing connection, with pipelined group commit.
//!
//! ```text
//! write(f) ─► queue ─► writer thread: BEGIN IMMEDIATE
//! write(g) ─┘                          SAVEPOINT; f; RELEASE   (or ROLLBACK TO: f alone fails)
//!                                      SAVEPOINT; g; RELEASE
//!                                      COMMIT (not synced) ─► unsynced writes hear their result
//!                                         │
//!                                         ▼
//!                       syncer thread: fdatasync(WAL) once for every commit made before it
//!                                      ─► synced writes hear their result, only now
//! ```
//! SQLite takes one writer at a time anyway; a dedicated thread takes every write that queued up
//! and commits them together. The commit itself does not wait for the disk
//! (`synchronous=NORMAL`): a second thread syncs the write-ahead log, once for all the commits
//! made since its last sync, while the writer goes on committing. So the disk's latency is paid
//! once per round by every concurrent push together, and a write that need not wait for it (an
//! upload session's bookkeeping, which the protocol recovers from with a 416: `Unsynced`) is
//! never queued behind someone else's sync. Each write keeps its own all-or-none (a savepoint),
//! and no `Synced` write (blobs linked, manifests, tags, deletes) is acknowledged before the log
//! holding it is on disk. (A concurrent reader may see such a write a millisecond before it is
//! durable; its writer has not yet been told it succeeded.)
//!
//! Syncing SQLite's log from a descriptor of our own is sound because `fdatasync` flushes the
//! file, not the descriptor, and the log is only ever reset or truncated in place while the
//! database is open (it is removed only when the last connection closes). If a sync fails, what
//! is on disk is unknown: every later write is refused until berth restarts and SQLite recovers
//! from what the disk really holds.

use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::meta::{MetaError, Result};

/// Most writes committed together.
const MAX_BATCH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged only once it is on disk.
    Synced,
    /// Acknowledged once committed; a power loss may drop it (never corrupt anything).
    Unsynced,
}

/// One queued write, with its result type erased.
trait Work: Send {
    /// Runs inside a savepoint; false rolls the savepoint back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Tells the caller, once the commit's outcome is known.
    fn finish(self: Box<Self>, commit: std::result::Result<(), &MetaError>);
}

struct Task<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Work for Task<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else { return false };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(MetaError::Db("a metadata write panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: std::result::Result<(), &MetaError>) {
        let outcome = match (self.result, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            // A full disk stays a full disk, so the client hears 507 rather than 500.
            (_, Err(MetaError::Full)) => Err(MetaError::Full),
            (_, Err(e)) => Err(MetaError::Db(format!("commit failed: {e}"))),
            (None, Ok(())) => Err(MetaError::Db("the write did not run".into())),
        };
        let _ = self.reply.send(outcome);
    }
}

struct Job {
    durability: Durability,
    work: Box<dyn Work>,
}

/// Hands writes to the writer thread; the threads end when the last clone is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts writing through `conn` (a database in WAL mode whose log is at `wal`), on threads
    /// named `<name>-writer` and `<name>-sync`.
    pub fn start(conn: Connection, wal: &std::path::Path, name: &str) -> std::io::Result<Writer> {
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(std::io::Error::other)?;
        let log = open_log(wal)?;
        Writer::spawn(conn, name, move || log.sync_data())
    }

    /// Starts the writer and the syncer threads; `sync` makes every commit made so far durable.
    fn spawn<S>(conn: Connection, name: &str, sync: S) -> std::io::Result<Writer>
    where
        S: FnMut() -> std::io::Result<()> + Send + 'static,
    {
        let failed = Arc::new(AtomicBool::new(false));
        let (syncs, to_sync) = mpsc::channel();
        let sync_failed = failed.clone();
        std::thread::Builder::new()
            .name(format!("{name}-sync"))
            .spawn(move || sync_rounds(sync, &to_sync, &sync_failed))?;
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("{name}-writer"))
            .spawn(move || serve(conn, &queue, &syncs, &failed))?;
        Ok(Writer { jobs })
    }

    /// Runs `f` in its own savepoint of the next commit; the result arrives after that commit.
    pub async fn run<T, F>(&self, durability: Durability, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let work = Box::new(Task { work: Some(f), result: None, reply });
        self.jobs.send(Job { durability, work }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> MetaError {
    MetaError::Db("the metadata writer has stopped".into())
}

/// The write-ahead log, opened for syncing, and made durable in its directory: SQLite creates it
/// on the first write, and a file whose name is not durable can vanish whole with a power loss.
fn open_log(wal: &std::path::Path) -> std::io::Result<File> {
    let log = std::fs::OpenOptions::new().create(true).truncate(false).append(true).open(wal)?;
    if let Some(dir) = wal.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(log)
}

/// Committed writes that wait for the next sync of the log.
type Committed = Vec<Box<dyn Work>>;

/// A batch's commit outcome, and every job's work still to be told it.
type Outcome = (std::result::Result<(), MetaError>, Vec<(Durability, Box<dyn Work>)>);

fn serve(
    mut conn: Connection,
    queue: &mpsc::Receiver<Job>,
    syncs: &mpsc::Sender<Committed>,
    failed: &AtomicBool,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(MAX_BATCH - 1));
        if failed.load(Ordering::Acquire) {
            let e = sync_failed();
            batch.into_iter().for_each(|j| j.work.finish(Err(&e)));
            continue;
        }
        let (outcome, done) = commit(&mut conn, batch);
        let mut synced = Vec::new();
        for (durability, work) in done {
            match (&outcome, durability) {
                (Ok(()), Durability::Synced) => synced.push(work),
                _ => work.finish(outcome.as_ref().map(|_| ())),
            }
        }
        if !synced.is_empty() {
            if let Err(mpsc::SendError(works)) = syncs.send(synced) {
                works.into_iter().for_each(|w| w.finish(Err(&stopped())));
            }
        }
    }
}

/// Syncs the log once for every commit that arrived since the last round, then acknowledges them.
fn sync_rounds(
    mut sync: impl FnMut() -> std::io::Result<()>,
    commits: &mpsc::Receiver<Committed>,
    failed: &AtomicBool,
) {
    while let Ok(first) = commits.recv() {
        let mut round = vec![first];
        round.extend(commits.try_iter());
        let synced = if failed.load(Ordering::Acquire) {
            Err(sync_failed())
        } else {
            sync().map_err(|e| {
                tracing::error!(error = %e, "syncing the metadata log failed; refusing writes until restart");
                failed.store(true, Ordering::Release);
                if crate::storage::is_full(&e) {
                    MetaError::Full
                } else {
                    sync_failed()
                }
            })
        };
        for works in round {
            for work in works {
                work.finish(synced.as_ref().map(|_| ()));
            }
        }
    }
}

fn sync_failed() -> MetaError {
    MetaError::Db("the metadata log could not be synced to disk; restart berth to recover".into())
}

/// Runs the batch in one transaction, committed without waiting for the disk.
fn commit(conn: &mut Connection, batch: Vec<Job>) -> Outcome {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let works = batch.into_iter().map(|j| (j.durability, j.work)).collect();
            return (Err(MetaError::from(e)), works);
        }
    };
    let mut done = Vec::with_capacity(batch.len());
    for mut job in batch {
        match tx.savepoint() {
            Ok(mut sp) => {
                if job.work.run(&sp) {
                    let _ = sp.commit();
                } else {
                    let _ = sp.rollback();
                }
            }
            // Not run: finish reports the failure.
            Err(e) => tracing::warn!(error = %e, "metadata savepoint failed"),
        }
        done.push((job.durability, job.work));
    }
    (tx.commit().map_err(MetaError::from), done)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn writer(sync: impl FnMut() -> std::io::Result<()> + Send + 'static) -> Arc<Writer> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        Arc::new(Writer::spawn(conn, "berth-test", sync).unwrap())
    }

    fn insert(v: i64) -> impl FnOnce(&Connection) -> Result<usize> + Send + 'static {
        move |c: &Connection| Ok(c.execute("INSERT INTO t VALUES (?1)", [v])?)
    }

    #[tokio::test]
    async fn unsynced_writes_do_not_wait_behind_a_slow_sync() {
        let (entered, syncing) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let w = writer(move || {
            let _ = entered.send(());
            let _ = released.recv();
            Ok(())
        });
        let durable = tokio::spawn({
            let w = w.clone();
            async move { w.run(Durability::Synced, insert(1)).await }
        });
        tokio::task::spawn_blocking(move || syncing.recv()).await.unwrap().unwrap();

        let quick =
            tokio::time::timeout(Duration::from_secs(30), w.run(Durability::Unsynced, insert(2))).await;
        assert_eq!(quick.expect("an unsynced write waited for the sync").unwrap(), 1);
        assert!(!durable.is_finished(), "a synced write was acknowledged before its sync");

        release.send(()).unwrap();
        assert_eq!(durable.await.unwrap().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_failed_sync_refuses_every_later_write() {
        let w = writer(|| Err(std::io::Error::from_raw_os_error(28)));
        let e = w.run(Durability::Synced, insert(1)).await.unwrap_err();
        assert!(matches!(e, MetaError::Full), "{e:?}");
        for durability in [Durability::Synced, Durability::Unsynced] {
            let e = w.run(durability, insert(2)).await.unwrap_err();
            assert!(e.to_string().contains("restart berth"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_failing_write_fails_alone_in_its_batch() {
        let w = writer(|| Ok(()));
        let bad =
            w.run(Durability::Synced, |c: &Connection| Ok(c.execute("INSERT INTO nope VALUES (1)", [])?));
        let good = w.run(Durability::Synced, insert(3));
        let (bad, good) = tokio::join!(bad, good);
        assert!(bad.is_err());
        assert_eq!(good.unwrap(), 1);
    }
}
