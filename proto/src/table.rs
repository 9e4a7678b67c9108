//! [`TranslationTable`]: a context's four-level translation table (spec §6), built by the
//! prototyping driver in its own DMA memory. It maps the context's virtual addresses
//! (whatever the driver chooses) to IOVAs of the arena, one 4 KiB leaf at a time; table
//! pages come from the arena, zeroed, as they are needed.

use std::rc::Rc;

use mnic_abi::pte;

use crate::dma::DmaArena;
use crate::error::Result;

/// A translation table tree in DMA memory.
pub struct TranslationTable {
    mem: Rc<DmaArena>,
    root: u64,
}

impl TranslationTable {
    /// An empty tree (a zeroed root page).
    pub fn new(mem: Rc<DmaArena>) -> Result<Self> {
        let root = mem.alloc_pages(1)?;
        Ok(Self { mem, root })
    }

    /// IOVA of the level-4 table (`CtxEntry::root`).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// IOVA of the entry for `va` at `level`, creating the tables above it if `create`.
    fn entry(&self, va: u64, level: u32, create: bool) -> Result<Option<u64>> {
        let mut table = self.root;
        for l in (level + 1..=pte::LEVELS).rev() {
            let at = table + 8 * pte::index(va, l) as u64;
            let e = self.mem.read_u64(at);
            table = if e & pte::P != 0 {
                e & pte::ADDR_MASK
            } else if create {
                let t = self.mem.alloc_pages(1)?;
                self.mem.write_u64(at, pte::table(t));
                t
            } else {
                return Ok(None);
            };
        }
        Ok(Some(table + 8 * pte::index(va, level) as u64))
    }

    /// Maps the 4 KiB page at `va` to the page at `iova`.
    pub fn map_page(&self, va: u64, iova: u64, writable: bool) -> Result<()> {
        let at = self.entry(va, 1, true)?.expect("created");
        self.mem.write_u64(at, pte::leaf_4k(iova, writable));
        Ok(())
    }

    /// Maps `[va, va + len)` to `[iova, iova + len)` with 4 KiB leaves.
    pub fn map(&self, va: u64, iova: u64, len: u64, writable: bool) -> Result<()> {
        for off in (0..len).step_by(pte::PAGE_SIZE as usize) {
            self.map_page(va + off, iova + off, writable)?;
        }
        Ok(())
    }

    /// Clears the 4 KiB leaf of `va` (the device still holds what its TLB cached: an
    /// `INVALIDATE_RANGE` and a `SYNC` take that away).
    pub fn unmap_page(&self, va: u64) -> Result<()> {
        if let Some(at) = self.entry(va, 1, false)? {
            self.mem.write_u64(at, 0);
        }
        Ok(())
    }

    /// The leaf of `va`, 0 if none.
    pub fn leaf(&self, va: u64) -> Result<u64> {
        Ok(self
            .entry(va, 1, false)?
            .map_or(0, |at| self.mem.read_u64(at)))
    }
}
