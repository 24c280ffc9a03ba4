//! Eviction: pull times (collected by `pulls`) are written in batches, then each upstream's
//! `unpulled_ttl` and `max_size` evict the least recently pulled content.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::error::Result;
use super::state::Proxy;
use crate::meta;
use crate::meta::cache::CachedItem;

/// How often pull times are written and the size limits enforced.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(10);
const EVICT_BATCH: usize = 256;

impl Proxy {
    /// Writes pull times and enforces each upstream's size limit and TTL; runs until dropped.
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.maintain_once().await {
                warn!(error = %e, "cache maintenance failed; retrying later");
            }
        }
    }

    /// One pass of [`Proxy::maintain`]; returns how many items were evicted.
    pub async fn maintain_once(&self) -> Result<u64> {
        self.flush_pulls().await?;
        let mut evicted = 0;
        for up in &self.upstreams {
            let c = up.config();
            let now = meta::now_millis();
            if let Some(ttl) = c.unpulled_ttl {
                let before = now - ttl.as_millis() as i64;
                loop {
                    let old = self.cache.least_recently_pulled(&c.name, before, EVICT_BATCH).await?;
                    if old.is_empty() {
                        break;
                    }
                    for item in &old {
                        self.evict(&up.name, item).await?;
                        evicted += 1;
                    }
                }
            }
            if let Some(max) = c.max_size {
                let mut size = self.cache.cached_size(&c.name).await?;
                while size > max {
                    let lru = self.cache.least_recently_pulled(&c.name, now + 1, EVICT_BATCH).await?;
                    if lru.is_empty() {
                        break;
                    }
                    for item in &lru {
                        if size <= max {
                            break;
                        }
                        self.evict(&up.name, item).await?;
                        size = size.saturating_sub(item.size);
                        evicted += 1;
                    }
                }
            }
        }
        if evicted > 0 {
            self.registry.purge_released().await?;
        }
        Ok(evicted)
    }

    async fn flush_pulls(&self) -> Result<()> {
        let pulls = self.pulls.drain();
        if !pulls.is_empty() {
            self.cache.record_pulls(pulls).await?;
        }
        Ok(())
    }

    /// Forgets the item; its bytes, once nothing uses them, go on the one safe delete path
    /// (`crate::meta::sweep`), which the pass ends with.
    async fn evict(&self, upstream: &str, item: &CachedItem) -> Result<()> {
        self.cache.evict(item).await?;
        self.metrics.evicted(upstream, 1);
        debug!(repository = %item.repo, digest = %item.digest, kind = %item.kind, "evicted cached content");
        Ok(())
    }
}
