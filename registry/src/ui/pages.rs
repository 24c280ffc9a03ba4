//! The UI's pages: repositories (search, pages of 50 that never scan the whole catalog), a
//! repository's tags with pull commands, a manifest (an index's children with platforms, an
//! image's config and layers, the referrers tree), and deleting a tag or manifest after a
//! preview of what goes with it. A repository the viewer may not pull does not exist here.

use std::fmt::Write;

use berth_core::oci::{Digest, Reference, RepoName};

use futures_util::StreamExt;

use super::html::{esc, q, short, size, when};
use super::tags::{describe, Described, Order, DESCRIBED_AT_ONCE};
use super::view::{Page, Ui};
use crate::auth::Actions;
use crate::meta::browse::TagPage;
use crate::service::ServiceError;

pub const PAGE: usize = 50;

pub fn missing(what: &str) -> (axum::http::StatusCode, String) {
    (axum::http::StatusCode::NOT_FOUND, format!("{what} does not exist, or you may not see it."))
}

pub fn failed(e: ServiceError) -> (axum::http::StatusCode, String) {
    match e {
        ServiceError::NameUnknown => missing("That repository"),
        ServiceError::ManifestUnknown => missing("That manifest"),
        e => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("The registry could not answer: {e}")),
    }
}

/// The repository `name` names, if the viewer may pull from it.
pub fn visible_repo(ui: &Ui, name: Option<&str>) -> Result<RepoName, (axum::http::StatusCode, String)> {
    let repo: RepoName = name.unwrap_or("").parse().map_err(|_| missing("That repository"))?;
    if !ui.caller.may_read(repo.as_str()) {
        return Err(missing("That repository"));
    }
    Ok(repo)
}

pub async fn repositories(ui: &Ui, search: &str, last: Option<String>) -> Page {
    let search = search.trim();
    let listing = ui
        .st
        .registry
        .catalog(Some(PAGE), last, |r| ui.caller.may_read(r) && (search.is_empty() || r.contains(search)))
        .await
        .map_err(failed)?;
    let mut body = format!(
        "<h1>Repositories</h1><form class=\"search\" method=\"get\" action=\"/ui/\">\
         <input name=\"q\" value=\"{}\" placeholder=\"Search repositories\" aria-label=\"Search repositories\">\
         <button>Search</button></form>",
        esc(search)
    );
    if listing.items.is_empty() {
        body.push_str("<p class=\"muted\">No repositories here that you may pull.</p>");
    } else {
        body.push_str("<table><thead><tr><th>Repository</th></tr></thead><tbody>");
        for name in &listing.items {
            let _ = write!(
                body,
                "<tr><td><a href=\"/ui/repository?name={}\">{}</a></td></tr>",
                q(name),
                esc(name)
            );
        }
        body.push_str("</tbody></table>");
    }
    if let Some(next) = &listing.next {
        let _ = write!(
            body,
            "<p class=\"pager\"><a href=\"/ui/?q={}&amp;last={}\">Next</a></p>",
            q(search),
            q(next)
        );
    }
    Ok(("Repositories".into(), body))
}

