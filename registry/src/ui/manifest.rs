//! A manifest's page: an index's platforms, an image's config (platform, command, environment,
//! labels) and history beside its layers, the referrers tree (signatures, SBOMs, attestations),
//! and the manifest itself.

use std::fmt::Write;

use berth_core::oci::{Digest, Reference, RepoName};
use serde_json::Value;

use super::html::{esc, q, short, size, when_text};
use super::pages::{failed, link, missing, visible_repo};
use super::tags::{platform, size_of, str_of, CONFIG_MAX};
use super::view::{Page, Ui};
use crate::auth::Actions;

/// How deep the referrers tree is followed (a signature of an SBOM of an image is depth 2).
const REFERRER_DEPTH: usize = 3;
/// Most referrers listed per subject.
const REFERRERS_SHOWN: usize = 50;
/// Most referrers listed in the whole tree: anyone who may push can hang any number of
/// referrers under each, and a page reads only what it shows.
const TREE_MOST: usize = 200;

/// The referrers of `subject`, and theirs, as nested lists, while `left` lasts.
async fn referrers_tree(
    ui: &Ui,
    repo: &RepoName,
    subject: &Digest,
    depth: usize,
    left: &mut usize,
    out: &mut String,
) {
    if *left == 0 {
        return;
    }
    let Ok(page) = ui.st.registry.first_referrers(repo, subject, REFERRERS_SHOWN.min(*left)).await else {
        return;
    };
    if page.items.is_empty() {
        return;
    }
    *left = left.saturating_sub(page.items.len());
    out.push_str("<ul class=\"referrers\">");
    for r in &page.items {
        let _ = write!(
            out,
            "<li>{} {} <span class=\"muted\">{}</span>",
            esc(r.artifact_type.as_deref().unwrap_or(&r.media_type)),
            link(repo, r.digest.as_str()),
            size(r.size)
        );
        if depth > 1 {
            Box::pin(referrers_tree(ui, repo, &r.digest, depth - 1, left, out)).await;
        }
        out.push_str("</li>");
    }
    if page.next.is_some() {
        out.push_str("<li class=\"muted\">and more</li>");
    }
    out.push_str("</ul>");
}

pub async fn manifest(ui: &Ui, name: Option<&str>, reference: Option<&str>) -> Page {
    let repo = visible_repo(ui, name)?;
    let reference: Reference = reference.unwrap_or("").parse().map_err(|_| missing("That manifest"))?;
    let record = ui.st.registry.head_manifest(&repo, &reference).await.map_err(failed)?;
    let bytes = ui.st.registry.manifest_bytes(&record).await.map_err(failed)?;
    let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
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
        platforms(&repo, children, &mut body);
    }
    if let Some(config) = doc.get("config") {
        config_view(ui, &repo, config, &doc, &mut body).await;
    }
    if let Some(layers) = doc.get("layers").and_then(|l| l.as_array()) {
        let total = layers.iter().map(size_of).fold(0u64, u64::saturating_add);
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
                size(size_of(l))
            );
        }
        body.push_str("</tbody></table>");
    }
    let mut tree = String::new();
    let mut left = TREE_MOST;
    referrers_tree(ui, &repo, &record.digest, REFERRER_DEPTH, &mut left, &mut tree).await;
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

fn platforms(repo: &RepoName, children: &[Value], body: &mut String) {
    body.push_str(
        "<h2>Platforms</h2><table><thead><tr><th>Platform</th><th>Digest</th><th>Size</th></tr></thead><tbody>",
    );
    for c in children {
        let mut shown = platform(c.get("platform").unwrap_or(&Value::Null));
        if shown.is_empty() {
            shown = str_of(c, "artifactType").to_owned();
        }
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&shown),
            link(repo, str_of(c, "digest")),
            size(size_of(c))
        );
    }
    body.push_str("</tbody></table>");
}

/// The config's digest, and, when it is an image's config small enough to read, what it says:
/// the platform, how the image runs, and its history beside the layers each step made.
async fn config_view(ui: &Ui, repo: &RepoName, config: &Value, doc: &Value, body: &mut String) {
    let _ = write!(
        body,
        "<h2>Config</h2><p><code>{}</code> {} <span class=\"muted\">{}</span></p>",
        esc(str_of(config, "digest")),
        esc(str_of(config, "mediaType")),
        size(size_of(config))
    );
    let Ok(digest) = str_of(config, "digest").parse::<Digest>() else { return };
    let Ok(Some(bytes)) = ui.st.registry.small_blob(repo, &digest, CONFIG_MAX).await else { return };
    let Ok(image) = serde_json::from_slice::<Value>(&bytes) else { return };
    if !image.is_object() || (image.get("config").is_none() && image.get("history").is_none()) {
        return;
    }
    body.push_str(&image_config(&image, doc));
}

