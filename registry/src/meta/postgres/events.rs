//! [`EventLog`] on PostgreSQL.

use super::errors::db_error;
use super::{execute, query, PostgresMeta};
use crate::meta::events::{self, Backlog, Claimed, Delivery, Event, EventQuery, NewEvent, Settled};
use crate::meta::outbox::{stored_kind, EventLog};
use crate::meta::Result;

/// The columns of [`events::EVENT_COLUMNS`] from the `o`th of the row on.
fn event_at(r: &tokio_postgres::Row, o: usize) -> Result<Event> {
    Ok(Event {
        seq: r.get(o),
        id: r.get(o + 1),
        at: r.get(o + 2),
        kind: stored_kind(r.get(o + 3))?,
        repository: r.get(o + 4),
        digest: r.get(o + 5),
        tag: r.get(o + 6),
        media_type: r.get(o + 7),
        artifact_type: r.get(o + 8),
        size: r.get::<_, Option<i64>>(o + 9).map(super::size),
        subject: r.get(o + 10),
        actor: r.get(o + 11),
        address: r.get(o + 12),
        request_id: r.get(o + 13),
        count: super::size(r.get(o + 14)),
        detail: r.get(o + 15),
    })
}

#[async_trait::async_trait]
impl EventLog for PostgresMeta {
    async fn claim(&self, endpoint: &str, now: i64, until: i64, limit: usize) -> Result<Vec<Claimed>> {
        let sql = format!(
            "WITH c AS ({}) SELECT c.attempts, {} FROM c JOIN events e ON e.seq = c.event_seq
             ORDER BY e.seq",
            events::claim_sql("FOR UPDATE SKIP LOCKED"),
            events::EVENT_COLUMNS
        );
        let c = self.client().await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = query(&c, &sql, &[&until, &endpoint, &now, &limit]).await.map_err(db_error)?;
        rows.iter()
            .map(|r| {
                let attempts: i64 = r.get(0);
                Ok(Claimed { event: event_at(r, 1)?, attempts: attempts.clamp(0, u32::MAX as i64) as u32 })
            })
            .collect()
    }

    async fn settle(&self, endpoint: &str, outcomes: Vec<(i64, Settled)>, now: i64) -> Result<()> {
        let endpoint = endpoint.to_owned();
        self.write(false, move |tx| {
            let (endpoint, outcomes) = (endpoint.clone(), outcomes.clone());
            Box::pin(async move {
                for (seq, s) in &outcomes {
                    let (state, next_at, error, settled_at) = events::settle_params(s, now);
                    execute(tx, events::SETTLE, &[&state, &next_at, &error, &settled_at, &endpoint, seq])
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn abandon_others(&self, configured: Vec<String>, now: i64) -> Result<u64> {
        let c = self.client().await?;
        execute(
            &c,
            "UPDATE deliveries SET state = 'dead', settled_at = $1,
               last_error = 'the endpoint is no longer configured'
             WHERE state = 'pending' AND NOT (endpoint = ANY($2))",
            &[&now, &configured],
        )
        .await
        .map_err(db_error)
    }

    async fn backlog(&self) -> Result<Vec<Backlog>> {
        let c = self.client().await?;
        let rows = query(&c, events::BACKLOG, &[]).await.map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| {
                let delivery =
                    |o: usize| Delivery::from_columns(r.get(o), r.get(o + 1), r.get(o + 2), r.get(o + 3));
                Backlog {
                    endpoint: r.get(0),
                    pending: super::size(r.get(1)),
                    dead: super::size(r.get(2)),
                    oldest_pending: delivery(3),
                    last_dead: delivery(7),
                }
            })
            .collect())
    }

    async fn record_audit(&self, entries: Vec<NewEvent>) -> Result<()> {
        self.write(false, move |tx| {
            let entries = entries.clone();
            Box::pin(async move { Ok(super::outbox::record(tx, &entries, None).await?) })
        })
        .await
    }

    async fn events(&self, q: &EventQuery) -> Result<Vec<Event>> {
        let c = self.client().await?;
        let before = q.before.unwrap_or(i64::MAX);
        let limit = q.limit.min(events::MAX_LIST) as i64;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&before];
        params.extend(
            q.repository.iter().chain(&q.actor).map(|s| s as &(dyn tokio_postgres::types::ToSql + Sync)),
        );
        params.push(&limit);
        let rows = query(&c, &events::list_sql(q), &params).await.map_err(db_error)?;
        rows.iter().map(|r| event_at(r, 0)).collect()
    }

    async fn forget_events(&self, before: i64, limit: usize) -> Result<u64> {
        let c = self.client().await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        execute(&c, events::FORGET_EVENTS, &[&before, &limit]).await.map_err(db_error)
    }
}
