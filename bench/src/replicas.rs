//! berth at scale on S3 + PostgreSQL: three replicas over one bucket and one database, loaded
//! together, against one of them alone; and blob pulls by redirect (`redirect: true`, the bytes
//! straight from the store) against reading the same objects from the store directly.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::load::{self, Blob, Plan, MB, MIB};
use crate::metric::Metric;
use crate::objstore::{self, Minio};
use crate::servers::{self, Kind, ServerSpec};
use crate::wrk;

const REPLICAS: usize = 3;
const GET_ONE: &str = "manifest GET, random of 1000 tags, one replica, 63 connections";
const GET_ALL: &str = "manifest GET, random of 1000 tags, three replicas together, 21 connections each";
const PULL_ONE: &str = "pull 1 MiB blobs, 9 streams, one replica";
const PULL_ALL: &str = "pull 1 MiB blobs, 9 streams over three replicas";
const REDIRECTED: &str = "pull 1 MiB blobs, 8 streams, `redirect: true` (307, then the store)";
const DIRECT: &str = "pull 1 MiB blobs, 8 streams, the same objects read from the store directly";
const REDIRECTED_BIG: &str = "pull 256 MiB blob, 1 stream, `redirect: true`";
const DIRECT_BIG: &str = "pull 256 MiB blob, 1 stream, read from the store directly";

/// Whether the plan asks for any of these scenarios.
pub fn wanted(plan: &Plan) -> bool {
    [GET_ONE, GET_ALL, PULL_ONE, PULL_ALL, REDIRECTED, DIRECT, REDIRECTED_BIG, DIRECT_BIG]
        .iter()
        .any(|n| plan.wants(n))
}

/// Runs both comparisons; returns the report's section.
pub async fn run(berth: &Path, store: &Minio, plan: &Plan, scratch: &Path) -> anyhow::Result<String> {
    let spec = ServerSpec { kind: Kind::Berth, bin: berth.to_owned() };
    let c = load::client();
    let mut target = objstore::target(store, true).await?;
    let mut replicas = Vec::new();
    for i in 0..REPLICAS {
        let r = servers::spawn(&spec, &scratch.join(format!("berth-replica-{i}")), Some(&target))?;
        servers::wait_ready(&r, &c).await?;
        replicas.push(r);
    }
    let urls: Arc<Vec<String>> = Arc::new(replicas.iter().map(|r| r.url.clone()).collect());
    let mut out = Vec::new();

    // Content: 1 MiB blobs and 1,000 tags in 100 repositories, pushed through the first replica.
    let blobs = load::push_all(&c, &urls[0], 1 << 30, 9 * plan.one_mib_pushes, MIB).await?;
    let small = load::push_all(&c, &urls[0], 4096, plan.small_blobs.min(200), 4096).await?;
    let manifests = load::manifests(&small, 1000);
    let paths = wrk::spread(&c, &urls[0], load::REPO, &small, &manifests).await?;

    let seconds = plan.get_seconds;
    let one = wrk::wrk_with(&urls[0], &paths, seconds, 2, 63)?;
    out.push(requests(GET_ONE, one));
    let together: Vec<_> = urls
        .iter()
        .map(|u| {
            let (u, paths) = (u.clone(), paths.clone());
            std::thread::spawn(move || wrk::wrk_with(&u, &paths, seconds, 1, 21))
        })
        .collect();
    let mut sum = 0.0;
    for w in together {
        sum += w.join().map_err(|_| anyhow::anyhow!("a wrk thread panicked"))??;
    }
    out.push(requests(GET_ALL, sum));

    let total = (2 * blobs.len() * MIB) as f64 / MB;
    for (name, spread) in [(PULL_ONE, 1), (PULL_ALL, REPLICAS)] {
        let (c1, u1, b1) = (c.clone(), urls.clone(), blobs.clone());
        let n = blobs.len();
        let took = load::run_jobs(2 * n, 9, move |i| {
            let (c, u, b) = (c1.clone(), u1.clone(), b1.clone());
            async move { load::pull(&c, &u[i % spread], &b[i % n].digest, b[i % n].len()).await }
        })
        .await?;
        out.push(load::rate(name, "MB/s", total, took));
    }
    drop(replicas);

    // The same bucket and database, one replica that redirects blob GETs.
    target.redirect = true;
    let r = servers::spawn(&spec, &scratch.join("berth-redirect"), Some(&target))?;
    servers::wait_ready(&r, &c).await?;
    let blobs: Arc<Vec<Blob>> = Arc::new(blobs.iter().take(8 * plan.one_mib_pushes).cloned().collect());
    out.extend(redirect_against_direct(&c, &r.url, &blobs, 8, (REDIRECTED, DIRECT)).await?);
    let big = load::push_all(&c, &r.url, 256 << 20, plan.big_pushes, 256 * MIB).await?;
    out.extend(redirect_against_direct(&c, &r.url, &big, 1, (REDIRECTED_BIG, DIRECT_BIG)).await?);
    drop(r);
    Ok(render(&out, plan))
}

