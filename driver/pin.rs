// SPDX-License-Identifier: GPL-2.0
//! The pinned baseline (`REG_PINNED`): what a classic NIC does, kept only to measure what it
//! costs. Every page of the registration is pinned with `pin_user_pages_fast(FOLL_LONGTERM)`
//! and stays pinned until deregistration, so it can be neither swapped out nor migrated.
//!
//! The leaves of a pinned registration are filled like any other (a prefetch at registration),
//! so the pages are mapped through the DMA API there (`dma_map.rs`), and deregistration unmaps
//! them behind its SYNC before these pins are dropped: a page is never unpinned while mapped.
//!
//! The kernel crate has no abstraction for `pin_user_pages` yet; this is the FFI boundary.

use kernel::{bindings, prelude::*};

/// Pages pinned per `pin_user_pages_fast` call (bounds the temporary pointer array).
const CHUNK: usize = 512;

/// Pinned pages, unpinned on drop.
pub(crate) struct PinnedPages {
    pages: KVec<*mut bindings::page>,
}

// SAFETY: the pointers are only handed back to `unpin_user_pages`, which may run on any CPU
// and thread; nothing dereferences them in Rust.
unsafe impl Send for PinnedPages {}
// SAFETY: `&PinnedPages` gives no access to the pointers.
unsafe impl Sync for PinnedPages {}

impl PinnedPages {
    /// Pins `npages` pages of the caller's address space from `start` (page aligned). Must be
    /// called from the process that owns the memory (it uses `current`'s mm).
    pub(crate) fn pin(start: u64, npages: usize, write: bool) -> Result<Self> {
        let mut pages = KVec::with_capacity(npages, GFP_KERNEL)?;
        let flags = bindings::FOLL_LONGTERM | if write { bindings::FOLL_WRITE } else { 0 };
        let mut this = PinnedPages { pages: KVec::new() };
        while pages.len() < npages {
            let want = (npages - pages.len()).min(CHUNK);
            let addr = start + (pages.len() as u64) * kernel::page::PAGE_SIZE as u64;
            let spare = pages.spare_capacity_mut();
            // SAFETY: `spare` has room for at least `want` page pointers (capacity `npages`),
            // which is what the call writes at most; `addr` is a user address that the
            // function checks itself; it pins in `current`'s mm.
            let got = unsafe {
                bindings::pin_user_pages_fast(
                    addr as _,
                    want as _,
                    flags as _,
                    spare.as_mut_ptr().cast(),
                )
            };
            if got <= 0 {
                // Unpin what was pinned so far (through `this`'s drop).
                this.pages = pages;
                return Err(if got < 0 {
                    Error::from_errno(got)
                } else {
                    EFAULT
                });
            }
            // SAFETY: the call initialised the first `got` slots of the spare capacity.
            unsafe { pages.inc_len(got as usize) };
        }
        this.pages = pages;
        Ok(this)
    }

    /// Number of pinned pages.
    pub(crate) fn len(&self) -> usize {
        self.pages.len()
    }
}

impl Drop for PinnedPages {
    fn drop(&mut self) {
        if self.pages.is_empty() {
            return;
        }
        // SAFETY: every pointer was returned by a successful `pin_user_pages_fast` and is
        // unpinned exactly once, here.
        unsafe { bindings::unpin_user_pages(self.pages.as_mut_ptr(), self.pages.len() as _) };
    }
}
