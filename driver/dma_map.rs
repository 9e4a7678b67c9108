// SPDX-License-Identifier: GPL-2.0
//! The DMA mappings of one registration's pages: what its device leaves point at.
//!
//! A leaf holds a bus address (spec §6), never a physical one: behind an IOMMU the device can
//! reach only what the DMA API mapped for it. A fill maps each page it makes a leaf for (under
//! the notifier lock, `fill.rs`); the mapping is unmapped only once the device is fenced
//! against every translation that could lead to it (`invalidate.rs`: after the SYNC of the
//! invalidation that cleared the leaf; deregistration and teardown likewise), and always
//! before the kernel may free the page, which it does only after the invalidate callback
//! returned, or after the pinned baseline unpinned it.
//!
//! The slots (`kernel::dma::streaming::MapTable`, patch 0006) come in 2 MiB blocks of the
//! address space: one slot per 4 KiB page of the block and one for the whole block. A
//! registration starts with only an empty pointer per block it overlaps (16 bytes per 2 MiB),
//! so registering costs nothing per page; a block's slots are allocated when a fill first
//! needs them, before the fill takes the notifier lock ([`DmaPages::prepare`]): invalidations
//! run in memory reclaim and must never wait for memory, as for translation tables
//! (`table.rs`). A block, once there, stays until the registration goes: a lookup never
//! allocates, and an unmap skips the blocks no fill touched and the tables with nothing
//! mapped.
//!
//! A 2 MiB leaf needs one bus-contiguous, 2 MiB-aligned mapping of the whole huge page: the
//! block's huge slot maps it as one, and if the DMA layer returns an address that is not 2 MiB
//! aligned (it could, e.g. for a bounce buffer) the fill falls back to 4 KiB leaves. The
//! IOMMU's DMA layer aligns an allocation of 2 MiB to 2 MiB, and without an IOMMU the bus
//! address is the physical one, which a THP's is.
//!
//! Slots stay mapped after their leaf was replaced (a 2 MiB leaf over 4 KiB ones, a split,
//! another registration's fill of the same page): the device may still cache them, and they
//! map the current page (a change of the page goes through an invalidation, which unmaps
//! them). So a refill of a mapped slot reuses its mapping, and each registration holds at
//! most one mapping per page and one per block.
//!
//! Counted module-wide (all NICs together; debugfs `dma_maps`): a test checks that every
//! mapping is gone once the registrations are, and that none goes before its SYNC.

use core::ops::Range;

use kernel::{
    device::{Bound, Device},
    dma::{
        attrs::DMA_ATTR_REQUIRE_COHERENT,
        streaming::{MapTable, Mapped},
        DataDirection,
    },
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        SetOnce,
    },
};

use crate::abi::pte;

/// 4 KiB pages in a 2 MiB block.
const PAGES_PER_BLOCK: usize = (pte::HUGE_SIZE / pte::PAGE_SIZE) as usize;

/// Mappings made since the module was loaded.
static MAPPED: Atomic<u64> = Atomic::new(0);
/// Mappings unmapped since the module was loaded.
static UNMAPPED: Atomic<u64> = Atomic::new(0);

/// (made, unmapped) since the module was loaded; their difference is what is mapped now.
pub(crate) fn counts() -> (u64, u64) {
    // Unmapped first: a mapping counted there is counted as made already, so the difference
    // read this way never goes below zero.
    let unmapped = UNMAPPED.load(Relaxed);
    (MAPPED.load(Relaxed), unmapped)
}

fn count_new(m: Mapped) -> u64 {
    if let Mapped::New(_) = m {
        MAPPED.add(1, Relaxed);
    }
    m.dma_address()
}

fn unmap_counted(table: &MapTable, range: Range<usize>) {
    // A table with nothing mapped needs no walk over its slots. The count is exact here:
    // fills map under the notifier lock and the registration list, and every unmap path took
    // one of them after the fill (the first pass of an invalidation, which its second pass
    // follows, the shoot-down of a deregistration, or the list at teardown and unbind).
    if table.mapped() == 0 {
        return;
    }
    let n = table.unmap_range(range);
    UNMAPPED.add(n as u64, Relaxed);
}

