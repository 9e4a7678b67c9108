// SPDX-License-Identifier: GPL-2.0
//! Filling a context's translation table: device faults (spec §12) and prefetch
//! (`MNIC_IOC_PREFETCH`, `REG_PREFETCH`).
//!
//! The fault path of `docs/kernel-mm-api.md`: read the notifier sequence, fault the pages in
//! with `hmm` under the owner's mmap lock, then under the notifier lock write the leaves only
//! if no invalidation ran in between. Around a fault it faults in a bounded window of
//! neighbours (swap read-ahead for the device: a pass over swapped-out memory costs a fault
//! per window, not per page), and maps a whole 2 MiB block behind a huge page.

use kernel::{
    mm::{
        hmm::{Access, FaultError, HmmPfn, Range},
        mmu_notifier::{IntervalNotifier, IntervalNotifierOps},
        MmWithUser, MmapReadGuard,
    },
    prelude::*,
    sync::atomic::Relaxed,
};

use crate::abi::{self, pte, reg_flags, Command};
use crate::context::{Ctx, CtxState, Region};
use crate::table::Leaves;

/// Restarts of one fill before it gives up with `EBUSY` (an invalidation storm must not keep a
/// fault or an ioctl in the kernel forever).
const MAX_FILL_RETRIES: u32 = 1000;
/// Prefetch works in pieces of this size (bounds the hmm pfn buffer).
const FILL_CHUNK: u64 = 32 << 20;

/// How a fill gets the pages, and which device leaves it makes writable.
///
/// Only fills for a write make writable leaves (and mark those pages dirty): a read must not
/// dirty pages (their writeback or swap-out would then cost for nothing), and a device write
/// through a read-only leaf faults again as a write.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Fault every page in readable; read-only leaves.
    Read,
    /// Fault every page in writable (breaks COW in the owning process); writable leaves.
    Write,
    /// Map only what is present, fault nothing; read-only leaves.
    Snapshot,
    /// Map only what is present, fault nothing; writable leaves where the CPU's are (the
    /// neighbours of a write fault: a device writes streams).
    SnapshotWrite,
    /// Fault every page in readable (swapped-out pages come back, nothing is COW-broken or
    /// allocated: an untouched anonymous page maps the shared zero page); writable leaves
    /// where the CPU's are. The window around a write fault.
    ReadKeepWritable,
}

impl Fill {
    fn faults(self) -> bool {
        matches!(self, Fill::Read | Fill::Write | Fill::ReadKeepWritable)
    }
    fn writes(self) -> bool {
        matches!(
            self,
            Fill::Write | Fill::SnapshotWrite | Fill::ReadKeepWritable
        )
    }
}

/// The fault-around window in bytes for the knob's `window_kib`: a power of two of at least
/// one page (rounded down), so a window-aligned block is well defined.
pub(crate) fn window_bytes(window_kib: u32) -> u64 {
    let bytes = (u64::from(window_kib) << 10).max(pte::PAGE_SIZE);
    1u64 << (u64::BITS - 1 - bytes.leading_zeros())
}

/// The fault-around window of `page`: the `window`-aligned block around it, clipped to the
/// registration's `[reg_start, reg_end)`.
fn around(page: u64, window_kib: u32, reg_start: u64, reg_end: u64) -> (u64, u64) {
    let window = window_bytes(window_kib);
    let block = page & !(window - 1);
    (block.max(reg_start), (block + window).min(reg_end))
}

/// Whether userfaultfd is armed on any area of `[start, end)`.
///
/// Faults there are user space's to resolve. The driver takes them with the mmap lock held
/// (no `FAULT_FLAG_ALLOW_RETRY`), so the kernel would refuse them with `SIGBUS` and, with
/// `CONFIG_DEBUG_VM`, a stack dump; and they must never wait for the process's handler: device
/// faults are resolved in the one event thread the invalidations of every context depend on.
/// So on such areas a fill maps what is present and fails with `EFAULT` for the rest.
fn userfaultfd_armed(mmap: &MmapReadGuard<'_>, start: u64, end: u64) -> bool {
    let mut at = start as usize;
    while at < end as usize {
        match mmap.vma_lookup(at) {
            Some(vma) if vma.userfaultfd_armed() => return true,
            Some(vma) => at = vma.end(),
            // A hole: the fill fails there anyway.
            None => at += pte::PAGE_SIZE as usize,
        }
    }
    false
}

/// What a fill installed.
#[derive(Default)]
struct Filled {
    leaves: Leaves,
    /// Some page was backed by a huge (>= 2 MiB) CPU mapping.
    huge_backed: bool,
}

