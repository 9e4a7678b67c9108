//! Helpers shared by the cases: raw mappings with verifiable patterns, device copies, forked
//! children with a message channel, memory cgroups, the quiet console for OOM cases, /proc.

/// A context with queues set up.
pub use mnic_guest_util::nic::open_with_queues as ctxq;
pub use mnic_guest_util::nic::*;
pub use mnic_guest_util::*;

use mnic::{Access, Context, DmaBuffer, Error, Registration, TableEntries, Work};
use mnic_abi as abi;

pub const PAGE: usize = 4096;

// ------------------------------------------------------------------ contexts

pub fn query(ctx: &Context, va: u64, len: usize) -> Result<TableEntries, String> {
    ctx.query(va, len as u64).map_err(e("QUERY"))
}

pub fn stats(ctx: &Context) -> Result<abi::MnicCtxStats, String> {
    ctx.ctx_stats().map_err(e("CTX_STATS"))
}

/// Registers `[va, va+len)` (which the caller maps and unmaps itself; the device only ever
/// touches it through work items the case posts, and data is read back with volatile copies).
pub fn reg_raw(
    ctx: &Context,
    va: u64,
    len: usize,
    access: Access,
) -> Result<Registration<'_>, String> {
    // SAFETY: the cases access registered raw mappings only through `Map`'s volatile copies
    // or while no work is in flight, and drop registrations before reusing addresses for Rust
    // objects (mappings are private to each case and never handed to the allocator).
    unsafe { ctx.register_raw(va, len as u64, access) }.map_err(e("register_raw"))
}

/// The device copies `len` bytes at `va` into a scratch buffer: what the device reads there.
/// A scratch buffer that does not overlap `[va, va+len)` (a freshly unmapped range is often
/// where the next mapping goes).
fn scratch_apart(va: u64, len: usize) -> mnic::Result<DmaBuffer> {
    let first = DmaBuffer::new(len)?;
    let overlaps = |b: &DmaBuffer| b.va() < va + len as u64 && va < b.va() + b.len() as u64;
    if !overlaps(&first) {
        return Ok(first);
    }
    let second = DmaBuffer::new(len)?;
    drop(first);
    Ok(second)
}

pub fn dev_read(ctx: &Context, va: u64, len: usize) -> mnic::Result<Vec<u8>> {
    let scratch = scratch_apart(va, len)?;
    let _r = ctx.register(&scratch, Access::WRITE)?;
    ctx.run(&Work::copy(va, scratch.va(), len as u32)?, TIMEOUT)?;
    let mut v = scratch.to_vec();
    v.truncate(len);
    Ok(v)
}

/// The device writes `data` at `va` (copy from a scratch buffer).
pub fn dev_write(ctx: &Context, va: u64, data: &[u8]) -> mnic::Result<()> {
    let scratch = scratch_apart(va, data.len())?;
    scratch.write_from(0, data);
    let _r = ctx.register(&scratch, Access::READ)?;
    ctx.run(&Work::copy(scratch.va(), va, data.len() as u32)?, TIMEOUT)?;
    Ok(())
}

/// Expects a work item aborted by the driver with one of `errnos`; returns the errno.
pub fn want_abort<T: std::fmt::Debug>(
    r: mnic::Result<T>,
    errnos: &[i32],
    what: &str,
) -> Result<i32, String> {
    match r {
        Err(Error::Work {
            error: mnic::WorkError::FaultAborted { errno },
            ..
        }) if errnos.contains(&errno) => Ok(errno),
        other => Err(format!(
            "{what}: got {other:?}, want an abort with errno in {errnos:?}"
        )),
    }
}

// ------------------------------------------------------------------ patterns

/// The 8-byte word at byte offset `off` (a multiple of 8) of pattern `seed`.
pub fn word(off: usize, seed: u64) -> u64 {
    let mut z = (off as u64 / 8)
        .wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(1);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Pattern bytes for `[off, off+len)`.
pub fn pattern(off: usize, len: usize, seed: u64) -> Vec<u8> {
    (off / 8 * 8..(off + len).div_ceil(8) * 8)
        .step_by(8)
        .flat_map(|o| word(o, seed).to_le_bytes())
        .skip(off % 8)
        .take(len)
        .collect()
}

/// `Ok` if `data` (which sits at offset `off`) is pattern `seed`; else where it differs.
pub fn is_pattern(data: &[u8], off: usize, seed: u64) -> Result<(), String> {
    let want = pattern(off, data.len(), seed);
    match data.iter().zip(&want).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "byte {:#x} is {:#04x}, pattern {seed:#x} wants {:#04x}{}",
            off + i,
            data[i],
            want[i],
            if data[i..].iter().take(PAGE).all(|b| *b == 0) {
                " (zeroes)"
            } else {
                ""
            }
        )),
    }
}

