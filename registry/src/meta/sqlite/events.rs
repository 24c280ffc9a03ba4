//! [`EventLog`] on SQLite.

use rusqlite::{params, OptionalExtension};

use super::writer::Durability;
use super::SqliteMeta;
use crate::meta::events::{self, Backlog, Claimed, Delivery, Event, EventQuery, NewEvent, Settled};
use crate::meta::outbox::{stored_kind, EventLog};
use crate::meta::Result;

/// A row of [`events::EVENT_COLUMNS`].
fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let kind = stored_kind(&r.get::<_, String>(3)?).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Event {
        seq: r.get(0)?,
        id: r.get(1)?,
        at: r.get(2)?,
        kind,
        repository: r.get(4)?,
        digest: r.get(5)?,
        tag: r.get(6)?,
        media_type: r.get(7)?,
        artifact_type: r.get(8)?,
        size: r.get::<_, Option<i64>>(9)?.map(|s| s.max(0) as u64),
        subject: r.get(10)?,
        actor: r.get(11)?,
        address: r.get(12)?,
        request_id: r.get(13)?,
        count: r.get::<_, i64>(14)?.max(0) as u64,
        detail: r.get(15)?,
    })
}

#[async_trait::async_trait]
impl EventLog for SqliteMeta {
    async fn claim(&self, endpoint: &str, now: i64, until: i64, limit: usize) -> Result<Vec<Claimed>> {
        let endpoint = endpoint.to_owned();
        self.write(Durability::Unsynced, move |tx| {
            let claimed = tx
                .prepare_cached(&events::claim_sql(""))?
                .query_map(params![until, endpoint, now, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut read = tx.prepare_cached(&format!(
                "SELECT {} FROM events e WHERE e.seq = ?1",
                events::EVENT_COLUMNS
            ))?;
            let mut out = Vec::with_capacity(claimed.len());
            for (seq, attempts) in claimed {
                if let Some(event) = read.query_row([seq], event_row).optional()? {
                    out.push(Claimed { event, attempts: attempts.clamp(0, u32::MAX as i64) as u32 });
                }
            }
            out.sort_by_key(|c| c.event.seq);
            Ok(out)
        })
        .await
    }

    async fn settle(&self, endpoint: &str, outcomes: Vec<(i64, Settled)>, now: i64) -> Result<()> {
        let endpoint = endpoint.to_owned();
        self.write(Durability::Unsynced, move |tx| {
            let mut settle = tx.prepare_cached(events::SETTLE)?;
            for (seq, s) in &outcomes {
                let (state, next_at, error, settled_at) = events::settle_params(s, now);
                settle.execute(params![state, next_at, error, settled_at, endpoint, seq])?;
            }
            Ok(())
        })
        .await
    }

    async fn abandon_others(&self, configured: Vec<String>, now: i64) -> Result<u64> {
        self.write(Durability::Unsynced, move |tx| {
            let list =
                serde_json::to_string(&configured).map_err(|e| crate::meta::MetaError::Db(e.to_string()))?;
            let n = tx.execute(
                "UPDATE deliveries SET state = 'dead', settled_at = ?1,
                   last_error = 'the endpoint is no longer configured'
                 WHERE state = 'pending' AND endpoint NOT IN (SELECT value FROM json_each(?2))",
                params![now, list],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn backlog(&self) -> Result<Vec<Backlog>> {
        self.read(|c| {
            let rows = c
                .prepare_cached(events::BACKLOG)?
                .query_map([], |r| {
                    let delivery = |o: usize| -> rusqlite::Result<Option<Delivery>> {
                        Ok(Delivery::from_columns(r.get(o)?, r.get(o + 1)?, r.get(o + 2)?, r.get(o + 3)?))
                    };
                    Ok(Backlog {
                        endpoint: r.get(0)?,
                        pending: r.get::<_, i64>(1)?.max(0) as u64,
                        dead: r.get::<_, i64>(2)?.max(0) as u64,
                        oldest_pending: delivery(3)?,
                        last_dead: delivery(7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn record_audit(&self, entries: Vec<NewEvent>) -> Result<()> {
        self.write(Durability::Unsynced, move |tx| super::outbox::record(tx, &entries, None)).await
    }

    async fn events(&self, q: &EventQuery) -> Result<Vec<Event>> {
        let q = q.clone();
        self.read(move |c| {
            let mut params: Vec<rusqlite::types::Value> = vec![q.before.unwrap_or(i64::MAX).into()];
            params.extend(q.repository.iter().chain(&q.actor).map(|s| s.clone().into()));
            params.push((q.limit.min(events::MAX_LIST) as i64).into());
            let rows = c
                .prepare_cached(&events::list_sql(&q))?
                .query_map(rusqlite::params_from_iter(params), event_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn forget_events(&self, before: i64, limit: usize) -> Result<u64> {
        self.write(Durability::Unsynced, move |tx| {
            Ok(tx.prepare_cached(events::FORGET_EVENTS)?.execute(params![before, limit as i64])? as u64)
        })
        .await
    }
}
