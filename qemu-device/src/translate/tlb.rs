//! The device TLB (spec §6): cached leaf translations per (context, page), bounded,
//! oldest evicted, each stamped with the command sequence number and oracle time of
//! the walk that produced it.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

use mnic_abi::pte;

use super::walk::Leaf;

/// Most TLB entries the device caches (spec §6 `TLB_CAPACITY`); the oldest goes first.
pub const TLB_CAPACITY: usize = 4096;

/// A cached leaf with the command sequence number and oracle time of its walk. Kept at
/// 40 bytes: lookups copy it, and the front cache is scanned slot after slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    /// The translation.
    pub leaf: Leaf,
    /// Command sequence number at walk time (spec §8).
    pub seq: u64,
    /// The oracle clock read before the walk began (spec §8a).
    pub oracle: u64,
}
const _: () = assert!(std::mem::size_of::<TlbEntry>() == 40);

/// Key inside one context: the page number (VA >> 12) shifted left by one, with bit 0
/// set for a 2 MiB page. One `u64`, so hashing it is one multiply.
type Key = u64;

fn key(va: u64, huge: bool) -> Key {
    (va >> pte::PAGE_SHIFT) << 1 | u64::from(huge)
}

fn key_va(k: Key) -> u64 {
    (k >> 1) << pte::PAGE_SHIFT
}

fn key_huge(k: Key) -> bool {
    k & 1 != 0
}

/// Hasher for `Key`s: a multiply by an odd constant (a bijection on the low bits, so
/// consecutive pages land in distinct buckets) folded so the high bits the table uses
/// for its control bytes depend on every key bit. Not DoS-resistant, and need not be:
/// the TLB is bounded and the guest only chooses which of its own pages are cached.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `u64` keys; kept correct for completeness.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, k: u64) {
        let h = (self.0 ^ k).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }
}

/// An entry in the maps, with its insertion stamp (its key in the eviction order).
#[derive(Clone, Copy)]
struct Stamped {
    entry: TlbEntry,
    stamp: u64,
}

type KeyMap = HashMap<Key, Stamped, BuildHasherDefault<KeyHasher>>;

/// Slots of the direct-mapped front cache of 4 KiB entries (a power of two).
const FRONT_SLOTS: usize = 2048;
/// Tag of an empty front slot (no real tag has all bits set: page numbers < 2^36).
const FRONT_EMPTY: u64 = u64::MAX;

/// One front-cache slot: a copy of a 4 KiB entry held in the maps, tagged with its
/// context and page.
#[derive(Clone, Copy)]
struct FrontSlot {
    tag: u64,
    entry: TlbEntry,
}

fn front_tag(ctx: u16, va: u64) -> u64 {
    (va >> pte::PAGE_SHIFT) << 16 | u64::from(ctx)
}

fn front_index(ctx: u16, va: u64) -> usize {
    // Consecutive pages of one context land in consecutive slots; contexts are spread, and
    // so are buffers a multiple of 8 MiB apart (folding the higher page-number bits in:
    // without it, a copy between two buffers 1 GiB apart thrashes the same slots).
    let vpn = va >> pte::PAGE_SHIFT;
    let folded = vpn ^ (vpn >> 11).wrapping_mul(0x9e5) ^ u64::from(ctx).wrapping_mul(0x2f1);
    folded as usize & (FRONT_SLOTS - 1)
}

/// The device TLB: leaf translations per (context, page), bounded, oldest evicted.
///
/// The entries live in per-context hash maps (contexts indexed directly) keyed by one
/// `u64` (page number and size) with a one-multiply hasher. In front of them sits a
/// direct-mapped cache of 4 KiB entries: a hit there is one index computation and one
/// tag compare. The front cache only ever holds copies of entries that are in the
/// maps: every path that removes an entry (invalidation, eviction, context disable,
/// clear) clears its slot, and insertion overwrites it. A front miss falls back to
/// the maps (4 KiB key, then the 2 MiB block), so a 4 KiB entry still wins over a
/// 2 MiB one. Range invalidation probes the pages of the range when that is fewer
/// than the context's entries, otherwise scans them: bounded by `TLB_CAPACITY`.
pub struct Tlb {
    front: Box<[FrontSlot]>,
    per_ctx: Vec<KeyMap>,
    /// Insertion order for eviction: stamp -> (ctx, key).
    order: BTreeMap<u64, (u16, Key)>,
    next_stamp: u64,
    /// Deliberately skip range invalidations (tests of the stale checker only).
    #[cfg(any(test, feature = "testkit"))]
    pub buggy_skip_invalidate: bool,
}

impl Default for Tlb {
    fn default() -> Self {
        let empty = FrontSlot {
            tag: FRONT_EMPTY,
            entry: TlbEntry {
                leaf: Leaf {
                    va: 0,
                    gpa: 0,
                    huge: false,
                    writable: false,
                },
                seq: 0,
                oracle: 0,
            },
        };
        Tlb {
            front: vec![empty; FRONT_SLOTS].into_boxed_slice(),
            per_ctx: (0..mnic_abi::NUM_CONTEXTS)
                .map(|_| KeyMap::default())
                .collect(),
            order: BTreeMap::new(),
            next_stamp: 0,
            #[cfg(any(test, feature = "testkit"))]
            buggy_skip_invalidate: false,
        }
    }
}

