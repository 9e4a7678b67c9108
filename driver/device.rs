// SPDX-License-Identifier: GPL-2.0
//! The device as the rest of the driver sees it: register access, posting to the command ring
//! and waiting for its SYNC fence, draining the event ring, the context table, and what happens
//! when the device goes away (unbind) or stops answering.
//!
//! The rings themselves are in `cmd_ring.rs` and `event_ring.rs`, the command queue's shadow
//! page (spec §4a) in `shadow.rs`; which open context owns which hardware index is in
//! `slots.rs`, above this file (see [`OpenContexts`]).
//!
//! Everything that touches the hardware goes through [`MnicDev::enter`], which fails once the
//! PCI device is being unbound: open files can outlive the binding, and must then get `ENODEV`
//! instead of touching a device that is gone.

use kernel::{
    device::{Bound, Device},
    dma::Coherent,
    io::Io,
    new_mutex, new_srcu, pci,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        srcu, Arc, Mutex, Srcu,
    },
    time::{
        delay::{fsleep, udelay},
        Delta, Instant, Monotonic,
    },
};

use crate::abi::{self, reg, Command};
use crate::cmd_ring::{self, CmdRing, Ticket};
use crate::dma_mem::{load, store};
use crate::event_ring::{self, EventRing};
use crate::key_set::KeySet;
use crate::latency::DevLatency;
use crate::regs;
use crate::shadow::ShadowPage;

/// Size of BAR0 (registers), known at compile time so accesses are checked at build time.
pub(crate) const BAR0_SIZE: usize = abi::BAR_REGS_SIZE as usize;
/// BAR0 with its lifetime managed by devres (revoked at unbind).
pub(crate) type RegsBar = pci::DevresBar<BAR0_SIZE>;

/// How long the driver waits for the device (a SYNC, room in the command ring) before it
/// declares the device dead. A live device answers in microseconds; under TCG in milliseconds.
const DEVICE_TIMEOUT_MS: i64 = 2000;
/// How long a SYNC wait polls the sync word before it starts to sleep between checks.
const SYNC_SPIN_US: i64 = 300;

/// Fault injection for tests: sleeps for the delay a debugfs knob holds (0: not at all).
pub(crate) fn fault_delay(ms: &Atomic<u32>) {
    let ms = ms.load(Relaxed);
    if ms != 0 {
        fsleep(Delta::from_millis(i64::from(ms)));
    }
}

/// Default window of a device fault's fault-around (`fill.rs`), in KiB; debugfs
/// `fault_around_kib` changes it (docs/performance.md has the measurements that chose it).
pub(crate) const FAULT_AROUND_KIB: u32 = 256;
/// Largest fault-around window the knob accepts: one 2 MiB block (a fill's pfn buffer stays
/// one page).
pub(crate) const FAULT_AROUND_MAX_KIB: u32 = 2048;

/// Fault answers (RESUME/ABORT) that can wait for one post together (`post_answer`). The
/// device parks at most one fault per context, so this many contexts finishing their faults
/// at once share one post; more post on their own.
const ANSWER_SLOTS: usize = 32;

/// Fault answers waiting for the command queue (`MnicDev::post_answer`).
struct Answers {
    cmds: [Command; ANSWER_SLOTS],
    len: usize,
}

impl Answers {
    /// Queues `cmd`; false if full.
    fn push(&mut self, cmd: Command) -> bool {
        let Some(slot) = self.cmds.get_mut(self.len) else {
            return false;
        };
        *slot = cmd;
        self.len += 1;
        true
    }
}

/// Low and high halves of a 64-bit bus address, for the _LO/_HI register pairs.
fn split(v: u64) -> (u32, u32) {
    (v as u32, (v >> 32) as u32)
}

