//! Manifest GETs under wrk: one tag, or a random one of 1,000 tags in 100 repositories (a Lua
//! script picks each request's path), so a cache of one entry cannot carry the row.

use std::process::Command;

use anyhow::{bail, Context};
use bytes::Bytes;

use crate::content::Blob;

const SPREAD_REPOS: usize = 100;
const TAGS_PER_REPO: usize = 10;

/// Puts manifests under 10 tags in each of 100 repositories (their blobs mounted from `from`);
/// returns the 1,000 tag paths.
pub(crate) async fn spread(
    c: &reqwest::Client,
    base: &str,
    from: &str,
    blobs: &[Blob],
    manifests: &[Bytes],
) -> anyhow::Result<Vec<String>> {
    let mut paths = Vec::new();
    for r in 0..SPREAD_REPOS {
        let repo = format!("bench/spread-{r:03}");
        for t in 0..TAGS_PER_REPO {
            let i = r * TAGS_PER_REPO + t;
            for blob in [&blobs[i % blobs.len()], &blobs[(i + 1) % blobs.len()]] {
                let url = format!("{base}/v2/{repo}/blobs/uploads/?mount={}&from={from}", blob.digest);
                let m = c.post(url).send().await?;
                if m.status().as_u16() != 201 {
                    bail!("mount into {repo}: {}", m.status());
                }
            }
            let r = c
                .put(format!("{base}/v2/{repo}/manifests/t{t}"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(manifests[i % manifests.len()].clone())
                .send()
                .await?;
            if r.status().as_u16() != 201 {
                bail!("PUT manifest into {repo}: {}", r.status());
            }
            paths.push(format!("/v2/{repo}/manifests/t{t}"));
        }
    }
    Ok(paths)
}

/// Requests per second wrk measures at 64 connections over two threads, each request for one of
/// `paths` at random (a Lua script picks it).
pub(crate) fn wrk(base: &str, paths: &[String], seconds: u32) -> anyhow::Result<f64> {
    wrk_with(base, paths, seconds, 2, 64)
}

/// [`wrk`] with `threads` and `connections` of its own (for several servers loaded at once).
pub(crate) fn wrk_with(
    base: &str,
    paths: &[String],
    seconds: u32,
    threads: u32,
    connections: u32,
) -> anyhow::Result<f64> {
    let script = tempfile::NamedTempFile::new()?;
    let list: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
    std::fs::write(
        script.path(),
        format!(
            "local paths = {{{}}}\nrequest = function()\n  return wrk.format(nil, paths[math.random(#paths)])\nend\n",
            list.join(",")
        ),
    )?;
    let out = Command::new("wrk")
        .args([format!("-t{threads}"), format!("-c{connections}"), format!("-d{seconds}s")])
        .args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json", "-s"])
        .arg(script.path())
        .arg(format!("{base}{}", paths.first().map_or("/v2/", String::as_str)))
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw errors:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))
}
