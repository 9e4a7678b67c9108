// SPDX-License-Identifier: GPL-2.0
//! A hardware context: one open file of `/dev/mnicN`, owned by the mm that opened it.
//!
//! Its registrations are mmu interval notifiers; its translation table is filled on demand
//! (device faults, prefetch) through `hmm` and torn down by the notifiers, which post
//! `INVALIDATE_RANGE` + `SYNC` and wait for the SYNC before the invalidation completes (the
//! invariant of `docs/spec.md` §7, whose rules `docs/driver.md` lists). No user page is ever
//! pinned.

use kernel::{
    mm::{
        hmm::{Access, FaultError, HmmPfn, Range},
        mmu_notifier::{
            IntervalNotifier, IntervalNotifierOps, Invalidated, Invalidation, WouldBlock,
        },
        Mm, MmWithUser, MmapReadGuard,
    },
    new_condvar, new_mutex, new_spinlock,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        lock::mutex::MutexBackend,
        Arc, CondVar, Mutex, SpinLock,
    },
    workqueue::{new_work, Work},
};

use crate::abi::{self, pte, reg_flags, Command};
use crate::device::{MnicDev, Ticket};
use crate::fault::FaultSlot;
use crate::pin::PinnedPages;
use crate::table::{self, Leaves, PageTable};

/// Restarts of one fill before it gives up with `EBUSY` (an invalidation storm must not keep a
/// fault or an ioctl in the kernel forever).
const MAX_FILL_RETRIES: u32 = 1000;
/// Largest registration: 1 GiB keeps the preallocated translation tables at 2 MiB.
pub(crate) const MAX_REGISTER_LEN: u64 = 1 << 30;
/// Prefetch works in pieces of this size (bounds the hmm pfn buffer).
const FILL_CHUNK: u64 = 32 << 20;

/// Table pages a context keeps that no registration needs (left by deregistrations): enough
/// to register the largest registration (1 GiB: 512 level-1 tables and a few above) again
/// without allocating, and a bound on what a context holds beyond its live registrations
/// (about 2 MiB).
const UNUSED_TABLES_KEPT: usize = 520;

/// Window of the fault-around (already present neighbours of a faulting page).
const FAULT_AROUND: u64 = 64 << 10;

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
}

