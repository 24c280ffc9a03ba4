//! Finishing a rolling upgrade by itself: a replica whose database an older Berth used checks,
//! every [`CHECK_EVERY`], whether any older code is still connected, and contracts the schema
//! once none is ([`migrate::contract_when_alone`]); every replica then starts writing what only
//! code of its version reads (blob locations, [`migrate::LOCATIONS`]) when it next looks. With
//! `metadata.contract: manual` it only looks, so an older Berth can be rolled back to until
//! someone runs `berth contract-schema`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use berth_core::config::Contract;

use super::migrate::{self, Contracting};
use super::pool::{self, SharedPool};
use crate::meta::Result;

/// How often a replica on an uncontracted database looks again.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(30);

/// Whether this replica may record blobs away from their digests' keys: no code older than
/// [`migrate::LOCATIONS`] can run on the database.
pub(super) struct Locations(AtomicBool);

impl Locations {
    pub(super) fn new(compatible_from: i32) -> Arc<Locations> {
        Arc::new(Locations(AtomicBool::new(compatible_from >= migrate::LOCATIONS)))
    }

    pub(super) fn on(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// One check: contracts the schema if no older code is connected (and `contract` is `auto`), and
/// turns locations on once the schema is contracted (by this replica, another, or by hand).
pub(super) async fn check(
    pool: &SharedPool,
    locations: &Locations,
    contract: Contract,
) -> Result<Contracting> {
    let mut client = pool::client(pool).await?;
    let outcome = match contract {
        Contract::Auto => migrate::contract_when_alone(&mut client).await?,
        Contract::Manual => migrate::contracted(&mut client).await?,
    };
    if outcome == Contracting::Done {
        locations.0.store(true, Ordering::Release);
    }
    Ok(outcome)
}

/// Checks until the schema is contracted, for as long as the store lives; says each new reason
/// to wait once.
pub(super) fn start(pool: &Arc<SharedPool>, locations: &Arc<Locations>, contract: Contract) {
    if locations.on() {
        return;
    }
    let (pool, locations): (Weak<SharedPool>, Weak<Locations>) =
        (Arc::downgrade(pool), Arc::downgrade(locations));
    tokio::spawn(async move {
        let mut said = String::new();
        loop {
            let (Some(p), Some(l)) = (pool.upgrade(), locations.upgrade()) else { return };
            match check(&p, &l, contract).await {
                Ok(Contracting::Done) => return,
                Ok(Contracting::Waiting(why)) if why != said => {
                    tracing::info!(
                        reason = %why,
                        "the metadata schema stays compatible with older Berths; blobs pushed in pieces are copied"
                    );
                    said = why;
                }
                Ok(Contracting::Waiting(_)) => {}
                Err(e) => tracing::debug!(error = %e, "could not check whether older Berths still run"),
            }
            drop((p, l));
            tokio::time::sleep(CHECK_EVERY).await;
        }
    });
}
