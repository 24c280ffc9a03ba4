//! Running one statement, prepared once per connection, and the repository row every write needs.

use deadpool_postgres::GenericClient;

use super::errors::TxResult;
use crate::meta::MetaError;

pub type Tx<'t> = deadpool_postgres::Transaction<'t>;

/// One statement's rows, prepared once per connection.
pub async fn query<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query(&stmt, params).await
}

pub async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_opt(&stmt, params).await
}

pub async fn execute<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<u64, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.execute(&stmt, params).await
}

pub async fn repo_id<C: GenericClient>(
    c: &C,
    repo: &str,
) -> std::result::Result<Option<i64>, tokio_postgres::Error> {
    Ok(query_opt(c, "SELECT id FROM repositories WHERE name = $1", &[&repo]).await?.map(|r| r.get(0)))
}

pub async fn ensure_repo(tx: &Tx<'_>, repo: &str, now: i64) -> TxResult<i64> {
    execute(
        tx,
        "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&repo, &now],
    )
    .await?;
    repo_id(tx, repo).await?.ok_or_else(|| MetaError::Db("repository vanished while inserting".into()).into())
}
