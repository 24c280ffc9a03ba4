//! The loads, identical for every server: blob push and pull (1 MiB and 256 MiB, one stream and
//! eight), many small blob pushes, manifest PUTs, and manifest GETs by tag (through wrk).
//!
//! Pushes use docker's flow: `POST` a session, `PATCH` the bytes, `PUT ?digest=`; the 256 MiB
//! pushes are timed in containerd's flow too (`POST`, then one `PUT ?digest=` with the bytes),
//! which BuildKit, nerdctl and oras share. Content is distinct per push (an 8-byte prefix varies)
//! so no server can skip work by deduplicating, and digests are computed before the clock starts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::Digest as _;

pub(crate) use crate::content::{random_bytes, Blob, MIB};
use crate::metric::Metric;
use crate::wrk;

pub(crate) const MB: f64 = 1e6;
pub(crate) const REPO: &str = "bench/load";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const WHOLE_PUT: &str = "push 256 MiB blob, 1 stream, containerd's flow (POST, PUT with the bytes)";
const WHOLE_PUT8: &str = "push 256 MiB blobs, 8 streams, containerd's flow";

pub struct Plan {
    pub(crate) small_blobs: usize,
    pub(crate) manifest_puts: usize,
    pub(crate) one_mib_pushes: usize,
    pub(crate) big_pushes: usize,
    pub(crate) get_seconds: u32,
    /// Only the scenarios whose name contains this (for investigating one of them).
    only: Option<String>,
}

impl Plan {
    pub fn new(quick: bool, only: Option<String>) -> Plan {
        if quick {
            Plan {
                small_blobs: 200,
                manifest_puts: 200,
                one_mib_pushes: 16,
                big_pushes: 1,
                get_seconds: 3,
                only,
            }
        } else {
            Plan {
                small_blobs: 2000,
                manifest_puts: 2000,
                one_mib_pushes: 64,
                big_pushes: 2,
                get_seconds: 10,
                only,
            }
        }
    }

    pub fn wants(&self, scenario: &str) -> bool {
        self.only.as_deref().is_none_or(|o| scenario.contains(o))
    }

