//! `Content-Range` (upload chunks) and `Range` (blob reads) header parsing.

/// An inclusive byte range `start-end`, as the upload API writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

impl ChunkRange {
    /// Never zero: a range names at least one byte.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// Parses a PATCH `Content-Range`. The distribution spec writes `<start>-<end>`; the RFC 9110
/// forms `bytes <start>-<end>/<total|*>` and `bytes=<start>-<end>` are accepted too.
pub fn parse_content_range(value: &str) -> Option<ChunkRange> {
    let v = value.trim();
    let v = v.strip_prefix("bytes").map(|r| r.trim_start_matches([' ', '='])).unwrap_or(v);
    let v = v.split_once('/').map_or(v, |(range, _total)| range);
    let (a, b) = v.split_once('-')?;
    let (start, end) = (parse_u64(a)?, parse_u64(b)?);
    (start <= end).then_some(ChunkRange { start, end })
}

/// A single range request against a blob of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` or `bytes=a-`
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes
    Suffix(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// Serve `start..=end` (206).
    Partial { start: u64, end: u64 },
    /// Nothing of the blob matches (416).
    Unsatisfiable,
}

/// Parses `Range`. `None` means "serve the whole blob": absent, malformed, non-`bytes` units and
/// multi-range requests are all ignored, as RFC 9110 allows. A well-formed range that ends before
/// it starts (`bytes=500-0`) is kept: RFC 9110 calls it invalid, and it is answered with 416.
pub fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    if a.is_empty() {
        return Some(ByteRange::Suffix(parse_u64(b)?));
    }
    let start = parse_u64(a)?;
    let end = if b.is_empty() { None } else { Some(parse_u64(b)?) };
    Some(ByteRange::From { start, end })
}

impl ByteRange {
    pub fn resolve(self, size: u64) -> RangeOutcome {
        match self {
            ByteRange::Suffix(0) => RangeOutcome::Unsatisfiable,
            ByteRange::Suffix(_) if size == 0 => RangeOutcome::Unsatisfiable,
            ByteRange::Suffix(n) => RangeOutcome::Partial { start: size.saturating_sub(n), end: size - 1 },
            ByteRange::From { start, .. } if start >= size => RangeOutcome::Unsatisfiable,
            ByteRange::From { start, end: Some(end) } if end < start => RangeOutcome::Unsatisfiable,
            ByteRange::From { start, end } => {
                let end = end.map_or(size - 1, |e| e.min(size - 1));
                RangeOutcome::Partial { start, end }
            }
        }
    }
}

/// What to serve of a blob of `size` bytes for an optional `Range`: `Ok(None)` the whole blob,
/// `Ok(Some((start, end)))` an inclusive part (206), `Err(size)` nothing (416).
pub fn span(range: Option<ByteRange>, size: u64) -> Result<Option<(u64, u64)>, u64> {
    match range.map(|r| r.resolve(size)) {
        None => Ok(None),
        Some(RangeOutcome::Partial { start, end }) => Ok(Some((start, end))),
        Some(RangeOutcome::Unsatisfiable) => Err(size),
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-9"), Some(ChunkRange { start: 0, end: 9 }));
        assert_eq!(parse_content_range("bytes 10-19/100"), Some(ChunkRange { start: 10, end: 19 }));
        assert_eq!(parse_content_range("bytes=10-19"), Some(ChunkRange { start: 10, end: 19 }));
        assert_eq!(parse_content_range("5-5").map(|r| r.len()), Some(1));
        for bad in ["", "-", "9-0", "a-b", "1-", "-1", "0-99999999999999999999999", "+1-2", "1--2"] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9"), Some(ByteRange::From { start: 0, end: Some(9) }));
        assert_eq!(parse_range("bytes=5-"), Some(ByteRange::From { start: 5, end: None }));
        assert_eq!(parse_range("bytes=-5"), Some(ByteRange::Suffix(5)));
        for ignored in ["", "items=0-1", "bytes=0-1,3-4", "bytes=x-", "bytes=1-x"] {
            assert_eq!(parse_range(ignored), None, "{ignored:?}");
        }
    }

    #[test]
    fn resolution() {
        use RangeOutcome::*;
        let r = |s: &str| parse_range(s).unwrap();
        assert_eq!(r("bytes=0-9").resolve(100), Partial { start: 0, end: 9 });
        assert_eq!(r("bytes=90-200").resolve(100), Partial { start: 90, end: 99 });
        assert_eq!(r("bytes=-10").resolve(100), Partial { start: 90, end: 99 });
        assert_eq!(r("bytes=-1000").resolve(100), Partial { start: 0, end: 99 });
        assert_eq!(r("bytes=100-").resolve(100), Unsatisfiable);
        assert_eq!(r("bytes=-0").resolve(100), Unsatisfiable);
        assert_eq!(r("bytes=0-").resolve(0), Unsatisfiable);
    }
}