/// `image` (an OCI or Docker image config) as a table and a history.
pub fn image_config(image: &Value, manifest: &Value) -> String {
    let mut out = String::from("<table class=\"config\"><tbody>");
    let row = |out: &mut String, name: &str, value: String| {
        if !value.is_empty() {
            let _ = write!(out, "<tr><th>{name}</th><td>{value}</td></tr>");
        }
    };
    let run = image.get("config").unwrap_or(&Value::Null);
    let joined = |key: &str| -> String {
        match run.get(key) {
            Some(Value::Array(a)) => {
                let words: Vec<&str> = a.iter().filter_map(|w| w.as_str()).collect();
                format!("<code>{}</code>", esc(&serde_json::to_string(&words).unwrap_or_default()))
            }
            Some(Value::String(s)) if !s.is_empty() => format!("<code>{}</code>", esc(s)),
            _ => String::new(),
        }
    };
    let listed = |key: &str, pair: bool| -> String {
        let items: Vec<String> = match run.get(key) {
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).map(esc).collect(),
            Some(Value::Object(m)) if pair => {
                m.iter().map(|(k, v)| esc(&format!("{k}={}", v.as_str().unwrap_or("")))).collect()
            }
            Some(Value::Object(m)) => m.keys().map(|k| esc(k)).collect(),
            _ => Vec::new(),
        };
        items.iter().map(|i| format!("<code>{i}</code>")).collect::<Vec<_>>().join(" ")
    };
    row(&mut out, "Platform", esc(&platform(image)));
    row(&mut out, "Created", esc(&when_text(str_of(image, "created"))));
    row(&mut out, "Entrypoint", joined("Entrypoint"));
    row(&mut out, "Command", joined("Cmd"));
    row(&mut out, "Working directory", joined("WorkingDir"));
    row(&mut out, "User", joined("User"));
    row(&mut out, "Ports", listed("ExposedPorts", false));
    row(&mut out, "Environment", listed("Env", false));
    row(&mut out, "Labels", listed("Labels", true));
    out.push_str("</tbody></table>");
    let Some(history) = image.get("history").and_then(|h| h.as_array()).filter(|h| !h.is_empty()) else {
        return out;
    };
    let layers = manifest.get("layers").and_then(|l| l.as_array()).map(Vec::as_slice).unwrap_or_default();
    let mut layer = layers.iter();
    let _ = write!(
        out,
        "<h2>History <span class=\"muted\">{} steps</span></h2><table class=\"history\"><thead><tr>\
         <th>Created</th><th>Step</th><th>Layer</th></tr></thead><tbody>",
        history.len()
    );
    for step in history {
        let empty = step.get("empty_layer").and_then(|e| e.as_bool()).unwrap_or(false);
        // Each step that made a layer is the next layer, in order.
        let made = if empty { None } else { layer.next() };
        let by = str_of(step, "created_by");
        let by = by.strip_prefix("/bin/sh -c #(nop) ").unwrap_or(by).trim();
        let comment = str_of(step, "comment");
        let _ = write!(
            out,
            "<tr><td>{}</td><td><code>{}</code>{}</td><td>{}</td></tr>",
            esc(&when_text(str_of(step, "created"))),
            esc(by),
            if comment.is_empty() {
                String::new()
            } else {
                format!(" <span class=\"muted\">{}</span>", esc(comment))
            },
            made.map_or_else(|| "<span class=\"muted\">none</span>".to_owned(), |l| size(size_of(l)))
        );
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn history_steps_meet_their_layers() {
        let image = json!({
            "architecture": "amd64", "os": "linux", "created": "2026-11-30T10:00:00Z",
            "config": {"Entrypoint": ["/app"], "Env": ["PATH=/bin", "<x>=1"], "Labels": {"team": "web"}},
            "history": [
                {"created_by": "/bin/sh -c #(nop) ADD file:abc in /", "created": "2026-11-30T09:00:00Z"},
                {"created_by": "ENV <x>=1", "empty_layer": true},
                {"created_by": "COPY app /app"}
            ]
        });
        let manifest = json!({"layers": [{"size": 1536}, {"size": 2048}]});
        let html = image_config(&image, &manifest);
        assert!(html.contains("linux/amd64"), "{html}");
        assert!(html.contains("[&quot;/app&quot;]"), "{html}");
        assert!(html.contains("&lt;x&gt;=1") && !html.contains("<x>"), "{html}");
        assert!(html.contains("team=web"), "{html}");
        assert!(html.contains("3 steps"), "{html}");
        // The ADD made the first layer, the ENV none, the COPY the second.
        let add = html.find("ADD file:abc").unwrap();
        let env = html.find("ENV &lt;x&gt;=1").unwrap();
        let copy = html.find("COPY app").unwrap();
        assert!(html[add..env].contains("1.5 KiB"), "{html}");
        assert!(html[env..copy].contains("none"), "{html}");
        assert!(html[copy..].contains("2.0 KiB"), "{html}");
    }
}
