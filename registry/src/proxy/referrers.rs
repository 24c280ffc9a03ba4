//! Referrers of mirrored images (signatures, SBOMs, attestations): the upstream's list, a page
//! at a time as the upstream pages it, or its tag scheme's index where it has no referrers API.
//! A verifier reading them through the mirror (cosign, notation, a policy engine) sees what the
//! upstream holds, not only what was pulled through so far; when the upstream cannot answer, the
//! cached referrers are listed instead.

use berth_client::referrers::ReferrersPage;
use berth_core::oci::Digest;
use tracing::warn;

use super::route::Target;
use super::state::Proxy;

impl Proxy {
    /// The upstream's referrers of `subject` (of `artifact_type`, passed on), from the page
    /// `next` names (a link the upstream gave) or the first; `None` when the upstream fails.
    pub async fn referrers(
        &self,
        t: &Target,
        subject: &Digest,
        artifact_type: Option<&str>,
        next: Option<&str>,
    ) -> Option<ReferrersPage> {
        let up = &self.upstreams[t.upstream];
        let limit = self.registry.limits().max_manifest_bytes;
        match up.referrers(&t.remote, subject, artifact_type, next, limit).await {
            Ok(page) => Some(page),
            Err(e) => {
                self.metrics.error(&up.name, e.class());
                warn!(upstream = %up.name, error = %e, "referrers from upstream failed; listing cached referrers");
                None
            }
        }
    }
}
