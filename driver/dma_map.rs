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
//! One slot per 4 KiB page of the registration and one per 2 MiB block it overlaps
//! (`kernel::dma::streaming::MapTable`, patch 0006). A 2 MiB leaf needs one bus-contiguous,
//! 2 MiB-aligned mapping of the whole huge page: the block is mapped as one, and if the DMA
//! layer returns an address that is not 2 MiB aligned (it could, e.g. for a bounce buffer)
//! the fill falls back to 4 KiB leaves. The IOMMU's DMA layer aligns an allocation of 2 MiB to
//! 2 MiB, and without an IOMMU the bus address is the physical one, which a THP's is.
//!
//! Slots stay mapped after their leaf was replaced (a 2 MiB leaf over 4 KiB ones, a split,
//! another registration's fill of the same page): the device may still cache them, and they
//! map the current page (a change of the page goes through an invalidation, which unmaps
//! them). So a refill of a mapped slot reuses its mapping, and each registration holds at
//! most one mapping per page and one per block.
//!
//! Counted module-wide (all NICs together; debugfs `dma_maps`): a test checks that every
//! mapping is gone once the registrations are, and that none goes before its SYNC.

use kernel::{
    device::{Bound, Device},
    dma::{
        attrs::DMA_ATTR_REQUIRE_COHERENT,
        streaming::{MapTable, Mapped},
        DataDirection,
    },
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

use crate::abi::pte;

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

/// The DMA mappings of the pages of one registration, `[start, end)`.
pub(crate) struct DmaPages {
    start: u64,
    /// One slot per 4 KiB page.
    small: MapTable,
    /// One slot per 2 MiB block overlapping the range (block `i` starts at
    /// `start & !(HUGE_SIZE - 1)` + `i * HUGE_SIZE`).
    huge: MapTable,
}

impl DmaPages {
    /// Empty slots for `[start, end)` (page aligned): 24 bytes per page, charged to the
    /// registering process's memory cgroup. Allocates: registration only.
    pub(crate) fn new(dev: &Device<Bound>, start: u64, end: u64) -> Result<Self> {
        let pages = ((end - start) / pte::PAGE_SIZE) as usize;
        let blocks = (((end - 1) >> pte::HUGE_SHIFT) - (start >> pte::HUGE_SHIFT) + 1) as usize;
        // Bidirectional: a leaf made read-only now may be made writable by the next fill
        // without a new mapping. Never bounced: the device and the process share the page for as
        // long as it is mapped, and a bounce buffer is copied only at sync time.
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
        Ok(DmaPages {
            start,
            small: table(pages, pte::PAGE_SIZE as usize)?,
            huge: table(blocks, pte::HUGE_SIZE as usize)?,
        })
    }

    fn page_index(&self, va: u64) -> usize {
        ((va - self.start) / pte::PAGE_SIZE) as usize
    }

    fn block_index(&self, va: u64) -> usize {
        ((va >> pte::HUGE_SHIFT) - (self.start >> pte::HUGE_SHIFT)) as usize
    }

    /// The bus address of the 4 KiB page `pa` that `va` maps (mapped now, or the slot's mapping
    /// of it).
    ///
    /// Called under the notifier lock with `pa` proven current (`read_retry`): the page stays
    /// allocated until an invalidation, which unmaps the slot before the kernel frees it.
    pub(crate) fn map_4k(&self, dev: &Device<Bound>, va: u64, pa: u64) -> Result<u64> {
        // SAFETY: `pa` is a page of user memory (RAM) that `hmm_range_fault` found mapped at
        // `va`, checked current under the notifier lock; the page is not freed before an
        // invalidation of `va` completes, and that unmaps this slot first (after its SYNC), or
        // before the registration's deregistration or teardown, which unmap every slot first.
        let m = unsafe { self.small.map(dev, self.page_index(va), pa) }?;
        Ok(count_new(m))
    }

    /// The bus address of the 2 MiB huge page `pa` that the 2 MiB-aligned `va` maps, mapped as
    /// one; `None` if the DMA layer could not give it a 2 MiB-aligned bus address (the caller
    /// makes 4 KiB leaves instead).
    pub(crate) fn map_2m(&self, dev: &Device<Bound>, va: u64, pa: u64) -> Result<Option<u64>> {
        let i = self.block_index(va);
        // SAFETY: as in `map_4k`, for the 512 pages of one huge page, all checked current.
        let m = unsafe { self.huge.map(dev, i, pa) }?;
        let bus = count_new(m);
        if bus % pte::HUGE_SIZE != 0 {
            // Never in a leaf: the device cannot have seen it.
            self.unmap_counted(&self.huge, i..i + 1);
            return Ok(None);
        }
        Ok(Some(bus))
    }

    fn unmap_counted(&self, table: &MapTable, range: core::ops::Range<usize>) {
        let n = table.unmap_range(range);
        UNMAPPED.add(n as u64, Relaxed);
    }

    /// Unmaps every mapping that a leaf over `[start, end)` (clamped to the registration) may
    /// have pointed at, including the 2 MiB blocks that overlap it only partly (`clear` takes a
    /// partly covered 2 MiB leaf down too).
    ///
    /// Only once the device is fenced: the leaves of the range are cleared and a SYNC posted
    /// after that has executed, or the device is stopped. Allocates nothing, sleeps on nothing:
    /// runs in invalidations, blockable or not.
    pub(crate) fn unmap_fenced(&self, start: u64, end: u64) {
        let end = end.min(self.start + self.small.len() as u64 * pte::PAGE_SIZE);
        let start = start.max(self.start);
        if start >= end {
            return;
        }
        self.unmap_counted(
            &self.small,
            self.page_index(start)..self.page_index(end - 1) + 1,
        );
        self.unmap_counted(
            &self.huge,
            self.block_index(start)..self.block_index(end - 1) + 1,
        );
    }
}

impl Drop for DmaPages {
    /// A backstop: deregistration and teardown unmap every slot while the device is fenced and
    /// before they remove the notifier (the pages may be freed after that), so normally nothing
    /// is left here.
    fn drop(&mut self) {
        self.unmap_counted(&self.small, 0..self.small.len());
        self.unmap_counted(&self.huge, 0..self.huge.len());
    }
}
