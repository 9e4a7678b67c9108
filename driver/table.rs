// SPDX-License-Identifier: GPL-2.0
//! One context's translation table in DMA memory (spec §6): four levels of 512 entries, 4 KiB
//! leaves in level-1 tables and 2 MiB leaves in level-2 entries. Leaves hold bus addresses
//! (DMA mappings of the pages, `dma_map.rs`), never physical ones.
//!
//! The table lives under the context's notifier lock, and invalidations run in memory reclaim,
//! so nothing here allocates except [`PageTable::grow`], which is handed tables allocated before
//! the lock was taken ([`PageTable::missing`] / [`PageTable::allocate`]). Intermediate tables
//! are kept until the context goes away; only leaves come and go.

use kernel::{
    device::{Bound, Device},
    dma::Coherent,
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
};

use crate::abi::pte;
use crate::dma_mem::{load, store};

/// Key of the table at `level` (3, 2 or 1) that covers `va`.
fn key(level: u32, va: u64) -> u64 {
    (u64::from(level) << 56) | (va >> span_shift(level))
}

/// log2 of the bytes a table at `level` covers.
fn span_shift(level: u32) -> u32 {
    pte::PAGE_SHIFT + 9 * level
}

/// The table at `level` covering `va` starts at this VA.
fn key_base(key: u64) -> u64 {
    let level = (key >> 56) as u32;
    (key & ((1 << 56) - 1)) << span_shift(level)
}

/// Leaves found or changed in a range.
#[derive(Default, Clone, Copy)]
pub(crate) struct Leaves {
    pub(crate) small: u64,
    pub(crate) huge: u64,
    pub(crate) writable: u64,
}

impl Leaves {
    pub(crate) fn total(&self) -> u64 {
        self.small + self.huge
    }
}

/// Tables allocated outside the lock, ready to be linked in.
pub(crate) struct NewTables(KVec<NewTable>);

/// A table page and the tree node it will live in, allocated ahead.
pub(crate) struct NewTable {
    key: u64,
    table: Coherent<[u64]>,
    node: RBTreeNodeReservation<u64, Coherent<[u64]>>,
}

pub(crate) struct PageTable {
    root: Coherent<[u64]>,
    tables: RBTree<u64, Coherent<[u64]>>,
    /// Valid leaves in the whole table.
    pub(crate) valid: Leaves,
}

impl PageTable {
    pub(crate) fn new(dev: &Device<Bound>) -> Result<Self> {
        Ok(PageTable {
            root: Coherent::<u64>::zeroed_slice(dev, pte::ENTRIES, GFP_KERNEL)?,
            tables: RBTree::new(),
            valid: Leaves::default(),
        })
    }

    /// Bus address of the level-4 table (the context entry's `root`).
    pub(crate) fn root(&self) -> u64 {
        self.root.dma_address()
    }

    /// Keys of the tables [start, end) needs that do not exist yet (no allocation: the caller
    /// reserved `out`'s capacity with [`max_tables`]).
    pub(crate) fn missing(&self, start: u64, end: u64, out: &mut KVec<u64>) {
        for level in [3, 2, 1] {
            let shift = span_shift(level);
            let mut va = start >> shift << shift;
            while va < end {
                let k = key(level, va);
                if self.tables.get(&k).is_none() && out.push_within_capacity(k).is_err() {
                    return;
                }
                va += 1 << shift;
            }
        }
    }

    /// Allocates zeroed tables for `keys` (outside the lock).
    pub(crate) fn allocate(dev: &Device<Bound>, keys: &[u64]) -> Result<NewTables> {
        let mut out = KVec::with_capacity(keys.len(), GFP_KERNEL)?;
        for k in keys {
            let t = Coherent::<u64>::zeroed_slice(dev, pte::ENTRIES, GFP_KERNEL)?;
            let node = RBTreeNodeReservation::new(GFP_KERNEL)?;
            out.push(
                NewTable {
                    key: *k,
                    table: t,
                    node,
                },
                GFP_KERNEL,
            )?;
        }
        Ok(NewTables(out))
    }

    /// Links allocated tables in (parents first). A table that appeared meanwhile (a racing
    /// registration linked it) stays in `new`, whose pages the caller frees after the lock.
    pub(crate) fn grow(&mut self, new: &mut NewTables) -> Result {
        for level in [3u64, 2, 1] {
            let mut i = 0;
            while i < new.0.len() {
                let node_key = new.0[i].key;
                if node_key >> 56 != level || self.tables.get(&node_key).is_some() {
                    i += 1;
                    continue;
                }
                let new_table = new.0.remove(i).map_err(|_| EINVAL)?;
                let table_dma = new_table.table.dma_address();
                let node = new_table.node.into_node(node_key, new_table.table);
                self.link(node_key, pte::table(table_dma))?;
                self.tables.insert(node);
            }
        }
        Ok(())
    }

