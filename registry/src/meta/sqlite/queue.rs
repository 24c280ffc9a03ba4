//! [`ReviewQueue`] on SQLite.

use rusqlite::params;

use super::writer::Durability;
use super::SqliteMeta;
use crate::meta::queue::{self, ReviewQueue};
use crate::meta::Result;
use berth_core::oci::RepoName;

#[async_trait::async_trait]
impl ReviewQueue for SqliteMeta {
    async fn queued(&self, before: i64, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let after = after.unwrap_or_default().to_owned();
        self.read(move |c| {
            let rows = c
                .prepare_cached(queue::QUEUED)?
                .query_map(params![before, after, limit as i64], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn reviewed(&self, repo: &RepoName, before: i64) -> Result<()> {
        let repo = repo.to_string();
        self.write(Durability::Unsynced, move |tx| {
            if tx.prepare_cached(queue::REVIEWED)?.execute(params![repo, before])? == 0 {
                tx.prepare_cached(queue::REQUEUE)?.execute([&repo])?;
            }
            Ok(())
        })
        .await
    }

    async fn reviewed_range(&self, after: Option<&str>, through: &str, before: i64) -> Result<()> {
        let (after, through) = (after.unwrap_or_default().to_owned(), through.to_owned());
        self.write(Durability::Unsynced, move |tx| {
            tx.prepare_cached(queue::REVIEWED_RANGE)?.execute(params![after, through, before])?;
            tx.prepare_cached(queue::REQUEUE_RANGE)?.execute(params![after, through])?;
            Ok(())
        })
        .await
    }

    async fn queue_depth(&self, overdue_before: i64) -> Result<(u64, u64)> {
        self.read(move |c| {
            let (n, overdue): (i64, i64) = c
                .prepare_cached(queue::QUEUE_DEPTH)?
                .query_row([overdue_before], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((n.max(0) as u64, overdue.max(0) as u64))
        })
        .await
    }
}
