//! Garbage collection at scale, on filesystem + SQLite and (with MinIO) on S3 + PostgreSQL: one
//! run over 10,000 manifests (9,000 of them untagged, so collected, with their blobs), and the
//! p99 of manifest pushes while it runs against the same pushes with no collection running.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;

use crate::load::{self, Plan};
use crate::metric::Metric;
use crate::objstore::S3Target;
use crate::servers::{self, Kind, ServerSpec};

const MANIFESTS: usize = 10_000;
/// Every tenth manifest is tagged (and stays); the rest are pushed by digest only.
const TAGGED_EVERY: usize = 10;
/// Most pushes timed on each side.
const TIMED_PUSHES: usize = 2_000;

const RUN: &str = "garbage collection over 10,000 manifests, 9,000 untagged";
const RATE: &str = "garbage collection: manifests examined per second";
const BLOB_RATE: &str = "garbage collection: blobs released per second";
const IDLE: &str = "manifest push p99, no collection running";
const DURING: &str = "manifest push p99 while a collection runs";

/// Whether the plan asks for any of these scenarios.
pub fn wanted(plan: &Plan) -> bool {
    [RUN, RATE, BLOB_RATE, IDLE, DURING].iter().any(|n| plan.wants(n))
}

/// Runs the scenarios on the filesystem, or on `target` (S3 and PostgreSQL); returns the
/// report's section.
pub async fn run(berth: &Path, scratch: &Path, target: Option<&S3Target>) -> anyhow::Result<String> {
    let spec = ServerSpec { kind: Kind::Berth, bin: berth.to_owned() };
    let c = load::client();
    let dir = scratch.join(if target.is_some() { "berth-gc-s3" } else { "berth-gc" });
    let server = servers::spawn(&spec, &dir, target)?;
    servers::wait_ready(&server, &c).await?;
    let url = server.url.clone();

    let small = load::push_all(&c, &url, 7 << 30, 200, 4096).await?;
    let bodies = Arc::new(load::manifests(&small, MANIFESTS + 2 * TIMED_PUSHES));
    let (c1, u1, b1) = (c.clone(), url.clone(), bodies.clone());
    load::run_jobs(MANIFESTS, 16, move |i| {
        let (c, u, b) = (c1.clone(), u1.clone(), b1.clone());
        let reference = if i % TAGGED_EVERY == 0 { format!("t{i}") } else { digest(&b[i]) };
        async move { put(&c, &u, reference, b[i].clone()).await.map(|_| ()) }
    })
    .await?;

    let idle = timed_pushes(&c, &url, &bodies, MANIFESTS, &AtomicBool::new(false)).await?;
    let running = Arc::new(AtomicBool::new(true));
    let collecting = tokio::spawn({
        let (c, url, running) = (c.clone(), url.clone(), running.clone());
        async move {
            let started = Instant::now();
            let admin = berth_registry::gc::client::Admin::new(c.clone(), &url, None);
            let report = admin.collect(&serde_json::json!({"grace": "0s"})).await;
            running.store(false, Ordering::Relaxed);
            anyhow::Ok((started.elapsed(), report?))
        }
    });
    let during = timed_pushes(&c, &url, &bodies, MANIFESTS + TIMED_PUSHES, &running).await?;
    let (took, report) = collecting.await??;
    if report["manifestsRemoved"].as_u64() != Some((MANIFESTS - MANIFESTS / TAGGED_EVERY) as u64) {
        bail!("the collection removed {} manifests, not 9,000", report["manifestsRemoved"]);
    }
    let blobs = report["blobs"].as_array().map_or(0, Vec::len);
    let deleted = report["blobsDeleted"].as_u64().unwrap_or(0);
    let (idle, during) = (p99(idle), p99(during));
    let metric = |name, unit, value, higher_is_better| Metric { name, unit, value, higher_is_better };
    let rows = [
        metric(RUN, "s", took.as_secs_f64(), false),
        metric(RATE, "manifests/s", MANIFESTS as f64 / took.as_secs_f64(), true),
        metric(BLOB_RATE, "blobs/s", blobs as f64 / took.as_secs_f64(), true),
        metric(IDLE, "ms", idle, false),
        metric(DURING, "ms", during, false),
    ];
    let on = if target.is_some() { "S3 (MinIO) + PostgreSQL" } else { "filesystem + SQLite" };
    let mut s = format!(
        "\n### Garbage collection ({on})\n\n10,000 manifests in one repository, every tenth tagged; one collection with no grace removes the 9,000 others and releases {blobs} blobs (deleting {deleted} objects in the same run). Manifest pushes (4 at a time) are timed while it runs, and again with none running.\n\n| scenario | unit | berth |\n|---|---|---:|\n",
    );
    for m in &rows {
        let _ = writeln!(s, "| {} | {} | {:.2} |", m.name, m.unit, m.value);
    }
    let (ok_run, ok_p99) = (took < Duration::from_secs(60), during <= 1.5 * idle);
    let mark = |ok| if ok { "✓" } else { "✗" };
    let _ = writeln!(s, "\n| target | result |\n|---|---|");
    let _ = writeln!(
        s,
        "| a run over 10,000 manifests in under a minute | {:.1} s {} |",
        took.as_secs_f64(),
        mark(ok_run)
    );
    let _ = writeln!(
        s,
        "| push p99 during a run within 1.5× of without | {during:.2} ms against {idle:.2} ms {} |",
        mark(ok_p99)
    );
    Ok(s)
}

/// Pushes manifests (tagged, so no collection takes them) 4 at a time, from `first`, until
/// `TIMED_PUSHES` are done or, when `while_running` is set, it is cleared; each one's latency.
async fn timed_pushes(
    c: &reqwest::Client,
    url: &str,
    bodies: &Arc<Vec<Bytes>>,
    first: usize,
    while_running: &AtomicBool,
) -> anyhow::Result<Vec<Duration>> {
    let watch = while_running.load(Ordering::Relaxed);
    let mut took = Vec::with_capacity(TIMED_PUSHES);
    for batch in (first..first + TIMED_PUSHES).collect::<Vec<_>>().chunks(4) {
        if watch && !while_running.load(Ordering::Relaxed) {
            break;
        }
        let pushes = batch.iter().map(|&i| put(c, url, format!("p{i}"), bodies[i].clone()));
        for t in futures_util::future::join_all(pushes).await {
            took.push(t?);
        }
    }
    Ok(took)
}

async fn put(c: &reqwest::Client, url: &str, reference: String, body: Bytes) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let r = c
        .put(format!("{url}/v2/{}/manifests/{reference}", load::REPO))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body)
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!("PUT manifest {reference}: {}", r.status());
    }
    Ok(started.elapsed())
}

fn digest(body: &Bytes) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", berth_core::oci::hex(&sha2::Sha256::digest(body)))
}

/// The 99th percentile, in milliseconds.
fn p99(mut took: Vec<Duration>) -> f64 {
    took.sort();
    took.get((took.len() * 99 / 100).min(took.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
