//! [`DmaBuffer`]: page-aligned anonymous memory that the device may access.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

use mnic_abi::pte;

use crate::error::{Error, Result};
use crate::sys;

/// A piece of advice for [`DmaBuffer::advise`] (`madvise(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Advice {
    /// `MADV_PAGEOUT`: reclaim the pages now (swap them out if swap is configured).
    /// The driver's notifier drops the device's translations first; the device faults
    /// them back on its next access and sees the same data.
    PageOut,
    /// `MADV_COLD`: deactivate the pages (reclaim them first under pressure).
    Cold,
    /// `MADV_DONTNEED`: drop the pages; the next access (CPU or device) sees zeroes.
    DontNeed,
    /// `MADV_WILLNEED`: read the pages back in ahead of use.
    WillNeed,
    /// `MADV_HUGEPAGE`: back the range with transparent huge pages where possible.
    HugePage,
    /// `MADV_NOHUGEPAGE`: do not use transparent huge pages for the range.
    NoHugePage,
}

impl Advice {
    fn raw(self) -> libc::c_int {
        match self {
            Advice::PageOut => libc::MADV_PAGEOUT,
            Advice::Cold => libc::MADV_COLD,
            Advice::DontNeed => libc::MADV_DONTNEED,
            Advice::WillNeed => libc::MADV_WILLNEED,
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::NoHugePage => libc::MADV_NOHUGEPAGE,
        }
    }
}

/// Page-aligned, private anonymous memory for the device to read and write.
///
/// The device accesses this memory *asynchronously*, through its own translation of
/// the process's page tables: while a work item that covers the buffer is in flight
/// the bytes can change under the CPU's feet. A `&[u8]` or `&mut [u8]` over such memory
/// would be undefined behaviour (Rust assumes a shared reference's bytes do not change,
/// and a mutable one is exclusive), so `DmaBuffer` never hands one out. All CPU
/// access goes through methods that copy with volatile accesses, the same discipline
/// as memory shared with another process or MMIO:
/// [`read_into`](Self::read_into), [`write_from`](Self::write_from),
/// [`fill`](Self::fill), [`to_vec`](Self::to_vec), [`read_u64`](Self::read_u64),
/// [`write_u64`](Self::write_u64). A copy taken while the device writes the same bytes
/// may mix old and new bytes (a torn snapshot) but is never undefined behaviour.
///
/// Raw pointers ([`as_ptr`](Self::as_ptr), [`as_mut_ptr`](Self::as_mut_ptr)) are
/// available for code that knows no work is in flight; dereferencing them is the
/// caller's `unsafe` responsibility.
///
/// `DmaBuffer` is `Send` but not `Sync`: the copy methods take `&self` (the contents
/// behave like an `UnsafeCell`), so two threads must not copy into it at once.
///
/// Memory is `MAP_PRIVATE | MAP_ANONYMOUS`: after `fork` the child gets a copy-on-write
/// view, and the device keeps writing the parent's pages (spec: a context belongs to the
/// mm that opened it).
///
/// ```
/// use mnic::DmaBuffer;
/// let buf = DmaBuffer::new(10_000)?; // rounded up to 3 pages
/// assert_eq!(buf.len(), 3 * 4096);
/// buf.write_from(100, b"hello");
/// let mut out = [0u8; 5];
/// buf.read_into(100, &mut out);
/// assert_eq!(&out, b"hello");
/// # Ok::<(), mnic::Error>(())
/// ```
///
/// # Invariants
/// `ptr..ptr+len` lies inside the live mapping `map..map+map_len`, owned by this value
/// and unmapped on drop; `ptr` is page aligned (2 MiB aligned for huge buffers) and
/// `len` is a non-zero multiple of the page size.
pub struct DmaBuffer {
    ptr: NonNull<u8>,
    len: usize,
    map: NonNull<u8>,
    map_len: usize,
    huge: bool,
    /// Registrations made by [`Context::register`](crate::Context::register) that are not
    /// deregistered yet. A registration borrows the buffer, but safe code can end a borrow
    /// without running the registration's drop (`mem::forget`): then this count stays up, and
    /// the buffer keeps its mapping when dropped (leaks it) rather than let the allocator reuse
    /// addresses the device may still write.
    registrations: Cell<usize>,
    /// Not `Sync`: `&self` methods write the contents.
    _not_sync: PhantomData<Cell<u8>>,
}

