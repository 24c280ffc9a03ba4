//! The UI's pages: repositories (search, pages of 50 that never scan the whole catalog), a
//! repository's tags with pull commands, a manifest (an index's children with platforms, an
//! image's config and layers, the referrers tree), and deleting a tag or manifest after a
//! preview of what goes with it. A repository the viewer may not pull does not exist here.

use std::fmt::Write;

use berth_core::oci::{Digest, Reference, RepoName};

use super::html::{esc, q, short, size};
use super::view::{Page, Ui};
use crate::auth::Actions;
use crate::service::ServiceError;

pub const PAGE: usize = 50;
/// How deep the referrers tree is followed (a signature of an SBOM of an image is depth 2).
const REFERRER_DEPTH: usize = 3;
/// Most referrers listed per subject.
const REFERRERS_SHOWN: usize = 50;

fn missing(what: &str) -> (axum::http::StatusCode, String) {
    (axum::http::StatusCode::NOT_FOUND, format!("{what} does not exist, or you may not see it."))
}

fn failed(e: ServiceError) -> (axum::http::StatusCode, String) {
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

/// A manifest's kind, from its media type.
fn kind(media_type: &str) -> &'static str {
    match media_type {
        "application/vnd.oci.image.index.v1+json"
        | "application/vnd.docker.distribution.manifest.list.v2+json" => "index",
        "application/vnd.oci.image.manifest.v1+json"
        | "application/vnd.docker.distribution.manifest.v2+json" => "image",
        _ => "other",
    }
}

pub async fn repository(ui: &Ui, name: Option<&str>, last: Option<String>, deleted: Option<&str>) -> Page {
    let repo = visible_repo(ui, name)?;
    let listing = ui.st.registry.tags(&repo, Some(PAGE), last).await.map_err(failed)?;
    let may_delete = ui.caller.may(repo.as_str(), Actions::DELETE);
    let mut body = format!("<h1>{}</h1>", esc(repo.as_str()));
    if let Some(d) = deleted {
        let _ = write!(body, "<p class=\"notice\">Deleted {}.</p>", esc(d));
    }
    if listing.items.is_empty() {
        body.push_str("<p class=\"muted\">No tags.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th>Tag</th><th>Digest</th><th>Kind</th><th>Size</th><th>Pull</th><th></th></tr></thead><tbody>",
        );
        let host = ui.host();
        for tag in &listing.items {
            let Ok(reference) = tag.parse::<Reference>() else { continue };
            let Ok(record) = ui.st.registry.head_manifest(&repo, &reference).await else { continue };
            let image = format!("{host}/{}:{tag}", repo.as_str());
            let _ = write!(
                body,
                "<tr><td>{t}</td><td><a href=\"/ui/manifest?name={n}&amp;ref={d}\"><code>{sd}</code></a></td><td>{k}</td><td>{s}</td>\
                 <td><details><summary>Pull</summary>\
                 <input class=\"copy\" readonly aria-label=\"docker\" value=\"docker pull {i}\">\
                 <input class=\"copy\" readonly aria-label=\"podman\" value=\"podman pull {i}\">\
                 <input class=\"copy\" readonly aria-label=\"crane\" value=\"crane pull {i} image.tar\"></details></td><td>",
                t = esc(tag),
                n = q(repo.as_str()),
                d = q(record.digest.as_str()),
                sd = esc(&short(record.digest.as_str())),
                k = kind(&record.media_type),
                s = size(record.size),
                i = esc(&image),
            );
            if may_delete {
                let _ = write!(
                    body,
                    "<a class=\"delete\" href=\"/ui/delete?name={}&amp;ref={}\">Delete</a>",
                    q(repo.as_str()),
                    q(tag)
                );
            }
            body.push_str("</td></tr>");
        }
        body.push_str("</tbody></table>");
    }
    if let Some(next) = &listing.next {
        let _ = write!(
            body,
            "<p class=\"pager\"><a href=\"/ui/repository?name={}&amp;last={}\">Next</a></p>",
            q(repo.as_str()),
            q(next)
        );
    }
    Ok((repo.as_str().to_owned(), body))
}

fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v.get(key).and_then(|x| x.as_str()).unwrap_or("")
}

fn link(repo: &RepoName, digest: &str) -> String {
    format!(
        "<a href=\"/ui/manifest?name={}&amp;ref={}\"><code>{}</code></a>",
        q(repo.as_str()),
        q(digest),
        esc(&short(digest))
    )
}

/// The referrers of `subject`, and theirs, as nested lists.
async fn referrers_tree(ui: &Ui, repo: &RepoName, subject: &Digest, depth: usize, out: &mut String) {
    let Ok(found) = ui.st.registry.referrers(repo, subject, None).await else { return };
    if found.is_empty() {
        return;
    }
    out.push_str("<ul class=\"referrers\">");
    for r in found.iter().take(REFERRERS_SHOWN) {
        let _ = write!(
            out,
            "<li>{} {} <span class=\"muted\">{}</span>",
            esc(r.artifact_type.as_deref().unwrap_or(&r.media_type)),
            link(repo, r.digest.as_str()),
            size(r.size)
        );
        if depth > 1 {
            Box::pin(referrers_tree(ui, repo, &r.digest, depth - 1, out)).await;
        }
        out.push_str("</li>");
    }
    if found.len() > REFERRERS_SHOWN {
        let _ = write!(out, "<li class=\"muted\">and {} more</li>", found.len() - REFERRERS_SHOWN);
    }
    out.push_str("</ul>");
}

