//! Starting, timing and measuring each registry the same way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::load::{self, Plan};
use crate::metric::Metric;
use crate::net::free_port;
use crate::objstore::S3Target;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Berth,
    Distribution,
    Zot,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Berth => "berth",
            Kind::Distribution => "distribution v3",
            Kind::Zot => "zot",
        }
    }
}

pub struct ServerSpec {
    pub kind: Kind,
    pub bin: PathBuf,
}

pub(crate) struct Running {
    child: Child,
    pub(crate) url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server over `data`, its content on the local disk or in `s3`.
pub(crate) fn spawn(spec: &ServerSpec, data: &Path, s3: Option<&S3Target>) -> anyhow::Result<Running> {
    std::fs::create_dir_all(data)?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(&spec.bin);
    match spec.kind {
        Kind::Berth => {
            cmd.args(["serve", "--listen", &addr, "--log-level", "warn", "--data-dir"]).arg(data);
            if let Some(t) = s3 {
                let config = data.join("berth.yaml");
                std::fs::write(&config, t.berth_config())?;
                cmd.arg("--config").arg(config).envs(t.env());
            }
        }
        Kind::Distribution => {
            let config = data.join("config.yml");
            // Its recommended production cache of blob descriptors, on either storage.
            let storage = match s3 {
                Some(t) => t.distribution_storage(),
                None => format!(
                    "storage:\n  filesystem:\n    rootdirectory: {}\n  cache:\n    blobdescriptor: inmemory\n  delete:\n    enabled: true\n",
                    data.join("storage").display()
                ),
            };
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n{storage}http:\n  addr: {addr}\n"
                ),
            )?;
            cmd.arg("serve").arg(config);
        }
        Kind::Zot => {
            if s3.is_some() {
                bail!("zot is measured on the local disk only");
            }
            let config = data.join("config.json");
            let json = serde_json::json!({
                "distSpecVersion": "1.1.0",
                "storage": {"rootDirectory": data.join("storage"), "gc": false, "dedupe": false},
                "http": {"address": "127.0.0.1", "port": port.to_string()},
                "log": {"level": "error"},
            });
            std::fs::write(&config, json.to_string())?;
            cmd.arg("serve").arg(config);
        }
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", spec.bin.display()))?;
    Ok(Running { child, url: format!("http://{addr}") })
}

/// Time from spawn to the first answer of `GET /v2/`.
pub(crate) async fn wait_ready(r: &Running, client: &reqwest::Client) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let url = format!("{}/v2/", r.url);
    while start.elapsed() < Duration::from_secs(30) {
        if client.get(&url).send().await.is_ok() {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    anyhow::bail!("{} did not answer within 30 s", r.url)
}

fn proc_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// The loads, memory and start-up time of one server; with `s3`, its content in that bucket (and
/// no start-up rows: they would time the store, not the server).
pub async fn measure(
    spec: &ServerSpec,
    plan: &Plan,
    scratch: &Path,
    s3: Option<&S3Target>,
) -> anyhow::Result<Vec<Metric>> {
    let client = load::client();
    let name = spec.kind.name().replace(' ', "-");
    let mut startups = Vec::new();
    for i in 0..if s3.is_some() { 0 } else { 5 } {
        let r = spawn(spec, &scratch.join(format!("{name}-start-{i}")), None)?;
        startups.push(wait_ready(&r, &client).await?);
    }
    startups.sort();
    let startup = startups.get(startups.len() / 2).copied();

    let data = scratch.join(format!("{name}-load"));
    let r = spawn(spec, &data, s3)?;
    wait_ready(&r, &client).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = proc_kib(r.child.id(), "VmRSS:") / 1024.0;
    let mut metrics = load::run(plan, &r.url, &client).await?;
    let peak = proc_kib(r.child.id(), "VmHWM:") / 1024.0;
    drop(r);
    let _ = std::fs::remove_dir_all(&data);
    metrics.push(Metric { name: "idle RSS", unit: "MiB", value: idle, higher_is_better: false });
    metrics.push(Metric { name: "peak RSS", unit: "MiB", value: peak, higher_is_better: false });
    if let Some(startup) = startup {
        metrics.push(Metric {
            name: "start to first GET /v2/",
            unit: "ms",
            value: startup.as_secs_f64() * 1e3,
            higher_is_better: false,
        });
    }
    metrics.retain(|m| plan.wants(m.name));
    Ok(metrics)
}
