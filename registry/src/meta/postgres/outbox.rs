//! The events a change records in its own transaction (see [`crate::meta::outbox`]).

use deadpool_postgres::GenericClient;

use crate::meta::events::{self, NewEvent};

/// Records `events` (and their deliveries) in the change's transaction; a tag deletion's
/// event takes `digest` when it has none.
pub(super) async fn record(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[NewEvent],
    digest: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    for e in events {
        let size = e.size.map(|s| s.min(i64::MAX as u64) as i64);
        let insert = tx.prepare_cached(events::INSERT_EVENT).await?;
        let rows = tx
            .query(
                &insert,
                &[
                    &e.id,
                    &e.at,
                    &e.kind.as_str(),
                    &e.repository,
                    &e.digest.as_ref().map(|d| d.as_str()).or(digest),
                    &e.tag,
                    &e.media_type,
                    &e.artifact_type,
                    &size,
                    &e.subject.as_ref().map(|d| d.as_str()),
                    &e.actor,
                    &e.address,
                    &e.request_id,
                    &(e.count.min(i64::MAX as u64) as i64),
                    &e.detail,
                ],
            )
            .await?;
        let Some(seq) = rows.first().map(|r| r.get::<_, i64>(0)) else { continue };
        if !e.endpoints.is_empty() {
            let deliver = tx
                .prepare_cached(
                    "INSERT INTO deliveries (event_seq, endpoint, next_at) SELECT $1, endpoint, $3
                     FROM unnest($2::text[]) AS endpoint",
                )
                .await?;
            tx.execute(&deliver, &[&seq, &e.endpoints, &e.at]).await?;
        }
    }
    Ok(())
}