/// The slots of one 2 MiB block of the address space (about 12 KiB).
struct Block {
    /// One slot per 4 KiB page of the block, by its index in the block.
    small: MapTable,
    /// The whole block mapped as one, for a 2 MiB leaf.
    huge: MapTable,
}

impl Block {
    /// Empty slots, charged to the memory cgroup of the task that fills.
    fn new(dev: &Device<Bound>) -> Result<KBox<Self>> {
        // Bidirectional: a leaf made read-only now may be made writable by the next fill
        // without a new mapping. Never bounced: the device and the process share the page for
        // as long as it is mapped, and a bounce buffer is copied only at sync time.
        let table = |n, size| {
            MapTable::new(
                dev,
                n,
                size,
                DataDirection::Bidirectional,
                DMA_ATTR_REQUIRE_COHERENT,
                GFP_KERNEL_ACCOUNT,
            )
        };
        let block = Block {
            small: table(PAGES_PER_BLOCK, pte::PAGE_SIZE as usize)?,
            huge: table(1, pte::HUGE_SIZE as usize)?,
        };
        Ok(KBox::new(block, GFP_KERNEL_ACCOUNT)?)
    }

    /// Unmaps the slots of the pages `pages` (indices in the block) and the huge slot.
    fn unmap(&self, pages: Range<usize>) {
        unmap_counted(&self.small, pages);
        unmap_counted(&self.huge, 0..1);
    }
}

impl Drop for Block {
    /// A backstop: deregistration and teardown unmap every slot while the device is fenced
    /// and before they remove the notifier (the pages may be freed after that), so normally
    /// nothing is left here. Counted, unlike the table's own clean-up.
    fn drop(&mut self) {
        self.unmap(0..PAGES_PER_BLOCK);
    }
}

/// The DMA mappings of the pages of one registration, `[start, end)`.
pub(crate) struct DmaPages {
    start: u64,
    end: u64,
    /// One entry per 2 MiB block overlapping the range (entry `i` covers the block at
    /// `start & !(HUGE_SIZE - 1)` + `i * HUGE_SIZE`), empty until a fill needs the block.
    blocks: KVec<SetOnce<KBox<Block>>>,
}

impl DmaPages {
    /// No slots yet for `[start, end)` (page aligned): one empty entry per 2 MiB block it
    /// overlaps (16 bytes each, 8 KiB for 1 GiB), charged to the registering process's memory
    /// cgroup.
    pub(crate) fn new(start: u64, end: u64) -> Result<Self> {
        let n = (((end - 1) >> pte::HUGE_SHIFT) - (start >> pte::HUGE_SHIFT) + 1) as usize;
        let mut blocks = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..n {
            // Cannot fail: the capacity was reserved above.
            blocks
                .push_within_capacity(SetOnce::new())
                .map_err(|_| ENOMEM)?;
        }
        Ok(DmaPages { start, end, blocks })
    }

    fn block_index(&self, va: u64) -> usize {
        ((va >> pte::HUGE_SHIFT) - (self.start >> pte::HUGE_SHIFT)) as usize
    }

    fn page_in_block(va: u64) -> usize {
        ((va & (pte::HUGE_SIZE - 1)) / pte::PAGE_SIZE) as usize
    }

    /// Allocates the slots of every block of `[start, end)` (within the registration) that has
    /// none yet. Sleeps and allocates: only before the fill takes the notifier lock.
    pub(crate) fn prepare(&self, dev: &Device<Bound>, start: u64, end: u64) -> Result {
        let (start, end) = (start.max(self.start), end.min(self.end));
        if start >= end {
            return Ok(());
        }
        for entry in &self.blocks[self.block_index(start)..=self.block_index(end - 1)] {
            if entry.as_ref().is_none() {
                // Lost to a concurrent fill of the same block: the spare is dropped here,
                // outside any lock, with nothing mapped.
                let _ = entry.populate(Block::new(dev)?);
            }
        }
        Ok(())
    }

