//! Upload session ids: the last path segment of `/v2/<name>/blobs/uploads/<id>`.

use std::fmt;
use std::str::FromStr;

/// A random v4 UUID in its hyphenated lowercase form; safe to use in storage keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UploadId(uuid::Uuid);

impl UploadId {
    pub fn random() -> UploadId {
        UploadId(uuid::Uuid::new_v4())
    }
}

impl FromStr for UploadId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        // Only the canonical 36-character form, so that one session has exactly one spelling.
        if s.len() != 36 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(());
        }
        uuid::Uuid::try_parse(s).map(UploadId).map_err(|_| ())
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({})", self.0.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_spellings() {
        let id = UploadId::random();
        assert_eq!(id.to_string().parse::<UploadId>(), Ok(id));
        let upper = id.to_string().to_uppercase();
        assert!(upper.parse::<UploadId>().is_err());
        assert!(id.to_string().replace('-', "").parse::<UploadId>().is_err());
        assert!("../../etc".parse::<UploadId>().is_err());
    }
}
