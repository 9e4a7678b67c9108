// SPDX-License-Identifier: GPL-2.0
//! A hardware context: one open file of `/dev/mnicN`, owned by the mm that opened it. This file
//! holds what a context is made of and its lifecycle (creation, owner check, teardown,
//! counters). What a context does is split by job, each an `impl Ctx` of its own file:
//!
//! - `registration.rs`: registering and deregistering ranges (mmu interval notifiers);
//! - `invalidate.rs`: the notifier callbacks, which clear translations and post
//!   `INVALIDATE_RANGE` + `SYNC`, and wait for the SYNC before the invalidation completes (the
//!   invariant of `docs/spec.md` §7, whose rules `docs/driver.md` lists);
//! - `fill.rs`: filling the translation table on demand (device faults, prefetch) through `hmm`;
//! - `fault.rs`: handing device faults from the event thread to the context's worker;
//! - `remote.rs`: giving the device the remote keys of `REMOTE` registrations (`KEY_SET`,
//!   the key itself is `remote_key.rs`) and taking them back (`KEY_CLEAR`).
//!
//! No user page is ever pinned (but by the pinned baseline, `pin.rs`).

use kernel::{
    mm::{mmu_notifier::IntervalNotifier, Mm, MmWithUser},
    new_condvar, new_mutex, new_spinlock,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc, CondVar, Mutex, SpinLock,
    },
    time::Delta,
    workqueue::{new_work, Work},
};

use crate::abi::{self, pte, Command};
use crate::cmd_ring::Ticket;
use crate::device::MnicDev;
use crate::dma_map::DmaPages;
use crate::latency::{FaultClock, Latency};
use crate::pin::PinnedPages;
use crate::remote_key::RemoteKey;
use crate::shadow::ShadowPage;
use crate::table::{Leaves, PageTable};

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
    /// SYNC-wait and fault latency histograms (`MNIC_IOC_CTX_LATENCY`).
    pub(crate) latency: Latency,
    /// When the unanswered faults were received (`observe.rs`).
    pub(crate) fault_clock: FaultClock,
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
            latency: Latency::new(),
            fault_clock: FaultClock::new(),
        }
    }
}

/// What the notifier lock protects: the device-visible table and the last SYNC posted for it.
pub(crate) struct CtxState {
    pub(crate) table: PageTable,
    /// The last SYNC posted by an invalidation of this context (see `Region::invalidate`).
    pub(crate) pending: Option<Ticket>,
    /// Leaves were cleared but their INVALIDATE could not be posted (a non-blockable
    /// invalidation found the command queue busy): the next invalidation of this context must
    /// flush the whole context before anyone may rely on the entries being gone.
    pub(crate) unflushed: bool,
}

/// One registration: its notifier and, in the pinned baseline mode, its pinned pages.
pub(crate) struct Registered {
    pub(crate) notifier: Pin<KBox<IntervalNotifier<Region>>>,
    pub(crate) pinned: Option<PinnedPages>,
}

/// The registrations of a context.
pub(crate) struct Registrations {
    pub(crate) list: KVec<Registered>,
    pub(crate) next_handle: u32,
}

/// A device fault waiting for its context's worker (`fault.rs`).
#[derive(Clone, Copy)]
pub(crate) struct PendingFault {
    pub(crate) va: u64,
    pub(crate) write: bool,
    pub(crate) id: u64,
    /// A network fault (spec §12): raised by a packet from the fabric, not by the context's
    /// own work. Resolved the same way; only observed apart (`observe.rs`).
    pub(crate) network: bool,
}

/// The fault slot of a context (under `Ctx::fault_slot`): the device parks at most one
/// fault per context (spec §12), so one slot is enough.
pub(crate) struct FaultSlot {
    pub(crate) pending: Option<PendingFault>,
    /// Teardown has begun: nothing is queued any more.
    pub(crate) closing: bool,
}

