//! The pull-through cache: berth and CNCF Distribution in proxy mode mirror the same upstream (a
//! plain Distribution holding one 10-layer image), in the same run, pulled by the same client.
//!
//! ```text
//! client ──► mirror (berth | distribution proxy) ──► byte counter (TCP) ──► upstream distribution
//! ```
//! Measured per mirror: a cold pull (empty cache), warm pulls (everything cached), and N clients
//! pulling the same image at once into an empty cache, with the bytes the upstream sent in each
//! case. A direct pull from the upstream is the reference for the cold pull. A pull is what
//! docker and containerd do: the manifest, then the config and layers, three at a time. On S3
//! the N clients also pull through three replicas of each mirror sharing one bucket ([`spread`]).

mod mirror;
mod spread;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::load;
use crate::objstore::Minio;
use mirror::{cpu_time, distribution, pull, start_mirror, ByteCounter, Mirror, PARALLEL_LAYERS, REPO, TAG};
use spread::REPLICAS;

const MIB: usize = 1 << 20;

pub struct ProxyPlan {
    layers: usize,
    layer_size: usize,
    concurrent_clients: usize,
    warm_pulls: usize,
}

impl ProxyPlan {
    pub fn new(quick: bool) -> ProxyPlan {
        if quick {
            ProxyPlan { layers: 10, layer_size: 5 * MIB, concurrent_clients: 4, warm_pulls: 3 }
        } else {
            ProxyPlan { layers: 10, layer_size: 50 * MIB, concurrent_clients: 8, warm_pulls: 5 }
        }
    }

    fn image_bytes(&self) -> u64 {
        (self.layers * self.layer_size) as u64
    }
}

/// The 10-layer image, pushed to the upstream.
async fn seed(c: &reqwest::Client, base: &str, plan: &ProxyPlan) -> anyhow::Result<()> {
    let config = Bytes::from_static(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}");
    let config = load::push_whole(c, base, REPO, config).await?;
    let mut layers = vec![];
    for i in 0..plan.layers {
        let data = load::random_bytes(plan.layer_size, 1000 + i as u64);
        layers.push(load::push_whole(c, base, REPO, data).await?);
    }
    load::push_image(c, base, REPO, TAG, &config, &layers).await
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// What one mirror did.
struct Run {
    cold: Duration,
    cold_cpu: Duration,
    cold_upstream: u64,
    warm: Duration,
    concurrent: Duration,
    concurrent_cpu: Duration,
    concurrent_upstream: u64,
}

async fn measure(
    which: Mirror,
    bins: (&Path, &Path),
    upstream: &str,
    plan: &ProxyPlan,
    scratch: &Path,
    name: &str,
    store: Option<&Minio>,
) -> anyhow::Result<Run> {
    let c = crate::load::client();
    // Cold, then warm, on one mirror.
    let counter = ByteCounter::start(upstream).await?;
    let (mirror, url) =
        start_mirror(which, bins, &scratch.join(format!("{name}-mirror")), &counter.url, store, &c).await?;
    let cpu_before = cpu_time(mirror.0.id());
    let cold = pull(&c, &url, true).await?;
    let cold_cpu = cpu_time(mirror.0.id()) - cpu_before;
    pull(&c, &url, true).await?;
    let mut warm = vec![];
    for _ in 0..plan.warm_pulls {
        warm.push(pull(&c, &url, false).await?);
    }
    drop(mirror);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cold_upstream = counter.sent();

    // N clients at once into an empty cache.
    let counter = ByteCounter::start(upstream).await?;
    let (mirror, url) =
        start_mirror(which, bins, &scratch.join(format!("{name}-concurrent")), &counter.url, store, &c)
            .await?;
    let (start, cpu_before) = (Instant::now(), cpu_time(mirror.0.id()));
    let pulls: Vec<_> = (0..plan.concurrent_clients)
        .map(|_| {
            let (c, url) = (crate::load::client(), url.clone());
            tokio::spawn(async move { pull(&c, &url, true).await })
        })
        .collect();
    for p in pulls {
        p.await??;
    }
    let concurrent = start.elapsed();
    let concurrent_cpu = cpu_time(mirror.0.id()) - cpu_before;
    drop(mirror);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Run {
        cold,
        cold_cpu,
        cold_upstream,
        warm: median(warm),
        concurrent,
        concurrent_cpu,
        concurrent_upstream: counter.sent(),
    })
}

