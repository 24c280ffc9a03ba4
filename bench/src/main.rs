//! `berth-bench`: one run measures every registry given, on this machine, with the same client,
//! and the machine's own limits (loopback TCP, sha256, disk write), then prints one table with the
//! ratios and writes it as Markdown.
//!
//! ```text
//! berth-bench --berth target/release/berth --distribution PATH/registry [--out docs/benchmarks.md]
//! ```
//! With both berth and Distribution given, the pull-through cache comparison (`proxy`) follows;
//! `--proxy-only` runs just that; `--only TEXT` reports only the scenarios whose name contains
//! TEXT (running what they need first), for looking into one of them. `--minio BIN` runs the
//! loads and the pull-through comparison again with content in S3 (`objstore`): MinIO on
//! loopback, berth's metadata in a throwaway PostgreSQL. `--skopeo BIN` (and `--regsync BIN`)
//! adds the replication comparison: `berth replicate` against `skopeo sync` (and `regsync`).
//! Every server gets a fresh data directory on the same disk, is started, loaded, measured and
//! stopped before the next; loads are bounded in count, so a run always ends.

mod content;
mod gc;
mod gcmemory;
mod load;
mod machine;
mod metric;
mod net;
mod objstore;
mod proxy;
mod replicas;
mod replicate;
mod servers;
mod wrk;

/// Counts allocations only while the garbage collection memory scenario measures.
#[global_allocator]
static ALLOCATOR: gcmemory::Counting = gcmemory::Counting;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use metric::Metric;
use servers::{Kind, ServerSpec};

struct Args {
    servers: Vec<ServerSpec>,
    out: Option<PathBuf>,
    quick: bool,
    /// Only the scenarios whose name contains this.
    only: Option<String>,
    /// Only the pull-through cache comparison.
    proxy_only: bool,
    /// MinIO, for the same loads on S3 (and PostgreSQL for berth's metadata).
    minio: Option<PathBuf>,
    /// Replication peers.
    skopeo: Option<PathBuf>,
    regsync: Option<PathBuf>,
}

const USAGE: &str = "usage: berth-bench --berth BIN [--distribution BIN] [--zot BIN] [--out FILE] [--quick] [--only SCENARIO] [--proxy-only] [--minio BIN] [--skopeo BIN [--regsync BIN]]";

