//! The store's side of kept lookups (see [`super::lookups`]): reading through them, and writes
//! that return only once every replica has forgotten what they changed.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::errors::db_error;
use super::lookups::{MAX_WAIT, RECHECK};
use super::{query, query_opt, PostgresMeta, Tx, TxFuture};
use crate::meta::{ManifestRecord, Result};
use berth_core::oci::{Reference, RepoName};

impl PostgresMeta {
    /// A kept answer, or the database's (then kept).
    pub(super) async fn lookup(&self, repo: &RepoName, r: &Reference) -> Result<Option<ManifestRecord>> {
        let began = match self.lookups.get(repo, r) {
            Ok(record) => return Ok(Some(record)),
            Err(began) => began,
        };
        let c = self.client().await?;
        let (sql, key) = match r {
            Reference::Digest(d) => (
                "SELECT m.digest, m.media_type, m.size FROM manifests m
                 JOIN repositories r ON r.id = m.repository_id
                 WHERE r.name = $1 AND m.digest = $2",
                d.as_str(),
            ),
            Reference::Tag(t) => (
                "SELECT m.digest, m.media_type, m.size FROM tags t
                 JOIN repositories r ON r.id = t.repository_id
                 JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
                 WHERE r.name = $1 AND t.name = $2",
                t.as_str(),
            ),
        };
        let row = query_opt(&c, sql, &[&repo.as_str(), &key]).await.map_err(db_error)?;
        let found = row.as_ref().map(super::manifest_record).transpose()?;
        if let Some(record) = &found {
            self.lookups.keep(began, repo, r, record);
        }
        Ok(found)
    }

    /// [`PostgresMeta::write`] for a change to tags or manifests of `repo`: announced (even when
    /// no row changed), and returned only once every replica that may have kept an answer about
    /// `repo` has forgotten it.
    pub(super) async fn write_announced<T, F>(&self, repo: &RepoName, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> Fn(&'t Tx<'t>) -> TxFuture<'t, T> + Send + Sync,
    {
        self.write_announced_as(true, repo, f).await
    }

    /// [`Self::write_announced`], committed without waiting for the disk unless `synced`.
    pub(super) async fn write_announced_as<T, F>(&self, synced: bool, repo: &RepoName, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> Fn(&'t Tx<'t>) -> TxFuture<'t, T> + Send + Sync,
    {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let out = self
            .write(synced, |tx| {
                let change = f(tx);
                let (lookups, attempts, repo) = (self.lookups.clone(), attempts.clone(), repo.to_string());
                Box::pin(async move {
                    let value = change.await?;
                    let row = query(
                        tx,
                        "SELECT pg_current_xact_id()::text::bigint,
                                pg_notify('berth_lookups', pg_current_xact_id()::text || ' ' || $1::text)",
                        &[&repo],
                    )
                    .await?;
                    if let Some(txid) = row.first().map(|r| r.get::<_, i64>(0)) {
                        lookups.expect(txid);
                        if let Ok(mut a) = attempts.lock() {
                            a.push(txid);
                        }
                    }
                    Ok(value)
                })
            })
            .await;
        self.lookups.kept.invalidate(repo);
        let attempts = attempts.lock().map(|a| a.clone()).unwrap_or_default();
        if let (Ok(_), Some(&txid)) = (&out, attempts.last()) {
            self.await_replicas(txid).await;
        }
        for txid in attempts {
            self.lookups.forget(txid);
        }
        out
    }

    /// Waits until every replica that listened before `txid` committed, and whose lease is
    /// alive, has acknowledged it.
    async fn await_replicas(&self, txid: i64) {
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let pending = async { self.lookups.pending(&*self.client().await?, txid).await };
            let wake = match pending.await {
                Ok(replicas) => match self.lookups.acked(txid, &replicas) {
                    Ok(()) => return,
                    Err(wake) => Some((wake, replicas)),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "replicas to hear from not known yet");
                    None
                }
            };
            if Instant::now() >= deadline {
                let replicas = wake.map(|w| w.1).unwrap_or_default();
                tracing::warn!(?replicas, "a change was acknowledged before every replica confirmed it");
                return;
            }
            match wake {
                Some((wake, _)) => drop(tokio::time::timeout(RECHECK, wake.notified()).await),
                None => tokio::time::sleep(RECHECK).await,
            }
        }
    }
}