/// Runs the whole comparison, the mirrors' content on the local disk or (`store`) in S3; returns a
/// Markdown section.
pub async fn run(
    berth_bin: &Path,
    distribution_bin: &Path,
    plan: &ProxyPlan,
    scratch: &Path,
    store: Option<&Minio>,
) -> anyhow::Result<String> {
    let c = crate::load::client();
    let scratch = &scratch.join(if store.is_some() { "proxy-s3" } else { "proxy" });
    let (_upstream, upstream) =
        distribution(distribution_bin, &scratch.join("proxy-upstream"), None, None, &c).await?;
    seed(&c, &upstream, plan).await?;
    let mut direct = vec![];
    for _ in 0..3 {
        direct.push(pull(&c, &upstream, true).await?);
    }
    let direct = median(direct);
    let bins = (berth_bin, distribution_bin);
    eprintln!("measuring the pull-through cache: berth...");
    let b = measure(Mirror::Berth, bins, &upstream, plan, scratch, "berth", store).await?;
    eprintln!("measuring the pull-through cache: distribution v3 (proxy mode)...");
    let d = measure(Mirror::Distribution, bins, &upstream, plan, scratch, "distribution", store).await?;
    let n = plan.concurrent_clients;
    let spread = match store {
        Some(m) => {
            eprintln!("measuring the pull-through cache over {REPLICAS} replicas of each mirror...");
            let b = spread::measure(Mirror::Berth, bins, &upstream, n, scratch, m).await?;
            let d = spread::measure(Mirror::Distribution, bins, &upstream, n, scratch, m).await?;
            Some((b, d))
        }
        None => None,
    };

    let image = plan.image_bytes() as f64;
    let secs = |d: Duration| d.as_secs_f64();
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "\n### Pull-through cache{}\n\nOne image of {} layers × {} MiB ({} MiB), pulled manifest first and then {PARALLEL_LAYERS} blobs \
         at a time; cold pulls verify every digest, warm pulls count bytes. A direct (verified) pull from the upstream takes {:.2} s.\n",
        if store.is_some() { ", mirrors on S3 (berth's metadata in PostgreSQL)" } else { "" },
        plan.layers,
        plan.layer_size / MIB,
        plan.image_bytes() / MIB as u64,
        secs(direct)
    );
    let _ = writeln!(
        s,
        "| scenario | unit | berth | distribution v3 proxy | berth's advantage |\n|---|---|---:|---:|---:|"
    );
    let row = |s: &mut String, name: &str, unit: &str, bv: f64, dv: f64, lower_better: bool| {
        let adv = if lower_better { dv / bv } else { bv / dv };
        let _ = writeln!(s, "| {name} | {unit} | {bv:.2} | {dv:.2} | {adv:.2}× |");
    };
    row(&mut s, "cold pull", "s", secs(b.cold), secs(d.cold), true);
    row(
        &mut s,
        "cold pull ÷ direct pull from the upstream",
        "×",
        secs(b.cold) / secs(direct),
        secs(d.cold) / secs(direct),
        true,
    );
    row(&mut s, "mirror CPU time during the cold pull", "s", secs(b.cold_cpu), secs(d.cold_cpu), true);
    row(&mut s, "warm pull (median)", "s", secs(b.warm), secs(d.warm), true);
    row(
        &mut s,
        "warm pull throughput",
        "MB/s",
        image / secs(b.warm) / 1e6,
        image / secs(d.warm) / 1e6,
        false,
    );
    row(
        &mut s,
        "upstream bytes, one cold pull",
        "× image",
        b.cold_upstream as f64 / image,
        d.cold_upstream as f64 / image,
        true,
    );
    row(
        &mut s,
        &format!("{n} concurrent cold pulls, wall time"),
        "s",
        secs(b.concurrent),
        secs(d.concurrent),
        true,
    );
    row(
        &mut s,
        &format!("{n} concurrent cold pulls, upstream bytes"),
        "× image",
        b.concurrent_upstream as f64 / image,
        d.concurrent_upstream as f64 / image,
        true,
    );
    let cpu = &format!("{n} concurrent cold pulls, mirror CPU time");
    row(&mut s, cpu, "s", secs(b.concurrent_cpu), secs(d.concurrent_cpu), true);
    if let Some((b, d)) = &spread {
        let over = format!("{n} concurrent cold pulls over {REPLICAS} replicas on one bucket");
        row(&mut s, &format!("{over}, wall time"), "s", secs(b.wall), secs(d.wall), true);
        let (bc, dc) = (secs(b.cpu), secs(d.cpu));
        row(&mut s, &format!("{over}, CPU time of all replicas"), "s", bc, dc, true);
        let (bu, du) = (b.upstream as f64 / image, d.upstream as f64 / image);
        row(&mut s, &format!("{over}, upstream bytes"), "× image", bu, du, true);
    }
    let _ = writeln!(
        s,
        "\nUpstream bytes are counted on the TCP connections to the upstream (so they include HTTP \
         headers and any retries); 1.00 means every byte of the image crossed once."
    );
    if spread.is_some() {
        let _ = writeln!(
            s,
            "\nOver {REPLICAS} replicas: the same clients spread round-robin over three replicas of each \
             mirror sharing one bucket (berth's also one database), into an empty cache. berth's \
             replicas fetch each blob once between them, the claim's holder publishing what it \
             fetched through storage to the others; their CPU time added up, against one replica \
             serving the same clients, is what that costs."
        );
    }
    Ok(s)
}
