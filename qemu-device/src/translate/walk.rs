//! The table walker (spec §6): what the 4-level translation table of a context says
//! about one VA ([`walk`]), and whether any usable leaf overlaps a VA range
//! ([`find_leaf`], for the oracle's table check).
//!
//! The walk has a fixed depth of four loads, so no table layout can make it loop;
//! every table and page address is checked against guest RAM before it is used.

use mnic_abi::pte;

use crate::mem::{self, GuestMem};

/// A leaf translation: one 4 KiB or 2 MiB page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// VA of the page start.
    pub va: u64,
    /// GPA of the page start.
    pub gpa: u64,
    /// A 2 MiB leaf.
    pub huge: bool,
    /// The leaf has `W`.
    pub writable: bool,
}

impl Leaf {
    /// Page size in bytes.
    pub fn size(&self) -> u64 {
        if self.huge {
            pte::HUGE_SIZE
        } else {
            pte::PAGE_SIZE
        }
    }
    /// GPA of `va` (which must lie in the page).
    pub fn gpa_of(&self, va: u64) -> u64 {
        self.gpa + (va - self.va)
    }
    /// Bytes from `va` to the end of the page.
    pub fn room(&self, va: u64) -> u64 {
        self.va + self.size() - va
    }
}

/// Why a walk did not produce a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// A non-present entry at some level: a translation fault.
    #[error("not present at level {level}")]
    NotPresent {
        /// Level of the non-present entry (4 = root).
        level: u32,
    },
    /// Reserved bits, a misplaced `H` or a misaligned huge page: a table error.
    #[error("malformed entry {entry:#x} at {at:#x}")]
    Table {
        /// GPA of the entry.
        at: u64,
        /// Its value.
        entry: u64,
    },
    /// A table or page address outside guest RAM.
    #[error("address {addr:#x} outside guest RAM")]
    Address {
        /// The offending GPA.
        addr: u64,
    },
    /// The VA is not canonical lower-half.
    #[error("non-canonical VA")]
    NonCanonical,
}

/// What one well-formed present entry says.
enum Entry {
    /// The GPA of the next level's table.
    Table(u64),
    /// A leaf the walker would use.
    Leaf(Leaf),
}

/// Decodes `entry`, loaded from `at` at `level` on the way to `va`: the single place that
/// decides what a table entry means, for the walker and the range scan alike.
#[inline]
fn decode(mem: &GuestMem, at: u64, entry: u64, level: u32, va: u64) -> Result<Entry, WalkError> {
    if entry & pte::P == 0 {
        return Err(WalkError::NotPresent { level });
    }
    if entry & pte::RESERVED_MASK != 0 {
        return Err(WalkError::Table { at, entry });
    }
    let addr = entry & pte::ADDR_MASK;
    let huge = entry & pte::H != 0;
    if huge && level != 2 {
        return Err(WalkError::Table { at, entry });
    }
    if !(huge || level == 1) {
        return Ok(Entry::Table(addr));
    }
    if huge && !addr.is_multiple_of(pte::HUGE_SIZE) {
        return Err(WalkError::Table { at, entry });
    }
    let leaf = Leaf {
        va: va & !(if huge { pte::HUGE_SIZE } else { pte::PAGE_SIZE } - 1),
        gpa: addr,
        huge,
        writable: entry & pte::W != 0,
    };
    mem::check(mem, addr, leaf.size(), false).map_err(|e| WalkError::Address { addr: e.addr })?;
    Ok(Entry::Leaf(leaf))
}

