//! [`ReviewQueue`] on PostgreSQL.

use super::errors::db_error;
use super::{execute, query, query_opt, PostgresMeta};
use crate::meta::queue::{self, ReviewQueue};
use crate::meta::Result;
use berth_core::oci::RepoName;

#[async_trait::async_trait]
impl ReviewQueue for PostgresMeta {
    async fn queued(&self, before: i64, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let c = self.client().await?;
        let after = after.unwrap_or_default();
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = query(&c, queue::QUEUED, &[&before, &after, &limit]).await.map_err(db_error)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn reviewed(&self, repo: &RepoName, before: i64) -> Result<()> {
        let c = self.client().await?;
        if execute(&c, queue::REVIEWED, &[&repo.as_str(), &before]).await.map_err(db_error)? == 0 {
            execute(&c, queue::REQUEUE, &[&repo.as_str()]).await.map_err(db_error)?;
        }
        Ok(())
    }

    async fn reviewed_range(&self, after: Option<&str>, through: &str, before: i64) -> Result<()> {
        let (after, through) = (after.unwrap_or_default().to_owned(), through.to_owned());
        self.write(false, move |tx| {
            let (after, through) = (after.clone(), through.clone());
            Box::pin(async move {
                execute(tx, queue::REVIEWED_RANGE, &[&after, &through, &before]).await?;
                execute(tx, queue::REQUEUE_RANGE, &[&after, &through]).await?;
                Ok(())
            })
        })
        .await
    }

    async fn queue_depth(&self, overdue_before: i64) -> Result<(u64, u64)> {
        let c = self.client().await?;
        let row = query_opt(&c, queue::QUEUE_DEPTH, &[&overdue_before]).await.map_err(db_error)?;
        let (n, overdue): (i64, i64) = row.map_or((0, 0), |r| (r.get(0), r.get(1)));
        Ok((n.max(0) as u64, overdue.max(0) as u64))
    }
}