impl Fill {
    fn faults(self) -> bool {
        matches!(self, Fill::Read | Fill::Write)
    }
    fn writes(self) -> bool {
        matches!(self, Fill::Write | Fill::SnapshotWrite)
    }
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

/// Per-context counters (reported by `MNIC_IOC_CTX_STATS`).
pub(crate) struct Stats {
    pub(crate) faults: Atomic<u64>,
    pub(crate) resumes: Atomic<u64>,
    pub(crate) aborts: Atomic<u64>,
    pub(crate) invalidations: Atomic<u64>,
    pub(crate) entries_invalidated: Atomic<u64>,
    pub(crate) sync_waits: Atomic<u64>,
    pub(crate) sync_wait_ns: Atomic<u64>,
    pub(crate) sync_wait_max_ns: Atomic<u64>,
    pub(crate) fault_retries: Atomic<u64>,
    /// Faults resolved in the event thread because the context's slot was taken.
    pub(crate) faults_inline: Atomic<u64>,
}

impl Stats {
    const fn new() -> Self {
        Stats {
            faults: Atomic::new(0),
            resumes: Atomic::new(0),
            aborts: Atomic::new(0),
            invalidations: Atomic::new(0),
            entries_invalidated: Atomic::new(0),
            sync_waits: Atomic::new(0),
            sync_wait_ns: Atomic::new(0),
            sync_wait_max_ns: Atomic::new(0),
            fault_retries: Atomic::new(0),
            faults_inline: Atomic::new(0),
        }
    }
}

/// What the notifier lock protects: the device-visible table and the last SYNC posted for it.
pub(crate) struct CtxState {
    pub(crate) table: PageTable,
    /// The last SYNC posted by an invalidation of this context (see `Region::invalidate`).
    pending: Option<Ticket>,
    /// Leaves were cleared but their INVALIDATE could not be posted (a non-blockable
    /// invalidation found the command queue busy): the next invalidation of this context must
    /// flush the whole context before anyone may rely on the entries being gone.
    unflushed: bool,
}

impl CtxState {
    /// The command that makes the device forget [start, end) and anything left unflushed.
    fn invalidation(&self, ctx: u16, start: u64, end: u64) -> Command {
        if self.unflushed {
            Command {
                opcode: abi::cmd::INVALIDATE_CTX,
                ctx,
                ..Command::default()
            }
        } else {
            Command {
                opcode: abi::cmd::INVALIDATE_RANGE,
                ctx,
                arg0: start,
                arg1: end - start,
                ..Command::default()
            }
        }
    }
}

/// One registration: its notifier and, in the pinned baseline mode, its pinned pages.
struct Registered {
    notifier: Pin<KBox<IntervalNotifier<Region>>>,
    pinned: Option<PinnedPages>,
}

/// The registrations of a context.
pub(crate) struct Registrations {
    list: KVec<Registered>,
    next_handle: u32,
}

#[pin_data]
pub(crate) struct Ctx {
    pub(crate) dev: Arc<MnicDev>,
    pub(crate) index: u16,
    /// The mm that opened the context (an `mmgrab` reference: it does not keep it alive).
    mm: ARef<Mm>,
    /// THE notifier lock (the user lock of every registration of this context).
    #[pin]
    pub(crate) state: Mutex<CtxState>,
    #[pin]
    pub(crate) regs: Mutex<Registrations>,
    /// Serialises changes to the set of intermediate tables: registration (which finds,
    /// allocates and links the tables its range lacks, then lists itself) against
    /// deregistration (which frees the tables no listed registration needs). Taken before
    /// `regs` and `state`, never under them or under the mmap lock.
    #[pin]
    tables_lock: Mutex<()>,
    /// Set once the queues are given and the context is enabled on the device.
    pub(crate) enabled: Atomic<bool>,
    /// Set by the one `MNIC_IOC_SETUP_QUEUES` that goes ahead (cleared again if it fails).
    pub(crate) queues_claimed: Atomic<bool>,
    /// The owning mm is being reaped (a non-blockable invalidation was seen): device faults
    /// are refused from now on, or they would map back what the OOM reaper takes away.
    reaped: Atomic<bool>,
    pub(crate) work_done: Atomic<u64>,
    #[pin]
    pub(crate) done_lock: Mutex<()>,
    #[pin]
    pub(crate) done_cv: CondVar,
    pub(crate) stats: Stats,
    /// The `address_space` (as an address; 0: none) through which the owner mapped this
    /// context's doorbell page, so unbind can zap the mapping: afterwards the BAR may be gone,
    /// or given to another device. Set by mmap, cleared at file release (the file, and so the
    /// mapping, is alive in between); the mutex keeps a zap and the release apart.
    #[pin]
    pub(crate) doorbell_mapping: Mutex<usize>,
    /// The device fault waiting for this context's worker (`fault.rs`).
    #[pin]
    pub(crate) fault_slot: SpinLock<FaultSlot>,
    #[pin]
    pub(crate) fault_work: Work<Ctx>,
}

/// The data of one registration's notifier.
pub(crate) struct Region {
    ctx: Arc<Ctx>,
    handle: u32,
    flags: u32,
}

impl IntervalNotifierOps for Region {
    type Locked = CtxState;
    type Backend = MutexBackend;
    type Finish = Ticket;

    fn user_lock(&self) -> &Mutex<CtxState> {
        &self.ctx.state
    }