/// One hardware context (one open file).
#[pin_data]
pub(crate) struct Ctx {
    pub(crate) dev: Arc<MnicDev>,
    pub(crate) index: u16,
    /// The mm that opened the context (an `mmgrab` reference: it does not keep it alive).
    pub(crate) mm: ARef<Mm>,
    /// THE notifier lock (the user lock of every registration of this context).
    #[pin]
    pub(crate) state: Mutex<CtxState>,
    /// The registrations (`registration.rs`).
    #[pin]
    pub(crate) registrations: Mutex<Registrations>,
    /// Serialises changes to the set of intermediate tables: registration (which finds,
    /// allocates and links the tables its range lacks, then lists itself) against
    /// deregistration (which frees the tables no listed registration needs). Taken before
    /// `registrations` and `state`, never under them or under the mmap lock.
    #[pin]
    pub(crate) tables_lock: Mutex<()>,
    /// Orders giving remote keys to the device against enabling the context and against
    /// deregistration (`remote.rs`). Taken before `registrations` and `state`, never
    /// under them.
    #[pin]
    pub(crate) key_lock: Mutex<()>,
    /// Set once the queues are given and the context is enabled on the device.
    pub(crate) enabled: Atomic<bool>,
    /// Set by the one `MNIC_IOC_SETUP_QUEUES` that goes ahead (cleared again if it fails).
    pub(crate) queues_claimed: Atomic<bool>,
    /// The owning mm is being reaped (a non-blockable invalidation was seen): device faults
    /// are refused from now on, or they would map back what the OOM reaper takes away.
    pub(crate) reaped: Atomic<bool>,
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
    /// The work queue's shadow page (`MNIC_IOC_SHADOW`, spec §4a), given before the queues
    /// are set up and kept until the context is dropped: the process may map it (a mapping
    /// holds the file, which holds the context), and the device polls it until `CTX_DISABLE`
    /// (teardown waits for that). The mutex orders giving a page against
    /// `MNIC_IOC_SETUP_QUEUES` (see [`Ctx::give_shadow`]).
    #[pin]
    pub(crate) shadow: Mutex<Option<ShadowPage>>,
    /// The device fault waiting for this context's worker (`fault.rs`).
    #[pin]
    pub(crate) fault_slot: SpinLock<FaultSlot>,
    #[pin]
    pub(crate) fault_work: Work<Ctx>,
}

/// The data of one registration's notifier (its callbacks are in `invalidate.rs`).
pub(crate) struct Region {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) handle: u32,
    /// `reg_flags` of the registration.
    pub(crate) flags: u32,
    /// With `reg_flags::REMOTE`: its remote key (`remote_key.rs`).
    pub(crate) remote: Option<RemoteKey>,
    /// The DMA mappings its leaves point at (`dma_map.rs`): slots per 2 MiB block, allocated
    /// when a fill first touches the block.
    pub(crate) dma: DmaPages,
}