/// What the device must reach in the open contexts when it stops: wake their sleepers, zap
/// their doorbell mappings. Implemented by `slots::ContextSlots`, which lives above this file
/// (it holds contexts, and every context holds the device), so the device sees it only
/// through this trait.
pub(crate) trait OpenContexts: Send + Sync {
    /// Wakes every `MNIC_IOC_WAIT` sleeper (they see the device gone). Allocates nothing: it
    /// may run inside an invalidation.
    fn wake_waiters(&self);
    /// Removes the doorbell page from every process that mapped one (unbind). Fails only
    /// without memory to list them.
    fn zap_doorbells(&self) -> Result;
    /// Unmaps the DMA mappings of every registration's pages (unbind, once the device is
    /// stopped), but for a context whose registrations a fault holds. Fails only without
    /// memory to list the contexts.
    fn unmap_dma(&self) -> Result;
}

/// The shared device state (one per bound PCI function).
#[pin_data]
pub(crate) struct MnicDev {
    pdev: ARef<pci::Device>,
    /// BAR0, the registers.
    pub(crate) bar: RegsBar,
    /// BAR2, the per-context doorbell pages.
    doorbells: pci::DevresBar,
    /// Bus address of BAR2 (the per-context doorbell pages), for mmap.
    pub(crate) doorbell_phys: u64,
    /// Bus address of BAR0 (debugfs `bar0`: how test tools find this function).
    pub(crate) bar_phys: u64,
    /// Fault injection (debugfs `fault_deregister_delay_ms`): deregistration sleeps this long
    /// between its two steps. 0 in normal use.
    pub(crate) deregister_delay_ms: Atomic<u32>,
    /// Fault injection (debugfs `fault_unbind_delay_ms`): unbind sleeps this long between
    /// refusing new submissions and stopping the device. 0 in normal use.
    pub(crate) unbind_delay_ms: Atomic<u32>,
    /// Fault injection (debugfs `fault_resolve_delay_ms`): the next device fault resolved
    /// sleeps this long first (one shot). 0 in normal use.
    pub(crate) resolve_delay_ms: Atomic<u32>,
    /// debugfs `fault_around_kib`: the window a device fault faults in around its page
    /// (rounded down to a power of two; 4 or less: the page alone).
    pub(crate) fault_around_kib: Atomic<u32>,
    /// debugfs `trapped_doorbells`: nonzero makes every post write `CMDQ_TAIL`, even when the
    /// device is polling the shadow page (the `forced` of spec §4a; benchmarks compare the
    /// two). Read at every post. 0 in normal use.
    pub(crate) trapped_doorbells: Atomic<u32>,
    /// debugfs `spin_us`: nonzero overrides the device's spin budget with this many
    /// microseconds (`SPIN_US`, spec §4a), applied at the next post; 0: the device's own.
    /// `trapped_doorbells` wins over it. 0 in normal use.
    pub(crate) spin_us: Atomic<u32>,
    /// `/dev/mnicN` number.
    pub(crate) minor_index: u32,
    #[pin]
    srcu: Srcu,
    /// No new submissions: set at unbind, or when the device stopped answering.
    gone: Atomic<bool>,
    /// The device cannot touch memory any more: bus mastering is off (confirmed by a read back)
    /// or the device fell off the bus. Only then may an invalidation return without its SYNC.
    quiesced: Atomic<bool>,
    #[pin]
    cmdq: Mutex<CmdRing>,
    #[pin]
    pub(crate) evq: Mutex<EventRing>,
    /// Fault answers waiting to be posted together; taken after `cmdq`, never before it.
    #[pin]
    answers: Mutex<Answers>,
    /// Fault answers posted, and the posts (one shadow tail update, at most one doorbell each)
    /// that carried them (debugfs `device`).
    pub(crate) answers_posted: Atomic<u64>,
    pub(crate) answer_posts: Atomic<u64>,
    /// Network faults received (spec §12: raised by a packet, not by local work; debugfs
    /// `fabric`).
    pub(crate) network_faults: Atomic<u64>,
    /// The command queue's shadow page (`SHADOW_BASE`), if the device has `CAPS.SHADOW`.
    cmd_shadow: Option<ShadowPage>,
    /// One u64 the device's SYNCs write their ticket to.
    sync_word: Coherent<[u64]>,
    /// The device's context table (`NUM_CONTEXTS` entries of 8 words).
    ctx_table: Coherent<[u64]>,
    /// The open contexts (see [`OpenContexts`]).
    open_contexts: Arc<dyn OpenContexts>,
    pub(crate) hw_version: u32,
    pub(crate) caps: u32,
    /// The device's fabric node id (`FABRIC_NODE`), `abi::NODE_NONE` without `CAPS.FABRIC`.
    pub(crate) node: u32,
    /// The live remote keys of every context (`remote_key.rs`): unique on the device.
    #[pin]
    pub(crate) remote_keys: Mutex<KeySet>,
    /// How long SYNC waits and device faults took, over every context (`latency.rs`).
    pub(crate) latency: DevLatency,
}

