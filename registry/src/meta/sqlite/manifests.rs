//! The statements of manifests and blob links, each run in its caller's transaction: the rows a
//! push or a link writes (the repository, the blob's row, the references, tags and events), a
//! manifest's lookup, and the deletes of a manifest and of a tag.

use rusqlite::{params, Connection, OptionalExtension};

use super::outbox;
use crate::meta::sweep::Stored;
use crate::meta::{
    parse_stored, precondition, ManifestRecord, MetaError, NewEvent, NewManifest, Precondition, Result,
};
use berth_core::oci::{Descriptor, Digest, Reference};

pub(super) fn link_blob_tx(
    tx: &Connection,
    repo: &str,
    digest: &Digest,
    size: u64,
    stored: Stored,
) -> Result<()> {
    let now = crate::meta::now();
    record_blob(tx, digest, size, now, stored)?;
    let id = ensure_repo(tx, repo, now)?;
    tx.prepare_cached(crate::meta::gc::LINK)?.execute(params![id, digest.as_str(), now])?;
    Ok(())
}

/// [`link_blob_tx`] for an object written at `location` ([`crate::meta::sweep::RECORD_AT`]);
/// whether it is the blob's object.
pub(super) fn link_blob_at_tx(
    tx: &Connection,
    repo: &str,
    digest: &Digest,
    size: u64,
    location: &str,
) -> Result<bool> {
    let now = crate::meta::now();
    let row = tx
        .prepare_cached(crate::meta::sweep::RECORD_AT)?
        .query_row(params![digest.as_str(), size as i64, now, location], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let placed = crate::meta::recorded_at(digest, location, row)?;
    let id = ensure_repo(tx, repo, now)?;
    tx.prepare_cached(crate::meta::gc::LINK)?.execute(params![id, digest.as_str(), now])?;
    Ok(placed)
}

pub(super) fn row_to_triple(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

/// The first reference the repository (`None`: not created yet) does not hold, as an error.
pub(super) fn check_references(
    c: &Connection,
    repo: Option<i64>,
    blobs: &[Descriptor],
    manifests: &[Descriptor],
) -> Result<()> {
    let Some(repo) = repo else {
        return match (blobs.first(), manifests.first()) {
            (Some(b), _) => Err(MetaError::BlobUnknown(b.digest.clone())),
            (None, Some(m)) => Err(MetaError::ManifestUnknown(m.digest.clone())),
            (None, None) => Ok(()),
        };
    };
    let mut blob_size = c.prepare_cached(
        "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
         WHERE rb.repository_id = ?1 AND rb.digest = ?2",
    )?;
    for b in blobs {
        let stored = blob_size.query_row(params![repo, b.digest.as_str()], |r| r.get(0)).optional()?;
        crate::meta::held(b, stored, MetaError::BlobUnknown)?;
    }
    let mut manifest_size =
        c.prepare_cached("SELECT size FROM manifests WHERE repository_id = ?1 AND digest = ?2")?;
    for child in manifests {
        let stored =
            manifest_size.query_row(params![repo, child.digest.as_str()], |r| r.get(0)).optional()?;
        crate::meta::held(child, stored, MetaError::ManifestUnknown)?;
    }
    Ok(())
}

pub(super) fn put_manifest_tx(tx: &Connection, m: &NewManifest) -> Result<()> {
    let now = crate::meta::now();
    let repo = ensure_repo(tx, m.repo.as_str(), now)?;
    if m.verify_references {
        check_references(tx, Some(repo), &m.blobs, if m.children_optional { &[] } else { &m.manifests })?;
    }
    record_blob(tx, &m.digest, m.size, now, m.stored)?;
    let digest = m.digest.as_str();
    let inserted = tx.execute(
        "INSERT INTO manifests
           (repository_id, digest, media_type, size, artifact_type, subject, annotations, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (repository_id, digest) DO NOTHING",
        params![
            repo,
            digest,
            m.media_type,
            m.size as i64,
            m.artifact_type,
            m.subject.as_ref().map(Digest::as_str),
            m.annotations,
            now
        ],
    )?;
    if let Some(c) = &m.condition {
        // By digest, what the reference names is the manifest if it was there before.
        let current = match &c.tag {
            None => (inserted == 0).then(|| m.digest.clone()),
            Some(tag) => tx
                .prepare_cached(precondition::TAG_NOW)?
                .query_row(params![repo, tag.as_str()], |r| r.get::<_, String>(0))
                .optional()?
                .map(|d| parse_stored("digest", d))
                .transpose()?,
        };
        precondition::check(&c.expect, current)?;
    }
    if inserted == 0 {
        tx.prepare_cached(crate::meta::gc::REFRESH_MANIFEST)?.execute(params![now, repo, digest])?;
    } else {
        let mut edge = tx.prepare_cached(
            "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest, kind)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )?;
        for b in &m.blobs {
            edge.execute(params![repo, digest, b.digest.as_str(), "blob"])?;
        }
        for child in &m.manifests {
            edge.execute(params![repo, digest, child.digest.as_str(), "manifest"])?;
        }
    }
    let mut set_tag = tx.prepare_cached(
        "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest,
           updated_at = excluded.updated_at",
    )?;
    for tag in &m.tags {
        set_tag.execute(params![repo, tag.as_str(), digest, now])?;
    }
    outbox::record(tx, &m.events, None)
}

pub(super) fn repo_id(conn: &Connection, repo: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
        .query_row([repo], |r| r.get(0))
        .optional()?)
}

pub(super) fn ensure_repo(tx: &Connection, repo: &str, now: i64) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO repositories (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
    )?
    .execute(params![repo, now])?;
    repo_id(tx, repo)?.ok_or_else(|| MetaError::Db("repository vanished while inserting".into()))
}

/// Records the blob's row for a write of its object ([`crate::meta::sweep`]).
pub(super) fn record_blob(
    tx: &Connection,
    digest: &Digest,
    size: u64,
    now: i64,
    stored: Stored,
) -> Result<()> {
    let state: Option<String> = match stored {
        Stored::Written | Stored::Confirmed => tx
            .prepare_cached(crate::meta::sweep::RECORD_WRITTEN)?
            .query_row(params![digest.as_str(), size as i64, now, stored == Stored::Confirmed], |r| r.get(0))
            .optional()?,
        Stored::Assumed => tx
            .prepare_cached(crate::meta::sweep::RECORD_ASSUMED)?
            .query_row([digest.as_str()], |r| r.get(0))
            .optional()?,
    };
    crate::meta::recorded_blob(digest, stored, state.as_deref())
}

/// The manifest `r` names in `repo`, if any.
pub(super) fn manifest_tx(c: &Connection, repo: &str, r: &Reference) -> Result<Option<ManifestRecord>> {
    let row = match r {
        Reference::Digest(d) => c
            .prepare_cached(
                "SELECT m.digest, m.media_type, m.size FROM manifests m
                 JOIN repositories r ON r.id = m.repository_id
                 WHERE r.name = ?1 AND m.digest = ?2",
            )?
            .query_row([repo, d.as_str()], row_to_triple)
            .optional()?,
        Reference::Tag(t) => c
            .prepare_cached(
                "SELECT m.digest, m.media_type, m.size FROM tags t
                 JOIN repositories r ON r.id = t.repository_id
                 JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
                 WHERE r.name = ?1 AND t.name = ?2",
            )?
            .query_row([repo, t.as_str()], row_to_triple)
            .optional()?,
    };
    row.map(|(digest, media_type, size)| {
        Ok(ManifestRecord { digest: parse_stored("digest", digest)?, media_type, size: size as u64 })
    })
    .transpose()
}

/// Deletes a manifest of `repo` and the tags naming it; whether it was there.
pub(super) fn delete_manifest_tx(
    tx: &Connection,
    repo: &str,
    digest: &str,
    event: Option<NewEvent>,
) -> Result<bool> {
    let Some(id) = repo_id(tx, repo)? else { return Ok(false) };
    tx.execute("DELETE FROM tags WHERE repository_id = ?1 AND digest = ?2", params![id, digest])?;
    let n =
        tx.execute("DELETE FROM manifests WHERE repository_id = ?1 AND digest = ?2", params![id, digest])?;
    if n > 0 {
        outbox::record(tx, event.as_slice(), None)?;
    }
    Ok(n > 0)
}

/// Deletes a tag of `repo` if `expect` holds for what it names; whether it was there.
pub(super) fn delete_tag_tx(
    tx: &Connection,
    repo: &str,
    tag: &str,
    expect: &Precondition,
    event: Option<NewEvent>,
) -> Result<bool> {
    if !expect.is_none() {
        let now: Option<String> = tx
            .prepare_cached(precondition::NAMED_TAG_NOW)?
            .query_row(params![repo, tag], |r| r.get(0))
            .optional()?;
        precondition::check(expect, now.map(|d| parse_stored("digest", d)).transpose()?)?;
    }
    let named: Option<String> = tx
        .query_row(
            "DELETE FROM tags WHERE repository_id = (SELECT id FROM repositories WHERE name = ?1)
                 AND name = ?2 RETURNING digest",
            params![repo, tag],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(digest) = &named {
        outbox::record(tx, event.as_slice(), Some(digest))?;
    }
    Ok(named.is_some())
}
