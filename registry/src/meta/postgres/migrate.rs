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
    // A nullable column older code's leases leave empty.
    Migration {
        sql: include_str!("../../../migrations/postgres/0016_replica_schemas.sql"),
        compatible_from: 1,
    },
    // Indexes.
    Migration { sql: include_str!("../../../migrations/postgres/0017_tag_pages.sql"), compatible_from: 1 },
];

/// The schema version whose code reads blob locations (`blobs.location`): they are written only
/// on a database that code older than it refuses.
pub const LOCATIONS: i32 = 15;

/// How every connection of this code names itself (`application_name`): `berth/s<the schema it
/// knows>`, then what it is for and any name the database URL gave, so a replica can tell whether
/// code older than it is connected ([`contract_when_alone`]).
pub fn session_name(parts: &[&str]) -> String {
    let mut name = format!("berth/s{}", known());
    for part in parts.iter().filter(|p| !p.is_empty()) {
        name.push(' ');
        name.push_str(part);
    }
    // PostgreSQL keeps 63 bytes of it.
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

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

/// Rules code older than this Berth out of the database at once (`berth contract-schema`: its
/// caller knows every replica runs this Berth or a newer one; replicas do it by themselves with
/// [`contract_when_alone`]). Older code then refuses to start on it, and what only this code
/// reads (blob locations, [`LOCATIONS`]) is written by each replica from its next check
/// ([`super::upgrade`]). Returns the oldest schema version whose code could run on it before,
/// and now.
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
    set_compatible_from(&tx).await?;
    tx.commit().await.map_err(db_error)?;
    Ok((before, before.max(known())))
}

/// Whether [`contract_when_alone`] contracted the schema (or found it contracted), or why not yet.
#[derive(Debug, PartialEq, Eq)]
pub enum Contracting {
    Done,
    Waiting(String),
}

/// [`contract`]s the schema once no code older than this Berth can be running on the database:
/// no session is connected whose name does not say it is this Berth or a newer one (older
/// Berths, and any other client, name themselves otherwise; see [`session_name`]), and no lease
/// of an older replica was alive in the last minute (one whose connections broke a moment ago).
/// The check and the contract hold the migration lock, so older code that starts meanwhile has
/// either migrated before (and is connected, so seen) or migrates after (and is refused).
pub async fn contract_when_alone(client: &mut Client) -> Result<Contracting> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await.map_err(db_error)?;
    let (version, needs) = schema_state(&tx).await?;
    if needs >= known() {
        return Ok(Contracting::Done);
    }
    if version != known() {
        return Ok(Contracting::Waiting(format!(
            "the database's schema is version {version}, this berth's {}",
            known()
        )));
    }
    let others = tx
        .query(
            // Another role's session shows no backend type: taken as a client.
            "SELECT coalesce(application_name, ''), coalesce(usename::text, '?'),
                    coalesce(' from ' || host(client_addr), '')
             FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND coalesce(backend_type, 'client backend') = 'client backend'
               AND coalesce(substring(application_name from '^berth/s([0-9]{1,9})(?: |$)')::int, 0) < $1
             ORDER BY backend_start LIMIT 5",
            &[&known()],
        )
        .await
        .map_err(db_error)?;
    if !others.is_empty() {
        let who: Vec<String> = others
            .iter()
            .map(|r| {
                format!(
                    "'{}' (role {}{})",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2)
                )
            })
            .collect();
        return Ok(Contracting::Waiting(format!(
            "sessions that may be older Berths are connected: {}",
            who.join(", ")
        )));
    }
    let leases = super::lookups::older_replicas(&tx, known()).await?;
    if leases > 0 {
        return Ok(Contracting::Waiting(format!(
            "{leases} replica(s) of an older Berth held a lease within the last minute"
        )));
    }
    set_compatible_from(&tx).await?;
    tx.commit().await.map_err(db_error)?;
    tracing::info!(
        schema = known(),
        "every replica runs this Berth: contracted the metadata schema (older Berths now refuse it)"
    );
    Ok(Contracting::Done)
}

/// Whether the schema is contracted, without contracting it (`metadata.contract: manual`: the
/// operator keeps older Berths able to run until they run `berth contract-schema`).
pub async fn contracted(client: &mut Client) -> Result<Contracting> {
    let tx = client.transaction().await.map_err(db_error)?;
    let (_, needs) = schema_state(&tx).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(if needs >= known() {
        Contracting::Done
    } else {
        Contracting::Waiting(
            "metadata.contract is manual: run `berth contract-schema` once no older Berth needs to \
             run on this database again"
                .into(),
        )
    })
}

/// Records that the newest migration needs this code's version.
async fn set_compatible_from(tx: &tokio_postgres::Transaction<'_>) -> Result<()> {
    tx.execute(
        "UPDATE berth_schema SET compatible_from = $1 WHERE version = $1 AND compatible_from < $1",
        &[&known()],
    )
    .await
    .map_err(db_error)?;
    Ok(())
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