// SAFETY: the buffer owns its mapping exclusively (no aliasing handles); moving the
// owner to another thread moves all access with it.
unsafe impl Send for DmaBuffer {}

impl fmt::Debug for DmaBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuffer")
            .field("va", &format_args!("{:#x}", self.va()))
            .field("len", &self.len)
            .field("huge", &self.huge)
            .finish()
    }
}

fn round_up(n: usize, to: usize) -> Option<usize> {
    n.checked_add(to - 1).map(|v| v & !(to - 1))
}

fn anon_map(len: usize) -> Result<NonNull<u8>> {
    // SAFETY: a fresh private anonymous mapping at an address the kernel chooses; it
    // overlaps no existing Rust object. The result is checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::last_os("mmap"));
    }
    NonNull::new(p.cast()).ok_or(Error::InvalidInput("mmap returned NULL"))
}

impl DmaBuffer {
    /// Maps `len` bytes (rounded up to whole pages) of zeroed, page-aligned memory.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for `len == 0`; the errno of `mmap` otherwise.
    pub fn new(len: usize) -> Result<Self> {
        let page = sys::page_size();
        let len = round_up(len, page)
            .filter(|&l| l > 0)
            .ok_or(Error::InvalidInput("buffer length must be > 0"))?;
        let map = anon_map(len)?;
        Ok(Self {
            ptr: map,
            len,
            map,
            map_len: len,
            huge: false,
            registrations: Cell::new(0),
            _not_sync: PhantomData,
        })
    }

