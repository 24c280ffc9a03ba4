//! What admins see (users and robots granted `admin`; everyone without access control): what is
//! stored, in all and per repository; the pull-through cache's hit ratio, bytes the upstreams
//! were spared and their rate limits; webhooks' and on-push replication's deliveries; and garbage
//! collections — start a dry run, read its report with each retention decision and why. The
//! same collector and usage queries as the admin API, and the same audit record.

use std::fmt::Write;

use axum::http::StatusCode;

use super::html::{esc, q, size, when};
use super::view::{Page, Ui};
use crate::gc::Options;

const USAGE_PAGE: usize = 50;
const RUNS_SHOWN: usize = 10;

fn forbidden() -> (StatusCode, String) {
    (StatusCode::FORBIDDEN, "This page is for those granted admin.".into())
}

fn unavailable(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, format!("The registry could not answer: {e}"))
}

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key).and_then(|x| x.as_u64()).unwrap_or(0)
}

/// A run's outcome in a few words.
fn summary(run: &crate::gc::RunView) -> String {
    if let Some(e) = &run.error {
        return format!("failed: {e}");
    }
    let Some(r) = &run.report else { return String::new() };
    let verb = if run.dry_run { "would remove" } else { "removed" };
    format!(
        "{verb} {} tags, {} manifests, {} blob links; {} {}",
        num(r, "tagsRemoved"),
        num(r, "manifestsRemoved"),
        num(r, "linksRemoved"),
        if run.dry_run { "would free" } else { "freed" },
        size(num(r, "bytesFreed"))
    )
}

pub async fn overview(ui: &Ui, last: Option<String>) -> Page {
    if !ui.caller.may_admin() {
        return Err(forbidden());
    }
    let mut body = String::from("<h1>Operate</h1>");
    if let Some(usage) = &ui.st.usage {
        let page = crate::meta::Page { limit: USAGE_PAGE, last };
        let (mut repos, total) =
            tokio::try_join!(usage.repo_usage(&page), usage.stored_total()).map_err(unavailable)?;
        let more = repos.len() > USAGE_PAGE;
        repos.truncate(USAGE_PAGE);
        let _ = write!(
            body,
            "<h2>Storage</h2><p>{} in {} blobs, each counted once.</p><table><thead><tr><th>Repository</th>\
             <th>Tags</th><th>Manifests</th><th>Size</th></tr></thead><tbody>",
            size(total.bytes),
            total.blobs
        );
        for r in &repos {
            let _ = write!(
                body,
                "<tr><td><a href=\"/ui/repository?name={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                q(&r.name),
                esc(&r.name),
                r.tags,
                r.manifests,
                size(r.bytes)
            );
        }
        body.push_str("</tbody></table>");
        if let Some(next) = repos.last().filter(|_| more) {
            let _ = write!(
                body,
                "<p class=\"pager\"><a href=\"/ui/operate?last={}\">Next</a></p>",
                q(&next.name)
            );
        }
    }
    body.push_str(&cache_section(ui));
    body.push_str(&deliveries_section(ui).await?);
    if let Some(collector) = &ui.st.collector {
        let runs = collector.run_views(RUNS_SHOWN, None).await.map_err(unavailable)?;
        let _ = write!(
            body,
            "<h2>Garbage collection</h2><form method=\"post\" action=\"/ui/operate/gc\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button id=\"dry-run\">Start a dry run</button> \
             <span class=\"muted\">reports what a collection and the retention policies would remove (grace one hour); removes nothing</span></form>",
            esc(&ui.csrf)
        );
        if runs.is_empty() {
            body.push_str("<p class=\"muted\">No collection has run yet.</p>");
        } else {
            body.push_str(
                "<table><thead><tr><th>Run</th><th>Kind</th><th>State</th><th>Started</th><th>Outcome</th></tr></thead><tbody>",
            );
            for run in &runs {
                let _ = write!(
                    body,
                    "<tr><td><a href=\"/ui/operate/gc?id={}\"><code>{}</code></a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    q(&run.id),
                    esc(&run.id),
                    if run.dry_run { "dry run" } else if run.queued { "review" } else { "collection" },
                    esc(run.state),
                    esc(&run.started_at),
                    esc(&summary(run))
                );
            }
            body.push_str("</tbody></table>");
        }
    }
    Ok(("Operate".into(), body))
}

