//! A manifest's rows in one transaction: its repository, blob row, edges, tags and events.

use deadpool_postgres::GenericClient;

use super::errors::TxResult;
use super::outbox;
use super::statements::{ensure_repo, execute, query, query_opt, Tx};
use crate::meta::{parse_stored, precondition, MetaError, NewManifest, Stored};
use berth_core::oci::{Descriptor, Digest, Tag};

pub(super) async fn link_blob_tx(
    tx: &Tx<'_>,
    repo: &str,
    digest: &Digest,
    size: u64,
    stored: Stored,
) -> TxResult<()> {
    let now = crate::meta::now();
    record_blob(tx, digest, size, now, stored).await?;
    let id = ensure_repo(tx, repo, now).await?;
    let digest = digest.as_str();
    execute(tx, crate::meta::gc::LINK, &[&id, &digest, &now]).await?;
    Ok(())
}

/// [`link_blob_tx`] for an object written at `location` ([`crate::meta::sweep::RECORD_AT`]);
/// whether it is the blob's object.
pub(super) async fn link_blob_at_tx(
    tx: &Tx<'_>,
    repo: &str,
    digest: &Digest,
    size: u64,
    location: &str,
) -> TxResult<bool> {
    let now = crate::meta::now();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&digest.as_str(), &(size as i64), &now, &location];
    let row = query_opt(tx, crate::meta::sweep::RECORD_AT, &params).await?;
    let row = row.map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)));
    let placed = crate::meta::recorded_at(digest, location, row)?;
    let id = ensure_repo(tx, repo, now).await?;
    execute(tx, crate::meta::gc::LINK, &[&id, &digest.as_str(), &now]).await?;
    Ok(placed)
}

/// Records the blob's row for a write of its object (see [`crate::meta::sweep`]); the statement
/// locks the row, so a release or purge of the same digest waits for this transaction.
pub(super) async fn record_blob(
    tx: &Tx<'_>,
    digest: &Digest,
    size: u64,
    now: i64,
    stored: Stored,
) -> TxResult<()> {
    use crate::meta::sweep::{RECORD_ASSUMED, RECORD_WRITTEN};
    let row = match stored {
        Stored::Written | Stored::Confirmed => {
            let confirmed = stored == Stored::Confirmed;
            query_opt(tx, RECORD_WRITTEN, &[&digest.as_str(), &(size as i64), &now, &confirmed]).await?
        }
        Stored::Assumed => query_opt(tx, RECORD_ASSUMED, &[&digest.as_str()]).await?,
    };
    let state: Option<String> = row.map(|r| r.get(0));
    Ok(crate::meta::recorded_blob(digest, stored, state.as_deref())?)
}