pub fn is_zero(data: &[u8], what: &str) -> Result<(), String> {
    match data.iter().position(|b| *b != 0) {
        None => Ok(()),
        Some(i) => Err(format!("{what}: byte {i:#x} is {:#04x}, want 0", data[i])),
    }
}

// ------------------------------------------------------------------ raw mappings

/// A raw mapping, accessed only with volatile copies (the device may write it at any time).
/// Unmapped (whole) on drop; parts may be unmapped, moved or re-protected by the case.
pub struct Map {
    pub ptr: usize,
    pub len: usize,
}

impl Map {
    pub fn new(len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> Result<Map, String> {
        // SAFETY: a fresh mapping at an address the kernel chooses (or MAP_FIXED over a range
        // the case owns); checked below.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
        if p == libc::MAP_FAILED {
            return Err(os_err("mmap"));
        }
        Ok(Map {
            ptr: p as usize,
            len,
        })
    }

    pub fn anon(len: usize) -> Result<Map, String> {
        Self::new(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    }

    /// A mapping exactly at `addr` that must not replace anything (MAP_FIXED_NOREPLACE).
    pub fn fixed_noreplace(addr: usize, len: usize, prot: i32) -> Result<Map, String> {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; checked below.
        let p = unsafe {
            libc::mmap(
                addr as *mut _,
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        check(p != libc::MAP_FAILED && p as usize == addr, || {
            os_err("mmap(MAP_FIXED_NOREPLACE)")
        })?;
        Ok(Map { ptr: addr, len })
    }

    /// Takes over an existing mapping (e.g. the result of mremap).
    pub fn adopt(ptr: usize, len: usize) -> Map {
        Map { ptr, len }
    }

    pub fn va(&self) -> u64 {
        self.ptr as u64
    }

    pub fn at(&self, off: usize) -> u64 {
        (self.ptr + off) as u64
    }

    /// Writes pattern `seed` over `[off, off+len)` (offsets relative to the mapping).
    pub fn fill(&self, off: usize, len: usize, seed: u64) {
        assert!(off.is_multiple_of(8) && len.is_multiple_of(8) && off + len <= self.len);
        for o in (off..off + len).step_by(8) {
            // SAFETY: inside the mapping, 8-byte aligned; volatile (the device may also write).
            unsafe { std::ptr::write_volatile((self.ptr + o) as *mut u64, word(o, seed)) };
        }
    }

    pub fn fill_byte(&self, off: usize, len: usize, b: u8) {
        for o in off..off + len {
            // SAFETY: inside the mapping (the caller keeps it mapped and writable).
            unsafe { std::ptr::write_volatile((self.ptr + o) as *mut u8, b) };
        }
    }

    pub fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len);
        (off..off + len)
            // SAFETY: inside the mapping (the caller keeps that part mapped and readable).
            .map(|o| unsafe { std::ptr::read_volatile((self.ptr + o) as *const u8) })
            .collect()
    }

    pub fn check(&self, off: usize, len: usize, seed: u64) -> Result<(), String> {
        is_pattern(&self.read(off, len), off, seed)
    }

    pub fn madvise(&self, off: usize, len: usize, advice: i32) -> Result<(), String> {
        // SAFETY: a range of our own mapping; nothing holds references into it.
        let rc = unsafe { libc::madvise((self.ptr + off) as *mut _, len, advice) };
        check(rc == 0, || os_err(&format!("madvise({advice})")))
    }

    pub fn mprotect(&self, off: usize, len: usize, prot: i32) -> Result<(), String> {
        // SAFETY: as in `madvise`.
        let rc = unsafe { libc::mprotect((self.ptr + off) as *mut _, len, prot) };
        check(rc == 0, || os_err("mprotect"))
    }

    pub fn munmap(&self, off: usize, len: usize) -> Result<(), String> {
        // SAFETY: as in `madvise`; the rest of the mapping stays ours.
        let rc = unsafe { libc::munmap((self.ptr + off) as *mut _, len) };
        check(rc == 0, || os_err("munmap"))
    }

    /// Resident pages of `[off, off+len)` (mincore), page by page.
    pub fn resident(&self, off: usize, len: usize) -> Result<Vec<bool>, String> {
        let mut v = vec![0u8; len / PAGE];
        // SAFETY: our own mapping; one byte per page.
        let rc = unsafe { libc::mincore((self.ptr + off) as *mut _, len, v.as_mut_ptr()) };
        check(rc == 0, || os_err("mincore"))?;
        Ok(v.iter().map(|b| b & 1 != 0).collect())
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our mapping (holes left by the case are fine for munmap).
        unsafe { libc::munmap(self.ptr as *mut _, self.len) };
    }
}
