//! The pull-through cache: berth and CNCF Distribution in proxy mode mirror the same upstream (a
//! plain Distribution holding one 10-layer image), in the same run, pulled by the same client.
//!
//! ```text
//! client ──► mirror (berth | distribution proxy) ──► byte counter (TCP) ──► upstream distribution
//! ```
//! Measured per mirror: a cold pull (empty cache), warm pulls (everything cached), and N clients
//! pulling the same image at once into an empty cache, with the bytes the upstream sent in each
//! case. A direct pull from the upstream is the reference for the cold pull. A pull is what
//! docker and containerd do: the manifest, then the config and layers, three at a time.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::Digest as _;

use crate::load::{self, OCI_MANIFEST};
use crate::objstore::{Minio, S3Target};
use crate::proxy_spread::{self, REPLICAS};

const MIB: usize = 1 << 20;
const REPO: &str = "library/big";
const TAG: &str = "v1";
/// Layers a client fetches at once (docker's and containerd's default is 3).
const PARALLEL_LAYERS: usize = 3;

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

/// A process stopped on drop.
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(url: &str, client: &reqwest::Client) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if client.get(format!("{url}/v2/")).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{url} did not answer within 30 s")
}

/// Distribution, optionally as a proxy of `remote`, its content on the local disk or in `s3`.
async fn distribution(
    bin: &Path,
    data: &Path,
    remote: Option<&str>,
    s3: Option<&S3Target>,
    c: &reqwest::Client,
) -> anyhow::Result<(Process, String)> {
    std::fs::create_dir_all(data)?;
    let addr = format!("127.0.0.1:{}", crate::net::free_port()?);
    let proxy = remote.map(|r| format!("proxy:\n  remoteurl: {r}\n")).unwrap_or_default();
    let storage = match s3 {
        Some(t) => t.distribution_storage(),
        None => format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
            data.join("storage").display()
        ),
    };
    let config = data.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n{storage}http:\n  addr: {addr}\n{proxy}"
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve").arg(config).env("OTEL_TRACES_EXPORTER", "none");
    spawn_ready(cmd, &addr, c).await
}

