//! The machine's own limits, measured in the same run as the servers: loopback TCP throughput,
//! sha256 speed (one core, the crate berth uses), sequential disk write with fsync, and how many
//! files per second (4 KiB by 16 threads, 1 MiB by 8) the disk can make durable (write, fsync,
//! rename, fsync the directory: what any registry must do for each acknowledged blob).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::metric::Metric;

const MB: f64 = 1e6;

pub async fn measure(scratch: &Path) -> anyhow::Result<Vec<Metric>> {
    let loopback = match iperf3() {
        Some(bps) => bps,
        None => raw_socket_copy().await?,
    };
    Ok(vec![
        Metric { name: "loopback TCP", unit: "MB/s", value: loopback / MB, higher_is_better: true },
        Metric { name: "sha256", unit: "MB/s", value: sha256_speed() / MB, higher_is_better: true },
        Metric {
            name: "disk write + fsync",
            unit: "MB/s",
            value: disk_write(scratch)? / MB,
            higher_is_better: true,
        },
        Metric {
            name: "durable 4 KiB files, 16 threads",
            unit: "files/s",
            value: durable_files(scratch, 4 << 10, 16, Duration::from_secs(5))?,
            higher_is_better: true,
        },
        // What a 1 MiB push must make durable, as 8 streams push it: the like-for-like limit
        // beside the sequential write above, which pays one flush for 512 MiB.
        Metric {
            name: "durable 1 MiB files, 8 threads",
            unit: "MB/s",
            value: durable_files(scratch, 1 << 20, 8, Duration::from_secs(4))? * (1 << 20) as f64 / MB,
            higher_is_better: true,
        },
    ])
}

/// Files per second that `threads` threads make durable, each: write `size` bytes to a temp
/// file, fsync it, rename it into a directory of its own kind (by a hash prefix, as blobs are),
/// fsync that directory.
fn durable_files(dir: &Path, size: usize, threads: usize, run: Duration) -> anyhow::Result<f64> {
    let root = dir.join("durable-probe");
    std::fs::create_dir_all(root.join("tmp"))?;
    for i in 0..256 {
        std::fs::create_dir_all(root.join(format!("{i:02x}")))?;
    }
    let done = std::sync::atomic::AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (root, done) = (&root, &done);
                scope.spawn(move || -> anyhow::Result<()> {
                    let data = vec![t as u8; size];
                    let mut n = 0u64;
                    while start.elapsed() < run {
                        let tmp = root.join("tmp").join(format!("{t}-{n}"));
                        let mut f = std::fs::File::create(&tmp)?;
                        f.write_all(&data)?;
                        f.sync_all()?;
                        let dir = root.join(format!("{:02x}", (t as u64 * 7919 + n) % 256));
                        std::fs::rename(&tmp, dir.join(format!("{t}-{n}")))?;
                        std::fs::File::open(&dir)?.sync_all()?;
                        n += 1;
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a probe thread panicked"))??;
        }
        Ok(())
    })?;
    let rate = done.load(std::sync::atomic::Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&root)?;
    Ok(rate)
}

/// Bytes per second over loopback as iperf3 measures it (single stream, 3 s), if it is installed.
fn iperf3() -> Option<f64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port().to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut out = None;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let o =
            Command::new("iperf3").args(["-c", "127.0.0.1", "-p", &port, "-t", "3", "-J"]).output().ok()?;
        if o.status.success() {
            out = Some(o.stdout);
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_slice(&out?).ok()?;
    v["end"]["sum_received"]["bits_per_second"].as_f64().map(|b| b / 8.0)
}

/// Bytes per second of one TCP stream over loopback, written and read by this process.
async fn raw_socket_copy() -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let total: u64 = 2 << 30;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        while n < total {
            let r = s.read(&mut buf).await?;
            if r == 0 {
                break;
            }
            n += r as u64;
        }
        anyhow::Ok(n)
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let buf = vec![7u8; 1 << 20];
    let start = Instant::now();
    for _ in 0..(total >> 20) {
        s.write_all(&buf).await?;
    }
    let n = reader.await??;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn sha256_speed() -> f64 {
    let data = vec![0x5au8; 256 << 20];
    let start = Instant::now();
    let mut h = sha2::Sha256::new();
    h.update(&data);
    std::hint::black_box(h.finalize());
    data.len() as f64 / start.elapsed().as_secs_f64()
}

fn disk_write(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("disk-write-probe");
    let buf = vec![0xa5u8; 1 << 20];
    let start = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    for _ in 0..512 {
        f.write_all(&buf)?;
    }
    f.sync_all()?;
    let secs = start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok((512u64 << 20) as f64 / secs)
}