    /// Maps `len` bytes rounded up to whole 2 MiB pages, 2 MiB aligned, and advises
    /// transparent huge pages (`MADV_HUGEPAGE`), so the driver can map it with 2 MiB
    /// device leaves. The advice is best effort: with THP disabled the buffer still
    /// works with 4 KiB pages.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn new_huge(len: usize) -> Result<Self> {
        let huge = pte::HUGE_SIZE as usize;
        let len = round_up(len, huge)
            .filter(|&l| l > 0)
            .ok_or(Error::InvalidInput("buffer length must be > 0"))?;
        let map_len = len
            .checked_add(huge)
            .ok_or(Error::InvalidInput("buffer too large"))?;
        let map = anon_map(map_len)?;
        let addr = map.as_ptr() as usize;
        let start = round_up(addr, huge).ok_or(Error::InvalidInput("buffer too large"))?;
        let ptr = map.as_ptr().wrapping_add(start - addr);
        let buf = Self {
            // `ptr` is inside the non-null mapping.
            ptr: NonNull::new(ptr).ok_or(Error::InvalidInput("mmap returned NULL"))?,
            len,
            map,
            map_len,
            huge: true,
            registrations: Cell::new(0),
            _not_sync: PhantomData,
        };
        // Best effort: THP may be disabled (EINVAL); the buffer still works.
        let _ = buf.advise(Advice::HugePage, 0, len);
        Ok(buf)
    }

    /// Length in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a buffer has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// True if the buffer was made with [`new_huge`](Self::new_huge).
    pub fn is_huge(&self) -> bool {
        self.huge
    }

    /// The start address as the device sees it (a process virtual address).
    pub fn va(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The address of byte `offset` (which may equal `len()`).
    ///
    /// # Panics
    /// If `offset > len()`.
    pub fn va_at(&self, offset: usize) -> u64 {
        assert!(
            offset <= self.len,
            "offset {offset} beyond buffer of {}",
            self.len
        );
        self.va() + offset as u64
    }

    /// Raw pointer to the first byte. Reading through it is `unsafe` and only sound
    /// while no device work that writes the buffer is in flight.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Raw mutable pointer to the first byte. Writing through it is `unsafe`; see
    /// [`as_ptr`](Self::as_ptr).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn check(&self, offset: usize, len: usize) {
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|e| e <= self.len),
            "range {offset}+{len} beyond buffer of {}",
            self.len
        );
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the buffer, with volatile
    /// loads.
    ///
    /// # Panics
    /// If the range leaves the buffer.
    pub fn read_into(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len());
        let src = self.ptr.as_ptr().wrapping_add(offset);
        // SAFETY: the range is inside our live mapping (checked above, invariant); no
        // reference to the buffer's memory exists; `dst` is a distinct Rust slice.
        unsafe { volatile_copy_from(src, dst) }
    }

    /// Copies `src` into the buffer at `offset`, with volatile stores.
    ///
    /// # Panics
    /// If the range leaves the buffer.
    pub fn write_from(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len());
        let dst = self.ptr.as_ptr().wrapping_add(offset);
        // SAFETY: as in `read_into`; `Self: !Sync` so no other thread stores concurrently.
        unsafe { volatile_copy_to(dst, src) }
    }

    /// Sets every byte of the buffer to `byte`.
    pub fn fill(&self, byte: u8) {
        self.fill_range(0, self.len, byte);
    }

    /// Sets `len` bytes from `offset` to `byte`.
    ///
    /// # Panics
    /// If the range leaves the buffer.
    pub fn fill_range(&self, offset: usize, len: usize, byte: u8) {
        self.check(offset, len);
        let dst = self.ptr.as_ptr().wrapping_add(offset);
        // SAFETY: as in `write_from`.
        unsafe { volatile_fill(dst, len, byte) }
    }

    /// A copy of the whole buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.read_into(0, &mut v);
        v
    }

    /// Reads the little-endian `u64` at `offset` (8-byte aligned) with one volatile load.
    ///
    /// # Panics
    /// If `offset` is unaligned or out of range.
    pub fn read_u64(&self, offset: usize) -> u64 {
        self.check(offset, 8);
        assert_eq!(offset % 8, 0, "unaligned u64 offset {offset}");
        // SAFETY: in range and 8-byte aligned (page-aligned base); see `read_into`.
        u64::from_le(unsafe {
            std::ptr::read_volatile(self.ptr.as_ptr().add(offset).cast::<u64>())
        })
    }

    /// Writes `value` little-endian at `offset` (8-byte aligned) with one volatile store.
    ///
    /// # Panics
    /// If `offset` is unaligned or out of range.
    pub fn write_u64(&self, offset: usize, value: u64) {
        self.check(offset, 8);
        assert_eq!(offset % 8, 0, "unaligned u64 offset {offset}");
        // SAFETY: in range and aligned; see `write_from`.
        unsafe {
            std::ptr::write_volatile(self.ptr.as_ptr().add(offset).cast::<u64>(), value.to_le())
        }
    }

    /// `madvise(2)` over `len` bytes from `offset` (page aligned; `len` is rounded up to
    /// whole pages and clipped to the buffer).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unaligned or out-of-range `offset`; the errno of
    /// `madvise` otherwise (e.g. `EINVAL` for `MADV_PAGEOUT` on kernels without it).
    pub fn advise(&self, advice: Advice, offset: usize, len: usize) -> Result<()> {
        let page = sys::page_size();
        if !offset.is_multiple_of(page) || offset > self.len {
            return Err(Error::InvalidInput("advise offset must be page aligned"));
        }
        let len = round_up(len, page)
            .unwrap_or(usize::MAX)
            .min(self.len - offset);
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the range is inside our own mapping; no Rust reference to it exists
        // (DONTNEED zeroes it, which only the volatile accessors can observe).
        let rc = unsafe { libc::madvise(self.ptr.as_ptr().add(offset).cast(), len, advice.raw()) };
        if rc != 0 {
            return Err(Error::last_os("madvise"));
        }
        Ok(())
    }

    /// `MADV_PAGEOUT` over the whole buffer: reclaim (swap out) its pages now.
    pub fn pageout(&self) -> Result<()> {
        self.advise(Advice::PageOut, 0, self.len)
    }

    /// `MADV_DONTNEED` over the whole buffer: drop its pages; it reads as zeroes after.
    pub fn dontneed(&self) -> Result<()> {
        self.advise(Advice::DontNeed, 0, self.len)
    }

    /// Number of the buffer's pages resident in memory now (`mincore(2)`), and the
    /// total number of pages. Useful to check that a page-out really happened.
    pub fn resident_pages(&self) -> Result<(usize, usize)> {
        let page = sys::page_size();
        let n = self.len / page;
        let mut vec = vec![0u8; n];
        // SAFETY: the range is our own page-aligned mapping; `vec` has one byte per page.
        let rc = unsafe { libc::mincore(self.ptr.as_ptr().cast(), self.len, vec.as_mut_ptr()) };
        if rc != 0 {
            return Err(Error::last_os("mincore"));
        }
        Ok((vec.iter().filter(|b| **b & 1 != 0).count(), n))
    }
}