    pub fn describe(&self) -> String {
        format!(
            "{} × 1 MiB and {} × 256 MiB pushes per stream, {} × 4 KiB pushes at concurrency 16, \
             {} manifest PUTs at concurrency 16, manifest GETs by tag (one hot tag, and a random one of \
             1,000 in 100 repositories) and GET /v2/ for {} s each at 64 connections (wrk)",
            self.one_mib_pushes, self.big_pushes, self.small_blobs, self.manifest_puts, self.get_seconds
        )
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(128)
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap_or_default()
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

fn location(r: &reqwest::Response) -> anyhow::Result<String> {
    Ok(r.headers().get("location").context("no Location")?.to_str()?.to_owned())
}

/// How a client sends a blob's bytes in its upload session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// docker: one streamed `PATCH`, then `PUT ?digest=` without a body.
    Patch,
    /// containerd: `PUT ?digest=` with the body, straight after the `POST`.
    Put,
}

pub(crate) async fn push(c: &reqwest::Client, base: &str, blob: &Blob) -> anyhow::Result<()> {
    push_in(c, base, blob, Flow::Patch).await
}

pub(crate) async fn push_in(c: &reqwest::Client, base: &str, blob: &Blob, flow: Flow) -> anyhow::Result<()> {
    let r = c.post(format!("{base}/v2/{REPO}/blobs/uploads/")).send().await?;
    if r.status().as_u16() != 202 {
        bail!("POST upload: {}", r.status());
    }
    let mut loc = absolute(base, &location(&r)?);
    if flow == Flow::Patch {
        let r = c
            .patch(&loc)
            .header("content-type", "application/octet-stream")
            .body(blob.stream())
            .send()
            .await?;
        if r.status().as_u16() != 202 {
            bail!("PATCH upload: {}", r.status());
        }
        loc = absolute(base, &location(&r)?);
    }
    let sep = if loc.contains('?') { '&' } else { '?' };
    let put = c.put(format!("{loc}{sep}digest={}", blob.digest));
    let put = match flow {
        Flow::Patch => put,
        Flow::Put => put.header("content-type", "application/octet-stream").body(blob.stream()),
    };
    let r = put.send().await?;
    if r.status().as_u16() != 201 {
        bail!("PUT upload: {}", r.status());
    }
    Ok(())
}

/// Pushes `blobs` in `flow` through `concurrency` workers; returns the wall time.
async fn timed_pushes(
    c: &reqwest::Client,
    base: &str,
    blobs: &Arc<Vec<Blob>>,
    concurrency: usize,
    flow: Flow,
) -> anyhow::Result<Duration> {
    let (c, base, blobs) = (c.clone(), base.to_owned(), blobs.clone());
    run_jobs(blobs.len(), concurrency, move |i| {
        let (c, base, blobs) = (c.clone(), base.clone(), blobs.clone());
        async move { push_in(&c, &base, &blobs[i], flow).await }
    })
    .await
}

pub(crate) async fn pull(c: &reqwest::Client, base: &str, digest: &str, want: usize) -> anyhow::Result<()> {
    read_all(c, &format!("{base}/v2/{REPO}/blobs/{digest}"), want).await
}

/// GETs `url` and reads the body to its end, checking its length.
pub(crate) async fn read_all(c: &reqwest::Client, url: &str, want: usize) -> anyhow::Result<()> {
    let r = c.get(url).send().await?;
    if !r.status().is_success() {
        bail!("GET {url}: {}", r.status());
    }
    let mut n = 0;
    let mut s = r.bytes_stream();
    while let Some(chunk) = s.next().await {
        n += chunk?.len();
    }
    if n != want {
        bail!("GET {url}: {n} bytes, want {want}");
    }
    Ok(())
}

/// Pushes `n` distinct blobs of `size` bytes through `url` (seeded by `seed`).
pub(crate) async fn push_all(
    c: &reqwest::Client,
    url: &str,
    seed: u64,
    n: usize,
    size: usize,
) -> anyhow::Result<Arc<Vec<Blob>>> {
    let base = random_bytes(size, seed);
    let blobs: Arc<Vec<Blob>> = Arc::new((0..n as u64).map(|i| Blob::new(&base, seed + i)).collect());
    let (c1, u1, b1) = (c.clone(), url.to_owned(), blobs.clone());
    run_jobs(n, 8, move |i| {
        let (c, u, b) = (c1.clone(), u1.clone(), b1.clone());
        async move { push(&c, &u, &b[i]).await }
    })
    .await?;
    Ok(blobs)
}

/// Pushes `data` whole to `repo` (a session, then one `PUT ?digest=`): its digest and size.
pub(crate) async fn push_whole(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    data: Bytes,
) -> anyhow::Result<(String, usize)> {
    let digest = format!("sha256:{}", berth_core::oci::hex(&sha2::Sha256::digest(&data)));
    let size = data.len();
    let r = c.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await?;
    let loc = absolute(base, &location(&r)?);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c.put(format!("{loc}{sep}digest={digest}")).body(data).send().await?;
    if r.status().as_u16() != 201 {
        bail!("pushing a blob to {repo}: {}", r.status());
    }
    Ok((digest, size))
}

/// Pushes an image manifest naming `config` and `layers` (digest, size) as `repo:tag`.
pub(crate) async fn push_image(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    config: &(String, usize),
    layers: &[(String, usize)],
) -> anyhow::Result<()> {
    let descriptor = |(digest, size): &(String, usize), media_type: &str| serde_json::json!({"mediaType": media_type, "digest": digest, "size": size});
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config, "application/vnd.oci.image.config.v1+json"),
        "layers": layers.iter().map(|l| descriptor(l, "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
    });
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.to_string())
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!("pushing {repo}:{tag}: {}", r.status());
    }
    Ok(())
}

/// Runs `jobs` through `concurrency` workers; returns the wall time.
pub(crate) async fn run_jobs<F, Fut>(jobs: usize, concurrency: usize, f: F) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, f) = (next.clone(), f.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs {
                        return anyhow::Ok(());
                    }
                    f(i).await?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(start.elapsed())
}