/// Proof that the device is bound while it lives (an SRCU read section that unbind waits for).
pub(crate) struct Access<'a> {
    dev: &'a MnicDev,
    _srcu: srcu::Guard<'a>,
}

impl<'a> Access<'a> {
    /// The bound generic device, for DMA allocations.
    pub(crate) fn bound(&self) -> &'a Device<Bound> {
        let dev: &'a Device = self.dev.pdev.as_ref();
        // SAFETY: `MnicDev::unbind` marks the device gone and then waits (`synchronize`) for
        // every SRCU reader, before the driver core can consider the device unbound; `self`
        // holds such a reader and was created after checking `gone`. So the device stays bound
        // for as long as `self` (and the returned reference, which cannot outlive it) exists.
        unsafe { dev.as_bound() }
    }

    /// BAR0, the registers.
    pub(crate) fn bar(&self) -> Result<&'a pci::Bar<'a, BAR0_SIZE>> {
        self.dev.bar.access(self.bound())
    }
}

impl MnicDev {
    /// Sets up the rings and tables and enables the device.
    pub(crate) fn new(
        pdev: &pci::Device<kernel::device::Core<'_>>,
        regs_bar: RegsBar,
        doorbells: pci::DevresBar,
        minor_index: u32,
        open_contexts: Arc<dyn OpenContexts>,
    ) -> Result<impl PinInit<Self, Error>> {
        let dev: &Device<Bound> = pdev.as_ref();
        let bar = regs_bar.access(dev)?;
        let id = bar.read(regs::ID).into_raw();
        if id != abi::MNIC_ID_VALUE {
            dev_err!(pdev, "not an mnic device (ID {:#x})\n", id);
            return Err(ENODEV);
        }
        let version = bar.read(regs::VERSION);
        if u32::from(version.major().get()) != abi::MNIC_VERSION_VALUE >> 16 {
            dev_err!(
                pdev,
                "unsupported hardware version {:#x}\n",
                version.into_raw()
            );
            return Err(ENODEV);
        }
        let hw_version = version.into_raw();
        let caps = bar.read(regs::CAPS);
        if !caps.stale_check() || !caps.doorbell_bar() {
            dev_warn!(pdev, "device lacks capabilities {:#x}\n", caps.into_raw());
        }
        // Without a fabric the offset is not a register of older devices: its value is only
        // trusted with `CAPS.FABRIC`.
        let node = if caps.fabric() {
            bar.read(regs::FABRIC_NODE).into_raw()
        } else {
            u32::from(abi::NODE_NONE)
        };
        let caps = caps.into_raw();
        let nctx = bar.read(regs::NUM_CONTEXTS).into_raw();
        if nctx < abi::NUM_CONTEXTS {
            dev_err!(
                pdev,
                "device has {} contexts, need {}\n",
                nctx,
                abi::NUM_CONTEXTS
            );
            return Err(ENODEV);
        }
        // Start from a known state whatever a previous driver left behind.
        bar.write_reg(regs::CONTROL::zeroed().with_reset(true));

        let cmd_ring = CmdRing::new(dev)?;
        // Only a device that polls shadow pages is given one (spec §4a); without it the
        // command queue works with its doorbell register alone, as it always did.
        let cmd_shadow = if caps & abi::caps::SHADOW != 0 {
            Some(ShadowPage::new(dev)?)
        } else {
            None
        };
        let ev_ring = EventRing::new(dev)?;
        let sync_word = Coherent::<u64>::zeroed_slice(dev, 1, GFP_KERNEL)?;
        let ctx_table = Coherent::<u64>::zeroed_slice(
            dev,
            abi::NUM_CONTEXTS as usize * size_of::<abi::CtxEntry>() / 8,
            GFP_KERNEL,
        )?;

        let (lo, hi) = split(ctx_table.dma_address());
        bar.write_reg(regs::CTX_TABLE_LO::from(lo));
        bar.write_reg(regs::CTX_TABLE_HI::from(hi));
        let (lo, hi) = split(cmd_ring.dma_address());
        bar.write_reg(regs::CMDQ_BASE_LO::from(lo));
        bar.write_reg(regs::CMDQ_BASE_HI::from(hi));
        bar.write_reg(regs::CMDQ_SIZE_LOG2::from(cmd_ring::LOG2));
        let (lo, hi) = split(ev_ring.dma_address());
        bar.write_reg(regs::EVQ_BASE_LO::from(lo));
        bar.write_reg(regs::EVQ_BASE_HI::from(hi));
        bar.write_reg(regs::EVQ_SIZE_LOG2::from(event_ring::LOG2));
        if let Some(shadow) = &cmd_shadow {
            // Latched at enable, like the ring bases.
            let (lo, hi) = split(shadow.dma_address());
            bar.write_reg(regs::SHADOW_BASE_LO::from(lo));
            bar.write_reg(regs::SHADOW_BASE_HI::from(hi));
        }
        bar.write_reg(regs::IRQ_MASK::from(0));
        // Strict mode: a stale access halts the device instead of only being counted; the
        // driver must never cause one, so any halt is a driver bug worth stopping at.
        bar.write_reg(regs::CONTROL::zeroed().with_enable(true).with_strict(true));
        let status = bar.read(regs::STATUS);
        if !status.enabled() {
            dev_err!(
                pdev,
                "device refused to enable: status {:#x} error {}\n",
                status.into_raw(),
                bar.read(regs::ERROR_CODE).into_raw()
            );
            return Err(EIO);
        }
        let doorbell_phys = pdev.resource_start(abi::BAR_DOORBELLS)?;
        let bar_phys = pdev.resource_start(abi::BAR_REGS)?;
        let pdev: ARef<pci::Device> = pdev.into();

        Ok(try_pin_init!(MnicDev {
            pdev,
            bar: regs_bar,
            doorbells,
            doorbell_phys,
            bar_phys,
            deregister_delay_ms: Atomic::new(0),
            unbind_delay_ms: Atomic::new(0),
            resolve_delay_ms: Atomic::new(0),
            fault_around_kib: Atomic::new(FAULT_AROUND_KIB),
            trapped_doorbells: Atomic::new(0),
            spin_us: Atomic::new(0),
            minor_index,
            srcu <- new_srcu!(),
            gone: Atomic::new(false),
            quiesced: Atomic::new(false),
            cmdq <- new_mutex!(cmd_ring),
            evq <- new_mutex!(ev_ring),
            answers <- new_mutex!(Answers {
                cmds: [Command::default(); ANSWER_SLOTS],
                len: 0,
            }),
            answers_posted: Atomic::new(0),
            answer_posts: Atomic::new(0),
            network_faults: Atomic::new(0),
            cmd_shadow,
            sync_word,
            ctx_table,
            open_contexts,
            hw_version,
            caps,
            node,
            remote_keys <- new_mutex!(KeySet::new()),
            latency: DevLatency::new(),
        }? Error))
    }

