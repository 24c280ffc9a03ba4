//! Opening the database: its connections' settings, its migrations, and the temporary databases
//! killed processes left behind.

use std::path::Path;

use rusqlite::Connection;

use crate::meta::{MetaError, Result};

const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/sqlite/0001_init.sql"),
    include_str!("../../../migrations/sqlite/0002_proxy.sql"),
    include_str!("../../../migrations/sqlite/0003_upload_parts.sql"),
    include_str!("../../../migrations/sqlite/0004_proxy_fetches.sql"),
    include_str!("../../../migrations/sqlite/0005_upload_assembly.sql"),
    include_str!("../../../migrations/sqlite/0006_multipart_uploads.sql"),
    include_str!("../../../migrations/sqlite/0007_blob_states.sql"),
    include_str!("../../../migrations/sqlite/0008_leases.sql"),
    include_str!("../../../migrations/sqlite/0009_tags_by_digest.sql"),
    include_str!("../../../migrations/sqlite/0010_pulled_at.sql"),
    include_str!("../../../migrations/sqlite/0011_gc_runs.sql"),
    include_str!("../../../migrations/sqlite/0012_references_by_child.sql"),
    include_str!("../../../migrations/sqlite/0013_events.sql"),
    include_str!("../../../migrations/sqlite/0014_audit.sql"),
    include_str!("../../../migrations/sqlite/0015_fetch_segments.sql"),
    include_str!("../../../migrations/sqlite/0016_blob_locations.sql"),
    include_str!("../../../migrations/sqlite/0017_tag_pages.sql"),
];

pub(crate) fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    // Every statement berth runs stays prepared: rusqlite's default of 16 per connection is
    // fewer than one push, pull and collection use between them, and a statement pushed out is
    // parsed again at its next use.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 256;

/// Temporary databases left by processes that were killed before they could remove them.
pub(super) fn remove_orphaned_temporaries(tmp: &Path) {
    // Without /proc no process can be told alive or gone: leave everything.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("berth-meta-")?.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(MetaError::Db(format!(
            "database schema version {version} is newer than this berth understands ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
