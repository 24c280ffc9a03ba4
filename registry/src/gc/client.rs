//! `berth gc`: a client of the admin API. It never opens a data directory, so it runs from
//! anywhere that reaches the registry (a CronJob, a laptop).

use std::io::IsTerminal;
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
    pub scrub: bool,
    pub verify: bool,
    pub queued: bool,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub json: bool,
    /// Where the one-line summary of the run goes too ([`brief`]).
    pub report_file: Option<PathBuf>,
}

/// The most a summary written to the report file holds: a termination message is cut at 4 KiB.
const BRIEF_MAX: usize = 4096;

/// The longest one request to the admin API may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a run is asked how far it got.
const POLL: Duration = Duration::from_secs(1);
/// How long the registry may be unreachable while a run is followed (a replica restarting).
const UNREACHABLE: Duration = Duration::from_secs(60);
/// How long a start waits for another collection to end.
const BUSY_WAIT: Duration = Duration::from_secs(120);

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
        "orphansRemoved": n(&report["scrub"]["orphans"]),
        "corruptBlobs": n(&report["scrub"]["corrupt"]),
    })
}

async fn collect(r: &Request) -> anyhow::Result<Value> {
    let mut builder =
        reqwest::Client::builder().timeout(REQUEST_TIMEOUT).danger_accept_invalid_certs(r.insecure);
    if let Some(ca) = &r.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let credentials = r.username.clone().map(|u| (u, r.password.clone()));
    let admin = Admin::new(builder.build()?, &r.url, credentials);
    let body = serde_json::json!({
        "dryRun": r.dry_run,
        "grace": r.grace,
        "keepUntagged": r.keep_untagged,
        "scrub": r.scrub,
        "verify": r.verify,
        "queued": r.queued,
    });
    let run = admin.start(&body).await?;
    let id = run["id"].as_str().context("the registry's answer names no run")?.to_owned();
    let mut shown = Progress::new(std::io::stderr().is_terminal());
    shown.show(&run);
    let ended = tokio::select! {
        ended = admin.wait(&id, |run| shown.show(run)) => ended?,
        _ = tokio::signal::ctrl_c() => {
            shown.finish();
            eprintln!("berth gc: interrupted; asking run {id} to stop");
            admin.cancel(&id).await?;
            admin.wait(&id, |_| {}).await?
        }
    };
    shown.finish();
    let state = ended["state"].as_str().unwrap_or("?");
    let report = &ended["report"];
    if !report.is_null() {
        if r.json {
            println!("{report}");
        } else {
            print!("{}", summary(report));
        }
    }
    match state {
        "succeeded" => Ok(report.clone()),
        "cancelled" => bail!("run {id} was cancelled; what it removed before it stopped stays removed"),
        _ => bail!("run {id} {state}: {}", ended["error"].as_str().unwrap_or("no reason given")),
    }
}

/// A client of the admin API's collections.
pub struct Admin {
    client: reqwest::Client,
    base: String,
    credentials: Option<(String, Option<String>)>,
}

impl Admin {
    /// `base` is the registry's URL; `credentials` a user or robot and its password or secret.
    pub fn new(client: reqwest::Client, base: &str, credentials: Option<(String, Option<String>)>) -> Admin {
        Admin { client, base: base.trim_end_matches('/').to_owned(), credentials }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.credentials {
            Some((user, password)) => req.basic_auth(user, password.as_deref()),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let resp = req.send().await.with_context(|| format!("{what} at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(Refused { status, message }).with_context(|| format!("{what} at {}", self.base));
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{what} at {}: the answer is not JSON", self.base))
    }

    /// Starts a collection (`{"dryRun", "grace", "keepUntagged", ...}`, each optional): the run.
    /// While another runs (a review of the queue, a run from elsewhere), waits for it to end, a
    /// while.
    pub async fn start(&self, body: &Value) -> anyhow::Result<Value> {
        let since = std::time::Instant::now();
        loop {
            let req = self.request(reqwest::Method::POST, "/admin/v1/gc").json(body);
            match self.send(req, "starting a collection").await {
                Err(e) if busy(&e) && since.elapsed() < BUSY_WAIT => {
                    tracing::debug!(error = %e, "another collection runs; asking again");
                    tokio::time::sleep(POLL).await;
                }
                other => return other,
            }
        }
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::GET, &format!("/admin/v1/gc/runs/{id}")), "reading a run")
            .await
    }

    pub async fn cancel(&self, id: &str) -> anyhow::Result<Value> {
        self.send(
            self.request(reqwest::Method::DELETE, &format!("/admin/v1/gc/runs/{id}")),
            "cancelling a run",
        )
        .await
    }

    /// Follows a run until it ends, telling `seen` each state read; the run as it ended. The
    /// registry may be unreachable for a while (a replica restarting), not longer.
    pub async fn wait(&self, id: &str, mut seen: impl FnMut(&Value)) -> anyhow::Result<Value> {
        let mut reachable = std::time::Instant::now();
        loop {
            tokio::time::sleep(POLL).await;
            match self.get(id).await {
                Ok(run) => {
                    seen(&run);
                    if run["state"] != "running" {
                        return Ok(run);
                    }
                    reachable = std::time::Instant::now();
                }
                Err(e) if reachable.elapsed() < UNREACHABLE && is_transient(&e) => {
                    tracing::debug!(error = %e, "the registry did not answer; asking again");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts a collection and waits for it: its report, an error unless it succeeded.
    pub async fn collect(&self, body: &Value) -> anyhow::Result<Value> {
        let run = self.start(body).await?;
        let id = run["id"].as_str().context("the registry's answer names no run")?.to_owned();
        let ended = self.wait(&id, |_| {}).await?;
        if ended["state"] != "succeeded" {
            bail!("run {id} {}: {}", ended["state"], ended["error"]);
        }
        Ok(ended["report"].clone())
    }
}

/// What the admin API answered instead of doing what it was asked.
#[derive(Debug)]
struct Refused {
    status: reqwest::StatusCode,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for Refused {}

/// Another collection runs (409).
fn busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Refused>().is_some_and(|r| r.status == reqwest::StatusCode::CONFLICT))
}

/// A connection that failed or a 5xx: worth asking again.
fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<reqwest::Error>().is_some_and(|r| r.is_connect() || r.is_timeout())
            || c.downcast_ref::<Refused>().is_some_and(|r| r.status.is_server_error())
    })
}

/// How a followed run is shown on stderr: a line redrawn on a terminal, else a JSON line each
/// time its progress changes.
struct Progress {
    terminal: bool,
    last: Option<Value>,
    drawn: bool,
}

impl Progress {
    fn new(terminal: bool) -> Progress {
        Progress { terminal, last: None, drawn: false }
    }

