//! The loads' content: distinct blobs (a shared random body behind a prefix of their own) whose
//! digests are computed before any clock starts.

use bytes::Bytes;
use sha2::Digest as _;

pub(crate) const MIB: usize = 1 << 20;

/// Content for blob `n` of `size` bytes: a shared random body behind an 8-byte prefix.
#[derive(Clone)]
pub(crate) struct Blob {
    prefix: Bytes,
    body: Bytes,
    pub(crate) digest: String,
}

impl Blob {
    pub(crate) fn new(base: &Bytes, n: u64) -> Blob {
        let prefix = Bytes::copy_from_slice(&n.to_be_bytes());
        let body = base.slice(8..);
        let mut h = sha2::Sha256::new();
        h.update(&prefix);
        h.update(&body);
        Blob { prefix, body, digest: format!("sha256:{}", berth_core::oci::hex(&h.finalize())) }
    }

    pub(crate) fn len(&self) -> usize {
        self.prefix.len() + self.body.len()
    }

    pub(crate) fn stream(&self) -> reqwest::Body {
        let mut chunks = vec![self.prefix.clone()];
        let mut at = 0;
        while at < self.body.len() {
            let end = (at + MIB).min(self.body.len());
            chunks.push(self.body.slice(at..end));
            at = end;
        }
        reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks.into_iter().map(Ok::<_, std::io::Error>),
        ))
    }
}

pub fn random_bytes(size: usize, seed: u64) -> Bytes {
    // xorshift: incompressible enough, and the same for every server. The seed is spread first
    // (a splitmix64 step), so that every seed gives its own bytes: neighbouring seeds must not
    // collide, or "distinct" blobs would deduplicate.
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let mut x = x | 1;
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(size);
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_seed_gives_its_own_bytes() {
        let firsts: std::collections::HashSet<_> = (0..4096).map(|s| super::random_bytes(16, s)).collect();
        assert_eq!(firsts.len(), 4096);
    }
}
