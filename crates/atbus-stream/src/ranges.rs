//! A set of disjoint half-open `u64` ranges, used for acknowledged bytes, bytes to retransmit and
//! received packet numbers.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges, keyed by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Adds `range`, merging with neighbours. Returns how many values were new.
    pub fn insert(&mut self, range: Range<u64>) -> u64 {
        if range.start >= range.end {
            return 0;
        }
        let mut start = range.start;
        let mut end = range.end;
        let mut covered = 0;
        // Merge a range starting before `start` that reaches it.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                if e >= end {
                    return 0;
                }
                // The common case (the next packet number, the next acknowledged bytes): the
                // range only extends its predecessor, in place.
                if self.map.range(e..=end).next().is_none() {
                    if let Some(v) = self.map.get_mut(&s) {
                        *v = end;
                    }
                    return end - e;
                }
                covered += e - start;
                start = s;
                self.map.remove(&s);
            }
        }
        // Absorb ranges starting inside [start, end].
        let inside: Vec<(u64, u64)> = self.map.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            self.map.remove(&s);
            covered += e.min(end) - s;
            end = end.max(e);
        }
        self.map.insert(start, end);
        (range.end - range.start).saturating_sub(covered)
    }

    /// Removes `range` from the set.
    pub fn remove(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        // Overlapping ranges from the last one down, one at a time (nothing to allocate): what
        // is put back lies outside `range`, so the next search stops at it.
        while let Some((s, e)) = self
            .map
            .range(..range.end)
            .next_back()
            .filter(|(_, e)| **e > range.start)
            .map(|(&s, &e)| (s, e))
        {
            self.map.remove(&s);
            if s < range.start {
                self.map.insert(s, range.start);
            }
            if e > range.end {
                self.map.insert(range.end, e);
            }
        }
    }

    /// Whether every value of `range` is in the set.
    pub fn contains_range(&self, range: Range<u64>) -> bool {
        if range.start >= range.end {
            return true;
        }
        matches!(self.map.range(..=range.start).next_back(), Some((_, &e)) if e >= range.end)
    }

    /// Whether `value` is in the set.
    pub fn contains(&self, value: u64) -> bool {
        self.contains_range(value..value + 1)
    }

    /// The lowest range.
    pub fn first(&self) -> Option<Range<u64>> {
        self.map.iter().next().map(|(&s, &e)| s..e)
    }

    /// The highest range.
    pub fn last(&self) -> Option<Range<u64>> {
        self.map.iter().next_back().map(|(&s, &e)| s..e)
    }

    /// Removes and returns the first range, cut to at most `max_len` values.
    pub fn pop_front(&mut self, max_len: u64) -> Option<Range<u64>> {
        let first = self.first()?;
        let end = first.end.min(first.start.saturating_add(max_len.max(1)));
        self.remove(first.start..end);
        Some(first.start..end)
    }

    /// Ranges in ascending order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }

    /// Drops every value below `bound`.
    pub fn remove_below(&mut self, bound: u64) {
        self.remove(0..bound);
    }

    /// Keeps only the `max` highest ranges (older ones are forgotten).
    pub fn truncate_low(&mut self, max: usize) {
        while self.map.len() > max {
            if let Some((&s, _)) = self.map.iter().next() {
                self.map.remove(&s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merge_and_remove() {
        let mut s = RangeSet::new();
        assert_eq!(s.insert(0..5), 5);
        assert_eq!(s.insert(10..15), 5);
        assert_eq!(s.insert(3..12), 5);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..15]);
        s.remove(4..6);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..4, 6..15]);
        assert!(s.contains_range(6..15));
        assert!(!s.contains(5));
        assert_eq!(s.pop_front(2), Some(0..2));
        assert_eq!(s.first(), Some(2..4));
        assert_eq!(s.insert(15..16), 1, "adjacent ranges merge");
        assert_eq!(s.last(), Some(6..16));
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0u64..200, 0u64..30), 0..60)) {
            let mut s = RangeSet::new();
            let mut model = BTreeSet::new();
            for (add, start, len) in ops {
                let r = start..start + len;
                if add {
                    let new = r.clone().filter(|v| !model.contains(v)).count() as u64;
                    prop_assert_eq!(s.insert(r.clone()), new);
                    model.extend(r);
                } else {
                    s.remove(r.clone());
                    for v in r { model.remove(&v); }
                }
                let flat: BTreeSet<u64> = s.iter().flatten().collect();
                prop_assert_eq!(&flat, &model);
                // Disjoint and non-adjacent.
                let v: Vec<_> = s.iter().collect();
                for w in v.windows(2) { prop_assert!(w[0].end < w[1].start); }
            }
        }
    }
}