    /// Writes the parent entry of the table `child_key`.
    fn link(&mut self, child_key: u64, entry: u64) -> Result {
        let level = (child_key >> 56) as u32;
        let va = key_base(child_key);
        let (parent, index) = match level {
            3 => (&self.root, pte::index(va, 4)),
            _ => (
                self.tables.get(&key(level + 1, va)).ok_or(EINVAL)?,
                pte::index(va, level + 1),
            ),
        };
        // A huge leaf in the level-2 entry stays until it is cleared; clear() links the level-1
        // table then.
        if level == 1 && load(parent, index)? & pte::H != 0 {
            return Ok(());
        }
        store(parent, index, entry)
    }

    /// Installs a 4 KiB leaf for `va`. The level-1 table must exist (registration grew it).
    /// Returns whether it split a 2 MiB leaf to do so.
    ///
    /// A huge leaf that already grants the access covers `va` (same, current mapping): nothing
    /// to do. A read-only huge leaf under a writable 4 KiB one is split: left in place, the
    /// device would fault on its write for ever. The device may cache the 2 MiB translation,
    /// so on a split the caller invalidates the block (as for `set_2m`).
    pub(crate) fn set_4k(&mut self, va: u64, bus: u64, writable: bool) -> Result<bool> {
        let l2 = self.tables.get(&key(2, va)).ok_or(EINVAL)?;
        let i2 = pte::index(va, 2);
        let e2 = load(l2, i2)?;
        let l1 = self.tables.get(&key(1, va)).ok_or(EINVAL)?;
        let split = e2 & pte::H != 0;
        if split {
            if !writable || e2 & pte::W != 0 {
                return Ok(false);
            }
            store(l2, i2, pte::table(l1.dma_address()))?;
            self.valid.huge -= 1.min(self.valid.huge);
        }
        let i = pte::index(va, 1);
        let old = load(l1, i)?;
        store(l1, i, pte::leaf_4k(bus, writable))?;
        if old & pte::P == 0 {
            self.valid.small += 1;
        }
        Ok(split)
    }

    /// Installs a 2 MiB leaf for the 2 MiB-aligned `va`, replacing its 4 KiB leaves. Returns
    /// how many 4 KiB leaves it replaced.
    ///
    /// The device may still cache those 4 KiB translations (a 4 KiB TLB entry even wins over a
    /// 2 MiB one), and once they are gone from the table no later `clear` can see them: the
    /// caller must have the device invalidate the block (`Ctx::fill` does, behind a SYNC it
    /// records as pending) so that "the table shows everything the device may cache" holds.
    pub(crate) fn set_2m(&mut self, va: u64, bus: u64, writable: bool) -> Result<u64> {
        let l2 = self.tables.get(&key(2, va)).ok_or(EINVAL)?;
        let i = pte::index(va, 2);
        let old = load(l2, i)?;
        store(l2, i, pte::leaf_2m(bus, writable))?;
        let mut replaced = 0;
        if old & pte::H == 0 {
            self.valid.huge += 1;
            // The small leaves under it are unreachable now; drop them from the count.
            if let Some(l1) = self.tables.get(&key(1, va)) {
                for j in 0..pte::ENTRIES {
                    if load(l1, j)? & pte::P != 0 {
                        store(l1, j, 0)?;
                        replaced += 1;
                    }
                }
            }
            self.valid.small -= replaced.min(self.valid.small);
        }
        Ok(replaced)
    }

    /// Clears every leaf overlapping [start, end) (a huge leaf that overlaps only partly goes
    /// too). Returns what was cleared. Walks existing tables only, so a range as large as the
    /// whole address space (process exit) costs what is mapped, not what is covered.
    pub(crate) fn clear(&mut self, start: u64, end: u64) -> Leaves {
        let mut cleared = Leaves::default();
        if start >= end {
            return cleared;
        }
        let tables = &self.tables;
        // Huge leaves, in level-2 entries: the level-1 table under one (if any) is linked back.
        Self::scan(tables, 2, start, end, |table, base, i, e| {
            if e & pte::P != 0 && e & pte::H != 0 {
                cleared.huge += 1;
                let va = base + ((i as u64) << span_shift(1));
                let link = tables
                    .get(&key(1, va))
                    .map_or(0, |l1| pte::table(l1.dma_address()));
                store(table, i, link)?;
            }
            Ok(())
        });
        // Small leaves, in level-1 tables.
        Self::scan(tables, 1, start, end, |table, _, i, e| {
            if e & pte::P != 0 {
                cleared.small += 1;
                store(table, i, 0)?;
            }
            Ok(())
        });
        self.valid.small -= cleared.small.min(self.valid.small);
        self.valid.huge -= cleared.huge.min(self.valid.huge);
        cleared
    }