    /// The PCI device (for messages).
    pub(crate) fn pdev(&self) -> &pci::Device {
        &self.pdev
    }

    /// Enters a section in which the device is known to be bound; `ENODEV` once it is going.
    pub(crate) fn enter(&self) -> Result<Access<'_>> {
        let guard = self.srcu.read_lock();
        if self.gone.load(Relaxed) {
            return Err(ENODEV);
        }
        Ok(Access {
            dev: self,
            _srcu: guard,
        })
    }

    /// Whether the device was unbound or declared dead (no new submissions).
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Relaxed)
    }

    /// Whether the device can no longer touch memory (see `quiesced`).
    pub(crate) fn is_quiesced(&self) -> bool {
        self.quiesced.load(Relaxed)
    }

    /// Called at unbind: no new submission starts, running ones finish, then the device is
    /// stopped so it performs no more DMA into memory the driver is about to free. Invalidations
    /// that run meanwhile wait for the stop (they see `gone` but not yet `quiesced`).
    pub(crate) fn unbind(&self, dev: &Device<Bound>) {
        self.gone.store(true, Relaxed);
        self.open_contexts.wake_waiters();
        self.srcu.synchronize();
        fault_delay(&self.unbind_delay_ms);
        if !self.stop(dev) {
            // Bus mastering could not be confirmed off. The reset below is the last resort;
            // the driver is going away and cannot wait forever.
            dev_err!(
                self.pdev,
                "unbind: could not confirm that the device stopped DMA\n"
            );
        }
        if let Ok(bar) = self.bar.access(dev) {
            bar.write_reg(regs::CONTROL::zeroed().with_reset(true));
            let _ = bar.read(regs::STATUS);
        }
        self.quiesced.store(true, Relaxed);
        // Stopped: no bus address of a user page is needed any more, and none may stay mapped
        // for a function the driver gives up (`dma_map.rs`). Fills fail from now on (`gone`).
        if self.open_contexts.unmap_dma().is_err() {
            dev_err!(self.pdev, "unbind: no memory to list the contexts\n");
        }
        // Once the driver lets the BAR go, a store to a doorbell page must fault (SIGBUS: the
        // mapping has no fault handler), not reach whatever the address decodes to next.
        if self.open_contexts.zap_doorbells().is_err() {
            dev_err!(
                self.pdev,
                "unbind: no memory to list the doorbell mappings\n"
            );
        }
    }

    /// Stops the device from touching memory: clears bus mastering in the PCI command register
    /// and confirms with a read back (a non-posted read, which the device answers only after
    /// it applied the write; all-ones means it fell off the bus, which stops it as well).
    /// Returns whether the device is known to be stopped; sets `quiesced` if so.
    fn stop(&self, dev: &Device<Bound>) -> bool {
        const PCI_COMMAND: usize = 0x04;
        const PCI_COMMAND_MASTER: u16 = 0x04;
        let Ok(pdev) = <&pci::Device<Bound>>::try_from(dev) else {
            return false;
        };
        let cfg = pdev.config_space();
        let cmd = cfg.read16(PCI_COMMAND);
        if cmd != u16::MAX {
            cfg.write16(cmd & !PCI_COMMAND_MASTER, PCI_COMMAND);
        }
        let now = cfg.read16(PCI_COMMAND);
        // Also a register read: the device's socket handles requests in order, so this one is
        // answered after the config write took effect.
        let status = self
            .bar
            .access(dev)
            .map_or(u32::MAX, |bar| bar.read(regs::STATUS).into_raw());
        let stopped = now == u16::MAX || status == u32::MAX || now & PCI_COMMAND_MASTER == 0;
        if stopped {
            self.quiesced.store(true, Relaxed);
        }
        stopped
    }

    /// The device stopped answering (a SYNC or the command ring stuck): it may be dead, or only
    /// slow and still holding translations. Stop it and confirm before anyone relies on it being
    /// unable to DMA; then mark it dead: waiters give up, new calls get ENODEV. Returns whether
    /// the stop was confirmed (if not, the caller keeps waiting for its SYNC).
    fn declare_dead(&self, why: &str) -> bool {
        let stopped = match self.enter() {
            Ok(access) => self.stop(access.bound()),
            // Being unbound: unbind stops it.
            Err(_) => self.is_quiesced(),
        };
        if !self.gone.xchg(true, Relaxed) {
            if stopped {
                dev_err!(
                    self.pdev,
                    "device not responding ({}); stopped and disabled\n",
                    why
                );
            } else {
                dev_err!(
                    self.pdev,
                    "device not responding ({}) and could not be stopped: still waiting\n",
                    why
                );
            }
            self.open_contexts.wake_waiters();
        }
        stopped
    }

    // ------------------------------------------------------------------ context table

    /// Writes context-table entry `index` (before `CTX_ENABLE`, which makes the device read it).
    pub(crate) fn write_ctx_entry(&self, index: u16, entry: &abi::CtxEntry) -> Result {
        let words: [u64; 8] = zerocopy::transmute!(*entry);
        let base = index as usize * words.len();
        for (i, w) in words.iter().enumerate() {
            store(&self.ctx_table, base + i, *w)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ command queue

    /// Posts `cmds` followed by a SYNC and returns its ticket. Takes the command-queue mutex:
    /// must not be called where sleeping is not allowed (use [`Self::try_post_sync`]).
    pub(crate) fn post_sync(&self, cmds: &[Command]) -> Result<Ticket> {
        let access = self.enter()?;
        let mut q = self.cmdq.lock();
        self.post_locked(&access, &mut q, cmds, true)
            .map(|t| t.unwrap_or(Ticket(0)))
    }

    /// Posts `cmds` (no SYNC).
    pub(crate) fn post(&self, cmds: &[Command]) -> Result {
        let access = self.enter()?;
        let mut q = self.cmdq.lock();
        self.post_locked(&access, &mut q, cmds, false).map(|_| ())
    }

    /// Posts the answer (RESUME or ABORT) to a device fault, together with the answers of
    /// other contexts' faults that are waiting: fault workers that finish while the command
    /// queue is busy leave their answers to whichever of them takes the queue first, so the
    /// answers resolved in parallel reach the device with one tail update (and at most one
    /// doorbell) instead of one each. No answer waits for a slower context: each worker
    /// posts what is waiting, its own included, unless an earlier one already did; either
    /// way its answer is in the ring when this returns.
    pub(crate) fn post_answer(&self, cmd: Command) -> Result {
        let access = self.enter()?;
        if !self.answers.lock().push(cmd) {
            return self.post(&[cmd]);
        }
        let mut q = self.cmdq.lock();
        let mut waiting = self.answers.lock();
        let n = waiting.len;
        if n == 0 {
            // Posted by the worker that held the queue before this one.
            return Ok(());
        }
        // Leaves nothing queued even if posting fails: that only happens once the device is
        // gone, and it then runs no faulted work to answer.
        waiting.len = 0;
        self.answers_posted.add(n as u64, Relaxed);
        self.answer_posts.add(1, Relaxed);
        self.post_locked(&access, &mut q, &waiting.cmds[..n], false)
            .map(|_| ())
    }

    /// Like [`Self::post_sync`] but never sleeps: `EAGAIN` if the queue is busy or full.
    pub(crate) fn try_post_sync(&self, cmds: &[Command]) -> Result<Ticket> {
        let access = self.enter()?;
        let mut q = self.cmdq.try_lock().ok_or(EAGAIN)?;
        let free = self.free_slots(&access, &mut q, false)?;
        if free < cmds.len() + 1 {
            return Err(EAGAIN);
        }
        self.post_locked(&access, &mut q, cmds, true)
            .map(|t| t.unwrap_or(Ticket(0)))
    }

    /// Free slots of the command ring; reads the device's head first if `refresh`, or if the
    /// ring looks nearly full by the cached one.
    fn free_slots(&self, access: &Access<'_>, q: &mut CmdRing, refresh: bool) -> Result<usize> {
        if refresh || q.nearly_full() {
            let head = access.bar()?.read(regs::CMDQ_HEAD).into_raw();
            if head == u32::MAX {
                // Fell off the bus (see `ack_irq`).
                let _ = self.declare_dead("register reads all ones");
                return Err(ENODEV);
            }
            q.set_head(head);
        }
        Ok(q.free())
    }

    fn post_locked(
        &self,
        access: &Access<'_>,
        q: &mut CmdRing,
        cmds: &[Command],
        sync: bool,
    ) -> Result<Option<Ticket>> {
        let needed = cmds.len() + usize::from(sync);
        if needed > cmd_ring::MAX_BATCH {
            return Err(EINVAL);
        }
        let start = Instant::<Monotonic>::now();
        // The cached head only lags the device's, so the room it shows is never more than
        // there is: `CMDQ_HEAD` (a register read, a round trip through QEMU) is read only
        // when that room is not enough, or the ring looks nearly full (`free_slots`).
        let mut refresh = false;
        while self.free_slots(access, q, refresh)? < needed {
            if refresh {
                if start.elapsed() > Delta::from_millis(DEVICE_TIMEOUT_MS) {
                    // Posting fails either way; a caller that must fence waits for quiescence.
                    let _ = self.declare_dead("command queue full");
                    return Err(ENODEV);
                }
                fsleep(Delta::from_micros(20));
            }
            refresh = true;
        }
        for cmd in cmds {
            q.push(cmd)?;
        }
        let ticket = if sync {
            Some(q.push_sync(self.sync_word.dma_address())?)
        } else {
            None
        };
        let tail = q.tail();
        let trapped = self.trapped_doorbells.load(Relaxed) != 0;
        // Trapped mode is the path without shadow doorbells, so the device must not poll
        // either: it would find the tail in the shadow page before the register write
        // reaches it. A spin budget of 0 makes it read the page only when rung.
        let spin = match self.spin_us.load(Relaxed) {
            _ if trapped => abi::spin::OVERRIDE,
            0 => 0,
            us => abi::spin::OVERRIDE | (us & abi::spin::US_MASK),
        };
        if self.cmd_shadow.is_some() && spin != q.spin_applied {
            access.bar()?.write_reg(regs::SPIN_US::from(spin));
            q.spin_applied = spin;
        }
        let ring = match &self.cmd_shadow {
            // With a shadow page the device takes the tail from there only; the register write
            // just wakes it, when it is not polling (or when doorbells are forced).
            Some(shadow) => shadow.publish(tail, trapped)?,
            None => true,
        };
        if ring {
            // The MMIO write orders after the ring stores (writel has a write barrier).
            access.bar()?.write_reg(regs::CMDQ_TAIL::from(tail));
        }
        self.sync_posted(cmds, ticket, ring);
        Ok(ticket)
    }

    /// Whether the SYNC with `ticket` has executed.
    pub(crate) fn sync_done(&self, ticket: Ticket) -> bool {
        load(&self.sync_word, 0).is_ok_and(|v| v >= ticket.0)
    }

    /// Waits for the SYNC with `ticket` (sleeps; needs no memory). Returns how long it waited.
    ///
    /// Returns early (`ENODEV`) only once the device is quiesced: a device that does not answer
    /// in time is stopped first (`declare_dead`), and while that cannot be confirmed the wait
    /// goes on, with a message every timeout, rather than let the mm reuse a page the device
    /// may still write (mlx5 waits without a timeout). `Ticket::QUIESCED` waits for
    /// quiescence alone (an invalidation that could not post because the device is going).
    pub(crate) fn wait_sync(&self, ticket: Ticket) -> Result<Delta> {
        let start = Instant::<Monotonic>::now();
        // Poll first: with shadow doorbells a polling device answers in tens of microseconds,
        // far less than one sleep costs in a guest whose timers tick every 4 ms (no
        // high-resolution timers: `usleep_range` ends at the next tick). Only a wait that
        // lasts longer than the spin sleeps between checks.
        let spin = Delta::from_micros(SYNC_SPIN_US);
        while !self.sync_done(ticket) && start.elapsed() < spin {
            udelay(Delta::from_micros(1));
        }
        let mut deadline = Delta::from_millis(DEVICE_TIMEOUT_MS);
        let mut pause = 5;
        while !self.sync_done(ticket) {
            if self.is_quiesced() {
                return Err(ENODEV);
            }
            if start.elapsed() > deadline {
                if self.declare_dead("SYNC timeout") {
                    return Err(ENODEV);
                }
                deadline = deadline + Delta::from_millis(DEVICE_TIMEOUT_MS);
            }
            fsleep(Delta::from_micros(pause));
            // Capped low so that a wait is overshot by at most 40 us (a SYNC takes 0.1-0.3 ms
            // through QEMU under TCG; a 200 us cap could overshoot it by about that much). The
            // effect is within the noise of `make bench`: mean SYNC wait of a registered 1 MiB
            // page-out 130 us, against 131-146 us with the 200 us cap.
            pause = (pause * 2).min(40);
        }
        Ok(self.sync_waited(ticket, start.elapsed(), spin))
    }

    // ------------------------------------------------------------------ events

    /// Tells the device which event slots are free again.
    pub(crate) fn release_events(&self, q: &EventRing) -> Result {
        let access = self.enter()?;
        access.bar()?.write_reg(regs::EVQ_HEAD::from(q.head()));
        Ok(())
    }

    /// Reads and acknowledges the interrupt cause.
    pub(crate) fn ack_irq(&self) -> Result<u32> {
        let access = self.enter()?;
        let bar = access.bar()?;
        let status = bar.read(regs::IRQ_STATUS);
        if status.into_raw() == u32::MAX {
            // No cause register reads all ones: the device fell off the bus (a hot-unplug, or
            // a device process that died and is answered for by its supervisor).
            let _ = self.declare_dead("register reads all ones");
            return Err(ENODEV);
        }
        if status.into_raw() != 0 {
            bar.write_reg(status);
        }
        if status.error() && bar.read(regs::STATUS).halted() {
            let code = bar.read(regs::ERROR_CODE).into_raw();
            dev_err!(self.pdev, "device halted (error code {})\n", code);
        }
        let status = status.into_raw();
        Ok(status)
    }

    /// Reads the device counters.
    pub(crate) fn counters(&self, out: &mut [u64]) -> Result {
        self.read_counters(reg::counter, out)
    }

    /// Reads the fabric counters (spec §10; meaningful only with `CAPS.FABRIC`).
    pub(crate) fn fabric_counters(&self, out: &mut [u64]) -> Result {
        self.read_counters(reg::fabric_counter, out)
    }

    /// Reads the 64-bit counter registers at `offset(0)`, `offset(1)`, ... into `out`.
    fn read_counters(&self, offset: fn(u32) -> u32, out: &mut [u64]) -> Result {
        let access = self.enter()?;
        let bar = access.bar()?;
        for (i, c) in out.iter_mut().enumerate() {
            let off = offset(i as u32) as usize;
            let lo = u64::from(bar.try_read32(off)?);
            let hi = u64::from(bar.try_read32(off + 4)?);
            *c = lo | (hi << 32);
        }
        Ok(())
    }

    /// Rings context `index`'s doorbell (for processes that do not mmap it). With a shadow page
    /// (`shadow`), the tail goes there first and the register is written only as the
    /// producer's rule says (spec §4a).
    pub(crate) fn ring_doorbell(
        &self,
        index: u16,
        tail: u32,
        shadow: Option<&ShadowPage>,
    ) -> Result {
        let access = self.enter()?;
        if let Some(shadow) = shadow {
            if !shadow.publish(tail, self.trapped_doorbells.load(Relaxed) != 0)? {
                return Ok(());
            }
        }
        let bar = self.doorbells.access(access.bound())?;
        bar.try_write32(tail, index as usize * abi::DOORBELL_PAGE_SIZE as usize)
    }
}
