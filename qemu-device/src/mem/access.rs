//! Every device access to guest memory: through one view of the DMA maps, checked
//! before any byte moves (the whole range must lie in maps that follow each other
//! without a gap, and be writable for a write), and then made with volatile copies or
//! atomics on the file mappings (the guest may write concurrently).
//!
//! The common case, a range inside one map, costs one interval lookup; a range over
//! several maps (behind an IOMMU every 4 KiB page is its own map) is done map by map.
//!
//! A refusal is final only if the newest view refuses too ([`on_newest_if_refused`]): the
//! data thread takes its view at the start of a round, and the guest may map a page
//! (DMA_MAP, answered and published), write a leaf that points at it and post work that
//! the same round then reads. The map came before the post, so the device must see it
//! (spec §1b). A refused access has moved no byte, so it can be tried again.

use std::sync::atomic::Ordering;

use vm_memory::{AtomicAccess, Bytes};

use crate::mem::error::AddrError;
use crate::mem::view::GuestMem;

/// `op` on `mem`; if refused, once more on the newest published view when there is a newer
/// one. The first refusal is the one reported.
#[inline]
fn on_newest_if_refused<T>(
    mem: &GuestMem,
    mut op: impl FnMut(&GuestMem) -> Result<T, AddrError>,
) -> Result<T, AddrError> {
    match op(mem) {
        Ok(v) => Ok(v),
        Err(e) => match mem.newer() {
            Some(newest) => op(&newest).map_err(|_| e),
            None => Err(e),
        },
    }
}

/// Checks that `[addr, addr + len)` lies in DMA maps (writable ones if `write`).
pub fn check(mem: &GuestMem, addr: u64, len: u64, write: bool) -> Result<(), AddrError> {
    on_newest_if_refused(mem, |m| m.check(addr, len, write))
}

/// Reads guest memory into `buf`.
pub fn read(mem: &GuestMem, addr: u64, buf: &mut [u8]) -> Result<(), AddrError> {
    on_newest_if_refused(mem, |m| read_in(m, addr, buf))
}

fn read_in(mem: &GuestMem, addr: u64, buf: &mut [u8]) -> Result<(), AddrError> {
    if let Some(s) = mem.one_map(addr, buf.len(), false) {
        s.copy_to(buf);
        return Ok(());
    }
    mem.check(addr, buf.len() as u64, false)?;
    mem.each_map(addr, buf.len(), |s, off| {
        s.copy_to(&mut buf[off..off + s.len()]);
    })
}

/// Writes `buf` to guest memory.
pub fn write(mem: &GuestMem, addr: u64, buf: &[u8]) -> Result<(), AddrError> {
    on_newest_if_refused(mem, |m| write_in(m, addr, buf))
}

fn write_in(mem: &GuestMem, addr: u64, buf: &[u8]) -> Result<(), AddrError> {
    if let Some(s) = mem.one_map(addr, buf.len(), true) {
        s.copy_from(buf);
        return Ok(());
    }
    mem.check(addr, buf.len() as u64, true)?;
    mem.each_map(addr, buf.len(), |s, off| {
        s.copy_from(&buf[off..off + s.len()])
    })
}

/// One aligned atomic load (an aligned value never spans two maps: maps are page
/// granular; one that would is refused).
fn load<T: AtomicAccess>(mem: &GuestMem, addr: u64, order: Ordering) -> Result<T, AddrError> {
    on_newest_if_refused(mem, |m| load_in(m, addr, order))
}

fn load_in<T: AtomicAccess>(mem: &GuestMem, addr: u64, order: Ordering) -> Result<T, AddrError> {
    let n = std::mem::size_of::<T>();
    if !addr.is_multiple_of(n as u64) {
        return Err(AddrError { addr });
    }
    let s = mem.one_map(addr, n, false).ok_or(AddrError { addr })?;
    s.load(0, order).map_err(|_| AddrError { addr })
}

/// One aligned atomic store.
fn store<T: AtomicAccess>(
    mem: &GuestMem,
    addr: u64,
    v: T,
    order: Ordering,
) -> Result<(), AddrError> {
    on_newest_if_refused(mem, |m| store_in(m, addr, v, order))
}

fn store_in<T: AtomicAccess>(
    mem: &GuestMem,
    addr: u64,
    v: T,
    order: Ordering,
) -> Result<(), AddrError> {
    let n = std::mem::size_of::<T>();
    if !addr.is_multiple_of(n as u64) {
        return Err(AddrError { addr });
    }
    let s = mem.one_map(addr, n, true).ok_or(AddrError { addr })?;
    s.store(v, 0, order).map_err(|_| AddrError { addr })
}

/// One aligned 64-bit load (table entries: the driver updates them with single
/// 64-bit stores, so a load sees either the old or the new entry).
pub fn load_u64(mem: &GuestMem, addr: u64) -> Result<u64, AddrError> {
    load(mem, addr, Ordering::Acquire)
}

/// One aligned 64-bit store, ordered after every earlier access (the SYNC value).
pub fn store_u64(mem: &GuestMem, addr: u64, v: u64) -> Result<(), AddrError> {
    store(mem, addr, v, Ordering::SeqCst)
}

/// One aligned 32-bit load, sequentially consistent (a shadow page's `tail`: the
/// device's sleep handshake orders it after its own `polling` store, spec §4a).
pub fn load_u32(mem: &GuestMem, addr: u64) -> Result<u32, AddrError> {
    load(mem, addr, Ordering::SeqCst)
}

/// One aligned 32-bit store, sequentially consistent (a shadow page's `polling`).
pub fn store_u32(mem: &GuestMem, addr: u64, v: u32) -> Result<(), AddrError> {
    store(mem, addr, v, Ordering::SeqCst)
}

/// A release store of the byte at `addr` (event phase flags: written after the entry).
pub fn store_u8(mem: &GuestMem, addr: u64, v: u8) -> Result<(), AddrError> {
    store(mem, addr, v, Ordering::Release)
}

/// A release store of the aligned u16 at `addr` (completion phase flags).
pub fn store_u16(mem: &GuestMem, addr: u64, v: u16) -> Result<(), AddrError> {
    store(mem, addr, v, Ordering::Release)
}

/// Copies `len` bytes between two guest ranges (each checked whole before any byte
/// moves; they may overlap). One memmove when each side lies in one map, else one per
/// stretch where neither side changes map.
pub fn copy(mem: &GuestMem, src: u64, dst: u64, len: usize) -> Result<(), AddrError> {
    on_newest_if_refused(mem, |m| copy_in(m, src, dst, len))
}

fn copy_in(mem: &GuestMem, src: u64, dst: u64, len: usize) -> Result<(), AddrError> {
    if let (Some(s), Some(d)) = (mem.one_map(src, len, false), mem.one_map(dst, len, true)) {
        s.copy_to_volatile_slice(d);
        return Ok(());
    }
    mem.check(src, len as u64, false)?;
    mem.check(dst, len as u64, true)?;
    let mut off = 0usize;
    while off < len {
        let (s_at, d_at) = (src + off as u64, dst + off as u64);
        let (Some(sr), Some(dr)) = (mem.room(s_at), mem.room(d_at)) else {
            return Err(AddrError { addr: s_at });
        };
        let n = (sr.min(dr) as usize).min(len - off);
        let s = mem
            .one_map(s_at, n, false)
            .ok_or(AddrError { addr: s_at })?;
        let d = mem.one_map(d_at, n, true).ok_or(AddrError { addr: d_at })?;
        s.copy_to_volatile_slice(d);
        off += n;
    }
    Ok(())
}
