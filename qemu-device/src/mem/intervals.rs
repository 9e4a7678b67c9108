//! The interval map behind the DMA maps: non-overlapping half-open ranges
//! `[start, end)` of DMA addresses, each with a value, in a persistent ordered map.
//!
//! Why `imbl::OrdMap` and not `std::collections::BTreeMap`: the device publishes a new
//! immutable view of the maps on every DMA_MAP and DMA_UNMAP while the data thread may
//! still hold the previous one. Behind an IOMMU there are tens of thousands of 4 KiB
//! maps, and a `BTreeMap` would have to be copied whole for every change (O(n) per map,
//! O(n²) for a guest mapping n pages); `OrdMap` is a B-tree with shared nodes, so a
//! clone is O(1) and an insert or remove copies one path, O(log n). Lookups are a
//! descent with a binary search per node, as in a `BTreeMap`.

use imbl::OrdMap;

/// One range and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval<V> {
    /// First address after the range.
    pub end: u64,
    /// What the range maps to.
    pub value: V,
}

/// A range refused by [`Intervals::insert`]: empty, or overlapping one already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("empty, or overlaps a range")]
pub struct Refused;

/// Non-overlapping ranges keyed by their start. Cloning is O(1).
#[derive(Clone, Debug)]
pub struct Intervals<V: Clone> {
    by_start: OrdMap<u64, Interval<V>>,
}

impl<V: Clone> Default for Intervals<V> {
    fn default() -> Self {
        Intervals {
            by_start: OrdMap::new(),
        }
    }
}

impl<V: Clone> Intervals<V> {
    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// Whether there is no range.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// The range that contains `addr`, as `(start, interval)`.
    #[inline]
    pub fn find(&self, addr: u64) -> Option<(u64, &Interval<V>)> {
        let (&start, iv) = self.by_start.get_prev(&addr)?;
        (addr < iv.end).then_some((start, iv))
    }

