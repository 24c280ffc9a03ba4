//! The pull-through cache across replicas: N clients pulling one image at once into an empty
//! cache, spread round-robin over three replicas of a mirror that share one bucket (berth's also
//! share one database).
//!
//! berth's replicas fetch each blob from the upstream once between them: the replica holding a
//! blob's claim publishes what it has fetched, through storage, to the replicas waiting for it.
//! The CPU of all replicas together, against one replica serving the same clients, is what that
//! publishing and following costs.

use std::path::Path;
use std::time::{Duration, Instant};

use super::mirror::{cpu_time, pull, start_on, ByteCounter, Mirror, Process};
use crate::load;
use crate::objstore::{self, Minio};

pub(super) const REPLICAS: usize = 3;

/// What the replicas of one mirror did together.
pub(super) struct Spread {
    pub(super) wall: Duration,
    /// User and system time of every replica, added up.
    pub(super) cpu: Duration,
    /// Bytes the upstream sent to all of them.
    pub(super) upstream: u64,
}

pub(super) async fn measure(
    which: Mirror,
    bins: (&Path, &Path),
    upstream: &str,
    clients: usize,
    scratch: &Path,
    store: &Minio,
) -> anyhow::Result<Spread> {
    let c = load::client();
    let counter = ByteCounter::start(upstream).await?;
    let target = objstore::target(store, matches!(which, Mirror::Berth)).await?;
    let name = match which {
        Mirror::Berth => "berth",
        Mirror::Distribution => "distribution",
    };
    let mut mirrors: Vec<(Process, String)> = Vec::new();
    for i in 0..REPLICAS {
        let data = scratch.join(format!("{name}-replica-{i}"));
        mirrors.push(start_on(which, bins, &data, &counter.url, Some(&target), &c).await?);
    }
    let cpu = |m: &[(Process, String)]| m.iter().map(|(p, _)| cpu_time(p.0.id())).sum::<Duration>();
    let (start, before) = (Instant::now(), cpu(&mirrors));
    let pulls: Vec<_> = (0..clients)
        .map(|i| {
            let (c, url) = (load::client(), mirrors[i % REPLICAS].1.clone());
            tokio::spawn(async move { pull(&c, &url, true).await })
        })
        .collect();
    for p in pulls {
        p.await??;
    }
    let wall = start.elapsed();
    let cpu = cpu(&mirrors) - before;
    drop(mirrors);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Spread { wall, cpu, upstream: counter.sent() })
}
