//! Manifest lookups kept in memory on every replica, and still exact when another replica writes.
//!
//! A pull's first step, resolving a tag or digest, would otherwise cost a pooled connection and a
//! round trip to the database. Each replica keeps answers in a [`Resolved`], and every change to
//! a tag or a manifest is announced to all replicas: a trigger (migration 0005) notifies the
//! channel `berth_lookups` with "<transaction id> <repository>", which PostgreSQL delivers to
//! every listening connection when the transaction commits. Each replica holds one such
//! connection, forgets the repository's answers, and acknowledges on `berth_acks`.
//!
//! A writer acknowledges its client only once every replica that may hold a stale answer has
//! forgotten it: after committing, it waits for the acknowledgements of the replicas in
//! `lookup_replicas` whose lease is alive and which listened before the write committed (a replica
//! that started listening later cleared everything when it did). So the pull after an
//! acknowledged push sees the push, on whichever replica it lands.
//!
//! A replica trusts what it kept only while it knows it is listening: it renews its lease every
//! second, and only after a ping it sent itself came back over its listening connection. Its own
//! trust ends [`FENCE`] after the last renewal was sent, before the lease ends in the database
//! ([`LEASE_MS`]); so a writer that stops waiting for a silent replica (its lease ended) never
//! leaves that replica serving from memory. When the connection breaks, the replica stops trusting
//! at once, clears, and reconnects; writers wait at most until its lease ends.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_postgres::Notification;

use super::errors::db_error;
use super::pool::{self, SharedPool};
use crate::meta::resolved::{self, Generation, Resolved};
use crate::meta::{FoundBlob, ManifestRecord, Result};
use berth_core::oci::{Digest, Reference, RepoName};
use tokio_postgres::GenericClient;

/// How often a replica renews its lease and pings itself.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long a renewed lease lasts, in the database's clock.
const LEASE_MS: i64 = 4_000;
/// How long a replica trusts what it kept after sending a renewal: shorter than the lease.
const FENCE: Duration = Duration::from_millis(3_500);
/// A ping not heard back in this long is taken as lost and sent again.
const PING_RESEND: Duration = Duration::from_secs(5);
/// How often a waiting writer looks again at which replicas it must hear from.
pub(super) const RECHECK: Duration = Duration::from_millis(250);
/// The longest a writer waits; only a writer that cannot hear acknowledgements itself gets here.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(10);
/// The pause before a broken listening connection is made again.
const RECONNECT: Duration = Duration::from_secs(1);
/// Leases ended this long ago are removed.
const FORGET_AFTER_MS: i64 = 60_000;

/// The database's clock in milliseconds, in SQL.
macro_rules! now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

pub(super) struct Lookups {
    /// This replica's name in `lookup_replicas` and in acknowledgements.
    pub(super) id: String,
    pub(super) kept: Resolved,
    /// Until when (milliseconds since `started`) kept answers may be served; 0 when not at all.
    trusted_until: AtomicU64,
    started: Instant,
    /// Set by [`Lookups::leave`]: the lease is given up for good.
    left: AtomicBool,
    state: Mutex<State>,
    /// Writes waiting for acknowledgements, by transaction id.
    waiting: Mutex<HashMap<i64, Waiter>>,
}

#[derive(Default)]
struct State {
    /// The listening connection in use: its number and the snapshot taken after its LISTEN.
    session: Option<(u64, String)>,
    sessions: u64,
    /// The ping in flight: its number and when it was sent.
    ping: Option<(u64, Instant)>,
    pings: u64,
    /// Whether a ping came back over the current connection since the last renewal.
    heard: bool,
}

struct Waiter {
    acked: HashSet<String>,
    wake: Arc<Notify>,
}