pub async fn manifest(ui: &Ui, name: Option<&str>, reference: Option<&str>) -> Page {
    let repo = visible_repo(ui, name)?;
    let reference: Reference = reference.unwrap_or("").parse().map_err(|_| missing("That manifest"))?;
    let record = ui.st.registry.head_manifest(&repo, &reference).await.map_err(failed)?;
    let bytes = ui.st.registry.manifest_bytes(&record).await.map_err(failed)?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    let digest = record.digest.as_str();
    let mut body = format!(
        "<h1>{}@{}</h1><table><tbody><tr><th>Digest</th><td><code>{}</code></td></tr>\
         <tr><th>Media type</th><td>{}</td></tr><tr><th>Size</th><td>{}</td></tr>",
        esc(repo.as_str()),
        esc(&short(digest)),
        esc(digest),
        esc(&record.media_type),
        size(record.size)
    );
    if let Some(at) = doc.get("artifactType").and_then(|v| v.as_str()) {
        let _ = write!(body, "<tr><th>Artifact type</th><td>{}</td></tr>", esc(at));
    }
    if let Some(subject) = doc.get("subject").map(|s| str_of(s, "digest")).filter(|d| !d.is_empty()) {
        let _ = write!(body, "<tr><th>Refers to</th><td>{}</td></tr>", link(&repo, subject));
    }
    body.push_str("</tbody></table>");
    if let Some(children) = doc.get("manifests").and_then(|m| m.as_array()) {
        body.push_str("<h2>Platforms</h2><table><thead><tr><th>Platform</th><th>Digest</th><th>Size</th></tr></thead><tbody>");
        for c in children {
            let p = c.get("platform").cloned().unwrap_or_default();
            let mut platform = format!("{}/{}", str_of(&p, "os"), str_of(&p, "architecture"));
            if !str_of(&p, "variant").is_empty() {
                platform = format!("{platform}/{}", str_of(&p, "variant"));
            }
            if platform == "/" {
                platform = str_of(c, "artifactType").to_owned();
            }
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&platform),
                link(&repo, str_of(c, "digest")),
                size(c.get("size").and_then(|s| s.as_u64()).unwrap_or(0))
            );
        }
        body.push_str("</tbody></table>");
    }
    if let Some(config) = doc.get("config") {
        let _ = write!(
            body,
            "<h2>Config</h2><p><code>{}</code> {} <span class=\"muted\">{}</span></p>",
            esc(str_of(config, "digest")),
            esc(str_of(config, "mediaType")),
            size(config.get("size").and_then(|s| s.as_u64()).unwrap_or(0))
        );
    }
    if let Some(layers) = doc.get("layers").and_then(|l| l.as_array()) {
        let total: u64 = layers.iter().filter_map(|l| l.get("size").and_then(|s| s.as_u64())).sum();
        let _ = write!(
            body,
            "<h2>Layers <span class=\"muted\">{} in {}</span></h2><table><thead><tr><th>Digest</th><th>Media type</th><th>Size</th></tr></thead><tbody>",
            layers.len(),
            size(total)
        );
        for l in layers {
            let _ = write!(
                body,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&short(str_of(l, "digest"))),
                esc(str_of(l, "mediaType")),
                size(l.get("size").and_then(|s| s.as_u64()).unwrap_or(0))
            );
        }
        body.push_str("</tbody></table>");
    }
    let mut tree = String::new();
    referrers_tree(ui, &repo, &record.digest, REFERRER_DEPTH, &mut tree).await;
    body.push_str("<h2>Referrers</h2>");
    if tree.is_empty() {
        body.push_str("<p class=\"muted\">No signatures, SBOMs or attestations refer to it.</p>");
    } else {
        body.push_str(&tree);
    }
    let pretty = serde_json::to_string_pretty(&doc).unwrap_or_default();
    let _ = write!(
        body,
        "<details><summary>Manifest</summary><pre><code>{}</code></pre></details>",
        esc(&pretty)
    );
    if ui.caller.may(repo.as_str(), Actions::DELETE) {
        let _ = write!(
            body,
            "<p><a class=\"delete\" href=\"/ui/delete?name={}&amp;ref={}\">Delete this manifest</a></p>",
            q(repo.as_str()),
            q(digest)
        );
    }
    Ok((format!("{}@{}", repo.as_str(), short(digest)), body))
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
            let referrers = ui.st.registry.referrers(&repo, d, None).await.map(|r| r.len()).unwrap_or(0);
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
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/ui/delete\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"name\" value=\"{}\"><input type=\"hidden\" name=\"ref\" value=\"{}\">\
         <button class=\"danger\" id=\"confirm-delete\">Delete</button> \
         <a href=\"/ui/repository?name={}\">Cancel</a></form>",
        esc(&ui.csrf),
        esc(repo.as_str()),
        esc(&reference.to_string()),
        q(repo.as_str())
    );
    Ok(("Delete".into(), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_media_type() {
        assert_eq!(kind("application/vnd.oci.image.index.v1+json"), "index");
        assert_eq!(kind("application/vnd.docker.distribution.manifest.v2+json"), "image");
        assert_eq!(kind("application/vnd.cncf.helm.config.v1+json"), "other");
    }
}