    /// Whether any range overlaps `[start, end)`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return false;
        }
        // The last range starting before `end` is the only candidate: ranges are disjoint
        // and sorted, so every earlier one ends at or before its start.
        match self.by_start.get_prev(&(end - 1)) {
            Some((_, iv)) => iv.end > start,
            None => false,
        }
    }

    /// Adds `[start, end)`; refused (nothing changes) when it is empty or overlaps a range.
    pub fn insert(&mut self, start: u64, end: u64, value: V) -> Result<(), Refused> {
        if start >= end || self.overlaps(start, end) {
            return Err(Refused);
        }
        self.by_start.insert(start, Interval { end, value });
        Ok(())
    }

    /// The starts of the ranges inside `[start, end)`, or `Err((start, end))` of a range
    /// that overlaps it without being inside (it crosses an edge).
    pub fn inside(&self, start: u64, end: u64) -> Result<Vec<u64>, (u64, u64)> {
        let mut found = Vec::new();
        if start >= end {
            return Ok(found);
        }
        // A range starting before `start` can only cross the lower edge.
        if let Some((s, iv)) = self.by_start.get_prev(&start) {
            if *s < start && iv.end > start {
                return Err((*s, iv.end));
            }
        }
        for (&s, iv) in self.by_start.range(start..end) {
            if iv.end > end {
                return Err((s, iv.end));
            }
            found.push(s);
        }
        Ok(found)
    }

    /// Removes the range that starts at `start`.
    pub fn remove(&mut self, start: u64) -> Option<Interval<V>> {
        self.by_start.remove(&start)
    }

    /// Every range in address order, as `(start, interval)`.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Interval<V>)> {
        self.by_start.iter().map(|(s, iv)| (*s, iv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The range (start, end, value) that owns an address.
    type Owner = Option<(u64, u64, u32)>;

    /// The model: one optional owner per address of a small address space.
    struct Model {
        owner: Vec<Owner>,
    }

    impl Model {
        fn new(size: usize) -> Self {
            Model {
                owner: vec![None; size],
            }
        }
        fn insert(&mut self, s: u64, e: u64, v: u32) -> bool {
            if s >= e || (s..e).any(|a| self.owner[a as usize].is_some()) {
                return false;
            }
            (s..e).for_each(|a| self.owner[a as usize] = Some((s, e, v)));
            true
        }
        /// Removes the ranges inside [s, e); refused if one crosses an edge.
        fn unmap(&mut self, s: u64, e: u64) -> bool {
            let hit: Vec<_> = (s..e).filter_map(|a| self.owner[a as usize]).collect();
            if hit.iter().any(|&(hs, he, _)| hs < s || he > e) {
                return false;
            }
            for (hs, he, _) in hit {
                (hs..he).for_each(|a| self.owner[a as usize] = None);
            }
            true
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u64, u32),
        Unmap(u64, u64),
    }

    const SPACE: u64 = 200;

    fn op() -> impl Strategy<Value = Op> {
        let range = (0..SPACE, 0..24u64).prop_map(|(s, n)| (s, (s + n).min(SPACE)));
        prop_oneof![
            (range.clone(), any::<u32>()).prop_map(|((s, e), v)| Op::Insert(s, e, v)),
            range.prop_map(|(s, e)| Op::Unmap(s, e)),
        ]
    }

    proptest! {
        /// Every insert and unmap agrees with the per-address model, and afterwards every
        /// address finds exactly the range the model says owns it; an older clone is
        /// unchanged by later edits (the views the data thread holds).
        #[test]
        fn agrees_with_a_per_address_model(ops in proptest::collection::vec(op(), 1..120)) {
            let mut m = Model::new(SPACE as usize);
            let mut iv = Intervals::default();
            let mut old: Option<(Intervals<u32>, Vec<Owner>)> = None;
            for (i, o) in ops.iter().enumerate() {
                match *o {
                    Op::Insert(s, e, v) => {
                        prop_assert_eq!(iv.insert(s, e, v).is_ok(), m.insert(s, e, v), "{:?}", o);
                    }
                    Op::Unmap(s, e) => {
                        let want = m.unmap(s, e);
                        match iv.inside(s, e) {
                            Ok(starts) => {
                                prop_assert!(want, "{:?}", o);
                                for st in starts {
                                    prop_assert!(iv.remove(st).is_some());
                                }
                            }
                            Err(_) => prop_assert!(!want, "{:?}", o),
                        }
                    }
                }
                if i == ops.len() / 2 {
                    old = Some((iv.clone(), m.owner.clone()));
                }
                for a in 0..SPACE {
                    let got = iv.find(a).map(|(s, x)| (s, x.end, x.value));
                    prop_assert_eq!(got, m.owner[a as usize], "address {}", a);
                }
                let count = {
                    let mut starts: Vec<_> = m.owner.iter().flatten().map(|t| t.0).collect();
                    starts.dedup();
                    starts.len()
                };
                prop_assert_eq!(iv.len(), count);
            }
            if let Some((snap, owner)) = old {
                for a in 0..SPACE {
                    let got = snap.find(a).map(|(s, x)| (s, x.end, x.value));
                    prop_assert_eq!(got, owner[a as usize], "old view, address {}", a);
                }
            }
        }
    }

    #[test]
    fn overlaps_and_edges() {
        let mut iv = Intervals::default();
        iv.insert(0x1000, 0x2000, 'a').unwrap();
        iv.insert(0x3000, 0x4000, 'b').unwrap();
        assert!(iv.insert(0x1fff, 0x2001, 'c').is_err());
        assert!(iv.insert(0x0, 0x1001, 'c').is_err());
        assert!(
            iv.insert(0x2000, 0x3000, 'c').is_ok(),
            "touching is not overlapping"
        );
        assert!(iv.insert(5, 5, 'd').is_err(), "empty");
        assert_eq!(iv.inside(0x1000, 0x4000).unwrap().len(), 3);
        assert_eq!(iv.inside(0x1800, 0x4000), Err((0x1000, 0x2000)));
        assert_eq!(iv.inside(0x1000, 0x3800), Err((0x3000, 0x4000)));
        assert_eq!(iv.find(0x3fff).map(|(s, _)| s), Some(0x3000));
        assert!(iv.find(0x4000).is_none());
        assert!(!iv.overlaps(u64::MAX - 1, u64::MAX));
    }
}