    /// The slots of the block of `va`, which [`DmaPages::prepare`] allocated before the
    /// caller took the notifier lock.
    fn block(&self, va: u64) -> Result<&Block> {
        // Missing only if the fill did not prepare `va`, or if a concurrent `prepare` of the
        // same block has not published it yet (fills of a registration hold the context's
        // registration list, so they do not run concurrently): the fill fails rather than
        // allocate here.
        self.blocks
            .get(self.block_index(va))
            .and_then(SetOnce::as_ref)
            .map(|b| &**b)
            .ok_or(ENOMEM)
    }

    /// The bus address of the 4 KiB page `pa` that `va` maps (mapped now, or the slot's mapping
    /// of it).
    ///
    /// Called under the notifier lock with `pa` proven current (`read_retry`): the page stays
    /// allocated until an invalidation, which unmaps the slot before the kernel frees it.
    /// Allocates nothing: the block was prepared.
    pub(crate) fn map_4k(&self, dev: &Device<Bound>, va: u64, pa: u64) -> Result<u64> {
        let block = self.block(va)?;
        // SAFETY: `pa` is a page of user memory (RAM) that `hmm_range_fault` found mapped at
        // `va`, checked current under the notifier lock; the page is not freed before an
        // invalidation of `va` completes, and that unmaps this slot first (after its SYNC), or
        // before the registration's deregistration or teardown, which unmap every slot first.
        let m = unsafe { block.small.map(dev, Self::page_in_block(va), pa) }?;
        Ok(count_new(m))
    }

    /// The bus address of the 2 MiB huge page `pa` that the 2 MiB-aligned `va` maps, mapped as
    /// one; `None` if the DMA layer could not give it a 2 MiB-aligned bus address (the caller
    /// makes 4 KiB leaves instead). Allocates nothing: the block was prepared.
    pub(crate) fn map_2m(&self, dev: &Device<Bound>, va: u64, pa: u64) -> Result<Option<u64>> {
        let block = self.block(va)?;
        // SAFETY: as in `map_4k`, for the 512 pages of one huge page, all checked current.
        let m = unsafe { block.huge.map(dev, 0, pa) }?;
        let bus = count_new(m);
        if bus % pte::HUGE_SIZE != 0 {
            // Never in a leaf: the device cannot have seen it.
            unmap_counted(&block.huge, 0..1);
            return Ok(None);
        }
        Ok(Some(bus))
    }

    /// Unmaps every mapping that a leaf over `[start, end)` (clamped to the registration) may
    /// have pointed at, including the 2 MiB blocks that overlap it only partly (`clear` takes a
    /// partly covered 2 MiB leaf down too).
    ///
    /// Only once the device is fenced: the leaves of the range are cleared and a SYNC posted
    /// after that has executed, or the device is stopped. Allocates nothing, sleeps on nothing:
    /// runs in invalidations, blockable or not. Costs one check per block no fill touched.
    pub(crate) fn unmap_fenced(&self, start: u64, end: u64) {
        let (start, end) = (start.max(self.start), end.min(self.end));
        if start >= end {
            return;
        }
        let first = self.block_index(start);
        for (i, entry) in self.blocks[first..=self.block_index(end - 1)]
            .iter()
            .enumerate()
        {
            let Some(block) = entry.as_ref() else {
                continue;
            };
            let base = ((self.start >> pte::HUGE_SHIFT) + (first + i) as u64) << pte::HUGE_SHIFT;
            let lo = start.max(base);
            let hi = end.min(base + pte::HUGE_SIZE);
            block.unmap(Self::page_in_block(lo)..Self::page_in_block(hi - 1) + 1);
        }
    }
}
