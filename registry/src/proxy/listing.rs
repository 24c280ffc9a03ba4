//! Tag lists of proxied repositories: the upstream's list when it answers, else the cached tags.

use berth_client::{Fetched, UpstreamError};
use tracing::warn;

use super::error::{ProxyError, Result};
use super::route::Target;
use super::state::Proxy;
use crate::meta::cache::ContentKind;

impl Proxy {
    /// The upstream's tags (pagination passed on) and whether more follow; `None` when the
    /// upstream fails, so the caller lists the cached tags instead.
    pub async fn tags(&self, t: &Target, query: &str) -> Result<Option<(Vec<String>, bool)>> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let up = &self.upstreams[t.upstream];
        let listed = match up.tags(&t.remote, query).await {
            Ok(Fetched::NotFound) => return Err(ProxyError::NotFound(ContentKind::Manifest)),
            Ok(Fetched::Found(resp)) => {
                let more = resp.headers().contains_key(reqwest::header::LINK);
                up.read_limited(resp, "tag list", self.registry.limits().max_manifest_bytes).await.and_then(
                    |body| {
                        serde_json::from_slice::<TagList>(&body)
                            .map(|l| (l.tags.unwrap_or_default(), more))
                            .map_err(|e| UpstreamError::Protocol {
                                upstream: up.name.clone(),
                                detail: format!("tag list: {e}"),
                            })
                    },
                )
            }
            Err(e) => Err(e),
        };
        match listed {
            Ok(list) => Ok(Some(list)),
            Err(e) => {
                self.metrics.error(&up.name, e.class());
                warn!(upstream = %up.name, error = %e, "tag list from upstream failed; listing cached tags");
                Ok(None)
            }
        }
    }
}