    /// Steps 1 and 2 of the invariant: clear the entries, post INVALIDATE + SYNC. Step 3 (the
    /// wait) is in `invalidate_finish`, so one munmap over many registrations waits once.
    fn invalidate<'a>(
        &'a self,
        inv: Invalidation<'a, Self>,
    ) -> Result<Invalidated<'a, Self>, WouldBlock<'a>> {
        let ctx = &self.ctx;
        let mut st = inv.lock()?;
        let (start, end) = inv.clamped();
        let cleared = st.table.clear(start as u64, end as u64);
        pr_debug!(
            "mnic ctx {}: invalidate {:#x}..{:#x} {:?} blockable {}: {} + {} leaves\n",
            ctx.index,
            start,
            end,
            inv.event(),
            inv.is_blockable(),
            cleared.small,
            cleared.huge
        );
        ctx.stats.invalidations.add(1, Relaxed);
        ctx.stats.entries_invalidated.add(cleared.total(), Relaxed);
        let dev = &ctx.dev;
        if !inv.is_blockable() {
            // Only the OOM reaper invalidates without blocking: the mm is going away.
            ctx.reaped.store(true, Relaxed);
        }

        if cleared.total() == 0 && !st.unflushed {
            // The device caches only valid leaves, and every leaf cleared so far had its SYNC
            // posted. If the last such SYNC has not executed yet (a concurrent invalidation is
            // still waiting for it), this range may still be cached: wait for it as well.
            return match st.pending {
                Some(t) if !dev.sync_done(t) && !dev.is_quiesced() => {
                    if let Some(wb) = st.would_block() {
                        return Err(wb);
                    }
                    Ok(st.finish_later(t))
                }
                _ => Ok(st.done()),
            };
        }
        let cmd = st.invalidation(ctx.index, start as u64, end as u64);
        if !st.is_blockable() {
            // OOM reaper: may not sleep. Post without waiting and ask to be called again; the
            // retry finds the entries gone and waits (or not) for this SYNC above. If even
            // posting would have to wait, remember that the device still has to be told.
            match dev.try_post_sync(&[cmd]) {
                Ok(t) => {
                    st.pending = Some(t);
                    st.unflushed = false;
                }
                Err(_) if dev.is_quiesced() => st.unflushed = false,
                Err(_) => st.unflushed = true,
            }
            return match st.would_block() {
                Some(wb) => Err(wb),
                None => Ok(st.done()),
            };
        }
        match dev.post_sync(&[cmd]) {
            Ok(t) => {
                st.pending = Some(t);
                st.unflushed = false;
                Ok(st.finish_later(t))
            }
            // The device is stopped (reset at unbind, or dead and stopped): no DMA any more.
            Err(_) if dev.is_quiesced() => {
                st.unflushed = false;
                Ok(st.done())
            }
            // Going (unbind in progress, or just declared dead) but not yet stopped: it may still
            // use the cleared entries. Return only once it is stopped.
            Err(_) => Ok(st.finish_later(Ticket::QUIESCED)),
        }
    }

    fn invalidate_finish(&self, ticket: Ticket) {
        let stats = &self.ctx.stats;
        if let Ok(waited) = self.ctx.dev.wait_sync(ticket) {
            let ns = waited.as_nanos().max(0) as u64;
            self.ctx.dev.record_sync_wait(ns);
            stats.sync_waits.add(1, Relaxed);
            stats.sync_wait_ns.add(ns, Relaxed);
            let mut max = stats.sync_wait_max_ns.load(Relaxed);
            while ns > max {
                match stats.sync_wait_max_ns.cmpxchg(max, ns, Relaxed) {
                    Ok(_) => break,
                    Err(now) => max = now,
                }
            }
        }
    }
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
    pub(crate) fn new(dev: Arc<MnicDev>, index: u16) -> Result<impl PinInit<Self, Error>> {
        let task = kernel::current!();
        let mm: &MmWithUser = task.mm().ok_or(EINVAL)?;
        let mm: ARef<Mm> = ARef::from(&**mm);
        let table = {
            let access = dev.enter()?;
            PageTable::new(access.bound())?
        };
        Ok(try_pin_init!(Ctx {
            dev,
            index,
            mm,
            state <- new_mutex!(CtxState { table, pending: None, unflushed: false }),
            regs <- new_mutex!(Registrations { list: KVec::new(), next_handle: 1 }),
            tables_lock <- new_mutex!(()),
            enabled: Atomic::new(false),
            queues_claimed: Atomic::new(false),
            reaped: Atomic::new(false),
            work_done: Atomic::new(0),
            done_lock <- new_mutex!(()),
            done_cv <- new_condvar!(),
            stats: Stats::new(),
            doorbell_mapping <- new_mutex!(0),
            fault_slot <- new_spinlock!(FaultSlot { pending: None, closing: false }),
            fault_work <- new_work!("mnic::Ctx::fault_work"),
        }? Error))
    }

    /// The caller's mm, if it is the one that owns this context.
    fn caller_mm(&self) -> Result<ARef<MmWithUser>> {
        let task = kernel::current!();
        let mm = task.mm().ok_or(EPERM)?;
        if mm.as_raw() != self.mm.as_raw() {
            // A context belongs to the mm that opened it (e.g. a child after fork opens its own).
            return Err(EPERM);
        }
        Ok(ARef::from(mm))
    }