impl Lookups {
    /// Starts listening and renewing for as long as both `self` and `pool` live.
    pub(super) fn start(pool: &Arc<SharedPool>) -> Arc<Lookups> {
        let lookups = Arc::new(Lookups {
            id: uuid::Uuid::new_v4().simple().to_string(),
            kept: Resolved::new(resolved::CAPACITY),
            trusted_until: AtomicU64::new(0),
            started: Instant::now(),
            left: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            waiting: Mutex::new(HashMap::new()),
        });
        tokio::spawn(listen(Arc::downgrade(&lookups), Arc::downgrade(pool)));
        tokio::spawn(renew(Arc::downgrade(&lookups), Arc::downgrade(pool)));
        lookups
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether kept answers may be served now.
    pub(super) fn trusted(&self) -> bool {
        self.now() < self.trusted_until.load(Ordering::Acquire)
    }

    /// A kept answer, or the generation to keep the database's answer under.
    pub(super) fn get(
        &self,
        repo: &RepoName,
        r: &Reference,
    ) -> std::result::Result<ManifestRecord, Generation> {
        self.vouch(self.kept.get(repo, r))
    }

    pub(super) fn keep(&self, began: Generation, repo: &RepoName, r: &Reference, record: &ManifestRecord) {
        if self.trusted() {
            self.kept.insert(began, repo, r, record);
        }
    }

    /// A kept blob, or the generation to keep the database's answer under.
    pub(super) fn blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> std::result::Result<FoundBlob, Generation> {
        self.vouch(self.kept.blob(repo, digest))
    }

    pub(super) fn keep_blob(&self, began: Generation, repo: &RepoName, digest: &Digest, found: &FoundBlob) {
        if self.trusted() {
            self.kept.insert_blob(began, repo, digest, found);
        }
    }

    /// A kept answer, served only while this replica is sure it hears of every change.
    fn vouch<T>(&self, kept: std::result::Result<T, Generation>) -> std::result::Result<T, Generation> {
        match kept {
            Ok(found) if self.trusted() => Ok(found),
            Ok(_) => Err(self.kept.generation()),
            Err(began) => Err(began),
        }
    }

    /// Forgets the answers about the repository named `repo` (all of them when it is not a name).
    fn changed(&self, repo: &str) {
        match repo.parse::<RepoName>() {
            Ok(name) => self.kept.invalidate(&name),
            Err(_) => self.kept.clear(),
        }
    }

    /// The listening connection broke or was replaced: nothing kept is trusted any more.
    fn lapse(&self) {
        let Ok(mut state) = self.state.lock() else { return };
        state.session = None;
        state.ping = None;
        state.heard = false;
        self.trusted_until.store(0, Ordering::Release);
        self.kept.clear();
    }

    /// Gives the lease up for good (the process is stopping): writers stop waiting for this
    /// replica at once instead of when its lease would have ended, and it keeps nothing.
    pub(super) async fn leave(&self, pool: &SharedPool) {
        self.left.store(true, Ordering::Release);
        self.lapse();
        let gone = async { drop_lease(&*pool::client(pool).await?, &self.id).await };
        if let Err(e) = gone.await {
            tracing::warn!(error = %e, "leaving the replicas that keep lookups; others wait until the lease ends");
        }
    }

    /// A new listening connection listens; it counts once a ping comes back over it.
    fn listening(&self, since: String) {
        let Ok(mut state) = self.state.lock() else { return };
        if self.left.load(Ordering::Acquire) {
            return;
        }
        state.sessions += 1;
        state.session = Some((state.sessions, since));
        state.ping = None;
        state.heard = false;
    }

    /// The lease of `session` was renewed at `sent`: trust until the fence, clearing first when
    /// trust had lapsed (notices may have been missed meanwhile).
    fn extend(&self, session: u64, sent: Instant) {
        let Ok(state) = self.state.lock() else { return };
        if state.session.as_ref().map(|s| s.0) != Some(session) {
            return;
        }
        if !self.trusted() {
            self.kept.clear();
        }
        let until = (sent + FENCE).saturating_duration_since(self.started).as_millis() as u64;
        self.trusted_until.store(until, Ordering::Release);
    }

    /// One notification from the listening connection; announced transactions join `announced`.
    fn notice(&self, n: &Notification, announced: &mut Vec<i64>) {
        let Some((first, rest)) = n.payload().split_once(' ') else { return };
        match n.channel() {
            "berth_lookups" => {
                self.changed(rest);
                if let Ok(txid) = first.parse() {
                    announced.push(txid);
                }
            }
            "berth_acks" => {
                let Ok(txid) = first.parse::<i64>() else { return };
                let Ok(mut waiting) = self.waiting.lock() else { return };
                if let Some(w) = waiting.get_mut(&txid) {
                    w.acked.insert(rest.to_owned());
                    w.wake.notify_one();
                }
            }
            "berth_pings" if first == self.id => {
                let Ok(seq) = rest.parse::<u64>() else { return };
                let Ok(mut state) = self.state.lock() else { return };
                if state.ping.is_some_and(|(n, _)| n == seq) {
                    state.ping = None;
                    state.heard = true;
                }
            }
            _ => {}
        }
    }

    /// Renews the lease if a ping came back since the last renewal, and sends the next ping.
    async fn renew(&self, pool: &SharedPool, sweep: bool) -> Result<()> {
        let (session, renewing, ping) = {
            let Ok(mut state) = self.state.lock() else { return Ok(()) };
            if self.left.load(Ordering::Acquire) {
                return Ok(());
            }
            let Some(session) = state.session.clone() else { return Ok(()) };
            let renewing = std::mem::take(&mut state.heard);
            let ping = match state.ping {
                Some((_, at)) if at.elapsed() < PING_RESEND => None,
                _ => {
                    state.pings += 1;
                    state.ping = Some((state.pings, Instant::now()));
                    Some(state.pings)
                }
            };
            (session, renewing, ping)
        };
        let c = pool::client(pool).await?;
        if renewing {
            let sent = Instant::now();
            c.execute(
                concat!(
                    "INSERT INTO lookup_replicas (id, alive_until, listening_since, schema) VALUES ($1, ",
                    now_ms!(),
                    " + $2, $3, $4) ON CONFLICT (id) DO UPDATE
                     SET alive_until = EXCLUDED.alive_until, listening_since = EXCLUDED.listening_since,
                         schema = EXCLUDED.schema"
                ),
                &[&self.id, &LEASE_MS, &session.1, &super::migrate::known()],
            )
            .await
            .map_err(db_error)?;
            if self.left.load(Ordering::Acquire) {
                // Left while this renewal ran: the lease it brought back goes again.
                return drop_lease(&c, &self.id).await;
            }
            self.extend(session.0, sent);
        }
        if let Some(seq) = ping {
            c.execute("SELECT pg_notify('berth_pings', $1)", &[&format!("{} {seq}", self.id)])
                .await
                .map_err(db_error)?;
        }
        if sweep {
            c.execute(
                concat!("DELETE FROM lookup_replicas WHERE alive_until < ", now_ms!(), " - $1"),
                &[&FORGET_AFTER_MS],
            )
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }

    /// Listens for acknowledgements of `txid` (before it commits, so none is missed).
    pub(super) fn expect(&self, txid: i64) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(txid, Waiter { acked: HashSet::new(), wake: Arc::new(Notify::new()) });
        }
    }