/// Hit ratio, bytes the upstreams were spared and their rate limits, per upstream.
fn cache_section(ui: &Ui) -> String {
    let Some(proxy) = &ui.st.proxy else { return String::new() };
    let mut out = String::from(
        "<h2>Pull-through cache</h2><p class=\"muted\">Since this replica started.</p><table class=\"cache\">\
         <thead><tr><th>Upstream</th><th>Hit ratio</th><th>Hits</th><th>Misses</th><th>Fetched</th>\
         <th>Served from cache</th><th>Rate limit left</th></tr></thead><tbody>",
    );
    for name in proxy.upstream_names() {
        let f = ui.st.metrics.proxy.figures(name);
        let pulls = f.hits + f.misses;
        let ratio = if pulls == 0 {
            "none yet".to_owned()
        } else {
            format!("{:.0}%", f.hits as f64 * 100.0 / pulls as f64)
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            ratio,
            f.hits,
            f.misses,
            size(f.fetched_bytes),
            size(f.served_bytes),
            f.ratelimit_remaining
                .map_or_else(|| "<span class=\"muted\">not reported</span>".to_owned(), |r| r.to_string())
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// Each webhook's and on-push replication policy's deliveries: what waits and what was given up
/// (from the event log, every replica's), and what this replica delivered.
async fn deliveries_section(ui: &Ui) -> Result<String, (StatusCode, String)> {
    let (Some(notifier), Some(log)) = (&ui.st.notifier, &ui.st.events) else { return Ok(String::new()) };
    let figures = notifier.figures();
    if figures.is_empty() {
        return Ok(String::new());
    }
    let backlog = log.backlog().await.map_err(unavailable)?;
    let mut out = String::from(
        "<h2>Webhooks and replication on push</h2><table class=\"deliveries\"><thead><tr><th>Endpoint</th>\
         <th>Kind</th><th>Waiting</th><th>Waiting since</th><th>Given up</th><th>Last error</th>\
         <th>Delivered here</th><th>Failed attempts here</th></tr></thead><tbody>",
    );
    for f in &figures {
        let b = backlog.iter().find(|b| b.endpoint == f.name);
        let oldest = b.and_then(|b| b.oldest_pending.as_ref());
        // Why the oldest waits; else why the last given up failed.
        let error = oldest
            .and_then(|d| d.last_error.as_deref())
            .or_else(|| b.and_then(|b| b.last_dead.as_ref()).and_then(|d| d.last_error.as_deref()));
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.name),
            if f.on_push { "replication" } else { "webhook" },
            b.map_or(0, |b| b.pending),
            oldest.map_or_else(|| "<span class=\"muted\">nothing waits</span>".to_owned(), |d| when(d.at / 1000)),
            b.map_or(0, |b| b.dead),
            error.map_or_else(|| "<span class=\"muted\">none</span>".to_owned(), esc),
            f.done,
            f.failed
        );
    }
    out.push_str("</tbody></table>");
    Ok(out)
}

pub async fn run(ui: &Ui, id: Option<&str>) -> Page {
    if !ui.caller.may_admin() {
        return Err(forbidden());
    }
    let collector = ui.st.collector.as_ref().ok_or_else(|| unavailable("no collector"))?;
    let missing = || (StatusCode::NOT_FOUND, "No such collection.".to_owned());
    let run = collector.run_view(id.ok_or_else(missing)?).await.map_err(unavailable)?.ok_or_else(missing)?;
    let mut body = format!(
        "<h1>Collection <code>{}</code></h1><p>{}{}, started {}{}. {}</p>",
        esc(&run.id),
        if run.dry_run { "A dry run, " } else { "" },
        esc(run.state),
        esc(&run.started_at),
        run.ended_at.as_deref().map(|e| format!(", ended {}", esc(e))).unwrap_or_default(),
        esc(&summary(&run))
    );
    if let Some(repos) = run.report.as_ref().and_then(|r| r.get("repositories")).and_then(|r| r.as_array()) {
        body.push_str(
            "<table><thead><tr><th>Repository</th><th>Tags</th><th>Manifests</th><th>Blob links</th></tr></thead><tbody>",
        );
        let len = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_array()).map_or(0, Vec::len);
        for r in repos {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(r.get("repository").and_then(|x| x.as_str()).unwrap_or("")),
                len(r, "tags"),
                len(r, "manifests"),
                len(r, "links")
            );
        }
        body.push_str("</tbody></table>");
        body.push_str(&retention(repos, run.dry_run));
    } else if run.ended_at.is_none() {
        let _ = write!(body, "<p><a href=\"/ui/operate/gc?id={}\">Reload</a> to follow it.</p>", q(&run.id));
    }
    let view = serde_json::to_string_pretty(&run).unwrap_or_default();
    let _ = write!(
        body,
        "<details><summary>The whole run</summary><pre><code>{}</code></pre></details>",
        esc(&view)
    );
    Ok((format!("Collection {}", run.id), body))
}