/// Whether the 512 entries starting at `i` can be one 2 MiB device leaf.
fn huge_block(pfns: &[HmmPfn], i: usize) -> Option<(u64, bool)> {
    let block = pfns.get(i..i + 512)?;
    let first = block[0];
    let pa = first.phys_addr()?;
    if first.map_order()? < 9 || pa % pte::HUGE_SIZE != 0 {
        return None;
    }
    let writable = first.is_writable();
    for (j, p) in block.iter().enumerate() {
        if p.phys_addr()? != pa + j as u64 * pte::PAGE_SIZE || p.is_writable() != writable {
            return None;
        }
    }
    Some((pa, writable))
}

impl Ctx {
    /// `MNIC_IOC_PREFETCH`, and registration with `REG_PREFETCH`.
    pub(crate) fn prefetch(&self, start: u64, len: u64, mm: &MmWithUser) -> Result {
        if len == 0 || start % pte::PAGE_SIZE != 0 || len % pte::PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let end = start.checked_add(len).ok_or(EINVAL)?;
        let registrations = self.registrations.lock();
        let region = registrations
            .list
            .iter()
            .map(|r| &r.notifier)
            .find(|r| r.start() as u64 <= start && end <= r.end() as u64)
            .ok_or(ENOENT)?;
        let write = region.data().flags & reg_flags::WRITE != 0;
        let mut at = start;
        while at < end {
            // Like a device fault: nothing to map back once the OOM reaper takes the mm
            // down, and a killed caller stops between chunks.
            if self.reaped.load(Relaxed) {
                return Err(EFAULT);
            }
            if kernel::current!().signal_pending() {
                return Err(EINTR);
            }
            let stop = (at + FILL_CHUNK).min(end);
            self.fill(
                region,
                mm,
                at,
                stop,
                if write { Fill::Write } else { Fill::Read },
            )?;
            at = stop;
        }
        Ok(())
    }

    /// `MNIC_IOC_PREFETCH` from user space (checks the caller's mm).
    pub(crate) fn prefetch_ioctl(&self, req: &abi::MnicRange) -> Result {
        if req.flags & !abi::RANGE_FLAG_WRITE != 0 || req.rsvd != 0 {
            return Err(EINVAL);
        }
        let mm = self.caller_mm()?;
        self.prefetch(req.addr, req.len, &mm)
    }

