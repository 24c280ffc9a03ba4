//! The one writing connection, with group commit.
//!
//! ```text
//! write(f) ─► queue ─► writer thread: BEGIN IMMEDIATE
//! write(g) ─┘                          SAVEPOINT; f; RELEASE   (or ROLLBACK TO: f alone fails)
//!                                      SAVEPOINT; g; RELEASE
//!                                      COMMIT  ─► one fsync of the WAL for all of them
//!                                      ─► each caller hears its own result, only now
//! ```
//! SQLite takes one writer at a time anyway; a dedicated thread takes every write that queued up
//! while the last commit was syncing and commits them together, so concurrent pushes share one
//! fsync instead of waiting for one each. Each write keeps its own all-or-none (a savepoint), and
//! nobody hears of success before the commit that carries it is durable.
//!
//! A write that a crash may lose (an upload session's bookkeeping, which the protocol recovers
//! from with a 416) is `Unsynced`: a batch of only such writes commits without waiting for the
//! disk. Acknowledged content (blobs linked, manifests, tags, deletes) is `Synced`.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

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

/// Hands writes to the writer thread; the thread ends when this is dropped.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    pub fn start(conn: Connection) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new().name("berth-meta-writer".into()).spawn(move || serve(conn, queue))?;
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

fn serve(mut conn: Connection, queue: mpsc::Receiver<Job>) {
    let mut synced = true;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(MAX_BATCH - 1));
        let durable = batch.iter().any(|j| j.durability == Durability::Synced);
        if durable != synced {
            let mode = if durable { "FULL" } else { "NORMAL" };
            synced = conn.pragma_update(None, "synchronous", mode).is_ok() && durable;
        }
        commit(&mut conn, batch);
    }
}

fn commit(conn: &mut Connection, batch: Vec<Job>) {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = MetaError::from(e);
            batch.into_iter().for_each(|j| j.work.finish(Err(&e)));
            return;
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
        done.push(job.work);
    }
    let outcome = tx.commit().map_err(MetaError::from);
    for work in done {
        work.finish(outcome.as_ref().map(|_| ()));
    }
}
