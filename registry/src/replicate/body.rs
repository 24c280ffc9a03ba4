//! Documents read from a registry (manifests, listings), bounded: one that sends without end
//! must not take all memory.

use anyhow::Context;
use berth_client::Upstream;

/// The most bytes read of a manifest or a listing (a registry that sends one without end
/// must not take all memory): berth's own default manifest limit.
pub(super) const MAX_DOCUMENT: usize = 4 << 20;

/// A JSON document from `resp`, at most [`MAX_DOCUMENT`] bytes of it.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    side: &Upstream,
    resp: reqwest::Response,
    what: &str,
) -> anyhow::Result<T> {
    let bytes = side.read_limited(resp, what, MAX_DOCUMENT).await?;
    serde_json::from_slice(&bytes).with_context(|| format!("reading a {what}"))
}
