//! Schema migrations, applied once per upgrade by whichever replica gets there first.
//!
//! Every replica that starts runs [`migrate`]: inside one transaction it takes an advisory lock
//! (so the others wait for it, then find nothing left to do), applies the migrations the database
//! lacks, and records each. Changes are expand-then-contract: each migration records the oldest
//! schema version whose code still runs correctly on it, so during a rolling upgrade an old
//! replica keeps serving on a database that a new one has expanded, and refuses (instead of
//! corrupting anything) only once a contracting migration has removed what it needs.

use tokio_postgres::Client;

use super::errors::db_error;
use crate::meta::{MetaError, Result};

struct Migration {
    sql: &'static str,
    /// The oldest schema version whose code still works once this migration is applied.
    compatible_from: i32,
}

const MIGRATIONS: &[Migration] = &[
    Migration { sql: include_str!("../../../migrations/postgres/0001_init.sql"), compatible_from: 1 },
    // A new table only: schema 1's code runs on it unchanged.
    Migration {
        sql: include_str!("../../../migrations/postgres/0002_proxy_fetches.sql"),
        compatible_from: 1,
    },
    Migration {
        sql: include_str!("../../../migrations/postgres/0003_upload_assembly.sql"),
        compatible_from: 1,
    },
    Migration {
        sql: include_str!("../../../migrations/postgres/0004_multipart_uploads.sql"),
        compatible_from: 1,
    },
    // A trigger, a function and a table: older code runs on it, its writes announced for it.
    Migration {
        sql: include_str!("../../../migrations/postgres/0005_lookup_notices.sql"),
        compatible_from: 1,
    },
    // Two columns with defaults: older code runs on it, its links checked again by purges.
    Migration { sql: include_str!("../../../migrations/postgres/0006_blob_states.sql"), compatible_from: 1 },
    // A new table.
    Migration { sql: include_str!("../../../migrations/postgres/0007_leases.sql"), compatible_from: 1 },
    // An index.
    Migration {
        sql: include_str!("../../../migrations/postgres/0008_tags_by_digest.sql"),
        compatible_from: 1,
    },
    // A nullable column.
    Migration { sql: include_str!("../../../migrations/postgres/0009_pulled_at.sql"), compatible_from: 1 },
    // A new table.
    Migration { sql: include_str!("../../../migrations/postgres/0010_gc_runs.sql"), compatible_from: 1 },
    // New tables.
    Migration { sql: include_str!("../../../migrations/postgres/0011_events.sql"), compatible_from: 1 },
    // Columns with defaults.
    Migration { sql: include_str!("../../../migrations/postgres/0012_audit.sql"), compatible_from: 1 },
    // Columns, nullable or with defaults: older replicas fetch without publishing segments.
    Migration {
        sql: include_str!("../../../migrations/postgres/0013_fetch_segments.sql"),
        compatible_from: 1,
    },
    // A trigger: older replicas go on without keeping blob lookups.
    Migration {
        sql: include_str!("../../../migrations/postgres/0014_blob_link_notices.sql"),
        compatible_from: 1,
    },
    // A nullable column older code ignores: it runs on it, so blob locations are written only
    // once no older code can (see `LOCATIONS`).
    Migration {
        sql: include_str!("../../../migrations/postgres/0015_blob_locations.sql"),
        compatible_from: 1,
    },
];

/// The schema version whose code reads blob locations (`blobs.location`): they are written only
/// on a database that code older than it refuses.
pub const LOCATIONS: i32 = 15;

/// The advisory lock's key, shared by every replica (an arbitrary constant: "berthmig").
const LOCK: i64 = 0x6265_7274_686d_6967;

/// The schema version this code writes.
pub fn known() -> i32 {
    MIGRATIONS.len() as i32
}

/// Brings the schema up to date; returns the oldest schema version whose code may still run on
/// the database. A database created from nothing here needs this code's version (its last row
/// says so): no older code ever ran on it, and none may start on it later.
pub async fn migrate(client: &mut Client) -> Result<i32> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await.map_err(db_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS berth_schema (
             version         INTEGER PRIMARY KEY,
             compatible_from INTEGER NOT NULL,
             applied_at      BIGINT  NOT NULL
         )",
    )
    .await
    .map_err(db_error)?;
    let (version, needs) = schema_state(&tx).await?;
    if needs > known() {
        return Err(MetaError::Db(format!(
            "the database's schema (version {version}) needs a berth that knows schema version \
             {needs}; this one knows {}: upgrade berth",
            known()
        )));
    }
    let now = crate::meta::now();
    let created = version <= 0;
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(m.sql).await.map_err(db_error)?;
        let last = i + 1 == MIGRATIONS.len();
        let compatible_from = if created && last { known() } else { m.compatible_from };
        tx.execute(
            "INSERT INTO berth_schema (version, compatible_from, applied_at) VALUES ($1, $2, $3)",
            &[&(i as i32 + 1), &compatible_from, &now],
        )
        .await
        .map_err(db_error)?;
        tracing::info!(version = i + 1, "applied a metadata schema migration");
    }
    tx.commit().await.map_err(db_error)?;
    Ok(if created { known() } else { needs })
}

/// Rules code older than this Berth out of the database, once every replica runs this Berth (or
/// a newer one): older code then refuses to start on it, and what only this code reads (blob
/// locations, [`LOCATIONS`]) is written from the next start of each replica. Returns the
/// oldest schema version whose code could run on it before, and now.
pub async fn contract(client: &mut Client) -> Result<(i32, i32)> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await.map_err(db_error)?;
    let (version, before) = schema_state(&tx).await?;
    if version != known() {
        return Err(MetaError::Db(format!(
            "the database's schema is version {version}, this berth's {}: start this berth on it \
             first (it migrates), then contract",
            known()
        )));
    }
    tx.execute(
        "UPDATE berth_schema SET compatible_from = $1 WHERE version = $1 AND compatible_from < $1",
        &[&known()],
    )
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok((before, before.max(known())))
}

/// The database's schema version and the oldest schema whose code may run on it; both 0 for a
/// database no Berth has migrated.
async fn schema_state(tx: &tokio_postgres::Transaction<'_>) -> Result<(i32, i32)> {
    let migrated: bool =
        tx.query_one("SELECT to_regclass('berth_schema') IS NOT NULL", &[]).await.map_err(db_error)?.get(0);
    if !migrated {
        return Ok((0, 0));
    }
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0), coalesce(max(compatible_from), 0) FROM berth_schema",
            &[],
        )
        .await
        .map_err(db_error)?;
    Ok((row.get(0), row.get(1)))
}
