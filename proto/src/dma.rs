//! [`DmaArena`]: the prototyping driver's DMA memory. One large anonymous buffer, mapped
//! for the device with a single `VFIO_IOMMU_MAP_DMA` at a fixed IOVA, and handed out in
//! page-aligned pieces by a bump allocator. Everything the device reads or writes (context
//! table, rings, translation tables, queues, data) comes from here, and is addressed by
//! its IOVA: with an IOMMU in front of the device, the IOVA is the device's "GPA".
//!
//! The device may read and write this memory at any time, so it is only ever touched
//! through volatile accesses on raw pointers, never through Rust references.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use mnic_abi::pte;
use vfio_ioctls::VfioContainer;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::error::{vfio_err, Error, Result};

/// Size of the arena: one 2 MiB buffer, backed by one transparent huge page when the
/// kernel has one, so that the IOMMU maps it with one entry (and the device model gets one
/// DMA region for it).
pub const ARENA_SIZE: usize = pte::HUGE_SIZE as usize;
/// IOVA of the arena's first byte (any IOVA the IOMMU accepts; 2 MiB aligned so that a
/// huge page stays one IOMMU entry).
pub const ARENA_IOVA: u64 = 0x1000_0000;

/// DMA memory mapped for the device through the VFIO container.
pub struct DmaArena {
    container: Arc<VfioContainer>,
    /// The whole anonymous mapping (larger than the arena, for alignment).
    map: NonNull<u8>,
    map_len: usize,
    /// The arena's first byte (2 MiB aligned inside `map`).
    base: NonNull<u8>,
    iova: u64,
    next: Cell<usize>,
}

