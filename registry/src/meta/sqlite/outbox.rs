//! The events a change records in its own transaction (see [`crate::meta::outbox`]).

use rusqlite::{params, Connection};

use crate::meta::events::{self, NewEvent};
use crate::meta::Result;

/// Records `events` (and their deliveries) in the change's transaction; a tag deletion's
/// event takes `digest` when it has none.
pub(super) fn record(tx: &Connection, events: &[NewEvent], digest: Option<&str>) -> Result<()> {
    let mut insert = tx.prepare_cached(events::INSERT_EVENT)?;
    let mut deliver = tx.prepare_cached(events::INSERT_DELIVERY)?;
    for e in events {
        let seq: i64 = insert.query_row(
            params![
                e.id,
                e.at,
                e.kind.as_str(),
                e.repository,
                e.digest.as_ref().map(|d| d.as_str()).or(digest),
                e.tag,
                e.media_type,
                e.artifact_type,
                e.size.map(|s| s as i64),
                e.subject.as_ref().map(|d| d.as_str()),
                e.actor,
                e.address,
                e.request_id,
                e.count.min(i64::MAX as u64) as i64,
                e.detail
            ],
            |r| r.get(0),
        )?;
        for endpoint in &e.endpoints {
            deliver.execute(params![seq, endpoint, e.at])?;
        }
    }
    Ok(())
}