pub(crate) fn rate(name: &'static str, unit: &'static str, amount: f64, took: Duration) -> Metric {
    Metric { name, unit, value: amount / took.as_secs_f64(), higher_is_better: true }
}

/// Runs the plan's scenarios (and what they need: pulls read what was pushed, manifests refer to
/// the small blobs); reports only the scenarios asked for.
pub async fn run(plan: &Plan, base: &str, c: &reqwest::Client) -> anyhow::Result<Vec<Metric>> {
    let mut out = scenarios(plan, base, c).await?;
    out.retain(|m| plan.wants(m.name));
    Ok(out)
}

async fn scenarios(plan: &Plan, base: &str, c: &reqwest::Client) -> anyhow::Result<Vec<Metric>> {
    let mut out = Vec::new();
    for (size, label_push, label_pull, label_push8, label_pull8, count) in [
        (
            MIB,
            "push 1 MiB blobs, 1 stream",
            "pull 1 MiB blobs, 1 stream",
            "push 1 MiB blobs, 8 streams",
            "pull 1 MiB blobs, 8 streams",
            plan.one_mib_pushes,
        ),
        (
            256 * MIB,
            "push 256 MiB blob, 1 stream",
            "pull 256 MiB blob, 1 stream",
            "push 256 MiB blobs, 8 streams",
            "pull 256 MiB blobs, 8 streams",
            plan.big_pushes,
        ),
    ] {
        let whole = size > MIB && [WHOLE_PUT, WHOLE_PUT8].iter().any(|l| plan.wants(l));
        if !whole && ![label_push, label_pull, label_push8, label_pull8].iter().any(|l| plan.wants(l)) {
            continue;
        }
        let base_bytes = random_bytes(size, size as u64);
        let single: Arc<Vec<Blob>> = Arc::new((0..count as u64).map(|n| Blob::new(&base_bytes, n)).collect());
        let multi: Arc<Vec<Blob>> =
            Arc::new((0..(8 * count) as u64).map(|n| Blob::new(&base_bytes, 1_000_000 + n)).collect());
        let total_single = (count * size) as f64 / MB;
        let total_multi = (8 * count * size) as f64 / MB;

        let took = timed_pushes(c, base, &single, 1, Flow::Patch).await?;
        out.push(rate(label_push, "MB/s", total_single, took));
        let took = timed_pushes(c, base, &multi, 8, Flow::Patch).await?;
        out.push(rate(label_push8, "MB/s", total_multi, took));
        if whole {
            // The same sizes again in containerd's flow, other content (nothing deduplicates).
            let fresh = |from: u64, n: usize| -> Arc<Vec<Blob>> {
                Arc::new((0..n as u64).map(|i| Blob::new(&base_bytes, from + i)).collect())
            };
            let took = timed_pushes(c, base, &fresh(2_000_000, count), 1, Flow::Put).await?;
            out.push(rate(WHOLE_PUT, "MB/s", total_single, took));
            let took = timed_pushes(c, base, &fresh(3_000_000, 8 * count), 8, Flow::Put).await?;
            out.push(rate(WHOLE_PUT8, "MB/s", total_multi, took));
        }

        // Pull what was pushed, twice as many reads as writes for the small size.
        let reads = if size == MIB { 2 } else { 1 };
        let (c1, b1, s1) = (c.clone(), base.to_owned(), single.clone());
        let n = count;
        let took = run_jobs(count * reads, 1, move |i| {
            let (c, b, s) = (c1.clone(), b1.clone(), s1.clone());
            async move {
                let blob = &s[i % n];
                pull(&c, &b, &blob.digest, blob.len()).await
            }
        })
        .await?;
        out.push(rate(label_pull, "MB/s", total_single * reads as f64, took));
        let (c1, b1, s1) = (c.clone(), base.to_owned(), multi.clone());
        let n = 8 * count;
        let took = run_jobs(8 * count * reads, 8, move |i| {
            let (c, b, s) = (c1.clone(), b1.clone(), s1.clone());
            async move {
                let blob = &s[i % n];
                pull(&c, &b, &blob.digest, blob.len()).await
            }
        })
        .await?;
        out.push(rate(label_pull8, "MB/s", total_multi * reads as f64, took));
    }

    const SMALL: &str = "push 4 KiB blobs, concurrency 16";
    const SMALL_WHOLE: &str = "push 4 KiB blobs, concurrency 16, containerd's flow";
    const MANIFEST_PUT: &str = "manifest PUT, concurrency 16";
    const MANIFEST_GET: &str = "manifest GET by tag, 64 connections";
    let small_rows = [SMALL, SMALL_WHOLE, MANIFEST_PUT, MANIFEST_GET, MANIFEST_GET_SPREAD, CEILING];
    if !small_rows.iter().any(|l| plan.wants(l)) {
        return Ok(out);
    }
    let small_base = random_bytes(4096, 4096);
    let small_blobs = |from: u64| -> Arc<Vec<Blob>> {
        Arc::new((0..plan.small_blobs as u64).map(|n| Blob::new(&small_base, from + n)).collect())
    };
    let small = small_blobs(0);
    let took = timed_pushes(c, base, &small, 16, Flow::Patch).await?;
    out.push(rate(SMALL, "blobs/s", plan.small_blobs as f64, took));
    if plan.wants(SMALL_WHOLE) {
        let took = timed_pushes(c, base, &small_blobs(1_000_000), 16, Flow::Put).await?;
        out.push(rate(SMALL_WHOLE, "blobs/s", plan.small_blobs as f64, took));
    }
    if ![MANIFEST_PUT, MANIFEST_GET, MANIFEST_GET_SPREAD, CEILING].iter().any(|l| plan.wants(l)) {
        return Ok(out);
    }

    let manifests = Arc::new(manifests(&small, plan.manifest_puts));
    let (c1, b1, m1) = (c.clone(), base.to_owned(), manifests.clone());
    let took = run_jobs(plan.manifest_puts, 16, move |i| {
        let (c, b, m) = (c1.clone(), b1.clone(), m1.clone());
        async move {
            let r = c
                .put(format!("{b}/v2/{REPO}/manifests/t{i}"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(m[i].clone())
                .send()
                .await?;
            if r.status().as_u16() != 201 {
                bail!("PUT manifest: {}", r.status());
            }
            Ok(())
        }
    })
    .await?;
    out.push(rate(MANIFEST_PUT, "manifests/s", plan.manifest_puts as f64, took));
    out.push(Metric {
        name: MANIFEST_GET,
        unit: "requests/s",
        value: wrk::wrk(base, &[format!("/v2/{REPO}/manifests/t0")], plan.get_seconds)?,
        higher_is_better: true,
    });
    if plan.wants(MANIFEST_GET_SPREAD) {
        let paths = wrk::spread(c, base, REPO, &small, &manifests).await?;
        out.push(Metric {
            name: MANIFEST_GET_SPREAD,
            unit: "requests/s",
            value: wrk::wrk(base, &paths, plan.get_seconds)?,
            higher_is_better: true,
        });
    }
    if plan.wants(CEILING) {
        // The same server stack on a route that reads no database and no storage: what the
        // manifest rows are measured against.
        out.push(Metric {
            name: CEILING,
            unit: "requests/s",
            value: wrk::wrk(base, &["/v2/".to_owned()], plan.get_seconds)?,
            higher_is_better: true,
        });
    }
    Ok(out)
}

const MANIFEST_GET_SPREAD: &str = "manifest GET, random of 1000 tags in 100 repositories";
const CEILING: &str = "GET /v2/ (no database, no storage), 64 connections";
pub(crate) fn manifests(blobs: &[Blob], n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let config = &blobs[i % blobs.len()];
            let layer = &blobs[(i + 1) % blobs.len()];
            let m = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest, "size": config.len()},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.digest, "size": layer.len()}],
                "annotations": {"bench.index": i.to_string()},
            });
            Bytes::from(m.to_string())
        })
        .collect()
}
