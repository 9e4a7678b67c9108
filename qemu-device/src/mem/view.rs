//! One immutable view of the DMA maps, and address resolution through it: which map
//! holds a DMA address, and where its bytes are in the host. The data thread makes every
//! access of a work step through one view ([`crate::mem::access`]).

use std::sync::Arc;

use vm_memory::VolatileSlice;

use crate::mem::error::AddrError;
use crate::mem::file::FileMap;
use crate::mem::intervals::Intervals;

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
#[derive(Clone, Default)]
pub struct GuestMem {
    maps: Intervals<Target>,
}

impl GuestMem {
    /// The view of `maps`.
    pub fn new(maps: Intervals<Target>) -> Self {
        GuestMem { maps }
    }
}

impl GuestMem {
    /// The host bytes of `[addr, addr + len)` if they lie in one map, writable if
    /// `write`; `None` when not (the range may still be valid across several maps).
    #[inline]
    pub fn one_map(&self, addr: u64, len: usize, write: bool) -> Option<VolatileSlice<'_>> {
        let (start, iv) = self.maps.find(addr)?;
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
            let (_, iv) = self.maps.find(a).ok_or(AddrError { addr: a })?;
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
            let (start, iv) = self.maps.find(a).ok_or(AddrError { addr: a })?;
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
        self.maps.find(addr).map(|(_, iv)| iv.end - addr)
    }
}
