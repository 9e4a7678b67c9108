//! Guest RAM as the device sees it: the DMA_MAP regions QEMU shared with a file
//! descriptor, mapped with vm-memory and published as `GuestMemoryAtomic` snapshots.
//!
//! Every device access goes through the checked helpers at the bottom of this file:
//! an address outside the mapped regions (or a write into a region QEMU mapped
//! read-only) is an [`AddrError`], never a host access. Ranges QEMU announced without
//! an fd (ROM) are recorded but never enter the map, so they are outside RAM too.
//!
//! A mapped file must not shrink under the device: an access to a page past the end of
//! the file is SIGBUS, which would kill the device. So `map_fd` takes only a memfd sealed
//! against shrinking (`F_SEAL_SHRINK`, which QEMU's `memory-backend-memfd` sets by
//! default), sealing it itself when the memfd allows it, and only a range the file holds.
//!
//! Bounded: at most [`MAX_REGIONS`] mapped regions and [`MAX_NO_FD`] ranges without fd.
//!
//! Drain: the data thread takes a snapshot (an `Arc`) per work step and drops it
//! before it sleeps. `unmap` swaps in the new map and then waits until no snapshot,
//! of any age, still holds a removed region (each region is an `Arc` shared by every
//! map that contains it), so a DMA_UNMAP reply never overtakes a DMA that still uses
//! the region. It waits as long as that takes: work steps are bounded, the longest
//! wait is an injected stall (`DEBUG_STALL_MS`, at most 60 s). (Memory safety does not
//! depend on the wait: a region is only munmapped when its last `Arc` goes.)

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::{
    Address, Bytes, FileOffset, GuestAddress, GuestAddressSpace, GuestMemoryAtomic,
    GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap, MmapRegion,
};

/// The guest memory map type of one snapshot.
pub type GuestMem = vm_memory::GuestMemoryMmap<()>;

/// Most DMA regions with a file descriptor the device keeps (DMA_MAP beyond is refused).
pub const MAX_REGIONS: usize = 1024;
/// Most ranges without a file descriptor (ROM) the device records.
pub const MAX_NO_FD: usize = 1024;

/// How often `unmap` says that it is still waiting for a DMA.
const DRAIN_WARN: Duration = Duration::from_secs(10);

/// A guest address the device may not access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("guest address {addr:#x} is outside DMA-able guest RAM")]
pub struct AddrError {
    /// The first offending address (or the start of the refused range).
    pub addr: u64,
}

/// Why a DMA_MAP region could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// Size or offset do not fit the host.
    #[error("region does not fit the host address space")]
    TooLarge,
    /// mmap of the fd failed.
    #[error("mmap: {0}")]
    Mmap(#[from] vm_memory::mmap::MmapRegionError),
    /// The range overlaps a region or range already recorded.
    #[error("overlaps an existing region")]
    Overlap,
    /// The fd is not a memfd sealed against shrinking, and cannot be sealed (a memfd
    /// created without `MFD_ALLOW_SEALING`, a plain file, not a file at all): it could
    /// shrink under the device.
    #[error("not a memfd that is or can be sealed against shrinking: {0}")]
    Shrinkable(io::Error),
    /// `offset + size` lies beyond the end of the file.
    #[error("file offset {offset:#x} + size {size:#x} is beyond the end of the file ({len:#x})")]
    Short {
        /// DMA_MAP offset.
        offset: u64,
        /// DMA_MAP size.
        size: u64,
        /// The file's size.
        len: u64,
    },
    /// The device keeps no more regions of this kind ([`MAX_REGIONS`], [`MAX_NO_FD`]).
    #[error("already {0} regions")]
    Full(usize),
}

/// Why a DMA_UNMAP was refused (nothing was removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the region at {start:#x} (size {len:#x}) crosses an edge of the range")]
pub struct UnmapError {
    /// Start of the region that would be cut.
    pub start: u64,
    /// Its size.
    pub len: u64,
}

/// The device's view of guest RAM, shared by the server (map/unmap) and the data
/// thread (snapshots).
pub struct GuestRam {
    map: GuestMemoryAtomic<GuestMem>,
    /// Ranges announced without an fd: recorded for diagnostics, never accessed.
    /// Lock order: `no_fd`, then the map's lock.
    no_fd: Mutex<Vec<(u64, u64)>>,
}