fn parse_args() -> anyhow::Result<Args> {
    let mut servers = Vec::new();
    let mut out = None;
    let mut quick = false;
    let mut proxy_only = false;
    let mut only = None;
    let mut minio = None;
    let (mut skopeo, mut regsync) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut path = || it.next().map(PathBuf::from).with_context(|| format!("{a} needs a path"));
        match a.as_str() {
            "--berth" => servers.push(ServerSpec { kind: Kind::Berth, bin: path()? }),
            "--distribution" => servers.push(ServerSpec { kind: Kind::Distribution, bin: path()? }),
            "--zot" => servers.push(ServerSpec { kind: Kind::Zot, bin: path()? }),
            "--out" => out = Some(path()?),
            "--minio" => minio = Some(path()?),
            "--skopeo" => skopeo = Some(path()?),
            "--regsync" => regsync = Some(path()?),
            "--quick" => quick = true,
            "--proxy-only" => proxy_only = true,
            "--only" => only = Some(it.next().context("--only needs part of a scenario name")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if servers.is_empty() {
        bail!("{USAGE}");
    }
    Ok(Args { servers, out, quick, only, proxy_only, minio, skopeo, regsync })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let scratch = tempfile::tempdir()?;
    eprintln!("measuring the machine...");
    let limits = machine::measure(scratch.path()).await?;
    let plan = load::Plan::new(args.quick, args.only.clone());
    let mut results: Vec<(String, Vec<Metric>)> = Vec::new();
    for spec in args.servers.iter().filter(|_| !args.proxy_only) {
        eprintln!("measuring {}...", spec.kind.name());
        let metrics = servers::measure(spec, &plan, scratch.path(), None).await?;
        results.push((spec.kind.name().to_owned(), metrics));
    }
    let mut report = render(&limits, &results, &plan);
    let berth = args.servers.iter().find(|s| s.kind == Kind::Berth);
    if let Some(berth) = berth.filter(|_| gc::wanted(&plan) && !args.proxy_only) {
        eprintln!("measuring garbage collection...");
        report.push_str(&gc::run(&berth.bin, scratch.path(), None).await?);
    }
    if berth.is_some() && gcmemory::wanted(&plan) && !args.proxy_only {
        eprintln!("measuring garbage collection's memory...");
        let manifests = if args.quick { 10_000 } else { 100_000 };
        report.push_str(&gcmemory::run(scratch.path(), manifests).await?);
    }
    if let (Some(berth), Some(skopeo)) = (berth, &args.skopeo) {
        if replicate::wanted(&plan) && !args.proxy_only {
            eprintln!("measuring replication...");
            let tools = replicate::Tools {
                berth: berth.bin.clone(),
                skopeo: skopeo.clone(),
                regsync: args.regsync.clone(),
            };
            report.push_str(&replicate::run(&tools, args.quick, scratch.path()).await?);
        }
    }
    let store = match &args.minio {
        Some(bin) => Some(objstore::start(bin, &scratch.path().join("minio")).await?),
        None => None,
    };
    if let Some(store) = store.as_ref().filter(|_| !args.proxy_only) {
        report.push_str(&on_s3(&args, store, &plan, scratch.path()).await?);
        let berth = args.servers.iter().find(|s| s.kind == Kind::Berth);
        if let Some(berth) = berth.filter(|_| replicas::wanted(&plan)) {
            eprintln!("measuring three berth replicas and redirects on S3...");
            report.push_str(&replicas::run(&berth.bin, store, &plan, scratch.path()).await?);
        }
        if let Some(berth) = berth.filter(|_| gc::wanted(&plan)) {
            eprintln!("measuring garbage collection on S3...");
            let target = objstore::target(store, true).await?;
            report.push_str(&gc::run(&berth.bin, scratch.path(), Some(&target)).await?);
        }
    }
    let find = |k: Kind| args.servers.iter().find(|s| s.kind == k).map(|s| s.bin.clone());
    if let (Some(berth), Some(distribution)) = (find(Kind::Berth), find(Kind::Distribution)) {
        let plan = proxy::ProxyPlan::new(args.quick);
        report.push_str(&proxy::run(&berth, &distribution, &plan, scratch.path(), None).await?);
        if let Some(store) = &store {
            eprintln!("the pull-through cache again, mirrors on S3...");
            report.push_str(&proxy::run(&berth, &distribution, &plan, scratch.path(), Some(store)).await?);
        }
    }
    println!("{report}");
    if let Some(out) = args.out {
        std::fs::write(&out, report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

/// The same loads on S3: each server with a bucket of its own on one MinIO, berth with a database
/// of its own.
async fn on_s3(
    args: &Args,
    store: &objstore::Minio,
    plan: &load::Plan,
    scratch: &std::path::Path,
) -> anyhow::Result<String> {
    let mut results: Vec<(String, Vec<Metric>)> = Vec::new();
    for spec in args.servers.iter().filter(|s| s.kind != Kind::Zot) {
        let target = objstore::target(store, spec.kind == Kind::Berth).await?;
        eprintln!("measuring {} on S3...", spec.kind.name());
        let metrics = servers::measure(spec, plan, scratch, Some(&target)).await?;
        results.push((format!("{} (S3)", spec.kind.name()), metrics));
    }
    let mut s = String::from(
        "\n### On S3 (MinIO on loopback); berth's metadata in PostgreSQL\n\nBoth serve every byte themselves (berth `redirect: false`, Distribution `redirect.disable: true`); Distribution keeps its recommended in-memory blob descriptor cache.\n\n",
    );
    s.push_str(&render(&[], &results, plan));
    Ok(s)
}

fn render(limits: &[Metric], results: &[(String, Vec<Metric>)], plan: &load::Plan) -> String {
    let mut s = String::new();
    if !limits.is_empty() {
        let _ = writeln!(s, "| machine limit | value |\n|---|---|");
        for m in limits {
            let _ = writeln!(s, "| {} | {:.0} {} |", m.name, m.value, m.unit);
        }
        let _ = writeln!(s);
    }
    if results.is_empty() {
        return s;
    }
    let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
    let _ = write!(s, "| scenario | unit |");
    for n in &names {
        let _ = write!(s, " {n} |");
    }
    let peers = names.len() > 1;
    if peers {
        let _ = write!(s, " berth ÷ best peer |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|---|{}{}", "---:|".repeat(names.len()), if peers { "---:|" } else { "" });
    let Some((_, first)) = results.first() else { return s };
    for (i, m) in first.iter().enumerate() {
        let _ = write!(s, "| {} | {} |", m.name, m.unit);
        for (_, r) in results {
            let _ = write!(s, " {} |", r.get(i).map_or("–".into(), |m| fmt_value(m.value)));
        }
        if peers {
            let best_peer = results[1..].iter().filter_map(|(_, r)| r.get(i)).map(|p| p.value).fold(
                None,
                |acc: Option<f64>, v| {
                    Some(match acc {
                        None => v,
                        Some(a) if m.higher_is_better => a.max(v),
                        Some(a) => a.min(v),
                    })
                },
            );
            let ratio = best_peer.filter(|p| *p > 0.0).map(|p| {
                if m.higher_is_better {
                    m.value / p
                } else {
                    p / m.value
                }
            });
            let _ = write!(s, " {} |", ratio.map_or("–".into(), |r| format!("{r:.2}×")));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "\nRatios are berth's advantage (higher is better for berth, for every row). Loads: {}.",
        plan.describe()
    );
    s
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
