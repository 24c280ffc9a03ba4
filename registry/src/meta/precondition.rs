//! Conditional manifest writes checked in the write's own transaction — so two pipelines
//! promoting one tag cannot both win, whichever replica each reaches. The conditions themselves
//! ([`Precondition`], parsed from `If-Match` and `If-None-Match`) are `berth_core`'s.

use super::error::{MetaError, Result};
pub use berth_core::oci::precondition::{Condition, Etags, Precondition};
use berth_core::oci::Digest;

/// What a tag of a repository (by id) names now. Parameters: repository id, tag.
pub(crate) const TAG_NOW: &str = "SELECT digest FROM tags WHERE repository_id = $1 AND name = $2";
/// [`TAG_NOW`], its row locked until the transaction ends (PostgreSQL).
#[cfg(feature = "postgres")]
pub(crate) const TAG_NOW_LOCKED: &str =
    "SELECT digest FROM tags WHERE repository_id = $1 AND name = $2 FOR UPDATE";

/// What a tag of a repository (by name) names now. Parameters: repository, tag.
pub(crate) const NAMED_TAG_NOW: &str =
    "SELECT t.digest FROM tags t JOIN repositories r ON r.id = t.repository_id
     WHERE r.name = $1 AND t.name = $2";
/// [`NAMED_TAG_NOW`], the tag's row locked until the transaction ends (PostgreSQL).
#[cfg(feature = "postgres")]
pub(crate) const NAMED_TAG_NOW_LOCKED: &str =
    "SELECT t.digest FROM tags t JOIN repositories r ON r.id = t.repository_id
     WHERE r.name = $1 AND t.name = $2 FOR UPDATE OF t";

/// `Ok` when `expect` holds for `current`; the failure that names `current` otherwise.
pub(crate) fn check(expect: &Precondition, current: Option<Digest>) -> Result<()> {
    if expect.holds(current.as_ref()) {
        Ok(())
    } else {
        Err(MetaError::PreconditionFailed { current })
    }
}
