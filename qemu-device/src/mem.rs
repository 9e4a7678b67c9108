//! Guest memory as the device sees it: the DMA maps the vfio-user peer gave it
//! (spec §1b), published as immutable views.
//!
//! A DMA map says: DMA addresses `[iova, iova + size)` are the bytes `[offset, offset +
//! size)` of a file the peer shared (a memfd of guest RAM). Without an IOMMU QEMU sends a
//! few large maps at boot; behind an emulated IOMMU one per mapped IOVA page. The maps
//! live in an interval map ([`intervals`]); each distinct file is mapped once, whole
//! ([`file`]); every device access goes through the checked helpers of [`access`]: an
//! address in no map (or a write into a read-only map) is an [`AddrError`], never a
//! host access. Ranges QEMU announced without an fd (ROM) are recorded but never
//! enter the maps, so they are not DMA-able.
//!
//! Bounded: at most [`MAX_MAPS`] maps, [`file::MAX_FILES`] files and [`MAX_NO_FD`]
//! ranges without fd.
//!
//! Drain: the data thread takes a view (an `Arc`) per work step and drops it before it
//! sleeps. `unmap` publishes the new view and then waits until every older view is gone,
//! so a DMA_UNMAP reply never overtakes a DMA that still uses a removed map. It waits as
//! long as that takes: work steps are bounded, the longest wait is an injected stall
//! (`DEBUG_STALL_MS`, at most 60 s). (Memory safety does not depend on the wait: a file
//! mapping is only unmapped when the last map and view holding it are gone.)

pub mod access;
pub mod error;
pub mod file;
pub mod intervals;
pub mod view;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use access::{
    check, copy, load_u32, load_u64, read, store_u16, store_u32, store_u64, store_u8, write,
};
pub use error::{AddrError, MapError, UnmapError};
use file::{FileMap, Files};
use intervals::Intervals;
pub use view::{GuestMem, Target};

/// Most DMA maps with a file descriptor the device keeps (DMA_MAP beyond is refused):
/// 256 MiB of guest RAM in 4 KiB IOMMU pages. The most QEMU's vfio-user client accepts
/// as `max_dma_maps` (it refuses a server that offers more: the default map limit of
/// the kernel's VFIO type1 IOMMU, whose semantics vfio-user follows).
pub const MAX_MAPS: usize = 65535;
/// Most ranges without a file descriptor (ROM) the device records.
pub const MAX_NO_FD: usize = 1024;

/// How often `unmap` says that it is still waiting for a DMA.
const DRAIN_WARN: Duration = Duration::from_secs(10);

/// What the socket thread edits: the maps, the files, the ranges without fd, and the
/// views published so far that may still be in use.
#[derive(Default)]
struct State {
    maps: Intervals<Target>,
    files: Files,
    /// Ranges announced without an fd: recorded for diagnostics, never accessed.
    no_fd: Intervals<()>,
    /// Every published view that was alive at the last publication.
    views: Vec<Weak<GuestMem>>,
}

/// The device's view of guest memory, shared by the server (map/unmap) and the data
/// thread (views).
pub struct GuestRam {
    /// Shared with every view it publishes (weakly), so that a refused access can look
    /// at the newest view (`GuestMem::newer`).
    current: Arc<ArcSwap<GuestMem>>,
    state: Mutex<State>,
}

impl Default for GuestRam {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GuestRam {
    /// No DMA maps: every access is an address error.
    pub fn new() -> Self {
        GuestRam {
            current: Arc::new(ArcSwap::from_pointee(GuestMem::default())),
            state: Mutex::new(State::default()),
        }
    }

    /// Guest RAM backed by private anonymous memory at the given `(address, size)` ranges
    /// (unit tests, benches, the fuzz driver).
    pub fn anonymous(ranges: &[(u64, usize)]) -> Result<Self, MapError> {
        let ram = GuestRam::new();
        for &(addr, size) in ranges {
            ram.insert(addr, size as u64, FileMap::anonymous(size)?, 0, true)?;
        }
        Ok(ram)
    }

    /// The current view. Hold it for one work step only: `unmap` waits for it.
    #[inline]
    pub fn snapshot(&self) -> Arc<GuestMem> {
        self.current.load_full()
    }

    /// Maps `size` bytes of `fd` at file `offset` at DMA address `iova`. `writable` is
    /// the DMA_MAP write flag; without it device writes are refused.
    ///
    /// `fd` must be a memfd sealed against shrinking, or one that can be sealed (it is
    /// sealed here), and must hold `[offset, offset + size)`: otherwise
    /// [`MapError::Shrinkable`] or [`MapError::Short`]. A second fd of a file already
    /// mapped re-uses that mapping (and is closed).
    pub fn map_fd(
        &self,
        iova: u64,
        size: u64,
        fd: OwnedFd,
        offset: u64,
        writable: bool,
    ) -> Result<(), MapError> {
        if iova.checked_add(size).is_none() || size == 0 {
            return Err(MapError::TooLarge);
        }
        let mut st = lock(&self.state);
        // Cheap refusals before the file is looked at.
        Self::room(&st, iova, size)?;
        let file = st.files.get(File::from(fd), offset, size, writable)?;
        drop(st);
        self.insert(iova, size, file, offset, writable)
    }

