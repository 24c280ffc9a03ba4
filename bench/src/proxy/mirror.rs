//! The mirrors under test: berth, or Distribution in proxy mode, started on the local disk or on
//! S3; a counter of the bytes the upstream sends them; their CPU time; and a pull through one, as
//! a container runtime makes it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use sha2::Digest as _;

use crate::load::OCI_MANIFEST;
use crate::objstore::{Minio, S3Target};

pub(super) const REPO: &str = "library/big";
pub(super) const TAG: &str = "v1";
/// Layers a client fetches at once (docker's and containerd's default is 3).
pub(super) const PARALLEL_LAYERS: usize = 3;

/// A process stopped on drop.
pub(super) struct Process(pub(super) Child);

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
pub(super) async fn distribution(
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
pub(super) struct ByteCounter {
    pub(super) url: String,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ByteCounter {
    pub(super) async fn start(upstream: &str) -> anyhow::Result<ByteCounter> {
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
    pub(super) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for ByteCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pulls the image as a container runtime does; fails on any short blob, and with `verify` on any
/// wrong one. (Hashing on the client competes with the server for this machine's cores, so only
/// the pulls that fetch from the upstream verify; warm pulls count bytes.)
pub(super) async fn pull(c: &reqwest::Client, base: &str, verify: bool) -> anyhow::Result<Duration> {
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

/// CPU time (user + system) a process has used so far.
pub(super) fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state; utime and stime are
    // fields 14 and 15 of the line, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

#[derive(Clone, Copy)]
pub(super) enum Mirror {
    Berth,
    Distribution,
}

/// A fresh, empty mirror; on S3 with a bucket (and for berth a database) of its own.
pub(super) async fn start_mirror(
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
pub(super) async fn start_on(
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