    /// The fault path of `docs/kernel-mm-api.md`: read sequence, hmm fault under the mmap lock,
    /// then under the notifier lock program the table only if no invalidation ran in between.
    fn fill(
        &self,
        region: &IntervalNotifier<Region>,
        mm: &MmWithUser,
        start: u64,
        end: u64,
        how: Fill,
    ) -> Result<Filled> {
        let access = match how {
            Fill::Read | Fill::ReadKeepWritable => Access::Read,
            Fill::Write => Access::Write,
            Fill::Snapshot | Fill::SnapshotWrite => Access::Snapshot,
        };
        let may_write = region.data().flags & reg_flags::WRITE != 0 && how.writes();
        // Allocates: before any lock.
        let mut range = Range::new(region, start as usize, end as usize, access)?;
        // The DMA slots of the blocks this fill may map, likewise before any lock (the notifier
        // lock is taken in reclaim); allocated when a fill first touches a block.
        {
            let access = self.dev.enter()?;
            region.data().dma.prepare(access.bound(), start, end)?;
        }
        let mut retries = 0;
        // Set when the range lies on a userfaultfd area: faults nothing, yet every page must be
        // there (writable for a write).
        let mut snapshot_only;
        loop {
            if retries > MAX_FILL_RETRIES {
                return Err(EBUSY);
            }
            let seq = region.read_begin();
            let faulted = {
                let mmap = mm.mmap_read_lock();
                // Checked under the same lock as the fault: the flags cannot change between.
                snapshot_only = how.faults() && userfaultfd_armed(&mmap, start, end);
                range.set_access(if snapshot_only {
                    Access::Snapshot
                } else {
                    access
                });
                range.fault(&seq, &mmap).map(|_| ())
            };
            match faulted {
                Ok(()) => {}
                Err(FaultError::Busy) => {
                    retries += 1;
                    self.stats.fault_retries.add(1, Relaxed);
                    continue;
                }
                Err(FaultError::Error(e)) => return Err(e),
            }
            let mut st = region.user_lock().lock();
            let Ok(current) = region.read_retry(seq, &st) else {
                retries += 1;
                self.stats.fault_retries.add(1, Relaxed);
                continue;
            };
            // The proof that the pfns are current; they are then read by index below.
            let _ = range.pfns_checked(&current)?;
            let pfns = range.pfns();
            // On a userfaultfd area nothing was faulted in: every page must be there already,
            // writable for a write.
            let present = |p: &HmmPfn| match how {
                Fill::Write => p.is_writable(),
                _ => p.is_valid(),
            };
            if snapshot_only && !pfns.iter().all(present) {
                return Err(EFAULT);
            }
            // A writable device entry lets the device write without the CPU's dirty bit ever
            // being set: mark those pages dirty first, or reclaim could drop a clean page
            // (MADV_FREE, a written-back file page) that the device then writes. Cleaning a
            // page later invalidates the device entry first.
            if may_write {
                for (i, pfn) in pfns.iter().enumerate() {
                    if pfn.is_writable() {
                        range.set_dirty(&current, i)?;
                    }
                }
            }
            let mut done = Filled::default();
            // Leaves hold bus addresses: every page is mapped for the device here (dma_map.rs).
            let access = self.dev.enter()?;
            let dev = access.bound();
            let dma = &region.data().dma;
            // Blocks whose 4 KiB leaves a 2 MiB leaf replaced: [first, end).
            let mut replaced: Option<(u64, u64)> = None;
            // A failure stops the loop, but what was replaced until then is still invalidated.
            let mut failed = Ok(());
            let mut i = 0;
            while i < pfns.len() {
                let va = start + i as u64 * pte::PAGE_SIZE;
                if va % pte::HUGE_SIZE == 0 {
                    let huge = match huge_block(pfns, i).map(|(pa, w)| (dma.map_2m(dev, va, pa), w))
                    {
                        Some((Ok(bus), w)) => bus.map(|bus| (bus, w)),
                        Some((Err(e), _)) => {
                            failed = Err(e);
                            break;
                        }
                        None => None,
                    };
                    if let Some((bus, w)) = huge {
                        if st.table.set_2m(va, bus, w && may_write)? != 0 {
                            let end = va + pte::HUGE_SIZE;
                            replaced = Some(
                                replaced.map_or((va, end), |(lo, hi)| (lo.min(va), hi.max(end))),
                            );
                        }
                        done.leaves.huge += 1;
                        done.huge_backed = true;
                        i += 512;
                        continue;
                    }
                }
                let pfn = pfns[i];
                match pfn.phys_addr() {
                    Some(pa) => {
                        let bus = match dma.map_4k(dev, va, pa) {
                            Ok(bus) => bus,
                            Err(e) => {
                                failed = Err(e);
                                break;
                            }
                        };
                        if st.table.set_4k(va, bus, pfn.is_writable() && may_write)? {
                            let block = va & !(pte::HUGE_SIZE - 1);
                            let end = block + pte::HUGE_SIZE;
                            replaced = Some(
                                replaced
                                    .map_or((block, end), |(lo, hi)| (lo.min(block), hi.max(end))),
                            );
                        }
                        done.leaves.small += 1;
                        done.huge_backed |= pfn.map_order().unwrap_or(0) >= 9;
                    }
                    // A snapshot only maps what is there; a fault must get every page.
                    None if pfn.is_error() && how.faults() => return Err(EFAULT),
                    None => {}
                }
                i += 1;
            }
            if let Some((lo, hi)) = replaced {
                self.forget_replaced(&mut st, lo, hi);
            }
            return failed.map(|()| done);
        }
    }

    /// The device may still cache 4 KiB translations that 2 MiB leaves over [lo, hi) replaced
    /// in the table: invalidate them. The SYNC behind it is recorded as pending, like a cleared
    /// range's, so an invalidation that later finds nothing left to clear there still waits
    /// for it (the rule "the table shows everything the device may cache", docs/driver.md).
    /// The RESUME of the fault that led here is posted after it, so the device has forgotten
    /// them before it continues.
    fn forget_replaced(&self, st: &mut CtxState, lo: u64, hi: u64) {
        let cmd = st.invalidation(self.index, lo, hi);
        match self.dev.post_sync(&[cmd]) {
            Ok(t) => {
                st.pending = Some(t);
                st.unflushed = false;
            }
            // Stopped: it uses no translation any more.
            Err(_) if self.dev.is_quiesced() => {}
            // Going (unbind started) but not stopped: it may still have the replaced leaves
            // cached. Remember that it was not told, so that the next invalidation of any range
            // posts (or, failing, waits for the device to stop) instead of returning at once,
            // as the OOM reaper's path does.
            Err(_) => st.unflushed = true,
        }
    }