/// Walks the tables rooted at `root` for `va`. Permissions are the caller's business.
pub fn walk(mem: &GuestMem, root: u64, va: u64) -> Result<Leaf, WalkError> {
    if va >= pte::VA_LIMIT {
        return Err(WalkError::NonCanonical);
    }
    let mut table = root;
    for level in (1..=pte::LEVELS).rev() {
        if !table.is_multiple_of(pte::PAGE_SIZE) {
            return Err(WalkError::Address { addr: table });
        }
        let at = table + 8 * pte::index(va, level) as u64;
        let entry = mem::load_u64(mem, at).map_err(|_| WalkError::Address { addr: table })?;
        match decode(mem, at, entry, level, va)? {
            Entry::Leaf(leaf) => return Ok(leaf),
            Entry::Table(next) => table = next,
        }
    }
    // The level-1 entry is always a leaf; the loop cannot fall through.
    Err(WalkError::NotPresent { level: 1 })
}

/// Most table entries one [`find_leaf`] reads: bounds the work of one oracle report (a
/// fully populated 1 GiB registration is 2^18 leaf entries).
pub const SCAN_BUDGET: u64 = 1 << 20;

/// What a range scan found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// A leaf the walker would use overlaps the range (the first one, in VA order).
    Leaf(Leaf),
    /// No such leaf.
    Clear,
    /// The budget ran out before the whole range was looked at.
    Incomplete,
}

/// The budget of a scan ran out.
struct OutOfBudget;

/// Looks for a leaf that [`walk`] would return for some VA in `[start, end)` (the range
/// is cut at `VA_LIMIT`). Descends only through present, well-formed entries, reads at
/// most `budget` entries and checks every address against guest RAM, so garbage tables
/// (loops, addresses outside RAM) cost bounded work and never fail.
pub fn find_leaf(mem: &GuestMem, root: u64, start: u64, end: u64, budget: u64) -> Scan {
    let end = end.min(pte::VA_LIMIT);
    if start >= end {
        return Scan::Clear;
    }
    let mut left = budget;
    match scan(mem, root, pte::LEVELS, 0, (start, end), &mut left) {
        Ok(Some(leaf)) => Scan::Leaf(leaf),
        Ok(None) => Scan::Clear,
        Err(OutOfBudget) => Scan::Incomplete,
    }
}

