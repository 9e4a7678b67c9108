//! One immutable view of the DMA maps, and address resolution through it: which map
//! holds a DMA address, and where its bytes are in the host. The data thread makes every
//! access of a work step through one view ([`crate::mem::access`]).

use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;

use vm_memory::VolatileSlice;

use crate::mem::error::AddrError;
use crate::mem::file::FileMap;
use crate::mem::intervals::{Interval, Intervals};

/// Where one DMA map's bytes are.
#[derive(Clone)]
pub struct Target {
    /// The file's mapping.
    pub file: Arc<FileMap>,
    /// Offset in the file of the map's first byte.
    pub offset: u64,
    /// The device may write (`VFIO_DMA_MAP_FLAG_WRITE`).
    pub writable: bool,
}

/// One immutable view of the DMA maps: what a work step of the data thread uses.
///
/// Without an IOMMU there are a handful of maps, and every DMA looks one up: the view
/// then also keeps them as a sorted array, searched with one binary search over
/// contiguous memory (as fast as the single-region case can be), instead of a descent
/// through the persistent tree's nodes. Behind an IOMMU (thousands of maps) the tree
/// serves the lookups, and building the array per change would cost O(n).
#[derive(Clone, Default)]
pub struct GuestMem {
    maps: Intervals<Target>,
    /// The maps in address order when there are at most [`FLAT_MAX`].
    flat: Option<Box<[FlatMap]>>,
    /// Where the newest view is published (`GuestRam`), for [`GuestMem::newer`]; weak, so
    /// views and the publication point do not keep each other alive.
    latest: Weak<ArcSwap<GuestMem>>,
}

/// One map of the sorted array: its start and the rest.
type FlatMap = (u64, Interval<Target>);

/// Most maps a view also keeps as a sorted array.
pub const FLAT_MAX: usize = 32;

impl GuestMem {
    /// The view of `maps`.
    pub fn new(maps: Intervals<Target>) -> Self {
        let flat =
            (maps.len() <= FLAT_MAX).then(|| maps.iter().map(|(s, iv)| (s, iv.clone())).collect());
        GuestMem {
            maps,
            flat,
            latest: Weak::new(),
        }
    }

    /// This view, published at `latest` (whose newest view [`GuestMem::newer`] finds).
    pub fn published_at(self, latest: Weak<ArcSwap<GuestMem>>) -> Self {
        GuestMem { latest, ..self }
    }

    /// The newest published view, if it is not this one: a DMA_MAP may have been published
    /// after this view was taken (spec §1b, "a map is seen by what follows it").
    pub fn newer(&self) -> Option<Arc<GuestMem>> {
        let newest = self.latest.upgrade()?.load_full();
        (!std::ptr::eq(Arc::as_ptr(&newest), self)).then_some(newest)
    }

    /// The map that holds `addr`, as (start, interval).
    #[inline]
    fn find(&self, addr: u64) -> Option<(u64, &Interval<Target>)> {
        let Some(flat) = &self.flat else {
            return self.maps.find(addr);
        };
        // The first map starting after `addr`; the one before it is the candidate.
        let i = flat.partition_point(|(s, _)| *s <= addr);
        let (s, iv) = flat.get(i.checked_sub(1)?)?;
        (addr < iv.end).then_some((*s, iv))
    }
}

impl GuestMem {
    /// The host bytes of `[addr, addr + len)` if they lie in one map, writable if
    /// `write`; `None` when not (the range may still be valid across several maps).
    #[inline]
    pub fn one_map(&self, addr: u64, len: usize, write: bool) -> Option<VolatileSlice<'_>> {
        let (start, iv) = self.find(addr)?;
        let t = &iv.value;
        if (write && !t.writable) || (len as u64) > iv.end - addr {
            return None;
        }
        t.file.slice(t.offset + (addr - start), len)
    }

    /// Checks `[addr, addr + len)` map by map: `Err` at the first address in no map (or
    /// in a read-only map for a write).
    pub fn check(&self, addr: u64, len: u64, write: bool) -> Result<(), AddrError> {
        let end = addr.checked_add(len).ok_or(AddrError { addr })?;
        let mut a = addr;
        while a < end {
            let (_, iv) = self.find(a).ok_or(AddrError { addr: a })?;
            if write && !iv.value.writable {
                return Err(AddrError { addr: a });
            }
            a = iv.end;
        }
        Ok(())
    }

    /// Hands `[addr, addr + len)` to `f` map by map as (host bytes, offset in the range).
    /// The range must have passed [`Self::check`].
    pub fn each_map(
        &self,
        addr: u64,
        len: usize,
        mut f: impl FnMut(VolatileSlice<'_>, usize),
    ) -> Result<(), AddrError> {
        let mut off = 0usize;
        while off < len {
            let a = addr + off as u64;
            let (start, iv) = self.find(a).ok_or(AddrError { addr: a })?;
            let n = ((iv.end - a) as usize).min(len - off);
            let t = &iv.value;
            let s = t
                .file
                .slice(t.offset + (a - start), n)
                .ok_or(AddrError { addr: a })?;
            f(s, off);
            off += n;
        }
        Ok(())
    }

    /// Bytes from `addr` to the end of the map that holds it.
    #[inline]
    pub fn room(&self, addr: u64) -> Option<u64> {
        self.find(addr).map(|(_, iv)| iv.end - addr)
    }
}