    /// Refuses a map at `[iova, iova + size)` that overlaps one recorded, or one more
    /// than [`MAX_MAPS`].
    fn room(st: &State, iova: u64, size: u64) -> Result<(), MapError> {
        let end = iova.saturating_add(size);
        if st.maps.overlaps(iova, end) || st.no_fd.overlaps(iova, end) {
            return Err(MapError::Overlap);
        }
        if st.maps.len() >= MAX_MAPS {
            return Err(MapError::Full(MAX_MAPS));
        }
        Ok(())
    }

    fn insert(
        &self,
        iova: u64,
        size: u64,
        file: Arc<FileMap>,
        offset: u64,
        writable: bool,
    ) -> Result<(), MapError> {
        let end = iova.checked_add(size).ok_or(MapError::TooLarge)?;
        if offset.checked_add(size).is_none_or(|e| e > file.len()) {
            return Err(MapError::TooLarge);
        }
        let mut st = lock(&self.state);
        Self::room(&st, iova, size)?;
        let target = Target {
            file,
            offset,
            writable,
        };
        st.maps
            .insert(iova, end, target)
            .map_err(|_| MapError::Overlap)?;
        self.publish(&mut st);
        Ok(())
    }

    /// Makes the maps of `st` the current view.
    fn publish(&self, st: &mut State) {
        let view =
            Arc::new(GuestMem::new(st.maps.clone()).published_at(Arc::downgrade(&self.current)));
        st.views.retain(|w| w.strong_count() > 0);
        st.views.push(Arc::downgrade(&view));
        self.current.store(view);
    }

    /// Records a range announced without an fd: never DMA-able. Refused when it overlaps
    /// a recorded map or range, or when [`MAX_NO_FD`] ranges are recorded.
    pub fn map_none(&self, iova: u64, size: u64) -> Result<(), MapError> {
        let end = iova.checked_add(size).ok_or(MapError::TooLarge)?;
        let mut st = lock(&self.state);
        if st.maps.overlaps(iova, end) || st.no_fd.overlaps(iova, end) {
            return Err(MapError::Overlap);
        }
        if st.no_fd.len() >= MAX_NO_FD {
            return Err(MapError::Full(MAX_NO_FD));
        }
        st.no_fd
            .insert(iova, end, ())
            .map_err(|_| MapError::Overlap)
    }

    /// Removes every map and range inside `[iova, iova + size)` and returns once no
    /// device access can still use them; refused (nothing removed) if a map or range
    /// crosses an edge of it. Returns how many maps went.
    pub fn unmap(&self, iova: u64, size: u64) -> Result<usize, UnmapError> {
        self.remove(Some((iova, iova.saturating_add(size))))
    }

    /// Removes every map and range (DMA_UNMAP with `VFIO_DMA_UNMAP_FLAG_ALL`), once no
    /// device access can still use them. Returns how many maps went.
    pub fn unmap_all(&self) -> usize {
        self.remove(None).unwrap_or(0)
    }

    fn remove(&self, range: Option<(u64, u64)>) -> Result<usize, UnmapError> {
        let cut = |(start, end): (u64, u64)| UnmapError {
            start,
            len: end - start,
        };
        let mut st = lock(&self.state);
        let removed = match range {
            Some((start, end)) => {
                let maps = st.maps.inside(start, end).map_err(cut)?;
                let roms = st.no_fd.inside(start, end).map_err(cut)?;
                for s in roms {
                    st.no_fd.remove(s);
                }
                for &s in &maps {
                    st.maps.remove(s);
                }
                maps.len()
            }
            None => {
                st.no_fd = Intervals::default();
                std::mem::take(&mut st.maps).len()
            }
        };
        if removed == 0 {
            return Ok(0);
        }
        self.publish(&mut st);
        // Every view but the one just published may hold a removed map.
        let mut older: Vec<Weak<GuestMem>> = st.views.clone();
        older.pop();
        drop(st);
        // Drain: the data thread drops its view at the end of every work step.
        let t = Instant::now();
        let mut said = t;
        let mut nap = Duration::from_micros(20);
        while older.iter().any(|w| w.strong_count() > 0) {
            if said.elapsed() >= DRAIN_WARN {
                said = Instant::now();
                tracing::warn!(waited = ?t.elapsed(), "DMA_UNMAP: a DMA still uses the map");
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
        Ok(removed)
    }

    /// Number of recorded maps: (with fd, without fd).
    pub fn regions(&self) -> (usize, usize) {
        let st = lock(&self.state);
        (st.maps.len(), st.no_fd.len())
    }

    /// Number of host file mappings alive.
    pub fn files(&self) -> usize {
        lock(&self.state).files.alive()
    }
}

#[cfg(test)]
mod tests;