impl Default for GuestRam {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `[a, a + n)` and `[b, b + m)` overlap (ends saturate: nothing wraps).
fn overlaps(a: u64, n: u64, b: u64, m: u64) -> bool {
    a < b.saturating_add(m) && b < a.saturating_add(n)
}

/// Makes sure `file` cannot shrink: its seals include `F_SEAL_SHRINK`, added here if
/// the file allows it. Only memfds (and other shmem files created sealable) do.
fn seal_against_shrinking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl(F_GET_SEALS) on an fd we own; it touches no memory of ours.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(io::Error::last_os_error());
    }
    if seals & libc::F_SEAL_SHRINK != 0 {
        return Ok(());
    }
    // SAFETY: fcntl(F_ADD_SEALS) with an int argument on an fd we own.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl GuestRam {
    /// Empty guest RAM: every access is an address error.
    pub fn new() -> Self {
        GuestRam {
            map: GuestMemoryAtomic::new(GuestMem::default()),
            no_fd: Mutex::new(Vec::new()),
        }
    }

    /// Guest RAM backed by private anonymous memory at the given `(gpa, size)` ranges
    /// (unit tests, benches, the fuzz driver).
    pub fn anonymous(ranges: &[(u64, usize)]) -> Result<Self, MapError> {
        let ram = GuestRam::new();
        for &(gpa, size) in ranges {
            let region = MmapRegion::new(size)?;
            ram.insert(region, gpa)?;
        }
        Ok(ram)
    }

    /// The current map. Hold it for one work step only: `unmap` waits for it.
    pub fn snapshot(&self) -> Arc<GuestMem> {
        self.map.memory().into_inner()
    }

    /// Maps `size` bytes of `fd` at file `offset` as guest RAM at `iova`.
    /// `writable` is the DMA_MAP write flag; without it device writes are refused.
    ///
    /// `fd` must be a memfd sealed against shrinking, or one that can be sealed (it is
    /// sealed here), and must hold `[offset, offset + size)`: otherwise
    /// [`MapError::Shrinkable`] or [`MapError::Short`].
    pub fn map_fd(
        &self,
        iova: u64,
        size: u64,
        fd: OwnedFd,
        offset: u64,
        writable: bool,
    ) -> Result<(), MapError> {
        let file = File::from(fd);
        // Sealed first, measured second: the size cannot change in between.
        seal_against_shrinking(&file).map_err(MapError::Shrinkable)?;
        let file_len = file.metadata().map_err(MapError::Shrinkable)?.len();
        if offset.checked_add(size).is_none_or(|end| end > file_len) {
            return Err(MapError::Short {
                offset,
                size,
                len: file_len,
            });
        }
        let len = usize::try_from(size).map_err(|_| MapError::TooLarge)?;
        if iova.checked_add(size).is_none() || i64::try_from(offset).is_err() {
            return Err(MapError::TooLarge);
        }
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        let region = MmapRegion::build(
            Some(FileOffset::new(file, offset)),
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
        )?;
        self.insert(region, iova)
    }

    fn insert(&self, region: MmapRegion<()>, gpa: u64) -> Result<(), MapError> {
        let region = GuestRegionMmap::new(region, GuestAddress(gpa)).ok_or(MapError::TooLarge)?;
        let no_fd = lock(&self.no_fd);
        if no_fd
            .iter()
            .any(|&(a, n)| overlaps(a, n, gpa, region.len()))
        {
            return Err(MapError::Overlap);
        }
        let guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.map.memory();
        if cur.num_regions() >= MAX_REGIONS {
            return Err(MapError::Full(MAX_REGIONS));
        }
        let new = cur
            .insert_region(Arc::new(region))
            .map_err(|_| MapError::Overlap)?;
        guard.replace(new);
        Ok(())
    }

    /// Records a range announced without an fd: never DMA-able. Refused when it overlaps
    /// a recorded region or range, or when [`MAX_NO_FD`] ranges are recorded.
    pub fn map_none(&self, iova: u64, size: u64) -> Result<(), MapError> {
        let mut no_fd = lock(&self.no_fd);
        let mapped = self
            .snapshot()
            .iter()
            .any(|r| overlaps(r.start_addr().0, r.len(), iova, size));
        if mapped || no_fd.iter().any(|&(a, n)| overlaps(a, n, iova, size)) {
            return Err(MapError::Overlap);
        }
        if no_fd.len() >= MAX_NO_FD {
            return Err(MapError::Full(MAX_NO_FD));
        }
        no_fd.push((iova, size));
        Ok(())
    }

    /// Removes every region and range inside `[iova, iova + size)` and returns once no
    /// device access can still use them; refused (nothing removed) if a region or range
    /// crosses an edge of it. Returns how many mapped regions went.
    pub fn unmap(&self, iova: u64, size: u64) -> Result<usize, UnmapError> {
        self.remove(Some((iova, size)))
    }

    /// Removes every region and range (DMA_UNMAP with `VFIO_DMA_UNMAP_FLAG_ALL`), once no
    /// device access can still use them. Returns how many mapped regions went.
    pub fn unmap_all(&self) -> usize {
        self.remove(None).unwrap_or(0)
    }

    fn remove(&self, range: Option<(u64, u64)>) -> Result<usize, UnmapError> {
        // Inside the range, outside it, or cut by it (refused).
        let inside = |a: u64, n: u64| -> Result<bool, UnmapError> {
            let Some((iova, size)) = range else {
                return Ok(true);
            };
            if !overlaps(a, n, iova, size) {
                Ok(false)
            } else if a >= iova && a.saturating_add(n) <= iova.saturating_add(size) {
                Ok(true)
            } else {
                Err(UnmapError { start: a, len: n })
            }
        };
        let mut no_fd = lock(&self.no_fd);
        let guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.snapshot();
        let mut doomed = Vec::new();
        for r in old.iter() {
            if inside(r.start_addr().0, r.len())? {
                doomed.push((r.start_addr(), r.len()));
            }
        }
        for &(a, n) in no_fd.iter() {
            inside(a, n)?;
        }
        no_fd.retain(|&(a, n)| inside(a, n) == Ok(false));
        drop(no_fd);
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut new = (*old).clone();
        let mut removed = Vec::with_capacity(doomed.len());
        for (base, len) in doomed {
            if let Ok((n, r)) = new.remove_region(base, len) {
                new = n;
                removed.push(r);
            }
        }
        // `replace` consumes the lock guard: the map lock ends here.
        guard.replace(new);
        drop(old);
        // Drain: every map that holds a removed region holds an `Arc` of it; the data
        // thread drops its snapshot at the end of every work step.
        let t = Instant::now();
        let mut said = t;
        let mut nap = Duration::from_micros(20);
        while removed.iter().any(|r| Arc::strong_count(r) > 1) {
            if said.elapsed() >= DRAIN_WARN {
                said = Instant::now();
                tracing::warn!(waited = ?t.elapsed(), "DMA_UNMAP: a DMA still uses the region");
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
        Ok(removed.len())
    }

    /// Number of recorded regions: (mapped, without fd).
    pub fn regions(&self) -> (usize, usize) {
        let no_fd = lock(&self.no_fd).len();
        (self.snapshot().num_regions(), no_fd)
    }
}

/// Checks that `[gpa, gpa + len)` is mapped guest RAM (writable if `write`).
pub fn check(mem: &GuestMem, gpa: u64, len: u64, write: bool) -> Result<(), AddrError> {
    let err = AddrError { addr: gpa };
    let end = gpa.checked_add(len).ok_or(err)?;
    let mut a = gpa;
    while a < end {
        let r = mem
            .find_region(GuestAddress(a))
            .ok_or(AddrError { addr: a })?;
        if write && r.prot() & libc::PROT_WRITE == 0 {
            return Err(AddrError { addr: a });
        }
        // Regions never wrap (vm-memory checks base + len at creation).
        a = r.start_addr().unchecked_add(r.len()).0;
    }
    Ok(())
}

/// Reads guest RAM into `buf` (volatile copies: the guest may write concurrently).
pub fn read(mem: &GuestMem, gpa: u64, buf: &mut [u8]) -> Result<(), AddrError> {
    check(mem, gpa, buf.len() as u64, false)?;
    mem.read_slice(buf, GuestAddress(gpa))
        .map_err(|_| AddrError { addr: gpa })
}

/// Writes `buf` to guest RAM.
pub fn write(mem: &GuestMem, gpa: u64, buf: &[u8]) -> Result<(), AddrError> {
    check(mem, gpa, buf.len() as u64, true)?;
    mem.write_slice(buf, GuestAddress(gpa))
        .map_err(|_| AddrError { addr: gpa })
}

/// One aligned 64-bit load (table entries: the driver updates them with single
/// 64-bit stores, so a load sees either the old or the new entry).
pub fn load_u64(mem: &GuestMem, gpa: u64) -> Result<u64, AddrError> {
    if !gpa.is_multiple_of(8) {
        return Err(AddrError { addr: gpa });
    }
    check(mem, gpa, 8, false)?;
    mem.load::<u64>(GuestAddress(gpa), Ordering::Acquire)
        .map_err(|_| AddrError { addr: gpa })
}

/// One aligned 64-bit store, ordered after every earlier access (the SYNC value).
pub fn store_u64(mem: &GuestMem, gpa: u64, v: u64) -> Result<(), AddrError> {
    if !gpa.is_multiple_of(8) {
        return Err(AddrError { addr: gpa });
    }
    check(mem, gpa, 8, true)?;
    mem.store(v, GuestAddress(gpa), Ordering::SeqCst)
        .map_err(|_| AddrError { addr: gpa })
}

/// One aligned 32-bit load, sequentially consistent (a shadow page's `tail`: the
/// device's sleep handshake orders it after its own `polling` store, spec §4a).
pub fn load_u32(mem: &GuestMem, gpa: u64) -> Result<u32, AddrError> {
    if !gpa.is_multiple_of(4) {
        return Err(AddrError { addr: gpa });
    }
    check(mem, gpa, 4, false)?;
    mem.load::<u32>(GuestAddress(gpa), Ordering::SeqCst)
        .map_err(|_| AddrError { addr: gpa })
}

/// One aligned 32-bit store, sequentially consistent (a shadow page's `polling`).
pub fn store_u32(mem: &GuestMem, gpa: u64, v: u32) -> Result<(), AddrError> {
    if !gpa.is_multiple_of(4) {
        return Err(AddrError { addr: gpa });
    }
    check(mem, gpa, 4, true)?;
    mem.store(v, GuestAddress(gpa), Ordering::SeqCst)
        .map_err(|_| AddrError { addr: gpa })
}

/// A release store of the byte at `gpa` (event phase flags: written after the entry).
pub fn store_u8(mem: &GuestMem, gpa: u64, v: u8) -> Result<(), AddrError> {
    check(mem, gpa, 1, true)?;
    mem.store(v, GuestAddress(gpa), Ordering::Release)
        .map_err(|_| AddrError { addr: gpa })
}

/// A release store of the aligned u16 at `gpa` (completion phase flags).
pub fn store_u16(mem: &GuestMem, gpa: u64, v: u16) -> Result<(), AddrError> {
    if !gpa.is_multiple_of(2) {
        return Err(AddrError { addr: gpa });
    }
    check(mem, gpa, 2, true)?;
    mem.store(v, GuestAddress(gpa), Ordering::Release)
        .map_err(|_| AddrError { addr: gpa })
}

/// Copies `len` bytes between two guest ranges (each checked). Uses one host
/// slice per side when each lies in one region, else bounces through `scratch`.
pub fn copy(
    mem: &GuestMem,
    src: u64,
    dst: u64,
    len: usize,
    scratch: &mut Vec<u8>,
) -> Result<(), AddrError> {
    check(mem, src, len as u64, false)?;
    check(mem, dst, len as u64, true)?;
    let s = mem
        .to_region_addr(GuestAddress(src))
        .and_then(|(r, a)| r.get_slice(a, len).ok());
    let d = mem
        .to_region_addr(GuestAddress(dst))
        .and_then(|(r, a)| r.get_slice(a, len).ok());
    if let (Some(s), Some(d)) = (s, d) {
        s.copy_to_volatile_slice(d);
        return Ok(());
    }
    scratch.resize(len, 0);
    read(mem, src, scratch)?;
    write(mem, dst, scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let ram = GuestRam::anonymous(&[(0, 0x10000), (0x20000, 0x1000)]).unwrap();
        let m = ram.snapshot();
        assert!(check(&m, 0, 0x10000, true).is_ok());
        assert_eq!(
            check(&m, 0xfff8, 16, false),
            Err(AddrError { addr: 0x10000 })
        );
        assert!(check(&m, u64::MAX - 3, 8, false).is_err());
        assert!(load_u64(&m, 0x20000).is_ok());
        assert!(load_u64(&m, 0x20004).is_err(), "misaligned");
        assert!(load_u64(&m, 0x30000).is_err());
        store_u64(&m, 0x20ff8, 0x1122).unwrap();
        assert_eq!(load_u64(&m, 0x20ff8).unwrap(), 0x1122);
        let mut b = [0u8; 16];
        assert!(read(&m, 0x20ff8, &mut b).is_err(), "crosses the end of RAM");
        write(&m, 0x100, b"hello").unwrap();
        let mut s = Vec::new();
        copy(&m, 0x100, 0x20000, 5, &mut s).unwrap();
        let mut o = [0u8; 5];
        read(&m, 0x20000, &mut o).unwrap();
        assert_eq!(&o, b"hello");
    }

    #[test]
    fn unmap_removes_and_drains() {
        let ram = Arc::new(GuestRam::anonymous(&[(0, 0x1000), (0x1000, 0x1000)]).unwrap());
        let snap = ram.snapshot();
        let r2 = ram.clone();
        let t = std::thread::spawn(move || r2.unmap(0x1000, 0x1000));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "unmap must wait for the snapshot");
        // The old snapshot still reaches the region.
        assert!(check(&snap, 0x1000, 8, false).is_ok());
        drop(snap);
        assert_eq!(t.join().unwrap(), Ok(1));
        let m = ram.snapshot();
        assert!(check(&m, 0x1000, 8, false).is_err());
        assert!(check(&m, 0, 8, false).is_ok());
        assert_eq!(ram.regions(), (1, 0));
    }

    /// The data thread may still hold a snapshot older than the newest map (taken before
    /// a DMA_MAP): the region is in it too, and DMA_UNMAP must wait for it.
    #[test]
    fn unmap_waits_for_every_snapshot() {
        let ram = Arc::new(GuestRam::anonymous(&[(0, 0x1000)]).unwrap());
        let old = ram.snapshot();
        ram.insert(MmapRegion::new(0x1000).unwrap(), 0x1000)
            .unwrap();
        let r2 = ram.clone();
        let t = std::thread::spawn(move || {
            let _ = r2.unmap(0, 0x1000);
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !t.is_finished(),
            "unmap returned while an older snapshot still reaches the region"
        );
        assert!(check(&old, 0, 8, true).is_ok());
        drop(old);
        t.join().unwrap();
        assert!(check(&ram.snapshot(), 0, 8, false).is_err());
    }

    #[test]
    fn memfd_region_is_shared() {
        let fd = crate::testkit::memfd::memfd(0x2000);
        let dup = fd.try_clone().unwrap();
        let ram = GuestRam::new();
        ram.map_fd(0x10000, 0x1000, dup, 0x1000, true).unwrap();
        ram.map_none(0xc0000, 0x1000).unwrap();
        let m = ram.snapshot();
        store_u64(&m, 0x10008, 42).unwrap();
        // Visible through the fd at file offset 0x1008.
        let f = File::from(fd);
        let mut b = [0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, 0x1008).unwrap();
        assert_eq!(u64::from_le_bytes(b), 42);
        assert!(
            check(&m, 0xc0000, 1, false).is_err(),
            "fd-less ROM is not DMA-able"
        );
        assert_eq!(ram.regions(), (1, 1));
    }

    #[test]
    fn read_only_region_refuses_writes() {
        let fd = crate::testkit::memfd::memfd(0x1000);
        let ram = GuestRam::new();
        ram.map_fd(0, 0x1000, fd, 0, false).unwrap();
        let m = ram.snapshot();
        assert!(load_u64(&m, 0).is_ok());
        assert!(store_u64(&m, 0, 1).is_err());
    }
}
