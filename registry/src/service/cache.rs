//! A bounded in-memory cache of manifest bytes by digest.
//!
//! Content addressed by digest never changes, so a cached entry can never be stale: it needs no
//! invalidation, only a bound. Manifests are small and read far more often than written (every
//! pull starts with one), so keeping the hot ones saves a storage round trip per pull.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use berth_core::oci::Digest;

pub struct ManifestCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Digest, Bytes>,
    /// Insertion order, oldest first (first in, first out).
    order: VecDeque<Digest>,
    bytes: usize,
}

impl ManifestCache {
    pub fn new(capacity: usize) -> ManifestCache {
        ManifestCache { inner: Mutex::new(Inner::default()), capacity }
    }

    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        self.inner.lock().ok()?.entries.get(digest).cloned()
    }

    /// Drops an entry whose bytes are being deleted (the order queue skips it later).
    pub fn remove(&self, digest: &Digest) {
        let Ok(mut inner) = self.inner.lock() else { return };
        if let Some(b) = inner.entries.remove(digest) {
            inner.bytes -= b.len();
        }
    }

    pub fn insert(&self, digest: &Digest, bytes: Bytes) {
        if bytes.len() > self.capacity / 8 {
            return; // one huge manifest must not flush everything else
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.entries.contains_key(digest) {
            return;
        }
        inner.bytes += bytes.len();
        inner.entries.insert(digest.clone(), bytes);
        inner.order.push_back(digest.clone());
        while inner.bytes > self.capacity {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(b) = inner.entries.remove(&old) {
                inner.bytes -= b.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::oci::Algorithm;

    #[test]
    fn bounded_by_bytes_oldest_out_first() {
        let cache = ManifestCache::new(100);
        let d = |i: u8| Digest::of(Algorithm::Sha256, &[i]);
        for i in 0..10u8 {
            cache.insert(&d(i), Bytes::from(vec![i; 12]));
        }
        assert!(cache.get(&d(0)).is_none(), "oldest evicted");
        assert_eq!(cache.get(&d(9)).unwrap(), Bytes::from(vec![9u8; 12]));
        let total: usize = (0..10u8).filter_map(|i| cache.get(&d(i))).map(|b| b.len()).sum();
        assert!(total <= 100);
        cache.insert(&d(42), Bytes::from(vec![0u8; 13]));
        assert!(cache.get(&d(42)).is_none(), "entries above capacity/8 are not cached");
    }
}