/// The first reference the repository (`None`: not created yet) does not hold, as an error.
/// `lock` holds what was found until the transaction ends, so no delete removes it meanwhile.
pub(super) async fn check_references<C: GenericClient>(
    c: &C,
    repo: Option<i64>,
    blobs: &[Descriptor],
    manifests: &[Descriptor],
    lock: bool,
) -> TxResult<()> {
    let Some(repo) = repo else {
        return Err(match (blobs.first(), manifests.first()) {
            (Some(b), _) => MetaError::BlobUnknown(b.digest.clone()).into(),
            (None, Some(m)) => MetaError::ManifestUnknown(m.digest.clone()).into(),
            (None, None) => return Ok(()),
        });
    };
    // `OF rb`: the links are locked, as a delete removes them; the blobs' rows are not.
    let suffix = if lock { " FOR SHARE OF rb" } else { "" };
    let blob_sizes = format!(
        "SELECT rb.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
         WHERE rb.repository_id = $1 AND rb.digest = ANY($2){suffix}"
    );
    let suffix = if lock { " FOR SHARE" } else { "" };
    let manifest_sizes =
        format!("SELECT digest, size FROM manifests WHERE repository_id = $1 AND digest = ANY($2){suffix}");
    for (sql, wanted, missing) in [
        (blob_sizes, blobs, MetaError::BlobUnknown as fn(Digest) -> MetaError),
        (manifest_sizes, manifests, MetaError::ManifestUnknown as fn(Digest) -> MetaError),
    ] {
        if wanted.is_empty() {
            continue;
        }
        let digests: Vec<&str> = wanted.iter().map(|d| d.digest.as_str()).collect();
        let found: std::collections::HashMap<String, i64> =
            query(c, &sql, &[&repo, &digests]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
        for d in wanted {
            crate::meta::held(d, found.get(d.digest.as_str()).copied(), missing)?;
        }
    }
    Ok(())
}

pub(super) async fn put_manifest_tx(tx: &Tx<'_>, m: &NewManifest) -> TxResult<()> {
    let now = crate::meta::now();
    let repo = ensure_repo(tx, m.repo.as_str(), now).await?;
    if m.verify_references {
        let children: &[Descriptor] = if m.children_optional { &[] } else { &m.manifests };
        check_references(tx, Some(repo), &m.blobs, children, true).await?;
    }
    record_blob(tx, &m.digest, m.size, now, m.stored).await?;
    let digest = m.digest.as_str();
    let inserted = execute(
        tx,
        "INSERT INTO manifests
           (repository_id, digest, media_type, size, artifact_type, subject, annotations, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (repository_id, digest) DO NOTHING",
        &[
            &repo,
            &digest,
            &m.media_type,
            &(m.size as i64),
            &m.artifact_type,
            &m.subject.as_ref().map(Digest::as_str),
            &m.annotations,
            &now,
        ],
    )
    .await?;
    if inserted == 0 {
        execute(tx, crate::meta::gc::REFRESH_MANIFEST, &[&now, &repo, &digest]).await?;
    } else {
        for (kind, children) in [("blob", &m.blobs), ("manifest", &m.manifests)] {
            if children.is_empty() {
                continue;
            }
            let children: Vec<&str> = children.iter().map(|c| c.digest.as_str()).collect();
            execute(
                tx,
                "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest, kind)
                 SELECT $1, $2, child, $4 FROM unnest($3::text[]) AS child ON CONFLICT DO NOTHING",
                &[&repo, &digest, &children, &kind],
            )
            .await?;
        }
    }
    if let Some(c) = &m.condition {
        let current = match &c.tag {
            // By digest, what the reference names is the manifest if it was there before (the
            // insert above waited for any concurrent one of the same digest).
            None => (inserted == 0).then(|| m.digest.clone()),
            Some(tag) => tag_now_locked(tx, repo, tag, digest, now).await?,
        };
        precondition::check(&c.expect, current)?;
    }
    for tag in &m.tags {
        execute(
            tx,
            "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest,
               updated_at = excluded.updated_at",
            &[&repo, &tag.as_str(), &digest, &now],
        )
        .await?;
    }
    Ok(outbox::record(tx, &m.events, None).await?)
}

/// What `tag` names now, its row locked until the transaction ends, so that no other write moves
/// it between this look and the caller's. An absent tag cannot be locked, so it is claimed (made
/// to name `digest`) in its place; if another transaction created it first, its row is looked at
/// again, now that it exists.
async fn tag_now_locked(
    tx: &Tx<'_>,
    repo: i64,
    tag: &Tag,
    digest: &str,
    now: i64,
) -> TxResult<Option<Digest>> {
    for _ in 0..CLAIMS {
        if let Some(row) = query_opt(tx, precondition::TAG_NOW_LOCKED, &[&repo, &tag.as_str()]).await? {
            return Ok(Some(parse_stored("digest", row.get(0))?));
        }
        let claimed = execute(
            tx,
            "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repository_id, name) DO NOTHING",
            &[&repo, &tag.as_str(), &digest, &now],
        )
        .await?;
        if claimed == 1 {
            return Ok(None);
        }
    }
    Err(MetaError::Contended(format!(
        "tag {tag} was created and removed again while a conditional push looked at it; push again"
    ))
    .into())
}

/// How many times an absent tag is looked at again after another transaction created it.
const CLAIMS: usize = 3;