/// berth mirroring `remote` as its default upstream (so names need no prefix, as with
/// Distribution's proxy mode).
async fn berth(
    bin: &Path,
    data: &Path,
    remote: &str,
    s3: Option<&S3Target>,
    c: &reqwest::Client,
) -> anyhow::Result<(Process, String)> {
    std::fs::create_dir_all(data)?;
    let addr = format!("127.0.0.1:{}", crate::net::free_port()?);
    let config = data.join("berth.yml");
    std::fs::write(
        &config,
        format!(
            "listen: {addr}\ndata_dir: {}\nlog:\n  level: warn\nproxy:\n  upstreams:\n    - name: upstream\n      url: {remote}\n      default: true\n{}",
            data.join("data").display(),
            s3.map(S3Target::berth_config).unwrap_or_default()
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve").arg("--config").arg(config);
    if let Some(t) = s3 {
        cmd.envs(t.env());
    }
    spawn_ready(cmd, &addr, c).await
}

/// Starts a server quietly and waits until it answers at `addr`.
async fn spawn_ready(mut cmd: Command, addr: &str, c: &reqwest::Client) -> anyhow::Result<(Process, String)> {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let url = format!("http://{addr}");
    let p = Process(child);
    wait_ready(&url, c).await?;
    Ok((p, url))
}

/// A TCP forwarder in front of the upstream that counts the bytes the upstream sends.
pub(crate) struct ByteCounter {
    pub(crate) url: String,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ByteCounter {
    pub(crate) async fn start(upstream: &str) -> anyhow::Result<ByteCounter> {
        let target = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let sent = Arc::new(AtomicU64::new(0));
        let counted = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (target, counted) = (target.clone(), counted.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    let (mut in_read, mut in_write) = inbound.split();
                    let (mut out_read, mut out_write) = outbound.into_split();
                    let up = async {
                        let _ = tokio::io::copy(&mut in_read, &mut out_write).await;
                        let _ = out_write.shutdown().await;
                    };
                    // Counted as the bytes pass: a connection the mirror resets when it stops
                    // still counts everything it received.
                    let down = async {
                        let mut buf = vec![0u8; 256 << 10];
                        while let Ok(n) = out_read.read(&mut buf).await {
                            if n == 0 || in_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            counted.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        let _ = in_write.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Ok(ByteCounter { url, sent, task })
    }

    /// Bytes the upstream sent so far (read after the mirror is stopped, so nothing is in flight).
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for ByteCounter {
    fn drop(&mut self) {
        self.task.abort();
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

/// Pulls the image as a container runtime does; fails on any short blob, and with `verify` on any
/// wrong one. (Hashing on the client competes with the server for this machine's cores, so only
/// the pulls that fetch from the upstream verify; warm pulls count bytes.)
pub(crate) async fn pull(c: &reqwest::Client, base: &str, verify: bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let r = c.get(format!("{base}/v2/{REPO}/manifests/{TAG}")).header("accept", OCI_MANIFEST).send().await?;
    if !r.status().is_success() {
        bail!("GET manifest from {base}: {}", r.status());
    }
    let m: serde_json::Value = r.json().await?;
    let mut blobs: Vec<(String, u64)> = vec![];
    for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten()) {
        blobs.push((d["digest"].as_str().context("digest")?.to_owned(), d["size"].as_u64().context("size")?));
    }
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(blobs)
        .map(|(digest, size)| async move {
            let r = c.get(format!("{base}/v2/{REPO}/blobs/{digest}")).send().await?;
            if !r.status().is_success() {
                bail!("GET {digest} from {base}: {}", r.status());
            }
            let mut h = sha2::Sha256::new();
            let mut n = 0u64;
            let mut s = r.bytes_stream();
            while let Some(chunk) = s.next().await {
                let chunk = chunk?;
                n += chunk.len() as u64;
                if verify {
                    h.update(&chunk);
                }
            }
            if n != size || (verify && format!("sha256:{}", berth_core::oci::hex(&h.finalize())) != digest) {
                bail!("{digest} from {base}: {n} bytes, not the content");
            }
            Ok(())
        })
        .buffer_unordered(PARALLEL_LAYERS)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(start.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// CPU time (user + system) a process has used so far.
pub(crate) fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state; utime and stime are
    // fields 14 and 15 of the line, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
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

#[derive(Clone, Copy)]
pub(crate) enum Mirror {
    Berth,
    Distribution,
}

/// A fresh, empty mirror; on S3 with a bucket (and for berth a database) of its own.
async fn start_mirror(
    which: Mirror,
    bins: (&Path, &Path),
    data: &Path,
    remote: &str,
    store: Option<&Minio>,
    c: &reqwest::Client,
) -> anyhow::Result<(Process, String)> {
    let target = match store {
        Some(m) => Some(crate::objstore::target(m, matches!(which, Mirror::Berth)).await?),
        None => None,
    };
    start_on(which, bins, data, remote, target.as_ref(), c).await
}

/// A mirror with its content in `target` (which other replicas may share), or on the local disk.
pub(crate) async fn start_on(
    which: Mirror,
    bins: (&Path, &Path),
    data: &Path,
    remote: &str,
    target: Option<&S3Target>,
    c: &reqwest::Client,
) -> anyhow::Result<(Process, String)> {
    match which {
        Mirror::Berth => berth(bins.0, data, remote, target, c).await,
        Mirror::Distribution => distribution(bins.1, data, Some(remote), target, c).await,
    }
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
            let b = proxy_spread::measure(Mirror::Berth, bins, &upstream, n, scratch, m).await?;
            let d = proxy_spread::measure(Mirror::Distribution, bins, &upstream, n, scratch, m).await?;
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