fn requests(name: &'static str, value: f64) -> Metric {
    Metric { name, unit: "requests/s", value, higher_is_better: true }
}

/// Pulls every blob twice through berth's redirects, and twice straight from the presigned URLs
/// those redirects name, `streams` at a time.
async fn redirect_against_direct(
    c: &reqwest::Client,
    url: &str,
    blobs: &Arc<Vec<Blob>>,
    streams: usize,
    (redirected, direct): (&'static str, &'static str),
) -> anyhow::Result<Vec<Metric>> {
    let n = blobs.len();
    let total = (2 * blobs.iter().map(Blob::len).sum::<usize>()) as f64 / MB;
    let asking = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build()?;
    let mut presigned = Vec::with_capacity(n);
    for b in blobs.iter() {
        let r = asking.get(format!("{url}/v2/{}/blobs/{}", load::REPO, b.digest)).send().await?;
        if r.status().as_u16() != 307 {
            bail!("a blob GET with redirect: true answered {}, not 307", r.status());
        }
        let to = r.headers().get("location").context("a 307 without Location")?;
        presigned.push((to.to_str()?.to_owned(), b.len()));
    }
    let presigned = Arc::new(presigned);
    // Two rounds, alternating, each side's best kept: neither gains from going second.
    let (mut best_redirected, mut best_direct) = (0.0f64, 0.0f64);
    for _ in 0..2 {
        let (c1, u1, b1) = (c.clone(), url.to_owned(), blobs.clone());
        let took = load::run_jobs(2 * n, streams, move |i| {
            let (c, u, b) = (c1.clone(), u1.clone(), b1.clone());
            async move { load::pull(&c, &u, &b[i % n].digest, b[i % n].len()).await }
        })
        .await?;
        best_redirected = best_redirected.max(total / took.as_secs_f64());
        let (c1, p1) = (c.clone(), presigned.clone());
        let took = load::run_jobs(2 * n, streams, move |i| {
            let (c, p) = (c1.clone(), p1.clone());
            async move { load::read_all(&c, &p[i % n].0, p[i % n].1).await }
        })
        .await?;
        best_direct = best_direct.max(total / took.as_secs_f64());
    }
    let mb = |name, value| Metric { name, unit: "MB/s", value, higher_is_better: true };
    Ok(vec![mb(redirected, best_redirected), mb(direct, best_direct)])
}

fn render(metrics: &[Metric], plan: &Plan) -> String {
    let mut s = String::from(
        "\n### Three replicas, and redirects, on S3 + PostgreSQL\n\nThree `berth serve` replicas on one MinIO bucket and one PostgreSQL database, each with its own wrk (or its share of the pull streams), against one of them alone; then one replica with `redirect: true` on the same bucket, against reading the same objects from MinIO with the presigned URLs its redirects name. All on the same two cores as the load.\n\n| scenario | unit | berth |\n|---|---|---:|\n",
    );
    for m in metrics {
        let _ = writeln!(s, "| {} | {} | {:.0} |", m.name, m.unit, m.value);
    }
    let value = |name: &str| metrics.iter().find(|m| m.name == name).map(|m| m.value);
    let _ = writeln!(s, "\n| target | result |\n|---|---|");
    for (load, redirected, direct) in
        [("1 MiB blobs, 8 streams", REDIRECTED, DIRECT), ("a 256 MiB blob", REDIRECTED_BIG, DIRECT_BIG)]
    {
        if let (Some(r), Some(d)) = (value(redirected), value(direct)) {
            let share = r / d * 100.0;
            let mark = if share >= 90.0 { "✓" } else { "✗" };
            let _ = writeln!(
                s,
                "| `redirect: true` ÷ reading the store directly, {load} (≥ 90 %) | {share:.0} % {mark} |"
            );
        }
    }
    let _ = writeln!(s, "\nLoads: {}.", plan.describe());
    s
}
