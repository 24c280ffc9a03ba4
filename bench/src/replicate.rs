//! Replication throughput: 50 images of 10 layers (each layer its own bytes) copied from one
//! berth to a fresh one by `berth replicate`, by `skopeo sync` (and by `regsync` when given),
//! cold, then again with nothing changed. Each tool runs as its documentation shows, with its
//! defaults (berth copies 4 images at once; skopeo one at a time).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;

use crate::load::{self, Plan};
use crate::servers::{self, Kind, ServerSpec};

const LAYERS: usize = 10;
const LAYER_SIZE: usize = 256 << 10;
const SOURCE_REPO: &str = "bench/app";
/// Every tool writes the copy here at the destination.
const DEST_REPO: &str = "mirror/app";

pub const COLD: &str = "replication: images copied to an empty registry";
pub const AGAIN: &str = "replication: the same run again, nothing changed";

pub fn wanted(plan: &Plan) -> bool {
    [COLD, AGAIN].iter().any(|n| plan.wants(n))
}

/// The copiers measured.
pub struct Tools {
    pub berth: PathBuf,
    pub skopeo: PathBuf,
    pub regsync: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Berth,
    Skopeo,
    Regsync,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Berth => "berth replicate",
            Tool::Skopeo => "skopeo sync",
            Tool::Regsync => "regsync once",
        }
    }
}

/// Runs the comparison; the report's section.
pub async fn run(tools: &Tools, quick: bool, scratch: &Path) -> anyhow::Result<String> {
    let images = if quick { 10 } else { 50 };
    let c = load::client();
    let spec = ServerSpec { kind: Kind::Berth, bin: tools.berth.clone() };
    let source = servers::spawn(&spec, &scratch.join("replicate-source"), None)?;
    servers::wait_ready(&source, &c).await?;
    seed(&c, &source.url, images).await?;

    let mut measured = vec![Tool::Berth, Tool::Skopeo];
    if tools.regsync.is_some() {
        measured.push(Tool::Regsync);
    }
    let mut rows = Vec::new();
    for tool in measured {
        eprintln!("replicating with {}...", tool.name());
        let dir = scratch.join(format!("replicate-{}", tool.name().replace(' ', "-")));
        let dest = servers::spawn(&spec, &dir, None)?;
        servers::wait_ready(&dest, &c).await?;
        let command = || command(tool, tools, &source.url, &dest.url, &dir);
        let cold = timed(command()?).await?;
        let tags = tag_count(&c, &dest.url).await?;
        if tags != images {
            bail!("{} left {tags} of {images} tags at the destination", tool.name());
        }
        let again = timed(command()?).await?;
        rows.push((tool, cold, again));
    }
    Ok(render(&rows, images))
}

/// `images` images tagged `v<i>` in the source's `bench/app`, each with a config and 10
/// layers of its own.
async fn seed(c: &reqwest::Client, url: &str, images: usize) -> anyhow::Result<()> {
    let (c, url) = (c.clone(), url.to_owned());
    load::run_jobs(images, 4, move |i| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let config =
                Bytes::from(format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"bench\":{i}}}"));
            let config = load::push_whole(&c, &url, SOURCE_REPO, config).await?;
            let mut layers = Vec::new();
            for l in 0..LAYERS {
                let data = load::random_bytes(LAYER_SIZE, 50_000 + (i * LAYERS + l) as u64);
                layers.push(load::push_whole(&c, &url, SOURCE_REPO, data).await?);
            }
            load::push_image(&c, &url, SOURCE_REPO, &format!("v{i}"), &config, &layers).await
        }
    })
    .await?;
    Ok(())
}