    fn show(&mut self, run: &Value) {
        let progress = &run["progress"];
        if self.last.as_ref() == Some(progress) {
            return;
        }
        self.last = Some(progress.clone());
        if self.terminal {
            eprint!("\r\x1b[2K{}", bar(run));
            self.drawn = true;
        } else {
            eprintln!(
                "{}",
                serde_json::json!({"run": run["id"], "state": run["state"], "progress": progress})
            );
        }
    }

    fn finish(&mut self) {
        if std::mem::take(&mut self.drawn) {
            eprintln!();
        }
    }
}

/// One line for a terminal: phase, repositories done of all with a bar, what was removed.
fn bar(run: &Value) -> String {
    const WIDTH: u64 = 24;
    let p = &run["progress"];
    let n = |k: &str| p[k].as_u64().unwrap_or(0);
    let (done, total) = (n("repositoriesDone"), n("repositoriesTotal").max(1));
    let filled = (done.min(total) * WIDTH / total) as usize;
    format!(
        "{:<12} [{}{}] {done}/{} repositories · {} manifests, {} blobs, {} freed",
        p["phase"].as_str().unwrap_or("?"),
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        n("repositoriesTotal"),
        n("manifestsRemoved"),
        n("blobsReleased"),
        berth_core::config::size::approximate(n("bytesFreed")),
    )
}

/// The report for people: one line per repository that changed, then the totals.
pub fn summary(report: &Value) -> String {
    let n = |v: &Value| v.as_array().map_or(0, Vec::len);
    let verb = if report["dryRun"].as_bool().unwrap_or(false) { "would remove" } else { "removed" };
    let mut out = String::new();
    let tags = |k: usize| if k > 0 { format!("{k} tags, ") } else { String::new() };
    for r in report["repositories"].as_array().into_iter().flatten() {
        let removed = ["tags", "manifests", "links"].iter().map(|k| n(&r[*k])).sum::<usize>();
        if removed == 0 && r["conflicts"].as_u64().unwrap_or(0) == 0 {
            // Only tags retention kept: the JSON report says why.
            continue;
        }
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
        berth_core::config::size::approximate(bytes),
        report["conflicts"].as_u64().unwrap_or(0),
    ));
    let s = &report["scrub"];
    if s.is_object() {
        let num = |k: &str| s[k].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "scrub: {} objects, {verb} {} orphans ({}) and {} stale upload objects; {} blobs verified, {} corrupt\n",
            num("objects"),
            n(&s["orphans"]),
            berth_core::config::size::approximate(s["orphans"].as_array().into_iter().flatten().filter_map(|o| o["size"].as_u64()).sum()),
            num("uploadObjects"),
            num("verified"),
            n(&s["corrupt"]),
        ));
        for c in s["corrupt"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "corrupt: {} {}{}\n",
                c["digest"].as_str().unwrap_or("?"),
                c["problem"].as_str().unwrap_or("?"),
                if c["cached"].as_bool().unwrap_or(false) {
                    " (cached: fetched again on the next pull)"
                } else {
                    ""
                },
            ));
        }
    }
    out
}