    pub(super) fn forget(&self, txid: i64) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(&txid);
        }
    }

    /// The other replicas a writer of `txid` must hear from: alive by their lease, and listening
    /// since before `txid` committed (asked after it did).
    pub(super) async fn pending(&self, c: &tokio_postgres::Client, txid: i64) -> Result<Vec<String>> {
        let rows = c
            .query(
                concat!(
                    "SELECT id FROM lookup_replicas WHERE id <> $1 AND alive_until > ",
                    now_ms!(),
                    " AND NOT pg_visible_in_snapshot($2::bigint::text::xid8, listening_since::pg_snapshot)"
                ),
                &[&self.id, &txid],
            )
            .await
            .map_err(db_error)?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// Whether all of `replicas` acknowledged `txid`; else what wakes on the next one.
    pub(super) fn acked(&self, txid: i64, replicas: &[String]) -> std::result::Result<(), Arc<Notify>> {
        let Ok(waiting) = self.waiting.lock() else { return Ok(()) };
        match waiting.get(&txid) {
            Some(w) if !replicas.iter().all(|r| w.acked.contains(r)) => Err(w.wake.clone()),
            _ => Ok(()),
        }
    }
}

/// How many replicas of code older than `schema` held a lease within the last minute (older
/// code leaves the lease's schema empty); ended leases are kept that long.
pub(super) async fn older_replicas(c: &impl GenericClient, schema: i32) -> Result<i64> {
    let row = c
        .query_one(
            concat!(
                "SELECT count(*) FROM lookup_replicas WHERE coalesce(schema, 0) < $1 AND alive_until > ",
                now_ms!(),
                " - $2"
            ),
            &[&schema, &FORGET_AFTER_MS],
        )
        .await
        .map_err(db_error)?;
    Ok(row.get(0))
}

