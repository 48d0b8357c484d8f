//! The stream ids a token allows: a short, canonical list of inclusive ranges.

use std::fmt;
use std::ops::RangeInclusive;

/// Most ranges a token may carry (after merging).
pub const MAX_STREAM_RANGES: usize = 32;

/// Largest stream id (`stream_id` is a non-negative `int64` on the wire).
pub const MAX_STREAM_ID: u64 = i64::MAX as u64;

/// Why a stream set could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamSetError {
    /// A range ends before it starts.
    #[error("stream range {first}-{last} ends before it starts")]
    Reversed {
        /// First id.
        first: u64,
        /// Last id.
        last: u64,
    },
    /// An id is above `i64::MAX`.
    #[error("stream id {0} is above the largest stream id {MAX_STREAM_ID}")]
    OutOfRange(u64),
    /// More ranges than [`MAX_STREAM_RANGES`] remain after merging.
    #[error("{0} stream ranges, at most {MAX_STREAM_RANGES} are allowed")]
    TooMany(usize),
    /// The text is not `*` or a comma-separated list of `ID` and `FIRST-LAST`.
    #[error("bad stream list item {0:?}: expected `*`, `ID` or `FIRST-LAST`")]
    Syntax(String),
}

/// A set of stream ids as sorted, disjoint, non-adjacent inclusive ranges (so each set has
/// exactly one representation, which keeps the token encoding canonical).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamSet {
    ranges: Vec<(u64, u64)>,
}

impl StreamSet {
    /// The empty set (no stream allowed).
    pub fn none() -> Self {
        Self::default()
    }

    /// Every stream id, `0..=i64::MAX`.
    pub fn all() -> Self {
        Self {
            ranges: vec![(0, MAX_STREAM_ID)],
        }
    }

    /// The set of the given ranges, in any order, overlapping or not; they are merged.
    pub fn from_ranges(
        ranges: impl IntoIterator<Item = RangeInclusive<u64>>,
    ) -> Result<Self, StreamSetError> {
        let mut raw = Vec::new();
        for r in ranges {
            let (first, last) = (*r.start(), *r.end());
            if first > last {
                return Err(StreamSetError::Reversed { first, last });
            }
            if last > MAX_STREAM_ID {
                return Err(StreamSetError::OutOfRange(last));
            }
            raw.push((first, last));
            // Bounded before sorting: even merged, this many inputs is never needed.
            if raw.len() > 64 * MAX_STREAM_RANGES {
                return Err(StreamSetError::TooMany(raw.len()));
            }
        }
        raw.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(raw.len());
        for (first, last) in raw {
            match merged.last_mut() {
                // `first <= prev_last + 1` without overflow: ids are at most i64::MAX.
                Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
                _ => merged.push((first, last)),
            }
        }
        if merged.len() > MAX_STREAM_RANGES {
            return Err(StreamSetError::TooMany(merged.len()));
        }
        Ok(Self { ranges: merged })
    }

    /// Parses `*` (all streams) or a comma-separated list of `ID` and `FIRST-LAST` items.
    pub fn parse(text: &str) -> Result<Self, StreamSetError> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self::all());
        }
        let mut ranges = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            let number = |s: &str| {
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| StreamSetError::Syntax(item.to_owned()))
            };
            let range = match item.split_once('-') {
                Some((a, b)) => number(a)?..=number(b)?,
                None => {
                    let id = number(item)?;
                    id..=id
                }
            };
            ranges.push(range);
        }
        Self::from_ranges(ranges)
    }

    /// Builds a set from ranges that must already be canonical (decoding a token).
    pub(crate) fn from_canonical(ranges: Vec<(u64, u64)>) -> Result<Self, &'static str> {
        if ranges.len() > MAX_STREAM_RANGES {
            return Err("too many ranges");
        }
        let mut prev_last: Option<u64> = None;
        for &(first, last) in &ranges {
            if first > last {
                return Err("range ends before it starts");
            }
            if last > MAX_STREAM_ID {
                return Err("stream id above i64::MAX");
            }
            if let Some(p) = prev_last {
                if first <= p.saturating_add(1) {
                    return Err("ranges not sorted, overlapping or adjacent");
                }
            }
            prev_last = Some(last);
        }
        Ok(Self { ranges })
    }

    /// Whether `stream_id` is in the set (negative ids never are).
    pub fn contains(&self, stream_id: i64) -> bool {
        let Ok(id) = u64::try_from(stream_id) else {
            return false;
        };
        // Ranges are sorted: find the last one starting at or before `id`.
        let idx = self.ranges.partition_point(|&(first, _)| first <= id);
        idx > 0 && self.ranges[idx - 1].1 >= id
    }

    /// The ranges, sorted, disjoint and non-adjacent.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Whether no stream is allowed.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

impl fmt::Display for StreamSet {
    /// `*`, `-` (empty) or the list form [`StreamSet::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::all() {
            return f.write_str("*");
        }
        if self.ranges.is_empty() {
            return f.write_str("-");
        }
        for (i, (first, last)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_sorts() {
        let s = StreamSet::from_ranges([10..=12, 1..=1, 13..=20, 2..=3, 5..=5]).unwrap();
        assert_eq!(s.ranges(), &[(1, 3), (5, 5), (10, 20)]);
        assert_eq!(s.to_string(), "1-3,5,10-20");
        assert_eq!(StreamSet::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn contains_edges() {
        let s = StreamSet::parse("1-3, 7").unwrap();
        for (id, want) in [
            (-1, false),
            (0, false),
            (1, true),
            (3, true),
            (4, false),
            (7, true),
            (8, false),
        ] {
            assert_eq!(s.contains(id), want, "id {id}");
        }
        assert!(StreamSet::all().contains(i64::MAX));
        assert!(!StreamSet::none().contains(0));
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            StreamSet::parse("5-2"),
            Err(StreamSetError::Reversed { first: 5, last: 2 })
        );
        assert!(matches!(
            StreamSet::parse("x"),
            Err(StreamSetError::Syntax(_))
        ));
        assert!(matches!(
            StreamSet::parse(""),
            Err(StreamSetError::Syntax(_))
        ));
        assert_eq!(
            StreamSet::parse("9223372036854775808"),
            Err(StreamSetError::OutOfRange(1 << 63))
        );
        let many: Vec<_> = (0..33u64).map(|i| i * 2..=i * 2).collect();
        assert_eq!(
            StreamSet::from_ranges(many),
            Err(StreamSetError::TooMany(33))
        );
    }

    #[test]
    fn canonical_check_rejects_adjacent_and_unsorted() {
        assert!(StreamSet::from_canonical(vec![(1, 2), (3, 4)]).is_err());
        assert!(StreamSet::from_canonical(vec![(5, 6), (1, 2)]).is_err());
        assert!(StreamSet::from_canonical(vec![(1, 2), (4, 4)]).is_ok());
    }
}