impl Tlb {
    /// Number of valid entries.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the TLB is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The entry of `ctx` covering `va` (a 4 KiB entry wins over a 2 MiB one).
    #[inline]
    pub fn lookup(&self, ctx: u16, va: u64) -> Option<TlbEntry> {
        let slot = &self.front[front_index(ctx, va)];
        if slot.tag == front_tag(ctx, va) {
            return Some(slot.entry);
        }
        self.lookup_maps(ctx, va)
    }

    /// The front-cache entry of `ctx` for the 4 KiB page of `va`, if it is there: the hit
    /// path alone, by reference, for callers that scan consecutive pages (a COPY).
    #[inline]
    pub fn front_hit(&self, ctx: u16, va: u64) -> Option<&TlbEntry> {
        let slot = &self.front[front_index(ctx, va)];
        (slot.tag == front_tag(ctx, va)).then_some(&slot.entry)
    }

    fn lookup_maps(&self, ctx: u16, va: u64) -> Option<TlbEntry> {
        let m = self.per_ctx.get(usize::from(ctx))?;
        m.get(&key(va, false))
            .or_else(|| m.get(&key(va & !(pte::HUGE_SIZE - 1), true)))
            .map(|s| s.entry)
    }

    /// Caches `leaf` for `ctx`, walked at command `seq` and oracle time `oracle`,
    /// replacing an entry for the same page.
    pub fn insert(&mut self, ctx: u16, leaf: Leaf, seq: u64, oracle: u64) -> TlbEntry {
        let k = key(leaf.va, leaf.huge);
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let e = TlbEntry { leaf, seq, oracle };
        let Some(m) = self.per_ctx.get_mut(usize::from(ctx)) else {
            return e; // no such context: nothing cached
        };
        if let Some(old) = m.insert(k, Stamped { entry: e, stamp }) {
            self.order.remove(&old.stamp);
        }
        self.order.insert(stamp, (ctx, k));
        if !leaf.huge {
            self.front[front_index(ctx, leaf.va)] = FrontSlot {
                tag: front_tag(ctx, leaf.va),
                entry: e,
            };
        }
        while self.order.len() > TLB_CAPACITY {
            if let Some((_, (c, k))) = self.order.pop_first() {
                if let Some(m) = self.per_ctx.get_mut(usize::from(c)) {
                    m.remove(&k);
                }
                self.front_forget(c, k);
            }
        }
        e
    }

    /// Clears the front slot of (`ctx`, `k`) if it holds that entry.
    fn front_forget(&mut self, ctx: u16, k: Key) {
        if key_huge(k) {
            return;
        }
        let va = key_va(k);
        let slot = &mut self.front[front_index(ctx, va)];
        if slot.tag == front_tag(ctx, va) {
            slot.tag = FRONT_EMPTY;
        }
    }

    /// Drops the entries of `ctx` overlapping `[start, end)`; returns how many.
    pub fn invalidate_range(&mut self, ctx: u16, start: u64, end: u64) -> usize {
        #[cfg(any(test, feature = "testkit"))]
        if self.buggy_skip_invalidate {
            return 0;
        }
        if start >= end {
            return 0;
        }
        let Some(m) = self.per_ctx.get_mut(usize::from(ctx)) else {
            return 0;
        };
        if m.is_empty() {
            return 0;
        }
        let overlaps = |k: Key| {
            let va = key_va(k);
            let size = if key_huge(k) {
                pte::HUGE_SIZE
            } else {
                pte::PAGE_SIZE
            };
            va.saturating_add(size) > start && va < end
        };
        let first_4k = start >> pte::PAGE_SHIFT;
        let last_4k = (end - 1) >> pte::PAGE_SHIFT;
        let first_2m = start / pte::HUGE_SIZE;
        let last_2m = (end - 1) / pte::HUGE_SIZE;
        let probes = (last_4k - first_4k).saturating_add(last_2m - first_2m);
        let mut doomed: Vec<(Key, u64)> = Vec::new();
        if probes < m.len() as u64 {
            // Few pages: look each one up (4 KiB pages, then the 2 MiB blocks).
            let small = (first_4k..=last_4k).map(|p| key(p << pte::PAGE_SHIFT, false));
            let huge = (first_2m..=last_2m).map(|b| key(b * pte::HUGE_SIZE, true));
            for k in small.chain(huge) {
                if let Some(e) = m.remove(&k) {
                    doomed.push((k, e.stamp));
                }
            }
        } else {
            m.retain(|k, e| {
                let hit = overlaps(*k);
                if hit {
                    doomed.push((*k, e.stamp));
                }
                !hit
            });
        }
        for (k, stamp) in &doomed {
            self.order.remove(stamp);
            self.front_forget(ctx, *k);
        }
        doomed.len()
    }

