//! Paginated listings (`n` and `last`): a repository's tags, the catalog.

use berth_client::{Fetched, Upstream};
use berth_core::oci::RepoName;

/// Names read per page of a tag list or the catalog.
const PAGE: usize = 1000;
/// The most names one listing is read for: a registry that answers every page with new names
/// would otherwise be read for ever, into memory.
const MAX_NAMES: usize = 1_000_000;

/// Every tag of `repo` at one side, page by page; `None` when it has no such repository.
pub async fn tag_list(side: &Upstream, repo: &RepoName) -> anyhow::Result<Option<Vec<String>>> {
    #[derive(serde::Deserialize)]
    struct List {
        #[serde(default)]
        tags: Option<Vec<String>>,
    }
    let missing = std::sync::atomic::AtomicBool::new(false);
    let tags = pages(|query| {
        let missing = &missing;
        async move {
            match side.tags(repo, &query).await? {
                Fetched::Found(resp) => {
                    Ok(super::body::read_json::<List>(side, resp, "tag list").await?.tags)
                }
                Fetched::NotFound => {
                    missing.store(true, std::sync::atomic::Ordering::Relaxed);
                    Ok(None)
                }
            }
        }
    })
    .await?;
    Ok((!missing.load(std::sync::atomic::Ordering::Relaxed)).then_some(tags))
}

/// Every name of a paginated list (`n` and `last`), `page` reading one page for a query. A
/// full page that does not move past the last name read is refused: a registry that ignores
/// `last` would otherwise be asked for the same page for ever. So is a listing past
/// [`MAX_NAMES`].
pub async fn pages<F, Fut>(page: F) -> anyhow::Result<Vec<String>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<Vec<String>>>>,
{
    let mut all: Vec<String> = Vec::new();
    loop {
        let mut query = format!("n={PAGE}");
        if let Some(last) = all.last() {
            query.push_str("&last=");
            query.extend(form_urlencoded::byte_serialize(last.as_bytes()));
        }
        let names = page(query).await?.unwrap_or_default();
        let more = names.len() >= PAGE;
        if let (true, Some(last), Some(new)) = (more, all.last(), names.last()) {
            if new <= last {
                anyhow::bail!("the registry's listing does not move past {last:?}: it ignores `last`");
            }
        }
        all.extend(names);
        if !more {
            return Ok(all);
        }
        if all.len() >= MAX_NAMES {
            anyhow::bail!("the registry's listing goes on past {MAX_NAMES} names; narrow the rule's repositories or tags");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listing_that_never_ends_is_refused() {
        // Every page full of names past the last: read until the bound, then refused.
        let endless = |query: String| async move {
            let from = query.split("&last=").nth(1).map_or(0, |l| l.parse::<usize>().unwrap_or(0) + 1);
            Ok(Some((from..from + PAGE).map(|n| format!("{n:09}")).collect()))
        };
        let err = pages(endless).await.unwrap_err().to_string();
        assert!(err.contains("goes on past 1000000 names"), "{err}");
    }

    #[tokio::test]
    async fn a_listing_ends_at_its_first_short_page() {
        let two_pages = |query: String| async move {
            let first = !query.contains("last=");
            let n = if first { PAGE } else { 3 };
            let base = if first { 0 } else { PAGE };
            Ok(Some((base..base + n).map(|n| format!("{n:09}")).collect()))
        };
        assert_eq!(pages(two_pages).await.unwrap().len(), PAGE + 3);
    }
}