/// Removes replica `id`'s lease: writers stop waiting for it.
async fn drop_lease(c: &tokio_postgres::Client, id: &str) -> Result<()> {
    c.execute("DELETE FROM lookup_replicas WHERE id = $1", &[&id]).await.map_err(db_error)?;
    Ok(())
}

/// Keeps a listening connection for as long as the store lives, making it again when it breaks
/// or when the database URL changes.
async fn listen(lookups: Weak<Lookups>, pool: Weak<SharedPool>) {
    loop {
        let ended = session(&lookups, &pool).await;
        let Some(l) = lookups.upgrade() else { return };
        l.lapse();
        drop(l);
        match ended {
            Ended::Gone => return,
            Ended::Moved => {}
            Ended::Broken(e) => {
                tracing::warn!(error = %e, "not listening for changes by other replicas; reconnecting");
                tokio::time::sleep(RECONNECT).await;
            }
        }
    }
}

enum Ended {
    /// The store was dropped.
    Gone,
    /// The database URL changed.
    Moved,
    Broken(String),
}

async fn session(lookups: &Weak<Lookups>, pool: &Weak<SharedPool>) -> Ended {
    let Some(p) = pool.upgrade() else { return Ended::Gone };
    let Some(id) = lookups.upgrade().map(|l| l.id.clone()) else { return Ended::Gone };
    let (url, client, mut notices) = match p.connect_listener(&format!("lookups-{id}")).await {
        Ok(c) => c,
        Err(e) => return Ended::Broken(e.to_string()),
    };
    drop(p);
    let ready = async {
        client
            .batch_execute(
                "SET synchronous_commit = off; LISTEN berth_lookups; LISTEN berth_acks; LISTEN berth_pings",
            )
            .await?;
        let since: String = client.query_one("SELECT pg_current_snapshot()::text", &[]).await?.get(0);
        let ack = client
            .prepare(
                "SELECT pg_notify('berth_acks', t::text || ' ' || $2::text) FROM unnest($1::bigint[]) AS t",
            )
            .await?;
        Ok::<_, tokio_postgres::Error>((since, ack))
    };
    let (since, ack) = match ready.await {
        Ok(r) => r,
        Err(e) => return Ended::Broken(e.to_string()),
    };
    match lookups.upgrade() {
        Some(l) => l.listening(since),
        None => return Ended::Gone,
    }
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            n = notices.recv() => match n {
                Some(n) => n,
                None => return Ended::Broken("the connection closed".into()),
            },
            _ = tick.tick() => {
                if lookups.strong_count() == 0 {
                    // Leave at once rather than have writers wait for this lease to end.
                    let _ = drop_lease(&client, &id).await;
                    return Ended::Gone;
                }
                match pool.upgrade().map(|p| p.url()) {
                    None => return Ended::Gone,
                    Some(Ok(u)) if u != url => return Ended::Moved,
                    Some(_) => continue,
                }
            }
        };
        let Some(l) = lookups.upgrade() else { return Ended::Gone };
        let mut announced = Vec::new();
        let mut next = Some(first);
        while let Some(n) = next {
            l.notice(&n, &mut announced);
            next = notices.try_recv().ok();
        }
        drop(l);
        if !announced.is_empty() {
            if let Err(e) = client.execute(&ack, &[&announced, &id]).await {
                return Ended::Broken(e.to_string());
            }
        }
    }
}

async fn renew(lookups: Weak<Lookups>, pool: Weak<SharedPool>) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 0u64.. {
        tick.tick().await;
        let (Some(l), Some(p)) = (lookups.upgrade(), pool.upgrade()) else { return };
        if let Err(e) = l.renew(&p, round % 60 == 0).await {
            tracing::debug!(error = %e, "lookup lease not renewed");
        }
    }
}

#[cfg(test)]
mod tests;
