//! `berth gc`: a client of the admin API. It never opens a data directory, so it runs from
//! anywhere that reaches the registry (a CronJob, a laptop).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// What `berth gc` was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The registry, e.g. `https://berth.example:5000`.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub dry_run: bool,
    pub grace: Option<String>,
    pub keep_untagged: bool,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub json: bool,
    /// Where the one-line summary of the run goes too ([`brief`]).
    pub report_file: Option<PathBuf>,
}

/// The most a summary written to the report file holds: a termination message is cut at 4 KiB.
const BRIEF_MAX: usize = 4096;

/// The longest a run is waited for.
const TIMEOUT: Duration = Duration::from_secs(3600);

/// Asks the registry for a collection and prints its report; an error when it failed. The
/// summary (or the error) is also written to the report file, when one is named.
pub async fn run(r: &Request) -> anyhow::Result<()> {
    let outcome = collect(r).await;
    if let Some(path) = &r.report_file {
        let line = match &outcome {
            Ok(report) => brief(report),
            Err(e) => serde_json::json!({"error": format!("{e:#}")}),
        };
        let mut text = line.to_string();
        if text.len() > BRIEF_MAX {
            text = serde_json::json!({"error": "the summary is too long"}).to_string();
        }
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("berth gc: could not write the summary to {}: {e}", path.display());
        }
    }
    outcome.map(|_| ())
}

/// The totals of a report, for a controller to show: no lists, so it always fits.
pub fn brief(report: &Value) -> Value {
    let n = |v: &Value| v.as_array().map_or(0, Vec::len);
    serde_json::json!({
        "dryRun": report["dryRun"].as_bool().unwrap_or(false),
        "tagsRemoved": report["tagsRemoved"].as_u64().unwrap_or(0),
        "manifestsRemoved": report["manifestsRemoved"].as_u64().unwrap_or(0),
        "linksRemoved": report["linksRemoved"].as_u64().unwrap_or(0),
        "blobsRemoved": n(&report["blobs"]),
        "bytesFreed": report["bytesFreed"].as_u64().unwrap_or(0),
        "conflicts": report["conflicts"].as_u64().unwrap_or(0),
    })
}

async fn collect(r: &Request) -> anyhow::Result<Value> {
    let mut builder = reqwest::Client::builder().timeout(TIMEOUT).danger_accept_invalid_certs(r.insecure);
    if let Some(ca) = &r.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let client = builder.build()?;
    let url = format!("{}/admin/v1/gc", r.url.trim_end_matches('/'));
    let body = serde_json::json!({"dryRun": r.dry_run, "grace": r.grace, "keepUntagged": r.keep_untagged});
    let mut req = client.post(&url).json(&body);
    if let Some(user) = &r.username {
        req = req.basic_auth(user, r.password.as_deref());
    }
    if !r.json {
        eprintln!("berth gc: collecting{} at {} ...", if r.dry_run { " (dry run)" } else { "" }, r.url);
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        let why = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("{url}: {status}: {why}");
    }
    let report: Value =
        serde_json::from_str(&text).with_context(|| format!("{url}: the report is not JSON"))?;
    if r.json {
        println!("{report}");
    } else {
        print!("{}", summary(&report));
    }
    Ok(report)
}

/// The report for people: one line per repository that changed, then the totals.
pub fn summary(report: &Value) -> String {
    let n = |v: &Value| v.as_array().map_or(0, Vec::len);
    let verb = if report["dryRun"].as_bool().unwrap_or(false) { "would remove" } else { "removed" };
    let mut out = String::new();
    let tags = |k: usize| if k > 0 { format!("{k} tags, ") } else { String::new() };
    for r in report["repositories"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{}: {verb} {}{} manifests, {} blob links{}\n",
            r["repository"].as_str().unwrap_or("?"),
            tags(n(&r["tags"])),
            n(&r["manifests"]),
            n(&r["links"]),
            match r["conflicts"].as_u64() {
                Some(c) if c > 0 => format!(" ({c} kept: pushed again meanwhile)"),
                _ => String::new(),
            }
        ));
    }
    let bytes = report["bytesFreed"].as_u64().unwrap_or(0);
    out.push_str(&format!(
        "{verb} {}{} manifests, {} blob links, {} blobs ({}); {} conflicts\n",
        tags(report["tagsRemoved"].as_u64().unwrap_or(0) as usize),
        report["manifestsRemoved"].as_u64().unwrap_or(0),
        report["linksRemoved"].as_u64().unwrap_or(0),
        n(&report["blobs"]),
        human(bytes),
        report["conflicts"].as_u64().unwrap_or(0),
    ));
    out
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