    /// Resolves a device fault (spec §12) and answers it with RESUME or ABORT.
    pub(crate) fn handle_fault(&self, va: u64, write: bool, id: u64) {
        self.stats.faults.add(1, Relaxed);
        let result = self.resolve(va, write);
        self.fault_resolved(va, write, id, &result);
        pr_debug!(
            "mnic ctx {}: device fault {:#x} write {} id {}: {:?}\n",
            self.index,
            va,
            write,
            id,
            result
        );
        let cmd = match result {
            Ok(()) => {
                self.stats.resumes.add(1, Relaxed);
                Command {
                    opcode: abi::cmd::RESUME,
                    ctx: self.index,
                    arg0: id,
                    ..Command::default()
                }
            }
            Err(e) => {
                self.stats.aborts.add(1, Relaxed);
                Command {
                    opcode: abi::cmd::ABORT,
                    ctx: self.index,
                    arg0: id,
                    arg1: e.to_errno().unsigned_abs() as u64,
                    ..Command::default()
                }
            }
        };
        let _ = self.dev.post_answer(cmd);
        self.fault_answered(id, &result);
    }

    fn resolve(&self, va: u64, write: bool) -> Result {
        // Fault injection (debugfs `fault_resolve_delay_ms`, one shot): a fault that takes
        // long to resolve, as one on an unresponsive FUSE server would.
        let delay = self.dev.resolve_delay_ms.xchg(0, Relaxed);
        if delay != 0 {
            kernel::time::delay::fsleep(kernel::time::Delta::from_millis(i64::from(delay)));
        }
        let page = va & !(pte::PAGE_SIZE - 1);
        // The process may be exiting (or being reaped): then there is nothing to map.
        if self.reaped.load(Relaxed) {
            return Err(EFAULT);
        }
        // Dropped with `mmput_async`: if the process exits meanwhile, the last reference must
        // not run a whole `exit_mmap` in the event thread every context depends on.
        let mm = MmWithUser::into_mmput_async(self.mm.mmget_not_zero().ok_or(EFAULT)?);
        let registrations = self.registrations.lock();
        let mut denied = false;
        let region = registrations.list.iter().map(|r| &r.notifier).find(|r| {
            let covers = r.start() as u64 <= page && page < r.end() as u64;
            let allowed = r.data().flags
                & if write {
                    reg_flags::WRITE
                } else {
                    reg_flags::READ
                }
                != 0;
            denied |= covers && !allowed;
            covers && allowed
        });
        let Some(region) = region else {
            return Err(if denied { EACCES } else { EFAULT });
        };
        let (reg_start, reg_end) = (region.start() as u64, region.end() as u64);
        let (lo, hi) = around(
            page,
            self.dev.fault_around_kib.load(Relaxed),
            reg_start,
            reg_end,
        );
        let present_only = if write {
            Fill::SnapshotWrite
        } else {
            Fill::Snapshot
        };
        // Fault-around (a device streams through memory): the window is faulted in, the
        // device's swap read-ahead, so a pass over swapped-out memory costs a fault per window,
        // not per page. A read fault takes its page with the window, in one hmm pass. A write
        // fault first faults its page writable (breaking COW there, and only there), then the
        // window readable: swapped-out neighbours come back, and those the CPU maps writable
        // get writable leaves (never more than the registration allows, `fill`). A window with
        // a page that cannot be faulted (a hole, PROT_NONE, beyond the end of a file,
        // userfaultfd) maps only the neighbours already present.
        if !write && hi - lo > pte::PAGE_SIZE {
            if let Ok(done) = self.fill(region, &mm, lo, hi, Fill::Read) {
                self.map_huge_block(region, &mm, page, &done, present_only);
                return Ok(());
            }
        }
        let how = if write { Fill::Write } else { Fill::Read };
        let done = self.fill(region, &mm, page, page + pte::PAGE_SIZE, how)?;
        if self.map_huge_block(region, &mm, page, &done, present_only) {
            return Ok(());
        }
        if hi - lo > pte::PAGE_SIZE {
            let faulted = write
                && self
                    .fill(region, &mm, lo, hi, Fill::ReadKeepWritable)
                    .is_ok();
            if !faulted {
                let _ = self.fill(region, &mm, lo, hi, present_only);
            }
        }
        Ok(())
    }

    /// Backed by a huge page: maps the whole 2 MiB block around `page` with one leaf if the
    /// registration covers it (the block is present: this faults nothing in). Returns whether
    /// it did.
    fn map_huge_block(
        &self,
        region: &IntervalNotifier<Region>,
        mm: &MmWithUser,
        page: u64,
        done: &Filled,
        how: Fill,
    ) -> bool {
        let block = page & !(pte::HUGE_SIZE - 1);
        if !done.huge_backed
            || done.leaves.huge != 0
            || block < region.start() as u64
            || block + pte::HUGE_SIZE > region.end() as u64
        {
            return false;
        }
        // A snapshot: the page that faulted is present now, and so is the rest of a huge
        // page; nothing the device did not touch is faulted in.
        let _ = self.fill(region, mm, block, block + pte::HUGE_SIZE, how);
        true
    }
}