impl Ctx {
    /// A context for hardware index `index`, owned by the caller's mm, with an empty
    /// translation table.
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
            registrations <- new_mutex!(Registrations { list: KVec::new(), next_handle: 1 }),
            tables_lock <- new_mutex!(()),
            key_lock <- new_mutex!(()),
            enabled: Atomic::new(false),
            queues_claimed: Atomic::new(false),
            reaped: Atomic::new(false),
            work_done: Atomic::new(0),
            done_lock <- new_mutex!(()),
            done_cv <- new_condvar!(),
            stats: Stats::new(),
            doorbell_mapping <- new_mutex!(0),
            shadow <- new_mutex!(None),
            fault_slot <- new_spinlock!(FaultSlot { pending: None, closing: false }),
            fault_work <- new_work!("mnic::Ctx::fault_work"),
        }? Error))
    }

    /// The caller's mm, if it is the one that owns this context.
    pub(crate) fn caller_mm(&self) -> Result<ARef<MmWithUser>> {
        let task = kernel::current!();
        let mm = task.mm().ok_or(EPERM)?;
        if mm.as_raw() != self.mm.as_raw() {
            // A context belongs to the mm that opened it (e.g. a child after fork opens its own).
            return Err(EPERM);
        }
        Ok(ARef::from(mm))
    }

    /// Fails with `EPERM` unless called from the mm that owns the context.
    pub(crate) fn check_owner(&self) -> Result {
        self.caller_mm().map(|_| ())
    }

    /// `MNIC_IOC_SHADOW`: gives the context a zeroed shadow page for its work-queue tail, once
    /// (a second call keeps the first page).
    ///
    /// `MNIC_IOC_SETUP_QUEUES` claims the queues first and reads the page under the mutex
    /// after; this checks the claim under the mutex. So either the claim is seen here
    /// (`EBUSY`, no page), or the page is there when the context entry is written: a page the
    /// device does not know about is never handed out.
    pub(crate) fn give_shadow(&self) -> Result {
        self.check_owner()?;
        if self.dev.caps & abi::caps::SHADOW == 0 {
            return Err(EOPNOTSUPP);
        }
        let mut shadow = self.shadow.lock();
        if self.queues_claimed.load(Relaxed) {
            return Err(EBUSY);
        }
        if shadow.is_none() {
            let access = self.dev.enter()?;
            *shadow = Some(ShadowPage::new(access.bound())?);
        }
        Ok(())
    }

    /// `MNIC_IOC_SYNC`: a SYNC alone, waited for (a device fence for user space).
    pub(crate) fn fence(&self) -> Result {
        let ticket = self.dev.post_sync(&[])?;
        let waited = self.dev.wait_sync(ticket)?;
        self.record_sync_wait(waited);
        Ok(())
    }

    /// Counts one SYNC wait of this context (its counters and the device's histogram).
    pub(crate) fn record_sync_wait(&self, waited: Delta) {
        let ns = waited.as_nanos().max(0) as u64;
        let stats = &self.stats;
        self.dev.latency.hist.sync_wait.record(ns);
        stats.latency.sync_wait.record(ns);
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

    /// Called for `WORK_DONE` events.
    pub(crate) fn work_completed(&self) {
        self.work_done.add(1, Relaxed);
        let _guard = self.done_lock.lock();
        self.done_cv.notify_all();
    }

    /// Wakes this context's `MNIC_IOC_WAIT` sleepers (they see the device gone). Allocates
    /// nothing: it may run inside an invalidation.
    pub(crate) fn wake_waiters(&self) {
        self.done_cv.notify_all();
    }

    /// Removes the doorbell page from the process that mapped it (unbind): once the driver
    /// lets the BAR go, a store there must fault (SIGBUS: the mapping has no fault handler),
    /// not reach whatever the address decodes to next.
    pub(crate) fn zap_doorbell(&self) {
        let mapping = self.doorbell_mapping.lock();
        if *mapping != 0 {
            // SAFETY: `*mapping` is the `f_mapping` of the context's open file (set by its
            // mmap, cleared by its release under this same lock, so the file and its
            // mapping are alive while we hold it). Every context maps page 0 of its file.
            unsafe {
                kernel::bindings::unmap_mapping_range(
                    *mapping as *mut kernel::bindings::address_space,
                    0,
                    abi::DOORBELL_PAGE_SIZE as _,
                    1,
                )
            };
        }
    }

    /// Tears the context down (file release): stop the context on the device behind a SYNC
    /// (which also drops its remote keys there), then remove every registration (which
    /// forgets the keys in the device's set).
    pub(crate) fn teardown(&self) {
        if self.enabled.load(Relaxed) {
            let disable = Command {
                opcode: abi::cmd::CTX_DISABLE,
                ctx: self.index,
                ..Command::default()
            };
            // Once this returns the context (its table, its shadow page, which the device
            // writes) may be freed: if the disable cannot be posted (the device is going),
            // wait until it is stopped instead, as an invalidation does.
            let t = self.dev.post_sync(&[disable]).unwrap_or(Ticket::QUIESCED);
            let _ = self.dev.wait_sync(t);
            // The entry would still say valid and point at this context's table, which is
            // freed with it: the device reads entries only at CTX_ENABLE, but the oracle
            // (spec §8a) walks the table of every valid entry whenever the next context with
            // this index reports an invalidation, and would read freed memory as a table.
            let _ = self
                .dev
                .write_ctx_entry(self.index, &abi::CtxEntry::default());
        }
        // A fault being resolved finishes (its RESUME/ABORT is refused: the context is
        // disabled); none is queued after this.
        self.stop_fault_work();
        self.unmap_registrations();
        // Dropped outside the lock: removal waits for running callbacks.
        let list = core::mem::take(&mut self.registrations.lock().list);
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

    /// Number of registrations.
    pub(crate) fn registration_count(&self) -> usize {
        self.registrations.lock().list.len()
    }

    /// Pages of [start, end) pinned by baseline-mode registrations (overlaps count twice).
    pub(crate) fn pinned_pages(&self, start: u64, end: u64) -> u64 {
        self.registrations
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