    /// Calls `f(table, table_base_va, index, entry)` for every entry of the existing tables at
    /// `level` that overlaps [start, end).
    fn scan(
        tables: &RBTree<u64, Coherent<[u64]>>,
        level: u32,
        start: u64,
        end: u64,
        mut f: impl FnMut(&Coherent<[u64]>, u64, usize, u64) -> Result,
    ) {
        let first = key(level, start);
        let last = key(level, end - 1);
        let entry_shift = span_shift(level - 1);
        // In key order; the tables of a context number a few per GiB registered.
        for (k, table) in tables.iter().skip_while(|(k, _)| **k < first) {
            if *k > last {
                break;
            }
            let base = key_base(*k);
            let lo = if start > base {
                ((start - base) >> entry_shift) as usize
            } else {
                0
            };
            let hi_va = end.min(base + (1 << span_shift(level)));
            let hi = ((hi_va - base + (1 << entry_shift) - 1) >> entry_shift) as usize;
            for i in lo..hi.min(pte::ENTRIES) {
                if let Ok(e) = load(table, i) {
                    if e != 0 {
                        let _ = f(table, base, i, e);
                    }
                }
            }
        }
    }

    /// Number of intermediate tables (level 3, 2 and 1) the context holds.
    pub(crate) fn tables(&self) -> usize {
        self.tables.keys().count()
    }

    /// Upper bound of what [`PageTable::prune`] can take out: the tables whose span overlaps
    /// no range of `keep` (so the caller can reserve room before taking the lock).
    pub(crate) fn prunable(&self, keep: &[(u64, u64)]) -> usize {
        self.tables
            .keys()
            .filter(|k| !overlaps_any(span(**k), keep))
            .count()
    }

    /// Unlinks and moves into `out` every table overlapping [start, end) whose span overlaps
    /// no range of `keep` (the registrations left), with all the tables below it; each at
    /// most `out`'s spare capacity. No allocation (`out` was reserved with
    /// [`PageTable::prunable`]). The device may still be walking an unlinked table: the
    /// caller frees `out` only after a SYNC.
    pub(crate) fn prune(
        &mut self,
        start: u64,
        end: u64,
        keep: &[(u64, u64)],
        out: &mut KVec<Coherent<[u64]>>,
    ) {
        for level in [3u64, 2, 1] {
            loop {
                let found = self.tables.keys().copied().find(|k| {
                    let (lo, hi) = span(*k);
                    *k >> 56 == level && lo < end && start < hi && !overlaps_any((lo, hi), keep)
                });
                let Some(k) = found else {
                    break;
                };
                // Parents first: unlinked, the subtree is unreachable for new walks.
                if self.link(k, 0).is_err() {
                    break;
                }
                let (lo, hi) = span(k);
                loop {
                    let next = self.tables.keys().copied().find(|d| {
                        let base = key_base(*d);
                        (*d >> 56) <= level && lo <= base && base < hi
                    });
                    let Some(t) = next.and_then(|d| self.tables.remove(&d)) else {
                        break;
                    };
                    // No room cannot happen (`prunable` counted these); if it did, the page
                    // would be freed now, before the SYNC: stop instead, leaking nothing
                    // reachable (the rest stays in the tree).
                    if let Err(t) = out.push_within_capacity(t) {
                        core::mem::forget(t);
                        return;
                    }
                }
            }
        }
    }

    /// Counts the valid leaves overlapping [start, end).
    pub(crate) fn count(&self, start: u64, end: u64) -> Leaves {
        let mut n = Leaves::default();
        if start >= end {
            return n;
        }
        Self::scan(&self.tables, 2, start, end, |_, _, _, e| {
            if e & pte::P != 0 && e & pte::H != 0 {
                n.huge += 1;
                if e & pte::W != 0 {
                    n.writable += 1;
                }
            }
            Ok(())
        });
        Self::scan(&self.tables, 1, start, end, |_, _, _, e| {
            if e & pte::P != 0 {
                n.small += 1;
                if e & pte::W != 0 {
                    n.writable += 1;
                }
            }
            Ok(())
        });
        n
    }
}

/// The VA range [lo, hi) a table covers.
fn span(key: u64) -> (u64, u64) {
    let level = (key >> 56) as u32;
    let lo = key_base(key);
    (lo, lo.saturating_add(1 << span_shift(level)))
}

fn overlaps_any((lo, hi): (u64, u64), ranges: &[(u64, u64)]) -> bool {
    ranges.iter().any(|&(s, e)| s < hi && lo < e)
}

/// Upper bound of the tables [start, end) can need (for reserving [`PageTable::missing`]'s
/// output before taking the lock).
pub(crate) fn max_tables(start: u64, end: u64) -> usize {
    [3, 2, 1]
        .iter()
        .map(|l| {
            let s = span_shift(*l);
            (((end - 1) >> s) - (start >> s) + 1) as usize
        })
        .sum()
}
