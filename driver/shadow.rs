// SPDX-License-Identifier: GPL-2.0
//! A shadow page (spec §4a): 4 KiB of coherent DMA memory where a queue's producer publishes
//! its tail and the device says whether it is polling that page. The command queue has one
//! (`MnicDev`), and so may each context's work queue (`MNIC_IOC_SHADOW`, mapped into the owner).
//!
//! [`ShadowPage::publish`] is the producer's rule, written once for both queues: tail, full
//! fence, then `polling`, so that either the device sees the tail before it sleeps or the
//! producer sees it asleep and rings the doorbell register.

use kernel::{
    device::{Bound, Device},
    dma::{Coherent, DmaAddress},
    mm::virt::{flags, VmaNew},
    prelude::*,
    sync::barrier::{dma_mb, mb, Full, Write},
};

use crate::abi::{self, Shadow};

/// 32-bit words of a shadow page.
const WORDS: usize = abi::SHADOW_PAGE_SIZE as usize / size_of::<u32>();
/// Word index of `Shadow::tail`.
const TAIL: usize = Shadow::TAIL_OFFSET / size_of::<u32>();
/// Word index of `Shadow::polling`.
const POLLING: usize = Shadow::POLLING_OFFSET / size_of::<u32>();

/// One shadow page. The device writes `polling` while the driver writes `tail`, so every access
/// is a single volatile 32-bit load or store: writing the 64-bit `Shadow` as a whole would
/// overwrite the device's word.
pub(crate) struct ShadowPage {
    mem: Coherent<[u32]>,
}

impl ShadowPage {
    /// A zeroed page (tail 0, polling 0: "ring the doorbell"). `dma_alloc_coherent` aligns a
    /// one-page allocation to a page, as spec §4a requires.
    pub(crate) fn new(dev: &Device<Bound>) -> Result<Self> {
        Ok(ShadowPage {
            mem: Coherent::<u32>::zeroed_slice(dev, WORDS, GFP_KERNEL)?,
        })
    }

    /// Bus address of the page (`SHADOW_BASE`, `CtxEntry::shadow`).
    pub(crate) fn dma_address(&self) -> DmaAddress {
        self.mem.dma_address()
    }

    /// The producer's rule (spec §4a) for a queue whose entries are written: publishes `tail`
    /// and returns whether the doorbell register must be written as well (`forced`: always).
    pub(crate) fn publish(&self, tail: u32, forced: bool) -> Result<bool> {
        // Step 1, a release store: the entries written before are visible to the device
        // before the tail that covers them.
        dma_mb(Write);
        kernel::io::io_write!(&self.mem, [try: TAIL], tail);
        // Step 2: store -> load. `mb`, not `smp_mb`: the other side is a bus master, which
        // `smp_mb` does not order against (a `!CONFIG_SMP` kernel makes it a compiler
        // barrier). Without it the load below may pass the store, and the producer and a
        // device going to sleep could each miss the other's word: a post nobody sees.
        mb(Full);
        // Step 3.
        let polling = kernel::io::io_read!(&self.mem, [try: POLLING]);
        Ok(Shadow::doorbell_needed(polling, forced))
    }

    /// Maps the page into `vma` (`MNIC_IOC_SHADOW`'s mmap, at file offset
    /// `abi::MMAP_SHADOW_OFFSET`; the caller checked offset and length). The mapping takes no
    /// page reference: the page must outlive it, which it does because the VMA holds the file,
    /// the file holds its context, and the context holds this page.
    pub(crate) fn mmap(&self, dev: &Device<Bound>, vma: &VmaNew) -> Result {
        // A private mapping would copy the page on the first write: the device would never
        // see the tails the process writes.
        if vma.flags() & flags::SHARED == 0 {
            return Err(EINVAL);
        }
        // Like the doorbell: not inherited across fork (the child has its own context), no
        // growing, never executable.
        vma.set_dontcopy();
        vma.set_dontexpand();
        vma.set_dontdump();
        vma.try_clear_mayexec()?;
        let raw = vma.as_ptr();
        // The kernel crate keeps `Device::as_raw` to itself; `Device` is `repr(transparent)`
        // over `Opaque<bindings::device>`, itself `repr(transparent)` over the C structure,
        // so the reference is a pointer to the `struct device`.
        let raw_dev = core::ptr::from_ref(dev)
            .cast::<kernel::bindings::device>()
            .cast_mut();
        // SAFETY: `raw` is the VMA being set up by this mmap (the mmap lock is held for
        // writing), `raw_dev` the bound device (see above) that allocated `self.mem`. `vm_pgoff` is the file offset in pages; the DMA API reads it as the offset
        // into the buffer, which is 0 here, so it is 0 for the call and restored after (a
        // shared mapping of a PFN range keeps no other use of it), which keeps the VMA where
        // it is in the file (unbind zaps the doorbell page at offset 0 only). `dma_mmap_attrs`
        // maps the coherent allocation `self.mem` of `dev`, one page, exactly the VMA's size
        // (checked by the caller); nothing in Rust aliases the user mapping.
        let ret = unsafe {
            let pgoff = (*raw).vm_pgoff;
            (*raw).vm_pgoff = 0;
            let ret = kernel::bindings::dma_mmap_attrs(
                raw_dev,
                raw,
                self.mem.as_mut_ptr().cast(),
                self.mem.dma_address(),
                self.mem.size(),
                0,
            );
            (*raw).vm_pgoff = pgoff;
            ret
        };
        kernel::error::to_result(ret)
    }
}