pub async fn repository(ui: &Ui, name: Option<&str>, order: Order, from: u64, deleted: Option<&str>) -> Page {
    let repo = visible_repo(ui, name)?;
    let collector = ui.st.collector.as_ref().ok_or_else(|| {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "This registry lists no tags here.".to_owned())
    })?;
    if order == Order::Pulled {
        // This replica's pulls are written behind: written now, a pull just made counts.
        if let Err(e) = ui.st.registry.flush_behind().await {
            tracing::warn!(error = %e, "could not write pull times before listing tags");
        }
    }
    let page = collector.tag_page(&repo, order, from, PAGE as u64).await.map_err(failed)?;
    let Some(TagPage { total, tags: shown }) = page else { return Err(missing("That repository")) };
    let reads: Vec<_> = shown.iter().map(|t| describe(ui, &repo, &t.digest)).collect();
    let described: Vec<Described> =
        futures_util::stream::iter(reads).buffered(DESCRIBED_AT_ONCE).collect().await;
    let mut wanted: Vec<Digest> = shown
        .iter()
        .map(|t| t.digest.clone())
        .chain(described.iter().flat_map(|a| a.platforms.iter().filter_map(|(_, child)| child.clone())))
        .collect();
    wanted.sort();
    wanted.dedup();
    let sizes = collector.image_sizes(&repo, wanted).await.map_err(failed)?;
    let size_of = |d: &Digest| size(sizes.get(d).copied().unwrap_or(0));
    let may_delete = ui.caller.may(repo.as_str(), Actions::DELETE);
    let here = format!("/ui/repository?name={}", q(repo.as_str()));
    let mut body = format!("<h1>{}</h1>", esc(repo.as_str()));
    if let Some(d) = deleted {
        let _ = write!(body, "<p class=\"notice\">Deleted {}.</p>", esc(d));
    }
    if total == 0 {
        body.push_str("<p class=\"muted\">No tags.</p>");
        return Ok((repo.as_str().to_owned(), body));
    }
    let _ = write!(body, "<p class=\"order\">{total} tags, by ");
    for (i, o) in Order::ALL.iter().enumerate() {
        let label = match o {
            Order::Pushed => "last pushed",
            Order::Pulled => "last pulled",
            Order::Name => "name",
        };
        let sep = if i == 0 { "" } else { " · " };
        if *o == order {
            let _ = write!(body, "{sep}<strong>{label}</strong>");
        } else {
            let _ = write!(body, "{sep}<a href=\"{here}&amp;order={}\">{label}</a>", o.as_str());
        }
    }
    body.push_str(
        "</p><table class=\"tags\"><thead><tr><th>Tag</th><th>Digest</th><th>Platforms</th><th>Size</th>\
         <th>Pushed</th><th>Pulled</th><th>Pull</th><th></th></tr></thead><tbody>",
    );
    let host = ui.host();
    for (tag, about) in shown.iter().zip(&described) {
        let image = format!("{host}/{}:{}", repo.as_str(), tag.name);
        let mut platforms = String::new();
        for (i, (p, child)) in about.platforms.iter().enumerate() {
            let sep = if i == 0 { "" } else { "<br>" };
            let _ = write!(platforms, "{sep}{}", esc(p));
            if let Some(child) = child {
                let _ = write!(platforms, " <span class=\"muted\">{}</span>", size_of(child));
            }
        }
        if about.more > 0 {
            let _ = write!(platforms, "<br><span class=\"muted\">and {} more</span>", about.more);
        }
        if platforms.is_empty() && about.kind != "image" && !about.kind.is_empty() {
            platforms = format!("<span class=\"muted\">{}</span>", about.kind);
        }
        let _ = write!(
            body,
            "<tr><td>{t}</td><td>{l}</td><td>{p}</td><td>{s}</td><td>{pushed}</td><td>{pulled}</td>\
             <td><details><summary>Pull</summary>\
             <input class=\"copy\" readonly aria-label=\"docker\" value=\"docker pull {i}\">\
             <input class=\"copy\" readonly aria-label=\"podman\" value=\"podman pull {i}\">\
             <input class=\"copy\" readonly aria-label=\"crane\" value=\"crane pull {i} image.tar\"></details></td><td>",
            t = esc(&tag.name),
            l = link(&repo, tag.digest.as_str()),
            p = platforms,
            s = size_of(&tag.digest),
            pushed = when(tag.pushed_at),
            pulled = tag.pulled_at.map_or_else(|| "<span class=\"muted\">never</span>".to_owned(), when),
            i = esc(&image),
        );
        if may_delete {
            let _ = write!(
                body,
                "<a class=\"delete\" href=\"/ui/delete?name={}&amp;ref={}\">Delete</a>",
                q(repo.as_str()),
                q(&tag.name)
            );
        }
        body.push_str("</td></tr>");
    }
    body.push_str("</tbody></table><p class=\"pager\">");
    if from > 0 {
        let _ = write!(
            body,
            "<a href=\"{here}&amp;order={}&amp;from={}\">Previous</a> ",
            order.as_str(),
            from.saturating_sub(PAGE as u64)
        );
    }
    let next = from.saturating_add(PAGE as u64);
    if next < total {
        let _ = write!(body, "<a href=\"{here}&amp;order={}&amp;from={next}\">Next</a>", order.as_str());
    }
    body.push_str("</p>");
    Ok((repo.as_str().to_owned(), body))
}

/// A link to a manifest's page, by its short digest.
pub fn link(repo: &RepoName, digest: &str) -> String {
    format!(
        "<a href=\"/ui/manifest?name={}&amp;ref={}\"><code>{}</code></a>",
        q(repo.as_str()),
        q(digest),
        esc(&short(digest))
    )
}

/// The repository and reference a delete names, if the viewer may delete there.
pub fn deletable(
    ui: &Ui,
    name: Option<&str>,
    reference: Option<&str>,
) -> Result<(RepoName, Reference), (axum::http::StatusCode, String)> {
    let repo = visible_repo(ui, name)?;
    let reference: Reference = reference.unwrap_or("").parse().map_err(|_| missing("That manifest"))?;
    if !ui.caller.may(repo.as_str(), Actions::DELETE) {
        return Err((axum::http::StatusCode::FORBIDDEN, format!("You may not delete in {}.", repo.as_str())));
    }
    Ok((repo, reference))
}

/// What a delete takes with it, and the form that confirms it.
pub async fn delete_preview(ui: &Ui, name: Option<&str>, reference: Option<&str>) -> Page {
    let (repo, reference) = deletable(ui, name, reference)?;
    let record = ui.st.registry.head_manifest(&repo, &reference).await.map_err(failed)?;
    let mut body = format!("<h1>Delete from {}</h1>", esc(repo.as_str()));
    match &reference {
        Reference::Tag(t) => {
            let _ = write!(
                body,
                "<p>This deletes the tag <code>{}</code>. The manifest {} it points to stays, by its digest and any \
                 other tag, until garbage collection finds that nothing needs it.</p>",
                esc(t.as_str()),
                link(&repo, record.digest.as_str())
            );
        }
        Reference::Digest(d) => {
            let referrers = match ui.st.registry.referrers(&repo, d, None, None).await {
                Ok(page) if page.next.is_some() => format!("{} or more", page.items.len()),
                Ok(page) => page.items.len().to_string(),
                Err(_) => "Its".into(),
            };
            let _ = write!(
                body,
                "<p>This deletes the manifest <code>{}</code> and every tag that points to it. {} referrer(s) \
                 (signatures, SBOMs, attestations) lose their subject; garbage collection removes them, and the \
                 blobs nothing else uses.</p>",
                esc(d.as_str()),
                referrers
            );
        }
    }
    // The manifest this preview shows: the delete goes ahead only if the tag still names it.
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/ui/delete\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"name\" value=\"{}\"><input type=\"hidden\" name=\"ref\" value=\"{}\">\
         <input type=\"hidden\" name=\"seen\" value=\"{}\">\
         <button class=\"danger\" id=\"confirm-delete\">Delete</button> \
         <a href=\"/ui/repository?name={}\">Cancel</a></form>",
        esc(&ui.csrf),
        esc(repo.as_str()),
        esc(&reference.to_string()),
        esc(record.digest.as_str()),
        q(repo.as_str())
    );
    Ok(("Delete".into(), body))
}