/// The command that copies the source's `bench/app` to the destination's `mirror/app`.
fn command(tool: Tool, tools: &Tools, source: &str, dest: &str, dir: &Path) -> anyhow::Result<Command> {
    let host = |url: &str| url.trim_start_matches("http://").to_owned();
    let (src, dst) = (host(source), host(dest));
    Ok(match tool {
        Tool::Berth => {
            let mut cmd = Command::new(&tools.berth);
            cmd.args(["replicate", "--from", source, "--to", dest, "--from-prefix", "bench"]).args([
                "--to-prefix",
                "mirror",
                "--progress",
                "none",
                SOURCE_REPO,
            ]);
            cmd
        }
        Tool::Skopeo => {
            // A repository is copied with all its tags to <destination>/<its last path part>.
            let mut cmd = Command::new(&tools.skopeo);
            cmd.args(["--insecure-policy", "sync", "--src", "docker", "--dest", "docker"])
                .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
                .arg(format!("{src}/{SOURCE_REPO}"))
                .arg(format!("{dst}/mirror"));
            cmd
        }
        Tool::Regsync => {
            let config = dir.join("regsync.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 1\ncreds:\n  - registry: {src}\n    tls: disabled\n  - registry: {dst}\n    tls: disabled\nsync:\n  - source: {src}/{SOURCE_REPO}\n    target: {dst}/{DEST_REPO}\n    type: repository\n"
                ),
            )?;
            let mut cmd = Command::new(tools.regsync.as_ref().context("no regsync")?);
            cmd.arg("once").arg("-c").arg(config);
            cmd
        }
    })
}

/// Runs `cmd` to its end (off the async threads); its wall time. Fails with its output if it
/// fails.
async fn timed(mut cmd: Command) -> anyhow::Result<Duration> {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "{cmd:?} failed: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).lines().rev().take(10).collect::<Vec<_>>().join("\n")
            );
        }
        Ok(took)
    })
    .await?
}

async fn tag_count(c: &reqwest::Client, url: &str) -> anyhow::Result<usize> {
    let r = c.get(format!("{url}/v2/{DEST_REPO}/tags/list?n=1000")).send().await?;
    let v: serde_json::Value = r.json().await?;
    Ok(v["tags"].as_array().map_or(0, Vec::len))
}

fn render(rows: &[(Tool, Duration, Duration)], images: usize) -> String {
    let mib = (images * LAYERS * LAYER_SIZE) as f64 / (1 << 20) as f64;
    let mut s = format!(
        "\n### Replication ({images} images × {LAYERS} layers, {mib:.0} MiB, berth to berth on loopback)\n\nEach tool copies the source's `{SOURCE_REPO}` (every tag) to an empty registry's `{DEST_REPO}`, then runs again with nothing changed. Wall time of the whole command, process start included.\n\n| run | unit |"
    );
    for (tool, ..) in rows {
        let _ = write!(s, " {} |", tool.name());
    }
    let _ = writeln!(s, " skopeo ÷ berth |\n|---|---|{}---:|", "---:|".repeat(rows.len()));
    let get = |t: Tool, cold: bool| {
        rows.iter().find(|r| r.0 == t).map(|r| if cold { r.1 } else { r.2 }.as_secs_f64())
    };
    for (name, cold) in [(COLD, true), (AGAIN, false)] {
        let _ = write!(s, "| {name} | s |");
        for (tool, ..) in rows {
            let _ = write!(s, " {:.2} |", get(*tool, cold).unwrap_or(f64::NAN));
        }
        let ratio = get(Tool::Skopeo, cold).zip(get(Tool::Berth, cold)).map(|(k, b)| k / b);
        let _ = writeln!(s, " {} |", ratio.map_or("–".into(), |r| format!("{r:.1}×")));
    }
    let ratio = |cold| get(Tool::Skopeo, cold).zip(get(Tool::Berth, cold)).map_or(0.0, |(k, b)| k / b);
    let mark = |ok| if ok { "✓" } else { "✗" };
    let (cold, again) = (ratio(true), ratio(false));
    let _ = writeln!(s, "\n| target | result |\n|---|---|");
    let _ = writeln!(s, "| cold: at least 1.5× as fast as skopeo sync | {cold:.1}× {} |", mark(cold >= 1.5));
    let _ = writeln!(
        s,
        "| nothing changed: at least 10× as fast as skopeo sync | {again:.1}× {} |",
        mark(again >= 10.0)
    );
    s
}