    /// Drops every entry of `ctx`; returns how many.
    pub fn invalidate_ctx(&mut self, ctx: u16) -> usize {
        let Some(m) = self.per_ctx.get_mut(usize::from(ctx)).map(std::mem::take) else {
            return 0;
        };
        for (k, s) in &m {
            self.order.remove(&s.stamp);
            self.front_forget(ctx, *k);
        }
        m.len()
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.per_ctx.iter_mut().for_each(HashMap::clear);
        self.order.clear();
        self.front.iter_mut().for_each(|s| s.tag = FRONT_EMPTY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tlb_lookup_invalidate_evict() {
        let mut tlb = Tlb::default();
        let leaf = |va, huge| Leaf {
            va,
            gpa: 0,
            huge,
            writable: true,
        };
        tlb.insert(1, leaf(0x1000, false), 5, 0);
        tlb.insert(1, leaf(0x20_0000, true), 6, 0);
        tlb.insert(2, leaf(0x1000, false), 7, 0);
        assert_eq!(tlb.lookup(1, 0x1fff).unwrap().seq, 5);
        assert_eq!(tlb.lookup(1, 0x3f_ffff).unwrap().seq, 6);
        assert!(tlb.lookup(1, 0x40_0000).is_none());
        assert_eq!(tlb.len(), 3);
        // A one-byte range in the middle of the huge page drops it.
        assert_eq!(tlb.invalidate_range(1, 0x30_0000, 0x30_0001), 1);
        assert!(tlb.lookup(1, 0x20_0000).is_none());
        // Ranges touching but not overlapping keep the entry.
        assert_eq!(tlb.invalidate_range(1, 0x2000, 0x3000), 0);
        assert_eq!(tlb.invalidate_range(1, 0, 0x1000), 0);
        assert_eq!(tlb.invalidate_range(1, 0, u64::MAX), 1);
        assert_eq!(tlb.len(), 1);
        assert_eq!(tlb.invalidate_ctx(2), 1);
        assert!(tlb.is_empty());
        for i in 0..(TLB_CAPACITY as u64 + 10) {
            tlb.insert(3, leaf(i << 12, false), i, 0);
        }
        assert_eq!(tlb.len(), TLB_CAPACITY);
        assert!(tlb.lookup(3, 0).is_none(), "oldest evicted");
        // Pages whose front slots were reused by later pages are still found.
        for i in 10..(TLB_CAPACITY as u64 + 10) {
            assert_eq!(tlb.lookup(3, i << 12).unwrap().seq, i);
        }
        assert!(tlb.lookup(3, (TLB_CAPACITY as u64 + 9) << 12).is_some());
        assert_eq!(tlb.invalidate_range(3, 0, u64::MAX), TLB_CAPACITY);
        assert!(tlb.lookup(3, 20 << 12).is_none());
        tlb.clear();
        assert!(tlb.is_empty());
    }
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// TLB against a reference set under random inserts and invalidations.
        #[test]
        fn tlb_matches_reference(ops in prop::collection::vec((0u8..3, 0u16..3, 0u64..64, 1u64..16, any::<bool>()), 1..200)) {
            let mut tlb = Tlb::default();
            let mut reference: HashMap<(u16, u64, bool), u64> = HashMap::new();
            for (i, (op, ctx, page, npages, huge)) in ops.into_iter().enumerate() {
                let size = if huge { pte::HUGE_SIZE } else { pte::PAGE_SIZE };
                let va = (page * pte::PAGE_SIZE * 37) & !(size - 1);
                match op {
                    0 => {
                        tlb.insert(ctx, Leaf { va, gpa: 0, huge, writable: false }, i as u64, 0);
                        reference.insert((ctx, va, huge), i as u64);
                    }
                    1 => {
                        let end = va + npages * pte::PAGE_SIZE;
                        let n = tlb.invalidate_range(ctx, va, end);
                        let before = reference.len();
                        reference.retain(|(c, v, h), _| {
                            let s = if *h { pte::HUGE_SIZE } else { pte::PAGE_SIZE };
                            !(*c == ctx && *v < end && v + s > va)
                        });
                        prop_assert_eq!(n, before - reference.len());
                    }
                    _ => {
                        tlb.invalidate_ctx(ctx);
                        reference.retain(|(c, _, _), _| *c != ctx);
                    }
                }
                prop_assert_eq!(tlb.len(), reference.len());
                // The lookup (front cache included) agrees with the reference after
                // every step: nothing removed is still found.
                let want = reference
                    .get(&(ctx, va & !(pte::PAGE_SIZE - 1), false))
                    .or_else(|| reference.get(&(ctx, va & !(pte::HUGE_SIZE - 1), true)))
                    .copied();
                prop_assert_eq!(tlb.lookup(ctx, va).map(|e| e.seq), want);
            }
            for ((ctx, va, huge), seq) in &reference {
                let e = tlb.lookup(*ctx, *va).unwrap();
                if !*huge || !reference.contains_key(&(*ctx, *va, false)) {
                    prop_assert_eq!(e.leaf.huge, *huge);
                    prop_assert_eq!(e.seq, *seq);
                }
            }
        }
    }
}