/// Scans the entries of the `level` table at `table` (mapping VAs from `base`) that
/// overlap `range`. Recursion depth is at most [`pte::LEVELS`].
fn scan(
    mem: &GuestMem,
    table: u64,
    level: u32,
    base: u64,
    range: (u64, u64),
    left: &mut u64,
) -> Result<Option<Leaf>, OutOfBudget> {
    if !table.is_multiple_of(pte::PAGE_SIZE) {
        return Ok(None); // the walker refuses it: nothing below is usable
    }
    let shift = pte::PAGE_SHIFT + 9 * (level - 1);
    let (lo, hi) = (range.0.max(base), range.1);
    if hi <= lo {
        return Ok(None);
    }
    let first = (lo - base) >> shift;
    let last = ((hi - 1 - base) >> shift).min(511);
    for i in first..=last {
        if *left == 0 {
            return Err(OutOfBudget);
        }
        *left -= 1;
        let va = base + (i << shift);
        let at = table + 8 * i;
        let Ok(entry) = mem::load_u64(mem, at) else {
            return Ok(None); // the table is outside RAM
        };
        match decode(mem, at, entry, level, va) {
            Ok(Entry::Leaf(leaf)) => return Ok(Some(leaf)),
            Ok(Entry::Table(next)) if level > 1 => {
                if let Some(leaf) = scan(mem, next, level - 1, va, range, left)? {
                    return Ok(Some(leaf));
                }
            }
            // Not present or malformed: the walker finds nothing below it.
            Ok(Entry::Table(_)) | Err(_) => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::GuestRam;
    use crate::testkit::tables::Tables;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const RAM: usize = 8 << 20;

    fn ram() -> (GuestRam, Tables) {
        let ram = GuestRam::anonymous(&[(0, RAM)]).unwrap();
        // Tables from 1 MiB up; pages in [4 MiB, 8 MiB).
        let t = Tables::new(&ram.snapshot(), 0x10_0000);
        (ram, t)
    }

    #[test]
    fn walk_4k_and_2m() {
        let (ram, mut t) = ram();
        let m = ram.snapshot();
        t.map_4k(&m, 0x7000_1000, 0x40_3000, true);
        t.map_2m(&m, 0x4000_0000, 0x60_0000, false);
        let l = walk(&m, t.root, 0x7000_1234).unwrap();
        assert_eq!(
            (l.va, l.gpa, l.huge, l.writable),
            (0x7000_1000, 0x40_3000, false, true)
        );
        assert_eq!(l.gpa_of(0x7000_1234), 0x40_3234);
        let l = walk(&m, t.root, 0x4012_3456).unwrap();
        assert_eq!((l.gpa, l.huge, l.writable), (0x60_0000, true, false));
        assert_eq!(l.gpa_of(0x4012_3456), 0x72_3456);
        assert_eq!(
            walk(&m, t.root, 0x7000_2000),
            Err(WalkError::NotPresent { level: 1 })
        );
        assert_eq!(
            walk(&m, t.root, 0x1_0000_0000),
            Err(WalkError::NotPresent { level: 3 })
        );
        assert_eq!(walk(&m, t.root, 1 << 47), Err(WalkError::NonCanonical));
        assert_eq!(walk(&m, t.root, u64::MAX), Err(WalkError::NonCanonical));
    }

    #[test]
    fn malformed_entries() {
        let (ram, mut t) = ram();
        let m = ram.snapshot();
        t.map_4k(&m, 0x1000, 0x40_0000, true);
        let l1 = t.entry_addr(&m, 0x1000, 1).unwrap();
        // Reserved bit 3.
        mem::store_u64(&m, l1, pte::leaf_4k(0x40_0000, true) | 1 << 3).unwrap();
        assert!(matches!(
            walk(&m, t.root, 0x1000),
            Err(WalkError::Table { .. })
        ));
        // High reserved bit.
        mem::store_u64(&m, l1, pte::leaf_4k(0x40_0000, true) | 1 << 60).unwrap();
        assert!(matches!(
            walk(&m, t.root, 0x1000),
            Err(WalkError::Table { .. })
        ));
        // H in an L1 entry.
        mem::store_u64(&m, l1, pte::leaf_4k(0x40_0000, true) | pte::H).unwrap();
        assert!(matches!(
            walk(&m, t.root, 0x1000),
            Err(WalkError::Table { .. })
        ));
        // Page outside RAM.
        mem::store_u64(&m, l1, pte::leaf_4k(0x1_0000_0000, true)).unwrap();
        assert_eq!(
            walk(&m, t.root, 0x1000),
            Err(WalkError::Address {
                addr: 0x1_0000_0000
            })
        );
        // Misaligned huge page at L2.
        let l2 = t.entry_addr(&m, 0x1000, 2).unwrap();
        mem::store_u64(&m, l2, pte::leaf_2m(0x40_0000, true) | 0x1000).unwrap();
        assert!(matches!(
            walk(&m, t.root, 0x1000),
            Err(WalkError::Table { .. })
        ));
        // Huge page outside RAM.
        mem::store_u64(&m, l2, pte::leaf_2m(RAM as u64, true)).unwrap();
        assert!(matches!(
            walk(&m, t.root, 0x1000),
            Err(WalkError::Address { .. })
        ));
        // A table pointer outside RAM.
        let l3 = t.entry_addr(&m, 0x1000, 3).unwrap();
        mem::store_u64(&m, l3, pte::table(0x8000_0000)).unwrap();
        assert_eq!(
            walk(&m, t.root, 0x1000),
            Err(WalkError::Address { addr: 0x8000_0000 })
        );
        // Root outside RAM.
        assert!(matches!(
            walk(&m, 0x4000_0000, 0),
            Err(WalkError::Address { .. })
        ));
    }

    #[test]
    fn find_leaf_over_ranges() {
        let (ram, mut t) = ram();
        let m = ram.snapshot();
        let scan = |t: &Tables, a: u64, b: u64| find_leaf(&m, t.root, a, b, SCAN_BUDGET);
        assert_eq!(scan(&t, 0, 0), Scan::Clear, "empty range");
        assert_eq!(scan(&t, 0, u64::MAX), Scan::Clear, "empty tables");
        t.map_4k(&m, 0x7000_3000, 0x40_3000, false);
        t.map_2m(&m, 0x4000_0000, 0x60_0000, true);
        let small = walk(&m, t.root, 0x7000_3000).unwrap();
        let huge = walk(&m, t.root, 0x4000_0000).unwrap();
        assert_eq!(scan(&t, 0x7000_3fff, 0x7000_4000), Scan::Leaf(small));
        assert_eq!(scan(&t, 0x7000_2000, 0x7000_3000), Scan::Clear, "touching");
        assert_eq!(scan(&t, 0x7000_4000, 0x8000_0000), Scan::Clear);
        assert_eq!(scan(&t, 0x401f_ffff, 0x4020_0000), Scan::Leaf(huge));
        assert_eq!(scan(&t, 0, u64::MAX), Scan::Leaf(huge), "first in VA order");
        assert_eq!(scan(&t, 0x5000_0000, u64::MAX), Scan::Leaf(small));
        assert_eq!(scan(&t, pte::VA_LIMIT, u64::MAX), Scan::Clear, "cut");
        // Entries the walker refuses are not leaves: reserved bits, a page outside RAM.
        let l1 = t.entry_addr(&m, 0x7000_3000, 1).unwrap();
        mem::store_u64(&m, l1, pte::leaf_4k(0x40_3000, true) | 1 << 9).unwrap();
        assert_eq!(scan(&t, 0x7000_0000, 0x8000_0000), Scan::Clear);
        mem::store_u64(&m, l1, pte::leaf_4k(RAM as u64, true)).unwrap();
        assert_eq!(scan(&t, 0x7000_0000, 0x8000_0000), Scan::Clear);
        // A table pointer outside RAM, and one that loops back to the root.
        let l2 = t.entry_addr(&m, 0x7000_3000, 2).unwrap();
        mem::store_u64(&m, l2, pte::table(0x8000_0000)).unwrap();
        assert_eq!(scan(&t, 0x7000_0000, 0x8000_0000), Scan::Clear);
        let l3 = t.entry_addr(&m, 0x7000_3000, 3).unwrap();
        mem::store_u64(&m, l3, pte::table(t.root)).unwrap();
        match scan(&t, 0, pte::VA_LIMIT) {
            // Table pages read as leaves one level down: what the walker does too.
            Scan::Leaf(l) => assert_eq!(walk(&m, t.root, l.va), Ok(l)),
            s => panic!("{s:?}"),
        }
        // Misaligned or absent root.
        assert_eq!(find_leaf(&m, t.root + 8, 0, u64::MAX, 100), Scan::Clear);
        assert_eq!(find_leaf(&m, 1 << 40, 0, u64::MAX, 100), Scan::Clear);
    }

    #[test]
    fn find_leaf_work_is_bounded() {
        let (ram, mut t) = ram();
        let m = ram.snapshot();
        // Every L2 entry of one L3 slot points at the same full L1 table: 512 * 512
        // leaves to look at, all in a few table pages.
        t.map_4k(&m, 0, 0x40_0000, true);
        let l1 = t.entry_addr(&m, 0, 1).unwrap() & !0xfff;
        for i in 0..512 {
            mem::store_u64(&m, l1 + 8 * i, 0).unwrap();
        }
        let l2 = t.entry_addr(&m, 0, 2).unwrap();
        for i in 0..512 {
            mem::store_u64(&m, l2 + 8 * i, pte::table(l1)).unwrap();
        }
        assert_eq!(
            find_leaf(&m, t.root, 0, pte::VA_LIMIT, 10_000),
            Scan::Incomplete
        );
        assert_eq!(
            find_leaf(&m, t.root, 0, pte::VA_LIMIT, SCAN_BUDGET),
            Scan::Clear
        );
        // The very last L1 entry of the last table.
        mem::store_u64(&m, l1 + 8 * 511, pte::leaf_4k(0x40_0000, false)).unwrap();
        let va = 511 * pte::HUGE_SIZE + 511 * pte::PAGE_SIZE;
        assert_eq!(
            find_leaf(&m, t.root, va, va + 1, SCAN_BUDGET),
            Scan::Leaf(walk(&m, t.root, va).unwrap())
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn walker_matches_reference(
            maps in prop::collection::vec((0u64..64, 0u64..8, any::<bool>(), any::<bool>()), 1..40),
            probes in prop::collection::vec((0u64..64, 0u64..8, 0u64..0x20_0000), 1..60),
            ranges in prop::collection::vec((0u64..64, 0u64..0x20_0000, 1u64..0x40_0000), 1..8),
        ) {
            let (ram, mut t) = ram();
            let m = ram.snapshot();
            // VA space: 64 slots of 2 MiB spread over two L4 entries; each slot is either a
            // huge page or holds up to 8 small pages.
            let slot_va = |s: u64| (s % 32) * pte::HUGE_SIZE + (s / 32) * (1 << 39);
            let mut reference: HashMap<u64, (bool, u64, bool)> = HashMap::new();
            let mut huge_slots = HashMap::new();
            let mut gpa_next = 0x40_0000u64;
            for (slot, page, huge, w) in maps {
                if huge_slots.contains_key(&slot) || (huge && reference.keys().any(|v| *v >= slot_va(slot) && *v < slot_va(slot) + pte::HUGE_SIZE)) {
                    continue;
                }
                if huge {
                    t.map_2m(&m, slot_va(slot), 0x60_0000, w);
                    huge_slots.insert(slot, w);
                } else {
                    let va = slot_va(slot) + page * pte::PAGE_SIZE;
                    let gpa = gpa_next;
                    gpa_next += pte::PAGE_SIZE;
                    t.map_4k(&m, va, gpa, w);
                    reference.insert(va, (false, gpa, w));
                }
            }
            for (slot, _page, off) in probes {
                let va = slot_va(slot) + off;
                let got = walk(&m, t.root, va);
                if let Some(w) = huge_slots.get(&slot) {
                    let l = got.unwrap();
                    prop_assert!(l.huge);
                    prop_assert_eq!(l.writable, *w);
                    prop_assert_eq!(l.gpa_of(va), 0x60_0000 + off);
                } else if let Some((_, gpa, w)) = reference.get(&(va & !0xfff)) {
                    let l = got.unwrap();
                    prop_assert!(!l.huge);
                    prop_assert_eq!(l.writable, *w);
                    prop_assert_eq!(l.gpa_of(va), gpa + (va & 0xfff));
                } else {
                    prop_assert!(matches!(got, Err(WalkError::NotPresent { .. })), "{:?}", got);
                }
            }
            // A range scan finds a leaf exactly when a mapped page overlaps the range.
            for (slot, off, len) in ranges {
                let (a, b) = (slot_va(slot) + off, slot_va(slot) + off + len);
                let overlaps = |va: u64, size: u64| va < b && a < va + size;
                let want = reference.keys().any(|&va| overlaps(va, pte::PAGE_SIZE))
                    || huge_slots.keys().any(|&s| overlaps(slot_va(s), pte::HUGE_SIZE));
                match find_leaf(&m, t.root, a, b, SCAN_BUDGET) {
                    Scan::Leaf(l) => {
                        prop_assert!(want);
                        prop_assert!(overlaps(l.va, l.size()));
                        prop_assert_eq!(walk(&m, t.root, l.va), Ok(l));
                    }
                    got => prop_assert_eq!((got, want), (Scan::Clear, false)),
                }
            }
        }
    }
}
