//! Guest RAM as the device sees it: the DMA_MAP regions QEMU shared with a file
//! descriptor, mapped with vm-memory and published as `GuestMemoryAtomic` snapshots.
//!
//! Every device access goes through the checked helpers at the bottom of this file:
//! an address outside the mapped regions (or a write into a region QEMU mapped
//! read-only) is an [`AddrError`], never a host access. Ranges QEMU announced without
//! an fd (ROM) are recorded but never enter the map, so they are outside RAM too.
//!
//! Drain: the data thread takes a snapshot (an `Arc`) per work step and drops it
//! before it sleeps. `unmap` swaps in the new map and then waits until it holds the
//! last reference to the old one, so a DMA_UNMAP reply never overtakes a DMA that
//! still uses the region. (Memory safety does not depend on the wait: a region is
//! only munmapped when its last `Arc` goes.)

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{
    Address, Bytes, FileOffset, GuestAddress, GuestAddressSpace, GuestMemoryAtomic,
    GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap, MmapRegion,
};

/// The guest memory map type of one snapshot.
pub type GuestMem = vm_memory::GuestMemoryMmap<()>;

/// How long `unmap` waits for the data thread before it gives up waiting (the region
/// stays mapped until the last snapshot goes regardless).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A guest address the device may not access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("guest address {addr:#x} is outside DMA-able guest RAM")]
pub struct AddrError {
    /// The first offending address (or the start of the refused range).
    pub addr: u64,
}

/// Why a DMA_MAP region could not be mapped (it is then recorded as not DMA-able).
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// Size or offset do not fit the host.
    #[error("region does not fit the host address space")]
    TooLarge,
    /// mmap of the fd failed.
    #[error("mmap: {0}")]
    Mmap(#[from] vm_memory::mmap::MmapRegionError),
    /// The region overlaps one already mapped.
    #[error("overlaps an existing region")]
    Overlap,
}

/// The device's view of guest RAM, shared by the server (map/unmap) and the data
/// thread (snapshots).
pub struct GuestRam {
    map: GuestMemoryAtomic<GuestMem>,
    /// Ranges announced without an fd: recorded for diagnostics, never accessed.
    no_fd: Mutex<Vec<(u64, u64)>>,
}

impl Default for GuestRam {
    fn default() -> Self {
        Self::new()
    }
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
    pub fn map_fd(
        &self,
        iova: u64,
        size: u64,
        fd: OwnedFd,
        offset: u64,
        writable: bool,
    ) -> Result<(), MapError> {
        let len = usize::try_from(size).map_err(|_| MapError::TooLarge)?;
        if iova.checked_add(size).is_none() || i64::try_from(offset).is_err() {
            return Err(MapError::TooLarge);
        }
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        let region = MmapRegion::build(
            Some(FileOffset::new(File::from(fd), offset)),
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
        )?;
        self.insert(region, iova)
    }

    fn insert(&self, region: MmapRegion<()>, gpa: u64) -> Result<(), MapError> {
        let region = GuestRegionMmap::new(region, GuestAddress(gpa)).ok_or(MapError::TooLarge)?;
        let guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.map.memory();
        let new = cur
            .insert_region(Arc::new(region))
            .map_err(|_| MapError::Overlap)?;
        guard.replace(new);
        Ok(())
    }

    /// Records a range announced without an fd: accepted (QEMU aborts on a refused
    /// DMA_MAP) but never DMA-able.
    pub fn map_none(&self, iova: u64, size: u64) {
        self.no_fd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((iova, size));
    }

    /// Removes every region wholly inside `[iova, iova + size)` and returns once no
    /// device access can still use them. Returns how many mapped regions went.
    pub fn unmap(&self, iova: u64, size: u64) -> usize {
        let end = iova.saturating_add(size);
        self.no_fd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&(a, s)| !(a >= iova && a.saturating_add(s) <= end));
        let guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.snapshot();
        let mut new = (*old).clone();
        let mut removed = 0;
        let doomed: Vec<(GuestAddress, u64)> = old
            .iter()
            .filter(|r| r.start_addr().0 >= iova && r.start_addr().0.saturating_add(r.len()) <= end)
            .map(|r| (r.start_addr(), r.len()))
            .collect();
        for (base, len) in doomed {
            if let Ok((n, _)) = new.remove_region(base, len) {
                new = n;
                removed += 1;
            }
        }
        if removed == 0 {
            return 0;
        }
        guard.replace(new);
        // Drain: the data thread drops its snapshot at the end of every work step.
        let t = Instant::now();
        while Arc::strong_count(&old) > 1 {
            if t.elapsed() > DRAIN_TIMEOUT {
                tracing::error!(iova, size, "DMA_UNMAP: data thread did not drain");
                break;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        removed
    }

    /// Number of recorded regions: (mapped, without fd).
    pub fn regions(&self) -> (usize, usize) {
        let no_fd = self.no_fd.lock().unwrap_or_else(|p| p.into_inner()).len();
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
        assert_eq!(t.join().unwrap(), 1);
        let m = ram.snapshot();
        assert!(check(&m, 0x1000, 8, false).is_err());
        assert!(check(&m, 0, 8, false).is_ok());
        assert_eq!(ram.regions(), (1, 0));
    }

    #[test]
    fn memfd_region_is_shared() {
        let fd = crate::testkit::memfd(0x2000);
        let dup = fd.try_clone().unwrap();
        let ram = GuestRam::new();
        ram.map_fd(0x10000, 0x1000, dup, 0x1000, true).unwrap();
        ram.map_none(0xc0000, 0x1000);
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
        let fd = crate::testkit::memfd(0x1000);
        let ram = GuestRam::new();
        ram.map_fd(0, 0x1000, fd, 0, false).unwrap();
        let m = ram.snapshot();
        assert!(load_u64(&m, 0).is_ok());
        assert!(store_u64(&m, 0, 1).is_err());
    }
}