    /// `MNIC_IOC_REGISTER`.
    pub(crate) fn register(self: &Arc<Self>, req: &mut abi::MnicRegister) -> Result {
        let (start, len) = (req.addr, req.len);
        if req.flags & !reg_flags::ALL != 0
            || req.flags & (reg_flags::READ | reg_flags::WRITE) == 0
            || req.handle != 0
            || len == 0
            || len > MAX_REGISTER_LEN
            || start % pte::PAGE_SIZE != 0
            || len % pte::PAGE_SIZE != 0
            || start.checked_add(len).is_none_or(|end| end > pte::VA_LIMIT)
        {
            return Err(EINVAL);
        }
        let end = start + len;
        let mm = self.caller_mm()?;
        let write = req.flags & reg_flags::WRITE != 0;
        if self.regs.lock().list.len() >= abi::MAX_REGISTRATIONS as usize {
            return Err(ENOSPC);
        }

        // Until this registration is listed, no deregistration may free tables it needs.
        let tables_guard = self.tables_lock.lock();
        // Translation tables for the range: found missing under the lock, allocated without
        // it (invalidations must never wait for an allocation), linked in under it again.
        let mut keys = KVec::with_capacity(table::max_tables(start, end), GFP_KERNEL)?;
        self.state.lock().table.missing(start, end, &mut keys);
        let mut new_tables = {
            let access = self.dev.enter()?;
            PageTable::allocate(access.bound(), &keys)?
        };
        self.state.lock().table.grow(&mut new_tables)?;
        drop(new_tables);

        let handle = {
            let mut regs = self.regs.lock();
            let handle = regs.next_handle;
            regs.next_handle = regs.next_handle.wrapping_add(1).max(1);
            handle
        };
        let region = KBox::pin_init(
            IntervalNotifier::new(
                &mm,
                start as usize,
                len as usize,
                Region {
                    ctx: self.clone(),
                    handle,
                    flags: req.flags,
                },
            ),
            GFP_KERNEL,
        )?;
        // The baseline mode pins every page now (and keeps it pinned until deregistration).
        let pinned = if req.flags & reg_flags::PINNED != 0 {
            Some(PinnedPages::pin(
                start,
                (len / pte::PAGE_SIZE) as usize,
                write,
            )?)
        } else {
            None
        };
        let mut list_entry = KVec::with_capacity(1, GFP_KERNEL)?;
        list_entry.push(
            Registered {
                notifier: region,
                pinned,
            },
            GFP_KERNEL,
        )?;
        {
            let mut regs = self.regs.lock();
            if regs.list.len() >= abi::MAX_REGISTRATIONS as usize {
                drop(regs);
                drop(list_entry);
                return Err(ENOSPC);
            }
            // Reserve before moving so the push under the lock cannot fail half way.
            regs.list.reserve(1, GFP_KERNEL)?;
            for r in list_entry.drain_all() {
                regs.list.push_within_capacity(r).map_err(|_| ENOMEM)?;
            }
        }
        drop(tables_guard);
        req.handle = handle;
        if req.flags & (reg_flags::PREFETCH | reg_flags::PINNED) != 0 {
            if let Err(e) = self.prefetch(start, len, &mm) {
                let _ = self.deregister(handle);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Fails with `EPERM` unless called from the mm that owns the context.
    pub(crate) fn check_owner(&self) -> Result {
        self.caller_mm().map(|_| ())
    }

    /// `MNIC_IOC_DEREGISTER`.
    pub(crate) fn deregister(&self, handle: u32) -> Result {
        self.check_owner()?;
        let region = {
            let mut regs = self.regs.lock();
            let i = regs.position(handle).ok_or(ENOENT)?;
            regs.list.remove(i).map_err(|_| EINVAL)?
        };
        let Registered { notifier, pinned } = region;
        let (start, end) = (notifier.start() as u64, notifier.end() as u64);
        // Fence first, remove the notifier last (as `ib_umem_odp_free` does): take the
        // translations down behind a SYNC while the notifier still hears every invalidation of
        // the range (nothing can fill it again: the registration left the list under `regs`,
        // and fills find their registration there). Removed first, an munmap in between would
        // free pages the table still maps, and nobody would tell the device. Other
        // registrations over the same pages fault them back on demand. Pinned pages are
        // released only once the device cannot use them any more.
        let result = self.shoot_down(start, end);
        // Fault injection (debugfs): widens the window between the two steps for tests.
        crate::device::fault_delay(&self.dev.deregister_delay_ms);
        drop(notifier);
        drop(pinned);
        result.and(self.prune_tables())
    }

    /// Bounds the translation tables that no registration still listed needs: a process that
    /// registers and deregisters many ranges would otherwise keep a table page per 2 MiB it
    /// ever registered, until it closes the context. Up to `UNUSED_TABLES_KEPT` stay (cheap
    /// re-registration); past that all of them are freed.
    fn prune_tables(&self) -> Result {
        let _tables = self.tables_lock.lock();
        let mut keep = KVec::with_capacity(abi::MAX_REGISTRATIONS as usize, GFP_KERNEL)?;
        for r in self.regs.lock().list.iter() {
            let range = (r.notifier.start() as u64, r.notifier.end() as u64);
            // Cannot fail: the list never holds more than MAX_REGISTRATIONS.
            let _ = keep.push_within_capacity(range);
        }
        // Tables no registration needs stay linked (zeroed by the shoot-down) as long as there
        // are few: registering the same range again then allocates nothing. Past the bound,
        // every such table of the context goes at once.
        let most = self.state.lock().table.prunable(&keep);
        if most <= UNUSED_TABLES_KEPT {
            return Ok(());
        }
        // Reserved outside the notifier lock (invalidations must never wait for memory);
        // `tables_lock` keeps the set of tables from growing in between.
        let mut freed = KVec::with_capacity(most, GFP_KERNEL)?;
        self.state
            .lock()
            .table
            .prune(0, pte::VA_LIMIT, &keep, &mut freed);
        if freed.is_empty() {
            return Ok(());
        }
        // A walk that began before the unlinking may still read these pages: free them only
        // after a SYNC (commands run between work steps, and walks happen inside steps).
        let ticket = self.dev.post_sync(&[]).unwrap_or(Ticket::QUIESCED);
        let _ = self.dev.wait_sync(ticket);
        drop(freed);
        Ok(())
    }

    /// Clears [start, end) and waits until the device dropped it.
    fn shoot_down(&self, start: u64, end: u64) -> Result {
        let ticket = {
            let mut st = self.state.lock();
            let cleared = st.table.clear(start, end);
            if cleared.total() == 0 && !st.unflushed {
                return Ok(());
            }
            let cmd = st.invalidation(self.index, start, end);
            st.unflushed = false;
            match self.dev.post_sync(&[cmd]) {
                Ok(t) => {
                    st.pending = Some(t);
                    t
                }
                // The device is going: the entries are fenced once it is stopped.
                Err(_) => Ticket::QUIESCED,
            }
        };
        self.dev.wait_sync(ticket).map(|_| ())
    }

    /// `MNIC_IOC_PREFETCH`, and registration with `REG_PREFETCH`.
    pub(crate) fn prefetch(&self, start: u64, len: u64, mm: &MmWithUser) -> Result {
        if len == 0 || start % pte::PAGE_SIZE != 0 || len % pte::PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let end = start.checked_add(len).ok_or(EINVAL)?;
        let regs = self.regs.lock();
        let region = regs
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
            Fill::Read => Access::Read,
            Fill::Write => Access::Write,
            Fill::Snapshot | Fill::SnapshotWrite => Access::Snapshot,
        };
        let may_write = region.data().flags & reg_flags::WRITE != 0 && how.writes();
        // Allocates: before any lock.
        let mut range = Range::new(region, start as usize, end as usize, access)?;
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
            // Blocks whose 4 KiB leaves a 2 MiB leaf replaced: [first, end).
            let mut replaced: Option<(u64, u64)> = None;
            let mut i = 0;
            while i < pfns.len() {
                let va = start + i as u64 * pte::PAGE_SIZE;
                if va % pte::HUGE_SIZE == 0 {
                    if let Some((pa, w)) = huge_block(pfns, i) {
                        if st.table.set_2m(va, pa, w && may_write)? != 0 {
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
                        if st.table.set_4k(va, pa, pfn.is_writable() && may_write)? {
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
            return Ok(done);
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
        // Failing means the device is gone: it uses no translation any more.
        if let Ok(t) = self.dev.post_sync(&[cmd]) {
            st.pending = Some(t);
            st.unflushed = false;
        }
    }

    /// Resolves a device fault (spec §12) and answers it with RESUME or ABORT.
    pub(crate) fn handle_fault(&self, va: u64, write: bool, id: u64) {
        self.stats.faults.add(1, Relaxed);
        let result = self.resolve(va, write);
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
        let _ = self.dev.post(&[cmd]);
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
        let regs = self.regs.lock();
        let mut denied = false;
        let region = regs.list.iter().map(|r| &r.notifier).find(|r| {
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
        let how = if write { Fill::Write } else { Fill::Read };
        let around = if write {
            Fill::SnapshotWrite
        } else {
            Fill::Snapshot
        };
        let done = self.fill(region, &mm, page, page + pte::PAGE_SIZE, how)?;
        let (reg_start, reg_end) = (region.start() as u64, region.end() as u64);
        // Backed by a huge page: map the whole 2 MiB block with one leaf if the registration
        // covers it (the block is present: this faults nothing in).
        let block = page & !(pte::HUGE_SIZE - 1);
        if done.huge_backed
            && done.leaves.huge == 0
            && reg_start <= block
            && block + pte::HUGE_SIZE <= reg_end
        {
            // A snapshot: the page that faulted is present now, and so is the rest of a
            // huge page; nothing the device did not touch is faulted in.
            let _ = self.fill(region, &mm, block, block + pte::HUGE_SIZE, around);
            return Ok(());
        }
        // Fault-around without faulting: map the neighbours that are already present (a
        // device streams through memory), never bring in pages it did not touch.
        let lo = (page & !(FAULT_AROUND - 1)).max(reg_start);
        let hi = ((page & !(FAULT_AROUND - 1)) + FAULT_AROUND).min(reg_end);
        if hi - lo > pte::PAGE_SIZE {
            let _ = self.fill(region, &mm, lo, hi, around);
        }
        Ok(())
    }

    /// Called for `WORK_DONE` events.
    pub(crate) fn work_completed(&self) {
        self.work_done.add(1, Relaxed);
        let _guard = self.done_lock.lock();
        self.done_cv.notify_all();
    }

    /// Tears the context down (file release): stop the context on the device behind a SYNC,
    /// then remove every registration.
    pub(crate) fn teardown(&self) {
        if self.enabled.load(Relaxed) {
            let disable = Command {
                opcode: abi::cmd::CTX_DISABLE,
                ctx: self.index,
                ..Command::default()
            };
            if let Ok(t) = self.dev.post_sync(&[disable]) {
                let _ = self.dev.wait_sync(t);
            }
        }
        // A fault being resolved finishes (its RESUME/ABORT is refused: the context is
        // disabled); none is queued after this.
        self.stop_fault_work();
        // Dropped outside the lock: removal waits for running callbacks.
        let list = core::mem::take(&mut self.regs.lock().list);
        drop(list);
    }

    /// Intermediate translation tables the context holds (debugfs).
    pub(crate) fn tables(&self) -> usize {
        self.state.lock().table.tables()
    }

    /// Valid leaves over [start, end) (`MNIC_IOC_QUERY`).
    pub(crate) fn count(&self, start: u64, end: u64) -> Leaves {
        self.state.lock().table.count(start, end)
    }

    pub(crate) fn registrations(&self) -> usize {
        self.regs.lock().list.len()
    }

    /// Pages of [start, end) pinned by baseline-mode registrations (overlaps count twice).
    pub(crate) fn pinned_pages(&self, start: u64, end: u64) -> u64 {
        self.regs
            .lock()
            .list
            .iter()
            .filter(|r| r.pinned.as_ref().is_some_and(|p| p.len() > 0))
            .map(|r| {
                let lo = (r.notifier.start() as u64).max(start);
                let hi = (r.notifier.end() as u64).min(end);
                hi.saturating_sub(lo) / pte::PAGE_SIZE
            })
            .sum()
    }
}

impl Registrations {
    fn position(&self, handle: u32) -> Option<usize> {
        self.list
            .iter()
            .position(|r| r.notifier.data().handle == handle)
    }
}
