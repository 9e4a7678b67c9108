//! [`Bar`]: one PCI BAR of the device mapped into this process through the VFIO device
//! file, read and written with single volatile 32-bit accesses (each one a trapped MMIO
//! access that reaches the device model).

use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_MMAP;
use vfio_ioctls::VfioDevice;

use crate::error::{Error, Result};

/// A BAR mapped with `mmap` of its VFIO region.
pub struct Bar {
    base: NonNull<u8>,
    len: usize,
}

impl Bar {
    /// Maps VFIO region `index` (a BAR) of `device`, which must allow mmap.
    pub fn map(device: &VfioDevice, index: u32) -> Result<Self> {
        let flags = device.get_region_flags(index);
        if flags & VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(Error::Device(format!(
                "VFIO region {index} cannot be mmapped (flags {flags:#x})"
            )));
        }
        let len = device.get_region_size(index) as usize;
        let offset = device.get_region_offset(index);
        // SAFETY: a fresh shared mapping of the VFIO device file at the region's offset; the
        // kernel checks offset and length against the region. Nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                device.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Io {
                what: format!("mmap of VFIO region {index}"),
                source: std::io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(p.cast()).expect("mmap returned a null mapping");
        Ok(Self { base, len })
    }

    /// The mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    fn at(&self, off: u64) -> *mut u32 {
        assert!(
            off.is_multiple_of(4) && (off as usize) + 4 <= self.len,
            "BAR offset {off:#x} outside the {}-byte BAR or unaligned",
            self.len
        );
        // In bounds (checked above) of the mapping made in `map`.
        self.base.as_ptr().wrapping_add(off as usize).cast()
    }

    /// A 32-bit read at `off`.
    pub fn read32(&self, off: u64) -> u32 {
        // SAFETY: an aligned address inside our live mapping of the BAR (see `at`); a volatile
        // load is one MMIO read of the device.
        u32::from_le(unsafe { self.at(off).read_volatile() })
    }

    /// A 32-bit write at `off`.
    pub fn write32(&self, off: u64, v: u32) {
        // SAFETY: as in `read32`; a volatile store is one MMIO write.
        unsafe { self.at(off).write_volatile(v.to_le()) }
    }

    /// A 64-bit register read as two 32-bit halves, low half first (spec §3: the halves
    /// of a counter that moves meanwhile may tear).
    pub fn read64(&self, off: u64) -> u64 {
        let lo = u64::from(self.read32(off));
        let hi = u64::from(self.read32(off + 4));
        hi << 32 | lo
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, with its length; no reference into it outlives
        // `self` (accesses go through raw pointers only).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