/// Most retention decisions listed on a run's page (its whole report is below them).
const DECISIONS_SHOWN: usize = 500;

/// What the retention policies decided for each tag they looked at, and why.
fn retention(repos: &[serde_json::Value], dry_run: bool) -> String {
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    let list =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_array()).cloned().unwrap_or_default();
    let mut rows = Vec::new();
    for r in repos {
        let repo = s(r, "repository");
        for t in list(r, "tags") {
            let reported = t.get("policyDryRun").and_then(|x| x.as_bool()).unwrap_or(false);
            let decision = match (reported, dry_run) {
                (true, _) => "reported only (the policy is a dry run)",
                (false, true) => "would be removed",
                (false, false) => "removed",
            };
            rows.push((repo.clone(), s(&t, "tag"), decision, s(&t, "reason")));
        }
        for t in list(r, "keptTags") {
            rows.push((repo.clone(), s(&t, "tag"), "kept", s(&t, "reason")));
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<h2>Retention</h2><table class=\"retention\"><thead><tr><th>Repository</th><th>Tag</th><th>Decision</th>\
         <th>Why</th></tr></thead><tbody>",
    );
    for (repo, tag, decision, reason) in rows.iter().take(DECISIONS_SHOWN) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{decision}</td><td>{}</td></tr>",
            esc(repo),
            esc(tag),
            esc(reason)
        );
    }
    out.push_str("</tbody></table>");
    if rows.len() > DECISIONS_SHOWN {
        let _ = write!(
            out,
            "<p class=\"muted\">and {} more in the whole run below</p>",
            rows.len() - DECISIONS_SHOWN
        );
    }
    out
}

/// Starts a dry run: its id.
pub async fn start_dry_run(
    ui: &Ui,
    parts: &axum::http::request::Parts,
) -> Result<String, (StatusCode, String)> {
    if !ui.caller.may_admin() {
        return Err(forbidden());
    }
    let collector = ui.st.collector.as_ref().ok_or_else(|| unavailable("no collector"))?;
    let options = Options { dry_run: true, ..Options::default() };
    let run = collector.start(options).await.map_err(|e| (StatusCode::CONFLICT, e.to_string()))?;
    ui.st
        .record_admin_action(
            parts,
            &ui.caller,
            format!("garbage collection {} started from the UI: dry run", run.id),
        )
        .await;
    Ok(run.id)
}