impl DmaBuffer {
    /// Counts a registration of this buffer (see `registrations`).
    pub(crate) fn hold(&self) {
        self.registrations.set(self.registrations.get() + 1);
    }

    /// A registration of this buffer is gone from the driver.
    pub(crate) fn release(&self) {
        self.registrations
            .set(self.registrations.get().saturating_sub(1));
    }

    /// Whether some registration of this buffer may still be live in the driver.
    pub fn is_registered(&self) -> bool {
        self.registrations.get() != 0
    }

    /// Unmaps the buffer now, as dropping it would, and reports `munmap`'s result: for
    /// callers that time or check the unmap itself (the `mnic bench invalidate` baseline).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if a registration of it may still be live (a forgotten one):
    /// the mapping is then kept, as dropping would; else the errno of `munmap`.
    pub fn unmap(self) -> Result<()> {
        let me = std::mem::ManuallyDrop::new(self);
        if me.is_registered() {
            return Err(Error::InvalidInput(
                "buffer still registered: its mapping is kept",
            ));
        }
        // SAFETY: as in `drop`: the live mapping owned by `me`, which is never used or
        // dropped again.
        let rc = unsafe { libc::munmap(me.map.as_ptr().cast(), me.map_len) };
        if rc != 0 {
            return Err(Error::last_os("munmap"));
        }
        Ok(())
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        // A registration that was forgotten instead of dropped still covers the range in
        // the driver: keep the mapping (leak it) so that no Rust object is ever placed where
        // the device may write.
        if self.is_registered() {
            return;
        }
        // SAFETY: by the invariant the mapping is live and owned by us, and no registration
        // of it is left (every live `Registration` borrows `self`; one that was forgotten
        // kept `registrations` up and we returned above).
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// Copies from device-visible memory into a normal slice.
///
/// # Safety
/// `src..src+dst.len()` must be valid for reads and not overlap `dst`.
unsafe fn volatile_copy_from(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    let mut i = 0;
    while i < len && !(src as usize + i).is_multiple_of(8) {
        // SAFETY: i < len, inside the caller's range.
        dst[i] = unsafe { std::ptr::read_volatile(src.add(i)) };
        i += 1;
    }
    while i + 8 <= len {
        // SAFETY: inside the range and 8-byte aligned (loop above).
        let w = unsafe { std::ptr::read_volatile(src.add(i).cast::<u64>()) };
        dst[i..i + 8].copy_from_slice(&w.to_ne_bytes());
        i += 8;
    }
    while i < len {
        // SAFETY: i < len.
        dst[i] = unsafe { std::ptr::read_volatile(src.add(i)) };
        i += 1;
    }
}

/// Copies a normal slice into device-visible memory.
///
/// # Safety
/// `dst..dst+src.len()` must be valid for writes, not overlap `src`, and have no other
/// concurrent CPU writer.
unsafe fn volatile_copy_to(dst: *mut u8, src: &[u8]) {
    let len = src.len();
    let mut i = 0;
    while i < len && !(dst as usize + i).is_multiple_of(8) {
        // SAFETY: i < len, inside the caller's range.
        unsafe { std::ptr::write_volatile(dst.add(i), src[i]) };
        i += 1;
    }
    while i + 8 <= len {
        let mut w = [0u8; 8];
        w.copy_from_slice(&src[i..i + 8]);
        // SAFETY: inside the range and 8-byte aligned.
        unsafe { std::ptr::write_volatile(dst.add(i).cast::<u64>(), u64::from_ne_bytes(w)) };
        i += 8;
    }
    while i < len {
        // SAFETY: i < len.
        unsafe { std::ptr::write_volatile(dst.add(i), src[i]) };
        i += 1;
    }
}

/// Fills device-visible memory.
///
/// # Safety
/// As [`volatile_copy_to`] for `dst..dst+len`.
unsafe fn volatile_fill(dst: *mut u8, len: usize, byte: u8) {
    let word = u64::from_ne_bytes([byte; 8]);
    let mut i = 0;
    while i < len && !(dst as usize + i).is_multiple_of(8) {
        // SAFETY: i < len.
        unsafe { std::ptr::write_volatile(dst.add(i), byte) };
        i += 1;
    }
    while i + 8 <= len {
        // SAFETY: inside the range and aligned.
        unsafe { std::ptr::write_volatile(dst.add(i).cast::<u64>(), word) };
        i += 8;
    }
    while i < len {
        // SAFETY: i < len.
        unsafe { std::ptr::write_volatile(dst.add(i), byte) };
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the page at `va` is mapped (mincore fails with ENOMEM on a hole).
    fn mapped(va: u64) -> bool {
        let mut v = [0u8; 1];
        // SAFETY: mincore only reads page-table state of the range; `v` has one byte.
        unsafe { libc::mincore(va as *mut libc::c_void, 1, v.as_mut_ptr()) == 0 }
    }

    #[test]
    fn a_buffer_still_registered_keeps_its_mapping() {
        // What `mem::forget(registration)` leaves: the count up, no release.
        let held = DmaBuffer::new(4096).unwrap();
        let va = held.va();
        held.hold();
        assert!(held.is_registered());
        drop(held);
        assert!(mapped(va), "a registered buffer gave its memory back");
        // Released again: dropping unmaps as usual (not checked through the address: another
        // test thread may map something there at once).
        let b = DmaBuffer::new(4096).unwrap();
        b.hold();
        b.release();
        assert!(!b.is_registered());
        // `unmap` refuses too, and keeps the mapping.
        let b = DmaBuffer::new(4096).unwrap();
        let va = b.va();
        b.hold();
        assert!(b.unmap().is_err());
        assert!(mapped(va));
    }

    #[test]
    fn new_rounds_to_pages_and_is_zeroed() {
        let b = DmaBuffer::new(1).unwrap();
        assert_eq!(b.len(), sys::page_size());
        assert_eq!(b.va() % sys::page_size() as u64, 0);
        assert!(b.to_vec().iter().all(|&x| x == 0));
        assert!(DmaBuffer::new(0).is_err());
    }

    #[test]
    fn copies_at_odd_offsets() {
        let b = DmaBuffer::new(8192).unwrap();
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        b.write_from(4093, &data);
        let mut back = vec![0; data.len()];
        b.read_into(4093, &mut back);
        assert_eq!(back, data);
        let mut one = [0u8; 1];
        b.read_into(4092, &mut one);
        assert_eq!(one, [0]);
        b.fill_range(3, 13, 0xab);
        let v = b.to_vec();
        assert_eq!(&v[..3], &[0, 0, 0]);
        assert!(v[3..16].iter().all(|&x| x == 0xab));
        assert_eq!(v[16], 0);
        b.write_u64(8, 0x1122_3344_5566_7788);
        assert_eq!(b.read_u64(8), 0x1122_3344_5566_7788);
    }

    #[test]
    #[should_panic(expected = "beyond buffer")]
    fn out_of_range_panics() {
        let b = DmaBuffer::new(4096).unwrap();
        b.write_from(4090, &[0; 7]);
    }

    #[test]
    fn dontneed_zeroes_and_pageout_is_accepted() {
        let b = DmaBuffer::new(3 * 4096).unwrap();
        b.fill(0x5a);
        assert_eq!(b.resident_pages().unwrap(), (3, 3));
        b.dontneed().unwrap();
        assert!(b.to_vec().iter().all(|&x| x == 0));
        b.fill(0x33);
        // PAGEOUT may be a no-op without swap, but must be accepted and keep the data.
        if b.pageout().is_ok() {
            assert!(b.to_vec().iter().all(|&x| x == 0x33));
        }
        assert!(b.advise(Advice::Cold, 1, 1).is_err());
    }

    #[test]
    fn huge_is_2m_aligned() {
        let b = DmaBuffer::new_huge(1).unwrap();
        assert!(b.is_huge());
        assert_eq!(b.len(), 2 << 20);
        assert_eq!(b.va() % (2 << 20), 0);
        b.fill(1);
        assert_eq!(b.to_vec()[(2 << 20) - 1], 1);
    }
}