impl DmaArena {
    /// Allocates the arena and maps it for the device at [`ARENA_IOVA`].
    pub fn new(container: Arc<VfioContainer>) -> Result<Self> {
        let map_len = ARENA_SIZE + pte::HUGE_SIZE as usize;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Io {
                what: "mmap of the DMA arena".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let map = NonNull::new(p.cast::<u8>()).expect("mmap returned a null mapping");
        let skew = (map.as_ptr() as usize).next_multiple_of(pte::HUGE_SIZE as usize)
            - map.as_ptr() as usize;
        let base = NonNull::new(map.as_ptr().wrapping_add(skew)).expect("non-null");
        // SAFETY: advice on our own mapping; failing it only costs the huge page.
        unsafe { libc::madvise(base.as_ptr().cast(), ARENA_SIZE, libc::MADV_HUGEPAGE) };
        let arena = Self {
            container,
            map,
            map_len,
            base,
            iova: ARENA_IOVA,
            next: Cell::new(0),
        };
        // Populate (and zero) every page before the map pins them.
        for off in (0..ARENA_SIZE).step_by(pte::PAGE_SIZE as usize) {
            arena.write_u64(arena.iova + off as u64, 0);
        }
        // SAFETY: [base, base + ARENA_SIZE) is our mapping and stays mapped until `drop`,
        // which unmaps the IOVA range first; it is only accessed through volatile raw-pointer
        // operations (this type's methods), never through references.
        unsafe {
            arena
                .container
                .vfio_dma_map(arena.iova, ARENA_SIZE, arena.base.as_ptr())
        }
        .map_err(vfio_err("VFIO_IOMMU_MAP_DMA of the DMA arena"))?;
        Ok(arena)
    }

    /// Bytes still free.
    pub fn free(&self) -> usize {
        ARENA_SIZE - self.next.get()
    }

    /// Bytes handed out so far.
    pub fn used(&self) -> usize {
        self.next.get()
    }

    /// Whether the kernel backs the arena with a transparent huge page (then the IOMMU
    /// maps it with one entry, and the device model gets one `DMA_MAP` for it), from
    /// `/proc/self/smaps`; `None` if that cannot be read.
    pub fn huge_backed(&self) -> Option<bool> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let base = self.base.as_ptr() as usize;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = lo <= base && base < hi;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                    let kb: usize = kb.trim().trim_end_matches("kB").trim().parse().ok()?;
                    return Some(kb * 1024 >= ARENA_SIZE);
                }
            }
        }
        None
    }

    /// `len` bytes of zeroed memory aligned to `align` (a power of two, at least a page
    /// is used for page-sized buffers); returns their IOVA. Memory is never given back:
    /// the arena lives as long as the run.
    pub fn alloc(&self, len: usize, align: usize) -> Result<u64> {
        let start = self.next.get().next_multiple_of(align.max(8));
        let end = start + len.max(1);
        if end > ARENA_SIZE {
            return Err(Error::Device(format!(
                "DMA arena exhausted: {len} bytes wanted, {} free",
                self.free()
            )));
        }
        self.next.set(end);
        Ok(self.iova + start as u64)
    }

    /// Whole zeroed pages; returns the IOVA of the first.
    pub fn alloc_pages(&self, pages: usize) -> Result<u64> {
        self.alloc(pages * pte::PAGE_SIZE as usize, pte::PAGE_SIZE as usize)
    }

    /// Pointer to `[iova, iova + len)` inside the arena.
    fn ptr(&self, iova: u64, len: usize) -> *mut u8 {
        let off = iova.wrapping_sub(self.iova) as usize;
        assert!(
            iova >= self.iova && off + len <= ARENA_SIZE,
            "IOVA {iova:#x}+{len:#x} outside the DMA arena"
        );
        self.base.as_ptr().wrapping_add(off)
    }

    /// Copies `data` to `iova`.
    pub fn write(&self, iova: u64, data: &[u8]) {
        let p = self.ptr(iova, data.len());
        for (i, b) in data.iter().enumerate() {
            // SAFETY: inside the arena (checked by `ptr`); a volatile store, because the
            // device may access this memory concurrently.
            unsafe { p.add(i).write_volatile(*b) };
        }
    }

    /// Copies `out.len()` bytes from `iova` into `out`.
    pub fn read(&self, iova: u64, out: &mut [u8]) {
        let p = self.ptr(iova, out.len());
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: as in `write`; a volatile load.
            *b = unsafe { p.add(i).read_volatile() };
        }
    }

    /// `len` bytes at `iova`.
    pub fn read_vec(&self, iova: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.read(iova, &mut v);
        v
    }

    /// A 64-bit store at `iova` (8-byte aligned): one access, as the device's table walker
    /// expects for table entries (spec §6).
    pub fn write_u64(&self, iova: u64, v: u64) {
        assert!(iova.is_multiple_of(8), "unaligned u64 store at {iova:#x}");
        // SAFETY: inside the arena and aligned (checked); a single volatile 64-bit store.
        unsafe { self.ptr(iova, 8).cast::<u64>().write_volatile(v.to_le()) };
    }

    /// A 64-bit load at `iova` (8-byte aligned).
    pub fn read_u64(&self, iova: u64) -> u64 {
        assert!(iova.is_multiple_of(8), "unaligned u64 load at {iova:#x}");
        // SAFETY: as in `write_u64`; a single volatile 64-bit load.
        u64::from_le(unsafe { self.ptr(iova, 8).cast::<u64>().read_volatile() })
    }

    /// Writes an ABI structure at `iova`.
    pub fn write_obj<T: IntoBytes + Immutable>(&self, iova: u64, v: &T) {
        self.write(iova, v.as_bytes());
    }

    /// Reads an ABI structure at `iova`.
    pub fn read_obj<T: FromBytes>(&self, iova: u64) -> T {
        let mut b = vec![0u8; size_of::<T>()];
        self.read(iova, &mut b);
        T::read_from_bytes(&b).expect("buffer has the structure's size")
    }

    /// Reads the device-produced ring entry at `iova` if its phase bit (one byte at
    /// `phase_offset`, written last by the device, spec §7a) says it is new.
    pub fn read_if_new<T: FromBytes>(
        &self,
        iova: u64,
        phase_offset: usize,
        phase_mask: u8,
        expected: bool,
    ) -> Option<T> {
        let mut flags = [0u8];
        self.read(iova + phase_offset as u64, &mut flags);
        if (flags[0] & phase_mask != 0) != expected {
            return None;
        }
        // The rest of the entry was written before its phase byte.
        fence(Ordering::Acquire);
        Some(self.read_obj(iova))
    }
}

impl Drop for DmaArena {
    fn drop(&mut self) {
        // The device must lose the IOVAs before the pages go back to the kernel.
        let _ = self.container.vfio_dma_unmap(self.iova, ARENA_SIZE);
        // SAFETY: our mapping, with its length; nothing refers to it any more.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}
