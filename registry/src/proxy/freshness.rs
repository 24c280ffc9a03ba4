//! The freshness policy of cached tags: how long a tag is served before it is checked with the
//! upstream again (per upstream, per repository glob), and upstream 404s remembered for a while.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_core::config::ProxyConfig;
use berth_core::glob::Glob;

use super::route::Target;

/// Most remembered upstream 404s; older ones are dropped first when full.
const NEGATIVE_CAPACITY: usize = 10_000;

/// Each upstream's revalidation rules, and the upstream 404s remembered for a while.
pub(super) struct Freshness {
    /// Per upstream: the first matching repository glob sets the interval.
    rules: Vec<Vec<(Glob, Duration)>>,
    defaults: Vec<Duration>,
    negative: Mutex<HashMap<String, Instant>>,
}

impl Freshness {
    pub(super) fn new(config: &ProxyConfig) -> Freshness {
        let rules = config
            .upstreams
            .iter()
            .map(|u| u.revalidate.iter().map(|r| (Glob::new(&r.repositories), r.after)).collect())
            .collect();
        let defaults = config.upstreams.iter().map(|u| u.revalidate_after).collect();
        Freshness { rules, defaults, negative: Mutex::new(HashMap::new()) }
    }

    pub(super) fn revalidate_after(&self, t: &Target) -> Duration {
        let remote = t.remote.as_str();
        self.rules[t.upstream]
            .iter()
            .find(|(g, _)| g.matches(remote))
            .map(|(_, d)| *d)
            .unwrap_or(self.defaults[t.upstream])
    }

    pub(super) fn known_missing(&self, key: &str) -> bool {
        let Ok(mut map) = self.negative.lock() else { return false };
        match map.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    pub(super) fn remember_missing(&self, key: String, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let Ok(mut map) = self.negative.lock() else { return };
        if map.len() >= NEGATIVE_CAPACITY {
            let now = Instant::now();
            map.retain(|_, until| *until > now);
            if map.len() >= NEGATIVE_CAPACITY {
                map.clear();
            }
        }
        map.insert(key, Instant::now() + ttl);
    }
}
